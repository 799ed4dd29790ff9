//! Configuration: `config/default.toml` (built in) → an optional file → `CALLGATE__SECTION__KEY`
//! environment variables, into the raw [`Settings`] (the file's shape, keys in their documented
//! units), then validated once into [`Config`] (durations as `Duration`, numbers parsed, the
//! manager directory, sites, planner and retry schedule built): [`Config::load`]. Tests build
//! a [`Settings`] in code ([`Settings::defaults`], then set fields) and validate it with
//! `Config::try_from`. Any error is a [`ConfigError`]; `main` prints it and exits with code
//! 64 (EX_USAGE).
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

use crate::credential::Credential;
pub use crate::domain::plan::{CreateOnIncoming, CreateOnOutgoing};
use crate::domain::{
    call::FieldAliases,
    lookup::{LookupPolicy, OnMiss},
    manager::{Manager, ManagerDirectory, ManagerId},
    phone_number::{PhoneNormalizer, PhoneNumber},
    plan::{PlannerConfig, TaskTexts},
    site::{Site, Sites},
};
use crate::worker::retry::RetrySchedule;

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

/// The configuration as written (`config/default.toml`'s shape); [`Config`] is what the
/// application uses.
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
    pub sync: SyncSettings,
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
    /// The address retailCRM reaches callgate at (`callgate register` builds the module's
    /// callback URLs from it).
    pub public_url: String,
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
    /// After the owner mirror's first import, a number it does not have: `nobody` or
    /// `ask_crm`.
    pub on_miss: OnMiss,
    /// Most lookup decisions recorded in call trails per second; 0 records none.
    pub trail_max_per_sec: u32,
}

/// `[sync]`: the owner mirror (flow F, SPEC §3.1).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSettings {
    /// Import the CRM's customers and follow its history and users.
    pub enabled: bool,
    /// `customers/history` poll interval.
    pub history_interval_secs: u64,
    /// `users` poll interval.
    pub users_interval_secs: u64,
    /// Poll lease time on the Redis store (another instance takes over after it).
    pub lease_secs: u64,
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
    /// The telephony module's `clientId`: retailCRM sends it on every callback (secret; empty
    /// = the callbacks are refused).
    pub client_id: Credential,
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
    /// Most calls per `telephony/calls/upload` (1..=50).
    pub calls_upload_batch: usize,
    /// A batch of call records is sent at the latest this long after its first call.
    pub calls_upload_flush_ms: u64,
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
    pub webhook_token: Credential,
    /// Ringostat API base URL.
    pub api_base_url: String,
    /// Ringostat API key.
    pub auth_key: SecretString,
    /// Ringostat project id.
    pub project_id: String,
    /// Timeout of one Ringostat API request.
    pub api_timeout_ms: u64,
    /// IANA time zone of the Ringostat project (`calls/list` windows are its local time).
    pub timezone: String,
    /// Seconds between two reconciliation runs (flow E).
    pub reconcile_interval_secs: u64,
    /// How far each run reaches back before the last reconciled point, seconds.
    pub reconcile_overlap_secs: u64,
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
    pub token: Credential,
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

impl RingostatSettings {
    /// Whether the Ringostat API is configured (key and project): reconciliation runs and
    /// click-to-call can place calls.
    pub fn api_configured(&self) -> bool {
        !self.auth_key.expose_secret().is_empty() && !self.project_id.trim().is_empty()
    }
    pub fn api_timeout(&self) -> Duration {
        Duration::from_millis(self.api_timeout_ms)
    }
    pub fn reconcile_interval(&self) -> Duration {
        Duration::from_secs(self.reconcile_interval_secs)
    }
    pub fn reconcile_overlap(&self) -> Duration {
        Duration::from_secs(self.reconcile_overlap_secs)
    }
    /// The project's time zone.
    pub fn tz(&self) -> Result<chrono_tz::Tz, ConfigError> {
        self.timezone.parse().map_err(|_| {
            invalid(format!(
                "ringostat.timezone {:?} is not an IANA time zone (e.g. \"Europe/Kyiv\")",
                self.timezone
            ))
        })
    }
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

/// The validated configuration: every key parsed, cross-checked and in the unit it is used
/// in. Built once, by [`Config::load`] (or `Config::try_from(settings)` for settings built
/// in code), and only read from then on.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerOptions,
    /// Parses numbers without a country code in `phone.default_region`.
    pub normalizer: PhoneNormalizer,
    pub lookup: LookupOptions,
    pub crm: CrmOptions,
    pub store: StoreOptions,
    pub ringostat: RingostatSettings,
    pub worker: WorkerOptions,
    pub admin: AdminSettings,
    pub rules: RulesSettings,
    pub telemetry: TelemetrySettings,
    /// `[sync]`; `None` when the owner mirror is off.
    pub sync: Option<SyncOptions>,
    /// `[[managers]]`, cross-checked.
    pub directory: ManagerDirectory,
    /// `[[sites]]`, tracking numbers normalized.
    pub sites: Sites,
    /// The planner's configuration (`[crm]`; own numbers: `phone.own_numbers`, the sites'
    /// tracking numbers and the managers' phones).
    pub planner: PlannerConfig,
}

/// `[server]`, validated.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub host: IpAddr,
    /// 0 = any free port.
    pub port: u16,
    pub body_limit_bytes: usize,
    pub request_timeout: Duration,
    /// Bound on reading a request's headers (`None`: no bound).
    pub header_read_timeout: Option<Duration>,
    /// Bound on reading a request's body, from its headers (`None`: no bound).
    pub body_read_timeout: Option<Duration>,
    /// Most connections served at once; beyond it new ones wait in the listen backlog.
    pub max_connections: usize,
    pub shutdown_grace: Duration,
    /// Per-source-IP limit on public endpoints (0 = off).
    pub per_ip_rps: u32,
    /// Allowed client IPs on Ringostat endpoints (empty = any).
    pub ip_allowlist: Vec<IpAddr>,
    /// Proxies whose `X-Forwarded-For`/`Forwarded` name the client (CIDRs).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The address retailCRM reaches callgate at (`callgate register` builds the module's
    /// callback URLs from it).
    pub public_url: String,
}

/// `[lookup]`, validated.
#[derive(Debug, Clone)]
pub struct LookupOptions {
    /// Every lookup answers within this.
    pub deadline: Duration,
    pub format: LookupFormat,
    pub response_key: String,
    pub policy: LookupPolicy,
    /// How long the owner index keeps a known owner, and "no customer".
    pub owner_ttl: Duration,
    pub negative_ttl: Duration,
    /// Most CRM owner fetches in flight at once; a miss beyond it answers nobody at once
    /// instead of piling up requests on a slow or hung CRM.
    pub max_crm_fetches: usize,
    /// A mirror miss after the first import: nobody, or ask the CRM.
    pub on_miss: OnMiss,
    pub trail_max_per_sec: u32,
}

/// `[sync]`, validated (present when `enabled`).
#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub history_interval: Duration,
    pub users_interval: Duration,
    pub lease: Duration,
}

/// Which CRM callgate talks to.
#[derive(Debug, Clone)]
pub enum CrmBackend {
    /// The embedded sandbox CRM.
    Sandbox,
    /// A real retailCRM account.
    Retailcrm {
        base_url: url::Url,
        api_key: SecretString,
    },
}

/// `[crm]`, validated (the planner's part is [`Config::planner`]).
#[derive(Debug, Clone)]
pub struct CrmOptions {
    pub backend: CrmBackend,
    /// One CRM request's timeout.
    pub timeout: Duration,
    /// Store code for events whose site cannot be told.
    pub default_site: String,
    pub rate_limit_rps: u32,
    pub telephony_rate_limit_rps: u32,
    /// Share of both rates reserved for lookups (strictly between 0 and 1); the worker
    /// gets the rest.
    pub lookup_share: f64,
    /// Status groups whose orders are closed.
    pub closed_status_groups: HashSet<String>,
    /// The telephony module's `clientId` (empty: callbacks that need it answer 503).
    pub client_id: Credential,
    /// Most calls per `telephony/calls/upload`.
    pub calls_upload_batch: usize,
    /// A batch of call records is sent at the latest this long after its first call.
    pub calls_upload_flush: Duration,
}

/// `[store]`, validated.
#[derive(Debug, Clone)]
pub enum StoreOptions {
    Embedded { path: PathBuf },
    Redis { url: String, key_prefix: String },
}

/// `[worker]`, validated.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub enabled: bool,
    pub concurrency: usize,
    /// How long a claimed task stays invisible to other workers.
    pub lease: Duration,
    pub retry: RetrySchedule,
}

impl Config {
    /// Loads defaults → `file` (if given; must exist) → env, and validates.
    pub fn load(file: Option<&std::path::Path>) -> Result<Config, ConfigError> {
        Config::try_from(Settings::load(file)?)
    }
}

impl Settings {
    /// The built-in defaults (`config/default.toml`), for settings built in code.
    pub fn defaults() -> Result<Settings, ConfigError> {
        Self::extract(Figment::from(Toml::string(DEFAULT_TOML)))
    }

    /// Loads defaults → `file` (if given; must exist) → env; not yet validated.
    fn load(file: Option<&std::path::Path>) -> Result<Settings, ConfigError> {
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

    fn extract(figment: Figment) -> Result<Settings, ConfigError> {
        figment
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))
    }
}

/// `value` as an http(s) URL, or an error naming `key`.
fn http_url(key: &str, value: &str) -> Result<url::Url, ConfigError> {
    url::Url::parse(value)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| invalid(format!("{key} {value:?} is not an http(s) URL")))
}

impl TryFrom<Settings> for Config {
    type Error = ConfigError;

    /// The one validation: cross-field checks, numbers parsed, the manager directory built.
    fn try_from(s: Settings) -> Result<Config, ConfigError> {
        let normalizer = PhoneNormalizer::new(&s.phone.default_region)
            .map_err(|e| invalid(format!("phone.default_region: {e}")))?;
        let parse = |what: &str, raw: &str| {
            normalizer
                .parse(raw)
                .map(|p| p.number)
                .map_err(|e| invalid(format!("{what}: {raw:?} is not a phone number: {e}")))
        };
        if s.lookup.deadline_ms == 0 || s.lookup.deadline_ms > 10_000 {
            return Err(invalid("lookup.deadline_ms must be between 1 and 10000"));
        }
        if s.lookup.max_crm_fetches == 0 {
            return Err(invalid("lookup.max_crm_fetches must be at least 1"));
        }
        if s.lookup.response_key.trim().is_empty() {
            return Err(invalid("lookup.response_key must not be empty"));
        }
        if s.server.max_connections == 0 {
            return Err(invalid("server.max_connections must be at least 1"));
        }
        if s.sync.history_interval_secs == 0 || s.sync.users_interval_secs == 0 {
            return Err(invalid(
                "sync.history_interval_secs and sync.users_interval_secs must be positive",
            ));
        }
        if s.sync.lease_secs < 3 {
            return Err(invalid("sync.lease_secs must be at least 3"));
        }
        if s.server.body_limit_bytes < 1024 {
            return Err(invalid("server.body_limit_bytes must be at least 1024"));
        }
        let backend = match s.crm.kind {
            CrmKind::Sandbox => CrmBackend::Sandbox,
            CrmKind::Retailcrm => {
                let base_url = url::Url::parse(&s.crm.base_url).map_err(|e| {
                    invalid(format!(
                        "crm.base_url {:?} is not a URL ({e}); it is required when crm.kind = \"retailcrm\"",
                        s.crm.base_url
                    ))
                })?;
                if !matches!(base_url.scheme(), "http" | "https") {
                    return Err(invalid("crm.base_url must be an http(s) URL"));
                }
                if s.crm.api_key.expose_secret().is_empty() {
                    return Err(invalid(
                        "crm.api_key is required when crm.kind = \"retailcrm\"",
                    ));
                }
                CrmBackend::Retailcrm {
                    base_url,
                    api_key: s.crm.api_key.clone(),
                }
            }
        };
        if s.crm.timeout_ms == 0 {
            return Err(invalid("crm.timeout_ms must be positive"));
        }
        if s.crm.rate_limit_rps == 0 || s.crm.telephony_rate_limit_rps == 0 {
            return Err(invalid(
                "crm.rate_limit_rps and crm.telephony_rate_limit_rps must be positive",
            ));
        }
        if !(s.crm.lookup_share > 0.0 && s.crm.lookup_share < 1.0) {
            return Err(invalid(
                "crm.lookup_share must be above 0 and below 1 (a share of the CRM rates)",
            ));
        }
        if !(1..=crate::worker::call_batch::MAX_CALLS_PER_UPLOAD)
            .contains(&s.crm.calls_upload_batch)
        {
            return Err(invalid("crm.calls_upload_batch must be between 1 and 50"));
        }
        if s.crm.calls_upload_flush_ms == 0 {
            return Err(invalid("crm.calls_upload_flush_ms must be positive"));
        }
        if s.crm.default_site.trim().is_empty() {
            return Err(invalid("crm.default_site must not be empty"));
        }
        let store = match s.store.kind {
            StoreKind::Redis if s.store.redis_url.is_empty() => {
                return Err(invalid(
                    "store.redis_url is required when store.kind = \"redis\"",
                ));
            }
            StoreKind::Redis => StoreOptions::Redis {
                url: s.store.redis_url.clone(),
                key_prefix: s.store.key_prefix.clone(),
            },
            StoreKind::Embedded if s.store.path.as_os_str().is_empty() => {
                return Err(invalid("store.path must not be empty"));
            }
            StoreKind::Embedded => StoreOptions::Embedded {
                path: s.store.path.clone(),
            },
        };
        if s.worker.lease_secs < 3 {
            return Err(invalid(
                "worker.lease_secs must be at least 3 (renewed every third of it)",
            ));
        }
        s.ringostat.tz()?;
        if s.ringostat.api_configured() {
            http_url("ringostat.api_base_url", &s.ringostat.api_base_url)?;
        }
        if s.ringostat.auth_key.expose_secret().is_empty()
            != s.ringostat.project_id.trim().is_empty()
        {
            return Err(invalid(
                "ringostat.auth_key and ringostat.project_id go together: set both or neither",
            ));
        }
        if s.ringostat.reconcile_interval_secs == 0 || s.ringostat.api_timeout_ms == 0 {
            return Err(invalid(
                "ringostat.reconcile_interval_secs and ringostat.api_timeout_ms must be positive",
            ));
        }
        if !s.server.public_url.is_empty() {
            http_url("server.public_url", &s.server.public_url)?;
        }
        if s.worker.concurrency == 0 {
            return Err(invalid("worker.concurrency must be at least 1"));
        }
        if s.worker.retry_base_ms == 0 || s.worker.retry_max_ms < s.worker.retry_base_ms {
            return Err(invalid(
                "worker.retry_base_ms must be positive and at most worker.retry_max_ms",
            ));
        }
        let mut managers = Vec::with_capacity(s.managers.len());
        for (i, m) in s.managers.iter().enumerate() {
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
        let mut sites = Vec::with_capacity(s.sites.len());
        for (i, site) in s.sites.iter().enumerate() {
            if site.code.trim().is_empty() {
                return Err(invalid(format!("sites[{i}].code must not be empty")));
            }
            let tracking_numbers = site
                .tracking_numbers
                .iter()
                .map(|n| parse(&format!("sites[{i}].tracking_numbers"), n))
                .collect::<Result<Vec<_>, _>>()?;
            sites.push(Site {
                code: site.code.clone(),
                project_ids: site.project_ids.clone(),
                tracking_numbers,
            });
        }
        let own_numbers = s
            .phone
            .own_numbers
            .iter()
            .map(|n| parse("phone.own_numbers", n))
            .collect::<Result<Vec<_>, _>>()?;
        if s.crm.callback_window_min == 0 {
            return Err(invalid("crm.callback_window_min must be at least 1"));
        }
        let mut all_own: HashSet<PhoneNumber> = own_numbers.into_iter().collect();
        let sites = Sites::new(sites);
        all_own.extend(sites.tracking_numbers().cloned());
        all_own.extend(directory.all().iter().filter_map(|m| m.phone.clone()));
        let planner = PlannerConfig {
            create_on_incoming: s.crm.create_on_incoming,
            create_on_outgoing: s.crm.create_on_outgoing,
            senior_manager_id: (s.crm.senior_manager_id != 0)
                .then_some(ManagerId(s.crm.senior_manager_id)),
            callback_window_min: s.crm.callback_window_min,
            default_order_status: s.crm.default_order_status.clone(),
            sites: sites.clone(),
            default_site: s.crm.default_site.clone(),
            own_numbers: all_own,
            texts: s.crm.task_texts.clone(),
            popup_after_call: s.crm.popup_after_call,
        };
        Ok(Config {
            server: ServerOptions {
                host: s.server.host,
                port: s.server.port,
                body_limit_bytes: s.server.body_limit_bytes,
                request_timeout: Duration::from_millis(s.server.request_timeout_ms),
                header_read_timeout: (s.server.header_read_timeout_ms > 0)
                    .then(|| Duration::from_millis(s.server.header_read_timeout_ms)),
                body_read_timeout: (s.server.body_read_timeout_ms > 0)
                    .then(|| Duration::from_millis(s.server.body_read_timeout_ms)),
                max_connections: s.server.max_connections,
                shutdown_grace: Duration::from_secs(s.server.shutdown_grace_secs),
                per_ip_rps: s.server.per_ip_rps,
                ip_allowlist: s.server.ip_allowlist,
                trusted_proxies: s.server.trusted_proxies,
                public_url: s.server.public_url,
            },
            normalizer,
            lookup: LookupOptions {
                deadline: Duration::from_millis(s.lookup.deadline_ms),
                format: s.lookup.format,
                response_key: s.lookup.response_key,
                policy: s.lookup.policy,
                owner_ttl: Duration::from_secs(s.lookup.owner_ttl_secs),
                negative_ttl: Duration::from_secs(s.lookup.negative_ttl_secs),
                max_crm_fetches: s.lookup.max_crm_fetches,
                on_miss: s.lookup.on_miss,
                trail_max_per_sec: s.lookup.trail_max_per_sec,
            },
            crm: CrmOptions {
                backend,
                timeout: Duration::from_millis(s.crm.timeout_ms),
                default_site: s.crm.default_site,
                rate_limit_rps: s.crm.rate_limit_rps,
                telephony_rate_limit_rps: s.crm.telephony_rate_limit_rps,
                lookup_share: s.crm.lookup_share,
                closed_status_groups: s.crm.closed_status_groups.into_iter().collect(),
                client_id: s.crm.client_id,
                calls_upload_batch: s.crm.calls_upload_batch,
                calls_upload_flush: Duration::from_millis(s.crm.calls_upload_flush_ms),
            },
            store,
            ringostat: s.ringostat,
            worker: WorkerOptions {
                enabled: s.worker.enabled,
                concurrency: s.worker.concurrency,
                lease: Duration::from_secs(s.worker.lease_secs),
                retry: RetrySchedule {
                    base: Duration::from_millis(s.worker.retry_base_ms),
                    max: Duration::from_millis(s.worker.retry_max_ms),
                },
            },
            admin: s.admin,
            rules: s.rules,
            telemetry: s.telemetry,
            sync: s.sync.enabled.then(|| SyncOptions {
                history_interval: Duration::from_secs(s.sync.history_interval_secs),
                users_interval: Duration::from_secs(s.sync.users_interval_secs),
                lease: Duration::from_secs(s.sync.lease_secs),
            }),
            directory,
            sites,
            planner,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defaults plus a TOML fragment, not yet validated.
    fn from_toml(extra: &str) -> Result<Settings, ConfigError> {
        Settings::extract(Figment::from(Toml::string(DEFAULT_TOML)).merge(Toml::string(extra)))
    }

    #[test]
    fn defaults_load_and_validate() {
        let s = Settings::defaults().expect("defaults parse");
        assert_eq!(s.lookup.deadline_ms, 300);
        let c = Config::try_from(s).expect("defaults are valid");
        assert_eq!(c.lookup.deadline, Duration::from_millis(300));
        assert_eq!(c.lookup.policy, LookupPolicy::OwnerIfAvailable);
        assert!(matches!(c.crm.backend, CrmBackend::Sandbox));
        assert!(matches!(c.store, StoreOptions::Embedded { .. }));
        assert!(c.worker.retry.base <= c.worker.retry.max);
        // SPEC §9: slow clients are cut off by default.
        assert!(c.server.header_read_timeout.is_some() && c.server.body_read_timeout.is_some());
        assert_eq!(c.server.max_connections, 10_000);
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let err = from_toml("[lookup]\ndeadline = 5\n").unwrap_err();
        assert!(err.to_string().contains("deadline"), "{err}");
    }

    #[test]
    fn retailcrm_needs_url_and_key() {
        let s = from_toml("[crm]\nkind = \"retailcrm\"\n").unwrap();
        let err = Config::try_from(s).unwrap_err().to_string();
        assert!(err.contains("crm.base_url"), "{err}");
        let s = from_toml("[crm]\nkind = \"retailcrm\"\nbase_url = \"https://x.retailcrm.ru\"\n")
            .unwrap();
        let err = Config::try_from(s).unwrap_err().to_string();
        assert!(err.contains("crm.api_key"), "{err}");
    }

    #[test]
    fn secrets_do_not_appear_in_debug() {
        let s =
            from_toml("[crm]\napi_key = \"k-very-secret\"\n[admin]\ntoken = \"t-very-secret\"\n")
                .unwrap();
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("very-secret"), "{dbg}");
        let s = from_toml(
            "[crm]\nclient_id = \"c-very-secret\"\n[ringostat]\nauth_key = \"r-very-secret\"\nproject_id = \"1\"\n",
        )
        .unwrap();
        let dbg = format!("{:?}", Config::try_from(s).unwrap());
        assert!(!dbg.contains("very-secret"), "{dbg}");
    }

    #[test]
    fn ringostat_api_settings_are_checked() {
        let err = |toml: &str| {
            Config::try_from(from_toml(toml).unwrap())
                .unwrap_err()
                .to_string()
        };
        assert!(err("[ringostat]\nauth_key = \"k\"\n").contains("project_id"));
        assert!(err("[ringostat]\ntimezone = \"Mars/Olympus\"\n").contains("ringostat.timezone"));
        assert!(
            err("[ringostat]\nauth_key = \"k\"\nproject_id = \"1\"\napi_base_url = \"ftp://x\"\n")
                .contains("api_base_url")
        );
        assert!(err("[server]\npublic_url = \"callgate\"\n").contains("server.public_url"));
    }

    #[test]
    fn duplicate_manager_identities_are_refused() {
        let s = from_toml(
            "[[managers]]\ncrm_user_id = 1\nsip = \"a\"\n[[managers]]\ncrm_user_id = 2\nsip = [\"A\"]\n",
        )
        .unwrap();
        let err = Config::try_from(s).unwrap_err().to_string();
        assert!(err.contains("sip login"), "{err}");
    }
}
