//! Webhooks (SPEC 13) against a receiver that verifies every delivery with
//! the PyPI `standardwebhooks` library: the six events with their payloads,
//! event filters, a receiver that is down for more than a day (the clock is
//! moved, not waited for), retries exhausted and redelivery, and hostile
//! receivers (slow, redirecting, plain http off loopback).

use nexus_testkit::flows::{connect, register, setup_with, RETURN_URL};
use nexus_testkit::oidc::{authorize_via_browser, OidcOptions};
use nexus_testkit::upstream::{schema, static_connection};
use nexus_testkit::webhook_receiver::{Received, Receiver};
use nexus_testkit::{both_backends, Backend, TestApp};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// Registers a webhook to `url`; returns (id, secret).
async fn webhook(app: &TestApp, url: &str, events: Option<&[&str]>) -> (String, String) {
    let mut body = json!({ "url": url, "description": "test receiver" });
    if let Some(events) = events {
        body["events"] = json!(events);
    }
    let resp = app.post("/v1/webhooks", &body).await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    let secret = resp.json["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    (resp.json["id"].as_str().unwrap().to_owned(), secret)
}

async fn deliveries(app: &TestApp, webhook_id: &str) -> Vec<Value> {
    let resp = app.get(&format!("/v1/webhooks/{webhook_id}/deliveries?limit=1000")).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    resp.json["deliveries"].as_array().unwrap().clone()
}

/// Waits until every delivery of `webhook_id` satisfies `until` (and there are `count`).
async fn wait_deliveries(app: &TestApp, webhook_id: &str, count: usize, until: impl Fn(&Value) -> bool) -> Vec<Value> {
    wait_deliveries_for(app, webhook_id, count, WAIT, until).await
}

async fn wait_deliveries_for(
    app: &TestApp,
    webhook_id: &str,
    count: usize,
    wait: Duration,
    until: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let end = tokio::time::Instant::now() + wait;
    loop {
        let all = deliveries(app, webhook_id).await;
        if all.len() == count && all.iter().all(&until) {
            return all;
        }
        assert!(tokio::time::Instant::now() < end, "deliveries not as expected in {wait:?}: {all:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn all_verified(log: &[Received]) {
    for r in log {
        assert!(r.verified, "a delivery failed verification by standardwebhooks: {r:?}");
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
    }
}

async fn api_key_connection(app: &TestApp, name: &str) -> String {
    let provider = json!({"auth_type": "api_key", "params": {"credential_schema": schema(&["api_key"])}});
    static_connection(app, name, provider, json!({"api_key": format!("k-{name}")})).await
}

/// Every event type, from the flow that causes it, signed and verified.
async fn every_event_is_delivered_signed(backend: Backend) {
    let receiver = Receiver::start().await;
    let (app, idp) = setup_with(
        backend,
        "client_secret_post",
        |c| c.refresh_window = Some("300".into()),
        OidcOptions { rotate_refresh_token: true, ..OidcOptions::default() },
    )
    .await;
    register(&app, &idp, "idp", true, "client_secret_post").await;
    let (all_id, secret) = webhook(&app, &receiver.url("all"), None).await;
    receiver.configure("all", &secret, "ok", json!({})).await;
    let (only_id, only_secret) = webhook(&app, &receiver.url("revoked"), Some(&["connection.revoked"])).await;
    receiver.configure("revoked", &only_secret, "ok", json!({})).await;

    // activated
    let id = connect(&app, "idp", json!(["openid", "offline_access"])).await;
    // token.refresh_failed: the provider is down, the connection stays active
    idp.fail_token_endpoint(503, None, 1).await.unwrap();
    let forced = app.post(&format!("/v1/refresh/{id}"), &json!({})).await;
    assert_eq!(forced.status, 503, "{}", forced.text);
    // attention_required: the provider refuses the refresh token
    idp.fail_token_endpoint(400, Some("invalid_grant"), 1).await.unwrap();
    let forced = app.post(&format!("/v1/refresh/{id}"), &json!({})).await;
    assert_eq!(forced.status, 409, "{}", forced.text);
    // recovered: consent again with the same id
    let again = json!({"workspace_id": "user-1", "provider_name": "idp", "return_url": RETURN_URL,
                       "connection_id": id, "scopes": ["openid", "offline_access"]});
    let req = app.post("/v1/request-connection", &again).await;
    assert_eq!(req.status, 200, "{}", req.text);
    let cb = authorize_via_browser(req.json["auth_url"].as_str().unwrap(), "alice", true, &app.url("/auth/callback"))
        .await
        .unwrap();
    let resp = app.send(app.client.get(cb.as_str())).await;
    assert!(resp.headers["location"].to_str().unwrap().contains("status=success"));
    // revoked
    assert_eq!(app.delete(&format!("/v1/connections/{id}")).await.status, 200);
    // failed: the user refuses consent on another connection
    let req = app
        .post(
            "/v1/request-connection",
            &json!({"workspace_id": "user-2", "provider_name": "idp", "return_url": RETURN_URL}),
        )
        .await;
    assert_eq!(req.status, 200, "{}", req.text);
    let refused = req.json["connection_id"].as_str().unwrap().to_owned();
    let cb = authorize_via_browser(req.json["auth_url"].as_str().unwrap(), "alice", false, &app.url("/auth/callback"))
        .await
        .unwrap();
    app.send(app.client.get(cb.as_str())).await;

    let mut log = receiver.wait_for("all", WAIT, |l| l.len() >= 6).await;
    all_verified(&log);
    // Order is not guaranteed (attempts run side by side): receivers order by `timestamp`.
    log.sort_by_key(|r| r.payload["timestamp"].as_str().unwrap_or_default().to_owned());
    let types: Vec<&str> = log.iter().map(Received::event_type).collect();
    assert_eq!(
        types,
        [
            "connection.activated",
            "token.refresh_failed",
            "connection.attention_required",
            "connection.recovered",
            "connection.revoked",
            "connection.failed"
        ],
        "in the order they happened"
    );
    let data: Vec<&Value> = log.iter().map(|r| &r.payload["data"]).collect();
    for d in &data[..5] {
        assert_eq!(d["connection_id"], id.as_str());
        assert_eq!(d["provider"], "idp");
        assert_eq!(d["workspace_id"], "user-1");
    }
    let statuses: Vec<&str> = data.iter().map(|d| d["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["active", "active", "attention_required", "active", "revoked", "failed"]);
    assert_eq!(data[1]["error"], "provider_unreachable");
    assert_eq!(data[2]["error"], "invalid_grant");
    assert!(data[0].get("error").is_none() && data[3].get("error").is_none());
    assert_eq!(
        (data[5]["connection_id"].as_str(), data[5]["workspace_id"].as_str()),
        (Some(refused.as_str()), Some("user-2"))
    );
    assert_eq!(data[5]["error"], "access_denied");
    for r in &log {
        let ts = chrono::DateTime::parse_from_rfc3339(r.payload["timestamp"].as_str().unwrap()).unwrap();
        assert!((chrono::Utc::now() - ts.to_utc()).num_seconds().abs() < 120);
        assert!(r.webhook_id.starts_with("msg_"));
        assert!(r.user_agent.as_deref().unwrap_or_default().starts_with("nexus-webhooks/"));
    }
    assert_eq!(log.iter().map(|r| &r.webhook_id).collect::<HashSet<_>>().len(), 6, "one id per event");

    // The filtered webhook got the revocation only.
    let only = receiver.wait_for("revoked", WAIT, |l| !l.is_empty()).await;
    all_verified(&only);
    let delivered = wait_deliveries(&app, &only_id, 1, |d| d["status"] == "delivered").await;
    assert_eq!(only.len(), 1, "{only:?}");
    assert_eq!(only[0].event_type(), "connection.revoked");
    assert_ne!(only[0].webhook_id, log[4].webhook_id, "each webhook has its own message id");
    assert_eq!(delivered[0]["id"], only[0].webhook_id.as_str());

    // The delivery log: six delivered, one attempt each, with the receiver's status.
    let listed = wait_deliveries(&app, &all_id, 6, |d| d["status"] == "delivered").await;
    for d in &listed {
        let attempts = d["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "{d}");
        assert_eq!(
            (attempts[0]["outcome"].as_str(), attempts[0]["status_code"].as_i64()),
            (Some("delivered"), Some(204))
        );
        assert!(d["delivered_at"].is_string() && d["next_attempt_at"].is_null());
    }
    let filtered = app.get(&format!("/v1/webhooks/{all_id}/deliveries?event_type=connection.revoked")).await;
    assert_eq!(filtered.json["deliveries"].as_array().unwrap().len(), 1, "{}", filtered.text);
    let page = app.get(&format!("/v1/webhooks/{all_id}/deliveries?limit=4")).await;
    let cursor = page.json["next_cursor"].as_str().unwrap().to_owned();
    let rest = app.get(&format!("/v1/webhooks/{all_id}/deliveries?limit=4&cursor={cursor}")).await;
    assert_eq!(rest.json["deliveries"].as_array().unwrap().len(), 2, "{}", rest.text);

    // The secret is shown once: never by GET, never in the audit log.
    let listed = app.get("/v1/webhooks").await;
    assert_eq!(listed.json.as_array().unwrap().len(), 2);
    assert!(listed.json[0].get("secret").is_none() && !listed.text.contains("whsec_"));
    let one = app.get(&format!("/v1/webhooks/{all_id}")).await;
    assert_eq!(one.json["all_events"], true);
    assert_eq!(one.json["events"].as_array().unwrap().len(), 6);
    let audit = app.get("/v1/audit?event_type=webhook.created").await;
    assert_eq!(audit.json["entries"].as_array().unwrap().len(), 2);
    assert!(!audit.text.contains("whsec_"));
    app.assert_no_secret_in_responses();

    // Deleted: its deliveries go with it, and nothing more is sent to it.
    assert_eq!(app.delete(&format!("/v1/webhooks/{only_id}")).await.status, 204);
    assert_eq!(app.get(&format!("/v1/webhooks/{only_id}")).await.status, 404);
    assert_eq!(app.get(&format!("/v1/webhooks/{only_id}/deliveries")).await.status, 404);
    api_key_connection(&app, "after-delete").await;
    receiver.wait_for("all", WAIT, |l| l.len() == 7).await;
    assert_eq!(receiver.log("revoked").await.len(), 1);
    app.stop().await;
}

/// Moves Nexus's clock by `secs` and tells the receiver's verifier.
async fn advance(app: &TestApp, receiver: &Receiver, moved: &mut u64, secs: u64) {
    app.state.clock.advance(Duration::from_secs(secs));
    *moved += secs;
    receiver.set_clock_offset(*moved).await;
}

/// A receiver that is down for over a day gets every event once it is
/// back, each with the same webhook-id on every attempt; one that never
/// comes back ends `failed` after the schedule and can be redelivered.
async fn a_receiver_down_for_a_day_gets_every_event(backend: Backend) {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn(backend).await;
    let (back_id, back_secret) = webhook(&app, &receiver.url("back"), None).await;
    receiver.configure("back", &back_secret, "down", json!({})).await;
    let (gone_id, gone_secret) = webhook(&app, &receiver.url("gone"), None).await;
    receiver.configure("gone", &gone_secret, "down", json!({})).await;
    let mut connections = Vec::new();
    for i in 0..4 {
        connections.push(api_key_connection(&app, &format!("down-{i}")).await);
    }
    let schedule = nexus_server::services::webhook_sender::SCHEDULE;
    let mut moved = 0u64;
    // Attempt 1 now, then one retry per step of the schedule but the last.
    for attempt in 1..=schedule.len() {
        for (name, id) in [("back", &back_id), ("gone", &gone_id)] {
            let log = receiver.wait_for(name, WAIT, |l| l.len() == 4 * attempt).await;
            all_verified(&log);
            // Recorded (the retry is scheduled from when the attempt ended) before the clock moves.
            wait_deliveries(&app, id, 4, |d| {
                let a = d["attempts"].as_array().unwrap();
                a.len() == attempt && a.iter().all(|a| a["outcome"] == "http_status")
            })
            .await;
        }
        // Nothing is sent before the step is due.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(receiver.log("back").await.len(), 4 * attempt, "no retry before it is due");
        advance(&app, &receiver, &mut moved, (schedule[attempt - 1] as f64 * 1.1).ceil() as u64 + 1).await;
    }
    // 8th attempt: `back` answers now, `gone` still does not.
    receiver.configure("back", &back_secret, "ok", json!({})).await;
    let n = schedule.len() + 1;
    let back = receiver.wait_for("back", WAIT, |l| l.len() == 4 * n && l.iter().all(|r| r.answered.is_some())).await;
    let gone = receiver.wait_for("gone", WAIT, |l| l.len() == 4 * n).await;
    all_verified(&back);
    all_verified(&gone);
    assert!(moved >= 24 * 3600, "the receiver was down for {moved} s");
    // Every event, each id once per attempt, the same id on every attempt of one event.
    for log in [&back, &gone] {
        let mut by_connection: HashMap<&str, HashSet<&str>> = HashMap::new();
        for r in log.iter() {
            by_connection.entry(r.connection_id()).or_default().insert(&r.webhook_id);
        }
        assert_eq!(by_connection.len(), 4);
        for c in &connections {
            assert_eq!(by_connection[c.as_str()].len(), 1, "one webhook-id for every attempt of {c}");
        }
    }
    let delivered = wait_deliveries(&app, &back_id, 4, |d| d["status"] == "delivered").await;
    for d in &delivered {
        let outcomes: Vec<&str> =
            d["attempts"].as_array().unwrap().iter().map(|a| a["outcome"].as_str().unwrap()).collect();
        assert_eq!(outcomes.len(), n);
        assert!(
            outcomes[..n - 1].iter().all(|o| *o == "http_status") && outcomes[n - 1] == "delivered",
            "{outcomes:?}"
        );
        assert_eq!(d["attempts"][0]["status_code"], 503);
    }
    let failed = wait_deliveries(&app, &gone_id, 4, |d| d["status"] == "failed").await;
    assert!(failed.iter().all(|d| d["attempts"].as_array().unwrap().len() == n && d["next_attempt_at"].is_null()));
    // Redelivery on demand, once the receiver is back: same id, same body.
    receiver.configure("gone", &gone_secret, "ok", json!({})).await;
    let one = failed[0]["id"].as_str().unwrap();
    let again = app.post(&format!("/v1/webhooks/{gone_id}/deliveries/{one}/redeliver"), &json!({})).await;
    assert_eq!(again.status, 202, "{}", again.text);
    assert_eq!(again.json["status"], "pending");
    let log =
        receiver.wait_for("gone", WAIT, |l| l.len() == 4 * n + 1 && l.last().unwrap().answered == Some(204)).await;
    let last = log.last().unwrap();
    assert!(last.verified);
    assert_eq!(last.webhook_id, one);
    assert_eq!(last.payload, failed[0]["payload"]);
    let one_after = app.get(&format!("/v1/webhooks/{gone_id}/deliveries/{one}")).await;
    assert_eq!(one_after.json["status"], "delivered", "{}", one_after.text);
    assert_eq!(one_after.json["attempts"].as_array().unwrap().len(), n + 1);
    let audit = app.get("/v1/audit?event_type=webhook.redelivered").await;
    assert_eq!(audit.json["entries"][0]["data"]["delivery_id"], one);
    let unknown = app.post(&format!("/v1/webhooks/{gone_id}/deliveries/msg_unknown/redeliver"), &json!({})).await;
    assert_eq!(unknown.status, 404);
    app.stop().await;
}

/// Refused at registration, with nothing written; a slow receiver cannot
/// stall another webhook's deliveries; a redirect is never followed.
async fn hostile_receivers(backend: Backend) {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(backend, |c| c.webhook_timeout = Some("8".into())).await;
    let audit_before = app.audit_count().await;
    let long = format!("https://example.com/{}", "a".repeat(2100));
    for (body, field) in [
        (json!({"url": "http://receiver.example.com/hook"}), "url"),
        (json!({"url": "http://10.0.0.7/hook"}), "url"),
        (json!({"url": "http://169.254.169.254/latest/meta-data"}), "url"),
        (json!({"url": "ftp://127.0.0.1/hook"}), "url"),
        (json!({"url": "https://user:pw@example.com/hook"}), "url"),
        (json!({"url": "https://example.com/hook#x"}), "url"),
        (json!({"url": long}), "url"),
        (json!({"url": "/relative"}), "url"),
        (json!({"url": 7}), "url"),
        (json!({"url": "https://example.com/h", "events": ["connection.created"]}), "events[0]"),
        (json!({"url": "https://example.com/h", "events": []}), "events"),
        (json!({"url": "https://example.com/h", "events": vec!["nope"; 5000]}), "events"),
        (json!({"url": "https://example.com/h x"}), "url"),
        (json!({"url": "https://example.com/h", "events": ["connection.revoked", "connection.revoked"]}), "events[1]"),
        (json!({"url": "https://example.com/h", "secret": "hunter2"}), "secret"),
        (json!({"url": "https://example.com/h", "secret": "whsec_c2hvcnQ="}), "secret"),
        (json!({"url": "https://example.com/h", "description": "a\nb"}), "description"),
        (json!({"url": "https://example.com/h", "extra": 1}), "extra"),
    ] {
        let resp = app.post("/v1/webhooks", &body).await;
        assert_eq!((resp.status, resp.code()), (400, "invalid_input"), "{body}: {}", resp.text);
        let fields: Vec<&str> =
            resp.json["details"]["fields"].as_array().unwrap().iter().map(|f| f["field"].as_str().unwrap()).collect();
        assert!(fields.contains(&field), "{body}: {}", resp.text);
        assert!(!resp.text.contains("hunter2"));
    }
    assert_eq!(app.get("/v1/webhooks").await.json, json!([]));
    assert_eq!(app.audit_count().await, audit_before, "nothing written");

    let (slow_id, slow_secret) = webhook(&app, &receiver.url("slow"), None).await;
    receiver.configure("slow", &slow_secret, "slow", json!({"delay": 30})).await;
    // A redirect to another host (same receiver process, another name).
    let elsewhere = receiver.url("elsewhere").replace("127.0.0.1", "localhost");
    let (redirect_id, redirect_secret) = webhook(&app, &receiver.url("redirect"), None).await;
    receiver.configure("redirect", &redirect_secret, "redirect", json!({"location": elsewhere})).await;
    receiver.configure("elsewhere", &redirect_secret, "ok", json!({})).await;
    let (_fast_id, fast_secret) = webhook(&app, &receiver.url("fast"), None).await;
    receiver.configure("fast", &fast_secret, "ok", json!({})).await;

    for i in 0..12 {
        api_key_connection(&app, &format!("hostile-{i}")).await;
    }
    // The fast receiver has all twelve while the slow one holds its first attempts.
    let fast = receiver.wait_for("fast", WAIT, |l| l.len() == 12).await;
    all_verified(&fast);
    let slow = deliveries(&app, &slow_id).await;
    let finished =
        slow.iter().flat_map(|d| d["attempts"].as_array().unwrap()).filter(|a| a["outcome"] != "unfinished").count();
    assert_eq!(finished, 0, "the fast receiver was served within the slow one's first timeout: {slow:#?}");
    let started = slow.iter().map(|d| d["attempts"].as_array().unwrap().len()).sum::<usize>();
    assert!(started <= nexus_server::services::webhook_sender::PER_WEBHOOK, "{started} slow attempts in flight");
    // The slow attempts time out and are retried later; the redirect is refused.
    let slow = wait_deliveries_for(&app, &slow_id, 12, Duration::from_secs(60), |d| {
        d["attempts"].as_array().unwrap().first().is_some_and(|a| a["outcome"] == "timeout")
    })
    .await;
    assert_eq!(slow[0]["status"], "pending");
    assert!(slow[0]["attempts"][0]["error"].as_str().unwrap().contains("8 s"));
    let redirected =
        wait_deliveries(&app, &redirect_id, 12, |d| d["attempts"][0]["outcome"] == "redirect_refused").await;
    assert_eq!(redirected[0]["attempts"][0]["status_code"], 302);
    assert_eq!(redirected[0]["status"], "pending", "retried like any failure");
    assert!(receiver.log("elsewhere").await.is_empty(), "a redirect is never followed");
    all_verified(&receiver.log("redirect").await);
    app.stop().await;
}

both_backends!(every_event_is_delivered_signed, a_receiver_down_for_a_day_gets_every_event, hostile_receivers);

/// A consent page left alone: the housekeeping sweep fails the connection
/// (`expired`) and reports it, though nobody reads the connection again.
/// A webhook row written by a newer version (an event type this build does
/// not know) breaks no connection change.
async fn abandoned_consents_are_reported_and_odd_rows_break_nothing(backend: Backend) {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn(backend).await;
    let (_, secret) = webhook(&app, &receiver.url("failed"), Some(&["connection.failed"])).await;
    receiver.configure("failed", &secret, "ok", json!({})).await;
    let odd = "INSERT INTO webhooks (id, url, events, secret_enc, description, created_at, updated_at) \
               VALUES ('from-v9', 'https://hooks.example.com/x', '[\"connection.teleported\"]', 'v1:00000000:AAAA', NULL, 1, 1)";
    sqlx::query(odd).execute(app.store().pool()).await.unwrap();
    let provider =
        json!({"name": "svc", "auth_type": "api_key", "params": {"credential_schema": schema(&["api_key"])}});
    assert_eq!(app.post("/v1/providers", &provider).await.status, 201);
    let req = app
        .post(
            "/v1/request-connection",
            &json!({"workspace_id": "w9", "provider_name": "svc", "return_url": "https://app.example.test/"}),
        )
        .await;
    assert_eq!(req.status, 200, "{}", req.text);
    let id = req.json["connection_id"].as_str().unwrap().to_owned();
    // The user never comes back; the handshake's time passes.
    sqlx::query(&format!("UPDATE connections SET handshake_expires_at = 1 WHERE id = '{id}'"))
        .execute(app.store().pool())
        .await
        .unwrap();
    nexus_server::services::housekeeping::sweep(&app.state).await;
    let row = app.store().connection_by_id(&id).await.unwrap().unwrap();
    assert_eq!((row.status.as_str(), row.last_error.as_deref()), ("failed", Some("expired")));
    let log = receiver.wait_for("failed", WAIT, |l| !l.is_empty()).await;
    all_verified(&log);
    assert_eq!((log[0].event_type(), log[0].connection_id()), ("connection.failed", id.as_str()));
    assert_eq!(log[0].payload["data"]["error"], "expired");
    // A second sweep reports nothing more.
    nexus_server::services::housekeeping::sweep(&app.state).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.log("failed").await.len(), 1);
    // The odd row is listed with what this build understands of it, and other changes still go through.
    let listed = app.get("/v1/webhooks").await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    api_key_connection(&app, "still-works").await;
    app.stop().await;
}

both_backends!(abandoned_consents_are_reported_and_odd_rows_break_nothing);

/// A redelivery asked for while an attempt is under way is not undone when
/// that attempt fails: the next attempt follows at once, not at the old
/// schedule's next step (5 minutes here).
async fn a_redelivery_during_an_attempt_is_kept(backend: Backend) {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn(backend).await;
    let (hook, secret) = webhook(&app, &receiver.url("r"), None).await;
    receiver.configure("r", &secret, "down", json!({})).await;
    api_key_connection(&app, "redo").await;
    receiver.wait_for("r", WAIT, |l| l.len() == 1).await;
    wait_deliveries(&app, &hook, 1, |d| d["attempts"][0]["outcome"] == "http_status").await;
    // The second attempt is held at the receiver, then fails.
    receiver.configure("r", &secret, "hold_down", json!({})).await;
    receiver.hold().await;
    let mut moved = 0;
    advance(&app, &receiver, &mut moved, 7).await;
    receiver.wait_for("r", WAIT, |l| l.len() == 2).await;
    let id = deliveries(&app, &hook).await[0]["id"].as_str().unwrap().to_owned();
    let again = app.post(&format!("/v1/webhooks/{hook}/deliveries/{id}/redeliver"), &json!({})).await;
    assert_eq!(again.status, 202, "{}", again.text);
    receiver.configure("r", &secret, "ok", json!({})).await;
    receiver.release().await;
    // Without moving the clock: the redelivery's attempt comes now.
    let log = receiver.wait_for("r", WAIT, |l| l.len() == 3 && l[2].answered == Some(204)).await;
    all_verified(&log);
    assert!(log.iter().all(|r| r.webhook_id == id));
    let done = wait_deliveries(&app, &hook, 1, |d| d["status"] == "delivered").await;
    let outcomes: Vec<&str> =
        done[0]["attempts"].as_array().unwrap().iter().map(|a| a["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["http_status", "http_status", "delivered"]);
    app.stop().await;
}

both_backends!(a_redelivery_during_an_attempt_is_kept);
