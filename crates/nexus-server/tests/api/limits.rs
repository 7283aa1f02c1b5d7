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
