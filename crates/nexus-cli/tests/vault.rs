//! Retiring an encryption key (SPEC 14) as an operator does it, with real
//! processes: a server sealing under key A holds providers and connections
//! of each kind (an OAuth2 connection with its refresh token, one still
//! pending with its PKCE verifier, client credentials kept per connection, a
//! service account's key, and captured API key, basic, SigV4, query and
//! HMAC credentials); it is
//! restarted with key B first and A second; `nexus vault rewrap` is killed
//! after its first batch and run again; `nexus vault status` then shows
//! everything under B; a server with B alone opens every secret (the same
//! token answers, and the pending consent completes); a server with A alone
//! refuses to start, naming the key it lacks.

use nexus_testkit::oidc::{authorize_via_browser, OidcOptions, OidcProvider};
use nexus_testkit::process::{self, run_to_end, Server};
use nexus_testkit::{Backend, TestDb};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_nexus");
const API_KEY: &str = "vault-test-api-key-0123456789abc";
const AUDIT_KEY: &str = "YXVkaXQta2V5LW9mLXRoZS12YXVsdC10ZXN0cy4xMjM=";
const RETURN_URL: &str = "https://app.example.test/done";

struct Keys {
    a: String,
    b: String,
    state: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn serve(db: &TestDb, keys: &str, port: u16, k: &Keys) -> Server {
    let bind = format!("127.0.0.1:{port}");
    let env = [
        ("API_KEY", API_KEY),
        ("ENCRYPTION_KEYS", keys),
        ("STATE_KEY", k.state.as_str()),
        ("AUDIT_KEYS", AUDIT_KEY),
        ("DATABASE_URL", db.url()),
        ("ALLOWED_RETURN_DOMAINS", "app.example.test"),
    ];
    Server::start(BIN, db.dir(), &env, &["--bind", &bind]).await
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("x-api-key", API_KEY)
            .header("accept", "application/json");
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }
    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }
    async fn provider(&self, body: Value) {
        let (status, answer) = self.post("/v1/providers", body).await;
        assert_eq!(status, 201, "{answer}");
    }
    async fn capture(&self, provider: &str, credentials: Value) -> String {
        let (status, req) = self
            .post(
                "/v1/request-connection",
                json!({"workspace_id": "w", "provider_name": provider, "return_url": RETURN_URL}),
            )
            .await;
        assert_eq!(status, 200, "{req}");
        let (status, done) =
            self.post("/v1/capture-credential", json!({"state": req["state"], "credentials": credentials})).await;
        assert_eq!(status, 200, "{provider}: {done}");
        done["connection_id"].as_str().unwrap().to_owned()
    }
}

fn schema(fields: &[&str]) -> Value {
    let props: serde_json::Map<String, Value> =
        fields.iter().map(|f| (f.to_string(), json!({"type": "string"}))).collect();
    json!({"type": "object", "required": fields, "properties": props})
}

/// The callback of a consent, run against `base` (the server now running).
async fn callback(
    http: &reqwest::Client,
    callback: &url::Url,
    base: &str,
) -> std::collections::HashMap<String, String> {
    let url = format!("{base}{}?{}", callback.path(), callback.query().unwrap_or_default());
    let resp = http.get(url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 302);
    let back = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    back.query_pairs().into_owned().collect()
}

async fn vault(db: &TestDb, keys: &str, args: &[&str]) -> (i32, String, String) {
    let mut cmd = process::nexus(BIN, db.dir(), &[("DATABASE_URL", db.url()), ("ENCRYPTION_KEYS", keys)]);
    cmd.arg("vault").args(args);
    run_to_end(cmd).await
}

async fn rotation(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let k = Keys { a: nexus_vault::generate_key(), b: nexus_vault::generate_key(), state: nexus_vault::generate_key() };
    let id_of = |key: &str| nexus_vault::KeyRing::from_base64(&[key]).unwrap().current_key_id().to_owned();
    let (a_id, b_id) = (id_of(&k.a), id_of(&k.b));
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let api = Api { http: http.clone(), base: base.clone() };
    let clients = json!([
        {"client_id": "nexus-client", "client_secret": "nexus-client-secret-1", "redirect_uris": [format!("{base}/auth/callback")],
         "token_endpoint_auth_method": "client_secret_post"},
        {"client_id": "machine", "client_secret": "machine-secret-1", "token_endpoint_auth_method": "client_secret_post",
         "grant_types": ["client_credentials"], "response_types": [], "redirect_uris": []}
    ]);
    let idp = OidcProvider::start(OidcOptions { clients, ..OidcOptions::default() }).await.expect("oidc-provider");

    // Key A: a provider secret and every kind of sealed connection value.
    let server = serve(&db, &k.a, port, &k).await;
    api.provider(json!({"name": "idp", "auth_type": "oauth2", "client_id": "nexus-client", "client_secret": "nexus-client-secret-1",
        "auth_url": idp.url("/auth"), "token_url": idp.url("/token"), "api_base_url": idp.issuer(),
        "scopes": ["openid", "offline_access"], "params": {"authorization_params": {"prompt": "consent"}}})).await;
    let stop_at = format!("{base}/auth/callback");
    let consent = |auth_url: String| {
        let stop_at = stop_at.clone();
        async move { authorize_via_browser(&auth_url, "alice", true, &stop_at).await.expect("consent") }
    };
    let (_, req) = api
        .post("/v1/request-connection", json!({"workspace_id": "w", "provider_name": "idp", "return_url": RETURN_URL}))
        .await;
    let done = callback(&http, &consent(req["auth_url"].as_str().unwrap().to_owned()).await, &api.base).await;
    let oauth = done["connection_id"].clone();
    let (_, pending) = api
        .post("/v1/request-connection", json!({"workspace_id": "w2", "provider_name": "idp", "return_url": RETURN_URL}))
        .await;
    let pending_auth = pending["auth_url"].as_str().unwrap().to_owned();
    api.provider(json!({"name": "machine", "auth_type": "oauth2_client_credentials", "token_url": idp.url("/token"),
        "api_base_url": idp.issuer(), "params": {"credential_schema": schema(&["client_id", "client_secret"])}}))
        .await;
    let machine = api.capture("machine", json!({"client_id": "machine", "client_secret": "machine-secret-1"})).await;
    let statics = [
        ("key", json!({"auth_type": "api_key"}), json!({"api_key": "k-1"})),
        ("basic", json!({"auth_type": "basic_auth"}), json!({"username": "u", "password": "p"})),
        (
            "aws",
            json!({"auth_type": "aws_sigv4", "params": {"service": "s3", "region": "us-east-1"}}),
            json!({"access_key": "AKIA1", "secret_key": "s3cr3t"}),
        ),
        ("query", json!({"auth_type": "query_param"}), json!({"api_key": "q-1"})),
        ("hmac", json!({"auth_type": "hmac_payload"}), json!({"api_secret": "h-1"})),
    ];
    // A service account's key (the JWT bearer grant, at the test kit's Google).
    let kit = nexus_testkit::provider_kit::ProviderKit::start().await;
    let (pem, public_pem, _) =
        tokio::task::spawn_blocking(nexus_testkit::python::rsa_key).await.unwrap().expect("a key pair");
    let (email, scope) = ("agent@acme.iam.gserviceaccount.com", "https://www.googleapis.com/auth/drive.readonly");
    kit.trust_service_account(email, &public_pem, "ann@acme.example", scope);
    let token_uri = kit.url("oauth2.googleapis", "/token");
    api.provider(json!({"name": "sa", "auth_type": "jwt_bearer", "token_url": token_uri, "scopes": [scope],
        "api_base_url": kit.url("www.googleapis", "/drive/v3")}))
        .await;
    let sa = api
        .capture(
            "sa",
            json!({"client_email": email, "private_key": pem, "token_uri": token_uri, "subject": "ann@acme.example"}),
        )
        .await;
    // A webhook's signing secret.
    let receiver = nexus_testkit::webhook_receiver::Receiver::start().await;
    let webhook_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let (status, hook) = api
        .post(
            "/v1/webhooks",
            json!({"url": receiver.url("vault"), "events": ["connection.revoked"], "secret": webhook_secret}),
        )
        .await;
    assert_eq!(status, 201, "{hook}");
    receiver.configure("vault", webhook_secret, "ok", json!({})).await;
    let mut connections = vec![oauth.clone(), machine, sa.clone()];
    for (name, mut provider, creds) in statics {
        provider["name"] = json!(name);
        provider["api_base_url"] = json!("https://api.example.org");
        let fields: Vec<&str> = creds.as_object().unwrap().keys().map(String::as_str).collect();
        provider.as_object_mut().unwrap().entry("params").or_insert(json!({}))["credential_schema"] = schema(&fields);
        api.provider(provider).await;
        connections.push(api.capture(name, creds).await);
    }
    let mut answers = Vec::new();
    for id in &connections {
        let (status, answer) = api.get(&format!("/v1/token/{id}")).await;
        assert_eq!(status, 200, "{answer}");
        answers.push(answer["credentials"].clone());
    }
    let (code, logs) = server.terminate().await;
    assert_eq!(code, 0, "{logs}");

    // B first, A still there: status shows A's secrets, rewrap is killed after a batch, then run again.
    let both = format!("{},{}", k.b, k.a);
    let server = serve(&db, &both, port, &k).await;
    let (code, out, err) = vault(&db, &both, &["status"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("under {a_id} (rewrap to retire it)")), "{out}");
    let mut cmd = process::nexus(BIN, db.dir(), &[("DATABASE_URL", db.url()), ("ENCRYPTION_KEYS", both.as_str())]);
    cmd.args(["vault", "rewrap", "--batch-size", "1", "--pause-ms", "400"]).stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.unwrap().unwrap().unwrap();
    assert!(first.contains("rewrapped so far"), "{first}");
    child.kill().await.unwrap();
    let (code, out, _) = vault(&db, &both, &["status"]).await;
    assert_eq!(code, 0);
    assert!(out.contains(&format!("under {a_id}")) && out.contains(&format!("under {b_id}")), "killed half way: {out}");
    let (code, out, err) = vault(&db, &both, &["rewrap"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, again, _) = vault(&db, &both, &["rewrap"]).await;
    assert_eq!(code, 0);
    assert!(again.contains("rewrap done: 0 sealed again"), "a second run has nothing to do: {again}");
    let (_, out, _) = vault(&db, &both, &["status"]).await;
    assert!(!out.contains(&format!("under {a_id}")) && out.contains(&format!("under {b_id} (sealing key)")), "{out}");
    let (code, logs) = server.terminate().await;
    assert_eq!(code, 0, "{logs}");

    // B alone opens everything: the same answers, and the pending consent completes.
    let server = serve(&db, &k.b, port, &k).await;
    for (id, before) in connections.iter().zip(&answers) {
        let (status, answer) = api.get(&format!("/v1/token/{id}")).await;
        assert_eq!(status, 200, "{id}: {answer}");
        assert_eq!(&answer["credentials"], before, "{id}");
    }
    let refreshed = api.post(&format!("/v1/refresh/{oauth}"), json!({})).await;
    assert_eq!(refreshed.0, 200, "the refresh token opens: {}", refreshed.1);
    let machine_id = &connections[1];
    let regranted = api.post(&format!("/v1/refresh/{machine_id}"), json!({})).await;
    assert_eq!(regranted.0, 200, "the kept client opens: {}", regranted.1);
    let renewed = api.post(&format!("/v1/refresh/{sa}"), json!({})).await;
    assert_eq!(renewed.0, 200, "the service account's key opens and signs: {}", renewed.1);
    assert_eq!(kit.verified_assertions().len(), 2);
    let done = callback(&http, &consent(pending_auth).await, &api.base).await;
    assert_eq!(done.get("status").map(String::as_str), Some("success"), "the PKCE verifier opens: {done:?}");
    let revoked = &connections[3];
    let (status, _) = api.send(reqwest::Method::DELETE, &format!("/v1/connections/{revoked}"), None).await;
    assert_eq!(status, 200);
    let log = receiver.wait_for("vault", Duration::from_secs(20), |l| !l.is_empty()).await;
    assert!(log[0].verified && log[0].connection_id() == revoked, "the webhook secret opens and signs: {log:?}");
    let (code, logs) = server.terminate().await;
    assert_eq!(code, 0, "{logs}");

    // A alone: the server will not start, and says which key it lacks.
    let mut cmd = process::nexus(
        BIN,
        db.dir(),
        &[
            ("API_KEY", API_KEY),
            ("ENCRYPTION_KEYS", k.a.as_str()),
            ("STATE_KEY", k.state.as_str()),
            ("AUDIT_KEYS", AUDIT_KEY),
            ("DATABASE_URL", db.url()),
        ],
    );
    cmd.args(["serve", "--bind", "127.0.0.1:0"]);
    let (code, out, err) = run_to_end(cmd).await;
    assert_ne!(code, 0);
    assert!(format!("{out}{err}").contains(&format!("under key {b_id}")), "{out}{err}");
    let (code, out, _) = vault(&db, &k.a, &["status"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("under {b_id} (MISSING from ENCRYPTION_KEYS)")), "{out}");
    idp.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_retired_by_rewrap_on_sqlite() {
    nexus_testkit::run_bounded(rotation(Backend::Sqlite)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_retired_by_rewrap_on_postgres() {
    nexus_testkit::run_bounded(rotation(Backend::Postgres)).await;
}
