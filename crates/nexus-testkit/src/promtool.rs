//! `promtool check metrics` (Prometheus's own checker, Debian package
//! `prometheus`, installed by `scripts/test`) on a metrics text.

use std::io::Write;

/// Panics with promtool's words unless it accepts `text` without a remark.
pub fn check(text: &str) {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/test installs it)");
    child.stdin.take().expect("piped stdin").write_all(text.as_bytes()).expect("promtool reads its input");
    let out = child.wait_with_output().expect("promtool exits");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\n{text}");
}
