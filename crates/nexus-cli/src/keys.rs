//! `nexus keys create | list | revoke`: API keys with roles (SPEC 13),
//! through a running Nexus (`NEXUS_URL`, an admin `API_KEY`).

use crate::providers::Target;
use clap::Subcommand;
use nexus_manifest::client::segment;
use nexus_manifest::Client;
use serde_json::{json, Value};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key; prints it once (only its digest is stored).
    Create {
        /// For people: who or what uses the key.
        #[arg(long)]
        name: String,
        /// admin, agent or connect.
        #[arg(long)]
        role: String,
        /// A workspace the key may use (repeat it; every workspace when omitted).
        #[arg(long = "workspace")]
        workspaces: Vec<String>,
        /// RFC 3339 time at which the key stops working.
        #[arg(long)]
        expires_at: Option<String>,
        /// Print the server's JSON answer.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// List keys (never the keys themselves).
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Revoke a key by id: every replica refuses it within a second.
    Revoke {
        id: String,
        #[command(flatten)]
        target: Target,
    },
}

fn client(target: &Target, command: &str) -> Result<Client, String> {
    target.client(&format!("keys {command}"))
}

pub async fn run(command: KeysCommand) -> Result<ExitCode, String> {
    match command {
        KeysCommand::Create { name, role, workspaces, expires_at, json, target } => {
            let mut body = json!({ "name": name, "role": role });
            if !workspaces.is_empty() {
                body["workspaces"] = json!(workspaces);
            }
            if let Some(at) = expires_at {
                body["expires_at"] = json!(at);
            }
            let created: Value = client(&target, "create")?
                .call(reqwest::Method::POST, "v1/api-keys", Some(&body))
                .await
                .map_err(|e| e.to_string())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&created).map_err(|e| e.to_string())?);
            } else {
                println!("{}", created["key"].as_str().unwrap_or_default());
                eprintln!(
                    "created key {} ({} {}); it is shown only now",
                    created["id"].as_str().unwrap_or_default(),
                    created["role"].as_str().unwrap_or_default(),
                    created["name"].as_str().unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::List { json, target } => {
            let keys: Vec<Value> = client(&target, "list")?
                .call(reqwest::Method::GET, "v1/api-keys", None)
                .await
                .map_err(|e| e.to_string())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys).map_err(|e| e.to_string())?);
                return Ok(ExitCode::SUCCESS);
            }
            println!("{:<36}  {:<7}  {:<14}  {:<24}  {:<10}  NAME", "ID", "ROLE", "PREFIX", "WORKSPACES", "STATE");
            for k in &keys {
                let workspaces = match k["workspaces"].as_array() {
                    Some(w) => w.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","),
                    None => "*".into(),
                };
                let state = if k["revoked_at"].is_string() {
                    "revoked"
                } else if k["expires_at"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .is_some_and(|t| t < chrono::Utc::now())
                {
                    "expired"
                } else {
                    "active"
                };
                println!(
                    "{:<36}  {:<7}  {:<14}  {:<24}  {:<10}  {}",
                    k["id"].as_str().unwrap_or_default(),
                    k["role"].as_str().unwrap_or_default(),
                    k["prefix"].as_str().unwrap_or_default(),
                    workspaces,
                    state,
                    k["name"].as_str().unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Revoke { id, target } => {
            let revoked: Value = client(&target, "revoke")?
                .call(reqwest::Method::DELETE, &format!("v1/api-keys/{}", segment(&id)), None)
                .await
                .map_err(|e| e.to_string())?;
            eprintln!(
                "revoked key {} ({})",
                revoked["id"].as_str().unwrap_or_default(),
                revoked["name"].as_str().unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
