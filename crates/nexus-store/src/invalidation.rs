//! Change notifications for caches in front of the store.
//!
//! Every write that changes what `GET /v1/token` would answer (a connection's
//! status or credentials, a provider's configuration) emits an
//! [`Invalidation`] inside its transaction. On PostgreSQL it is a `NOTIFY` on
//! [`CHANNEL`], delivered at commit to every replica that listens; SQLite
//! serves one process, whose services invalidate their own cache directly.

use crate::{Backend, Store, StoreError, WriteTx};
use std::time::Duration;
use tokio::sync::mpsc;

pub const CHANNEL: &str = "nexus_invalidate";

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    Connection(String),
    Provider(String),
    /// The listener lost notifications (reconnect): forget everything.
    All,
}

impl Invalidation {
    fn payload(&self) -> String {
        match self {
            Invalidation::Connection(id) => format!("c:{id}"),
            Invalidation::Provider(id) => format!("p:{id}"),
            Invalidation::All => "*".into(),
        }
    }

    fn parse(payload: &str) -> Invalidation {
        match payload.split_once(':') {
            Some(("c", id)) => Invalidation::Connection(id.to_owned()),
            Some(("p", id)) => Invalidation::Provider(id.to_owned()),
            _ => Invalidation::All,
        }
    }
}

/// Emits `what` when the transaction commits (PostgreSQL only).
pub(crate) async fn notify_in_tx(w: &mut WriteTx, what: Invalidation) -> Result<(), StoreError> {
    if w.backend == Backend::Postgres {
        sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(what.payload()).execute(&mut *w.tx).await?;
    }
    Ok(())
}

impl Store {
    /// Invalidations committed by any process on this database (PostgreSQL),
    /// `None` on SQLite. After a lost connection the stream yields
    /// [`Invalidation::All`] before resuming.
    pub fn subscribe_invalidations(&self) -> Option<mpsc::Receiver<Invalidation>> {
        if self.backend != Backend::Postgres {
            return None;
        }
        let (tx, rx) = mpsc::channel(1024);
        let url = self.url.clone();
        tokio::spawn(async move {
            loop {
                match sqlx::postgres::PgListener::connect(&url).await {
                    Ok(mut listener) => {
                        if listener.listen(CHANNEL).await.is_ok() {
                            // Anything may have changed while we were not listening.
                            if tx.send(Invalidation::All).await.is_err() {
                                return;
                            }
                            loop {
                                match listener.try_recv().await {
                                    Ok(Some(n)) => {
                                        if tx.send(Invalidation::parse(n.payload())).await.is_err() {
                                            return;
                                        }
                                    }
                                    // None: the connection dropped (and will reconnect).
                                    Ok(None) => {
                                        if tx.send(Invalidation::All).await.is_err() {
                                            return;
                                        }
                                    }
                                    Err(_) => break,
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cache invalidation listener could not connect; retrying"),
                }
                if tx.is_closed() {
                    return;
                }
                let _ = tx.send(Invalidation::All).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Some(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        for i in [Invalidation::Connection("a:b".into()), Invalidation::Provider("p1".into()), Invalidation::All] {
            assert_eq!(Invalidation::parse(&i.payload()), i);
        }
    }
}
