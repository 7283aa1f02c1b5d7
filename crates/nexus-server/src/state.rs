//! The shared state every handler receives: configuration, store, the one
//! outbound HTTP client, and the batched writer for high-volume audit rows.

use crate::config::Config;
use crate::error::ApiError;
use crate::services::token_cache::TokenCache;
use nexus_store::{Invalidation, NewAudit, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// Cheap to clone (`Arc` inside).
#[derive(Clone, Debug)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
pub struct Inner {
    pub config: Config,
    pub store: Store,
    /// For calls to providers. Redirects are not followed so an https endpoint
    /// cannot bounce us to a plain-http one.
    pub http: reqwest::Client,
    /// For the Gateway proxy: the relay's provider side (no redirects,
    /// provider connections kept per connection id; in the lane, each
    /// paired with an agent's connection, see `crate::proxy_lane`).
    pub proxy_sender: nexus_bridge::relay::Sender,
    /// Answers of `GET /v1/token`, invalidated on every change.
    pub token_cache: TokenCache,
    /// Per-connection locks for single-flight refresh.
    pub refresh_locks: crate::services::refresh::RefreshLocks,
    /// OIDC discovery documents of per-tenant issuers.
    pub issuers: crate::services::tenant_discovery::IssuerCache,
    /// Providers' signing keys, fetched once a day or on an unknown key id.
    pub key_sets: crate::services::key_sets::KeySets,
    /// One rediscovery at a time per provider (stored documents older than a day).
    pub rediscovery: crate::services::tenant_discovery::Rediscovery,
    audit_tx: mpsc::Sender<AuditMsg>,
    /// Set at the end of shutdown's grace: the audit writer logs what the
    /// database still refuses instead of retrying.
    audit_give_up: Arc<std::sync::atomic::AtomicBool>,
    /// Every change that invalidates token answers, committed here or (on
    /// PostgreSQL) by any replica: what `GET /v1/invalidations` streams.
    changes: broadcast::Sender<Invalidation>,
    /// Turns `true` when the server starts to stop: long-lived work (the
    /// invalidation streams, the refresher) winds down.
    stopping: watch::Sender<bool>,
    /// Work that must not be cut off half-way (refreshes): shutdown waits
    /// for it.
    pub tasks: tokio_util::task::TaskTracker,
    /// What expiries are judged by (tests move it instead of sleeping).
    pub clock: nexus_core::clock::Clock,
    /// Counters and histograms for `GET /metrics` (on `METRICS_BIND`).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// API keys read recently, and the failed-authentication limiter.
    pub keys: crate::services::api_keys::Keys,
}

#[derive(Debug)]
enum AuditMsg {
    Entry(Box<NewAudit>),
    Flush(oneshot::Sender<()>),
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The Gateway proxy's limits: making a connection to the provider, and the
/// wait for its response head (the body then streams, however long it takes).
const PROXY_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const PROXY_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Most rows written per audit transaction by the batched writer.
const AUDIT_BATCH: usize = 512;
/// How long the writer gathers rows after the first of a batch, so that a hot
/// agent's retrievals become one row per connection per window rather than a
/// transaction per call. A flush ends the window at once.
const AUDIT_LINGER: Duration = Duration::from_millis(20);

impl AppState {
    /// Builds the state and starts the audit writer task (needs a Tokio runtime).
    pub fn new(config: Config, store: Store) -> AppState {
        let http = nexus_bridge::resolve::reqwest_builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("nexus/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client configuration is static and valid");
        let proxy_sender = nexus_bridge::relay::Sender::new(
            nexus_bridge::upstream::Upstreams::new(PROXY_CONNECT_TIMEOUT)
                .expect("ring supports rustls' default protocol versions"),
            PROXY_RESPONSE_TIMEOUT,
        );
        let (audit_tx, audit_rx) = mpsc::channel(16 * 1024);
        let audit_give_up = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let metrics = Arc::new(crate::metrics::Metrics::new());
        tokio::spawn(audit_writer(store.clone(), audit_rx, audit_give_up.clone(), metrics.clone()));
        let invalidations = store.subscribe_invalidations();
        let (changes, _) = broadcast::channel(1024);
        let keys = crate::services::api_keys::Keys::new(config.auth_failure_limit);
        let state = AppState(Arc::new(Inner {
            config,
            store,
            http,
            proxy_sender,
            token_cache: TokenCache::new(Duration::from_secs(30)),
            refresh_locks: Default::default(),
            issuers: Default::default(),
            key_sets: Default::default(),
            rediscovery: Default::default(),
            audit_tx,
            audit_give_up,
            changes,
            stopping: watch::Sender::new(false),
            tasks: tokio_util::task::TaskTracker::new(),
            clock: nexus_core::clock::Clock::default(),
            metrics,
            keys,
        }));
        if let Some(mut rx) = invalidations {
            let weak = Arc::downgrade(&state.0);
            tokio::spawn(async move {
                while let Some(what) = rx.recv().await {
                    let Some(inner) = weak.upgrade() else { return };
                    inner.token_cache.invalidate(&what);
                    let _ = inner.changes.send(what);
                }
            });
        }
        state
    }

    /// Forgets cached answers affected by a change this process just committed
    /// (other replicas hear of it through the store's notifications).
    pub fn invalidate(&self, what: Invalidation) {
        self.token_cache.invalidate(&what);
        // No subscriber is no error: nobody follows the stream.
        let _ = self.changes.send(what);
    }

    /// Changes from now on, as [`AppState::invalidate`] and the other
    /// replicas report them.
    pub fn subscribe_changes(&self) -> broadcast::Receiver<Invalidation> {
        self.changes.subscribe()
    }

    /// Tells long-lived work that the server is stopping.
    pub fn begin_stopping(&self) {
        self.stopping.send_replace(true);
    }

    /// Whether the server has begun to stop.
    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Resolves once the server has begun to stop.
    pub fn stopping(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.stopping.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// Records a high-volume event (`token.retrieved`, `auth.rejected`)
    /// without waiting for the database: rows are chained and written in
    /// batches, in order, repeats merged with a count, retried until the
    /// database takes them. When the queue is full (the database far
    /// behind or away) this waits for room, so a flood slows its sender
    /// rather than piling up rows in memory; after [`AUDIT_QUEUE_WAIT`] the
    /// request fails with `503` instead of going on unaudited. Events that
    /// change state are written in their own transaction instead.
    pub async fn audit_batched(&self, entry: NewAudit) -> Result<(), ApiError> {
        // Room in the queue, the usual case: no timer to set up (every token
        // answer comes here).
        let sent = match self.audit_tx.try_send(AuditMsg::Entry(Box::new(entry))) {
            Err(mpsc::error::TrySendError::Full(entry)) => {
                self.audit_tx.send_timeout(entry, AUDIT_QUEUE_WAIT).await.map_err(drop)
            }
            sent => sent.map_err(drop),
        };
        match sent {
            Ok(()) => Ok(()),
            Err(()) => Err(ApiError::new(
                crate::error::ErrorCode::StorageUnavailable,
                "the audit log cannot be written right now; retry shortly",
            )),
        }
    }

    /// [`AppState::flush_audit`] for a request: waits at most
    /// [`AUDIT_QUEUE_WAIT`], then answers `503` (the database is away).
    pub async fn flush_audit_for_request(&self) -> Result<(), ApiError> {
        tokio::time::timeout(AUDIT_QUEUE_WAIT, self.flush_audit()).await.map_err(|_| {
            ApiError::new(
                crate::error::ErrorCode::StorageUnavailable,
                "the audit log cannot be read right now; retry shortly",
            )
        })
    }

    /// The metrics as text, the gauges read now (the refresher's backlog
    /// and lag from the store, the audit queue's depth).
    pub async fn render_metrics(&self) -> String {
        let now = self.clock.now_secs();
        if let Ok(n) = self.store.count_due_refreshes(now).await {
            self.metrics.refresher_backlog.set(n);
        }
        if let Ok(lag) = self.store.refresh_lag(now).await {
            self.metrics.refresher_lag.set(lag as f64);
        }
        if let Ok((due, _)) = self.store.outbox_backlog(self.clock.now_micros()).await {
            self.metrics.webhook_backlog.set(due);
        }
        let queued = self.audit_tx.max_capacity() - self.audit_tx.capacity();
        self.metrics.audit_queue_depth.set(queued as i64);
        self.metrics.render()
    }

    /// Waits until every row queued before this call is written.
    pub async fn flush_audit(&self) {
        let (tx, rx) = oneshot::channel();
        if self.audit_tx.send(AuditMsg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// At shutdown: waits for every queued row to be written, for up to
    /// [`AUDIT_CLOSE_GRACE`]; rows the database still refuses after that
    /// are written to the log, one line each, rather than lost unseen.
    pub async fn close_audit(&self) {
        if tokio::time::timeout(AUDIT_CLOSE_GRACE, self.flush_audit()).await.is_err() {
            self.audit_give_up.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = tokio::time::timeout(Duration::from_secs(10), self.flush_audit()).await;
        }
    }
}

/// How long a request waits for room in a full audit queue before it fails.
pub const AUDIT_QUEUE_WAIT: Duration = Duration::from_secs(10);
/// How long shutdown waits for queued audit rows to be written.
pub const AUDIT_CLOSE_GRACE: Duration = Duration::from_secs(60);
/// How long one attempt to write a batch may take.
const AUDIT_ATTEMPT: Duration = Duration::from_secs(30);

async fn audit_writer(
    store: Store,
    mut rx: mpsc::Receiver<AuditMsg>,
    give_up: Arc<std::sync::atomic::AtomicBool>,
    metrics: Arc<crate::metrics::Metrics>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = Vec::new();
        let mut waiters = Vec::new();
        let deadline = tokio::time::Instant::now() + AUDIT_LINGER;
        let mut msg = first;
        loop {
            match msg {
                AuditMsg::Entry(e) => batch.push(*e),
                AuditMsg::Flush(w) => waiters.push(w),
            }
            // Rows queued before a flush are already in the batch (the queue is FIFO).
            if batch.len() >= AUDIT_BATCH || !waiters.is_empty() {
                break;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(next)) => msg = next,
                Ok(None) | Err(_) => break,
            }
        }
        let mut batch = coalesce(batch);
        // Ids fixed before the first attempt: a retry after a commit whose
        // answer was lost finds its rows written and adds none.
        for entry in &mut batch {
            entry.id.get_or_insert_with(|| uuid::Uuid::now_v7().to_string());
        }
        let count = batch.len();
        let mut attempt = 0u32;
        loop {
            let attempt_result = if give_up.load(std::sync::atomic::Ordering::SeqCst) {
                Err("shutdown's grace for the audit log is over".to_owned())
            } else {
                match tokio::time::timeout(AUDIT_ATTEMPT, store.append_audit_batch(batch.clone())).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer from the database in {AUDIT_ATTEMPT:?}")),
                }
            };
            if attempt_result.is_err() {
                metrics.audit_write_failures.inc();
            }
            match attempt_result {
                Ok(()) => break,
                Err(e) if give_up.load(std::sync::atomic::Ordering::SeqCst) => {
                    tracing::error!(error = %e, rows = count, "audit rows not written at shutdown; they follow");
                    for row in &batch {
                        tracing::error!(
                            id = row.id.as_deref(),
                            event_type = row.event_type.as_str(),
                            at = row.at,
                            ip = row.ip.as_deref(),
                            provider_id = row.provider_id.as_deref(),
                            connection_id = row.connection_id.as_deref(),
                            workspace_id = row.workspace_id.as_deref(),
                            data = %row.data,
                            "audit row not written"
                        );
                    }
                    break;
                }
                Err(e) => {
                    // Never dropped: retried until the database takes it
                    // (requests wait, then fail, while the queue is full).
                    tracing::error!(error = %e, rows = count, attempt, "audit batch write failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100u64 << attempt.min(5))).await;
                    attempt += 1;
                }
            }
        }
        for w in waiters {
            let _ = w.send(());
        }
    }
}

/// Merges rows of events that callers repeat at will — `token.retrieved`
/// of one connection, `auth.rejected` for one reason and target — from one
/// caller (IP and user agent) within a batch into one row carrying `count`,
/// so a hot agent (or a scan of wrong keys) does not write a row per call
/// while every one stays accounted for. The merged row keeps the first
/// one's time. Other events keep their order.
fn coalesce(batch: Vec<NewAudit>) -> Vec<NewAudit> {
    let mut out: Vec<NewAudit> = Vec::with_capacity(batch.len());
    /// Event, connection, caller IP, user agent, API key, and the rejection's data.
    type Key = (nexus_core::AuditEvent, Option<String>, Option<String>, Option<String>, Option<String>, String);
    let mut index: std::collections::HashMap<Key, usize> = std::collections::HashMap::new();
    for entry in batch {
        let merged = if entry.event_type == nexus_core::AuditEvent::TokenRetrieved {
            String::new()
        } else if entry.event_type == nexus_core::AuditEvent::AuthRejected {
            entry.data.to_string()
        } else {
            out.push(entry);
            continue;
        };
        let key = (
            entry.event_type,
            entry.connection_id.clone(),
            entry.ip.clone(),
            entry.user_agent.clone(),
            entry.api_key.as_ref().map(|k| k.id.clone()),
            merged,
        );
        match index.get(&key) {
            Some(&i) => {
                let n = out[i].data.get("count").and_then(serde_json::Value::as_u64).unwrap_or(1);
                out[i].data["count"] = serde_json::Value::from(n + 1);
            }
            None => {
                let mut entry = entry;
                if !entry.data.is_object() {
                    entry.data = serde_json::json!({});
                }
                entry.data["count"] = serde_json::Value::from(1u64);
                index.insert(key, out.len());
                out.push(entry);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retrieved(conn: &str) -> NewAudit {
        NewAudit {
            connection_id: Some(conn.into()),
            data: serde_json::json!({}),
            ..NewAudit::new(nexus_core::AuditEvent::TokenRetrieved)
        }
    }

    #[test]
    fn retrievals_of_one_connection_merge_with_a_count() {
        let batch = vec![
            retrieved("a"),
            retrieved("b"),
            NewAudit::new(nexus_core::AuditEvent::ProviderUpdated),
            retrieved("a"),
        ];
        let out = coalesce(batch);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].data["count"], 2);
        assert_eq!(out[1].data["count"], 1);
        assert_eq!(out[2].event_type, nexus_core::AuditEvent::ProviderUpdated);
    }

    fn rejected(ip: &str, reason: &str) -> NewAudit {
        NewAudit {
            ip: Some(ip.into()),
            data: serde_json::json!({ "reason": reason, "method": "GET", "path": "/v1/providers" }),
            ..NewAudit::new(nexus_core::AuditEvent::AuthRejected)
        }
    }

    #[test]
    fn rejections_merge_per_caller_and_reason_and_never_with_retrievals() {
        let mut retrieval = retrieved("a");
        retrieval.ip = Some("10.0.0.1".into());
        let batch = vec![
            rejected("10.0.0.1", "invalid_api_key"),
            rejected("10.0.0.1", "invalid_api_key"),
            rejected("10.0.0.1", "missing_api_key"),
            rejected("10.0.0.2", "invalid_api_key"),
            retrieval,
            rejected("10.0.0.1", "invalid_api_key"),
        ];
        let out = coalesce(batch);
        let summary: Vec<_> = out
            .iter()
            .map(|e| {
                (
                    e.event_type.as_str(),
                    e.ip.as_deref().unwrap(),
                    e.data.get("reason").cloned(),
                    e.data["count"].clone(),
                )
            })
            .collect();
        use serde_json::json;
        assert_eq!(
            summary,
            [
                ("auth.rejected", "10.0.0.1", Some(json!("invalid_api_key")), json!(3)),
                ("auth.rejected", "10.0.0.1", Some(json!("missing_api_key")), json!(1)),
                ("auth.rejected", "10.0.0.2", Some(json!("invalid_api_key")), json!(1)),
                ("token.retrieved", "10.0.0.1", None, json!(1)),
            ]
        );
    }
}
