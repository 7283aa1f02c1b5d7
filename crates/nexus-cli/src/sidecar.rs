//! `nexus proxy`: a local signing proxy for agents in any language. An agent
//! calls `http://127.0.0.1:PORT/{connection_id}/{path}`; the sidecar fetches
//! the connection's strategy and credentials from the Gateway (cached in its
//! memory only, through `nexus-bridge`), signs the request and forwards it to
//! the provider's `api_base_url` — never to another host.
//!
//! Its engine is [`nexus_bridge::Relay`], an HTTP/1.1 relay on sockets: a
//! hop that every request of the agent pays for should cost as little as
//! nginx's `proxy_pass` (see `bench/proxy.sh`).

use nexus_bridge::relay::Admission;
use nexus_bridge::{Bridge, Relay};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections over the limit that are told so (503) at once; beyond
/// these, a connection is closed without an answer.
const REFUSALS: usize = 64;

/// What `nexus proxy`'s flags set.
#[derive(Debug, Clone)]
pub struct Options {
    pub admission: Admission,
    /// Agent connections served at once.
    pub max_connections: usize,
    /// Where `GET /metrics` is served, if anywhere.
    pub metrics_bind: Option<SocketAddr>,
}

/// Answers a connection over the limit with a 503 and closes it, reading
/// (for up to a second) what the agent sends so that it sees the answer
/// rather than a reset.
async fn refuse_busy(mut stream: TcpStream) {
    let body = r#"{"code":"too_many_connections","message":"the proxy serves as many agent connections as it may; retry shortly"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        let mut head = vec![0u8; 16 * 1024];
        let _ = stream.read(&mut head).await;
        if stream.write_all(answer.as_bytes()).await.is_ok() && stream.shutdown().await.is_ok() {
            while matches!(stream.read(&mut head).await, Ok(n) if n > 0) {}
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), exchange).await;
}

/// Keeps the runtime's next timer wake-up less than a second away.
///
/// Each request starts timers (the agent's next request head, the provider's
/// answer), each due later than anything already set. Tokio interrupts its
/// event loop (a write to an eventfd: one more system call per request)
/// whenever a timer is set earlier than the loop's next planned wake-up; with
/// a timer always due within a second, the per-request timers never do. The
/// price is one idle wake-up a second. `SYSCALLS=1 bench/proxy.sh` counts
/// the calls per request. (The Gateway's multi-threaded runtime wakes its
/// threads for other reasons; there this changes nothing measurable.)
async fn keep_timers_near() {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

/// Serves until SIGINT/SIGTERM, then lets requests in flight finish (for up to 10 s).
pub async fn serve(listen: SocketAddr, gateway: String, api_key: String, options: Options) -> Result<(), String> {
    // Before the port opens: a SIGTERM from then on stops gracefully.
    let shutdown = nexus_server::shutdown_signal();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("--listen {listen} could not be bound: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%addr, gateway = %gateway, "nexus proxy is serving");
    println!("nexus proxy listening on http://{addr} (gateway {gateway})");
    let mut relay = Relay::new(Bridge::new(gateway, api_key)).admission(options.admission);
    let (metrics_stop, metrics_stopped) = tokio::sync::watch::channel(false);
    if let Some(bind) = options.metrics_bind {
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .map_err(|e| format!("--metrics-bind {bind} could not be bound: {e}"))?;
        let at = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(metrics = %format!("http://{at}/metrics"), "nexus proxy metrics are served");
        let metrics = Arc::new(nexus_server::metrics::ProxyMetrics::new());
        let recorder = metrics.clone();
        relay = relay.observe(Arc::new(move |status, added| recorder.record(status, added)));
        let render = move || {
            let metrics = metrics.clone();
            Box::pin(async move { metrics.render() })
                as std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>>
        };
        let mut stopped = metrics_stopped.clone();
        tokio::spawn(nexus_server::metrics::serve(listener, render, async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
    }
    let relay = Arc::new(relay);
    let serving = Arc::new(Semaphore::new(options.max_connections));
    let refusing = Arc::new(Semaphore::new(REFUSALS));
    let ticker = tokio::spawn(keep_timers_near());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // Each connection's task holds a sender; all dropped: all connections done.
    let (open, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            (stream, _) = nexus_server::serve::accept(&listener) => stream,
            () = &mut shutdown => break,
        };
        let Ok(permit) = serving.clone().try_acquire_owned() else {
            if let Ok(refusal) = refusing.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse_busy(stream).await;
                    drop(refusal);
                });
            }
            continue;
        };
        let (relay, stopped, open) = (relay.clone(), stopped.clone(), open.clone());
        tokio::spawn(async move {
            relay.serve(stream, stopped).await;
            drop((open, permit));
        });
    }
    drop(listener);
    let _ = stop.send(true);
    drop(open);
    if tokio::time::timeout(DRAIN_TIMEOUT, all_closed.recv()).await.is_err() {
        tracing::warn!("requests still in flight after {DRAIN_TIMEOUT:?}; stopping anyway");
    }
    ticker.abort();
    let _ = metrics_stop.send(true);
    Ok(())
}
