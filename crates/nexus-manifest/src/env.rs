//! `${VAR}` expansion in manifest strings, so secrets live in the environment
//! (or a CI secret store) and never in the reviewed file.
//!
//! Rules: `${NAME}` (NAME = `[A-Za-z_][A-Za-z0-9_]*`) is replaced by the
//! variable's value; a variable that is not set is an error, never an empty
//! string; `$$` is a literal `$`; a `$` followed by anything else is kept as
//! it is. Expansion is applied once (a value that itself contains `${…}` is not
//! expanded again) and only to string values, never to keys.

use std::fmt;

/// Why a string could not be expanded. Never contains the string itself,
/// which may hold a secret written inline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpandError {
    /// `${NAME}` names a variable that is not set.
    Missing(String),
    /// `${` without a closing `}` or with a name that is not a variable name.
    Malformed,
}

impl fmt::Display for ExpandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpandError::Missing(name) => write!(f, "environment variable {name} is not set (used as ${{{name}}})"),
            ExpandError::Malformed => f.write_str(
                "malformed ${…} reference: expected ${NAME} with letters, digits and '_' (write $$ for a literal $)",
            ),
        }
    }
}

/// Expands `raw` with `lookup` (normally `std::env::var`).
pub fn expand(raw: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
    if !raw.contains('$') {
        return Ok(raw.to_owned());
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail.find('}').ok_or(ExpandError::Malformed)?;
            let name = &tail[..end];
            if !is_var_name(name) {
                return Err(ExpandError::Malformed);
            }
            out.push_str(&lookup(name).ok_or_else(|| ExpandError::Missing(name.to_owned()))?);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Writes `value` so that [`expand`] gives it back unchanged (`$` → `$$`).
pub fn escape(value: &str) -> String {
    value.replace('$', "$$")
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SECRET" => Some("s3cr3t".into()),
            "EMPTY" => Some(String::new()),
            "TRICKY" => Some("${SECRET}$$".into()),
            _ => None,
        }
    }

    #[test]
    fn variables_are_replaced_and_dollars_escaped() {
        let cases = [
            ("plain", "plain"),
            ("${SECRET}", "s3cr3t"),
            ("a-${SECRET}-b", "a-s3cr3t-b"),
            ("${SECRET}${SECRET}", "s3cr3ts3cr3t"),
            ("$${SECRET}", "${SECRET}"),
            ("cost $5", "cost $5"),
            ("$$$$", "$$"),
            ("trailing $", "trailing $"),
            ("${EMPTY}", ""),
            ("${TRICKY}", "${SECRET}$$"),
        ];
        for (raw, want) in cases {
            assert_eq!(expand(raw, &env).unwrap(), want, "{raw}");
        }
    }

    #[test]
    fn missing_and_malformed_references_are_errors() {
        assert_eq!(expand("x ${NOPE} y", &env), Err(ExpandError::Missing("NOPE".into())));
        assert!(expand("x ${NOPE} y", &env).unwrap_err().to_string().contains("NOPE is not set"));
        for bad in ["${", "${SECRET", "${}", "${1A}", "${A-B}", "${ A}"] {
            assert_eq!(expand(bad, &env), Err(ExpandError::Malformed), "{bad}");
        }
    }

    #[test]
    fn escape_round_trips() {
        for v in ["", "a$b", "$$", "${X}", "$"] {
            assert_eq!(expand(&escape(v), &env).unwrap(), v);
        }
    }
}
