//! Caller identification: the socket peer is the caller unless it is a trusted
//! proxy; `ALLOWED_CIDRS` and the audit log both use that caller IP. CORS is
//! closed unless origins are configured.

use nexus_testkit::{both_backends, Backend, TestApp};

async fn forged_forwarded_for_neither_passes_allowlist_nor_hides_caller(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.allowed_cidrs = Some("10.0.0.0/8".into())).await;
    let forged = app
        .send(
            app.client
                .get(app.url("/v1/providers"))
                .header("x-api-key", &app.api_key)
                .header("x-forwarded-for", "10.1.2.3"),
        )
        .await;
    assert_eq!((forged.status, forged.code()), (403, "forbidden"), "{}", forged.text);
    app.state.flush_audit().await;
    let rows = app.store().list_audit(&nexus_store::AuditFilter { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(rows.entries.len(), 1);
    let row = &rows.entries[0];
    assert_eq!(row.event_type, "auth.rejected");
    assert_eq!(row.ip.as_deref(), Some("127.0.0.1"), "audited with the real socket IP");
    assert_eq!(row.data["reason"], "ip_not_allowed");
    // Probes and the OpenAPI document stay public.
    assert_eq!(app.send(app.client.get(app.url("/health"))).await.status, 200);
}

async fn trusted_proxy_forwards_the_caller(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.allowed_cidrs = Some("10.0.0.0/8".into());
        c.trusted_proxies = Some("127.0.0.1/32".into());
    })
    .await;
    let through_proxy = app
        .send(
            app.client
                .get(app.url("/v1/providers"))
                .header("x-api-key", &app.api_key)
                .header("x-forwarded-for", "203.0.113.50, 10.1.2.3"),
        )
        .await;
    assert_eq!(through_proxy.status, 200, "{}", through_proxy.text);
    let outside = app
        .send(
            app.client
                .get(app.url("/v1/providers"))
                .header("x-api-key", "wrong")
                .header("x-forwarded-for", "203.0.113.50"),
        )
        .await;
    assert_eq!(outside.status, 403);
    app.state.flush_audit().await;
    let rows = app.store().list_audit(&nexus_store::AuditFilter { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(rows.entries[0].ip.as_deref(), Some("203.0.113.50"));
}

async fn cors_is_closed_by_default_and_open_to_listed_origins(backend: Backend) {
    let closed = TestApp::spawn(backend).await;
    let preflight = |app: &TestApp, origin: &str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/v1/providers"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "x-api-key, content-type")
    };
    let resp = closed.send(preflight(&closed, "https://app.example.com")).await;
    assert!(resp.headers.get("access-control-allow-origin").is_none());

    let open = TestApp::spawn_with(backend, |c| c.cors_allowed_origins = Some("https://app.example.com".into())).await;
    let ok = open.send(preflight(&open, "https://app.example.com")).await;
    assert_eq!(ok.headers.get("access-control-allow-origin").unwrap(), "https://app.example.com");
    let other = open.send(preflight(&open, "https://evil.example.com")).await;
    assert!(other.headers.get("access-control-allow-origin").is_none());
}

both_backends!(
    forged_forwarded_for_neither_passes_allowlist_nor_hides_caller,
    trusted_proxy_forwards_the_caller,
    cors_is_closed_by_default_and_open_to_listed_origins
);
