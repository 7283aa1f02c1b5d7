//! `Link`, the provider connection that stays with one agent connection of
//! `nexus proxy`, against a raw HTTP/1.1 upstream that counts the
//! connections it accepts: requests share a connection, a dropped link hands
//! it on, connections the provider closes are replaced, timeouts hold, and
//! over TLS the provider's certificate is verified.

use http_body_util::BodyExt;
use hyper::body::Bytes;
use nexus_bridge::forward::{ProviderClient, ProviderError};
use nexus_bridge::Links;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How the upstream behaves after each answer.
#[derive(Clone, Copy, PartialEq)]
enum After {
    KeepAlive,
    /// Answers with `Connection: close` and closes.
    Close,
    /// Keeps the connection, but closes it after this long without a request.
    IdleClose(Duration),
    /// Never answers.
    Silent,
}

struct Upstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// The ALPN protocol of each TLS connection.
    alpn: Arc<std::sync::Mutex<Vec<Option<Vec<u8>>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    async fn start(after: After) -> Upstream {
        Upstream::start_with(after, None).await
    }

    /// With `tls`, every connection is TLS first (and must negotiate `http/1.1`).
    async fn start_with(after: After, tls: Option<tokio_rustls::TlsAcceptor>) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let alpn: Arc<std::sync::Mutex<Vec<Option<Vec<u8>>>>> = Arc::default();
        let alpns = alpn.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let Some(tls) = tls.clone() else {
                    tokio::spawn(serve(stream, after));
                    continue;
                };
                let alpns = alpns.clone();
                tokio::spawn(async move {
                    if let Ok(stream) = tls.accept(stream).await {
                        alpns.lock().unwrap().push(stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec));
                        serve(stream, after).await;
                    }
                });
            }
        });
        Upstream { addr, accepted, alpn, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Answers each request head (these requests have no body) with its path.
async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut stream: S, after: After) {
    let mut buf = Vec::new();
    loop {
        let read = async {
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let mut chunk = [0u8; 1024];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            true
        };
        let got = match after {
            After::IdleClose(idle) => tokio::time::timeout(idle, read).await.unwrap_or(false),
            _ => read.await,
        };
        if !got {
            return;
        }
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        if after == After::Silent {
            std::future::pending::<()>().await;
        }
        let path = head.split_whitespace().nth(1).unwrap_or("?").to_owned();
        let close = if after == After::Close { "connection: close\r\n" } else { "" };
        let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{close}\r\n{path}", path.len());
        if stream.write_all(answer.as_bytes()).await.is_err() || after == After::Close {
            return;
        }
    }
}

fn links() -> Links {
    Links::new(Duration::from_secs(5), Duration::from_secs(5)).unwrap()
}

fn get(url: &str) -> http::Request<Bytes> {
    let uri: http::Uri = url.parse().unwrap();
    let host = nexus_bridge::host_header(&uri).unwrap();
    http::Request::get(uri).header(http::header::HOST, host).body(Bytes::new()).unwrap()
}

/// Sends a GET on `link` and returns the body (the path the upstream saw).
async fn fetch(link: &mut nexus_bridge::Link, url: &str) -> String {
    let resp = link.send(get(url)).await.unwrap();
    assert_eq!(resp.status(), 200);
    String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

#[tokio::test]
async fn requests_on_one_link_share_one_provider_connection() {
    let up = Upstream::start(After::KeepAlive).await;
    let links = links();
    let mut link = links.link();
    for n in 0..5 {
        assert_eq!(fetch(&mut link, &up.url(&format!("/r{n}?q=1"))).await, format!("/r{n}?q=1"), "origin-form target");
    }
    assert_eq!(up.accepted(), 1);
}

#[tokio::test]
async fn a_dropped_link_hands_its_connection_to_the_next_one() {
    let up = Upstream::start(After::KeepAlive).await;
    let links = links();
    let mut first = links.link();
    fetch(&mut first, &up.url("/a")).await;
    assert_eq!(links.idle_count(), 0);
    drop(first);
    assert_eq!(links.idle_count(), 1);
    let mut second = links.link();
    fetch(&mut second, &up.url("/b")).await;
    assert_eq!(links.idle_count(), 0);
    assert_eq!(up.accepted(), 1, "the second agent connection reused the first one's provider connection");
}

#[tokio::test]
async fn a_link_follows_the_origin_and_keeps_each_connection() {
    let (a, b) = (Upstream::start(After::KeepAlive).await, Upstream::start(After::KeepAlive).await);
    let links = links();
    let mut link = links.link();
    for _ in 0..3 {
        assert_eq!(fetch(&mut link, &a.url("/a")).await, "/a");
        assert_eq!(fetch(&mut link, &b.url("/b")).await, "/b");
    }
    assert_eq!((a.accepted(), b.accepted()), (1, 1), "switching origins parks the other connection, not closes it");
}

#[tokio::test]
async fn connections_the_provider_closes_are_replaced() {
    let up = Upstream::start(After::Close).await;
    let links = links();
    let mut link = links.link();
    for n in 0..3 {
        assert_eq!(fetch(&mut link, &up.url(&format!("/c{n}"))).await, format!("/c{n}"));
        // Let the closed connection be noticed before the next request.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(up.accepted(), 3);

    let idle = Upstream::start(After::IdleClose(Duration::from_millis(100))).await;
    fetch(&mut link, &idle.url("/1")).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(fetch(&mut link, &idle.url("/2")).await, "/2", "a connection closed while idle is replaced");
    assert_eq!(idle.accepted(), 2);
}

#[tokio::test]
async fn unreachable_and_silent_providers_are_typed_errors() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let links = Links::new(Duration::from_secs(2), Duration::from_millis(300)).unwrap();
    let mut link = links.link();
    let err = link.send(get(&format!("http://127.0.0.1:{port}/x"))).await.unwrap_err();
    assert_eq!(err, ProviderError::Unreachable);

    let silent = Upstream::start(After::Silent).await;
    let started = std::time::Instant::now();
    let err = link.send(get(&silent.url("/x"))).await.unwrap_err();
    assert_eq!(err, ProviderError::Timeout);
    assert!(started.elapsed() < Duration::from_secs(5), "the response-head timeout bounds the wait");

    let err = link.send(get("ftp://127.0.0.1/x")).await.unwrap_err();
    assert_eq!(err, ProviderError::Unreachable, "only http and https are spoken");
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

#[tokio::test]
async fn https_providers_are_verified_and_their_connections_kept() {
    let (roots, acceptor) = test_pki();
    let up = Upstream::start_with(After::KeepAlive, Some(acceptor)).await;
    let port = up.addr.port();
    let links = Links::with_roots(Duration::from_secs(5), Duration::from_secs(5), roots).unwrap();
    let mut link = links.link();
    for n in 0..3 {
        let url = format!("https://localhost:{port}/tls{n}");
        assert_eq!(fetch(&mut link, &url).await, format!("/tls{n}"));
    }
    assert_eq!(up.accepted(), 1, "one TLS connection for all three requests");
    assert_eq!(*up.alpn.lock().unwrap(), [Some(b"http/1.1".to_vec())]);

    // The certificate names localhost, not 127.0.0.1: refused.
    let err = links.link().send(get(&format!("https://127.0.0.1:{port}/x"))).await.unwrap_err();
    assert_eq!(err, ProviderError::Unreachable);
    // Mozilla's roots do not know the test's CA: refused.
    let err = Links::new(Duration::from_secs(5), Duration::from_secs(5))
        .unwrap()
        .link()
        .send(get(&format!("https://localhost:{port}/x")))
        .await
        .unwrap_err();
    assert_eq!(err, ProviderError::Unreachable);
}

/// The Gateway's client (`ProviderClient`, pooled) speaks the same TLS.
#[tokio::test]
async fn the_gateways_provider_client_verifies_https_the_same_way() {
    let (roots, acceptor) = test_pki();
    let up = Upstream::start_with(After::KeepAlive, Some(acceptor)).await;
    let port = up.addr.port();
    let client = ProviderClient::with_roots(Duration::from_secs(5), Duration::from_secs(5), roots).unwrap();
    for n in 0..3 {
        let resp = client.send(get(&format!("https://localhost:{port}/pooled{n}"))).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, format!("/pooled{n}"));
    }
    assert_eq!(up.accepted(), 1, "the pool kept the TLS connection");
    assert_eq!(*up.alpn.lock().unwrap(), [None], "hyper-rustls offers no ALPN for HTTP/1.1 alone");
    let err = client.send(get(&format!("https://127.0.0.1:{port}/x"))).await.unwrap_err();
    assert_eq!(err, ProviderError::Unreachable, "the certificate names localhost only");
}
