//! Storage for Nexus: one SQL implementation that runs on embedded SQLite and on
//! PostgreSQL, chosen at run time from `DATABASE_URL`.
//!
//! Both backends share one logical schema (see `migrations/`), portable SQL with
//! `$n` placeholders, and these rules:
//! * every write that must be atomic with its audit row runs in one [`WriteTx`];
//! * audit rows are chained by `seq`: on PostgreSQL an advisory transaction lock
//!   serialises appenders across processes, on SQLite (one process by design) a
//!   process-wide writer lock does, and the `seq` primary key is the backstop
//!   that makes a forked chain impossible on either.

pub mod api_keys;
pub mod audit;
pub mod connect_sessions;
pub mod connections;
pub mod invalidation;
pub mod providers;
pub mod refresh;
pub mod sealed;
pub mod webhooks;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OwnedMutexGuard};

pub use api_keys::ApiKeyRow;
pub use audit::{ApiKeyRef, AuditEntry, AuditFilter, AuditPage, ChainHead, ChainReport, ExpectedHead, NewAudit};
pub use connect_sessions::ConnectSessionRow;
pub use connections::{Activation, ConnectionFilter, ConnectionRow, Handshake};
pub use invalidation::Invalidation;
pub use providers::{ProviderFilter, ProviderRow};
pub use refresh::{RefreshLock, RefreshOutcome};
pub use sealed::{SealedColumn, SEALED_COLUMNS};
pub use webhooks::{
    AttemptResult, AttemptRow, ClaimedDelivery, DeliveryFilter, DeliveryRow, DeliveryStatus, NextStep, WebhookRow,
};

/// Storage failures. `Conflict` and `NotFound` are for callers to map to 409/404;
/// everything else is an internal error whose message carries no secret.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Conflict(String),
    /// Another live provider has this name.
    #[error("a provider named '{0}' already exists")]
    NameTaken(String),
    #[error("not found")]
    NotFound,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    /// Whether the database is away (a lost or refused connection, an
    /// exhausted pool, a terminated backend, a busy SQLite file) rather than
    /// the request or the data at fault: worth a retry, nothing was written.
    pub fn is_unavailable(&self) -> bool {
        let StoreError::Database(e) = self else { return false };
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => true,
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default();
                // SQLite reports extended codes: the primary one is the low byte.
                let sqlite_primary = code.parse::<i64>().ok().map(|c| c & 0xff);
                // PostgreSQL: connection exceptions (08…), admin shutdown and
                // crash (57P0…); SQLite: busy (5) and locked (6).
                code.starts_with("08") || code.starts_with("57P0") || matches!(sqlite_primary, Some(5 | 6))
            }
            _ => false,
        }
    }
}

/// Which database the store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    url: Arc<str>,
    /// SQLite allows one writer; taking this first avoids busy/upgrade errors.
    writer: Option<Arc<Mutex<()>>>,
    /// Signs audit rows (v2); `None` writes v1 rows (tools, old data).
    audit_keys: Option<Arc<nexus_vault::AuditKeys>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend).finish()
    }
}

/// A write transaction (plus, on SQLite, the process's writer lock).
pub struct WriteTx {
    pub(crate) tx: sqlx::Transaction<'static, sqlx::Any>,
    _writer: Option<OwnedMutexGuard<()>>,
    pub(crate) backend: Backend,
    pub(crate) audit_keys: Option<Arc<nexus_vault::AuditKeys>>,
}

impl WriteTx {
    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }
}

impl Store {
    /// Connects to `url` (`sqlite://path` or `postgres://…`), creating a missing
    /// SQLite file, and applies the embedded migrations.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Store::connect_with_pool(url, 16).await
    }

    /// [`Store::connect`] with at most `pg_pool` connections to PostgreSQL
    /// (SQLite keeps its own small pool: one writer at a time anyway).
    pub async fn connect_with_pool(url: &str, pg_pool: u32) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(StoreError::Conflict("DATABASE_URL must start with sqlite:// or postgres://".into()));
        };
        let pool = match backend {
            Backend::Sqlite => {
                private_sqlite_files(url)?;
                let url = if url.contains('?') { url.to_owned() } else { format!("{url}?mode=rwc") };
                AnyPoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(Duration::from_secs(10))
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            for pragma in [
                                "PRAGMA journal_mode = WAL",
                                "PRAGMA busy_timeout = 10000",
                                "PRAGMA synchronous = NORMAL",
                                "PRAGMA foreign_keys = ON",
                            ] {
                                conn.execute(pragma).await?;
                            }
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await?
            }
            Backend::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(pg_pool.max(2))
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(url)
                    .await?
            }
        };
        match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await?,
        }
        let writer = (backend == Backend::Sqlite).then(|| Arc::new(Mutex::new(())));
        Ok(Store { pool, backend, url: Arc::from(url), writer, audit_keys: None })
    }

    /// This store, signing the audit rows it writes with `keys` (v2 rows).
    pub fn with_audit_keys(mut self, keys: Arc<nexus_vault::AuditKeys>) -> Store {
        self.audit_keys = Some(keys);
        self
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The raw pool, for tests and tools that inspect the database directly.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Checks the database answers (for `/ready`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Begins a write transaction.
    pub async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        let guard = match &self.writer {
            Some(m) => Some(m.clone().lock_owned().await),
            None => None,
        };
        let tx = self.pool.begin().await?;
        Ok(WriteTx { tx, _writer: guard, backend: self.backend, audit_keys: self.audit_keys.clone() })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The database file of a `sqlite:` URL (`None` for an in-memory one).
fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && !path.starts_with(":memory:")).then(|| std::path::PathBuf::from(path))
}

/// Makes the SQLite database (and its `-wal` and `-shm` files, which SQLite
/// creates with the database's permissions) readable by its owner only:
/// created `0600` when missing, tightened to `0600` when found wider. It
/// holds every sealed secret and the audit log.
fn private_sqlite_files(url: &str) -> Result<(), StoreError> {
    let Some(path) = sqlite_path(url) else { return Ok(()) };
    let io =
        |e: std::io::Error| StoreError::Conflict(format!("the SQLite file {} cannot be prepared: {e}", path.display()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
        }
        std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(&path).map_err(io)?;
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
            if let Ok(meta) = std::fs::metadata(&file) {
                if meta.permissions().mode() & 0o077 != 0 {
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = io;
    Ok(())
}

pub(crate) fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

pub(crate) fn get<T>(row: &AnyRow, col: &str) -> Result<T, StoreError>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    use sqlx::Row;
    row.try_get(col).map_err(StoreError::from)
}

/// Maps a unique-constraint violation on a provider's name to `NameTaken`.
pub(crate) fn name_taken_on_unique(e: sqlx::Error, name: &str) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::NameTaken(name.to_owned()),
        _ => StoreError::Database(e),
    }
}
