//! Grants without a browser (SPEC 11), against the real `oidc-provider`
//! with its `clientCredentials` feature: `oauth2_client_credentials` with
//! the client's credentials on the provider connects at request-connection
//! (`201`, active, nothing for a person to do), signs with the `oauth2`
//! strategy, is renewed by running the grant again (on demand, concurrent
//! callers sharing one grant, and by the background refresher before
//! expiry), and a refused client is a `400` with nothing stored, or, on
//! renewal, `attention_required`.

use nexus_testkit::oidc::{OidcOptions, OidcProvider};
use nexus_testkit::upstream::{recording_upstream, seen_after};
use nexus_testkit::{both_backends, Backend, TestApp};
use serde_json::{json, Value};
use std::time::Duration;

const SECRET: &str = "machine-secret-0a1b2c";

async fn machine_idp(method: &str, ttl: u64) -> OidcProvider {
    let client = json!({"client_id": "machine", "client_secret": SECRET, "token_endpoint_auth_method": method,
                        "grant_types": ["client_credentials"], "response_types": [], "redirect_uris": [],
                        "scope": "api:read api:write"});
    let options = OidcOptions {
        clients: json!([client]),
        access_token_ttl: ttl,
        extra_scopes: vec!["api:read".into(), "api:write".into()],
        ..OidcOptions::default()
    };
    OidcProvider::start(options).await.expect("oidc-provider")
}

async fn register(app: &TestApp, idp: &OidcProvider, method: &str, base: &str) {
    let body = json!({"name": "machine", "auth_type": "oauth2_client_credentials", "client_id": "machine",
        "client_secret": SECRET, "token_url": idp.url("/token"), "auth_header": method,
        "scopes": ["api:read", "api:write"], "api_base_url": base});
    let created = app.post("/v1/providers", &body).await;
    assert_eq!(created.status, 201, "{}", created.text);
}

async fn token(app: &TestApp, id: &str) -> Value {
    let resp = app.get(&format!("/v1/token/{id}")).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    resp.json
}

async fn client_credentials_connect_at_once_and_renew_by_running_the_grant_again(backend: Backend) {
    for method in ["client_secret_basic", "client_secret_post"] {
        let idp = machine_idp(method, 600).await;
        let app = TestApp::spawn_with(backend, |c| {
            c.refresh_window = Some("60".into());
            c.refresh_interval = Some("3600".into());
        })
        .await;
        let (addr, seen) = recording_upstream().await;
        register(&app, &idp, method, &format!("http://{addr}/api")).await;

        // No return URL, no consent: the first token at once.
        let created = app
            .post(
                "/v1/request-connection",
                &json!({"workspace_id": "w", "provider_name": "machine", "scopes": ["api:read"]}),
            )
            .await;
        assert_eq!(created.status, 201, "{method}: {}", created.text);
        assert_eq!(created.json["status"], "active", "{}", created.text);
        let id = created.json["connection_id"].as_str().unwrap().to_owned();
        assert_eq!(idp.stats().await.unwrap().client_credentials_requests, 1, "{method}");
        let first = token(&app, &id).await;
        assert_eq!(first["strategy"]["type"], "oauth2", "{first}");
        assert_eq!(first["auth_type"], "oauth2_client_credentials", "{first}");
        assert_eq!(first["credentials"]["scope"], "api:read", "{first}");
        assert!(first["credentials"]["expires_at"].is_i64(), "{first}");
        let access = first["credentials"]["access_token"].as_str().unwrap().to_owned();
        let checked = app.get(&format!("/v1/check-connection/{id}")).await;
        assert_eq!(
            (checked.json["status"].as_str(), checked.json["auth_type"].as_str()),
            (Some("active"), Some("oauth2_client_credentials"))
        );

        // Signed with the oauth2 strategy through the Gateway proxy.
        let proxied = app
            .send(app.client.get(app.url(&format!("/v1/proxy/{id}/things"))).header("x-api-key", &app.api_key))
            .await;
        assert_eq!(proxied.status, 200, "{}", proxied.text);
        assert_eq!(seen_after(&seen)[0].header("authorization"), Some(format!("Bearer {access}").as_str()));

        // Inside the refresh window, 20 callers at once: one new grant.
        let expires = app.store().connection_by_id(&id).await.unwrap().unwrap().expires_at.unwrap();
        app.state.clock.advance(Duration::from_secs((expires - 60 - app.state.clock.now_secs() + 1).max(0) as u64));
        let path = format!("/v1/token/{id}");
        let calls = (0..20).map(|_| app.get(&path));
        let answers = futures::future::join_all(calls).await;
        let tokens: std::collections::HashSet<String> = answers
            .iter()
            .map(|a| {
                assert_eq!(a.status, 200, "{}", a.text);
                a.json["credentials"]["access_token"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(tokens.len(), 1, "{method}: everyone got the same renewed token");
        assert!(!tokens.contains(&access), "{method}: the token was renewed");
        assert_eq!(idp.stats().await.unwrap().client_credentials_requests, 2, "{method}: one grant for 20 callers");
        app.stop().await;
    }
}

both_backends!(client_credentials_connect_at_once_and_renew_by_running_the_grant_again);

/// A wrong secret: `400 invalid_credentials` at request-connection and no
/// connection stored; a client the provider stops accepting after the
/// connection was made: the renewal moves it to `attention_required`, and
/// the same request with its `connection_id` brings it back.
async fn a_refused_client_stores_nothing_and_a_refused_renewal_needs_attention(backend: Backend) {
    let idp = machine_idp("client_secret_post", 600).await;
    let app = TestApp::spawn(backend).await;
    let mut body = json!({"name": "wrong", "auth_type": "oauth2_client_credentials", "client_id": "machine",
        "client_secret": "not-the-secret-9z", "token_url": idp.url("/token"), "scopes": ["api:read"]});
    assert_eq!(app.post("/v1/providers", &body).await.status, 201);
    let refused = app.post("/v1/request-connection", &json!({"workspace_id": "w", "provider_name": "wrong"})).await;
    assert_eq!((refused.status, refused.code()), (400, "invalid_credentials"), "{}", refused.text);
    assert!(!refused.text.contains("not-the-secret"), "{}", refused.text);
    assert_eq!(app.get("/v1/connections").await.json, json!([]), "nothing stored");

    body["name"] = json!("machine");
    body["client_secret"] = json!(SECRET);
    assert_eq!(app.post("/v1/providers", &body).await.status, 201);
    let created = app.post("/v1/request-connection", &json!({"workspace_id": "w", "provider_name": "machine"})).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.json["connection_id"].as_str().unwrap().to_owned();
    idp.fail_token_endpoint(401, Some("invalid_client"), 1).await.unwrap();
    let forced = app.post(&format!("/v1/refresh/{id}"), &json!({})).await;
    assert_eq!(forced.code(), "attention_required", "{}", forced.text);
    let answer = app.get(&format!("/v1/token/{id}")).await;
    assert_eq!((answer.status, answer.code()), (409, "attention_required"), "{}", answer.text);
    let again = app
        .post("/v1/request-connection", &json!({"workspace_id": "w", "provider_name": "machine", "connection_id": id}))
        .await;
    assert_eq!((again.status, again.json["connection_id"].as_str()), (201, Some(id.as_str())), "{}", again.text);
    token(&app, &id).await;

    // A provider of this type needs no return URL; others still do.
    let oauth = app.post("/v1/request-connection", &json!({"workspace_id": "w", "provider_name": "missing"})).await;
    assert_eq!(oauth.status, 404, "{}", oauth.text);
}

both_backends!(a_refused_client_stores_nothing_and_a_refused_renewal_needs_attention);

/// The background refresher renews client credentials connections before
/// their tokens expire, by running the grant again.
async fn the_refresher_renews_client_credentials_before_expiry(backend: Backend) {
    let idp = machine_idp("client_secret_basic", 8).await;
    let app = TestApp::spawn_with(backend, |c| {
        c.refresh_window = Some("5".into());
        c.refresh_interval = Some("1".into());
    })
    .await;
    register(&app, &idp, "client_secret_basic", "https://api.example.com").await;
    let created = app.post("/v1/request-connection", &json!({"workspace_id": "w", "provider_name": "machine"})).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.json["connection_id"].as_str().unwrap().to_owned();
    let old = app.store().connection_by_id(&id).await.unwrap().unwrap().expires_at.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let row = app.store().connection_by_id(&id).await.unwrap().unwrap();
        if row.expires_at.unwrap() > old {
            assert!(old >= row.last_refreshed_at.unwrap() / 1_000_000, "renewed before the old token expired");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not renewed in time");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(idp.stats().await.unwrap().client_credentials_requests >= 2);
}

both_backends!(the_refresher_renews_client_credentials_before_expiry);

/// `private_key_jwt`: the client authenticates with an assertion signed by
/// its private key (generated by Python's `cryptography`; the provider
/// holds only the public JWK); the key is never sent or shown.
async fn client_credentials_with_private_key_jwt(backend: Backend) {
    let (pem, _, jwk) = nexus_testkit::python::rsa_key().expect("a key pair");
    let client = json!({"client_id": "signer", "token_endpoint_auth_method": "private_key_jwt",
                        "jwks": {"keys": [jwk]}, "grant_types": ["client_credentials"], "response_types": [],
                        "redirect_uris": [], "scope": "api:read"});
    let options =
        OidcOptions { clients: json!([client]), extra_scopes: vec!["api:read".into()], ..OidcOptions::default() };
    let idp = OidcProvider::start(options).await.expect("oidc-provider");
    let app = TestApp::spawn(backend).await;
    app.remember_secret(&pem);
    let body = json!({"name": "signer", "auth_type": "oauth2_client_credentials", "client_id": "signer",
        "client_secret": pem, "auth_header": "private_key_jwt", "token_url": idp.url("/token"),
        "scopes": ["api:read"], "params": {"client_assertion_kid": "k1"}});
    let created = app.post("/v1/providers", &body).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let connected = app.post("/v1/request-connection", &json!({"workspace_id": "w", "provider_name": "signer"})).await;
    assert_eq!(connected.status, 201, "{}", connected.text);
    let id = connected.json["connection_id"].as_str().unwrap();
    assert_eq!(token(&app, id).await["strategy"]["type"], "oauth2");
    assert_eq!(idp.stats().await.unwrap().client_credentials_requests, 1);

    // Not a key at all: refused at registration, naming the field.
    let mut bad = body.clone();
    bad["name"] = json!("not-a-key");
    bad["client_secret"] = json!("just-a-secret-string");
    let refused = app.post("/v1/providers", &bad).await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert!(refused.text.contains("client_secret"), "{}", refused.text);
}

both_backends!(client_credentials_with_private_key_jwt);

/// Client credentials captured per connection (`credential_schema` asks
/// for the client): the capture runs the grant as its live verification; a
/// client the provider refuses is `400 invalid_credentials` and nothing is
/// stored; renewals run as the captured client.
async fn client_credentials_captured_per_connection(backend: Backend) {
    let idp = machine_idp("client_secret_post", 600).await;
    let app = TestApp::spawn_with(backend, |c| c.allowed_return_domains = Some("app.example.test".into())).await;
    let schema = json!({"type": "object", "required": ["client_id", "client_secret"],
                        "properties": {"client_id": {"type": "string"}, "client_secret": {"type": "string"}}});
    let body = json!({"name": "per-tenant", "auth_type": "oauth2_client_credentials", "token_url": idp.url("/token"),
                      "scopes": ["api:read"], "params": {"credential_schema": schema}});
    assert_eq!(app.post("/v1/providers", &body).await.status, 201);
    let capture = |secret: &'static str| {
        let app = &app;
        async move {
            let req = app
                .post("/v1/request-connection", &json!({"workspace_id": "w", "provider_name": "per-tenant", "return_url": "https://app.example.test/done"}))
                .await;
            assert_eq!(req.status, 200, "{}", req.text);
            assert!(req.json["auth_url"].as_str().unwrap().contains("/auth/capture"), "{}", req.text);
            app.remember_secret(secret);
            app.send(
                app.client
                    .post(app.url("/v1/capture-credential"))
                    .header("x-api-key", &app.api_key)
                    .header("accept", "application/json")
                    .json(&json!({"state": req.json["state"], "credentials": {"client_id": "machine", "client_secret": secret}})),
            )
            .await
        }
    };
    let refused = capture("wrong-machine-secret").await;
    assert_eq!((refused.status, refused.code()), (400, "invalid_credentials"), "{}", refused.text);
    assert_eq!(app.get("/v1/connections?status=active").await.json, json!([]));
    let captured = capture(SECRET).await;
    assert_eq!(captured.status, 200, "{}", captured.text);
    let id = captured.json["connection_id"].as_str().unwrap().to_owned();
    let first = token(&app, &id).await;
    assert_eq!(first["strategy"]["type"], "oauth2");
    let forced = app.post(&format!("/v1/refresh/{id}"), &json!({})).await;
    assert_eq!(forced.status, 200, "{}", forced.text);
    assert_ne!(forced.json["credentials"]["access_token"], first["credentials"]["access_token"]);
    assert_eq!(idp.stats().await.unwrap().client_credentials_requests, 3, "refused, captured, renewed");
}

both_backends!(client_credentials_captured_per_connection);
