//! The part of the Gateway API that Security-as-Code needs: list, create,
//! patch and delete providers (`/v1/providers`), authenticated with
//! `X-API-Key` and identified by the CLI's own `User-Agent`, which the server
//! writes into every audit row.

use nexus_core::SecretString;
use reqwest::header::{HeaderMap, HeaderValue, USER_AGENT};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

/// A provider as `GET /v1/providers` shows it (the shared wire type): the
/// normalized configuration, and the secret only as a salted fingerprint.
pub type RemoteProvider = nexus_core::wire::ProviderView;

/// The answer of `DELETE /v1/providers/{id}`.
pub type Deleted = nexus_core::wire::DeletedProvider;

/// Why a call to the Gateway failed. Messages never contain the API key or a
/// request body.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("NEXUS_URL '{0}' is not an http(s) URL")]
    BadUrl(String),
    #[error("could not reach Nexus at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("Nexus answered {status} {code}: {message}")]
    Api { status: u16, code: String, message: String },
    #[error("unexpected answer from Nexus ({0})")]
    Decode(String),
}

/// A Gateway client. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    api_key: SecretString,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.base.as_str()).finish_non_exhaustive()
    }
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Client {
    /// `base_url` is the Gateway's root (`http://127.0.0.1:8080`, or with a path
    /// prefix); `user_agent` is sent on every request.
    pub fn new(base_url: &str, api_key: &str, user_agent: &str) -> Result<Client, ClientError> {
        let bad = || ClientError::BadUrl(base_url.chars().take(200).collect());
        let mut base = Url::parse(base_url.trim()).map_err(|_| bad())?;
        if !matches!(base.scheme(), "http" | "https") || base.host().is_none() {
            return Err(bad());
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let mut headers = HeaderMap::new();
        headers.insert(USER_AGENT, HeaderValue::from_str(user_agent).map_err(|e| ClientError::Decode(e.to_string()))?);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| ClientError::Decode(format!("HTTP client: {e}")))?;
        Ok(Client { http, base, api_key: SecretString::new(api_key) })
    }

    /// The Gateway's root URL.
    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    /// `GET /v1/providers`: every live provider.
    pub async fn list_providers(&self) -> Result<Vec<RemoteProvider>, ClientError> {
        self.call(Method::GET, "v1/providers", None).await
    }

    /// `POST /v1/providers`.
    pub async fn create(&self, body: &Value) -> Result<RemoteProvider, ClientError> {
        self.call(Method::POST, "v1/providers", Some(body)).await
    }

    /// `PATCH /v1/providers/{id}`: only the given fields change; `params` merges (RFC 7396).
    pub async fn patch(&self, id: &str, body: &Value) -> Result<RemoteProvider, ClientError> {
        self.call(Method::PATCH, &format!("v1/providers/{}", segment(id)), Some(body)).await
    }

    /// `DELETE /v1/providers/{id}`.
    pub async fn delete(&self, id: &str) -> Result<Deleted, ClientError> {
        self.call(Method::DELETE, &format!("v1/providers/{}", segment(id)), None).await
    }

    /// Any `/v1` call (`path` without the leading slash, e.g. `v1/api-keys`).
    pub async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, ClientError> {
        let url = self.base.join(path).map_err(|_| ClientError::BadUrl(self.base.to_string()))?;
        let mut req = self.http.request(method, url.clone()).header("x-api-key", self.api_key.expose());
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.to_string(),
            reason: if e.is_timeout() { "timed out".to_owned() } else { root_cause(&e) },
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| ClientError::Unreachable {
            url: self.base.to_string(),
            reason: format!("reading the answer: {}", root_cause(&e)),
        })?;
        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(format!("{} {path}: {e}", status.as_u16())))
    }
}

/// A path segment for an id or name (both are restricted to safe characters
/// by the server; anything else is percent-encoded all the same).
pub fn segment(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    #[derive(Deserialize)]
    struct ErrorBody {
        code: String,
        message: String,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => ClientError::Api { status: status.as_u16(), code: e.code, message: e.message },
        Err(_) => ClientError::Api {
            status: status.as_u16(),
            code: status.canonical_reason().unwrap_or("error").to_lowercase().replace(' ', "_"),
            message: String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_owned(),
        },
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_checked_and_joined() {
        let c = Client::new("http://127.0.0.1:8080", "k", "ua").unwrap();
        assert_eq!(c.base.join("v1/providers").unwrap().as_str(), "http://127.0.0.1:8080/v1/providers");
        let c = Client::new("https://nexus.example/prefix", "k", "ua").unwrap();
        assert_eq!(c.base.join("v1/providers").unwrap().as_str(), "https://nexus.example/prefix/v1/providers");
        for bad in ["", "nexus.example", "ftp://x", "http://"] {
            assert!(matches!(Client::new(bad, "k", "ua"), Err(ClientError::BadUrl(_))), "{bad}");
        }
        let c = Client::new("http://127.0.0.1:8080", "top-secret-api-key", "ua").unwrap();
        assert!(!format!("{c:?}").contains("top-secret-api-key"));
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("0190-ab.c_d"), "0190-ab.c_d");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn error_bodies_become_one_line() {
        let e = api_error(StatusCode::BAD_REQUEST, br#"{"code":"invalid_input","message":"name: bad"}"#);
        assert_eq!(e.to_string(), "Nexus answered 400 invalid_input: name: bad");
        let e = api_error(StatusCode::BAD_GATEWAY, b"upstream down");
        assert_eq!(e.to_string(), "Nexus answered 502 bad_gateway: upstream down");
    }

    #[test]
    fn the_server_view_deserializes() {
        let v = serde_json::json!({"id": "p1", "name": "github", "auth_type": "oauth2", "client_id": "c",
            "auth_url": "https://a.example/a", "token_url": "https://a.example/t", "enable_discovery": false,
            "scopes": ["repo"], "params": {}, "client_secret_set": true,
            "client_secret_fingerprint": "sha256:0011223344556677", "created_at": "x", "updated_at": "y",
            "discovery": null});
        let r: RemoteProvider = serde_json::from_value(v).unwrap();
        assert_eq!(r.config.name.as_str(), "github");
        assert_eq!(r.client_secret_fingerprint.as_deref(), Some("sha256:0011223344556677"));
    }
}
