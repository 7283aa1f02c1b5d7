//! The sealed columns, for key retirement (`nexus vault status | rewrap`):
//! read page by page, and each value swapped only if it is still the one
//! read (compare-and-swap), so a value the server rewrote meanwhile (a
//! refresh token rotated under the new key) is never overwritten.

use crate::{get, Store, StoreError};

/// A column holding vault envelopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedColumn {
    pub table: &'static str,
    pub column: &'static str,
}

/// Every column that holds vault envelopes.
pub const SEALED_COLUMNS: [SealedColumn; 5] = [
    SealedColumn { table: "providers", column: "client_secret_enc" },
    SealedColumn { table: "connections", column: "credentials_enc" },
    SealedColumn { table: "connections", column: "refresh_token_enc" },
    SealedColumn { table: "connections", column: "pkce_verifier_enc" },
    SealedColumn { table: "webhooks", column: "secret_enc" },
];

impl SealedColumn {
    pub fn label(&self) -> String {
        format!("{}.{}", self.table, self.column)
    }
}

impl Store {
    /// Up to `limit` (row id, envelope) of `col` with ids after `after`, by id.
    pub async fn sealed_page(
        &self,
        col: SealedColumn,
        after: &str,
        limit: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let sql = format!(
            "SELECT id, {c} AS sealed FROM {t} WHERE {c} IS NOT NULL AND id > $1 ORDER BY id LIMIT $2",
            c = col.column,
            t = col.table
        );
        let rows = sqlx::query(&sql).bind(after).bind(limit).fetch_all(self.pool()).await?;
        rows.iter().map(|r| Ok((get(r, "id")?, get(r, "sealed")?))).collect()
    }

    /// Replaces `old` with `new` in row `id` of `col` if it still holds
    /// `old`: true when it did. Nothing else of the row changes.
    pub async fn swap_sealed(&self, col: SealedColumn, id: &str, old: &str, new: &str) -> Result<bool, StoreError> {
        let sql = format!("UPDATE {t} SET {c} = $1 WHERE id = $2 AND {c} = $3", c = col.column, t = col.table);
        let mut w = self.begin_write().await?;
        let done = sqlx::query(&sql).bind(new).bind(id).bind(old).execute(&mut *w.tx).await?.rows_affected() == 1;
        w.commit().await?;
        Ok(done)
    }

    /// How many values of `col` each key id sealed (envelopes are
    /// `v1:<8 hex key id>:…`).
    pub async fn sealed_key_ids(&self, col: SealedColumn) -> Result<Vec<(String, i64)>, StoreError> {
        let sql = format!(
            "SELECT substr({c}, 4, 8) AS kid, COUNT(*) AS n FROM {t} WHERE {c} IS NOT NULL GROUP BY substr({c}, 4, 8) ORDER BY kid",
            c = col.column,
            t = col.table
        );
        let rows = sqlx::query(&sql).fetch_all(self.pool()).await?;
        rows.iter().map(|r| Ok((get(r, "kid")?, get(r, "n")?))).collect()
    }

    /// The envelope row `id` of `col` holds now.
    pub async fn sealed_value(&self, col: SealedColumn, id: &str) -> Result<Option<String>, StoreError> {
        let sql = format!("SELECT {c} AS sealed FROM {t} WHERE id = $1", c = col.column, t = col.table);
        let row = sqlx::query(&sql).bind(id).fetch_optional(self.pool()).await?;
        Ok(match row {
            Some(r) => get(&r, "sealed")?,
            None => None,
        })
    }
}
