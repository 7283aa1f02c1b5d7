//! Webhooks across three `nexus serve` processes on one PostgreSQL, one of
//! them killed (SIGKILL) while it is sending: every event is delivered and
//! acknowledged, the killed replica's attempts are sent again by another
//! with the same `webhook-id`, and no attempt is ever sent twice. Every
//! delivery is verified by the PyPI `standardwebhooks` library.

use nexus_testkit::process::Server;
use nexus_testkit::webhook_receiver::Receiver;
use nexus_testkit::{Backend, TestDb};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_nexus");
const API_KEY: &str = "webhook-replica-test-api-key-0123";
const EVENTS: usize = 30;
/// Per process, one webhook (`webhook_sender::PER_WEBHOOK`).
const IN_FLIGHT: usize = 4;

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

async fn call(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut req = client().request(method, url).header("x-api-key", API_KEY);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_delivery_loses_no_event() {
    nexus_testkit::run_bounded(async {
        let receiver = Receiver::start().await;
        let dir = tempfile::tempdir().unwrap();
        let db = TestDb::new(Backend::Postgres).await.unwrap();
        let owned: Vec<(&str, String)> = vec![
            ("API_KEY", API_KEY.to_owned()),
            ("ENCRYPTION_KEY", nexus_vault::generate_key()),
            ("STATE_KEY", nexus_vault::generate_key()),
            ("AUDIT_KEYS", nexus_vault::generate_key()),
            ("DATABASE_URL", db.url().to_owned()),
            // Held attempts stay well within it; a lease of 2 × 10 + 5 = 25 s
            // is how long a dead replica's attempts wait.
            ("WEBHOOK_TIMEOUT", "10".to_owned()),
        ];
        let env: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut servers = Vec::new();
        for _ in 0..3 {
            servers.push(Server::start(BIN, dir.path(), &env, &[]).await);
        }
        let b = servers[1].base_url.clone();

        let (status, hook) =
            call(reqwest::Method::POST, format!("{b}/v1/webhooks"), Some(json!({"url": receiver.url("r")}))).await;
        assert_eq!(status, 201, "{hook}");
        let webhook_id = hook["id"].as_str().unwrap().to_owned();
        receiver.configure("r", hook["secret"].as_str().unwrap(), "hold", json!({})).await;
        receiver.hold().await;
        let provider = json!({"name": "svc", "auth_type": "api_key",
                              "params": {"credential_schema": nexus_testkit::upstream::schema(&["api_key"])}});
        let (status, created) = call(reqwest::Method::POST, format!("{b}/v1/providers"), Some(provider)).await;
        assert_eq!(status, 201, "{created}");
        // Each revocation is one event; they are made at once, through all three replicas.
        let mut connections = Vec::new();
        for i in 0..EVENTS {
            let (status, req) = call(
                reqwest::Method::POST,
                servers[i % 3].url("/v1/request-connection"),
                Some(json!({"workspace_id": format!("w{i}"), "provider_name": "svc", "return_url": "https://app.example.test/"})),
            )
            .await;
            assert_eq!(status, 200, "{req}");
            connections.push(req["connection_id"].as_str().unwrap().to_owned());
        }
        let mut revocations = tokio::task::JoinSet::new();
        for (i, id) in connections.iter().enumerate() {
            let url = servers[i % 3].url(&format!("/v1/connections/{id}"));
            revocations.spawn(call(reqwest::Method::DELETE, url, None));
        }
        while let Some(done) = revocations.join_next().await {
            assert_eq!(done.unwrap().0, 200);
        }
        // Each process holds at most IN_FLIGHT attempts for one webhook, so
        // with 3 × IN_FLIGHT held every replica, the one about to die
        // included, is in the middle of IN_FLIGHT deliveries.
        receiver.wait_for("r", Duration::from_secs(20), |l| l.len() >= 3 * IN_FLIGHT).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let held = receiver.log("r").await;
        let dump: Vec<String> = held.iter().map(|r| format!("{} {:?} {} {:?} {:?}", r.webhook_id, r.answered, r.abandoned, r.error, r.user_agent)).collect();
        assert_eq!(held.len(), 3 * IN_FLIGHT, "no process goes past its limit: {dump:#?}");
        servers.remove(0).kill().await;
        let abandoned = receiver
            .wait_for("r", Duration::from_secs(10), |l| l.iter().filter(|r| r.abandoned).count() == IN_FLIGHT)
            .await;
        let lost: HashSet<String> = abandoned.iter().filter(|r| r.abandoned).map(|r| r.webhook_id.clone()).collect();
        assert_eq!(lost.len(), IN_FLIGHT);
        receiver.release().await;

        // Every event acknowledged, the killed replica's after its lease passed.
        let log = receiver
            .wait_for("r", Duration::from_secs(60), |l| {
                let acked: HashSet<&str> =
                    l.iter().filter(|r| r.answered == Some(204)).map(|r| r.connection_id()).collect();
                acked.len() == EVENTS
            })
            .await;
        for r in &log {
            assert!(r.verified, "verified by standardwebhooks: {r:?}");
            assert_eq!(r.event_type(), "connection.revoked");
        }
        let acked: HashSet<&str> = log.iter().filter(|r| r.answered == Some(204)).map(|r| r.connection_id()).collect();
        assert_eq!(acked, connections.iter().map(String::as_str).collect::<HashSet<_>>());
        for id in &lost {
            assert!(
                log.iter().any(|r| &r.webhook_id == id && r.answered == Some(204)),
                "{id} was sent again with the same webhook-id"
            );
        }

        // The delivery log agrees: all delivered; no attempt was sent twice
        // (the receiver never saw an id more often than it has attempts).
        let end = tokio::time::Instant::now() + Duration::from_secs(20);
        let deliveries = loop {
            let (status, page) =
                call(reqwest::Method::GET, format!("{b}/v1/webhooks/{webhook_id}/deliveries?limit=100"), None).await;
            assert_eq!(status, 200);
            let all = page["deliveries"].as_array().unwrap().clone();
            if all.len() == EVENTS && all.iter().all(|d| d["status"] == "delivered") {
                break all;
            }
            assert!(tokio::time::Instant::now() < end, "not all delivered: {all:#?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for r in &log {
            *seen.entry(r.webhook_id.as_str()).or_default() += 1;
        }
        for d in &deliveries {
            let id = d["id"].as_str().unwrap();
            let attempts = d["attempts"].as_array().unwrap();
            let numbers: Vec<i64> = attempts.iter().map(|a| a["attempt"].as_i64().unwrap()).collect();
            assert_eq!(numbers, (1..=attempts.len() as i64).collect::<Vec<_>>());
            assert!(seen[id] <= attempts.len(), "{id}: received {} times, {} attempts", seen[id], attempts.len());
            if lost.contains(id) {
                assert_eq!(attempts[0]["outcome"], "unfinished", "the dead replica's attempt: {d}");
                assert_eq!(attempts.last().unwrap()["outcome"], "delivered");
            }
        }
        for s in servers {
            s.kill().await;
        }
    })
    .await;
}
