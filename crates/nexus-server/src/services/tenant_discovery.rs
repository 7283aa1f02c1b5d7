//! OIDC discovery per tenant (SPEC 10): a provider whose `issuer` is a URL
//! template (Okta's `https://{domain}`, Auth0's `https://{tenant}.auth0.com`)
//! is discovered at the issuer expanded for each connection, not at
//! registration, and the document is cached per expanded issuer. A provider
//! with a plain issuer keeps the document fetched at registration.

use crate::error::ApiError;
use crate::state::AppState;
use nexus_core::provider::{Discovery, ProviderConfig};
use nexus_core::template::is_template;
use nexus_core::wire::ErrorCode;
use nexus_store::ProviderRow;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Mutex;

/// How long a tenant's document is used before it is fetched again.
const TTL_SECS: i64 = 3600;
/// Most tenants' documents kept; past it, expired ones go first, then all.
const MAX_ISSUERS: usize = 10_000;

/// Discovery documents by provider and expanded issuer (a document checked
/// against one provider's `allowed_hosts` is never used for another).
#[derive(Debug, Default)]
pub struct IssuerCache(Mutex<HashMap<String, Discovery>>);

impl IssuerCache {
    fn get(&self, issuer: &str, now: i64) -> Option<Discovery> {
        let cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(issuer).filter(|d| now - d.fetched_at < TTL_SECS).cloned()
    }

    fn put(&self, issuer: String, discovery: Discovery, now: i64) {
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_ISSUERS {
            cache.retain(|_, d| now - d.fetched_at < TTL_SECS);
            if cache.len() >= MAX_ISSUERS {
                cache.clear();
            }
        }
        cache.insert(issuer, discovery);
    }
}

/// One rediscovery at a time per provider, and when it last failed.
#[derive(Debug, Default)]
pub struct Rediscovery(Mutex<HashMap<String, std::sync::Arc<tokio::sync::Mutex<Option<i64>>>>>);

/// After a failed rediscovery, how long the last good document is used without trying again.
const RETRY_AFTER_SECS: i64 = 60;

/// The provider's stored document, fetched again (once, whoever asks) when
/// it is older than `DISCOVERY_TTL` (a day by default); a failed fetch keeps
/// the last good document (logged and counted in
/// `nexus_discovery_refreshes_total`) and is not tried again for a minute.
async fn stored(state: &AppState, provider: &ProviderRow) -> Option<Discovery> {
    let now = state.clock.now_secs();
    let ttl = state.config.discovery_ttl_secs;
    let current = provider.discovery.clone()?;
    if !provider.config.enable_discovery || now - current.fetched_at < ttl {
        return Some(current);
    }
    let slot = {
        let mut slots = state.rediscovery.0.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(provider.id.clone()).or_default().clone()
    };
    let mut failed_at = slot.lock().await;
    if failed_at.is_some_and(|t| now - t < RETRY_AFTER_SECS) {
        return Some(current);
    }
    // The provider as it is now: fetched meanwhile (by another request or
    // replica), or edited (another issuer, discovery turned off), it is
    // left as it is.
    let row = match state.store.provider_by_id(&provider.id).await {
        Ok(Some(row)) => row,
        _ => return Some(current),
    };
    let stale = row.discovery.clone()?;
    if now - stale.fetched_at < ttl || !row.config.enable_discovery || row.config.issuer != provider.config.issuer {
        return Some(stale);
    }
    let issuer = row.config.issuer.as_deref().unwrap_or_default();
    let http = nexus_oauth::ProviderHttp::new(state.http.clone());
    match nexus_oauth::discover(&http, issuer, now).await {
        Ok(fresh) => {
            state.metrics.discovery("ttl", "ok");
            *failed_at = None;
            match state.store.set_provider_discovery(&row.id, row.updated_at, &fresh).await {
                Ok(true) => Some(fresh),
                // Edited while the document was fetched: the edit stands.
                Ok(false) => Some(stale),
                Err(e) => {
                    tracing::warn!(provider = %row.id, error = %e, "the rediscovered document could not be stored");
                    Some(fresh)
                }
            }
        }
        Err(e) => {
            state.metrics.discovery("ttl", "failed");
            *failed_at = Some(now);
            tracing::warn!(provider = %row.id, error = %e, "rediscovery failed; keeping the last good document");
            Some(stale)
        }
    }
}

/// Whether the provider is discovered per connection.
pub fn per_tenant(config: &ProviderConfig) -> bool {
    config.enable_discovery && config.issuer.as_deref().is_some_and(is_template)
}

/// The issuer of this connection: the provider's, expanded over the
/// connection's configuration when it is a template.
pub fn issuer(config: &ProviderConfig, connection: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    let Some(raw) = config.issuer.as_deref() else { return Ok(None) };
    config.expand(raw, connection).map(Some).map_err(|e| {
        ApiError::new(ErrorCode::ProviderMisconfigured, format!("issuer {e}")).with_details(json!({"field": "issuer"}))
    })
}

/// The discovery document for this connection: the stored one, or the
/// tenant's (cached, fetched when missing or older than an hour).
pub async fn for_connection(
    state: &AppState,
    provider: &ProviderRow,
    connection: &Map<String, Value>,
) -> Result<Option<Discovery>, ApiError> {
    if !per_tenant(&provider.config) {
        return Ok(stored(state, provider).await);
    }
    let Some(issuer) = issuer(&provider.config, connection)? else { return Ok(None) };
    let now = state.clock.now_secs();
    let key = format!("{}\n{issuer}", provider.id);
    if let Some(found) = state.issuers.get(&key, now) {
        return Ok(Some(found));
    }
    // Every request of the discovery (the document, and the keys it names)
    // and every endpoint it names must be where the provider may send us.
    let hosts = hosts_for(&provider.config, &issuer);
    let http = nexus_oauth::ProviderHttp::new(state.http.clone()).only_to(hosts.clone());
    let discovery = nexus_oauth::discover(&http, &issuer, now).await.map_err(|reason| {
        ApiError::new(
            ErrorCode::DiscoveryFailed,
            format!("issuer (for this connection): OIDC discovery failed: {reason}"),
        )
        .with_details(json!({"field": "issuer"}))
    })?;
    for endpoint in [Some(&discovery.authorization_endpoint), Some(&discovery.token_endpoint)]
        .into_iter()
        .chain([
            discovery.revocation_endpoint.as_ref(),
            discovery.userinfo_endpoint.as_ref(),
            discovery.jwks_uri.as_ref(),
        ])
        .flatten()
    {
        check_host(&hosts, endpoint)?;
    }
    state.issuers.put(key, discovery.clone(), now);
    Ok(Some(discovery))
}

/// Where a tenant's discovery may lead: `params.allowed_hosts`, or, when a
/// provider needs none (its issuer's host is fixed, as in
/// `https://login.microsoftonline.com/{tenant}/v2.0`), the issuer's host.
fn hosts_for(config: &ProviderConfig, issuer: &str) -> Vec<String> {
    let globs = config.allowed_hosts();
    if !globs.is_empty() {
        return globs;
    }
    url::Url::parse(issuer).ok().and_then(|u| u.host_str().map(str::to_owned)).into_iter().collect()
}

/// A discovered endpoint's host must match one of `hosts`.
fn check_host(hosts: &[String], endpoint: &str) -> Result<(), ApiError> {
    let host = url::Url::parse(endpoint).ok().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default();
    if hosts.iter().any(|g| nexus_core::template::host_matches(g, &host)) {
        return Ok(());
    }
    let shown: String = endpoint.chars().take(200).collect();
    Err(ApiError::new(
        ErrorCode::DiscoveryFailed,
        format!("issuer (for this connection): the document names {shown}, whose host the provider may not send to (params.allowed_hosts)"),
    )
    .with_details(json!({"field": "issuer"})))
}
