//! `nexus keys create | list | revoke` against a running Nexus: the key is
//! printed once, listed without its secret, works in its role and
//! workspaces, and stops working once revoked.

use nexus_testkit::process::{nexus, run_to_end};
use nexus_testkit::{Backend, TestApp};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_nexus");

async fn keys(app: &TestApp, api_key: &str, args: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = nexus(BIN, dir.path(), &[("NEXUS_URL", app.base_url.as_str()), ("API_KEY", api_key)]);
    cmd.arg("keys").args(args);
    run_to_end(cmd).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_made_listed_and_revoked_from_the_command_line() {
    nexus_testkit::run_bounded(async {
        let app = TestApp::spawn(Backend::Sqlite).await;
        let (code, key, err) =
            keys(&app, &app.api_key, &["create", "--name", "billing-agent", "--role", "agent", "--workspace", "acme"])
                .await;
        assert_eq!(code, 0, "{err}");
        let key = key.trim().to_owned();
        assert!(key.starts_with("nxk_") && key.len() == 47, "{key}");
        assert!(err.contains("shown only now"), "{err}");
        let id = err.split_whitespace().nth(2).unwrap().to_owned();

        let (code, listed, _) = keys(&app, &app.api_key, &["list"]).await;
        assert_eq!(code, 0);
        assert!(
            listed.contains(&id)
                && listed.contains("billing-agent")
                && listed.contains("acme")
                && listed.contains("active")
        );
        assert!(!listed.contains(&key), "the key itself is never listed");
        let (_, json, _) = keys(&app, &app.api_key, &["list", "--json"]).await;
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed[0]["role"], "agent");

        // In its role: an agent may list connections, not make keys.
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let list = http.get(app.url("/v1/connections")).header("x-api-key", &key).send().await.unwrap();
        assert_eq!(list.status(), 200);
        let (code, _, err) = keys(&app, &key, &["create", "--name", "x", "--role", "admin"]).await;
        assert_eq!(code, 1);
        assert!(err.contains("403") || err.contains("forbidden"), "{err}");
        // A bad role is named.
        let (code, _, err) = keys(&app, &app.api_key, &["create", "--name", "x", "--role", "root"]).await;
        assert_eq!(code, 1);
        assert!(err.contains("role"), "{err}");

        let (code, _, err) = keys(&app, &app.api_key, &["revoke", &id]).await;
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("revoked"));
        let refused = http.get(app.url("/v1/connections")).header("x-api-key", &key).send().await.unwrap();
        assert_eq!(refused.status(), 401);
        let (_, listed, _) = keys(&app, &app.api_key, &["list"]).await;
        assert!(listed.contains("revoked"), "{listed}");
        let (code, _, err) = keys(&app, &app.api_key, &["revoke", "no-such-key"]).await;
        assert_eq!(code, 1);
        assert!(err.contains("404") || err.contains("not_found"), "{err}");
        app.stop().await;
    })
    .await;
}
