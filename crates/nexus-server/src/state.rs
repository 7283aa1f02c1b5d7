//! The shared state every handler receives: configuration, store, the one
//! outbound HTTP client, and the batched writer for high-volume audit rows.

use crate::config::Config;
use nexus_store::{NewAudit, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

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
    audit_tx: mpsc::Sender<AuditMsg>,
}

#[derive(Debug)]
enum AuditMsg {
    Entry(NewAudit),
    Flush(oneshot::Sender<()>),
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Most rows written per audit transaction by the batched writer.
const AUDIT_BATCH: usize = 512;

impl AppState {
    /// Builds the state and starts the audit writer task (needs a Tokio runtime).
    pub fn new(config: Config, store: Store) -> AppState {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("nexus/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client configuration is static and valid");
        let (audit_tx, audit_rx) = mpsc::channel(16 * 1024);
        tokio::spawn(audit_writer(store.clone(), audit_rx));
        AppState(Arc::new(Inner { config, store, http, audit_tx }))
    }

    /// Records a high-volume event (`token.retrieved`) without waiting for the
    /// database: rows are chained and written in batches, in order. Events that
    /// change state are written in their own transaction instead.
    pub fn audit_async(&self, entry: NewAudit) {
        if let Err(e) = self.audit_tx.try_send(AuditMsg::Entry(entry)) {
            // A full queue means the database is far behind; wait rather than drop.
            let tx = self.audit_tx.clone();
            let msg = e.into_inner();
            tokio::spawn(async move {
                let _ = tx.send(msg).await;
            });
        }
    }

    /// Waits until every row queued before this call is written.
    pub async fn flush_audit(&self) {
        let (tx, rx) = oneshot::channel();
        if self.audit_tx.send(AuditMsg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn audit_writer(store: Store, mut rx: mpsc::Receiver<AuditMsg>) {
    while let Some(first) = rx.recv().await {
        let mut batch = Vec::new();
        let mut waiters = Vec::new();
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                AuditMsg::Entry(e) => batch.push(e),
                AuditMsg::Flush(w) => waiters.push(w),
            }
            if batch.len() < AUDIT_BATCH {
                next = rx.try_recv().ok();
            }
        }
        let count = batch.len();
        for attempt in 0..5u32 {
            match store.append_audit_batch(batch.clone()).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(error = %e, rows = count, attempt, "audit batch write failed");
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
            }
        }
        for w in waiters {
            let _ = w.send(());
        }
    }
}
