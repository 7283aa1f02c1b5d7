//! Two servers on one PostgreSQL: a change made through one replica reaches
//! the other's token cache at once (NOTIFY in the writing transaction).

use nexus_testkit::{Backend, TestApp};
use serde_json::json;
use std::time::{Duration, Instant};

async fn captured_connection(app: &TestApp, provider: &str) -> String {
    let schema = json!({"type": "object", "required": ["api_key"], "properties": {"api_key": {"type": "string"}}});
    let created = app
        .post(
            "/v1/providers",
            &json!({"name": provider, "auth_type": "api_key", "params": {"credential_schema": schema}}),
        )
        .await;
    assert_eq!(created.status, 201);
    let req = app
        .post(
            "/v1/request-connection",
            &json!({"workspace_id": "w", "provider_name": provider, "return_url": "https://example.com/"}),
        )
        .await;
    let done = app
        .send(
            app.client
                .post(app.url("/v1/capture-credential"))
                .header("x-api-key", &app.api_key)
                .header("accept", "application/json")
                .json(&json!({"state": req.json["state"], "credentials": {"api_key": "replica-key-1"}})),
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.text);
    done.json["connection_id"].as_str().unwrap().to_owned()
}

/// Polls `GET /v1/token/{id}` on `app` until it answers `status`; returns how long it took.
async fn until_status(app: &TestApp, id: &str, status: u16) -> Duration {
    let started = Instant::now();
    loop {
        if app.get(&format!("/v1/token/{id}")).await.status == status {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(5), "replica still serves the old answer");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_on_one_replica_invalidate_the_others_token_cache() {
    nexus_testkit::run_bounded(async {
        let a = TestApp::spawn(Backend::Postgres).await;
        let b = a.spawn_replica().await;

        let revoked = captured_connection(&a, "first").await;
        assert_eq!(b.get(&format!("/v1/token/{revoked}")).await.status, 200); // now cached on b
        assert_eq!(b.get(&format!("/v1/token/{revoked}")).await.status, 200);
        assert_eq!(a.delete(&format!("/v1/connections/{revoked}")).await.status, 200);
        let took = until_status(&b, &revoked, 409).await;
        assert!(took < Duration::from_secs(2), "revocation reached the replica in {took:?}, not after the cache TTL");

        let orphan = captured_connection(&a, "second").await;
        assert_eq!(b.get(&format!("/v1/token/{orphan}")).await.status, 200);
        assert_eq!(a.delete("/v1/providers/second").await.status, 200);
        let took = until_status(&b, &orphan, 410).await;
        assert!(took < Duration::from_secs(2), "provider deletion reached the replica in {took:?}");
    })
    .await;
}
