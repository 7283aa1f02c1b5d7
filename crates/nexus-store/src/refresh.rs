//! Storage side of the token lifecycle: locking one connection for a refresh,
//! recording the outcome atomically (new access token, rotated refresh token,
//! audit rows, cache invalidation in one transaction), and claiming due
//! connections for the background refresher.
//!
//! On PostgreSQL the lock is a row lock (`SELECT … FOR UPDATE`) held across the
//! provider call, so a replica that wants the same connection waits and then
//! reads the stored result; claims use `FOR UPDATE SKIP LOCKED` and a lease so
//! replicas never take the same connection. SQLite serves one process, whose
//! per-connection in-memory lock (in the server) gives the same guarantee, so
//! no database lock is held across the network call there.

use crate::audit::{append_in_tx, NewAudit};
use crate::connections::ConnectionRow;
use crate::invalidation::{notify_in_tx, Invalidation};
use crate::providers::{provider_by_id_on, ProviderRow};
use crate::webhooks::{enqueue_in_tx, ConnectionEvent};
use crate::{get, Backend, Store, StoreError, WriteTx};
use nexus_core::WebhookEvent;

/// What a refresh attempt came to.
#[derive(Debug, Clone)]
pub enum RefreshOutcome {
    /// New credentials; `refresh_token_enc` is `Some` when the provider rotated it.
    Refreshed {
        credentials_enc: String,
        refresh_token_enc: Option<String>,
        expires_at: Option<i64>,
        next_refresh_at: Option<i64>,
    },
    /// The provider refused the refresh token: the user must consent again.
    Refused { error: String },
    /// The provider could not be reached or failed (5xx): try again at `retry_at`.
    Failed { error: String, retry_at: i64 },
}

/// A connection locked for refreshing, with its provider as both were
/// when the lock was taken. Dropping it without [`Store::finish_refresh`]
/// changes nothing (the transaction rolls back).
pub struct RefreshLock {
    tx: Option<WriteTx>,
    row: ConnectionRow,
    provider: Option<ProviderRow>,
}

impl RefreshLock {
    /// The connection as it is now (read under the lock).
    pub fn row(&self) -> &ConnectionRow {
        &self.row
    }

    /// Its provider (`None`: deleted), read in the same transaction.
    pub fn provider(&self) -> Option<&ProviderRow> {
        self.provider.as_ref()
    }

    /// Releases the lock without changing anything.
    pub async fn release(self) {
        if let Some(w) = self.tx {
            let _ = w.tx.rollback().await;
        }
    }
}

impl Store {
    /// Locks `id` for a refresh and returns its current state and its
    /// provider, read together (`None`: no such connection).
    pub async fn lock_for_refresh(&self, id: &str) -> Result<Option<RefreshLock>, StoreError> {
        let columns = crate::connections::COLUMNS;
        match self.backend {
            Backend::Postgres => {
                let mut w = self.begin_write().await?;
                let row = sqlx::query(&format!("SELECT {columns} FROM connections WHERE id = $1 FOR UPDATE"))
                    .bind(id)
                    .fetch_optional(&mut *w.tx)
                    .await?;
                let Some(row) = row.as_ref().map(crate::connections::from_row).transpose()? else {
                    return Ok(None);
                };
                let provider = provider_by_id_on(&mut *w.tx, &row.provider_id).await?;
                Ok(Some(RefreshLock { row, provider, tx: Some(w) }))
            }
            Backend::Sqlite => {
                let Some(row) = self.connection_by_id(id).await? else { return Ok(None) };
                let provider = self.provider_by_id(&row.provider_id).await?;
                Ok(Some(RefreshLock { row, provider, tx: None }))
            }
        }
    }

    /// Records the outcome (and its audit rows) at `now` (unix
    /// microseconds) and releases the lock. Returns the connection as
    /// written; `None` when it was no longer active (revoked meanwhile:
    /// nothing was written but the audit rows).
    pub async fn finish_refresh(
        &self,
        lock: RefreshLock,
        outcome: &RefreshOutcome,
        audits: Vec<NewAudit>,
        now: i64,
    ) -> Result<Option<ConnectionRow>, StoreError> {
        let id = lock.row.id.clone();
        let mut w = match lock.tx {
            Some(w) => w,
            None => self.begin_write().await?,
        };
        let columns = crate::connections::COLUMNS;
        let written = match outcome {
            RefreshOutcome::Refreshed { credentials_enc, refresh_token_enc, expires_at, next_refresh_at } => {
                sqlx::query(&format!(
                    "UPDATE connections SET credentials_enc = $1, refresh_token_enc = COALESCE($2, refresh_token_enc),
                            expires_at = $3, next_refresh_at = $4, refresh_failures = 0, lease_until = NULL,
                            last_refreshed_at = $5, last_error = NULL, updated_at = $5
                     WHERE id = $6 AND status = 'active' RETURNING {columns}",
                ))
                .bind(credentials_enc)
                .bind(refresh_token_enc.as_deref())
                .bind(*expires_at)
                .bind(*next_refresh_at)
                .bind(now)
                .bind(&id)
                .fetch_optional(&mut *w.tx)
                .await?
            }
            RefreshOutcome::Refused { error } => {
                sqlx::query(&format!(
                    "UPDATE connections SET status = 'attention_required', next_refresh_at = NULL, lease_until = NULL,
                            last_error = $1, updated_at = $2
                     WHERE id = $3 AND status = 'active' RETURNING {columns}",
                ))
                .bind(error)
                .bind(now)
                .bind(&id)
                .fetch_optional(&mut *w.tx)
                .await?
            }
            RefreshOutcome::Failed { error, retry_at } => {
                sqlx::query(&format!(
                    "UPDATE connections SET refresh_failures = refresh_failures + 1, next_refresh_at = $1,
                            lease_until = NULL, last_error = $2, updated_at = $3
                     WHERE id = $4 AND status = 'active' RETURNING {columns}",
                ))
                .bind(*retry_at)
                .bind(error)
                .bind(now)
                .bind(&id)
                .fetch_optional(&mut *w.tx)
                .await?
            }
        };
        let written = written.as_ref().map(crate::connections::from_row).transpose()?;
        if let Some(row) = &written {
            let reported = match outcome {
                RefreshOutcome::Refreshed { .. } => None,
                RefreshOutcome::Refused { error } => Some((WebhookEvent::ConnectionAttentionRequired, error)),
                RefreshOutcome::Failed { error, .. } => Some((WebhookEvent::TokenRefreshFailed, error)),
            };
            if let Some((event, error)) = reported {
                let ev = ConnectionEvent {
                    event,
                    connection_id: &row.id,
                    provider: &row.provider_name,
                    workspace_id: &row.workspace_id,
                    status: row.status,
                    error: Some(error),
                };
                enqueue_in_tx(&mut w, &ev).await?;
            }
        }
        notify_in_tx(&mut w, Invalidation::Connection(id)).await?;
        for a in audits {
            append_in_tx(&mut w, a).await?;
        }
        w.commit().await?;
        Ok(written)
    }

    /// Claims up to `limit` active connections due for refresh at `now_secs`
    /// (unix seconds), leasing them for `lease_secs`. Uses the
    /// `next_refresh_at` index: the cost follows the number due, not stored.
    pub async fn claim_due_refreshes(
        &self,
        now_secs: i64,
        lease_secs: i64,
        limit: i64,
        skip_providers: &[String],
    ) -> Result<Vec<(String, String)>, StoreError> {
        // `next_refresh_at` is NULL unless the connection is active (every other
        // transition clears it), so the partial index alone finds the due ones.
        // `now` is a literal (an integer, never user input) so PostgreSQL plans
        // with the real bound instead of a generic plan that would scan.
        let mut due = format!(
            "next_refresh_at IS NOT NULL AND next_refresh_at <= {now_secs} AND (lease_until IS NULL OR lease_until < {now_secs})"
        );
        // Providers whose token endpoint is saturated or failing: their
        // connections stay due, untouched, for a later claim.
        if !skip_providers.is_empty() {
            let params: Vec<String> = (1..=skip_providers.len()).map(|n| format!("${n}")).collect();
            due.push_str(&format!(" AND provider_id NOT IN ({})", params.join(", ")));
        }
        fn bind_all<'q>(
            sql: &'q str,
            skip: &[String],
        ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
            skip.iter().fold(sqlx::query(sql), |q, p| q.bind(p.clone()))
        }
        // The common case, nothing due, costs one indexed read and no write transaction.
        let probe_sql = format!("SELECT id FROM connections WHERE {due} ORDER BY next_refresh_at LIMIT 1");
        let probe = bind_all(&probe_sql, skip_providers).fetch_optional(&self.pool).await?;
        if probe.is_none() {
            return Ok(Vec::new());
        }
        let lock = if self.backend == Backend::Postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
        let sql = format!(
            "UPDATE connections SET lease_until = {} WHERE id IN (
                 SELECT id FROM connections WHERE {due} AND status = 'active'
                 ORDER BY next_refresh_at LIMIT {}{lock})
             RETURNING id, provider_id",
            now_secs + lease_secs,
            limit.clamp(1, 10_000)
        );
        let mut w = self.begin_write().await?;
        let rows = bind_all(&sql, skip_providers).fetch_all(&mut *w.tx).await?;
        w.commit().await?;
        rows.iter().map(|r| Ok((get::<String>(r, "id")?, get::<String>(r, "provider_id")?))).collect()
    }

    /// Releases claims without working on them: the connections stay due
    /// as they were, for the next claim (of any replica).
    pub async fn release_refresh_claims(&self, ids: &[String]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let params: Vec<String> = (1..=ids.len()).map(|n| format!("${n}")).collect();
        let sql = format!("UPDATE connections SET lease_until = NULL WHERE id IN ({})", params.join(", "));
        let mut w = self.begin_write().await?;
        ids.iter().fold(sqlx::query(&sql), |q, id| q.bind(id.clone())).execute(&mut *w.tx).await?;
        w.commit().await
    }

    /// How many seconds late the oldest due renewal is (0 when none is due).
    pub async fn refresh_lag(&self, now_secs: i64) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT MIN(next_refresh_at) AS due FROM connections WHERE next_refresh_at IS NOT NULL AND next_refresh_at <= $1 AND status = 'active'",
        )
        .bind(now_secs)
        .fetch_one(&self.pool)
        .await?;
        Ok(get::<Option<i64>>(&row, "due")?.map_or(0, |due| now_secs - due))
    }

    /// How many active connections are due (for metrics and tests).
    pub async fn count_due_refreshes(&self, now_secs: i64) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM connections WHERE next_refresh_at IS NOT NULL AND next_refresh_at <= $1 AND status = 'active'",
        )
        .bind(now_secs)
        .fetch_one(&self.pool)
        .await?;
        get(&row, "n")
    }
}
