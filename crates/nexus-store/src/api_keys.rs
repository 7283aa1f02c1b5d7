//! API keys with roles (SPEC 13): stored as digests, looked up by digest,
//! revoked by stamping `revoked_at` (the row stays for the audit log's sake).

use crate::audit::{append_in_tx, NewAudit};
use crate::{get, Store, StoreError};
use sqlx::any::AnyRow;

/// One stored key (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRow {
    pub id: String,
    pub name: String,
    /// `admin`, `agent` or `connect`.
    pub role: String,
    /// `None`: every workspace.
    pub workspaces: Option<Vec<String>>,
    /// Hex SHA-256 of the key.
    pub digest: String,
    pub prefix: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

const COLUMNS: &str = "id, name, role, workspaces, digest, prefix, created_at, expires_at, revoked_at";

fn from_row(row: &AnyRow) -> Result<ApiKeyRow, StoreError> {
    let workspaces: Option<String> = get(row, "workspaces")?;
    Ok(ApiKeyRow {
        id: get(row, "id")?,
        name: get(row, "name")?,
        role: get(row, "role")?,
        workspaces: workspaces
            .map(|w| serde_json::from_str(&w).map_err(|e| StoreError::Corrupt(format!("api key workspaces: {e}"))))
            .transpose()?,
        digest: get(row, "digest")?,
        prefix: get(row, "prefix")?,
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
        revoked_at: get(row, "revoked_at")?,
    })
}

impl Store {
    pub async fn insert_api_key(&self, row: &ApiKeyRow, audit: NewAudit) -> Result<(), StoreError> {
        let mut w = self.begin_write().await?;
        sqlx::query(&format!("INSERT INTO api_keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"))
            .bind(&row.id)
            .bind(&row.name)
            .bind(&row.role)
            .bind(row.workspaces.as_ref().map(|w| serde_json::to_string(w).unwrap_or_else(|_| "[]".into())))
            .bind(&row.digest)
            .bind(&row.prefix)
            .bind(row.created_at)
            .bind(row.expires_at)
            .bind(row.revoked_at)
            .execute(&mut *w.tx)
            .await?;
        append_in_tx(&mut w, audit).await?;
        w.commit().await
    }

    /// The key with this digest, revoked or not.
    pub async fn api_key_by_digest(&self, digest: &str) -> Result<Option<ApiKeyRow>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM api_keys WHERE digest = $1"))
            .bind(digest)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    pub async fn api_key_by_id(&self, id: &str) -> Result<Option<ApiKeyRow>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Every key, oldest first.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRow>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM api_keys ORDER BY created_at, id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// Revokes key `id` at `now`; `false` when there is no such key or it
    /// was already revoked. (Replicas trust what they read of a key for at
    /// most a second, so no notification is needed.)
    pub async fn revoke_api_key(&self, id: &str, now: i64, audit: NewAudit) -> Result<bool, StoreError> {
        let mut w = self.begin_write().await?;
        let done = sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(id)
            .execute(&mut *w.tx)
            .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        // The Connect sessions it started end with it.
        sqlx::query("UPDATE connect_sessions SET expires_at = $1 WHERE created_by = $2 AND expires_at > $1")
            .bind(now)
            .bind(id)
            .execute(&mut *w.tx)
            .await?;
        append_in_tx(&mut w, audit).await?;
        w.commit().await?;
        Ok(true)
    }
}
