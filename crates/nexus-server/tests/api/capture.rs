//! Static credential capture for every static type with the seeds' schemas,
//! schema violations, live verification against a local upstream, and the
//! public capture form.

use crate::seeds::seed_examples;
use nexus_testkit::{both_backends, Backend, TestApp, TestResponse};
use serde_json::{json, Value};
use std::net::SocketAddr;

const RETURN_URL: &str = "https://app.example.test/connected";

async fn request(app: &TestApp, provider: &str) -> TestResponse {
    let resp = app
        .post("/v1/request-connection", &json!({"workspace_id": "ws-9", "provider_name": provider, "return_url": RETURN_URL, "scopes": ["ignored"]}))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    resp
}

async fn capture(app: &TestApp, state: &str, credentials: Value) -> TestResponse {
    app.send(
        app.client
            .post(app.url("/v1/capture-credential"))
            .header("x-api-key", &app.api_key)
            .header("accept", "application/json")
            .json(&json!({"state": state, "credentials": credentials})),
    )
    .await
}

async fn every_static_type_captures_and_yields_its_strategy(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for example in seed_examples("http://127.0.0.1:1").into_iter().skip(2) {
        assert_eq!(app.post("/v1/providers", &example).await.status, 201);
    }
    let cases = [
        (
            "airtable",
            json!({"api_key": "pat-airtable-123"}),
            json!({"type": "header", "config": {"header_name": "Authorization", "value_prefix": "Bearer ", "credential_field": "api_key"}}),
        ),
        (
            "jira-basic",
            json!({"username": "ann", "password": "jira-pass-123"}),
            json!({"type": "basic_auth", "config": {"username_field": "username", "password_field": "password"}}),
        ),
        (
            "bedrock-us-east",
            json!({"access_key": "AKIDEXAMPLE", "secret_key": "aws-secret-123"}),
            json!({"type": "aws_sigv4", "config": {"service": "bedrock", "region": "us-east-1"}}),
        ),
        (
            "weatherapi",
            json!({"api_key": "weather-key-123"}),
            json!({"type": "query_param", "config": {"param_name": "api_token", "credential_field": "api_key"}}),
        ),
        (
            "webhook-hmac",
            json!({"api_secret": "hmac-secret-123"}),
            json!({"type": "hmac_payload", "config": {"header_name": "X-Signature", "algo": "sha256", "encoding": "hex", "secret_field": "api_secret"}}),
        ),
    ];
    for (name, credentials, strategy) in cases {
        let req = request(&app, name).await;
        let state = req.json["state"].as_str().unwrap().to_owned();
        let auth_url = req.json["auth_url"].as_str().unwrap();
        assert!(auth_url.starts_with(&app.url("/auth/capture?state=")), "{auth_url}");
        assert_eq!(req.json["scopes"], json!([]), "static providers ignore scopes");

        let schema = app
            .send(
                app.client
                    .get(app.url("/v1/capture-schema"))
                    .header("x-api-key", &app.api_key)
                    .query(&[("state", &state)]),
            )
            .await;
        assert_eq!(schema.status, 200, "{}", schema.text);
        assert_eq!(schema.json["provider"], name);
        let provider = app.get(&format!("/v1/providers/{name}")).await;
        assert_eq!(schema.json["credential_schema"], provider.json["params"]["credential_schema"]);
        assert_eq!(schema.json["auth_type"], provider.json["auth_type"]);

        let done = capture(&app, &state, credentials.clone()).await;
        assert_eq!(done.status, 200, "{name}: {}", done.text);
        assert_eq!(done.json["status"], "active");
        let id = done.json["connection_id"].as_str().unwrap().to_owned();
        assert!(done.json["return_url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{RETURN_URL}?connection_id={id}&status=success")));

        let token = app.get(&format!("/v1/token/{id}")).await;
        assert_eq!(token.status, 200, "{}", token.text);
        assert_eq!(token.json["strategy"], strategy, "{name}");
        assert_eq!(token.json["credentials"], credentials, "{name}");
        assert_eq!(token.json["expires_at"], Value::Null);

        // The state is single-use.
        let again = capture(&app, &state, credentials).await;
        assert_eq!((again.status, again.code()), (409, "state_used"), "{}", again.text);
    }
    // Without Accept: application/json the answer is a redirect.
    let req = request(&app, "airtable").await;
    let resp = app
        .send(
            app.client
                .post(app.url("/v1/capture-credential"))
                .header("x-api-key", &app.api_key)
                .json(&json!({"state": req.json["state"], "credentials": {"api_key": "k-2"}})),
        )
        .await;
    assert_eq!(resp.status, 302);
    let loc = resp.headers["location"].to_str().unwrap();
    assert_eq!(
        loc,
        format!("{RETURN_URL}?connection_id={}&status=success", req.json["connection_id"].as_str().unwrap())
    );

    app.state.flush_audit().await;
    let audit = app.get("/v1/audit?event_type=credential.captured").await;
    assert_eq!(audit.json["entries"].as_array().unwrap().len(), 6);
    assert_eq!(audit.json["entries"][0]["data"]["fields"], json!(["api_key"]));
    for secret in ["jira-pass-123", "aws-secret-123", "hmac-secret-123", "pat-airtable-123"] {
        assert!(!audit.text.contains(secret));
    }
}

async fn schema_violations_list_each_field_and_store_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for example in seed_examples("http://127.0.0.1:1").into_iter().skip(2) {
        app.post("/v1/providers", &example).await;
    }
    let req = request(&app, "jira-basic").await;
    let state = req.json["state"].as_str().unwrap();
    let id = req.json["connection_id"].as_str().unwrap();
    let bad = capture(&app, state, json!({"username": 42})).await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    let fields: Vec<&str> =
        bad.json["details"]["fields"].as_array().unwrap().iter().map(|f| f["field"].as_str().unwrap()).collect();
    assert!(fields.contains(&"credentials.username"), "{fields:?}");
    assert!(fields.contains(&"credentials.password"), "{fields:?}");
    assert!(bad.json["message"].as_str().unwrap().contains("credentials.password"));
    let row = app.store().connection_by_id(id).await.unwrap().unwrap();
    assert_eq!(row.status, nexus_core::ConnectionStatus::Pending);
    assert!(row.credentials_enc.is_none());
    // Malformed submissions.
    for body in [
        json!({"credentials": {}}),
        json!({"state": state}),
        json!({"state": state, "credentials": "x"}),
        json!({"state": "forged", "credentials": {}}),
    ] {
        let r = app
            .send(app.client.post(app.url("/v1/capture-credential")).header("x-api-key", &app.api_key).json(&body))
            .await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
    }
    // The state still works after the failures.
    assert_eq!(capture(&app, state, json!({"username": "u", "password": "p"})).await.status, 200);
    // An OAuth state is not a capture state and vice versa.
    let missing = app.send(app.client.get(app.url("/v1/capture-schema")).header("x-api-key", &app.api_key)).await;
    assert_eq!(missing.status, 400);
}

/// A local upstream that accepts exactly one credential in several forms.
async fn upstream() -> SocketAddr {
    use axum::http::{HeaderMap, StatusCode};
    async fn me(headers: HeaderMap, axum::extract::RawQuery(q): axum::extract::RawQuery) -> StatusCode {
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
        let ok = auth == "Bearer good-key"
            || headers.get("x-api-key").is_some_and(|v| v == "good-key")
            || auth == "Basic Z29vZDpwYXNzd29yZA==" // good:password
            || q.as_deref().is_some_and(|q| q.split('&').any(|p| p == "key=good-key"));
        if ok {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, axum::Router::new().route("/me", axum::routing::get(me))).await });
    addr
}

async fn live_verification_refuses_wrong_keys(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let addr = upstream().await;
    let base = format!("http://{addr}");
    let schema = |fields: &[&str]| {
        let props: serde_json::Map<String, Value> =
            fields.iter().map(|f| (f.to_string(), json!({"type": "string"}))).collect();
        json!({"type": "object", "required": fields, "properties": props})
    };
    let providers = [
        json!({"name": "hdr", "auth_type": "api_key", "api_base_url": base, "user_info_endpoint": "/me", "params": {"credential_schema": schema(&["api_key"])}}),
        json!({"name": "custom-hdr", "auth_type": "api_key", "auth_header": "X-Api-Key", "api_base_url": base, "user_info_endpoint": "/me", "params": {"credential_schema": schema(&["api_key"])}}),
        json!({"name": "qry", "auth_type": "api_key", "api_base_url": base, "user_info_endpoint": "/me", "params": {"credential_schema": schema(&["api_key"]), "auth_strategy": "query_param", "param_name": "key"}}),
        json!({"name": "basic", "auth_type": "basic_auth", "api_base_url": base, "user_info_endpoint": "/me", "params": {"credential_schema": schema(&["username", "password"])}}),
    ];
    for p in &providers {
        assert_eq!(app.post("/v1/providers", p).await.status, 201);
    }
    let cases = [
        ("hdr", json!({"api_key": "bad-key"}), json!({"api_key": "good-key"})),
        ("custom-hdr", json!({"api_key": "bad-key"}), json!({"api_key": "good-key"})),
        ("qry", json!({"api_key": "bad-key"}), json!({"api_key": "good-key"})),
        (
            "basic",
            json!({"username": "good", "password": "wrong"}),
            json!({"username": "good", "password": "password"}),
        ),
    ];
    for (name, wrong, right) in cases {
        let req = request(&app, name).await;
        let state = req.json["state"].as_str().unwrap();
        let refused = capture(&app, state, wrong).await;
        assert_eq!((refused.status, refused.code()), (400, "invalid_credentials"), "{name}: {}", refused.text);
        let row = app.store().connection_by_id(req.json["connection_id"].as_str().unwrap()).await.unwrap().unwrap();
        assert!(row.credentials_enc.is_none(), "{name}: nothing stored");
        let accepted = capture(&app, state, right).await;
        assert_eq!(accepted.status, 200, "{name}: {}", accepted.text);
    }
    // Through the Connect UI's form: the provider's refusal is said above the
    // form (an alert), the key is not echoed, and the form can be sent again.
    let req = request(&app, "hdr").await;
    let state = req.json["state"].as_str().unwrap();
    let refused =
        app.send(app.client.post(app.url("/auth/capture")).form(&[("state", state), ("api_key", "bad-key")])).await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert!(refused.text.contains("role=\"alert\"") && refused.text.contains("id=\"form-error\""), "{}", refused.text);
    assert!(!refused.text.contains("bad-key") && refused.text.contains("name=\"state\""));
    let accepted =
        app.send(app.client.post(app.url("/auth/capture")).form(&[("state", state), ("api_key", "good-key")])).await;
    assert_eq!(accepted.status, 200, "{}", accepted.text);
    // An unreachable provider is a 502 and stores nothing.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    app.post("/v1/providers", &json!({"name": "dead", "auth_type": "api_key", "api_base_url": dead_url, "user_info_endpoint": "/me", "params": {"credential_schema": schema(&["api_key"])}})).await;
    let req = request(&app, "dead").await;
    let r = capture(&app, req.json["state"].as_str().unwrap(), json!({"api_key": "good-key"})).await;
    assert_eq!((r.status, r.code()), (502, "provider_unreachable"), "{}", r.text);
}

async fn the_public_capture_form_works_in_a_browser(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for example in seed_examples("http://127.0.0.1:1").into_iter().skip(2) {
        app.post("/v1/providers", &example).await;
    }
    let req = request(&app, "jira-basic").await;
    let page = app.send(app.client.get(req.json["auth_url"].as_str().unwrap())).await;
    assert_eq!(page.status, 200);
    assert!(page.content_type().starts_with("text/html"));
    assert!(page.text.contains("name=\"username\"") && page.text.contains("type=\"password\""));
    assert!(page.text.contains("<label for=\"f-username\">") && page.text.contains("aria-required=\"true\""));
    assert!(page.headers["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
    // A schema violation: the form again, the error next to its field, the
    // name typed kept and no secret echoed.
    let state = req.json["state"].as_str().unwrap();
    let missing = [("state", state), ("username", "ann"), ("password", "")];
    let again = app.send(app.client.post(app.url("/auth/capture")).form(&missing)).await;
    assert_eq!(again.status, 400, "{}", again.text);
    assert!(again.text.contains("id=\"e-password\"") && again.text.contains("is required"), "{}", again.text);
    assert!(again.text.contains("aria-invalid=\"true\"") && again.text.contains("value=\"ann\""));
    let form = [("state", state), ("username", "ann"), ("password", "form-pass-1")];
    let resp = app.send(app.client.post(app.url("/auth/capture")).form(&form)).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let refresh = resp.headers["refresh"].to_str().unwrap();
    assert!(refresh.starts_with("0; url=") && refresh.ends_with("&status=success"), "{refresh}");
    assert!(resp.text.contains("Return to the application") && !resp.text.contains("form-pass-1"));
    let token = app.get(&format!("/v1/token/{}", req.json["connection_id"].as_str().unwrap())).await;
    assert_eq!(token.json["credentials"]["username"], "ann");
    // A forged state gets a page, not a capture.
    let forged = app.send(app.client.get(app.url("/auth/capture?state=forged"))).await;
    assert_eq!(forged.status, 400);
    assert!(forged.content_type().starts_with("text/html"));
}

/// A credential schema keeps the operator's field order through storage
/// and back: in `GET /v1/capture-schema`, in the provider, and in the form.
async fn the_capture_form_shows_fields_in_the_operators_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let order = ["zone", "account", "secret_key", "base"];
    let properties: serde_json::Map<String, Value> =
        order.iter().map(|f| (f.to_string(), json!({"type": "string", "title": format!("Field {f}")}))).collect();
    let provider = json!({
        "name": "ordered", "display_name": "Ordered Ltd", "auth_type": "basic_auth",
        "params": {"username_field": "account", "password_field": "secret_key",
                   "credential_schema": {"type": "object", "required": ["account", "secret_key"], "properties": properties}}
    });
    let created = app.post("/v1/providers", &provider).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&created.json["params"]["credential_schema"]["properties"]), order);
    let stored = app.get("/v1/providers/ordered").await;
    assert_eq!(keys(&stored.json["params"]["credential_schema"]["properties"]), order);
    assert_eq!(stored.json["display_name"], "Ordered Ltd");
    let meta = app.get("/v1/providers/metadata").await;
    assert_eq!(meta.json["basic_auth"][0]["display_name"], "Ordered Ltd");
    assert_eq!(meta.json["basic_auth"][0]["name"], "ordered");

    let state = request(&app, "ordered").await.json["state"].as_str().unwrap().to_owned();
    let schema = app
        .send(
            app.client.get(app.url("/v1/capture-schema")).header("x-api-key", &app.api_key).query(&[("state", &state)]),
        )
        .await;
    assert_eq!(keys(&schema.json["credential_schema"]["properties"]), order, "{}", schema.text);
    let page = app.send(app.client.get(app.url("/auth/capture")).query(&[("state", &state)])).await;
    assert_eq!(page.status, 200);
    let at: Vec<usize> = order
        .iter()
        .map(|f| page.text.find(&format!("name=\"{f}\"")).unwrap_or_else(|| panic!("{f}: {}", page.text)))
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "the form lists the fields in the operator's order: {at:?}");
}

both_backends!(
    every_static_type_captures_and_yields_its_strategy,
    schema_violations_list_each_field_and_store_nothing,
    live_verification_refuses_wrong_keys,
    the_public_capture_form_works_in_a_browser,
    the_capture_form_shows_fields_in_the_operators_order
);
