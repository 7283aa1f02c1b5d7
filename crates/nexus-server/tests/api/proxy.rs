//! The Gateway proxy: requests signed with each strategy reach a recording
//! upstream intact; an OAuth2 connection reaches the real provider's userinfo,
//! heals itself after the provider revokes the access token, and a connection
//! that needs consent again gets a clear error.

use crate::oauth::{connect, register, setup};
use nexus_testkit::{both_backends, Backend, TestApp};
use serde_json::{json, Value};
use std::net::SocketAddr;
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
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let log = log.clone();
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
            axum::Json(json!({"ok": true}))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

/// Registers a static provider at `base` and captures `credentials`; returns the connection id.
pub async fn static_connection(app: &TestApp, name: &str, provider: Value, credentials: Value) -> String {
    let mut provider = provider;
    provider["name"] = json!(name);
    let created = app.post("/v1/providers", &provider).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let req = app
        .post(
            "/v1/request-connection",
            &json!({"workspace_id": "w", "provider_name": name, "return_url": "https://app.example.test/"}),
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

fn seen_after(seen: &Arc<Mutex<Vec<Seen>>>) -> Vec<Seen> {
    seen.lock().unwrap().clone()
}

pub fn schema(fields: &[&str]) -> Value {
    let props: serde_json::Map<String, Value> =
        fields.iter().map(|f| (f.to_string(), json!({"type": "string"}))).collect();
    json!({"type": "object", "required": fields, "properties": props})
}

async fn gateway_proxy_signs_each_strategy_and_preserves_the_request(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (addr, seen) = recording_upstream().await;
    let base = format!("http://{addr}/api");
    let header = static_connection(&app, "hdr", json!({"auth_type": "api_key", "api_base_url": base, "auth_header": "X-Token", "params": {"credential_schema": schema(&["api_key"])}}), json!({"api_key": "hdr-key-1"})).await;
    let query = static_connection(&app, "qry", json!({"auth_type": "query_param", "api_base_url": base, "params": {"param_name": "key", "credential_schema": schema(&["api_key"])}}), json!({"api_key": "qry-key-1"})).await;
    let basic = static_connection(&app, "bas", json!({"auth_type": "basic_auth", "api_base_url": base, "params": {"credential_schema": schema(&["username", "password"])}}), json!({"username": "u", "password": "p w"})).await;

    let send = |id: &str| {
        app.client
            .post(app.url(&format!("/v1/proxy/{id}/items/42?x=1&y=a%20b")))
            .header("x-api-key", &app.api_key)
            .header("content-type", "application/json")
            .header("x-custom", "kept")
            .body(r#"{"hello":"world"}"#)
    };
    for id in [&header, &query, &basic] {
        let resp = app.send(send(id)).await;
        assert_eq!(resp.status, 200, "{}", resp.text);
        assert_eq!(resp.json, json!({"ok": true}));
    }
    let first = seen.lock().unwrap().clone();
    assert_eq!(first.len(), 3);
    for s in &first {
        assert_eq!(s.method, "POST");
        assert!(s.uri.starts_with("/api/items/42?x=1&y=a%20b"), "{}", s.uri);
        assert_eq!(s.body, br#"{"hello":"world"}"#);
        assert_eq!(s.header("x-custom"), Some("kept"));
        assert_eq!(s.header("content-type"), Some("application/json"));
        assert!(s.header("x-api-key").is_none(), "our API key is never forwarded");
    }
    assert_eq!(first[0].header("x-token"), Some("hdr-key-1"));
    assert_eq!(first[1].uri, "/api/items/42?x=1&y=a%20b&key=qry-key-1");
    assert_eq!(first[2].header("authorization"), Some("Basic dTpwIHc="));

    // Never to another host or above the base path.
    for path in ["../admin", "%2e%2e/admin", "@evil.example/x", "//evil.example/x"] {
        let r = app
            .send(app.client.get(app.url(&format!("/v1/proxy/{header}/{path}"))).header("x-api-key", &app.api_key))
            .await;
        assert!(r.status == 400 || r.status == 404 || r.status == 200, "{path}: {}", r.text);
    }
    for s in seen_after(&seen) {
        assert!(s.uri.starts_with("/api/"), "left the base: {}", s.uri);
    }
    // Unknown connection, no key.
    assert_eq!(
        app.send(app.client.get(app.url("/v1/proxy/nope/x")).header("x-api-key", &app.api_key)).await.status,
        404
    );
    assert_eq!(app.send(app.client.get(app.url(&format!("/v1/proxy/{header}/x")))).await.status, 401);
}

async fn gateway_proxy_reaches_userinfo_and_heals_after_revocation(backend: Backend) {
    let (app, idp) = setup(backend, "client_secret_post").await;
    register(&app, &idp, "idp", true, "client_secret_post").await;
    let id = connect(&app, "idp", json!(["openid", "email", "offline_access"])).await;
    let me = app.send(app.client.get(app.url(&format!("/v1/proxy/{id}/me"))).header("x-api-key", &app.api_key)).await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.json["sub"], "alice");

    // The provider forgets every access token: the proxy refreshes once and retries.
    idp.revoke_all_access_tokens().await.unwrap();
    idp.reset().await.unwrap();
    let healed =
        app.send(app.client.get(app.url(&format!("/v1/proxy/{id}/me"))).header("x-api-key", &app.api_key)).await;
    assert_eq!(healed.status, 200, "{}", healed.text);
    assert_eq!(idp.stats().await.unwrap().refresh_requests, 1);

    // A connection that needs consent again is a clear 409.
    idp.fail_token_endpoint(400, Some("invalid_grant"), 1).await.unwrap();
    idp.revoke_all_access_tokens().await.unwrap();
    let refused =
        app.send(app.client.get(app.url(&format!("/v1/proxy/{id}/me"))).header("x-api-key", &app.api_key)).await;
    assert_eq!((refused.status, refused.code()), (409, "attention_required"), "{}", refused.text);
}

both_backends!(
    gateway_proxy_signs_each_strategy_and_preserves_the_request,
    gateway_proxy_reaches_userinfo_and_heals_after_revocation
);
