//! A provider that echoes what it is sent, or answers with wrong types,
//! cannot put a secret into a log line, a response or an audit row.
//!
//! The token endpoint here is the careless provider the outside attack
//! used: its `error_description` repeats the whole request (client secret,
//! code, PKCE verifier, refresh token, the Basic credentials), and one
//! answer carries a refresh token of the wrong type. Every value it was sent
//! as a secret is remembered, so `TestApp` (on drop) checks every response
//! and every log line of the test for each of them.

use nexus_testkit::flows::{callback, location, query, RETURN_URL};
use nexus_testkit::{both_backends, Backend, TestApp};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// What the token endpoint was sent: form fields and the Authorization header.
type Received = Arc<Mutex<Vec<(Vec<(String, String)>, Option<String>)>>>;

const NUMERIC_REFRESH_TOKEN: i64 = 987_654_321_987;

async fn echoing_token_endpoint() -> (SocketAddr, Received) {
    let received: Received = Arc::default();
    let log = received.clone();
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let log = log.clone();
            async move {
                let form: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
                let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
                log.lock().unwrap().push((form.clone(), auth.clone()));
                let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
                let echo = format!("you sent {body} (authorization: {})", auth.unwrap_or_default());
                let refused = (
                    axum::http::StatusCode::BAD_REQUEST,
                    axum::Json(json!({"error": "invalid_grant", "error_description": echo, "error_uri": format!("https://idp.example/e?{body}")})),
                );
                match (field("grant_type").as_str(), field("code").as_str()) {
                    ("authorization_code", code) if code.starts_with("good-") => (
                        axum::http::StatusCode::OK,
                        axum::Json(json!({"access_token": format!("at-{code}"), "token_type": "Bearer", "expires_in": 3600, "refresh_token": format!("rt-{code}")})),
                    ),
                    ("authorization_code", code) if code.starts_with("badtype-") => (
                        axum::http::StatusCode::OK,
                        axum::Json(json!({"access_token": format!("at-{code}"), "token_type": "Bearer", "refresh_token": NUMERIC_REFRESH_TOKEN})),
                    ),
                    _ => refused,
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, received)
}

/// Starts a connection and sends the callback with `code`; the redirect's query.
async fn connect_with_code(app: &TestApp, code: &str) -> (String, std::collections::HashMap<String, String>) {
    let req = app
        .post(
            "/v1/request-connection",
            &json!({"workspace_id": "w", "provider_name": "echo", "return_url": RETURN_URL}),
        )
        .await;
    assert_eq!(req.status, 200, "{}", req.text);
    let state = req.json["state"].as_str().unwrap();
    let id = req.json["connection_id"].as_str().unwrap().to_owned();
    let resp = callback(app, &format!("{}?code={code}&state={state}", app.url("/auth/callback"))).await;
    assert_eq!(resp.status, 302, "{}", resp.text);
    (id, query(&location(&resp)))
}

async fn a_provider_that_echoes_the_exchange_leaks_nothing(backend: Backend, auth_header: &str) {
    let app = TestApp::spawn(backend).await;
    let (addr, received) = echoing_token_endpoint().await;
    let secret = "client-secret/with+odd&chars=1";
    let provider = json!({
        "name": "echo", "auth_type": "oauth2", "client_id": "echo-client", "client_secret": secret,
        "auth_header": auth_header,
        "auth_url": format!("http://{addr}/authorize"), "token_url": format!("http://{addr}/token"),
        "scopes": ["read"]
    });
    assert_eq!(app.post("/v1/providers", &provider).await.status, 201);

    // The code exchange refused, with the request echoed.
    let (failed, q) = connect_with_code(&app, "code-echo-5a7c1e").await;
    app.remember_secret("code-echo-5a7c1e");
    assert_eq!((q["status"].as_str(), q["error"].as_str()), ("error", "invalid_grant"));
    assert_eq!(app.get(&format!("/v1/check-connection/{failed}")).await.json["status"], "failed");

    // A good exchange, then a refresh refused with the request echoed.
    let (active, q) = connect_with_code(&app, "good-2b9d4f").await;
    for secret in ["good-2b9d4f", "at-good-2b9d4f", "rt-good-2b9d4f"] {
        app.remember_secret(secret);
    }
    assert_eq!(q["status"], "success");
    let refreshed = app.post(&format!("/v1/refresh/{active}"), &json!({})).await;
    assert_eq!(refreshed.status, 409, "{}", refreshed.text);
    let check = app.get(&format!("/v1/check-connection/{active}")).await;
    assert_eq!(check.json["status"], "attention_required");

    // A token answer whose refresh token is a number: refused, the number unsaid.
    let (bad, q) = connect_with_code(&app, "badtype-8e1f0a").await;
    app.remember_secret("badtype-8e1f0a");
    app.remember_secret(&NUMERIC_REFRESH_TOKEN.to_string());
    assert_eq!((q["status"].as_str(), q["error"].as_str()), ("error", "invalid_provider_reply"));
    assert_eq!(app.get(&format!("/v1/check-connection/{bad}")).await.json["status"], "failed");

    // Everything the provider was sent as a secret is a secret of this test.
    for (form, auth) in received.lock().unwrap().iter() {
        for (k, v) in form {
            if matches!(k.as_str(), "code" | "code_verifier" | "refresh_token" | "client_secret") {
                app.remember_secret(v);
            }
        }
        if let Some(basic) = auth.as_deref().and_then(|a| a.strip_prefix("Basic ")) {
            app.remember_secret(basic);
        }
    }
    assert!(received.lock().unwrap().len() >= 4, "three exchanges and a refresh reached the provider");
    app.state.flush_audit().await;
    let audit = app.get("/v1/audit?limit=1000").await;
    assert_eq!(audit.status, 200);
    let errors: Vec<&str> =
        audit.json["entries"].as_array().unwrap().iter().filter_map(|e| e["data"]["error"].as_str()).collect();
    assert!(errors.contains(&"invalid_grant") && errors.contains(&"invalid_provider_reply"), "{errors:?}");
    // `TestApp`'s drop checks every response and log line for all of them.
}

async fn echoed_with_post_credentials(backend: Backend) {
    a_provider_that_echoes_the_exchange_leaks_nothing(backend, "client_secret_post").await
}

async fn echoed_with_basic_credentials(backend: Backend) {
    a_provider_that_echoes_the_exchange_leaks_nothing(backend, "client_secret_basic").await
}

both_backends!(echoed_with_post_credentials, echoed_with_basic_credentials);

/// A wrong-typed secret in a request is named, never repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_typed_secret_is_named_not_echoed() {
    nexus_testkit::run_bounded(async {
        let app = TestApp::spawn(Backend::Sqlite).await;
        let body = json!({"name": "num", "auth_type": "oauth2", "client_id": "c", "client_secret": 4_815_162_342_u64,
            "auth_url": "https://idp.example/a", "token_url": "https://idp.example/t"});
        app.remember_secret("4815162342");
        let resp = app.post("/v1/providers", &body).await;
        assert_eq!(resp.status, 400, "{}", resp.text);
        assert!(resp.text.contains("client_secret") && resp.text.contains("expected a string"), "{}", resp.text);
        let fields = resp.json["details"]["fields"].as_array().unwrap();
        assert_eq!(fields[0]["field"], "client_secret");
        let wrong = app
            .post(
                "/v1/request-connection",
                &json!({"workspace_id": 7_391_826_455_u64, "provider_id": "x", "return_url": RETURN_URL}),
            )
            .await;
        assert_eq!(wrong.status, 400, "{}", wrong.text);
        assert!(!wrong.text.contains("7391826455"), "{}", wrong.text);
    })
    .await;
}

/// `Debug` of the state (its token cache holds served answers) and of a
/// token view shows no credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_output_shows_no_credential() {
    nexus_testkit::run_bounded(async {
        use nexus_testkit::upstream::{schema, static_connection};
        let app = TestApp::spawn(Backend::Sqlite).await;
        let provider = json!({"auth_type": "api_key", "params": {"credential_schema": schema(&["api_key"])}});
        let id = static_connection(&app, "dbg", provider, json!({"api_key": "sk-debugged-4f1d"})).await;
        let token = app.get(&format!("/v1/token/{id}")).await;
        assert_eq!(token.status, 200);
        let cached = app.state.token_cache.get(&id, app.state.clock.now_secs()).expect("the answer is cached");
        for shown in [format!("{:?}", app.state), format!("{:#?}", app.state), format!("{cached:?}")] {
            assert!(!shown.contains("sk-debugged-4f1d"), "{shown}");
        }
        let view: nexus_server::services::tokens::TokenView = nexus_server::services::tokens::TokenView {
            connection_id: id.clone(),
            provider: "dbg".into(),
            auth_type: nexus_core::AuthType::ApiKey,
            strategy: serde_json::from_value(token.json["strategy"].clone()).unwrap(),
            credentials: token.json["credentials"].as_object().unwrap().clone(),
            expires_at: None,
            api_base_url: None,
            connection_config: Default::default(),
            max_age: Some(30),
        };
        let shown = format!("{view:?}");
        assert!(shown.contains("api_key") && !shown.contains("sk-debugged-4f1d"), "{shown}");
    })
    .await;
}

/// The SQLite database and its WAL and shared-memory files hold sealed
/// secrets and the audit log: only their owner may read them.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_files_are_readable_by_their_owner_only() {
    nexus_testkit::run_bounded(async {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data").join("nexus.db");
        let url = format!("sqlite://{}", path.display());
        let app = TestApp::spawn_with(Backend::Sqlite, |c| c.database_url = Some(url.clone())).await;
        assert_eq!(
            app.post(
                "/v1/providers",
                &json!({"name": "p", "auth_type": "api_key", "params": {"credential_schema": {"type": "object"}}})
            )
            .await
            .status,
            201
        );
        let mut modes = Vec::new();
        for suffix in ["", "-wal", "-shm"] {
            let file = format!("{}{suffix}", path.display());
            let mode = std::fs::metadata(&file).unwrap_or_else(|e| panic!("{file}: {e}")).permissions().mode();
            modes.push((suffix, mode & 0o777));
        }
        assert_eq!(modes, [("", 0o600), ("-wal", 0o600), ("-shm", 0o600)]);
        let dir_mode = std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700, "the data directory it created");
        app.stop().await;

        // A file made readable by others is tightened at the next start.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let again = nexus_store::Store::connect(&url).await.unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        again.close().await;
    })
    .await;
}
