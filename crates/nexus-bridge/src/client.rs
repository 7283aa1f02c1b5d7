//! A typed client for the Nexus Gateway API (`/v1/*`), with the error codes of
//! the API as typed errors.

use crate::strategies::{static_headers, BridgeError, Header};
use crate::target::Base;
use nexus_core::strategy::Strategy;
use nexus_core::wire::{self, ErrorBody, ErrorCode};
use nexus_core::AuthType;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// What `GET /v1/token/{id}` answers. `Debug` names the credential fields,
/// never their values.
///
/// An answer does not change once made (its fields are read through
/// methods; the `with_*` methods make a new one), so what a proxy works out
/// from it once — the parsed base URL, a static signature header — always
/// matches its strategy and credentials.
#[derive(Clone, Deserialize, Serialize)]
#[serde(from = "wire::TokenAnswer", into = "wire::TokenAnswer")]
pub struct TokenAnswer {
    /// What the Gateway sent (the shared wire type).
    wire: wire::TokenAnswer,
    /// When this answer was received (or made).
    received: Instant,
    /// Worked out on first use, once per answer: what a proxy would
    /// otherwise redo on every request.
    prepared: OnceLock<Prepared>,
}

impl From<wire::TokenAnswer> for TokenAnswer {
    fn from(wire: wire::TokenAnswer) -> TokenAnswer {
        TokenAnswer { wire, received: Instant::now(), prepared: OnceLock::new() }
    }
}

impl From<TokenAnswer> for wire::TokenAnswer {
    fn from(answer: TokenAnswer) -> wire::TokenAnswer {
        answer.wire
    }
}

/// How long an answer is reused when the Gateway gives no `max_age`.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30);

/// The parts of an answer that a proxy needs on every request, parsed once.
#[derive(Clone)]
struct Prepared {
    base: Option<Result<Base, String>>,
    signature: Result<Option<Vec<Header>>, BridgeError>,
}

impl TokenAnswer {
    /// An answer, as the Gateway would give it.
    pub fn new(
        connection_id: impl Into<String>,
        provider: impl Into<String>,
        auth_type: AuthType,
        strategy: Strategy,
        credentials: Map<String, Value>,
    ) -> TokenAnswer {
        TokenAnswer::from(wire::TokenAnswer {
            connection_id: connection_id.into(),
            provider: provider.into(),
            auth_type,
            strategy,
            credentials,
            expires_at: None,
            api_base_url: None,
            connection_config: Map::new(),
            max_age: None,
        })
    }

    /// This answer, reusable for `max_age` from now.
    pub fn with_max_age(mut self, max_age: Duration) -> TokenAnswer {
        self.wire.max_age = Some(max_age.as_secs());
        self.received = Instant::now();
        self
    }

    /// How long this answer may be reused from when it was received.
    pub fn max_age(&self) -> Duration {
        self.wire.max_age.map_or(DEFAULT_MAX_AGE, Duration::from_secs)
    }

    /// Whether it is older than its `max_age`.
    pub fn is_past_max_age(&self) -> bool {
        self.received.elapsed() >= self.max_age()
    }

    /// This answer expiring at `expires_at` (Unix seconds; `None`: never).
    pub fn with_expires_at(mut self, expires_at: Option<i64>) -> TokenAnswer {
        self.wire.expires_at = expires_at;
        self
    }

    /// This answer for a provider whose API lives under `api_base_url`.
    pub fn with_api_base_url(mut self, api_base_url: Option<String>) -> TokenAnswer {
        self.wire.api_base_url = api_base_url;
        self.prepared = OnceLock::new();
        self
    }

    pub fn connection_id(&self) -> &str {
        &self.wire.connection_id
    }

    /// The provider's name.
    pub fn provider(&self) -> &str {
        &self.wire.provider
    }

    pub fn auth_type(&self) -> AuthType {
        self.wire.auth_type
    }

    /// How requests are signed.
    pub fn strategy(&self) -> &Strategy {
        &self.wire.strategy
    }

    /// The usage credentials the strategy reads (secret: never log them).
    pub fn credentials(&self) -> &Map<String, Value> {
        &self.wire.credentials
    }

    /// Unix seconds, or `None` when the credentials do not expire.
    pub fn expires_at(&self) -> Option<i64> {
        self.wire.expires_at
    }

    /// Where the provider's API lives, as the operator registered it.
    pub fn api_base_url(&self) -> Option<&str> {
        self.wire.api_base_url.as_deref()
    }

    fn prepared(&self) -> &Prepared {
        self.prepared.get_or_init(|| Prepared {
            base: self.wire.api_base_url.as_deref().map(Base::parse),
            signature: static_headers(&self.wire.strategy, &self.wire.credentials),
        })
    }

    /// The provider's `api_base_url`, parsed (once per answer); `None` when
    /// the provider has none.
    pub fn base(&self) -> Option<Result<&Base, &str>> {
        self.prepared().base.as_ref().map(|b| b.as_ref().map_err(String::as_str))
    }

    /// [`static_headers`] for this answer's strategy and credentials, worked
    /// out once per answer.
    pub fn static_headers(&self) -> Result<Option<&[Header]>, &BridgeError> {
        self.prepared().signature.as_ref().map(|h| h.as_deref())
    }
}

impl fmt::Debug for TokenAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.wire.fmt(f)
    }
}

/// A Gateway failure, by the API's error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// The provider refused the refresh token: the user must consent again.
    #[error("connection {0} needs the user to authorize again (attention_required)")]
    AttentionRequired(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// The connection is pending, failed or revoked (`code`, `message`).
    #[error("{code}: {message}")]
    Conflict { code: ErrorCode, message: String },
    #[error("gone: {0}")]
    Gone(String),
    #[error("the Gateway refused the API key")]
    Unauthorized,
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The Gateway could not be reached or failed; retryable.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The Gateway answered, but could not reach the provider for a token
    /// (`503 provider_unavailable`, SPEC 5b); retryable.
    #[error("provider unavailable: {0}")]
    ProviderUnavailable(String),
}

impl GatewayError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, GatewayError::Unavailable(_) | GatewayError::ProviderUnavailable(_))
    }
}

/// The Gateway's address and API key. The key never appears in `Debug`.
#[derive(Clone)]
pub struct GatewayClient {
    base: String,
    api_key: String,
    http: reqwest::Client,
}

impl fmt::Debug for GatewayClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayClient").field("base", &self.base).field("api_key", &"[redacted]").finish()
    }
}

impl GatewayClient {
    /// `base`: e.g. `http://127.0.0.1:8080`.
    pub fn new(base: impl Into<String>, api_key: impl Into<String>) -> GatewayClient {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .expect("static client configuration");
        GatewayClient { base: base.into().trim_end_matches('/').to_owned(), api_key: api_key.into(), http }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<Value, GatewayError> {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).header("x-api-key", &self.api_key);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| GatewayError::Unavailable(transport(&e)))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| GatewayError::Unavailable(transport(&e)))?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&bytes)
                .map_err(|e| GatewayError::Unavailable(format!("unreadable answer: {e}")));
        }
        // The same codes the server maps to statuses, mapped back; a body
        // that is not ours (a proxy in between) goes by its status.
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => (body.code, body.message),
            Err(_) => (ErrorCode::for_status(status).0, format!("HTTP {status}")),
        };
        Err(match code {
            ErrorCode::AttentionRequired => {
                GatewayError::AttentionRequired(path.rsplit('/').next().unwrap_or_default().to_owned())
            }
            ErrorCode::Unauthorized => GatewayError::Unauthorized,
            ErrorCode::NotFound => GatewayError::NotFound(message),
            ErrorCode::ProviderDeleted => GatewayError::Gone(message),
            ErrorCode::ProviderUnavailable => GatewayError::ProviderUnavailable(message),
            _ if status >= 500 => GatewayError::Unavailable(message),
            _ if status == 409 => GatewayError::Conflict { code, message },
            _ if status == 401 => GatewayError::Unauthorized,
            _ if status == 404 => GatewayError::NotFound(message),
            _ if status == 410 => GatewayError::Gone(message),
            _ => GatewayError::Invalid(message),
        })
    }

    /// `GET /v1/token/{id}`.
    pub async fn token(&self, connection_id: &str) -> Result<TokenAnswer, GatewayError> {
        let v = self.call(reqwest::Method::GET, &format!("/v1/token/{}", encode(connection_id)), None).await?;
        serde_json::from_value(v).map_err(unexpected_answer)
    }

    /// `POST /v1/refresh/{id}`.
    pub async fn refresh(&self, connection_id: &str) -> Result<TokenAnswer, GatewayError> {
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/refresh/{}", encode(connection_id)),
                Some(&Value::Object(Map::new())),
            )
            .await?;
        serde_json::from_value(v).map_err(unexpected_answer)
    }

    /// `POST /v1/request-connection` (the body as in the API).
    pub async fn request_connection(&self, body: &Value) -> Result<Value, GatewayError> {
        self.call(reqwest::Method::POST, "/v1/request-connection", Some(body)).await
    }

    /// `GET /v1/check-connection/{id}`.
    pub async fn check_connection(&self, connection_id: &str) -> Result<Value, GatewayError> {
        self.call(reqwest::Method::GET, &format!("/v1/check-connection/{}", encode(connection_id)), None).await
    }

    /// Follows `GET /v1/invalidations` (see [`crate::invalidations::follow`]).
    pub async fn follow_invalidations(
        &self,
        alive: impl Fn() -> bool,
        apply: impl FnMut(crate::invalidations::Invalidation) -> bool,
    ) {
        crate::invalidations::follow(self.base.clone(), self.api_key.clone(), alive, apply).await
    }

    /// `GET /v1/providers/metadata`.
    pub async fn providers_metadata(&self) -> Result<Value, GatewayError> {
        self.call(reqwest::Method::GET, "/v1/providers/metadata", None).await
    }
}

/// A token answer that does not read: said without quoting the value that
/// did not fit (it may be a credential).
fn unexpected_answer(e: serde_json::Error) -> GatewayError {
    GatewayError::Unavailable(format!("unexpected token answer: {}", nexus_core::redact::serde_message(&e)))
}

fn encode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

fn transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "the Gateway timed out".into()
    } else if e.is_connect() {
        "the Gateway could not be reached".into()
    } else {
        "the request to the Gateway failed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_a_token_answer_hides_credential_values() {
        let answer: TokenAnswer = serde_json::from_value(serde_json::json!({
            "connection_id": "c1", "provider": "p", "auth_type": "oauth2",
            "strategy": {"type": "oauth2", "config": {}},
            "credentials": {"access_token": "at-secret-1"}, "expires_at": null
        }))
        .unwrap();
        let shown = format!("{answer:?}");
        assert!(shown.contains("access_token") && !shown.contains("at-secret-1"), "{shown}");
    }
}
