//! The Gateway proxy: requests signed with each strategy reach a recording
//! upstream intact; an OAuth2 connection reaches the real provider's userinfo,
//! heals itself after the provider revokes the access token, and a connection
//! that needs consent again gets a clear error.

use nexus_testkit::flows::{connect, register, setup};
use nexus_testkit::upstream::{odd_upstream, recording_upstream, schema, seen_after, static_connection};
use nexus_testkit::{both_backends, Backend, TestApp};
use serde_json::json;

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
    // The path is passed on as encoded, so a climb hidden behind `%2F` is judged decoded.
    let hidden = app
        .send(
            app.client
                .get(app.url(&format!("/v1/proxy/{header}/a%2F..%2F..%2Fadmin")))
                .header("x-api-key", &app.api_key),
        )
        .await;
    assert_eq!((hidden.status, hidden.code()), (400, "invalid_input"), "{}", hidden.text);
    assert!(hidden.text.contains("dot segments"), "{}", hidden.text);
    // TRACE would echo the signed request, credentials included, back to the caller.
    let before = seen_after(&seen).len();
    let trace = app
        .send(
            app.client
                .request(reqwest::Method::TRACE, app.url(&format!("/v1/proxy/{header}/x")))
                .header("x-api-key", &app.api_key),
        )
        .await;
    assert_eq!((trace.status, trace.code()), (400, "invalid_input"), "{}", trace.text);
    assert!(!trace.text.contains("hdr-key-1"), "{}", trace.text);
    assert_eq!(seen_after(&seen).len(), before, "nothing was sent");
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

/// Through the lane, and through the router (its way in when CORS is
/// configured): both send on the relay's provider side and must answer alike.
async fn gateway_proxy_relays_answers_as_they_are_and_explains_an_unreachable_provider(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    relays_answers_as_they_are(&app).await;
    app.stop().await;
    let cors = TestApp::spawn_with(backend, |c| c.cors_allowed_origins = Some("https://app.example.com".into())).await;
    relays_answers_as_they_are(&cors).await;
}

async fn relays_answers_as_they_are(app: &TestApp) {
    let addr = odd_upstream().await;
    let provider = |base: String| json!({"auth_type": "api_key", "api_base_url": base, "params": {"credential_schema": schema(&["api_key"])}});
    let id = static_connection(app, "odd", provider(format!("http://{addr}/api")), json!({"api_key": "k"})).await;
    let get = |path: String| app.client.get(app.url(&path)).header("x-api-key", &app.api_key).send();

    // The provider's error, status, type and body unchanged; its cookie dropped.
    let teapot = get(format!("/v1/proxy/{id}/teapot")).await.unwrap();
    assert_eq!(teapot.status(), 418);
    assert_eq!(teapot.headers()["content-type"], "text/plain");
    assert_eq!(teapot.headers()["etag"], "\"v1\"");
    assert!(teapot.headers().get("set-cookie").is_none());
    assert_eq!(teapot.text().await.unwrap(), "short and stout");

    // A large body arrives whole.
    let big = get(format!("/v1/proxy/{id}/big")).await.unwrap();
    assert_eq!(big.status(), 200);
    let body = big.bytes().await.unwrap();
    assert_eq!((body.len(), body.iter().all(|b| *b == b'n')), (3 << 20, true));
    let head = app.client.head(app.url(&format!("/v1/proxy/{id}/big"))).header("x-api-key", &app.api_key).send().await;
    let head = head.unwrap();
    assert_eq!((head.status().as_u16(), head.headers()["content-length"].to_str().unwrap()), (200, "3145728"));

    // An encoded `?` or `#` in the path stays in the path; the query is the agent's.
    let echoed = get(format!("/v1/proxy/{id}/files/a%3Fb%23c?x=1")).await.unwrap();
    assert_eq!(echoed.text().await.unwrap(), "/api/files/a%3Fb%23c?x=1");

    // A provider nobody listens for: a JSON 502 that says so.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let gone = static_connection(app, "gone", provider(format!("http://{closed}")), json!({"api_key": "k"})).await;
    let resp =
        app.send(app.client.get(app.url(&format!("/v1/proxy/{gone}/x"))).header("x-api-key", &app.api_key)).await;
    assert_eq!((resp.status, resp.code()), (502, "provider_unreachable"), "{}", resp.text);

    // A base URL the policy accepts but no HTTP request can name (a host
    // not in ASCII): the provider's configuration is at fault, not the path.
    let idn =
        static_connection(app, "idn", provider("https://bücher.example/api".into()), json!({"api_key": "k"})).await;
    let resp = app.send(app.client.get(app.url(&format!("/v1/proxy/{idn}/x"))).header("x-api-key", &app.api_key)).await;
    assert_eq!((resp.status, resp.code()), (409, "provider_misconfigured"), "{}", resp.text);
}

both_backends!(gateway_proxy_relays_answers_as_they_are_and_explains_an_unreachable_provider);

/// The proxy route is served beside the router (`proxy_lane.rs`); it must
/// apply the router's rules all the same: the request id and the log line,
/// the allowlist and the API key (refusals audited, nothing forwarded), and,
/// when CORS is configured, the router's CORS answer.
async fn gateway_proxy_applies_the_rules_the_router_applies(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.allowed_cidrs = Some("127.0.0.0/8".into())).await;
    let (addr, seen) = recording_upstream().await;
    let id = static_connection(&app, "hdr", json!({"auth_type": "api_key", "api_base_url": format!("http://{addr}/api"), "params": {"credential_schema": schema(&["api_key"])}}), json!({"api_key": "k-1"})).await;
    let path = format!("/v1/proxy/{id}/items/secret-looking-path");

    // The caller's request id is echoed and names the log line, which
    // names the route, not the path with its connection id.
    let traced = app.client.get(app.url(&path)).header("x-api-key", &app.api_key).header("x-request-id", "trace-42");
    let traced = traced.send().await.unwrap();
    assert_eq!((traced.status().as_u16(), traced.headers()["x-request-id"].to_str().unwrap()), (200, "trace-42"));
    let fresh = app.client.get(app.url(&path)).header("x-api-key", &app.api_key).header("x-request-id", "bad id!");
    let fresh = fresh.send().await.unwrap();
    let generated = fresh.headers()["x-request-id"].to_str().unwrap();
    assert!(generated != "bad id!" && uuid::Uuid::parse_str(generated).is_ok(), "{generated}");
    let logs = nexus_testkit::logs::lines();
    let line = logs.lines().find(|l| l.contains("trace-42")).expect("the request was logged");
    assert!(line.contains("route=/v1/proxy/{connection_id}/{*path}") && line.contains("status=200"), "{line}");
    assert!(!line.contains(&id) && !line.contains("secret-looking-path"), "{line}");
    assert_eq!(seen.lock().unwrap().len(), 2);

    // A wrong key and a missing one are refused, audited with the
    // method and path, and not forwarded.
    let wrong = app.send(app.client.post(app.url(&path)).header("x-api-key", "wrong").body("{}")).await;
    assert_eq!((wrong.status, wrong.code()), (401, "unauthorized"), "{}", wrong.text);
    let missing = app.send(app.client.get(app.url(&path))).await;
    assert_eq!((missing.status, missing.code()), (401, "unauthorized"), "{}", missing.text);
    app.state.flush_audit().await;
    let rows = app.store().list_audit(&nexus_store::AuditFilter { limit: 50, ..Default::default() }).await.unwrap();
    let mut reasons: Vec<_> = rows
        .entries
        .iter()
        .filter(|r| r.event_type == "auth.rejected")
        .map(|r| (r.data["reason"].as_str().unwrap().to_owned(), r.data["method"].clone(), r.data["path"].clone()))
        .collect();
    reasons.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        reasons,
        vec![
            ("invalid_api_key".to_owned(), json!("POST"), json!(path)),
            ("missing_api_key".to_owned(), json!("GET"), json!(path))
        ]
    );
    assert_eq!(seen.lock().unwrap().len(), 2, "nothing refused was forwarded");
    app.stop().await;

    // Outside the allowlist (a forged X-Forwarded-For does not count:
    // the peer is no trusted proxy): 403, audited with the socket's address.
    let closed = TestApp::spawn_with(backend, |c| c.allowed_cidrs = Some("10.0.0.0/8".into())).await;
    let refused = closed
        .send(
            closed
                .client
                .get(closed.url("/v1/proxy/any-connection/x"))
                .header("x-api-key", &closed.api_key)
                .header("x-forwarded-for", "10.1.2.3"),
        )
        .await;
    assert_eq!((refused.status, refused.code()), (403, "forbidden"), "{}", refused.text);
    closed.state.flush_audit().await;
    let rows = closed.store().list_audit(&nexus_store::AuditFilter { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(rows.entries.len(), 1);
    assert_eq!(
        (rows.entries[0].ip.as_deref(), &rows.entries[0].data["reason"]),
        (Some("127.0.0.1"), &json!("ip_not_allowed"))
    );
    closed.stop().await;

    // With CORS configured, the proxy route answers preflights and names
    // the allowed origin as every other `/v1/*` route does.
    let open = TestApp::spawn_with(backend, |c| c.cors_allowed_origins = Some("https://app.example.com".into())).await;
    let preflight = open
        .client
        .request(reqwest::Method::OPTIONS, open.url("/v1/proxy/any-connection/x"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "x-api-key")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.headers()["access-control-allow-origin"], "https://app.example.com");
    let missing = open.client.get(open.url("/v1/proxy/any-connection/x")).header("origin", "https://app.example.com");
    let missing = missing.send().await.unwrap();
    assert_eq!(missing.status(), 401);
    assert_eq!(missing.headers()["access-control-allow-origin"], "https://app.example.com");
    open.stop().await;
}

both_backends!(gateway_proxy_applies_the_rules_the_router_applies);
