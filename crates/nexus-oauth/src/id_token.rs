//! `id_token` verification with `openidconnect`: signature against the
//! provider's JWKS, `iss`, `aud`, `exp` and the `nonce` sent in the
//! authorization request.

use crate::http::ProviderHttp;
use nexus_core::SecretString;
use openidconnect::core::{CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKeySet};
use openidconnect::{
    ClaimsVerificationError, ClientId, ClientSecret, IssuerUrl, JsonWebKeySetUrl, Nonce, SignatureVerificationError,
};

/// What an `id_token` must match.
#[derive(Debug, Clone)]
pub struct IdTokenCheck<'a> {
    pub issuer: &'a str,
    pub jwks_uri: &'a str,
    pub client_id: &'a str,
    pub client_secret: &'a SecretString,
    pub nonce: &'a str,
}

/// A provider's signing keys (its JWKS).
pub type KeySet = CoreJsonWebKeySet;

/// Why an id_token did not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdTokenError {
    /// No key of the set matches the token's `kid` and algorithm: the
    /// provider may have rotated its keys (fetch the set again).
    UnknownKey,
    /// Any other failure, said in words.
    Rejected(String),
}

impl std::fmt::Display for IdTokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdTokenError::UnknownKey => f.write_str("id_token rejected: no key of the provider's set matches it"),
            IdTokenError::Rejected(m) => f.write_str(m),
        }
    }
}

/// Fetches the key set at `jwks_uri` (through the provider HTTP policy).
pub async fn fetch_key_set(http: &ProviderHttp, jwks_uri: &str) -> Result<KeySet, String> {
    let jwks_url = JsonWebKeySetUrl::new(jwks_uri.to_owned()).map_err(|e| format!("jwks_uri: {e}"))?;
    CoreJsonWebKeySet::fetch_async(&jwks_url, http).await.map_err(|e| format!("could not fetch the JWKS: {e}"))
}

/// Verifies `raw` against `keys`.
pub fn verify_id_token_with(raw: &str, check: &IdTokenCheck<'_>, keys: &KeySet) -> Result<(), IdTokenError> {
    let token: CoreIdToken = raw.parse().map_err(|e| IdTokenError::Rejected(format!("id_token is not a JWT: {e}")))?;
    let issuer = IssuerUrl::new(check.issuer.to_owned()).map_err(|e| IdTokenError::Rejected(format!("issuer: {e}")))?;
    let verifier = CoreIdTokenVerifier::new_confidential_client(
        ClientId::new(check.client_id.to_owned()),
        ClientSecret::new(check.client_secret.expose().to_owned()),
        issuer,
        keys.clone(),
    );
    token.claims(&verifier, &Nonce::new(check.nonce.to_owned())).map(|_| ()).map_err(|e| match e {
        ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey) => {
            IdTokenError::UnknownKey
        }
        other => IdTokenError::Rejected(format!("id_token rejected: {other}")),
    })
}

/// Verifies `raw` with the key set fetched now; the error says which check failed.
pub async fn verify_id_token(http: &ProviderHttp, raw: &str, check: &IdTokenCheck<'_>) -> Result<(), String> {
    let keys = fetch_key_set(http, check.jwks_uri).await?;
    verify_id_token_with(raw, check, &keys).map_err(|e| e.to_string())
}
