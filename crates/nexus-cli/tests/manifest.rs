//! Security-as-Code as an operator runs it: `nexus providers plan | apply |
//! export` as processes against a real `nexus serve` process (fresh SQLite
//! database, loopback port), with the example manifest of the seven seed
//! providers (the Google issuer replaced by a real local OpenID provider).

use nexus_core::secret::fingerprint;
use nexus_testkit::oidc::{OidcOptions, OidcProvider};
use nexus_testkit::process::{self, run_to_end, Server};
use nexus_testkit::{Backend, TestDb};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const BIN: &str = env!("CARGO_BIN_EXE_nexus");
/// The audit key the servers of these tests sign their logs with.
const AUDIT_KEY: &str = "YXVkaXQta2V5LW9mLXRoZS1wcm9jZXNzLXRlc3RzLjE=";
const API_KEY: &str = "manifest-test-api-key-0123456789";
const USER_AGENT: &str = concat!("nexus-cli/", env!("CARGO_PKG_VERSION"), " (providers apply)");
const SEED_SECRETS: [(&str, &str); 2] =
    [("GOOGLE_WORKSPACE_CLIENT_SECRET", "google-secret-one"), ("GITHUB_CLIENT_SECRET", "github-secret-one")];

/// The example manifest shipped in the repository, pointed at a local issuer.
fn seeds_manifest(issuer: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/nexus-providers.yaml");
    let text = std::fs::read_to_string(path).expect("examples/nexus-providers.yaml");
    assert!(text.contains("issuer: https://accounts.google.com\n"));
    text.replace("issuer: https://accounts.google.com\n", &format!("issuer: {issuer}\n"))
}

const SEED_NAMES: [&str; 7] =
    ["airtable", "bedrock-us-east", "github", "google-workspace", "jira-basic", "weatherapi", "webhook-hmac"];

/// A `nexus serve` process and a working directory for manifests.
struct Nexus {
    server: Server,
    work: tempfile::TempDir,
    http: reqwest::Client,
    _db: TestDb,
}

/// What a CLI run printed.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    fn lines_starting(&self, prefix: &str) -> Vec<&str> {
        self.stdout.lines().filter(|l| l.starts_with(prefix)).collect()
    }
}

impl Nexus {
    async fn start() -> Nexus {
        let db = TestDb::new(Backend::Sqlite).await.unwrap();
        let (enc, state) = (nexus_vault::generate_key(), nexus_vault::generate_key());
        let env = [
            ("API_KEY", API_KEY),
            ("ENCRYPTION_KEY", &enc),
            ("STATE_KEY", &state),
            ("AUDIT_KEYS", AUDIT_KEY),
            ("DATABASE_URL", db.url()),
        ];
        let server = Server::start(BIN, db.dir(), &env, &[]).await;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        Nexus { server, work: tempfile::tempdir().unwrap(), http, _db: db }
    }

    fn write(&self, file: &str, text: &str) -> PathBuf {
        let path = self.work.path().join(file);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `nexus <args>` in the work directory, pointed at this server.
    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> tokio::process::Command {
        let mut cmd = process::nexus(BIN, self.work.path(), env);
        cmd.env("NEXUS_URL", &self.server.base_url).env("API_KEY", API_KEY).args(args);
        cmd
    }

    async fn cli(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let (code, stdout, stderr) = run_to_end(self.command(args, env)).await;
        Out { code, stdout, stderr }
    }

    /// Runs the CLI with `input` on its real standard input.
    async fn cli_with_stdin(&self, args: &[&str], env: &[(&str, &str)], input: &str) -> Out {
        let mut cmd = self.command(args, env);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("nexus runs");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).await.unwrap();
        drop(stdin);
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("nexus exits")
            .unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self.http.get(self.server.url(path)).header("x-api-key", API_KEY).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn create(&self, body: Value) {
        let resp =
            self.http.post(self.server.url("/v1/providers")).header("x-api-key", API_KEY).json(&body).send().await;
        assert_eq!(resp.unwrap().status(), 201);
    }

    async fn provider(&self, name: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/providers/{name}")).await;
        assert_eq!(status, 200, "{name}: {body}");
        body
    }

    async fn names(&self) -> Vec<String> {
        let (_, list) = self.get("/v1/providers").await;
        let mut names: Vec<String> =
            list.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_owned()).collect();
        names.sort();
        names
    }

    async fn stop(self) {
        let (code, logs) = self.server.terminate().await;
        assert_eq!(code, 0, "{logs}");
    }
}

fn assert_no_secret(out: &Out, secrets: &[&str]) {
    for s in secrets {
        assert!(!out.all().contains(s), "a secret value reached the CLI output: {out:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeds_apply_from_empty_then_plan_is_clean_and_three_edits_are_three_updates() {
    nexus_testkit::run_bounded(async {
        let idp = OidcProvider::start(OidcOptions::default()).await.expect("oidc-provider starts");
        let nexus = Nexus::start().await;
        let manifest = seeds_manifest(&idp.issuer());
        nexus.write("nexus-providers.yaml", &manifest); // the default --file

        let out = nexus.cli(&["providers", "plan", "--detailed-exitcode"], &SEED_SECRETS).await;
        assert_eq!(out.code, 2, "changes pending: {out:?}");
        assert_eq!(out.lines_starting("+ CREATE ").len(), 7, "{}", out.stdout);
        assert!(out.stdout.contains("Plan: 7 to create, 0 to update, 0 to delete."), "{}", out.stdout);

        let out = nexus.cli(&["providers", "apply", "--auto-approve"], &SEED_SECRETS).await;
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(out.lines_starting("+ created ").len(), 7, "{}", out.stdout);
        assert!(out.stdout.contains("Apply complete: 7 created, 0 updated, 0 deleted."), "{}", out.stdout);
        assert_eq!(nexus.names().await, SEED_NAMES);
        let google = nexus.provider("google-workspace").await;
        assert!(google["discovery"]["token_endpoint"].as_str().unwrap().starts_with(&idp.issuer()));
        assert_eq!(google["client_secret_fingerprint"], fingerprint("google-workspace", "google-secret-one"));

        let out = nexus.cli(&["providers", "plan", "--detailed-exitcode"], &SEED_SECRETS).await;
        assert_eq!((out.code, out.stdout.as_str()), (0, "No changes. The server matches the manifest.\n"), "{out:?}");

        // One scope, one param and one secret change: exactly three updates.
        let edited =
            manifest.replace("      - read:user\n", "      - read:org\n").replace("algo: sha256", "algo: sha512");
        assert_ne!(edited, manifest);
        nexus.write("nexus-providers.yaml", &edited);
        let rotated = [("GOOGLE_WORKSPACE_CLIENT_SECRET", "google-secret-two"), SEED_SECRETS[1]];
        let out = nexus.cli(&["providers", "plan", "--detailed-exitcode"], &rotated).await;
        assert_eq!(out.code, 2, "{out:?}");
        assert_eq!(
            out.lines_starting("~ UPDATE "),
            [
                "~ UPDATE google-workspace (fields: client_secret)",
                "~ UPDATE github (fields: scopes)",
                "~ UPDATE webhook-hmac (fields: params)"
            ],
            "{}",
            out.stdout
        );
        assert_eq!(out.stdout.lines().filter(|l| l.starts_with(['+', '-', '!'])).count(), 0, "{}", out.stdout);
        assert!(out.stdout.contains("      client_secret: (sensitive)\n"), "{}", out.stdout);
        assert!(out.stdout.contains(r#"      scopes: ["repo","read:user"] -> ["repo","read:org"]"#), "{}", out.stdout);
        assert!(out.stdout.contains(r#"      params.algo: "sha256" -> "sha512""#), "{}", out.stdout);
        assert_no_secret(&out, &["google-secret-one", "google-secret-two", "github-secret-one"]);

        let out = nexus.cli(&["providers", "plan", "--json", "--detailed-exitcode"], &rotated).await;
        assert_eq!(out.code, 2);
        let plan: Value = serde_json::from_str(&out.stdout).expect("JSON plan");
        assert_eq!(plan["summary"], json!({"create": 0, "update": 3, "delete": 0, "orphan": 0}));
        assert_eq!(
            plan["changes"][1]["details"][0],
            json!({"field": "scopes", "before": ["repo", "read:user"], "after": ["repo", "read:org"]})
        );
        assert_no_secret(&out, &["google-secret-two"]);

        let out = nexus.cli(&["providers", "apply", "--auto-approve"], &rotated).await;
        assert_eq!(out.code, 0, "{out:?}");
        assert!(out.stdout.contains("Apply complete: 0 created, 3 updated, 0 deleted."), "{}", out.stdout);
        assert_no_secret(&out, &["google-secret-two"]);
        let out = nexus.cli(&["providers", "plan", "--detailed-exitcode", "--prune"], &rotated).await;
        assert_eq!(out.code, 0, "the server now matches the file: {out:?}");
        assert_eq!(nexus.provider("github").await["scopes"], json!(["repo", "read:org"]));
        assert_eq!(nexus.provider("webhook-hmac").await["params"]["algo"], "sha512");
        assert_eq!(
            nexus.provider("google-workspace").await["client_secret_fingerprint"],
            fingerprint("google-workspace", "google-secret-two")
        );

        // Every change is audited with the CLI's own User-Agent.
        for (event, count) in [("provider.created", 7), ("provider.updated", 3)] {
            let (status, page) = nexus.get(&format!("/v1/audit?event_type={event}")).await;
            assert_eq!(status, 200);
            let rows = page["entries"].as_array().unwrap();
            assert_eq!(rows.len(), count, "{event}: {page}");
            assert!(rows.iter().all(|r| r["user_agent"] == USER_AGENT), "{event}: {page}");
        }
        let (_, updated) = nexus.get("/v1/audit?event_type=provider.updated&provider=webhook-hmac").await;
        assert_eq!(updated["entries"][0]["data"]["changed_fields"], json!(["params"]));
        nexus.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_plan_is_clean() {
    nexus_testkit::run_bounded(async {
        let idp = OidcProvider::start(OidcOptions::default()).await.expect("oidc-provider starts");
        let nexus = Nexus::start().await;
        nexus.write("nexus-providers.yaml", &seeds_manifest(&idp.issuer()));
        assert_eq!(nexus.cli(&["providers", "apply", "--auto-approve"], &SEED_SECRETS).await.code, 0);
        // Registered outside the manifest, with strings that need care in YAML.
        nexus
            .create(json!({"name": "tricky", "auth_type": "header", "description": "Costs $5: see #billing",
                "category": "yes", "params": {"header_name": "X-Api-Key", "value_prefix": "",
                "credential_schema": {"type": "object", "required": ["api_key"], "properties": {"api_key": {"type": "string", "title": "${not a variable}"}}},
                "custom": {"n": 1, "ratio": 0.5, "flag": true, "list": ["a", "-", "null", "", "multi\nline"]}}}))
            .await;

        let out = nexus.cli(&["providers", "export"], &[]).await;
        assert_eq!(out.code, 0, "{out:?}");
        let exported = out.stdout.clone();
        assert!(exported.contains("    client_secret: ${GOOGLE_WORKSPACE_CLIENT_SECRET}\n"), "{exported}");
        assert!(exported.contains("    client_secret: ${GITHUB_CLIENT_SECRET}\n"), "{exported}");
        assert_no_secret(&out, &["google-secret-one", "github-secret-one"]);
        let out = nexus.cli(&["providers", "export", "--output", "exported.yaml"], &[]).await;
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(std::fs::read_to_string(nexus.work.path().join("exported.yaml")).unwrap(), exported);
        assert!(out.stderr.contains("Set GITHUB_CLIENT_SECRET, GOOGLE_WORKSPACE_CLIENT_SECRET to"), "{}", out.stderr);

        let plan = ["providers", "plan", "--file", "exported.yaml", "--prune", "--detailed-exitcode"];
        let out = nexus.cli(&plan, &SEED_SECRETS).await;
        assert_eq!(out.code, 0, "export then plan is clean: {out:?}\n{exported}");
        // The placeholders are real: without the variables the manifest is refused, with other values it drifts.
        let out = nexus.cli(&plan, &[]).await;
        assert_eq!(out.code, 1);
        assert!(out.stderr.contains("GITHUB_CLIENT_SECRET is not set"), "{}", out.stderr);
        let out = nexus.cli(&plan, &[SEED_SECRETS[0], ("GITHUB_CLIENT_SECRET", "github-secret-new")]).await;
        assert_eq!(out.code, 2);
        assert_eq!(out.lines_starting("~ UPDATE "), ["~ UPDATE github (fields: client_secret)"]);
        nexus.stop().await;
    })
    .await;
}

const SMALL: &str = "\
providers:
  - name: github
    auth_type: oauth2
    client_id: abc
    client_secret: ${GITHUB_CLIENT_SECRET}
    auth_url: https://github.com/login/oauth/authorize
    token_url: https://github.com/login/oauth/access_token
    scopes: [repo]
  - name: airtable
    auth_type: api_key
    params:
      credential_schema: {type: object, required: [api_key]}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_deletes_a_provider_that_is_only_on_the_server() {
    nexus_testkit::run_bounded(async {
        let nexus = Nexus::start().await;
        nexus.write("nexus-providers.yaml", SMALL);
        nexus
            .create(json!({"name": "legacy", "auth_type": "basic_auth", "params": {"credential_schema": {"type": "object"}}}))
            .await;

        let out = nexus.cli(&["providers", "apply", "--auto-approve"], &SEED_SECRETS).await;
        assert_eq!(out.code, 0, "{out:?}");
        assert!(out.stdout.contains("! ORPHAN legacy (only on the server; --prune deletes it)\n"), "{}", out.stdout);
        assert_eq!(nexus.names().await, ["airtable", "github", "legacy"], "an orphan is left alone");

        let out = nexus.cli(&["providers", "plan", "--detailed-exitcode"], &SEED_SECRETS).await;
        assert_eq!(out.code, 0, "an orphan alone is no change: {out:?}");
        assert_eq!(out.lines_starting("! ORPHAN "), ["! ORPHAN legacy (only on the server; --prune deletes it)"]);

        let out = nexus.cli(&["providers", "plan", "--prune", "--detailed-exitcode"], &SEED_SECRETS).await;
        assert_eq!(out.code, 2, "{out:?}");
        assert_eq!(out.stdout.lines().filter(|l| l.starts_with(['+', '~', '-', '!'])).collect::<Vec<_>>(), ["- DELETE legacy"]);

        let out = nexus.cli(&["providers", "apply", "--prune", "--auto-approve"], &SEED_SECRETS).await;
        assert_eq!(out.code, 0, "{out:?}");
        assert!(out.stdout.contains("- deleted legacy (0 connections orphaned)"), "{}", out.stdout);
        assert_eq!(nexus.names().await, ["airtable", "github"]);
        assert_eq!(nexus.get("/v1/providers/legacy").await.0, 404);
        let (_, deleted) = nexus.get("/v1/audit?event_type=provider.deleted").await;
        assert_eq!(deleted["entries"][0]["user_agent"], USER_AGENT);
        let out = nexus.cli(&["providers", "plan", "--prune", "--detailed-exitcode"], &SEED_SECRETS).await;
        assert_eq!(out.code, 0, "{out:?}");
        nexus.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_asks_for_yes_on_standard_input() {
    nexus_testkit::run_bounded(async {
        let nexus = Nexus::start().await;
        nexus.write("nexus-providers.yaml", SMALL);
        for answer in ["no\n", "y\n", "YES\n", ""] {
            let out = nexus.cli_with_stdin(&["providers", "apply"], &SEED_SECRETS, answer).await;
            assert_eq!(out.code, 1, "{answer:?}: {out:?}");
            assert!(
                out.stdout.contains("+ CREATE github\n+ CREATE airtable\n"),
                "the plan is shown first: {}",
                out.stdout
            );
            assert!(out.stdout.contains("Apply these changes? Type 'yes' to continue:"), "{}", out.stdout);
            assert!(out.stdout.contains("Apply cancelled; nothing was changed."), "{}", out.stdout);
            assert!(nexus.names().await.is_empty(), "{answer:?} changed something");
        }
        let out = nexus.cli_with_stdin(&["providers", "apply"], &SEED_SECRETS, "yes\n").await;
        assert_eq!(out.code, 0, "{out:?}");
        assert!(out.stdout.contains("Apply complete: 2 created"), "{}", out.stdout);
        assert_eq!(nexus.names().await, ["airtable", "github"]);
        // Nothing left to do: no question asked.
        let out = nexus.cli_with_stdin(&["providers", "apply"], &SEED_SECRETS, "").await;
        assert_eq!(out.code, 0, "{out:?}");
        assert!(!out.stdout.contains("Apply these changes?"), "{}", out.stdout);
        nexus.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_manifests_exit_1_naming_the_line_and_apply_nothing() {
    nexus_testkit::run_bounded(async {
        let nexus = Nexus::start().await;
        let secret_line = "    client_secret: ${GITHUB_CLIENT_SECRET}\n";
        let cases: [(&str, String, usize, &str); 6] = [
            (
                "missing env var",
                SMALL.replace(secret_line, "    client_secret: ${NOT_SET_ANYWHERE_42}\n"),
                5,
                "environment variable NOT_SET_ANYWHERE_42 is not set",
            ),
            ("unknown field", SMALL.replace(secret_line, "    client_secrt: x\n"), 5, "unknown field 'client_secrt'"),
            (
                "duplicate name",
                format!("{SMALL}  - name: github\n    auth_type: basic_auth\n    params: {{credential_schema: {{type: object}}}}\n"),
                13,
                "duplicate provider name 'github' (first defined on line 2)",
            ),
            ("wrong type", SMALL.replace("scopes: [repo]", "scopes: repo"), 8, "scopes: expected a list of strings"),
            ("invalid auth_type", SMALL.replace("auth_type: api_key", "auth_type: apikey"), 10, "auth_type: 'apikey' is not one of"),
            ("YAML syntax", SMALL.replace("scopes: [repo]", "scopes: [repo"), 9, "invalid YAML"),
        ];
        for (what, text, line, message) in cases {
            let file = nexus.write("bad.yaml", &text);
            let file = file.to_str().unwrap();
            for args in [vec!["providers", "plan", "--file", file], vec!["providers", "apply", "--auto-approve", "--file", file]]
            {
                let out = nexus.cli(&args, &SEED_SECRETS).await;
                assert_eq!(out.code, 1, "{what}: {out:?}");
                let first = out.stderr.lines().next().unwrap_or_default();
                assert!(first.starts_with(&format!("error: {file} line {line}: ")), "{what}: {}", out.stderr);
                assert!(first.contains(message), "{what}: {}", out.stderr);
                assert!(out.stdout.is_empty(), "{what}: no plan for a bad manifest: {}", out.stdout);
                assert_no_secret(&out, &["github-secret-one"]);
            }
            assert!(nexus.names().await.is_empty(), "{what}: nothing applied");
        }
        let out = nexus.cli(&["providers", "plan", "--file", "missing.yaml"], &[]).await;
        assert_eq!(out.code, 1);
        assert!(out.stderr.starts_with("error: could not read missing.yaml"), "{}", out.stderr);
        nexus.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_stops_at_the_first_failure_and_says_what_was_applied() {
    nexus_testkit::run_bounded(async {
        let nexus = Nexus::start().await;
        // A valid manifest whose second provider the server refuses: its issuer does not answer.
        let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", dead.local_addr().unwrap());
        drop(dead);
        let text = format!(
            "providers:\n  - name: alpha\n    auth_type: basic_auth\n    params: {{credential_schema: {{type: object}}}}\n\
             \x20 - name: broken\n    auth_type: oauth2\n    client_id: c\n    client_secret: ${{GITHUB_CLIENT_SECRET}}\n\
             \x20   issuer: {issuer}\n    enable_discovery: true\n\
             \x20 - name: zeta\n    auth_type: basic_auth\n    params: {{credential_schema: {{type: object}}}}\n"
        );
        nexus.write("nexus-providers.yaml", &text);
        let out = nexus.cli(&["providers", "apply", "--auto-approve"], &SEED_SECRETS).await;
        assert_eq!(out.code, 1, "{out:?}");
        assert!(out.stdout.contains("+ created alpha"), "{}", out.stdout);
        let err: Vec<&str> = out.stderr.lines().collect();
        assert!(err[0].starts_with("error: creating broken failed: Nexus answered 400 discovery_failed"), "{}", out.stderr);
        assert_eq!(err[1], "  applied before the failure: + alpha");
        assert_eq!(err[2], "  not applied: + broken (failed), + zeta");
        assert_eq!(nexus.names().await, ["alpha"]);
        assert_no_secret(&out, &["github-secret-one"]);
        nexus.stop().await;
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_server_or_missing_key_is_one_clear_line() {
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("nexus-providers.yaml"), "providers: []\n").unwrap();
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let (code, stdout, stderr) = run_to_end({
        let mut c = process::nexus(BIN, work.path(), &[("NEXUS_URL", &url), ("API_KEY", API_KEY)]);
        c.args(["providers", "plan"]);
        c
    })
    .await;
    assert_eq!(code, 1);
    assert!(stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with(&format!("error: could not reach Nexus at {url}/")), "{stderr}");
    let (code, _, stderr) = run_to_end({
        let mut c = process::nexus(BIN, work.path(), &[("NEXUS_URL", &url)]);
        c.args(["providers", "export"]);
        c
    })
    .await;
    assert_eq!(code, 1);
    assert!(stderr.starts_with("error: API_KEY is not set"), "{stderr}");
}

/// Providers with URL templates (SPEC 10): the new fields and params are
/// planned, applied, exported and diffed like every other field; a
/// template that starts with `{` (a YAML flow mapping if left bare) reads
/// back as the string it is.
const TENANTS: &str = "\
providers:
  - name: zendesk
    auth_type: oauth2
    client_id: zd
    client_secret: ${ZENDESK_CLIENT_SECRET}
    auth_url: https://{subdomain}.zendesk.com/oauth/authorizations/new
    token_url: https://{subdomain}.zendesk.com/oauth/tokens
    refresh_url: https://{subdomain}.zendesk.com/oauth/tokens
    revocation_url: https://{subdomain}.zendesk.com/oauth/revoke
    api_base_url: https://{subdomain}.zendesk.com/api/v2
    params:
      allowed_hosts: ['*.zendesk.com']
      connection_config_schema: {type: object, required: [subdomain], properties: {subdomain: {type: string}}}
  - name: salesforce
    auth_type: oauth2
    client_id: sf
    client_secret: ${SALESFORCE_CLIENT_SECRET}
    auth_url: https://login.salesforce.com/services/oauth2/authorize
    token_url: https://login.salesforce.com/services/oauth2/token
    api_base_url: '{+instance_url}/services/data/v59.0'
    params:
      allowed_hosts: ['*.my.salesforce.com']
      connection_config_from_token: {instance_url: instance_url}
  - name: notion
    auth_type: oauth2
    client_id: nt
    client_secret: ${NOTION_CLIENT_SECRET}
    auth_url: https://api.notion.com/v1/oauth/authorize
    token_url: https://api.notion.com/v1/oauth/token
    params:
      token_request_format: json
      token_response: {access_token: access_token}
      refresh_params: {audience: api}
      extra_headers: {Notion-Version: '2022-06-28'}
  - name: machine
    auth_type: oauth2_client_credentials
    client_id: m2m
    client_secret: ${MACHINE_CLIENT_SECRET}
    auth_header: client_secret_basic
    token_url: https://login.example.com/oauth2/token
    scopes: [api.read]
  - name: google-sa
    auth_type: jwt_bearer
    token_url: https://oauth2.googleapis.com/token
    scopes: ['https://www.googleapis.com/auth/drive.readonly']
";

const TENANT_SECRETS: [(&str, &str); 4] = [
    ("ZENDESK_CLIENT_SECRET", "zendesk-secret-1"),
    ("SALESFORCE_CLIENT_SECRET", "salesforce-secret-1"),
    ("NOTION_CLIENT_SECRET", "notion-secret-1"),
    ("MACHINE_CLIENT_SECRET", "machine-secret-1"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templated_providers_apply_export_and_diff() {
    nexus_testkit::run_bounded(async {
        let nexus = Nexus::start().await;
        nexus.write("nexus-providers.yaml", TENANTS);
        let out = nexus.cli(&["providers", "apply", "--auto-approve"], &TENANT_SECRETS).await;
        assert_eq!(out.code, 0, "{out:?}");
        let zendesk = nexus.provider("zendesk").await;
        assert_eq!(zendesk["refresh_url"], "https://{subdomain}.zendesk.com/oauth/tokens");
        assert_eq!(zendesk["revocation_url"], "https://{subdomain}.zendesk.com/oauth/revoke");
        assert_eq!(zendesk["params"]["allowed_hosts"], json!(["*.zendesk.com"]));
        let salesforce = nexus.provider("salesforce").await;
        assert_eq!(salesforce["api_base_url"], "{+instance_url}/services/data/v59.0");
        assert_eq!(salesforce["params"]["connection_config_from_token"], json!({"instance_url": "instance_url"}));
        let notion = nexus.provider("notion").await;
        assert_eq!(notion["params"]["extra_headers"], json!({"Notion-Version": "2022-06-28"}));
        assert_eq!(notion["params"]["token_request_format"], "json");
        assert_eq!(nexus.provider("machine").await["auth_type"], "oauth2_client_credentials");
        assert_eq!(nexus.provider("google-sa").await["auth_type"], "jwt_bearer");

        let plan = ["providers", "plan", "--detailed-exitcode"];
        assert_eq!(nexus.cli(&plan, &TENANT_SECRETS).await.code, 0);
        let out = nexus.cli(&["providers", "export", "--output", "exported.yaml"], &[]).await;
        assert_eq!(out.code, 0, "{out:?}");
        let exported = ["providers", "plan", "--file", "exported.yaml", "--detailed-exitcode"];
        let out = nexus.cli(&exported, &TENANT_SECRETS).await;
        assert_eq!(out.code, 0, "export then plan is clean: {out:?}");

        // A wider host list and a new refresh URL: two fields of one update.
        let edited = TENANTS.replace("['*.zendesk.com']", "['*.zendesk.com', '*.zendesk-staging.com']").replace(
            "refresh_url: https://{subdomain}.zendesk.com/oauth/tokens",
            "refresh_url: https://{subdomain}.zendesk.com/oauth/refresh",
        );
        nexus.write("nexus-providers.yaml", &edited);
        let out = nexus.cli(&plan, &TENANT_SECRETS).await;
        assert_eq!(out.code, 2, "{out:?}");
        assert_eq!(
            out.lines_starting("~ UPDATE "),
            ["~ UPDATE zendesk (fields: params, refresh_url)"],
            "{}",
            out.stdout
        );

        // A host variable without allowed_hosts is refused, naming the field; nothing changes.
        let unguarded = TENANTS.replace("      allowed_hosts: ['*.zendesk.com']\n", "");
        nexus.write("unguarded.yaml", &unguarded);
        let out =
            nexus.cli(&["providers", "apply", "--file", "unguarded.yaml", "--auto-approve"], &TENANT_SECRETS).await;
        assert_ne!(out.code, 0, "{out:?}");
        assert!(out.all().contains("allowed_hosts"), "{out:?}");
        assert_eq!(nexus.provider("zendesk").await["params"]["allowed_hosts"], json!(["*.zendesk.com"]));
        assert_no_secret(&out, &["zendesk-secret-1", "salesforce-secret-1"]);
        nexus.stop().await;
    })
    .await;
}

/// Catalog templates (SPEC 12) as an operator writes them: `template:` and
/// the fields that differ, applied, exported back the same way, planned
/// clean; and `nexus providers catalog list | show`.
const FROM_CATALOG: &str = "\
providers:
  - template: zendesk
    client_id: zd-client
    client_secret: ${ZENDESK_CLIENT_SECRET}
  - name: github-readonly
    template: github
    client_id: gh-client
    client_secret: ${GITHUB_READONLY_CLIENT_SECRET}
    scopes: [read:user]
    user_info_endpoint: ~
  - template: stripe
";

const CATALOG_SECRETS: [(&str, &str); 2] = [
    ("ZENDESK_CLIENT_SECRET", "zendesk-catalog-secret-1"),
    ("GITHUB_READONLY_CLIENT_SECRET", "github-catalog-secret-1"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_templates_apply_export_and_plan_clean() {
    nexus_testkit::run_bounded(async {
        let nexus = Nexus::start().await;
        let list = nexus.cli(&["providers", "catalog", "list", "--category", "support"], &[]).await;
        assert_eq!(list.code, 0, "{list:?}");
        assert!(list.stdout.lines().any(|l| l.starts_with("zendesk ") && l.contains("oauth2")), "{}", list.stdout);
        let json_list = nexus.cli(&["providers", "catalog", "list", "--json"], &[]).await;
        let all: Value = serde_json::from_str(&json_list.stdout).unwrap();
        let (_, served) = nexus.get("/v1/catalog").await;
        assert_eq!(all, served, "the CLI lists what the server serves");
        let show = nexus.cli(&["providers", "catalog", "show", "zendesk"], &[]).await;
        let shown: Value = serde_json::from_str(&show.stdout).unwrap();
        assert_eq!(shown, nexus.get("/v1/catalog/zendesk").await.1);
        let missing = nexus.cli(&["providers", "catalog", "show", "no-such-template"], &[]).await;
        assert_eq!(missing.code, 1);
        assert!(missing.stderr.contains("no catalog template named 'no-such-template'"), "{missing:?}");

        nexus.write("nexus-providers.yaml", FROM_CATALOG);
        let out = nexus.cli(&["providers", "apply", "--auto-approve"], &CATALOG_SECRETS).await;
        assert_eq!(out.code, 0, "{out:?}");
        let zendesk = nexus.provider("zendesk").await;
        assert_eq!((zendesk["template"].as_str(), zendesk["template_version"].as_u64()), (Some("zendesk"), Some(1)));
        assert_eq!(zendesk["auth_url"], shown["provider"]["auth_url"]);
        let github = nexus.provider("github-readonly").await;
        assert_eq!(github["scopes"], json!(["read:user"]));
        assert!(github.get("user_info_endpoint").is_none(), "{github}");
        assert_eq!(nexus.provider("stripe").await["template"], "stripe");

        let plan = ["providers", "plan", "--detailed-exitcode"];
        assert_eq!(nexus.cli(&plan, &CATALOG_SECRETS).await.code, 0);
        let out = nexus.cli(&["providers", "export", "--output", "exported.yaml"], &[]).await;
        assert_eq!(out.code, 0, "{out:?}");
        let exported = std::fs::read_to_string(nexus.work.path().join("exported.yaml")).unwrap();
        assert!(exported.contains("  - name: github-readonly\n    template: github\n"), "{exported}");
        assert!(exported.contains("    user_info_endpoint: null\n"), "{exported}");
        assert!(!exported.contains("auth_url"), "only what differs from the template: {exported}");
        let out =
            nexus.cli(&["providers", "plan", "--file", "exported.yaml", "--detailed-exitcode"], &CATALOG_SECRETS).await;
        assert_eq!(out.code, 0, "export then plan is clean: {out:?}");

        // An edit over the template is one update of that field.
        nexus.write("nexus-providers.yaml", &FROM_CATALOG.replace("scopes: [read:user]", "scopes: [read:user, repo]"));
        let out = nexus.cli(&plan, &CATALOG_SECRETS).await;
        assert_eq!(out.code, 2, "{out:?}");
        assert_eq!(out.lines_starting("~ UPDATE "), ["~ UPDATE github-readonly (fields: scopes)"], "{}", out.stdout);
        // An unknown template: exit 1, naming the line; nothing applied.
        nexus.write("bad.yaml", "providers:\n  - template: no-such-template\n");
        let out = nexus.cli(&["providers", "apply", "--file", "bad.yaml", "--auto-approve"], &[]).await;
        assert_eq!(out.code, 1, "{out:?}");
        assert!(out.stderr.contains("bad.yaml line 2: ") && out.stderr.contains("not in the catalog"), "{out:?}");
        assert_no_secret(&out, &["zendesk-catalog-secret-1", "github-catalog-secret-1"]);
        nexus.stop().await;
    })
    .await;
}
