//! Black-box tests of the `nexus` binary as a process: start-up refusals,
//! `--dev`, `keygen`, graceful shutdown, `audit verify` against a tampered
//! database, and several replicas on one PostgreSQL keeping one audit chain.

use nexus_testkit::process::{self, run_to_end, Server};
use nexus_testkit::{Backend, TestDb};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_nexus");
/// The audit key the servers of these tests sign their logs with.
const AUDIT_KEY: &str = "YXVkaXQta2V5LW9mLXRoZS1wcm9jZXNzLXRlc3RzLjE=";

fn nexus(dir: &std::path::Path, env: &[(&str, &str)]) -> Command {
    process::nexus(BIN, dir, env)
}

fn keys() -> (String, String, String) {
    (nexus_vault::generate_key(), nexus_vault::generate_key(), "process-test-api-key-0123456789".to_owned())
}

#[tokio::test]
async fn serve_refuses_to_start_without_keys_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let (enc, state, api) = keys();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![], "API_KEY"),
        (vec![("API_KEY", &api)], "ENCRYPTION_KEY"),
        (vec![("API_KEY", &api), ("ENCRYPTION_KEY", "not-base64!")], "ENCRYPTION_KEY"),
        (vec![("API_KEY", &api), ("ENCRYPTION_KEY", "c2hvcnQ=")], "ENCRYPTION_KEY"),
        (vec![("API_KEY", &api), ("ENCRYPTION_KEY", &enc)], "STATE_KEY"),
        (vec![("API_KEY", &api), ("ENCRYPTION_KEY", &enc), ("STATE_KEY", "xx")], "STATE_KEY"),
        (vec![("API_KEY", &api), ("ENCRYPTION_KEY", &enc), ("STATE_KEY", &state)], "AUDIT_KEYS"),
        (
            vec![("API_KEY", &api), ("ENCRYPTION_KEY", &enc), ("STATE_KEY", &state), ("AUDIT_KEYS", "c2hvcnQ=")],
            "AUDIT_KEYS",
        ),
        (
            vec![
                ("API_KEY", &api),
                ("ENCRYPTION_KEY", &enc),
                ("STATE_KEY", &state),
                ("AUDIT_KEYS", AUDIT_KEY),
                ("ALLOWED_CIDRS", "10.0.0.0/40"),
            ],
            "ALLOWED_CIDRS",
        ),
    ];
    for (env, variable) in cases {
        let (code, stdout, stderr) = run_to_end({
            let mut c = nexus(dir.path(), &env);
            c.arg("serve");
            c
        })
        .await;
        assert_ne!(code, 0, "{variable}: should refuse");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{variable}: one clear line, got {stderr:?}");
        assert!(lines[0].contains(variable), "{variable}: {stderr}");
        if variable != "ALLOWED_CIDRS" {
            assert!(lines[0].contains("nexus keygen"), "{variable}: should point at nexus keygen: {stderr}");
        }
        assert!(stdout.is_empty());
        assert!(!stderr.contains(&enc) && !stderr.contains(&api), "no key echoed");
    }
    assert!(!dir.path().join("nexus-data").exists(), "a refused start writes nothing");
}

#[tokio::test]
async fn keygen_prints_usable_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, _) = run_to_end({
        let mut c = nexus(dir.path(), &[]);
        c.arg("keygen");
        c
    })
    .await;
    assert_eq!(code, 0);
    let vars: HashMap<&str, &str> = stdout.lines().filter_map(|l| l.split_once('=')).collect();
    for var in ["ENCRYPTION_KEY", "STATE_KEY", "API_KEY", "AUDIT_KEYS"] {
        let key = vars.get(var).unwrap_or_else(|| panic!("{var} missing from {stdout}"));
        assert_eq!(nexus_vault::parse_key(key).unwrap().len(), 32);
    }
    assert_ne!(vars["ENCRYPTION_KEY"], vars["STATE_KEY"]);
}

async fn start(dir: &std::path::Path, env: &[(&str, &str)], extra_args: &[&str]) -> Server {
    Server::start(BIN, dir, env, extra_args).await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

#[tokio::test]
async fn dev_mode_creates_private_keys_prints_the_api_key_and_reuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[], &["--dev"]).await;
    let key_line = server.stdout_line("API key:").await;
    let api_key = key_line.split_whitespace().last().unwrap().to_owned();
    assert!(server.stdout_line("base URL:").await.contains(&server.base_url), "base URL printed");
    for file in ["api_key", "encryption_key", "state_key"] {
        let path = dir.path().join("nexus-data").join(file);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600, "{file}");
    }
    assert!(dir.path().join("nexus-data/nexus.db").exists(), "embedded SQLite");
    assert_eq!(std::fs::read_to_string(dir.path().join("nexus-data/api_key")).unwrap().trim(), api_key);
    let resp = client().get(server.url("/v1/providers")).header("x-api-key", &api_key).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let created = client()
        .post(server.url("/v1/providers"))
        .header("x-api-key", &api_key)
        .json(&json!({"name": "kept", "auth_type": "oauth2", "client_id": "c", "client_secret": "dev-secret-value",
            "auth_url": "https://a.example/auth", "token_url": "https://a.example/token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let (code, logs) = server.terminate().await;
    assert_eq!(code, 0, "clean exit on SIGTERM: {logs}");
    assert!(!logs.contains("dev-secret-value"));

    // Second start: same keys, same data, the sealed secret still opens.
    let again = start(dir.path(), &[], &["--dev"]).await;
    let resp = client().get(again.url("/v1/providers/kept")).header("x-api-key", &api_key).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(again.stdout_line("API key:").await.contains(&api_key));
    let (code, _) = again.terminate().await;
    assert_eq!(code, 0);
}

/// A SIGTERM as soon as the server says it serves (a supervisor stopping
/// a replica that just became ready) is a graceful stop with exit code 0,
/// never a kill: the handlers are installed before the port opens.
#[tokio::test]
async fn a_sigterm_right_after_start_is_a_graceful_stop() {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let server = start(dir.path(), &[], &["--dev"]).await;
        let (code, logs) = server.terminate().await;
        assert_eq!(code, 0, "round {round}: {logs}");
        assert!(logs.contains("shutting down"), "round {round}: {logs}");
    }
}

/// A discovery endpoint that answers slowly, to hold a request in flight:
/// a minimal OpenID Provider Metadata document, and an empty key set at
/// its `jwks_uri`.
async fn slow_issuer(delay: Duration) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let doc = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/auth"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    })
    .to_string();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let doc = doc.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let body = if buf[..n].starts_with(b"GET /jwks ") {
                    r#"{"keys":[]}"#.to_owned()
                } else {
                    tokio::time::sleep(delay).await;
                    doc
                };
                let resp = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    issuer
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let (enc, state, api) = keys();
    let env = [
        ("API_KEY", api.as_str()),
        ("ENCRYPTION_KEY", &enc),
        ("STATE_KEY", &state),
        ("AUDIT_KEYS", AUDIT_KEY),
        ("DATABASE_URL", db.url()),
    ];
    let server = start(dir.path(), &env, &[]).await;
    let issuer = slow_issuer(Duration::from_millis(1500)).await;
    // A connection whose provider answers as slowly, for a proxied request
    // in flight too (the Gateway proxy's lane has its own connection loop).
    let post = |path: &str, body: serde_json::Value| {
        client()
            .post(server.url(path))
            .header("x-api-key", &api)
            .header("accept", "application/json")
            .json(&body)
            .send()
    };
    let schema = json!({"type": "object", "required": ["api_key"], "properties": {"api_key": {"type": "string"}}});
    let provider = json!({"name": "slow-api", "auth_type": "api_key", "api_base_url": issuer, "params": {"credential_schema": schema}});
    assert_eq!(post("/v1/providers", provider).await.unwrap().status(), 201);
    let requested = json!({"workspace_id": "w", "provider_name": "slow-api", "return_url": "https://example.com/done"});
    let requested: serde_json::Value = post("/v1/request-connection", requested).await.unwrap().json().await.unwrap();
    let captured = json!({"state": requested["state"], "credentials": {"api_key": "k"}});
    let captured: serde_json::Value = post("/v1/capture-credential", captured).await.unwrap().json().await.unwrap();
    let proxied = server.url(&format!("/v1/proxy/{}/slow", captured["connection_id"].as_str().unwrap()));
    let proxied = tokio::spawn(client().get(proxied).header("x-api-key", api.clone()).send());
    let url = server.url("/v1/providers");
    let in_flight =
        tokio::spawn({
            let api = api.clone();
            async move {
                client()
                .post(url)
                .header("x-api-key", api)
                .json(&json!({"name": "slow", "auth_type": "oauth2", "client_id": "c", "client_secret": "slow-secret-1",
                    "issuer": issuer, "enable_discovery": true}))
                .send()
                .await
            }
        });
    tokio::time::sleep(Duration::from_millis(400)).await; // the request is now waiting on discovery
    let (code, logs) = server.terminate().await;
    let resp = in_flight.await.unwrap().expect("the in-flight request got an answer");
    assert_eq!(resp.status(), 201, "in-flight request completed: {logs}");
    let resp = proxied.await.unwrap().expect("the in-flight proxied request got an answer");
    assert_eq!(resp.status(), 200, "in-flight proxied request completed: {logs}");
    assert!(resp.text().await.unwrap().contains("authorization_endpoint"), "the provider's answer, whole");
    assert_eq!(code, 0, "{logs}");
    assert!(logs.contains("shutting down"));
}

async fn tamper(db: &TestDb, seq: i64) {
    use sqlx::Connection;
    match db.backend() {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(db.url()).await.unwrap();
            sqlx::query("DROP TRIGGER IF EXISTS audit_log_no_update").execute(&mut conn).await.unwrap();
            sqlx::query("DROP TRIGGER IF EXISTS audit_log_no_delete").execute(&mut conn).await.unwrap();
            sqlx::query("UPDATE audit_log SET ip = '10.9.9.9' WHERE seq = $1")
                .bind(seq)
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(db.url()).await.unwrap();
            sqlx::query("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change").execute(&mut conn).await.unwrap();
            sqlx::query("UPDATE audit_log SET ip = '10.9.9.9' WHERE seq = $1")
                .bind(seq)
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
        }
    }
}

async fn audit_rows_cannot_be_edited_in_place(db: &TestDb) {
    let store = nexus_store::Store::connect(db.url()).await.unwrap();
    let err = sqlx::query("UPDATE audit_log SET ip = 'x' WHERE seq = 1").execute(store.pool()).await;
    assert!(err.is_err(), "the append-only trigger refuses updates");
    let err = sqlx::query("DELETE FROM audit_log WHERE seq = 1").execute(store.pool()).await;
    assert!(err.is_err(), "the append-only trigger refuses deletes");
    store.close().await;
}

async fn verify(dir: &std::path::Path, db: &TestDb) -> (i32, String) {
    verify_with(dir, db, &[("AUDIT_KEYS", AUDIT_KEY)], &[]).await
}

/// `nexus audit verify` with `env` and `args`: its exit code and output.
async fn verify_with(dir: &std::path::Path, db: &TestDb, env: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    let mut env = env.to_vec();
    env.push(("DATABASE_URL", db.url()));
    let (code, stdout, stderr) = run_to_end({
        let mut c = nexus(dir, &env);
        c.args(["audit", "verify"]).args(args);
        c
    })
    .await;
    (code, format!("{stdout}{stderr}"))
}

async fn audit_verify_names_the_edited_row(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(backend).await.unwrap();
    let (enc, state, api) = keys();
    let env = [
        ("API_KEY", api.as_str()),
        ("ENCRYPTION_KEY", &enc),
        ("STATE_KEY", &state),
        ("AUDIT_KEYS", AUDIT_KEY),
        ("DATABASE_URL", db.url()),
    ];
    let server = start(dir.path(), &env, &[]).await;
    let c = client();
    let body = json!({"name": "gh", "auth_type": "oauth2", "client_id": "c", "client_secret": "first-secret-abc",
        "auth_url": "https://a.example/auth", "token_url": "https://a.example/token"});
    assert_eq!(
        c.post(server.url("/v1/providers")).header("x-api-key", &api).json(&body).send().await.unwrap().status(),
        201
    );
    let rotate = c
        .patch(server.url("/v1/providers/gh"))
        .header("x-api-key", &api)
        .json(&json!({"client_secret": "second-secret-abc"}));
    assert_eq!(rotate.send().await.unwrap().status(), 200);
    assert_eq!(c.delete(server.url("/v1/providers/gh")).header("x-api-key", &api).send().await.unwrap().status(), 200);
    let (code, logs) = server.terminate().await;
    assert_eq!(code, 0);
    for secret in ["first-secret-abc", "second-secret-abc", api.as_str(), enc.as_str(), state.as_str()] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
    let request_lines: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "request")
        .collect();
    assert_eq!(request_lines.len(), 3, "one log line per request");
    for l in &request_lines {
        for field in ["request_id", "method", "route", "status", "latency_ms"] {
            assert!(!l[field].is_null(), "log line lacks {field}: {l}");
        }
    }
    assert_eq!(request_lines[1]["route"], "/v1/providers/{id}", "the route pattern, not the raw path");

    let (code, out) = verify(dir.path(), &db).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("3 rows verified"), "{out}");

    audit_rows_cannot_be_edited_in_place(&db).await;
    tamper(&db, 2).await;
    let (code, out) = verify(dir.path(), &db).await;
    assert_ne!(code, 0, "a tampered chain must fail: {out}");
    assert!(out.contains("row 2"), "names the edited row: {out}");
}

#[tokio::test]
async fn audit_verify_names_the_edited_row_sqlite() {
    audit_verify_names_the_edited_row(Backend::Sqlite).await;
}

#[tokio::test]
async fn audit_verify_names_the_edited_row_postgres() {
    audit_verify_names_the_edited_row(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_one_postgres_keep_one_audit_chain() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(Backend::Postgres).await.unwrap();
    let (enc, state, api) = keys();
    let env = [
        ("API_KEY", api.as_str()),
        ("ENCRYPTION_KEY", &enc),
        ("STATE_KEY", &state),
        ("AUDIT_KEYS", AUDIT_KEY),
        ("DATABASE_URL", db.url()),
    ];
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(start(dir.path(), &env, &[]).await);
    }
    let c = client();
    let mut tasks = Vec::new();
    for i in 0..60 {
        let url = replicas[i % 3].url("/v1/providers");
        let (c, api) = (c.clone(), api.clone());
        tasks.push(tokio::spawn(async move {
            if i % 5 == 0 {
                c.get(url).header("x-api-key", "wrong").send().await.unwrap().status().as_u16()
            } else {
                // Every replica also races for the same names.
                let body = json!({"name": format!("p{}", i % 20), "auth_type": "oauth2", "client_id": "c",
                    "client_secret": format!("replica-secret-{i}"), "auth_url": "https://a.example/a", "token_url": "https://a.example/t"});
                c.post(url).header("x-api-key", api).json(&body).send().await.unwrap().status().as_u16()
            }
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert!(statuses.iter().all(|s| [201, 401, 409].contains(s)), "{statuses:?}");
    let created = statuses.iter().filter(|s| **s == 201).count();
    let rejected = statuses.iter().filter(|s| **s == 401).count();
    assert_eq!(created, 16, "each of the 16 names created exactly once across replicas: {statuses:?}");
    assert_eq!(rejected, 12);

    // Rejections are queued for each replica's batch writer (and may merge
    // into one row with a count); reading the audit log waits for them.
    for r in &replicas {
        let resp = c.get(r.url("/v1/audit?limit=1")).header("x-api-key", &api).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    let store = nexus_store::Store::connect(db.url()).await.unwrap();
    let rows = store.list_audit(&nexus_store::AuditFilter { limit: 1000, ..Default::default() }).await.unwrap().entries;
    let rejections: Vec<_> = rows.iter().filter(|r| r.event_type == "auth.rejected").collect();
    let counted: u64 = rejections.iter().map(|r| r.data["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, rejected as u64, "every rejection accounted for");
    let audit_keys = nexus_vault::AuditKeys::from_base64(&[AUDIT_KEY]).unwrap();
    let report = store.verify_audit_chain(Some(&audit_keys), None).await.unwrap();
    assert_eq!(report.first_broken, None);
    assert_eq!(
        report.rows_checked,
        (created + rejections.len()) as i64,
        "one row per audited event (rejections merged), no fork, no gap"
    );
    store.close().await;
    let (code, out) = verify(dir.path(), &db).await;
    assert_eq!(code, 0, "{out}");
    for r in replicas {
        let (code, logs) = r.terminate().await;
        assert_eq!(code, 0);
        assert!(!logs.contains("replica-secret-"), "no secret in logs");
    }
}

/// Runs SQL on the test database with the append-only guard lifted: what an
/// attacker with the database (and without the audit key) can do.
async fn as_attacker(db: &TestDb, statements: &[String]) {
    use sqlx::Connection;
    match db.backend() {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(db.url()).await.unwrap();
            for s in ["DROP TRIGGER IF EXISTS audit_log_no_update", "DROP TRIGGER IF EXISTS audit_log_no_delete"] {
                sqlx::query(s).execute(&mut conn).await.unwrap();
            }
            for s in statements {
                sqlx::query(s).execute(&mut conn).await.unwrap();
            }
            conn.close().await.unwrap();
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(db.url()).await.unwrap();
            sqlx::query("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change").execute(&mut conn).await.unwrap();
            for s in statements {
                sqlx::query(s).execute(&mut conn).await.unwrap();
            }
            sqlx::query("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_change").execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
    }
}

/// The plain SHA-256 of a row as v1 computed it: what an attacker without
/// the key can recompute (an independent copy of the v1 rule).
fn v1_hash(row: &Value, prev_hash: &str, ip: &str) -> String {
    use sha2::Digest;
    let canonical = json!([
        prev_hash,
        row["seq"],
        row["id"],
        row["at_micros"],
        row["event_type"],
        ip,
        row["user_agent"],
        row["provider_id"],
        row["connection_id"],
        row["workspace_id"],
        row["data"]
    ]);
    hex::encode(sha2::Sha256::digest(canonical.to_string().as_bytes()))
}

/// A server that wrote five audit rows (create, three updates, delete),
/// stopped; the head it published, and its logs.
async fn five_rows(dir: &std::path::Path, db: &TestDb) -> (Value, String) {
    let (enc, state, api) = keys();
    let env = [
        ("API_KEY", api.as_str()),
        ("ENCRYPTION_KEY", &enc),
        ("STATE_KEY", &state),
        ("AUDIT_KEYS", AUDIT_KEY),
        ("DATABASE_URL", db.url()),
    ];
    let server = start(dir, &env, &[]).await;
    let c = client();
    let body = json!({"name": "p", "auth_type": "api_key", "params": {"credential_schema": {"type": "object"}}});
    assert_eq!(
        c.post(server.url("/v1/providers")).header("x-api-key", &api).json(&body).send().await.unwrap().status(),
        201
    );
    for n in 0..3 {
        let edit = c
            .patch(server.url("/v1/providers/p"))
            .header("x-api-key", &api)
            .json(&json!({"description": format!("v{n}")}));
        assert_eq!(edit.send().await.unwrap().status(), 200);
    }
    assert_eq!(c.delete(server.url("/v1/providers/p")).header("x-api-key", &api).send().await.unwrap().status(), 200);
    let head: Value =
        c.get(server.url("/v1/audit/head")).header("x-api-key", &api).send().await.unwrap().json().await.unwrap();
    let rows: Value = c
        .get(server.url("/v1/audit?api_key=bootstrap"))
        .header("x-api-key", &api)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entries = rows["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 5, "every row names the key that caused it");
    for e in entries {
        assert_eq!(e["api_key"], json!({"id": "bootstrap", "name": "bootstrap"}));
        assert_eq!(e["hash_version"], 2);
    }
    let (code, logs) = server.terminate().await;
    assert_eq!(code, 0);
    (head, logs)
}

/// The rows as the attacker reads them (all fields, times in microseconds).
async fn rows_of(db: &TestDb) -> Vec<Value> {
    let store = nexus_store::Store::connect(db.url()).await.unwrap();
    let page = store.list_audit(&nexus_store::AuditFilter { limit: 1000, ..Default::default() }).await.unwrap();
    store.close().await;
    let mut rows: Vec<Value> = page
        .entries
        .iter()
        .map(|e| {
            json!({"seq": e.seq, "id": e.id, "at_micros": e.at, "event_type": e.event_type, "user_agent": e.user_agent,
                "provider_id": e.provider_id, "connection_id": e.connection_id, "workspace_id": e.workspace_id,
                "data": e.data.to_string(), "prev_hash": e.prev_hash, "hash": e.hash})
        })
        .collect();
    rows.reverse();
    rows
}

/// As an attacker without the key: every row from index `from` on edited
/// (its `ip`) and made unkeyed, the chain recomputed with plain SHA-256.
async fn rewrite_as_v1(db: &TestDb, from: usize) {
    let rows = rows_of(db).await;
    let mut prev = match from {
        0 => "0".repeat(64),
        n => rows[n - 1]["hash"].as_str().unwrap().to_owned(),
    };
    let mut statements = Vec::new();
    for row in &rows[from..] {
        let hash = v1_hash(row, &prev, "10.6.6.6");
        statements.push(format!(
            "UPDATE audit_log SET ip = '10.6.6.6', prev_hash = '{prev}', hash = '{hash}', hash_version = NULL, key_id = NULL, \
             api_key_id = NULL, api_key_name = NULL WHERE seq = {}",
            row["seq"]
        ));
        prev = hash;
    }
    as_attacker(db, &statements).await;
}

/// Truncation, deletion, edits with the hashes recomputed and edits
/// without the key: each is found and named by `nexus audit verify`.
async fn audit_verify_finds_every_kind_of_tampering(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let keys = [("AUDIT_KEYS", AUDIT_KEY)];

    // The published head: in the API and in the log at shutdown.
    let db = TestDb::new(backend).await.unwrap();
    let (head, logs) = five_rows(dir.path(), &db).await;
    assert_eq!(head["seq"], 5);
    let head_arg = format!("{}:{}", head["seq"], head["hash"].as_str().unwrap());
    let logged = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "audit chain head" && v["seq"] == 5);
    assert_eq!(logged.expect("the head is logged at shutdown")["hash"], head["hash"]);
    let (code, out) = verify_with(dir.path(), &db, &keys, &["--expect-head", &head_arg]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("5 rows verified, reaching the expected head 5:"), "{out}");
    // Without the key, keyed rows cannot be checked: said, not passed.
    let (code, out) = verify_with(dir.path(), &db, &[("NEXUS_DATA_DIR", "/nonexistent")], &[]).await;
    assert_ne!(code, 0);
    assert!(out.contains("row 1") && out.contains("AUDIT_KEYS does not hold"), "{out}");

    // The last row deleted: the chain that is left verifies; the head does not.
    as_attacker(&db, &["DELETE FROM audit_log WHERE seq = 5".to_owned()]).await;
    let (code, out) = verify_with(dir.path(), &db, &keys, &["--expect-head", &head_arg]).await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("row 5") && out.contains("ends at row 4"), "{out}");

    // On a fresh log each: (what the attacker does, what verify must say).
    let cases: [(Tamper, &[&str]); 4] = [
        // A middle row deleted.
        (Tamper::Sql("DELETE FROM audit_log WHERE seq = 3"), &["row 4", "missing"]),
        // Row 2 edited and every later hash recomputed with plain SHA-256.
        (Tamper::AsV1From(1), &["row 2", "unkeyed"]),
        // Every row rewritten as v1: consistent, but it ends unkeyed.
        (Tamper::AsV1From(0), &["row 5", "ends with unkeyed"]),
        // Row 3 edited, nothing recomputed (there is no key to do it with).
        (Tamper::Sql("UPDATE audit_log SET ip = '10.6.6.6' WHERE seq = 3"), &["row 3", "HMAC"]),
    ];
    for (tamper, said) in cases {
        let db = TestDb::new(backend).await.unwrap();
        five_rows(dir.path(), &db).await;
        match tamper {
            Tamper::Sql(sql) => as_attacker(&db, &[sql.to_owned()]).await,
            Tamper::AsV1From(from) => rewrite_as_v1(&db, from).await,
        }
        let (code, out) = verify_with(dir.path(), &db, &keys, &[]).await;
        assert_ne!(code, 0, "{tamper:?}: {out}");
        assert!(said.iter().all(|s| out.contains(s)), "{tamper:?}: {out}");
    }
}

/// What an attacker with the database, and without the audit key, does.
#[derive(Debug, Clone, Copy)]
enum Tamper {
    Sql(&'static str),
    /// [`rewrite_as_v1`] from this row index on.
    AsV1From(usize),
}

#[tokio::test]
async fn audit_verify_finds_every_kind_of_tampering_sqlite() {
    audit_verify_finds_every_kind_of_tampering(Backend::Sqlite).await;
}

#[tokio::test]
async fn audit_verify_finds_every_kind_of_tampering_postgres() {
    audit_verify_finds_every_kind_of_tampering(Backend::Postgres).await;
}

/// A log begun before audit keys (v1 rows) goes on keyed: the v1 rows
/// still verify, the first keyed row covers the last v1 hash, and a v1 row
/// rewritten with its hash recomputed is found at that keyed row.
async fn v1_rows_stay_valid_before_the_first_keyed_row(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(backend).await.unwrap();
    let old = nexus_store::Store::connect(db.url()).await.unwrap();
    for n in 0..2 {
        let row = nexus_store::NewAudit {
            data: json!({"n": n}),
            ..nexus_store::NewAudit::new(nexus_core::AuditEvent::ProviderCreated)
        };
        old.append_audit(row).await.unwrap();
    }
    old.close().await;
    five_rows(dir.path(), &db).await;
    let keys = [("AUDIT_KEYS", AUDIT_KEY)];
    let (code, out) = verify_with(dir.path(), &db, &keys, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("8 rows verified"), "two v1 rows, the row that starts signing, five keyed: {out}");

    let rows = rows_of(&db).await;
    let forged = v1_hash(&rows[1], rows[1]["prev_hash"].as_str().unwrap(), "10.6.6.6");
    as_attacker(&db, &[format!("UPDATE audit_log SET ip = '10.6.6.6', hash = '{forged}' WHERE seq = 2")]).await;
    let (code, out) = verify_with(dir.path(), &db, &keys, &[]).await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("row 3") && out.contains("prev_hash"), "the first keyed row pins the last v1 hash: {out}");
}

#[tokio::test]
async fn v1_rows_stay_valid_before_the_first_keyed_row_sqlite() {
    v1_rows_stay_valid_before_the_first_keyed_row(Backend::Sqlite).await;
}

#[tokio::test]
async fn v1_rows_stay_valid_before_the_first_keyed_row_postgres() {
    v1_rows_stay_valid_before_the_first_keyed_row(Backend::Postgres).await;
}
