//! Routing rules at the edge: reading `rules.dir` from disk and holding the live, reloadable
//! rule set ([`RuleBook`]). Parsing, validation and matching are pure and live in
//! [`crate::domain::rules`].
//!
//! # Loading
//! Every `*.toml` file directly in the directory, in file-name order (sub-directories such as
//! `examples/` are not loaded). A missing directory means no rules; an unreadable one, or any
//! bad file, is an error and the whole set is refused.
//!
//! # Reloading
//! SIGHUP ([`reload_on_sighup`]) and `POST /admin/rules/reload` call [`RuleBook::reload`]: the
//! directory is read and compiled again; only a fully valid set replaces the running one. A bad
//! set leaves the old rules in place and the error (file:line) is logged and returned.
//!
//! The live set sits in an [`ArcSwap`]: the lookup's hot path takes a snapshot with one
//! atomic load and no lock, so a reload never blocks or slows lookups (an
//! `RwLock<Arc<Rules>>` would make every lookup write the lock's shared counter).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use arc_swap::{ArcSwap, Guard};

use crate::domain::{
    manager::ManagerId,
    phone_number::PhoneNormalizer,
    rules::{CompileOptions, Rules, RulesError, compile},
};

/// Why a rules directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RulesLoadError {
    #[error("cannot read routing rules {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Every file:line problem; not a `#[source]`, so the message is not printed twice in
    /// an error chain.
    #[error("invalid routing rules:\n{0}")]
    Invalid(RulesError),
}

/// Reads every `*.toml` file directly in `dir`, sorted by file name, as `(path, text)`.
/// A missing directory yields no files.
pub fn read_dir(dir: &Path) -> Result<Vec<(String, String)>, RulesLoadError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RulesLoadError::Io { path, source }
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry.map_err(io(dir))?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "toml") {
            paths.push(path);
        }
    }
    paths.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).map_err(io(&p))?;
            Ok((p.display().to_string(), text))
        })
        .collect()
}

/// Reads and compiles `dir`.
pub fn load_dir(
    dir: &Path,
    normalizer: &PhoneNormalizer,
    known_managers: &[ManagerId],
) -> Result<Rules, RulesLoadError> {
    let files = read_dir(dir)?;
    let opts = CompileOptions {
        normalizer,
        known_managers,
    };
    compile(&files, &opts).map_err(RulesLoadError::Invalid)
}

/// The live rule set and how to load it again.
pub struct RuleBook {
    current: ArcSwap<Rules>,
    dir: PathBuf,
    normalizer: PhoneNormalizer,
    known_managers: Vec<ManagerId>,
}

impl std::fmt::Debug for RuleBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleBook")
            .field("dir", &self.dir)
            .field("rules", &self.current.load().len())
            .finish()
    }
}

impl RuleBook {
    /// Loads `dir` (see [`load_dir`]); an error refuses the start.
    pub fn load(
        dir: &Path,
        normalizer: PhoneNormalizer,
        known_managers: Vec<ManagerId>,
    ) -> Result<Self, RulesLoadError> {
        let rules = load_dir(dir, &normalizer, &known_managers)?;
        Ok(RuleBook {
            current: ArcSwap::from_pointee(rules),
            dir: dir.to_path_buf(),
            normalizer,
            known_managers,
        })
    }

    /// A fixed rule set that reloads from nowhere (tests, tools).
    pub fn fixed(rules: Rules, normalizer: PhoneNormalizer) -> Self {
        RuleBook {
            current: ArcSwap::from_pointee(rules),
            dir: PathBuf::new(),
            normalizer,
            known_managers: Vec::new(),
        }
    }

    /// The directory the rules come from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A snapshot of the current rules: one atomic load, no lock, no allocation.
    pub fn current(&self) -> Guard<Arc<Rules>> {
        self.current.load()
    }

    /// Reads and compiles the directory again and swaps the new set in; on error the old set
    /// stays. Returns the new set.
    pub fn reload(&self) -> Result<Arc<Rules>, RulesLoadError> {
        if self.dir.as_os_str().is_empty() {
            return Ok(self.current.load_full());
        }
        match load_dir(&self.dir, &self.normalizer, &self.known_managers) {
            Ok(rules) => {
                let rules = Arc::new(rules);
                self.current.store(rules.clone());
                tracing::info!(
                    rules = rules.len(),
                    files = rules.file_count(),
                    dir = %self.dir.display(),
                    "Routing rules reloaded."
                );
                Ok(rules)
            }
            Err(e) => {
                tracing::error!(error = %e, dir = %self.dir.display(), "Routing rules not reloaded; the old rules stay.");
                Err(e)
            }
        }
    }
}

/// Reloads `book` on every SIGHUP until the process ends (unix; elsewhere it never fires).
pub async fn reload_on_sighup(book: Arc<RuleBook>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot listen for SIGHUP; reload rules through the admin API.");
                return;
            }
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading routing rules.");
            // The outcome is logged by `reload`.
            let _ = book.reload();
        }
    }
    #[cfg(not(unix))]
    {
        let _ = book;
        std::future::pending::<()>().await;
    }
}

// === `callgate rules explain` ===

/// The payload keys `rules explain` reads besides the webhook fields: the `?event=` hint
/// and the simulated CRM facts.
pub const EXPLAIN_CONTROL_KEYS: &[&str] =
    &["event", "customer_exists", "customer_owner", "open_order"];

/// What `callgate rules explain EVENT.json` prints: the event as understood, each rule's
/// verdict down to the one that fires, and the action plan.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExplainReport {
    /// One line about the event.
    pub event: String,
    /// The simulated CRM facts.
    pub facts: String,
    pub rules: crate::domain::rules::Explanation,
    /// The firing rule's actions, `key = value`.
    pub actions: Vec<String>,
    /// The site of the plan.
    pub site: String,
    /// Scenario ids (`S1`…).
    pub scenarios: Vec<String>,
    /// The plan's actions, one line each.
    pub plan: Vec<String>,
}

/// Plans `payload` (a webhook payload, see [`EXPLAIN_CONTROL_KEYS`]) against `rules` without
/// touching the CRM. The CRM facts are simulated: no customer unless `"customer_exists":
/// true`, which stands for one customer owned by `"customer_owner"` (else the manager who
/// answered, else `crm.senior_manager_id`), with one open order when `"open_order": true`
/// (else no order). Site, rule and plan come from [`crate::domain::plan::decide`], the
/// worker's own pipeline; the clock is now.
pub fn explain_event(
    payload: &serde_json::Map<String, serde_json::Value>,
    config: &crate::config::Config,
    rules: &Rules,
) -> Result<ExplainReport, crate::domain::call::PayloadError> {
    use serde_json::Value;

    use crate::{
        crm::{CustomerId, OrderId},
        domain::{
            call::CallEvent,
            plan::{
                Action, CrmFacts, CustomerFacts, OrderFacts, decide_explained, resolve_parties,
            },
        },
    };

    let mut fields = payload.clone();
    let flag = |fields: &mut serde_json::Map<String, Value>, key: &str| {
        matches!(fields.remove(key), Some(Value::Bool(true)))
    };
    let hint = match fields.remove("event") {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    let customer_exists = flag(&mut fields, "customer_exists");
    let open_order = flag(&mut fields, "open_order");
    let owner = fields
        .remove("customer_owner")
        .and_then(|v| v.as_u64())
        .map(ManagerId);
    let normalize = |raw: &str| config.normalizer.parse(raw).map(|p| p.number);
    let event = CallEvent::parse(
        &fields,
        &config.ringostat.fields,
        hint.as_deref(),
        &normalize,
    )?;

    let now = chrono::Local::now().naive_local();
    let mut facts = CrmFacts::new_number(now);
    let parties = resolve_parties(&event, &config.directory);
    facts.answered_by = parties.answered_by;
    facts.client_is_manager = parties.client_is_manager;
    let owner = owner
        .or(parties.answered_by)
        .or(config.planner.senior_manager_id);
    if customer_exists {
        facts.customers.push(CustomerFacts {
            id: CustomerId(1),
            manager_id: owner,
            created_at: None,
            last_active_at: None,
            orders: if open_order {
                vec![OrderFacts {
                    id: OrderId(1),
                    open: true,
                    manager_id: owner,
                    created_at: None,
                }]
            } else {
                Vec::new()
            },
        });
    }
    let (decision, explanation) =
        decide_explained(&event, &facts, &config.planner, rules, chrono::Utc::now());
    let fired = decision.matched_rule;
    let p = decision.plan;
    let site = &p.site;
    let client = match &event.client {
        Ok(n) => n.e164().to_owned(),
        Err(e) => format!(
            "{:?} (not a number: {e})",
            event.client_raw.as_deref().unwrap_or("")
        ),
    };
    let describe = |a: &Action| -> String {
        let m =
            |id: Option<ManagerId>| id.map_or("nobody".to_owned(), |id| format!("manager {id}"));
        match a {
            Action::EnsureCustomer(c) => {
                format!("customer: find or create, responsible {}", m(c.manager_id))
            }
            Action::CreateOrder(o) => format!(
                "order: create in status {:?}, responsible {}",
                o.status,
                m(o.manager_id)
            ),
            Action::CreateTask { purpose, task } => format!(
                "task ({purpose:?}, {}) on manager {}: {:?}",
                if task.complete { "closed" } else { "open" },
                task.performer_id,
                task.text
            ),
            Action::UpsertCallbackTask { existing, task, .. } => format!(
                "call-back task ({}) on manager {}: {:?}",
                if existing.is_some() {
                    "update"
                } else {
                    "create"
                },
                task.performer_id,
                task.text
            ),
            Action::CompleteCallbackTask { task_id, .. } => {
                format!("call-back task {task_id}: complete")
            }
            Action::PopUp(_) => "pop-up card for the manager".to_owned(),
            Action::UploadCall(c) => format!("call record: upload (result {:?})", c.result),
        }
    };
    Ok(ExplainReport {
        event: format!(
            "call {} ({}), {:?}, {}, client {client}, tracking number {}, site {site}",
            event.call_id,
            event.moment,
            event.call_type,
            event.outcome().as_str(),
            event
                .tracking_number
                .as_ref()
                .map_or("none".to_owned(), |n| n.e164().to_owned()),
        ),
        facts: if customer_exists {
            format!(
                "simulated: one customer, responsible {}, {}",
                owner.map_or("nobody".to_owned(), |m| format!("manager {m}")),
                if open_order {
                    "one open order"
                } else {
                    "no open order"
                }
            )
        } else {
            "simulated: no customer with this number".to_owned()
        },
        actions: fired.map(|r| r.describe_actions()).unwrap_or_default(),
        rules: explanation,
        site: p.site.clone(),
        scenarios: p.scenarios.iter().map(ToString::to_string).collect(),
        plan: p
            .actions
            .iter()
            .map(|a| format!("{}: {}", a.key(), describe(a)))
            .collect(),
    })
}

impl ExplainReport {
    /// The human-readable report.
    pub fn render_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(out, "Event: {}", self.event);
        let _ = writeln!(out, "CRM facts: {}", self.facts);
        let _ = writeln!(out, "Rules:");
        if self.rules.verdicts.is_empty() {
            let _ = writeln!(out, "  (no rules)");
        }
        for v in &self.rules.verdicts {
            let mark = if v.matched { "FIRES " } else { "no    " };
            let _ = writeln!(out, "  {mark} {:?} ({}:{})", v.name, v.file, v.line);
            for miss in &v.misses {
                let _ = writeln!(out, "           - {miss}");
            }
        }
        match self.rules.fired {
            Some(_) => {
                let _ = writeln!(out, "Rule actions: {}", self.actions.join(", "));
            }
            None => {
                let _ = writeln!(out, "No rule fires: the configuration decides.");
            }
        }
        let _ = writeln!(
            out,
            "Plan (site {}; scenarios {}):",
            self.site,
            self.scenarios.join(", ")
        );
        if self.plan.is_empty() {
            let _ = writeln!(out, "  nothing to send to the CRM");
        }
        for (i, line) in self.plan.iter().enumerate() {
            let _ = writeln!(out, "  {}. {line}", i + 1);
        }
        out
    }
}
