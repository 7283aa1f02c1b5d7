//! The Connect UI in a real browser (Debian's headless chromium, driven by
//! Python selenium through chromedriver), against this server and the test
//! oidc-provider: a static connection completed by keyboard only, with the
//! schema's inline error and the provider's refusal on the way; an OAuth
//! connection through the provider's own sign-in and consent pages; one
//! whose provider needs an account detail first; a connection that needs
//! the user again, reconnected in place; a link that cannot be used. Screenshots at 1280 and 375 px are kept under
//! `target/connect-ui-screenshots/`.

use nexus_testkit::flows::{register, setup_with};
use nexus_testkit::oidc::OidcOptions;
use nexus_testkit::Backend;
use serde_json::{json, Value};

/// A provider API whose `/me` accepts `ann` / `right-pass` (Basic), and the
/// application's return page.
async fn services() -> std::net::SocketAddr {
    use axum::http::{HeaderMap, StatusCode};
    use base64::Engine;
    async fn me(headers: HeaderMap) -> StatusCode {
        let good = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("ann:right-pass"));
        if headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(good.as_str()) {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        }
    }
    let app = axum::Router::new()
        .route("/api/me", axum::routing::get(me))
        .route("/done", axum::routing::get(|| async { "back in the application" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn a_user_connects_in_a_browser(backend: Backend) {
    let services = services().await;
    let (app, idp) = setup_with(
        backend,
        "client_secret_post",
        |c| c.allowed_return_domains = Some("localhost".into()),
        OidcOptions::default(),
    )
    .await;
    register(&app, &idp, "idp", true, "client_secret_post").await;
    assert_eq!(app.patch("/v1/providers/idp", &json!({"display_name": "Test Identity"})).await.status, 200);
    let basic = json!({"name": "tickets", "display_name": "Acme Tickets", "auth_type": "basic_auth",
        "api_base_url": format!("http://127.0.0.1:{}/api", services.port()), "user_info_endpoint": "/me",
        "params": {"credential_schema": {"type": "object", "required": ["username", "password"],
            "properties": {"username": {"type": "string", "title": "Username", "description": "The name you sign in with"},
                           "password": {"type": "string", "title": "Password", "format": "password"}}}}});
    assert_eq!(app.post("/v1/providers", &basic).await.status, 201);
    let return_url = format!("http://localhost:{}/done", services.port());
    let session = async |providers: Value| {
        let body = json!({"workspace_id": "acme", "providers": providers, "return_url": return_url});
        let created = app.post("/v1/connect/sessions", &body).await;
        assert_eq!(created.status, 201, "{}", created.text);
        created.json["connect_url"].as_str().unwrap().to_owned()
    };
    // The same provider, its consent URL naming a tenant the user gives.
    let tenant = json!({"name": "idp-tenant", "display_name": "Tenant Identity", "auth_type": "oauth2",
        "client_id": "nexus-client", "client_secret": "nexus-client-secret-1", "scopes": ["openid", "offline_access"],
        "auth_url": format!("{}?tenant={{tenant}}", idp.url("/auth")), "token_url": idp.url("/token"),
        "api_base_url": idp.issuer(), "user_info_endpoint": "/me",
        "params": {"authorization_params": {"prompt": "consent"},
                   "connection_config_schema": {"type": "object", "required": ["tenant"],
                       "properties": {"tenant": {"type": "string", "title": "Tenant", "pattern": "^[a-z0-9-]{1,63}$"}}}}});
    let created = app.post("/v1/providers", &tenant).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let static_url = session(json!(["tickets", "idp"])).await;
    let tenant_url = session(json!(["idp-tenant"])).await;
    let oauth_url = session(json!(["idp"])).await;
    // A connection of another workspace that stopped working, for the reconnection.
    let req = app
        .post(
            "/v1/request-connection",
            &json!({"workspace_id": "globex", "provider_name": "tickets", "return_url": return_url}),
        )
        .await;
    let broken = req.json["connection_id"].as_str().unwrap().to_owned();
    let captured = app
        .send(
            app.client
                .post(app.url("/v1/capture-credential"))
                .header("x-api-key", &app.api_key)
                .header("accept", "application/json")
                .json(
                    &json!({"state": req.json["state"], "credentials": {"username": "ann", "password": "right-pass"}}),
                ),
        )
        .await;
    assert_eq!(captured.status, 200, "{}", captured.text);
    sqlx::query(&format!("UPDATE connections SET status = 'attention_required' WHERE id = '{broken}'"))
        .execute(app.store().pool())
        .await
        .unwrap();
    let reauth_body = json!({"workspace_id": "globex", "providers": ["tickets"], "return_url": return_url});
    let reauth = app.post("/v1/connect/sessions", &reauth_body).await;
    let reauth_url = reauth.json["connect_url"].as_str().unwrap().to_owned();
    let shots = nexus_testkit::python::workspace_dir().join(format!("target/connect-ui-screenshots/{backend:?}"));
    let profile = tempfile::tempdir().unwrap();
    let plan = json!({
        "base": app.url(""),
        "static_url": static_url,
        "oauth_url": oauth_url,
        "reauth_url": reauth_url,
        "tenant_url": tenant_url,
        "forged_url": app.url(&format!("/connect?session=nxc_{}", "A".repeat(43))),
        "return_prefix": return_url,
        "provider_prefix": format!("{}/", idp.issuer().trim_end_matches('/')),
        "screenshots": shots,
        "profile": profile.path(),
    });
    let script =
        std::fs::read_to_string(nexus_testkit::python::workspace_dir().join("testkit/python/connect_browser.py"))
            .unwrap();
    let out =
        tokio::task::spawn_blocking(move || nexus_testkit::python::run_script(&script, plan.to_string().as_bytes()))
            .await
            .unwrap()
            .expect("the browser session runs");
    let report: Value =
        serde_json::from_str(out.trim().lines().last().unwrap_or_default()).unwrap_or_else(|_| panic!("{out}"));

    // The token left the address bar at once.
    assert_eq!(report["address_after_exchange"], app.url("/connect"), "{report}");
    assert!(report["picker_text"].as_str().unwrap().contains("Acme Tickets"));
    // Keyboard only: the provider, the field, the inline error, the provider's refusal, success.
    assert_eq!(report["keyboard_reached_provider"], true, "{report}");
    assert!(report["form_labels"][0].as_str().unwrap().starts_with("Username"), "{report}");
    assert_eq!(report["keyboard_reached_username"], true, "{report}");
    assert_eq!(report["inline_error"], "is required", "{report}");
    assert_eq!(report["focus_after_error"], "f-password", "the field in error takes the focus");
    assert_eq!(report["username_kept"], "ann");
    assert!(!report["live_error"].as_str().unwrap().is_empty(), "{report}");
    assert_eq!(report["keyboard_reached_password"], true, "{report}");
    let back = report["static_returned_to"].as_str().unwrap();
    assert!(back.starts_with(&return_url) && back.contains("status=success"), "{report}");
    // OAuth through the provider's own pages.
    let back = report["oauth_returned_to"].as_str().unwrap();
    assert!(back.contains("status=success"), "{report}");
    // Account details first, then consent: the connection keeps them.
    assert!(report["config_label"].as_str().unwrap().starts_with("Tenant"), "{report}");
    let back = report["tenant_returned_to"].as_str().unwrap().to_owned();
    assert!(back.contains("status=success"), "{report}");
    let id = url::Url::parse(&back).unwrap().query_pairs().find(|(k, _)| k == "connection_id").unwrap().1.into_owned();
    let row = app.store().connection_by_id(&id).await.unwrap().unwrap();
    assert_eq!(row.connection_config.get("tenant"), Some(&json!("acme")));
    // The connection that needed the user again is active again, under its id.
    assert_eq!(report["reauth_offered"], true, "{report}");
    assert!(report["reauth_returned_to"].as_str().unwrap().contains(&format!("connection_id={broken}")), "{report}");
    let row = app.store().connection_by_id(&broken).await.unwrap().unwrap();
    assert_eq!(row.status.as_str(), "active");
    // A forged link: a clear page.
    assert!(report["forged_text"].as_str().unwrap().contains("expired or is not valid"), "{report}");
    let active = app.get("/v1/connections?workspace_id=acme&status=active").await;
    assert_eq!(active.json.as_array().unwrap().len(), 3, "{}", active.text);
    for name in ["picker", "form-error", "expired"] {
        for width in [1280, 375] {
            let file = shots.join(format!("{name}-{width}.png"));
            let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 1000, "{}", file.display());
        }
    }
    // The token reached no log line (the request log records route patterns).
    let token = static_url.rsplit("session=").next().unwrap().to_owned();
    assert!(nexus_testkit::logs::capture() && !nexus_testkit::logs::lines().is_empty(), "logs are captured");
    nexus_testkit::logs::assert_none_logged(&[token]);
    app.stop().await;
}

nexus_testkit::both_backends!(a_user_connects_in_a_browser);
