//! Provider rows: the validated configuration as JSON plus the sealed secret.

use crate::audit::{append_in_tx, NewAudit};
use crate::invalidation::{notify_in_tx, Invalidation};
use crate::{get, name_taken_on_unique, now_micros, Store, StoreError};
use nexus_core::provider::{Discovery, ProviderConfig};
use nexus_core::AuthType;
use sqlx::any::AnyRow;

/// One stored provider. `client_secret_enc` is a vault envelope, never plaintext.
#[derive(Debug, Clone)]
pub struct ProviderRow {
    pub id: String,
    pub config: ProviderConfig,
    pub client_secret_enc: Option<String>,
    pub client_secret_fp: Option<String>,
    pub discovery: Option<Discovery>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Filters of `GET /v1/providers`.
#[derive(Debug, Clone, Default)]
pub struct ProviderFilter {
    pub auth_type: Option<AuthType>,
    pub category: Option<String>,
}

const COLUMNS: &str = "id, config, client_secret_enc, client_secret_fp, discovery, created_at, updated_at";

fn from_row(row: &AnyRow) -> Result<ProviderRow, StoreError> {
    let config: String = get(row, "config")?;
    let discovery: Option<String> = get(row, "discovery")?;
    Ok(ProviderRow {
        id: get(row, "id")?,
        config: serde_json::from_str(&config).map_err(|e| StoreError::Corrupt(format!("provider config: {e}")))?,
        client_secret_enc: get(row, "client_secret_enc")?,
        client_secret_fp: get(row, "client_secret_fp")?,
        discovery: discovery
            .map(|d| serde_json::from_str(&d))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("provider discovery: {e}")))?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

/// The provider `id`, read on `on` (the pool, or a transaction that must see it).
pub(crate) async fn provider_by_id_on<'e>(
    on: impl sqlx::Executor<'e, Database = sqlx::Any>,
    id: &str,
) -> Result<Option<ProviderRow>, StoreError> {
    let row =
        sqlx::query(&format!("SELECT {COLUMNS} FROM providers WHERE id = $1")).bind(id).fetch_optional(on).await?;
    row.as_ref().map(from_row).transpose()
}

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

impl Store {
    /// Replaces a provider's discovered endpoints (fetched again when old)
    /// if the provider is still as it was at `updated_at` (not edited
    /// meanwhile): true when it did. Nothing else of the provider changes.
    pub async fn set_provider_discovery(
        &self,
        id: &str,
        updated_at: i64,
        discovery: &Discovery,
    ) -> Result<bool, StoreError> {
        let mut w = self.begin_write().await?;
        let done = sqlx::query("UPDATE providers SET discovery = $1 WHERE id = $2 AND updated_at = $3")
            .bind(json(discovery))
            .bind(id)
            .bind(updated_at)
            .execute(&mut *w.tx)
            .await?
            .rows_affected()
            == 1;
        w.commit().await?;
        Ok(done)
    }

    /// Inserts a provider and its audit row atomically. A taken name is `Conflict`.
    pub async fn insert_provider(&self, row: &ProviderRow, audit: NewAudit) -> Result<(), StoreError> {
        let mut w = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO providers (id, name, auth_type, category, config, client_secret_enc, client_secret_fp, discovery, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&row.id)
        .bind(row.config.name.as_str())
        .bind(row.config.auth_type.as_str())
        .bind(row.config.category.as_deref())
        .bind(json(&row.config))
        .bind(row.client_secret_enc.as_deref())
        .bind(row.client_secret_fp.as_deref())
        .bind(row.discovery.as_ref().map(json))
        .bind(row.created_at)
        .bind(row.updated_at)
        .execute(&mut *w.tx)
        .await
        .map_err(|e| name_taken_on_unique(e, row.config.name.as_str()))?;
        append_in_tx(&mut w, audit).await?;
        w.commit().await
    }

    /// Replaces a provider's stored state (same id) and appends its audit row
    /// atomically. The write happens only if the row is still at
    /// `expected_updated_at` (optimistic concurrency): a concurrent change is
    /// `Conflict`, a vanished row `NotFound`.
    pub async fn update_provider(
        &self,
        row: &ProviderRow,
        expected_updated_at: i64,
        audit: NewAudit,
    ) -> Result<(), StoreError> {
        let mut w = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE providers SET name = $1, auth_type = $2, category = $3, config = $4, client_secret_enc = $5,
             client_secret_fp = $6, discovery = $7, updated_at = $8 WHERE id = $9 AND updated_at = $10",
        )
        .bind(row.config.name.as_str())
        .bind(row.config.auth_type.as_str())
        .bind(row.config.category.as_deref())
        .bind(json(&row.config))
        .bind(row.client_secret_enc.as_deref())
        .bind(row.client_secret_fp.as_deref())
        .bind(row.discovery.as_ref().map(json))
        .bind(row.updated_at)
        .bind(&row.id)
        .bind(expected_updated_at)
        .execute(&mut *w.tx)
        .await
        .map_err(|e| name_taken_on_unique(e, row.config.name.as_str()))?;
        if done.rows_affected() == 0 {
            let exists = sqlx::query("SELECT 1 AS one FROM providers WHERE id = $1")
                .bind(&row.id)
                .fetch_optional(&mut *w.tx)
                .await?
                .is_some();
            return Err(if exists {
                StoreError::Conflict("the provider was changed by another request; fetch it and retry".into())
            } else {
                StoreError::NotFound
            });
        }
        notify_in_tx(&mut w, Invalidation::Provider(row.id.clone())).await?;
        append_in_tx(&mut w, audit).await?;
        w.commit().await
    }

    /// Deletes a provider and its secret; returns how many live connections it orphaned.
    pub async fn delete_provider(&self, id: &str, audit: impl FnOnce(i64) -> NewAudit) -> Result<i64, StoreError> {
        let mut w = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM providers WHERE id = $1").bind(id).execute(&mut *w.tx).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        let row = sqlx::query("SELECT COUNT(*) AS n FROM connections WHERE provider_id = $1 AND status <> 'revoked'")
            .bind(id)
            .fetch_one(&mut *w.tx)
            .await?;
        let orphaned: i64 = get(&row, "n")?;
        // Nothing of theirs can be refreshed any more.
        sqlx::query("UPDATE connections SET next_refresh_at = NULL WHERE provider_id = $1")
            .bind(id)
            .execute(&mut *w.tx)
            .await?;
        notify_in_tx(&mut w, Invalidation::Provider(id.to_owned())).await?;
        append_in_tx(&mut w, audit(orphaned)).await?;
        w.commit().await?;
        Ok(orphaned)
    }

    pub async fn provider_by_id(&self, id: &str) -> Result<Option<ProviderRow>, StoreError> {
        provider_by_id_on(&self.pool, id).await
    }

    pub async fn provider_by_name(&self, name: &str) -> Result<Option<ProviderRow>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM providers WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// All providers matching the filter, ordered by name.
    pub async fn list_providers(&self, filter: &ProviderFilter) -> Result<Vec<ProviderRow>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM providers WHERE 1 = 1");
        let mut binds: Vec<String> = Vec::new();
        if let Some(t) = filter.auth_type {
            binds.push(t.as_str().to_owned());
            sql.push_str(&format!(" AND auth_type = ${}", binds.len()));
        }
        if let Some(c) = &filter.category {
            binds.push(c.clone());
            sql.push_str(&format!(" AND category = ${}", binds.len()));
        }
        sql.push_str(" ORDER BY name");
        let mut query = sqlx::query(&sql);
        for b in &binds {
            query = query.bind(b.as_str());
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(from_row).collect()
    }

    /// Counts stored providers (for tests and readiness details).
    pub async fn count_providers(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM providers").fetch_one(&self.pool).await?;
        get(&row, "n")
    }
}

/// The timestamp helper for callers building rows.
pub fn now() -> i64 {
    now_micros()
}
