//! Single-flight refresh across three `nexus serve` processes on one
//! PostgreSQL (and one process on SQLite), against `oidc-provider` with
//! rotating refresh tokens: every round, 200 concurrent `GET /v1/token` see
//! one new access token and the provider sees exactly one refresh grant. A
//! replica killed with SIGKILL does not stop the others.

use nexus_testkit::oidc::{authorize_via_browser, OidcOptions, OidcProvider};
use nexus_testkit::process::Server;
use nexus_testkit::{Backend, TestDb};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_nexus");
const API_KEY: &str = "replica-test-api-key-0123456789";
const WINDOW: i64 = 1;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

struct Cluster {
    servers: Vec<Server>,
    idp: OidcProvider,
    connection_id: String,
    /// What the servers were started with (to start another).
    env: Vec<(&'static str, String)>,
    _db: TestDb,
    dir: tempfile::TempDir,
}

impl Cluster {
    async fn start_server(&self) -> Server {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Server::start(BIN, self.dir.path(), &env, &[]).await
    }
}

async fn cluster(backend: Backend, replicas: usize) -> Cluster {
    cluster_refreshing_every(backend, replicas, "3600").await
}

/// `replicas` servers on one fresh database, their refresher ticking every
/// `interval` seconds; the environment they were started with.
type Servers = (Vec<Server>, Vec<(&'static str, String)>, TestDb, tempfile::TempDir);

async fn servers(backend: Backend, replicas: usize, interval: &str) -> Servers {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(backend).await.unwrap();
    let (enc, state) = (nexus_vault::generate_key(), nexus_vault::generate_key());
    let owned: Vec<(&'static str, String)> = vec![
        ("API_KEY", API_KEY.to_owned()),
        ("ENCRYPTION_KEY", enc),
        ("STATE_KEY", state),
        ("AUDIT_KEYS", nexus_vault::generate_key()),
        ("DATABASE_URL", db.url().to_owned()),
        ("REFRESH_WINDOW", "1".to_owned()),
        ("REFRESH_INTERVAL", interval.to_owned()),
    ];
    let env: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut servers = Vec::new();
    for _ in 0..replicas {
        servers.push(Server::start(BIN, dir.path(), &env, &[]).await);
    }
    (servers, owned, db, dir)
}

/// A cluster whose background refresher ticks every `interval` seconds.
async fn cluster_refreshing_every(backend: Backend, replicas: usize, interval: &str) -> Cluster {
    let (servers, owned, db, dir) = self::servers(backend, replicas, interval).await;
    let redirect_uris: Vec<String> = servers.iter().map(|s| s.url("/auth/callback")).collect();
    let idp = OidcProvider::start(OidcOptions {
        clients: json!([{
            "client_id": "nexus-client", "client_secret": "replica-client-secret",
            "redirect_uris": redirect_uris, "token_endpoint_auth_method": "client_secret_post",
            "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
        }]),
        access_token_ttl: 3,
        rotate_refresh_token: true,
        ..OidcOptions::default()
    })
    .await
    .unwrap();
    let c = client();
    let a = &servers[0];
    let created = c
        .post(a.url("/v1/providers"))
        .header("x-api-key", API_KEY)
        .json(&json!({"name": "idp", "auth_type": "oauth2", "client_id": "nexus-client", "client_secret": "replica-client-secret",
            "issuer": idp.issuer(), "enable_discovery": true, "scopes": ["openid", "offline_access"],
            "params": {"authorization_params": {"prompt": "consent"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let req: Value = c
        .post(a.url("/v1/request-connection"))
        .header("x-api-key", API_KEY)
        .json(&json!({"workspace_id": "w", "provider_name": "idp", "return_url": "https://app.example.test/done"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cb = authorize_via_browser(req["auth_url"].as_str().unwrap(), "alice", true, &a.url("/auth/callback"))
        .await
        .unwrap();
    let done = c.get(cb.as_str()).send().await.unwrap();
    assert!(done.headers()["location"].to_str().unwrap().contains("status=success"));
    let connection_id = req["connection_id"].as_str().unwrap().to_owned();
    Cluster { servers, idp, connection_id, env: owned, _db: db, dir }
}

/// The expiry the servers currently hold, from one token answer.
async fn expires_at(server: &Server, id: &str) -> i64 {
    let v: Value = client()
        .get(server.url(&format!("/v1/token/{id}")))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["expires_at"].as_i64().unwrap()
}

/// One round: wait for the refresh window, fire `n` concurrent requests spread
/// over `servers`, return the access tokens of the successful answers and the
/// number of failures.
async fn round(servers: &[&Server], id: &str, n: usize) -> (HashSet<String>, usize, usize) {
    let due = expires_at(servers[0], id).await - WINDOW;
    let wait = due - chrono::Utc::now().timestamp() + 1;
    if wait > 0 {
        tokio::time::sleep(Duration::from_secs(wait as u64)).await;
    }
    let c = client();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let url = servers[i % servers.len()].url(&format!("/v1/token/{id}"));
        let c = c.clone();
        tasks.spawn(async move {
            match c.get(url).header("x-api-key", API_KEY).send().await {
                Ok(r) if r.status() == 200 => {
                    Ok(r.json::<Value>().await.unwrap()["credentials"]["access_token"].as_str().unwrap().to_owned())
                }
                Ok(r) => Err(format!("status {}: {}", r.status(), r.text().await.unwrap_or_default())),
                Err(e) => Err(format!("transport: {e}")),
            }
        });
    }
    let (mut tokens, mut ok, mut failed) = (HashSet::new(), 0, 0);
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(t) => {
                tokens.insert(t);
                ok += 1;
            }
            Err(e) => {
                eprintln!("request failed: {e}");
                failed += 1;
            }
        }
    }
    (tokens, ok, failed)
}

async fn single_flight(backend: Backend, replicas: usize, rounds: usize) {
    let cl = cluster(backend, replicas).await;
    let servers: Vec<&Server> = cl.servers.iter().collect();
    let mut seen = HashSet::new();
    for r in 0..rounds {
        cl.idp.reset().await.unwrap();
        let (tokens, ok, failed) = round(&servers, &cl.connection_id, 200).await;
        assert_eq!((ok, failed), (200, 0), "round {r}");
        assert_eq!(tokens.len(), 1, "round {r}: every answer carries the same new token");
        let token = tokens.into_iter().next().unwrap();
        assert!(seen.insert(token), "round {r}: the token is new");
        assert_eq!(cl.idp.stats().await.unwrap().refresh_requests, 1, "round {r}: exactly one refresh grant");
    }
    let check: Value = client()
        .get(servers[0].url(&format!("/v1/check-connection/{}", cl.connection_id)))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(check["status"], "active");
    for s in cl.servers {
        let (code, logs) = s.terminate().await;
        assert_eq!(code, 0);
        assert!(!logs.contains("replica-client-secret"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_is_single_flight_across_three_replicas_on_postgres() {
    tokio::time::timeout(Duration::from_secs(170), single_flight(Backend::Postgres, 3, 20)).await.expect("bounded");
}

/// The client credentials grant (SPEC 11) renewed the same way: three
/// replicas, 200 concurrent callers per round, one grant per expiry.
async fn client_credentials_single_flight(rounds: usize) {
    let (servers, _env, _db, _dir) = servers(Backend::Postgres, 3, "3600").await;
    let idp = OidcProvider::start(OidcOptions {
        clients: json!([{"client_id": "machine", "client_secret": "replica-machine-secret",
            "token_endpoint_auth_method": "client_secret_basic", "grant_types": ["client_credentials"],
            "response_types": [], "redirect_uris": [], "scope": "api:read"}]),
        access_token_ttl: 3,
        extra_scopes: vec!["api:read".into()],
        ..OidcOptions::default()
    })
    .await
    .unwrap();
    let c = client();
    let created = c
        .post(servers[0].url("/v1/providers"))
        .header("x-api-key", API_KEY)
        .json(&json!({"name": "machine", "auth_type": "oauth2_client_credentials", "client_id": "machine",
            "client_secret": "replica-machine-secret", "auth_header": "client_secret_basic",
            "token_url": idp.url("/token"), "scopes": ["api:read"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let connected = c
        .post(servers[1].url("/v1/request-connection"))
        .header("x-api-key", API_KEY)
        .json(&json!({"workspace_id": "w", "provider_name": "machine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(connected.status(), 201);
    let id = connected.json::<Value>().await.unwrap()["connection_id"].as_str().unwrap().to_owned();
    let replicas: Vec<&Server> = servers.iter().collect();
    let mut seen = HashSet::new();
    for r in 0..rounds {
        idp.reset().await.unwrap();
        let (tokens, ok, failed) = round(&replicas, &id, 200).await;
        assert_eq!((ok, failed), (200, 0), "round {r}");
        assert_eq!(tokens.len(), 1, "round {r}: every answer carries the same new token");
        assert!(seen.insert(tokens.into_iter().next().unwrap()), "round {r}: the token is new");
        assert_eq!(idp.stats().await.unwrap().client_credentials_requests, 1, "round {r}: exactly one grant");
    }
    for s in servers {
        let (code, logs) = s.terminate().await;
        assert_eq!(code, 0);
        assert!(!logs.contains("replica-machine-secret"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_renewal_is_single_flight_across_three_replicas_on_postgres() {
    tokio::time::timeout(Duration::from_secs(120), client_credentials_single_flight(8)).await.expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_is_single_flight_in_one_process_on_sqlite() {
    tokio::time::timeout(Duration::from_secs(170), single_flight(Backend::Sqlite, 1, 20)).await.expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_does_not_stop_the_others() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let mut cl = cluster(Backend::Postgres, 3).await;
        let id = cl.connection_id.clone();
        {
            let servers: Vec<&Server> = cl.servers.iter().collect();
            let (tokens, ok, _) = round(&servers, &id, 60).await;
            assert_eq!((tokens.len(), ok), (1, 60));
        }
        // Mid-test, one replica dies without any cleanup, while requests are in flight.
        let victim = cl.servers.pop().unwrap();
        let c = client();
        let in_flight: Vec<_> = (0..20)
            .map(|_| {
                let (c, url) = (c.clone(), victim.url(&format!("/v1/token/{id}")));
                tokio::spawn(async move {
                    c.get(url).header("x-api-key", API_KEY).send().await.map(|r| r.status().as_u16())
                })
            })
            .collect();
        victim.kill().await;
        for t in in_flight {
            let _ = t.await; // answered or cut off: either is fine for the dead replica
        }
        let survivors: Vec<&Server> = cl.servers.iter().collect();
        for r in 0..3 {
            cl.idp.reset().await.unwrap();
            let (tokens, ok, failed) = round(&survivors, &id, 100).await;
            assert_eq!((ok, failed, tokens.len()), (100, 0, 1), "round {r} after the kill");
            assert_eq!(cl.idp.stats().await.unwrap().refresh_requests, 1);
        }
    })
    .await
    .expect("bounded");
}

/// SIGTERM while the background refresher waits on a slow token endpoint
/// of a provider that rotates refresh tokens: the refresh finishes and the
/// rotated token is stored before the process exits, so after a restart
/// the connection still refreshes (aborted, the provider would have
/// rotated a token Nexus never stored, and the next refresh would be
/// refused).
async fn sigterm_lets_a_background_refresh_finish(backend: Backend) {
    let mut cl = cluster_refreshing_every(backend, 1, "1").await;
    let id = cl.connection_id.clone();
    cl.idp.reset().await.unwrap();
    cl.idp.delay_token_endpoint(4000, 1).await.unwrap();
    // The refresher picks the connection up a second before expiry (3 s
    // tokens, a 1 s window, a tick a second) and waits on the provider.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while cl.idp.stats().await.unwrap().refresh_requests == 0 {
        assert!(std::time::Instant::now() < deadline, "the refresher never asked the provider");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopped_at = std::time::Instant::now();
    let (code, logs) = cl.servers.pop().unwrap().terminate().await;
    let took = stopped_at.elapsed();
    assert_eq!(code, 0, "{logs}");
    assert!(took >= Duration::from_millis(2500), "it waited for the refresh to finish: {took:?}");
    println!("stopped {took:?} after SIGTERM, with the refresh finished");

    let server = cl.start_server().await;
    cl.idp.reset().await.unwrap();
    // The next refresh (on demand or in the background) uses the stored
    // refresh token: the answer's access token changes, and the
    // connection stays active.
    let token = |server: &Server| {
        let url = server.url(&format!("/v1/token/{id}"));
        async move {
            let resp = client().get(url).header("x-api-key", API_KEY).send().await.unwrap();
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap();
            assert_eq!(status, 200, "{body}");
            body["credentials"]["access_token"].as_str().unwrap().to_owned()
        }
    };
    let before = token(&server).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while token(&server).await == before {
        assert!(std::time::Instant::now() < deadline, "no refresh after the restart");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(cl.idp.stats().await.unwrap().refresh_requests >= 1);
    let check: Value = client()
        .get(server.url(&format!("/v1/check-connection/{id}")))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(check["status"], "active");
    let (code, _) = server.terminate().await;
    assert_eq!(code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_background_refresh_finish_on_sqlite() {
    tokio::time::timeout(Duration::from_secs(120), sigterm_lets_a_background_refresh_finish(Backend::Sqlite))
        .await
        .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_background_refresh_finish_on_postgres() {
    tokio::time::timeout(Duration::from_secs(120), sigterm_lets_a_background_refresh_finish(Backend::Postgres))
        .await
        .expect("bounded");
}
