//! Each quirk family the provider catalog uses (SPEC 12), end to end through
//! a catalog template: the template registered with only its hosts moved to
//! the test kit (`https://x.zendesk.com/…` → `http://x.zendesk.localhost:{port}/…`,
//! `*.zendesk.com` → `*.zendesk.localhost`), so every path, parameter,
//! header, separator and learned value is the catalog's own. Each makes a
//! connection (consent and callback, a capture, or a grant) and signs a
//! request through the Gateway proxy, `nexus proxy` and the Bridge.

use super::quirks::{capture, signs_everywhere};
use super::tenants::{consent_and_callback, nexus, request};
use super::Proxy;
use nexus_bridge::{Bridge, Relay};
use nexus_testkit::provider_kit::*;
use nexus_testkit::{both_backends, Backend, TestApp};
use serde_json::{json, Map, Value};

/// `https://{sub}.zendesk.com/api` → `http://{sub}.zendesk.localhost:{port}/api`:
/// the last label of a fixed top-level domain becomes `localhost`.
fn rehost_url(raw: &str, port: u16) -> String {
    let Some(rest) = raw.strip_prefix("https://") else { return raw.to_owned() };
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, String::new()));
    format!("http://{}:{port}{path}", local_host(host))
}

fn local_host(host: &str) -> String {
    match host.rsplit_once('.') {
        Some((stem, tld)) if !tld.contains('{') => format!("{stem}.localhost"),
        _ => format!("{host}.localhost"),
    }
}

/// The template's URL fields and host globs, moved to the kit.
fn rehosted(entry: &Value, port: u16) -> Map<String, Value> {
    let mut over = Map::new();
    let provider = entry["provider"].as_object().unwrap();
    for field in ["auth_url", "token_url", "refresh_url", "revocation_url", "api_base_url", "user_info_endpoint"] {
        if let Some(raw) = provider.get(field).and_then(Value::as_str) {
            if raw.starts_with("https://") {
                over.insert(field.into(), json!(rehost_url(raw, port)));
            }
        }
    }
    if let Some(hosts) = entry.pointer("/provider/params/allowed_hosts").and_then(Value::as_array) {
        let local: Vec<String> = hosts.iter().filter_map(Value::as_str).map(local_host).collect();
        over.insert("params".into(), json!({"allowed_hosts": local}));
    }
    over
}

/// Registers `template` moved to the kit, with `extra` over it (and the
/// kit's client for OAuth templates): the catalog entry.
async fn from_catalog(app: &TestApp, kit: &ProviderKit, template: &str, extra: Value) -> Value {
    let entry = app.get(&format!("/v1/catalog/{template}")).await;
    assert_eq!(entry.status, 200, "{template}: {}", entry.text);
    let mut body = rehosted(&entry.json, kit.port());
    body.insert("template".into(), json!(template));
    if entry.json["provider"]["auth_type"] == "oauth2" {
        body.insert("client_id".into(), json!(CLIENT_ID));
        body.insert("client_secret".into(), json!(CLIENT_SECRET));
    }
    let mut body = Value::Object(body);
    nexus_core::merge::merge_patch(&mut body, &extra);
    let created = app.post("/v1/providers", &body).await;
    assert_eq!(created.status, 201, "{template}: {}", created.text);
    assert_eq!(created.json["template"], template);
    entry.json
}

async fn consent(app: &TestApp, kit: &ProviderKit, name: &str, config: Value) -> String {
    let req = request(app, name, &config).await;
    assert_eq!(req.status, 200, "{name}: {}", req.text);
    let q = consent_and_callback(app, kit, req.json["auth_url"].as_str().unwrap()).await;
    assert_eq!(q.get("status").map(String::as_str), Some("success"), "{name}: {q:?}");
    q["connection_id"].clone()
}

async fn each_quirk_family_connects_through_a_catalog_template(backend: Backend) {
    let kit = ProviderKit::start().await;
    let app = nexus(backend).await;
    let bridge = Bridge::new(app.base_url.clone(), app.api_key.clone());
    let proxy = Proxy::start(Relay::new(Bridge::new(app.base_url.clone(), app.api_key.clone()))).await;
    let signs = |id: String, path: String, host: &'static str, received: String| {
        let (app, proxy, bridge) = (&app, &proxy, &bridge);
        async move { signs_everywhere(app, proxy, bridge, &id, &path, host, &received).await }
    };

    // A tenant's own host (a templated subdomain, guarded by allowed_hosts).
    from_catalog(&app, &kit, "zendesk", json!({})).await;
    let id = consent(&app, &kit, "zendesk", json!({"subdomain": "acme"})).await;
    signs(id, "/users/me.json".into(), "acme.zendesk.localhost", "/api/v2/users/me.json".into()).await;

    // The API host from the token answer (instance_url), HTTP Basic client authentication too.
    from_catalog(&app, &kit, "salesforce", json!({})).await;
    let id = consent(&app, &kit, "salesforce", Value::Null).await;
    let token = app.get(&format!("/v1/token/{id}")).await;
    assert!(token.json["api_base_url"].as_str().unwrap().contains("acme.my.salesforce.localhost"), "{}", token.text);
    signs(id, "/sobjects".into(), "acme.my.salesforce.localhost", "/services/data/v62.0/sobjects".into()).await;
    from_catalog(&app, &kit, "pipedrive", json!({})).await;
    let id = consent(&app, &kit, "pipedrive", Value::Null).await;
    signs(id, "/users/me".into(), "acme.pipedrive.localhost", "/api/v1/users/me".into()).await;

    // The data centre from the user-info answer, asked with the new token.
    from_catalog(&app, &kit, "mailchimp", json!({})).await;
    let id = consent(&app, &kit, "mailchimp", Value::Null).await;
    let host = "us19.api.mailchimp.localhost";
    assert_eq!(MAILCHIMP_DC, "us19");
    signs(id, "/ping".into(), host, "/3.0/ping".into()).await;

    // A value from the callback's query (QuickBooks' realmId) in the API path.
    from_catalog(&app, &kit, "quickbooks", json!({})).await;
    let id = consent(&app, &kit, "quickbooks", Value::Null).await;
    let path = format!("/companyinfo/{REALM_ID}");
    signs(id, path.clone(), "quickbooks.api.intuit.localhost", format!("/v3/company/{REALM_ID}{path}")).await;

    // A JSON token request, HTTP Basic, and a version header on every call.
    from_catalog(&app, &kit, "notion", json!({})).await;
    let id = consent(&app, &kit, "notion", Value::Null).await;
    for answer in signs(id, "/users/me".into(), "api.notion.localhost", "/v1/users/me".into()).await {
        assert_eq!(answer["ok"], true, "{answer}");
    }

    // Refreshes at their own URL.
    from_catalog(&app, &kit, "figma", json!({})).await;
    let id = consent(&app, &kit, "figma", Value::Null).await;
    let refreshed = app.post(&format!("/v1/refresh/{id}"), &json!({})).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);
    assert!(kit.seen().iter().any(|s| s.host == "api.figma.localhost" && s.target == "/v1/oauth/refresh"));
    signs(id, "/me".into(), "api.figma.localhost", "/v1/me".into()).await;

    // A nested user token beside the bot's.
    from_catalog(&app, &kit, "slack-user", json!({})).await;
    let id = consent(&app, &kit, "slack-user", Value::Null).await;
    for answer in signs(id, "/auth.test".into(), "slack.localhost", "/api/auth.test".into()).await {
        assert_eq!(answer["kind"], "user", "the user token, not the bot's: {answer}");
    }

    // The token in its own header with no prefix, and a versioned API path from a default.
    let shopify = from_catalog(&app, &kit, "shopify", json!({})).await;
    let version = shopify["provider"]["params"]["connection_config_schema"]["properties"]["api_version"]["default"]
        .as_str()
        .unwrap()
        .to_owned();
    let id = consent(&app, &kit, "shopify", json!({"shop": "acme"})).await;
    signs(id, "/shop.json".into(), "acme.myshopify.localhost", format!("/admin/api/{version}/shop.json")).await;

    // Two secret headers (the site's host given for the kit).
    let api = kit.url("api.datadoghq", "");
    from_catalog(&app, &kit, "datadog", json!({"api_base_url": api, "params": {"allowed_hosts": null}})).await;
    let keys = json!({"api_key": DD_API_KEY, "app_key": DD_APP_KEY});
    let id = capture(&app, json!({"name": "datadog"}), json!({}), keys).await;
    signs(id, "/api/v1/validate".into(), "api.datadoghq.localhost", "/api/v1/validate".into()).await;

    // Two secret query parameters.
    from_catalog(&app, &kit, "trello", json!({})).await;
    let id = capture(&app, json!({"name": "trello"}), json!({}), json!({"api_key": TRELLO_KEY, "token": TRELLO_TOKEN}))
        .await;
    signs(id, "/members/me".into(), "api.trello.localhost", "/1/members/me".into()).await;

    // The API key as user name and an empty password.
    let greenhouse = from_catalog(&app, &kit, "greenhouse", json!({})).await;
    let user = greenhouse["provider"]["params"]["username_field"].as_str().unwrap_or("username").to_owned();
    let id = capture(&app, json!({"name": "greenhouse"}), json!({}), json!({ user: GREENHOUSE_KEY })).await;
    signs(id, "/candidates".into(), "harvest.greenhouse.localhost", "/v1/candidates".into()).await;
}

both_backends!(each_quirk_family_connects_through_a_catalog_template);

/// The JWT bearer grant through the Google service-account template: the
/// assertion PyJWT verifies carries the template's scope and audience.
async fn a_service_account_connects_through_its_catalog_template(backend: Backend) {
    let kit = ProviderKit::start().await;
    let app = nexus(backend).await;
    let entry = from_catalog(&app, &kit, "google-service-account", json!({})).await;
    let scope = entry["provider"]["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect::<Vec<_>>()
        .join(" ");
    let (pem, public_pem, _) = nexus_testkit::python::rsa_key().expect("a key pair");
    app.remember_secret(&pem);
    let email = "agent@acme-project.iam.gserviceaccount.com";
    kit.trust_service_account(email, &public_pem, "ann@acme.example", &scope);
    let token_url = kit.url("oauth2.googleapis", "/token");
    let key = json!({"client_email": email, "private_key": pem, "token_uri": token_url, "subject": "ann@acme.example"});
    // Only the private key is secret (remembered above); the e-mail and token URI are not.
    let req = request(&app, "google-service-account", &Value::Null).await;
    assert_eq!(req.status, 200, "{}", req.text);
    let captured = app
        .send(
            app.client
                .post(app.url("/v1/capture-credential"))
                .header("x-api-key", &app.api_key)
                .header("accept", "application/json")
                .json(&json!({"state": req.json["state"], "credentials": key})),
        )
        .await;
    assert_eq!(captured.status, 200, "{}", captured.text);
    let id = captured.json["connection_id"].as_str().unwrap().to_owned();
    let claims = kit.verified_assertions();
    assert_eq!(
        (claims[0]["aud"].as_str(), claims[0]["scope"].as_str()),
        (Some(token_url.as_str()), Some(scope.as_str()))
    );
    let bridge = Bridge::new(app.base_url.clone(), app.api_key.clone());
    let proxy = Proxy::start(Relay::new(Bridge::new(app.base_url.clone(), app.api_key.clone()))).await;
    signs_everywhere(&app, &proxy, &bridge, &id, "/drive/v3/about", "www.googleapis.localhost", "/drive/v3/about")
        .await;
}

both_backends!(a_service_account_connects_through_its_catalog_template);
