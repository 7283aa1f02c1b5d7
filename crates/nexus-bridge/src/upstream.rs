//! Connections to providers for [`crate::relay`]: plain TCP or TLS (rustls,
//! HTTP/1.1 by ALPN), and a shared list of idle ones per origin.
//!
//! An agent connection keeps the provider connection of its last request
//! (no lookup, no lock on the next one, the way nginx pairs a keep-alive
//! upstream connection with a request); when the agent's connection closes
//! it goes to the idle list, so agents that open a connection per request
//! still reuse provider connections and their TLS sessions. Only
//! connections whose last answer ended exactly are kept (see [`crate::h1`]).

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

/// Idle provider connections kept per origin.
const IDLE_PER_ORIGIN: usize = 32;
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

enum Io {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// One connection to a provider, with what has been read from it and not
/// yet consumed.
pub struct Upstream {
    origin: Origin,
    io: Io,
    /// Bytes read from the provider, not yet consumed.
    pub buf: BytesMut,
    since: Instant,
    /// Whether a request has been answered on it already.
    reused: bool,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("origin", &self.origin.authority).field("reused", &self.reused).finish()
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
    idle: Mutex<HashMap<Origin, Vec<Upstream>>>,
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
    /// Provider certificates are checked against `roots`.
    pub fn with_roots(connect_timeout: Duration, roots: rustls::RootCertStore) -> Result<Upstreams, rustls::Error> {
        let tls = tokio_rustls::TlsConnector::from(Arc::new(tls_config(roots)?));
        Ok(Upstreams { shared: Arc::new(Shared { tls, connect_timeout, idle: Mutex::new(HashMap::new()) }) })
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, HashMap<Origin, Vec<Upstream>>> {
        self.shared.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection to `origin` that is still open.
    pub fn check_out(&self, origin: &Origin) -> Option<Upstream> {
        let mut idle = self.idle();
        let list = idle.get_mut(origin)?;
        while let Some(mut up) = list.pop() {
            if up.alive() {
                return Some(up);
            }
        }
        None
    }

    /// Takes `up` back for others, if it is still open.
    pub fn check_in(&self, mut up: Upstream) {
        if !up.alive() {
            return;
        }
        // `since` stays the time of its last answer: the provider's idle
        // timeout counts from there.
        let mut idle = self.idle();
        let list = idle.entry(up.origin.clone()).or_default();
        list.retain_mut(Upstream::alive);
        if list.len() < IDLE_PER_ORIGIN {
            list.push(up);
        }
    }

    /// `up` if it is still open and goes to `origin`, else an idle one.
    pub fn reuse(&self, up: Option<Upstream>, origin: &Origin) -> Option<Upstream> {
        match up {
            Some(mut up) if up.origin == *origin => {
                if up.alive() {
                    Some(up)
                } else {
                    self.check_out(origin)
                }
            }
            Some(up) => {
                self.check_in(up);
                self.check_out(origin)
            }
            None => self.check_out(origin),
        }
    }

    /// How many idle connections are kept (for tests).
    pub fn idle_count(&self) -> usize {
        self.idle().values().map(Vec::len).sum()
    }

    /// A new connection to `origin` (TCP, then TLS for `https`).
    pub async fn connect(&self, origin: &Origin) -> Result<Upstream, ProviderError> {
        let connect = async {
            let tcp =
                TcpStream::connect((origin.host(), origin.port())).await.map_err(|_| ProviderError::Unreachable)?;
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
        Ok(Upstream { origin: origin.clone(), io, buf: BytesMut::new(), since: Instant::now(), reused: false })
    }
}
