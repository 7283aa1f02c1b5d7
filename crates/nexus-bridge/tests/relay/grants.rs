//! The JWT bearer grant (SPEC 11), end to end: a service-account key is
//! captured per connection; Nexus signs an RS256 assertion that the test
//! kit's Google token endpoint verifies with PyJWT (`iss`, `sub`, `aud`,
//! `scope`, `exp` − `iat` ≤ 3600) against the account's public key; the
//! token then signs requests through the Gateway proxy, `nexus proxy` and
//! the Bridge; a renewal signs a new assertion; the private key is never
//! in an answer; a key the provider does not trust is `400
//! invalid_credentials` at capture with nothing stored.

use super::tenants::{nexus, register, through_every_caller, RETURN_URL};
use super::Proxy;
use nexus_bridge::{Bridge, Relay};
use nexus_testkit::provider_kit::ProviderKit;
use nexus_testkit::{both_backends, Backend, TestApp};
use serde_json::{json, Value};

const EMAIL: &str = "reporter@acme-project.iam.gserviceaccount.com";
const SCOPE: &str = "https://www.googleapis.com/auth/drive.readonly";

/// Captures `key` for a new connection. Only its private key is secret
/// (remembered by the test); the e-mail and token URI are not.
async fn capture_key(app: &TestApp, key: &Value) -> nexus_testkit::TestResponse {
    let req = app
        .post(
            "/v1/request-connection",
            &json!({"workspace_id": "w", "provider_name": "google-sa", "return_url": RETURN_URL}),
        )
        .await;
    assert_eq!(req.status, 200, "{}", req.text);
    app.send(
        app.client
            .post(app.url("/v1/capture-credential"))
            .header("x-api-key", &app.api_key)
            .header("accept", "application/json")
            .json(&json!({"state": req.json["state"], "credentials": key})),
    )
    .await
}

async fn jwt_bearer_assertions_are_verified_by_pyjwt_and_sign_through_every_caller(backend: Backend) {
    let kit = ProviderKit::start().await;
    let (pem, public_pem, _) = nexus_testkit::python::rsa_key().expect("a key pair");
    let (other_pem, _, _) = nexus_testkit::python::rsa_key().expect("another key pair");
    kit.trust_service_account(EMAIL, &public_pem, "ann@acme.example", SCOPE);
    let app = nexus(backend).await;
    app.remember_secret(&pem);
    app.remember_secret(&other_pem);
    let token_url = kit.url("oauth2.googleapis", "/token");
    register(
        &app,
        &json!({"name": "google-sa", "auth_type": "jwt_bearer", "token_url": token_url,
        "scopes": [SCOPE], "api_base_url": kit.url("www.googleapis", "/drive/v3")}),
    )
    .await;
    // Without a credential_schema the capture form asks for a service-account key.
    let req = app
        .post(
            "/v1/request-connection",
            &json!({"workspace_id": "w", "provider_name": "google-sa", "return_url": RETURN_URL}),
        )
        .await;
    let state = req.json["state"].as_str().unwrap().to_owned();
    let form = app.get(&format!("/v1/capture-schema?state={state}")).await;
    assert_eq!(
        form.json["credential_schema"]["required"],
        json!(["client_email", "private_key", "token_uri"]),
        "{}",
        form.text
    );

    // A key the provider does not trust, and one for another token endpoint: nothing stored.
    let wrong =
        json!({"client_email": EMAIL, "private_key": other_pem, "token_uri": token_url, "subject": "ann@acme.example"});
    let refused = capture_key(&app, &wrong).await;
    assert_eq!((refused.status, refused.code()), (400, "invalid_credentials"), "{}", refused.text);
    let elsewhere = json!({"client_email": EMAIL, "private_key": pem, "token_uri": "https://evil.example/token"});
    let refused = capture_key(&app, &elsewhere).await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert!(refused.text.contains("token_uri"), "{}", refused.text);
    let active = app.get("/v1/connections?status=active").await;
    assert_eq!(active.json, json!([]), "nothing stored");

    let key = json!({"client_email": EMAIL, "private_key": pem, "token_uri": token_url, "subject": "ann@acme.example",
                     "type": "service_account"});
    let captured = capture_key(&app, &key).await;
    assert_eq!(captured.status, 200, "{}", captured.text);
    let id = captured.json["connection_id"].as_str().unwrap().to_owned();
    let claims = kit.verified_assertions();
    assert_eq!(claims.len(), 1, "{claims:?}");
    assert_eq!((claims[0]["iss"].as_str(), claims[0]["sub"].as_str()), (Some(EMAIL), Some("ann@acme.example")));
    assert_eq!((claims[0]["aud"].as_str(), claims[0]["scope"].as_str()), (Some(token_url.as_str()), Some(SCOPE)));

    let answer = app.get(&format!("/v1/token/{id}")).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(
        (answer.json["strategy"]["type"].as_str(), answer.json["auth_type"].as_str()),
        (Some("oauth2"), Some("jwt_bearer"))
    );
    assert!(!answer.text.contains("PRIVATE KEY"), "the key never leaves Nexus: {}", answer.text);

    let bridge = Bridge::new(app.base_url.clone(), app.api_key.clone());
    let proxy = Proxy::start(Relay::new(Bridge::new(app.base_url.clone(), app.api_key.clone()))).await;
    for answer in through_every_caller(&app, &proxy, &bridge, &id, "/about").await {
        assert_eq!(
            (answer["host"].as_str(), answer["path"].as_str()),
            (Some("www.googleapis.localhost"), Some("/drive/v3/about"))
        );
    }

    // A renewal signs a new assertion with the kept key.
    let renewed = app.post(&format!("/v1/refresh/{id}"), &json!({})).await;
    assert_eq!(renewed.status, 200, "{}", renewed.text);
    assert_ne!(renewed.json["credentials"]["access_token"], answer.json["credentials"]["access_token"]);
    assert_eq!(kit.verified_assertions().len(), 2);
}

both_backends!(jwt_bearer_assertions_are_verified_by_pyjwt_and_sign_through_every_caller);
