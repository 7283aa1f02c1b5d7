//! Every log line the server writes in a test process, kept in memory so a
//! test can prove that no secret it used was ever logged.
//!
//! [`capture`] installs a `tracing` subscriber once per process (each test
//! is a process of its own under nextest), at `debug` for Nexus's crates —
//! more than production logs, so more chances to catch a leak. `TestApp`
//! calls it when it starts and checks the lines, with the responses, when
//! it is dropped.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

static LINES: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static INSTALLED: OnceLock<bool> = OnceLock::new();

struct Sink;

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LINES.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Starts capturing (once per process). `false` when another subscriber
/// was installed first (then nothing is captured, and [`lines`] is empty).
pub fn capture() -> bool {
    *INSTALLED.get_or_init(|| {
        let filter = tracing_subscriber::EnvFilter::new(
            "info,nexus_server=debug,nexus_store=debug,nexus_oauth=debug,nexus_bridge=debug,nexus_core=debug",
        );
        let subscriber =
            tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).with_writer(|| Sink).finish();
        tracing::subscriber::set_global_default(subscriber).is_ok()
    })
}

/// Everything logged so far in this process.
pub fn lines() -> String {
    String::from_utf8_lossy(&LINES.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

/// Panics, naming the line, if any logged line contains one of `secrets`.
pub fn assert_none_logged(secrets: &[String]) {
    let lines = lines();
    for line in lines.lines() {
        for secret in secrets {
            assert!(!line.contains(secret.as_str()), "a log line contains a secret the test used: {line}");
        }
    }
}
