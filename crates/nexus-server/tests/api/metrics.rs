//! `GET /metrics` (SPEC 14) on its own listener: traffic of every kind
//! (token answers from the cache, the store and a refresh, a refused
//! refresh, proxied requests) moves exactly the counters it should, labels
//! never carry a connection id, the API's listener does not serve it, and
//! `promtool check metrics` accepts the text.

use nexus_testkit::flows::{connect, register, setup_with};
use nexus_testkit::oidc::OidcOptions;
use nexus_testkit::upstream::{recording_upstream, static_connection};
use nexus_testkit::{both_backends, Backend, TestApp};
use serde_json::json;
use std::collections::HashMap;

async fn scrape(app: &TestApp) -> String {
    let addr = app.metrics_addr.expect("METRICS_BIND is set");
    let resp = app.client.get(format!("http://{addr}/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    resp.text().await.unwrap()
}

/// `name{labels}` → value, for every sample.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(k, v)| (k.to_owned(), v.parse().unwrap_or(f64::NAN))))
        .collect()
}

fn delta(before: &HashMap<String, f64>, after: &HashMap<String, f64>, key: &str) -> f64 {
    after.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0)
}

async fn metrics_count_what_happens_and_promtool_accepts_them(backend: Backend) {
    let (app, idp) = setup_with(
        backend,
        "client_secret_post",
        |c| {
            c.metrics_bind = Some("127.0.0.1:0".into());
            c.refresh_interval = Some("3600".into());
        },
        OidcOptions { access_token_ttl: 600, ..OidcOptions::default() },
    )
    .await;
    register(&app, &idp, "idp", true, "client_secret_post").await;
    let id = connect(&app, "idp", json!(["openid", "offline_access"])).await;
    let (addr, _seen) = recording_upstream().await;
    let provider = json!({"auth_type": "api_key", "api_base_url": format!("http://{addr}/api"),
                          "params": {"credential_schema": {"type": "object", "required": ["api_key"], "properties": {"api_key": {"type": "string"}}}}});
    let proxied = static_connection(&app, "upstream", provider, json!({"api_key": "k-metrics"})).await;
    // The public listener has no /metrics.
    let public = app.get("/metrics").await;
    assert_eq!(public.status, 404);

    let before = samples(&scrape(&app).await);
    // A token from the store, then the cache.
    assert_eq!(app.get(&format!("/v1/token/{id}")).await.status, 200);
    assert_eq!(app.get(&format!("/v1/token/{id}")).await.status, 200);
    // A forced refresh the provider grants; inside the refresh window, a
    // token answer that refreshes on demand; then a refresh the provider refuses.
    assert_eq!(app.post(&format!("/v1/refresh/{id}"), &json!({})).await.status, 200);
    app.state.clock.advance(std::time::Duration::from_secs(400));
    assert_eq!(app.get(&format!("/v1/token/{id}")).await.status, 200);
    // (Past the forced-refresh coalescing window, so the provider is asked again.)
    app.state.clock.advance(std::time::Duration::from_secs(30));
    idp.fail_token_endpoint(400, Some("invalid_grant"), 1).await.unwrap();
    assert_eq!(app.post(&format!("/v1/refresh/{id}"), &json!({})).await.status, 409);
    assert_eq!(app.get(&format!("/v1/token/{id}")).await.status, 409);
    // Two proxied requests.
    for _ in 0..2 {
        let resp = app
            .send(app.client.get(app.url(&format!("/v1/proxy/{proxied}/x"))).header("x-api-key", &app.api_key))
            .await;
        assert_eq!(resp.status, 200, "{}", resp.text);
    }
    // A made-up method is one more request, not one more series.
    let odd = reqwest::Method::from_bytes(b"FOOBAR").unwrap();
    let resp = app.send(app.client.request(odd, app.url("/v1/providers")).header("x-api-key", &app.api_key)).await;
    assert!(resp.status >= 400);
    let text = scrape(&app).await;
    let after = samples(&text);
    let d = |key: &str| delta(&before, &after, key);

    assert_eq!(
        d(r#"nexus_token_answers_total{outcome="stored"}"#),
        2.0,
        "the first read and the proxy's first:\n{text}"
    );
    assert_eq!(d(r#"nexus_token_answers_total{outcome="cache_hit"}"#), 2.0, "{text}");
    assert_eq!(d(r#"nexus_token_answers_total{outcome="attention_required"}"#), 1.0, "{text}");
    assert_eq!(d(r#"nexus_token_answers_total{outcome="refreshed"}"#), 1.0, "{text}");
    assert_eq!(d(r#"nexus_refreshes_total{outcome="refreshed",provider="idp"}"#), 2.0, "forced and on demand:\n{text}");
    assert_eq!(d(r#"nexus_refreshes_total{outcome="refused",provider="idp"}"#), 1.0, "{text}");
    assert_eq!(d(r#"nexus_proxy_requests_total{proxy="gateway",status="200"}"#), 2.0, "{text}");
    assert_eq!(d(r#"nexus_proxy_added_seconds_count{proxy="gateway"}"#), 2.0, "{text}");
    assert_eq!(
        d(r#"nexus_http_requests_total{method="GET",route="/v1/token/{connection_id}",status="200"}"#),
        3.0,
        "{text}"
    );
    assert_eq!(
        d(r#"nexus_http_requests_total{method="POST",route="/v1/refresh/{connection_id}",status="409"}"#),
        1.0,
        "{text}"
    );
    assert!(!text.contains("FOOBAR") && text.contains(r#"method="other""#), "{text}");
    assert!(text.contains(&format!("nexus_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))), "{text}");
    assert!(after.contains_key("nexus_refresher_backlog") && after.contains_key("nexus_audit_queue_depth"), "{text}");
    assert!(!text.contains(&id) && !text.contains(&proxied), "no connection id in a label");
    nexus_testkit::promtool::check(&text);
    idp.stop().await.unwrap();
}

both_backends!(metrics_count_what_happens_and_promtool_accepts_them);
