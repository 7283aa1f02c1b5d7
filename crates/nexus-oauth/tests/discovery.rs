//! Discovery against documents a provider really serves over HTTP on
//! loopback, good and hostile: the endpoints kept, and for every way a
//! document can be wrong an error that says which, with nothing fetched
//! that the outbound URL policy refuses.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nexus_oauth::{discover, ProviderHttp};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

type Asked = Arc<Mutex<Vec<&'static str>>>;

/// A loopback issuer that serves `doc(issuer)` as its discovery document
/// and `jwks` at `/jwks`; returns the issuer and what it was asked for.
async fn issuer_serving(doc: impl Fn(&str) -> Response + Send + Sync + 'static, jwks: Response) -> (String, Asked) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let asked: Asked = Arc::default();
    let (doc, jwks) = (Arc::new(doc), Arc::new(Mutex::new(Some(jwks))));
    let (seen, at) = (asked.clone(), issuer.clone());
    let seen_jwks = asked.clone();
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || {
                let (seen, doc, at) = (seen.clone(), doc.clone(), at.clone());
                async move {
                    seen.lock().unwrap().push("discovery");
                    doc(&at)
                }
            }),
        )
        .route(
            "/jwks",
            get(move || {
                let (seen, jwks) = (seen_jwks.clone(), jwks.clone());
                async move {
                    seen.lock().unwrap().push("jwks");
                    let taken = jwks.lock().unwrap().take();
                    taken.unwrap_or_else(|| StatusCode::GONE.into_response())
                }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (issuer, asked)
}

fn json_response(v: Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

fn document(issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/auth"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "revocation_endpoint": format!("{issuer}/revoke"),
        "userinfo_endpoint": format!("{issuer}/me"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    })
}

fn with(issuer: &str, field: &str, value: Value) -> Value {
    let mut doc = document(issuer);
    doc[field] = value;
    doc
}

fn without(issuer: &str, field: &str) -> Value {
    let mut doc = document(issuer);
    doc.as_object_mut().unwrap().remove(field);
    doc
}

fn keys() -> Response {
    json_response(json!({"keys": []}))
}

fn http() -> ProviderHttp {
    ProviderHttp::new(
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap(),
    )
}

#[tokio::test]
async fn a_good_document_gives_its_endpoints() {
    let (issuer, asked) = issuer_serving(|i| json_response(document(i)), keys()).await;
    let found = discover(&http(), &issuer, 1_700_000_000).await.unwrap();
    assert_eq!(found.authorization_endpoint, format!("{issuer}/auth"));
    assert_eq!(found.token_endpoint, format!("{issuer}/token"));
    assert_eq!(found.jwks_uri, Some(format!("{issuer}/jwks")));
    assert_eq!(found.revocation_endpoint, Some(format!("{issuer}/revoke")));
    assert_eq!(found.userinfo_endpoint, Some(format!("{issuer}/me")));
    assert_eq!(found.fetched_at, 1_700_000_000, "stamped with the time it is given");
    assert_eq!(*asked.lock().unwrap(), ["discovery", "jwks"], "the key set is fetched and checked too");
    // A trailing slash on the configured issuer finds the same document;
    // the issuer it names must then match exactly (Discovery 1.0 §4.3).
    let slashed = discover(&http(), &format!("{issuer}/"), 0).await.unwrap_err();
    assert!(slashed.contains("unexpected issuer"), "{slashed}");
}

#[tokio::test]
async fn hostile_documents_are_refused_with_what_is_wrong() {
    type Doc = fn(&str) -> Value;
    let cases: Vec<(&str, Doc, &str)> = vec![
        ("another issuer", |i| with(i, "issuer", json!("https://evil.example")), "unexpected issuer"),
        ("no token endpoint", |i| without(i, "token_endpoint"), "has no token_endpoint"),
        ("no jwks_uri", |i| without(i, "jwks_uri"), "jwks_uri"),
        (
            "token endpoint off loopback over http",
            |i| with(i, "token_endpoint", json!("http://10.0.0.1/token")),
            "token_endpoint",
        ),
        (
            "revocation endpoint with credentials",
            |i| with(i, "revocation_endpoint", json!("https://u:p@x.example/r")),
            "revocation_endpoint",
        ),
        (
            "authorization endpoint not a string",
            |i| with(i, "authorization_endpoint", json!(42)),
            "authorization_endpoint",
        ),
        ("issuer null", |i| with(i, "issuer", Value::Null), "issuer"),
        ("not an object", |_| json!(["issuer"]), "did not return a discovery document"),
        (
            "a huge issuer",
            |i| with(i, "issuer", json!(format!("https://{}.example", "x".repeat(100_000)))),
            "unexpected issuer",
        ),
        (
            "a huge disallowed endpoint",
            |i| with(i, "token_endpoint", json!(format!("http://10.0.0.1/{}", "x".repeat(100_000)))),
            "token_endpoint",
        ),
    ];
    for (what, doc, expected) in cases {
        let (issuer, _) = issuer_serving(move |i| json_response(doc(i)), keys()).await;
        let err = discover(&http(), &issuer, 0).await.expect_err(what);
        assert!(err.contains(expected), "{what}: {err}");
        assert!(err.chars().count() <= 401, "{what}: a message of {} characters", err.chars().count());
    }
}

#[tokio::test]
async fn a_jwks_uri_the_policy_refuses_is_never_fetched() {
    let (issuer, asked) =
        issuer_serving(|i| json_response(with(i, "jwks_uri", json!("http://169.254.169.254/keys"))), keys()).await;
    let err = discover(&http(), &issuer, 0).await.unwrap_err();
    assert!(err.contains("must use https"), "{err}");
    assert_eq!(*asked.lock().unwrap(), ["discovery"]);
}

#[tokio::test]
async fn broken_replies_are_errors_not_panics() {
    let html = |_: &str| ([(header::CONTENT_TYPE, "text/html")], "<html>hello</html>").into_response();
    let (issuer, _) = issuer_serving(html, keys()).await;
    let err = discover(&http(), &issuer, 0).await.unwrap_err();
    assert!(err.contains("openid-configuration"), "{err}");

    let missing = |_: &str| StatusCode::NOT_FOUND.into_response();
    let (issuer, _) = issuer_serving(missing, keys()).await;
    let err = discover(&http(), &issuer, 0).await.unwrap_err();
    assert!(err.contains("HTTP 404"), "{err}");

    let moved = |_: &str| (StatusCode::FOUND, [(header::LOCATION, "http://127.0.0.1:1/x")]).into_response();
    let (issuer, _) = issuer_serving(moved, keys()).await;
    let err = discover(&http(), &issuer, 0).await.unwrap_err();
    assert!(err.contains("HTTP 302"), "redirects are not followed: {err}");

    let huge = |i: &str| json_response(with(i, "padding", json!("x".repeat(2 * 1024 * 1024))));
    let (issuer, _) = issuer_serving(huge, keys()).await;
    let err = discover(&http(), &issuer, 0).await.unwrap_err();
    assert!(err.contains("more than"), "{err}");

    let (issuer, _) = issuer_serving(|i| json_response(document(i)), json_response(json!({"keys": "none"}))).await;
    let err = discover(&http(), &issuer, 0).await.unwrap_err();
    assert!(err.contains("keys"), "a key set that is not one: {err}");

    let (issuer, _) =
        issuer_serving(|i| json_response(document(i)), StatusCode::INTERNAL_SERVER_ERROR.into_response()).await;
    let err = discover(&http(), &issuer, 0).await.unwrap_err();
    assert!(err.contains("HTTP 500"), "{err}");
}
