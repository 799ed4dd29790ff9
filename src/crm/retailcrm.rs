//! retailCRM API v5 adapter. TEMPORARY STUB (replaced by the real adapter).
use std::time::Duration;

use secrecy::SecretString;

use crate::domain::phone_number::PhoneNormalizer;

pub struct RetailCrmConfig {
    pub base_url: url::Url,
    pub api_key: SecretString,
    pub timeout: Duration,
    pub site: Option<String>,
}
pub struct RetailCrm;
impl RetailCrm {
    pub fn new(_cfg: RetailCrmConfig, _n: PhoneNormalizer) -> Result<Self, String> {
        Err("stub".into())
    }
}
