//! Who is calling: the caller IP and user agent used by `ALLOWED_CIDRS` and the
//! audit log.
//!
//! The IP is the socket peer. `X-Forwarded-For` is believed only when the peer
//! is one of `TRUSTED_PROXIES`, and then only as far as the chain of trusted
//! hops goes: walking the header right to left, the first address that is not
//! a trusted proxy is the caller. A client can prepend anything it likes to the
//! header, but it cannot change the hops our own proxies appended.

use crate::state::AppState;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// The identified caller, stored in request extensions for handlers.
#[derive(Debug, Clone)]
pub struct Caller {
    pub ip: IpAddr,
    pub user_agent: Option<String>,
    /// The API key the request presented, once checked (audit rows name it).
    pub api_key: Option<nexus_store::ApiKeyRef>,
    /// Its role and workspaces, once checked (`None` on public routes).
    pub access: Option<crate::services::api_keys::Access>,
}

impl Caller {
    /// The IP as audit rows name it. Every token answer writes one, so an
    /// IPv4 address is written out directly: `Display` goes through the
    /// formatting machinery and padding (a twentieth of a proxied
    /// request's instructions, `INSTRUCTIONS=1 bench/proxy.sh`).
    pub fn ip_string(&self) -> String {
        match self.ip {
            IpAddr::V4(v4) => {
                let mut out = String::with_capacity(15);
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        out.push('.');
                    }
                    if octet >= 100 {
                        out.push(char::from(b'0' + octet / 100));
                    }
                    if octet >= 10 {
                        out.push(char::from(b'0' + octet / 10 % 10));
                    }
                    out.push(char::from(b'0' + octet % 10));
                }
                out
            }
            IpAddr::V6(v6) => v6.to_string(),
        }
    }

    /// Whether this caller may use connections of `workspace_id` (a key
    /// limited to other workspaces is answered as if they did not exist).
    pub fn may_see(&self, workspace_id: &str) -> bool {
        self.access.as_ref().is_none_or(|a| a.may_see(workspace_id))
    }

    /// The Connect session that authenticated this request, if one did.
    pub fn session(&self) -> Option<&nexus_store::ConnectSessionRow> {
        self.access.as_ref().and_then(|a| a.session.as_deref())
    }

    /// An audit row of `event` caused by this caller (its address, user
    /// agent and key), with `data`.
    pub fn audit(&self, event: nexus_core::AuditEvent, data: serde_json::Value) -> nexus_store::NewAudit {
        nexus_store::NewAudit {
            ip: Some(self.ip_string()),
            user_agent: self.user_agent.clone(),
            data,
            api_key: self.api_key.clone(),
            ..nexus_store::NewAudit::new(event)
        }
    }

    /// The workspaces this caller is limited to (`None`: every one).
    pub fn workspaces(&self) -> Option<&[String]> {
        self.access.as_ref().and_then(|a| a.workspaces.as_deref())
    }
}

/// How audit rows name the environment's `API_KEY` until named keys exist.
pub fn bootstrap_key() -> nexus_store::ApiKeyRef {
    nexus_store::ApiKeyRef { id: "bootstrap".into(), name: "bootstrap".into() }
}

/// Determines the caller IP from the peer address and, for trusted peers, the header.
pub fn caller_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let hops: Vec<Option<IpAddr>> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().ok())
        .flat_map(|v| v.unwrap_or("?").split(','))
        .map(str::trim)
        .map(|s| s.parse::<IpAddr>().ok().map(canonical))
        .collect();
    // Right to left: the hops our proxies appended are addresses; the first
    // entry that is not (a client's made-up value) ends the walk, and the
    // nearest address read so far is the caller (never the proxy itself
    // when a client merely prepended garbage).
    let mut caller = peer;
    for hop in hops.into_iter().rev() {
        let Some(hop) = hop else { break };
        caller = hop;
        if !is_trusted(hop, trusted) {
            break;
        }
    }
    caller
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// `::ffff:10.0.0.1` → `10.0.0.1`, so v4 CIDRs match v4-mapped peers.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The caller of a request from the socket `peer` with `headers`.
pub fn caller_of(state: &AppState, peer: IpAddr, headers: &HeaderMap) -> Caller {
    let ip = caller_ip(peer, headers, &state.config.trusted_proxies);
    let user_agent = headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().take(512).collect());
    Caller { ip, user_agent, api_key: None, access: None }
}

pub async fn identify(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let peer =
        req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()).unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let caller = caller_of(&state, peer, req.headers());
    req.extensions_mut().insert(caller);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_strings_are_those_of_display() {
        let written = |ip: IpAddr| Caller { ip, user_agent: None, api_key: None, access: None }.ip_string();
        for ip in ["0.0.0.0", "127.0.0.1", "10.20.100.255", "9.99.100.199", "::1", "2001:db8::7", "::ffff:1.2.3.4"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(written(ip), ip.to_string());
        }
        for n in 0..=255u8 {
            let ip = IpAddr::from([n, 255 - n, n / 3, 7]);
            assert_eq!(written(ip), ip.to_string());
        }
    }

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_header_is_ignored() {
        assert_eq!(caller_ip(ip("203.0.113.9"), &headers("10.0.0.1"), &[]), ip("203.0.113.9"));
    }

    #[test]
    fn trusted_peer_yields_first_untrusted_hop_from_the_right() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = headers("1.1.1.1, 198.51.100.7, 10.0.0.2");
        assert_eq!(caller_ip(ip("10.0.0.1"), &h, &trusted), ip("198.51.100.7"));
    }

    #[test]
    fn garbage_header_from_trusted_peer_falls_back_to_peer() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(caller_ip(ip("10.0.0.1"), &headers("not-an-ip"), &trusted), ip("10.0.0.1"));
    }

    /// A client that prepends a made-up entry is still itself (the address our
    /// proxy appended), not the proxy: its failures are counted against it.
    #[test]
    fn garbage_prepended_by_a_client_does_not_hide_it() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(caller_ip(ip("10.0.0.1"), &headers("x, 203.0.113.9"), &trusted), ip("203.0.113.9"));
        assert_eq!(caller_ip(ip("10.0.0.1"), &headers("x, 203.0.113.9, 10.0.0.2"), &trusted), ip("203.0.113.9"));
        assert_eq!(caller_ip(ip("10.0.0.1"), &headers("198.51.100.1, x, 10.0.0.2"), &trusted), ip("10.0.0.2"));
    }

    #[test]
    fn v4_mapped_peers_match_v4_networks() {
        let trusted: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        let h = headers("192.0.2.1");
        assert_eq!(caller_ip(ip("::ffff:127.0.0.1"), &h, &trusted), ip("192.0.2.1"));
    }
}
