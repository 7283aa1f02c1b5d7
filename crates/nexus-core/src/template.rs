//! URL templates over a connection's configuration (SPEC section 10): RFC 6570
//! levels 1 and 2, limited to `{name}` (simple expansion: the value is
//! percent-encoded, so it cannot add `/ @ : ? #`) and `{+name}` (reserved
//! expansion, for values that are whole URLs). Expansion is `iri-string`'s;
//! this module decides which expressions are allowed, which names a template
//! uses, whether a variable can change the host, and checks expanded hosts
//! against the provider's `allowed_hosts` globs.

use iri_string::spec::UriSpec;
use iri_string::template::context::{Context, Visitor};
use iri_string::template::UriTemplateStr;
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// A URL template that passed [`UrlTemplate::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlTemplate<'a> {
    raw: &'a str,
    names: BTreeSet<String>,
    host_is_variable: bool,
}

/// Why an expansion failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpandError {
    /// The configuration has no value for this name.
    Missing(String),
    /// The value of this name is an object or an array.
    NotScalar(String),
    /// The expanded URL is not a URL Nexus may call (the reason).
    Refused(String),
    /// The expanded URL's host matches none of `allowed_hosts`.
    HostNotAllowed(String),
}

impl std::fmt::Display for ExpandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpandError::Missing(n) => write!(f, "needs connection_config.{n}, which is not set"),
            ExpandError::NotScalar(n) => write!(f, "connection_config.{n} must be a string, number or boolean"),
            ExpandError::Refused(why) => write!(f, "expands to a URL Nexus may not call: {why}"),
            ExpandError::HostNotAllowed(host) => {
                write!(f, "expands to host '{}', which allowed_hosts does not list", bounded(host))
            }
        }
    }
}

fn bounded(s: &str) -> String {
    s.chars().take(100).collect()
}

/// True when `raw` contains a template expression.
pub fn is_template(raw: &str) -> bool {
    raw.contains('{') || raw.contains('}')
}

impl<'a> UrlTemplate<'a> {
    /// Checks the template's syntax (RFC 6570, by `iri-string`) and that every
    /// expression is `{name}` or `{+name}` with one variable.
    pub fn parse(raw: &'a str) -> Result<UrlTemplate<'a>, String> {
        UriTemplateStr::new(raw).map_err(|e| format!("is not an RFC 6570 URI template ({e})"))?;
        let mut names = BTreeSet::new();
        let mut rest = raw;
        let mut first_expression = None;
        while let Some(open) = rest.find('{') {
            let close = rest[open..].find('}').map(|c| open + c).ok_or("has an unclosed '{'")?;
            let expr = &rest[open + 1..close];
            let name = expr.strip_prefix('+').unwrap_or(expr);
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!(
                    "expression '{{{}}}' is not allowed: use {{name}} or {{+name}} with a name of letters, digits and '_'",
                    bounded(expr)
                ));
            }
            if first_expression.is_none() {
                first_expression = Some(raw.len() - rest.len() + open);
            }
            names.insert(name.to_owned());
            rest = &rest[close + 1..];
        }
        // The host is fixed only when the text before the first expression
        // holds a scheme, `//`, an authority and the `/` that ends it.
        let host_is_variable = match first_expression {
            None => false,
            Some(at) => {
                let literal = &raw[..at];
                match literal.find("://") {
                    // `https:///{x}` has an empty authority: a URL parser
                    // takes the next segment, the variable, as the host.
                    Some(i) => !matches!(literal[i + 3..].find('/'), Some(end) if end > 0),
                    None => true,
                }
            }
        };
        let mut template = UrlTemplate { raw, names, host_is_variable };
        // Whatever the text says, a template whose origin changes with its
        // values has a variable host: expand it twice and compare.
        if !template.host_is_variable && !template.names.is_empty() {
            template.host_is_variable = template.origin_with("a") != template.origin_with("b");
        }
        Ok(template)
    }

    /// The scheme, host and port of the URL this template expands to when
    /// every variable is `value` (`None` when that is not a URL).
    fn origin_with(&self, value: &str) -> Option<(String, Option<String>, Option<u16>)> {
        let sample: Map<String, Value> = self.names.iter().map(|n| (n.clone(), Value::from(value))).collect();
        let url = url::Url::parse(&self.expand_text(&sample).ok()?).ok()?;
        Some((url.scheme().to_owned(), url.host_str().map(str::to_owned), url.port_or_known_default()))
    }

    /// The variable names the template uses.
    pub fn names(&self) -> &BTreeSet<String> {
        &self.names
    }

    /// Whether a variable appears in the scheme or the authority.
    pub fn host_is_variable(&self) -> bool {
        self.host_is_variable
    }

    /// Whether every name has a value in `config`.
    pub fn is_ready(&self, config: &Map<String, Value>) -> bool {
        self.names.iter().all(|n| config.get(n).is_some_and(|v| !v.is_null()))
    }

    /// Expands over `config` as plain text (not a URL: a SigV4 region).
    pub fn expand_text(&self, config: &Map<String, Value>) -> Result<String, ExpandError> {
        self.check_values(config)?;
        let template = UriTemplateStr::new(self.raw).map_err(|e| ExpandError::Refused(e.to_string()))?;
        Ok(template
            .expand::<UriSpec, _>(&ConfigContext(config))
            .map_err(|e| ExpandError::Refused(e.to_string()))?
            .to_string())
    }

    fn check_values(&self, config: &Map<String, Value>) -> Result<(), ExpandError> {
        for name in &self.names {
            match config.get(name) {
                None | Some(Value::Null) => return Err(ExpandError::Missing(name.clone())),
                Some(Value::Object(_) | Value::Array(_)) => return Err(ExpandError::NotScalar(name.clone())),
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Expands over `config`. The result must pass the outbound URL policy and,
    /// when a variable is in the host, its host must match `allowed_hosts`.
    pub fn expand(&self, config: &Map<String, Value>, allowed_hosts: &[String]) -> Result<String, ExpandError> {
        let expanded = self.expand_text(config)?;
        let url = crate::url_policy::parse_outbound_url(&expanded).map_err(ExpandError::Refused)?;
        if self.host_is_variable || !self.names.is_empty() && !allowed_hosts.is_empty() {
            let host = url.host_str().unwrap_or_default();
            if !allowed_hosts.iter().any(|glob| host_matches(glob, host)) {
                return Err(ExpandError::HostNotAllowed(host.to_owned()));
            }
        }
        Ok(expanded)
    }
}

/// The connection's configuration as an RFC 6570 context: scalars become strings.
struct ConfigContext<'a>(&'a Map<String, Value>);

impl Context for ConfigContext<'_> {
    fn visit<V: Visitor>(&self, visitor: V) -> V::Result {
        match self.0.get(visitor.var_name().as_str()) {
            Some(Value::String(s)) => visitor.visit_string(s),
            Some(Value::Number(n)) => visitor.visit_string(n),
            Some(Value::Bool(b)) => visitor.visit_string(b),
            _ => visitor.visit_undefined(),
        }
    }
}

/// Whether `host` matches `glob`: an exact host name, or `*.` followed by a
/// suffix, where `*` stands for exactly one DNS label (letters, digits and
/// `-`). Case-insensitive.
pub fn host_matches(glob: &str, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let glob = glob.to_ascii_lowercase();
    let (globs, labels): (Vec<&str>, Vec<&str>) = (glob.split('.').collect(), host.split('.').collect());
    globs.len() == labels.len() && globs.iter().zip(&labels).all(|(g, l)| if *g == "*" { is_label(l) } else { g == l })
}

/// One DNS label of letters, digits and inner hyphens.
fn is_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

/// Checks one `allowed_hosts` entry: a host name in which one label, not
/// among the last two, may be `*` (one label, any value): `*.zendesk.com`,
/// `s3.*.amazonaws.com`. `*.com`, `zendesk.*` and `*.*.example.com` are refused.
pub fn check_host_glob(glob: &str) -> Result<(), String> {
    let labels: Vec<&str> = glob.split('.').collect();
    let n = labels.len();
    let ok =
        glob.len() <= 253 && n >= 2 && labels.iter().enumerate().all(|(i, l)| is_label(l) || (*l == "*" && i + 2 < n));
    if !ok {
        return Err(format!(
            "'{}' is not a host name whose labels (but the last two) may be '*', such as *.zendesk.com",
            bounded(glob)
        ));
    }
    if labels.iter().filter(|l| **l == "*").count() > 1 {
        return Err(format!("'{}' is too broad: at most one '*' label", bounded(glob)));
    }
    if labels.contains(&"*") && n < 3 {
        return Err(format!("'{}' is too broad: '*.' needs a suffix of at least two labels", bounded(glob)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn names_and_host_position_are_found() {
        let t = UrlTemplate::parse("https://{subdomain}.zendesk.com/oauth/tokens").unwrap();
        assert_eq!(t.names().iter().collect::<Vec<_>>(), ["subdomain"]);
        assert!(t.host_is_variable());
        let t = UrlTemplate::parse("{+instance_url}/services/data").unwrap();
        assert!(t.host_is_variable());
        let t = UrlTemplate::parse("https://api.example.com/{region}/v1").unwrap();
        assert!(!t.host_is_variable());
        let t = UrlTemplate::parse("https://api.example.com:{port}/v1").unwrap();
        assert!(t.host_is_variable());
        let t = UrlTemplate::parse("https://api.example.com").unwrap();
        assert!(t.names().is_empty() && !t.host_is_variable());
    }

    #[test]
    fn an_empty_authority_or_a_lenient_parse_cannot_hide_a_variable_host() {
        // A URL parser reads the segment after `https:///` as the host
        // (a backslash is not template text: iri-string refuses it).
        for raw in ["https:///{tenant}/oauth/token", "https:/{tenant}/x", "https:{tenant}/x"] {
            assert!(UrlTemplate::parse(raw).unwrap().host_is_variable(), "{raw}");
        }
        assert!(!UrlTemplate::parse("https://api.example.com/{tenant}/x").unwrap().host_is_variable());
    }

    #[test]
    fn only_simple_and_reserved_single_variable_expressions() {
        for bad in ["https://x/{#f}", "https://x/{a,b}", "https://x/{a*}", "https://x/{a:3}", "https://x/{?q}", "{}"] {
            assert!(UrlTemplate::parse(bad).is_err(), "{bad}");
        }
        assert!(UrlTemplate::parse("https://x/{a").is_err());
    }

    #[test]
    fn simple_expansion_cannot_change_the_host() {
        let t = UrlTemplate::parse("https://{subdomain}.zendesk.com/api").unwrap();
        let allowed = vec!["*.zendesk.com".to_owned()];
        assert_eq!(t.expand(&config(json!({"subdomain": "acme"})), &allowed).unwrap(), "https://acme.zendesk.com/api");
        for hostile in ["evil.example/x", "a@evil.example", "..", "x%2F..%2Fy", "x?y=1#z", "evil.example", "a.b", ""] {
            let r = t.expand(&config(json!({ "subdomain": hostile })), &allowed);
            assert!(r.is_err(), "{hostile}: {r:?}");
        }
    }

    #[test]
    fn reserved_expansion_is_checked_against_allowed_hosts() {
        let t = UrlTemplate::parse("{+instance_url}/services/data").unwrap();
        let allowed = vec!["*.my.salesforce.com".to_owned()];
        assert_eq!(
            t.expand(&config(json!({"instance_url": "https://acme.my.salesforce.com"})), &allowed).unwrap(),
            "https://acme.my.salesforce.com/services/data"
        );
        for hostile in [
            "https://evil.example",
            "https://acme.my.salesforce.com.evil.example",
            "https://evil.example/x.my.salesforce.com",
            "https://a@evil.example",
            "http://acme.my.salesforce.com",
        ] {
            let r = t.expand(&config(json!({ "instance_url": hostile })), &allowed);
            assert!(r.is_err(), "{hostile}: {r:?}");
        }
    }

    #[test]
    fn missing_and_structured_values_are_errors() {
        let t = UrlTemplate::parse("https://api.example.com/{region}").unwrap();
        assert_eq!(t.expand(&Map::new(), &[]), Err(ExpandError::Missing("region".into())));
        assert_eq!(t.expand(&config(json!({"region": {"a": 1}})), &[]), Err(ExpandError::NotScalar("region".into())));
        assert_eq!(t.expand(&config(json!({"region": 3})), &[]).unwrap(), "https://api.example.com/3");
        assert_eq!(t.expand(&config(json!({"region": "a/b"})), &[]).unwrap(), "https://api.example.com/a%2Fb");
    }

    #[test]
    fn globs_match_one_label() {
        assert!(host_matches("*.zendesk.com", "acme.zendesk.com"));
        assert!(host_matches("*.zendesk.com", "ACME.Zendesk.com"));
        assert!(!host_matches("*.zendesk.com", "zendesk.com"));
        assert!(!host_matches("*.zendesk.com", "a.b.zendesk.com"));
        assert!(!host_matches("*.zendesk.com", "evilzendesk.com"));
        assert!(host_matches("api.example.com", "api.example.com"));
        // A `*` label inside a glob stands for one label there, no more.
        assert!(host_matches("s3.*.amazonaws.com", "s3.us-east-1.amazonaws.com"));
        assert!(!host_matches("s3.*.amazonaws.com", "s3.evil.com.amazonaws.com"));
        assert!(!host_matches("s3.*.amazonaws.com", "sqs.us-east-1.amazonaws.com"));
        assert!(!host_matches("s3.*.amazonaws.com", "s3..amazonaws.com"));
        assert!(check_host_glob("s3.*.amazonaws.com").is_ok());
        for bad in ["zendesk.*", "*.*.com", "s3.*", "*", "a.**.example.com", "*.*.amazonaws.com"] {
            assert!(check_host_glob(bad).is_err(), "{bad}");
        }
        assert!(check_host_glob("*.okta.com").is_ok());
        assert!(check_host_glob("login.example.com").is_ok());
        for bad in ["*.com", "*", "*.*.com", "a..b", "evil.example/x", "-a.com", ""] {
            assert!(check_host_glob(bad).is_err(), "{bad}");
        }
    }
}
