//! Connect sessions (SPEC 13): stored by digest, read by digest.

use crate::audit::{append_in_tx, NewAudit};
use crate::{get, Store, StoreError};
use serde_json::{Map, Value};
use sqlx::any::AnyRow;

#[derive(Debug, Clone, PartialEq)]
pub struct ConnectSessionRow {
    pub id: String,
    /// Hex SHA-256 of the token.
    pub digest: String,
    pub workspace_id: String,
    /// Provider names; `None`: any.
    pub providers: Option<Vec<String>>,
    pub return_url: String,
    pub connection_config: Option<Map<String, Value>>,
    pub created_by: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

const COLUMNS: &str =
    "id, digest, workspace_id, providers, return_url, connection_config, created_by, created_at, expires_at";

fn from_row(row: &AnyRow) -> Result<ConnectSessionRow, StoreError> {
    let providers: Option<String> = get(row, "providers")?;
    let config: Option<String> = get(row, "connection_config")?;
    let corrupt = |e: serde_json::Error| StoreError::Corrupt(format!("connect session: {e}"));
    Ok(ConnectSessionRow {
        id: get(row, "id")?,
        digest: get(row, "digest")?,
        workspace_id: get(row, "workspace_id")?,
        providers: providers.map(|p| serde_json::from_str(&p).map_err(corrupt)).transpose()?,
        return_url: get(row, "return_url")?,
        connection_config: config.map(|c| serde_json::from_str(&c).map_err(corrupt)).transpose()?,
        created_by: get(row, "created_by")?,
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
    })
}

impl Store {
    pub async fn insert_connect_session(&self, row: &ConnectSessionRow, audit: NewAudit) -> Result<(), StoreError> {
        let mut w = self.begin_write().await?;
        sqlx::query(&format!("INSERT INTO connect_sessions ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"))
            .bind(&row.id)
            .bind(&row.digest)
            .bind(&row.workspace_id)
            .bind(row.providers.as_ref().map(json))
            .bind(&row.return_url)
            .bind(row.connection_config.as_ref().map(json))
            .bind(row.created_by.as_deref())
            .bind(row.created_at)
            .bind(row.expires_at)
            .execute(&mut *w.tx)
            .await?;
        append_in_tx(&mut w, audit).await?;
        w.commit().await
    }

    pub async fn connect_session_by_digest(&self, digest: &str) -> Result<Option<ConnectSessionRow>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM connect_sessions WHERE digest = $1"))
            .bind(digest)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Deletes sessions that expired before `before` (unix microseconds).
    pub async fn prune_connect_sessions(&self, before: i64) -> Result<u64, StoreError> {
        let mut w = self.begin_write().await?;
        let done =
            sqlx::query("DELETE FROM connect_sessions WHERE expires_at < $1").bind(before).execute(&mut *w.tx).await?;
        w.commit().await?;
        Ok(done.rows_affected())
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}
