//! The OAuth `state` (and the static-capture token): an opaque string signed
//! with `STATE_KEY` that names the pending connection, carries a random nonce
//! that the connection row also holds (so it is single-use: consuming clears
//! the row's copy), and expires.

use nexus_vault::StateSigner;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateClaims {
    /// Connection id.
    #[serde(rename = "c")]
    pub connection_id: String,
    /// Single-use nonce, equal to the row's `state_nonce` until consumed.
    #[serde(rename = "n")]
    pub nonce: String,
    /// Expiry, unix seconds.
    #[serde(rename = "x")]
    pub expires_at: i64,
}

/// Why a state is not trusted (reported to the user as a plain 400 page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateProblem {
    Invalid,
    Expired,
}

pub fn issue(signer: &StateSigner, claims: &StateClaims) -> String {
    let payload = serde_json::to_vec(claims).unwrap_or_default();
    signer.sign(&payload)
}

pub fn verify(signer: &StateSigner, token: &str, now_secs: i64) -> Result<StateClaims, StateProblem> {
    if token.is_empty() || token.len() > 1024 {
        return Err(StateProblem::Invalid);
    }
    let payload = signer.verify(token).ok_or(StateProblem::Invalid)?;
    let claims: StateClaims = serde_json::from_slice(&payload).map_err(|_| StateProblem::Invalid)?;
    if claims.expires_at < now_secs {
        return Err(StateProblem::Expired);
    }
    Ok(claims)
}

/// An OIDC nonce or state nonce: 16 random bytes, URL-safe.
pub fn random_nonce() -> String {
    nexus_vault::random_token(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> StateSigner {
        StateSigner::from_base64(&nexus_vault::generate_key()).unwrap()
    }

    #[test]
    fn round_trip_tamper_and_expiry() {
        let s = signer();
        let claims = StateClaims { connection_id: "c1".into(), nonce: random_nonce(), expires_at: 1000 };
        let token = issue(&s, &claims);
        assert_eq!(verify(&s, &token, 999).unwrap(), claims);
        assert_eq!(verify(&s, &token, 1001), Err(StateProblem::Expired));
        let mut tampered = token.clone();
        tampered.insert(3, 'x');
        assert_eq!(verify(&s, &tampered, 999), Err(StateProblem::Invalid));
        assert_eq!(verify(&signer(), &token, 999), Err(StateProblem::Invalid), "another key");
        assert_eq!(verify(&s, "", 0), Err(StateProblem::Invalid));
    }
}
