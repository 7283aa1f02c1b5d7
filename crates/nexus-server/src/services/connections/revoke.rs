//! `DELETE /v1/connections/{id}`: wipe the credentials, tell the provider.

use super::{audit, client_config, context, endpoints, view, Endpoints};
use crate::error::ApiError;
use crate::middleware::Caller;
use crate::state::AppState;
use nexus_core::wire::ConnectionView;
use nexus_core::AuditEvent;
use nexus_oauth::ClientAuth;
use nexus_store::{ConnectionRow, Invalidation, ProviderRow};
use serde_json::{json, Value};

/// `DELETE /v1/connections/{id}`: wipe credentials, tell the provider (RFC 7009)
/// when it has a revocation endpoint, mark `revoked`.
pub async fn revoke(state: &AppState, caller: &Caller, id: &str) -> Result<ConnectionView, ApiError> {
    let row = state.store.connection_by_id(id).await?.ok_or_else(|| ApiError::not_found("no such connection"))?;
    let provider = state.store.provider_by_id(&row.provider_id).await?;
    // Tell the provider first, while we still hold the token.
    let mut provider_revocation = "not_supported";
    if let (Some(provider), Some(enc)) =
        (&provider, row.refresh_token_enc.as_deref().or(row.credentials_enc.as_deref()))
    {
        if let Ok(Endpoints { revocation: Some(revocation_url), .. }) = endpoints(provider) {
            provider_revocation = match revoke_at_provider(state, provider, &row, enc, &revocation_url).await {
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

async fn revoke_at_provider(
    state: &AppState,
    provider: &ProviderRow,
    row: &ConnectionRow,
    _enc: &str,
    url: &str,
) -> Result<(), String> {
    let cfg = client_config(state, provider).map_err(|e| e.message)?;
    let (token, hint) = match &row.refresh_token_enc {
        Some(enc) => (
            state
                .config
                .keyring
                .open_string(&context(&row.id, "refresh_token"), enc)
                .map_err(|e| e.to_string())?
                .to_string(),
            "refresh_token",
        ),
        None => {
            let enc = row.credentials_enc.as_deref().ok_or("no credentials")?;
            let creds =
                state.config.keyring.open_string(&context(&row.id, "credentials"), enc).map_err(|e| e.to_string())?;
            let v: Value = serde_json::from_str(&creds).map_err(|e| e.to_string())?;
            (v["access_token"].as_str().unwrap_or_default().to_owned(), "access_token")
        }
    };
    nexus_core::url_policy::parse_outbound_url(url)?;
    let mut req = state.http.post(url).header("accept", "application/json");
    let mut form = vec![("token", token.as_str()), ("token_type_hint", hint)];
    if cfg.auth == ClientAuth::Basic {
        req = req.basic_auth(&cfg.client_id, Some(cfg.client_secret.expose()));
    } else {
        form.push(("client_id", cfg.client_id.as_str()));
        form.push(("client_secret", cfg.client_secret.expose()));
    }
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
    let resp = req
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .map_err(|_| "the revocation endpoint could not be reached".to_owned())?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("the revocation endpoint answered {}", resp.status().as_u16()))
    }
}
