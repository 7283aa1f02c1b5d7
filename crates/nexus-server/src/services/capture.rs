//! Static credential capture (SPEC section 4): the schema a UI renders, and
//! the submission — validated against the provider's `credential_schema`,
//! optionally verified live against the provider, sealed, and stored with the
//! single-use state consumed in the same statement.

use crate::error::ApiError;
use crate::middleware::Caller;
use crate::services::connections::{audit, context, expire_if_stale};
use crate::services::state_token::{self, StateProblem};
use crate::services::{connection_config, strategy};
use crate::state::AppState;
use nexus_core::wire::CaptureRequest;
use nexus_core::wire::ErrorCode;
use nexus_core::AuditEvent;
use nexus_core::{AuthType, ConnectionStatus};
use nexus_store::{Activation, ConnectionRow, ProviderRow};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::time::Duration;
use utoipa::ToSchema;

/// The answer of `GET /v1/capture-schema`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CaptureSchema {
    pub connection_id: String,
    pub provider: String,
    pub auth_type: AuthType,
    /// The provider's JSON Schema, its properties in the operator's order.
    #[schema(value_type = Object)]
    pub credential_schema: Value,
}

/// A successful capture: where to send the user next.
#[derive(Debug, Serialize, ToSchema)]
pub struct Captured {
    pub connection_id: String,
    pub status: ConnectionStatus,
    pub return_url: String,
}

fn invalid_state(p: StateProblem) -> ApiError {
    match p {
        StateProblem::Expired => {
            ApiError::new(ErrorCode::StateExpired, "state: the capture link has expired; request a new connection")
        }
        StateProblem::Invalid => ApiError::new(ErrorCode::InvalidState, "state: not a valid capture state"),
    }
}

/// Resolves a state to its pending connection and provider (without consuming it).
async fn pending(
    state: &AppState,
    caller: &Caller,
    raw_state: &str,
) -> Result<(ConnectionRow, ProviderRow, String), ApiError> {
    let claims =
        state_token::verify(&state.config.state_signer, raw_state, state.clock.now_secs()).map_err(invalid_state)?;
    // Another workspace's capture is no business of a session or a limited key.
    let row = crate::services::connections::visible(state, caller, &claims.connection_id)
        .await?
        .ok_or_else(|| invalid_state(StateProblem::Invalid))?;
    let row = expire_if_stale(state, row).await?;
    if row.state_nonce.as_deref() != Some(claims.nonce.as_str()) {
        return Err(ApiError::new(ErrorCode::StateUsed, "state: this capture was already completed or superseded"));
    }
    let provider = state.store.provider_by_id(&row.provider_id).await?.ok_or_else(ApiError::provider_deleted)?;
    if caller
        .session()
        .is_some_and(|s| !crate::services::connect_sessions::allows_provider(s, provider.config.name.as_str()))
    {
        return Err(ApiError::forbidden("state: this Connect session may not connect that provider"));
    }
    if !provider.config.captures_credentials() {
        return Err(ApiError::bad_request("state: this connection uses OAuth2, not credential capture"));
    }
    Ok((row, provider, claims.nonce))
}

/// `GET /v1/capture-schema?state=…`.
pub async fn schema(state: &AppState, caller: &Caller, raw_state: &str) -> Result<CaptureSchema, ApiError> {
    let (row, provider, _) = pending(state, caller, raw_state).await?;
    Ok(CaptureSchema {
        connection_id: row.id,
        provider: provider.config.name.to_string(),
        auth_type: provider.config.auth_type,
        credential_schema: provider.config.credential_schema(),
    })
}

/// Every way `value` (the body field `prefix`) fails the schema, as
/// `{field, message}` pairs.
pub fn schema_errors(schema: &Value, value: &Value, prefix: &str) -> Vec<Value> {
    let validator = match jsonschema::validator_for(schema) {
        Ok(v) => v,
        Err(e) => {
            return vec![json!({ "field": prefix, "message": format!("the provider's schema is unusable: {e}") })]
        }
    };
    validator
        .iter_errors(value)
        .map(|e| {
            let path = e.instance_path().to_string();
            let field = match path.trim_start_matches('/') {
                "" => missing_field(&e.to_string()).map(|f| format!("{prefix}.{f}")).unwrap_or_else(|| prefix.into()),
                p => format!("{prefix}.{}", p.replace('/', ".")),
            };
            // The message names the rule, never the submitted value.
            json!({ "field": field, "message": describe_kind(&e) })
        })
        .collect()
}

/// `400` listing every field of `value` (the body field `prefix`) that fails
/// `schema` (`what` names it in the message).
pub fn check_schema(schema: &Value, value: &Value, prefix: &str, what: &str) -> Result<(), ApiError> {
    let errors = schema_errors(schema, value, prefix);
    if errors.is_empty() {
        return Ok(());
    }
    let fields: Vec<&str> = errors.iter().filter_map(|e| e["field"].as_str()).collect();
    Err(ApiError::bad_request(format!("{prefix} do not match {what}: {}", fields.join(", ")))
        .with_details(json!({ "fields": errors })))
}

fn missing_field(message: &str) -> Option<String> {
    let start = message.find('"')? + 1;
    let end = start + message[start..].find('"')?;
    message.contains("is a required property").then(|| message[start..end].to_owned())
}

fn describe_kind(e: &jsonschema::ValidationError<'_>) -> String {
    let text = e.to_string();
    if text.contains("is a required property") {
        "is required".into()
    } else if let Some(rest) = text.split(" is not of type ").nth(1) {
        format!("must be of type {rest}")
    } else {
        format!("does not satisfy the schema ({})", e.schema_path())
    }
}

/// `POST /v1/capture-credential` (and the public capture form).
pub async fn submit(state: &AppState, caller: &Caller, body: Value) -> Result<Captured, ApiError> {
    let CaptureRequest { state: raw_state, credentials } = nexus_core::wire::from_body(body)?;
    let credentials = Value::Object(credentials);
    let (row, provider, nonce) = pending(state, caller, &raw_state).await?;
    let schema = provider.config.credential_schema();
    check_schema(&schema, &credentials, "credentials", "the provider's schema")?;
    let credentials = credentials.as_object().cloned().unwrap_or_default();
    let config = row.handshake_config.clone().unwrap_or_else(|| row.connection_config.clone());
    let activation = if provider.config.auth_type == AuthType::JwtBearer {
        // A service-account key: the first token is its live verification.
        crate::services::connections::grant::service_account(state, &provider, &row, config, &credentials).await?
    } else if provider.config.auth_type == AuthType::Oauth2ClientCredentials {
        // A client of its own: likewise.
        crate::services::connections::grant::captured_client(state, &provider, &row, config, &credentials).await?
    } else {
        strategy::check_credentials(&provider, &config, &credentials).map_err(ApiError::bad_request)?;
        verify_live(state, &provider, &config, &credentials).await?;
        Activation {
            credentials_enc: state
                .config
                .keyring
                .seal(&context(&row.id, "credentials"), Value::Object(credentials.clone()).to_string().as_bytes()),
            refresh_token_enc: None,
            expires_at: None,
            scopes: Some(Vec::new()),
            next_refresh_at: None,
            connection_config: config,
        }
    };
    let fields: Vec<&String> = credentials.keys().collect();
    let data =
        json!({ "auth_type": provider.config.auth_type, "fields": fields, "verified_live": has_live_check(&provider) });
    let stored = state
        .store
        .activate_connection(
            &row.id,
            Some(&nonce),
            &activation,
            audit(Some(caller), AuditEvent::CredentialCaptured, &row, data),
        )
        .await;
    state.invalidate(nexus_store::Invalidation::Connection(row.id.clone()));
    if !stored? {
        return Err(ApiError::new(ErrorCode::StateUsed, "state: this capture was already completed or has expired"));
    }
    let mut return_url = url::Url::parse(&row.return_url).map_err(|_| ApiError::internal())?;
    return_url.query_pairs_mut().append_pair("connection_id", &row.id).append_pair("status", "success");
    Ok(Captured { connection_id: row.id, status: ConnectionStatus::Active, return_url: return_url.to_string() })
}

fn has_live_check(provider: &ProviderRow) -> bool {
    provider.config.api_base_url.is_some() && provider.config.user_info_endpoint.is_some()
}

/// With `api_base_url` and `user_info_endpoint`, applies the strategy to a GET
/// of that URL: 401/403 → `400 invalid_credentials`; unreachable → `502`.
async fn verify_live(
    state: &AppState,
    provider: &ProviderRow,
    config: &Map<String, Value>,
    credentials: &Map<String, Value>,
) -> Result<(), ApiError> {
    let Some(url) = connection_config::user_info_url(&provider.config, config)
        .map_err(|e| ApiError::new(ErrorCode::ProviderMisconfigured, e))?
    else {
        return Ok(());
    };
    let request = strategy::sign_request(state, provider, config, credentials, reqwest::Method::GET, &url, b"")
        .map_err(|e| ApiError::new(ErrorCode::ProviderMisconfigured, e))?;
    let unreachable =
        || ApiError::new(ErrorCode::ProviderUnreachable, "the provider could not be reached to verify the credentials");
    let response = tokio::time::timeout(Duration::from_secs(15), state.http.execute(request))
        .await
        .map_err(|_| unreachable())?
        .map_err(|_| unreachable())?;
    match response.status().as_u16() {
        401 | 403 => Err(ApiError::new(ErrorCode::InvalidCredentials, "the provider refused these credentials")),
        s if s >= 500 => Err(ApiError::new(
            ErrorCode::ProviderError,
            format!("the provider answered {s} while verifying the credentials"),
        )),
        _ => Ok(()),
    }
}
