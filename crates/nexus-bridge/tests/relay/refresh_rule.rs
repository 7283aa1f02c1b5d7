//! The 401 rule of SPEC 7b is the same through every caller: the Gateway
//! proxy, `nexus proxy` and `Bridge::send`. A provider's `401` to OAuth2
//! credentials is followed by one refresh (a new access token) and one
//! retry; a `401` to static credentials is the provider's answer, relayed
//! as it is, with no refresh and no second request.

use super::Proxy;
use nexus_bridge::{Bridge, Relay};
use nexus_testkit::flows::{connect, register, setup};
use nexus_testkit::upstream::{recording_upstream_with_refusals, schema, static_connection, Seen};
use nexus_testkit::{Backend, TestApp};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy)]
enum Caller {
    Gateway,
    Sidecar,
    Bridge,
}

/// One request for `id` through `caller` to `/api/rule`: its status.
async fn call(caller: Caller, app: &TestApp, proxy: &Proxy, bridge: &Bridge, id: &str) -> u16 {
    match caller {
        Caller::Gateway => {
            let url = app.url(&format!("/v1/proxy/{id}/rule"));
            app.send(app.client.post(url).header("x-api-key", &app.api_key).body("replayed")).await.status
        }
        Caller::Sidecar => {
            let client = reqwest::Client::new();
            client.post(proxy.url(id, "/rule")).body("replayed").send().await.unwrap().status().as_u16()
        }
        Caller::Bridge => {
            let answer = bridge.credentials(id).await.unwrap();
            let url = format!("{}/rule", answer.api_base_url().unwrap());
            let req = http::Request::post(url).body(b"replayed".to_vec()).unwrap();
            bridge.send(id, req).await.unwrap().status().as_u16()
        }
    }
}

/// The credential each request carried (the `Authorization` header).
fn credentials(seen: &Arc<Mutex<Vec<Seen>>>, from: usize) -> Vec<String> {
    seen.lock().unwrap()[from..].iter().map(|s| s.header("authorization").unwrap_or("").to_owned()).collect()
}

fn seen_count(seen: &Arc<Mutex<Vec<Seen>>>) -> usize {
    seen.lock().unwrap().len()
}

async fn refreshes(app: &TestApp) -> usize {
    let page = app.get("/v1/audit?event_type=token.refreshed&limit=1000").await;
    page.json["entries"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_401_rule_is_the_same_through_every_caller() {
    nexus_testkit::run_bounded(async {
        let (app, idp) = setup(Backend::Sqlite, "client_secret_post").await;
        let (addr, seen, refusals) = recording_upstream_with_refusals().await;
        let base = format!("http://{addr}/api");
        register(&app, &idp, "idp", false, "client_secret_post").await;
        // One OAuth2 connection per caller: forced refreshes of one
        // connection within seconds of each other are coalesced.
        let mut oauth = Vec::new();
        for _ in 0..3 {
            oauth.push(connect(&app, "idp", json!(["openid", "offline_access"])).await);
        }
        let patched = app.patch("/v1/providers/idp", &json!({"api_base_url": base})).await;
        assert_eq!(patched.status, 200, "{}", patched.text);
        let provider = json!({"auth_type": "api_key", "api_base_url": base, "params": {"credential_schema": schema(&["api_key"])}});
        let key = static_connection(&app, "keyed", provider, json!({"api_key": "static-key-1"})).await;
        let bridge = Bridge::new(app.base_url.clone(), app.api_key.clone());
        let proxy = Proxy::start(Relay::new(Bridge::new(app.base_url.clone(), app.api_key.clone()))).await;

        for (caller, oauth) in [Caller::Gateway, Caller::Sidecar, Caller::Bridge].into_iter().zip(&oauth) {
            // OAuth2: 401, one refresh, the same request again with the new token.
            let from = seen_count(&seen);
            let before = refreshes(&app).await;
            refusals.store(1, Ordering::SeqCst);
            assert_eq!(call(caller, &app, &proxy, &bridge, oauth).await, 200, "{caller:?} oauth2");
            let sent = credentials(&seen, from);
            assert_eq!(sent.len(), 2, "{caller:?}: one retry after the 401: {sent:?}");
            assert!(sent[0].starts_with("Bearer ") && sent[1].starts_with("Bearer "), "{caller:?}: {sent:?}");
            assert_ne!(sent[0], sent[1], "{caller:?}: the retry carries the renewed token");
            assert_eq!(refreshes(&app).await, before + 1, "{caller:?}: exactly one refresh");
            let bodies: Vec<Vec<u8>> = seen.lock().unwrap()[from..].iter().map(|s| s.body.clone()).collect();
            assert!(bodies.iter().all(|b| b == b"replayed"), "{caller:?}: the body is replayed whole");

            // Static: the 401 is the answer; no refresh, no second request.
            let from = seen_count(&seen);
            let before = refreshes(&app).await;
            refusals.store(1, Ordering::SeqCst);
            assert_eq!(call(caller, &app, &proxy, &bridge, &key).await, 401, "{caller:?} static");
            assert_eq!(credentials(&seen, from), ["Bearer static-key-1"], "{caller:?}: sent once");
            assert_eq!(refreshes(&app).await, before, "{caller:?}: nothing refreshed");
            assert_eq!(refusals.load(Ordering::SeqCst), 0);
        }
        let _ = proxy.stop.send(true);
        app.stop().await;
    })
    .await
}
