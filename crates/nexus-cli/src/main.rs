//! The `nexus` binary: thin clap commands that wire the crates together.

mod dev;
mod keys;
mod providers;
mod sidecar;
mod vault;

use clap::{Args, Parser, Subcommand};
use nexus_server::{Application, RawConfig};
use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "nexus", version, about = "Credential broker for software agents")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Gateway and Broker (the whole API) in one process.
    Serve(Box<ServeArgs>),
    /// Print fresh base64 32-byte keys for ENCRYPTION_KEY, STATE_KEY and API_KEY.
    Keygen,
    /// Local signing proxy for agents: http://127.0.0.1:PORT/{connection_id}/{path}.
    Proxy(ProxyArgs),
    /// Security-as-Code: plan, apply and export providers from a YAML manifest.
    Providers {
        #[command(subcommand)]
        command: providers::ProvidersCommand,
    },
    /// Audit-log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// API keys with roles and workspaces: create, list, revoke (through the server).
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Encryption keys: which key seals what, and retiring one (rewrap).
    Vault {
        #[command(subcommand)]
        command: vault::VaultCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the hash chain; exit 1 and name the first broken row if it does not verify.
    Verify(VerifyArgs),
}

#[derive(Args)]
struct VerifyArgs {
    #[command(flatten)]
    db: DbArgs,
    /// The audit keys (as `nexus serve` has them; under --data-dir's
    /// `audit_key` file in dev mode when unset).
    #[arg(long, env = "AUDIT_KEYS", hide_env_values = true)]
    audit_keys: Option<String>,
    /// A head published earlier (`GET /v1/audit/head`, or the log's
    /// "audit chain head" line) that the chain must still contain: rows cut
    /// from the end are found only this way.
    #[arg(long, value_name = "SEQ:HASH")]
    expect_head: Option<nexus_store::ExpectedHead>,
}

#[derive(Args)]
struct ProxyArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: std::net::SocketAddr,
    /// The Nexus Gateway's URL.
    #[arg(long, env = "NEXUS_URL", default_value = "http://127.0.0.1:8080")]
    gateway: String,
    /// The Gateway's API key (prefer the environment variable).
    #[arg(long, env = "API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Worker threads. One (the default) runs everything on a single thread,
    /// like an nginx worker: the lowest added latency, and ample for one agent.
    #[arg(long, env = "NEXUS_PROXY_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
    /// Agent connections served at once; more are answered 503 and closed.
    #[arg(long, env = "NEXUS_PROXY_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: u32,
    /// Host names the proxy answers to besides IP addresses and localhost
    /// (comma-separated or repeated); anything else is refused, so a web page
    /// cannot reach the proxy by pointing a name of its own at it.
    #[arg(long = "allow-host", env = "NEXUS_PROXY_ALLOWED_HOSTS", value_delimiter = ',')]
    allow_hosts: Vec<String>,
    /// Browser origins allowed to call the proxy (default: none; requests with
    /// an Origin or a cross-site Sec-Fetch-Site are refused).
    #[arg(long = "allow-origin", env = "NEXUS_PROXY_ALLOWED_ORIGINS", value_delimiter = ',')]
    allow_origins: Vec<String>,
    /// Where GET /metrics (Prometheus) is served; off when unset, never on --listen.
    #[arg(long, env = "NEXUS_PROXY_METRICS_BIND")]
    metrics_bind: Option<std::net::SocketAddr>,
}

#[derive(Args)]
struct DbArgs {
    /// sqlite://… or postgres://… (default: sqlite under --data-dir).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Directory for the embedded database and --dev keys.
    #[arg(long, env = "NEXUS_DATA_DIR", default_value = "./nexus-data")]
    data_dir: String,
}

#[derive(Args)]
struct ServeArgs {
    /// Create missing keys in the data dir and print the API key (local use only).
    #[arg(long)]
    dev: bool,
    #[arg(long, env = "API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    #[arg(long, env = "ENCRYPTION_KEY", hide_env_values = true)]
    encryption_key: Option<String>,
    /// Comma-separated; the first encrypts, all decrypt (key rotation).
    #[arg(long, env = "ENCRYPTION_KEYS", hide_env_values = true)]
    encryption_keys: Option<String>,
    /// Comma-separated; the first signs audit rows, all verify.
    #[arg(long, env = "AUDIT_KEYS", hide_env_values = true)]
    audit_keys: Option<String>,
    #[arg(long, env = "STATE_KEY", hide_env_values = true)]
    state_key: Option<String>,
    #[arg(long, env = "BASE_URL")]
    base_url: Option<String>,
    #[arg(long, env = "REDIRECT_PATH")]
    redirect_path: Option<String>,
    #[command(flatten)]
    db: DbArgs,
    /// Listen address, default 127.0.0.1:8080.
    #[arg(long, env = "BIND")]
    bind: Option<String>,
    /// Where GET /metrics (Prometheus) is served; off when unset, and never on BIND.
    #[arg(long, env = "METRICS_BIND")]
    metrics_bind: Option<String>,
    #[arg(long, env = "ALLOWED_RETURN_DOMAINS")]
    allowed_return_domains: Option<String>,
    #[arg(long, env = "TRUSTED_PROXIES")]
    trusted_proxies: Option<String>,
    #[arg(long, env = "ALLOWED_CIDRS")]
    allowed_cidrs: Option<String>,
    #[arg(long, env = "CORS_ALLOWED_ORIGINS")]
    cors_allowed_origins: Option<String>,
    /// Seconds before expiry in which access tokens are refreshed (default 300).
    #[arg(long, env = "REFRESH_WINDOW")]
    refresh_window: Option<String>,
    /// Seconds between background refresher ticks (default 15).
    #[arg(long, env = "REFRESH_INTERVAL")]
    refresh_interval: Option<String>,
    /// Seconds a client may take to send a request head, or stay idle between requests (default 30).
    #[arg(long, env = "HEAD_TIMEOUT")]
    head_timeout: Option<String>,
    /// Seconds a proxy or the Bridge may reuse a token answer (default 30).
    #[arg(long, env = "TOKEN_MAX_AGE")]
    token_max_age: Option<String>,
    /// Seconds a discovery document or key set is used before it is fetched again (default 86400).
    #[arg(long, env = "DISCOVERY_TTL")]
    discovery_ttl: Option<String>,
    /// Seconds (1–25) a webhook receiver has to answer one delivery attempt (default 10).
    #[arg(long, env = "WEBHOOK_TIMEOUT")]
    webhook_timeout: Option<String>,
    /// Failed authentications an address may make at once before it is limited (default 10).
    #[arg(long, env = "AUTH_FAILURE_LIMIT")]
    auth_failure_limit: Option<String>,
    /// Origins that may embed the Connect UI in a frame (comma list; default none).
    #[arg(long, env = "CONNECT_FRAME_ANCESTORS")]
    connect_frame_ancestors: Option<String>,
    /// Background refreshes in flight at once (default 8).
    #[arg(long, env = "REFRESH_CONCURRENCY")]
    refresh_concurrency: Option<String>,
    /// Background refreshes in flight at once per token-endpoint host (default 4).
    #[arg(long, env = "REFRESH_PER_HOST")]
    refresh_per_host: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Keygen => {
            println!("ENCRYPTION_KEY={}", nexus_vault::generate_key());
            println!("STATE_KEY={}", nexus_vault::generate_key());
            println!("AUDIT_KEYS={}", nexus_vault::generate_key());
            println!("API_KEY={}", nexus_vault::generate_key());
            ExitCode::SUCCESS
        }
        Command::Serve(args) => run(runtime(None), serve(*args)),
        Command::Audit { command: AuditCommand::Verify(args) } => run(runtime(None), verify(args)),
        Command::Providers { command } => run(runtime(None), providers::run(command)),
        Command::Vault { command } => run(runtime(None), vault::run(command)),
        Command::Keys { command } => run(runtime(None), keys::run(command)),
        Command::Proxy(args) => run(runtime(Some(args.threads)), async move {
            let api_key = args
                .api_key
                .filter(|k| !k.is_empty())
                .ok_or("API_KEY is not set: the proxy needs the Gateway's API key")?;
            let mut admission = nexus_bridge::relay::Admission::default();
            for host in args.allow_hosts.iter().filter(|h| !h.trim().is_empty()) {
                admission = admission.allow_host(host);
            }
            for origin in args.allow_origins.iter().filter(|o| !o.trim().is_empty()) {
                admission = admission.allow_origin(origin);
            }
            if args.metrics_bind.is_some_and(|m| m.port() != 0 && m.port() == args.listen.port()) {
                return Err("--metrics-bind must not share --listen's port".into());
            }
            let options = sidecar::Options {
                admission,
                max_connections: args.max_connections as usize,
                metrics_bind: args.metrics_bind,
            };
            sidecar::serve(args.listen, args.gateway, api_key, options).await?;
            Ok(ExitCode::SUCCESS)
        }),
    }
}

/// A multi-threaded runtime (one worker per core), or one with `threads` workers;
/// a single worker is a current-thread runtime (no cross-thread wake-ups).
fn runtime(threads: Option<u16>) -> std::io::Result<tokio::runtime::Runtime> {
    match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread().worker_threads(n.into()).enable_all().build(),
        None => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    }
}

fn run(
    runtime: std::io::Result<tokio::runtime::Runtime>,
    fut: impl std::future::Future<Output = Result<ExitCode, String>>,
) -> ExitCode {
    init_tracing();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fut) {
        Ok(code) => code,
        Err(line) => {
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

async fn serve(args: ServeArgs) -> Result<ExitCode, String> {
    // Before the port opens: a SIGTERM from then on stops gracefully.
    let shutdown = nexus_server::shutdown_signal();
    let mut raw = RawConfig {
        api_key: args.api_key,
        encryption_key: args.encryption_key,
        encryption_keys: args.encryption_keys,
        audit_keys: args.audit_keys,
        state_key: args.state_key,
        base_url: args.base_url,
        redirect_path: args.redirect_path,
        database_url: args.db.database_url,
        data_dir: Some(args.db.data_dir.clone()),
        bind: args.bind,
        metrics_bind: args.metrics_bind,
        allowed_return_domains: args.allowed_return_domains,
        trusted_proxies: args.trusted_proxies,
        allowed_cidrs: args.allowed_cidrs,
        cors_allowed_origins: args.cors_allowed_origins,
        refresh_window: args.refresh_window,
        refresh_interval: args.refresh_interval,
        head_timeout: args.head_timeout,
        token_max_age: args.token_max_age,
        discovery_ttl: args.discovery_ttl,
        webhook_timeout: args.webhook_timeout,
        auth_failure_limit: args.auth_failure_limit,
        connect_frame_ancestors: args.connect_frame_ancestors,
        refresh_concurrency: args.refresh_concurrency,
        refresh_per_host: args.refresh_per_host,
    };
    let dev_keys = if args.dev { Some(dev::prepare(&args.db.data_dir, &mut raw)?) } else { None };
    let config = raw.build().map_err(|e| e.to_string())?;
    let app = Application::build(config).await.map_err(|e| e.to_string())?;
    let addr = app.local_addr();
    let base_url = app.state().config.base_url.to_string();
    tracing::info!(%addr, base_url = %base_url, backend = ?app.state().store.backend(), "nexus is serving");
    if let Some(dev) = dev_keys {
        dev::announce(&dev, &base_url, &app.state().config.api_key);
    }
    app.run_until_stopped(shutdown).await.map_err(|e| format!("server failed: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

async fn verify(args: VerifyArgs) -> Result<ExitCode, String> {
    let VerifyArgs { db, audit_keys, expect_head } = args;
    let dev_key = std::path::Path::new(&db.data_dir).join("audit_key");
    let audit_keys = match audit_keys.filter(|k| !k.trim().is_empty()) {
        Some(keys) => Some(keys),
        None => std::fs::read_to_string(&dev_key).ok().map(|k| k.trim().to_owned()),
    };
    let keys = match audit_keys {
        Some(list) => {
            let list: Vec<&str> = list.split(',').map(str::trim).filter(|k| !k.is_empty()).collect();
            Some(nexus_vault::AuditKeys::from_base64(&list).map_err(|e| format!("AUDIT_KEYS is malformed ({e})"))?)
        }
        None => None,
    };
    let url = db.database_url.unwrap_or_else(|| format!("sqlite://{}/nexus.db", db.data_dir.trim_end_matches('/')));
    let store =
        nexus_store::Store::connect(&url).await.map_err(|e| format!("DATABASE_URL could not be opened: {e}"))?;
    let report = store
        .verify_audit_chain(keys.as_ref(), expect_head.as_ref())
        .await
        .map_err(|e| format!("could not read the audit log: {e}"))?;
    store.close().await;
    match report.first_broken {
        None => {
            let head = match &expect_head {
                Some(h) => format!(", reaching the expected head {}:{}", h.seq, h.hash),
                None => String::new(),
            };
            println!("audit chain OK: {} rows verified{head}", report.rows_checked);
            Ok(ExitCode::SUCCESS)
        }
        Some((seq, why)) => {
            println!("audit chain BROKEN at row {seq}: {why} ({} rows before it verified)", report.rows_checked);
            Ok(ExitCode::FAILURE)
        }
    }
}
