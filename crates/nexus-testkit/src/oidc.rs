//! A real, independent OpenID provider for integration tests.
//!
//! [`OidcProvider::start`] runs `testkit/oidc-provider/server.mjs` (the
//! `oidc-provider` npm package) under `node` on a free loopback port. The
//! process is killed when the [`OidcProvider`] is dropped, and it also exits
//! by itself when its stdin closes, so a killed test binary never leaves it
//! behind.
//!
//! [`authorize_via_browser`] plays the user: it drives the provider's
//! development login and consent pages and hands back the redirect to the
//! client's `redirect_uri` without following it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use url::Url;

/// Client id of the default fixture client.
pub const DEFAULT_CLIENT_ID: &str = "nexus-test";
/// Client secret of the default fixture client.
pub const DEFAULT_CLIENT_SECRET: &str = "nexus-test-secret";
/// Redirect URI of [`OidcOptions::default`]; nothing listens there.
pub const DEFAULT_REDIRECT_URI: &str = "http://127.0.0.1:1/auth/callback";

const READY_DEADLINE: Duration = Duration::from_secs(45);
const NOT_READY: &str = "OIDC provider not ready";
const NPM_DEADLINE: Duration = Duration::from_secs(300);
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);
const BROWSER_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const BROWSER_MAX_HOPS: usize = 20;
const STDERR_TAIL_LIMIT: usize = 64 * 1024;

/// Metadata for one confidential client using `client_secret_post`, allowed
/// the `authorization_code` and `refresh_token` grants.
pub fn default_client(redirect_uris: &[&str]) -> Value {
    json!({
        "client_id": DEFAULT_CLIENT_ID,
        "client_secret": DEFAULT_CLIENT_SECRET,
        "redirect_uris": redirect_uris,
        "token_endpoint_auth_method": "client_secret_post",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
    })
}

/// How to configure the provider.
#[derive(Debug, Clone)]
pub struct OidcOptions {
    /// JSON array of client metadata objects (`client_id`, `client_secret`,
    /// `redirect_uris`, `token_endpoint_auth_method`, ...). `grant_types`
    /// defaults to `["authorization_code","refresh_token"]` and
    /// `response_types` to `["code"]` when a client leaves them out.
    pub clients: Value,
    /// Access token lifetime in seconds.
    pub access_token_ttl: u64,
    /// Rotate the refresh token on every use (the old one is then single use).
    pub rotate_refresh_token: bool,
    /// Scopes supported besides `openid email profile offline_access` and any
    /// scope listed in a client's `scope` metadata.
    pub extra_scopes: Vec<String>,
}

impl Default for OidcOptions {
    fn default() -> Self {
        OidcOptions {
            clients: json!([default_client(&[DEFAULT_REDIRECT_URI])]),
            access_token_ttl: 3600,
            rotate_refresh_token: false,
            extra_scopes: Vec::new(),
        }
    }
}

impl OidcOptions {
    /// The default client (`nexus-test` / `nexus-test-secret`) registered with
    /// the given redirect URI.
    pub fn with_redirect_uri(redirect_uri: &str) -> Self {
        OidcOptions { clients: json!([default_client(&[redirect_uri])]), ..OidcOptions::default() }
    }
}

/// Counters kept by the fixture since start or the last [`OidcProvider::reset`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Stats {
    /// POSTs to the token endpoint, any grant type (injected failures included).
    pub token_requests: u64,
    /// Token endpoint POSTs with `grant_type=refresh_token`.
    pub refresh_requests: u64,
    /// Token endpoint POSTs with `grant_type=authorization_code`.
    pub authorization_code_requests: u64,
    /// Requests to the userinfo endpoint.
    #[serde(default)]
    pub userinfo_requests: u64,
    /// Requests to the revocation endpoint.
    #[serde(default)]
    pub revocation_requests: u64,
    /// Requests for the key set (`/jwks`).
    #[serde(default)]
    pub jwks_requests: u64,
    /// Token endpoint POSTs with `grant_type=client_credentials`.
    #[serde(default)]
    pub client_credentials_requests: u64,
}

/// A running provider. Dropping it kills the node process.
pub struct OidcProvider {
    issuer: String,
    port: u16,
    http: reqwest::Client,
    child: Child,
    // Held open for the lifetime of the process: node exits when it closes.
    stdin: Option<ChildStdin>,
    stderr_tail: Arc<StdMutex<String>>,
}

impl std::fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProvider").field("issuer", &self.issuer).field("port", &self.port).finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Ready {
    issuer: String,
    port: u16,
}

/// `testkit/oidc-provider` in the workspace.
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testkit/oidc-provider")
}

impl OidcProvider {
    /// Installs the npm dependencies if needed, starts the provider and waits
    /// (at most 30 s) until it listens.
    pub async fn start(opts: OidcOptions) -> anyhow::Result<OidcProvider> {
        if !opts.clients.is_array() {
            bail!("OidcOptions::clients must be a JSON array");
        }
        let dir = fixture_dir();
        ensure_node_modules(&dir).await?;
        // A node that has not said READY in time (seen once in CI, on a
        // loaded machine) is killed and started once more; any other failure
        // is reported at once.
        match OidcProvider::start_once(&opts, &dir).await {
            Err(e) if e.to_string().contains(NOT_READY) => {
                eprintln!("[oidc-provider] {e:#}; starting it once more");
                OidcProvider::start_once(&opts, &dir).await
            }
            other => other,
        }
    }

    async fn start_once(opts: &OidcOptions, dir: &std::path::Path) -> anyhow::Result<OidcProvider> {
        let node = std::env::var("NEXUS_TEST_NODE").unwrap_or_else(|_| "node".to_owned());
        let mut child = Command::new(&node)
            .arg("server.mjs")
            .current_dir(dir)
            .env("CLIENTS", opts.clients.to_string())
            .env("ACCESS_TOKEN_TTL", opts.access_token_ttl.to_string())
            .env("ROTATE_REFRESH_TOKEN", if opts.rotate_refresh_token { "1" } else { "0" })
            .env("EXTRA_SCOPES", opts.extra_scopes.join(" "))
            .env_remove("DEBUG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning `{node} server.mjs` in {}", dir.display()))?;

        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("child stdout")?;
        let stderr = child.stderr.take().context("child stderr")?;

        let stderr_tail = Arc::new(StdMutex::new(String::new()));
        let stderr_task = {
            let tail = Arc::clone(&stderr_tail);
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    // Captured by the test harness, shown when a test fails.
                    eprintln!("[oidc-provider] {line}");
                    push_tail(&tail, &line);
                }
            })
        };

        let mut stdout_lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(READY_DEADLINE, async {
            loop {
                match stdout_lines.next_line().await {
                    Ok(Some(line)) => {
                        if let Some(rest) = line.strip_prefix("READY ") {
                            break serde_json::from_str::<Ready>(rest)
                                .with_context(|| format!("malformed READY line: {line}"));
                        }
                        push_tail(&stderr_tail, &format!("(stdout) {line}"));
                    }
                    Ok(None) => break Err(anyhow!("provider closed stdout before READY")),
                    Err(e) => break Err(anyhow!(e).context("reading provider stdout")),
                }
            }
        })
        .await;

        let ready = match ready {
            Ok(Ok(ready)) => ready,
            Ok(Err(e)) => {
                let _ = child.start_kill();
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                let _ = tokio::time::timeout(Duration::from_secs(2), stderr_task).await;
                let tail = stderr_tail.lock().unwrap().clone();
                return Err(e.context(format!("OIDC provider failed to start; stderr:\n{tail}")));
            }
            Err(_) => {
                let _ = child.start_kill();
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                let tail = stderr_tail.lock().unwrap().clone();
                bail!("{NOT_READY} within {}s; stderr:\n{tail}", READY_DEADLINE.as_secs());
            }
        };

        // Keep draining stdout so the process can never block on a full pipe.
        {
            let tail = Arc::clone(&stderr_tail);
            tokio::spawn(async move {
                while let Ok(Some(line)) = stdout_lines.next_line().await {
                    eprintln!("[oidc-provider stdout] {line}");
                    push_tail(&tail, &format!("(stdout) {line}"));
                }
            });
        }

        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(CONTROL_TIMEOUT)
            .build()
            .context("building control HTTP client")?;

        Ok(OidcProvider { issuer: ready.issuer, port: ready.port, http, child, stdin, stderr_tail })
    }

    /// `http://127.0.0.1:<port>`, exactly as in the discovery document.
    pub fn issuer(&self) -> String {
        self.issuer.clone()
    }

    /// The loopback port the provider listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `issuer` + `path` (path must start with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.issuer, path)
    }

    /// The last lines the provider wrote to stderr (its request log).
    pub fn stderr_tail(&self) -> String {
        self.stderr_tail.lock().unwrap().clone()
    }

    /// Request counters.
    pub async fn stats(&self) -> anyhow::Result<Stats> {
        let resp = self.http.get(self.url("/__test/stats")).send().await.context("GET /__test/stats")?;
        let resp = check_control(resp, "/__test/stats").await?;
        resp.json().await.context("decoding /__test/stats")
    }

    /// Zeroes the counters and clears pending failure/delay injections.
    pub async fn reset(&self) -> anyhow::Result<()> {
        self.control("/__test/reset", json!({})).await
    }

    /// Forgets every access token issued so far: userinfo calls with them
    /// answer 401 afterwards. Refresh tokens keep working.
    pub async fn revoke_all_access_tokens(&self) -> anyhow::Result<()> {
        self.control("/__test/revoke-all-access-tokens", json!({})).await
    }

    /// Forgets every refresh token issued so far: refreshing with them answers
    /// `invalid_grant` afterwards.
    pub async fn revoke_all_refresh_tokens(&self) -> anyhow::Result<()> {
        self.control("/__test/revoke-all-refresh-tokens", json!({})).await
    }

    /// The next `count` token endpoint requests answer `status` with a JSON
    /// body `{"error": error, ...}` (`error` defaults to `server_error` for 5xx
    /// and `invalid_request` for 4xx).
    pub async fn fail_token_endpoint(&self, status: u16, error: Option<&str>, count: u32) -> anyhow::Result<()> {
        let mut body = json!({ "status": status, "count": count });
        if let Some(error) = error {
            body["error"] = json!(error);
        }
        self.control("/__test/fail-token-endpoint", body).await
    }

    /// The next `count` token endpoint requests wait `ms` milliseconds before
    /// they are processed.
    pub async fn delay_token_endpoint(&self, ms: u64, count: u32) -> anyhow::Result<()> {
        self.control("/__test/delay-token-endpoint", json!({ "ms": ms, "count": count })).await
    }

    /// Signs with a new key (a new `kid`) from now on; grants, sessions and
    /// tokens already issued survive.
    pub async fn rotate_keys(&self) -> anyhow::Result<()> {
        self.control("/__test/rotate-keys", json!({})).await
    }

    /// Closes stdin (the provider exits by itself) and waits up to 5 s, then
    /// kills the process.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        drop(self.stdin.take());
        match tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await {
            Ok(status) => {
                status.context("waiting for the provider")?;
            }
            Err(_) => {
                self.child.start_kill().ok();
                tokio::time::timeout(Duration::from_secs(5), self.child.wait())
                    .await
                    .context("provider did not die after SIGKILL")?
                    .context("waiting for the provider")?;
            }
        }
        Ok(())
    }

    async fn control(&self, path: &str, body: Value) -> anyhow::Result<()> {
        let resp = self.http.post(self.url(path)).json(&body).send().await.with_context(|| format!("POST {path}"))?;
        check_control(resp, path).await?;
        Ok(())
    }
}

async fn check_control(resp: reqwest::Response, path: &str) -> anyhow::Result<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.text().await.unwrap_or_default();
    bail!("{path} answered {status}: {body}")
}

fn push_tail(tail: &StdMutex<String>, line: &str) {
    let mut tail = tail.lock().unwrap();
    tail.push_str(line);
    tail.push('\n');
    if tail.len() > STDERR_TAIL_LIMIT {
        let mut cut = tail.len() - STDERR_TAIL_LIMIT;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail.drain(..cut);
    }
}

// ---------------------------------------------------------------------------
// npm dependencies

// Serialises installs inside one test process; separate processes (nextest)
// install into private directories and race only on an atomic rename.
static INSTALL_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn wanted_version(dir: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(dir.join("package.json"))
        .with_context(|| format!("reading {}/package.json", dir.display()))?;
    let manifest: Value = serde_json::from_str(&text).context("parsing package.json")?;
    manifest["dependencies"]["oidc-provider"]
        .as_str()
        .map(str::to_owned)
        .context("package.json has no dependencies.oidc-provider")
}

fn installed_version(node_modules: &Path) -> Option<String> {
    let text = std::fs::read_to_string(node_modules.join("oidc-provider").join("package.json")).ok()?;
    let manifest: Value = serde_json::from_str(&text).ok()?;
    manifest["version"].as_str().map(str::to_owned)
}

fn unique_suffix() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    format!("{}-{nanos}", std::process::id())
}

/// Runs `npm ci` when `node_modules` is missing or holds another version of
/// `oidc-provider` than package.json pins.
async fn ensure_node_modules(dir: &Path) -> anyhow::Result<()> {
    let _guard = INSTALL_LOCK.lock().await;
    let wanted = wanted_version(dir)?;
    let target = dir.join("node_modules");
    if installed_version(&target).as_deref() == Some(wanted.as_str()) {
        return Ok(());
    }

    let staging = dir.join(format!(".npm-install-{}", unique_suffix()));
    let result = install_into(dir, &staging, &target, &wanted).await;
    let _ = std::fs::remove_dir_all(&staging);
    result
}

async fn install_into(dir: &Path, staging: &Path, target: &Path, wanted: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(staging).with_context(|| format!("creating {}", staging.display()))?;
    for file in ["package.json", "package-lock.json"] {
        std::fs::copy(dir.join(file), staging.join(file))
            .with_context(|| format!("copying {file} into {}", staging.display()))?;
    }

    let npm = std::env::var("NEXUS_TEST_NPM").unwrap_or_else(|_| "npm".to_owned());
    let child = Command::new(&npm)
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(staging)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning `{npm} ci`"))?;
    let output = tokio::time::timeout(NPM_DEADLINE, child.wait_with_output())
        .await
        .with_context(|| format!("`{npm} ci` took longer than {}s", NPM_DEADLINE.as_secs()))?
        .with_context(|| format!("running `{npm} ci`"))?;
    if !output.status.success() {
        bail!(
            "`{npm} ci` in {} failed ({}):\n{}\n{}",
            staging.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let fresh = staging.join("node_modules");
    if installed_version(&fresh).as_deref() != Some(wanted) {
        bail!("`{npm} ci` did not install oidc-provider {wanted}");
    }

    // A stale install (other version) is moved out of the way first.
    if target.exists() && installed_version(target).as_deref() != Some(wanted) {
        let stale = staging.join("stale-node_modules");
        // Losing this race to another process is fine: it is fixing it too.
        let _ = std::fs::rename(target, &stale);
    }
    if let Err(e) = std::fs::rename(&fresh, target) {
        // Another test process may have won the race.
        if installed_version(target).as_deref() != Some(wanted) {
            return Err(anyhow!(e).context(format!("moving {} to {}", fresh.display(), target.display())));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// browser emulation

/// Plays the end user on the provider's development login/consent pages.
///
/// Starts with `GET auth_url` and follows redirects by hand (cookies kept).
/// On the login page it signs in as `login` (any password); on the consent
/// page it presses "Continue". With `approve == false` it presses "Cancel" on
/// the first interaction page instead, which makes the provider redirect back
/// with `error=access_denied`.
///
/// Returns the first redirect target starting with `stop_at_prefix` (the
/// client's redirect URI) without requesting it. At most 20 requests, each
/// with a 10 s timeout.
pub async fn authorize_via_browser(
    auth_url: &str,
    login: &str,
    approve: bool,
    stop_at_prefix: &str,
) -> anyhow::Result<Url> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(BROWSER_REQUEST_TIMEOUT)
        .build()
        .context("building browser HTTP client")?;

    let mut url = Url::parse(auth_url).with_context(|| format!("parsing {auth_url}"))?;
    let mut form: Option<Vec<(String, String)>> = None;

    for _ in 0..BROWSER_MAX_HOPS {
        let request = match form.take() {
            Some(fields) => client.post(url.clone()).form(&fields),
            None => client.get(url.clone()),
        };
        let resp = request.send().await.with_context(|| format!("browser request to {url}"))?;
        let status = resp.status();

        if status.is_redirection() {
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .with_context(|| format!("{status} from {url} without Location"))?
                .to_str()
                .context("non-ASCII Location header")?;
            let next = url.join(location).with_context(|| format!("bad Location {location:?}"))?;
            if next.as_str().starts_with(stop_at_prefix) {
                return Ok(next);
            }
            url = next;
            continue;
        }

        let body = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("browser got {status} from {url}: {}", summarize_html(&body));
        }

        let forms = parse_forms(&body);

        // response_mode=form_post: an auto-submitting form to the client.
        if let Some(f) = forms.iter().find(|f| f.action.starts_with(stop_at_prefix)) {
            let mut target = Url::parse(&f.action).with_context(|| format!("bad form action {:?}", f.action))?;
            {
                let mut query = target.query_pairs_mut();
                for input in &f.inputs {
                    if let Some(name) = &input.name {
                        query.append_pair(name, input.value.as_deref().unwrap_or(""));
                    }
                }
            }
            return Ok(target);
        }

        if !approve {
            let abort = find_abort_link(&body)
                .with_context(|| format!("no Cancel link on {url}: {}", summarize_html(&body)))?;
            url = url.join(&abort).with_context(|| format!("bad abort link {abort:?}"))?;
            continue;
        }

        let chosen = forms
            .iter()
            .find(|f| f.inputs.iter().any(|i| i.name.as_deref() == Some("prompt")))
            .or_else(|| forms.first())
            .with_context(|| format!("no form on {url}: {}", summarize_html(&body)))?;
        let mut fields = Vec::new();
        for input in &chosen.inputs {
            let Some(name) = input.name.clone() else {
                continue;
            };
            let kind = input.kind.as_deref().unwrap_or("text").to_ascii_lowercase();
            let value = if name == "login" {
                login.to_owned()
            } else if kind == "password" {
                "test-password".to_owned()
            } else if matches!(kind.as_str(), "submit" | "button" | "image" | "reset") {
                continue;
            } else {
                input.value.clone().unwrap_or_default()
            };
            fields.push((name, value));
        }
        let action = if chosen.action.is_empty() {
            url.clone()
        } else {
            url.join(&chosen.action).with_context(|| format!("bad form action {:?}", chosen.action))?
        };
        if chosen.method.eq_ignore_ascii_case("post") {
            url = action;
            form = Some(fields);
        } else {
            let mut target = action;
            target.query_pairs_mut().extend_pairs(fields.iter());
            url = target;
        }
    }
    bail!("no redirect to {stop_at_prefix} within {BROWSER_MAX_HOPS} requests (last: {url})")
}

#[derive(Debug, Default)]
struct HtmlForm {
    action: String,
    method: String,
    inputs: Vec<HtmlInput>,
}

#[derive(Debug, Default)]
struct HtmlInput {
    name: Option<String>,
    kind: Option<String>,
    value: Option<String>,
}

/// Minimal scanner for `<form>` elements and their `<input>`s.
fn parse_forms(html: &str) -> Vec<HtmlForm> {
    let lower = html.to_ascii_lowercase();
    let mut forms = Vec::new();
    let mut pos = 0;
    while let Some(start) = find_tag(&lower, "form", pos) {
        let (attrs, after_open) = tag_attributes(html, start + "<form".len());
        let end = lower[after_open..].find("</form").map_or(html.len(), |i| after_open + i);
        let mut form = HtmlForm {
            action: attr(&attrs, "action").unwrap_or_default(),
            method: attr(&attrs, "method").unwrap_or_else(|| "get".to_owned()),
            inputs: Vec::new(),
        };
        let mut ipos = after_open;
        while let Some(istart) = find_tag(&lower[..end], "input", ipos) {
            let (iattrs, iafter) = tag_attributes(html, istart + "<input".len());
            form.inputs.push(HtmlInput {
                name: attr(&iattrs, "name"),
                kind: attr(&iattrs, "type"),
                value: attr(&iattrs, "value"),
            });
            ipos = iafter;
        }
        forms.push(form);
        pos = end.max(after_open);
    }
    forms
}

/// The href of the devInteractions "[ Cancel ]" link (`.../abort`).
fn find_abort_link(html: &str) -> Option<String> {
    let lower = html.to_ascii_lowercase();
    let mut pos = 0;
    while let Some(start) = find_tag(&lower, "a", pos) {
        let (attrs, after) = tag_attributes(html, start + "<a".len());
        if let Some(href) = attr(&attrs, "href") {
            if href.trim_end_matches('/').ends_with("/abort") {
                return Some(href);
            }
        }
        pos = after;
    }
    None
}

/// Byte offset of the next `<name` start tag at or after `from` (`lower` is
/// the lower-cased document).
fn find_tag(lower: &str, name: &str, from: usize) -> Option<usize> {
    let needle = format!("<{name}");
    let mut pos = from;
    while let Some(i) = lower.get(pos..)?.find(&needle) {
        let at = pos + i;
        let next = lower.as_bytes().get(at + needle.len()).copied();
        if matches!(next, Some(b' ' | b'\t' | b'\n' | b'\r' | b'>' | b'/')) {
            return Some(at);
        }
        pos = at + needle.len();
    }
    None
}

/// Parses attributes starting right after the tag name; returns them
/// (lower-cased names, entity-decoded values) and the offset after `>`.
fn tag_attributes(html: &str, from: usize) -> (Vec<(String, Option<String>)>, usize) {
    let bytes = html.as_bytes();
    let mut attrs = Vec::new();
    let mut i = from;
    loop {
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'/') {
            i += 1;
        }
        if i >= bytes.len() {
            return (attrs, i);
        }
        if bytes[i] == b'>' {
            return (attrs, i + 1);
        }
        let name_start = i;
        while i < bytes.len() && !bytes[i].is_ascii_whitespace() && !matches!(bytes[i], b'=' | b'>' | b'/') {
            i += 1;
        }
        let name = html[name_start..i].to_ascii_lowercase();
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'=' {
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            let value = if i < bytes.len() && matches!(bytes[i], b'"' | b'\'') {
                let quote = bytes[i];
                let start = i + 1;
                let end = html[start..].find(quote as char).map_or(html.len(), |j| start + j);
                i = (end + 1).min(html.len());
                &html[start..end]
            } else {
                let start = i;
                while i < bytes.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b'>' {
                    i += 1;
                }
                &html[start..i]
            };
            attrs.push((name, Some(decode_entities(value))));
        } else if !name.is_empty() {
            attrs.push((name, None));
        } else {
            i += 1;
        }
    }
}

fn attr(attrs: &[(String, Option<String>)], name: &str) -> Option<String> {
    attrs.iter().find(|(n, _)| n == name).and_then(|(_, v)| v.clone())
}

fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let decoded = rest.find(';').filter(|&semi| semi <= 10).and_then(|semi| {
            let entity = &rest[1..semi];
            let ch = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => entity
                    .strip_prefix("#x")
                    .or_else(|| entity.strip_prefix("#X"))
                    .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                    .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            };
            ch.map(|c| (c, semi))
        });
        match decoded {
            Some((c, semi)) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Text of an HTML page with tags stripped, shortened for error messages.
fn summarize_html(html: &str) -> String {
    let mut text = String::new();
    let mut in_tag = false;
    let body = html.find("<body").map_or(html, |i| &html[i..]);
    for c in body.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            _ if !in_tag => text.push(c),
            _ => {}
        }
    }
    let text = decode_entities(&text.split_whitespace().collect::<Vec<_>>().join(" "));
    text.chars().take(1000).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_login_form() {
        let html = r#"<html><body><form autocomplete="off" action="http://127.0.0.1:5/interaction/ab&amp;c" method="post">
  <input type="hidden" name="prompt" value="login"/>
  <input required type="text" name="login" placeholder="Enter any login" autofocus="on">
  <input required type="password" name="password" placeholder="and password" >
  <button type="submit" class="login login-submit">Sign-in</button>
</form><div><a href="http://127.0.0.1:5/interaction/abc/abort">[ Cancel ]</a></div></body></html>"#;
        let forms = parse_forms(html);
        assert_eq!(forms.len(), 1);
        assert_eq!(forms[0].action, "http://127.0.0.1:5/interaction/ab&c");
        assert_eq!(forms[0].method, "post");
        let names: Vec<_> = forms[0].inputs.iter().map(|i| i.name.clone().unwrap()).collect();
        assert_eq!(names, ["prompt", "login", "password"]);
        assert_eq!(forms[0].inputs[0].value.as_deref(), Some("login"));
        assert_eq!(find_abort_link(html).as_deref(), Some("http://127.0.0.1:5/interaction/abc/abort"));
    }

    #[test]
    fn decodes_entities() {
        assert_eq!(decode_entities("a&amp;b&#39;c&#x27;d&lt;"), "a&b'c'd<");
        assert_eq!(decode_entities("a & b"), "a & b");
    }

    #[test]
    fn default_options_use_default_client() {
        let opts = OidcOptions::with_redirect_uri("http://127.0.0.1:9/cb");
        assert_eq!(opts.clients[0]["client_id"], DEFAULT_CLIENT_ID);
        assert_eq!(opts.clients[0]["redirect_uris"][0], "http://127.0.0.1:9/cb");
        assert_eq!(opts.access_token_ttl, 3600);
    }
}
