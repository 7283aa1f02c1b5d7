//! Where a proxied request goes: the provider's `api_base_url` joined with the
//! agent's path, never anywhere else.

/// `base` + `/` + `path` (+ `?query`), refusing anything that would leave `base`.
///
/// Only the path and query of `base` are replaced, so scheme, host and port
/// are `base`'s by construction; characters of `path` that would end it (`?`,
/// `#`) are percent-encoded rather than read as a query or fragment.
pub fn target_url(base: &str, path: &str, query: Option<&str>) -> Result<url::Url, String> {
    let base_url = url::Url::parse(base).map_err(|_| "the provider's api_base_url is not a URL".to_owned())?;
    if base_url.cannot_be_a_base() {
        return Err("the provider's api_base_url is not a URL".into());
    }
    if path.split('/').any(|seg| seg == ".." || seg == ".")
        || path.contains('\\')
        || path.contains("%2e")
        || path.contains("%2E")
    {
        return Err("the path must not contain dot segments".into());
    }
    let prefix = base_url.path().trim_end_matches('/');
    let mut url = base_url.clone();
    url.set_path(&format!("{prefix}/{}", path.trim_start_matches('/')));
    url.set_query(query.filter(|q| !q.is_empty()));
    url.set_fragment(None);
    if !url.path().starts_with(prefix) {
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

    #[test]
    fn a_decoded_question_mark_or_hash_stays_in_the_path() {
        let url = target_url("https://api.x.com/v2", "files/a?b#c", Some("x=1")).unwrap();
        assert_eq!(url.as_str(), "https://api.x.com/v2/files/a%3Fb%23c?x=1");
        let url = target_url("http://127.0.0.1:8080", "", None).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:8080/");
        assert!(target_url("mailto:someone@x.com", "x", None).is_err());
    }
}
