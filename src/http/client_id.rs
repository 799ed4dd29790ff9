//! The `crm.client_id` check of retailCRM's callbacks (SPEC §8, §9): retailCRM sends the
//! telephony module's `clientId` on every call to `makeCallUrl` and `changeUserStatusUrl`.
//! Compared in constant time; a missing or wrong one is 401 and nothing happens; while
//! `crm.client_id` is empty every callback is refused with 503, like the webhook token.

use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::config::Config;

/// `Ok` when `given` is the configured `crm.client_id`.
pub fn check_client_id(config: &Config, given: Option<&str>) -> Result<(), ApiError> {
    let expected = config.crm.client_id.expose_secret();
    if expected.is_empty() {
        return Err(ApiError::NotConfigured("crm.client_id"));
    }
    let given = given.unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}
