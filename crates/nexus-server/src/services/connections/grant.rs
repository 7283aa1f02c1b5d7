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

/// `oauth2_client_credentials` with the client captured per connection:
/// the grant runs with the captured `client_id` and `client_secret` (the
/// first token is the capture's live verification), and they are kept
/// sealed where only renewals open them.
pub(crate) async fn captured_client(
    state: &AppState,
    provider: &ProviderRow,
    row: &ConnectionRow,
    config: Map<String, Value>,
    captured: &Map<String, Value>,
) -> Result<Activation, ApiError> {
    let text = |k: &str| captured.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let id = text("client_id").ok_or_else(|| ApiError::bad_request("credentials.client_id: is required"))?;
    let secret =
        text("client_secret").ok_or_else(|| ApiError::bad_request("credentials.client_secret: is required"))?;
    let cfg = client_with(state, provider, &config, id, secret).await?;
    let tokens = renew(state, provider, &cfg, &row.scopes)
        .await
        .map_err(|e| capture_refused(e, "the provider refused these client credentials"))?;
    let (credentials_enc, expires_at, next_refresh_at) = seal(state, &row.id, &tokens, &row.scopes);
    let kept = json!({"client_id": id, "client_secret": secret}).to_string();
    Ok(Activation {
        credentials_enc,
        refresh_token_enc: Some(state.config.keyring.seal(&context(&row.id, "client_credentials"), kept.as_bytes())),
        expires_at,
        scopes: None,
        next_refresh_at,
        connection_config: config,
    })
}

/// A first token refused at capture: `400 invalid_credentials` (`refused`
/// and the provider's code), `502` when the provider cannot be reached (a
/// capture's live verification, SPEC 5b).
fn capture_refused(e: OAuthError, refused: &str) -> ApiError {
    match e {
        OAuthError::Provider { code, .. } => {
            ApiError::new(ErrorCode::InvalidCredentials, format!("{refused} ({code})"))
        }
        OAuthError::Transport(_) => {
            ApiError::new(ErrorCode::ProviderUnreachable, "the provider could not be reached to verify the credentials")
        }
        OAuthError::InvalidReply(m) => {
            ApiError::new(ErrorCode::ProviderError, format!("the provider's token answer could not be read: {m}"))
        }
        OAuthError::Config(m) => ApiError::bad_request(m),
    }
}

/// The client a connection's grant runs as: its own captured client, or
/// the provider's.
pub(crate) async fn client_of(
    state: &AppState,
    provider: &ProviderRow,
    row: &ConnectionRow,
) -> Result<ClientConfig, ApiError> {
    let Some(enc) = row.refresh_token_enc.as_deref() else {
        return client_config(state, provider, &row.connection_config).await;
    };
    let plain = state
        .config
        .keyring
        .open_string(&context(&row.id, "client_credentials"), enc)
        .map_err(|_| ApiError::internal())?;
    let kept: Map<String, Value> = serde_json::from_str(&plain).map_err(|_| ApiError::internal())?;
    let text = |k: &str| kept.get(k).and_then(Value::as_str).unwrap_or_default();
    client_with(state, provider, &row.connection_config, text("client_id"), text("client_secret")).await
}

async fn client_with(
    state: &AppState,
    provider: &ProviderRow,
    config: &Map<String, Value>,
    client_id: &str,
    client_secret: &str,
) -> Result<ClientConfig, ApiError> {
    let endpoints = super::endpoints(state, provider, config).await?;
    let redirect = super::redirect_uri(state);
    let mut cfg = ClientConfig::of(&provider.config, endpoints, nexus_core::SecretString::new(client_secret), redirect);
    cfg.client_id = client_id.to_owned();
    Ok(cfg)
}

/// `jwt_bearer` at capture: the service-account key is checked (its
/// `token_uri` must be the provider's token endpoint), an assertion signed
/// with it is exchanged for the first token (the live verification), and
/// the key is kept sealed where only renewals open it. A refusal is `400
/// invalid_credentials` and nothing is stored.
pub(crate) async fn service_account(
    state: &AppState,
    provider: &ProviderRow,
    row: &ConnectionRow,
    config: Map<String, Value>,
    key: &Map<String, Value>,
) -> Result<Activation, ApiError> {
    let token_url = bearer_token_url(state, provider, &config).await?;
    let account = account_of(key)?;
    let given = key.get("token_uri").and_then(Value::as_str).unwrap_or_default();
    if given.trim_end_matches('/') != token_url.trim_end_matches('/') {
        return Err(ApiError::bad_request(
            "credentials.token_uri: is not the provider's token_url (the key is for another token endpoint)",
        ));
    }
    let tokens = exchange_bearer(state, provider, &account, &token_url, &row.scopes)
        .await
        .map_err(|e| capture_refused(e, "the provider refused the signed assertion"))?;
    let (credentials_enc, expires_at, next_refresh_at) = seal(state, &row.id, &tokens, &row.scopes);
    let kept = Value::Object(key.clone()).to_string();
    Ok(Activation {
        credentials_enc,
        refresh_token_enc: Some(state.config.keyring.seal(&context(&row.id, "service_account"), kept.as_bytes())),
        expires_at,
        scopes: None,
        next_refresh_at,
        connection_config: config,
    })
}

/// A `jwt_bearer` renewal: the kept key signs a new assertion.
pub(crate) async fn renew_bearer(
    state: &AppState,
    provider: &ProviderRow,
    row: &ConnectionRow,
) -> Result<Result<TokenSet, OAuthError>, ApiError> {
    let token_url = bearer_token_url(state, provider, &row.connection_config).await?;
    let enc = row.refresh_token_enc.as_deref().ok_or_else(ApiError::internal)?;
    let plain = state
        .config
        .keyring
        .open_string(&context(&row.id, "service_account"), enc)
        .map_err(|_| ApiError::internal())?;
    let key: Map<String, Value> = serde_json::from_str(&plain).map_err(|_| ApiError::internal())?;
    let account = account_of(&key)?;
    Ok(exchange_bearer(state, provider, &account, &token_url, &row.scopes).await)
}

async fn bearer_token_url(
    state: &AppState,
    provider: &ProviderRow,
    config: &Map<String, Value>,
) -> Result<String, ApiError> {
    super::endpoints(state, provider, config)
        .await?
        .token_url
        .ok_or_else(|| ApiError::new(ErrorCode::ProviderMisconfigured, "the provider has no token_url"))
}

fn account_of(key: &Map<String, Value>) -> Result<nexus_oauth::assertion::ServiceAccount, ApiError> {
    let text = |k: &str| key.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let email = text("client_email").ok_or_else(|| ApiError::bad_request("credentials.client_email: is required"))?;
    let pem = text("private_key").ok_or_else(|| ApiError::bad_request("credentials.private_key: is required"))?;
    Ok(nexus_oauth::assertion::ServiceAccount {
        client_email: email.to_owned(),
        private_key: nexus_core::SecretString::new(pem),
        subject: text("subject").map(str::to_owned),
    })
}

async fn exchange_bearer(
    state: &AppState,
    provider: &ProviderRow,
    account: &nexus_oauth::assertion::ServiceAccount,
    token_url: &str,
    scopes: &[String],
) -> Result<TokenSet, OAuthError> {
    // Signed at the wall clock's time: the provider judges it by its own.
    let assertion = nexus_oauth::assertion::bearer_assertion(account, token_url, scopes, nexus_oauth::assertion::now())
        .map_err(|e| OAuthError::Config(format!("credentials.private_key: {e}")))?;
    let http = nexus_oauth::ProviderHttp::new(state.http.clone());
    let quirks = nexus_oauth::TokenQuirks::of(&provider.config.params);
    nexus_oauth::jwt_bearer(&http, token_url, &assertion, &quirks).await
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
