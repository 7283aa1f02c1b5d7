//! Which URLs Nexus may call: `https` anywhere, plain `http` only on loopback
//! hosts (local development and tests). Everything else is refused before any
//! request is made, so a provider registration cannot point Nexus at an
//! internal plain-text service.

use url::{Host, Url};

/// Parses `raw` and checks it is an absolute URL Nexus may send requests to.
pub fn parse_outbound_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("is not an absolute URL ({e})"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials".into());
    }
    if url.fragment().is_some() {
        return Err("must not contain a fragment".into());
    }
    match url.scheme() {
        "https" if url.host().is_some() => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err("must use https (plain http is allowed only on loopback hosts)".into()),
        _ => Err("must be an https URL".into()),
    }
}

/// True when the URL's host is `localhost`, a name under `.localhost`, or a
/// loopback address. Names under `.localhost` are loopback by RFC 6761 §6.3,
/// and Nexus's outbound clients resolve them so ([`is_localhost_name`]),
/// whatever DNS says: a tenant host such as `acme.zendesk.localhost` is how
/// tests and local setups stand in for `acme.zendesk.com`.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(d)) => is_localhost_name(d),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// True for `localhost` and names under `.localhost` (RFC 6761 §6.3), which
/// Nexus always resolves to the loopback address, never through DNS.
pub fn is_localhost_name(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    host.eq_ignore_ascii_case("localhost")
        || host.len() > ".localhost".len()
            && host.get(host.len() - ".localhost".len()..).is_some_and(|s| s.eq_ignore_ascii_case(".localhost"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_anywhere_http_only_on_loopback() {
        assert!(parse_outbound_url("https://accounts.google.com").is_ok());
        assert!(parse_outbound_url("http://127.0.0.1:8080/x").is_ok());
        assert!(parse_outbound_url("http://localhost/x").is_ok());
        assert!(parse_outbound_url("http://[::1]:9/x").is_ok());
        assert!(parse_outbound_url("http://acme.zendesk.localhost:9/x").is_ok());
        assert!(parse_outbound_url("http://localhost.evil.example/x").is_err());
        assert!(parse_outbound_url("http://evil-localhost/x").is_err());
        assert!(parse_outbound_url("http://10.0.0.1/x").is_err());
        assert!(parse_outbound_url("http://example.com").is_err());
        assert!(parse_outbound_url("ftp://example.com").is_err());
        assert!(parse_outbound_url("file:///etc/passwd").is_err());
        assert!(parse_outbound_url("https://user:pw@example.com").is_err());
        assert!(parse_outbound_url("/relative").is_err());
    }
}
