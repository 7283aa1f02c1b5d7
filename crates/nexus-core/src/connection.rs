//! Connections: one user's credentials for one provider. This module holds the
//! rules that need no IO: the status machine, `return_url` checking and scope
//! narrowing (SPEC section 4).

use serde::{Deserialize, Serialize};
use std::fmt;
use url::{Host, Url};

/// `pending → active | failed`, `active → attention_required | revoked`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ConnectionStatus {
    Pending,
    Active,
    Failed,
    AttentionRequired,
    Revoked,
}

impl ConnectionStatus {
    pub const ALL: [ConnectionStatus; 5] = [
        ConnectionStatus::Pending,
        ConnectionStatus::Active,
        ConnectionStatus::Failed,
        ConnectionStatus::AttentionRequired,
        ConnectionStatus::Revoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionStatus::Pending => "pending",
            ConnectionStatus::Active => "active",
            ConnectionStatus::Failed => "failed",
            ConnectionStatus::AttentionRequired => "attention_required",
            ConnectionStatus::Revoked => "revoked",
        }
    }

    pub fn parse(raw: &str) -> Option<ConnectionStatus> {
        ConnectionStatus::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

impl fmt::Display for ConnectionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long a pending connection (and its `state`) stays usable.
pub const PENDING_TTL_SECS: i64 = 600;

/// Checks a `return_url`: http(s), a host, no userinfo, and (when an allowlist
/// is configured) a host that is listed exactly or matches a `*.suffix` entry.
pub fn parse_return_url(raw: &str, allowed: Option<&[String]>) -> Result<Url, String> {
    if raw.len() > 2048 {
        return Err("must be at most 2048 bytes".into());
    }
    let url = Url::parse(raw.trim()).map_err(|_| "must be an absolute http(s) URL".to_owned())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must use http or https".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain user information (user@host)".into());
    }
    let host = match url.host() {
        Some(Host::Domain(d)) => d.to_ascii_lowercase(),
        Some(Host::Ipv4(ip)) => ip.to_string(),
        Some(Host::Ipv6(ip)) => format!("[{ip}]"),
        None => return Err("must have a host".into()),
    };
    if let Some(allowed) = allowed {
        if !allowed.iter().any(|entry| host_matches(&host, entry)) {
            return Err(format!("host '{host}' is not in ALLOWED_RETURN_DOMAINS"));
        }
    }
    Ok(url)
}

fn host_matches(host: &str, entry: &str) -> bool {
    let entry = entry.trim().trim_end_matches('.').to_ascii_lowercase();
    let host = host.trim_end_matches('.');
    match entry.strip_prefix("*.") {
        Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
        None => host == entry,
    }
}

/// The scopes of a new connection: the provider's defaults, or the caller's
/// request, which must be a subset of the defaults when the provider has any.
pub fn narrow_scopes(provider_scopes: &[String], requested: Option<&[String]>) -> Result<Vec<String>, String> {
    let Some(requested) = requested else {
        return Ok(provider_scopes.to_vec());
    };
    let mut out: Vec<String> = Vec::new();
    for s in requested {
        if s.is_empty() || s.len() > 256 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("'{}' is not a scope token", s.chars().take(64).collect::<String>()));
        }
        if !provider_scopes.is_empty() && !provider_scopes.contains(s) {
            return Err(format!("'{s}' is not among the provider's scopes ({})", provider_scopes.join(" ")));
        }
        if !out.contains(s) {
            out.push(s.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn return_urls_follow_the_allowlist() {
        let list = allow(&["example.com", "*.apps.test"]);
        assert!(parse_return_url("https://example.com/done?x=1", Some(&list)).is_ok());
        assert!(parse_return_url("https://a.apps.test/cb", Some(&list)).is_ok());
        assert!(parse_return_url("https://a.b.apps.test/cb", Some(&list)).is_ok());
        for bad in [
            "https://apps.test/cb",
            "https://evil.com/",
            "https://example.com.evil.com/",
            "https://evilexample.com/",
            "https://example.com@evil.com/",
            "https://user:pw@example.com/",
            "javascript:alert(1)",
            "ftp://example.com/",
            "/relative",
            "https://xapps.test/",
        ] {
            assert!(parse_return_url(bad, Some(&list)).is_err(), "{bad}");
        }
        assert!(parse_return_url("http://anything.test/", None).is_ok());
        assert!(parse_return_url("https://good.com@evil.com", None).is_err(), "userinfo refused even without a list");
    }

    #[test]
    fn scopes_narrow_to_a_subset() {
        let p = allow(&["openid", "email", "profile"]);
        assert_eq!(narrow_scopes(&p, None).unwrap(), p);
        assert_eq!(narrow_scopes(&p, Some(&allow(&["email", "email"]))).unwrap(), allow(&["email"]));
        assert!(narrow_scopes(&p, Some(&allow(&["admin"]))).is_err());
        assert_eq!(narrow_scopes(&[], Some(&allow(&["anything"]))).unwrap(), allow(&["anything"]));
        assert!(narrow_scopes(&[], Some(&allow(&["two words"]))).is_err());
    }

    #[test]
    fn statuses_round_trip() {
        for s in ConnectionStatus::ALL {
            assert_eq!(ConnectionStatus::parse(s.as_str()), Some(s));
        }
    }
}
