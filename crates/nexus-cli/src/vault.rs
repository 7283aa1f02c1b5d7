//! `nexus vault status | rewrap`: retiring an encryption key (SPEC 14).
//! Both read `DATABASE_URL` and `ENCRYPTION_KEYS` as `nexus serve` does and
//! run beside live servers.

use clap::{Args, Subcommand};
use nexus_vault::KeyRing;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Subcommand)]
pub enum VaultCommand {
    /// How many secrets each key seals, per table and column; exit 1 when
    /// some are sealed under a key ENCRYPTION_KEYS does not hold.
    Status(VaultArgs),
    /// Seal every secret again under the first key of ENCRYPTION_KEYS, in
    /// batches, online; a killed run is resumed by running it again.
    Rewrap(RewrapArgs),
}

#[derive(Args)]
pub struct VaultArgs {
    /// sqlite://… or postgres://… (default: sqlite under --data-dir).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Directory of the embedded database and the --dev keys.
    #[arg(long, env = "NEXUS_DATA_DIR", default_value = "./nexus-data")]
    data_dir: String,
    /// Comma-separated, the first sealing (as `nexus serve` has them).
    #[arg(long, env = "ENCRYPTION_KEYS", hide_env_values = true)]
    encryption_keys: Option<String>,
    /// One key (when ENCRYPTION_KEYS is unset; in dev mode the data dir's
    /// `encryption_key` file).
    #[arg(long, env = "ENCRYPTION_KEY", hide_env_values = true)]
    encryption_key: Option<String>,
}

#[derive(Args)]
pub struct RewrapArgs {
    #[command(flatten)]
    vault: VaultArgs,
    /// Rows read and rewritten per batch.
    #[arg(long, default_value_t = 200)]
    batch_size: i64,
    /// Milliseconds to wait between batches, to spare a busy database.
    #[arg(long, default_value_t = 0)]
    pause_ms: u64,
}

impl VaultArgs {
    fn keyring(&self) -> Result<KeyRing, String> {
        let dev = std::path::Path::new(&self.data_dir).join("encryption_key");
        let (var, list) = match (&self.encryption_keys, &self.encryption_key) {
            (Some(list), _) if !list.trim().is_empty() => ("ENCRYPTION_KEYS", list.clone()),
            (_, Some(one)) if !one.trim().is_empty() => ("ENCRYPTION_KEY", one.clone()),
            _ => match std::fs::read_to_string(&dev) {
                Ok(one) => ("ENCRYPTION_KEY", one),
                Err(_) => {
                    return Err(
                        "ENCRYPTION_KEYS is not set (nor ENCRYPTION_KEY, nor --data-dir's encryption_key)".into()
                    )
                }
            },
        };
        let keys: Vec<&str> = list.split(',').map(str::trim).filter(|k| !k.is_empty()).collect();
        KeyRing::from_base64(&keys).map_err(|e| format!("{var} is malformed ({e})"))
    }

    async fn store(&self) -> Result<nexus_store::Store, String> {
        let url = self
            .database_url
            .clone()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| format!("sqlite://{}/nexus.db", self.data_dir.trim_end_matches('/')));
        nexus_store::Store::connect(&url).await.map_err(|e| format!("DATABASE_URL could not be opened: {e}"))
    }
}

pub async fn run(command: VaultCommand) -> Result<ExitCode, String> {
    match command {
        VaultCommand::Status(args) => status(args).await,
        VaultCommand::Rewrap(args) => rewrap(args).await,
    }
}

async fn status(args: VaultArgs) -> Result<ExitCode, String> {
    let keyring = args.keyring()?;
    let store = args.store().await?;
    let status = nexus_server::vault::status(&store).await.map_err(|e| format!("could not read the secrets: {e}"))?;
    store.close().await;
    println!("sealing key: {} (ENCRYPTION_KEYS holds {})", keyring.current_key_id(), keyring.key_ids().join(", "));
    for (column, keys) in &status.columns {
        let counts: Vec<String> = keys.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        let counts = if counts.is_empty() { "none".to_owned() } else { counts.join("  ") };
        println!("{column:34} {counts}");
    }
    let by_key = status.by_key();
    let summary: Vec<String> = by_key
        .iter()
        .map(|(k, n)| {
            let note = if k == keyring.current_key_id() {
                " (sealing key)"
            } else if keyring.holds(k) {
                " (rewrap to retire it)"
            } else {
                " (MISSING from ENCRYPTION_KEYS)"
            };
            format!("{n} under {k}{note}")
        })
        .collect();
    println!("total: {}", if summary.is_empty() { "no secrets".to_owned() } else { summary.join(", ") });
    Ok(if status.missing(&keyring).is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn rewrap(args: RewrapArgs) -> Result<ExitCode, String> {
    let keyring = args.vault.keyring()?;
    let store = args.vault.store().await?;
    let pause = Duration::from_millis(args.pause_ms);
    let report = nexus_server::vault::rewrap(&store, &keyring, args.batch_size, pause, |column, so_far| {
        println!("{column}: {} rewrapped so far", so_far.rewrapped);
    })
    .await
    .map_err(|e| format!("rewrap stopped (run it again to resume): {e}"))?;
    store.close().await;
    println!(
        "rewrap done: {} sealed again under {}, {} already under it, {} rewritten by the server meanwhile",
        report.rewrapped,
        keyring.current_key_id(),
        report.current,
        report.changed_meanwhile
    );
    if report.failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for (column, id, why) in &report.failed {
        eprintln!("error: {column} of {id}: {why}");
    }
    Ok(ExitCode::FAILURE)
}
