//! The pre-call lookup service (SPEC §3, flow A): caller → owner → destination, always within
//! `lookup.deadline_ms`.
//!
//! Hot path: parse the caller, read the owner mirror (flow F) and the manager's state
//! ([`ManagerBoard`]), both in this process's memory on every store, decide. Once the mirror's first import is done a
//! number it does not have is nobody (`lookup.on_miss = "nobody"`), without asking anyone.
//! Before that (or with `"ask_crm"`, or without `[sync]`) a miss reads the owner index
//! (in memory for the embedded store) and then asks the CRM once per number however
//! many lookups wait for it (single flight): the fetch runs as its own task, so a lookup that
//! gives up at the deadline does not cancel it, and its answer fills the index for the next
//! call. A failing CRM or store yields "nobody", never an error.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use chrono::Utc;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::{
    call_trail::{self, LookupKey, LookupRecord, LookupTrail},
    config::LookupOptions,
    crm::Crm,
    domain::{
        call_log::{TrailKind, TrailStep},
        lookup::{CallerFacts, LookupDecision, LookupPolicy, LookupReason, OnMiss, decide},
        manager::{ManagerDirectory, ManagerId, ManagerState},
        phone_number::{PhoneNormalizer, PhoneNumber},
        rules::{LookupOverride, MatchContext},
        site::Sites,
    },
    metrics::Metrics,
    rules::RuleBook,
    store::{OwnerEntry, Store},
    sync::{managers::ManagerBoard, mirror::SharedMirror},
};

/// A pre-call question: who should take a call from `caller`?
#[derive(Debug, Clone, Default)]
pub struct LookupRequest {
    /// Ringostat's `call_id`, when the request carries one: the decision joins that call's
    /// trail.
    pub call_id: Option<String>,
    /// Caller number as received (any format).
    pub caller: String,
    /// Tracking number dialled, as received.
    pub dst: Option<String>,
    /// Site as received.
    pub site: Option<String>,
    /// UTM tags, when the forwarding request carries them (routing rules may match on them).
    pub utm_source: Option<String>,
    pub utm_medium: Option<String>,
    pub utm_campaign: Option<String>,
}

/// What the routing rules say before the owner is looked up.
enum RuleOutcome {
    /// The rule answered (`forward_to`, or `ignore`).
    Decided(LookupDecision),
    /// Decide with this policy.
    Policy(LookupPolicy),
}

/// How a lookup reached its answer ([`LookupService::explain`]): the steps [`decide`] and the
/// routing rules took, with the facts they used.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LookupExplanation {
    /// The caller in E.164, `None` when it is not a number.
    pub caller: Option<PhoneNumber>,
    /// The first matching routing rule, `name (file:line)`.
    pub rule: Option<String>,
    /// The policy in force (`lookup.policy`, or the rule's `lookup_policy`).
    pub policy: Option<&'static str>,
    /// Where the owner came from: `mirror` (the owner mirror), `index` (the owner index) or
    /// `crm` (asked now).
    pub owner_source: Option<&'static str>,
    /// The caller's customer in the CRM, if any.
    pub customer_id: Option<u64>,
    /// The customer's responsible manager.
    pub owner: Option<ManagerId>,
    /// The owner's status and presence as the decision saw them (`owner_if_available`).
    pub owner_state: Option<ManagerState>,
    /// The manager who last talked to the caller (`last_talked`).
    pub last_talked: Option<ManagerId>,
    /// The answer: reason, manager and destination.
    pub reason: &'static str,
    pub manager_id: Option<ManagerId>,
    pub destination: Option<String>,
}

impl LookupExplanation {
    /// The explanation as a step of the call's trail (the caller's number left out: trails
    /// hold no client numbers).
    pub fn into_trail(self) -> TrailKind {
        TrailKind::Lookup {
            rule: self.rule,
            policy: self.policy.map(str::to_owned),
            owner_source: self.owner_source.map(str::to_owned),
            customer_id: self.customer_id,
            owner: self.owner,
            owner_state: self.owner_state,
            last_talked: self.last_talked,
            reason: self.reason.to_owned(),
            manager_id: self.manager_id,
            destination: self.destination,
        }
    }
}

/// The lookup gives up this much before `lookup.deadline_ms`: tokio's timer has 1 ms
/// granularity and a wake-up on a busy runtime lands a few ms late, and the answer must still
/// leave within the deadline (load-tests/RESULTS.md: 306 ms for 300 without a margin, 305.4 ms with 3 ms).
pub const DEADLINE_MARGIN: Duration = Duration::from_millis(10);

/// Most distinct `dst` values whose normalization the lookup remembers.
const TRACKING_NUMBER_CACHE: usize = 1024;

/// The index lookup's result for one number.
type FetchResult = Option<OwnerEntry>;

pub struct LookupService {
    store: Arc<dyn Store>,
    crm: Arc<dyn Crm>,
    /// The owner mirror, when `[sync]` is on.
    mirror: Option<Arc<SharedMirror>>,
    /// The managers' states, in memory.
    managers: Arc<ManagerBoard>,
    directory: Arc<ManagerDirectory>,
    normalizer: PhoneNormalizer,
    /// `[lookup]`.
    config: LookupOptions,
    /// `[[sites]]`: a lookup that names no `site` gets the one whose tracking numbers hold
    /// its `dst` (for rules on `site`).
    sites: Sites,
    metrics: Arc<Metrics>,
    /// Routing rules (`forward_to`, `lookup_policy`, `ignore`), reloadable.
    rules: Arc<RuleBook>,
    /// In-flight CRM fetches by number; a waiter subscribes instead of asking again.
    inflight: Mutex<HashMap<PhoneNumber, watch::Receiver<Option<FetchResult>>>>,
    /// Normalized `dst` values seen by lookups (see [`LookupService::tracking_number`]).
    tracking_numbers: RwLock<HashMap<String, Option<PhoneNumber>>>,
    /// Where each decision goes on its way to its call's trail.
    trail: LookupTrail,
}

impl LookupService {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        crm: Arc<dyn Crm>,
        mirror: Option<Arc<SharedMirror>>,
        managers: Arc<ManagerBoard>,
        directory: Arc<ManagerDirectory>,
        normalizer: PhoneNormalizer,
        config: LookupOptions,
        sites: Sites,
        metrics: Arc<Metrics>,
        rules: Arc<RuleBook>,
        trail: LookupTrail,
    ) -> Arc<Self> {
        Arc::new(LookupService {
            store,
            crm,
            mirror,
            managers,
            directory,
            normalizer,
            config,
            sites,
            metrics,
            rules,
            inflight: Mutex::new(HashMap::new()),
            tracking_numbers: RwLock::new(HashMap::new()),
            trail,
        })
    }

    /// Answers within the deadline, whatever the CRM or the store do.
    ///
    /// The common path (index and manager state in memory) completes on its first poll, so
    /// it is polled once before any timer is armed: a timer per lookup is a measurable share
    /// of the hot path's cost (load-tests/RESULTS.md). Only a lookup that has to wait (a CRM
    /// fetch, a remote store) gets the deadline timer, armed from the lookup's start.
    ///
    /// The decision and the facts it used go to the call's trail through
    /// [`LookupTrail::offer`] (a bounded channel; nothing awaited here), within
    /// `lookup.trail_max_per_sec` ([`LookupTrail::admit`]; a lookup beyond it gathers no
    /// facts for the trail).
    pub async fn lookup(self: &Arc<Self>, request: &LookupRequest) -> LookupDecision {
        let started = Instant::now();
        // Boxed, and only for a lookup the trail records: the common path's state (and so the
        // one allocation per request that holds it, http::server) stays small.
        let mut trace = self
            .trail
            .admit()
            .then(|| Box::new(LookupExplanation::default()));
        let decision = {
            let mut resolve = std::pin::pin!(self.resolve_traced(request, trace.as_deref_mut()));
            match futures::poll!(resolve.as_mut()) {
                std::task::Poll::Ready(decision) => decision,
                std::task::Poll::Pending => {
                    let budget = self.config.deadline.saturating_sub(DEADLINE_MARGIN);
                    let deadline = tokio::time::Instant::from_std(started) + budget;
                    // Boxed, as a miss's waits are (resolve_traced): only a lookup that
                    // waits pays for its timer's state.
                    match Box::pin(tokio::time::timeout_at(deadline, resolve)).await {
                        Ok(decision) => decision,
                        Err(_) => LookupDecision::nobody(LookupReason::Timeout),
                    }
                }
            }
        };
        self.metrics.observe_lookup(started.elapsed());
        self.metrics.lookup_outcome(decision.reason).inc();
        if let Some(trace) = trace {
            self.offer_to_trail(request, &decision, *trace);
        }
        decision
    }

    /// Hands the decision to the trail recorder, keyed by the request's call id or else the
    /// caller; a decision that names neither is not recorded.
    fn offer_to_trail(
        &self,
        request: &LookupRequest,
        decision: &LookupDecision,
        mut trace: LookupExplanation,
    ) {
        let Some(key) = LookupKey::of(request.call_id.as_deref(), trace.caller.take()) else {
            return;
        };
        trace.reason = decision.reason.as_str();
        trace.manager_id = decision.manager_id;
        trace.destination = decision.destination.clone();
        self.trail.offer(LookupRecord {
            key,
            step: TrailStep {
                at_ms: crate::store::now_ms(),
                kind: trace.into_trail(),
            },
        });
    }

    /// Stores the decisions [`LookupService::lookup`] offered, until `token` is cancelled
    /// (then what is already queued is stored too), in batches ([`call_trail::next_batch`]),
    /// each in one store round trip ([`call_trail::store_lookups`]): a handful of store
    /// commits a second however many lookups are recorded. The owner's status, when the decision did not need it (policies
    /// other than `owner_if_available`), is read here, off the lookup's path.
    pub async fn record_decisions(
        self: Arc<Self>,
        mut records: mpsc::Receiver<LookupRecord>,
        token: CancellationToken,
    ) {
        loop {
            let mut batch = call_trail::next_batch(&mut records, &token).await;
            if batch.is_empty() {
                return;
            }
            for record in &mut batch {
                if let TrailKind::Lookup {
                    owner: Some(owner),
                    owner_state: owner_state @ None,
                    ..
                } = &mut record.step.kind
                {
                    *owner_state = self.active_state(*owner);
                }
            }
            let stored = call_trail::store_lookups(&*self.store, batch).await;
            self.metrics.lookup_trail_recorded.inc_by(stored as u64);
        }
    }

    /// The state of a manager who may be a destination; `None` for one the CRM lists as
    /// inactive.
    fn active_state(&self, id: ManagerId) -> Option<ManagerState> {
        self.is_active(id).then(|| self.managers.get(id))
    }

    /// Whether the CRM lists this user as active (always, without the mirror).
    fn is_active(&self, id: ManagerId) -> bool {
        self.mirror.as_ref().is_none_or(|m| m.is_active(id))
    }

    /// What a lookup for `request` would answer now, and why. Like a lookup it may ask the
    /// CRM (and fill the owner index) on a miss; unlike one it has no deadline and counts in
    /// no metric.
    pub async fn explain(self: &Arc<Self>, request: &LookupRequest) -> LookupExplanation {
        let mut trace = LookupExplanation::default();
        let decision = self.resolve_traced(request, Some(&mut trace)).await;
        if let (Some(owner), None) = (trace.owner, trace.owner_state) {
            trace.owner_state = self.active_state(owner);
        }
        trace.reason = decision.reason.as_str();
        trace.manager_id = decision.manager_id;
        trace.destination = decision.destination;
        trace
    }

    /// Applies the first matching routing rule (SPEC §5): its `forward_to` answers at once
    /// (reason `rule`), `ignore = true` answers nobody (reason `rule`), `lookup_policy`
    /// replaces `lookup.policy`; a rule with none of these leaves the configured policy. Rules
    /// are evaluated even for callers that are not numbers (matchers on the caller then fail).
    fn apply_rules(
        &self,
        request: &LookupRequest,
        caller: Option<&PhoneNumber>,
        trace: Option<&mut LookupExplanation>,
    ) -> RuleOutcome {
        let rules = self.rules.current();
        if rules.is_empty() {
            return RuleOutcome::Policy(self.config.policy);
        }
        let site_from_dst = request.site.is_none() && rules.needs_site() && !self.sites.is_empty();
        let dst = match &request.dst {
            Some(raw) if rules.needs_dst() || site_from_dst => self.tracking_number(raw),
            _ => None,
        };
        let site = request.site.as_deref().or_else(|| {
            let dst = dst.as_ref().filter(|_| site_from_dst)?;
            self.sites.by_tracking_number(dst).map(|s| s.code.as_str())
        });
        let mut ctx = MatchContext::for_lookup(caller, dst.as_ref(), site, Utc::now());
        ctx.utm_source = request.utm_source.as_deref();
        ctx.utm_medium = request.utm_medium.as_deref();
        ctx.utm_campaign = request.utm_campaign.as_deref();
        let Some(rule) = rules.first_match(&ctx) else {
            return RuleOutcome::Policy(self.config.policy);
        };
        if let Some(trace) = trace {
            trace.rule = Some(format!("{} ({}:{})", rule.name, rule.file, rule.line));
        }
        match rule.lookup_override() {
            LookupOverride::None => RuleOutcome::Policy(self.config.policy),
            LookupOverride::Policy(policy) => RuleOutcome::Policy(policy),
            LookupOverride::Nobody => {
                RuleOutcome::Decided(LookupDecision::nobody(LookupReason::Rule))
            }
            LookupOverride::Forward {
                destination,
                manager,
            } => RuleOutcome::Decided(LookupDecision {
                destination: Some(destination.to_owned()),
                manager_id: manager.or_else(|| self.directory.by_sip(destination).map(|m| m.id)),
                reason: LookupReason::Rule,
            }),
        }
    }

    /// The normalized `dst` of a lookup. A shop has a handful of tracking numbers and every
    /// lookup repeats one of them, so their normalizations are remembered (bounded: an
    /// unbounded set of distinct values could otherwise grow the map without limit).
    fn tracking_number(&self, raw: &str) -> Option<PhoneNumber> {
        if let Some(known) = self
            .tracking_numbers
            .read()
            .expect("tracking number cache poisoned")
            .get(raw)
        {
            return known.clone();
        }
        let parsed = self.normalizer.parse(raw).ok().map(|p| p.number);
        let mut cache = self
            .tracking_numbers
            .write()
            .expect("tracking number cache poisoned");
        if cache.len() < TRACKING_NUMBER_CACHE {
            cache.insert(raw.to_owned(), parsed.clone());
        }
        parsed
    }

    /// The lookup's decision; with `trace`, also the facts it used (the hot path passes
    /// `None` and pays only for the checks).
    async fn resolve_traced(
        self: &Arc<Self>,
        request: &LookupRequest,
        mut trace: Option<&mut LookupExplanation>,
    ) -> LookupDecision {
        let caller = self
            .normalizer
            .parse(&request.caller)
            .ok()
            .map(|p| p.number);
        if let Some(trace) = trace.as_deref_mut() {
            trace.caller.clone_from(&caller);
        }
        let policy = match self.apply_rules(request, caller.as_ref(), trace.as_deref_mut()) {
            RuleOutcome::Decided(decision) => return decision,
            RuleOutcome::Policy(policy) => policy,
        };
        if let Some(trace) = trace.as_deref_mut() {
            trace.policy = Some(policy.as_str());
        }
        let Some(phone) = caller else {
            return LookupDecision::nobody(LookupReason::NotANumber);
        };
        if policy == LookupPolicy::IgnoreOwner {
            return LookupDecision::nobody(LookupReason::IgnoreOwner);
        }
        let mirrored = self
            .mirror
            .as_ref()
            .map(|m| (m.owner(&phone), m.imported()));
        let (owner, source, owner_active) = match mirrored {
            Some((Some(found), _)) => (
                OwnerEntry {
                    customer_id: Some(found.customer),
                    manager_id: found.manager,
                },
                "mirror",
                found.active,
            ),
            Some((None, true)) if self.config.on_miss == OnMiss::Nobody => {
                if let Some(trace) = trace {
                    trace.owner_source = Some("mirror");
                }
                return LookupDecision::nobody(LookupReason::None);
            }
            // Boxed, as the call log read below: the common path's state stays small.
            _ => match Box::pin(self.owner_from_index_or_crm(&phone)).await {
                Some((entry, source)) => {
                    let active = entry.manager_id.is_none_or(|m| self.is_active(m));
                    (entry, source, active)
                }
                None => return LookupDecision::nobody(LookupReason::Unavailable),
            },
        };
        let last_talked = if policy == LookupPolicy::LastTalked {
            self.store.last_talked(&phone).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "Call log read failed; falling back to the owner.");
                None
            })
        } else {
            None
        };
        // A user the CRM lists as inactive is never a destination (SPEC §3.1).
        let inactive_owner = owner.manager_id.is_some() && !owner_active;
        let facts = CallerFacts {
            owner: owner.manager_id.filter(|_| owner_active),
            last_talked: last_talked.filter(|m| self.is_active(*m)),
        };
        let state = match facts.owner {
            Some(id) if policy == LookupPolicy::OwnerIfAvailable => self.managers.get(id),
            _ => ManagerState::default(),
        };
        if let Some(trace) = trace {
            trace.owner_source = Some(source);
            trace.customer_id = owner.customer_id.map(|c| c.0);
            trace.owner = owner.manager_id;
            trace.last_talked = last_talked;
            trace.owner_state = match facts.owner {
                Some(_) if policy == LookupPolicy::OwnerIfAvailable => Some(state),
                Some(id) => Some(self.managers.get(id)),
                None => None,
            };
        }
        let decision = decide(policy, facts, &self.directory, |_| state);
        if inactive_owner && decision.reason == LookupReason::None {
            return LookupDecision::nobody(LookupReason::OwnerUnavailable);
        }
        decision
    }

    /// The owner index (filled by earlier fetches and by the worker), else the CRM; with
    /// where the entry came from (`index` or `crm`).
    async fn owner_from_index_or_crm(
        self: &Arc<Self>,
        phone: &PhoneNumber,
    ) -> Option<(OwnerEntry, &'static str)> {
        match self.store.get_owner(phone).await {
            Ok(Some(entry)) => Some((entry, "index")),
            Ok(None) => self.fetch_owner(phone.clone()).await.map(|e| (e, "crm")),
            Err(e) => {
                tracing::warn!(error = %e, "Owner index read failed; answering nobody.");
                None
            }
        }
    }

    /// Joins or starts the one CRM fetch for `phone`; `None` when the CRM failed.
    async fn fetch_owner(self: &Arc<Self>, phone: PhoneNumber) -> Option<OwnerEntry> {
        let mut rx = {
            let mut inflight = self.inflight.lock().expect("inflight lock poisoned");
            match inflight.get(&phone) {
                Some(rx) => rx.clone(),
                None if inflight.len() >= self.config.max_crm_fetches => {
                    // Debug, not warn: with a hung CRM this is every miss, hundreds a second;
                    // the `unavailable` lookup outcome counts them.
                    tracing::debug!(
                        in_flight = inflight.len(),
                        "Too many CRM owner lookups in flight; answering nobody without asking."
                    );
                    return None;
                }
                None => {
                    let (tx, rx) = watch::channel(None);
                    inflight.insert(phone.clone(), rx.clone());
                    let this = Arc::clone(self);
                    tokio::spawn(async move {
                        let result = this.fetch_and_index(&phone).await;
                        this.inflight
                            .lock()
                            .expect("inflight lock poisoned")
                            .remove(&phone);
                        let _ = tx.send(Some(result));
                    });
                    rx
                }
            }
        };
        let result = *rx.wait_for(Option::is_some).await.ok()?;
        result.flatten()
    }

    async fn fetch_and_index(&self, phone: &PhoneNumber) -> FetchResult {
        self.metrics.lookup_crm_fetches.inc();
        match self.crm.responsible_manager(phone).await {
            Ok(found) => {
                let entry = OwnerEntry {
                    customer_id: found.customer_id,
                    manager_id: found.manager_id,
                };
                let ttl = if entry.is_negative() {
                    self.config.negative_ttl
                } else {
                    self.config.owner_ttl
                };
                if let Err(e) = self.store.put_owner(phone, entry, ttl).await {
                    tracing::warn!(error = %e, phone = %phone, "Owner index write failed.");
                }
                Some(entry)
            }
            Err(e) => {
                tracing::warn!(error = %e, phone = %phone, "CRM owner lookup failed; answering nobody.");
                None
            }
        }
    }
}
