//! SPEC 10's token-endpoint and strategy quirks, end to end (issue "Token-
//! endpoint and strategy quirks"): for each row a provider the test kit
//! stands in for as its documentation describes it (Notion's JSON token
//! request and version header, Figma's refresh URL, Slack's nested user
//! token, Shopify's bare token header, Datadog's two secret headers,
//! Trello's two secret query parameters, Greenhouse's empty password,
//! Pipedrive's revocation endpoint), a connection made, and a request
//! signed through the Gateway proxy, `nexus proxy` and the Bridge. Then the
//! hostile header settings, refused at registration, and a connection value
//! that tries to add a header line.

use super::tenants::{
    consent_and_callback, nexus, oauth2, register, request, string_schema, through_every_caller, RETURN_URL,
};
use super::Proxy;
use nexus_bridge::{Bridge, Relay};
use nexus_testkit::provider_kit::*;
use nexus_testkit::upstream::{capture_connection, schema};
use nexus_testkit::{both_backends, Backend, TestApp};
use serde_json::{json, Value};

/// Makes an OAuth2 connection to the registered `provider`: its id.
async fn connect(app: &TestApp, kit: &ProviderKit, provider: &Value, config: &Value) -> String {
    register(app, provider).await;
    let name = provider["name"].as_str().unwrap();
    let req = request(app, name, config).await;
    assert_eq!(req.status, 200, "{name}: {}", req.text);
    let q = consent_and_callback(app, kit, req.json["auth_url"].as_str().unwrap()).await;
    assert_eq!(q.get("status").map(String::as_str), Some("success"), "{name}: {q:?}");
    q["connection_id"].clone()
}

/// Registers a static provider and captures `credentials` with `config`.
pub(super) async fn capture(app: &TestApp, provider: Value, config: Value, credentials: Value) -> String {
    register(app, &provider).await;
    capture_connection(app, provider["name"].as_str().unwrap(), config, credentials).await
}

/// Every caller's answer is the kit's 200 for `host` and `received`.
pub(super) async fn signs_everywhere(
    app: &TestApp,
    proxy: &Proxy,
    bridge: &Bridge,
    id: &str,
    path: &str,
    host: &str,
    received: &str,
) -> Vec<Value> {
    let answers = through_every_caller(app, proxy, bridge, id, path).await;
    for (caller, answer) in ["gateway", "nexus proxy", "bridge"].iter().zip(&answers) {
        assert_eq!(
            (answer["host"].as_str(), answer["path"].as_str()),
            (Some(host), Some(received)),
            "{caller}: {answer}"
        );
    }
    answers
}

fn form_of(body: &str) -> std::collections::HashMap<String, String> {
    url::form_urlencoded::parse(body.as_bytes()).into_owned().collect()
}

async fn each_quirk_connects_and_signs_through_every_caller(backend: Backend) {
    let kit = ProviderKit::start().await;
    let p = kit.port();
    let app = nexus(backend).await;
    let bridge = Bridge::new(app.base_url.clone(), app.api_key.clone());
    let proxy = Proxy::start(Relay::new(Bridge::new(app.base_url.clone(), app.api_key.clone()))).await;

    // Notion: a JSON token request, and a version header on every call.
    let notion = oauth2(
        "notion",
        json!({"auth_url": format!("http://api.notion.localhost:{p}/v1/oauth/authorize"),
               "token_url": format!("http://api.notion.localhost:{p}/v1/oauth/token"),
               "auth_header": "client_secret_basic", "api_base_url": format!("http://api.notion.localhost:{p}/v1")}),
        json!({"token_request_format": "json", "extra_headers": {"Notion-Version": NOTION_VERSION},
               "authorization_params": {"owner": "user"}}),
    );
    let id = connect(&app, &kit, &notion, &Value::Null).await;
    let exchange = kit.seen().into_iter().find(|s| s.target == "/v1/oauth/token").unwrap();
    let sent: Value = serde_json::from_str(&exchange.body).expect("the token request is JSON");
    assert_eq!(sent["grant_type"], "authorization_code", "{sent}");
    signs_everywhere(&app, &proxy, &bridge, &id, "/users/me", "api.notion.localhost", "/v1/users/me").await;

    // Figma: refreshes at refresh_url with refresh_params, not token_params.
    let figma = oauth2(
        "figma",
        json!({"auth_url": format!("http://www.figma.localhost:{p}/oauth"),
               "token_url": format!("http://api.figma.localhost:{p}/v1/oauth/token"),
               "refresh_url": format!("http://api.figma.localhost:{p}/v1/oauth/refresh"),
               "api_base_url": format!("http://api.figma.localhost:{p}/v1"), "scopes": ["files:read"]}),
        json!({"token_params": {"exchange_only": "e1"}, "refresh_params": {"refresh_only": "r1"}}),
    );
    let id = connect(&app, &kit, &figma, &Value::Null).await;
    let refreshed = app.post(&format!("/v1/refresh/{id}"), &json!({})).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);
    let token_calls: Vec<_> =
        kit.seen().into_iter().filter(|s| s.host == "api.figma.localhost" && s.method == "POST").collect();
    assert_eq!(
        token_calls.iter().map(|s| s.target.as_str()).collect::<Vec<_>>(),
        ["/v1/oauth/token", "/v1/oauth/refresh"]
    );
    let (exchange, refresh) = (form_of(&token_calls[0].body), form_of(&token_calls[1].body));
    assert_eq!((exchange.get("exchange_only"), exchange.get("refresh_only")), (Some(&"e1".to_owned()), None));
    assert_eq!((refresh.get("refresh_only"), refresh.get("exchange_only")), (Some(&"r1".to_owned()), None));
    assert_eq!(refresh.get("grant_type").map(String::as_str), Some("refresh_token"));
    let token = app.get(&format!("/v1/token/{id}")).await;
    assert_eq!(token.json["credentials"]["token_type"], "Bearer", "a reply without token_type is Bearer");
    signs_everywhere(&app, &proxy, &bridge, &id, "/me", "api.figma.localhost", "/v1/me").await;

    // Slack: the user token, nested beside a bot token; the team id learned from a nested path.
    let slack = oauth2(
        "slack",
        json!({"auth_url": format!("http://slack.localhost:{p}/oauth/v2/authorize"),
               "token_url": format!("http://slack.localhost:{p}/api/oauth.v2.access"),
               "api_base_url": format!("http://slack.localhost:{p}/api"), "scopes": ["chat:write"]}),
        json!({"token_response": {"access_token": "authed_user.access_token", "token_type": "authed_user.token_type",
                                  "scope": "authed_user.scope"},
               "connection_config_from_token": {"team_id": "team.id"}}),
    );
    let id = connect(&app, &kit, &slack, &Value::Null).await;
    let token = app.get(&format!("/v1/token/{id}")).await;
    assert_eq!(token.json["connection_config"]["team_id"], "T9TK3CUKW", "{}", token.text);
    assert_eq!(token.json["credentials"]["scope"], "chat:write", "{}", token.text);
    for answer in signs_everywhere(&app, &proxy, &bridge, &id, "/auth.test", "slack.localhost", "/api/auth.test").await
    {
        assert_eq!(answer["kind"], "user", "the user token, not the bot's: {answer}");
    }

    // Shopify: a tenant shop, and the token in its own header with no prefix.
    let shopify = oauth2(
        "shopify",
        json!({"auth_url": format!("http://{{shop}}.myshopify.localhost:{p}/admin/oauth/authorize"),
               "token_url": format!("http://{{shop}}.myshopify.localhost:{p}/admin/oauth/access_token"),
               "api_base_url": format!("http://{{shop}}.myshopify.localhost:{p}/admin/api/2024-01"),
               "scopes": ["read_products"]}),
        json!({"allowed_hosts": ["*.myshopify.localhost"], "connection_config_schema": string_schema(&["shop"]),
               "header_name": "X-Shopify-Access-Token"}),
    );
    let id = connect(&app, &kit, &shopify, &json!({"shop": "acme"})).await;
    let token = app.get(&format!("/v1/token/{id}")).await;
    assert_eq!(token.json["strategy"]["config"]["header_name"], "X-Shopify-Access-Token", "{}", token.text);
    assert_eq!(token.json["strategy"]["config"]["value_prefix"], "", "{}", token.text);
    signs_everywhere(
        &app,
        &proxy,
        &bridge,
        &id,
        "/shop.json",
        "acme.myshopify.localhost",
        "/admin/api/2024-01/shop.json",
    )
    .await;

    // Datadog: two secret headers, and a templated extra header.
    let datadog = json!({"name": "datadog", "auth_type": "api_key",
        "api_base_url": format!("http://api.datadoghq.localhost:{p}/api/v1"),
        "params": {"credential_schema": schema(&["api_key", "app_key"]),
                   "credential_headers": {"DD-API-KEY": "api_key", "DD-APPLICATION-KEY": "app_key"},
                   "connection_config_schema": string_schema(&["account"]),
                   "extra_headers": {"X-Kit-Account": "{account}"}}});
    let keys = json!({"api_key": DD_API_KEY, "app_key": DD_APP_KEY});
    let id = capture(&app, datadog, json!({"account": "acme"}), keys.clone()).await;
    for answer in
        signs_everywhere(&app, &proxy, &bridge, &id, "/validate", "api.datadoghq.localhost", "/api/v1/validate").await
    {
        assert_eq!(answer["echo"], json!({"x-kit-account": "acme"}), "{answer}");
    }
    // A connection value with CR/LF is percent-encoded: it cannot add a header.
    let id = capture(&app, json!({"name": "datadog"}), json!({"account": "a\r\nX-Kit-Evil: 1"}), keys).await;
    for answer in
        signs_everywhere(&app, &proxy, &bridge, &id, "/validate", "api.datadoghq.localhost", "/api/v1/validate").await
    {
        assert_eq!(answer["echo"], json!({"x-kit-account": "a%0D%0AX-Kit-Evil%3A%201"}), "{answer}");
    }

    // Trello: two secret query parameters.
    let trello = json!({"name": "trello", "auth_type": "query_param",
        "api_base_url": format!("http://api.trello.localhost:{p}/1"),
        "params": {"credential_schema": schema(&["api_key", "token"]),
                   "credential_query_params": {"key": "api_key", "token": "token"}}});
    let id = capture(&app, trello, json!({}), json!({"api_key": TRELLO_KEY, "token": TRELLO_TOKEN})).await;
    signs_everywhere(&app, &proxy, &bridge, &id, "/members/me", "api.trello.localhost", "/1/members/me").await;

    // Greenhouse: the API key as user name and an empty password.
    let greenhouse = json!({"name": "greenhouse", "auth_type": "basic_auth",
        "api_base_url": format!("http://harvest.greenhouse.localhost:{p}/v1"),
        "params": {"credential_schema": {"type": "object", "required": ["username"],
                   "properties": {"username": {"type": "string"}, "password": {"type": "string"}}}}});
    let id = capture(&app, greenhouse, json!({}), json!({"username": GREENHOUSE_KEY, "password": ""})).await;
    signs_everywhere(&app, &proxy, &bridge, &id, "/candidates", "harvest.greenhouse.localhost", "/v1/candidates").await;

    // Pipedrive: an explicit revocation endpoint, no discovery.
    let pipedrive = oauth2(
        "pipedrive",
        json!({"auth_url": format!("http://oauth.pipedrive.localhost:{p}/oauth/authorize"),
               "token_url": format!("http://oauth.pipedrive.localhost:{p}/oauth/token"),
               "revocation_url": format!("http://oauth.pipedrive.localhost:{p}/oauth/revoke"),
               "auth_header": "client_secret_basic", "api_base_url": "{+api_domain}/api/v1"}),
        json!({"allowed_hosts": ["*.pipedrive.localhost"], "connection_config_from_token": {"api_domain": "api_domain"}}),
    );
    let id = connect(&app, &kit, &pipedrive, &Value::Null).await;
    let revoked = app.delete(&format!("/v1/connections/{id}")).await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    let revocation = kit.seen().into_iter().find(|s| s.target == "/oauth/revoke").expect("the provider was told");
    let form = form_of(&revocation.body);
    assert!(form["token"].starts_with("kit-rt-"), "the refresh token is revoked: {form:?}");
    app.state.flush_audit().await;
    let audit = app.get("/v1/audit?event_type=connection.revoked").await;
    assert_eq!(audit.json["entries"][0]["data"]["provider_revocation"], "ok", "{}", audit.text);
    let _ = RETURN_URL;
}

both_backends!(each_quirk_connects_and_signs_through_every_caller);

/// Header settings that could split a request or reach a hop: refused at
/// registration, naming the field; nothing registered.
async fn hostile_header_settings_are_refused_at_registration(backend: Backend) {
    let app = nexus(backend).await;
    let base = |params: Value| {
        json!({"name": "hostile", "auth_type": "api_key", "api_base_url": "https://api.example.com",
               "params": params})
    };
    let cases = [
        json!({"extra_headers": {"X-A\r\nX-B": "v"}}),
        json!({"extra_headers": {"X-A": "v\r\nX-B: 1"}}),
        json!({"extra_headers": {"X-A": "v\nX-B: 1"}}),
        json!({"extra_headers": {"Connection": "close"}}),
        json!({"extra_headers": {"Transfer-Encoding": "chunked"}}),
        json!({"extra_headers": {"host": "evil.example"}}),
        json!({"extra_headers": {"Keep-Alive": "timeout=5"}}),
        json!({"extra_headers": {"X-A": 1}}),
        json!({"extra_headers": {"X-A": "{undeclared}"}}),
        json!({"credential_headers": {"Host": "api_key"}}),
        json!({"credential_headers": {"X-Key": "a\r\nb"}}),
        json!({"credential_headers": {"Upgrade": "api_key"}}),
        json!({"credential_query_params": {"key": ""}}),
        json!({"token_request_format": "xml"}),
        json!({"token_response": {"access_token": "a..b"}}),
        json!({"token_response": {"password": "a.b"}}),
        json!({"refresh_params": {"x": {"nested": true}}}),
        json!({"connection_config_from_token": {"user_token": "authed_user.access_token"}}),
        json!({"connection_config_from_userinfo": {"k": "keys.api_key"}}),
    ];
    for params in cases {
        let resp = app.post("/v1/providers", &base(params.clone())).await;
        assert_eq!(resp.status, 400, "{params}: {}", resp.text);
        let key = params.as_object().unwrap().keys().next().unwrap().clone();
        assert!(resp.text.contains(&format!("params.{key}")), "{params}: {}", resp.text);
        assert_eq!(app.get("/v1/providers/hostile").await.status, 404, "{params}");
    }
}

both_backends!(hostile_header_settings_are_refused_at_registration);
