//! `nexus proxy` as a process in front of a real Nexus: each strategy reaches
//! a recording upstream correctly signed, an OAuth2 connection reaches the real
//! provider's userinfo and heals after the provider revokes the access token,
//! and a connection that needs consent again is a clear 409.

use nexus_testkit::flows::{connect, register, setup};
use nexus_testkit::moto::{xml, Moto, ACCOUNT};
use nexus_testkit::upstream::{capture_connection, odd_upstream, recording_upstream, schema, static_connection};
use nexus_testkit::{Backend, TestApp};
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_nexus");

/// Starts `nexus proxy` for `app`; returns the child and its base URL.
async fn sidecar(app: &TestApp) -> (Child, String) {
    sidecar_with(app, &[]).await
}

/// [`sidecar`] with more arguments.
async fn sidecar_with(app: &TestApp, extra: &[&str]) -> (Child, String) {
    sidecar_at(&app.base_url, &app.api_key, extra).await
}

/// `nexus proxy` for the Gateway at `gateway`.
async fn sidecar_at(gateway: &str, api_key: &str, extra: &[&str]) -> (Child, String) {
    let mut cmd = Command::new(BIN);
    for var in nexus_testkit::process::CONFIG_VARS {
        cmd.env_remove(var);
    }
    let mut child = cmd
        .args(["proxy", "--listen", "127.0.0.1:0", "--gateway", gateway])
        .args(extra)
        .env("API_KEY", api_key)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line =
        tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.expect("proxy starts").unwrap().unwrap();
    let url = line.split_whitespace().find(|w| w.starts_with("http://")).expect("listening line").to_owned();
    (child, url)
}

/// `GET path` on a fresh connection, sent byte for byte; the status and the raw answer.
async fn raw_get(base: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let status = answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_signs_each_strategy() {
    nexus_testkit::run_bounded(async {
        let app = TestApp::spawn(Backend::Sqlite).await;
        let (addr, seen) = recording_upstream().await;
        let base = format!("http://{addr}/api");
        let header = static_connection(&app, "hdr", json!({"auth_type": "api_key", "api_base_url": base, "params": {"credential_schema": schema(&["api_key"])}}), json!({"api_key": "hdr-key-2"})).await;
        let query = static_connection(&app, "qry", json!({"auth_type": "api_key", "api_base_url": base, "params": {"auth_strategy": "query_param", "param_name": "k", "credential_schema": schema(&["api_key"])}}), json!({"api_key": "qry-key-2"})).await;
        let basic = static_connection(&app, "bas", json!({"auth_type": "basic_auth", "api_base_url": base, "params": {"credential_schema": schema(&["username", "password"])}}), json!({"username": "ann", "password": "pw"})).await;
        let hmac = static_connection(&app, "mac", json!({"auth_type": "hmac_payload", "api_base_url": base, "params": {"header_name": "X-Sig", "credential_schema": schema(&["api_secret"])}}), json!({"api_secret": "shh"})).await;
        let (_child, proxy) = sidecar(&app).await;
        for id in [&header, &query, &basic, &hmac] {
            let resp = client().put(format!("{proxy}/{id}/things?z=9")).header("x-trace", "t1").body("payload").send().await.unwrap();
            assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
        }
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 4);
        for s in &seen {
            assert_eq!((s.method.as_str(), s.body.as_slice()), ("PUT", b"payload".as_slice()));
            assert_eq!(s.header("x-trace"), Some("t1"));
            assert!(s.header("x-api-key").is_none());
        }
        assert_eq!(seen[0].header("authorization"), Some("Bearer hdr-key-2"));
        assert_eq!(seen[1].uri, "/api/things?z=9&k=qry-key-2");
        assert_eq!(seen[2].header("authorization"), Some("Basic YW5uOnB3"));
        // HMAC-SHA256("shh", "payload"), hex, computed independently of the bridge.
        let expected = {
            use hmac::Mac;
            let mut m = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(b"shh").unwrap();
            m.update(b"payload");
            hex::encode(m.finalize().into_bytes())
        };
        assert_eq!(seen[3].header("x-sig"), Some(expected.as_str()));
        // Unknown connection: the Gateway's 404 comes through as JSON.
        let missing = client().get(format!("{proxy}/nope/x")).send().await.unwrap();
        assert_eq!(missing.status(), 404);
        assert_eq!(missing.json::<Value>().await.unwrap()["code"], "not_found");

        // A provider nobody listens for: a JSON 502 that says so.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let gone = static_connection(&app, "gone", json!({"auth_type": "api_key", "api_base_url": format!("http://{closed}"), "params": {"credential_schema": schema(&["api_key"])}}), json!({"api_key": "k"})).await;
        let unreachable = client().get(format!("{proxy}/{gone}/x")).send().await.unwrap();
        assert_eq!(unreachable.status(), 502);
        assert_eq!(unreachable.json::<Value>().await.unwrap()["code"], "provider_unreachable");
    })
    .await;
}

async fn sidecar_relays_answers_as_they_are_and_refuses_what_it_cannot_send(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let addr = odd_upstream().await;
    let provider = json!({"auth_type": "api_key", "api_base_url": format!("http://{addr}/api"), "params": {"credential_schema": schema(&["api_key"])}});
    let id = static_connection(&app, "odd", provider, json!({"api_key": "k"})).await;
    // A base URL the policy accepts but no HTTP request can name (a host not in ASCII).
    let idn_provider = json!({"auth_type": "api_key", "api_base_url": "https://bücher.example/api", "params": {"credential_schema": schema(&["api_key"])}});
    let idn = static_connection(&app, "idn", idn_provider, json!({"api_key": "k"})).await;
    let (_child, proxy) = sidecar(&app).await;
    let http = client();

    // The provider's error, status, type and body unchanged; its cookie dropped.
    let teapot = http.get(format!("{proxy}/{id}/teapot")).send().await.unwrap();
    assert_eq!(teapot.status(), 418);
    assert_eq!(teapot.headers()["content-type"], "text/plain");
    assert_eq!(teapot.headers()["etag"], "\"v1\"");
    assert!(teapot.headers().get("set-cookie").is_none());
    assert_eq!(teapot.text().await.unwrap(), "short and stout");

    // A large body arrives whole; HEAD gets the head alone.
    let body = http.get(format!("{proxy}/{id}/big")).send().await.unwrap().bytes().await.unwrap();
    assert_eq!((body.len(), body.iter().all(|b| *b == b'n')), (3 << 20, true));
    let head = http.head(format!("{proxy}/{id}/big")).send().await.unwrap();
    assert_eq!((head.status().as_u16(), head.headers()["content-length"].to_str().unwrap()), (200, "3145728"));
    assert!(head.bytes().await.unwrap().is_empty());

    // The agent's encoding reaches the provider as written: an encoded
    // `?`, `#` or `/` stays in the path; the query is the agent's.
    let echoed = http.get(format!("{proxy}/{id}/files/a%3Fb%23c%2Fd?x=1&y=%26")).send().await.unwrap();
    assert_eq!(echoed.text().await.unwrap(), "/api/files/a%3Fb%23c%2Fd?x=1&y=%26");

    // Many requests on one kept-alive agent connection, and some that close theirs.
    for n in 0..20 {
        let mut req = http.get(format!("{proxy}/{id}/n{n}"));
        if n % 5 == 0 {
            req = req.header("connection", "close");
        }
        assert_eq!(req.send().await.unwrap().text().await.unwrap(), format!("/api/n{n}"));
    }

    // What the sidecar refuses, it explains in JSON and sends nothing.
    let refusals = [
        (http.get(format!("{proxy}/")), 404, "not_found"),
        (http.get(format!("{proxy}/{id}/a%2F..%2F..%2Fadmin")), 400, "invalid_input"),
        (http.post(format!("{proxy}/{id}/upload")).body(vec![0u8; 10 * 1024 * 1024 + 1]), 413, "payload_too_large"),
        (http.get(format!("{proxy}/{idn}/x")), 409, "provider_misconfigured"),
    ];
    for (req, status, code) in refusals {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), status);
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert_eq!(resp.json::<Value>().await.unwrap()["code"], code);
    }
    // HTTP clients resolve `%2e%2e` before sending; a raw request does not.
    let (status, body) = raw_get(&proxy, &format!("/{id}/a/%2e%2e/%2E%2E/admin")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"invalid_input\"") && body.contains("dot segments"), "{body}");
}

nexus_testkit::both_backends!(sidecar_relays_answers_as_they_are_and_refuses_what_it_cannot_send);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_reaches_userinfo_heals_and_reports_attention_required() {
    nexus_testkit::run_bounded(async {
        let (app, idp) = setup(Backend::Sqlite, "client_secret_post").await;
        register(&app, &idp, "idp", true, "client_secret_post").await;
        let id = connect(&app, "idp", json!(["openid", "email", "offline_access"])).await;
        let (_child, proxy) = sidecar(&app).await;
        let me = client().get(format!("{proxy}/{id}/me")).send().await.unwrap();
        assert_eq!(me.status(), 200);
        assert_eq!(me.json::<Value>().await.unwrap()["sub"], "alice");

        idp.revoke_all_access_tokens().await.unwrap();
        idp.reset().await.unwrap();
        let healed = client().get(format!("{proxy}/{id}/me")).send().await.unwrap();
        assert_eq!(healed.status(), 200, "the sidecar refreshed once and retried");
        assert_eq!(idp.stats().await.unwrap().refresh_requests, 1);

        // The typed AttentionRequired error, through the bridge and through the sidecar
        // (on a second connection: forced refreshes right after one are coalesced).
        let id = connect(&app, "idp", json!(["openid", "offline_access"])).await;
        idp.fail_token_endpoint(400, Some("invalid_grant"), 1).await.unwrap();
        let forced = app.post(&format!("/v1/refresh/{id}"), &json!({})).await;
        assert_eq!(forced.status, 409);
        let bridge = nexus_bridge::Bridge::new(app.base_url.clone(), app.api_key.clone());
        match bridge.credentials(&id).await {
            Err(nexus_bridge::GatewayError::AttentionRequired(c)) => assert_eq!(c, id),
            other => panic!("expected AttentionRequired, got {other:?}"),
        }
        let refused = client().get(format!("{proxy}/{id}/me")).send().await.unwrap();
        assert_eq!(refused.status(), 409);
        assert_eq!(refused.json::<Value>().await.unwrap()["code"], "attention_required");
    })
    .await;
}

/// STS `GetCallerIdentity` as an AWS query-protocol POST, through `proxy_url`
/// (the sidecar's or the gateway's URL for the connection).
async fn get_caller_identity(proxy_url: &str, api_key: Option<&str>) -> (u16, String) {
    let mut req = client()
        .post(proxy_url)
        .header("content-type", "application/x-www-form-urlencoded; charset=utf-8")
        .body("Action=GetCallerIdentity&Version=2011-06-15");
    if let Some(key) = api_key {
        req = req.header("x-api-key", key);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_verifies_sigv4_made_by_both_proxies_and_refuses_a_wrong_secret() {
    // Outside the test deadline: the first test to need it installs the pinned venv.
    let moto = Moto::start(3).await;
    nexus_testkit::run_bounded(async {
        let (key, secret) =
            moto.create_user_with_key("nexus-proxy", &["sts:GetCallerIdentity", "s3:ListAllMyBuckets"]).await;
        // From here on moto verifies every signature with botocore.
        let app = TestApp::spawn(Backend::Sqlite).await;
        // A templated region (SPEC 10) with a default: each connection
        // signs for its own region.
        let provider = |service: &str| {
            json!({"auth_type": "aws_sigv4", "api_base_url": moto.base_url,
                   "params": {"service": service, "region": "{region}",
                              "connection_config_schema": {"type": "object", "properties": {
                                  "region": {"type": "string", "pattern": "^[a-z]{2}(-[a-z]+)+-[0-9]$", "default": "us-east-1"}}},
                              "credential_schema": schema(&["access_key", "secret_key"])}})
        };
        let right =
            static_connection(&app, "sts", provider("sts"), json!({"access_key": key, "secret_key": secret})).await;
        let creds = json!({"access_key": key, "secret_key": secret});
        let eu = capture_connection(&app, "sts", json!({"region": "eu-west-1"}), creds).await;
        let hostile = app.post("/v1/request-connection", &json!({"provider_name": "sts", "return_url": "https://app.example.test/", "connection_config": {"region": "us-east-1/x"}})).await;
        assert_eq!(hostile.status, 400, "{}", hostile.text);
        for (id, region) in [(&right, "us-east-1"), (&eu, "eu-west-1")] {
            let token = app.get(&format!("/v1/token/{id}")).await;
            assert_eq!(token.json["strategy"]["config"]["region"], region, "{}", token.text);
        }
        let wrong = static_connection(
            &app,
            "sts-wrong",
            provider("sts"),
            json!({"access_key": key, "secret_key": format!("{secret}x")}),
        )
        .await;
        let (_child, proxy) = sidecar(&app).await;

        let (status, body) = get_caller_identity(&format!("{proxy}/{right}/"), None).await;
        assert_eq!(status, 200, "through nexus proxy: {body}\n{}", moto.stderr_tail());
        assert_eq!(xml(&body, "Arn"), format!("arn:aws:iam::{ACCOUNT}:user/nexus-proxy"));
        let (status, body) = get_caller_identity(&app.url(&format!("/v1/proxy/{right}/")), Some(&app.api_key)).await;
        assert_eq!(status, 200, "through the gateway proxy: {body}\n{}", moto.stderr_tail());
        assert_eq!(xml(&body, "Arn"), format!("arn:aws:iam::{ACCOUNT}:user/nexus-proxy"));
        // The connection in eu-west-1, through both proxies and the Bridge.
        for url in [format!("{proxy}/{eu}/"), app.url(&format!("/v1/proxy/{eu}/"))] {
            let (status, body) = get_caller_identity(&url, Some(&app.api_key)).await;
            assert_eq!(status, 200, "{url}: {body}\n{}", moto.stderr_tail());
            assert_eq!(xml(&body, "Arn"), format!("arn:aws:iam::{ACCOUNT}:user/nexus-proxy"));
        }
        let bridge = nexus_bridge::Bridge::new(app.base_url.clone(), app.api_key.clone());
        let identity = || {
            http::Request::post(&moto.base_url)
                .header("content-type", "application/x-www-form-urlencoded; charset=utf-8")
                .body(b"Action=GetCallerIdentity&Version=2011-06-15".to_vec())
                .unwrap()
        };
        let mut signed = identity();
        bridge.sign(&eu, &mut signed).await.unwrap();
        let scope = signed.headers()["authorization"].to_str().unwrap().to_owned();
        assert!(scope.contains("/eu-west-1/sts/aws4_request"), "{scope}");
        let bridged = bridge.send(&eu, identity()).await.unwrap();
        let status = bridged.status();
        assert_eq!(status, 200, "through the Bridge: {}", bridged.text().await.unwrap_or_default());

        for url in [format!("{proxy}/{wrong}/"), app.url(&format!("/v1/proxy/{wrong}/"))] {
            let (status, body) = get_caller_identity(&url, Some(&app.api_key)).await;
            assert_eq!(status, 403, "moto refuses a wrong secret ({url}): {body}");
            assert!(body.contains("SignatureDoesNotMatch"), "{body}");
        }

        // The catalog's S3 template (SPEC 12): its service, templated region
        // and credential fields, with only its host moved to moto.
        let created = app.post("/v1/providers", &json!({"template": "aws-s3", "api_base_url": moto.base_url})).await;
        assert_eq!(created.status, 201, "{}", created.text);
        let s3 = capture_connection(&app, "aws-s3", json!({"region": "eu-west-1"}), json!({"access_key": key, "secret_key": secret})).await;
        for url in [format!("{proxy}/{s3}/"), app.url(&format!("/v1/proxy/{s3}/"))] {
            let resp = reqwest::Client::new().get(&url).header("x-api-key", &app.api_key).send().await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap();
            assert_eq!(status, 200, "{url}: {body}\n{}", moto.stderr_tail());
            assert!(body.contains("ListAllMyBucketsResult"), "{body}");
        }
        let mut signed = http::Request::get(format!("{}/", moto.base_url)).body(Vec::new()).unwrap();
        bridge.sign(&s3, &mut signed).await.unwrap();
        let scope = signed.headers()["authorization"].to_str().unwrap().to_owned();
        assert!(scope.contains("/eu-west-1/s3/aws4_request"), "{scope}");
    })
    .await;
}

/// Agent connections beyond `--max-connections` are told so at once (503)
/// rather than each getting a task; a freed slot serves again. The Host and
/// browser checks are on through the real binary, with `--allow-host`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_caps_agent_connections_and_answers_its_own_names_only() {
    use tokio::io::AsyncWriteExt;
    nexus_testkit::run_bounded(async {
        let app = TestApp::spawn(Backend::Sqlite).await;
        let (addr, _seen) = recording_upstream().await;
        let provider = json!({"auth_type": "api_key", "api_base_url": format!("http://{addr}/api"), "params": {"credential_schema": schema(&["api_key"])}});
        let id = static_connection(&app, "capped", provider, json!({"api_key": "k-capped"})).await;
        let (_child, proxy) = sidecar_with(&app, &["--max-connections", "2", "--allow-host", "agents.internal"]).await;
        let listen = proxy.trim_start_matches("http://").to_owned();
        // Two agent connections held open (idle, between requests).
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut stream = tokio::net::TcpStream::connect(&listen).await.unwrap();
            stream.write_all(format!("GET /{id}/x HTTP/1.1\r\nhost: {listen}\r\n\r\n").as_bytes()).await.unwrap();
            held.push(stream);
        }
        // Both requests are answered and the connections stay open: the
        // third connection is over the limit.
        let check = format!("/{id}/x");
        let (status, answer) = raw_get(&proxy, &check).await;
        assert_eq!(status, 503, "{answer}");
        assert!(answer.contains("too_many_connections") && answer.contains("retry-after: 1"), "{answer}");
        // A freed slot serves again.
        drop(held.pop());
        let mut served = 0;
        for _ in 0..50 {
            if raw_get(&proxy, &check).await.0 == 200 {
                served += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(served, 1, "a freed slot serves again");
        drop(held);
        // Names: the listen address and --allow-host pass; another name is refused.
        let port = listen.rsplit(':').next().unwrap();
        for (host, expected) in [(listen.clone(), 200), (format!("agents.internal:{port}"), 200), (format!("rebind.example:{port}"), 403)] {
            let mut stream = tokio::net::TcpStream::connect(&listen).await.unwrap();
            stream.write_all(format!("GET /{id}/x HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes()).await.unwrap();
            let mut answer = String::new();
            tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut answer).await.unwrap();
            assert!(answer.starts_with(&format!("HTTP/1.1 {expected} ")), "{host}: {answer}");
        }
    })
    .await;
}

/// Sum of the `token.retrieved` counts the Gateway recorded for `id`: how
/// often a proxy or Bridge fetched its answer.
async fn fetches(app: &TestApp, id: &str) -> u64 {
    app.state.flush_audit().await;
    let page = app.get(&format!("/v1/audit?event_type=token.retrieved&connection_id={id}&limit=1000")).await;
    page.json["entries"].as_array().unwrap().iter().map(|e| e["data"]["count"].as_u64().unwrap_or(1)).sum()
}

/// Polls `check` every 50 ms until it holds (at most 10 s); how long it took.
async fn until(mut check: impl AsyncFnMut() -> bool) -> Duration {
    let started = std::time::Instant::now();
    while !check().await {
        assert!(started.elapsed() < Duration::from_secs(10), "the change never took effect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// A revocation, a provider deletion and an `api_base_url` change reach a
/// running `nexus proxy` and a Bridge: through the invalidation stream
/// within 2 s (with a `max_age` of 30 s, so only the stream explains it),
/// or, with the stream held back by a middlebox, within `max_age` (3 s).
async fn changes_reach_running_proxies(backend: Backend, blocked: bool) {
    let max_age = if blocked { 3 } else { 30 };
    let app = TestApp::spawn_with(backend, |c| c.token_max_age = Some(max_age.to_string())).await;
    let (old_host, _) = recording_upstream().await;
    let (new_host, seen_new) = recording_upstream().await;
    let provider = |host: std::net::SocketAddr| json!({"auth_type": "api_key", "api_base_url": format!("http://{host}/api"), "params": {"credential_schema": schema(&["api_key"])}});
    let revoked = static_connection(&app, "revoke-me", provider(old_host), json!({"api_key": "k-revoke"})).await;
    let deleted = static_connection(&app, "delete-me", provider(old_host), json!({"api_key": "k-delete"})).await;
    let moved = static_connection(&app, "move-me", provider(old_host), json!({"api_key": "k-move"})).await;
    let forwarder = nexus_testkit::forwarder::stalling(app.addr, "/v1/invalidations").await;
    let gateway = if blocked { format!("http://{}", forwarder.addr) } else { app.base_url.clone() };
    let (_child, proxy) = sidecar_at(&gateway, &app.api_key, &[]).await;
    let bridge = nexus_bridge::Bridge::new(gateway, app.api_key.clone());
    let http = client();
    let get = |id: &str| http.get(format!("{proxy}/{id}/x")).send();
    let ids = [&revoked, &deleted, &moved];
    // Warm both caches; once the followers' streams have said `ready`
    // (which empties them), warm them again and check that they hold.
    for _ in 0..2 {
        for id in ids {
            assert_eq!(get(id).await.unwrap().status(), 200);
            bridge.credentials(id).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for id in ids {
        assert_eq!(get(id).await.unwrap().status(), 200);
        bridge.credentials(id).await.unwrap();
    }
    let mut warmed = Vec::new();
    for id in ids {
        warmed.push(fetches(&app, id).await);
    }
    for id in ids {
        assert_eq!(get(id).await.unwrap().status(), 200);
        bridge.credentials(id).await.unwrap();
    }
    let mut after = Vec::new();
    for id in ids {
        after.push(fetches(&app, id).await);
    }
    assert_eq!(warmed, after, "both caches serve without asking the Gateway");

    let limit = if blocked { Duration::from_millis(max_age * 1000 + 500) } else { Duration::from_secs(2) };
    let mut measured = Vec::new();

    // Before each change, both caches hold a fresh answer of the connection
    // it affects; both are then polled at once.
    let warm = async |id: &str| {
        assert_eq!(get(id).await.unwrap().status(), 200);
        bridge.credentials(id).await.unwrap();
    };

    warm(&revoked).await;
    assert_eq!(app.delete(&format!("/v1/connections/{revoked}")).await.status, 200);
    let (at_proxy, in_bridge) = tokio::join!(
        until(async || get(&revoked).await.unwrap().status() == 409),
        until(async || bridge.credentials(&revoked).await.is_err()),
    );
    measured.push(("revocation", at_proxy, in_bridge));

    warm(&deleted).await;
    assert_eq!(app.delete("/v1/providers/delete-me").await.status, 200);
    let (at_proxy, in_bridge) = tokio::join!(
        until(async || get(&deleted).await.unwrap().status() == 410),
        until(async || matches!(bridge.credentials(&deleted).await, Err(nexus_bridge::GatewayError::Gone(_)))),
    );
    measured.push(("provider deletion", at_proxy, in_bridge));

    warm(&moved).await;
    let new_base = format!("http://{new_host}/api");
    assert_eq!(app.patch("/v1/providers/move-me", &json!({"api_base_url": new_base})).await.status, 200);
    let (at_proxy, in_bridge) = tokio::join!(
        until(async || {
            let _ = get(&moved).await;
            !seen_new.lock().unwrap().is_empty()
        }),
        until(async || bridge.credentials(&moved).await.unwrap().api_base_url() == Some(new_base.as_str())),
    );
    measured.push(("api_base_url change", at_proxy, in_bridge));

    for (what, at_proxy, in_bridge) in &measured {
        println!(
            "{what} (stream {}): nexus proxy {at_proxy:?}, Bridge {in_bridge:?}",
            if blocked { "blocked" } else { "up" }
        );
        assert!(*at_proxy <= limit && *in_bridge <= limit, "{what}: {at_proxy:?} / {in_bridge:?}, limit {limit:?}");
    }
    if blocked {
        assert!(forwarder.stalled() >= 2, "both followers tried the stream and were held back");
    }
}

async fn changes_reach_running_proxies_through_the_stream(backend: Backend) {
    changes_reach_running_proxies(backend, false).await
}

async fn changes_reach_running_proxies_within_max_age_when_the_stream_is_blocked(backend: Backend) {
    changes_reach_running_proxies(backend, true).await
}

nexus_testkit::both_backends!(
    changes_reach_running_proxies_through_the_stream,
    changes_reach_running_proxies_within_max_age_when_the_stream_is_blocked
);

/// `nexus proxy --metrics-bind`: its requests by status and the latency it
/// adds, exactly as many as were sent, in a text `promtool` accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_metrics_count_its_answers() {
    nexus_testkit::run_bounded(async {
        let app = TestApp::spawn(Backend::Sqlite).await;
        let (addr, _seen) = recording_upstream().await;
        let provider = json!({"auth_type": "api_key", "api_base_url": format!("http://{addr}/api"), "params": {"credential_schema": schema(&["api_key"])}});
        let id = static_connection(&app, "metered", provider, json!({"api_key": "k-metered"})).await;
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let bind = format!("127.0.0.1:{port}");
        let (_child, proxy) = sidecar_with(&app, &["--metrics-bind", &bind]).await;
        for _ in 0..3 {
            let resp = client().get(format!("{proxy}/{id}/x")).send().await.unwrap();
            assert_eq!(resp.status(), 200);
        }
        let missing = client().get(format!("{proxy}/")).send().await.unwrap();
        assert_eq!(missing.status(), 404);
        let text = reqwest::get(format!("http://{bind}/metrics")).await.unwrap().text().await.unwrap();
        assert!(text.contains("nexus_proxy_requests_total{proxy=\"sidecar\",status=\"200\"} 3\n"), "{text}");
        assert!(text.contains("nexus_proxy_requests_total{proxy=\"sidecar\",status=\"404\"} 1\n"), "{text}");
        assert!(text.contains("nexus_proxy_added_seconds_count{proxy=\"sidecar\"} 3\n"), "{text}");
        assert!(!text.contains(&id), "no connection id in a label");
        nexus_testkit::promtool::check(&text);
    })
    .await;
}

/// `nexus proxy` and the Bridge with an `agent` key (SPEC 13): they serve
/// its workspace's connections, not another's; once the key is revoked
/// both stop serving within 2 s (their invalidation stream is closed and
/// what they cached is dropped), though answers may live 30 s.
async fn a_revoked_agent_key_stops_its_proxies(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.token_max_age = Some("30".into())).await;
    let (host, _) = recording_upstream().await;
    let provider = json!({"auth_type": "api_key", "api_base_url": format!("http://{host}/api"),
                          "params": {"credential_schema": schema(&["api_key"])}});
    let id = static_connection(&app, "svc", provider, json!({"api_key": "k-agent"})).await;
    let other = app
        .post(
            "/v1/request-connection",
            &json!({"workspace_id": "elsewhere", "provider_name": "svc", "return_url": "https://app.example.test/"}),
        )
        .await;
    let other = other.json["connection_id"].as_str().unwrap().to_owned();
    let created = app.post("/v1/api-keys", &json!({"name": "agent-w", "role": "agent", "workspaces": ["w"]})).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let (key_id, agent) =
        (created.json["id"].as_str().unwrap().to_owned(), created.json["key"].as_str().unwrap().to_owned());

    let (_child, proxy) = sidecar_at(&app.base_url, &agent, &[]).await;
    let bridge = nexus_bridge::Bridge::new(app.base_url.clone(), agent.clone());
    let http = client();
    let get = |id: &str| http.get(format!("{proxy}/{id}/x")).send();
    for _ in 0..2 {
        assert_eq!(get(&id).await.unwrap().status(), 200);
        bridge.credentials(&id).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(get(&other).await.unwrap().status(), 404, "another workspace's connection does not exist for this key");
    assert!(bridge.credentials(&other).await.is_err());
    assert_eq!(get(&id).await.unwrap().status(), 200);
    bridge.credentials(&id).await.unwrap();

    assert_eq!(app.delete(&format!("/v1/api-keys/{key_id}")).await.status, 200);
    let (at_proxy, in_bridge) = tokio::join!(
        until(async || get(&id).await.unwrap().status() != 200),
        until(async || bridge.credentials(&id).await.is_err()),
    );
    println!("a revoked agent key: nexus proxy stopped after {at_proxy:?}, Bridge after {in_bridge:?}");
    assert!(at_proxy <= Duration::from_secs(2) && in_bridge <= Duration::from_secs(2), "{at_proxy:?} / {in_bridge:?}");
    let refused = get(&id).await.unwrap();
    assert_eq!(refused.status(), 502);
    assert!(refused.text().await.unwrap().contains("gateway_refused_api_key"));
}

nexus_testkit::both_backends!(a_revoked_agent_key_stops_its_proxies);
