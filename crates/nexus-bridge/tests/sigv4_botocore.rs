//! The Bridge's SigV4 signatures checked against an independent signer:
//! botocore (the signer of the AWS SDK for Python), pinned in
//! `testkit/python/requirements.txt`, signs the same request at the same
//! instant and must produce byte-for-byte the same headers.
//!
//! Every case runs in one Python process. botocore's `SigV4Auth.add_auth`
//! decides by itself which headers it adds (`X-Amz-Date`,
//! `X-Amz-Security-Token`, `X-Amz-Content-SHA256` for S3) and signs, so the
//! comparison covers the header set as well as the `Authorization` value.

use nexus_core::strategy::{Strategy, StrategyType};
use nexus_testkit::json_object;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

/// 2024-02-29T23:59:59Z: a leap day, one second before the date in the
/// credential scope changes.
const SIGNED_AT: u64 = 1_709_251_199;

const BOTOCORE_SIGNER: &str = r#"
import datetime, json, sys
import botocore.auth
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

def recording(base):
    class Recording(base):
        def canonical_request(self, request):
            self.recorded = super().canonical_request(request)
            return self.recorded
    return Recording

out = {}
for case in json.load(sys.stdin):
    now = datetime.datetime.fromtimestamp(case["timestamp"], datetime.timezone.utc).replace(tzinfo=None)
    botocore.auth.get_current_datetime = lambda *args, now=now, **kwargs: now
    request = AWSRequest(method=case["method"], url=case["url"], data=bytes.fromhex(case["body_hex"]))
    for name, value in case["headers"]:
        request.headers[name] = value  # appends, so repeated headers stay repeated
    creds = Credentials(case["access_key"], case["secret_key"], case["session_token"])
    base = S3SigV4Auth if case["service"] == "s3" else SigV4Auth
    auth = recording(base)(creds, case["service"], case["region"])
    auth.add_auth(request)
    headers = {}
    for name, value in request.headers.items():
        headers.setdefault(name.lower(), []).append(value)
    out[case["name"]] = {"headers": headers, "canonical_request": auth.recorded}
json.dump(out, sys.stdout)
"#;

/// One request to sign, as both sides see it.
#[derive(Debug, Clone, Serialize)]
struct Case {
    name: &'static str,
    method: &'static str,
    url: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body_hex: String,
    access_key: &'static str,
    secret_key: &'static str,
    session_token: Option<&'static str>,
    service: &'static str,
    region: &'static str,
    timestamp: u64,
}

#[derive(Debug, Deserialize)]
struct BotocoreAnswer {
    headers: BTreeMap<String, Vec<String>>,
    canonical_request: String,
}

fn case(name: &'static str, method: &'static str, url: &'static str) -> Case {
    Case {
        name,
        method,
        url,
        headers: Vec::new(),
        body_hex: String::new(),
        access_key: "AKIDEXAMPLE",
        secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        session_token: None,
        service: "service",
        region: "us-east-1",
        timestamp: SIGNED_AT,
    }
}

fn cases() -> Vec<Case> {
    let binary: Vec<u8> = (0..=255u8).chain(b"\r\n\0tail".iter().copied()).collect();
    vec![
        case("get", "GET", "https://example.amazonaws.com/"),
        Case {
            headers: vec![("accept", "application/json"), ("x-custom", "  spaced   out  value ")],
            ..case("get_with_port_path_and_trimmed_header", "GET", "http://127.0.0.1:4566/some/deep/path")
        },
        Case {
            headers: vec![("content-type", "application/json")],
            body_hex: hex::encode(r#"{"prompt":"Human: héllo\n\nAssistant:","max_tokens":10}"#),
            service: "bedrock",
            region: "eu-west-1",
            ..case(
                "post_json_body",
                "POST",
                "https://bedrock-runtime.eu-west-1.amazonaws.com/model/anthropic.claude-v2:1/invoke",
            )
        },
        Case {
            headers: vec![("content-type", "application/octet-stream")],
            body_hex: hex::encode(&binary),
            ..case("put_binary_body", "PUT", "https://example.amazonaws.com/upload")
        },
        case(
            "query_with_reserved_characters",
            "GET",
            "https://example.amazonaws.com/items?b=2&a=1&key=a%20b&x=~._-&y=%2F&c=3&c=1&empty=&z=%E2%82%AC",
        ),
        Case {
            headers: vec![("content-type", "application/x-www-form-urlencoded; charset=utf-8")],
            body_hex: hex::encode("Action=GetCallerIdentity&Version=2011-06-15"),
            session_token: Some("FwoGZXIvYXdzEBYaDExampleSessionToken+/=="),
            service: "sts",
            ..case("post_with_session_token", "POST", "https://sts.amazonaws.com/")
        },
        Case {
            session_token: Some("FwoGZXIvYXdzEBYaDExampleSessionToken+/=="),
            ..case("get_with_session_token_and_query", "GET", "https://example.amazonaws.com/?list-type=2&prefix=a%2Fb")
        },
        Case {
            headers: vec![("x-amz-meta-note", "one"), ("x-amz-meta-note", "two")],
            ..case("repeated_header", "GET", "https://example.amazonaws.com/")
        },
        case("path_with_encoded_space_and_dot_segments", "GET", "https://example.amazonaws.com/a/./b/../c%20d/"),
        Case {
            headers: vec![("content-type", "text/plain")],
            body_hex: hex::encode("hello s3"),
            service: "s3",
            ..case("s3_put_object_with_encoded_key", "PUT", "https://bucket.s3.amazonaws.com/dir/my%20file.txt")
        },
        Case {
            service: "s3",
            ..case("s3_list_objects", "GET", "https://bucket.s3.amazonaws.com/?list-type=2&prefix=dir%2F")
        },
        Case { service: "s3", ..case("s3_key_with_dot_segments", "GET", "https://bucket.s3.amazonaws.com/a/./b/../c") },
    ]
}

/// What the Bridge puts on the request: every header, lower-cased, in order.
fn sign_with_bridge(case: &Case) -> BTreeMap<String, Vec<String>> {
    let mut builder = http::Request::builder().method(case.method).uri(case.url);
    for (name, value) in &case.headers {
        builder = builder.header(*name, *value);
    }
    let mut req = builder.body(hex::decode(&case.body_hex).unwrap()).unwrap();
    let strategy = Strategy::from_parts(
        StrategyType::AwsSigv4,
        json_object(json!({"service": case.service, "region": case.region})),
    )
    .unwrap();
    let mut creds = json_object(json!({"access_key": case.access_key, "secret_key": case.secret_key}));
    if let Some(token) = case.session_token {
        creds.insert("session_token".into(), token.into());
    }
    let at = UNIX_EPOCH + Duration::from_secs(case.timestamp);
    nexus_bridge::strategies::apply_at(&mut req, &strategy, &creds, at)
        .unwrap_or_else(|e| panic!("{}: the bridge could not sign: {e}", case.name));
    let mut headers = BTreeMap::<String, Vec<String>>::new();
    for (name, value) in req.headers() {
        headers.entry(name.as_str().to_owned()).or_default().push(value.to_str().unwrap().to_owned());
    }
    headers
}

#[test]
fn sigv4_headers_match_botocore_for_every_request_shape() {
    let cases = cases();
    let stdout = nexus_testkit::python::run_script(BOTOCORE_SIGNER, &serde_json::to_vec(&cases).unwrap())
        .expect("botocore signs the cases");
    let answers: BTreeMap<String, BotocoreAnswer> = serde_json::from_str(&stdout).expect("botocore's answer is JSON");

    let mut mismatches = Vec::new();
    for case in &cases {
        let ours = sign_with_bridge(case);
        let theirs = &answers[case.name];
        if ours != theirs.headers {
            mismatches.push(format!(
                "{}:\n  bridge:   {ours:?}\n  botocore: {:?}\n  botocore canonical request:\n{}",
                case.name, theirs.headers, theirs.canonical_request
            ));
        }
    }
    assert!(mismatches.is_empty(), "SigV4 differs from botocore:\n{}", mismatches.join("\n"));

    // The comparison is only worth something if the cases cover what they claim.
    let signed = |name: &str| sign_with_bridge(cases.iter().find(|c| c.name == name).expect("a case of that name"));
    let post = signed("post_json_body");
    assert!(post["authorization"][0].contains("/eu-west-1/bedrock/aws4_request"), "{post:?}");
    assert!(post["authorization"][0].starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240229/"), "{post:?}");
    let token = signed("post_with_session_token");
    assert!(token["authorization"][0].contains("x-amz-security-token"), "the session token is signed: {token:?}");
    assert!(!token.contains_key("x-amz-content-sha256"), "non-S3 services send no payload-hash header");
    let s3 = signed("s3_put_object_with_encoded_key");
    assert_eq!(s3["x-amz-content-sha256"], [hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"hello s3"))]);
}

#[test]
fn sigv4_credential_scope_follows_the_signing_instant_across_midnight() {
    let base = case("t", "GET", "https://example.amazonaws.com/");
    let next_day = Case { timestamp: SIGNED_AT + 1, ..base.clone() };
    let (a, b) = (sign_with_bridge(&base), sign_with_bridge(&next_day));
    assert_eq!(a["x-amz-date"], ["20240229T235959Z"]);
    assert_eq!(b["x-amz-date"], ["20240301T000000Z"]);
    assert!(b["authorization"][0].contains("/20240301/us-east-1/"), "{b:?}");
    assert_ne!(a["authorization"], b["authorization"]);
}
