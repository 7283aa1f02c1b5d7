//! The listener's own limits: a half-sent head does not keep a connection
//! open, and a body announced larger than the route accepts is refused
//! before it is read.

use nexus_testkit::{Backend, TestApp};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads what the server sends until it closes the connection, or `None`
/// if it has not closed within `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut answer = Vec::new();
    match tokio::time::timeout(limit, stream.read_to_end(&mut answer)).await {
        Ok(_) => Some(String::from_utf8_lossy(&answer).into_owned()),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_head_is_let_go_after_the_head_timeout() {
    nexus_testkit::run_bounded(async {
        let app = TestApp::spawn_with(Backend::Sqlite, |c| c.head_timeout = Some("1".into())).await;
        let mut half = TcpStream::connect(app.addr).await.unwrap();
        half.write_all(b"GET /v1/providers HTTP/1.1\r\nhost: 127.0.0.1\r\nx-api-key: ").await.unwrap();
        let started = Instant::now();
        let closed = read_until_closed(&mut half, Duration::from_secs(10)).await;
        assert!(closed.is_some(), "the connection was still open after 10 s");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(900), "closed before the timeout: {waited:?}");
        // An idle keep-alive connection goes the same way.
        let mut idle = TcpStream::connect(app.addr).await.unwrap();
        idle.write_all(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n").await.unwrap();
        let answered = read_until_closed(&mut idle, Duration::from_secs(10)).await.expect("closed when idle");
        assert!(answered.starts_with("HTTP/1.1 200 "), "{answered}");
        println!("half head closed after {waited:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_announced_too_large_is_refused_before_it_is_read() {
    nexus_testkit::run_bounded(async {
        let app = TestApp::spawn(Backend::Sqlite).await;
        for (path, length) in [("/v1/providers", 10_000_000_000u64), ("/v1/proxy/c1/x", 10_485_761), ("/v1/providers", 262_145)] {
            let mut stream = TcpStream::connect(app.addr).await.unwrap();
            let head = format!(
                "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nx-api-key: {}\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n",
                app.api_key
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            // Nothing of the body is sent: the answer must not wait for it.
            let answer = read_until_closed(&mut stream, Duration::from_secs(5)).await.expect("answered without the body");
            assert!(answer.starts_with("HTTP/1.1 413 "), "{path} {length}: {answer}");
            assert!(answer.contains("\"code\":\"payload_too_large\""), "{answer}");
        }
        assert_eq!(app.audit_count().await, 0, "nothing was done");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_is_cut_off() {
    nexus_testkit::run_bounded(async {
        let app = TestApp::spawn_with(Backend::Sqlite, |c| c.head_timeout = Some("1".into())).await;
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        let head = format!(
            "POST /v1/providers HTTP/1.1\r\nhost: 127.0.0.1\r\nx-api-key: {}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"name\"",
            app.api_key
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        let answer = read_until_closed(&mut stream, Duration::from_secs(10)).await.expect("cut off, not kept waiting");
        assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
        println!("a stalled body was answered after {:?}: {}", started.elapsed(), answer.lines().next().unwrap_or(""));
        assert_eq!(app.audit_count().await, 0, "nothing was done");
    })
    .await;
}

/// The proxy route reads its body outside the router (`proxy_lane.rs`),
/// under the same limits: a body that stops arriving is cut off (`408`),
/// one without a declared length is cut off past 10 MiB (`413`), and
/// nothing reaches the provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxied_body_that_stalls_or_overflows_is_cut_off() {
    nexus_testkit::run_bounded(async {
        let app = TestApp::spawn_with(Backend::Sqlite, |c| c.head_timeout = Some("1".into())).await;
        let (addr, seen) = nexus_testkit::upstream::recording_upstream().await;
        let provider = serde_json::json!({"auth_type": "api_key", "api_base_url": format!("http://{addr}/api"), "params": {"credential_schema": nexus_testkit::upstream::schema(&["api_key"])}});
        let id = nexus_testkit::upstream::static_connection(&app, "up", provider, serde_json::json!({"api_key": "k"})).await;

        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        let head = format!(
            "POST /v1/proxy/{id}/x HTTP/1.1\r\nhost: 127.0.0.1\r\nx-api-key: {}\r\ncontent-length: 100\r\n\r\n{{\"a\"",
            app.api_key
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        let answer = read_until_closed(&mut stream, Duration::from_secs(10)).await.expect("cut off, not kept waiting");
        let waited = started.elapsed();
        assert!(answer.starts_with("HTTP/1.1 408 ") && answer.contains("\"code\":\"timeout\""), "{answer}");
        assert!(waited >= Duration::from_millis(900), "waited the head timeout first: {waited:?}");
        println!("a stalled proxied body was answered after {waited:?}");

        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        let head = format!(
            "POST /v1/proxy/{id}/x HTTP/1.1\r\nhost: 127.0.0.1\r\nx-api-key: {}\r\ntransfer-encoding: chunked\r\n\r\n",
            app.api_key
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        // One chunk a byte over the limit, and nothing after it: the server
        // has read all that was sent when it answers, so its close cannot
        // reset the connection under the answer.
        let over = 10 * 1024 * 1024 + 1;
        stream.write_all(format!("{over:x}\r\n").as_bytes()).await.unwrap();
        stream.write_all(&vec![b'a'; over]).await.unwrap();
        let answer = read_until_closed(&mut stream, Duration::from_secs(10)).await.expect("answered");
        assert!(answer.starts_with("HTTP/1.1 413 ") && answer.contains("\"code\":\"payload_too_large\""), "{answer}");
        assert!(seen.lock().unwrap().is_empty(), "nothing was forwarded");
    })
    .await;
}

/// Reads one answer framed by `Content-Length` from `stream` (after what
/// `buf` already holds); the answer's text, with what followed it left in `buf`.
async fn read_answer(stream: &mut TcpStream, buf: &mut Vec<u8>) -> String {
    let read = async {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if buf.len() >= end + 4 + length {
                    let answer: Vec<u8> = buf.drain(..end + 4 + length).collect();
                    return String::from_utf8_lossy(&answer).into_owned();
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before a whole answer: {}", String::from_utf8_lossy(buf));
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("answered in time")
}

/// The lane reads the heads of an agent's connection itself: proxied
/// requests are its, and at the first request of another route the
/// connection goes on with the router, in order, answers intact. A proxied
/// request framed two ways at once (`Content-Length` and
/// `Transfer-Encoding`) is refused before anything is sent, as `nexus
/// proxy` refuses it; other routes keep hyper's answers.
async fn one_connection_moves_from_the_lane_to_the_router(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (addr, seen) = nexus_testkit::upstream::recording_upstream().await;
    let provider = serde_json::json!({"auth_type": "api_key", "api_base_url": format!("http://{addr}/api"), "params": {"credential_schema": nexus_testkit::upstream::schema(&["api_key"])}});
    let id =
        nexus_testkit::upstream::static_connection(&app, "up", provider, serde_json::json!({"api_key": "k"})).await;
    let key = &app.api_key;

    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let proxied = |n: usize| {
        format!("POST /v1/proxy/{id}/n{n} HTTP/1.1\r\nhost: 127.0.0.1\r\nx-api-key: {key}\r\nx-request-id: r{n}\r\ncontent-length: 2\r\n\r\n{n}{n}")
    };
    // Two proxied requests, a plain route, a proxied one again (now the
    // router's), sent at once: answered in order on one connection.
    let pipelined = [
        proxied(1),
        proxied(2),
        format!("GET /v1/providers HTTP/1.1\r\nhost: 127.0.0.1\r\nx-api-key: {key}\r\nx-request-id: r3\r\n\r\n"),
        proxied(4),
    ]
    .concat();
    stream.write_all(pipelined.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    for n in [1, 2, 3, 4] {
        let answer = read_answer(&mut stream, &mut buf).await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "request {n}: {answer}");
        assert!(answer.to_ascii_lowercase().contains(&format!("x-request-id: r{n}\r\n")), "request {n}: {answer}");
        if n == 3 {
            assert!(answer.contains("\"name\":\"up\""), "the router answered: {answer}");
        }
    }
    let uris: Vec<String> = seen.lock().unwrap().iter().map(|s| s.uri.clone()).collect();
    assert_eq!(uris, ["/api/n1", "/api/n2", "/api/n4"]);

    // A refusal of the lane's own is dated, as hyper dates the router's;
    // a refused request whose small body is already here keeps its
    // connection for the next one.
    let mut kept = TcpStream::connect(app.addr).await.unwrap();
    let wrong_key = format!(
        "POST /v1/proxy/{id}/n5 HTTP/1.1\r\nhost: 127.0.0.1\r\nx-api-key: nxk_wrong\r\ncontent-length: 2\r\n\r\n55"
    );
    kept.write_all([wrong_key, proxied(6)].concat().as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let refused = read_answer(&mut kept, &mut buf).await;
    assert!(refused.starts_with("HTTP/1.1 401 ") && refused.contains("\"code\":\"unauthorized\""), "{refused}");
    assert!(refused.contains("\r\ndate: ") && !refused.contains("connection: close"), "{refused}");
    let served = read_answer(&mut kept, &mut buf).await;
    assert!(served.starts_with("HTTP/1.1 200 ") && served.contains("x-request-id: r6"), "{served}");
    assert_eq!(seen.lock().unwrap().len(), 4, "the refused request was not forwarded");

    // Both framings at once, to the proxy: refused, nothing sent, closed.
    let mut smuggler = TcpStream::connect(app.addr).await.unwrap();
    let both = format!(
        "POST /v1/proxy/{id}/smuggled HTTP/1.1\r\nhost: 127.0.0.1\r\nx-api-key: {key}\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"
    );
    smuggler.write_all(both.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut smuggler, Duration::from_secs(10)).await.expect("answered and closed");
    assert!(answer.starts_with("HTTP/1.1 400 ") && answer.contains("\"code\":\"invalid_input\""), "{answer}");
    assert_eq!(seen.lock().unwrap().len(), 4, "nothing was forwarded");

    // A head the relay's parser refuses, for another route: hyper's answer, as before.
    let mut other = TcpStream::connect(app.addr).await.unwrap();
    other.write_all(b"GET /v1/providers HTTP/1.1\r\nhost: 127.0.0.1\r\nbad header\r\n\r\n").await.unwrap();
    let answer = read_until_closed(&mut other, Duration::from_secs(10)).await.expect("answered and closed");
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
}

nexus_testkit::both_backends!(one_connection_moves_from_the_lane_to_the_router);
