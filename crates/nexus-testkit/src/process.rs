//! Running the real `nexus` binary as a process in tests: a clean
//! configuration environment, `nexus serve` with JSON logs on a free port, its
//! output captured, and SIGTERM/SIGKILL.

use serde_json::Value;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const CONFIG_VARS: [&str; 32] = [
    "API_KEY",
    "ENCRYPTION_KEY",
    "ENCRYPTION_KEYS",
    "STATE_KEY",
    "BASE_URL",
    "REDIRECT_PATH",
    "DATABASE_URL",
    "NEXUS_DATA_DIR",
    "BIND",
    "METRICS_BIND",
    "DISCOVERY_TTL",
    "WEBHOOK_TIMEOUT",
    "AUTH_FAILURE_LIMIT",
    "CONNECT_FRAME_ANCESTORS",
    "ALLOWED_RETURN_DOMAINS",
    "TRUSTED_PROXIES",
    "ALLOWED_CIDRS",
    "CORS_ALLOWED_ORIGINS",
    "LOG_FORMAT",
    "RUST_LOG",
    "NEXUS_URL",
    "REFRESH_WINDOW",
    "REFRESH_INTERVAL",
    "HEAD_TIMEOUT",
    "TOKEN_MAX_AGE",
    "REFRESH_CONCURRENCY",
    "REFRESH_PER_HOST",
    "AUDIT_KEYS",
    "NEXUS_PROXY_THREADS",
    "NEXUS_PROXY_MAX_CONNECTIONS",
    "NEXUS_PROXY_ALLOWED_HOSTS",
    "NEXUS_PROXY_ALLOWED_ORIGINS",
];

/// A `nexus` command (`bin`: the binary's path) with a clean configuration environment, run in `dir`.
pub fn nexus(bin: &str, dir: &std::path::Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(bin);
    for var in CONFIG_VARS {
        cmd.env_remove(var);
    }
    cmd.current_dir(dir).envs(env.iter().copied()).stdin(Stdio::null()).kill_on_drop(true);
    cmd
}

pub async fn run_to_end(mut cmd: Command) -> (i32, String, String) {
    let out =
        tokio::time::timeout(Duration::from_secs(60), cmd.output()).await.expect("nexus exits").expect("nexus runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// A running `nexus serve` process and what it printed.
pub struct Server {
    child: Child,
    pub base_url: String,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `nexus serve` (JSON logs) and waits until it is serving.
    pub async fn start(bin: &str, dir: &std::path::Path, env: &[(&str, &str)], extra_args: &[&str]) -> Server {
        let mut cmd = nexus(bin, dir, env);
        cmd.arg("serve").args(extra_args).env("LOG_FORMAT", "json").env("BIND", "127.0.0.1:0");
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("nexus starts");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let (so, se) = (stdout.clone(), stderr.clone());
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                so.lock().unwrap().push(line);
            }
        });
        tokio::spawn(async move {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["message"] == "nexus is serving" {
                        let _ = tx.send(v["base_url"].as_str().unwrap_or_default().to_owned());
                    }
                }
                se.lock().unwrap().push(line);
            }
        });
        let base_url = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("nexus did not start: {:?}", stderr.lock().unwrap()))
            .unwrap_or_else(|| panic!("nexus exited: {:?}", stderr.lock().unwrap()));
        Server { child, base_url: base_url.trim_end_matches('/').to_owned(), stdout, stderr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// The first stdout line containing `needle`, polling with a deadline.
    pub async fn stdout_line(&self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(l) = self.stdout.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            assert!(tokio::time::Instant::now() < deadline, "no stdout line with {needle:?}: {}", self.logs());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn logs(&self) -> String {
        let mut all = self.stdout.lock().unwrap().join("\n");
        all.push('\n');
        all.push_str(&self.stderr.lock().unwrap().join("\n"));
        all
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// SIGKILL: the process dies without any cleanup.
    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }

    /// SIGTERM, then the exit code (bounded).
    pub async fn terminate(mut self) -> (i32, String) {
        let pid = self.child.id().expect("running").to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status().await;
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("exits after SIGTERM")
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await; // let the log readers drain
        (status.code().unwrap_or(-1), self.logs())
    }
}
