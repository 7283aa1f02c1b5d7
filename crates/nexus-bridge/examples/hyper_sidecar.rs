//! A measuring stick, not a product: `nexus proxy`'s hop built instead on
//! hyper's connection-level APIs (`hyper::server::conn::http1` for each
//! agent connection, `hyper::client::conn::http1` for the provider
//! connection paired with it), with the same request rule (`Forward`),
//! signing (`Forward::signed`, header strategy) and response rule
//! (`forward::relay`) as `nexus proxy`, and fixed credentials (no Gateway:
//! `nexus proxy` serves them from its cache). `bench/proxy.sh` with
//! `HYPER=1` runs it beside the relay so the two designs are measured in
//! one run (see the README's Benchmark section for the decision).
//!
//! cargo run --profile dist -p nexus-bridge --example hyper_sidecar -- 127.0.0.1:PORT http://UPSTREAM

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use nexus_bridge::{split_connection_path, Forward, TokenAnswer};
use nexus_core::strategy::{Strategy, StrategyType};
use nexus_core::AuthType;
use serde_json::{json, Map, Value};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::Mutex;

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

fn answer(base: &str) -> TokenAnswer {
    let params: Map<String, Value> = json!({"header_name": "X-Api-Key"}).as_object().cloned().unwrap_or_default();
    let strategy = Strategy::from_parts(StrategyType::Header, params).expect("a header strategy");
    let creds = json!({"api_key": "bench-key"}).as_object().cloned().unwrap_or_default();
    TokenAnswer::new("bench", "bench", AuthType::ApiKey, strategy, creds).with_api_base_url(Some(base.to_owned()))
}

fn bad_gateway() -> http::Response<http_body_util::Either<Incoming, Full<Bytes>>> {
    let mut resp = http::Response::new(http_body_util::Either::Right(Full::new(Bytes::from_static(b"bad gateway"))));
    *resp.status_mut() = http::StatusCode::BAD_GATEWAY;
    resp
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (listen, base) = (args.next().expect("listen address"), args.next().expect("upstream base URL"));
    let upstream = base.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let answer = Arc::new(answer(&base));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    loop {
        let (agent, _) = listener.accept().await?;
        agent.set_nodelay(true)?;
        let (answer, upstream) = (answer.clone(), upstream.clone());
        // The provider connection of this agent connection (one connection id here).
        let paired: Arc<Mutex<Option<Sender>>> = Arc::default();
        tokio::spawn(async move {
            let service = service_fn(move |req: http::Request<Incoming>| {
                let (answer, upstream, paired) = (answer.clone(), upstream.clone(), paired.clone());
                async move {
                    let (parts, body) = req.into_parts();
                    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
                        return Ok::<_, Infallible>(bad_gateway());
                    };
                    let after = parts.uri.path().trim_start_matches('/');
                    let (_id, path) = split_connection_path(after);
                    let Some(Ok(base)) = answer.base() else { return Ok(bad_gateway()) };
                    let Ok(fwd) = Forward::to(base, path, parts.uri.query(), parts.method, parts.headers, body) else {
                        return Ok(bad_gateway());
                    };
                    let Ok(signed) = fwd.signed(&answer) else { return Ok(bad_gateway()) };
                    let (mut head, body) = signed.into_parts();
                    // Origin-form on the wire, as the relay writes it.
                    head.uri = head.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").parse().unwrap_or_default();
                    let signed = http::Request::from_parts(head, Full::new(body));
                    let mut slot = paired.lock().await;
                    if slot.as_ref().is_none_or(|s| s.is_closed()) {
                        let Ok(stream) = tokio::net::TcpStream::connect(&upstream).await else {
                            return Ok(bad_gateway());
                        };
                        let _ = stream.set_nodelay(true);
                        let Ok((sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
                        else {
                            return Ok(bad_gateway());
                        };
                        tokio::spawn(conn);
                        *slot = Some(sender);
                    }
                    let Some(sender) = slot.as_mut() else { return Ok(bad_gateway()) };
                    if sender.ready().await.is_err() {
                        return Ok(bad_gateway());
                    }
                    match sender.send_request(signed).await {
                        Ok(resp) => Ok(nexus_bridge::forward::relay(resp).map(http_body_util::Either::Left)),
                        Err(_) => Ok(bad_gateway()),
                    }
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(agent), service).await;
        });
    }
}
