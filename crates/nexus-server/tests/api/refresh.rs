//! The token lifecycle in one process: single-flight refresh under load with
//! rotating refresh tokens, forced-refresh coalescing, `invalid_grant` →
//! `attention_required` → re-consent, a provider that is down, and the
//! background refresher.

use nexus_testkit::flows::{connect, register, setup_with, RETURN_URL};
use nexus_testkit::oidc::{authorize_via_browser, OidcOptions};
use nexus_testkit::{both_backends, Backend, TestApp};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Short-lived access tokens, rotating refresh tokens, no background refresher.
async fn lifecycle_setup(
    backend: Backend,
    ttl: u64,
    window: &str,
    interval: &str,
) -> (TestApp, nexus_testkit::oidc::OidcProvider) {
    let (window, interval) = (window.to_owned(), interval.to_owned());
    let (app, idp) = setup_with(
        backend,
        "client_secret_post",
        move |c| {
            c.refresh_window = Some(window);
            c.refresh_interval = Some(interval);
        },
        OidcOptions { access_token_ttl: ttl, rotate_refresh_token: true, ..OidcOptions::default() },
    )
    .await;
    register(&app, &idp, "idp", true, "client_secret_post").await;
    (app, idp)
}

async fn token(app: &TestApp, id: &str) -> Value {
    let resp = app.get(&format!("/v1/token/{id}")).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    resp.json
}

/// Moves the server's clock until the stored access token is inside the
/// refresh window (no sleeping: the provider's token is still good).
async fn wait_for_window(app: &TestApp, id: &str, window: i64) {
    let row = app.store().connection_by_id(id).await.unwrap().unwrap();
    move_clock_past(app, row.expires_at.unwrap() - window);
}

/// Moves the server's clock to just past `t` (Unix seconds), if it is not there.
fn move_clock_past(app: &TestApp, t: i64) {
    let ahead = t - app.state.clock.now_secs() + 1;
    if ahead > 0 {
        app.state.clock.advance(Duration::from_secs(ahead as u64));
    }
}

async fn concurrent_callers_share_one_refresh(backend: Backend) {
    let (app, idp) = lifecycle_setup(backend, 4, "2", "3600").await;
    let id = connect(&app, "idp", json!(["openid", "offline_access"])).await;
    let mut previous = token(&app, &id).await["credentials"]["access_token"].clone();
    for round in 0..3 {
        wait_for_window(&app, &id, 2).await;
        idp.reset().await.unwrap();
        let path = format!("/v1/token/{id}");
        let calls = (0..100).map(|_| app.get(&path));
        let answers = futures::future::join_all(calls).await;
        let tokens: std::collections::HashSet<String> = answers
            .iter()
            .map(|a| {
                assert_eq!(a.status, 200, "round {round}: {}", a.text);
                a.json["credentials"]["access_token"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(tokens.len(), 1, "round {round}: everyone got the same new token");
        let fresh = Value::String(tokens.into_iter().next().unwrap());
        assert_ne!(fresh, previous, "round {round}: the token was refreshed");
        assert_eq!(
            idp.stats().await.unwrap().refresh_requests,
            1,
            "round {round}: one refresh grant reached the provider"
        );
        previous = fresh;
    }
    let me = reqwest::Client::new().get(idp.url("/me")).bearer_auth(previous.as_str().unwrap()).send().await.unwrap();
    assert_eq!(me.status(), 200, "the refreshed token is real");
    assert_eq!(app.get(&format!("/v1/check-connection/{id}")).await.json["status"], "active");
    app.state.flush_audit().await;
    let refreshed = app.get(&format!("/v1/audit?event_type=token.refreshed&connection_id={id}")).await;
    assert_eq!(refreshed.json["entries"].as_array().unwrap().len(), 3);
    assert_eq!(refreshed.json["entries"][0]["data"]["rotated"], true);
}

async fn forced_refreshes_coalesce(backend: Backend) {
    let (app, idp) = lifecycle_setup(backend, 3600, "300", "3600").await;
    let id = connect(&app, "idp", json!(["openid", "offline_access"])).await;
    let before = token(&app, &id).await["credentials"]["access_token"].clone();
    idp.reset().await.unwrap();
    let (path, empty) = (format!("/v1/refresh/{id}"), json!({}));
    let forced = futures::future::join_all((0..5).map(|_| app.post(&path, &empty))).await;
    for f in &forced {
        assert_eq!(f.status, 200, "{}", f.text);
    }
    let after = app.post(&format!("/v1/refresh/{id}"), &json!({})).await;
    assert_eq!(
        idp.stats().await.unwrap().refresh_requests,
        1,
        "six forced refreshes within seconds make one provider call"
    );
    assert_ne!(after.json["credentials"]["access_token"], before);
    assert_eq!(after.json["credentials"]["access_token"], forced[0].json["credentials"]["access_token"]);
    assert!(after.json["credentials"].get("refresh_token").is_none());
}

async fn refused_refresh_needs_consent_again(backend: Backend) {
    let (app, idp) = lifecycle_setup(backend, 3600, "300", "3600").await;
    let id = connect(&app, "idp", json!(["openid", "offline_access"])).await;
    idp.fail_token_endpoint(400, Some("invalid_grant"), 1).await.unwrap();
    let forced = app.post(&format!("/v1/refresh/{id}"), &json!({})).await;
    assert_eq!((forced.status, forced.code()), (409, "attention_required"), "{}", forced.text);
    let t = app.get(&format!("/v1/token/{id}")).await;
    assert_eq!((t.status, t.code()), (409, "attention_required"));
    assert!(t.json["message"].as_str().unwrap().contains("request-connection"));
    assert_eq!(app.get(&format!("/v1/check-connection/{id}")).await.json["status"], "attention_required");
    let audit = app.get(&format!("/v1/audit?connection_id={id}&limit=2")).await;
    let events: Vec<&str> =
        audit.json["entries"].as_array().unwrap().iter().map(|e| e["event_type"].as_str().unwrap()).collect();
    assert_eq!(events, ["connection.attention_required", "token.refresh_failed"]);
    assert_eq!(audit.json["entries"][1]["data"]["error"], "invalid_grant");

    // Re-consent with the same id makes it active again.
    let req = app
        .post("/v1/request-connection", &json!({"workspace_id": "user-1", "provider_name": "idp", "return_url": RETURN_URL, "connection_id": id, "scopes": ["openid", "offline_access"]}))
        .await;
    assert_eq!(req.status, 200, "{}", req.text);
    let cb = authorize_via_browser(req.json["auth_url"].as_str().unwrap(), "alice", true, &app.url("/auth/callback"))
        .await
        .unwrap();
    let resp = app.send(app.client.get(cb.as_str())).await;
    assert!(resp.headers["location"].to_str().unwrap().contains("status=success"));
    assert_eq!(token(&app, &id).await["connection_id"], id.as_str());
    assert_eq!(app.get(&format!("/v1/check-connection/{id}")).await.json["status"], "active");
}

async fn provider_down_serves_valid_tokens_and_503s_expired_ones(backend: Backend) {
    let (app, idp) = lifecycle_setup(backend, 4, "3", "3600").await;
    let id = connect(&app, "idp", json!(["openid", "offline_access"])).await;
    let original = token(&app, &id).await["credentials"]["access_token"].clone();
    idp.fail_token_endpoint(503, None, 1000).await.unwrap();
    // Inside the window but not expired: the refresh fails, the valid token is served.
    wait_for_window(&app, &id, 3).await;
    let served = app.get(&format!("/v1/token/{id}")).await;
    assert_eq!(served.status, 200, "{}", served.text);
    assert_eq!(served.json["credentials"]["access_token"], original);
    // Expired: a clear 503, and the connection stays active.
    let row = app.store().connection_by_id(&id).await.unwrap().unwrap();
    move_clock_past(&app, row.expires_at.unwrap());
    let down = app.get(&format!("/v1/token/{id}")).await;
    assert_eq!((down.status, down.code()), (503, "provider_unavailable"), "{}", down.text);
    // A forced refresh gets the same status (SPEC 5b; v1 answered 502).
    let forced = app.post(&format!("/v1/refresh/{id}"), &json!({})).await;
    assert_eq!((forced.status, forced.code()), (503, "provider_unavailable"), "{}", forced.text);
    assert_eq!(app.get(&format!("/v1/check-connection/{id}")).await.json["status"], "active");
    let row = app.store().connection_by_id(&id).await.unwrap().unwrap();
    assert!(row.refresh_failures >= 1 && row.next_refresh_at.is_some(), "rescheduled with backoff");
    // The provider recovers.
    idp.reset().await.unwrap();
    let back = app.get(&format!("/v1/token/{id}")).await;
    assert_eq!(back.status, 200, "{}", back.text);
    assert_ne!(back.json["credentials"]["access_token"], original);
    app.state.flush_audit().await;
    let failed = app.get(&format!("/v1/audit?event_type=token.refresh_failed&connection_id={id}")).await;
    assert_eq!(failed.json["entries"][0]["data"]["error"], "provider_unreachable");
}

async fn background_refresher_renews_before_expiry(backend: Backend) {
    let (app, idp) = lifecycle_setup(backend, 8, "5", "1").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(connect(&app, "idp", json!(["openid", "offline_access"])).await);
    }
    let before: Vec<i64> = {
        let mut v = Vec::new();
        for id in &ids {
            v.push(app.store().connection_by_id(id).await.unwrap().unwrap().expires_at.unwrap());
        }
        v
    };
    // Nobody asks; within the window the refresher renews every one of them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut renewed = 0;
        for (id, old) in ids.iter().zip(&before) {
            let row = app.store().connection_by_id(id).await.unwrap().unwrap();
            if row.expires_at.unwrap() > *old {
                assert!(*old >= row.last_refreshed_at.unwrap() / 1_000_000, "renewed before the old token expired");
                renewed += 1;
            }
        }
        if renewed == ids.len() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "only {renewed} of {} renewed", ids.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(idp.stats().await.unwrap().refresh_requests >= 3);
}

/// A refresh answers from the row it wrote: the answer's expiry is the
/// stored one, one grant and one `token.refreshed` row per refresh. A
/// connection revoked while its refresh is with the provider stays revoked:
/// on PostgreSQL the revocation waits for the refresh's row lock and then
/// wins over what the refresh wrote; on SQLite the refresh finds the row no longer active and writes
/// nothing. Either way no token is served after the revocation.
async fn a_refresh_answers_what_it_wrote_and_a_revocation_meanwhile_wins(backend: Backend) {
    let (app, idp) = lifecycle_setup(backend, 600, "60", "3600").await;
    let id = connect(&app, "idp", json!(["openid", "offline_access"])).await;
    let first = token(&app, &id).await;
    idp.reset().await.unwrap();

    let forced = app.post(&format!("/v1/refresh/{id}"), &json!({})).await;
    assert_eq!(forced.status, 200, "{}", forced.text);
    assert_ne!(forced.json["credentials"]["access_token"], first["credentials"]["access_token"]);
    assert!(forced.json["credentials"].get("refresh_token").is_none(), "never a refresh token");
    let stored = app.store().connection_by_id(&id).await.unwrap().unwrap();
    assert_eq!(forced.json["expires_at"].as_i64(), stored.expires_at, "the answer is the row written");
    assert_eq!(forced.json["credentials"]["expires_at"].as_i64(), stored.expires_at);
    assert_eq!(token(&app, &id).await["credentials"]["access_token"], forced.json["credentials"]["access_token"]);
    assert_eq!(idp.stats().await.unwrap().refresh_requests, 1);
    app.state.flush_audit().await;
    let refreshed = app.get(&format!("/v1/audit?event_type=token.refreshed&connection_id={id}")).await;
    assert_eq!(refreshed.json["entries"].as_array().map(Vec::len), Some(1), "{}", refreshed.text);

    // Inside the window, with the provider slow to answer: a revocation
    // lands while the on-demand refresh waits for it.
    wait_for_window(&app, &id, 60).await;
    idp.delay_token_endpoint(1500, 1).await.unwrap();
    let path = format!("/v1/token/{id}");
    let asking = app.get(&path);
    let revoking = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.delete(&format!("/v1/connections/{id}")).await
    };
    let (asked, revoked) = tokio::join!(asking, revoking);
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    assert_eq!(revoked.json["status"], "revoked");
    match backend {
        // The revocation queued behind the refresh's row lock. It told the
        // provider first, so the provider (which answers the delayed grant
        // after that) most likely refused the refresh token; had it
        // answered first, the token would have been served before the
        // revocation. Both are a refresh that finished before the revocation.
        Backend::Postgres => assert!(
            asked.status == 200 || (asked.status, asked.code()) == (409, "attention_required"),
            "{}",
            asked.text
        ),
        // The refresh found the connection revoked and stored nothing.
        Backend::Sqlite => {
            assert_eq!((asked.status, asked.code()), (409, "connection_not_active"), "{}", asked.text);
            assert_eq!(asked.json["details"]["status"], "revoked");
        }
    }
    let row = app.store().connection_by_id(&id).await.unwrap().unwrap();
    assert_eq!(row.status, nexus_core::ConnectionStatus::Revoked);
    assert!(row.credentials_enc.is_none() && row.refresh_token_enc.is_none(), "nothing kept after revocation");
    let after = app.get(&path).await;
    assert_eq!((after.status, after.code()), (409, "connection_not_active"), "{}", after.text);
}

both_backends!(
    a_refresh_answers_what_it_wrote_and_a_revocation_meanwhile_wins,
    concurrent_callers_share_one_refresh,
    forced_refreshes_coalesce,
    refused_refresh_needs_consent_again,
    provider_down_serves_valid_tokens_and_503s_expired_ones,
    background_refresher_renews_before_expiry
);

async fn background_refresher_renews_500_connections(backend: Backend) {
    let (app, idp) = lifecycle_setup(backend, 40, "25", "1").await;
    // 500 real grants, made 10 at a time.
    let mut ids = Vec::new();
    for _ in 0..50 {
        let batch = (0..10).map(|_| connect(&app, "idp", json!(["openid", "offline_access"])));
        ids.extend(futures::future::join_all(batch).await);
    }
    let mut before = std::collections::HashMap::new();
    for id in &ids {
        before.insert(id.clone(), app.store().connection_by_id(id).await.unwrap().unwrap().expires_at.unwrap());
    }
    // The provider's counters are not reset here: on a busy machine the
    // first connections fall due while the last are still being made, and a
    // reset would drop grants whose renewals the audit log keeps.
    // No client asks; the refresher must renew all 500 before their tokens expire.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let rows = app
            .store()
            .list_connections(&nexus_store::ConnectionFilter { limit: 1000, ..Default::default() })
            .await
            .unwrap();
        let renewed: Vec<_> = rows.iter().filter(|r| r.expires_at.unwrap() > before[&r.id]).collect();
        if renewed.len() == ids.len() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let late: Vec<_> = rows
                .iter()
                .filter(|r| r.expires_at.unwrap() <= before[&r.id])
                .map(|r| (r.id.clone(), r.next_refresh_at, r.refresh_failures, r.last_error.clone()))
                .collect();
            panic!(
                "{} of {} renewed; not renewed (id, next_refresh_at, failures, error): {late:?}",
                renewed.len(),
                ids.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Renewals are spread inside the window (jitter), so an early one may
    // be renewed twice before a late one once: each connection's first
    // renewal came before its token expired, and every refresh grant the
    // provider saw is one renewal Nexus recorded (no grant twice). The
    // refresher keeps going, so the counts are read at rest: a graceful stop
    // starts no new refresh, finishes those in flight and writes their audit.
    let db = app.db.clone();
    app.stop().await;
    let stats = idp.stats().await.unwrap();
    let store = nexus_store::Store::connect(db.url()).await.unwrap();
    let page = store
        .list_audit(&nexus_store::AuditFilter {
            event_type: Some(nexus_core::AuditEvent::TokenRefreshed),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(page.next_before.is_none(), "every renewal on one page");
    let mut first: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    for e in &page.entries {
        let at = e.at / 1_000_000;
        let id = e.connection_id.clone().expect("a renewal names its connection");
        first.entry(id).and_modify(|t| *t = (*t).min(at)).or_insert(at);
    }
    assert_eq!(first.len(), 500, "every connection renewed");
    for (id, at) in &first {
        assert!(*at <= before[id], "{id} renewed only after its token expired");
    }
    assert_eq!(stats.refresh_requests as usize, page.entries.len(), "one grant per recorded renewal");
    let active = store
        .list_connections(&nexus_store::ConnectionFilter {
            status: Some(nexus_core::ConnectionStatus::Active),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(active.len(), 500);
    store.close().await;
}

both_backends!(background_refresher_renews_500_connections);

/// The token cache honours the configured refresh window (not a fixed
/// 300 s): with a window wider than 300 s, an answer is not served from
/// cache once it is inside the window, so a request then refreshes.
async fn the_token_cache_keeps_to_the_configured_refresh_window(backend: Backend) {
    // 600 s tokens and a 598 s window: inside it 2 s after the grant.
    let (app, _idp) = lifecycle_setup(backend, 600, "598", "3600").await;
    let id = connect(&app, "idp", json!(["openid", "offline_access"])).await;
    let first = token(&app, &id).await["credentials"]["access_token"].as_str().unwrap().to_owned();
    let started = std::time::Instant::now();
    loop {
        let now = token(&app, &id).await["credentials"]["access_token"].as_str().unwrap().to_owned();
        if now != first {
            break;
        }
        // A cache that kept the answer its full 30 s would hold it past this.
        assert!(started.elapsed() < Duration::from_secs(15), "still served from cache inside the refresh window");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("refreshed {:?} after the first answer", started.elapsed());
}

both_backends!(the_token_cache_keeps_to_the_configured_refresh_window);

/// A token endpoint that grants any code, and refreshes at once or (with
/// `hang`) never answers a refresh; it counts refreshes in flight and the
/// most there were at once.
async fn token_endpoint(hang: bool, expires_in: u64) -> (std::net::SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let (in_flight, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (now, most) = (in_flight.clone(), peak.clone());
    let issued = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(move |body: String| {
            let (now, most, issued) = (now.clone(), most.clone(), issued.clone());
            async move {
                /// Counts a refresh in flight until it is answered or its
                /// client gives up (the handler is then dropped).
                struct InFlight(Arc<AtomicUsize>);
                impl Drop for InFlight {
                    fn drop(&mut self) {
                        self.0.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                if body.contains("grant_type=refresh_token") {
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(n, Ordering::SeqCst);
                    let _in_flight = InFlight(now.clone());
                    if hang {
                        tokio::time::sleep(Duration::from_secs(120)).await;
                    }
                }
                let n = issued.fetch_add(1, Ordering::SeqCst);
                axum::Json(json!({"access_token": format!("at-{n}"), "token_type": "Bearer", "expires_in": expires_in, "refresh_token": format!("rt-{n}")}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, in_flight, peak)
}

/// `n` OAuth connections to `provider`, made through the callback with any code.
async fn grant(app: &TestApp, provider: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let req = app
            .post(
                "/v1/request-connection",
                &json!({"workspace_id": "w", "provider_name": provider, "return_url": RETURN_URL}),
            )
            .await;
        assert_eq!(req.status, 200, "{}", req.text);
        let state = req.json["state"].as_str().unwrap();
        let cb = app.send(app.client.get(format!("{}?code=c{i}&state={state}", app.url("/auth/callback")))).await;
        assert!(cb.headers["location"].to_str().unwrap().contains("status=success"), "{:?}", cb.headers);
        ids.push(req.json["connection_id"].as_str().unwrap().to_owned());
    }
    ids
}

/// The measurement of the outside review, scaled down: 80 connections of a
/// provider whose token endpoint hangs on refresh and 80 of a fast one,
/// all due together. Every fast connection is renewed before it expires,
/// and the hanging host never has more than `REFRESH_PER_HOST` (4)
/// refreshes at once.
async fn a_hanging_provider_does_not_starve_the_others(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.allowed_return_domains = Some("app.example.test".into());
        c.refresh_window = Some("15".into());
        c.refresh_interval = Some("1".into());
        c.refresh_per_host = Some("4".into());
    })
    .await;
    let (fast, _, _) = token_endpoint(false, 20).await;
    let (slow, slow_now, slow_peak) = token_endpoint(true, 20).await;
    for (name, addr) in [("fast", fast), ("hangs", slow)] {
        let provider = json!({"name": name, "auth_type": "oauth2", "client_id": "c", "client_secret": "scale-secret-1",
            "auth_url": format!("http://{addr}/authorize"), "token_url": format!("http://{addr}/token"), "scopes": ["x"]});
        assert_eq!(app.post("/v1/providers", &provider).await.status, 201);
    }
    let hanging = grant(&app, "hangs", 80).await;
    let quick = grant(&app, "fast", 80).await;
    let mut first = std::collections::HashMap::new();
    for id in &quick {
        first.insert(id.clone(), app.store().connection_by_id(id).await.unwrap().unwrap().expires_at.unwrap());
    }
    let deadline = *first.values().min().unwrap();
    loop {
        let mut renewed = 0;
        for id in &quick {
            let row = app.store().connection_by_id(id).await.unwrap().unwrap();
            renewed += usize::from(row.expires_at.unwrap() > first[id]);
        }
        if renewed == quick.len() {
            break;
        }
        assert!(
            chrono::Utc::now().timestamp() < deadline,
            "{renewed} of {} fast connections renewed before they expired",
            quick.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(slow_now.load(Ordering::SeqCst) > 0, "the hanging host was being tried meanwhile");
    assert!(
        slow_peak.load(Ordering::SeqCst) <= 4,
        "at most REFRESH_PER_HOST at the hanging host: {}",
        slow_peak.load(Ordering::SeqCst)
    );
    assert_eq!(hanging.len(), 80);
    println!(
        "all {} fast connections renewed, {}s before the first expiry; the hanging host had at most {} at once",
        quick.len(),
        deadline - chrono::Utc::now().timestamp(),
        slow_peak.load(Ordering::SeqCst)
    );
}

both_backends!(a_hanging_provider_does_not_starve_the_others);

/// A key rewrap racing a refresh that rotates the refresh token (SPEC 14):
/// the refresh holds the connection's row lock while the provider answers
/// slowly; the rewrap reads the old credentials, its swap waits on the lock
/// and then finds them rewritten (under the new key) and leaves them; the
/// refresh token the provider rotated is stored under the new key, kept,
/// and the next refresh works. PostgreSQL, where replicas share rows under
/// row locks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrap_racing_a_rotating_refresh_keeps_the_new_token() {
    let (app, idp) = lifecycle_setup(Backend::Postgres, 600, "60", "3600").await;
    let id = connect(&app, "idp", json!(["openid", "offline_access"])).await;
    let old = app.store().sealed_value(nexus_store::SEALED_COLUMNS[2], &id).await.unwrap().unwrap();
    // The same database, now with a new sealing key before the old one.
    let new_key = nexus_vault::generate_key();
    let old_key = app.raw_config().encryption_key.clone().unwrap();
    let ring = format!("{new_key},{old_key}");
    let replica = app
        .spawn_replica_with(|c| {
            c.encryption_key = None;
            c.encryption_keys = Some(ring.clone());
        })
        .await;
    let keyring = nexus_vault::KeyRing::from_base64(&[new_key.as_str(), old_key.as_str()]).unwrap();

    idp.delay_token_endpoint(1500, 1).await.unwrap();
    let forced = {
        let replica_url = replica.url(&format!("/v1/refresh/{id}"));
        let (client, key) = (replica.client.clone(), replica.api_key.clone());
        tokio::spawn(async move { client.post(replica_url).header("x-api-key", key).json(&json!({})).send().await })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let report = nexus_server::vault::rewrap(replica.store(), &keyring, 100, Duration::ZERO, |_, _| {}).await.unwrap();
    let refreshed = forced.await.unwrap().unwrap();
    assert_eq!(refreshed.status(), 200);
    assert!(report.changed_meanwhile >= 1, "the refresh wrote first: {report:?}");
    assert!(report.failed.is_empty(), "{report:?}");

    let now = replica.store().sealed_value(nexus_store::SEALED_COLUMNS[2], &id).await.unwrap().unwrap();
    assert_ne!(now, old, "the rotated refresh token is stored");
    assert_eq!(nexus_server::vault::key_id(&now), keyring.current_key_id(), "under the new key");
    // The kept token is the provider's live one: the next refresh works.
    let again = replica.post(&format!("/v1/refresh/{id}"), &json!({})).await;
    assert_eq!(again.status, 200, "{}", again.text);
    let status = nexus_server::vault::status(replica.store()).await.unwrap();
    assert!(status.by_key().keys().all(|k| k == keyring.current_key_id()), "{status:?}");
    replica.stop().await;
    app.stop().await;
}
