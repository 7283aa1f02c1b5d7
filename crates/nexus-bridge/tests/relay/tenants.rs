//! SPEC 10's per-tenant providers, end to end (issue "Tenants"): for each
//! row of the table a provider the test kit stands in for
//! (`nexus_testkit::provider_kit`, as each provider's public documentation
//! describes it) is registered with URL templates, a connection is made
//! through its consent and callback, and a request is signed for the right
//! tenant host through the Gateway proxy, `nexus proxy` (the relay) and the
//! Bridge. Then the hostile values of the issue, each refused before
//! anything is sent anywhere.

use super::Proxy;
use nexus_bridge::{Bridge, Relay};
use nexus_testkit::flows::{location, query};
use nexus_testkit::provider_kit::{ProviderKit, CLIENT_ID, CLIENT_SECRET, MAILCHIMP_DC, ORG, REALM_ID};
use nexus_testkit::{both_backends, Backend, TestApp, TestResponse};
use serde_json::{json, Value};

pub(super) const RETURN_URL: &str = "https://app.example.test/done";

/// One row of the table: the provider, the configuration a caller gives,
/// and where a signed `GET {path}` must arrive.
struct Row {
    name: &'static str,
    provider: Value,
    config: Value,
    /// The path under the connection's API base that the callers ask for.
    path: String,
    /// The host and path the provider must receive.
    host: String,
    received: String,
    /// Values the connection must have learned (or been given).
    learned: Value,
}

pub(super) fn oauth2(name: &str, fields: Value, params: Value) -> Value {
    let mut p = json!({"name": name, "auth_type": "oauth2", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                       "params": params});
    for (k, v) in fields.as_object().unwrap() {
        p[k] = v.clone();
    }
    p
}

pub(super) fn string_schema(names: &[&str]) -> Value {
    let props: serde_json::Map<String, Value> =
        names.iter().map(|n| (n.to_string(), json!({"type": "string"}))).collect();
    json!({"type": "object", "required": names, "properties": props})
}

fn zendesk(kit: &ProviderKit) -> Value {
    let p = kit.port();
    oauth2(
        "zendesk",
        json!({"auth_url": format!("http://{{subdomain}}.zendesk.localhost:{p}/oauth/authorizations/new"),
               "token_url": format!("http://{{subdomain}}.zendesk.localhost:{p}/oauth/tokens"),
               "api_base_url": format!("http://{{subdomain}}.zendesk.localhost:{p}/api/v2"),
               "scopes": ["read"]}),
        json!({"allowed_hosts": ["*.zendesk.localhost"], "connection_config_schema": string_schema(&["subdomain"])}),
    )
}

/// Okta's org authorization server by its endpoints (no discovery).
fn okta_manual(kit: &ProviderKit) -> Value {
    let p = kit.port();
    oauth2(
        "okta-manual",
        json!({"auth_url": format!("http://{{domain}}:{p}/oauth2/v1/authorize"),
               "token_url": format!("http://{{domain}}:{p}/oauth2/v1/token"),
               "auth_header": "client_secret_basic"}),
        json!({"allowed_hosts": ["*.okta.localhost"], "connection_config_schema": string_schema(&["domain"])}),
    )
}

fn rows(kit: &ProviderKit) -> Vec<Row> {
    let p = kit.port();
    let zoho_hosts = json!([
        "accounts.zoho.com.localhost",
        "accounts.zoho.eu.localhost",
        "www.zohoapis.com.localhost",
        "www.zohoapis.eu.localhost"
    ]);
    vec![
        // Per-connection values in URLs: a tenant subdomain (two tenants).
        Row {
            name: "zendesk",
            provider: zendesk(kit),
            config: json!({"subdomain": "acme"}),
            path: "/users/me.json".into(),
            host: "acme.zendesk.localhost".into(),
            received: "/api/v2/users/me.json".into(),
            learned: json!({"subdomain": "acme"}),
        },
        Row {
            name: "zendesk",
            provider: zendesk(kit),
            config: json!({"subdomain": "globex"}),
            path: "/tickets.json".into(),
            host: "globex.zendesk.localhost".into(),
            received: "/api/v2/tickets.json".into(),
            learned: json!({"subdomain": "globex"}),
        },
        // A per-tenant OpenID issuer, discovered at the expanded issuer.
        Row {
            name: "okta",
            provider: oauth2(
                "okta",
                json!({"issuer": format!("http://{{domain}}:{p}"), "enable_discovery": true,
                       "api_base_url": format!("http://{{domain}}:{p}/api/v1"), "auth_header": "client_secret_basic",
                       "scopes": ["okta.users.read"]}),
                json!({"allowed_hosts": ["*.okta.localhost"], "connection_config_schema": string_schema(&["domain"])}),
            ),
            config: json!({"domain": "initech.okta.localhost"}),
            path: "/users/me".into(),
            host: "initech.okta.localhost".into(),
            received: "/api/v1/users/me".into(),
            learned: json!({"domain": "initech.okta.localhost"}),
        },
        // A templated URL with a default: Zoho's data centre (none given → `com`).
        Row {
            name: "zoho",
            provider: oauth2(
                "zoho",
                json!({"auth_url": format!("http://accounts.zoho.{{dc}}.localhost:{p}/oauth/v2/auth"),
                       "token_url": format!("http://accounts.zoho.{{dc}}.localhost:{p}/oauth/v2/token"),
                       "api_base_url": "{+api_domain}/crm/v2", "scopes": ["ZohoCRM.users.READ"]}),
                json!({"allowed_hosts": zoho_hosts,
                       "connection_config_schema": {"type": "object", "properties": {
                           "dc": {"type": "string", "enum": ["com", "eu"], "default": "com"}}},
                       "connection_config_from_token": {"api_domain": "api_domain"}}),
            ),
            config: Value::Null,
            path: "/users".into(),
            host: "www.zohoapis.com.localhost".into(),
            received: "/crm/v2/users".into(),
            learned: json!({"dc": "com", "api_domain": format!("http://www.zohoapis.com.localhost:{p}")}),
        },
        // The API base learned from the token answer: Salesforce's instance_url …
        Row {
            name: "salesforce",
            provider: oauth2(
                "salesforce",
                json!({"auth_url": format!("http://login.salesforce.localhost:{p}/services/oauth2/authorize"),
                       "token_url": format!("http://login.salesforce.localhost:{p}/services/oauth2/token"),
                       "api_base_url": "{+instance_url}/services/data/v59.0", "scopes": ["api", "refresh_token"]}),
                json!({"allowed_hosts": ["*.my.salesforce.localhost"],
                       "connection_config_from_token": {"instance_url": "instance_url"}}),
            ),
            config: Value::Null,
            path: "/sobjects".into(),
            host: format!("{ORG}.my.salesforce.localhost"),
            received: "/services/data/v59.0/sobjects".into(),
            learned: json!({"instance_url": format!("http://{ORG}.my.salesforce.localhost:{p}")}),
        },
        // … and Pipedrive's api_domain (HTTP Basic client authentication).
        Row {
            name: "pipedrive",
            provider: oauth2(
                "pipedrive",
                json!({"auth_url": format!("http://oauth.pipedrive.localhost:{p}/oauth/authorize"),
                       "token_url": format!("http://oauth.pipedrive.localhost:{p}/oauth/token"),
                       "auth_header": "client_secret_basic", "api_base_url": "{+api_domain}/api/v1"}),
                json!({"allowed_hosts": ["*.pipedrive.localhost"],
                       "connection_config_from_token": {"api_domain": "api_domain"}}),
            ),
            config: Value::Null,
            path: "/users/me".into(),
            host: format!("{ORG}.pipedrive.localhost"),
            received: "/api/v1/users/me".into(),
            learned: json!({"api_domain": format!("http://{ORG}.pipedrive.localhost:{p}")}),
        },
        // Mailchimp's data centre, only in its metadata endpoint's answer.
        Row {
            name: "mailchimp",
            provider: oauth2(
                "mailchimp",
                json!({"auth_url": format!("http://login.mailchimp.localhost:{p}/oauth2/authorize"),
                       "token_url": format!("http://login.mailchimp.localhost:{p}/oauth2/token"),
                       "user_info_endpoint": format!("http://login.mailchimp.localhost:{p}/oauth2/metadata"),
                       "api_base_url": format!("http://{{dc}}.api.mailchimp.localhost:{p}/3.0")}),
                json!({"allowed_hosts": ["*.api.mailchimp.localhost"], "connection_config_from_userinfo": {"dc": "dc"}}),
            ),
            config: Value::Null,
            path: "/ping".into(),
            host: format!("{MAILCHIMP_DC}.api.mailchimp.localhost"),
            received: "/3.0/ping".into(),
            learned: json!({"dc": MAILCHIMP_DC}),
        },
        // QuickBooks' company id, from the callback query, in the API path.
        Row {
            name: "quickbooks",
            provider: oauth2(
                "quickbooks",
                json!({"auth_url": format!("http://appcenter.intuit.localhost:{p}/connect/oauth2"),
                       "token_url": format!("http://oauth.platform.intuit.localhost:{p}/oauth2/v1/tokens/bearer"),
                       "auth_header": "client_secret_basic", "scopes": ["com.intuit.quickbooks.accounting"],
                       "api_base_url": format!("http://quickbooks.api.intuit.localhost:{p}/v3/company/{{realmId}}")}),
                json!({"connection_config_from_callback": ["realmId"]}),
            ),
            config: Value::Null,
            path: "/companyinfo/1".into(),
            host: "quickbooks.api.intuit.localhost".into(),
            received: format!("/v3/company/{REALM_ID}/companyinfo/1"),
            learned: json!({"realmId": REALM_ID}),
        },
    ]
}

/// A Nexus that may send users back to [`RETURN_URL`].
pub(super) async fn nexus(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |c| c.allowed_return_domains = Some("app.example.test".into())).await
}

pub(super) async fn register(app: &TestApp, provider: &Value) {
    if app.get(&format!("/v1/providers/{}", provider["name"].as_str().unwrap())).await.status == 200 {
        return;
    }
    let created = app.post("/v1/providers", provider).await;
    assert_eq!(created.status, 201, "{}", created.text);
}

pub(super) async fn request(app: &TestApp, name: &str, config: &Value) -> TestResponse {
    let mut body = json!({"user_id": "u1", "provider_name": name, "return_url": RETURN_URL});
    if !config.is_null() {
        body["connection_config"] = config.clone();
    }
    app.post("/v1/request-connection", &body).await
}

/// Consent at the kit, then the callback: the return URL's query.
pub(super) async fn consent_and_callback(
    app: &TestApp,
    kit: &ProviderKit,
    auth_url: &str,
) -> std::collections::HashMap<String, String> {
    let callback = kit.consent(auth_url).await;
    let resp = app.send(app.client.get(callback.as_str())).await;
    assert_eq!(resp.status, 302, "{}", resp.text);
    let back = location(&resp);
    assert!(back.as_str().starts_with(RETURN_URL), "{back}");
    query(&back)
}

/// A signed `GET {path}` for `id` through each caller: what the kit answered.
pub(super) async fn through_every_caller(
    app: &TestApp,
    proxy: &Proxy,
    bridge: &Bridge,
    id: &str,
    path: &str,
) -> Vec<Value> {
    let gateway = app.client.get(app.url(&format!("/v1/proxy/{id}{path}"))).header("x-api-key", &app.api_key);
    let gateway = app.send(gateway).await;
    assert_eq!(gateway.status, 200, "gateway: {}", gateway.text);
    let relayed = reqwest::Client::new().get(proxy.url(id, path)).send().await.unwrap();
    assert_eq!(relayed.status(), 200, "nexus proxy");
    let relayed: Value = relayed.json().await.unwrap();
    let answer = bridge.credentials(id).await.unwrap();
    let url = format!("{}{path}", answer.api_base_url().unwrap());
    let bridged = bridge.send(id, http::Request::get(url).body(Vec::new()).unwrap()).await.unwrap();
    assert_eq!(bridged.status(), 200, "bridge");
    let bridged: Value = bridged.json().await.unwrap();
    vec![gateway.json, relayed, bridged]
}

async fn each_row_connects_and_signs_for_its_tenant_through_every_caller(backend: Backend) {
    let kit = ProviderKit::start().await;
    let app = nexus(backend).await;
    let bridge = Bridge::new(app.base_url.clone(), app.api_key.clone());
    let proxy = Proxy::start(Relay::new(Bridge::new(app.base_url.clone(), app.api_key.clone()))).await;
    for row in rows(&kit) {
        register(&app, &row.provider).await;
        let req = request(&app, row.name, &row.config).await;
        assert_eq!(req.status, 200, "{}: {}", row.name, req.text);
        let q = consent_and_callback(&app, &kit, req.json["auth_url"].as_str().unwrap()).await;
        assert_eq!(q.get("status").map(String::as_str), Some("success"), "{}: {q:?}", row.name);
        let id = &q["connection_id"];

        // The token answer: the configuration, and the API base expanded for it.
        let token = app.get(&format!("/v1/token/{id}")).await;
        assert_eq!(token.status, 200, "{}", token.text);
        for (k, v) in row.learned.as_object().unwrap() {
            assert_eq!(&token.json["connection_config"][k], v, "{}: {}", row.name, token.text);
        }
        let base = token.json["api_base_url"].as_str().unwrap();
        assert!(base.starts_with(&format!("http://{}:{}/", row.host, kit.port())), "{}: {base}", row.name);
        let listed = app.get(&format!("/v1/connections?provider={}", row.name)).await;
        let shown =
            listed.json.as_array().map(|a| a.iter().any(|c| c["connection_config"] == token.json["connection_config"]));
        assert_eq!(shown, Some(true), "{}: {}", row.name, listed.text);

        for (caller, answer) in ["gateway", "nexus proxy", "bridge"]
            .iter()
            .zip(through_every_caller(&app, &proxy, &bridge, id, &row.path).await)
        {
            assert_eq!(answer["host"], row.host.as_str(), "{} through the {caller}: {answer}", row.name);
            assert_eq!(answer["path"], row.received.as_str(), "{} through the {caller}: {answer}", row.name);
        }
    }
    // A refresh goes to the tenant's own token endpoint; a revocation to the
    // revocation endpoint the tenant's discovery document names.
    let acme = app
        .get("/v1/connections?provider=zendesk")
        .await
        .json
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["connection_config"]["subdomain"] == "acme")
        .unwrap()["connection_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let refreshed = app.post(&format!("/v1/refresh/{acme}"), &json!({})).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);
    let last = kit.seen().into_iter().rev().find(|s| s.method == "POST").unwrap();
    assert_eq!((last.host.as_str(), last.target.as_str()), ("acme.zendesk.localhost", "/oauth/tokens"));
    assert!(last.body.contains("grant_type=refresh_token"), "{}", last.body);
    let okta = app.get("/v1/connections?provider=okta").await.json[0]["connection_id"].as_str().unwrap().to_owned();
    let revoked = app.delete(&format!("/v1/connections/{okta}")).await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    let last = kit.seen().into_iter().last().unwrap();
    assert_eq!((last.host.as_str(), last.target.as_str()), ("initech.okta.localhost", "/oauth2/v1/revoke"));

    // Every request the kit saw went to a host of the table, none elsewhere.
    for seen in kit.seen() {
        assert!(!seen.host.starts_with("evil"), "{seen:?}");
    }
}

both_backends!(each_row_connects_and_signs_for_its_tenant_through_every_caller);

/// The hostile values of the issue: each is a `400` at request-connection
/// (or registration), or fails the connection with `provider_misconfigured`,
/// and nothing is sent anywhere: the kit, which every `.localhost` name
/// reaches, sees no request for it.
async fn hostile_values_are_refused_before_anything_is_sent(backend: Backend) {
    let kit = ProviderKit::start().await;
    let app = nexus(backend).await;
    register(&app, &zendesk(&kit)).await;
    register(&app, &okta_manual(&kit)).await;
    let okta_discovered = oauth2(
        "okta",
        json!({"issuer": format!("http://{{domain}}:{}", kit.port()), "enable_discovery": true}),
        json!({"allowed_hosts": ["*.okta.localhost"], "connection_config_schema": string_schema(&["domain"])}),
    );
    register(&app, &okta_discovered).await;

    let cases = [
        ("zendesk", json!({"subdomain": "evil.example/x"})),
        ("zendesk", json!({"subdomain": "a@evil.example"})),
        ("zendesk", json!({"subdomain": ".."})),
        ("zendesk", json!({"subdomain": "x%2F..%2Fy"})),
        ("zendesk", json!({"subdomain": "x?y=1#z"})),
        ("zendesk", json!({"subdomain": "evil.localhost:1/"})),
        ("zendesk", json!({})),
        ("zendesk", json!({"subdomain": 7})),
        ("okta-manual", json!({"domain": "evil.example"})),
        ("okta-manual", json!({"domain": "evil.localhost"})),
        ("okta-manual", json!({"domain": "acme.okta.localhost.evil.example"})),
        ("okta", json!({"domain": "evil.localhost"})),
        // A tenant whose discovery document names a token endpoint and keys elsewhere.
        ("okta", json!({"domain": "rogue.okta.localhost"})),
    ];
    for (provider, config) in cases {
        let before = (kit.seen_count(), app.get("/v1/connections").await.json.as_array().map(Vec::len));
        let refused = request(&app, provider, &config).await;
        assert_eq!(refused.status, 400, "{provider} {config}: {}", refused.text);
        assert!(!refused.text.contains(CLIENT_SECRET), "{}", refused.text);
        let after = (kit.seen_count(), app.get("/v1/connections").await.json.as_array().map(Vec::len));
        if config["domain"] == "rogue.okta.localhost" {
            // Only the tenant's own document was read; nothing went where it points.
            assert_eq!(refused.code(), "discovery_failed", "{}", refused.text);
            assert_eq!(after.1, before.1, "nothing stored");
            assert!(kit.seen().iter().all(|s| s.host != "evil.localhost"), "the keys were fetched from elsewhere");
            continue;
        }
        assert!(refused.text.contains("connection_config"), "{provider} {config}: {}", refused.text);
        assert_eq!(before, after, "{provider} {config}: something was sent or stored");
    }

    // A path under a fixed API base needs no allowed_hosts, even with a variable.
    let company = json!({"name": "qbo-info", "auth_type": "oauth2", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
        "auth_url": kit.url("appcenter.intuit", "/connect/oauth2"), "token_url": kit.url("oauth.platform.intuit", "/t"),
        "api_base_url": kit.url("quickbooks.api.intuit", "/v3"), "user_info_endpoint": "/company/{realmId}/companyinfo/{realmId}",
        "params": {"connection_config_from_callback": ["realmId"]}});
    let created = app.post("/v1/providers", &company).await;
    assert_eq!(created.status, 201, "{}", created.text);

    // A host variable without allowed_hosts: refused at registration.
    let mut unguarded = zendesk(&kit);
    unguarded["name"] = json!("unguarded");
    unguarded["params"].as_object_mut().unwrap().remove("allowed_hosts");
    let refused = app.post("/v1/providers", &unguarded).await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert!(refused.text.contains("allowed_hosts"), "{}", refused.text);
    assert_eq!(app.get("/v1/providers/unguarded").await.status, 404);

    // A token answer whose instance_url points outside allowed_hosts:
    // the connection fails, and nothing is sent there.
    let salesforce = rows(&kit).into_iter().find(|r| r.name == "salesforce").unwrap();
    register(&app, &salesforce.provider).await;
    kit.answer_instance_url(Some(kit.url("evil", "")));
    let req = request(&app, "salesforce", &Value::Null).await;
    assert_eq!(req.status, 200, "{}", req.text);
    let q = consent_and_callback(&app, &kit, req.json["auth_url"].as_str().unwrap()).await;
    assert_eq!(q.get("status").map(String::as_str), Some("error"), "{q:?}");
    assert_eq!(q.get("error").map(String::as_str), Some("provider_misconfigured"), "{q:?}");
    let token = app.get(&format!("/v1/token/{}", q["connection_id"])).await;
    assert!(token.status >= 400, "the failed connection has no token: {}", token.text);
    for seen in kit.seen() {
        assert!(seen.host != "evil.localhost", "a request reached the host the provider named: {seen:?}");
    }
}

both_backends!(hostile_values_are_refused_before_anything_is_sent);
