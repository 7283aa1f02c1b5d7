//! The vault: everything Nexus keeps secret at rest is sealed here.
//!
//! * [`KeyRing`] seals values with AES-256-GCM. Each envelope names the key that
//!   sealed it, so `ENCRYPTION_KEYS` can rotate keys (the first key seals, all
//!   keys open). Every envelope is bound by associated data to the row and field
//!   it belongs to, so a ciphertext copied into another row does not open.
//! * [`StateSigner`] signs short-lived tokens (OAuth `state`) with HMAC-SHA256.
//! * [`constant_time_eq`] compares API keys without leaking where they differ.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

const ENVELOPE_VERSION: &str = "v1";
const NONCE_LEN: usize = 12;

/// Why a key could not be used or a value could not be opened. Messages never
/// contain key material or plaintext.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VaultError {
    #[error("key is not valid base64")]
    KeyNotBase64,
    #[error("key must decode to 32 bytes, got {0}")]
    KeyWrongLength(usize),
    #[error("no key given")]
    NoKeys,
    #[error("ciphertext is malformed")]
    Malformed,
    #[error("ciphertext was sealed with key {0}, which is not in the key ring")]
    UnknownKey(String),
    #[error("ciphertext failed authentication (tampered, wrong key or wrong row)")]
    Authentication,
}

/// A fresh random 32-byte key, base64-encoded (what `nexus keygen` prints).
pub fn generate_key() -> String {
    let mut key = Zeroizing::new([0u8; 32]);
    rand::thread_rng().fill_bytes(key.as_mut());
    STANDARD.encode(key.as_ref())
}

/// A random URL-safe token of `bytes` random bytes (for state nonces, ids).
pub fn random_token(bytes: usize) -> String {
    let mut buf = Zeroizing::new(vec![0u8; bytes]);
    rand::thread_rng().fill_bytes(buf.as_mut_slice());
    URL_SAFE_NO_PAD.encode(buf.as_slice())
}

/// Decodes a base64 32-byte key (standard or URL-safe alphabet, padding optional).
pub fn parse_key(b64: &str) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let trimmed = b64.trim();
    let decoded = STANDARD
        .decode(trimmed)
        .or_else(|_| URL_SAFE_NO_PAD.decode(trimmed.trim_end_matches('=')))
        .map_err(|_| VaultError::KeyNotBase64)?;
    let decoded = Zeroizing::new(decoded);
    if decoded.len() != 32 {
        return Err(VaultError::KeyWrongLength(decoded.len()));
    }
    Ok(decoded)
}

struct RingKey {
    id: String,
    cipher: Aes256Gcm,
}

/// AES-256-GCM keys; the first seals, all open.
pub struct KeyRing {
    keys: Vec<RingKey>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("KeyRing").field("key_ids", &ids).finish()
    }
}

impl KeyRing {
    /// Builds a ring from base64 keys, first one sealing.
    pub fn from_base64<S: AsRef<str>>(keys: &[S]) -> Result<KeyRing, VaultError> {
        if keys.is_empty() {
            return Err(VaultError::NoKeys);
        }
        let keys = parse_keys(keys, |raw| {
            let id = hex_prefix(&Sha256::digest(raw));
            let cipher = Aes256Gcm::new_from_slice(raw).map_err(|_| VaultError::KeyWrongLength(raw.len()))?;
            Ok(RingKey { id, cipher })
        })?;
        Ok(KeyRing { keys })
    }

    /// The id of the sealing key (a hash prefix, safe to log).
    pub fn current_key_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Seals `plaintext`, bound to `context` (e.g. `provider:<id>:client_secret`).
    /// The envelope is `v1:<key id>:<base64(nonce || ciphertext)>`.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> String {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let sealed = key
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: context.as_bytes() })
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        format!("{ENVELOPE_VERSION}:{}:{}", key.id, STANDARD.encode(out))
    }

    /// Opens an envelope made by [`KeyRing::seal`] with the same `context`.
    pub fn open(&self, context: &str, envelope: &str) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let mut parts = envelope.splitn(3, ':');
        let (Some(ENVELOPE_VERSION), Some(kid), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(VaultError::Malformed);
        };
        let key = self.keys.iter().find(|k| k.id == kid).ok_or_else(|| VaultError::UnknownKey(kid.to_owned()))?;
        let raw = STANDARD.decode(body).map_err(|_| VaultError::Malformed)?;
        if raw.len() < NONCE_LEN + 16 {
            return Err(VaultError::Malformed);
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        key.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad: context.as_bytes() })
            .map(Zeroizing::new)
            .map_err(|_| VaultError::Authentication)
    }

    /// Opens an envelope holding UTF-8 text.
    pub fn open_string(&self, context: &str, envelope: &str) -> Result<Zeroizing<String>, VaultError> {
        let bytes = self.open(context, envelope)?;
        String::from_utf8(bytes.to_vec()).map(Zeroizing::new).map_err(|_| VaultError::Malformed)
    }

    /// Whether the ring holds the key with this id.
    pub fn holds(&self, key_id: &str) -> bool {
        self.keys.iter().any(|k| k.id == key_id)
    }

    /// Every key id, the sealing one first.
    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    /// True when the envelope was sealed with a key other than the current one.
    pub fn needs_reseal(&self, envelope: &str) -> bool {
        envelope.split(':').nth(1) != Some(self.current_key_id())
    }
}

/// Each base64 key parsed (32 bytes) and made into a `T`.
fn parse_keys<S: AsRef<str>, T>(
    keys: &[S],
    make: impl Fn(&[u8]) -> Result<T, VaultError>,
) -> Result<Vec<T>, VaultError> {
    keys.iter().map(|k| make(&parse_key(k.as_ref())?)).collect()
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes[..4].iter().map(|b| format!("{b:02x}")).collect()
}

type HmacSha256 = Hmac<Sha256>;

/// Signs and verifies compact tokens `base64url(payload).base64url(mac)`.
pub struct StateSigner {
    key: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for StateSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StateSigner([redacted])")
    }
}

impl StateSigner {
    pub fn from_base64(key: &str) -> Result<StateSigner, VaultError> {
        Ok(StateSigner { key: parse_key(key)? })
    }

    fn mac(&self) -> HmacSha256 {
        <HmacSha256 as Mac>::new_from_slice(&self.key).expect("HMAC accepts any key length")
    }

    pub fn sign(&self, payload: &[u8]) -> String {
        let mut mac = self.mac();
        mac.update(payload);
        let tag = mac.finalize().into_bytes();
        format!("{}.{}", URL_SAFE_NO_PAD.encode(payload), URL_SAFE_NO_PAD.encode(tag))
    }

    /// The payload of a token this signer made; `None` for anything else.
    pub fn verify(&self, token: &str) -> Option<Vec<u8>> {
        let (payload_b64, tag_b64) = token.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload_b64).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag_b64).ok()?;
        let mut mac = self.mac();
        mac.update(&payload);
        mac.verify_slice(&tag).ok()?;
        Some(payload)
    }
}

/// HMAC-SHA256 keys for the audit chain (`AUDIT_KEYS`): the first signs
/// new rows, all verify. A key's id is a hash prefix, safe to store and log;
/// it is derived apart from the encryption keys' ids, so the same bytes used
/// for both would not show it.
pub struct AuditKeys {
    keys: Vec<(String, Zeroizing<Vec<u8>>)>,
}

impl fmt::Debug for AuditKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("AuditKeys").field("key_ids", &ids).finish()
    }
}

impl AuditKeys {
    /// Keys from base64 (32 bytes each), the first one signing.
    pub fn from_base64<S: AsRef<str>>(keys: &[S]) -> Result<AuditKeys, VaultError> {
        if keys.is_empty() {
            return Err(VaultError::NoKeys);
        }
        let keys = parse_keys(keys, |raw| {
            let mut h = Sha256::new();
            h.update(b"nexus-audit-key-v1\0");
            h.update(raw);
            Ok((hex_prefix(&h.finalize()), Zeroizing::new(raw.to_vec())))
        })?;
        Ok(AuditKeys { keys })
    }

    /// The id of the signing key.
    pub fn signing_key_id(&self) -> &str {
        &self.keys[0].0
    }

    /// HMAC-SHA256 of `bytes` under the signing key, hex.
    pub fn sign(&self, bytes: &[u8]) -> String {
        Self::mac(&self.keys[0].1, bytes)
    }

    /// The HMAC of `bytes` under the key `key_id`, hex; `None` when no key
    /// of that id is held.
    pub fn sign_with(&self, key_id: &str, bytes: &[u8]) -> Option<String> {
        self.keys.iter().find(|(id, _)| id == key_id).map(|(_, key)| Self::mac(key, bytes))
    }

    fn mac(key: &[u8], bytes: &[u8]) -> String {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
        mac.update(bytes);
        let tag = mac.finalize().into_bytes();
        tag.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Compares two secrets in time independent of where they differ (and, by
/// comparing digests, of their lengths).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    SecretCheck::new(a).matches(b)
}

/// An expected secret (an API key) kept as its SHA-256 digest, so that a
/// presented value is checked by [`constant_time_eq`]'s rule while hashing
/// only the presented value.
#[derive(Clone)]
pub struct SecretCheck([u8; 32]);

impl SecretCheck {
    pub fn new(expected: &[u8]) -> SecretCheck {
        SecretCheck(Sha256::digest(expected).into())
    }

    /// Whether `presented` is the expected secret, in time independent of
    /// where it differs and of its length.
    pub fn matches(&self, presented: &[u8]) -> bool {
        Sha256::digest(presented).as_slice().ct_eq(&self.0).into()
    }
}

impl fmt::Debug for SecretCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretCheck(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(keys: &[&str]) -> KeyRing {
        KeyRing::from_base64(keys).unwrap()
    }

    #[test]
    fn seal_then_open_round_trips() {
        let k = generate_key();
        let r = ring(&[&k]);
        let env = r.seal("provider:1:client_secret", b"s3cret");
        assert!(env.starts_with("v1:"));
        assert!(!env.contains("s3cret"));
        assert_eq!(&*r.open("provider:1:client_secret", &env).unwrap(), b"s3cret");
        // Two seals of one value differ (random nonce).
        assert_ne!(env, r.seal("provider:1:client_secret", b"s3cret"));
    }

    #[test]
    fn ciphertext_moved_to_another_row_or_field_fails() {
        let r = ring(&[&generate_key()]);
        let env = r.seal("provider:1:client_secret", b"s3cret");
        assert_eq!(r.open("provider:2:client_secret", &env), Err(VaultError::Authentication));
        assert_eq!(r.open("connection:1:tokens", &env), Err(VaultError::Authentication));
    }

    #[test]
    fn tampering_is_detected() {
        let r = ring(&[&generate_key()]);
        let env = r.seal("ctx", b"value");
        let (head, body) = env.rsplit_once(':').unwrap();
        let mut raw = STANDARD.decode(body).unwrap();
        for i in [0, NONCE_LEN, raw.len() - 1] {
            raw[i] ^= 0x01;
            let forged = format!("{head}:{}", STANDARD.encode(&raw));
            assert_eq!(r.open("ctx", &forged), Err(VaultError::Authentication), "byte {i}");
            raw[i] ^= 0x01;
        }
        assert_eq!(r.open("ctx", "v1:zz"), Err(VaultError::Malformed));
        assert_eq!(r.open("ctx", "v2:x:y"), Err(VaultError::Malformed));
        assert_eq!(r.open("ctx", &format!("{head}:AAAA")), Err(VaultError::Malformed));
    }

    #[test]
    fn wrong_key_fails_and_rotation_keeps_old_values_readable() {
        let (old, new) = (generate_key(), generate_key());
        let old_ring = ring(&[&old]);
        let env = old_ring.seal("ctx", b"v");
        let other = ring(&[&new]);
        assert!(matches!(other.open("ctx", &env), Err(VaultError::UnknownKey(_))));
        let rotated = ring(&[&new, &old]);
        assert_eq!(&*rotated.open("ctx", &env).unwrap(), b"v");
        assert!(rotated.needs_reseal(&env));
        let resealed = rotated.seal("ctx", b"v");
        assert!(!rotated.needs_reseal(&resealed));
        assert!(matches!(old_ring.open("ctx", &resealed), Err(VaultError::UnknownKey(_))));
    }

    #[test]
    fn same_key_id_but_different_key_fails_authentication() {
        let r = ring(&[&generate_key()]);
        let env = r.seal("ctx", b"v");
        let forged_kid = env.replacen(r.current_key_id(), ring(&[&generate_key()]).current_key_id(), 1);
        assert!(r.open("ctx", &forged_kid).is_err());
    }

    #[test]
    fn keys_must_be_32_bytes_of_base64() {
        assert_eq!(parse_key("not base64!").unwrap_err(), VaultError::KeyNotBase64);
        assert_eq!(parse_key(&STANDARD.encode([0u8; 16])).unwrap_err(), VaultError::KeyWrongLength(16));
        assert!(parse_key(&URL_SAFE_NO_PAD.encode([7u8; 32])).is_ok());
        assert!(KeyRing::from_base64::<&str>(&[]).is_err());
    }

    #[test]
    fn debug_never_shows_key_material() {
        let k = generate_key();
        let r = ring(&[&k]);
        assert!(!format!("{r:?}").contains(&k));
        let s = StateSigner::from_base64(&k).unwrap();
        assert!(!format!("{s:?}").contains(&k));
    }

    #[test]
    fn state_signatures_verify_and_reject_forgeries() {
        let s = StateSigner::from_base64(&generate_key()).unwrap();
        let t = s.sign(b"payload");
        assert_eq!(s.verify(&t).unwrap(), b"payload");
        let other = StateSigner::from_base64(&generate_key()).unwrap();
        assert!(other.verify(&t).is_none());
        let (p, tag) = t.split_once('.').unwrap();
        assert!(s.verify(&format!("{}.{tag}", URL_SAFE_NO_PAD.encode(b"payloaD"))).is_none());
        assert!(s.verify(p).is_none());
        assert!(s.verify("").is_none());
    }

    #[test]
    fn constant_time_eq_compares_values() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        let check = SecretCheck::new(b"the-key");
        assert!(check.matches(b"the-key"));
        assert!(!check.matches(b"the-kez") && !check.matches(b"the-key ") && !check.matches(b""));
        assert_eq!(format!("{check:?}"), "SecretCheck(<redacted>)");
    }
}
