//! `callgate register [--dry-run] [--show-secrets]` (SPEC §8, PROTOCOLS §2.4): creates or
//! updates the telephony integration module in retailCRM with
//! `POST integration-modules/{code}/edit`.
//!
//! The module is built from the configuration alone ([`module`]): `makeCallUrl` and
//! `changeUserStatusUrl` from `server.public_url`, `clientId` = `crm.client_id`,
//! `additionalCodes` from the `[[managers]]` that have a `code`, `externalPhones` from every
//! `[[sites]]` tracking number, and the event flags callgate serves (incoming, outgoing and
//! hang-up events; `allowEdit: false`, the mappings being callgate's).
//!
//! Idempotent: the module is read back first (`GET integration-modules/{code}`) and written
//! only when a value callgate sends differs from what retailCRM holds, so a second run
//! changes nothing. retailCRM accepts unknown users and stores in a *successful* answer
//! (`info.notExistUsersIds`, `info.notExistSiteCodes`); they are reported as errors naming
//! the `[[managers]]`/`[[sites]]` entry, and the command fails.
//!
//! `--dry-run` prints the request it would send and sends nothing, not even the read. The
//! `clientId` in it is masked unless `--show-secrets` is given: it is the secret that lets
//! anyone place calls through `/retailcrm/make-call`, and a dry run's output ends up in
//! terminals, tickets and CI logs (SPEC §8: secrets never logged).

use std::fmt::Write as _;

use secrecy::ExposeSecret;
use serde_json::Value;

use crate::{
    config::{Config, CrmBackend},
    crm::{
        CrmError,
        retailcrm::{
            AdditionalCode, ExternalPhone, IntegrationModule, ModuleIntegrations, RetailCrm,
            RetailCrmConfig, TelephonyIntegration,
        },
    },
};

/// The module's `code` and `integrationCode` (equal is always valid, PROTOCOLS §2.4).
pub const MODULE_CODE: &str = "callgate";
/// The module's display name.
pub const MODULE_NAME: &str = "callgate";
/// Printed instead of the `clientId` by a dry run without `--show-secrets`.
pub const MASKED: &str = "[REDACTED: crm.client_id]";

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The configuration lacks what registration needs (exit 64).
    #[error("{0}")]
    Config(String),
    #[error("retailCRM refused or failed the registration")]
    Crm(#[from] CrmError),
    /// retailCRM took the module but does not know some users or stores.
    #[error("retailCRM does not know some entries of the module:\n{}", .0.join("\n"))]
    UnknownEntries(Vec<String>),
}

/// What a registration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    Created,
    Updated,
    /// retailCRM already held exactly this module: nothing was sent.
    Unchanged,
}

/// The module the configuration describes.
pub fn module(config: &Config) -> Result<IntegrationModule, RegisterError> {
    let public = config.server.public_url.trim_end_matches('/');
    if public.is_empty() {
        return Err(RegisterError::Config(
            "server.public_url is required: retailCRM calls callgate back at it".into(),
        ));
    }
    let client_id = config.crm.client_id.expose_secret();
    if client_id.is_empty() {
        return Err(RegisterError::Config(
            "crm.client_id is required: it is the module's clientId".into(),
        ));
    }
    let additional_codes = config
        .directory
        .all()
        .iter()
        .filter_map(|m| {
            m.code.as_ref().map(|code| AdditionalCode {
                user_id: m.id,
                code: code.clone(),
            })
        })
        .collect();
    let external_phones = config
        .sites
        .all()
        .iter()
        .flat_map(|site| {
            site.tracking_numbers.iter().map(|n| ExternalPhone {
                site_code: site.code.clone(),
                external_phone: n.e164().to_owned(),
            })
        })
        .collect();
    Ok(IntegrationModule {
        code: MODULE_CODE.into(),
        integration_code: MODULE_CODE.into(),
        active: true,
        name: MODULE_NAME.into(),
        logo: None,
        client_id: client_id.to_owned(),
        base_url: public.to_owned(),
        account_url: None,
        integrations: ModuleIntegrations {
            telephony: TelephonyIntegration {
                make_call_url: format!("{public}/retailcrm/make-call"),
                change_user_status_url: Some(format!("{public}/retailcrm/user-status")),
                allow_edit: false,
                input_event_supported: true,
                output_event_supported: true,
                hangup_event_supported: true,
                additional_codes,
                external_phones,
            },
        },
    })
}

/// What `--dry-run` prints: the request line and the `integrationModule` JSON, the
/// `clientId` masked unless `show_secrets`.
pub fn dry_run_text(
    config: &Config,
    module: &IntegrationModule,
    show_secrets: bool,
) -> Result<String, RegisterError> {
    let mut json = serde_json::to_value(module)
        .map_err(|e| RegisterError::Config(format!("cannot encode the module: {e}")))?;
    if !show_secrets {
        json["clientId"] = Value::String(MASKED.into());
    }
    let pretty = serde_json::to_string_pretty(&json)
        .map_err(|e| RegisterError::Config(format!("cannot encode the module: {e}")))?;
    let mut out = String::new();
    let base = match &config.crm.backend {
        CrmBackend::Retailcrm { base_url, .. } => base_url.as_str().trim_end_matches('/'),
        CrmBackend::Sandbox => "(crm.base_url)",
    };
    let _ = writeln!(
        out,
        "POST {base}/api/v5/integration-modules/{}/edit",
        module.code
    );
    let _ = writeln!(out, "Content-Type: application/x-www-form-urlencoded");
    let _ = writeln!(out, "integrationModule=");
    out.push_str(&pretty);
    out.push('\n');
    Ok(out)
}

/// `true` when every value of `wanted` is in `held` (objects compared key by key, the rest
/// exactly): retailCRM may hold more than callgate sends.
fn holds(held: &Value, wanted: &Value) -> bool {
    match (held, wanted) {
        (Value::Object(h), Value::Object(w)) => w
            .iter()
            .all(|(k, v)| h.get(k).is_some_and(|hv| holds(hv, v))),
        (Value::Array(h), Value::Array(w)) => {
            h.len() == w.len() && h.iter().zip(w).all(|(a, b)| holds(a, b))
        }
        (h, w) => h == w,
    }
}

/// Registers `module` with the configured retailCRM.
pub async fn register(
    config: &Config,
    module: &IntegrationModule,
) -> Result<Registered, RegisterError> {
    let CrmBackend::Retailcrm { base_url, api_key } = &config.crm.backend else {
        return Err(RegisterError::Config(
            "crm.kind must be \"retailcrm\" to register the telephony module".into(),
        ));
    };
    let crm = RetailCrm::new(
        RetailCrmConfig {
            base_url: base_url.clone(),
            api_key: api_key.expose_secret().into(),
            timeout: config.crm.timeout,
            site: None,
        },
        config.normalizer.clone(),
    )
    .map_err(|e| RegisterError::Config(format!("cannot build the retailCRM client: {e}")))?;
    let wanted = serde_json::to_value(module)
        .map_err(|e| RegisterError::Config(format!("cannot encode the module: {e}")))?;
    if let Some(held) = crm.get_module(&module.code).await?
        && holds(&held, &wanted)
    {
        return Ok(Registered::Unchanged);
    }
    let outcome = crm.register_module(module).await?;
    let mut unknown = Vec::new();
    for id in &outcome.unknown_user_ids {
        let entry = config
            .directory
            .all()
            .iter()
            .position(|m| m.id == *id)
            .map_or_else(String::new, |i| format!("managers[{i}]: "));
        unknown.push(format!(
            "{entry}crm_user_id {id} is not a retailCRM user (additionalCodes)"
        ));
    }
    for code in &outcome.unknown_site_codes {
        let entry = config
            .sites
            .all()
            .iter()
            .position(|s| &s.code == code)
            .map_or_else(String::new, |i| format!("sites[{i}]: "));
        unknown.push(format!(
            "{entry}code {code:?} is not a retailCRM store (externalPhones)"
        ));
    }
    if !unknown.is_empty() {
        return Err(RegisterError::UnknownEntries(unknown));
    }
    Ok(if outcome.created {
        Registered::Created
    } else {
        Registered::Updated
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config(extra: &str) -> Config {
        use figment::providers::Format;
        let settings: crate::config::Settings = figment::Figment::from(
            figment::providers::Toml::string(crate::config::DEFAULT_TOML),
        )
        .merge(figment::providers::Toml::string(extra))
        .extract()
        .unwrap();
        Config::try_from(settings).unwrap()
    }

    const FULL: &str = r#"
[server]
public_url = "https://callgate.shop.example/"
[crm]
client_id = "cid-secret"
[[managers]]
crm_user_id = 27
code = "127"
[[managers]]
crm_user_id = 28
[[sites]]
code = "shop1"
tracking_numbers = ["044 111 22 33", "+380441112234"]
"#;

    #[test]
    fn the_module_comes_from_the_configuration() {
        let m = serde_json::to_value(module(&config(FULL)).unwrap()).unwrap();
        assert_eq!(m["code"], "callgate");
        assert_eq!(m["clientId"], "cid-secret");
        assert_eq!(m["baseUrl"], "https://callgate.shop.example");
        let t = &m["integrations"]["telephony"];
        assert_eq!(
            t["makeCallUrl"],
            "https://callgate.shop.example/retailcrm/make-call"
        );
        assert_eq!(
            t["changeUserStatusUrl"],
            "https://callgate.shop.example/retailcrm/user-status"
        );
        assert_eq!(t["additionalCodes"], json!([{"userId": 27, "code": "127"}]));
        assert_eq!(
            t["externalPhones"],
            json!([
                {"siteCode": "shop1", "externalPhone": "+380441112233"},
                {"siteCode": "shop1", "externalPhone": "+380441112234"}
            ])
        );
        assert_eq!(
            (t["inputEventSupported"].clone(), t["allowEdit"].clone()),
            (json!(true), json!(false))
        );
    }

    #[test]
    fn public_url_and_client_id_are_required() {
        let c = config("[crm]\nclient_id = \"x\"\n");
        assert!(
            module(&c)
                .unwrap_err()
                .to_string()
                .contains("server.public_url")
        );
        let c = config("[server]\npublic_url = \"https://x.example\"\n");
        assert!(
            module(&c)
                .unwrap_err()
                .to_string()
                .contains("crm.client_id")
        );
    }

    #[test]
    fn a_dry_run_masks_the_client_id_unless_asked() {
        let c = config(FULL);
        let m = module(&c).unwrap();
        let masked = dry_run_text(&c, &m, false).unwrap();
        assert!(
            !masked.contains("cid-secret") && masked.contains(MASKED),
            "{masked}"
        );
        assert!(dry_run_text(&c, &m, true).unwrap().contains("cid-secret"));
    }

    #[test]
    fn held_modules_may_hold_more_than_is_sent() {
        let wanted = json!({"a": 1, "b": {"c": [1, {"d": 2}]}});
        assert!(holds(
            &json!({"a": 1, "x": 0, "b": {"c": [1, {"d": 2, "e": 3}]}}),
            &wanted
        ));
        assert!(!holds(&json!({"a": 1, "b": {"c": [1]}}), &wanted));
        assert!(!holds(&json!({"a": 2, "b": {"c": [1, {"d": 2}]}}), &wanted));
    }
}
