//! The OAuth2 consent flow end to end against a real OpenID provider
//! (`oidc-provider`): its own login and consent pages driven over HTTP with a
//! cookie jar, the redirect through `/auth/callback`, and the access token
//! proven real at the provider's userinfo endpoint.

use nexus_testkit::flows::{callback, connect, location, query, register, request, setup, RETURN_URL};
use nexus_testkit::oidc::authorize_via_browser;
use nexus_testkit::{both_backends, Backend};
use serde_json::{json, Value};

async fn consent_flow(backend: Backend, auth_method: &str, discovery: bool) {
    let (app, idp) = setup(backend, auth_method).await;
    let provider_id = register(&app, &idp, "idp", discovery, auth_method).await;

    let req = request(&app, "idp", json!(["openid", "email", "offline_access"])).await;
    assert_eq!(req.status, 200, "{}", req.text);
    assert_eq!(req.json["provider_id"], provider_id.as_str());
    assert_eq!(req.json["auth_url"], req.json["authUrl"]);
    let auth_url = url::Url::parse(req.json["auth_url"].as_str().unwrap()).unwrap();
    let q = query(&auth_url);
    assert_eq!(q["scope"], "openid email offline_access", "scopes narrowed per connection");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["redirect_uri"], app.url("/auth/callback"));
    assert_eq!(q["state"], req.json["state"].as_str().unwrap());
    assert_eq!(q["prompt"], "consent");
    assert!(q.contains_key("nonce"));
    let connection_id = req.json["connection_id"].as_str().unwrap().to_owned();
    assert_eq!(app.get(&format!("/v1/check-connection/{connection_id}")).await.json["status"], "pending");

    let cb =
        authorize_via_browser(auth_url.as_str(), "alice", true, &app.url("/auth/callback")).await.expect("consent");
    let resp = callback(&app, cb.as_str()).await;
    assert_eq!(resp.status, 302, "{}", resp.text);
    let loc = location(&resp);
    let lq = query(&loc);
    assert_eq!((lq["status"].as_str(), lq["connection_id"].as_str()), ("success", connection_id.as_str()), "{loc}");

    let check = app.get(&format!("/v1/check-connection/{connection_id}")).await;
    assert_eq!(check.json["status"], "active", "{}", check.text);
    assert_eq!(check.json["workspace_id"], "user-1");
    assert_eq!(check.json["provider"], "idp");

    let token = app.get(&format!("/v1/token/{connection_id}")).await;
    assert_eq!(token.status, 200, "{}", token.text);
    assert_eq!(token.json["strategy"]["type"], "oauth2");
    assert_eq!(token.json["auth_type"], "oauth2");
    let creds = &token.json["credentials"];
    let access_token = creds["access_token"].as_str().unwrap().to_owned();
    assert!(creds.get("refresh_token").is_none() && !token.text.contains("refresh_token"));
    assert!(creds["expires_at"].as_i64().unwrap() > chrono::Utc::now().timestamp());
    assert_eq!(token.json["expires_at"], creds["expires_at"]);
    assert!(creds["id_token"].is_string());
    let granted: Vec<&str> = creds["scope"].as_str().unwrap().split(' ').collect();
    assert!(
        granted.contains(&"email") && !granted.contains(&"profile"),
        "narrowed scopes reached the provider: {granted:?}"
    );

    // The token is real: the provider's userinfo endpoint accepts it.
    let me = reqwest::Client::new().get(idp.url("/me")).bearer_auth(&access_token).send().await.unwrap();
    assert_eq!(me.status(), 200);
    let claims: Value = me.json().await.unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["email"], "alice@example.test");

    // The refresh token is stored sealed, never shown.
    let row = app.store().connection_by_id(&connection_id).await.unwrap().unwrap();
    let sealed = row.refresh_token_enc.expect("a refresh token is stored");
    assert!(sealed.starts_with("v1:"));
    let refresh_token =
        app.state.config.keyring.open_string(&format!("connection:{connection_id}:refresh_token"), &sealed).unwrap();
    assert!(refresh_token.len() > 10);
    app.remember_secret(&refresh_token);
    app.state.flush_audit().await;
    let audit = app.get(&format!("/v1/audit?connection_id={connection_id}")).await;
    let events: Vec<&str> =
        audit.json["entries"].as_array().unwrap().iter().map(|e| e["event_type"].as_str().unwrap()).collect();
    assert_eq!(events, ["token.retrieved", "connection.activated", "connection.requested"]);
    assert!(!audit.text.contains(&access_token));
    // Access tokens appear only in token responses; check every other body.
    let leaked = app.bodies().iter().filter(|b| b.contains(&access_token)).count();
    assert_eq!(leaked, 1, "the access token appears only in the /v1/token answer");

    // Revocation tells the provider and wipes the credentials.
    idp.reset().await.unwrap();
    let revoked = app.delete(&format!("/v1/connections/{connection_id}")).await;
    assert_eq!((revoked.status, revoked.json["status"].as_str()), (200, Some("revoked")), "{}", revoked.text);
    if discovery {
        assert_eq!(idp.stats().await.unwrap().revocation_requests, 1);
        // The provider accepted it (client authentication included).
        app.state.flush_audit().await;
        let audit = app.get(&format!("/v1/audit?event_type=connection.revoked&connection_id={connection_id}")).await;
        assert_eq!(audit.json["entries"][0]["data"]["provider_revocation"], "ok", "{}", audit.text);
    }
    let after = app.get(&format!("/v1/token/{connection_id}")).await;
    assert_eq!((after.status, after.code()), (409, "connection_not_active"));
    assert_eq!(after.json["details"]["status"], "revoked");
    let row = app.store().connection_by_id(&connection_id).await.unwrap().unwrap();
    assert!(row.credentials_enc.is_none() && row.refresh_token_enc.is_none());
    assert_eq!(app.bodies().iter().filter(|b| b.contains(&access_token)).count(), 1);
}

async fn consent_with_discovery_and_post(backend: Backend) {
    consent_flow(backend, "client_secret_post", true).await;
}

async fn consent_with_manual_endpoints_and_basic(backend: Backend) {
    consent_flow(backend, "client_secret_basic", false).await;
}

async fn consent_with_discovery_and_basic(backend: Backend) {
    consent_flow(backend, "client_secret_basic", true).await;
}

async fn consent_with_manual_endpoints_and_post(backend: Backend) {
    consent_flow(backend, "client_secret_post", false).await;
}

async fn denied_consent_redirects_with_error_and_fails_the_connection(backend: Backend) {
    let (app, idp) = setup(backend, "client_secret_post").await;
    register(&app, &idp, "idp", true, "client_secret_post").await;
    let req = request(&app, "idp", json!(["openid", "email"])).await;
    let cb = authorize_via_browser(req.json["auth_url"].as_str().unwrap(), "bob", false, &app.url("/auth/callback"))
        .await
        .unwrap();
    let resp = callback(&app, cb.as_str()).await;
    let q = query(&location(&resp));
    assert_eq!((q["status"].as_str(), q["error"].as_str()), ("error", "access_denied"));
    let id = req.json["connection_id"].as_str().unwrap();
    assert_eq!(q["connection_id"], id);
    let check = app.get(&format!("/v1/check-connection/{id}")).await;
    assert_eq!((check.json["status"].as_str(), check.json["error"].as_str()), (Some("failed"), Some("access_denied")));
    let token = app.get(&format!("/v1/token/{id}")).await;
    assert_eq!((token.status, token.json["details"]["status"].as_str()), (409, Some("failed")));
}

async fn untrusted_states_get_a_plain_400_page(backend: Backend) {
    let (app, idp) = setup(backend, "client_secret_post").await;
    register(&app, &idp, "idp", true, "client_secret_post").await;
    let req = request(&app, "idp", json!(["openid"])).await;
    let cb = authorize_via_browser(req.json["auth_url"].as_str().unwrap(), "carol", true, &app.url("/auth/callback"))
        .await
        .unwrap();

    // Tampered state.
    let mut tampered = cb.clone();
    let pairs: Vec<(String, String)> = cb
        .query_pairs()
        .map(|(k, v)| if k == "state" { (k.into_owned(), format!("x{v}")) } else { (k.into_owned(), v.into_owned()) })
        .collect();
    tampered.query_pairs_mut().clear().extend_pairs(pairs);
    let resp = callback(&app, tampered.as_str()).await;
    assert_eq!(resp.status, 400);
    assert!(resp.headers.get("location").is_none());
    assert!(resp.content_type().starts_with("text/html"));

    // No state at all.
    let resp = callback(&app, &app.url("/auth/callback?code=abc")).await;
    assert_eq!(resp.status, 400);

    // The genuine one works once…
    let ok = callback(&app, cb.as_str()).await;
    assert_eq!(query(&location(&ok))["status"], "success");
    // …and a replay is refused without a redirect.
    let replay = callback(&app, cb.as_str()).await;
    assert_eq!(replay.status, 400, "{}", replay.text);
    assert!(replay.headers.get("location").is_none());

    // An expired state (signed with the real key) is refused.
    let claims = nexus_server::services::state_token::StateClaims {
        connection_id: req.json["connection_id"].as_str().unwrap().to_owned(),
        nonce: "whatever".into(),
        expires_at: chrono::Utc::now().timestamp() - 1,
    };
    let expired = nexus_server::services::state_token::issue(&app.state.config.state_signer, &claims);
    let resp =
        app.send(app.client.get(app.url("/auth/callback")).query(&[("code", "c"), ("state", expired.as_str())])).await;
    assert_eq!(resp.status, 400);
    assert!(resp.text.contains("expired"));
}

async fn wrong_issuer_and_wrong_nonce_fail_the_connection(backend: Backend) {
    let (app, idp) = setup(backend, "client_secret_post").await;
    register(&app, &idp, "idp", true, "client_secret_post").await;

    // RFC 9207: an `iss` that is not the provider's.
    let req = request(&app, "idp", json!(["openid"])).await;
    let cb = authorize_via_browser(req.json["auth_url"].as_str().unwrap(), "dan", true, &app.url("/auth/callback"))
        .await
        .unwrap();
    assert!(cb.query_pairs().any(|(k, _)| k == "iss"), "oidc-provider sends iss");
    let pairs: Vec<(String, String)> = cb
        .query_pairs()
        .map(|(k, v)| {
            if k == "iss" {
                (k.into_owned(), "http://127.0.0.1:9/evil".to_owned())
            } else {
                (k.into_owned(), v.into_owned())
            }
        })
        .collect();
    let mut wrong_iss = cb.clone();
    wrong_iss.query_pairs_mut().clear().extend_pairs(pairs);
    let q = query(&location(&callback(&app, wrong_iss.as_str()).await));
    assert_eq!((q["status"].as_str(), q["error"].as_str()), ("error", "invalid_issuer"));

    // An id_token whose nonce is not the one we sent.
    let req = request(&app, "idp", json!(["openid"])).await;
    let id = req.json["connection_id"].as_str().unwrap().to_owned();
    sqlx::query("UPDATE connections SET oidc_nonce = 'not-the-nonce' WHERE id = $1")
        .bind(&id)
        .execute(app.store().pool())
        .await
        .unwrap();
    let cb = authorize_via_browser(req.json["auth_url"].as_str().unwrap(), "dan", true, &app.url("/auth/callback"))
        .await
        .unwrap();
    let q = query(&location(&callback(&app, cb.as_str()).await));
    assert_eq!((q["status"].as_str(), q["error"].as_str()), ("error", "invalid_id_token"));
    assert_eq!(app.get(&format!("/v1/check-connection/{id}")).await.json["status"], "failed");
}

async fn request_connection_input_is_checked(backend: Backend) {
    let (app, idp) = setup(backend, "client_secret_post").await;
    register(&app, &idp, "idp", false, "client_secret_post").await;
    let base = json!({"workspace_id": "w", "provider_name": "idp", "return_url": RETURN_URL});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let cases = [
        (with("return_url", json!("https://evil.example.com/")), 400, "return_url"),
        (with("return_url", json!("https://app.example.test@evil.com/")), 400, "return_url"),
        (with("return_url", json!("javascript:alert(1)")), 400, "return_url"),
        (with("return_url", json!("https://example.org/")), 400, "return_url"),
        (with("scopes", json!(["admin"])), 400, "scopes"),
        (with("provider_name", json!("nope")), 404, "provider_id"),
        (with("workspace_id", json!("")), 400, "workspace_id"),
        (with("metadata", json!([1])), 400, "metadata"),
        (with("surprise", json!(1)), 400, "surprise"),
        (json!({"workspace_id": "w", "return_url": RETURN_URL}), 400, "provider_id"),
        (with("connection_id", json!("no-such-connection")), 404, "connection_id"),
    ];
    let before = app.audit_count().await;
    for (body, status, mention) in cases {
        let resp = app.post("/v1/request-connection", &body).await;
        assert_eq!(resp.status, status, "{body}: {}", resp.text);
        assert!(resp.json["message"].as_str().unwrap().contains(mention), "{body}: {}", resp.text);
    }
    assert_eq!(app.audit_count().await, before, "nothing written");
    assert_eq!(app.get("/v1/connections").await.json, json!([]));
    // Subdomain wildcard entries admit subdomains only.
    let ok = app.post("/v1/request-connection", &with("return_url", json!("https://a.example.org/x"))).await;
    assert_eq!(ok.status, 200, "{}", ok.text);

    // A deleted provider: new requests are 404, existing connections 410.
    let id = connect(&app, "idp", json!(["openid"])).await;
    // Orphaned: the pending connection above and the active one.
    assert_eq!(app.delete("/v1/providers/idp").await.json["orphaned_connections"], 2);
    let gone = app.get(&format!("/v1/token/{id}")).await;
    assert_eq!((gone.status, gone.code()), (410, "provider_deleted"));
    let again = app.post("/v1/request-connection", &base).await;
    assert_eq!(again.status, 404);
}

async fn reauthorization_keeps_the_connection_id(backend: Backend) {
    let (app, idp) = setup(backend, "client_secret_post").await;
    register(&app, &idp, "idp", true, "client_secret_post").await;
    let id = connect(&app, "idp", json!(["openid", "email"])).await;
    let first = app.get(&format!("/v1/token/{id}")).await.json["credentials"]["access_token"].clone();
    let req = app
        .post(
            "/v1/request-connection",
            &json!({"workspace_id": "user-1", "provider_name": "idp", "return_url": RETURN_URL, "connection_id": id}),
        )
        .await;
    assert_eq!(req.status, 200, "{}", req.text);
    assert_eq!(req.json["connection_id"], id.as_str());
    // Still usable while the user re-consents.
    assert_eq!(app.get(&format!("/v1/token/{id}")).await.status, 200);
    let cb = authorize_via_browser(req.json["auth_url"].as_str().unwrap(), "alice", true, &app.url("/auth/callback"))
        .await
        .unwrap();
    assert_eq!(query(&location(&callback(&app, cb.as_str()).await))["connection_id"], id);
    let second = app.get(&format!("/v1/token/{id}")).await.json["credentials"]["access_token"].clone();
    assert_ne!(first, second);
    let list = app.get("/v1/connections?workspace_id=user-1&provider=idp&status=active").await;
    assert_eq!(list.json.as_array().unwrap().len(), 1);
    assert_eq!(app.get("/v1/connections?status=bogus").await.status, 400);
}

async fn pending_connections_expire_after_ten_minutes(backend: Backend) {
    let (app, idp) = setup(backend, "client_secret_post").await;
    register(&app, &idp, "idp", true, "client_secret_post").await;
    let req = request(&app, "idp", json!(["openid"])).await;
    let id = req.json["connection_id"].as_str().unwrap().to_owned();
    let cb = authorize_via_browser(req.json["auth_url"].as_str().unwrap(), "erin", true, &app.url("/auth/callback"))
        .await
        .unwrap();
    // Ten minutes pass (the handshake's expiry is moved into the past).
    let past = chrono::Utc::now().timestamp_micros() - 1;
    sqlx::query("UPDATE connections SET handshake_expires_at = $1 WHERE id = $2")
        .bind(past)
        .bind(&id)
        .execute(app.store().pool())
        .await
        .unwrap();
    let late = callback(&app, cb.as_str()).await;
    assert_eq!(late.status, 400, "an expired handshake is not completed: {}", late.text);
    assert!(late.headers.get("location").is_none());
    let check = app.get(&format!("/v1/check-connection/{id}")).await;
    assert_eq!((check.json["status"].as_str(), check.json["error"].as_str()), (Some("failed"), Some("expired")));
}

async fn token_exchange_sends_token_params_and_honours_skip_scope(backend: Backend) {
    // A token endpoint that records what it receives (and answers nothing useful).
    let (addr, seen) = nexus_testkit::upstream::recording_upstream().await;
    let app = nexus_testkit::TestApp::spawn(backend).await;
    for (name, skip) in [("with-scope", false), ("no-scope", true)] {
        let created = app
            .post("/v1/providers", &json!({"name": name, "auth_type": "oauth2", "client_id": "cid", "client_secret": "token-params-secret",
                "auth_url": format!("http://{addr}/authorize"), "token_url": format!("http://{addr}/token"), "scopes": ["a", "b"],
                "params": {"token_params": {"audience": "https://api.example"}, "skip_scope_on_exchange": skip}}))
            .await;
        assert_eq!(created.status, 201, "{}", created.text);
        let req = app
            .post(
                "/v1/request-connection",
                &json!({"workspace_id": "w", "provider_name": name, "return_url": RETURN_URL}),
            )
            .await;
        let state = req.json["state"].as_str().unwrap();
        let resp =
            app.send(app.client.get(app.url("/auth/callback")).query(&[("code", "the-code"), ("state", state)])).await;
        let q = query(&location(&resp));
        assert_eq!(
            (q["status"].as_str(), q["error"].as_str()),
            ("error", "invalid_provider_reply"),
            "the reply was not a token"
        );
    }
    let seen = seen.lock().unwrap().clone();
    let bodies: Vec<std::collections::HashMap<String, String>> =
        seen.iter().map(|s| url::form_urlencoded::parse(&s.body).into_owned().collect()).collect();
    assert_eq!(bodies.len(), 2);
    for b in &bodies {
        assert_eq!(b["grant_type"], "authorization_code");
        assert_eq!(b["code"], "the-code");
        assert_eq!(b["audience"], "https://api.example", "token_params are sent");
        assert!(b["code_verifier"].len() >= 43, "PKCE verifier sent");
        assert_eq!(b["client_id"], "cid");
    }
    assert_eq!(bodies[0].get("scope").map(String::as_str), Some("a b"));
    assert!(!bodies[1].contains_key("scope"), "skip_scope_on_exchange");
}

both_backends!(
    consent_with_discovery_and_post,
    consent_with_manual_endpoints_and_basic,
    consent_with_discovery_and_basic,
    consent_with_manual_endpoints_and_post,
    denied_consent_redirects_with_error_and_fails_the_connection,
    untrusted_states_get_a_plain_400_page,
    wrong_issuer_and_wrong_nonce_fail_the_connection,
    request_connection_input_is_checked,
    reauthorization_keeps_the_connection_id,
    pending_connections_expire_after_ten_minutes,
    token_exchange_sends_token_params_and_honours_skip_scope
);
