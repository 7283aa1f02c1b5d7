//! The published contract against the real server: schemathesis (every
//! check, every phase, bounded examples, a fixed seed) finds nothing, and a
//! client generated from the document has typed request bodies. Both tools
//! come from the pinned venv (`testkit/python/requirements.txt`); what they
//! may not judge is in `testkit/python/schemathesis.toml`, with reasons.

use nexus_testkit::python::{python, run_bounded, venv_dir, workspace_dir};
use nexus_testkit::{Backend, TestApp};
use std::process::Command;
use std::time::Duration;

/// Examples per operation and phase; `NEXUS_CONTRACT_EXAMPLES` asks for more.
const EXAMPLES: &str = "40";
/// The generator's seed, so a run is repeatable; `NEXUS_CONTRACT_SEED` picks another.
const SEED: &str = "1796";
const ST_DEADLINE: Duration = Duration::from_secs(240);

fn tail(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(12_000)..]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_undocumented_status_or_shape() {
    // Its authentication checks send thousands of wrong keys from one
    // address, each expecting 401; the limiter that would answer 429 after
    // ten is tested on its own (access::a_scan_of_wrong_keys_is_limited).
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.auth_failure_limit = Some("1000000".into())).await;
    let python = tokio::task::spawn_blocking(python).await.unwrap().expect("the test venv");
    let work = tempfile::tempdir().unwrap();
    let examples = std::env::var("NEXUS_CONTRACT_EXAMPLES").unwrap_or_else(|_| EXAMPLES.into());
    let seed = std::env::var("NEXUS_CONTRACT_SEED").unwrap_or_else(|_| SEED.into());
    // The venv's scripts name the directory it was built in, so run the module.
    let mut st = Command::new(&python);
    st.current_dir(work.path())
        .args(["-c", "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())"])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("NO_COLOR", "1")
        .arg("--config-file")
        .arg(workspace_dir().join("testkit/python/schemathesis.toml"))
        .arg("run")
        .arg(app.url("/openapi.json"))
        .args(["--header", &format!("X-API-Key: {}", app.api_key)])
        .args(["--checks", "all", "--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--max-examples", &examples, "--seed", &seed, "--workers", "2"])
        .args(["--generation-database", "none", "--request-timeout", "30"]);
    let out = tokio::task::spawn_blocking(move || run_bounded(&mut st, None, ST_DEADLINE)).await.unwrap().unwrap();
    let report = tail(&out.stdout);
    assert!(out.status.success(), "schemathesis found problems ({}):\n{report}\n{}", out.status, tail(&out.stderr));
    // It really ran: every documented operation, and thousands of cases.
    assert!(report.contains("passed") && !report.contains("failed"), "{report}");
    let tested = report.lines().find(|l| l.trim_start().starts_with("Tested:")).unwrap_or_default().to_owned();
    let n: usize = tested.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(n >= 30, "too few operations tested: {tested}\n{report}");
    // The stateful phase ran its scenarios and followed at least one link
    // from a response into the next request.
    assert!(report.lines().any(|l| l.trim() == "✅ Stateful"), "the stateful phase did not pass:\n{report}");
    let links = out_line(&out.stdout, "API Links:");
    let covered: usize = links.split_whitespace().nth(2).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(covered >= 1, "no link followed: {links}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_client_has_typed_request_bodies() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let doc = app.send(app.client.get(app.url("/openapi.json"))).await;
    assert_eq!(doc.status, 200);
    let python = tokio::task::spawn_blocking(python).await.unwrap().expect("the test venv");
    let venv = venv_dir();
    let work = tempfile::tempdir().unwrap();
    let spec = work.path().join("openapi.json");
    std::fs::write(&spec, &doc.text).unwrap();
    let client = work.path().join("client");
    let path = format!("{}:{}", venv.join("bin").display(), std::env::var("PATH").unwrap_or_default());
    let mut gen = Command::new(&python);
    gen.current_dir(work.path())
        .args(["-m", "openapi_python_client"])
        .env("PATH", path)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .args(["generate", "--meta", "none", "--path"])
        .arg(&spec)
        .arg("--output-path")
        .arg(&client);
    let out = tokio::task::spawn_blocking(move || run_bounded(&mut gen, None, Duration::from_secs(120)))
        .await
        .unwrap()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{said}");
    assert!(!said.contains("Unable to") && !said.contains("will not be generated"), "{said}");
    let read =
        |file: &str| std::fs::read_to_string(client.join(file)).unwrap_or_else(|e| panic!("{file}: {e}\n{said}"));
    for (file, body) in [
        ("api/providers/create_provider.py", "body: ProviderFromTemplate | ProviderInput,"),
        ("api/providers/put_provider.py", "body: ProviderFromTemplate | ProviderInput,"),
        ("api/providers/patch_provider.py", "body: ProviderPatch,"),
        ("api/connections/capture_credential.py", "body: CaptureRequest,"),
        (
            "api/connections/request_connection.py",
            "body: RequestConnectionByProviderId | RequestConnectionByProviderName,",
        ),
    ] {
        assert!(read(file).contains(body), "{file} does not take a typed body ({body})");
    }
    // The typed models carry the fields, with the closed sets as enums.
    let provider = read("models/provider_input.py");
    for field in ["name: str", "auth_type: AuthType", "client_secret:", "params:", "display_name:"] {
        assert!(provider.contains(field), "ProviderInput lacks {field}");
    }
    assert!(read("models/error_body.py").contains("code: ErrorCode"));
    assert!(read("models/error_code.py").contains("PROVIDER_UNAVAILABLE = \"provider_unavailable\""));
    app.stop().await;
}

/// The first line of `stdout` that starts (after spaces) with `label`.
fn out_line(stdout: &[u8], label: &str) -> String {
    String::from_utf8_lossy(stdout).lines().find(|l| l.trim_start().starts_with(label)).unwrap_or_default().to_owned()
}
