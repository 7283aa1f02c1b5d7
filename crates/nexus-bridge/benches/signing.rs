//! Signing throughput per strategy (`cargo bench -p nexus-bridge`), next to a
//! baseline measured in the same run: building the same request unsigned.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use nexus_core::strategy::{Strategy, StrategyType};
use serde_json::{json, Map, Value};

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn request() -> http::Request<Vec<u8>> {
    http::Request::post("https://api.example.com/v1/items?b=2&a=1")
        .header("content-type", "application/json")
        .body(br#"{"name":"widget","count":3}"#.to_vec())
        .expect("static request")
}

fn strategies() -> Vec<(&'static str, Strategy, Map<String, Value>)> {
    let s = |kind, config: Value| Strategy::from_parts(kind, obj(config)).unwrap();
    vec![
        ("oauth2", s(StrategyType::Oauth2, json!({})), obj(json!({"access_token": "at-123"}))),
        (
            "header",
            s(StrategyType::Header, json!({"header_name": "Authorization", "value_prefix": "Bearer "})),
            obj(json!({"api_key": "k"})),
        ),
        ("query_param", s(StrategyType::QueryParam, json!({"param_name": "key"})), obj(json!({"api_key": "k"}))),
        ("basic_auth", s(StrategyType::BasicAuth, json!({})), obj(json!({"username": "u", "password": "p"}))),
        (
            "hmac_payload",
            s(StrategyType::HmacPayload, json!({"header_name": "X-Sig", "algo": "sha256", "encoding": "hex"})),
            obj(json!({"api_secret": "s"})),
        ),
        (
            "aws_sigv4",
            s(StrategyType::AwsSigv4, json!({"service": "bedrock", "region": "us-east-1"})),
            obj(json!({"access_key": "AKID", "secret_key": "secret", "session_token": "tok"})),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("sign");
    group.throughput(Throughput::Elements(1));
    group.bench_function("baseline_unsigned_request", |b| b.iter(|| black_box(request())));
    for (name, strategy, creds) in strategies() {
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut req = request();
                nexus_bridge::apply(&mut req, &strategy, &creds).expect("signs");
                black_box(req)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
