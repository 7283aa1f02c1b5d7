//! YAML text to a small tree in which every node and every mapping key carries
//! its line, so any later check (unknown field, wrong type, a rule of
//! `nexus-core`, a missing environment variable) can say where it is.
//!
//! The parser is [`saphyr`]: pure Rust, maintained (the successor of
//! `yaml-rust`/`yaml-rust2`), YAML 1.2 (so `no`, `on` and `yes` stay strings
//! instead of turning into booleans as in YAML 1.1), with a source span on
//! every node through `MarkedYaml`, duplicate mapping keys refused with their
//! position, and a bound on alias expansion. The serde-based forks of the
//! archived `serde_yaml` (`serde_yaml_ng`, `serde_norway`) only put a position
//! in the errors raised while deserializing; a value that parses but is wrong
//! for Nexus (an unknown `auth_type`, a `${VAR}` that is not set) would lose
//! its line. Converting the marked tree ourselves keeps it for every check.

use crate::manifest::Problem;
use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

/// A YAML node and the line (1-based) where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub line: usize,
    pub value: Value,
}

/// The YAML 1.2 core-schema values a manifest may hold.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in document order; keys are unique (duplicates are refused).
    Map(Vec<Entry>),
}

/// One `key: value` of a mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    /// The line of the key, which is where a reader looks for the field.
    pub key_line: usize,
    pub value: Node,
}

impl Value {
    /// What a type error calls this value ("a string", "a list", …). Never the value itself,
    /// which may be a secret.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// Parses one YAML document. An empty text, several documents, syntax errors,
/// duplicate keys, non-string keys and custom tags are problems with their line.
pub fn parse(text: &str) -> Result<Node, Problem> {
    let docs = MarkedYaml::load_from_str(text).map_err(|e| {
        let m = e.marker();
        Problem::at(m.line(), format!("invalid YAML: {} (column {})", e.info(), m.col() + 1))
    })?;
    let mut docs = docs.into_iter();
    let Some(doc) = docs.next() else {
        return Err(Problem::at(1, "the manifest is empty; expected a `providers:` list"));
    };
    if let Some(second) = docs.next() {
        return Err(Problem::at(line_of(&second), "only one YAML document is allowed (remove the extra `---`)"));
    }
    convert(doc)
}

fn line_of(node: &MarkedYaml<'_>) -> usize {
    node.span.start.line().max(1)
}

fn convert(node: MarkedYaml<'_>) -> Result<Node, Problem> {
    let line = line_of(&node);
    let value = match node.data {
        YamlData::Value(scalar) => scalar_value(scalar, line)?,
        YamlData::Representation(raw, _, _) => Value::Str(raw.into_owned()),
        YamlData::Sequence(items) => Value::Seq(items.into_iter().map(convert).collect::<Result<_, _>>()?),
        YamlData::Mapping(map) => {
            let mut entries = Vec::with_capacity(map.len());
            for (key, value) in map {
                let key_line = line_of(&key);
                let key = match key.data {
                    YamlData::Value(Scalar::String(s)) => s.into_owned(),
                    YamlData::Value(Scalar::Integer(i)) => i.to_string(),
                    YamlData::Value(Scalar::Boolean(b)) => b.to_string(),
                    YamlData::Representation(raw, _, _) => raw.into_owned(),
                    _ => return Err(Problem::at(key_line, "mapping keys must be plain strings")),
                };
                entries.push(Entry { key, key_line, value: convert(value)? });
            }
            Value::Map(entries)
        }
        YamlData::Tagged(tag, _) => {
            return Err(Problem::at(line, format!("YAML tag `{tag}` is not supported in a manifest")));
        }
        YamlData::Alias(_) => return Err(Problem::at(line, "unresolved YAML alias")),
        YamlData::BadValue => {
            return Err(Problem::at(line, "value does not match its YAML tag (e.g. `!!int` on text)"));
        }
    };
    Ok(Node { line, value })
}

fn scalar_value(scalar: Scalar<'_>, line: usize) -> Result<Value, Problem> {
    Ok(match scalar {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(b),
        Scalar::Integer(i) => Value::Int(i),
        Scalar::FloatingPoint(f) => {
            let f = f.into_inner();
            if !f.is_finite() {
                return Err(Problem::at(line, "infinite and NaN numbers are not allowed"));
            }
            Value::Float(f)
        }
        Scalar::String(s) => Value::Str(s.into_owned()),
    })
}

/// True when `raw` written as a plain (unquoted) YAML scalar reads back as the
/// same string: used by the exporter to decide whether quotes are needed.
pub fn reads_back_as_string(raw: &str) -> bool {
    matches!(Scalar::parse_from_cow(raw.into()), Scalar::String(s) if s == raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(node: &Node) -> &[Entry] {
        match &node.value {
            Value::Map(m) => m,
            other => panic!("not a map: {other:?}"),
        }
    }

    #[test]
    fn every_key_and_value_knows_its_line() {
        let doc =
            parse("# comment\nproviders:\n  - name: github\n    scopes:\n      - repo\n      - read:user\n").unwrap();
        let top = map(&doc);
        assert_eq!((top[0].key.as_str(), top[0].key_line), ("providers", 2));
        let Value::Seq(list) = &top[0].value.value else { panic!() };
        let provider = map(&list[0]);
        assert_eq!((provider[0].key.as_str(), provider[0].key_line), ("name", 3));
        assert_eq!(provider[0].value.value, Value::Str("github".into()));
        assert_eq!(provider[1].key_line, 4);
        let Value::Seq(scopes) = &provider[1].value.value else { panic!() };
        assert_eq!(scopes.iter().map(|n| n.line).collect::<Vec<_>>(), [5, 6]);
    }

    #[test]
    fn yaml_1_2_core_schema_keeps_norway_a_string() {
        let doc = parse("a: no\nb: on\nc: true\nd: 12\ne: 1.5\nf: ~\ng: '12'\n").unwrap();
        let values: Vec<Value> = map(&doc).iter().map(|e| e.value.value.clone()).collect();
        assert_eq!(
            values,
            [
                Value::Str("no".into()),
                Value::Str("on".into()),
                Value::Bool(true),
                Value::Int(12),
                Value::Float(1.5),
                Value::Null,
                Value::Str("12".into())
            ]
        );
    }

    #[test]
    fn duplicate_keys_and_syntax_errors_have_a_line() {
        let e = parse("providers:\n  - name: a\n    name: b\n").unwrap_err();
        assert_eq!(e.line, Some(3), "{e:?}");
        let e = parse("providers:\n  - name: [a\n").unwrap_err();
        assert!(e.line.is_some() && e.message.contains("invalid YAML"), "{e:?}");
        let e = parse("").unwrap_err();
        assert!(e.message.contains("empty"));
        let e = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(e.line, Some(3), "{e:?}");
        let e = parse("a: !custom x\n").unwrap_err();
        assert_eq!(e.line, Some(1));
    }

    #[test]
    fn anchors_and_aliases_resolve() {
        let doc = parse("a: &s {type: object}\nb: *s\n").unwrap();
        let entries = map(&doc);
        assert_eq!(entries[0].value.value, entries[1].value.value);
    }

    #[test]
    fn plain_scalars_that_would_change_type_are_detected() {
        for s in ["github", "read:user", "${X}", "https://a.example/b?c=d", "a b"] {
            assert!(reads_back_as_string(s), "{s}");
        }
        for s in ["true", "12", "1e3", "null", "~", ".inf", "0x1f"] {
            assert!(!reads_back_as_string(s), "{s}");
        }
    }
}
