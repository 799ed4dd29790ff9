//! Configuration: `config/default.toml` (built in) → an optional file → `CALLGATE__SECTION__KEY`
//! environment variables, into typed [`Settings`], then validated ([`Settings::validate`])
//! into the pieces the application needs. Any error is a [`ConfigError`]; `main` prints it
//! and exits with code 64 (EX_USAGE).
//!
//! Secrets are `SecretString`: their `Debug` prints `[REDACTED]`, so logging a `Settings`
//! never leaks them.

use std::{collections::HashSet, net::IpAddr, path::PathBuf, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

pub use crate::domain::plan::{CreateOnIncoming, CreateOnOutgoing};
use crate::domain::{
    call::FieldAliases,
    lookup::LookupPolicy,
    manager::{Manager, ManagerDirectory, ManagerId},
    phone_number::{PhoneNormalizer, PhoneNumber},
    plan::{PlannerConfig, TaskTexts},
};

/// The built-in defaults, every key commented.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");
/// Environment variable prefix; `__` separates section and key.
pub const ENV_PREFIX: &str = "CALLGATE__";
/// Exit code for an invalid configuration (sysexits EX_USAGE).
pub const EXIT_CONFIG: i32 = 64;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub phone: PhoneSettings,
    pub lookup: LookupSettings,
    pub crm: CrmSettings,
    pub store: StoreSettings,
    pub ringostat: RingostatSettings,
    pub worker: WorkerSettings,
    pub admin: AdminSettings,
    pub rules: RulesSettings,
    pub telemetry: TelemetrySettings,
    /// `[[managers]]`.
    #[serde(default)]
    pub managers: Vec<ManagerSettings>,
    /// `[[sites]]`.
    #[serde(default)]
    pub sites: Vec<SiteSettings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Listen address.
    pub host: IpAddr,
    /// Listen port; 0 = any free port.
    pub port: u16,
    /// Largest accepted request body.
    pub body_limit_bytes: usize,
    /// Hard cap on handling one request.
    pub request_timeout_ms: u64,
    /// Bound on reading a request's headers, also the keep-alive idle bound (0 = none).
    pub header_read_timeout_ms: u64,
    /// Bound on reading a request's body, from its headers (0 = none).
    pub body_read_timeout_ms: u64,
    /// Most connections served at once; beyond it new ones wait in the listen backlog.
    pub max_connections: usize,
    /// Grace period on shutdown.
    pub shutdown_grace_secs: u64,
    /// Per-source-IP limit on public endpoints (0 = off).
    pub per_ip_rps: u32,
    /// Allowed client IPs on Ringostat endpoints (empty = any).
    pub ip_allowlist: Vec<IpAddr>,
    /// Proxies whose `X-Forwarded-For`/`Forwarded` name the client (CIDRs).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhoneSettings {
    /// Region for numbers without a country code.
    pub default_region: String,
    /// The shop's own lines.
    pub own_numbers: Vec<String>,
}

/// Output format of `/ringostat/route`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LookupFormat {
    Text,
    Json,
    Jsonrpc,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupSettings {
    /// Every lookup answers within this.
    pub deadline_ms: u64,
    /// Default output format.
    pub format: LookupFormat,
    /// JSON key of the destination.
    pub response_key: String,
    /// Default policy.
    pub policy: LookupPolicy,
    /// TTL of a known owner in the index.
    pub owner_ttl_secs: u64,
    /// TTL of "no customer" in the index.
    pub negative_ttl_secs: u64,
    /// Most CRM owner fetches in flight at once.
    pub max_crm_fetches: usize,
}

impl LookupSettings {
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }
    pub fn owner_ttl(&self) -> Duration {
        Duration::from_secs(self.owner_ttl_secs)
    }
    pub fn negative_ttl(&self) -> Duration {
        Duration::from_secs(self.negative_ttl_secs)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CrmKind {
    Sandbox,
    Retailcrm,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrmSettings {
    pub kind: CrmKind,
    /// retailCRM account URL.
    pub base_url: String,
    /// retailCRM API key.
    pub api_key: SecretString,
    /// The integration module's `clientId`, checked on retailCRM's callbacks (empty = they
    /// are refused).
    pub client_id: SecretString,
    /// One CRM request's timeout.
    pub timeout_ms: u64,
    /// Store code for events whose site cannot be told.
    pub default_site: String,
    /// General CRM requests per second.
    pub rate_limit_rps: u32,
    /// Telephony CRM requests per second.
    pub telephony_rate_limit_rps: u32,
    /// Share of both rates reserved for lookups; the worker gets the rest.
    pub lookup_share: f64,
    pub create_on_incoming: CreateOnIncoming,
    pub create_on_outgoing: CreateOnOutgoing,
    /// Senior manager (0 = none).
    pub senior_manager_id: u64,
    /// Status groups whose orders are closed.
    pub closed_status_groups: Vec<String>,
    /// Status of orders created from calls.
    pub default_order_status: String,
    /// Window of one call-back task per caller, minutes.
    pub callback_window_min: u32,
    /// Also send a `hangup` pop-up after an answered call.
    pub popup_after_call: bool,
    /// Texts of the tasks callgate creates (`{phone}`, `{manager}`, `{count}`, `{number}`).
    #[serde(default)]
    pub task_texts: TaskTexts,
}

impl CrmSettings {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
    pub fn senior_manager(&self) -> Option<ManagerId> {
        (self.senior_manager_id != 0).then_some(ManagerId(self.senior_manager_id))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Embedded,
    Redis,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    pub kind: StoreKind,
    /// Embedded store file.
    pub path: PathBuf,
    /// Redis URL.
    pub redis_url: String,
    /// Prefix of shared keys.
    pub key_prefix: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RingostatSettings {
    /// `?token=` secret of the webhook.
    pub webhook_token: SecretString,
    /// Ringostat API base URL.
    pub api_base_url: String,
    /// Ringostat API key.
    pub auth_key: SecretString,
    /// Ringostat project id.
    pub project_id: String,
    /// `[ringostat.fields]`: accepted payload names per logical field; a list given here
    /// replaces that field's default list.
    #[serde(default)]
    pub fields: FieldAliases,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    pub enabled: bool,
    pub concurrency: usize,
    pub lease_secs: u64,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Bearer token of `/admin` (empty = disabled).
    pub token: SecretString,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesSettings {
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    pub format: LogFormat,
}

/// One or several strings (`sip = "a"` or `sip = ["a", "b"]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagerSettings {
    pub crm_user_id: u64,
    pub ringostat_staff_id: Option<i64>,
    pub sip: Option<OneOrMany>,
    pub code: Option<String>,
    pub phone: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSettings {
    /// retailCRM store code.
    pub code: String,
    #[serde(default)]
    pub project_ids: Vec<String>,
    #[serde(default)]
    pub tracking_numbers: Vec<String>,
}

/// A site with its tracking numbers normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub code: String,
    pub project_ids: Vec<String>,
    pub tracking_numbers: Vec<PhoneNumber>,
}

/// What [`Settings::validate`] derives: parsed, cross-checked pieces.
#[derive(Debug, Clone)]
pub struct Validated {
    pub normalizer: PhoneNormalizer,
    pub directory: ManagerDirectory,
    pub sites: Vec<Site>,
    /// Own lines from `phone.own_numbers` (tracking numbers and manager phones are in
    /// `sites` / `directory`).
    pub own_numbers: Vec<PhoneNumber>,
    /// The planner's configuration (own numbers: all three kinds).
    pub planner: PlannerConfig,
}

impl Settings {
    /// Loads defaults → `file` (if given; must exist) → env.
    pub fn load(file: Option<&std::path::Path>) -> Result<Settings, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.exists() {
                return Err(invalid(format!(
                    "configuration file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
        Self::extract(figment)
    }

    /// Defaults plus a TOML string (tests and `rules explain`).
    pub fn from_toml(extra: &str) -> Result<Settings, ConfigError> {
        Self::extract(Figment::from(Toml::string(DEFAULT_TOML)).merge(Toml::string(extra)))
    }

    fn extract(figment: Figment) -> Result<Settings, ConfigError> {
        figment
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))
    }

    /// Cross-field checks; parses numbers and builds the manager directory.
    pub fn validate(&self) -> Result<Validated, ConfigError> {
        let normalizer = PhoneNormalizer::new(&self.phone.default_region)
            .map_err(|e| invalid(format!("phone.default_region: {e}")))?;
        let parse = |what: &str, raw: &str| {
            normalizer
                .parse(raw)
                .map(|p| p.number)
                .map_err(|e| invalid(format!("{what}: {raw:?} is not a phone number: {e}")))
        };
        if self.lookup.deadline_ms == 0 || self.lookup.deadline_ms > 10_000 {
            return Err(invalid("lookup.deadline_ms must be between 1 and 10000"));
        }
        if self.lookup.max_crm_fetches == 0 {
            return Err(invalid("lookup.max_crm_fetches must be at least 1"));
        }
        if self.lookup.response_key.trim().is_empty() {
            return Err(invalid("lookup.response_key must not be empty"));
        }
        if self.server.max_connections == 0 {
            return Err(invalid("server.max_connections must be at least 1"));
        }
        if self.server.body_limit_bytes < 1024 {
            return Err(invalid("server.body_limit_bytes must be at least 1024"));
        }
        if self.crm.kind == CrmKind::Retailcrm {
            let url = url::Url::parse(&self.crm.base_url).map_err(|e| {
                invalid(format!(
                    "crm.base_url {:?} is not a URL ({e}); it is required when crm.kind = \"retailcrm\"",
                    self.crm.base_url
                ))
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(invalid("crm.base_url must be an http(s) URL"));
            }
            if self.crm.api_key.expose_secret().is_empty() {
                return Err(invalid(
                    "crm.api_key is required when crm.kind = \"retailcrm\"",
                ));
            }
        }
        if self.crm.timeout_ms == 0 {
            return Err(invalid("crm.timeout_ms must be positive"));
        }
        if self.crm.rate_limit_rps == 0 || self.crm.telephony_rate_limit_rps == 0 {
            return Err(invalid(
                "crm.rate_limit_rps and crm.telephony_rate_limit_rps must be positive",
            ));
        }
        if !(self.crm.lookup_share > 0.0 && self.crm.lookup_share < 1.0) {
            return Err(invalid(
                "crm.lookup_share must be above 0 and below 1 (a share of the CRM rates)",
            ));
        }
        if self.crm.default_site.trim().is_empty() {
            return Err(invalid("crm.default_site must not be empty"));
        }
        if self.store.kind == StoreKind::Redis && self.store.redis_url.is_empty() {
            return Err(invalid(
                "store.redis_url is required when store.kind = \"redis\"",
            ));
        }
        if self.store.kind == StoreKind::Embedded && self.store.path.as_os_str().is_empty() {
            return Err(invalid("store.path must not be empty"));
        }
        if self.worker.concurrency == 0 {
            return Err(invalid("worker.concurrency must be at least 1"));
        }
        if self.worker.retry_base_ms == 0 || self.worker.retry_max_ms < self.worker.retry_base_ms {
            return Err(invalid(
                "worker.retry_base_ms must be positive and at most worker.retry_max_ms",
            ));
        }
        let mut managers = Vec::with_capacity(self.managers.len());
        for (i, m) in self.managers.iter().enumerate() {
            let what = format!("managers[{i}]");
            if m.crm_user_id == 0 {
                return Err(invalid(format!("{what}.crm_user_id must be positive")));
            }
            let phone = m
                .phone
                .as_deref()
                .map(|p| parse(&format!("{what}.phone"), p))
                .transpose()?;
            let sip = m.sip.clone().map(OneOrMany::into_vec).unwrap_or_default();
            if sip.iter().any(|s| s.trim().is_empty()) {
                return Err(invalid(format!("{what}.sip has an empty login")));
            }
            managers.push(Manager {
                id: ManagerId(m.crm_user_id),
                ringostat_staff_id: m.ringostat_staff_id,
                sip,
                code: m.code.clone(),
                phone,
            });
        }
        let directory = ManagerDirectory::new(managers).map_err(|e| invalid(e.to_string()))?;
        let mut sites = Vec::with_capacity(self.sites.len());
        for (i, s) in self.sites.iter().enumerate() {
            if s.code.trim().is_empty() {
                return Err(invalid(format!("sites[{i}].code must not be empty")));
            }
            let tracking_numbers = s
                .tracking_numbers
                .iter()
                .map(|n| parse(&format!("sites[{i}].tracking_numbers"), n))
                .collect::<Result<Vec<_>, _>>()?;
            sites.push(Site {
                code: s.code.clone(),
                project_ids: s.project_ids.clone(),
                tracking_numbers,
            });
        }
        let own_numbers = self
            .phone
            .own_numbers
            .iter()
            .map(|n| parse("phone.own_numbers", n))
            .collect::<Result<Vec<_>, _>>()?;
        if self.crm.callback_window_min == 0 {
            return Err(invalid("crm.callback_window_min must be at least 1"));
        }
        let mut all_own: HashSet<PhoneNumber> = own_numbers.iter().cloned().collect();
        all_own.extend(
            sites
                .iter()
                .flat_map(|s| s.tracking_numbers.iter().cloned()),
        );
        all_own.extend(directory.all().iter().filter_map(|m| m.phone.clone()));
        let planner = PlannerConfig {
            create_on_incoming: self.crm.create_on_incoming,
            create_on_outgoing: self.crm.create_on_outgoing,
            senior_manager_id: self.crm.senior_manager(),
            callback_window_min: self.crm.callback_window_min,
            default_order_status: self.crm.default_order_status.clone(),
            default_site: self.crm.default_site.clone(),
            own_numbers: all_own,
            texts: self.crm.task_texts.clone(),
            popup_after_call: self.crm.popup_after_call,
        };
        Ok(Validated {
            normalizer,
            directory,
            sites,
            own_numbers,
            planner,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load_and_validate() {
        let s = Settings::from_toml("").expect("defaults parse");
        assert_eq!(s.lookup.deadline_ms, 300);
        assert_eq!(s.lookup.policy, LookupPolicy::OwnerIfAvailable);
        assert_eq!(s.crm.kind, CrmKind::Sandbox);
        assert_eq!(s.store.kind, StoreKind::Embedded);
        // SPEC §9: slow clients are cut off by default.
        assert!(s.server.header_read_timeout_ms > 0 && s.server.body_read_timeout_ms > 0);
        assert_eq!(s.server.max_connections, 10_000);
        s.validate().expect("defaults are valid");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let err = Settings::from_toml("[lookup]\ndeadline = 5\n").unwrap_err();
        assert!(err.to_string().contains("deadline"), "{err}");
    }

    #[test]
    fn retailcrm_needs_url_and_key() {
        let s = Settings::from_toml("[crm]\nkind = \"retailcrm\"\n").unwrap();
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("crm.base_url"), "{err}");
        let s = Settings::from_toml(
            "[crm]\nkind = \"retailcrm\"\nbase_url = \"https://x.retailcrm.ru\"\n",
        )
        .unwrap();
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("crm.api_key"), "{err}");
    }

    #[test]
    fn secrets_do_not_appear_in_debug() {
        let s = Settings::from_toml(
            "[crm]\napi_key = \"k-very-secret\"\n[admin]\ntoken = \"t-very-secret\"\n",
        )
        .unwrap();
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("very-secret"), "{dbg}");
    }

    #[test]
    fn duplicate_manager_identities_are_refused() {
        let s = Settings::from_toml(
            "[[managers]]\ncrm_user_id = 1\nsip = \"a\"\n[[managers]]\ncrm_user_id = 2\nsip = [\"A\"]\n",
        )
        .unwrap();
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("sip login"), "{err}");
    }
}
