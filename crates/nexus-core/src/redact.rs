//! Keeping secrets out of text that Nexus logs, stores or answers with.
//!
//! Two sources of text carry secrets by accident:
//! * a provider's own words (`error_description`, a refusal's body), which a
//!   careless or hostile provider fills with the request it was sent — the
//!   client secret, the authorization code, the PKCE verifier. A [`Masker`]
//!   knows every secret of one exchange and masks each in the text, in the
//!   forms a provider may echo it (as sent, form- or percent-encoded,
//!   JSON-escaped), removes control characters and bounds its length;
//! * serde's messages, which quote the value they could not read
//!   (``invalid type: integer `123`, expected a string``).
//!   [`serde_message`] keeps what was expected and drops what was found.

use std::fmt::Write as _;

/// What a masked secret reads as.
pub const MASK: &str = "[redacted]";

/// Longest provider text kept, in characters.
pub const MAX_PROVIDER_TEXT: usize = 200;

/// Secrets shorter than this are not masked: masking `ok` or `1` would
/// garble every message and hide nothing worth hiding.
const MIN_SECRET_LEN: usize = 4;

/// The secrets of one exchange, to mask in whatever text it produces.
#[derive(Clone, Default)]
pub struct Masker {
    /// Every form a secret may take in text, longest first.
    forms: Vec<String>,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masker").field("secrets", &self.forms.len()).finish()
    }
}

impl Masker {
    pub fn new() -> Masker {
        Masker::default()
    }

    /// Adds `secret`, in every form a provider may echo it in.
    pub fn add(&mut self, secret: &str) {
        if secret.chars().count() < MIN_SECRET_LEN {
            return;
        }
        let form: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        let percent = form.replace('+', "%20");
        let json = serde_json::Value::String(secret.to_owned()).to_string();
        let json = json[1..json.len() - 1].to_owned();
        // Some encoders write percent escapes in lower case (`%2b`).
        let (form_lower, percent_lower) = (lower_escapes(&form), lower_escapes(&percent));
        for variant in [secret.to_owned(), form, percent, json, form_lower, percent_lower] {
            if !self.forms.contains(&variant) {
                self.forms.push(variant);
            }
        }
        // Longest first, so a secret that contains another is masked whole.
        self.forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    }

    /// [`Masker::add`] for each.
    pub fn with<'a>(mut self, secrets: impl IntoIterator<Item = &'a str>) -> Masker {
        secrets.into_iter().for_each(|s| self.add(s));
        self
    }

    /// Whether no secret is known.
    pub fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }

    /// `text` with every known secret masked, control characters made
    /// spaces, and at most [`MAX_PROVIDER_TEXT`] characters long (cut after
    /// masking, so a cut cannot leave part of a secret behind).
    pub fn mask(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for form in &self.forms {
            if out.contains(form.as_str()) {
                out = out.replace(form.as_str(), MASK);
            }
        }
        bounded(&out, MAX_PROVIDER_TEXT)
    }
}

/// `text` with the hex digits of its `%XX` escapes in lower case.
fn lower_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut after_percent = 0;
    for c in text.chars() {
        if after_percent > 0 {
            out.push(c.to_ascii_lowercase());
            after_percent -= 1;
        } else {
            out.push(c);
            if c == '%' {
                after_percent = 2;
            }
        }
    }
    out
}

/// `text` without control characters (a provider's text must not forge a
/// log line), cut to `max` characters with an ellipsis.
pub fn bounded(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max * 4));
    for (n, c) in text.chars().enumerate() {
        if n == max {
            out.push('…');
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

/// A serde error as a sentence that names what was expected and never the
/// value that was found: `invalid type: integer `123`, expected a string`
/// becomes `invalid type, expected a string`.
pub fn serde_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    // serde_json appends the position; it names no value.
    let message = match full.rfind(" at line ") {
        Some(at) => &full[..at],
        None => full.as_str(),
    };
    without_value(message)
}

/// [`serde_message`] for a message already made (serde's `Error::custom`
/// texts, or serde_json's without the position).
pub fn without_value(message: &str) -> String {
    for kind in ["invalid type", "invalid value", "unknown variant"] {
        let rest = message.strip_prefix(kind).and_then(|r| r.strip_prefix(": ").or_else(|| r.strip_prefix(' ')));
        if let Some(rest) = rest {
            let mut out = kind.to_owned();
            if let Some((_, expected)) = rest.rsplit_once(", expected ") {
                let _ = write!(out, ", expected {expected}");
            }
            return out;
        }
    }
    if let Some(rest) = message.strip_prefix("invalid length ") {
        if let Some((_, expected)) = rest.rsplit_once(", expected ") {
            return format!("invalid length, expected {expected}");
        }
    }
    message.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_a_secret_is_masked() {
        let masker = Masker::new().with(["s3cr+t/&=x", "code-123456"]);
        for echoed in [
            "client_secret=s3cr%2Bt%2F%26%3Dx&code=code-123456",
            "client_secret=s3cr%2bt%2f%26%3dx",
            "bad secret s3cr+t/&=x",
            r#"{"client_secret":"s3cr+t/&=x"}"#,
            "s3cr%2Bt%2F%26%3Dx",
        ] {
            let masked = masker.mask(echoed);
            assert!(!masked.contains("s3cr") && !masked.contains("code-123456"), "{echoed} -> {masked}");
            assert!(masked.contains(MASK), "{masked}");
        }
        assert_eq!(masker.mask("nothing here"), "nothing here");
    }

    #[test]
    fn a_secret_inside_another_is_masked_whole() {
        let masker = Masker::new().with(["abcd", "xxabcdxx"]);
        assert_eq!(masker.mask("xxabcdxx and abcd"), "[redacted] and [redacted]");
    }

    #[test]
    fn short_values_are_left_and_text_is_bounded_and_flat() {
        let masker = Masker::new().with(["ok"]);
        assert!(masker.is_empty());
        let long = "é".repeat(500);
        let cut = masker.mask(&long);
        assert_eq!(cut.chars().count(), MAX_PROVIDER_TEXT + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(bounded("a\nforged: line\r\u{1b}[31m", 100), "a forged: line  [31m");
    }

    #[test]
    fn serde_messages_keep_the_expectation_and_drop_the_value() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct T {
            s: String,
            n: u32,
            e: Option<E>,
            v: Vec<u8>,
        }
        #[derive(Debug, serde::Deserialize)]
        #[serde(rename_all = "lowercase")]
        enum E {
            One,
        }
        let cases = [
            (r#"{"s": 987654321, "n": 1, "v": []}"#, "invalid type, expected a string", "987654321"),
            (r#"{"s": "x", "n": "hunter2-secret", "v": []}"#, "invalid type, expected u32", "hunter2"),
            (r#"{"s": "x", "n": 99999999999, "v": []}"#, "invalid value, expected u32", "99999999999"),
            (r#"{"s": "x", "n": 1, "e": "sekrit-variant", "v": []}"#, "unknown variant, expected `one`", "sekrit"),
            (r#"{"s": "x", "n": 1, "v": [300]}"#, "invalid value, expected u8", "300"),
        ];
        for (json, expected, hidden) in cases {
            let e = serde_json::from_str::<T>(json).unwrap_err();
            let message = serde_message(&e);
            assert_eq!(message, expected, "{e}");
            assert!(!message.contains(hidden));
        }
        let missing = serde_json::from_str::<T>(r#"{"n": 1}"#).unwrap_err();
        assert_eq!(serde_message(&missing), "missing field `s`");
    }
}
