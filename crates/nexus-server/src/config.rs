//! Server configuration: parsed once at start-up from raw strings (environment
//! variables or flags) into checked values, so a bad setting stops the process
//! with one line that names it instead of failing later on a request.

use ipnet::IpNet;
use nexus_core::SecretString;
use nexus_vault::{KeyRing, StateSigner};
use std::net::SocketAddr;
use std::sync::Arc;
use url::Url;

/// The largest request body accepted, in bytes (SPEC section 9: `413` above it).
pub const DEFAULT_BODY_LIMIT: usize = 256 * 1024;

/// Settings as given, before checking. Every field mirrors one variable of SPEC
/// section 2; `None` means unset.
#[derive(Default, Clone)]
pub struct RawConfig {
    pub api_key: Option<String>,
    pub encryption_key: Option<String>,
    pub encryption_keys: Option<String>,
    /// Comma list of base64 32-byte keys; the first signs audit rows, all verify.
    pub audit_keys: Option<String>,
    pub state_key: Option<String>,
    pub base_url: Option<String>,
    pub redirect_path: Option<String>,
    pub database_url: Option<String>,
    pub data_dir: Option<String>,
    pub bind: Option<String>,
    /// Where `GET /metrics` is served (off when unset; never the API's bind).
    pub metrics_bind: Option<String>,
    pub allowed_return_domains: Option<String>,
    pub trusted_proxies: Option<String>,
    pub allowed_cidrs: Option<String>,
    pub cors_allowed_origins: Option<String>,
    /// Seconds before expiry in which an access token is refreshed (default 300).
    pub refresh_window: Option<String>,
    /// Seconds between background refresher ticks (default 15).
    pub refresh_interval: Option<String>,
    /// Seconds a client may take to send a request head, pause while
    /// sending a body, or stay idle between requests (default 30).
    pub head_timeout: Option<String>,
    /// Seconds a proxy or the Bridge may reuse a token answer (default 30).
    pub token_max_age: Option<String>,
    /// Seconds a discovery document or key set is used before it is fetched again (default 86400).
    pub discovery_ttl: Option<String>,
    /// Seconds a webhook receiver has to answer one delivery attempt (default 10).
    pub webhook_timeout: Option<String>,
    /// Failed authentications an address may make at once before it is limited (default 10).
    pub auth_failure_limit: Option<String>,
    /// Origins that may embed the Connect UI in a frame (default: none).
    pub connect_frame_ancestors: Option<String>,
    /// Background refreshes in flight at once per process (default 8).
    pub refresh_concurrency: Option<String>,
    /// Background refreshes in flight at once per token-endpoint host (default 4).
    pub refresh_per_host: Option<String>,
}

impl std::fmt::Debug for RawConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawConfig")
            .field("base_url", &self.base_url)
            .field("database_url", &self.database_url.as_ref().map(|u| redact_url(u)))
            .field("bind", &self.bind)
            .finish_non_exhaustive()
    }
}

/// Checked configuration. Key material lives only in the key ring, signer and
/// the redacting API key.
#[derive(Clone)]
pub struct Config {
    pub api_key: SecretString,
    /// What `X-API-Key` is checked against (the key's digest, computed once).
    pub api_key_check: nexus_vault::SecretCheck,
    pub keyring: Arc<KeyRing>,
    /// Signs the audit chain (SPEC 6b).
    pub audit_keys: Arc<nexus_vault::AuditKeys>,
    pub state_signer: Arc<StateSigner>,
    pub base_url: Url,
    pub redirect_path: String,
    pub database_url: String,
    pub bind: SocketAddr,
    pub metrics_bind: Option<SocketAddr>,
    /// `None`: any host (with a warning at start-up).
    pub allowed_return_domains: Option<Vec<String>>,
    pub trusted_proxies: Vec<IpNet>,
    /// `None`: every caller may reach `/v1/*`.
    pub allowed_cidrs: Option<Vec<IpNet>>,
    pub cors_allowed_origins: Vec<String>,
    pub body_limit: usize,
    /// Seconds before expiry in which an access token is refreshed.
    pub refresh_window_secs: i64,
    /// Seconds between background refresher ticks.
    pub refresh_interval_secs: u64,
    /// How long a client may take to send a request head, or stay idle between requests.
    pub head_timeout: std::time::Duration,
    /// Seconds a proxy or the Bridge may reuse a token answer (`max_age`,
    /// SPEC 5b; never beyond the answer's `expires_at`).
    pub token_max_age_secs: i64,
    pub discovery_ttl_secs: i64,
    /// How long a webhook receiver has to answer one attempt (a slow one
    /// cannot hold a delivery slot longer).
    pub webhook_timeout: std::time::Duration,
    /// Failed authentications an address may make at once; then one a second.
    pub auth_failure_limit: u32,
    /// Origins that may embed the Connect UI (`frame-ancestors`); empty: none.
    pub connect_frame_ancestors: Vec<String>,
    /// Background refreshes in flight at once, per process and per token-endpoint host.
    pub refresh_concurrency: usize,
    pub refresh_per_host: usize,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("api_key", &self.api_key)
            .field("keyring", &self.keyring)
            .field("audit_keys", &self.audit_keys)
            .field("base_url", &self.base_url.as_str())
            .field("redirect_path", &self.redirect_path)
            .field("database_url", &redact_url(&self.database_url))
            .field("bind", &self.bind)
            .field("metrics_bind", &self.metrics_bind)
            .field("allowed_return_domains", &self.allowed_return_domains)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("allowed_cidrs", &self.allowed_cidrs)
            .field("cors_allowed_origins", &self.cors_allowed_origins)
            .field("refresh_window_secs", &self.refresh_window_secs)
            .field("refresh_interval_secs", &self.refresh_interval_secs)
            .field("head_timeout", &self.head_timeout)
            .field("token_max_age_secs", &self.token_max_age_secs)
            .field("discovery_ttl_secs", &self.discovery_ttl_secs)
            .field("webhook_timeout", &self.webhook_timeout)
            .field("auth_failure_limit", &self.auth_failure_limit)
            .field("connect_frame_ancestors", &self.connect_frame_ancestors)
            .field("refresh_concurrency", &self.refresh_concurrency)
            .field("refresh_per_host", &self.refresh_per_host)
            .finish()
    }
}

/// A setting that stops start-up. `Display` is the one line printed to the operator.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{variable} {problem}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

fn err(variable: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError { variable, problem: problem.into() }
}

const KEYGEN_HINT: &str = "generate one with `nexus keygen` (base64 of 32 random bytes)";

impl RawConfig {
    /// Checks every setting, reporting the first problem.
    pub fn build(self) -> Result<Config, ConfigError> {
        let api_key = match self.api_key.as_deref().map(str::trim) {
            None | Some("") => {
                return Err(err("API_KEY", format!("is not set: {KEYGEN_HINT}, or choose any long random string")))
            }
            Some(k) if k.len() < 16 => {
                return Err(err(
                    "API_KEY",
                    "is too short: use at least 16 characters (`nexus keygen` prints a good one)",
                ))
            }
            Some(k) => SecretString::new(k),
        };

        let (keys_var, keys): (&'static str, Vec<String>) = match (&self.encryption_keys, &self.encryption_key) {
            (Some(list), _) if !list.trim().is_empty() => {
                ("ENCRYPTION_KEYS", list.split(',').map(|k| k.trim().to_owned()).filter(|k| !k.is_empty()).collect())
            }
            (_, Some(one)) if !one.trim().is_empty() => ("ENCRYPTION_KEY", vec![one.trim().to_owned()]),
            _ => return Err(err("ENCRYPTION_KEY", format!("is not set: {KEYGEN_HINT}"))),
        };
        let keyring =
            KeyRing::from_base64(&keys).map_err(|e| err(keys_var, format!("is malformed ({e}): {KEYGEN_HINT}")))?;

        let state_signer = match self.state_key.as_deref().map(str::trim) {
            None | Some("") => return Err(err("STATE_KEY", format!("is not set: {KEYGEN_HINT}"))),
            Some(k) => StateSigner::from_base64(k)
                .map_err(|e| err("STATE_KEY", format!("is malformed ({e}): {KEYGEN_HINT}")))?,
        };

        let audit_keys = match self.audit_keys.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
            None => return Err(err("AUDIT_KEYS", format!("is not set: {KEYGEN_HINT}; it signs the audit log"))),
            Some(list) => {
                let keys: Vec<&str> = list.split(',').map(str::trim).filter(|k| !k.is_empty()).collect();
                nexus_vault::AuditKeys::from_base64(&keys)
                    .map_err(|e| err("AUDIT_KEYS", format!("is malformed ({e}): {KEYGEN_HINT}")))?
            }
        };

        let bind_raw = self.bind.unwrap_or_else(|| "127.0.0.1:8080".into());
        let bind: SocketAddr = bind_raw
            .trim()
            .parse()
            .map_err(|_| err("BIND", format!("'{bind_raw}' is not an address like 127.0.0.1:8080")))?;

        let metrics_bind = match self.metrics_bind.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
            None => None,
            Some(raw) => {
                let addr: SocketAddr = raw
                    .parse()
                    .map_err(|_| err("METRICS_BIND", format!("'{raw}' is not an address like 127.0.0.1:9090")))?;
                if addr.port() == bind.port() && addr.port() != 0 {
                    return Err(err(
                        "METRICS_BIND",
                        "must not share BIND's port: metrics are never served on the public listener",
                    ));
                }
                Some(addr)
            }
        };

        let base_raw = self.base_url.unwrap_or_else(|| format!("http://{bind}"));
        let base_url = Url::parse(base_raw.trim())
            .ok()
            .filter(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.query().is_none()
                    && u.fragment().is_none()
            })
            .ok_or_else(|| err("BASE_URL", format!("'{base_raw}' is not an http(s) URL without query or fragment")))?;

        let redirect_path = self.redirect_path.unwrap_or_else(|| "/auth/callback".into());
        if !redirect_path.starts_with('/') || redirect_path.contains(['?', '#', ' ']) {
            return Err(err("REDIRECT_PATH", format!("'{redirect_path}' must be a path starting with '/'")));
        }

        let database_url = match self.database_url.filter(|u| !u.trim().is_empty()) {
            Some(url) => url.trim().to_owned(),
            None => {
                let dir = self.data_dir.unwrap_or_else(|| "./nexus-data".into());
                format!("sqlite://{}/nexus.db", dir.trim_end_matches('/'))
            }
        };
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(err("DATABASE_URL", "must start with sqlite:// or postgres://"));
        }

        let allowed_return_domains = match self.allowed_return_domains.filter(|v| !v.trim().is_empty()) {
            None => None,
            Some(list) => Some(parse_domains(&list)?),
        };
        let trusted_proxies = match self.trusted_proxies.filter(|v| !v.trim().is_empty()) {
            None => Vec::new(),
            Some(list) => parse_cidrs("TRUSTED_PROXIES", &list)?,
        };
        let allowed_cidrs = match self.allowed_cidrs.filter(|v| !v.trim().is_empty()) {
            None => None,
            Some(list) => Some(parse_cidrs("ALLOWED_CIDRS", &list)?),
        };
        let cors_allowed_origins = match self.cors_allowed_origins.filter(|v| !v.trim().is_empty()) {
            None => Vec::new(),
            Some(list) => parse_origins(&list)?,
        };

        let refresh_window_secs = parse_secs("REFRESH_WINDOW", self.refresh_window.as_deref(), 300, 0, 86_400)?;
        let refresh_interval_secs =
            parse_secs("REFRESH_INTERVAL", self.refresh_interval.as_deref(), 15, 1, 3_600)? as u64;
        let token_max_age_secs = parse_secs("TOKEN_MAX_AGE", self.token_max_age.as_deref(), 30, 0, 3_600)?;
        let discovery_ttl_secs = parse_secs("DISCOVERY_TTL", self.discovery_ttl.as_deref(), 86_400, 60, 30 * 86_400)?;
        let webhook_timeout =
            std::time::Duration::from_secs(
                parse_secs("WEBHOOK_TIMEOUT", self.webhook_timeout.as_deref(), 10, 1, 25)? as u64
            );
        let auth_failure_limit =
            parse_count("AUTH_FAILURE_LIMIT", self.auth_failure_limit.as_deref(), 10, 1_000_000)? as u32;
        let connect_frame_ancestors = match self.connect_frame_ancestors.filter(|v| !v.trim().is_empty()) {
            None => Vec::new(),
            Some(list) => parse_origins(&list)
                .map_err(|e| ConfigError { variable: "CONNECT_FRAME_ANCESTORS", problem: e.problem })?,
        };
        let refresh_concurrency = parse_count("REFRESH_CONCURRENCY", self.refresh_concurrency.as_deref(), 8, 4_096)?;
        let refresh_per_host = parse_count("REFRESH_PER_HOST", self.refresh_per_host.as_deref(), 4, 1_024)?;
        let head_timeout =
            std::time::Duration::from_secs(
                parse_secs("HEAD_TIMEOUT", self.head_timeout.as_deref(), 30, 1, 3_600)? as u64
            );

        Ok(Config {
            api_key_check: nexus_vault::SecretCheck::new(api_key.expose().as_bytes()),
            api_key,
            keyring: Arc::new(keyring),
            audit_keys: Arc::new(audit_keys),
            state_signer: Arc::new(state_signer),
            base_url,
            redirect_path,
            database_url,
            bind,
            metrics_bind,
            allowed_return_domains,
            trusted_proxies,
            allowed_cidrs,
            cors_allowed_origins,
            body_limit: DEFAULT_BODY_LIMIT,
            refresh_window_secs,
            refresh_interval_secs,
            head_timeout,
            token_max_age_secs,
            discovery_ttl_secs,
            webhook_timeout,
            auth_failure_limit,
            connect_frame_ancestors,
            refresh_concurrency,
            refresh_per_host,
        })
    }
}

fn parse_secs(variable: &'static str, raw: Option<&str>, default: i64, min: i64, max: i64) -> Result<i64, ConfigError> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(default),
        Some(s) => s
            .trim_end_matches('s')
            .parse::<i64>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| err(variable, format!("'{s}' is not a number of seconds from {min} to {max}"))),
    }
}

fn parse_count(variable: &'static str, raw: Option<&str>, default: usize, max: usize) -> Result<usize, ConfigError> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(default),
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| err(variable, format!("'{s}' is not a number from 1 to {max}"))),
    }
}

/// Accepts `10.0.0.0/8` and bare addresses (`127.0.0.1` = `/32`).
fn parse_cidrs(variable: &'static str, list: &str) -> Result<Vec<IpNet>, ConfigError> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| err(variable, format!("'{s}' is not a CIDR such as 10.0.0.0/8 or an IP address")))
        })
        .collect()
}

fn parse_domains(list: &str) -> Result<Vec<String>, ConfigError> {
    list.split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .map(|s| {
            let host = s.strip_prefix("*.").unwrap_or(&s);
            let ok = !host.is_empty()
                && host.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
            if ok {
                Ok(s)
            } else {
                Err(err(
                    "ALLOWED_RETURN_DOMAINS",
                    format!("'{s}' is not a host name such as example.com or *.example.com"),
                ))
            }
        })
        .collect()
}

fn parse_origins(list: &str) -> Result<Vec<String>, ConfigError> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| match Url::parse(s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.path() == "/" => {
                Ok(u.origin().ascii_serialization())
            }
            _ => Err(err("CORS_ALLOWED_ORIGINS", format!("'{s}' is not an origin such as https://app.example.com"))),
        })
        .collect()
}

/// `postgres://user:pass@host/db` → `postgres://user:***@host/db`.
pub fn redact_url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        nexus_vault::generate_key()
    }

    fn full() -> RawConfig {
        RawConfig {
            api_key: Some("an-api-key-of-some-length".into()),
            encryption_key: Some(key()),
            audit_keys: Some(key()),
            state_key: Some(key()),
            ..RawConfig::default()
        }
    }

    #[test]
    fn defaults_apply() {
        let c = full().build().unwrap();
        assert_eq!(c.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.redirect_path, "/auth/callback");
        assert_eq!(c.database_url, "sqlite://./nexus-data/nexus.db");
        assert!(c.allowed_cidrs.is_none() && c.trusted_proxies.is_empty() && c.cors_allowed_origins.is_empty());
    }

    #[test]
    fn each_missing_or_bad_key_is_named() {
        let cases: Vec<(RawConfig, &str)> = vec![
            (RawConfig { api_key: None, ..full() }, "API_KEY"),
            (RawConfig { encryption_key: None, ..full() }, "ENCRYPTION_KEY"),
            (RawConfig { encryption_key: Some("short".into()), ..full() }, "ENCRYPTION_KEY"),
            (RawConfig { encryption_keys: Some(format!("{},bad", key())), ..full() }, "ENCRYPTION_KEYS"),
            (RawConfig { state_key: None, ..full() }, "STATE_KEY"),
            (RawConfig { audit_keys: None, ..full() }, "AUDIT_KEYS"),
            (RawConfig { audit_keys: Some(format!("{},short", key())), ..full() }, "AUDIT_KEYS"),
            (RawConfig { state_key: Some("!!!".into()), ..full() }, "STATE_KEY"),
            (RawConfig { bind: Some("nope".into()), ..full() }, "BIND"),
            (RawConfig { metrics_bind: Some("nope".into()), ..full() }, "METRICS_BIND"),
            (RawConfig { metrics_bind: Some("127.0.0.1:8080".into()), ..full() }, "METRICS_BIND"),
            (RawConfig { discovery_ttl: Some("5".into()), ..full() }, "DISCOVERY_TTL"),
            (RawConfig { webhook_timeout: Some("0".into()), ..full() }, "WEBHOOK_TIMEOUT"),
            (RawConfig { webhook_timeout: Some("26".into()), ..full() }, "WEBHOOK_TIMEOUT"),
            (RawConfig { auth_failure_limit: Some("0".into()), ..full() }, "AUTH_FAILURE_LIMIT"),
            (
                RawConfig { connect_frame_ancestors: Some("javascript:alert(1)".into()), ..full() },
                "CONNECT_FRAME_ANCESTORS",
            ),
            (RawConfig { base_url: Some("ftp://x".into()), ..full() }, "BASE_URL"),
            (RawConfig { allowed_cidrs: Some("10.0.0.0/99".into()), ..full() }, "ALLOWED_CIDRS"),
            (RawConfig { trusted_proxies: Some("proxy".into()), ..full() }, "TRUSTED_PROXIES"),
            (RawConfig { database_url: Some("mysql://x".into()), ..full() }, "DATABASE_URL"),
        ];
        for (raw, var) in cases {
            let e = raw.build().unwrap_err();
            assert_eq!(e.variable, var, "{e}");
            assert!(e.to_string().starts_with(var));
        }
    }

    #[test]
    fn cidr_lists_accept_bare_addresses() {
        let c = RawConfig { allowed_cidrs: Some("10.0.0.0/8, 127.0.0.1".into()), ..full() }.build().unwrap();
        let nets = c.allowed_cidrs.unwrap();
        assert!(nets[1].contains(&"127.0.0.1".parse::<std::net::IpAddr>().unwrap()));
    }

    #[test]
    fn debug_output_has_no_key_material() {
        let raw = full();
        let enc = raw.encryption_key.clone().unwrap();
        let c = raw.build().unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("an-api-key-of-some-length"));
        assert!(!shown.contains(&enc));
        assert_eq!(redact_url("postgres://u:secret@h/db"), "postgres://u:***@h/db");
    }
}
