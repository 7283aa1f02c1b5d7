//! A table of hostile and malformed requests: each gets the right 4xx JSON
//! error, and nothing is written (no provider row, no audit row, no change).

use crate::providers::github;
use nexus_testkit::{both_backends, Backend, TestApp};
use serde_json::{json, Value};

enum Body {
    Json(Value),
    Raw(&'static str, Vec<u8>),
    None,
}

struct Case {
    what: &'static str,
    method: &'static str,
    path: String,
    body: Body,
    status: u16,
    code: &'static str,
    /// A field the message must name (empty: no check).
    mentions: &'static str,
}

fn schema() -> Value {
    json!({"type": "object", "required": ["api_key"], "properties": {"api_key": {"type": "string"}}})
}

fn api_key(name: &str) -> Value {
    json!({"name": name, "auth_type": "api_key", "params": {"credential_schema": schema()}})
}

fn with(mut base: Value, key: &str, value: Value) -> Value {
    base.as_object_mut().unwrap().insert(key.into(), value);
    base
}

fn without(mut base: Value, key: &str) -> Value {
    base.as_object_mut().unwrap().remove(key);
    base
}

fn hmac(params: Value) -> Value {
    let mut p = json!({"credential_schema": schema(), "header_name": "X-Sig", "algo": "sha256", "encoding": "hex"});
    for (k, v) in params.as_object().unwrap() {
        p[k] = v.clone();
    }
    json!({"name": "signer", "auth_type": "hmac_payload", "params": p})
}

fn post(what: &'static str, body: Value, status: u16, code: &'static str, mentions: &'static str) -> Case {
    Case { what, method: "POST", path: "/v1/providers".into(), body: Body::Json(body), status, code, mentions }
}

fn cases(dead_issuer: &str) -> Vec<Case> {
    let gh = || github("gh-new", "case-secret-value");
    vec![
        post("missing name", without(api_key("x"), "name"), 400, "invalid_input", "name"),
        post("uppercase name", api_key("GitHub"), 400, "invalid_input", "name"),
        post("name with space", api_key("my provider"), 400, "invalid_input", "name"),
        post("name too long", api_key(&"a".repeat(64)), 400, "invalid_input", "name"),
        post("name starting with dash", api_key("-x"), 400, "invalid_input", "name"),
        post("reserved name metadata", api_key("metadata"), 400, "invalid_input", "name"),
        post("reserved name by-name", api_key("by-name"), 400, "invalid_input", "name"),
        post("uuid-shaped name", api_key("123e4567-e89b-12d3-a456-426614174000"), 400, "invalid_input", "name"),
        post("name is a number", with(api_key("x"), "name", json!(42)), 400, "invalid_input", "name"),
        post("duplicate name", api_key("existing"), 409, "name_taken", "name"),
        post("unknown auth_type", with(api_key("x"), "auth_type", json!("saml")), 400, "invalid_input", "auth_type"),
        post("missing auth_type", without(api_key("x"), "auth_type"), 400, "invalid_input", "auth_type"),
        post("oauth2 without client_id", without(gh(), "client_id"), 400, "invalid_input", "client_id"),
        post("oauth2 without client_secret", without(gh(), "client_secret"), 400, "invalid_input", "client_secret"),
        post(
            "oauth2 with empty client_secret",
            with(gh(), "client_secret", json!("")),
            400,
            "invalid_input",
            "client_secret",
        ),
        post("oauth2 without token_url", without(gh(), "token_url"), 400, "invalid_input", "token_url"),
        post("oauth2 without auth_url", without(gh(), "auth_url"), 400, "invalid_input", "auth_url"),
        post(
            "discovery without issuer",
            with(without(without(gh(), "auth_url"), "token_url"), "enable_discovery", json!(true)),
            400,
            "invalid_input",
            "issuer",
        ),
        post(
            "bad oauth2 auth_header",
            with(gh(), "auth_header", json!("client_secret_jwt")),
            400,
            "invalid_input",
            "auth_header",
        ),
        post(
            "api_key without credential_schema",
            json!({"name": "x", "auth_type": "api_key"}),
            400,
            "invalid_input",
            "params.credential_schema",
        ),
        post(
            "basic_auth without credential_schema",
            json!({"name": "x", "auth_type": "basic_auth", "params": {}}),
            400,
            "invalid_input",
            "params.credential_schema",
        ),
        post(
            "query_param without credential_schema",
            json!({"name": "x", "auth_type": "query_param", "params": {"param_name": "k"}}),
            400,
            "invalid_input",
            "params.credential_schema",
        ),
        post(
            "aws_sigv4 without service",
            json!({"name": "x", "auth_type": "aws_sigv4", "params": {"region": "us-east-1", "credential_schema": schema()}}),
            400,
            "invalid_input",
            "params.service",
        ),
        post(
            "aws_sigv4 without region",
            json!({"name": "x", "auth_type": "aws_sigv4", "params": {"service": "s3", "credential_schema": schema()}}),
            400,
            "invalid_input",
            "params.region",
        ),
        post("hmac with unknown algo", hmac(json!({"algo": "md5"})), 400, "invalid_input", "params.algo"),
        post(
            "hmac with unknown encoding",
            hmac(json!({"encoding": "base32"})),
            400,
            "invalid_input",
            "params.encoding",
        ),
        post(
            "hmac with bad header name",
            hmac(json!({"header_name": "X Sig: 1"})),
            400,
            "invalid_input",
            "params.header_name",
        ),
        post(
            "api_key with unknown auth_strategy",
            with(api_key("x"), "params", json!({"credential_schema": schema(), "auth_strategy": "cookie"})),
            400,
            "invalid_input",
            "params.auth_strategy",
        ),
        post(
            "schema that is not a schema",
            with(api_key("x"), "params", json!({"credential_schema": {"type": "nope"}})),
            400,
            "invalid_input",
            "params.credential_schema",
        ),
        post(
            "schema that is a string",
            with(api_key("x"), "params", json!({"credential_schema": "object"})),
            400,
            "invalid_input",
            "params.credential_schema",
        ),
        post(
            "skip_scope_on_auth not boolean",
            with(gh(), "params", json!({"skip_scope_on_auth": "yes"})),
            400,
            "invalid_input",
            "params.skip_scope_on_auth",
        ),
        post(
            "authorization_params not an object",
            with(gh(), "params", json!({"authorization_params": ["a"]})),
            400,
            "invalid_input",
            "params.authorization_params",
        ),
        post("scopes is a string", with(gh(), "scopes", json!("repo user")), 400, "invalid_input", "scopes"),
        post("scope with a space", with(gh(), "scopes", json!(["repo user"])), 400, "invalid_input", "scopes[0]"),
        post(
            "enable_discovery is a string",
            with(gh(), "enable_discovery", json!("yes")),
            400,
            "invalid_input",
            "enable_discovery",
        ),
        post("params is an array", with(api_key("x"), "params", json!([1])), 400, "invalid_input", "params"),
        post(
            "plain http to a public host",
            with(gh(), "auth_url", json!("http://example.com/authorize")),
            400,
            "invalid_input",
            "auth_url",
        ),
        post(
            "userinfo in a URL",
            with(gh(), "token_url", json!("https://good.example@evil.example/token")),
            400,
            "invalid_input",
            "token_url",
        ),
        post("not a URL", with(gh(), "api_base_url", json!("not a url")), 400, "invalid_input", "api_base_url"),
        post("javascript URL", with(gh(), "auth_url", json!("javascript:alert(1)")), 400, "invalid_input", "auth_url"),
        post(
            "unknown top-level field",
            with(api_key("x"), "clientSecret", json!("s")),
            400,
            "invalid_input",
            "clientSecret",
        ),
        post(
            "static type with discovery",
            with(api_key("x"), "enable_discovery", json!(true)),
            400,
            "invalid_input",
            "enable_discovery",
        ),
        post(
            "discovery pointing at nothing",
            json!({"name": "dead", "auth_type": "oauth2", "client_id": "c", "client_secret": "dead-secret", "issuer": dead_issuer, "enable_discovery": true}),
            400,
            "discovery_failed",
            "issuer",
        ),
        post("NUL in a string", api_key("bad\u{0}name"), 400, "invalid_input", ""),
        post("body is an array", json!([api_key("x")]), 400, "invalid_input", "body"),
        post("body is null", Value::Null, 400, "invalid_input", "body"),
        Case {
            what: "malformed JSON",
            method: "POST",
            path: "/v1/providers".into(),
            body: Body::Raw("application/json", b"{\"name\": ".to_vec()),
            status: 400,
            code: "malformed_json",
            mentions: "",
        },
        Case {
            what: "invalid UTF-8",
            method: "POST",
            path: "/v1/providers".into(),
            body: Body::Raw("application/json", vec![b'"', 0xff, 0xfe, b'"']),
            status: 400,
            code: "malformed_json",
            mentions: "",
        },
        Case {
            what: "wrong content type",
            method: "POST",
            path: "/v1/providers".into(),
            body: Body::Raw("text/plain", b"name=x".to_vec()),
            status: 415,
            code: "unsupported_media_type",
            mentions: "",
        },
        Case {
            what: "huge body",
            method: "POST",
            path: "/v1/providers".into(),
            body: Body::Raw("application/json", huge_body()),
            status: 413,
            code: "payload_too_large",
            mentions: "",
        },
        Case {
            what: "deeply nested body",
            method: "POST",
            path: "/v1/providers".into(),
            body: Body::Raw("application/json", deep_body()),
            status: 400,
            code: "",
            mentions: "",
        },
        Case {
            what: "unknown id",
            method: "GET",
            path: "/v1/providers/no-such-provider".into(),
            body: Body::None,
            status: 404,
            code: "not_found",
            mentions: "",
        },
        Case {
            what: "unknown uuid",
            method: "GET",
            path: "/v1/providers/123e4567-e89b-12d3-a456-426614174000".into(),
            body: Body::None,
            status: 404,
            code: "not_found",
            mentions: "",
        },
        Case {
            what: "patch unknown id",
            method: "PATCH",
            path: "/v1/providers/nope".into(),
            body: Body::Json(json!({"description": "x"})),
            status: 404,
            code: "not_found",
            mentions: "",
        },
        Case {
            what: "put unknown id",
            method: "PUT",
            path: "/v1/providers/nope".into(),
            body: Body::Json(api_key("nope")),
            status: 404,
            code: "not_found",
            mentions: "",
        },
        Case {
            what: "delete unknown id",
            method: "DELETE",
            path: "/v1/providers/nope".into(),
            body: Body::None,
            status: 404,
            code: "not_found",
            mentions: "",
        },
        Case {
            what: "patch to an invalid auth_type",
            method: "PATCH",
            path: "/v1/providers/existing".into(),
            body: Body::Json(json!({"auth_type": "nope"})),
            status: 400,
            code: "invalid_input",
            mentions: "auth_type",
        },
        Case {
            what: "patch removing the schema",
            method: "PATCH",
            path: "/v1/providers/existing".into(),
            body: Body::Json(json!({"params": {"credential_schema": null}})),
            status: 400,
            code: "invalid_input",
            mentions: "params.credential_schema",
        },
        Case {
            what: "patch to a taken name",
            method: "PATCH",
            path: "/v1/providers/existing".into(),
            body: Body::Json(json!({"name": "other"})),
            status: 409,
            code: "name_taken",
            mentions: "name",
        },
        Case {
            what: "patch secret with a number",
            method: "PATCH",
            path: "/v1/providers/other".into(),
            body: Body::Json(json!({"client_secret": 5})),
            status: 400,
            code: "invalid_input",
            mentions: "client_secret",
        },
        Case {
            what: "put without auth_type",
            method: "PUT",
            path: "/v1/providers/existing".into(),
            body: Body::Json(json!({"name": "existing"})),
            status: 400,
            code: "invalid_input",
            mentions: "auth_type",
        },
        Case {
            what: "list with unknown auth_type",
            method: "GET",
            path: "/v1/providers?auth_type=saml".into(),
            body: Body::None,
            status: 400,
            code: "invalid_input",
            mentions: "auth_type",
        },
        Case {
            what: "list with unknown filter",
            method: "GET",
            path: "/v1/providers?colour=red".into(),
            body: Body::None,
            status: 400,
            code: "invalid_input",
            mentions: "colour",
        },
        Case {
            what: "audit with bad limit",
            method: "GET",
            path: "/v1/audit?limit=-3".into(),
            body: Body::None,
            status: 400,
            code: "invalid_input",
            mentions: "limit",
        },
        Case {
            what: "audit with bad time",
            method: "GET",
            path: "/v1/audit?since=yesterday".into(),
            body: Body::None,
            status: 400,
            code: "invalid_input",
            mentions: "since",
        },
        Case {
            what: "audit with unknown event type",
            method: "GET",
            path: "/v1/audit?event_type=provider.exploded".into(),
            body: Body::None,
            status: 400,
            code: "invalid_input",
            mentions: "event_type",
        },
        Case {
            what: "audit with bad cursor",
            method: "GET",
            path: "/v1/audit?cursor=abc".into(),
            body: Body::None,
            status: 400,
            code: "invalid_input",
            mentions: "cursor",
        },
        Case {
            what: "unknown route",
            method: "GET",
            path: "/v1/nothing-here".into(),
            body: Body::None,
            status: 404,
            code: "not_found",
            mentions: "",
        },
        Case {
            what: "wrong method",
            method: "DELETE",
            path: "/v1/providers".into(),
            body: Body::None,
            status: 405,
            code: "method_not_allowed",
            mentions: "",
        },
    ]
}

fn huge_body() -> Vec<u8> {
    let big = "x".repeat(400 * 1024);
    json!({"name": "huge", "auth_type": "api_key", "description": big}).to_string().into_bytes()
}

fn deep_body() -> Vec<u8> {
    let mut s = String::new();
    for _ in 0..200 {
        s.push_str("{\"a\":");
    }
    s.push('1');
    for _ in 0..200 {
        s.push('}');
    }
    s.into_bytes()
}

/// Everything a bad request could have changed.
async fn snapshot(app: &TestApp) -> (i64, i64, Vec<String>) {
    let providers = app.store().list_providers(&Default::default()).await.unwrap();
    let rows = providers
        .iter()
        .map(|p| {
            format!(
                "{}|{}|{:?}|{:?}|{}",
                p.id,
                serde_json::to_string(&p.config).unwrap(),
                p.client_secret_enc,
                p.discovery,
                p.updated_at
            )
        })
        .collect();
    (app.store().count_providers().await.unwrap(), app.audit_count().await, rows)
}

async fn bad_input_is_refused_and_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(app.post("/v1/providers", &api_key("existing")).await.status, 201);
    assert_eq!(app.post("/v1/providers", &github("other", "other-secret-value")).await.status, 201);
    // A loopback port with nothing listening.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_issuer = format!("http://127.0.0.1:{}", dead.local_addr().unwrap().port());
    drop(dead);

    let table = cases(&dead_issuer);
    assert!(table.len() >= 30);
    let before = snapshot(&app).await;
    for case in table {
        let method = reqwest::Method::from_bytes(case.method.as_bytes()).unwrap();
        let mut req = app.client.request(method, app.url(&case.path)).header("x-api-key", &app.api_key);
        req = match case.body {
            Body::Json(v) => req.header("content-type", "application/json").body(v.to_string()),
            Body::Raw(ct, bytes) => req.header("content-type", ct).body(bytes),
            Body::None => req,
        };
        let resp = app.send(req).await;
        assert_eq!(resp.status, case.status, "{}: {}", case.what, resp.text);
        assert!(
            resp.content_type().starts_with("application/json"),
            "{}: content type {}",
            case.what,
            resp.content_type()
        );
        assert!(!resp.code().is_empty() && resp.json["message"].is_string(), "{}: {}", case.what, resp.text);
        if !case.code.is_empty() {
            assert_eq!(resp.code(), case.code, "{}: {}", case.what, resp.text);
        }
        if !case.mentions.is_empty() {
            assert!(
                resp.json["message"].as_str().unwrap().contains(case.mentions),
                "{}: message should name {}: {}",
                case.what,
                case.mentions,
                resp.text
            );
        }
        assert_eq!(snapshot(&app).await, before, "{} changed stored state", case.what);
    }
    app.assert_no_secret_in_responses();
}

async fn missing_or_wrong_api_key_is_401_and_audited(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let none = app.send(app.client.get(app.url("/v1/providers"))).await;
    assert_eq!((none.status, none.code()), (401, "unauthorized"));
    let wrong = app
        .send(
            app.client
                .post(app.url("/v1/providers"))
                .header("x-api-key", "nope")
                .header("user-agent", "probe/1")
                .json(&api_key("x")),
        )
        .await;
    assert_eq!((wrong.status, wrong.code()), (401, "unauthorized"));
    assert_eq!(app.store().count_providers().await.unwrap(), 0);
    let audit = app.get("/v1/audit?event_type=auth.rejected").await;
    let entries = audit.json["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["data"]["reason"], "invalid_api_key");
    assert_eq!(entries[0]["user_agent"], "probe/1");
    assert_eq!(entries[0]["ip"], "127.0.0.1");
    assert_eq!(entries[1]["data"]["reason"], "missing_api_key");
    assert!(!audit.text.contains(nexus_testkit::TEST_API_KEY));
    // Health and readiness need no key.
    assert_eq!(app.send(app.client.get(app.url("/health"))).await.status, 200);
    let ready = app.send(app.client.get(app.url("/ready"))).await;
    assert_eq!((ready.status, ready.json["status"].as_str()), (200, Some("ready")));
}

/// A wrong type, a missing field or an unusable query value is a 400 whose
/// `details.fields` names it, the same on every route; an empty query value
/// is a value like any other (SPEC 9, issue 17).
async fn every_refusal_names_its_field_in_details(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(app.post("/v1/providers", &api_key("named")).await.status, 201);
    let before = snapshot(&app).await;
    let bodies = [
        (
            "/v1/request-connection",
            json!({"workspace_id": {}, "provider_name": "named", "return_url": "https://a.example/"}),
            "workspace_id",
        ),
        (
            "/v1/request-connection",
            json!({"provider_name": "named", "return_url": "https://a.example/"}),
            "workspace_id",
        ),
        (
            "/v1/request-connection",
            json!({"workspace_id": "w", "provider_name": ["named"], "return_url": "https://a.example/"}),
            "provider_name",
        ),
        ("/v1/capture-credential", json!({"state": "s", "credentials": "api_key=1"}), "credentials"),
        ("/v1/capture-credential", json!({"credentials": {}}), "state"),
        ("/v1/providers", json!({"name": "x", "auth_type": "api_key", "scopes": "openid"}), "scopes"),
        (
            "/v1/providers",
            json!({"name": "x", "auth_type": "api_key", "params": {"credential_schema": schema()}, "display_name": "a\u{7}b"}),
            "display_name",
        ),
    ];
    for (path, body, field) in bodies {
        let resp = app.post(path, &body).await;
        assert_eq!(resp.status, 400, "{path} {body}: {}", resp.text);
        assert_eq!(resp.code(), "invalid_input", "{path} {body}: {}", resp.text);
        assert_eq!(resp.json["details"]["fields"][0]["field"], field, "{path} {body}: {}", resp.text);
    }
    for (query, field) in [
        ("/v1/connections?limit=0", "limit"),
        ("/v1/connections?limit=ten", "limit"),
        ("/v1/connections?limit=99999999999999999999", "limit"),
        ("/v1/connections?status=", "status"),
        ("/v1/connections?status=asleep", "status"),
        ("/v1/connections?colour=red", "colour"),
        ("/v1/providers?auth_type=", "auth_type"),
        ("/v1/audit?event_type=", "event_type"),
        ("/v1/audit?limit=", "limit"),
        ("/v1/audit?since=", "since"),
        ("/v1/audit?cursor=", "cursor"),
        ("/v1/capture-schema?state=", "state"),
        ("/v1/capture-schema", "state"),
    ] {
        let resp = app.get(query).await;
        assert_eq!(resp.status, 400, "{query}: {}", resp.text);
        let fields = &resp.json["details"]["fields"];
        let named = fields[0]["field"].as_str() == Some(field)
            || resp.json["message"].as_str().is_some_and(|m| m.starts_with(field));
        assert!(named, "{query}: {}", resp.text);
        assert!(
            !resp.text.contains("asleep") && !resp.text.contains("ten\""),
            "the value is not echoed: {}",
            resp.text
        );
    }
    // An empty text filter matches what equals it: nothing here.
    assert_eq!(app.get("/v1/connections?workspace_id=").await.json, json!([]));
    assert_eq!(app.get("/v1/providers?category=").await.json, json!([]));
    // Larger limits than served are capped, as documented.
    assert_eq!(app.get("/v1/connections?limit=2147483648").await.status, 200);
    assert_eq!(app.get("/v1/audit?limit=5000").await.status, 200);
    assert_eq!(snapshot(&app).await, before, "nothing was written");
}

/// A NUL inside the free-form members (`params`, `metadata`, `credentials`)
/// is stored as a JSON escape and comes back as it was, on PostgreSQL too;
/// one anywhere else (a name, a filter) is still a 400 that writes nothing.
async fn nul_is_kept_inside_free_form_members_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let params = json!({"credential_schema": schema(), "odd\u{0}key": "odd\u{0}value", "nested": {"k": ["\u{0}"]}});
    let created =
        app.post("/v1/providers", &json!({"name": "nul-params", "auth_type": "api_key", "params": params})).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let stored = app.get("/v1/providers/nul-params").await;
    assert_eq!(stored.json["params"]["odd\u{0}key"], "odd\u{0}value");
    assert_eq!(stored.json["params"]["nested"]["k"][0], "\u{0}");
    let metadata = json!({"note\u{0}": "a\u{0}b"});
    let req = app
        .post("/v1/request-connection", &json!({"workspace_id": "w", "provider_name": "nul-params", "return_url": "https://app.example.test/", "metadata": metadata}))
        .await;
    assert_eq!(req.status, 200, "{}", req.text);
    let listed = app.get("/v1/connections?workspace_id=w").await;
    assert_eq!(listed.json[0]["metadata"], metadata);
    let before = snapshot(&app).await;
    for (path, body) in [
        (
            "/v1/request-connection",
            json!({"workspace_id": "w\u{0}", "provider_name": "nul-params", "return_url": "https://app.example.test/"}),
        ),
        (
            "/v1/providers",
            json!({"name": "x", "auth_type": "api_key", "category": "c\u{0}", "params": {"credential_schema": schema()}}),
        ),
    ] {
        let resp = app.post(path, &body).await;
        assert_eq!((resp.status, resp.code()), (400, "invalid_input"), "{path}: {}", resp.text);
    }
    assert_eq!(app.get("/v1/connections?workspace_id=w%00").await.status, 400);
    assert_eq!(snapshot(&app).await, before, "nothing was written");
}

both_backends!(
    nul_is_kept_inside_free_form_members_only,
    bad_input_is_refused_and_changes_nothing,
    missing_or_wrong_api_key_is_401_and_audited,
    every_refusal_names_its_field_in_details
);
