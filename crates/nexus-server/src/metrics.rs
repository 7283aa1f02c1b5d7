//! Prometheus metrics (SPEC 14), served on `METRICS_BIND` only: requests by
//! route template and status, token answers by outcome, refreshes by
//! provider and outcome, the refresher's backlog and lag, the Gateway
//! proxy's requests and the latency it adds, the audit queue and its write
//! failures, and the build. Labels are bounded: route templates, provider
//! names, outcomes and statuses; never a connection id, workspace, path or
//! address.
//!
//! Built on the `prometheus` crate: a registry per server (so servers in one
//! process keep their own counts) rendered in the text format 0.0.4 that
//! Prometheus scrapes and `promtool check metrics` reads.

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::time::Duration;

/// Seconds: 0.5 ms to about 16 s.
const LATENCY_BUCKETS: [f64; 16] =
    [0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.0, 2.0, 4.0, 8.0, 16.0];

pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    /// One counter per outcome, resolved once (token answers are the hot path).
    token_answers: [IntCounter; 6],
    refreshes: IntCounterVec,
    pub refresher_backlog: IntGauge,
    pub refresher_lag: Gauge,
    proxy: Proxied,
    pub audit_queue_depth: IntGauge,
    pub audit_write_failures: IntCounter,
    discovery_refreshes: IntCounterVec,
    webhook_attempts: IntCounterVec,
    pub webhook_backlog: IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Where a token answer came from (`nexus_token_answers_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOutcome {
    CacheHit,
    /// Read from the store, no refresh needed.
    Stored,
    Refreshed,
    AttentionRequired,
    Unavailable,
    /// Any other refusal (not found, not active, deleted provider).
    Refused,
}

impl TokenOutcome {
    const ALL: [TokenOutcome; 6] = [
        TokenOutcome::CacheHit,
        TokenOutcome::Stored,
        TokenOutcome::Refreshed,
        TokenOutcome::AttentionRequired,
        TokenOutcome::Unavailable,
        TokenOutcome::Refused,
    ];

    fn label(self) -> &'static str {
        match self {
            TokenOutcome::CacheHit => "cache_hit",
            TokenOutcome::Stored => "stored",
            TokenOutcome::Refreshed => "refreshed",
            TokenOutcome::AttentionRequired => "attention_required",
            TokenOutcome::Unavailable => "unavailable",
            TokenOutcome::Refused => "refused",
        }
    }
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    registry.register(Box::new(metric.clone())).expect("metric names are unique and valid");
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(&r, IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter"))
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
            register(&r, HistogramVec::new(opts, labels).expect("valid histogram"))
        };
        let metrics = Metrics {
            http_requests: counter(
                "nexus_http_requests_total",
                "HTTP requests answered, by route template, method and status.",
                &["route", "method", "status"],
            ),
            http_duration: histogram(
                "nexus_http_request_duration_seconds",
                "Time to answer an HTTP request, by route template and method.",
                &["route", "method"],
            ),
            token_answers: {
                let by_outcome = counter(
                    "nexus_token_answers_total",
                    "Token answers (GET /v1/token and the Gateway proxy), by outcome.",
                    &["outcome"],
                );
                TokenOutcome::ALL.map(|o| by_outcome.with_label_values(&[o.label()]))
            },
            refreshes: counter(
                "nexus_refreshes_total",
                "Refreshes and grant renewals asked of providers, by provider and outcome.",
                &["provider", "outcome"],
            ),
            refresher_backlog: register(
                &r,
                IntGauge::new("nexus_refresher_backlog", "Active connections due for renewal now.")
                    .expect("valid gauge"),
            ),
            refresher_lag: register(
                &r,
                Gauge::new("nexus_refresher_lag_seconds", "How long the most overdue renewal has been due.")
                    .expect("valid gauge"),
            ),
            proxy: Proxied::register(&r, "gateway"),
            audit_queue_depth: register(
                &r,
                IntGauge::new("nexus_audit_queue_depth", "Audit rows queued for the batch writer.")
                    .expect("valid gauge"),
            ),
            audit_write_failures: register(
                &r,
                IntCounter::new(
                    "nexus_audit_write_failures_total",
                    "Audit batch writes the database refused (retried).",
                )
                .expect("valid counter"),
            ),
            discovery_refreshes: counter(
                "nexus_discovery_refreshes_total",
                "OIDC discovery documents and key sets fetched again, by reason and outcome.",
                &["reason", "outcome"],
            ),
            webhook_attempts: counter(
                "nexus_webhook_attempts_total",
                "Webhook delivery attempts, by outcome (delivered, http_status, redirect_refused, timeout, unreachable).",
                &["outcome"],
            ),
            webhook_backlog: register(
                &r,
                IntGauge::new("nexus_webhook_backlog", "Webhook deliveries due now and not yet sent.")
                    .expect("valid gauge"),
            ),
            registry: r,
        };
        register_build_info(&metrics.registry);
        metrics
    }

    pub fn http(&self, route: &str, method: &str, status: u16, took: Duration) {
        let method = method_label(method);
        self.http_requests.with_label_values(&[route, method, status_label(status)]).inc();
        self.http_duration.with_label_values(&[route, method]).observe(took.as_secs_f64());
    }

    pub fn token_answer(&self, outcome: TokenOutcome) {
        self.token_answers[outcome as usize].inc();
    }

    /// `outcome`: `refreshed`, `refused` or `provider_down`.
    pub fn refresh(&self, provider: &str, outcome: &str) {
        self.refreshes.with_label_values(&[provider, outcome]).inc();
    }

    /// A Gateway proxy answer, and what it added to the provider's time when it reached one.
    pub fn proxied(&self, status: u16, added: Option<Duration>) {
        self.proxy.record(status, added);
    }

    /// `reason`: `ttl` or `unknown_kid`; `outcome`: `ok` or `failed`.
    pub fn discovery(&self, reason: &str, outcome: &str) {
        self.discovery_refreshes.with_label_values(&[reason, outcome]).inc();
    }

    pub fn webhook_attempt(&self, outcome: &str) {
        self.webhook_attempts.with_label_values(&[outcome]).inc();
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        encode(&self.registry)
    }
}

/// A proxy's requests by status and the latency it adds over the provider's
/// (`nexus_proxy_requests_total`, `nexus_proxy_added_seconds`), labelled
/// with which proxy it is.
struct Proxied {
    proxy: &'static str,
    requests: IntCounterVec,
    added: HistogramVec,
}

impl Proxied {
    fn register(registry: &Registry, proxy: &'static str) -> Proxied {
        let requests = IntCounterVec::new(
            Opts::new(
                "nexus_proxy_requests_total",
                "Authenticated requests a proxy forwarded (or refused to), by status.",
            ),
            &["proxy", "status"],
        )
        .expect("valid counter");
        let opts = HistogramOpts::new(
            "nexus_proxy_added_seconds",
            "Latency a proxy adds: its time to the answer's head (after the request body) less the provider's.",
        )
        .buckets(LATENCY_BUCKETS.to_vec());
        let added = HistogramVec::new(opts, &["proxy"]).expect("valid histogram");
        Proxied { proxy, requests: register(registry, requests), added: register(registry, added) }
    }

    fn record(&self, status: u16, added: Option<Duration>) {
        self.requests.with_label_values(&[self.proxy, status_label(status)]).inc();
        if let Some(added) = added {
            self.added.with_label_values(&[self.proxy]).observe(added.as_secs_f64());
        }
    }
}

fn register_build_info(registry: &Registry) {
    let build =
        IntGaugeVec::new(Opts::new("nexus_build_info", "The running build."), &["version"]).expect("valid gauge");
    build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    register(registry, build);
}

fn encode(registry: &Registry) -> String {
    let mut out = Vec::new();
    let _ = TextEncoder::new().encode(&registry.gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// The metrics of `nexus proxy` (the sidecar): its requests and the latency
/// it adds (`proxy="sidecar"`), and the build.
pub struct ProxyMetrics {
    registry: Registry,
    proxy: Proxied,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        ProxyMetrics::new()
    }
}

impl ProxyMetrics {
    pub fn new() -> ProxyMetrics {
        let registry = Registry::new();
        let proxy = Proxied::register(&registry, "sidecar");
        register_build_info(&registry);
        ProxyMetrics { registry, proxy }
    }

    /// One answer of the relay.
    pub fn record(&self, status: u16, added: Option<Duration>) {
        self.proxy.record(status, added);
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        encode(&self.registry)
    }
}

/// Serves `render()` as `GET /metrics` (Prometheus text format 0.0.4) on
/// `listener` until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    render: impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>> + Clone + Send + Sync + 'static,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let app =
        axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let render = render.clone();
                async move {
                    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], render().await)
                }
            }),
        );
    let _ = axum::serve(listener, app).with_graceful_shutdown(stop).await;
}

/// Methods as labels: the standard ones, anything else `other` (a client
/// may send any token as a method; it must not grow the registry).
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"];
    KNOWN.into_iter().find(|m| *m == method).unwrap_or("other")
}

/// Statuses as labels: one of a bounded set of strings.
fn status_label(status: u16) -> &'static str {
    const KNOWN: [(u16, &str); 24] = [
        (200, "200"),
        (201, "201"),
        (204, "204"),
        (206, "206"),
        (301, "301"),
        (302, "302"),
        (303, "303"),
        (304, "304"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (408, "408"),
        (409, "409"),
        (410, "410"),
        (413, "413"),
        (415, "415"),
        (422, "422"),
        (429, "429"),
        (500, "500"),
        (502, "502"),
        (503, "503"),
        (504, "504"),
    ];
    match KNOWN.iter().find(|(s, _)| *s == status) {
        Some((_, label)) => label,
        None => match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        },
    }
}
