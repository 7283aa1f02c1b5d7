//! The Bridge's `hmac_payload` signatures checked against Python's standard
//! `hmac` module, for every algorithm and encoding, with and without a
//! `value_prefix`, over bodies that are not text. All cases go to one Python
//! process.

use nexus_core::strategy::{Strategy, StrategyType};
use nexus_testkit::json_object;
use serde::Serialize;
use serde_json::json;

const PYTHON_HMAC: &str = r#"
import base64, hashlib, hmac, json, sys
out = []
for case in json.load(sys.stdin):
    mac = hmac.new(case["secret"].encode("utf-8"), bytes.fromhex(case["body_hex"]), getattr(hashlib, case["algo"])).digest()
    encoded = mac.hex() if case["encoding"] == "hex" else base64.b64encode(mac).decode("ascii")
    out.append(case["prefix"] + encoded)
json.dump(out, sys.stdout)
"#;

#[derive(Debug, Serialize)]
struct Case {
    algo: &'static str,
    encoding: &'static str,
    prefix: &'static str,
    secret: String,
    body_hex: String,
}

fn bodies() -> Vec<Vec<u8>> {
    vec![
        Vec::new(),
        (0..=255u8).rev().chain(0..=255u8).collect(),
        "{\"event\":\"push\",\"note\":\"héllo ✓\"}\r\n\0".as_bytes().to_vec(),
    ]
}

fn secrets() -> Vec<String> {
    // Short, non-ASCII, and longer than SHA-512's 128-byte block (hashed first).
    vec!["s3cr3t".into(), "clé-ß-🔑".into(), "k".repeat(200)]
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for algo in ["sha256", "sha1", "sha512"] {
        for encoding in ["hex", "base64"] {
            for prefix in ["", "sha256="] {
                for (i, body) in bodies().into_iter().enumerate() {
                    let secret = secrets()[i % 3].clone();
                    cases.push(Case { algo, encoding, prefix, secret, body_hex: hex::encode(body) });
                }
            }
        }
    }
    cases
}

fn sign_with_bridge(case: &Case) -> String {
    let mut config = json!({"header_name": "X-Hub-Signature", "algo": case.algo, "encoding": case.encoding});
    if !case.prefix.is_empty() {
        config["value_prefix"] = case.prefix.into();
    }
    let strategy = Strategy::from_parts(StrategyType::HmacPayload, json_object(config)).unwrap();
    let mut req =
        http::Request::post("https://hooks.example.com/in").body(hex::decode(&case.body_hex).unwrap()).unwrap();
    let creds = json_object(json!({"api_secret": case.secret}));
    nexus_bridge::apply(&mut req, &strategy, &creds).unwrap_or_else(|e| panic!("{case:?}: {e}"));
    req.headers()["x-hub-signature"].to_str().unwrap().to_owned()
}

#[test]
fn hmac_payload_matches_python_hmac_for_every_algo_encoding_and_prefix() {
    let cases = cases();
    assert_eq!(cases.len(), 3 * 2 * 2 * 3);
    let stdout = nexus_testkit::python::run_script(PYTHON_HMAC, &serde_json::to_vec(&cases).unwrap())
        .expect("Python computes the HMACs");
    let expected: Vec<String> = serde_json::from_str(&stdout).expect("Python's answer is JSON");
    assert_eq!(expected.len(), cases.len());
    let mismatches: Vec<String> = cases
        .iter()
        .zip(&expected)
        .filter_map(|(case, want)| {
            let got = sign_with_bridge(case);
            (got != *want).then(|| {
                format!("{} {} prefix={:?}: bridge {got} python {want}", case.algo, case.encoding, case.prefix)
            })
        })
        .collect();
    assert!(mismatches.is_empty(), "HMAC differs from Python:\n{}", mismatches.join("\n"));
}
