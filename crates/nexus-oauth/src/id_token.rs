//! `id_token` verification with `openidconnect`: signature against the
//! provider's JWKS, `iss`, `aud`, `exp` and the `nonce` sent in the
//! authorization request.

use crate::http::ProviderHttp;
use nexus_core::SecretString;
use openidconnect::core::{CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKeySet};
use openidconnect::{ClientId, ClientSecret, IssuerUrl, JsonWebKeySetUrl, Nonce};

/// What an `id_token` must match.
#[derive(Debug, Clone)]
pub struct IdTokenCheck<'a> {
    pub issuer: &'a str,
    pub jwks_uri: &'a str,
    pub client_id: &'a str,
    pub client_secret: &'a SecretString,
    pub nonce: &'a str,
}

/// Verifies `raw`; the error says which check failed.
pub async fn verify_id_token(http: &ProviderHttp, raw: &str, check: &IdTokenCheck<'_>) -> Result<(), String> {
    let token: CoreIdToken = raw.parse().map_err(|e| format!("id_token is not a JWT: {e}"))?;
    let jwks_url = JsonWebKeySetUrl::new(check.jwks_uri.to_owned()).map_err(|e| format!("jwks_uri: {e}"))?;
    let jwks =
        CoreJsonWebKeySet::fetch_async(&jwks_url, http).await.map_err(|e| format!("could not fetch the JWKS: {e}"))?;
    let issuer = IssuerUrl::new(check.issuer.to_owned()).map_err(|e| format!("issuer: {e}"))?;
    let verifier = CoreIdTokenVerifier::new_confidential_client(
        ClientId::new(check.client_id.to_owned()),
        ClientSecret::new(check.client_secret.expose().to_owned()),
        issuer,
        jwks,
    );
    token
        .claims(&verifier, &Nonce::new(check.nonce.to_owned()))
        .map(|_| ())
        .map_err(|e| format!("id_token rejected: {e}"))
}
