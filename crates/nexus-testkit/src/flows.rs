//! Test flows against a real server and a real OpenID provider: a Nexus with a
//! return-domain allowlist, a registered provider, and a connection made
//! through the provider's own consent pages.

use crate::oidc::{authorize_via_browser, OidcOptions, OidcProvider};
use crate::{Backend, TestApp, TestResponse};
use serde_json::{json, Value};

pub const RETURN_URL: &str = "https://app.example.test/done";

/// A Nexus with a return-domain allowlist and an OpenID provider whose client
/// uses `auth_method` and redirects to this Nexus.
pub async fn setup(backend: Backend, auth_method: &str) -> (TestApp, OidcProvider) {
    setup_with(backend, auth_method, |_| {}, OidcOptions::default()).await
}

/// [`setup`] with adjustments to Nexus's configuration and the provider's options.
pub async fn setup_with(
    backend: Backend,
    auth_method: &str,
    adjust: impl FnOnce(&mut nexus_server::RawConfig),
    options: OidcOptions,
) -> (TestApp, OidcProvider) {
    let app = TestApp::spawn_with(backend, |c| {
        c.allowed_return_domains = Some("app.example.test, *.example.org".into());
        adjust(c);
    })
    .await;
    let client = json!({
        "client_id": "nexus-client",
        "client_secret": "nexus-client-secret-1",
        "redirect_uris": [app.url("/auth/callback")],
        "token_endpoint_auth_method": auth_method,
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
    });
    let idp = OidcProvider::start(OidcOptions { clients: json!([client]), ..options }).await.expect("oidc-provider");
    (app, idp)
}

/// Registers the provider by discovery or by manual endpoints.
pub async fn register(app: &TestApp, idp: &OidcProvider, name: &str, discovery: bool, auth_method: &str) -> String {
    let mut body = json!({
        "name": name,
        "auth_type": "oauth2",
        "client_id": "nexus-client",
        "client_secret": "nexus-client-secret-1",
        "scopes": ["openid", "email", "profile", "offline_access"],
        "api_base_url": idp.issuer(),
        "user_info_endpoint": "/me",
        "params": {"authorization_params": {"prompt": "consent"}}
    });
    if discovery {
        body["issuer"] = json!(idp.issuer());
        body["enable_discovery"] = json!(true);
    } else {
        body["auth_url"] = json!(idp.url("/auth"));
        body["token_url"] = json!(idp.url("/token"));
    }
    if auth_method == "client_secret_basic" {
        body["auth_header"] = json!("client_secret_basic");
    }
    let resp = app.post("/v1/providers", &body).await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    resp.json["id"].as_str().unwrap().to_owned()
}

pub async fn request(app: &TestApp, provider: &str, scopes: Value) -> TestResponse {
    app.post(
        "/v1/request-connection",
        &json!({"user_id": "user-1", "provider_name": provider, "scopes": scopes, "return_url": RETURN_URL, "metadata": {"team": "a"}}),
    )
    .await
}

/// Follows the callback URL once; returns the `Location` (a redirect) or the response.
pub async fn callback(app: &TestApp, url: &str) -> TestResponse {
    app.send(app.client.get(url)).await
}

pub fn location(resp: &TestResponse) -> url::Url {
    let loc = resp.headers.get("location").unwrap_or_else(|| panic!("no redirect: {} {}", resp.status, resp.text));
    url::Url::parse(loc.to_str().unwrap()).unwrap()
}

pub fn query(url: &url::Url) -> std::collections::HashMap<String, String> {
    url.query_pairs().into_owned().collect()
}

/// Consents as `alice` and returns the connection id after a successful callback.
pub async fn connect(app: &TestApp, provider: &str, scopes: Value) -> String {
    let req = request(app, provider, scopes).await;
    assert_eq!(req.status, 200, "{}", req.text);
    let auth_url = req.json["auth_url"].as_str().unwrap().to_owned();
    let cb = authorize_via_browser(&auth_url, "alice", true, &app.url("/auth/callback")).await.expect("consent");
    let resp = callback(app, cb.as_str()).await;
    assert_eq!(resp.status, 302, "{}", resp.text);
    let loc = location(&resp);
    assert!(loc.as_str().starts_with(RETURN_URL), "{loc}");
    let q = query(&loc);
    assert_eq!(q.get("status").map(String::as_str), Some("success"), "{loc}");
    q["connection_id"].clone()
}
