//! A pinned Python for tests that check Nexus against independent
//! implementations: botocore's SigV4 signer, moto's server (which verifies
//! SigV4 with IAM authentication) and Python's own `hmac`.
//!
//! [`python`] makes a virtualenv at `<workspace>/target/nexus-test-venv` from
//! `testkit/python/requirements.txt` (every version pinned) the first time a
//! test needs it, and reuses it while a marker file in it still records the
//! hash of that requirements file. nextest runs each test in its own process,
//! so the install is guarded twice: a lock directory makes concurrent test
//! processes wait for one installer instead of all running pip, and the
//! installer builds the venv in a private staging directory that it renames
//! into place only once it imports, so nobody ever sees half an install even
//! if the lock was judged stale wrongly. Every child process runs with a
//! deadline; nothing here waits forever.
//!
//! Needs `python3` with the `venv` module (`NEXUS_TEST_PYTHON3` names another
//! interpreter) and the Python package registry, or a wheel directory pip is
//! configured with.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};

/// The longest `pip install` may take.
pub const PIP_DEADLINE: Duration = Duration::from_secs(300);
/// The longest a script started by [`run_script`] may take.
pub const SCRIPT_DEADLINE: Duration = Duration::from_secs(60);
const VENV_DEADLINE: Duration = Duration::from_secs(120);
const IMPORT_DEADLINE: Duration = Duration::from_secs(60);
// A waiter gives up after the longest an installer can legitimately take.
const LOCK_WAIT: Duration = Duration::from_secs(300 + 120 + 60 + 60);
// A lock directory without an owner file this old was left by a crash between
// creating it and writing the owner.
const OWNERLESS_LOCK_AGE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);
const MARKER: &str = ".nexus-requirements";
const OUTPUT_TAIL: usize = 8 * 1024;

/// The Cargo workspace root.
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `testkit/python/requirements.txt`: what the venv holds.
pub fn requirements_file() -> PathBuf {
    workspace_dir().join("testkit/python/requirements.txt")
}

/// `<workspace>/target/nexus-test-venv`.
pub fn venv_dir() -> PathBuf {
    workspace_dir().join("target/nexus-test-venv")
}

// One installer per test process; other processes are kept out by the lock
// directory. The path is remembered once it has been checked.
static READY: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The venv's `python`, with botocore and `moto[server]` importable.
///
/// Installs the venv first if it is missing or was made from another
/// requirements file (at most [`PIP_DEADLINE`] for pip, waiting for another
/// process's install likewise). Errors carry the output of the step that
/// failed; nothing is cached on error, so a later call tries again.
pub fn python() -> anyhow::Result<PathBuf> {
    let mut ready = READY.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = ready.as_ref() {
        return Ok(path.clone());
    }
    let requirements = requirements_file();
    let text = std::fs::read_to_string(&requirements).with_context(|| format!("reading {}", requirements.display()))?;
    let fingerprint = fingerprint(&text);
    let venv = venv_dir();
    if !is_installed(&venv, &fingerprint) {
        let parent = venv.parent().context("the venv directory has a parent")?;
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let _lock = DirLock::acquire(&venv.with_extension("lock"))?;
        // Whoever held the lock before may have installed it meanwhile.
        if !is_installed(&venv, &fingerprint) {
            remove_leftovers(&venv);
            install(&venv, &requirements, &fingerprint)?;
        }
    }
    let path = venv_python(&venv);
    *ready = Some(path.clone());
    Ok(path)
}

/// Runs `script` (Python source) with the venv's interpreter, `input` on its
/// stdin, and returns its stdout. Fails if it exits non-zero (with its
/// stderr) or takes longer than [`SCRIPT_DEADLINE`] (it is then killed).
pub fn run_script(script: &str, input: &[u8]) -> anyhow::Result<String> {
    let python = python()?;
    let mut cmd = Command::new(&python);
    cmd.arg("-c").arg(script).env("PYTHONDONTWRITEBYTECODE", "1");
    let out = run_bounded(&mut cmd, Some(input), SCRIPT_DEADLINE).context("running a Python script")?;
    if !out.status.success() {
        bail!("the Python script failed ({}):\n{}", out.status, tail(&out.stderr));
    }
    String::from_utf8(out.stdout).context("the Python script printed something other than UTF-8")
}

/// Runs `cmd` to its end with `input` on stdin (or no stdin), capturing its
/// output; kills it and fails once `deadline` has passed.
pub fn run_bounded(cmd: &mut Command, input: Option<&[u8]>, deadline: Duration) -> anyhow::Result<Output> {
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("starting {:?}", cmd.get_program()))?;
    // Threads feed and drain the pipes so the child can never block on them.
    let writer = match (child.stdin.take(), input) {
        (Some(mut stdin), Some(input)) => {
            let input = input.to_vec();
            Some(std::thread::spawn(move || {
                let _ = stdin.write_all(&input);
            }))
        }
        _ => None,
    };
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for a child process")? {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{:?} took longer than {}s and was killed", cmd.get_program(), deadline.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    let stdout = stdout.join().map_err(|_| anyhow!("the stdout reader panicked"))?;
    let stderr = stderr.join().map_err(|_| anyhow!("the stderr reader panicked"))?;
    Ok(Output { status, stdout, stderr })
}

fn venv_python(venv: &Path) -> PathBuf {
    venv.join("bin/python")
}

// FNV-1a: stable across Rust versions (unlike `DefaultHasher`), and enough
// to notice that the requirements file changed.
fn fingerprint(text: &str) -> String {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("fnv1a64:{hash:016x}")
}

fn is_installed(venv: &Path, fingerprint: &str) -> bool {
    // `metadata` follows the interpreter symlink, so a venv whose base Python
    // was removed counts as missing.
    std::fs::read_to_string(venv.join(MARKER)).is_ok_and(|m| m.trim() == fingerprint)
        && std::fs::metadata(venv_python(venv)).is_ok()
}

fn unique_suffix() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    format!("{}-{nanos}", std::process::id())
}

/// Removes the staging, stale and broken-lock directories of installers that
/// died (killed test processes); those of live processes are theirs.
fn remove_leftovers(venv: &Path) {
    let (Some(parent), Some(name)) = (venv.parent(), venv.file_name().and_then(|n| n.to_str())) else { return };
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(name)).and_then(|r| r.strip_prefix('.')) else {
            continue;
        };
        let Some((kind, owner)) = rest.split_once('-') else { continue };
        if matches!(kind, "staging" | "stale" | "broken") && !process_alive(owner) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether the process named by a `unique_suffix()` (`<pid>-<nanos>`) runs.
fn process_alive(owner: &str) -> bool {
    let pid = owner.split('-').next().unwrap_or_default();
    !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) && Path::new("/proc").join(pid).exists()
}

fn install(venv: &Path, requirements: &Path, fingerprint: &str) -> anyhow::Result<()> {
    let staging = venv.with_extension(format!("staging-{}", unique_suffix()));
    let result = install_into(venv, &staging, requirements, fingerprint);
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn install_into(venv: &Path, staging: &Path, requirements: &Path, fingerprint: &str) -> anyhow::Result<()> {
    let base = std::env::var("NEXUS_TEST_PYTHON3").unwrap_or_else(|_| "python3".to_owned());
    checked(Command::new(&base).arg("-m").arg("venv").arg(staging), VENV_DEADLINE)
        .with_context(|| format!("creating a virtualenv with `{base} -m venv` (is the venv module installed?)"))?;
    checked(
        Command::new(venv_python(staging))
            .args(["-m", "pip", "install", "--no-input", "--disable-pip-version-check", "-r"])
            .arg(requirements)
            .env("PIP_DEFAULT_TIMEOUT", "60"),
        PIP_DEADLINE,
    )
    .with_context(|| format!("pip install -r {}", requirements.display()))?;

    // A venv finds its packages relative to `bin/python`, so it still works
    // once renamed (only the console scripts' shebangs would not; we always
    // run `python -m …`).
    if venv.exists() {
        let stale = venv.with_extension(format!("stale-{}", unique_suffix()));
        std::fs::rename(venv, &stale).with_context(|| format!("moving the outdated {} away", venv.display()))?;
        let _ = std::fs::remove_dir_all(&stale);
    }
    if let Err(e) = std::fs::rename(staging, venv) {
        // Another installer got there first with the same requirements.
        if is_installed(venv, fingerprint) {
            return Ok(());
        }
        return Err(e).with_context(|| format!("moving {} to {}", staging.display(), venv.display()));
    }
    checked(Command::new(venv_python(venv)).args(["-c", "import botocore.auth, moto.server"]), IMPORT_DEADLINE)
        .context("the new virtualenv cannot import botocore and moto")?;
    // The marker goes last: a venv without it is never used.
    std::fs::write(venv.join(MARKER), format!("{fingerprint}\n"))
        .with_context(|| format!("writing {}", venv.join(MARKER).display()))?;
    Ok(())
}

fn checked(cmd: &mut Command, deadline: Duration) -> anyhow::Result<()> {
    let out = run_bounded(cmd, None, deadline)?;
    if !out.status.success() {
        bail!("{:?} failed ({}):\n{}\n{}", cmd.get_program(), out.status, tail(&out.stdout), tail(&out.stderr));
    }
    Ok(())
}

fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let start = text.len().saturating_sub(OUTPUT_TAIL);
    let start = (start..text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
    text[start..].to_owned()
}

/// A lock held by owning a directory (`create_dir` is atomic), with an
/// `owner` file naming the process. A lock whose owner process is gone is
/// stale and broken; correctness never depends on it (see the module docs).
struct DirLock {
    path: PathBuf,
    token: String,
}

impl DirLock {
    fn acquire(path: &Path) -> anyhow::Result<DirLock> {
        let token = unique_suffix();
        let started = Instant::now();
        loop {
            match std::fs::create_dir(path) {
                Ok(()) => {
                    std::fs::write(path.join("owner"), &token)
                        .with_context(|| format!("writing {}/owner", path.display()))?;
                    return Ok(DirLock { path: path.to_owned(), token });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if is_stale(path) {
                        let broken = path.with_extension(format!("broken-{}", unique_suffix()));
                        if std::fs::rename(path, &broken).is_ok() {
                            let _ = std::fs::remove_dir_all(&broken);
                        }
                        continue;
                    }
                    if started.elapsed() > LOCK_WAIT {
                        bail!("waited {}s for another test process to install {}", LOCK_WAIT.as_secs(), path.display());
                    }
                    std::thread::sleep(POLL);
                }
                Err(e) => return Err(anyhow!(e).context(format!("creating {}", path.display()))),
            }
        }
    }
}

fn is_stale(lock: &Path) -> bool {
    let age = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
    match std::fs::read_to_string(lock.join("owner")) {
        Ok(owner) => !process_alive(&owner) || age(lock).is_some_and(|a| a > LOCK_WAIT),
        Err(_) => age(lock).is_some_and(|a| a > OWNERLESS_LOCK_AGE),
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Only remove the lock if it is still ours (it may have been judged
        // stale and taken over).
        if std::fs::read_to_string(self.path.join("owner")).is_ok_and(|o| o == self.token) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A fresh RSA key pair from Python's `cryptography` (not Nexus's code):
/// the private key as PKCS #8 PEM, the public key as PEM and as a JWK
/// (`kid` `k1`, RS256).
pub fn rsa_key() -> anyhow::Result<(String, String, serde_json::Value)> {
    const SCRIPT: &str = r#"
import base64, json
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
pem = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
pub = k.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
nums = k.public_key().public_numbers()
b64 = lambda i: base64.urlsafe_b64encode(i.to_bytes((i.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()
print(json.dumps({"pem": pem, "public_pem": pub, "jwk": {"kty": "RSA", "n": b64(nums.n), "e": b64(nums.e), "kid": "k1", "alg": "RS256", "use": "sig"}}))
"#;
    let out: serde_json::Value = serde_json::from_str(run_script(SCRIPT, b"")?.trim())?;
    let text = |k: &str| out[k].as_str().map(str::to_owned).context("a key field");
    Ok((text("pem")?, text("public_pem")?, out["jwk"].clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_stable_and_content_sensitive() {
        assert_eq!(fingerprint(""), "fnv1a64:cbf29ce484222325");
        assert_ne!(fingerprint("moto==5.2.5\n"), fingerprint("moto==5.2.4\n"));
    }

    #[test]
    fn run_bounded_kills_a_child_past_its_deadline() {
        let started = Instant::now();
        let err = run_bounded(Command::new("sleep").arg("30"), None, Duration::from_millis(200)).unwrap_err();
        assert!(err.to_string().contains("killed"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn run_bounded_feeds_stdin_and_captures_stdout() {
        let out = run_bounded(&mut Command::new("cat"), Some(b"hello"), Duration::from_secs(10)).unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"hello");
    }

    #[test]
    fn leftovers_of_dead_installers_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let venv = dir.path().join("venv");
        let dead = dir.path().join("venv.staging-0-1");
        let live = dir.path().join(format!("venv.staging-{}", unique_suffix()));
        let other = dir.path().join("venv-other.staging-0-1");
        for d in [&venv, &dead, &live, &other] {
            std::fs::create_dir(d).unwrap();
        }
        remove_leftovers(&venv);
        assert!(!dead.exists());
        assert!(venv.exists() && live.exists() && other.exists());
    }

    #[test]
    fn a_lock_of_a_dead_process_is_broken() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("x.lock");
        std::fs::create_dir(&lock).unwrap();
        // pid 0 never names a process under /proc
        std::fs::write(lock.join("owner"), "0-1").unwrap();
        let held = DirLock::acquire(&lock).unwrap();
        assert_eq!(std::fs::read_to_string(lock.join("owner")).unwrap(), held.token);
        drop(held);
        assert!(!lock.exists());
    }
}
