//! A real AWS API that verifies SigV4: moto's server (pinned in
//! `testkit/python/requirements.txt`) with IAM authentication on.
//!
//! moto turns authentication on after `INITIAL_NO_AUTH_ACTION_COUNT` actions:
//! a test spends exactly those on setting up (for example
//! [`Moto::create_user_with_key`], three actions), then every request must be
//! signed right. The server runs as moto's `ThreadedMotoServer` on port 0 on
//! loopback, so there is no free-port race; it stops when the test drops it
//! (kill on drop) and also when its stdin closes, so a killed test binary
//! leaves nothing behind.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

const MOTO_SERVER: &str = r#"
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()  # end of input: the test is over (or was killed)
server.stop()
"#;

// Signed by botocore with a throwaway key: before authentication starts moto
// routes by the credential scope and checks nothing.
const CREATE_USER: &str = r#"
import json, sys
import boto3
args = json.load(sys.stdin)
iam = boto3.client("iam", endpoint_url=args["endpoint"], region_name="us-east-1",
                   aws_access_key_id="AKIASETUPONLYEXAMPLE", aws_secret_access_key="not-checked-yet")
iam.create_user(UserName=args["user"])
policy = {"Version": "2012-10-17",
          "Statement": [{"Effect": "Allow", "Action": args["actions"], "Resource": "*"}]}
iam.put_user_policy(UserName=args["user"], PolicyName="nexus", PolicyDocument=json.dumps(policy))
key = iam.create_access_key(UserName=args["user"])["AccessKey"]
print(json.dumps({"key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}))
"#;

const READY_DEADLINE: Duration = Duration::from_secs(60);
/// moto's default account id.
pub const ACCOUNT: &str = "123456789012";

/// A moto server; dropping it kills the process.
pub struct Moto {
    /// `http://127.0.0.1:PORT/`
    pub base_url: String,
    stderr: Arc<Mutex<String>>,
    _stdin: ChildStdin,
    _child: Child,
}

impl Moto {
    /// Starts moto with authentication turned on after `no_auth_actions`
    /// actions, and waits (bounded) until it listens. Installs the test venv
    /// first if needed (see [`crate::python`]).
    pub async fn start(no_auth_actions: u32) -> Moto {
        let python = tokio::task::spawn_blocking(crate::python::python)
            .await
            .expect("the venv installer does not panic")
            .expect("the Python test venv is available");
        let mut child = Command::new(python)
            .args(["-c", MOTO_SERVER])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", no_auth_actions.to_string())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("moto starts");
        let stdin = child.stdin.take().expect("piped stdin");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                s.push_str(&String::from_utf8_lossy(&buf[..n]));
                let cut = s.len().saturating_sub(16 * 1024);
                if cut > 0 {
                    let cut = (cut..s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(s.len());
                    s.drain(..cut);
                }
            }
        });
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let tail = stderr.clone();
        let port = tokio::time::timeout(READY_DEADLINE, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("moto did not start in time: {}", tail.lock().unwrap()))
            .expect("moto's stdout")
            .unwrap_or_else(|| panic!("moto exited: {}", tail.lock().unwrap()));
        let port: u16 = port.trim().parse().expect("moto prints its port");
        Moto { base_url: format!("http://127.0.0.1:{port}/"), stderr, _stdin: stdin, _child: child }
    }

    /// The last 16 KiB moto wrote to stderr (its request log), for failure messages.
    pub fn stderr_tail(&self) -> String {
        self.stderr.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Creates IAM user `user`, allowed `actions` (such as `"sts:AssumeRole"`),
    /// and an access key for it, with boto3: three unauthenticated actions.
    /// Returns `(access key id, secret access key)`.
    pub async fn create_user_with_key(&self, user: &str, actions: &[&str]) -> (String, String) {
        let input = json!({"endpoint": self.base_url, "user": user, "actions": actions}).to_string();
        let out = tokio::task::spawn_blocking(move || crate::python::run_script(CREATE_USER, input.as_bytes()))
            .await
            .expect("the script runner does not panic")
            .unwrap_or_else(|e| panic!("creating the IAM user with boto3: {e:#}\n{}", self.stderr_tail()));
        let key: Value = serde_json::from_str(out.trim()).expect("the script prints JSON");
        (key["key"].as_str().expect("key").to_owned(), key["secret"].as_str().expect("secret").to_owned())
    }
}

/// The text of the first `<tag>…</tag>` in an XML answer.
pub fn xml<'a>(body: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let start = body.find(&open).unwrap_or_else(|| panic!("no <{tag}> in {body}")) + open.len();
    let len = body[start..].find(&format!("</{tag}>")).unwrap_or_else(|| panic!("no </{tag}> in {body}"));
    &body[start..start + len]
}
