//! Connect sessions (SPEC 13): a web front end asks for one (admin or
//! connect key) and either sends the user to its `connect_url` or calls
//! `request-connection`, `capture-schema` and `capture-credential` itself
//! with `Authorization: Bearer <token>`, limited to the session's workspace
//! and providers, for 30 minutes.
//!
//! Tokens are `nxc_` + 43 base64url characters; only their SHA-256 is
//! stored. The `connect_url` page exchanges the token for an HttpOnly,
//! SameSite=Strict cookie scoped to `/connect` and takes it out of the
//! address bar (a redirect to `/connect`).

use crate::error::ApiError;
use crate::middleware::Caller;
use crate::services::api_keys::{digest, Access};
use crate::services::providers::rfc3339;
use crate::state::AppState;
use base64::Engine;
use nexus_core::{AuditEvent, Role, ValidationErrors};
use nexus_store::{ApiKeyRef, ConnectSessionRow, NewAudit};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;
use utoipa::ToSchema;

/// How long a session lasts.
pub const LIFETIME: Duration = Duration::from_secs(30 * 60);
pub const PREFIX: &str = "nxc_";
const TOKEN_LEN: usize = 4 + 43;
/// The cookie the `connect_url` page sets.
pub const COOKIE: &str = "nexus_connect";
const PROVIDERS_MAX: usize = 50;

/// `POST /v1/connect/sessions`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectSessionInput {
    /// The one workspace the session may create connections for.
    #[serde(alias = "user_id")]
    pub workspace_id: String,
    /// Provider names the session may connect (any when omitted).
    pub providers: Option<Vec<String>>,
    /// Where the user returns after connecting (`ALLOWED_RETURN_DOMAINS` applies).
    pub return_url: String,
    /// `connection_config` for the connections it creates.
    #[schema(value_type = Option<Object>)]
    pub connection_config: Option<Value>,
}

/// A new session: the token is shown only here.
#[derive(Serialize, ToSchema)]
pub struct ConnectSessionCreated {
    pub session_id: String,
    /// Send as `Authorization: Bearer <token>`, or let the user open `connect_url`.
    pub token: String,
    /// `BASE_URL/connect?session=<token>`.
    pub connect_url: String,
    /// RFC 3339.
    pub expires_at: String,
    pub workspace_id: String,
    pub providers: Option<Vec<String>>,
}

impl std::fmt::Debug for ConnectSessionCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectSessionCreated").field("session_id", &self.session_id).finish_non_exhaustive()
    }
}

fn clean(s: &str, max: usize) -> bool {
    !s.trim().is_empty() && s.len() <= max && !s.chars().any(char::is_control)
}

pub async fn create(state: &AppState, caller: &Caller, body: Value) -> Result<ConnectSessionCreated, ApiError> {
    let input: ConnectSessionInput = nexus_core::wire::from_body(body)?;
    let mut errs = ValidationErrors::default();
    let workspace_id = input.workspace_id.trim().to_owned();
    if !clean(&workspace_id, 256) {
        errs.push("workspace_id", "must be 1 to 256 characters without control characters");
    }
    let mut providers = input.providers.clone();
    if let Some(list) = providers.as_mut() {
        if list.is_empty() || list.len() > PROVIDERS_MAX {
            errs.push("providers", format!("must name 1 to {PROVIDERS_MAX} providers (omit it for any)"));
        }
        for (i, name) in list.iter().enumerate().take(PROVIDERS_MAX) {
            if !clean(name, 256) {
                errs.push(format!("providers[{i}]"), "must be a provider name");
            } else if state.store.provider_by_name(name).await?.is_none() {
                errs.push(format!("providers[{i}]"), "no provider has this name");
            }
        }
        list.sort();
        list.dedup();
    }
    let allowed = state.config.allowed_return_domains.as_deref();
    let return_url = match nexus_core::connection::parse_return_url(&input.return_url, allowed) {
        Ok(u) => u.to_string(),
        Err(m) => {
            errs.push("return_url", m);
            String::new()
        }
    };
    let connection_config: Option<Map<String, Value>> = match input.connection_config {
        None => None,
        Some(Value::Object(m)) if Value::Object(m.clone()).to_string().len() <= 16 * 1024 => Some(m),
        Some(_) => {
            errs.push("connection_config", "must be a JSON object of at most 16 KiB");
            None
        }
    };
    errs.into_result(())?;
    // A connect key limited to some workspaces starts sessions for those only.
    if !caller.may_see(&workspace_id) {
        return Err(ApiError::forbidden("workspace_id: this key may not start sessions for that workspace"));
    }
    let token =
        format!("{PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()));
    let now = state.clock.now_micros();
    let row = ConnectSessionRow {
        id: uuid::Uuid::new_v4().to_string(),
        digest: digest(token.as_bytes()),
        workspace_id,
        providers,
        return_url,
        connection_config,
        created_by: caller.api_key.as_ref().map(|k| k.id.clone()),
        created_at: now,
        expires_at: now + i64::try_from(LIFETIME.as_micros()).unwrap_or(i64::MAX),
    };
    let entry = NewAudit {
        workspace_id: Some(row.workspace_id.clone()),
        ..caller.audit(AuditEvent::ConnectSessionCreated, json!({ "session_id": row.id, "providers": row.providers }))
    };
    state.store.insert_connect_session(&row, entry).await?;
    let base = state.config.base_url.as_str().trim_end_matches('/');
    Ok(ConnectSessionCreated {
        session_id: row.id,
        connect_url: format!("{base}/connect?session={token}"),
        token,
        expires_at: rfc3339(row.expires_at),
        workspace_id: row.workspace_id,
        providers: row.providers,
    })
}

/// Whether a session may call `method path` (the three routes a browser needs).
pub fn allows(method: &str, path: &str) -> bool {
    matches!(
        (method, path),
        ("POST", "/v1/request-connection") | ("GET", "/v1/capture-schema") | ("POST", "/v1/capture-credential")
    )
}

/// Whether `raw` looks like a session token (cheap, before any lookup).
pub fn looks_like_token(raw: &[u8]) -> bool {
    raw.len() == TOKEN_LEN && raw.starts_with(PREFIX.as_bytes())
}

/// The live session of `token` (`Err(reason)`: unknown or expired).
pub async fn find(state: &AppState, token: &[u8]) -> Result<Result<Arc<ConnectSessionRow>, &'static str>, ApiError> {
    if !looks_like_token(token) {
        return Ok(Err("invalid_session"));
    }
    Ok(match state.store.connect_session_by_digest(&digest(token)).await? {
        None => Err("invalid_session"),
        Some(row) if row.expires_at <= state.clock.now_micros() => Err("expired_session"),
        Some(row) => Ok(Arc::new(row)),
    })
}

/// The access a live session gives: its workspace only.
pub fn access(session: Arc<ConnectSessionRow>) -> Access {
    Access {
        key: ApiKeyRef { id: format!("session:{}", session.id), name: "connect session".into() },
        role: Role::Connect,
        workspaces: Some(Arc::from(vec![session.workspace_id.clone()].into_boxed_slice())),
        session: Some(session),
    }
}

/// What a session allows of a `request-connection` body: the workspace and
/// provider must be its own; its `return_url` and `connection_config` fill
/// what the body leaves out.
pub fn limit_request(session: &ConnectSessionRow, body: &mut Value) -> Result<(), ApiError> {
    let Some(o) = body.as_object_mut() else { return Ok(()) };
    let workspace = o.get("workspace_id").or_else(|| o.get("user_id")).and_then(Value::as_str).map(str::trim);
    if workspace.is_some_and(|w| w != session.workspace_id) {
        return Err(ApiError::forbidden("workspace_id: this Connect session is for another workspace"));
    }
    if workspace.is_none() {
        o.insert("workspace_id".into(), Value::String(session.workspace_id.clone()));
    }
    match o.get("return_url").and_then(Value::as_str) {
        None | Some("") => {
            o.insert("return_url".into(), Value::String(session.return_url.clone()));
        }
        Some(u) if url::Url::parse(u).map(|u| u.to_string()).as_deref() != Ok(session.return_url.as_str()) => {
            return Err(ApiError::forbidden("return_url: this Connect session returns to its own return_url"));
        }
        Some(_) => {}
    }
    if let (None, Some(config)) = (o.get("connection_config"), &session.connection_config) {
        o.insert("connection_config".into(), Value::Object(config.clone()));
    }
    Ok(())
}

/// Whether the session may connect `provider_name`.
pub fn allows_provider(session: &ConnectSessionRow, provider_name: &str) -> bool {
    session.providers.as_ref().is_none_or(|p| p.iter().any(|n| n == provider_name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_reach_three_routes() {
        assert!(allows("POST", "/v1/request-connection"));
        assert!(allows("GET", "/v1/capture-schema"));
        assert!(allows("POST", "/v1/capture-credential"));
        for (m, p) in [
            ("GET", "/v1/token/x"),
            ("POST", "/v1/connect/sessions"),
            ("GET", "/v1/connections"),
            ("POST", "/v1/refresh/x"),
        ] {
            assert!(!allows(m, p), "{m} {p}");
        }
    }

    #[test]
    fn a_session_fills_and_limits_the_request() {
        let s = ConnectSessionRow {
            id: "s".into(),
            digest: "d".into(),
            workspace_id: "w1".into(),
            providers: Some(vec!["github".into()]),
            return_url: "https://app.example.test/done".into(),
            connection_config: None,
            created_by: None,
            created_at: 0,
            expires_at: 1,
        };
        let mut body = json!({"provider_name": "github"});
        limit_request(&s, &mut body).unwrap();
        assert_eq!(body["workspace_id"], "w1");
        assert_eq!(body["return_url"], "https://app.example.test/done");
        assert!(limit_request(&s, &mut json!({"workspace_id": "w2"})).is_err());
        assert!(limit_request(&s, &mut json!({"user_id": "w2"})).is_err());
        assert!(limit_request(&s, &mut json!({"return_url": "https://evil.example/"})).is_err());
        assert!(allows_provider(&s, "github") && !allows_provider(&s, "slack"));
    }
}
