//! `Relay`, the engine of `nexus proxy`, between real sockets: agents
//! (reqwest, or raw bytes for what clients rarely send) → the relay, signing
//! with credentials from a real Gateway → a scripted provider that answers
//! with exact bytes and counts its connections. Every framing of RFC 9112
//! arrives whole, and a provider connection is used again only when its
//! last answer ended exactly.

use nexus_bridge::{Bridge, Relay};
use nexus_testkit::upstream::{schema, static_connection};
use nexus_testkit::{Backend, TestApp};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

#[path = "relay/apart.rs"]
mod apart;
#[path = "relay/catalog.rs"]
mod catalog;
#[path = "relay/grants.rs"]
mod grants;
#[path = "relay/hardening.rs"]
mod hardening;
#[path = "relay/quirks.rs"]
mod quirks;
#[path = "relay/refresh_rule.rs"]
mod refresh_rule;
#[path = "relay/tenants.rs"]
mod tenants;

/// The scripted answer for a path (under `/api`), as raw bytes, and
/// whether the provider closes the connection after it.
fn script(path: &str, request: &[u8]) -> (Vec<u8>, bool) {
    let fixed = |s: &str, close: bool| (s.as_bytes().to_vec(), close);
    match path {
        "/api/len" => fixed("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Case: len\r\n\r\nhello", false),
        "/api/chunked" => fixed(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-T: y\r\n\r\n",
            false,
        ),
        "/api/until-close" => fixed("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nstreamed to the end", true),
        "/api/interim" => fixed(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
            false,
        ),
        "/api/no-content" => fixed("HTTP/1.1 204 No Content\r\nX-Case: 204\r\n\r\n", false),
        "/api/not-modified" => fixed("HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\nETag: \"e\"\r\n\r\n", false),
        "/api/both" => {
            fixed("HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", false)
        }
        // A second answer nobody asked for, right after the first: it must
        // never reach the next request.
        "/api/extra" => {
            fixed("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nstolen", false)
        }
        "/api/named-length" => {
            fixed("HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello", false)
        }
        "/api/late-extra" => fixed("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
        // A last chunk whose line ends in a bare LF, with an answer after it
        // that a lenient reader would pass on as the next one.
        "/api/forged-chunk" => fixed(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0;x\n\nHTTP/1.1 200 OK\nContent-Length: 6\n\nforged\r\n\r\n",
            false,
        ),
        "/api/close" => fixed("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", true),
        "/api/http10" => fixed("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
        "/api/garbage" => fixed("NOT HTTP AT ALL\r\n\r\n", false),
        "/api/bad-chunk" => fixed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\n", false),
        "/api/cut" => fixed("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf", true),
        "/api/cookie" => fixed(
            "HTTP/1.1 403 Forbidden\r\nSet-Cookie: s=1\r\nConnection: x-hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 4\r\n\r\nnope",
            false,
        ),
        // What the provider received, head and body, as the body.
        _ => {
            let mut answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", request.len()).into_bytes();
            answer.extend_from_slice(request);
            (answer, false)
        }
    }
}

struct Provider {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Provider {
    async fn start() -> Provider {
        Provider::start_with(None).await
    }

    /// With `tls`, every connection is TLS first.
    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Provider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                match tls.clone() {
                    None => conns.spawn(answer_all(stream)),
                    Some(tls) => conns.spawn(async move {
                        if let Ok(stream) = tls.accept(stream).await {
                            answer_all(stream).await;
                        }
                    }),
                };
            }
        });
        Provider { addr, accepted, task }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Reads requests (heads, and bodies by `Content-Length`) and answers each
/// from [`script`], byte by byte for paths ending in `-slowly`, after a
/// pause for `/api/slow`, never for `/api/silent`; `/api/close-soon`
/// answers and closes the connection a little later, as an idle timeout would.
async fn answer_all<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut stream: S) {
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
            .unwrap_or(0);
        while buf.len() < end + length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let request: Vec<u8> = buf.drain(..end + length).collect();
        let mut words = head.split_whitespace();
        let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or("").to_owned());
        let path = path.split('?').next().unwrap_or("").to_owned();
        match path.as_str() {
            "/api/silent" => std::future::pending::<()>().await,
            "/api/slow" => tokio::time::sleep(Duration::from_millis(300)).await,
            _ => {}
        }
        let (mut answer, close) = script(path.trim_end_matches("-slowly"), &request);
        if method == "HEAD" {
            let end = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            answer.truncate(end);
        }
        if path.ends_with("-slowly") {
            for byte in answer {
                if stream.write_all(&[byte]).await.is_err() || stream.flush().await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        } else if stream.write_all(&answer).await.is_err() || stream.flush().await.is_err() {
            return;
        }
        if path == "/api/close-soon" {
            tokio::time::sleep(Duration::from_millis(50)).await;
            return;
        }
        if path == "/api/late-extra" {
            // An answer nobody asked for, a little after the real one.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nstolen").await;
            let _ = stream.flush().await;
        }
        if close {
            return;
        }
    }
}

struct Proxy {
    relay: Arc<Relay>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl Proxy {
    async fn start(relay: Relay) -> Proxy {
        let relay = Arc::new(relay);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let serving = relay.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (relay, stopped) = (serving.clone(), stopped.clone());
                tokio::spawn(async move { relay.serve(stream, stopped).await });
            }
        });
        Proxy { relay, addr, stop }
    }

    fn url(&self, id: &str, path: &str) -> String {
        format!("http://{}/{id}{path}", self.addr)
    }
}

/// A Gateway with one `api_key` connection to `base`; the bridge for it.
async fn gateway(backend: Backend, base: &str) -> (TestApp, Bridge, String) {
    let app = TestApp::spawn(backend).await;
    let provider =
        json!({"auth_type": "api_key", "api_base_url": base, "params": {"credential_schema": schema(&["api_key"])}});
    let id = static_connection(&app, "scripted", provider, json!({"api_key": "relay-key"})).await;
    let bridge = Bridge::new(app.base_url.clone(), app.api_key.clone());
    (app, bridge, id)
}

/// A scripted provider, a Gateway (on SQLite) with a connection to it, and
/// the relay `make` builds in front.
async fn scripted(make: impl FnOnce(Bridge) -> Relay) -> (Provider, TestApp, String, Proxy) {
    scripted_on(Backend::Sqlite, make).await
}

async fn scripted_on(backend: Backend, make: impl FnOnce(Bridge) -> Relay) -> (Provider, TestApp, String, Proxy) {
    let provider = Provider::start().await;
    let (app, bridge, id) = gateway(backend, &format!("http://{}/api", provider.addr)).await;
    let proxy = Proxy::start(make(bridge)).await;
    (provider, app, id, proxy)
}

/// One agent connection: reqwest keeps a single connection alive.
fn agent() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(1).timeout(Duration::from_secs(10)).build().unwrap()
}

/// Sends raw bytes on a new connection and reads until the relay closes it.
async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await.unwrap().unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// One request on a connection of its own (`Connection: close`), read to
/// the close: the status, the head (lowercase) and the body, unchunked by
/// the test's own reading of chunks. The relay hands the provider
/// connection on before it closes the agent's, so the next request finds it.
async fn fetch(addr: SocketAddr, method: &str, target: &str) -> (u16, String, String) {
    let answer =
        raw(addr, format!("{method} {target} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n").as_bytes())
            .await;
    let (head, mut rest) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let head = head.to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    if !head.contains("\r\ntransfer-encoding: chunked") {
        return (status, head, rest.to_owned());
    }
    let mut body = String::new();
    loop {
        let (line, after) = rest.split_once("\r\n").expect("a chunk-size line");
        let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            assert!(after.ends_with("\r\n"), "trailers end with an empty line: {after:?}");
            return (status, head, body);
        }
        body.push_str(&after[..size]);
        rest = after[size..].strip_prefix("\r\n").expect("CRLF after chunk data");
    }
}

async fn every_framing_arrives_whole_and_only_exact_endings_keep_the_connection(backend: Backend) {
    {
        let (provider, _app, id, proxy) = scripted_on(backend, Relay::new).await;
        let echo = || async {
            let (status, _, text) = fetch(proxy.addr, "GET", &format!("/{id}/echo")).await;
            assert_eq!(status, 200);
            assert!(text.starts_with("GET /api/echo HTTP/1.1\r\n"), "{text}");
            assert!(text.contains("authorization: Bearer relay-key\r\n"), "signed: {text}");
        };
        echo().await;
        assert_eq!(provider.accepted(), 1);
        // (path, method, status, body, whether the provider connection is kept)
        let cases: [(&str, &str, u16, &str, bool); 19] = [
            ("/named-length", "GET", 200, "hello", true),
            ("/late-extra", "GET", 200, "ok", false),
            ("/len", "GET", 200, "hello", true),
            ("/len", "HEAD", 200, "", true),
            ("/len-slowly", "GET", 200, "hello", true),
            ("/chunked", "GET", 200, "Wikipedia", true),
            ("/chunked-slowly", "GET", 200, "Wikipedia", true),
            ("/interim", "GET", 201, "ok", true),
            ("/no-content", "GET", 204, "", true),
            ("/not-modified", "GET", 304, "", true),
            ("/cookie", "GET", 403, "nope", true),
            ("/until-close", "GET", 200, "streamed to the end", false),
            ("/until-close-slowly", "GET", 200, "streamed to the end", false),
            ("/both", "GET", 200, "ok", false),
            ("/extra", "GET", 200, "ok", false),
            ("/close", "GET", 200, "ok", false),
            ("/http10", "GET", 200, "ok", false),
            ("/garbage", "GET", 502, "", false),
            ("/close-soon", "POST", 200, "", false),
        ];
        for (path, method, status, body, kept) in cases {
            let before = provider.accepted();
            let (got, head, text) = fetch(proxy.addr, method, &format!("/{id}{path}")).await;
            assert_eq!(got, status, "{path}: {head}{text}");
            if status == 502 {
                assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["code"], "provider_unreachable");
            } else if path != "/close-soon" {
                assert_eq!(text, body, "{path}");
            }
            for hop in ["set-cookie", "x-hop", "keep-alive"] {
                assert!(!head.contains(&format!("\r\n{hop}:")), "{path}: {head}");
            }
            if path == "/close-soon" || path == "/late-extra" {
                // Closed by the provider, or sent more, while idle: noticed
                // before the next request.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            if path == "/named-length" {
                assert!(head.contains("\r\ncontent-length: 5\r\n"), "{head}");
            }
            echo().await;
            let opened = provider.accepted() - before;
            assert_eq!(opened, usize::from(!kept), "{path}: provider connections opened by it and the next request");
        }
        let (status, head, _) = fetch(proxy.addr, "HEAD", &format!("/{id}/not-modified")).await;
        assert_eq!(status, 304);
        assert!(head.contains("\r\netag: \"e\""), "{head}");

        // reqwest (hyper's client) reads the same answers on one kept-alive connection.
        let http = agent();
        for (path, body) in
            [("/chunked-slowly", "Wikipedia"), ("/until-close", "streamed to the end"), ("/len", "hello")]
        {
            assert_eq!(http.get(proxy.url(&id, path)).send().await.unwrap().text().await.unwrap(), body);
        }
    }
}

nexus_testkit::both_backends!(every_framing_arrives_whole_and_only_exact_endings_keep_the_connection);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_answers_cut_the_agent_off_rather_than_pass_off_a_wrong_body() {
    nexus_testkit::run_bounded(async {
        let (_provider, _app, id, proxy) = scripted(Relay::new).await;
        for path in ["/bad-chunk", "/cut", "/bad-chunk-slowly", "/cut-slowly", "/forged-chunk"] {
            // The head may have gone out before the fault showed; the body
            // never ends as if it were whole.
            let body = match agent().get(proxy.url(&id, path)).send().await {
                Ok(resp) => resp.bytes().await.map(|b| b.to_vec()),
                Err(e) => Err(e),
            };
            assert!(body.is_err(), "{path}: {body:?}");
        }
        assert_eq!(proxy.relay.upstreams().idle_count(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_chunked_and_expect_continue_requests() {
    nexus_testkit::run_bounded(async {
        let (_provider, _app, id, proxy) = scripted(Relay::new).await;
        // Two requests in one write; the first with a chunked body.
        let pipelined = format!(
            "POST /{id}/echo HTTP/1.1\r\nhost: 127.0.0.1\r\ntransfer-encoding: chunked\r\nx-api-key: mine\r\n\r\n4\r\nWiki\r\n5;e=1\r\npedia\r\n0\r\n\r\n\
             GET /{id}/len HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
        );
        let answers = raw(proxy.addr, pipelined.as_bytes()).await;
        let (first, second) = answers.split_once("HTTP/1.1 200 OK\r\nContent-Length: 5").expect(&answers);
        assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{answers}");
        let provider_saw = first.split_once("\r\n\r\n").unwrap().1.to_ascii_lowercase();
        assert!(provider_saw.starts_with("post /api/echo http/1.1\r\n"), "{provider_saw}");
        assert!(provider_saw.contains("content-length: 9\r\n") && provider_saw.ends_with("\r\n\r\nwikipedia"), "{provider_saw}");
        assert!(!provider_saw.contains("transfer-encoding") && !provider_saw.contains("x-api-key"), "{provider_saw}");
        assert!(second.ends_with("connection: close\r\n\r\nhello"), "{second}");

        // Expect: 100-continue: the relay asks for the body, and does not pass the expectation on.
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        let head = format!("PUT /{id}/echo HTTP/1.1\r\nhost: 127.0.0.1\r\nexpect: 100-continue\r\ncontent-length: 3\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut interim = [0u8; 25];
        stream.read_exact(&mut interim).await.unwrap();
        assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
        stream.write_all(b"abc").await.unwrap();
        let mut answer = vec![0u8; 4096];
        let n = stream.read(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]).to_ascii_lowercase();
        assert!(answer.ends_with("\r\n\r\nabc") && !answer.contains("expect"), "{answer}");

        // HTTP/1.0: no chunks in the answer; the connection closes after it.
        let old = raw(proxy.addr, format!("GET /{id}/chunked HTTP/1.0\r\n\r\n").as_bytes()).await;
        assert!(old.ends_with("connection: close\r\n\r\nWikipedia"), "{old}");
        let old = raw(proxy.addr, format!("GET /{id}/until-close HTTP/1.0\r\n\r\n").as_bytes()).await;
        assert!(old.ends_with("\r\n\r\nstreamed to the end"), "{old}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_and_a_closed_connection_and_nothing_is_sent() {
    nexus_testkit::run_bounded(async {
        let (provider, _app, id, proxy) =
            scripted(|bridge| Relay::new(bridge).head_timeout(Duration::from_millis(300))).await;
        let requests = [
            "NOT HTTP\r\n\r\n".to_owned(),
            format!("POST /{id}/echo HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n"),
            format!("POST /{id}/echo HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd"),
            format!("POST /{id}/echo HTTP/1.1\r\nhost: 127.0.0.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"),
            format!("GET /{id}/a/%2e%2e/%2e%2e/admin HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"),
        ];
        for request in requests {
            let answer = raw(proxy.addr, request.as_bytes()).await;
            assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"), "{answer}");
            assert!(answer.contains("\"code\":\"invalid_input\""), "{answer}");
        }
        let too_large =
            raw(proxy.addr, format!("POST /{id}/echo HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 10485761\r\n\r\n").as_bytes()).await;
        assert!(too_large.starts_with("HTTP/1.1 413 ") && too_large.contains("connection: close"), "{too_large}");
        assert_eq!(provider.accepted(), 0, "nothing reached the provider");

        // An agent that sends nothing is let go after the head timeout.
        let started = std::time::Instant::now();
        assert_eq!(raw(proxy.addr, b"").await, "");
        assert!(started.elapsed() < Duration::from_secs(5));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_silent_and_switched_providers_are_json_errors() {
    nexus_testkit::run_bounded(async {
        let (_provider, app, id, proxy) = scripted(|bridge| Relay::new(bridge).provider_timeout(Duration::from_millis(300))).await;
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let provider_json = json!({"auth_type": "api_key", "api_base_url": format!("http://{closed}"), "params": {"credential_schema": schema(&["api_key"])}});
        let gone = static_connection(&app, "gone", provider_json, json!({"api_key": "k"})).await;
        let unreachable = agent().get(proxy.url(&gone, "/x")).send().await.unwrap();
        assert_eq!(unreachable.status(), 502);
        assert_eq!(unreachable.json::<Value>().await.unwrap()["code"], "provider_unreachable");
        let started = std::time::Instant::now();
        let silent = agent().get(proxy.url(&id, "/silent")).send().await.unwrap();
        assert_eq!(silent.status(), 504);
        assert_eq!(silent.json::<Value>().await.unwrap()["code"], "provider_timeout");
        assert!(started.elapsed() < Duration::from_secs(5));
        let missing = agent().get(proxy.url("no-such-connection", "/x")).send().await.unwrap();
        assert_eq!(missing.status(), 404);
        assert_eq!(missing.json::<Value>().await.unwrap()["code"], "not_found");
        // The relay's own answer to a HEAD has a length and no body: the
        // next answer on the connection is read whole.
        let two = format!("HEAD /nope/x HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\nGET /{id}/len HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n");
        let answers = raw(proxy.addr, two.as_bytes()).await;
        let (first, second) = answers.split_once("\r\n\r\n").unwrap();
        assert!(first.starts_with("HTTP/1.1 404 ") && first.contains("content-length: "), "{answers}");
        assert!(second.starts_with("HTTP/1.1 200 OK\r\n") && second.ends_with("\r\n\r\nhello"), "{answers}");
        // TRACE would echo the signed request: refused, as CONNECT.
        for method in ["TRACE", "CONNECT"] {
            let target = if method == "CONNECT" { "127.0.0.1:1".to_owned() } else { format!("/{id}/echo") };
            let answer = raw(proxy.addr, format!("{method} {target} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n").as_bytes()).await;
            assert!(answer.starts_with("HTTP/1.1 400 ") && !answer.contains("relay-key"), "{method}: {answer}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_connections_hand_provider_connections_on() {
    nexus_testkit::run_bounded(async {
        let (provider, _app, id, proxy) = scripted(Relay::new).await;
        for n in 0..5 {
            let answer = raw(
                proxy.addr,
                format!("GET /{id}/len HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n").as_bytes(),
            )
            .await;
            assert!(answer.ends_with("hello"), "{n}: {answer}");
        }
        // Each agent connection closed after its request; the provider
        // connection went to the idle list and on to the next.
        assert_eq!(provider.accepted(), 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(proxy.relay.upstreams().idle_count(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_lets_a_request_in_flight_finish_and_closes_idle_connections() {
    nexus_testkit::run_bounded(async {
        let (_provider, _app, id, proxy) = scripted(Relay::new).await;
        let mut idle = TcpStream::connect(proxy.addr).await.unwrap();
        let slow = format!("GET /{id}/slow HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n");
        let addr = proxy.addr;
        let in_flight = tokio::spawn(async move { raw(addr, slow.as_bytes()).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        proxy.stop.send(true).unwrap();
        let answer = in_flight.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.contains("GET /api/slow"), "{answer}");
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest)).await;
        assert_eq!(read.unwrap().unwrap(), 0, "the idle connection was closed");
    })
    .await;
}

/// A CA of the test's own and a certificate it issued for `localhost`.
fn test_pki() -> (rustls::RootCertStore, tokio_rustls::TlsAcceptor) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().signed_by(&key, &issuer).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca_cert.der().to_vec())).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (roots, tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_providers_are_verified_and_their_connections_kept() {
    nexus_testkit::run_bounded(async {
        let (roots, acceptor) = test_pki();
        let provider = Provider::start_with(Some(acceptor)).await;
        let port = provider.addr.port();
        let (app, bridge, id) = gateway(Backend::Sqlite, &format!("https://localhost:{port}/api")).await;
        let by_ip = json!({"auth_type": "api_key", "api_base_url": format!("https://127.0.0.1:{port}/api"), "params": {"credential_schema": schema(&["api_key"])}});
        let by_ip = static_connection(&app, "by-ip", by_ip, json!({"api_key": "k"})).await;
        let proxy = Proxy::start(Relay::with_roots(bridge.clone(), roots).unwrap()).await;
        for (path, body) in [("/len", "hello"), ("/chunked-slowly", "Wikipedia"), ("/len", "hello")] {
            assert_eq!(fetch(proxy.addr, "GET", &format!("/{id}{path}")).await.2, body);
        }
        assert_eq!(provider.accepted(), 1, "one TLS connection for all three requests");
        // The certificate names localhost, not 127.0.0.1: refused.
        let mismatch = agent().get(proxy.url(&by_ip, "/len")).send().await.unwrap();
        assert_eq!(mismatch.status(), 502);
        // Mozilla's roots do not know the test's CA: refused.
        let strict = Proxy::start(Relay::new(bridge)).await;
        assert_eq!(agent().get(strict.url(&id, "/len")).send().await.unwrap().status(), 502);
    })
    .await;
}

/// A provider's answer as the Gateway's router route and `Bridge::forward`
/// read it: through the relay's provider side, as a stream
/// (`Sender::respond`), on `sender`'s connections, for `path` under `base`.
async fn streamed(
    sender: &nexus_bridge::relay::Sender,
    base: &str,
    path: &str,
) -> Result<(u16, http::HeaderMap, Result<String, String>), nexus_bridge::relay::Own> {
    use http_body_util::BodyExt;
    use nexus_core::strategy::{Strategy, StrategyType};
    let strategy = Strategy::from_parts(StrategyType::Oauth2, serde_json::Map::new()).unwrap();
    let credentials = json!({"access_token": "t"}).as_object().unwrap().clone();
    let answer =
        Arc::new(nexus_bridge::TokenAnswer::new("c1", "p", nexus_core::AuthType::Oauth2, strategy, credentials));
    let method = if path.starts_with("HEAD ") { http::Method::HEAD } else { http::Method::GET };
    let path = path.trim_start_matches("HEAD ");
    let fwd = nexus_bridge::Forward::new(base, path, None, method.clone(), http::HeaderMap::new(), Default::default())
        .unwrap();
    let framing =
        nexus_bridge::h1::Agent { head_request: method == http::Method::HEAD, http10: false, keep_alive: true };
    let mut link = None;
    let (up, head, _) = sender.forward(&mut link, "c1", &fwd, answer, framing, |a| async { Ok(a) }).await?;
    let resp = sender.respond(up, head);
    let (parts, body) = resp.into_parts();
    let body = match body.collect().await {
        Ok(collected) => Ok(String::from_utf8_lossy(&collected.to_bytes()).into_owned()),
        Err(e) => Err(e.to_string()),
    };
    Ok((parts.status.as_u16(), parts.headers, body))
}

/// The streamed answer keeps the relay's rules: the data of each framing
/// (chunks decoded, extensions and trailers left behind), hop headers and
/// cookies dropped, bodies cut short or badly framed an error, and only
/// connections whose answer ended exactly used again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_keeps_the_relays_rules() {
    nexus_testkit::run_bounded(async {
        let provider = Provider::start_with(None).await;
        let base = format!("http://127.0.0.1:{}/api", provider.addr.port());
        let upstreams = nexus_bridge::upstream::Upstreams::new(Duration::from_secs(5)).unwrap();
        let sender = nexus_bridge::relay::Sender::new(upstreams, Duration::from_secs(5));
        let ok = |body: &str| Ok(body.to_owned());
        let cases: [(&str, u16, Result<String, String>, usize); 12] = [
            ("len", 200, ok("hello"), 1),
            ("len-slowly", 200, ok("hello"), 1),
            ("chunked", 200, ok("Wikipedia"), 1),
            ("chunked-slowly", 200, ok("Wikipedia"), 1),
            ("until-close", 200, ok("streamed to the end"), 0),
            ("interim", 201, ok("ok"), 1),
            ("no-content", 204, ok(""), 1),
            ("HEAD len", 200, ok(""), 1),
            ("both", 200, ok("ok"), 0),
            ("extra", 200, ok("ok"), 0),
            ("cut", 200, Err("the provider's answer ended early".into()), 0),
            ("cookie", 403, ok("nope"), 1),
        ];
        for (path, status, body, idle) in cases {
            let (got, headers, got_body) = streamed(&sender, &base, path).await.unwrap();
            assert_eq!((got, &got_body), (status, &body), "{path}");
            assert_eq!(sender.upstreams().idle_count(), idle, "{path}: kept only if it ended exactly");
            for hop in ["transfer-encoding", "connection", "set-cookie", "x-hop", "keep-alive", "trailer"] {
                assert!(!headers.contains_key(hop), "{path}: {hop} passed on");
            }
            if path.ends_with("len") {
                assert_eq!(headers["content-length"], "5", "{path}");
            }
            // Each case on a fresh connection.
            while let Some(up) = sender.upstreams().check_out(&nexus_bridge::upstream::PoolKey::new(
                "c1",
                nexus_bridge::upstream::Origin::of(&base.parse().unwrap()).unwrap(),
            )) {
                drop(up);
            }
        }
        let (_, _, bad) = streamed(&sender, &base, "bad-chunk").await.unwrap();
        assert!(bad.unwrap_err().contains("badly framed"));
        let refused = streamed(&sender, &base, "garbage").await.unwrap_err();
        assert_eq!(refused.code, nexus_core::wire::ErrorCode::ProviderUnreachable);
    })
    .await;
}

/// The streamed answer over TLS: verified against the same roots as the
/// relay's, and the connection used again once each body is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_verifies_https_the_same_way() {
    nexus_testkit::run_bounded(async {
        let (roots, acceptor) = test_pki();
        let provider = Provider::start_with(Some(acceptor)).await;
        let port = provider.addr.port();
        let upstreams = nexus_bridge::upstream::Upstreams::with_roots(Duration::from_secs(5), roots).unwrap();
        let sender = nexus_bridge::relay::Sender::new(upstreams, Duration::from_secs(5));
        for _ in 0..3 {
            let (status, _, body) = streamed(&sender, &format!("https://localhost:{port}/api"), "len").await.unwrap();
            assert_eq!((status, body.unwrap().as_str()), (200, "hello"));
        }
        assert_eq!(provider.accepted(), 1, "the TLS connection was kept");
        let refused = streamed(&sender, &format!("https://127.0.0.1:{port}/api"), "len").await.unwrap_err();
        assert_eq!(
            refused.code,
            nexus_core::wire::ErrorCode::ProviderUnreachable,
            "the certificate names localhost only"
        );
    })
    .await;
}

/// The shared state of the idle list is safe under many agent connections
/// at once: every agent gets its own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_agents_at_once_each_get_their_own_answer() {
    nexus_testkit::run_bounded(async {
        let (_provider, _app, id, proxy) = scripted(Relay::new).await;
        let proxy = Arc::new(proxy);
        let mismatches = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = tokio::task::JoinSet::new();
        for a in 0..16 {
            let (proxy, id, mismatches) = (proxy.clone(), id.clone(), mismatches.clone());
            tasks.spawn(async move {
                let http = agent();
                for n in 0..25 {
                    let path = if n % 5 == 4 { format!("/extra?{a}-{n}") } else { format!("/who-{a}-{n}") };
                    let text = http.get(proxy.url(&id, &path)).send().await.unwrap().text().await.unwrap();
                    let expected =
                        if path.starts_with("/extra") { "ok".to_owned() } else { format!("GET /api{path} ") };
                    if !text.starts_with(&expected) {
                        mismatches.lock().unwrap().push((path, text));
                    }
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        assert_eq!(*mismatches.lock().unwrap(), Vec::<(String, String)>::new());
    })
    .await;
}
