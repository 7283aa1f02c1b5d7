//! Where a proxied request goes: the provider's `api_base_url` joined with the
//! agent's path, never anywhere else.

/// `base` + `/` + `path` (+ `?query`), refusing anything that would leave `base`.
pub fn target_url(base: &str, path: &str, query: Option<&str>) -> Result<url::Url, String> {
    let base_url = url::Url::parse(base).map_err(|_| "the provider's api_base_url is not a URL".to_owned())?;
    if path.split('/').any(|seg| seg == ".." || seg == ".")
        || path.contains('\\')
        || path.contains("%2e")
        || path.contains("%2E")
    {
        return Err("the path must not contain dot segments".into());
    }
    let mut joined = format!("{}/{}", base.trim_end_matches('/'), path.trim_start_matches('/'));
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        joined.push('?');
        joined.push_str(q);
    }
    let url = url::Url::parse(&joined).map_err(|_| "the path does not form a valid URL".to_owned())?;
    let same_origin = url.scheme() == base_url.scheme()
        && url.host() == base_url.host()
        && url.port_or_known_default() == base_url.port_or_known_default();
    if !same_origin || !url.path().starts_with(base_url.path().trim_end_matches('/')) {
        return Err("the request would leave the provider's api_base_url".into());
    }
    Ok(url)
}

/// Headers a proxy must not pass on: those that describe one hop, and the
/// caller's own credentials (`X-API-Key`, `Authorization`, cookies).
const NOT_FORWARDED: [&str; 13] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "x-api-key",
    "authorization",
    "cookie",
];

/// Whether a proxy passes this header on (names are lowercase in `http`).
pub fn forwardable_header(name: &str) -> bool {
    !NOT_FORWARDED.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_stay_under_the_base() {
        assert_eq!(
            target_url("https://api.x.com/v2", "users/me", Some("a=1")).unwrap().as_str(),
            "https://api.x.com/v2/users/me?a=1"
        );
        assert_eq!(target_url("https://api.x.com/", "/users", None).unwrap().as_str(), "https://api.x.com/users");
        for bad in ["../admin", "a/../../b", "@evil.com/x", "%2e%2e/x"] {
            let r = target_url("https://api.x.com/v2", bad, None);
            assert!(
                r.is_err()
                    || r.as_ref().unwrap().host_str() == Some("api.x.com")
                        && r.as_ref().unwrap().path().starts_with("/v2"),
                "{bad}: {r:?}"
            );
        }
        assert!(target_url("https://api.x.com/v2", "/../v1", None).is_err());
    }
}
