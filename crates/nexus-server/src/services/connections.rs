//! Connections (SPEC section 4): requesting one, the OAuth2 callback, checking,
//! listing and revoking. Static credential capture lives in [`super::capture`].

use crate::error::ApiError;
use crate::middleware::Caller;
use crate::services::providers::{self, rfc3339};
use crate::services::state_token::{self, StateClaims, StateProblem};
use crate::state::AppState;
use nexus_core::connection::{narrow_scopes, parse_return_url, PENDING_TTL_SECS};
use nexus_core::wire::ErrorCode;
pub use nexus_core::wire::{ConnectionRequested, ConnectionView, RequestConnection};
use nexus_core::{AuditEvent, AuthType, ConnectionStatus, SecretString};
use nexus_oauth::{ClientAuth, ClientConfig};
use nexus_store::{Activation, ConnectionFilter, ConnectionRow, Handshake, Invalidation, NewAudit, ProviderRow};
use serde::Deserialize;
use serde_json::{json, Map, Value};

pub fn view(row: ConnectionRow) -> ConnectionView {
    ConnectionView {
        connection_id: row.id,
        status: row.status,
        provider: row.provider_name,
        provider_id: row.provider_id,
        auth_type: row.auth_type,
        workspace_id: row.workspace_id,
        scopes: row.scopes,
        metadata: row.metadata,
        error: row.last_error,
        expires_at: row.expires_at,
        created_at: rfc3339(row.created_at),
        updated_at: rfc3339(row.updated_at),
    }
}

pub(crate) fn context(connection_id: &str, field: &str) -> String {
    format!("connection:{connection_id}:{field}")
}

pub(crate) fn audit(caller: Option<&Caller>, event: AuditEvent, row: &ConnectionRow, data: Value) -> NewAudit {
    NewAudit {
        event_type: event,
        ip: caller.map(Caller::ip_string),
        user_agent: caller.and_then(|c| c.user_agent.clone()),
        provider_id: Some(row.provider_id.clone()),
        connection_id: Some(row.id.clone()),
        workspace_id: Some(row.workspace_id.clone()),
        data,
        at: Some(chrono::Utc::now().timestamp_micros()),
        id: None,
        api_key: caller.and_then(|c| c.api_key.clone()),
    }
}

/// The redirect URI registered at providers.
pub fn redirect_uri(state: &AppState) -> String {
    format!("{}{}", state.config.base_url.as_str().trim_end_matches('/'), state.config.redirect_path)
}

/// The authorization and token endpoints of an oauth2 provider (discovered or manual).
pub(crate) struct Endpoints {
    pub auth_url: String,
    pub token_url: String,
    pub jwks_uri: Option<String>,
    pub revocation: Option<String>,
}

pub(crate) fn endpoints(provider: &ProviderRow) -> Result<Endpoints, ApiError> {
    let cfg = &provider.config;
    let (auth_url, token_url) = match &provider.discovery {
        Some(d) => (d.authorization_endpoint.clone(), d.token_endpoint.clone()),
        None => (cfg.auth_url.clone().unwrap_or_default(), cfg.token_url.clone().unwrap_or_default()),
    };
    if auth_url.is_empty() || token_url.is_empty() {
        return Err(ApiError::new(
            ErrorCode::ProviderMisconfigured,
            "the provider has no authorization or token endpoint",
        ));
    }
    Ok(Endpoints {
        auth_url,
        token_url,
        jwks_uri: provider.discovery.as_ref().and_then(|d| d.jwks_uri.clone()),
        revocation: provider.discovery.as_ref().and_then(|d| d.revocation_endpoint.clone()),
    })
}

/// The client registration of an oauth2 provider, with its secret opened.
pub(crate) fn client_config(state: &AppState, provider: &ProviderRow) -> Result<ClientConfig, ApiError> {
    let ep = endpoints(provider)?;
    let secret = match &provider.client_secret_enc {
        Some(enc) => {
            state.config.keyring.open_string(&format!("provider:{}:client_secret", provider.id), enc).map_err(|e| {
                tracing::error!(provider = %provider.id, error = %e, "client secret does not open");
                ApiError::internal()
            })?
        }
        None => return Err(ApiError::new(ErrorCode::ProviderMisconfigured, "the provider has no client secret")),
    };
    Ok(ClientConfig {
        client_id: provider.config.client_id.clone().unwrap_or_default(),
        client_secret: SecretString::new(secret.as_str()),
        auth: ClientAuth::from_auth_header(provider.config.auth_header.as_deref()),
        auth_url: ep.auth_url,
        token_url: ep.token_url,
        redirect_uri: redirect_uri(state),
    })
}

fn param_str<'a>(provider: &'a ProviderRow, key: &str) -> Option<&'a str> {
    provider.config.params.get(key).and_then(Value::as_str)
}

fn param_bool(provider: &ProviderRow, key: &str) -> bool {
    provider.config.params.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn param_map(provider: &ProviderRow, key: &str) -> Map<String, Value> {
    provider.config.params.get(key).and_then(Value::as_object).cloned().unwrap_or_default()
}

/// `POST /v1/request-connection`.
pub async fn request(state: &AppState, caller: &Caller, body: Value) -> Result<ConnectionRequested, ApiError> {
    let input: RequestConnection = nexus_core::wire::from_body(body)?;
    let workspace_id = input.workspace_id.trim().to_owned();
    if workspace_id.is_empty() || workspace_id.len() > 256 {
        return Err(ApiError::bad_request("workspace_id: must be 1 to 256 characters"));
    }
    let provider_ref = match (&input.provider_id, &input.provider_name) {
        (Some(id), _) if !id.is_empty() => id.clone(),
        (_, Some(name)) if !name.is_empty() => name.clone(),
        _ => return Err(ApiError::bad_request("provider_id: provider_id or provider_name is required")),
    };
    let allowed = state.config.allowed_return_domains.as_deref();
    let return_url =
        parse_return_url(&input.return_url, allowed).map_err(|m| ApiError::bad_request(format!("return_url: {m}")))?;
    if let Some(m) = &input.metadata {
        if !m.is_object() || m.to_string().len() > 16 * 1024 {
            return Err(ApiError::bad_request("metadata: must be a JSON object of at most 16 KiB"));
        }
    }
    let provider = providers::find(state, &provider_ref).await.map_err(|e| {
        if e.code == ErrorCode::NotFound {
            ApiError::not_found(format!(
                "provider_id: no provider with id or name '{}'",
                provider_ref.chars().take(80).collect::<String>()
            ))
        } else {
            e
        }
    })?;
    let auth_type = provider.config.auth_type;
    let scopes = if auth_type == AuthType::Oauth2 {
        narrow_scopes(&provider.config.scopes, input.scopes.as_deref())
            .map_err(|m| ApiError::bad_request(format!("scopes: {m}")))?
    } else {
        Vec::new()
    };

    let existing = match &input.connection_id {
        None => None,
        Some(id) => {
            let row = state
                .store
                .connection_by_id(id)
                .await?
                .ok_or_else(|| ApiError::not_found("connection_id: no such connection"))?;
            if row.provider_id != provider.id {
                return Err(ApiError::conflict("connection_id: that connection belongs to another provider"));
            }
            if row.workspace_id != workspace_id {
                return Err(ApiError::conflict("connection_id: that connection belongs to another workspace"));
            }
            Some(row)
        }
    };
    let connection_id = existing.as_ref().map(|r| r.id.clone()).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let expires_at = state.clock.now_secs() + PENDING_TTL_SECS;
    let nonce = state_token::random_nonce();
    let state_string = state_token::issue(
        &state.config.state_signer,
        &StateClaims { connection_id: connection_id.clone(), nonce: nonce.clone(), expires_at },
    );

    let (auth_url, pkce_enc, oidc_nonce) = if auth_type == AuthType::Oauth2 {
        let cfg = client_config(state, &provider)?;
        let verifier = nexus_oauth::new_pkce_verifier();
        let oidc_nonce = scopes.iter().any(|s| s == "openid").then(state_token::random_nonce);
        let extra = param_map(&provider, "authorization_params");
        let url = nexus_oauth::authorization_url(
            &cfg,
            &nexus_oauth::AuthorizationParams {
                scopes: &scopes,
                scope_separator: param_str(&provider, "scope_separator").unwrap_or(" "),
                send_scope: !param_bool(&provider, "skip_scope_on_auth"),
                extra: &extra,
                state: &state_string,
                pkce_verifier: &verifier,
                nonce: oidc_nonce.as_deref(),
            },
        )
        .map_err(|e| ApiError::new(ErrorCode::ProviderMisconfigured, e.to_string()))?;
        let sealed = state.config.keyring.seal(&context(&connection_id, "pkce_verifier"), verifier.expose().as_bytes());
        (url.to_string(), Some(sealed), oidc_nonce)
    } else {
        (capture_url(state, &state_string), None, None)
    };

    let handshake = Handshake {
        state_nonce: nonce,
        expires_at: expires_at * 1_000_000,
        pkce_verifier_enc: pkce_enc,
        oidc_nonce,
        scopes: scopes.clone(),
        return_url: return_url.to_string(),
        metadata: input.metadata.clone(),
    };
    let data = json!({ "provider": provider.config.name, "auth_type": auth_type, "scopes": scopes, "reauthorize": existing.is_some() });
    match existing {
        Some(row) => {
            state
                .store
                .restart_handshake(
                    &row.id,
                    &handshake,
                    audit(Some(caller), AuditEvent::ConnectionRequested, &row, data),
                )
                .await?;
        }
        None => {
            let now = state.clock.now_micros();
            let row = ConnectionRow {
                workspace_id,
                scopes: handshake.scopes.clone(),
                return_url: handshake.return_url.clone(),
                metadata: handshake.metadata.clone(),
                state_nonce: Some(handshake.state_nonce.clone()),
                handshake_expires_at: Some(handshake.expires_at),
                pkce_verifier_enc: handshake.pkce_verifier_enc.clone(),
                oidc_nonce: handshake.oidc_nonce.clone(),
                created_at: now,
                updated_at: now,
                ..ConnectionRow::pending(
                    connection_id.clone(),
                    provider.id.clone(),
                    provider.config.name.to_string(),
                    auth_type,
                )
            };
            state
                .store
                .insert_connection(&row, audit(Some(caller), AuditEvent::ConnectionRequested, &row, data))
                .await?;
        }
    }
    Ok(ConnectionRequested {
        connection_id,
        auth_url_alias: auth_url.clone(),
        auth_url,
        state: state_string,
        provider_id: provider.id,
        scopes,
        expires_at,
    })
}

/// Where a static provider's `auth_url` points: Nexus's own capture page.
fn capture_url(state: &AppState, state_string: &str) -> String {
    let mut url = state.config.base_url.clone();
    let base_path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("{base_path}/auth/capture"));
    url.query_pairs_mut().clear().append_pair("state", state_string);
    url.to_string()
}

/// What the callback answers: a redirect to the return URL, or a plain page
/// when the state cannot be trusted.
#[derive(Debug)]
pub enum CallbackOutcome {
    Redirect(String),
    Untrusted(&'static str),
}

/// Query parameters of `GET /auth/callback`.
#[derive(Debug, Default, Deserialize)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    pub iss: Option<String>,
}

fn redirect_to(return_url: &str, pairs: &[(&str, &str)]) -> String {
    match url::Url::parse(return_url) {
        Ok(mut u) => {
            {
                let mut q = u.query_pairs_mut();
                for (k, v) in pairs {
                    q.append_pair(k, v);
                }
            }
            u.to_string()
        }
        Err(_) => return_url.to_owned(),
    }
}

fn error_code(raw: &str) -> String {
    let code: String =
        raw.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.' || *c == '-').take(64).collect();
    if code.is_empty() {
        "error".into()
    } else {
        code
    }
}

/// `GET /auth/callback`.
pub async fn callback(state: &AppState, caller: &Caller, q: CallbackQuery) -> CallbackOutcome {
    let Some(raw_state) = q.state.as_deref() else {
        return CallbackOutcome::Untrusted("The authorization response has no state.");
    };
    let claims = match state_token::verify(&state.config.state_signer, raw_state, state.clock.now_secs()) {
        Ok(c) => c,
        Err(StateProblem::Expired) => {
            return CallbackOutcome::Untrusted("This authorization link has expired. Start again.")
        }
        Err(StateProblem::Invalid) => return CallbackOutcome::Untrusted("The authorization state is not valid."),
    };
    let conn = match state.store.consume_state(&claims.connection_id, &claims.nonce).await {
        Ok(Some(row)) => row,
        Ok(None) => return CallbackOutcome::Untrusted("This authorization response was already used or has expired."),
        Err(e) => {
            tracing::error!(error = %e, "consuming state failed");
            return CallbackOutcome::Untrusted("The authorization could not be completed. Try again.");
        }
    };
    match complete(state, caller, &conn, &q).await {
        Ok(()) => CallbackOutcome::Redirect(redirect_to(
            &conn.return_url,
            &[("connection_id", &conn.id), ("status", "success")],
        )),
        Err(code) => {
            let audit_row = audit(Some(caller), AuditEvent::ConnectionFailed, &conn, json!({ "error": code }));
            if let Err(e) = state.store.fail_connection(&conn.id, &code, audit_row).await {
                tracing::error!(error = %e, connection = %conn.id, "could not record a failed connection");
            }
            state.invalidate(Invalidation::Connection(conn.id.clone()));
            CallbackOutcome::Redirect(redirect_to(
                &conn.return_url,
                &[("connection_id", &conn.id), ("status", "error"), ("error", &code)],
            ))
        }
    }
}

/// Finishes a trusted callback; `Err(code)` is the error reported to the return URL.
async fn complete(state: &AppState, caller: &Caller, conn: &ConnectionRow, q: &CallbackQuery) -> Result<(), String> {
    if let Some(err) = &q.error {
        return Err(error_code(err));
    }
    let provider = match state.store.provider_by_id(&conn.provider_id).await {
        Ok(Some(p)) => p,
        Ok(None) => return Err("provider_deleted".into()),
        Err(_) => return Err("server_error".into()),
    };
    let expected_issuer = provider.config.issuer.as_deref().filter(|_| provider.discovery.is_some());
    if let (Some(iss), Some(expected)) = (q.iss.as_deref(), expected_issuer) {
        if iss.trim_end_matches('/') != expected.trim_end_matches('/') {
            return Err("invalid_issuer".into());
        }
    }
    let Some(code) = q.code.as_deref().filter(|c| !c.is_empty() && c.len() <= 4096) else {
        return Err("missing_code".into());
    };
    let cfg = client_config(state, &provider).map_err(|e| e.code.as_str().to_owned())?;
    let verifier = conn
        .pkce_verifier_enc
        .as_deref()
        .and_then(|enc| state.config.keyring.open_string(&context(&conn.id, "pkce_verifier"), enc).ok())
        .ok_or_else(|| "server_error".to_owned())?;
    let verifier = SecretString::new(verifier.as_str());
    let scopes = (!param_bool(&provider, "skip_scope_on_exchange"))
        .then(|| (conn.scopes.as_slice(), param_str(&provider, "scope_separator").unwrap_or(" ")));
    let http = nexus_oauth::ProviderHttp::new(state.http.clone());
    let tokens =
        nexus_oauth::exchange_code(&http, &cfg, code, &verifier, scopes, &param_map(&provider, "token_params"))
            .await
            .map_err(|e| {
            tracing::warn!(connection = %conn.id, error = %e, "code exchange failed");
            e.code()
        })?;

    let mut id_token_verified = false;
    if let Some(id_token) = &tokens.id_token {
        let issuer = provider.config.issuer.clone();
        let jwks = endpoints(&provider).ok().and_then(|e| e.jwks_uri);
        match (issuer, jwks, conn.oidc_nonce.as_deref()) {
            (Some(issuer), Some(jwks), Some(nonce)) => {
                let check = nexus_oauth::IdTokenCheck {
                    issuer: &issuer,
                    jwks_uri: &jwks,
                    client_id: &cfg.client_id,
                    client_secret: &cfg.client_secret,
                    nonce,
                };
                nexus_oauth::verify_id_token(&http, id_token, &check).await.map_err(|why| {
                    tracing::warn!(connection = %conn.id, reason = %why, "id_token rejected");
                    "invalid_id_token".to_owned()
                })?;
                id_token_verified = true;
            }
            (_, _, None) => return Err("unexpected_id_token".into()),
            _ => tracing::warn!(connection = %conn.id, "id_token kept unverified: the provider has no discovered JWKS"),
        }
    }

    let mut credentials = tokens.extras.clone();
    credentials.insert("access_token".into(), Value::String(tokens.access_token.expose().to_owned()));
    credentials.insert("token_type".into(), Value::String(tokens.token_type.clone()));
    let granted_scope = tokens.scope.clone().unwrap_or_else(|| conn.scopes.join(" "));
    credentials.insert("scope".into(), Value::String(granted_scope));
    if let Some(id_token) = &tokens.id_token {
        credentials.insert("id_token".into(), Value::String(id_token.clone()));
    }
    let activation = Activation {
        credentials_enc: state
            .config
            .keyring
            .seal(&context(&conn.id, "credentials"), Value::Object(credentials).to_string().as_bytes()),
        refresh_token_enc: tokens
            .refresh_token
            .as_ref()
            .map(|r| state.config.keyring.seal(&context(&conn.id, "refresh_token"), r.expose().as_bytes())),
        expires_at: tokens.expires_in.map(|s| state.clock.now_secs() + s as i64),
        scopes: None,
        next_refresh_at: tokens.refresh_token.as_ref().and(tokens.expires_in).map(|s| {
            crate::services::refresh::renew_at(state.clock.now_secs() + s as i64, state.config.refresh_window_secs)
        }),
    };
    let data = json!({ "auth_type": "oauth2", "id_token_verified": id_token_verified, "refresh_token": tokens.refresh_token.is_some() });
    let stored = state
        .store
        .activate_connection(
            &conn.id,
            None,
            &activation,
            audit(Some(caller), AuditEvent::ConnectionActivated, conn, data),
        )
        .await;
    state.invalidate(Invalidation::Connection(conn.id.clone()));
    match stored {
        Ok(true) => Ok(()),
        Ok(false) => Err("connection_revoked".into()),
        Err(e) => {
            tracing::error!(error = %e, "storing tokens failed");
            Err("server_error".into())
        }
    }
}

/// `GET /v1/check-connection/{id}`: expires stale pending connections on the way.
pub async fn check(state: &AppState, id: &str) -> Result<ConnectionView, ApiError> {
    let row = state.store.connection_by_id(id).await?.ok_or_else(|| ApiError::not_found("no such connection"))?;
    let row = expire_if_stale(state, row).await?;
    Ok(view(row))
}

/// Moves a pending connection past its handshake expiry to `failed` (`expired`).
pub(crate) async fn expire_if_stale(state: &AppState, row: ConnectionRow) -> Result<ConnectionRow, ApiError> {
    if row.status == ConnectionStatus::Pending && row.handshake_expires_at.is_some_and(|t| t < state.clock.now_micros())
    {
        let a = audit(None, AuditEvent::ConnectionFailed, &row, json!({ "error": "expired" }));
        state.store.expire_pending(&row.id, a).await?;
        state.invalidate(Invalidation::Connection(row.id.clone()));
        return Ok(state.store.connection_by_id(&row.id).await?.unwrap_or(row));
    }
    Ok(row)
}

/// Query of `GET /v1/connections`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub workspace_id: Option<String>,
    /// Provider id or name.
    pub provider: Option<String>,
    pub status: Option<ConnectionStatus>,
    /// Default 100; larger values are capped at 1000.
    #[param(minimum = 1)]
    pub limit: Option<i64>,
}

pub async fn list(state: &AppState, q: ListQuery) -> Result<Vec<ConnectionView>, ApiError> {
    if q.limit.is_some_and(|n| n < 1) {
        return Err(ApiError::bad_request("limit: must be at least 1"));
    }
    let provider_id = match q.provider {
        None => None,
        Some(p) => match state.store.provider_by_name(&p).await? {
            Some(row) => Some(row.id),
            None => Some(p),
        },
    };
    let rows = state
        .store
        .list_connections(&ConnectionFilter {
            workspace_id: q.workspace_id,
            provider_id,
            status: q.status,
            limit: q.limit.unwrap_or(100).min(1000),
        })
        .await?;
    Ok(rows.into_iter().map(view).collect())
}

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
