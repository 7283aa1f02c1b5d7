//! A TCP forwarder in front of a server that holds some requests back: a
//! stand-in for a middlebox that keeps a long-lived stream open but lets
//! nothing of it through, so tests can show what still works when a
//! stream is blocked.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running forwarder; it stops when dropped.
pub struct Forwarder {
    pub addr: SocketAddr,
    stalled: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    /// How many connections it has held back so far.
    pub fn stalled(&self) -> usize {
        self.stalled.load(Ordering::SeqCst)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Forwards every connection to `target`, except those whose first request
/// line names `stalled_path`: those are kept open and read from, and get
/// nothing, ever.
pub async fn stalling(target: SocketAddr, stalled_path: &'static str) -> Forwarder {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let addr = listener.local_addr().expect("bound");
    let stalled = Arc::new(AtomicUsize::new(0));
    let count = stalled.clone();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((client, _)) = listener.accept().await {
            conns.spawn(forward(client, target, stalled_path, count.clone()));
        }
    });
    Forwarder { addr, stalled, task }
}

async fn forward(mut client: TcpStream, target: SocketAddr, stalled_path: &str, stalled: Arc<AtomicUsize>) {
    let mut first = Vec::new();
    let mut chunk = [0u8; 4096];
    while !first.windows(2).any(|w| w == b"\r\n") {
        match client.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => first.extend_from_slice(&chunk[..n]),
        }
    }
    let line = String::from_utf8_lossy(&first[..first.windows(2).position(|w| w == b"\r\n").unwrap_or(0)]).into_owned();
    if line.split_whitespace().nth(1).is_some_and(|path| path.starts_with(stalled_path)) {
        stalled.fetch_add(1, Ordering::SeqCst);
        while matches!(client.read(&mut chunk).await, Ok(n) if n > 0) {}
        return;
    }
    let Ok(mut server) = TcpStream::connect(target).await else { return };
    if server.write_all(&first).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}
