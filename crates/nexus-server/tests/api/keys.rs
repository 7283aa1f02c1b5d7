//! Discovery that stays current (SPEC 14), against the real `oidc-provider`:
//! its key set is fetched once and reused; when it rotates its signing key
//! the next id_token (an unknown `kid`) fetches the set once more and
//! verifies; a day later the discovery document and the key set are
//! fetched again, and when the provider is away then, the last good
//! document is kept. Each fetch is counted in
//! `nexus_discovery_refreshes_total`.

use nexus_testkit::flows::{connect, register, setup_with};
use nexus_testkit::oidc::OidcOptions;
use nexus_testkit::{both_backends, Backend, TestApp};
use serde_json::json;

async fn counter(app: &TestApp, reason: &str, outcome: &str) -> f64 {
    let addr = app.metrics_addr.unwrap();
    let text = app.client.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
    let key = format!("nexus_discovery_refreshes_total{{outcome=\"{outcome}\",reason=\"{reason}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&key)).map_or(0.0, |v| v.parse().unwrap())
}

async fn verified(app: &TestApp, id: &str) -> bool {
    app.state.flush_audit().await;
    let audit = app.get("/v1/audit?event_type=connection.activated").await;
    let entries = audit.json["entries"].as_array().unwrap().clone();
    entries.iter().find(|e| e["connection_id"] == id).map(|e| e["data"]["id_token_verified"] == true).unwrap()
}

async fn rotated_keys_are_fetched_once_and_old_documents_again(backend: Backend) {
    let (app, idp) = setup_with(
        backend,
        "client_secret_post",
        |c| c.metrics_bind = Some("127.0.0.1:0".into()),
        OidcOptions::default(),
    )
    .await;
    register(&app, &idp, "idp", true, "client_secret_post").await;
    let scopes = json!(["openid", "email"]);
    let first = connect(&app, "idp", scopes.clone()).await;
    let second = connect(&app, "idp", scopes.clone()).await;
    assert!(verified(&app, &first).await && verified(&app, &second).await);
    let fetched = idp.stats().await.unwrap().jwks_requests;
    assert_eq!(counter(&app, "ttl", "ok").await, 1.0, "the key set is fetched once, then reused");

    // The provider signs with a new key: one more fetch, and the token verifies.
    // Three consents at once: the new set is fetched once for all of them.
    idp.rotate_keys().await.unwrap();
    let at_once = futures::future::join_all((0..3).map(|_| connect(&app, "idp", scopes.clone()))).await;
    for id in &at_once {
        assert!(verified(&app, id).await);
    }
    let third = at_once[0].clone();
    assert!(verified(&app, &third).await);
    assert_eq!(counter(&app, "unknown_kid", "ok").await, 1.0);
    assert_eq!(idp.stats().await.unwrap().jwks_requests, fetched + 1);
    let fourth = connect(&app, "idp", scopes.clone()).await;
    assert!(verified(&app, &fourth).await);
    assert_eq!(idp.stats().await.unwrap().jwks_requests, fetched + 1, "the new set is reused");

    // A day later: the discovery document and the key set are fetched again.
    let before = app.store().provider_by_name("idp").await.unwrap().unwrap().discovery.unwrap().fetched_at;
    app.state.clock.advance(std::time::Duration::from_secs(24 * 3600 + 60));
    let fifth = connect(&app, "idp", scopes).await;
    assert!(verified(&app, &fifth).await);
    assert_eq!(counter(&app, "ttl", "ok").await, 3.0, "the document and the key set, once each");
    let after = app.store().provider_by_name("idp").await.unwrap().unwrap().discovery.unwrap().fetched_at;
    assert!(after > before, "the new document is stored ({before} → {after})");
    assert_eq!(counter(&app, "ttl", "failed").await + counter(&app, "unknown_kid", "failed").await, 0.0);

    // The provider away a day later: the refresh cannot happen, the failed
    // rediscovery is counted, and the last good document is kept.
    idp.stop().await.unwrap();
    app.state.clock.advance(std::time::Duration::from_secs(24 * 3600 + 60));
    let refresh = app.post(&format!("/v1/refresh/{fifth}"), &json!({})).await;
    assert_eq!((refresh.status, refresh.code()), (503, "provider_unavailable"), "{}", refresh.text);
    assert_eq!(counter(&app, "ttl", "failed").await, 1.0);
    let kept = app.store().provider_by_name("idp").await.unwrap().unwrap().discovery.unwrap().fetched_at;
    assert_eq!(kept, after, "the last good document stays");
}

both_backends!(rotated_keys_are_fetched_once_and_old_documents_again);
