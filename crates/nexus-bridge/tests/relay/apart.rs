//! Credentials of one connection never travel on a provider connection that
//! another connection's requests use, through either proxy.
//!
//! The provider here misbehaves on purpose, as the outside attack found:
//! `/api/cl0` answers without reading the body its `Content-Length`
//! announces (so the body is read as the next request on that connection),
//! `/api/store` keeps what arrives on the connection after its head (until
//! its length or a pause) for `/api/read` to give back, and `/api/twice`
//! answers twice, the second time unasked and a little later, with the
//! request it received. Agent A uses these to leave a request prefix or an
//! answer queued on a pooled provider connection; agent B (another
//! connection of the same provider, so the same origin) must never send on
//! it: neither agent ever sees the other's key.

use super::{agent, Proxy};
use nexus_bridge::{Bridge, Relay};
use nexus_testkit::upstream::schema;
use nexus_testkit::{Backend, TestApp};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY_A: &str = "key-of-agent-a-7f3c";
const KEY_B: &str = "key-of-agent-b-91de";

/// What `/api/store` kept, for `/api/read`.
type Stored = Arc<Mutex<Vec<u8>>>;

struct Misbehaving {
    addr: SocketAddr,
    stored: Stored,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Misbehaving {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn misbehaving() -> Misbehaving {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stored: Stored = Arc::default();
    let keep = stored.clone();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            conns.spawn(serve(stream, keep.clone()));
        }
    });
    Misbehaving { addr, stored, task }
}

fn ok(body: &[u8]) -> Vec<u8> {
    let mut answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    answer.extend_from_slice(body);
    answer
}

/// Reads into `buf` until it holds `n` bytes, or nothing came for `pause`.
async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, n: usize, pause: Option<Duration>) -> bool {
    while buf.len() < n {
        let mut chunk = [0u8; 4096];
        let read = match pause {
            Some(p) => match tokio::time::timeout(p, stream.read(&mut chunk)).await {
                Ok(r) => r,
                Err(_) => return true,
            },
            None => stream.read(&mut chunk).await,
        };
        match read {
            Ok(0) | Err(_) => return false,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
    true
}

async fn serve(mut stream: TcpStream, stored: Stored) {
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let more = buf.len() + 1;
            if !fill(&mut stream, &mut buf, more, None).await {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
            .unwrap_or(0);
        let path = head.split_whitespace().nth(1).unwrap_or("").split('?').next().unwrap_or("").to_owned();
        let answer = match path.as_str() {
            // Ignores the body it was announced: it stays, and is read as
            // the next request on this connection.
            "/api/cl0" => {
                buf.drain(..end);
                ok(b"ok")
            }
            // Whatever follows the head, up to the length or a pause.
            "/api/store" => {
                fill(&mut stream, &mut buf, end + length, Some(Duration::from_millis(300))).await;
                let taken = buf.len().min(end + length);
                let body: Vec<u8> = buf.drain(..taken).skip(end).collect();
                stored.lock().unwrap().extend_from_slice(&body);
                ok(b"stored")
            }
            _ => {
                if !fill(&mut stream, &mut buf, end + length, None).await {
                    return;
                }
                let request: Vec<u8> = buf.drain(..end + length).collect();
                match path.as_str() {
                    "/api/read" => ok(&stored.lock().unwrap()),
                    "/api/twice" => {
                        let _ = stream.write_all(&ok(b"ok")).await;
                        tokio::time::sleep(Duration::from_millis(150)).await;
                        ok(&request)
                    }
                    "/api/slow-echo" => {
                        tokio::time::sleep(Duration::from_millis(400)).await;
                        ok(&request)
                    }
                    _ => ok(&request),
                }
            }
        };
        if stream.write_all(&answer).await.is_err() {
            return;
        }
    }
}

/// A Gateway with one provider at `base` and two connections to it, one
/// per agent: (app, A's id, B's id).
async fn two_connections(backend: Backend, base: &str) -> (TestApp, String, String) {
    let app = TestApp::spawn(backend).await;
    let provider = json!({"name": "shared", "auth_type": "api_key", "api_base_url": base,
        "params": {"credential_schema": schema(&["api_key"])}});
    assert_eq!(app.post("/v1/providers", &provider).await.status, 201);
    let mut ids = Vec::new();
    for key in [KEY_A, KEY_B] {
        let req = app
            .post(
                "/v1/request-connection",
                &json!({"workspace_id": "w", "provider_name": "shared", "return_url": "https://app.example.test/"}),
            )
            .await;
        let done = app
            .send(
                app.client
                    .post(app.url("/v1/capture-credential"))
                    .header("x-api-key", &app.api_key)
                    .header("accept", "application/json")
                    .json(&json!({"state": req.json["state"], "credentials": {"api_key": key}})),
            )
            .await;
        assert_eq!(done.status, 200, "{}", done.text);
        ids.push(done.json["connection_id"].as_str().unwrap().to_owned());
    }
    (app, ids.remove(0), ids.remove(0))
}

/// How an agent reaches a connection's provider through one of the proxies.
trait Route: Sync {
    fn request(&self, http: &reqwest::Client, method: reqwest::Method, id: &str, path: &str)
        -> reqwest::RequestBuilder;
}

struct ThroughRelay(SocketAddr);

impl Route for ThroughRelay {
    fn request(
        &self,
        http: &reqwest::Client,
        method: reqwest::Method,
        id: &str,
        path: &str,
    ) -> reqwest::RequestBuilder {
        http.request(method, format!("http://{}/{id}{path}", self.0))
    }
}

struct ThroughGateway<'a>(&'a TestApp);

impl Route for ThroughGateway<'_> {
    fn request(
        &self,
        http: &reqwest::Client,
        method: reqwest::Method,
        id: &str,
        path: &str,
    ) -> reqwest::RequestBuilder {
        http.request(method, self.0.url(&format!("/v1/proxy/{id}{path}"))).header("x-api-key", &self.0.api_key)
    }
}

async fn text(req: reqwest::RequestBuilder) -> String {
    match req.send().await {
        Ok(resp) => resp.text().await.unwrap_or_default(),
        Err(e) => format!("(no answer: {e})"),
    }
}

/// The attack, then what each agent saw: (A's answers, B's answers).
async fn attack(
    route: &dyn Route,
    a: &str,
    b: &str,
    settle: impl std::future::Future<Output = ()>,
) -> (Vec<String>, Vec<String>) {
    let (mut seen_a, mut seen_b) = (Vec::new(), Vec::new());
    // A leaves a request prefix on its provider connection, then hangs up,
    // so the connection is idle for whoever comes next.
    {
        let http = agent();
        let smuggled = "POST /api/store HTTP/1.1\r\nHost: p\r\nContent-Length: 4000\r\n\r\n";
        seen_a.push(text(route.request(&http, reqwest::Method::POST, a, "/cl0").body(smuggled)).await);
    }
    settle.await;
    // B's requests, on fresh agent connections and on one kept alive.
    let kept = agent();
    for _ in 0..3 {
        seen_b.push(text(route.request(&agent(), reqwest::Method::GET, b, "/echo")).await);
        seen_b.push(text(route.request(&kept, reqwest::Method::GET, b, "/echo")).await);
    }
    // A reads back whatever its prefix captured.
    seen_a.push(text(route.request(&agent(), reqwest::Method::GET, a, "/read")).await);

    // The timing variant: A's request is answered twice; B's slow request
    // must not be answered by the second, unasked answer.
    {
        let http = agent();
        seen_a.push(text(route.request(&http, reqwest::Method::GET, a, "/twice")).await);
    }
    seen_b.push(text(route.request(&agent(), reqwest::Method::GET, b, "/slow-echo")).await);
    seen_b.push(text(route.request(&agent(), reqwest::Method::GET, b, "/echo")).await);
    (seen_a, seen_b)
}

fn assert_apart(through: &str, seen_a: &[String], seen_b: &[String], stored: &Stored) {
    for answer in seen_a {
        assert!(!answer.contains(KEY_B), "{through}: agent A received B's request: {answer}");
    }
    for answer in seen_b {
        assert!(!answer.contains(KEY_A), "{through}: agent B received A's request or answer: {answer}");
    }
    let stored = String::from_utf8_lossy(&stored.lock().unwrap()).into_owned();
    assert!(!stored.contains(KEY_B), "{through}: B's signed request was captured by A's prefix: {stored}");
    // B's own requests reached the provider signed with B's key.
    assert!(seen_b.iter().filter(|t| t.contains(KEY_B)).count() >= 6, "{through}: {seen_b:?}");
}

async fn neither_proxy_lets_one_connection_read_anothers_credentials(backend: Backend) {
    let provider = misbehaving().await;
    let (app, a, b) = two_connections(backend, &format!("http://{}/api", provider.addr)).await;

    let relay = Proxy::start(Relay::new(Bridge::new(app.base_url.clone(), app.api_key.clone()))).await;
    let upstreams = relay.relay.clone();
    let settle = async move {
        // The relay hands A's provider connection on when A's agent
        // connection closes: wait until it is idle.
        for _ in 0..100 {
            if upstreams.upstreams().idle_count() > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let (seen_a, seen_b) = attack(&ThroughRelay(relay.addr), &a, &b, settle).await;
    assert_apart("nexus proxy", &seen_a, &seen_b, &provider.stored);

    provider.stored.lock().unwrap().clear();
    let (seen_a, seen_b) = attack(&ThroughGateway(&app), &a, &b, async {}).await;
    assert_apart("the Gateway proxy", &seen_a, &seen_b, &provider.stored);
}

nexus_testkit::both_backends!(neither_proxy_lets_one_connection_read_anothers_credentials);
