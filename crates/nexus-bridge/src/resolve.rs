//! Host name resolution for every outbound client of Nexus (the Gateway's
//! OAuth and proxy clients, the Bridge, `nexus proxy`): names under
//! `.localhost` are the loopback address (RFC 6761 §6.3) without asking DNS,
//! because the URL policy lets plain `http` reach them as loopback hosts
//! (`nexus_core::url_policy::is_loopback`); a resolver that sent them to DNS
//! could take that plain-text request off the machine. Other names go to the
//! system resolver, as before.

use nexus_core::url_policy::is_localhost_name;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

/// The addresses of `host` at `port`.
pub async fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_err() && is_localhost_name(bare) && !bare.eq_ignore_ascii_case("localhost") {
        return Ok(vec![SocketAddr::from((Ipv4Addr::LOCALHOST, port)), SocketAddr::from((Ipv6Addr::LOCALHOST, port))]);
    }
    Ok(tokio::net::lookup_host((bare, port)).await?.collect())
}

/// [`resolve`] as a resolver for reqwest.
#[derive(Debug, Clone, Copy, Default)]
pub struct Resolver;

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = resolve(&host, 0).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A reqwest client builder that resolves with [`Resolver`].
pub fn reqwest_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().dns_resolver(std::sync::Arc::new(Resolver))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn localhost_subdomains_are_loopback_without_dns() {
        let addrs = resolve("acme.zendesk.localhost", 8080).await.unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 8080), "{addrs:?}");
        let addrs = resolve("127.0.0.1", 9).await.unwrap();
        assert_eq!(addrs, [SocketAddr::from((Ipv4Addr::LOCALHOST, 9))]);
        assert!(resolve("no-such-host.invalid", 1).await.is_err());
    }
}
