//! A webhook receiver that verifies every delivery with the PyPI
//! `standardwebhooks` library (`testkit/python/webhook_receiver.py`, run in
//! the pinned test venv). It listens on loopback port 0, stops when dropped
//! (kill on drop) and when its stdin closes, so nothing outlives the test.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

const READY_DEADLINE: Duration = Duration::from_secs(60);

/// What one endpoint received (one entry per request).
#[derive(Debug, Clone)]
pub struct Received {
    pub webhook_id: String,
    pub timestamp: String,
    pub verified: bool,
    /// Why verification failed, if it did.
    pub error: Option<String>,
    /// The verified payload (`Null` when verification failed).
    pub payload: Value,
    /// The status the receiver answered (`None`: still held, or the sender left first).
    pub answered: Option<u16>,
    /// The sender went away while the request was held.
    pub abandoned: bool,
    pub user_agent: Option<String>,
    pub content_type: Option<String>,
}

impl Received {
    pub fn event_type(&self) -> &str {
        self.payload["type"].as_str().unwrap_or_default()
    }
    pub fn connection_id(&self) -> &str {
        self.payload["data"]["connection_id"].as_str().unwrap_or_default()
    }
}

pub struct Receiver {
    /// `http://127.0.0.1:PORT`
    pub base_url: String,
    http: reqwest::Client,
    _stdin: ChildStdin,
    _child: Child,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let python = tokio::task::spawn_blocking(crate::python::python)
            .await
            .expect("the venv installer does not panic")
            .expect("the Python test venv is available");
        let script = crate::python::workspace_dir().join("testkit/python/webhook_receiver.py");
        let mut child = Command::new(python)
            .arg(script)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("the webhook receiver starts");
        let stdin = child.stdin.take().expect("piped stdin");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let port = tokio::time::timeout(READY_DEADLINE, lines.next_line())
            .await
            .expect("the webhook receiver starts in time")
            .expect("its stdout")
            .expect("it prints its port");
        let port: u16 = port.trim().parse().expect("a port number");
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().expect("client");
        Receiver { base_url: format!("http://127.0.0.1:{port}"), http, _stdin: stdin, _child: child }
    }

    /// The URL of endpoint `name`.
    pub fn url(&self, name: &str) -> String {
        format!("{}/hooks/{name}", self.base_url)
    }

    async fn control(&self, path: &str, body: Value) {
        let resp =
            self.http.post(format!("{}{path}", self.base_url)).json(&body).send().await.expect("receiver answers");
        assert!(resp.status().is_success(), "receiver control {path}: {}", resp.status());
    }

    /// Sets how endpoint `name` behaves and the secret it verifies with
    /// (see the script: `ok`, `down`, `slow` with `delay`, `redirect` with `location`, `hold`).
    pub async fn configure(&self, name: &str, secret: &str, mode: &str, extra: Value) {
        let mut body = json!({ "secret": secret, "mode": mode });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        self.control(&format!("/__config/{name}"), body).await;
    }

    /// Tells the verifier the sender's clock is `secs` ahead of the system's.
    pub async fn set_clock_offset(&self, secs: u64) {
        self.control("/__offset", json!({ "secs": secs })).await;
    }

    /// Held requests (mode `hold`) wait until [`Receiver::release`].
    pub async fn hold(&self) {
        self.control("/__hold", json!({})).await;
    }

    pub async fn release(&self) {
        self.control("/__release", json!({})).await;
    }

    /// Everything endpoint `name` received, in order.
    pub async fn log(&self, name: &str) -> Vec<Received> {
        let resp = self.http.get(format!("{}/__log/{name}", self.base_url)).send().await.expect("receiver answers");
        let entries: Vec<Value> = resp.json().await.expect("a JSON log");
        entries
            .into_iter()
            .map(|e| Received {
                webhook_id: e["webhook_id"].as_str().unwrap_or_default().to_owned(),
                timestamp: e["timestamp"].as_str().unwrap_or_default().to_owned(),
                verified: e["verified"].as_bool().unwrap_or(false),
                error: e["error"].as_str().map(str::to_owned),
                payload: e["payload"].clone(),
                answered: e["answered"].as_u64().and_then(|s| u16::try_from(s).ok()),
                abandoned: e["abandoned"].as_bool().unwrap_or(false),
                user_agent: e["user_agent"].as_str().map(str::to_owned),
                content_type: e["content_type"].as_str().map(str::to_owned),
            })
            .collect()
    }

    /// Waits (polling, at most `deadline`) until `until` holds for the log of `name`; returns the log.
    pub async fn wait_for(&self, name: &str, deadline: Duration, until: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            let log = self.log(name).await;
            if until(&log) {
                return log;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "webhook receiver '{name}': condition not met in {deadline:?}; log: {log:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
