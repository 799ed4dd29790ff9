//! A configured shared secret and its check (SPEC §8, §9): the webhook token, the admin
//! token and retailCRM's `clientId`.
//!
//! The secret's SHA-256 is taken once, when the configuration is read. A check hashes only
//! the presented value and compares the two fixed-size digests in constant time, so how long a
//! check takes depends on neither the secret's contents nor its length (comparing raw bytes
//! stops at the first difference or at a length mismatch; hashing the secret on every check
//! takes time that grows with its length). `load-tests/` measures it (`only=secrets`).

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A secret from the configuration, with its digest. `Debug` never prints it.
#[derive(Clone)]
pub struct Credential {
    secret: SecretString,
    digest: [u8; 32],
}

impl Credential {
    pub fn new(secret: SecretString) -> Self {
        let digest = Sha256::digest(secret.expose_secret().as_bytes()).into();
        Credential { secret, digest }
    }

    /// The secret itself (to send it: `callgate register`, the admin client).
    pub fn expose_secret(&self) -> &str {
        self.secret.expose_secret()
    }

    /// No secret configured (the endpoints it guards answer 503).
    pub fn is_empty(&self) -> bool {
        self.secret.expose_secret().is_empty()
    }

    /// Whether `given` is the secret, in time independent of the secret (see the module
    /// docs). An unset secret matches nothing.
    pub fn matches(&self, given: &[u8]) -> bool {
        let given: [u8; 32] = Sha256::digest(given).into();
        bool::from(given.ct_eq(&self.digest)) && !self.is_empty()
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential([REDACTED])")
    }
}

impl From<&str> for Credential {
    fn from(secret: &str) -> Self {
        Credential::new(secret.into())
    }
}

impl From<String> for Credential {
    fn from(secret: String) -> Self {
        Credential::new(secret.into())
    }
}

impl<'de> Deserialize<'de> for Credential {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        SecretString::deserialize(deserializer).map(Credential::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_secret_itself_matches() {
        let c = Credential::from("s3cret");
        assert!(c.matches(b"s3cret"));
        for wrong in [&b"s3cre"[..], b"s3cret!", b"S3cret", b"", b"s3cret\0"] {
            assert!(!c.matches(wrong), "{wrong:?}");
        }
    }

    #[test]
    fn an_unset_secret_matches_nothing_not_even_empty_input() {
        let c = Credential::from("");
        assert!(c.is_empty());
        assert!(!c.matches(b""));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        assert!(!format!("{:?}", Credential::from("s3cret")).contains("s3cret"));
    }
}
