//! A string that must never be printed: `Debug` and `Display` show `[redacted]`,
//! it does not implement `Serialize`, and its memory is not reused for logs.

use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256};
use std::fmt;

/// A secret value (client secret, token, password). Read it with [`SecretString::expose`]
/// only where the plaintext is really needed (encryption, an outbound request).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(SecretString)
    }
}

/// A short, non-reversible fingerprint of a client secret.
///
/// It is salted with the provider name so equal secrets of two providers do not
/// look alike, and it is computable by anyone who holds the plaintext (the
/// Security-as-Code CLI compares it with the manifest's secret) while revealing
/// nothing usable about a high-entropy secret: 64 bits of a SHA-256.
pub fn fingerprint(provider_name: &str, secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"nexus-client-secret-v1\0");
    h.update(provider_name.as_bytes());
    h.update(b"\0");
    h.update(secret.as_bytes());
    let digest = h.finalize();
    format!("sha256:{}", hex::encode(&digest[..8]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_are_redacted() {
        let s = SecretString::new("hunter2");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn fingerprint_changes_with_secret_and_name_and_hides_it() {
        let a = fingerprint("github", "s1");
        assert_eq!(a, fingerprint("github", "s1"));
        assert_ne!(a, fingerprint("github", "s2"));
        assert_ne!(a, fingerprint("gitlab", "s1"));
        assert!(a.starts_with("sha256:") && a.len() == 7 + 16);
        assert!(!a.contains("s1"));
    }
}
