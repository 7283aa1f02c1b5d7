//! API keys with roles and workspaces (SPEC 13): every documented `/v1`
//! route called with every kind of key, on SQLite and PostgreSQL; a
//! revocation reaching another replica within a second; and a scan of
//! 10,000 wrong keys from one address that is limited without slowing a
//! good key from another.

use nexus_testkit::upstream::schema;
use nexus_testkit::{both_backends, Backend, TestApp};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Creates a key with the bootstrap key; returns (id, key).
async fn key(
    app: &TestApp,
    name: &str,
    role: &str,
    workspaces: Option<&[&str]>,
    expires_at: Option<&str>,
) -> (String, String) {
    let mut body = json!({ "name": name, "role": role });
    if let Some(w) = workspaces {
        body["workspaces"] = json!(w);
    }
    if let Some(at) = expires_at {
        body["expires_at"] = json!(at);
    }
    let resp = app.post("/v1/api-keys", &body).await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    let k = resp.json["key"].as_str().unwrap().to_owned();
    assert!(k.starts_with("nxk_"));
    (resp.json["id"].as_str().unwrap().to_owned(), k)
}

/// A captured static connection in `workspace`.
async fn connection(app: &TestApp, provider: &str, workspace: &str) -> String {
    let credentials = json!({"api_key": format!("k-{workspace}")});
    nexus_testkit::upstream::capture_connection_in(app, workspace, provider, json!({}), credentials).await
}

/// The status of `method path` with `key` (the body is not read: streams stay open otherwise).
async fn status(app: &TestApp, key: &str, method: &str, path: &str) -> u16 {
    status_from(app, &app.client, key, method, path).await
}

static SOURCES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A client calling from an address of its own (127.1.x.y): refused keys
/// count against their address, and this test is not a scan.
fn fresh_source() -> reqwest::Client {
    let n = SOURCES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let ip = std::net::Ipv4Addr::new(127, 1, (n / 250) as u8, (n % 250 + 1) as u8);
    reqwest::Client::builder().no_proxy().local_address(std::net::IpAddr::V4(ip)).build().unwrap()
}

async fn status_from(app: &TestApp, client: &reqwest::Client, key: &str, method: &str, path: &str) -> u16 {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = client.request(m.clone(), app.url(path)).header("x-api-key", key);
    if matches!(method, "POST" | "PUT" | "PATCH") {
        // Empty objects: a route that takes a body refuses it (400), so nothing changes.
        req = req.header("content-type", "application/json").body("{}");
    }
    let resp = tokio::time::timeout(Duration::from_secs(20), req.send()).await.expect("answered").expect("reachable");
    resp.status().as_u16()
}

/// What the agent role may call (SPEC 13), as (method, path template).
const AGENT_ROUTES: [(&str, &str); 9] = [
    ("GET", "/v1/token/{connection_id}"),
    ("POST", "/v1/refresh/{connection_id}"),
    ("GET", "/v1/check-connection/{id}"),
    ("GET", "/v1/connections"),
    ("GET", "/v1/providers/metadata"),
    ("GET", "/v1/invalidations"),
    ("GET", "/v1/proxy/{connection_id}/{path}"),
    ("POST", "/v1/proxy/{connection_id}/{path}"),
    ("DELETE", "/v1/proxy/{connection_id}/{path}"),
];

fn connection_scoped(template: &str) -> bool {
    template.contains("{connection_id}") || template == "/v1/check-connection/{id}"
}

async fn every_route_with_every_key(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let provider = json!({"name": "svc", "auth_type": "api_key", "api_base_url": "http://127.0.0.1:9",
                          "params": {"credential_schema": schema(&["api_key"])}});
    let created = app.post("/v1/providers", &provider).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let mine = connection(&app, "svc", "w1").await;
    let theirs = connection(&app, "svc", "w2").await;

    let (_, admin) = key(&app, "ops", "admin", None, None).await;
    let (_, agent) = key(&app, "agent-all", "agent", None, None).await;
    let (_, agent_w1) = key(&app, "agent-w1", "agent", Some(&["w1"]), None).await;
    let (_, connect) = key(&app, "front-end", "connect", None, None).await;
    let soon = (chrono::Utc::now() + chrono::Duration::minutes(10)).to_rfc3339();
    let (_, expired) = key(&app, "short-lived", "agent", None, Some(&soon)).await;
    let (revoked_id, revoked) = key(&app, "gone", "admin", None, None).await;
    assert_eq!(app.delete(&format!("/v1/api-keys/{revoked_id}")).await.status, 200);
    app.state.clock.advance(Duration::from_secs(11 * 60));

    // Every documented /v1 route (the table cannot miss one added later).
    let doc = app.send(app.client.get(app.url("/openapi.json"))).await;
    let mut routes = BTreeSet::new();
    for (path, item) in doc.json["paths"].as_object().unwrap() {
        if !path.starts_with("/v1/") {
            continue;
        }
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                routes.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    assert!(routes.len() >= 30, "{routes:?}");
    for (method, template) in AGENT_ROUTES {
        assert!(routes.contains(&(method.to_owned(), template.to_owned())), "{method} {template} is documented");
    }
    let fill = |template: &str, connection: &str| -> String {
        template
            .replace("{connection_id}", connection)
            .replace("{path}", "items")
            .replace("/v1/check-connection/{id}", &format!("/v1/check-connection/{connection}"))
            .replace("{id}", "no-such-id")
            .replace("{delivery_id}", "msg_none")
            .replace("{name}", "github")
    };
    let bootstrap = app.api_key.clone();
    let mut checked = 0;
    for (method, template) in &routes {
        // Every method and form of the proxy route is the agent's.
        let agent_may =
            template.starts_with("/v1/proxy/") || AGENT_ROUTES.contains(&(method.as_str(), template.as_str()));
        for connection in [&mine, &theirs] {
            let path = fill(template, connection);
            // The bootstrap key's answer: what an allowed key must get too.
            let expected = status(&app, &bootstrap, method, &path).await;
            assert!(![401, 403].contains(&expected), "bootstrap {method} {path}: {expected}");
            let cases: [(&str, &str, u16); 6] = [
                ("admin", &admin, expected),
                ("agent", &agent, if agent_may { expected } else { 403 }),
                (
                    "agent-w1",
                    &agent_w1,
                    match (agent_may, connection_scoped(template) && connection == &theirs) {
                        (false, _) => 403,
                        (true, true) => 404,
                        (true, false) => expected,
                    },
                ),
                (
                    "connect",
                    &connect,
                    if (method.as_str(), template.as_str()) == ("POST", "/v1/connect/sessions") {
                        expected
                    } else {
                        403
                    },
                ),
                ("expired", &expired, 401),
                ("revoked", &revoked, 401),
            ];
            for (who, k, want) in cases {
                let got = status_from(&app, &fresh_source(), k, method, &path).await;
                assert_eq!(got, want, "{who}: {method} {path}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 300, "{checked} calls checked");

    // A key limited to w1 lists w1's connections only, and nothing of w2.
    let listed = app.send(app.client.get(app.url("/v1/connections")).header("x-api-key", &agent_w1)).await;
    let ids: Vec<&str> =
        listed.json.as_array().unwrap().iter().map(|c| c["connection_id"].as_str().unwrap_or_default()).collect();
    assert_eq!(ids, [mine.as_str()], "{}", listed.text);
    let other =
        app.send(app.client.get(app.url("/v1/connections?workspace_id=w2")).header("x-api-key", &agent_w1)).await;
    assert_eq!(other.json, json!([]));
    let not_found =
        app.send(app.client.get(app.url(&format!("/v1/token/{theirs}"))).header("x-api-key", &agent_w1)).await;
    let unknown =
        app.send(app.client.get(app.url("/v1/token/no-such-connection")).header("x-api-key", &agent_w1)).await;
    assert_eq!(
        (not_found.status, &not_found.json["message"]),
        (404, &unknown.json["message"]),
        "existence is not revealed"
    );

    // Audit rows name the key that caused them; the log filters by it.
    let agent_id =
        app.get("/v1/api-keys").await.json.as_array().unwrap().iter().find(|k| k["name"] == "agent-w1").unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
    app.state.flush_audit().await;
    let by_key = app.get(&format!("/v1/audit?api_key={agent_id}&event_type=token.retrieved")).await;
    let rows = by_key.json["entries"].as_array().unwrap();
    assert!(!rows.is_empty(), "{}", by_key.text);
    assert!(rows.iter().all(|r| r["api_key"]["id"] == agent_id.as_str() && r["api_key"]["name"] == "agent-w1"));
    let forbidden = app.get(&format!("/v1/audit?api_key={agent_id}&event_type=auth.rejected")).await;
    assert!(forbidden.json["entries"].as_array().unwrap().iter().any(|r| r["data"]["reason"] == "forbidden_for_role"));
    // Keys are listed without secrets; the key itself was shown once.
    let listed = app.get("/v1/api-keys").await;
    assert!(!listed.text.contains(&agent_w1) && !listed.text.contains("\"key\""));
    assert_eq!(listed.json.as_array().unwrap().len(), 6);
    app.stop().await;
}

async fn hostile_key_input(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let audit_before = app.audit_count().await;
    for (body, field) in [
        (json!({"name": "x", "role": "root"}), "role"),
        (json!({"name": "", "role": "agent"}), "name"),
        (json!({"name": "a\nb", "role": "agent"}), "name"),
        (json!({"name": "x".repeat(129), "role": "agent"}), "name"),
        (json!({"name": "x", "role": "agent", "workspaces": []}), "workspaces"),
        (json!({"name": "x", "role": "agent", "workspaces": ["ok", "bad\u{7}"]}), "workspaces[1]"),
        (json!({"name": "x", "role": "agent", "expires_at": "tomorrow"}), "expires_at"),
        (json!({"name": "x", "role": "agent", "expires_at": "2001-01-01T00:00:00Z"}), "expires_at"),
        (json!({"name": "x", "role": "agent", "key": "nxk_chosen"}), "key"),
        (json!({"name": "x", "role": "admin", "workspaces": ["w1"]}), "workspaces"),
    ] {
        let resp = app.post("/v1/api-keys", &body).await;
        assert_eq!(resp.status, 400, "{body}: {}", resp.text);
        assert!(resp.text.contains(field), "{body}: {}", resp.text);
    }
    assert_eq!(app.get("/v1/api-keys").await.json, json!([]));
    assert_eq!(app.audit_count().await, audit_before);
    assert_eq!(app.delete("/v1/api-keys/nope").await.status, 404);
    // Look-alike keys are refused without a database lookup of anything they control.
    for k in ["nxk_", "nxk_'; DROP TABLE api_keys; --", &format!("nxk_{}", "A".repeat(43)), &"x".repeat(5000)] {
        let s = status(&app, k, "GET", "/v1/connections").await;
        assert!([401, 429].contains(&s), "{k}: {s}");
    }
    app.stop().await;
}

/// A key revoked on one replica is refused by another within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_stops_on_every_replica_within_a_second() {
    nexus_testkit::run_bounded(async {
        let a = TestApp::spawn(Backend::Postgres).await;
        let b = a.spawn_replica().await;
        let (id, agent) = key(&a, "agent", "agent", None, None).await;
        let mut measured = Vec::new();
        for round in 0..3 {
            let (id, agent) =
                if round == 0 { (id.clone(), agent.clone()) } else { key(&a, "agent", "agent", None, None).await };
            // Trusted on the replica (read and cached there).
            assert_eq!(status(&b, &agent, "GET", "/v1/connections").await, 200);
            let revoked_at = Instant::now();
            assert_eq!(a.delete(&format!("/v1/api-keys/{id}")).await.status, 200);
            assert_eq!(status(&a, &agent, "GET", "/v1/connections").await, 401, "at once where it was revoked");
            let took = loop {
                if status(&b, &agent, "GET", "/v1/connections").await == 401 {
                    break revoked_at.elapsed();
                }
                assert!(revoked_at.elapsed() < Duration::from_secs(5), "never refused");
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            measured.push(took);
        }
        eprintln!("revocation reached the other replica after {measured:?}");
        assert!(measured.iter().all(|t| *t <= Duration::from_secs(1)), "{measured:?}");
        b.stop().await;
        a.stop().await;
    })
    .await;
}

/// 10,000 wrong keys from one address: 401, then 429 with Retry-After; the
/// audit log grows by a bounded number of rows; a good key from another
/// address is served all along.
async fn a_scan_of_wrong_keys_is_limited(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, agent) = key(&app, "agent", "agent", None, None).await;
    app.state.flush_audit().await;
    let rows_before = app.audit_count().await;
    let scanner = reqwest::Client::builder().local_address(std::net::IpAddr::from([127, 0, 0, 1])).build().unwrap();
    let good = reqwest::Client::builder().local_address(std::net::IpAddr::from([127, 0, 0, 2])).build().unwrap();
    let url = app.url("/v1/connections");
    let started = Instant::now();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let served = {
        let (good, url, agent, stop) = (good.clone(), url.clone(), agent.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut ok, mut other) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let s = good.get(&url).header("x-api-key", &agent).send().await.unwrap().status().as_u16();
                if s == 200 {
                    ok += 1
                } else {
                    other.push(s)
                }
            }
            (ok, other)
        })
    };
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let (scanner, url) = (scanner.clone(), url.clone());
        tasks.spawn(async move {
            let mut seen = Vec::with_capacity(1250);
            for i in 0..1250 {
                let wrong = if i % 2 == 0 {
                    format!("nxk_{:0>43}", worker * 10_000 + i)
                } else {
                    format!("guess-{worker}-{i}")
                };
                let resp = scanner.get(&url).header("x-api-key", wrong).send().await.unwrap();
                let retry =
                    resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
                seen.push((resp.status().as_u16(), retry));
            }
            seen
        });
    }
    let mut statuses = Vec::new();
    while let Some(done) = tasks.join_next().await {
        statuses.extend(done.unwrap());
    }
    let elapsed = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, other) = served.await.unwrap();
    assert_eq!(statuses.len(), 10_000);
    let unauthorized = statuses.iter().filter(|(s, _)| *s == 401).count();
    let limited = statuses.iter().filter(|(s, _)| *s == 429).count();
    assert_eq!(unauthorized + limited, 10_000, "only 401 and 429");
    let allowed = 10 + elapsed.as_secs() as usize + 2;
    assert!(unauthorized <= allowed, "{unauthorized} failures answered 401 in {elapsed:?}");
    assert!(
        statuses.iter().filter(|(s, _)| *s == 429).all(|(_, r)| r.is_some_and(|r| r >= 1)),
        "429s carry Retry-After"
    );
    assert!(other.is_empty(), "the good key was refused: {other:?}");
    assert!(ok >= 20, "the good key was served {ok} times during the scan ({elapsed:?})");
    app.state.flush_audit().await;
    let grew = app.audit_count().await - rows_before;
    // One row per 401 at most (repeats merge), plus one per block.
    assert!(grew as usize <= 2 * allowed, "the audit log grew by {grew} rows for 10,000 wrong keys");
    eprintln!("10,000 wrong keys in {elapsed:?}: {unauthorized} × 401, {limited} × 429, {grew} audit rows; good key served {ok} times");
    app.stop().await;
}

both_backends!(every_route_with_every_key, hostile_key_input, a_scan_of_wrong_keys_is_limited);

/// A web front end with a Connect session (SPEC 13), as a browser would
/// send it (an `Origin`, a CORS preflight, `Authorization: Bearer`): it
/// creates a connection for its workspace and provider, and is refused for
/// another workspace, another provider, `GET /v1/token` and after expiry;
/// its `connect_url` trades the token for a cookie and drops it from the
/// address bar.
async fn a_connect_session_in_a_browser(backend: Backend) {
    const ORIGIN: &str = "https://app.example.test";
    let app = TestApp::spawn_with(backend, |c| {
        c.cors_allowed_origins = Some(ORIGIN.into());
        c.allowed_return_domains = Some("app.example.test".into());
    })
    .await;
    for name in ["svc", "other"] {
        let provider =
            json!({"name": name, "auth_type": "api_key", "params": {"credential_schema": schema(&["api_key"])}});
        assert_eq!(app.post("/v1/providers", &provider).await.status, 201);
    }
    let (_, connect) = key(&app, "front-end", "connect", Some(&["w1"]), None).await;
    let (_, agent) = key(&app, "agent", "agent", None, None).await;
    let start = |k: &str, workspace: &str| {
        app.client.post(app.url("/v1/connect/sessions")).header("x-api-key", k).json(
            &json!({"workspace_id": workspace, "providers": ["svc"], "return_url": "https://app.example.test/done"}),
        )
    };
    assert_eq!(app.send(start(&connect, "w2")).await.status, 403, "a connect key limited to w1");
    assert_eq!(app.send(start(&agent, "w1")).await.status, 403, "agents cannot start sessions");
    let bad = app
        .send(
            app.client
                .post(app.url("/v1/connect/sessions"))
                .header("x-api-key", &connect)
                .json(&json!({"workspace_id": "w1", "providers": ["nope"], "return_url": "https://evil.example/x"})),
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert!(bad.text.contains("providers[0]") && bad.text.contains("return_url"), "{}", bad.text);
    let created = app.send(start(&connect, "w1")).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let token = created.json["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("nxc_"));
    let connect_url = created.json["connect_url"].as_str().unwrap().to_owned();
    assert_eq!(connect_url, app.url(&format!("/connect?session={token}")));

    // The browser's preflight allows the Authorization header.
    let preflight = app
        .send(
            app.client
                .request(reqwest::Method::OPTIONS, app.url("/v1/request-connection"))
                .header("origin", ORIGIN)
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "authorization, content-type"),
        )
        .await;
    assert!(preflight.status < 300, "{}", preflight.status);
    let allowed = preflight.headers["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");
    let bearer = |method: reqwest::Method, path: &str| {
        app.client
            .request(method, app.url(path))
            .header("origin", ORIGIN)
            .header("authorization", format!("Bearer {token}"))
    };
    // Its workspace and provider: connected, the return_url and workspace taken from the session.
    let req =
        app.send(bearer(reqwest::Method::POST, "/v1/request-connection").json(&json!({"provider_name": "svc"}))).await;
    assert_eq!(req.status, 200, "{}", req.text);
    assert_eq!(req.headers["access-control-allow-origin"], ORIGIN);
    let state = req.json["state"].as_str().unwrap().to_owned();
    let schema_answer = app.send(bearer(reqwest::Method::GET, &format!("/v1/capture-schema?state={state}"))).await;
    assert_eq!(schema_answer.status, 200, "{}", schema_answer.text);
    let done = app
        .send(
            bearer(reqwest::Method::POST, "/v1/capture-credential")
                .header("accept", "application/json")
                .json(&json!({"state": state, "credentials": {"api_key": "k-browser"}})),
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.text);
    let id = done.json["connection_id"].as_str().unwrap().to_owned();
    let row = app.store().connection_by_id(&id).await.unwrap().unwrap();
    assert_eq!((row.workspace_id.as_str(), row.status.as_str()), ("w1", "active"));
    // Refused: another workspace, another provider, another return_url, the token route.
    for (body, want) in [
        (json!({"provider_name": "svc", "workspace_id": "w2"}), 403),
        (json!({"provider_name": "svc", "user_id": "w2"}), 403),
        (json!({"provider_name": "other"}), 403),
        (json!({"provider_name": "svc", "return_url": "https://app.example.test/elsewhere"}), 403),
    ] {
        let resp = app.send(bearer(reqwest::Method::POST, "/v1/request-connection").json(&body)).await;
        assert_eq!(resp.status, want, "{body}: {}", resp.text);
    }
    assert_eq!(app.send(bearer(reqwest::Method::GET, &format!("/v1/token/{id}"))).await.status, 403);
    assert_eq!(app.send(bearer(reqwest::Method::GET, "/v1/connections")).await.status, 403);
    assert_eq!(app.send(bearer(reqwest::Method::POST, "/v1/connect/sessions").json(&json!({}))).await.status, 403);
    // Another workspace's capture state is not this session's.
    let theirs = app
        .post(
            "/v1/request-connection",
            &json!({"workspace_id": "w2", "provider_name": "svc", "return_url": "https://app.example.test/"}),
        )
        .await;
    let their_state = theirs.json["state"].as_str().unwrap();
    let peek = app.send(bearer(reqwest::Method::GET, &format!("/v1/capture-schema?state={their_state}"))).await;
    assert_eq!(peek.status, 400, "{}", peek.text);

    // connect_url: the token becomes a cookie and leaves the address bar.
    let first = app.send(app.client.get(&connect_url)).await;
    assert_eq!(first.status, 200);
    assert!(first.headers.get("location").is_none());
    assert_eq!(first.headers["refresh"], "0; url=/connect");
    assert!(first.text.contains("url=/connect") && !first.text.contains(&token), "{}", first.text);
    assert_eq!(first.headers["referrer-policy"], "no-referrer");
    let cookie = first.headers["set-cookie"].to_str().unwrap().to_owned();
    for part in ["nexus_connect=", "HttpOnly", "SameSite=Strict", "Path=/connect"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    let jar = cookie.split(';').next().unwrap().to_owned();
    let page = app.send(app.client.get(app.url("/connect")).header("cookie", &jar)).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("svc") && !page.text.contains(&token));
    assert!(page.headers["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
    let garbage = app.send(app.client.get(app.url("/connect?session=nxc_forged"))).await;
    assert_eq!(garbage.status, 400);
    assert!(garbage.text.contains("expired or is not valid") && garbage.headers.get("set-cookie").is_none());

    // After 30 minutes: refused everywhere, and nothing starts.
    app.state.clock.advance(Duration::from_secs(31 * 60));
    let late =
        app.send(bearer(reqwest::Method::POST, "/v1/request-connection").json(&json!({"provider_name": "svc"}))).await;
    assert_eq!((late.status, late.code()), (401, "unauthorized"), "{}", late.text);
    assert!(late.text.contains("expired"));
    assert_eq!(app.send(app.client.get(app.url("/connect")).header("cookie", &jar)).await.status, 400);
    assert_eq!(app.send(app.client.get(&connect_url)).await.status, 400);
    // Audit names who did what.
    app.state.flush_audit().await;
    let audit = app.get("/v1/audit?event_type=connect_session.created").await;
    assert_eq!(audit.json["entries"][0]["api_key"]["name"], "front-end");
    let captured = app.get(&format!("/v1/audit?event_type=credential.captured&connection_id={id}")).await;
    assert!(
        captured.json["entries"][0]["api_key"]["id"].as_str().unwrap().starts_with("session:"),
        "{}",
        captured.text
    );
    assert!(!audit.text.contains(&token) && !captured.text.contains(&token));
    app.stop().await;
}

both_backends!(a_connect_session_in_a_browser);

/// Sessions end with the key that started them; a good key shares an
/// address with a scanner and is still served; a refresh of another
/// workspace's connection is refused before any lock.
async fn good_callers_beside_a_scanner_and_sessions_of_a_revoked_key(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let provider =
        json!({"name": "svc", "auth_type": "api_key", "params": {"credential_schema": schema(&["api_key"])}});
    assert_eq!(app.post("/v1/providers", &provider).await.status, 201);
    let (_, agent) = key(&app, "agent", "agent", Some(&["w1"]), None).await;
    let (connect_id, connect) = key(&app, "front", "connect", None, None).await;
    let created = app
        .send(
            app.client
                .post(app.url("/v1/connect/sessions"))
                .header("x-api-key", &connect)
                .json(&json!({"workspace_id": "w1", "return_url": "https://app.example.test/done"})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let token = created.json["token"].as_str().unwrap().to_owned();
    // One address (127.0.0.1): the agent is served once, then a scan blocks the address.
    assert_eq!(status(&app, &agent, "GET", "/v1/connections").await, 200);
    for i in 0..30 {
        let s = status(&app, &format!("nxk_{i:0>43}"), "GET", "/v1/connections").await;
        assert!([401, 429].contains(&s));
    }
    assert_eq!(
        status(&app, &format!("nxk_{:0>43}", 99), "GET", "/v1/connections").await,
        429,
        "the address is limited"
    );
    // The good key, read again after its trust lapsed: still served from the blocked address.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(status(&app, &agent, "GET", "/v1/connections").await, 200, "a key found good before is no guess");
    // Another workspace's connection: 404 at once.
    let theirs = connection(&app, "svc", "w2").await;
    assert_eq!(status(&app, &agent, "POST", &format!("/v1/refresh/{theirs}")).await, 404);
    // Revoking the connect key ends its sessions.
    let bearer = |t: &str| {
        app.client
            .post(app.url("/v1/request-connection"))
            .header("authorization", format!("Bearer {t}"))
            .json(&json!({"provider_name": "svc"}))
    };
    let from = fresh_source();
    let ok = from.execute(bearer(&token).build().unwrap()).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(app.delete(&format!("/v1/api-keys/{connect_id}")).await.status, 200);
    let late = fresh_source().execute(bearer(&token).build().unwrap()).await.unwrap();
    assert_eq!(late.status(), 401, "the session ended with its key");
    app.stop().await;
}

both_backends!(good_callers_beside_a_scanner_and_sessions_of_a_revoked_key);

/// Behind a trusted proxy, failures count per client address, and per /64
/// for IPv6: addresses of one /64 share a limit, another /64 does not.
async fn failures_count_per_client_and_per_64(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.trusted_proxies = Some("127.0.0.1/32".into())).await;
    let from = |xff: &str| {
        let req =
            app.client.get(app.url("/v1/connections")).header("x-api-key", "wrong-key").header("x-forwarded-for", xff);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    for i in 0..10 {
        assert_eq!(from(&format!("2001:db8:1:2::{:x}", i + 1)).await, 401);
    }
    assert_eq!(from("2001:db8:1:2:ffff::1").await, 429, "the same /64");
    assert_eq!(from("2001:db8:1:3::1").await, 401, "another /64");
    assert_eq!(from("198.51.100.7").await, 401, "another client");
    // A client that prepends garbage is still itself.
    for _ in 0..10 {
        from("x, 203.0.113.9").await;
    }
    assert_eq!(from("203.0.113.9").await, 429);
    assert_eq!(from("203.0.113.10").await, 401, "not the proxy's address");
    app.stop().await;
}

both_backends!(failures_count_per_client_and_per_64);
