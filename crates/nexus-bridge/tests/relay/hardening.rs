//! The smaller defects an outside attack found in the proxies, each
//! checked through `nexus proxy`'s relay and through the Gateway proxy,
//! with a provider that counts the connections it was sent (so "refused"
//! also means "nothing reached the provider").

use super::{raw, scripted_on, Proxy};
use nexus_bridge::relay::Admission;
use nexus_bridge::{Bridge, Relay};
use nexus_testkit::{Backend, TestApp};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request sent as raw bytes to the Gateway, on a connection of its own.
async fn gateway_raw(app: &TestApp, head: &str) -> String {
    raw(app.addr, head.as_bytes()).await
}

fn status(answer: &str) -> u16 {
    answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

async fn methods_that_echo_or_tunnel_are_refused_in_any_case(backend: Backend) {
    let (provider, app, id, proxy) = scripted_on(backend, Relay::new).await;
    for method in ["TRACE", "trace", "Trace", "TRACK", "track"] {
        let relayed = raw(
            proxy.addr,
            format!("{method} /{id}/echo HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(status(&relayed), 400, "nexus proxy, {method}: {relayed}");
        assert!(!relayed.contains("relay-key"), "{relayed}");
        let gateway = app
            .send(
                app.client
                    .request(
                        reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                        app.url(&format!("/v1/proxy/{id}/echo")),
                    )
                    .header("x-api-key", &app.api_key),
            )
            .await;
        assert_eq!(gateway.status, 400, "Gateway, {method}: {}", gateway.text);
        assert_eq!(gateway.code(), "invalid_input");
        assert!(!gateway.text.contains("relay-key"));
    }
    assert_eq!(provider.accepted(), 0, "nothing was forwarded");
}

async fn dot_segments_with_path_parameters_are_refused(backend: Backend) {
    let (provider, app, id, proxy) = scripted_on(backend, Relay::new).await;
    for path in ["/a/..;/admin", "/..;x/admin", "/a/%2e%2e;jsessionid=1/b", "/.;/x", "/a/%2E%2E%3B/b"] {
        let relayed = raw(
            proxy.addr,
            format!("GET /{id}{path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(status(&relayed), 400, "nexus proxy, {path}: {relayed}");
        let head = format!(
            "GET /v1/proxy/{id}{path} HTTP/1.1\r\nhost: 127.0.0.1\r\nx-api-key: {}\r\nconnection: close\r\n\r\n",
            app.api_key
        );
        let gateway = gateway_raw(&app, &head).await;
        assert_eq!(status(&gateway), 400, "Gateway, {path}: {gateway}");
        assert!(gateway.contains("\"invalid_input\""), "{gateway}");
    }
    assert_eq!(provider.accepted(), 0, "nothing was forwarded");
}

async fn both_proxies_refuse_the_same_oversized_heads(backend: Backend) {
    let (provider, app, id, proxy) = scripted_on(backend, Relay::new).await;
    let request = |to_gateway: bool, filler: usize| {
        let (target, key) = if to_gateway {
            (format!("/v1/proxy/{id}/echo"), format!("x-api-key: {}\r\n", app.api_key))
        } else {
            (format!("/{id}/echo"), String::new())
        };
        format!(
            "GET {target} HTTP/1.1\r\nhost: 127.0.0.1\r\n{key}x-filler: {}\r\nconnection: close\r\n\r\n",
            "f".repeat(filler)
        )
    };
    // 70 KiB: over the limit of both.
    let relayed = raw(proxy.addr, request(false, 70 * 1024).as_bytes()).await;
    assert_eq!(status(&relayed), 431, "nexus proxy: {}", &relayed[..relayed.len().min(200)]);
    let gateway = gateway_raw(&app, &request(true, 70 * 1024)).await;
    assert_eq!(status(&gateway), 431, "Gateway: {}", &gateway[..gateway.len().min(200)]);
    assert_eq!(provider.accepted(), 0, "nothing was forwarded");
    // 60 KiB: within the limit of both.
    assert_eq!(status(&raw(proxy.addr, request(false, 60 * 1024).as_bytes()).await), 200, "nexus proxy");
    assert_eq!(status(&gateway_raw(&app, &request(true, 60 * 1024)).await), 200, "Gateway");
    // More than 128 fields: refused by both.
    let fields: String = (0..140).map(|n| format!("x-f{n}: v\r\n")).collect();
    let many = |target: &str, key: &str| {
        format!("GET {target} HTTP/1.1\r\nhost: 127.0.0.1\r\n{key}{fields}connection: close\r\n\r\n")
    };
    let relayed = raw(proxy.addr, many(&format!("/{id}/echo"), "").as_bytes()).await;
    assert_eq!(status(&relayed), 431, "nexus proxy: {relayed}");
    let gateway =
        gateway_raw(&app, &many(&format!("/v1/proxy/{id}/echo"), &format!("x-api-key: {}\r\n", app.api_key))).await;
    assert_eq!(status(&gateway), 431, "Gateway: {gateway}");
}

nexus_testkit::both_backends!(
    methods_that_echo_or_tunnel_are_refused_in_any_case,
    dot_segments_with_path_parameters_are_refused,
    both_proxies_refuse_the_same_oversized_heads
);

/// DNS rebinding (a page's own name pointed at 127.0.0.1) and cross-site
/// requests from a page must not spend a connection's credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_page_cannot_use_nexus_proxy() {
    nexus_testkit::run_bounded(async {
        let (provider, app, id, proxy) = scripted_on(Backend::Sqlite, Relay::new).await;
        let port = proxy.addr.port();
        let get = |addr: std::net::SocketAddr, headers: String| {
            let request = format!("GET /{id}/len HTTP/1.1\r\n{headers}connection: close\r\n\r\n");
            async move {
            let answer = raw(addr, request.as_bytes()).await;
            let code = answer
                .split_once("\r\n\r\n")
                .and_then(|(_, body)| serde_json::from_str::<Value>(body).ok())
                .and_then(|v| v["code"].as_str().map(str::to_owned))
                .unwrap_or_default();
            (status(&answer), code)
            }
        };
        let refused = [
            (format!("host: evil.example:{port}\r\n"), "host_not_allowed"),
            (format!("host: 127.0.0.1.evil.example:{port}\r\n"), "host_not_allowed"),
            (format!("host: user@127.0.0.1:{port}\r\n"), "host_not_allowed"),
            (format!("host: 127.0.0.1:{port}\r\norigin: https://evil.example\r\n"), "origin_not_allowed"),
            (format!("host: 127.0.0.1:{port}\r\norigin: null\r\n"), "origin_not_allowed"),
            (format!("host: 127.0.0.1:{port}\r\nsec-fetch-site: cross-site\r\n"), "origin_not_allowed"),
            (format!("host: localhost:{port}\r\nsec-fetch-site: same-site\r\n"), "origin_not_allowed"),
        ];
        for (headers, code) in &refused {
            assert_eq!(get(proxy.addr, headers.clone()).await, (403, (*code).to_owned()), "{headers}");
        }
        assert_eq!(provider.accepted(), 0, "nothing was forwarded");
        for headers in [
            format!("host: 127.0.0.1:{port}\r\n"),
            format!("host: localhost:{port}\r\n"),
            format!("host: LOCALHOST.:{port}\r\n"),
            format!("host: [::1]:{port}\r\n"),
            format!("host: 127.0.0.1:{port}\r\nsec-fetch-site: none\r\n"),
        ] {
            assert_eq!(get(proxy.addr, headers.clone()).await.0, 200, "{headers}");
        }
        // HTTP/1.1 without Host is malformed (RFC 9112 §3.2).
        assert_eq!(get(proxy.addr, String::new()).await, (400, "invalid_input".to_owned()));

        // Names and origins the operator allows.
        let bridge = Bridge::new(app.base_url.clone(), app.api_key.clone());
        let admission = Admission::default().allow_host("Nexus.Internal").allow_origin("https://app.example/");
        let open = Proxy::start(Relay::new(bridge).admission(admission)).await;
        let port = open.addr.port();
        assert_eq!(get(open.addr, format!("host: nexus.internal:{port}\r\n")).await.0, 200);
        assert_eq!(get(open.addr, format!("host: 127.0.0.1:{port}\r\norigin: https://app.example\r\n")).await.0, 200);
        let other = get(open.addr, format!("host: 127.0.0.1:{port}\r\norigin: https://evil.example\r\n")).await;
        assert_eq!(other, (403, "origin_not_allowed".to_owned()));

        // The Gateway proxy needs the API key, which a page cannot send
        // without a CORS grant (none by default): the same page is refused.
        let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        let head = format!(
            "OPTIONS /v1/proxy/{id}/len HTTP/1.1\r\nhost: evil.example\r\norigin: https://evil.example\r\n\
             access-control-request-method: GET\r\naccess-control-request-headers: x-api-key\r\nconnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(!answer.to_ascii_lowercase().contains("access-control-allow-origin"), "{answer}");
        let page = gateway_raw(&app, &format!("GET /v1/proxy/{id}/len HTTP/1.1\r\nhost: evil.example\r\norigin: https://evil.example\r\nconnection: close\r\n\r\n")).await;
        assert_eq!(status(&page), 401, "{page}");
    })
    .await;
}
