//! Connections to providers held by one agent connection: the hot path of
//! `nexus proxy`.
//!
//! An agent that keeps its connection to the proxy open gets one connection
//! to the provider that stays with it ([`Link`]): a request costs no pool
//! lookup, no lock and no connector, the way nginx pairs an upstream
//! keep-alive connection with a request. When the agent's connection closes,
//! the provider connection goes back to a shared idle list ([`Links`]), so an
//! agent that opens a connection per request still reuses provider
//! connections (and their TLS sessions).

use crate::forward::{Incoming, ProviderError};
use http::uri::{Authority, Scheme};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Idle provider connections kept per origin.
const IDLE_PER_ORIGIN: usize = 32;
/// An idle provider connection older than this is closed, not reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

type Sender = SendRequest<Full<Bytes>>;

/// Where a connection goes: scheme and authority.
#[derive(Debug, Clone, Eq)]
struct Origin {
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
    fn of(uri: &http::Uri) -> Result<Origin, ProviderError> {
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

struct Idle {
    sender: Sender,
    since: Instant,
}

struct Shared {
    tls: tokio_rustls::TlsConnector,
    connect_timeout: Duration,
    timeout: Duration,
    idle: Mutex<HashMap<Origin, Vec<Idle>>>,
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

/// The provider connections of one proxy process: TLS settings, timeouts and
/// the idle connections that agent connections hand back.
#[derive(Clone)]
pub struct Links {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("connect_timeout", &self.shared.connect_timeout)
            .field("timeout", &self.shared.timeout)
            .finish_non_exhaustive()
    }
}

impl Links {
    /// `connect_timeout` bounds making a connection (TCP and TLS);
    /// `timeout` bounds the whole wait for the response head.
    /// Providers' certificates are checked against Mozilla's roots.
    pub fn new(connect_timeout: Duration, timeout: Duration) -> Result<Links, rustls::Error> {
        Links::with_roots(connect_timeout, timeout, mozilla_roots())
    }

    /// [`Links::new`] trusting `roots` instead (a private CA, or a test's).
    pub fn with_roots(
        connect_timeout: Duration,
        timeout: Duration,
        roots: rustls::RootCertStore,
    ) -> Result<Links, rustls::Error> {
        Ok(Links::with_tls(connect_timeout, timeout, Arc::new(tls_config(roots)?)))
    }

    /// [`Links::new`] with a TLS configuration made by [`tls_config`].
    pub(crate) fn with_tls(connect_timeout: Duration, timeout: Duration, tls: Arc<rustls::ClientConfig>) -> Links {
        let tls = tokio_rustls::TlsConnector::from(tls);
        Links { shared: Arc::new(Shared { tls, connect_timeout, timeout, idle: Mutex::new(HashMap::new()) }) }
    }

    /// A link for one agent connection.
    pub fn link(&self) -> Link {
        Link { links: self.clone(), current: None }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, HashMap<Origin, Vec<Idle>>> {
        self.shared.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_out(&self, origin: &Origin) -> Option<Sender> {
        let mut idle = self.idle();
        let list = idle.get_mut(origin)?;
        while let Some(entry) = list.pop() {
            if !entry.sender.is_closed() && entry.since.elapsed() < IDLE_TIMEOUT {
                return Some(entry.sender);
            }
        }
        None
    }

    fn check_in(&self, origin: Origin, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle();
        let list = idle.entry(origin).or_default();
        list.retain(|e| !e.sender.is_closed() && e.since.elapsed() < IDLE_TIMEOUT);
        if list.len() < IDLE_PER_ORIGIN {
            list.push(Idle { sender, since: Instant::now() });
        }
    }

    /// How many idle connections are kept (for tests).
    pub fn idle_count(&self) -> usize {
        self.idle().values().map(Vec::len).sum()
    }

    async fn connect(&self, origin: &Origin) -> Result<Sender, ProviderError> {
        let connect = async {
            let tcp = tokio::net::TcpStream::connect((origin.host(), origin.port()))
                .await
                .map_err(|_| ProviderError::Unreachable)?;
            let _ = tcp.set_nodelay(true);
            if origin.https {
                let name = rustls::pki_types::ServerName::try_from(origin.host().to_owned())
                    .map_err(|_| ProviderError::Unreachable)?;
                let tls = self.shared.tls.connect(name, tcp).await.map_err(|_| ProviderError::Unreachable)?;
                handshake(tls).await
            } else {
                handshake(tcp).await
            }
        };
        tokio::time::timeout(self.shared.connect_timeout, connect).await.unwrap_or(Err(ProviderError::Timeout))
    }
}

async fn handshake<T>(io: T) -> Result<Sender, ProviderError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|_| ProviderError::Unreachable)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "provider connection ended with an error");
        }
    });
    Ok(sender)
}

/// The provider connection of one agent connection. Dropping it hands the
/// connection back to [`Links`].
pub struct Link {
    links: Links,
    current: Option<(Origin, Sender)>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("origin", &self.current.as_ref().map(|(o, _)| &o.authority)).finish()
    }
}

impl Link {
    /// Sends `req` (an absolute URI; its `Host` header already set) and
    /// waits for the head of the answer, on this link's connection when it
    /// goes to the same origin, else on an idle or a new one.
    pub async fn send(&mut self, req: http::Request<Bytes>) -> Result<http::Response<Incoming>, ProviderError> {
        let origin = Origin::of(req.uri())?;
        let timeout = self.links.shared.timeout;
        let (mut parts, body) = req.into_parts();
        // HTTP/1.1 to a provider names the path, not the absolute URI.
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        (uri.scheme, uri.authority) = (None, None);
        uri.path_and_query.get_or_insert_with(|| http::uri::PathAndQuery::from_static("/"));
        parts.uri = http::Uri::from_parts(uri).map_err(|_| ProviderError::Unreachable)?;
        let req = http::Request::from_parts(parts, Full::new(body));
        tokio::time::timeout(timeout, self.send_on(origin, req)).await.unwrap_or(Err(ProviderError::Timeout))
    }

    async fn send_on(
        &mut self,
        origin: Origin,
        mut req: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<Incoming>, ProviderError> {
        let reused = match self.current.take() {
            Some((o, sender)) if o == origin => Some(sender),
            Some((o, sender)) => {
                self.links.check_in(o, sender);
                None
            }
            None => None,
        };
        let mut reused = reused.or_else(|| self.links.check_out(&origin));
        while let Some(mut sender) = reused.take() {
            if sender.ready().await.is_err() {
                // Closed by the provider while idle: try another.
                reused = self.links.check_out(&origin);
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    self.current = Some((origin, sender));
                    return Ok(resp);
                }
                // The connection closed before the request went out, so it
                // is safe to send again on another one.
                Err(mut e) => match e.take_message() {
                    Some(unsent) => {
                        req = unsent;
                        reused = self.links.check_out(&origin);
                    }
                    None => return Err(ProviderError::Unreachable),
                },
            }
        }
        let mut sender = self.links.connect(&origin).await?;
        let resp = sender.send_request(req).await.map_err(|_| ProviderError::Unreachable)?;
        self.current = Some((origin, sender));
        Ok(resp)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Some((origin, sender)) = self.current.take() {
            self.links.check_in(origin, sender);
        }
    }
}
