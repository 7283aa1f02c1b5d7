//! Self-test of the OpenID provider fixture (`testkit/oidc-provider`).

use std::future::Future;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use nexus_testkit::oidc::{
    authorize_via_browser, OidcOptions, OidcProvider, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_REDIRECT_URI,
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use url::Url;

const TEST_DEADLINE: Duration = Duration::from_secs(90);

async fn bounded<F: Future<Output = anyhow::Result<()>>>(test: F) {
    tokio::time::timeout(TEST_DEADLINE, test).await.expect("test exceeded its deadline").expect("test failed");
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap()
}

struct AuthRequest {
    url: String,
    state: String,
    verifier: String,
}

fn random_token() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

fn auth_request(provider: &OidcProvider, scope: &str, consent: bool) -> AuthRequest {
    let verifier = random_token();
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let state = random_token();
    let nonce = random_token();
    let mut url = Url::parse(&provider.url("/auth")).unwrap();
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", DEFAULT_CLIENT_ID)
            .append_pair("redirect_uri", DEFAULT_REDIRECT_URI)
            .append_pair("scope", scope)
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        if consent {
            q.append_pair("prompt", "consent");
        }
    }
    AuthRequest { url: url.into(), state, verifier }
}

fn query_param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// Runs the browser flow and returns the authorization code.
async fn authorize(provider: &OidcProvider, req: &AuthRequest, login: &str) -> anyhow::Result<String> {
    let redirect = authorize_via_browser(&req.url, login, true, DEFAULT_REDIRECT_URI).await?;
    assert_eq!(query_param(&redirect, "state").as_deref(), Some(req.state.as_str()));
    assert_eq!(query_param(&redirect, "iss"), Some(provider.issuer()));
    assert_eq!(query_param(&redirect, "error"), None, "redirect: {redirect}");
    Ok(query_param(&redirect, "code").expect("code in redirect"))
}

async fn token_request(provider: &OidcProvider, form: &[(&str, &str)]) -> anyhow::Result<(u16, Value)> {
    let mut fields = vec![("client_id", DEFAULT_CLIENT_ID), ("client_secret", DEFAULT_CLIENT_SECRET)];
    fields.extend_from_slice(form);
    let resp = http().post(provider.url("/token")).form(&fields).send().await?;
    let status = resp.status().as_u16();
    let body: Value = resp.json().await?;
    Ok((status, body))
}

async fn exchange_code(provider: &OidcProvider, req: &AuthRequest, code: &str) -> anyhow::Result<Value> {
    let (status, body) = token_request(
        provider,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", DEFAULT_REDIRECT_URI),
            ("code_verifier", &req.verifier),
        ],
    )
    .await?;
    assert_eq!(status, 200, "code exchange: {body}");
    Ok(body)
}

async fn refresh(provider: &OidcProvider, refresh_token: &str) -> anyhow::Result<(u16, Value)> {
    token_request(provider, &[("grant_type", "refresh_token"), ("refresh_token", refresh_token)]).await
}

async fn userinfo_status(provider: &OidcProvider, access_token: &str) -> anyhow::Result<(u16, Value)> {
    let resp = http().get(provider.url("/me")).bearer_auth(access_token).send().await?;
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(Value::Null);
    Ok((status, body))
}

fn str_field<'a>(body: &'a Value, name: &str) -> &'a str {
    body[name].as_str().unwrap_or_else(|| panic!("{name} missing in {body}"))
}

#[tokio::test]
async fn discovery_code_flow_refresh_and_revocation() {
    bounded(async {
        let provider = OidcProvider::start(OidcOptions::default()).await?;

        let discovery: Value =
            http().get(provider.url("/.well-known/openid-configuration")).send().await?.json().await?;
        assert_eq!(discovery["issuer"], provider.issuer());
        assert_eq!(provider.issuer(), format!("http://127.0.0.1:{}", provider.port()));
        assert_eq!(discovery["token_endpoint"], provider.url("/token"));
        assert!(discovery["code_challenge_methods_supported"].as_array().unwrap().contains(&Value::from("S256")));

        let req = auth_request(&provider, "openid email offline_access", true);
        let code = authorize(&provider, &req, "alice").await?;
        let tokens = exchange_code(&provider, &req, &code).await?;
        let access_token = str_field(&tokens, "access_token").to_owned();
        let refresh_token = str_field(&tokens, "refresh_token").to_owned();
        str_field(&tokens, "id_token");
        assert_eq!(tokens["token_type"], "Bearer");

        let (status, info) = userinfo_status(&provider, &access_token).await?;
        assert_eq!(status, 200, "{info}");
        assert_eq!(info["sub"], "alice");
        assert_eq!(info["email"], "alice@example.test");

        let (status, refreshed) = refresh(&provider, &refresh_token).await?;
        assert_eq!(status, 200, "{refreshed}");
        let new_access = str_field(&refreshed, "access_token").to_owned();
        assert_ne!(new_access, access_token);
        // No rotation by default: the same refresh token keeps working.
        assert_eq!(str_field(&refreshed, "refresh_token"), refresh_token);

        let stats = provider.stats().await?;
        assert_eq!(stats.refresh_requests, 1);
        assert_eq!(stats.authorization_code_requests, 1);
        assert_eq!(stats.token_requests, 2);
        assert_eq!(stats.userinfo_requests, 1);

        provider.revoke_all_access_tokens().await?;
        for token in [&access_token, &new_access] {
            let (status, _) = userinfo_status(&provider, token).await?;
            assert_eq!(status, 401);
        }
        let (status, again) = refresh(&provider, &refresh_token).await?;
        assert_eq!(status, 200, "{again}");
        let (status, _) = userinfo_status(&provider, str_field(&again, "access_token")).await?;
        assert_eq!(status, 200);

        provider.revoke_all_refresh_tokens().await?;
        let (status, body) = refresh(&provider, &refresh_token).await?;
        assert_eq!(status, 400);
        assert_eq!(body["error"], "invalid_grant");

        // A code is single use (reuse also revokes what it issued).
        let (status, body) = token_request(
            &provider,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", DEFAULT_REDIRECT_URI),
                ("code_verifier", &req.verifier),
            ],
        )
        .await?;
        assert_eq!(status, 400);
        assert_eq!(body["error"], "invalid_grant");

        provider.reset().await?;
        assert_eq!(provider.stats().await?, Default::default());

        provider.stop().await
    })
    .await;
}

#[tokio::test]
async fn refresh_token_without_offline_access_and_rotation() {
    bounded(async {
        let provider = OidcProvider::start(OidcOptions {
            rotate_refresh_token: true,
            access_token_ttl: 120,
            ..OidcOptions::default()
        })
        .await?;

        // No offline_access, no prompt=consent: still a refresh token.
        let req = auth_request(&provider, "openid email", false);
        let code = authorize(&provider, &req, "bob").await?;
        let tokens = exchange_code(&provider, &req, &code).await?;
        let first = str_field(&tokens, "refresh_token").to_owned();
        assert_eq!(tokens["expires_in"], 120);

        let (status, refreshed) = refresh(&provider, &first).await?;
        assert_eq!(status, 200, "{refreshed}");
        let second = str_field(&refreshed, "refresh_token").to_owned();
        assert_ne!(second, first, "refresh token must rotate");

        // Reusing a rotated refresh token fails (and revokes the grant).
        let (status, body) = refresh(&provider, &first).await?;
        assert_eq!(status, 400);
        assert_eq!(body["error"], "invalid_grant");

        provider.stop().await
    })
    .await;
}

#[tokio::test]
async fn token_endpoint_failure_and_delay_injection() {
    bounded(async {
        let provider = OidcProvider::start(OidcOptions::default()).await?;
        let req = auth_request(&provider, "openid", false);
        let code = authorize(&provider, &req, "carol").await?;
        let tokens = exchange_code(&provider, &req, &code).await?;
        let refresh_token = str_field(&tokens, "refresh_token").to_owned();
        provider.reset().await?;

        provider.fail_token_endpoint(503, None, 2).await?;
        for _ in 0..2 {
            let (status, body) = refresh(&provider, &refresh_token).await?;
            assert_eq!(status, 503);
            assert_eq!(body["error"], "server_error");
        }
        let (status, body) = refresh(&provider, &refresh_token).await?;
        assert_eq!(status, 200, "{body}");

        provider.fail_token_endpoint(400, Some("invalid_grant"), 1).await?;
        let (status, body) = refresh(&provider, &refresh_token).await?;
        assert_eq!(status, 400);
        assert_eq!(body["error"], "invalid_grant");
        let (status, body) = refresh(&provider, &refresh_token).await?;
        assert_eq!(status, 200, "{body}");

        provider.delay_token_endpoint(400, 1).await?;
        let started = Instant::now();
        let (status, body) = refresh(&provider, &refresh_token).await?;
        assert_eq!(status, 200, "{body}");
        assert!(started.elapsed() >= Duration::from_millis(400));

        let stats = provider.stats().await?;
        assert_eq!(stats.token_requests, 6);
        assert_eq!(stats.refresh_requests, 6);
        assert_eq!(stats.authorization_code_requests, 0);

        provider.stop().await
    })
    .await;
}

#[tokio::test]
async fn denial_redirects_with_access_denied() {
    bounded(async {
        let provider = OidcProvider::start(OidcOptions::default()).await?;
        let req = auth_request(&provider, "openid email offline_access", true);
        let redirect = authorize_via_browser(&req.url, "dave", false, DEFAULT_REDIRECT_URI).await?;
        assert!(redirect.as_str().starts_with(DEFAULT_REDIRECT_URI));
        assert_eq!(query_param(&redirect, "error").as_deref(), Some("access_denied"));
        assert_eq!(query_param(&redirect, "state").as_deref(), Some(req.state.as_str()));
        assert_eq!(query_param(&redirect, "code"), None);
        assert_eq!(provider.stats().await?.token_requests, 0);
        provider.stop().await
    })
    .await;
}

#[tokio::test]
async fn custom_clients_and_extra_scopes() {
    bounded(async {
        let redirect_uri = "http://127.0.0.1:2/other/callback";
        let provider = OidcProvider::start(OidcOptions {
            clients: serde_json::json!([{
                "client_id": "basic-client",
                "client_secret": "basic-secret",
                "redirect_uris": [redirect_uri],
                "token_endpoint_auth_method": "client_secret_basic",
            }]),
            extra_scopes: vec!["widgets:read".to_owned()],
            ..OidcOptions::default()
        })
        .await?;

        let verifier = random_token();
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let mut url = Url::parse(&provider.url("/auth"))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", "basic-client")
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", "openid widgets:read")
            .append_pair("state", "s1")
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        let redirect = authorize_via_browser(url.as_str(), "erin", true, redirect_uri).await?;
        let code = query_param(&redirect, "code").expect("code");

        let resp = http()
            .post(provider.url("/token"))
            .basic_auth("basic-client", Some("basic-secret"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", redirect_uri),
                ("code_verifier", verifier.as_str()),
            ])
            .send()
            .await?;
        assert_eq!(resp.status(), 200);
        let tokens: Value = resp.json().await?;
        str_field(&tokens, "refresh_token");
        let scope = str_field(&tokens, "scope");
        assert!(scope.split(' ').any(|s| s == "widgets:read"), "scope: {scope}");

        // PKCE is required.
        let mut url = Url::parse(&provider.url("/auth"))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", "basic-client")
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", "openid")
            .append_pair("state", "s2");
        let redirect = authorize_via_browser(url.as_str(), "erin", true, redirect_uri).await?;
        assert_eq!(query_param(&redirect, "error").as_deref(), Some("invalid_request"));

        provider.stop().await
    })
    .await;
}
