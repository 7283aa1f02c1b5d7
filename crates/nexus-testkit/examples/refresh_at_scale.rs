//! The refresher at scale (`bench/refresh-at-scale.sh`): CONNECTIONS OAuth2
//! connections across 5 providers, one of which hangs on every refresh, all
//! due within the same minute and expiring 30 s after the last is due,
//! renewed by REPLICAS `nexus serve` processes on one PostgreSQL.
//!
//! The providers are local token endpoints that answer a refresh after
//! LATENCY_MS (the fifth never answers). The connections are written
//! straight into the database, sealed with the servers' keys, as consent
//! would have left them. It reports how many of the non-hanging providers'
//! connections were renewed before they expired, refreshes per second, and
//! the most provider calls in flight at once.
//!
//!   refresh_at_scale <nexus binary> <replicas> <connections> <latency ms>

use nexus_store::{ConnectionRow, NewAudit, Store};
use nexus_testkit::process::Server;
use nexus_testkit::{Backend, TestDb};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PROVIDERS: usize = 5;
/// Every connection is due within this many seconds of the start.
const DUE_SPREAD: i64 = 60;
/// ... starting this many seconds after the start (time to start the replicas).
const DUE_FROM: i64 = 20;
/// And expires this long after the last one is due.
const MARGIN: i64 = 30;

#[derive(Default)]
struct Calls {
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    answered: AtomicUsize,
}

struct InFlight(Arc<Calls>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A token endpoint answering refreshes after `latency` (or never).
async fn token_endpoint(latency: Option<Duration>, calls: Arc<Calls>) -> std::net::SocketAddr {
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(move || {
            let calls = calls.clone();
            async move {
                let n = calls.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                calls.peak.fetch_max(n, Ordering::SeqCst);
                let _in_flight = InFlight(calls.clone());
                match latency {
                    Some(latency) => tokio::time::sleep(latency).await,
                    None => std::future::pending::<()>().await,
                }
                calls.answered.fetch_add(1, Ordering::SeqCst);
                axum::Json(json!({"access_token": "at-renewed", "token_type": "Bearer", "expires_in": 3600, "refresh_token": "rt-renewed"}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("bound");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, bin, replicas, connections, latency_ms] = args.as_slice() else {
        anyhow::bail!("usage: refresh_at_scale <nexus binary> <replicas> <connections> <latency ms>");
    };
    let (replicas, connections, latency): (usize, usize, u64) =
        (replicas.parse()?, connections.parse()?, latency_ms.parse()?);
    // The servers run in a directory of their own.
    let bin = std::fs::canonicalize(bin)?;
    let bin = bin.to_str().ok_or_else(|| anyhow::anyhow!("the binary's path is not UTF-8"))?;
    let dir = tempfile::tempdir()?;
    let db = TestDb::new(Backend::Postgres).await?;
    let (enc, state, audit, api) = (
        nexus_vault::generate_key(),
        nexus_vault::generate_key(),
        nexus_vault::generate_key(),
        "bench-api-key-0123456789abcdef".to_owned(),
    );
    let passed: Vec<(&str, String)> = ["REFRESH_CONCURRENCY", "REFRESH_PER_HOST"]
        .into_iter()
        .filter_map(|var| std::env::var(var).ok().map(|v| (var, v)))
        .collect();
    let mut base_env: Vec<(&str, &str)> = vec![
        ("API_KEY", api.as_str()),
        ("ENCRYPTION_KEY", enc.as_str()),
        ("STATE_KEY", state.as_str()),
        ("AUDIT_KEYS", audit.as_str()),
        ("DATABASE_URL", db.url()),
        ("REFRESH_WINDOW", "60"),
    ];
    base_env.extend(passed.iter().map(|(k, v)| (*k, v.as_str())));

    // The providers, registered through one server whose refresher is idle.
    let fast = Arc::new(Calls::default());
    let hung = Arc::new(Calls::default());
    let mut provider_ids = Vec::new();
    {
        let mut env = base_env.clone();
        env.push(("REFRESH_INTERVAL", "3600"));
        let setup = Server::start(bin, dir.path(), &env, &[]).await;
        let http = reqwest::Client::new();
        for p in 0..PROVIDERS {
            let hangs = p == PROVIDERS - 1;
            let addr = token_endpoint(
                (!hangs).then(|| Duration::from_millis(latency)),
                if hangs { hung.clone() } else { fast.clone() },
            )
            .await;
            let body = json!({"name": format!("p{p}"), "auth_type": "oauth2", "client_id": "c", "client_secret": "bench-secret",
                "auth_url": format!("http://{addr}/authorize"), "token_url": format!("http://{addr}/token"), "scopes": ["x"]});
            let created: serde_json::Value = http
                .post(setup.url("/v1/providers"))
                .header("x-api-key", &api)
                .json(&body)
                .send()
                .await?
                .json()
                .await?;
            provider_ids.push(created["id"].as_str().expect("a provider id").to_owned());
        }
        setup.terminate().await;
    }

    // The connections, as consent leaves them, due over one minute.
    let keyring = nexus_vault::KeyRing::from_base64(&[enc.as_str()])?;
    let store = Store::connect(db.url())
        .await?
        .with_audit_keys(Arc::new(nexus_vault::AuditKeys::from_base64(&[audit.as_str()])?));
    let started = Instant::now();
    let mut ids_by_provider = vec![Vec::new(); PROVIDERS];
    for n in 0..connections {
        let p = n % PROVIDERS;
        let id = uuid::Uuid::new_v4().to_string();
        let seal = |field: &str, value: &str| keyring.seal(&format!("connection:{id}:{field}"), value.as_bytes());
        let now = chrono::Utc::now().timestamp_micros();
        let row = ConnectionRow {
            workspace_id: format!("w{n}"),
            status: nexus_core::ConnectionStatus::Active,
            return_url: "https://app.example.test/".into(),
            credentials_enc: Some(seal("credentials", r#"{"access_token":"at-0","token_type":"Bearer","scope":"x"}"#)),
            refresh_token_enc: Some(seal("refresh_token", &format!("rt-{n}"))),
            created_at: now,
            updated_at: now,
            ..ConnectionRow::pending(id.clone(), provider_ids[p].clone(), format!("p{p}"), nexus_core::AuthType::Oauth2)
        };
        let audit = NewAudit { data: json!({}), ..NewAudit::new(nexus_core::AuditEvent::ConnectionActivated) };
        store.insert_connection(&row, audit).await?;
        ids_by_provider[p].push(id);
    }
    println!("{connections} connections written in {:.1}s", started.elapsed().as_secs_f64());
    // Now the clock starts: due over one minute from DUE_FROM on, in the
    // order they were written (`w<n>`), all expiring MARGIN after the last.
    let t0 = chrono::Utc::now().timestamp();
    let expires_at = t0 + DUE_FROM + DUE_SPREAD + MARGIN;
    sqlx::query(
        "UPDATE connections SET expires_at = $1, next_refresh_at = $2 + (CAST(SUBSTRING(workspace_id FROM 2) AS BIGINT) * $3) / $4",
    )
    .bind(expires_at)
    .bind(t0 + DUE_FROM)
    .bind(DUE_SPREAD)
    .bind(connections as i64)
    .execute(store.pool())
    .await?;

    // The replicas, renewing.
    let mut env = base_env.clone();
    env.push(("REFRESH_INTERVAL", "1"));
    let mut servers = Vec::new();
    for _ in 0..replicas {
        servers.push(Server::start(bin, dir.path(), &env, &[]).await);
    }
    let fast_ids: std::collections::HashSet<&String> = ids_by_provider[..PROVIDERS - 1].iter().flatten().collect();
    let mut first_renewal = None;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = chrono::Utc::now().timestamp();
        let renewed = renewed_fast(&store, expires_at).await?;
        if renewed > 0 && first_renewal.is_none() {
            first_renewal = Some(Instant::now());
        }
        if renewed == fast_ids.len() || now > expires_at + 1 {
            break;
        }
    }
    let renewing_secs = first_renewal.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let renewed = renewed_fast(&store, expires_at).await?;
    let answered = fast.answered.load(Ordering::SeqCst);
    println!(
        "replicas {replicas}: {renewed} of {} non-hanging connections renewed before expiry ({:.1}%); \
         {answered} refreshes in {renewing_secs:.1}s ({:.0}/s); provider calls in flight at the peak: {} at the fast hosts, {} at the hanging one",
        fast_ids.len(),
        100.0 * renewed as f64 / fast_ids.len() as f64,
        answered as f64 / renewing_secs.max(0.001),
        fast.peak.load(Ordering::SeqCst),
        hung.peak.load(Ordering::SeqCst),
    );
    for s in servers {
        s.terminate().await;
    }
    store.close().await;
    Ok(())
}

/// Connections of the non-hanging providers renewed before `expires_at`.
async fn renewed_fast(store: &Store, expires_at: i64) -> anyhow::Result<usize> {
    use sqlx::Row;
    let row = sqlx::query(
        "SELECT COUNT(*) AS n FROM connections WHERE expires_at > $1 AND last_refreshed_at IS NOT NULL AND last_refreshed_at <= $2",
    )
    .bind(expires_at)
    .bind(expires_at * 1_000_000)
    .fetch_one(store.pool())
    .await?;
    Ok(row.try_get::<i64, _>("n")? as usize)
}
