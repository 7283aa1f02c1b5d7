//! Connections to providers for [`crate::relay`]: plain TCP or TLS (rustls,
//! HTTP/1.1 by ALPN), and a shared list of idle ones per [`PoolKey`]: the
//! connection id whose credentials signed the requests, and the origin.
//!
//! An agent connection keeps the provider connection of its last request
//! (no lookup, no lock on the next one, the way nginx pairs a keep-alive
//! upstream connection with a request); when the agent's connection closes
//! it goes to the idle list, so agents that open a connection per request
//! still reuse provider connections and their TLS sessions. Only
//! connections whose last answer ended exactly are kept (see [`crate::h1`]).
//!
//! A provider connection is only ever used again for the same connection
//! id. A provider that ignores a request's `Content-Length`, or answers
//! twice, leaves bytes queued on its connection that no check before reuse
//! can see; were the connection shared, one agent could make another
//! connection's signed request (its credentials) land where it can read it
//! back, or receive the other's answer. Kept per connection id, whatever a
//! provider does with its connection stays with the credentials that are
//! already the agent's to use.

use crate::forward::ProviderError;
use bytes::BytesMut;
use http::uri::{Authority, Scheme};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Context;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Idle provider connections kept per pool key (connection id and origin).
const IDLE_PER_KEY: usize = 8;
/// Idle provider connections kept in all.
const IDLE_TOTAL: usize = 1024;
/// An idle provider connection older than this is closed, not reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// What one read from a provider asks for.
const READ_SIZE: usize = 16 * 1024;

/// Where a connection goes: scheme and authority.
#[derive(Debug, Clone, Eq)]
pub struct Origin {
    https: bool,
    authority: Authority,
}

impl PartialEq for Origin {
    fn eq(&self, other: &Origin) -> bool {
        // The same bytes (the usual case: both come from one parsed base),
        // else `Authority`'s own comparison, which ignores case.
        self.https == other.https
            && (self.authority.as_str() == other.authority.as_str() || self.authority == other.authority)
    }
}

impl std::hash::Hash for Origin {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.https.hash(state);
        self.authority.hash(state); // ignores case, as `eq` does
    }
}

impl Origin {
    /// The origin of an absolute `http`/`https` URI.
    pub fn of(uri: &http::Uri) -> Result<Origin, ProviderError> {
        let https = match uri.scheme() {
            Some(s) if *s == Scheme::HTTPS => true,
            Some(s) if *s == Scheme::HTTP => false,
            _ => return Err(ProviderError::Unreachable),
        };
        let authority = uri.authority().ok_or(ProviderError::Unreachable)?.clone();
        Ok(Origin { https, authority })
    }

    fn host(&self) -> &str {
        let host = self.authority.host();
        host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
    }

    fn port(&self) -> u16 {
        self.authority.port_u16().unwrap_or(if self.https { 443 } else { 80 })
    }
}

/// Which idle provider connections a request may use: those to its origin
/// that carried requests signed for the same connection id, and no others.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    connection: Arc<str>,
    origin: Origin,
}

impl PoolKey {
    /// The key of requests for `connection_id` to `origin`.
    pub fn new(connection_id: &str, origin: Origin) -> PoolKey {
        PoolKey { connection: Arc::from(connection_id), origin }
    }

    /// Whether this is the key of `connection_id` and `origin` (compared
    /// without making a key: the usual case on every request).
    fn is(&self, connection_id: &str, origin: &Origin) -> bool {
        &*self.connection == connection_id && self.origin == *origin
    }
}

enum Io {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// One connection to a provider, with what has been read from it and not
/// yet consumed.
pub struct Upstream {
    key: PoolKey,
    io: Io,
    /// Bytes read from the provider, not yet consumed.
    pub buf: BytesMut,
    since: Instant,
    /// Whether a request has been answered on it already.
    reused: bool,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("origin", &self.key.origin.authority)
            .field("connection", &self.key.connection)
            .field("reused", &self.reused)
            .finish()
    }
}

impl Upstream {
    /// Whether an earlier request was answered on this connection (a
    /// failure on it may be the provider closing an idle connection).
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// Marks the connection as having answered a request, ready for the next one.
    pub fn answered(&mut self) {
        self.reused = true;
        self.since = Instant::now();
    }

    /// Reads more from the provider into [`Upstream::buf`]; 0 at its end.
    pub async fn read_more(&mut self) -> std::io::Result<usize> {
        self.buf.reserve(READ_SIZE);
        match &mut self.io {
            Io::Tcp(s) => s.read_buf(&mut self.buf).await,
            Io::Tls(s) => s.read_buf(&mut self.buf).await,
        }
    }

    /// [`Upstream::read_more`] for a poll-based reader (a body that a
    /// server or client frames itself: `crate::streamed`).
    pub fn poll_read_more(&mut self, cx: &mut Context<'_>) -> std::task::Poll<std::io::Result<usize>> {
        let mut chunk = [0u8; 8 * 1024];
        let mut read = ReadBuf::new(&mut chunk);
        let polled = match &mut self.io {
            Io::Tcp(s) => Pin::new(s).poll_read(cx, &mut read),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, &mut read),
        };
        std::task::ready!(polled)?;
        self.buf.extend_from_slice(read.filled());
        std::task::Poll::Ready(Ok(read.filled().len()))
    }

    /// Writes `parts` in order, as few writes as it can.
    pub async fn write(&mut self, parts: &[&[u8]]) -> std::io::Result<()> {
        match &mut self.io {
            Io::Tcp(s) => write_parts(s, parts).await,
            Io::Tls(s) => {
                write_parts(s.as_mut(), parts).await?;
                s.flush().await
            }
        }
    }

    /// Whether the connection can carry another request: nothing unread,
    /// not idle too long, and the provider has neither closed it nor sent
    /// anything since its last answer. The socket is asked directly (a
    /// non-blocking peek: one system call): tokio's view of it may be older
    /// than the provider's last bytes, and bytes sent after an answer would
    /// otherwise be read as the answer to the next request, perhaps another
    /// agent's.
    fn alive(&mut self) -> bool {
        if !self.buf.is_empty() || self.since.elapsed() >= IDLE_TIMEOUT {
            return false;
        }
        let tcp = match &self.io {
            Io::Tcp(s) => s,
            Io::Tls(s) => s.get_ref().0,
        };
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        match socket2::SockRef::from(tcp).peek(&mut probe) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
            // Bytes waiting under TLS may be records that carry no data
            // (session tickets, `close_notify`): let rustls read them.
            Ok(n) if n > 0 => matches!(self.io, Io::Tls(_)) && self.tls_has_no_data(),
            _ => false,
        }
    }

    /// Reads what rustls has waiting without waiting for more: `true` when
    /// that was only TLS housekeeping and the connection is still open.
    fn tls_has_no_data(&mut self) -> bool {
        let Io::Tls(s) = &mut self.io else { return false };
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        Pin::new(s.as_mut()).poll_read(&mut cx, &mut probe).is_pending()
    }
}

async fn write_parts<W: AsyncWrite + Unpin>(w: &mut W, parts: &[&[u8]]) -> std::io::Result<()> {
    match parts {
        [one] => w.write_all(one).await,
        _ => {
            let total: usize = parts.iter().map(|p| p.len()).sum();
            if total <= 64 * 1024 {
                // One write for a small request: head and body in one segment.
                let mut joined = Vec::with_capacity(total);
                parts.iter().for_each(|p| joined.extend_from_slice(p));
                w.write_all(&joined).await
            } else {
                for p in parts {
                    w.write_all(p).await?;
                }
                Ok(())
            }
        }
    }
}

/// TLS to providers: rustls with ring, verifying against `roots`, speaking
/// HTTP/1.1 (ALPN).
pub(crate) fn tls_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, rustls::Error> {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Mozilla's roots, as browsers trust them.
pub(crate) fn mozilla_roots() -> rustls::RootCertStore {
    rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() }
}

struct Shared {
    tls: tokio_rustls::TlsConnector,
    connect_timeout: Duration,
    idle: Mutex<HashMap<PoolKey, Vec<Upstream>>>,
}

/// The provider connections of one proxy process: TLS settings, the connect
/// timeout and the idle connections that agent connections hand back.
#[derive(Clone)]
pub struct Upstreams {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams").field("connect_timeout", &self.shared.connect_timeout).finish_non_exhaustive()
    }
}

impl Upstreams {
    /// Provider certificates are checked against Mozilla's roots.
    pub fn new(connect_timeout: Duration) -> Result<Upstreams, rustls::Error> {
        Upstreams::with_roots(connect_timeout, mozilla_roots())
    }

    /// Provider certificates are checked against `roots`.
    pub fn with_roots(connect_timeout: Duration, roots: rustls::RootCertStore) -> Result<Upstreams, rustls::Error> {
        let tls = tokio_rustls::TlsConnector::from(Arc::new(tls_config(roots)?));
        Ok(Upstreams { shared: Arc::new(Shared { tls, connect_timeout, idle: Mutex::new(HashMap::new()) }) })
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, HashMap<PoolKey, Vec<Upstream>>> {
        self.shared.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection for `key` that is still open.
    pub fn check_out(&self, key: &PoolKey) -> Option<Upstream> {
        let mut idle = self.idle();
        let list = idle.get_mut(key)?;
        let found = std::iter::from_fn(|| list.pop()).find_map(|mut up| up.alive().then_some(up));
        if list.is_empty() {
            idle.remove(key);
        }
        found
    }

    /// Takes `up` back for later requests of the same connection id, if it
    /// is still open and there is room.
    pub fn check_in(&self, mut up: Upstream) {
        if !up.alive() {
            return;
        }
        // `since` stays the time of its last answer: the provider's idle
        // timeout counts from there.
        let mut idle = self.idle();
        let mut total: usize = idle.values().map(Vec::len).sum();
        if total >= IDLE_TOTAL {
            // Full: first let go of connections that died or idled out.
            idle.retain(|_, list| {
                list.retain_mut(Upstream::alive);
                !list.is_empty()
            });
            total = idle.values().map(Vec::len).sum();
            if total >= IDLE_TOTAL {
                return;
            }
        }
        let list = idle.entry(up.key.clone()).or_default();
        list.retain_mut(Upstream::alive);
        if list.len() < IDLE_PER_KEY {
            list.push(up);
        }
    }

    /// `up` if it is still open and served `connection_id` at `origin`,
    /// else an idle one for them; and the key of the request (`up`, kept for
    /// another key, goes back to the idle list).
    pub fn reuse(&self, up: Option<Upstream>, connection_id: &str, origin: &Origin) -> (Option<Upstream>, PoolKey) {
        match up {
            Some(mut up) if up.key.is(connection_id, origin) => {
                let key = up.key.clone();
                if up.alive() {
                    (Some(up), key)
                } else {
                    (self.check_out(&key), key)
                }
            }
            other => {
                if let Some(up) = other {
                    self.check_in(up);
                }
                let key = PoolKey::new(connection_id, origin.clone());
                (self.check_out(&key), key)
            }
        }
    }

    /// How many idle connections are kept (for tests).
    pub fn idle_count(&self) -> usize {
        self.idle().values().map(Vec::len).sum()
    }

    /// A new connection for `key` (TCP to its origin, then TLS for `https`).
    pub async fn connect(&self, key: &PoolKey) -> Result<Upstream, ProviderError> {
        let origin = &key.origin;
        let connect = async {
            let addrs =
                crate::resolve::resolve(origin.host(), origin.port()).await.map_err(|_| ProviderError::Unreachable)?;
            let tcp = TcpStream::connect(&addrs[..]).await.map_err(|_| ProviderError::Unreachable)?;
            let _ = tcp.set_nodelay(true);
            if !origin.https {
                return Ok(Io::Tcp(tcp));
            }
            let name = rustls::pki_types::ServerName::try_from(origin.host().to_owned())
                .map_err(|_| ProviderError::Unreachable)?;
            let tls = self.shared.tls.connect(name, tcp).await.map_err(|_| ProviderError::Unreachable)?;
            Ok(Io::Tls(Box::new(tls)))
        };
        let io =
            tokio::time::timeout(self.shared.connect_timeout, connect).await.unwrap_or(Err(ProviderError::Timeout))?;
        Ok(Upstream { key: key.clone(), io, buf: BytesMut::new(), since: Instant::now(), reused: false })
    }
}
