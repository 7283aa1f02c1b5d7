//! The engine of `nexus proxy`: an HTTP/1.1 relay from an agent's connection
//! to providers, signing each request on the way.
//!
//! An agent calls `/{connection_id}/{path}`; the relay reads the request
//! (head by `httparse`, body whole: strategies sign over it), signs it with
//! the connection's cached credentials, sends it on a provider connection
//! (see [`crate::upstream`]) and relays the answer as it streams, framed as
//! RFC 9112 says (see [`crate::h1`]). A provider `401` refreshes the
//! credentials once through the Gateway and retries once.
//!
//! It is written on sockets rather than on hyper's client and server to cost
//! an agent what nginx's `proxy_pass` costs (`bench/proxy.sh`): one task per
//! agent connection, no channel between tasks, one read and one write each
//! way for a small exchange.
//!
//! Its provider side ([`Sender`]) and its agent-side steps ([`read_head`],
//! [`read_body`], [`relay_body`], [`linger`]) are public: the Gateway's
//! proxy lane is the same relay with the Gateway's rules in front (API
//! keys, audit, its token cache instead of a [`Bridge`]).

use crate::bridge::Bridge;
use crate::client::{GatewayError, TokenAnswer};
use crate::forward::{Forward, ProviderError};
use crate::h1::{self, Agent, BodyReader, RequestBody, RequestHead, ResponseHead};
use crate::upstream::{Origin, Upstream, Upstreams};
use bytes::{Buf, Bytes, BytesMut};
use http::{Method, StatusCode};
use nexus_core::wire::{ErrorBody, ErrorCode};
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

/// Request bodies are read whole (signing strategies hash them), up to this size.
pub const BODY_LIMIT: usize = 10 * 1024 * 1024;

/// An answer of the relay's own (an error, sent as JSON), and whether the
/// agent's connection closes after it.
#[derive(Debug, Clone)]
pub struct Own {
    pub code: ErrorCode,
    pub message: String,
    pub close: bool,
}

/// The relay's answer `code` saying `message`.
pub fn own(code: ErrorCode, message: impl Into<String>) -> Own {
    Own { code, message: message.into(), close: false }
}

impl Own {
    /// The same answer, closing the agent's connection after it.
    pub fn closing(self) -> Own {
        Own { close: true, ..self }
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::BAD_GATEWAY)
    }

    /// The answer on the wire; `to` is the request it answers, if it was read.
    fn bytes(&self, to: Option<Agent>) -> Vec<u8> {
        let body = ErrorBody { code: self.code, message: self.message.clone(), details: None };
        let body = serde_json::to_string(&body).unwrap_or_default();
        let mut bytes = Vec::with_capacity(body.len() + 128);
        let status = self.status();
        let reason = status.canonical_reason().unwrap_or("");
        let connection = match to {
            _ if self.close => "connection: close\r\n",
            Some(Agent { http10: true, .. }) => "connection: keep-alive\r\n",
            _ => "",
        };
        // The answer to a `HEAD` has the length of its body, not the body.
        let sent = if to.is_some_and(|a| a.head_request) { "" } else { body.as_str() };
        let _ = write!(
            bytes,
            "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{connection}\r\n{sent}",
            status.as_u16(),
            body.len(),
        );
        bytes
    }
}

fn gateway_error(e: &GatewayError) -> Own {
    match e {
        GatewayError::AttentionRequired(_) => own(ErrorCode::AttentionRequired, e.to_string()),
        GatewayError::NotFound(m) => own(ErrorCode::NotFound, m.clone()),
        GatewayError::Conflict { code, message } => own(*code, message.clone()),
        GatewayError::Gone(m) => own(ErrorCode::ProviderDeleted, m.clone()),
        GatewayError::Unauthorized => own(ErrorCode::GatewayRefusedApiKey, e.to_string()),
        GatewayError::Invalid(m) => own(ErrorCode::InvalidInput, m.clone()),
        GatewayError::Unavailable(m) => own(ErrorCode::GatewayUnavailable, m.clone()),
        // The same 503 the Gateway answers: its provider, not the Gateway, is away.
        GatewayError::ProviderUnavailable(m) => own(ErrorCode::ProviderUnavailable, m.clone()),
    }
}

/// Why no answer came from the provider.
#[derive(Debug)]
enum Failed {
    Timeout,
    Unreachable,
    /// The connection closed before any byte of an answer: on a kept-alive
    /// connection, most likely the provider closing it while idle.
    BeforeAnswer,
    Bad(&'static str),
}

impl From<ProviderError> for Failed {
    fn from(e: ProviderError) -> Failed {
        match e {
            ProviderError::Timeout => Failed::Timeout,
            ProviderError::Unreachable => Failed::Unreachable,
        }
    }
}

impl Failed {
    fn answer(self) -> Own {
        match self {
            Failed::Timeout => own(ErrorCode::ProviderTimeout, "the provider did not answer in time"),
            Failed::Unreachable | Failed::BeforeAnswer => {
                own(ErrorCode::ProviderUnreachable, "the provider could not be reached")
            }
            Failed::Bad(m) => own(ErrorCode::ProviderUnreachable, m),
        }
    }
}

/// What to do after a request: serve the next one or close.
type KeepAlive = bool;

/// Which requests a relay serves by their `Host` and browser headers: a
/// local proxy must not be reachable from a web page, whether by DNS
/// rebinding (a page of `evil.example`, its name pointed at 127.0.0.1,
/// sends `Host: evil.example:8081`) or by a cross-site request (a page
/// sends `Origin` or `Sec-Fetch-Site: cross-site`).
#[derive(Debug, Clone, Default)]
pub struct Admission {
    /// Host names accepted besides IP literals and `localhost` (lower case).
    hosts: Vec<String>,
    /// Browser origins accepted (`https://app.example`), exactly.
    origins: Vec<String>,
}

impl Admission {
    /// Accepts `Host` values naming `name` too (any port).
    pub fn allow_host(mut self, name: &str) -> Admission {
        self.hosts.push(name.trim().trim_end_matches('.').to_ascii_lowercase());
        self
    }

    /// Accepts requests a web page of `origin` sends.
    pub fn allow_origin(mut self, origin: &str) -> Admission {
        self.origins.push(origin.trim().trim_end_matches('/').to_owned());
        self
    }

    /// `Err` with the answer for a request that must not be served.
    fn check(&self, head: &RequestHead) -> Result<(), Own> {
        let text = |name: http::header::HeaderName| head.headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"));
        match text(http::header::HOST) {
            Some(host) if !self.host_allowed(host) => {
                return Err(own(
                    ErrorCode::HostNotAllowed,
                    "this proxy answers to its own address only (an IP address or localhost); \
                     start it with --allow-host NAME to accept another name",
                ))
            }
            None if !head.http10 => return Err(own(ErrorCode::InvalidInput, "the request has no Host")),
            _ => {}
        }
        let origin = text(http::header::ORIGIN);
        if let Some(origin) = origin {
            if !self.origins.iter().any(|o| o == origin.trim_end_matches('/')) {
                return Err(origin_refused());
            }
        } else if let Some(site) = text(http::header::HeaderName::from_static("sec-fetch-site")) {
            // A browser's request without `Origin` (a plain link or image):
            // only what the proxy's own pages would send passes.
            if !matches!(site, "same-origin" | "none") {
                return Err(origin_refused());
            }
        }
        Ok(())
    }

    fn host_allowed(&self, host: &str) -> bool {
        let authority: http::uri::Authority = match host.parse() {
            Ok(a) => a,
            Err(_) => return false,
        };
        if authority.as_str().contains('@') {
            return false;
        }
        let name = authority.host();
        let literal = name.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(name);
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        literal.parse::<std::net::IpAddr>().is_ok() || name == "localhost" || self.hosts.contains(&name)
    }
}

fn origin_refused() -> Own {
    own(
        ErrorCode::OriginNotAllowed,
        "requests from web pages are refused: a page must not spend the connections' credentials; \
         start the proxy with --allow-origin ORIGIN to accept one",
    )
}

/// Hears of each answer the relay gives: its status, and the time the relay
/// added to the provider's (to the answer's head), when a provider answered.
pub type Observer = Arc<dyn Fn(u16, Option<Duration>) + Send + Sync>;

/// The relay of one proxy process; share it (`Arc`) between agent connections.
pub struct Relay {
    bridge: Bridge,
    sender: Sender,
    head_timeout: Duration,
    admission: Admission,
    observer: Option<Observer>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("bridge", &self.bridge)
            .field("sender", &self.sender)
            .field("head_timeout", &self.head_timeout)
            .field("admission", &self.admission)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay signing with `bridge`'s credentials, checking providers'
    /// certificates against Mozilla's roots.
    pub fn new(bridge: Bridge) -> Relay {
        Relay::with_roots(bridge, crate::upstream::mozilla_roots())
            .expect("ring supports rustls' default protocol versions")
    }

    /// [`Relay::new`] trusting `roots` instead (a private CA, or a test's).
    pub fn with_roots(bridge: Bridge, roots: rustls::RootCertStore) -> Result<Relay, rustls::Error> {
        Ok(Relay {
            bridge,
            sender: Sender::new(Upstreams::with_roots(Duration::from_secs(10), roots)?, Duration::from_secs(60)),
            head_timeout: Duration::from_secs(30),
            admission: Admission::default(),
            observer: None,
        })
    }

    /// Calls `observer` after each answer (metrics).
    pub fn observe(mut self, observer: Observer) -> Relay {
        self.observer = Some(observer);
        self
    }

    /// Which `Host`, `Origin` and `Sec-Fetch-Site` values it serves (by
    /// default: IP literals and `localhost`, and no web page).
    pub fn admission(mut self, admission: Admission) -> Relay {
        self.admission = admission;
        self
    }

    /// How long an agent may take to send a request head, or stay idle
    /// between requests (30 s by default).
    pub fn head_timeout(mut self, timeout: Duration) -> Relay {
        self.head_timeout = timeout;
        self
    }

    /// How long the provider may take to answer with a head (60 s by default).
    pub fn provider_timeout(mut self, timeout: Duration) -> Relay {
        self.sender.timeout = timeout;
        self
    }

    /// The provider connections (for tests: how many are idle).
    pub fn upstreams(&self) -> &Upstreams {
        &self.sender.upstreams
    }

    /// Serves an agent's connection until it closes, or until `stop` turns
    /// `true` (a request in flight is finished first).
    pub async fn serve(&self, mut agent: TcpStream, stop: watch::Receiver<bool>) {
        let mut buf = BytesMut::with_capacity(8 * 1024);
        let mut link: Option<Upstream> = None;
        let stopped = stop.clone();
        let stopping = stop_requested(stop);
        tokio::pin!(stopping);
        loop {
            let head = tokio::select! {
                biased;
                head = self.read_head(&mut agent, &mut buf) => head,
                _ = &mut stopping => break,
            };
            let head = match head {
                Ok(Some(head)) => head,
                Ok(None) => break,
                Err(refusal) => {
                    let answer = own(refusal.code, refusal.message).closing();
                    if agent.write_all(&answer.bytes(None)).await.is_ok() {
                        linger(&mut agent).await;
                    }
                    break;
                }
            };
            match self.exchange(&mut agent, &mut buf, &mut link, head).await {
                Ok(true) if !*stopped.borrow() => {}
                _ => break,
            }
        }
        if let Some(up) = link {
            self.sender.upstreams.check_in(up);
        }
    }

    /// The next request head: `Ok(None)` when the agent closes its
    /// connection or sends nothing within the head timeout.
    async fn read_head(&self, agent: &mut TcpStream, buf: &mut BytesMut) -> Result<Option<RequestHead>, h1::Refusal> {
        match read_head(agent, buf, self.head_timeout).await? {
            Some((head, len)) => {
                buf.advance(len);
                Ok(Some(head))
            }
            None => Ok(None),
        }
    }

    /// One request: read its body, forward it, relay the answer.
    async fn exchange(
        &self,
        agent: &mut TcpStream,
        buf: &mut BytesMut,
        link: &mut Option<Upstream>,
        head: RequestHead,
    ) -> Result<KeepAlive, ()> {
        let mut started = Instant::now();
        let framing =
            Agent { head_request: head.method == Method::HEAD, http10: head.http10, keep_alive: head.keep_alive };
        let outcome = match self.admission.check(&head) {
            // Refused before its body is read: the connection closes after it.
            Err(refused) => Err(refused.closing()),
            Ok(()) => match read_body(agent, buf, &head, BODY_LIMIT, self.head_timeout).await? {
                Ok(body) => {
                    // What the relay adds is timed from here: the agent's upload is not its.
                    started = Instant::now();
                    self.forward(link, head, body, framing).await
                }
                Err(refused) => Err(refused),
            },
        };
        let (mut up, resp) = match outcome {
            Ok((up, resp, provider)) => {
                if let Some(observe) = &self.observer {
                    observe(resp.status, Some(started.elapsed().saturating_sub(provider)));
                }
                (up, resp)
            }
            Err(own) => {
                if let Some(observe) = &self.observer {
                    observe(own.status().as_u16(), None);
                }
                let own = if framing.keep_alive { own } else { own.closing() };
                agent.write_all(&own.bytes(Some(framing))).await.map_err(|_| ())?;
                if own.close {
                    // Perhaps refused before its body was read: let the
                    // agent finish sending, so it reads the answer, not a reset.
                    linger(agent).await;
                }
                return Ok(!own.close);
            }
        };
        let close_agent = resp.close_agent;
        let reusable = relay_body(agent, &mut up, resp, self.sender.timeout).await?;
        if reusable {
            up.answered();
            *link = Some(up);
        }
        Ok(!close_agent)
    }

    /// Signs and sends the request, refreshing once on a provider `401`;
    /// the provider connection with the head of its answer, or an answer of
    /// the relay's own.
    async fn forward(
        &self,
        link: &mut Option<Upstream>,
        head: RequestHead,
        body: Bytes,
        framing: Agent,
    ) -> Result<(Upstream, ResponseHead, Duration), Own> {
        let (id, path) = crate::target::split_connection_path(head.target.path().trim_start_matches('/'));
        if id.is_empty() {
            return Err(own(ErrorCode::NotFound, "call /{connection_id}/{path} on this proxy"));
        }
        let answer = self.bridge.credentials(id).await.map_err(|e| gateway_error(&e))?;
        let base = match answer.base() {
            Some(Ok(base)) => base,
            Some(Err(m)) => {
                return Err(own(ErrorCode::ProviderMisconfigured, format!("api_base_url: {m}")));
            }
            None => return Err(own(ErrorCode::NoApiBaseUrl, "the provider has no api_base_url to proxy to")),
        };
        let fwd = Forward::to(base, path, head.target.query(), head.method, head.headers, body)
            .map_err(|m| own(ErrorCode::InvalidInput, m))?;
        let refresh = |stale: Arc<TokenAnswer>| async move {
            self.bridge.cache().refresh(id, &stale).await.map_err(|e| gateway_error(&e))
        };
        self.sender.forward(link, id, &fwd, answer, framing, refresh).await
    }
}

/// The provider side of a relay, shared by `nexus proxy` and the Gateway
/// proxy: provider connections, signing, the wait for an answer's head,
/// and the 401 rule of every caller ([`crate::pipeline`]) with the agent's
/// provider connection kept between the two sends.
#[derive(Debug, Clone)]
pub struct Sender {
    upstreams: Upstreams,
    timeout: Duration,
}

impl Sender {
    /// Sends on `upstreams`' connections; a provider has `timeout` to
    /// answer with a head.
    pub fn new(upstreams: Upstreams, timeout: Duration) -> Sender {
        Sender { upstreams, timeout }
    }

    /// The provider connections.
    pub fn upstreams(&self) -> &Upstreams {
        &self.upstreams
    }

    /// How long a provider may take to answer with a head, or to send the
    /// next bytes of its body.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Signs `fwd` with `answer` (for `connection_id`) and sends it; after a
    /// `401` that [`crate::pipeline::refreshes_after`] accepts, renews the
    /// answer with `refresh` and sends once more. The provider connection
    /// with the head of its answer, and the time the provider took.
    pub async fn forward<E, F, Fut>(
        &self,
        link: &mut Option<Upstream>,
        connection_id: &str,
        fwd: &Forward,
        answer: Arc<TokenAnswer>,
        framing: Agent,
        refresh: F,
    ) -> Result<(Upstream, ResponseHead, Duration), E>
    where
        E: From<Own>,
        F: FnOnce(Arc<TokenAnswer>) -> Fut,
        Fut: std::future::Future<Output = Result<Arc<TokenAnswer>, E>>,
    {
        let sent = Instant::now();
        let (mut up, resp) = self.send(link, connection_id, fwd, &answer, framing).await?;
        let provider = sent.elapsed();
        if !crate::pipeline::refreshes_after(resp.status, &answer) {
            return Ok((up, resp, provider));
        }
        // Keep the connection if the 401's body is already here whole.
        if let h1::ResponseBody::Length(n) = resp.body {
            if resp.reusable && up.buf.len() as u64 == resp.len as u64 + n {
                up.buf.clear();
                up.answered();
                *link = Some(up);
            }
        }
        let answer = refresh(answer).await?;
        let sent = Instant::now();
        let (up, resp) = self.send(link, connection_id, fwd, &answer, framing).await?;
        Ok((up, resp, provider + sent.elapsed()))
    }

    /// Sends the request signed with `answer` (for `connection_id`) and
    /// reads the head of the answer: on the agent's connection's provider
    /// connection when it served the same connection id at the same origin,
    /// else on an idle one that did, or a new one.
    async fn send(
        &self,
        link: &mut Option<Upstream>,
        connection_id: &str,
        fwd: &Forward,
        answer: &TokenAnswer,
        framing: Agent,
    ) -> Result<(Upstream, ResponseHead), Own> {
        let req = fwd.signed(answer).map_err(|e| own(ErrorCode::CannotSign, e.to_string()))?;
        let origin = Origin::of(req.uri()).map_err(|e| Failed::from(e).answer())?;
        let head = request_head(&req);
        let body = req.body().as_ref();
        let exchange = async {
            let (mut next, key) = self.upstreams.reuse(link.take(), connection_id, &origin);
            while let Some(mut up) = next.take() {
                match exchange_head(&mut up, &head, body, framing).await {
                    Ok(resp) => return Ok((up, resp)),
                    // Closed by the provider while idle: safe to send again
                    // when sending twice does no harm.
                    Err(Failed::BeforeAnswer) if up.reused() && req.method().is_idempotent() => {
                        next = self.upstreams.check_out(&key);
                    }
                    Err(e) => return Err(e),
                }
            }
            let mut up = self.upstreams.connect(&key).await?;
            exchange_head(&mut up, &head, body, framing).await.map(|resp| (up, resp))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(sent)) => Ok(sent),
            Ok(Err(e)) => Err(e.answer()),
            Err(_) => Err(Failed::Timeout.answer()),
        }
    }
}

/// Resolves once `stop` turns `true`; never when its sender is gone (a
/// dropped sender is no request to stop).
pub async fn stop_requested(mut stop: watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The next request head at the start of `buf`, reading from `agent` until
/// it is whole (not consumed: the head and its length); `Ok(None)` when the
/// agent closes its connection or sends no whole head within `timeout`.
pub async fn read_head(
    agent: &mut TcpStream,
    buf: &mut BytesMut,
    timeout: Duration,
) -> Result<Option<(RequestHead, usize)>, h1::Refusal> {
    let deadline = Instant::now() + timeout;
    loop {
        if !buf.is_empty() {
            if let Some(parsed) = h1::parse_request(buf)? {
                return Ok(Some(parsed));
            }
        }
        buf.reserve(4096);
        match tokio::time::timeout_at(deadline, agent.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return Ok(None),
        }
    }
}

/// The request's body, whole; `Ok(Err(answer))` refuses it (and closes
/// the agent's connection: what is left of the body is not read). Each
/// read waits at most `pause` (`408` after it); `Err` when the agent's
/// connection ends first.
pub async fn read_body(
    agent: &mut TcpStream,
    buf: &mut BytesMut,
    head: &RequestHead,
    limit: usize,
    pause: Duration,
) -> Result<Result<Bytes, Own>, ()> {
    let too_large = || {
        let message = format!("request bodies are limited to {limit} bytes");
        Ok(Err(own(ErrorCode::PayloadTooLarge, message).closing()))
    };
    match head.body {
        RequestBody::Length(0) => return Ok(Ok(Bytes::new())),
        RequestBody::Length(n) if n > limit as u64 => return too_large(),
        RequestBody::Length(n) if buf.len() as u64 >= n => return Ok(Ok(buf.split_to(n as usize).freeze())),
        _ => {}
    }
    if head.expects_continue && buf.is_empty() {
        agent.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.map_err(|_| ())?;
    }
    let mut reader = BodyReader::request(head.body);
    let mut body = BytesMut::new();
    loop {
        let used = match reader.advance(&buf[..], |r| body.extend_from_slice(&buf[r])) {
            Ok(used) => used,
            Err(bad) => return Ok(Err(own(ErrorCode::InvalidInput, bad.0).closing())),
        };
        buf.advance(used);
        if body.len() > limit {
            return too_large();
        }
        if reader.is_done() {
            return Ok(Ok(body.freeze()));
        }
        buf.reserve(16 * 1024);
        match tokio::time::timeout(pause, agent.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            Err(_) => return Ok(Err(own(ErrorCode::Timeout, "the request body stopped arriving").closing())),
            _ => return Err(()),
        }
    }
}

/// How long a refused agent may go on sending before its connection closes.
const LINGER: Duration = Duration::from_secs(2);

/// Closes our side of the agent's connection and reads (and drops) what
/// the agent still sends, for up to [`LINGER`]: closing a socket with
/// unread data resets it, and the agent would see the reset instead of
/// the answer it was sent (nginx's `lingering_close`).
pub async fn linger(agent: &mut TcpStream) {
    if agent.shutdown().await.is_err() {
        return;
    }
    let mut sink = vec![0u8; 64 * 1024];
    let drain = async {
        while let Ok(n) = agent.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// The request line and headers of a signed request, for HTTP/1.1 on the
/// wire (the path, not the absolute URI; a length for any body).
fn request_head(req: &http::Request<Bytes>) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.uri().path_and_query().map_or("/", |pq| pq.as_str()).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let len = req.body().len();
    if len > 0 || matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH) {
        let _ = write!(out, "content-length: {len}\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Writes the request and reads up to the final answer's head (interim
/// `1xx` answers are skipped; nothing asked for an upgrade).
async fn exchange_head(up: &mut Upstream, head: &[u8], body: &[u8], framing: Agent) -> Result<ResponseHead, Failed> {
    let parts: &[&[u8]] = if body.is_empty() { &[head] } else { &[head, body] };
    up.write(parts).await.map_err(|_| Failed::BeforeAnswer)?;
    let mut answered = false;
    loop {
        if !up.buf.is_empty() {
            answered = true;
            match h1::parse_response(&up.buf, framing) {
                Ok(Some(resp)) if resp.status == 101 => return Err(Failed::Bad("the provider switched protocols")),
                Ok(Some(resp)) if resp.status < 200 => {
                    // An interim answer: the final one may be here already.
                    up.buf.advance(resp.len);
                    continue;
                }
                Ok(Some(resp)) => return Ok(resp),
                Ok(None) => {}
                Err(h1::BadResponse(m)) => return Err(Failed::Bad(m)),
            }
        }
        match up.read_more().await {
            Ok(n) if n > 0 => {}
            _ if answered => return Err(Failed::Unreachable),
            _ => return Err(Failed::BeforeAnswer),
        }
    }
}

/// Sends `out` (the head for the agent) and the body after it as the
/// provider sends it; whether the provider's connection can be used again.
/// `Err`: the body was cut short (the agent's connection must close).
pub async fn relay_body(
    agent: &mut TcpStream,
    up: &mut Upstream,
    resp: ResponseHead,
    idle: Duration,
) -> Result<bool, ()> {
    let mut out = resp.out;
    // Each wait (the provider's next bytes, the agent taking ours) is
    // bounded: a stalled side must not hold the other's connection forever.
    async fn send(agent: &mut TcpStream, bytes: &[u8], idle: Duration) -> Result<(), ()> {
        match tokio::time::timeout(idle, agent.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }
    up.buf.advance(resp.len);
    let mut reader = BodyReader::response(resp.body);
    loop {
        let relayed = resp.relayed;
        let used = reader
            .advance(&up.buf, |r| match relayed {
                h1::Relayed::AsIs => {}
                h1::Relayed::Chunk => {
                    let _ = write!(out, "{:x}\r\n", r.len());
                    out.extend_from_slice(&up.buf[r]);
                    out.extend_from_slice(b"\r\n");
                }
                h1::Relayed::Dechunk => out.extend_from_slice(&up.buf[r]),
            })
            .map_err(|_| ())?;
        if relayed == h1::Relayed::AsIs && used > 0 {
            if out.is_empty() {
                send(agent, &up.buf[..used], idle).await?;
            } else {
                out.extend_from_slice(&up.buf[..used]);
            }
        }
        up.buf.advance(used);
        if reader.is_done() {
            if relayed == h1::Relayed::Chunk {
                out.extend_from_slice(b"0\r\n\r\n");
            }
            send(agent, &out, idle).await?;
            // Bytes after the end of the answer: the connection is out of step.
            return Ok(resp.reusable && up.buf.is_empty());
        }
        if !out.is_empty() {
            send(agent, &out, idle).await?;
            out.clear();
        }
        match tokio::time::timeout(idle, up.read_more()).await.map_err(|_| ())? {
            Ok(n) if n > 0 => {}
            Ok(_) if reader == BodyReader::UntilClose => {
                if relayed == h1::Relayed::Chunk {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                send(agent, &out, idle).await?;
                return Ok(false);
            }
            _ => return Err(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the Gateway says reaches the agent with the same status and
    /// code: a provider that is away is the Gateway's `503
    /// provider_unavailable` (SPEC 5b), the Gateway itself away a `502`.
    #[test]
    fn gateway_answers_keep_their_status_and_code() {
        let cases = [
            (GatewayError::ProviderUnavailable("down".into()), 503, "provider_unavailable"),
            (GatewayError::Unavailable("no route".into()), 502, "gateway_unavailable"),
            (GatewayError::Gone("deleted".into()), 410, "provider_deleted"),
            (GatewayError::AttentionRequired("c".into()), 409, "attention_required"),
        ];
        for (error, status, code) in cases {
            let answer = gateway_error(&error);
            assert_eq!(answer.status().as_u16(), status, "{error}");
            assert_eq!(serde_json::to_value(answer.code).unwrap(), code, "{error}");
        }
    }
}
