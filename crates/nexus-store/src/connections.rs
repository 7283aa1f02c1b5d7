//! Connection rows: status, the handshake in progress and the sealed credentials.
//!
//! State transitions that must not race (consuming a single-use `state`,
//! activating, failing, revoking) are single conditional `UPDATE`s inside a
//! write transaction together with their audit row.

use crate::audit::{append_in_tx, NewAudit};
use crate::invalidation::{notify_in_tx, Invalidation};
use crate::webhooks::{enqueue_in_tx, ConnectionEvent};
use crate::{get, now_micros, Backend, Store, StoreError, WriteTx};
use nexus_core::{AuthType, ConnectionStatus, WebhookEvent};
use serde_json::{Map, Value};
use sqlx::any::AnyRow;

/// The assignments that forget a handshake: its state, expiry, PKCE verifier
/// and OIDC nonce (a finished, failed or expired handshake keeps none).
macro_rules! clear_handshake {
    () => {
        "state_nonce = NULL, handshake_expires_at = NULL, pkce_verifier_enc = NULL, oidc_nonce = NULL, handshake_config = NULL, \
         prior_status = NULL"
    };
}

/// A connection as a transition finds it (read in the transition's
/// transaction; on PostgreSQL locked until it commits).
struct Before {
    status: ConnectionStatus,
    /// What it was before a re-authorization under way made it `pending`.
    prior_status: Option<String>,
    provider_name: String,
    workspace_id: String,
}

async fn before_change(w: &mut WriteTx, id: &str) -> Result<Option<Before>, StoreError> {
    let lock = if w.backend == Backend::Postgres { " FOR UPDATE" } else { "" };
    let row = sqlx::query(&format!(
        "SELECT status, prior_status, provider_name, workspace_id FROM connections WHERE id = $1{lock}"
    ))
    .bind(id)
    .fetch_optional(&mut *w.tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let status: String = get(&row, "status")?;
    Ok(Some(Before {
        status: ConnectionStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("connection status '{status}'")))?,
        prior_status: get(&row, "prior_status")?,
        provider_name: get(&row, "provider_name")?,
        workspace_id: get(&row, "workspace_id")?,
    }))
}

/// Writes the webhook deliveries of a transition of connection `id`.
async fn report(
    w: &mut WriteTx,
    event: WebhookEvent,
    id: &str,
    before: &Before,
    status: ConnectionStatus,
    error: Option<&str>,
) -> Result<(), StoreError> {
    let ev = ConnectionEvent {
        event,
        connection_id: id,
        provider: &before.provider_name,
        workspace_id: &before.workspace_id,
        status,
        error,
    };
    enqueue_in_tx(w, &ev).await
}

/// One stored connection. `*_enc` fields are vault envelopes.
#[derive(Debug, Clone)]
pub struct ConnectionRow {
    pub id: String,
    pub provider_id: String,
    pub provider_name: String,
    pub auth_type: AuthType,
    pub workspace_id: String,
    pub status: ConnectionStatus,
    pub scopes: Vec<String>,
    pub return_url: String,
    pub metadata: Option<serde_json::Value>,
    /// The non-secret values the provider's URL templates expand over.
    pub connection_config: Map<String, Value>,
    /// What a handshake in progress asked for (re-authorization), until its callback.
    pub handshake_config: Option<Map<String, Value>>,
    pub state_nonce: Option<String>,
    /// Unix microseconds.
    pub handshake_expires_at: Option<i64>,
    pub pkce_verifier_enc: Option<String>,
    pub oidc_nonce: Option<String>,
    pub credentials_enc: Option<String>,
    pub refresh_token_enc: Option<String>,
    /// Unix seconds of the access token's expiry.
    pub expires_at: Option<i64>,
    pub last_error: Option<String>,
    /// Unix seconds when the refresher should next look at it (None: nothing to refresh).
    pub next_refresh_at: Option<i64>,
    pub refresh_failures: i64,
    /// Unix microseconds of the last successful refresh.
    pub last_refreshed_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl ConnectionRow {
    /// A pending connection with nothing stored yet; set the rest with
    /// `..ConnectionRow::pending(…)`.
    pub fn pending(id: String, provider_id: String, provider_name: String, auth_type: AuthType) -> ConnectionRow {
        ConnectionRow {
            id,
            provider_id,
            provider_name,
            auth_type,
            workspace_id: String::new(),
            status: ConnectionStatus::Pending,
            scopes: Vec::new(),
            return_url: String::new(),
            metadata: None,
            connection_config: Map::new(),
            handshake_config: None,
            state_nonce: None,
            handshake_expires_at: None,
            pkce_verifier_enc: None,
            oidc_nonce: None,
            credentials_enc: None,
            refresh_token_enc: None,
            expires_at: None,
            last_error: None,
            next_refresh_at: None,
            refresh_failures: 0,
            last_refreshed_at: None,
            created_at: 0,
            updated_at: 0,
        }
    }
}

/// Filters of `GET /v1/connections`.
#[derive(Debug, Clone, Default)]
pub struct ConnectionFilter {
    pub workspace_id: Option<String>,
    pub provider_id: Option<String>,
    pub status: Option<ConnectionStatus>,
    /// Only connections of these workspaces (`None`: any).
    pub workspaces: Option<Vec<String>>,
    pub limit: i64,
}

/// A fresh handshake for a connection (new or re-authorized).
#[derive(Debug, Clone)]
pub struct Handshake {
    pub state_nonce: String,
    pub expires_at: i64,
    pub pkce_verifier_enc: Option<String>,
    pub oidc_nonce: Option<String>,
    pub scopes: Vec<String>,
    pub return_url: String,
    pub metadata: Option<serde_json::Value>,
    /// The connection configuration this handshake asked for.
    pub connection_config: Map<String, Value>,
}

/// What an activation stores.
#[derive(Debug, Clone)]
pub struct Activation {
    pub credentials_enc: String,
    pub refresh_token_enc: Option<String>,
    pub expires_at: Option<i64>,
    pub scopes: Option<Vec<String>>,
    /// When the refresher should renew these credentials (unix seconds).
    pub next_refresh_at: Option<i64>,
    /// The connection's configuration from now on.
    pub connection_config: Map<String, Value>,
}

pub(crate) const COLUMNS: &str =
    "id, provider_id, provider_name, auth_type, workspace_id, status, scopes, return_url, metadata, \
     state_nonce, handshake_expires_at, pkce_verifier_enc, oidc_nonce, credentials_enc, refresh_token_enc, \
     expires_at, last_error, next_refresh_at, refresh_failures, last_refreshed_at, created_at, updated_at, \
     connection_config, handshake_config";

pub(crate) fn from_row(row: &AnyRow) -> Result<ConnectionRow, StoreError> {
    let scopes: String = get(row, "scopes")?;
    let auth_type: String = get(row, "auth_type")?;
    let status: String = get(row, "status")?;
    let metadata: Option<String> = get(row, "metadata")?;
    let connection_config: String = get(row, "connection_config")?;
    let handshake_config: Option<String> = get(row, "handshake_config")?;
    let config_map = |raw: &str| {
        serde_json::from_str::<Map<String, Value>>(raw)
            .map_err(|e| StoreError::Corrupt(format!("connection configuration: {e}")))
    };
    Ok(ConnectionRow {
        id: get(row, "id")?,
        provider_id: get(row, "provider_id")?,
        provider_name: get(row, "provider_name")?,
        auth_type: AuthType::parse(&auth_type)
            .ok_or_else(|| StoreError::Corrupt(format!("connection auth_type '{auth_type}'")))?,
        workspace_id: get(row, "workspace_id")?,
        status: ConnectionStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("connection status '{status}'")))?,
        scopes: serde_json::from_str(&scopes).map_err(|e| StoreError::Corrupt(format!("connection scopes: {e}")))?,
        return_url: get(row, "return_url")?,
        metadata: metadata
            .map(|m| serde_json::from_str(&m))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("connection metadata: {e}")))?,
        state_nonce: get(row, "state_nonce")?,
        handshake_expires_at: get(row, "handshake_expires_at")?,
        pkce_verifier_enc: get(row, "pkce_verifier_enc")?,
        oidc_nonce: get(row, "oidc_nonce")?,
        credentials_enc: get(row, "credentials_enc")?,
        refresh_token_enc: get(row, "refresh_token_enc")?,
        expires_at: get(row, "expires_at")?,
        last_error: get(row, "last_error")?,
        next_refresh_at: get(row, "next_refresh_at")?,
        refresh_failures: get(row, "refresh_failures")?,
        last_refreshed_at: get(row, "last_refreshed_at")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
        connection_config: config_map(&connection_config)?,
        handshake_config: handshake_config.as_deref().map(config_map).transpose()?,
    })
}

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

impl Store {
    /// Inserts a new pending connection with its handshake and audit row.
    pub async fn insert_connection(&self, row: &ConnectionRow, audit: NewAudit) -> Result<(), StoreError> {
        let mut w = self.begin_write().await?;
        sqlx::query(&format!(
            "INSERT INTO connections ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24)"
        ))
        .bind(&row.id)
        .bind(&row.provider_id)
        .bind(&row.provider_name)
        .bind(row.auth_type.as_str())
        .bind(&row.workspace_id)
        .bind(row.status.as_str())
        .bind(json(&row.scopes))
        .bind(&row.return_url)
        .bind(row.metadata.as_ref().map(json))
        .bind(row.state_nonce.as_deref())
        .bind(row.handshake_expires_at)
        .bind(row.pkce_verifier_enc.as_deref())
        .bind(row.oidc_nonce.as_deref())
        .bind(row.credentials_enc.as_deref())
        .bind(row.refresh_token_enc.as_deref())
        .bind(row.expires_at)
        .bind(row.last_error.as_deref())
        .bind(row.next_refresh_at)
        .bind(row.refresh_failures)
        .bind(row.last_refreshed_at)
        .bind(row.created_at)
        .bind(row.updated_at)
        .bind(json(&row.connection_config))
        .bind(row.handshake_config.as_ref().map(json))
        .execute(&mut *w.tx)
        .await?;
        if row.status == ConnectionStatus::Active {
            // A grant that needs no user (client credentials) is active at once.
            let before = Before {
                status: ConnectionStatus::Pending,
                prior_status: None,
                provider_name: row.provider_name.clone(),
                workspace_id: row.workspace_id.clone(),
            };
            report(&mut w, WebhookEvent::ConnectionActivated, &row.id, &before, ConnectionStatus::Active, None).await?;
        }
        append_in_tx(&mut w, audit).await?;
        w.commit().await
    }

    /// Starts a new handshake on an existing connection (re-authorization keeps
    /// the id). An active connection stays active with its current credentials
    /// until the new ones arrive; any other becomes pending.
    pub async fn restart_handshake(&self, id: &str, h: &Handshake, audit: NewAudit) -> Result<(), StoreError> {
        let mut w = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE connections SET state_nonce = $1, handshake_expires_at = $2, pkce_verifier_enc = $3, oidc_nonce = $4,
                    scopes = $5, return_url = $6, metadata = $7, last_error = NULL, updated_at = $8,
                    handshake_config = $10,
                    connection_config = CASE WHEN status = 'active' THEN connection_config ELSE $10 END,
                    prior_status = CASE WHEN status IN ('active', 'pending') THEN prior_status ELSE status END,
                    status = CASE WHEN status = 'active' THEN 'active' ELSE 'pending' END
             WHERE id = $9",
        )
        .bind(&h.state_nonce)
        .bind(h.expires_at)
        .bind(h.pkce_verifier_enc.as_deref())
        .bind(h.oidc_nonce.as_deref())
        .bind(json(&h.scopes))
        .bind(&h.return_url)
        .bind(h.metadata.as_ref().map(json))
        .bind(now_micros())
        .bind(id)
        .bind(json(&h.connection_config))
        .execute(&mut *w.tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        append_in_tx(&mut w, audit).await?;
        w.commit().await
    }

    pub async fn connection_by_id(&self, id: &str) -> Result<Option<ConnectionRow>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM connections WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Consumes a single-use state: succeeds once, only while the handshake has
    /// not expired. Returns the connection as it was before consumption.
    pub async fn consume_state(&self, id: &str, state_nonce: &str) -> Result<Option<ConnectionRow>, StoreError> {
        let mut w = self.begin_write().await?;
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM connections WHERE id = $1 AND state_nonce = $2"))
            .bind(id)
            .bind(state_nonce)
            .fetch_optional(&mut *w.tx)
            .await?;
        let Some(row) = row.as_ref().map(from_row).transpose()? else {
            return Ok(None);
        };
        let done = sqlx::query(
            "UPDATE connections SET state_nonce = NULL, updated_at = $1
             WHERE id = $2 AND state_nonce = $3 AND handshake_expires_at >= $1",
        )
        .bind(now_micros())
        .bind(id)
        .bind(state_nonce)
        .execute(&mut *w.tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        w.commit().await?;
        Ok(Some(row))
    }

    /// Stores credentials and marks the connection active, clearing the handshake.
    /// With `state_nonce`, the state is consumed in the same statement (static
    /// capture): `Ok(false)` if it was already used or expired.
    pub async fn activate_connection(
        &self,
        id: &str,
        state_nonce: Option<&str>,
        a: &Activation,
        audit: NewAudit,
    ) -> Result<bool, StoreError> {
        let mut w = self.begin_write().await?;
        let Some(before) = before_change(&mut w, id).await? else { return Ok(false) };
        let now = now_micros();
        let mut sql = String::from(concat!(
            "UPDATE connections SET status = 'active', credentials_enc = $1, refresh_token_enc = $2,
                    expires_at = $3, scopes = COALESCE($4, scopes), last_error = NULL, updated_at = $5,
                    next_refresh_at = $8, refresh_failures = 0, lease_until = NULL, connection_config = $9, ",
            clear_handshake!(),
            " WHERE id = $6 AND status <> 'revoked'"
        ));
        if state_nonce.is_some() {
            sql.push_str(" AND state_nonce = $7 AND handshake_expires_at >= $5");
        } else {
            sql.push_str(" AND $7 IS NULL");
        }
        let q = sqlx::query(&sql)
            .bind(&a.credentials_enc)
            .bind(a.refresh_token_enc.as_deref())
            .bind(a.expires_at)
            .bind(a.scopes.as_ref().map(json))
            .bind(now)
            .bind(id)
            .bind(state_nonce)
            .bind(a.next_refresh_at)
            .bind(json(&a.connection_config));
        let done = q.execute(&mut *w.tx).await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        let attention = ConnectionStatus::AttentionRequired.as_str();
        let event = if before.status == ConnectionStatus::AttentionRequired
            || before.prior_status.as_deref() == Some(attention)
        {
            WebhookEvent::ConnectionRecovered
        } else {
            WebhookEvent::ConnectionActivated
        };
        report(&mut w, event, id, &before, ConnectionStatus::Active, None).await?;
        notify_in_tx(&mut w, Invalidation::Connection(id.to_owned())).await?;
        append_in_tx(&mut w, audit).await?;
        w.commit().await?;
        Ok(true)
    }

    /// Records a failed handshake. An active connection (being re-authorized)
    /// keeps its status and credentials; anything else becomes `failed`.
    pub async fn fail_connection(&self, id: &str, error: &str, audit: NewAudit) -> Result<(), StoreError> {
        let mut w = self.begin_write().await?;
        let before = before_change(&mut w, id).await?;
        let done = sqlx::query(concat!(
            "UPDATE connections SET status = CASE WHEN status = 'active' THEN 'active' ELSE 'failed' END,
                    last_error = $1, updated_at = $2, ",
            clear_handshake!(),
            " WHERE id = $3 AND status <> 'revoked'"
        ))
        .bind(error)
        .bind(now_micros())
        .bind(id)
        .execute(&mut *w.tx)
        .await?;
        // Reported once: an active connection (a failed re-consent) keeps its
        // status, and one already failed is not failed again.
        let changes = |b: &Before| !matches!(b.status, ConnectionStatus::Active | ConnectionStatus::Failed);
        if let Some(before) = before.filter(|b| changes(b) && done.rows_affected() == 1) {
            report(&mut w, WebhookEvent::ConnectionFailed, id, &before, ConnectionStatus::Failed, Some(error)).await?;
        }
        notify_in_tx(&mut w, Invalidation::Connection(id.to_owned())).await?;
        append_in_tx(&mut w, audit).await?;
        w.commit().await
    }

    /// Marks a pending connection whose handshake expired as failed (`expired`).
    pub async fn expire_pending(&self, id: &str, audit: NewAudit) -> Result<bool, StoreError> {
        let mut w = self.begin_write().await?;
        let Some(before) = before_change(&mut w, id).await? else { return Ok(false) };
        let now = now_micros();
        let done = sqlx::query(concat!(
            "UPDATE connections SET status = 'failed', last_error = 'expired', updated_at = $1, ",
            clear_handshake!(),
            // A consumed state (NULL) means a callback is exchanging the
            // code right now: it gets a grace of five minutes to finish.
            " WHERE id = $2 AND status = 'pending' AND handshake_expires_at < $1
                AND (state_nonce IS NOT NULL OR handshake_expires_at < $1 - 300000000)"
        ))
        .bind(now)
        .bind(id)
        .execute(&mut *w.tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        report(&mut w, WebhookEvent::ConnectionFailed, id, &before, ConnectionStatus::Failed, Some("expired")).await?;
        notify_in_tx(&mut w, Invalidation::Connection(id.to_owned())).await?;
        append_in_tx(&mut w, audit).await?;
        w.commit().await?;
        Ok(true)
    }

    /// Revokes a connection and wipes its credentials. Returns the row as it was
    /// (for calling the provider's revocation endpoint), `None` if already revoked.
    pub async fn revoke_connection(&self, id: &str, audit: NewAudit) -> Result<Option<ConnectionRow>, StoreError> {
        let mut w = self.begin_write().await?;
        let lock = if w.backend == Backend::Postgres { " FOR UPDATE" } else { "" };
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM connections WHERE id = $1{lock}"))
            .bind(id)
            .fetch_optional(&mut *w.tx)
            .await?;
        let Some(row) = row.as_ref().map(from_row).transpose()? else {
            return Err(StoreError::NotFound);
        };
        if row.status == ConnectionStatus::Revoked {
            return Ok(None);
        }
        sqlx::query(concat!(
            "UPDATE connections SET status = 'revoked', credentials_enc = NULL, refresh_token_enc = NULL,
                    expires_at = NULL, next_refresh_at = NULL, updated_at = $1, ",
            clear_handshake!(),
            " WHERE id = $2"
        ))
        .bind(now_micros())
        .bind(id)
        .execute(&mut *w.tx)
        .await?;
        let before = Before {
            status: row.status,
            prior_status: None,
            provider_name: row.provider_name.clone(),
            workspace_id: row.workspace_id.clone(),
        };
        report(&mut w, WebhookEvent::ConnectionRevoked, id, &before, ConnectionStatus::Revoked, None).await?;
        notify_in_tx(&mut w, Invalidation::Connection(id.to_owned())).await?;
        append_in_tx(&mut w, audit).await?;
        w.commit().await?;
        Ok(Some(row))
    }

    /// Up to `limit` pending connections whose handshake expired before `now` (unix microseconds).
    pub async fn expired_handshakes(&self, now: i64, limit: i64) -> Result<Vec<ConnectionRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM connections WHERE status = 'pending' AND handshake_expires_at < $1
             ORDER BY handshake_expires_at LIMIT {}",
            limit.clamp(1, 1000)
        ))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Connections matching the filter, newest first.
    pub async fn list_connections(&self, f: &ConnectionFilter) -> Result<Vec<ConnectionRow>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM connections WHERE 1 = 1");
        let mut binds: Vec<&str> = Vec::new();
        let status = f.status.map(|s| s.as_str().to_owned());
        for (col, v) in [("workspace_id", &f.workspace_id), ("provider_id", &f.provider_id), ("status", &status)] {
            if let Some(v) = v {
                binds.push(v);
                sql.push_str(&format!(" AND {col} = ${}", binds.len()));
            }
        }
        if let Some(ws) = &f.workspaces {
            if ws.is_empty() {
                return Ok(Vec::new());
            }
            let first = binds.len() + 1;
            binds.extend(ws.iter().map(String::as_str));
            let params: Vec<String> = (first..=binds.len()).map(|n| format!("${n}")).collect();
            sql.push_str(&format!(" AND workspace_id IN ({})", params.join(", ")));
        }
        sql.push_str(&format!(" ORDER BY created_at DESC, id LIMIT {}", f.limit.clamp(1, 1000)));
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = q.bind(b);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(from_row).collect()
    }
}
