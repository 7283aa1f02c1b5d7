//! The Connect UI's first pages (SPEC 13), over HTTP: the picker of a
//! Connect session (its providers only, catalog logos served by Nexus or
//! initials, search, everything escaped, strict headers) and starting a
//! connection from it; refused from a foreign page, without the cookie and
//! after the session ends.

use nexus_testkit::upstream::schema;
use nexus_testkit::{both_backends, Backend, TestApp};
use serde_json::json;
use std::time::Duration;

async fn session(app: &TestApp, providers: &[&str]) -> (String, String) {
    let created = app
        .post(
            "/v1/connect/sessions",
            &json!({"workspace_id": "acme", "providers": providers, "return_url": "https://app.example.test/done"}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let url = created.json["connect_url"].as_str().unwrap().to_owned();
    let first = app.send(app.client.get(&url)).await;
    assert_eq!(first.status, 200);
    let cookie = first.headers["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    (cookie, created.json["token"].as_str().unwrap().to_owned())
}

async fn the_picker_and_starting_a_connection(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.allowed_return_domains = Some("app.example.test".into())).await;
    let github = app
        .post("/v1/providers", &json!({"template": "github", "client_id": "Iv1.test", "client_secret": "s3cret-gh"}))
        .await;
    assert_eq!(github.status, 201, "{}", github.text);
    for (name, display) in
        [("svc", "Acme Tickets"), ("hidden", "Hidden Service"), ("evil", "<script>alert(1)</script>")]
    {
        let provider = json!({"name": name, "display_name": display, "auth_type": "api_key",
                              "params": {"credential_schema": schema(&["api_key"])}});
        assert_eq!(app.post("/v1/providers", &provider).await.status, 201);
    }
    let (cookie, token) = session(&app, &["github", "svc", "evil"]).await;
    let get = |path: &str| app.client.get(app.url(path)).header("cookie", &cookie);

    let picker = app.send(get("/connect")).await;
    assert_eq!(picker.status, 200, "{}", picker.text);
    let csp = picker.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(picker.text.contains("GitHub") && picker.text.contains("Acme Tickets"), "{}", picker.text);
    assert!(picker.text.contains("src=\"/catalog/github/logo.svg\""), "the template's logo, served by Nexus");
    assert!(picker.text.contains(">AT<"), "initials for a provider without a logo");
    assert!(!picker.text.contains("Hidden Service"), "only the session's providers");
    assert!(!picker.text.contains("<script>alert(1)"), "escaped");
    let sources: Vec<&str> = picker.text.split("src=\"").skip(1).chain(picker.text.split("href=\"").skip(1)).collect();
    assert!(!sources.is_empty() && sources.iter().all(|s| s.starts_with('/')), "no third-party asset: {sources:?}");
    assert!(!picker.text.contains(&token));
    assert!(
        picker.text.contains("<label for=\"q\">") && picker.text.contains("lang=\"en\""),
        "labelled, with a language"
    );
    let searched = app.send(get("/connect?q=git")).await;
    assert!(searched.text.contains("GitHub") && !searched.text.contains("Acme Tickets"));
    let none = app.send(get("/connect?q=%3Cb%3Enothing")).await;
    assert!(none.text.contains("No service matches") && !none.text.contains("<b>nothing"));
    let css = app.send(app.client.get(app.url("/connect/assets/connect.css"))).await;
    assert_eq!((css.status, css.content_type()), (200, "text/css; charset=utf-8"));

    let base = app.url("").trim_end_matches('/').to_owned();
    let start = |provider: &str, origin: &str| {
        app.client
            .post(app.url("/connect/start"))
            .header("cookie", &cookie)
            .header("origin", origin)
            .form(&[("provider", provider)])
    };
    // A static provider: on to the credential form of a new pending connection.
    let to_form = app.send(start("svc", &base)).await;
    assert_eq!(to_form.status, 303, "{}", to_form.text);
    let location = to_form.headers["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&app.url("/auth/capture?state=")), "{location}");
    // OAuth: on to the provider's consent page.
    let to_github = app.send(start("github", &base)).await;
    assert_eq!(to_github.status, 303, "{}", to_github.text);
    let location = to_github.headers["location"].to_str().unwrap();
    assert!(location.starts_with("https://github.com/login/oauth/authorize?"), "{location}");
    assert!(location.contains("client_id=Iv1.test"));
    let pending = app.get("/v1/connections?workspace_id=acme").await;
    assert_eq!(pending.json.as_array().unwrap().len(), 2, "{}", pending.text);

    // Refused: another site's form, no cookie, a provider outside the session.
    let foreign = app.send(start("svc", "https://evil.example")).await;
    assert_eq!(foreign.status, 403);
    let cookieless =
        app.send(app.client.post(app.url("/connect/start")).header("origin", &base).form(&[("provider", "svc")])).await;
    assert_eq!(cookieless.status, 400);
    let outside = app.send(start("hidden", &base)).await;
    assert_eq!(outside.status, 400, "{}", outside.text);
    assert!(outside.text.contains("Try again") && outside.text.contains("href=\"/connect\""), "{}", outside.text);
    assert!(outside.text.contains("role=\"alert\""));
    assert_eq!(app.get("/v1/connections?workspace_id=acme").await.json.as_array().unwrap().len(), 2, "nothing started");

    // After the session: a clear page, nothing started.
    app.state.clock.advance(Duration::from_secs(31 * 60));
    let late = app.send(get("/connect")).await;
    assert_eq!(late.status, 400);
    assert!(late.text.contains("expired or is not valid"));
    let late_start = app.send(start("svc", &base)).await;
    assert_eq!(late_start.status, 400);
    assert_eq!(app.get("/v1/connections?workspace_id=acme").await.json.as_array().unwrap().len(), 2);
    app.stop().await;
}

/// A provider whose URLs need account details asks for them first (and
/// says inline what is wrong); a connection that needs the user again is
/// offered for re-authorization in place, keeping its id.
async fn account_details_and_reconnecting_in_place(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.allowed_return_domains = Some("app.example.test".into())).await;
    let zendesk = app
        .post("/v1/providers", &json!({"template": "zendesk", "client_id": "zd-client", "client_secret": "zd-secret"}))
        .await;
    assert_eq!(zendesk.status, 201, "{}", zendesk.text);
    let provider = json!({"name": "svc", "display_name": "Acme Tickets", "auth_type": "api_key",
                          "params": {"credential_schema": schema(&["api_key"])}});
    assert_eq!(app.post("/v1/providers", &provider).await.status, 201);
    let (cookie, _) = session(&app, &["zendesk", "svc"]).await;
    let base = app.url("").trim_end_matches('/').to_owned();
    let post = |form: &[(&str, &str)]| {
        app.client.post(app.url("/connect/start")).header("cookie", &cookie).header("origin", &base).form(form)
    };

    let asks = app.send(post(&[("provider", "zendesk")])).await;
    assert_eq!(asks.status, 200, "{}", asks.text);
    assert!(
        asks.text.contains("Zendesk subdomain") && asks.text.contains("name=\"config.subdomain\""),
        "{}",
        asks.text
    );
    assert!(asks.text.contains("aria-required=\"true\""));
    let wrong = app.send(post(&[("provider", "zendesk"), ("config.subdomain", "evil.example/x")])).await;
    assert_eq!(wrong.status, 200, "{}", wrong.text);
    assert!(
        wrong.text.contains("id=\"e-subdomain\"") && wrong.text.contains("aria-invalid=\"true\""),
        "{}",
        wrong.text
    );
    assert!(wrong.text.contains("value=\"evil.example/x\""), "what was typed is kept (escaped)");
    let ok = app.send(post(&[("provider", "zendesk"), ("config.subdomain", "acme")])).await;
    assert_eq!(ok.status, 303, "{}", ok.text);
    let location = ok.headers["location"].to_str().unwrap();
    assert!(location.starts_with("https://acme.zendesk.com/oauth/authorizations/new?"), "{location}");

    // A connection that stopped working: offered first, reconnected under its id.
    let req = app
        .post(
            "/v1/request-connection",
            &json!({"workspace_id": "acme", "provider_name": "svc", "return_url": "https://app.example.test/done"}),
        )
        .await;
    let id = req.json["connection_id"].as_str().unwrap().to_owned();
    sqlx::query(&format!("UPDATE connections SET status = 'attention_required' WHERE id = '{id}'"))
        .execute(app.store().pool())
        .await
        .unwrap();
    let picker = app.send(app.client.get(app.url("/connect")).header("cookie", &cookie)).await;
    assert!(
        picker.text.contains("Needs your attention") && picker.text.contains("Reconnect Acme Tickets"),
        "{}",
        picker.text
    );
    assert!(picker.text.contains(&format!("value=\"{id}\"")));
    let again = app.send(post(&[("provider", "svc"), ("connection_id", &id)])).await;
    assert_eq!(again.status, 303, "{}", again.text);
    assert!(again.headers["location"].to_str().unwrap().contains("/auth/capture?state="));
    let row = app.store().connection_by_id(&id).await.unwrap().unwrap();
    assert_eq!(row.status.as_str(), "pending", "the same connection, its handshake restarted");
    // A Zendesk connection that needs the user again: no details asked twice, the same id.
    let zd = app
        .post(
            "/v1/request-connection",
            &json!({"workspace_id": "acme", "provider_name": "zendesk", "return_url": "https://app.example.test/done",
                                               "connection_config": {"subdomain": "acme"}}),
        )
        .await;
    assert_eq!(zd.status, 200, "{}", zd.text);
    let zd_id = zd.json["connection_id"].as_str().unwrap().to_owned();
    sqlx::query(&format!("UPDATE connections SET status = 'attention_required', connection_config = '{{\"subdomain\":\"acme\"}}' WHERE id = '{zd_id}'"))
        .execute(app.store().pool())
        .await
        .unwrap();
    let before = app.get("/v1/connections?workspace_id=acme").await.json.as_array().unwrap().len();
    let reconnect = app.send(post(&[("provider", "zendesk"), ("connection_id", &zd_id)])).await;
    assert_eq!(reconnect.status, 303, "{}", reconnect.text);
    assert!(reconnect.headers["location"].to_str().unwrap().starts_with("https://acme.zendesk.com/"));
    assert_eq!(
        app.get("/v1/connections?workspace_id=acme").await.json.as_array().unwrap().len(),
        before,
        "no new connection"
    );
    app.stop().await;
}

/// `CONNECT_FRAME_ANCESTORS` lets the named origins embed the pages (and no one else).
async fn embedding_origins_are_configured(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.connect_frame_ancestors = Some("https://app.example.test, https://admin.example.test".into());
    })
    .await;
    let provider =
        json!({"name": "svc", "auth_type": "api_key", "params": {"credential_schema": schema(&["api_key"])}});
    assert_eq!(app.post("/v1/providers", &provider).await.status, 201);
    let (cookie, _) = session(&app, &["svc"]).await;
    let page = app.send(app.client.get(app.url("/connect")).header("cookie", &cookie)).await;
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors https://app.example.test https://admin.example.test"), "{csp}");
    assert!(!csp.contains("frame-ancestors 'none'"));
    let api = app.get("/v1/providers").await;
    assert!(api
        .headers
        .get("content-security-policy")
        .is_none_or(|v| !v.to_str().unwrap().contains("app.example.test")));
    app.stop().await;
}

both_backends!(
    the_picker_and_starting_a_connection,
    account_details_and_reconnecting_in_place,
    embedding_origins_are_configured
);

/// Secrets named like secrets (`app_key`) are masked and never shown again;
/// a form sent from a sibling site is refused; the form's own error pages
/// carry the strict headers too.
async fn secrets_stay_masked_and_forms_come_from_nexus(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.allowed_return_domains = Some("app.example.test".into())).await;
    let provider = json!({"name": "dd", "display_name": "Datadog-like", "auth_type": "api_key",
        "params": {"credential_schema": {"type": "object", "required": ["api_key", "app_key", "site"],
            "properties": {"api_key": {"type": "string"}, "app_key": {"type": "string"}, "site": {"type": "string", "pattern": "^[a-z.]+$"}}}}});
    assert_eq!(app.post("/v1/providers", &provider).await.status, 201);
    let req = app
        .post(
            "/v1/request-connection",
            &json!({"workspace_id": "acme", "provider_name": "dd", "return_url": "https://app.example.test/done"}),
        )
        .await;
    let state = req.json["state"].as_str().unwrap();
    let page = app.send(app.client.get(app.url("/auth/capture")).query(&[("state", state)])).await;
    assert!(page.text.contains("name=\"app_key\" type=\"password\""), "{}", page.text);
    let sent = [("state", state), ("api_key", "k-visible-1"), ("app_key", "app-secret-2"), ("site", "BAD SITE")];
    let again = app.send(app.client.post(app.url("/auth/capture")).form(&sent)).await;
    assert_eq!(again.status, 400, "{}", again.text);
    assert!(!again.text.contains("k-visible-1") && !again.text.contains("app-secret-2"), "secrets never echoed");
    assert!(again.text.contains("value=\"BAD SITE\"") && again.text.contains("autofocus"), "{}", again.text);
    assert!(again.text.contains("<title>Error: connect Datadog-like</title>"));
    // The form's error pages have the strict headers as well.
    let forged = app.send(app.client.get(app.url("/auth/capture?state=forged"))).await;
    assert_eq!(forged.status, 400);
    assert!(forged.headers["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
    let odd = app.send(app.client.post(app.url("/auth/capture")).header("content-type", "text/plain").body("x")).await;
    assert_eq!(odd.status, 400);
    // A sibling site posting with the cookie is refused.
    assert_eq!(
        app.post(
            "/v1/providers",
            &json!({"name": "svc", "auth_type": "api_key", "params": {"credential_schema": schema(&["api_key"])}})
        )
        .await
        .status,
        201
    );
    let (cookie, _) = session(&app, &["svc"]).await;
    let sibling = app
        .send(
            app.client
                .post(app.url("/connect/start"))
                .header("cookie", &cookie)
                .header("origin", "null")
                .header("sec-fetch-site", "same-site")
                .form(&[("provider", "svc")]),
        )
        .await;
    assert_eq!(sibling.status, 403);
    let ours = app
        .send(
            app.client
                .post(app.url("/connect/start"))
                .header("cookie", &cookie)
                .header("origin", "null")
                .header("sec-fetch-site", "same-origin")
                .form(&[("provider", "svc")]),
        )
        .await;
    assert_eq!(ours.status, 303, "{}", ours.text);
    app.stop().await;
}

both_backends!(secrets_stay_masked_and_forms_come_from_nexus);
