//! A local upstream that records what it receives, and helpers to make static
//! connections whose `api_base_url` points at it.

use crate::TestApp;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A local upstream that records every request and answers 200 with `{"ok": true}`.
pub async fn recording_upstream() -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let (addr, seen, _) = recording_upstream_with_refusals().await;
    (addr, seen)
}

/// [`recording_upstream`] that answers `401` (`{"error": "invalid_token"}`)
/// to as many requests as the returned counter says (each one spends one).
pub async fn recording_upstream_with_refusals() -> (SocketAddr, Arc<Mutex<Vec<Seen>>>, Arc<AtomicUsize>) {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let refusals = Arc::new(AtomicUsize::new(0));
    let log = seen.clone();
    let left = refusals.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let log = log.clone();
        let left = left.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default().to_vec();
            log.lock().unwrap().push(Seen {
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                headers: parts
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                    .collect(),
                body,
            });
            let refuse = left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
            if refuse {
                (axum::http::StatusCode::UNAUTHORIZED, axum::Json(json!({"error": "invalid_token"})))
            } else {
                (axum::http::StatusCode::OK, axum::Json(json!({"ok": true})))
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen, refusals)
}

/// Registers a static provider at `base` and captures `credentials`; returns the connection id.
pub async fn static_connection(app: &TestApp, name: &str, provider: Value, credentials: Value) -> String {
    let mut provider = provider;
    provider["name"] = json!(name);
    let created = app.post("/v1/providers", &provider).await;
    assert_eq!(created.status, 201, "{}", created.text);
    capture_connection(app, name, json!({}), credentials).await
}

/// A connection to the registered static provider `name` with
/// `connection_config`, its `credentials` captured; returns its id.
pub async fn capture_connection(app: &TestApp, name: &str, connection_config: Value, credentials: Value) -> String {
    capture_connection_in(app, "w", name, connection_config, credentials).await
}

/// [`capture_connection`] in workspace `workspace`.
pub async fn capture_connection_in(
    app: &TestApp,
    workspace: &str,
    name: &str,
    connection_config: Value,
    credentials: Value,
) -> String {
    app.remember_credentials(&credentials);
    let req = app
        .post(
            "/v1/request-connection",
            &json!({"workspace_id": workspace, "provider_name": name, "return_url": "https://app.example.test/",
                    "connection_config": connection_config}),
        )
        .await;
    assert_eq!(req.status, 200, "{}", req.text);
    let done = app
        .send(
            app.client
                .post(app.url("/v1/capture-credential"))
                .header("x-api-key", &app.api_key)
                .header("accept", "application/json")
                .json(&json!({"state": req.json["state"], "credentials": credentials})),
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.text);
    done.json["connection_id"].as_str().unwrap().to_owned()
}

pub fn seen_after(seen: &Arc<Mutex<Vec<Seen>>>) -> Vec<Seen> {
    seen.lock().unwrap().clone()
}

pub fn schema(fields: &[&str]) -> Value {
    let props: serde_json::Map<String, Value> =
        fields.iter().map(|f| (f.to_string(), json!({"type": "string"}))).collect();
    json!({"type": "object", "required": fields, "properties": props})
}

/// An upstream under `/api` with an error answer that sets a cookie
/// (`/api/teapot`), a 3 MiB body of `n` (`/api/big`), and otherwise the
/// request target it received as its body.
pub async fn odd_upstream() -> std::net::SocketAddr {
    use axum::http::header;
    let big = || async { vec![b'n'; 3 << 20] };
    let teapot = || async {
        (
            axum::http::StatusCode::IM_A_TEAPOT,
            [(header::CONTENT_TYPE, "text/plain"), (header::SET_COOKIE, "sid=upstream"), (header::ETAG, "\"v1\"")],
            "short and stout",
        )
    };
    let echo_path = |uri: axum::http::Uri| async move { uri.to_string() };
    let app = axum::Router::new()
        .route("/api/teapot", axum::routing::get(teapot))
        .route("/api/big", axum::routing::get(big))
        .fallback(echo_path);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}
