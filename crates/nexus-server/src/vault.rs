//! Key retirement (SPEC 14): which key seals each secret (`nexus vault
//! status`), and every secret sealed again under the first key of
//! `ENCRYPTION_KEYS` (`nexus vault rewrap`), online beside running servers.
//!
//! A rewrap reads each sealed column page by page, opens each value that
//! another key sealed (bound to the same row and purpose as when it was
//! sealed), seals it under the current key and swaps it in only if the row
//! still holds what was read: a value the server rewrote meanwhile (a
//! rotated refresh token, already under the current key) is left alone. It
//! keeps no state, so a killed run is resumed by running it again, and a
//! second run finds nothing to do.

use crate::services::connections::context;
use crate::services::providers::secret_context;
use nexus_store::{SealedColumn, Store, StoreError, SEALED_COLUMNS};
use nexus_vault::KeyRing;
use std::collections::BTreeMap;
use std::time::Duration;

/// The key id of an envelope (`v1:<key id>:…`).
pub fn key_id(envelope: &str) -> &str {
    envelope.split(':').nth(1).unwrap_or("")
}

/// The contexts a value of `col` in row `id` may have been sealed under.
fn contexts(col: SealedColumn, id: &str) -> Vec<String> {
    match col.column {
        "client_secret_enc" => vec![secret_context(id)],
        "credentials_enc" => vec![context(id, "credentials")],
        "pkce_verifier_enc" => vec![context(id, "pkce_verifier")],
        "secret_enc" => vec![crate::services::webhooks::secret_context(id)],
        // A refresh token, or what a grant keeps there: its client, or a
        // service account's key.
        _ => ["refresh_token", "client_credentials", "service_account"].iter().map(|f| context(id, f)).collect(),
    }
}

/// How many secrets each key seals, per column.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub columns: Vec<(String, BTreeMap<String, u64>)>,
}

impl Status {
    /// Secrets per key id over every column.
    pub fn by_key(&self) -> BTreeMap<String, u64> {
        let mut all = BTreeMap::new();
        for (_, keys) in &self.columns {
            for (k, n) in keys {
                *all.entry(k.clone()).or_insert(0) += n;
            }
        }
        all
    }

    /// Key ids sealing secrets that `keyring` cannot open, with their counts.
    pub fn missing(&self, keyring: &KeyRing) -> BTreeMap<String, u64> {
        self.by_key().into_iter().filter(|(k, _)| !keyring.holds(k)).collect()
    }
}

/// Counts the secrets of every sealed column by key id.
pub async fn status(store: &Store) -> Result<Status, StoreError> {
    let mut status = Status::default();
    for col in SEALED_COLUMNS {
        let keys = store.sealed_key_ids(col).await?.into_iter().map(|(k, n)| (k, n.max(0) as u64)).collect();
        status.columns.push((col.label(), keys));
    }
    Ok(status)
}

/// What a rewrap did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Sealed again under the current key.
    pub rewrapped: u64,
    /// Already under the current key.
    pub current: u64,
    /// Rewritten by the server while this ran (left as the server wrote it).
    pub changed_meanwhile: u64,
    /// Values that would not open: (column, row id, why). The key that
    /// sealed them must stay.
    pub failed: Vec<(String, String, String)>,
}

/// Seals every secret not under `keyring`'s current key again, `batch` rows
/// at a time with `pause` between batches; `progress` hears of each batch
/// (column, rows done in it so far).
pub async fn rewrap(
    store: &Store,
    keyring: &KeyRing,
    batch: i64,
    pause: Duration,
    mut progress: impl FnMut(&str, &Report),
) -> Result<Report, StoreError> {
    let mut report = Report::default();
    for col in SEALED_COLUMNS {
        let mut after = String::new();
        loop {
            let page = store.sealed_page(col, &after, batch.max(1)).await?;
            for (id, sealed) in &page {
                if !keyring.needs_reseal(sealed) {
                    report.current += 1;
                    continue;
                }
                let opened =
                    contexts(col, id).into_iter().find_map(|ctx| keyring.open(&ctx, sealed).ok().map(|p| (ctx, p)));
                let Some((ctx, plain)) = opened else {
                    let why = match keyring.holds(key_id(sealed)) {
                        true => "does not open (damaged, or sealed for another row)".to_owned(),
                        false => format!("sealed under key {}, which ENCRYPTION_KEYS does not hold", key_id(sealed)),
                    };
                    report.failed.push((col.label(), id.clone(), why));
                    continue;
                };
                let fresh = keyring.seal(&ctx, &plain);
                if store.swap_sealed(col, id, sealed, &fresh).await? {
                    report.rewrapped += 1;
                } else {
                    report.changed_meanwhile += 1;
                }
            }
            progress(&col.label(), &report);
            match page.last() {
                Some((id, _)) if page.len() as i64 == batch.max(1) => after = id.clone(),
                _ => break,
            }
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
    }
    Ok(report)
}
