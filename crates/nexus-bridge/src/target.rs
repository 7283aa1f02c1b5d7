//! Where a proxied request goes: the provider's `api_base_url` joined with the
//! agent's path, never anywhere else.

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Uri};

/// A provider's `api_base_url`, parsed once: where every proxied request of
/// its connections goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    scheme: Scheme,
    authority: Authority,
    /// The base's path without its trailing `/`.
    prefix: String,
    host: Option<HeaderValue>,
}

impl Base {
    /// Parses an `http(s)` base URL (its query, if any, is ignored).
    pub fn parse(base: &str) -> Result<Base, String> {
        let not_a_url = || "the provider's api_base_url is not an http(s) URL".to_owned();
        let base: Uri = base.parse().map_err(|_| not_a_url())?;
        let (Some(scheme), Some(authority)) = (base.scheme(), base.authority()) else {
            return Err(not_a_url());
        };
        if *scheme != Scheme::HTTP && *scheme != Scheme::HTTPS {
            return Err(not_a_url());
        }
        let prefix = base.path().trim_end_matches('/').to_owned();
        Ok(Base { scheme: scheme.clone(), authority: authority.clone(), prefix, host: host_header(&base) })
    }

    /// The `Host` header for requests to this base: its host and port,
    /// without any user info.
    pub fn host_header(&self) -> Option<&HeaderValue> {
        self.host.as_ref()
    }

    /// The base + `/` + `raw_path` (+ `?query`), refusing anything that
    /// would leave the base.
    ///
    /// `raw_path` is the path as the agent sent it, still percent-encoded:
    /// it is passed on byte for byte (an encoded `?`, `#` or `/` stays
    /// encoded), so the provider sees exactly what the agent wrote. Scheme,
    /// host and port are the base's by construction, and a path whose
    /// decoded form has a `.` or `..` segment (also with path parameters,
    /// `..;x`, which servers such as Tomcat read as `..`) or a backslash is
    /// refused, so the request cannot climb out of the base's path either.
    pub fn join(&self, raw_path: &str, query: Option<&str>) -> Result<Uri, String> {
        // Only a `.`, a `%` (an encoded `.` or `\`) or a `\` can make a climb;
        // most paths have none, and skip decoding.
        if raw_path.bytes().any(|b| matches!(b, b'.' | b'%' | b'\\')) {
            let decoded = percent_encoding::percent_decode_str(raw_path).decode_utf8_lossy();
            let climbs = |seg: &str| matches!(seg.split(';').next(), Some("." | ".."));
            if decoded.split('/').any(climbs) || decoded.contains('\\') {
                return Err("the path must not contain dot segments".into());
            }
        }
        let path = raw_path.trim_start_matches('/');
        let query = query.filter(|q| !q.is_empty());
        let mut path_and_query =
            String::with_capacity(self.prefix.len() + path.len() + query.map_or(0, |q| q.len() + 1) + 1);
        path_and_query.push_str(&self.prefix);
        path_and_query.push('/');
        path_and_query.push_str(path);
        if let Some(q) = query {
            path_and_query.push('?');
            path_and_query.push_str(q);
        }
        let invalid = |_| "the path or query is not valid in a URL".to_owned();
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(PathAndQuery::from_maybe_shared(Bytes::from(path_and_query)).map_err(invalid)?);
        Uri::from_parts(parts).map_err(|_| "the path or query is not valid in a URL".to_owned())
    }
}

/// `base` + `/` + `raw_path` (+ `?query`), refusing anything that would
/// leave `base`: [`Base::parse`] then [`Base::join`].
pub fn target_uri(base: &str, raw_path: &str, query: Option<&str>) -> Result<Uri, String> {
    Base::parse(base)?.join(raw_path, query)
}

/// Splits a proxy request's raw path after the route's prefix
/// (`{connection_id}/{path…}`) into the connection id and the raw path.
pub fn split_connection_path(after_prefix: &str) -> (&str, &str) {
    after_prefix.split_once('/').unwrap_or((after_prefix, ""))
}

/// The `Host` header for `uri`: its host and port, without any user info.
pub fn host_header(uri: &Uri) -> Option<HeaderValue> {
    let authority: &Authority = uri.authority()?;
    let host = authority.as_str().rsplit('@').next()?;
    HeaderValue::from_str(host).ok()
}

/// Headers a proxy must not pass on beside those of one hop
/// ([`nexus_core::provider::HOP_HEADERS`], `Expect` among them: a proxy
/// reads the whole body before it sends anything on): the caller's own
/// credentials (`X-API-Key`, `Authorization`, cookies).
const CALLER_CREDENTIALS: [&str; 3] = ["x-api-key", "authorization", "cookie"];

/// Whether a proxy refuses to forward requests of this method (in any
/// case): `TRACE` and `TRACK` would echo the signed request, credentials
/// and all, back to the agent; `CONNECT` would make the hop a tunnel.
pub fn refused_method(method: &str) -> bool {
    ["TRACE", "TRACK", "CONNECT"].iter().any(|m| m.eq_ignore_ascii_case(method))
}

/// Whether a proxy passes this header on (its name in any case).
pub fn forwardable_header(name: &str) -> bool {
    !nexus_core::provider::HOP_HEADERS.iter().chain(&CALLER_CREDENTIALS).any(|n| n.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_stay_under_the_base() {
        assert_eq!(
            target_uri("https://api.x.com/v2", "users/me", Some("a=1")).unwrap(),
            "https://api.x.com/v2/users/me?a=1"
        );
        assert_eq!(target_uri("https://api.x.com/", "/users", None).unwrap(), "https://api.x.com/users");
        for bad in ["../admin", "a/../../b", "%2e%2e/x", "a/%2E./b", "a%2F..%2F..%2Fadmin", "a\\..\\b", "./x"] {
            assert!(target_uri("https://api.x.com/v2", bad, None).is_err(), "{bad}");
        }
        let at = target_uri("https://api.x.com/v2", "@evil.com/x", None).unwrap();
        assert_eq!((at.host(), at.path()), (Some("api.x.com"), "/v2/@evil.com/x"));
        assert!(target_uri("https://api.x.com/v2", "/../v1", None).is_err());
        assert!(target_uri("https://api.x.com/v2", "a b", None).is_err(), "not a valid path");
    }

    #[test]
    fn the_agents_encoding_is_kept() {
        let uri = target_uri("https://api.x.com/v2", "files/a%3Fb%23c%2Fd", Some("x=1&y=%26")).unwrap();
        assert_eq!(uri, "https://api.x.com/v2/files/a%3Fb%23c%2Fd?x=1&y=%26");
        assert_eq!(target_uri("http://127.0.0.1:8080", "", None).unwrap(), "http://127.0.0.1:8080/");
        assert_eq!(
            target_uri("http://127.0.0.1:8080/base?v=1", "x", Some("")).unwrap(),
            "http://127.0.0.1:8080/base/x"
        );
    }

    #[test]
    fn a_parsed_base_joins_as_target_uri_does() {
        let base = Base::parse("https://user:pw@api.x.com:8443/v2/").unwrap();
        assert_eq!(base.host_header().unwrap(), "api.x.com:8443");
        for (path, query) in [("users/me", Some("a=1")), ("", None), ("a%2Fb", Some("")), ("x.json", None)] {
            let joined = base.join(path, query).unwrap();
            assert_eq!(joined, target_uri("https://user:pw@api.x.com:8443/v2/", path, query).unwrap());
            assert_eq!((joined.host(), joined.port_u16()), (Some("api.x.com"), Some(8443)));
        }
        assert_eq!(base.join("users/me", Some("a=1")).unwrap(), "https://user:pw@api.x.com:8443/v2/users/me?a=1");
        for bad in ["..", "a/./b", "a/%2e/b", "%5c..", "a b", "..;", "a/..;x/b", "a/%2e%2e;jsessionid=1/admin", ".;/x"]
        {
            assert!(base.join(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn bases_that_are_not_http_urls_are_refused() {
        for base in ["mailto:someone@x.com", "/relative", "ftp://x.com/", "not a url"] {
            assert!(target_uri(base, "x", None).is_err(), "{base}");
        }
    }

    #[test]
    fn the_connection_id_is_the_first_segment() {
        assert_eq!(split_connection_path("c1/a/b%2Fc"), ("c1", "a/b%2Fc"));
        assert_eq!(split_connection_path("c1/"), ("c1", ""));
        assert_eq!(split_connection_path("c1"), ("c1", ""));
    }

    #[test]
    fn the_host_header_names_host_and_port_only() {
        let uri: Uri = "https://user:pw@api.x.com:8443/v1".parse().unwrap();
        assert_eq!(host_header(&uri).unwrap(), "api.x.com:8443");
        assert_eq!(host_header(&"http://127.0.0.1/".parse().unwrap()).unwrap(), "127.0.0.1");
    }
}
