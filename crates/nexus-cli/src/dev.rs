//! `nexus serve --dev`: keys kept in 0600 files under the data dir, created on
//! first start and reused afterwards, so a newcomer needs no setup. Values
//! given in the environment or as flags still win.

use nexus_server::RawConfig;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct DevKeys {
    pub dir: PathBuf,
    pub created: Vec<&'static str>,
}

/// Fills unset keys in `raw` from `<dir>/<name>` files, creating them if absent.
pub fn prepare(dir: &str, raw: &mut RawConfig) -> Result<DevKeys, String> {
    let dir = PathBuf::from(dir);
    create_private_dir(&dir)?;
    let mut created = Vec::new();
    let slots: [(&'static str, &mut Option<String>); 4] = [
        ("api_key", &mut raw.api_key),
        ("encryption_key", &mut raw.encryption_key),
        ("state_key", &mut raw.state_key),
        ("audit_key", &mut raw.audit_keys),
    ];
    for (file, slot) in slots {
        if slot.as_deref().is_some_and(|v| !v.trim().is_empty()) {
            continue;
        }
        if file == "encryption_key" && raw.encryption_keys.as_deref().is_some_and(|v| !v.trim().is_empty()) {
            continue;
        }
        let path = dir.join(file);
        let value = match fs::read_to_string(&path) {
            Ok(v) => v.trim().to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let v = nexus_vault::generate_key();
                write_private(&path, &v)?;
                created.push(file);
                v
            }
            Err(e) => return Err(format!("could not read {}: {e}", path.display())),
        };
        *slot = Some(value);
    }
    if raw.database_url.as_deref().is_none_or(|u| u.trim().is_empty()) {
        raw.database_url = Some(format!("sqlite://{}/nexus.db", dir.display()));
    }
    Ok(DevKeys { dir, created })
}

fn create_private_dir(dir: &Path) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("NEXUS_DATA_DIR {} could not be created: {e}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    }
    Ok(())
}

fn write_private(path: &Path, value: &str) -> Result<(), String> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| format!("could not create {}: {e}", path.display()))?;
    file.write_all(format!("{value}\n").as_bytes()).map_err(|e| format!("could not write {}: {e}", path.display()))
}

/// Tells the newcomer where to point curl. Printing the API key is the point of `--dev`.
pub fn announce(dev: &DevKeys, base_url: &str, api_key: &nexus_core::SecretString) {
    let base = base_url.trim_end_matches('/');
    println!(
        "Nexus dev mode (keys in {}{})",
        dev.dir.display(),
        if dev.created.is_empty() { "" } else { ", just created" }
    );
    println!("  base URL: {base}");
    println!("  API key:  {}", api_key.expose());
    println!("  try:      curl -s {base}/v1/providers -H 'X-API-Key: {}'", api_key.expose());
}
