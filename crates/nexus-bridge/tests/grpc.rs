//! `GrpcAuth` (feature `tonic`) between a real Nexus and a real gRPC server:
//! tonic's health service over HTTP/2 on loopback, behind a server-side
//! interceptor that records the metadata of every call and refuses calls
//! without credentials. OAuth2 tokens come from the independent oidc-provider
//! and are checked against its userinfo endpoint.

use nexus_bridge::{Bridge, GatewayError, GrpcAuthError};
use nexus_testkit::flows::{connect, register, setup};
use nexus_testkit::upstream::{schema, static_connection};
use nexus_testkit::{Backend, TestApp};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Server};
use tonic::{Code, Request, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::server::{health_reporter, HealthService};

type Seen = Arc<Mutex<Vec<tonic::metadata::MetadataMap>>>;

/// A gRPC health server on a free loopback port that refuses calls without
/// `authorization` or `x-api-key` metadata; returns its channel and what it saw.
async fn grpc_server() -> (Channel, Seen, tokio::task::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let (reporter, _) = health_reporter();
    let service =
        HealthServer::with_interceptor(HealthService::from_health_reporter(reporter), move |req: Request<()>| {
            record.lock().unwrap().push(req.metadata().clone());
            if req.metadata().get("authorization").is_none() && req.metadata().get("x-api-key").is_none() {
                return Err(Status::unauthenticated("no credentials"));
            }
            Ok(req)
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    (channel, seen, server)
}

async fn check<I: Interceptor>(channel: &Channel, interceptor: I) -> Result<(), Status> {
    let mut client = HealthClient::with_interceptor(channel.clone(), interceptor);
    let resp = client.check(HealthCheckRequest { service: String::new() }).await?;
    assert_eq!(resp.into_inner().status, 1, "SERVING");
    Ok(())
}

fn last(seen: &Seen, key: &str) -> Option<String> {
    seen.lock().unwrap().last().and_then(|m| m.get(key)).map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_carry_header_and_basic_credentials_and_refuse_url_signing() {
    nexus_testkit::run_bounded(async {
        let app = TestApp::spawn(Backend::Sqlite).await;
        let base = "http://127.0.0.1:9/api";
        let header = static_connection(&app, "hdr", json!({"auth_type": "api_key", "api_base_url": base, "params": {"header_name": "X-Api-Key", "value_prefix": "", "credential_schema": schema(&["api_key"])}}), json!({"api_key": "grpc-key-1"})).await;
        let basic = static_connection(&app, "bas", json!({"auth_type": "basic_auth", "api_base_url": base, "params": {"credential_schema": schema(&["username", "password"])}}), json!({"username": "ann", "password": "pw"})).await;
        let query = static_connection(&app, "qry", json!({"auth_type": "query_param", "api_base_url": base, "params": {"param_name": "k", "credential_schema": schema(&["api_key"])}}), json!({"api_key": "q"})).await;
        let (channel, seen, server) = grpc_server().await;

        // Without the interceptor the server refuses: its check can fail.
        let refused = check(&channel, |r: Request<()>| Ok(r)).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated);

        let bridge = Bridge::new(app.base_url.clone(), app.api_key.clone());
        check(&channel, bridge.grpc_auth(&header).await.unwrap()).await.unwrap();
        assert_eq!(last(&seen, "x-api-key").as_deref(), Some("grpc-key-1"));
        check(&channel, bridge.grpc_auth(&basic).await.unwrap()).await.unwrap();
        assert_eq!(last(&seen, "authorization").as_deref(), Some("Basic YW5uOnB3"));

        match bridge.grpc_auth(&query).await {
            Err(GrpcAuthError::Unsupported(_)) => {}
            other => panic!("query_param cannot ride in gRPC metadata: {other:?}"),
        }
        match bridge.grpc_auth("no-such-connection").await {
            Err(GrpcAuthError::Gateway(GatewayError::NotFound(_))) => {}
            other => panic!("expected NotFound: {other:?}"),
        }
        server.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_oauth2_token_is_the_providers_and_refreshes_after_unauthenticated() {
    nexus_testkit::run_bounded(async {
        let (app, idp) = setup(Backend::Sqlite, "client_secret_post").await;
        register(&app, &idp, "idp", true, "client_secret_post").await;
        let id = connect(&app, "idp", json!(["openid", "email", "offline_access"])).await;
        let (channel, seen, server) = grpc_server().await;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let userinfo = |authorization: String| {
            let req = http.get(idp.url("/me")).header("authorization", authorization);
            async move { req.send().await.unwrap().status().as_u16() }
        };

        let bridge = Bridge::new(app.base_url.clone(), app.api_key.clone());
        let auth = bridge.grpc_auth(&id).await.unwrap();
        check(&channel, auth.clone()).await.unwrap();
        let first = last(&seen, "authorization").expect("a bearer token");
        assert!(first.starts_with("Bearer "), "{first}");
        assert_eq!(userinfo(first.clone()).await, 200, "the provider accepts the token sent over gRPC");

        // The provider revokes it; the server would answer UNAUTHENTICATED, so
        // the client refreshes once through the Gateway and retries.
        idp.revoke_all_access_tokens().await.unwrap();
        assert_eq!(userinfo(first.clone()).await, 401);
        auth.refresh().await.unwrap();
        check(&channel, auth).await.unwrap();
        let second = last(&seen, "authorization").unwrap();
        assert_ne!(second, first);
        assert_eq!(userinfo(second).await, 200, "the refreshed token is valid at the provider");

        // A connection whose refresh token the provider refused: a typed error up front.
        let stuck = connect(&app, "idp", json!(["openid", "offline_access"])).await;
        idp.fail_token_endpoint(400, Some("invalid_grant"), 1).await.unwrap();
        assert_eq!(app.post(&format!("/v1/refresh/{stuck}"), &json!({})).await.status, 409);
        match bridge.grpc_auth(&stuck).await {
            Err(GrpcAuthError::Gateway(GatewayError::AttentionRequired(c))) => assert_eq!(c, stuck),
            other => panic!("expected AttentionRequired: {other:?}"),
        }
        server.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_auth_renews_credentials_in_the_background_before_they_expire() {
    nexus_testkit::run_bounded(async {
        // Tokens live 65 s; the Gateway renews them in their last 62 s and the
        // interceptor asks for new ones in their last 60 s (EXPIRY_SKEW_SECS).
        let options = nexus_testkit::oidc::OidcOptions { access_token_ttl: 65, ..Default::default() };
        let (app, idp) = nexus_testkit::flows::setup_with(
            Backend::Sqlite,
            "client_secret_post",
            |c| c.refresh_window = Some("62".into()),
            options,
        )
        .await;
        register(&app, &idp, "idp", true, "client_secret_post").await;
        let id = connect(&app, "idp", json!(["openid", "offline_access"])).await;
        let (channel, seen, server) = grpc_server().await;
        let bridge = Bridge::new(app.base_url.clone(), app.api_key.clone());
        let auth = bridge.grpc_auth(&id).await.unwrap();
        check(&channel, auth.clone()).await.unwrap();
        let first = last(&seen, "authorization").unwrap();

        // Calls keep succeeding with the current token while it is still valid;
        // a later one carries a new token, without anyone calling `refresh`.
        let started = std::time::Instant::now();
        let renewed = loop {
            check(&channel, auth.clone()).await.unwrap();
            let now = last(&seen, "authorization").unwrap();
            if now != first {
                break now;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "no renewal within 30 s");
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let status = http.get(idp.url("/me")).header("authorization", renewed).send().await.unwrap().status();
        assert_eq!(status, 200, "the renewed token is valid at the provider");
        server.abort();
    })
    .await;
}
