//! Sending requests for a connection: sign with the cached credentials, and
//! after a provider's `401` to OAuth2 credentials refresh once through the
//! Gateway and retry once ([`crate::pipeline`]).

use crate::cache::CredentialCache;
use crate::client::{GatewayClient, GatewayError, TokenAnswer};
use crate::forward::Forward;
use crate::h1::Agent;
use crate::pipeline::send_with_refresh;
use crate::relay::{Own, Sender};
use crate::strategies::{apply, BridgeError};
use crate::streamed::ProviderBody;
use crate::upstream::Upstreams;
use nexus_core::wire::ErrorCode;
use std::sync::Arc;

/// Why a bridged request failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    #[error(transparent)]
    Sign(#[from] BridgeError),
    #[error("the provider could not be reached: {0}")]
    Provider(String),
    #[error("the provider did not answer in time")]
    ProviderTimeout,
    #[error("the request body is a stream; the bridge needs it in memory to sign it")]
    StreamingBody,
}

impl From<Own> for SendError {
    fn from(own: Own) -> SendError {
        match own.code {
            ErrorCode::ProviderTimeout => SendError::ProviderTimeout,
            ErrorCode::CannotSign => SendError::Sign(BridgeError::Request(own.message)),
            _ => SendError::Provider(own.message),
        }
    }
}

/// The agent's entry point: a Gateway client plus the credential cache.
#[derive(Debug, Clone)]
pub struct Bridge {
    cache: Arc<CredentialCache>,
    http: reqwest::Client,
    sender: Sender,
}

impl Bridge {
    /// A bridge to the Gateway at `gateway_url` with `api_key`.
    pub fn new(gateway_url: impl Into<String>, api_key: impl Into<String>) -> Bridge {
        Bridge::from_cache(CredentialCache::new(GatewayClient::new(gateway_url, api_key)))
    }

    pub fn from_cache(cache: CredentialCache) -> Bridge {
        let http = crate::resolve::reqwest_builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(120))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("static client configuration");
        let (connect, head) = (std::time::Duration::from_secs(10), std::time::Duration::from_secs(60));
        let upstreams = Upstreams::new(connect).expect("ring supports rustls' default protocol versions");
        Bridge { cache: Arc::new(cache), http, sender: Sender::new(upstreams, head) }
    }

    pub fn cache(&self) -> &CredentialCache {
        &self.cache
    }

    /// Current credentials and strategy for a connection.
    pub async fn credentials(&self, connection_id: &str) -> Result<Arc<TokenAnswer>, GatewayError> {
        self.cache.get(connection_id).await
    }

    /// Signs `req` in place for `connection_id`.
    pub async fn sign(
        &self,
        connection_id: &str,
        req: &mut http::Request<Vec<u8>>,
    ) -> Result<Arc<TokenAnswer>, SendError> {
        let answer = self.cache.get(connection_id).await?;
        apply(req, answer.strategy(), answer.credentials())?;
        Ok(answer)
    }

    /// Signs and sends `req`; after a provider's `401` to OAuth2
    /// credentials, refreshes once and retries once (SPEC 7b,
    /// [`crate::pipeline`]).
    pub async fn send(&self, connection_id: &str, req: http::Request<Vec<u8>>) -> Result<reqwest::Response, SendError> {
        let answer = self.cache.get(connection_id).await?;
        send_with_refresh(
            answer,
            |answer| {
                let mut signed = req.clone();
                let applied = apply(&mut signed, answer.strategy(), answer.credentials());
                async move {
                    applied?;
                    self.execute(signed).await
                }
            },
            |resp| resp.status().as_u16(),
            |stale| async move { Ok(self.cache.refresh(connection_id, &stale).await?) },
        )
        .await
    }

    /// Signs `fwd` with `answer` (from [`Bridge::credentials`]) and sends it,
    /// with the 401 rule of [`Bridge::send`], on provider connections kept
    /// per connection id as `nexus proxy` keeps them; the answer's body
    /// streams. See [`Forward`].
    pub async fn forward(
        &self,
        connection_id: &str,
        fwd: &Forward,
        answer: Arc<TokenAnswer>,
    ) -> Result<http::Response<ProviderBody>, SendError> {
        let framing = Agent { head_request: fwd.method() == http::Method::HEAD, http10: false, keep_alive: true };
        let mut link = None;
        let refresh = |stale: Arc<TokenAnswer>| async move { Ok(self.cache.refresh(connection_id, &stale).await?) };
        let sent =
            self.sender.forward::<SendError, _, _>(&mut link, connection_id, fwd, answer, framing, refresh).await;
        if let Some(up) = link {
            self.sender.upstreams().check_in(up);
        }
        let (up, head, _) = sent?;
        Ok(self.sender.respond(up, head))
    }

    /// Sends a `reqwest::Request` (its body must be in memory) for `connection_id`.
    pub async fn send_reqwest(
        &self,
        connection_id: &str,
        req: reqwest::Request,
    ) -> Result<reqwest::Response, SendError> {
        let mut builder = http::Request::builder().method(req.method().as_str()).uri(req.url().as_str());
        for (k, v) in req.headers() {
            builder = builder.header(k, v);
        }
        let body = match req.body() {
            None => Vec::new(),
            Some(b) => b.as_bytes().ok_or(SendError::StreamingBody)?.to_vec(),
        };
        let req = builder.body(body).map_err(|e| SendError::Sign(BridgeError::Request(e.to_string())))?;
        self.send(connection_id, req).await
    }

    /// A `reqwest`-style client whose requests are signed for one connection:
    /// `bridge.for_connection(id).get(url).send().await`.
    pub fn for_connection(&self, connection_id: impl Into<String>) -> ConnectionClient {
        ConnectionClient { bridge: self.clone(), connection_id: connection_id.into() }
    }

    async fn execute(&self, req: http::Request<Vec<u8>>) -> Result<reqwest::Response, SendError> {
        let (parts, body) = req.into_parts();
        let mut out = self.http.request(parts.method, parts.uri.to_string()).body(body);
        for (k, v) in parts.headers.iter() {
            out = out.header(k, v);
        }
        out.send().await.map_err(provider_error)
    }
}

fn provider_error(e: reqwest::Error) -> SendError {
    if e.is_timeout() {
        SendError::ProviderTimeout
    } else {
        SendError::Provider("connection failed".into())
    }
}

/// Builds requests with `reqwest` and sends them signed for one connection.
#[derive(Debug, Clone)]
pub struct ConnectionClient {
    bridge: Bridge,
    connection_id: String,
}

impl ConnectionClient {
    pub fn request(&self, method: reqwest::Method, url: &str) -> SignedRequestBuilder {
        SignedRequestBuilder { client: self.clone(), inner: self.bridge.http.request(method, url) }
    }

    pub fn get(&self, url: &str) -> SignedRequestBuilder {
        self.request(reqwest::Method::GET, url)
    }

    pub fn post(&self, url: &str) -> SignedRequestBuilder {
        self.request(reqwest::Method::POST, url)
    }
}

/// A `reqwest::RequestBuilder` whose `send` signs for the connection.
#[derive(Debug)]
pub struct SignedRequestBuilder {
    client: ConnectionClient,
    inner: reqwest::RequestBuilder,
}

impl SignedRequestBuilder {
    /// Adjusts the underlying builder (headers, query, body, …).
    pub fn with(self, f: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder) -> SignedRequestBuilder {
        SignedRequestBuilder { client: self.client, inner: f(self.inner) }
    }

    pub fn header(self, name: &str, value: &str) -> SignedRequestBuilder {
        self.with(|b| b.header(name, value))
    }

    pub fn body(self, body: impl Into<reqwest::Body>) -> SignedRequestBuilder {
        self.with(|b| b.body(body))
    }

    pub async fn send(self) -> Result<reqwest::Response, SendError> {
        let req = self.inner.build().map_err(|e| SendError::Sign(BridgeError::Request(e.to_string())))?;
        self.client.bridge.send_reqwest(&self.client.connection_id, req).await
    }
}
