//! `TestApp`: the real server on `127.0.0.1:0` with a fresh database, plus an
//! HTTP client that records every response body so a test can prove that no
//! secret it sent ever came back.

use crate::db::{Backend, TestDb};
use nexus_server::{AppState, Application, RawConfig};
use nexus_store::Store;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A response read completely: status, headers, text and (if any) JSON.
#[derive(Debug, Clone)]
pub struct TestResponse {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl TestResponse {
    /// The error `code` of a JSON error body.
    pub fn code(&self) -> &str {
        self.json.get("code").and_then(Value::as_str).unwrap_or("")
    }

    pub fn content_type(&self) -> &str {
        self.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    /// Where `GET /metrics` is served, when the configuration asked for it.
    pub metrics_addr: Option<SocketAddr>,
    pub base_url: String,
    pub api_key: String,
    pub client: reqwest::Client,
    pub state: AppState,
    pub db: Arc<TestDb>,
    raw: RawConfig,
    /// Every response body, with the path it answered.
    bodies: Arc<Mutex<Vec<(String, String)>>>,
    secrets: Arc<Mutex<Vec<String>>>,
    /// Usage credentials: secret everywhere but in token answers (and what
    /// a provider answers through the proxy).
    credentials: Arc<Mutex<Vec<String>>>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

/// A fresh API key for a test instance.
pub const TEST_API_KEY: &str = "test-api-key-0123456789abcdef";

/// The configuration a test server starts from; tests adjust it.
pub fn base_config(db: &TestDb) -> RawConfig {
    RawConfig {
        api_key: Some(TEST_API_KEY.into()),
        encryption_key: Some(nexus_vault::generate_key()),
        audit_keys: Some(nexus_vault::generate_key()),
        state_key: Some(nexus_vault::generate_key()),
        database_url: Some(db.url().to_owned()),
        bind: Some("127.0.0.1:0".into()),
        ..RawConfig::default()
    }
}

impl TestApp {
    /// Starts a server on a fresh database of `backend`.
    pub async fn spawn(backend: Backend) -> TestApp {
        TestApp::spawn_with(backend, |_| {}).await
    }

    /// Starts a server after `adjust` has changed its configuration.
    pub async fn spawn_with(backend: Backend, adjust: impl FnOnce(&mut RawConfig)) -> TestApp {
        let db = Arc::new(TestDb::new(backend).await.expect("test database"));
        let mut raw = base_config(&db);
        adjust(&mut raw);
        TestApp::start(db, raw).await
    }

    /// Starts another server on the same database with the same keys: a replica.
    pub async fn spawn_replica(&self) -> TestApp {
        TestApp::start(self.db.clone(), self.raw.clone()).await
    }

    /// The configuration this server started with.
    pub fn raw_config(&self) -> &RawConfig {
        &self.raw
    }

    /// A replica with its configuration adjusted (another key ring, say).
    pub async fn spawn_replica_with(&self, adjust: impl FnOnce(&mut RawConfig)) -> TestApp {
        let mut raw = self.raw.clone();
        adjust(&mut raw);
        TestApp::start(self.db.clone(), raw).await
    }

    async fn start(db: Arc<TestDb>, raw: RawConfig) -> TestApp {
        crate::logs::capture();
        let api_key = raw.api_key.clone().unwrap_or_default();
        let key_secret = api_key.clone();
        let config = raw.clone().build().expect("test configuration is valid");
        let app = Application::build(config).await.expect("server starts");
        let addr = app.local_addr();
        let metrics_addr = app.metrics_addr();
        let state = app.state().clone();
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async {
            let _ = rx.await;
        }));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        TestApp {
            addr,
            metrics_addr,
            base_url: format!("http://{addr}"),
            api_key,
            client,
            state,
            db,
            raw,
            bodies: Arc::default(),
            // The API key is a secret too: no answer or log line may show it.
            secrets: Arc::new(Mutex::new(vec![key_secret])),
            credentials: Arc::default(),
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// Marks `secret` as a value that must never appear in a response or a log line.
    pub fn remember_secret(&self, secret: &str) {
        self.secrets.lock().unwrap().push(secret.to_owned());
    }

    /// Marks every string in `credentials` (captured credentials) as a
    /// usage credential: it may come back in token answers only, and in no
    /// log line.
    pub fn remember_credentials(&self, credentials: &Value) {
        if let Value::Object(map) = credentials {
            for v in map.values().filter_map(Value::as_str).filter(|s| s.len() >= 6) {
                self.credentials.lock().unwrap().push(v.to_owned());
            }
        }
    }

    /// Sends a request built by the caller, records the body, returns it read.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> TestResponse {
        let (client, req) = req.build_split();
        let req = req.expect("a well-formed test request");
        let path = req.url().path().to_owned();
        let resp = client.execute(req).await.expect("request reaches the test server");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        self.bodies.lock().unwrap().push((path, text.clone()));
        TestResponse { status, headers, text, json }
    }

    fn authed(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path)).header("x-api-key", &self.api_key)
    }

    fn with_json(&self, req: reqwest::RequestBuilder, body: &Value) -> reqwest::RequestBuilder {
        collect_secrets(body, &mut self.secrets.lock().unwrap());
        req.header("content-type", "application/json").body(body.to_string())
    }

    pub async fn get(&self, path: &str) -> TestResponse {
        self.send(self.authed(reqwest::Method::GET, path)).await
    }

    pub async fn delete(&self, path: &str) -> TestResponse {
        self.send(self.authed(reqwest::Method::DELETE, path)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> TestResponse {
        self.send(self.with_json(self.authed(reqwest::Method::POST, path), body)).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> TestResponse {
        self.send(self.with_json(self.authed(reqwest::Method::PATCH, path), body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> TestResponse {
        self.send(self.with_json(self.authed(reqwest::Method::PUT, path), body)).await
    }

    /// Sends raw bytes with the given content type (for malformed input).
    pub async fn post_raw(&self, path: &str, content_type: &str, body: impl Into<reqwest::Body>) -> TestResponse {
        let req = self.authed(reqwest::Method::POST, path).header("content-type", content_type).body(body);
        self.send(req).await
    }

    /// Every response body this app has returned so far.
    pub fn bodies(&self) -> Vec<String> {
        self.bodies.lock().unwrap().iter().map(|(_, b)| b.clone()).collect()
    }

    /// Panics if any recorded body, or any line logged in this process,
    /// contains any secret sent to this app.
    pub fn assert_no_secret_in_responses(&self) {
        let secrets = self.secrets.lock().unwrap().clone();
        let credentials = self.credentials.lock().unwrap().clone();
        for (path, body) in self.bodies.lock().unwrap().iter() {
            for secret in &secrets {
                assert!(!body.contains(secret.as_str()), "a response body contains a secret: {body}");
            }
            let usage = ["/v1/token/", "/v1/refresh/", "/v1/proxy/"].iter().any(|p| path.starts_with(p));
            for credential in credentials.iter().filter(|_| !usage) {
                assert!(!body.contains(credential.as_str()), "{path} answered with a credential: {body}");
            }
        }
        crate::logs::assert_none_logged(&secrets);
        crate::logs::assert_none_logged(&credentials);
    }

    /// Number of audit rows written so far.
    pub async fn audit_count(&self) -> i64 {
        use sqlx::Row;
        let row = sqlx::query("SELECT COUNT(*) AS n FROM audit_log").fetch_one(self.store().pool()).await.unwrap();
        row.try_get::<i64, _>("n").unwrap()
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        self.stop_inner().await;
    }

    async fn stop_inner(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.server.take() {
            handle.abort();
        }
        if !std::thread::panicking() {
            self.assert_no_secret_in_responses();
        }
    }
}

/// Values of `client_secret`, `password`, `secret_key` … found anywhere in a JSON body.
fn collect_secrets(body: &Value, out: &mut Vec<String>) {
    match body {
        Value::Object(map) => {
            for (k, v) in map {
                // `params.token_response` names where tokens are, not tokens.
                if k == "token_response" {
                    continue;
                }
                if matches!(
                    k.as_str(),
                    "client_secret"
                        | "password"
                        | "secret_key"
                        | "api_secret"
                        | "refresh_token"
                        | "access_token"
                        | "session_token"
                        | "api_key"
                        | "app_key"
                        | "private_key"
                ) {
                    if let Some(s) = v.as_str().filter(|s| s.len() >= 6) {
                        out.push(s.to_owned());
                    }
                }
                collect_secrets(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_secrets(i, out)),
        _ => {}
    }
}

/// Runs an async test body on both backends, each as its own test:
/// `both_backends!(creates_provider);` expects `async fn creates_provider(backend: Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    $crate::run_bounded(super::$name($crate::Backend::Sqlite)).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    $crate::run_bounded(super::$name($crate::Backend::Postgres)).await
                }
            }
        )+
    };
}
