//! `DELETE /v1/connections/{id}`: wipe the credentials, tell the provider.

use super::{audit, client_config, context, endpoints, view};
use crate::error::ApiError;
use crate::middleware::Caller;
use crate::state::AppState;
use nexus_core::wire::ConnectionView;
use nexus_core::AuditEvent;
use nexus_core::SecretString;
use nexus_oauth::{Endpoints, ProviderHttp, RevocableToken};
use nexus_store::{ConnectionRow, Invalidation, ProviderRow};
use serde_json::{json, Value};

/// `DELETE /v1/connections/{id}`: wipe credentials, tell the provider (RFC 7009)
/// when it has a revocation endpoint, mark `revoked`.
pub async fn revoke(state: &AppState, caller: &Caller, id: &str) -> Result<ConnectionView, ApiError> {
    let row = state.store.connection_by_id(id).await?.ok_or_else(|| ApiError::not_found("no such connection"))?;
    let provider = state.store.provider_by_id(&row.provider_id).await?;
    // Tell the provider first, while we still hold the token.
    let mut provider_revocation = "not_supported";
    // A jwt_bearer connection has no client to authenticate a revocation with.
    let revocable = row.auth_type != nexus_core::AuthType::JwtBearer;
    if let (Some(provider), true) =
        (&provider, revocable && (row.refresh_token_enc.is_some() || row.credentials_enc.is_some()))
    {
        if let Ok(Endpoints { revocation: Some(revocation_url), .. }) =
            endpoints(state, provider, &row.connection_config).await
        {
            provider_revocation = match revoke_at_provider(state, provider, &row, &revocation_url).await {
                Ok(()) => "ok",
                Err(e) => {
                    tracing::warn!(connection = %row.id, error = %e, "provider revocation failed; revoking locally anyway");
                    "failed"
                }
            };
        }
    }
    let data = json!({ "provider_revocation": provider_revocation });
    let revoked =
        state.store.revoke_connection(&row.id, audit(Some(caller), AuditEvent::ConnectionRevoked, &row, data)).await;
    state.invalidate(Invalidation::Connection(row.id.clone()));
    revoked?;
    let row = state.store.connection_by_id(id).await?.ok_or_else(|| ApiError::not_found("no such connection"))?;
    Ok(view(row))
}

/// Revokes the connection's refresh token (or, without one, its access
/// token) at the provider's `revocation_url`.
async fn revoke_at_provider(
    state: &AppState,
    provider: &ProviderRow,
    row: &ConnectionRow,
    revocation_url: &str,
) -> Result<(), String> {
    let cfg = if row.auth_type == nexus_core::AuthType::Oauth2ClientCredentials {
        super::grant::client_of(state, provider, row).await
    } else {
        client_config(state, provider, &row.connection_config).await
    }
    .map_err(|e| e.message)?;
    let keyring = &state.config.keyring;
    // Only an oauth2 connection keeps a refresh token there (a jwt_bearer
    // connection keeps its service-account key, which is never sent).
    let refresh_token = row.refresh_token_enc.as_ref().filter(|_| row.auth_type == nexus_core::AuthType::Oauth2);
    let token = match refresh_token {
        Some(enc) => {
            let plain = keyring.open_string(&context(&row.id, "refresh_token"), enc).map_err(|e| e.to_string())?;
            RevocableToken::Refresh(SecretString::new(plain.as_str()))
        }
        None => {
            let enc = row.credentials_enc.as_deref().ok_or("no credentials")?;
            let plain = keyring.open_string(&context(&row.id, "credentials"), enc).map_err(|e| e.to_string())?;
            let credentials: Value = serde_json::from_str(&plain).map_err(|_| "the credentials are not JSON")?;
            RevocableToken::Access(SecretString::new(credentials["access_token"].as_str().unwrap_or_default()))
        }
    };
    nexus_oauth::revoke(&ProviderHttp::new(state.http.clone()), &cfg, revocation_url, &token).await
}
