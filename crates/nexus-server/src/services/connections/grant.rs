//! Grants without a browser (SPEC 11): `oauth2_client_credentials` with the
//! client's credentials on the provider. `POST /v1/request-connection`
//! runs the grant at once and answers `201 {connection_id, status:
//! "active"}`; a refusal is `400 invalid_credentials` and nothing is
//! stored. Renewal re-runs the same grant ([`renew`], called by the
//! single-flight refresh).

use super::{audit, client_config, context, param_map, param_str};
use crate::error::ApiError;
use crate::middleware::Caller;
use crate::state::AppState;
use nexus_core::wire::{ConnectionActivated, ErrorCode};
use nexus_core::{AuditEvent, AuthType, ConnectionStatus};
use nexus_oauth::{ClientConfig, OAuthError, TokenSet};
use nexus_store::{Activation, ConnectionRow, Invalidation, ProviderRow};
use serde_json::{json, Map, Value};

/// What the request names, checked.
pub(super) struct Request {
    pub workspace_id: String,
    pub scopes: Vec<String>,
    pub metadata: Option<Value>,
    pub connection_config: Map<String, Value>,
    pub existing: Option<ConnectionRow>,
}

/// Runs the grant for a new connection (or again for `existing`) and
/// stores it active.
pub(super) async fn connect(
    state: &AppState,
    caller: &Caller,
    provider: &ProviderRow,
    req: Request,
) -> Result<ConnectionActivated, ApiError> {
    let cfg = client_config(state, provider, &req.connection_config).await?;
    let tokens = renew(state, provider, &cfg, &req.scopes).await.map_err(|e| match e {
        OAuthError::Provider { code, .. } => ApiError::new(
            ErrorCode::InvalidCredentials,
            format!("the provider refused the client credentials grant ({code})"),
        ),
        OAuthError::Transport(_) => ApiError::new(
            ErrorCode::ProviderUnavailable,
            "the provider's token endpoint could not be reached; retry shortly",
        ),
        OAuthError::InvalidReply(m) => {
            ApiError::new(ErrorCode::ProviderError, format!("the provider's token answer could not be read: {m}"))
        }
        OAuthError::Config(m) => ApiError::new(ErrorCode::ProviderMisconfigured, m),
    })?;
    let id = req.existing.as_ref().map(|r| r.id.clone()).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let (credentials_enc, expires_at, next_refresh_at) = seal(state, &id, &tokens, &req.scopes);
    let data = json!({ "provider": provider.config.name, "auth_type": AuthType::Oauth2ClientCredentials, "scopes": req.scopes, "grant": "client_credentials" });
    match req.existing {
        Some(row) => {
            let activation = Activation {
                credentials_enc,
                refresh_token_enc: None,
                expires_at,
                scopes: Some(req.scopes),
                next_refresh_at,
                connection_config: req.connection_config,
            };
            let entry = audit(Some(caller), AuditEvent::ConnectionActivated, &row, data);
            let stored = state.store.activate_connection(&row.id, None, &activation, entry).await?;
            state.invalidate(Invalidation::Connection(row.id.clone()));
            if !stored {
                return Err(ApiError::conflict("connection_id: that connection was revoked"));
            }
        }
        None => {
            let now = state.clock.now_micros();
            let row = ConnectionRow {
                workspace_id: req.workspace_id,
                status: ConnectionStatus::Active,
                scopes: req.scopes,
                metadata: req.metadata,
                connection_config: req.connection_config,
                credentials_enc: Some(credentials_enc),
                expires_at,
                next_refresh_at,
                created_at: now,
                updated_at: now,
                ..ConnectionRow::pending(
                    id.clone(),
                    provider.id.clone(),
                    provider.config.name.to_string(),
                    AuthType::Oauth2ClientCredentials,
                )
            };
            state
                .store
                .insert_connection(&row, audit(Some(caller), AuditEvent::ConnectionActivated, &row, data))
                .await?;
        }
    }
    Ok(ConnectionActivated { connection_id: id, status: ConnectionStatus::Active })
}

/// The grant itself, with the connection's scopes and the provider's
/// `token_params`: what issues the first token and every renewal.
pub(crate) async fn renew(
    state: &AppState,
    provider: &ProviderRow,
    cfg: &ClientConfig,
    scopes: &[String],
) -> Result<TokenSet, OAuthError> {
    let http = nexus_oauth::ProviderHttp::new(state.http.clone());
    let separator = param_str(provider, "scope_separator").unwrap_or(" ");
    nexus_oauth::client_credentials(&http, cfg, Some((scopes, separator)), &param_map(provider, "token_params")).await
}

/// The usage credentials of `tokens`, sealed for connection `id`; when
/// they expire and when the refresher should renew them.
fn seal(state: &AppState, id: &str, tokens: &TokenSet, scopes: &[String]) -> (String, Option<i64>, Option<i64>) {
    let mut credentials = tokens.extras.clone();
    credentials.insert("access_token".into(), Value::String(tokens.access_token.expose().to_owned()));
    credentials.insert("token_type".into(), Value::String(tokens.token_type.clone()));
    credentials.insert("scope".into(), Value::String(tokens.scope.clone().unwrap_or_else(|| scopes.join(" "))));
    let expires_at = tokens.expires_in.map(|s| state.clock.now_secs() + s as i64);
    let next = expires_at.map(|e| crate::services::refresh::renew_at(e, state.config.refresh_window_secs));
    let sealed =
        state.config.keyring.seal(&context(id, "credentials"), Value::Object(credentials).to_string().as_bytes());
    (sealed, expires_at, next)
}
