//! The audit log: filters, paging, and a chain that never forks under
//! concurrent writers.

use crate::providers::github;
use nexus_testkit::{both_backends, Backend, TestApp};
use serde_json::json;

async fn audit_filters_and_cursor(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let started = chrono::Utc::now();
    for i in 0..7 {
        assert_eq!(app.post("/v1/providers", &github(&format!("p{i}"), "audit-secret-xyz")).await.status, 201);
    }
    let p0 = app.get("/v1/providers/p0").await.json["id"].as_str().unwrap().to_owned();
    app.patch("/v1/providers/p0", &json!({"description": "changed"})).await;
    app.delete("/v1/providers/p1").await;

    let all = app.get("/v1/audit").await;
    let entries = all.json["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 9);
    assert_eq!(entries[0]["event_type"], "provider.deleted", "newest first");
    assert!(all.json["next_cursor"].is_null());

    // Pages of 4 walk the whole log exactly once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/audit?limit=4&cursor={c}"),
            None => "/v1/audit?limit=4".into(),
        };
        let page = app.get(&path).await;
        assert_eq!(page.status, 200, "{}", page.text);
        for e in page.json["entries"].as_array().unwrap() {
            seen.push(e["seq"].as_i64().unwrap());
        }
        match page.json["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, (1..=9).rev().collect::<Vec<i64>>());

    let by_provider = app.get(&format!("/v1/audit?provider={p0}")).await;
    let events: Vec<&str> =
        by_provider.json["entries"].as_array().unwrap().iter().map(|e| e["event_type"].as_str().unwrap()).collect();
    assert_eq!(events, ["provider.updated", "provider.created"]);
    let by_name = app.get("/v1/audit?provider=p0&event_type=provider.updated").await;
    assert_eq!(by_name.json["entries"].as_array().unwrap().len(), 1);
    assert_eq!(by_name.json["entries"][0]["data"]["changed_fields"], json!(["description"]));

    let since = (started - chrono::Duration::seconds(5)).to_rfc3339();
    let windowed = app
        .send(
            app.client.get(app.url("/v1/audit")).header("x-api-key", &app.api_key).query(&[("since", since.as_str())]),
        )
        .await;
    assert_eq!(windowed.json["entries"].as_array().unwrap().len(), 9);
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let none = app
        .send(
            app.client.get(app.url("/v1/audit")).header("x-api-key", &app.api_key).query(&[("since", future.as_str())]),
        )
        .await;
    assert_eq!(none.json["entries"], json!([]));
    let until_past = app
        .send(
            app.client.get(app.url("/v1/audit")).header("x-api-key", &app.api_key).query(&[("until", since.as_str())]),
        )
        .await;
    assert_eq!(until_past.json["entries"], json!([]));

    let capped = app.get("/v1/audit?limit=5000").await;
    assert_eq!(capped.status, 200);
    assert!(!all.text.contains("audit-secret-xyz"));
}

async fn concurrent_writers_keep_one_chain(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let writes = (0..40).map(|i| {
        let app = &app;
        async move {
            if i % 4 == 0 {
                // Rejected requests append audit rows too.
                app.send(app.client.get(app.url("/v1/providers")).header("x-api-key", "wrong")).await.status
            } else {
                app.post("/v1/providers", &github(&format!("c{i}"), "concurrent-secret")).await.status
            }
        }
    });
    let statuses = futures::future::join_all(writes).await;
    assert!(statuses.iter().all(|s| *s == 201 || *s == 401), "{statuses:?}");
    // Rejections go through the batch writer and merge per caller and reason.
    app.state.flush_audit().await;
    let rows = app.store().list_audit(&nexus_store::AuditFilter { limit: 100, ..Default::default() }).await.unwrap();
    let (rejected, created): (Vec<_>, Vec<_>) = rows.entries.iter().partition(|r| r.event_type == "auth.rejected");
    assert_eq!(created.len(), 30);
    assert_eq!(rejected.iter().map(|r| r.data["count"].as_u64().unwrap()).sum::<u64>(), 10, "every rejection counted");
    assert_eq!(app.audit_count().await, rows.entries.len() as i64);
    let report = app.store().verify_audit_chain(Some(&app.state.config.audit_keys), None).await.unwrap();
    assert_eq!(report.rows_checked, rows.entries.len() as i64);
    assert_eq!(report.first_broken, None);
}

both_backends!(audit_filters_and_cursor, concurrent_writers_keep_one_chain);

/// PostgreSQL's backends are terminated again and again while agents fetch
/// tokens and an operator edits a provider: every answered retrieval and
/// every accepted edit has its audit row, refused requests are 503 (never a
/// 500 or a success without a row), and the chain still verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_audit_row_is_lost_while_the_database_drops_connections() {
    nexus_testkit::run_bounded(async {
        use nexus_testkit::upstream::{schema, static_connection};
        use sqlx::Connection;
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let app = Arc::new(TestApp::spawn(Backend::Postgres).await);
        let provider = json!({"auth_type": "api_key", "params": {"credential_schema": schema(&["api_key"])}});
        let id = static_connection(&app, "outage", provider, json!({"api_key": "k-outage-1"})).await;
        let database = app.db.url().rsplit('/').next().unwrap().to_owned();
        let running = Arc::new(AtomicBool::new(true));

        let mut agents = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let (app, id, running) = (app.clone(), id.clone(), running.clone());
            agents.spawn(async move {
                let (mut served, mut refused) = (0u64, Vec::new());
                while running.load(Ordering::SeqCst) {
                    let url = app.url(&format!("/v1/token/{id}"));
                    match app.client.get(url).header("x-api-key", &app.api_key).send().await {
                        Ok(r) if r.status() == 200 => served += 1,
                        Ok(r) => refused.push(r.status().as_u16()),
                        Err(_) => refused.push(0),
                    }
                }
                (served, refused)
            });
        }
        let editor = {
            let (app, running) = (app.clone(), running.clone());
            tokio::spawn(async move {
                let (mut accepted, mut refused, mut n) = (0u64, Vec::new(), 0);
                while running.load(Ordering::SeqCst) {
                    n += 1;
                    let req = app
                        .client
                        .patch(app.url("/v1/providers/outage"))
                        .header("x-api-key", &app.api_key)
                        .json(&json!({"description": format!("edit {n}")}));
                    match req.send().await {
                        Ok(r) if r.status() == 200 => accepted += 1,
                        Ok(r) => refused.push(r.status().as_u16()),
                        Err(_) => refused.push(0),
                    }
                }
                (accepted, refused)
            })
        };
        let mut terminated = 0;
        for _ in 0..10 {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            let mut admin = sqlx::PgConnection::connect(&nexus_testkit::db::pg_admin_url()).await.unwrap();
            let rows = sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            )
            .bind(&database)
            .fetch_all(&mut admin)
            .await
            .unwrap();
            terminated += rows.len();
            let _ = admin.close().await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        running.store(false, Ordering::SeqCst);
        let (mut served, mut refused) = (0, Vec::new());
        while let Some(done) = agents.join_next().await {
            let (s, r) = done.unwrap();
            served += s;
            refused.extend(r);
        }
        let (accepted, edit_refused) = editor.await.unwrap();
        refused.extend(edit_refused);
        assert!(terminated > 0, "backends were terminated");
        assert!(served > 0 && accepted > 0, "requests got through between outages: {served} {accepted}");
        assert!(refused.iter().all(|s| *s == 503), "refused only with 503: {refused:?}");

        app.state.flush_audit().await;
        use sqlx::Row;
        let pool = app.store().pool();
        let retrievals: i64 =
            sqlx::query("SELECT data FROM audit_log WHERE event_type = 'token.retrieved' AND connection_id = $1")
                .bind(&id)
                .fetch_all(pool)
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    serde_json::from_str::<serde_json::Value>(&r.get::<String, _>("data")).unwrap()["count"]
                        .as_i64()
                        .unwrap_or(1)
                })
                .sum();
        let edits: i64 = sqlx::query("SELECT COUNT(*) AS n FROM audit_log WHERE event_type = 'provider.updated'")
            .fetch_one(pool)
            .await
            .unwrap()
            .get("n");
        println!(
            "{terminated} backends terminated; {served} retrievals, {accepted} edits answered; {} refused with 503",
            refused.len()
        );
        assert_eq!(retrievals as u64, served, "a row for every answered retrieval");
        assert_eq!(edits as u64, accepted, "a row for every accepted edit");
        let report = app.store().verify_audit_chain(Some(&app.state.config.audit_keys), None).await.unwrap();
        assert_eq!(report.first_broken, None);
    })
    .await;
}
