//! `nexus providers plan | apply | export`: Security-as-Code (SPEC section 8)
//! against a running Nexus. The manifest, the plan and the export live in
//! `nexus-manifest`; this module reads flags and files, talks to the terminal
//! (the `yes` prompt) and maps outcomes to exit codes: 0 success or no
//! changes, 2 changes pending (`plan --detailed-exitcode`), 1 any error.

use clap::{Args, Subcommand};
use nexus_manifest::render;
use nexus_manifest::{Action, Change, Client, Manifest, Plan, StepOutcome};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum ProvidersCommand {
    /// Show what `apply` would change on the server to match the manifest.
    Plan(PlanArgs),
    /// Make the server match the manifest (asks for `yes` first).
    Apply(ApplyArgs),
    /// Write the server's providers as a manifest (secrets as ${…} placeholders).
    Export(ExportArgs),
    /// The provider catalog built into this binary (SPEC 12).
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
}

#[derive(Subcommand)]
pub enum CatalogCommand {
    /// List the templates: name, auth type, category, display name.
    List {
        /// Only this auth type (oauth2, api_key, …).
        #[arg(long)]
        auth_type: Option<String>,
        /// Only this category (crm, support, developer-tools, …).
        #[arg(long)]
        category: Option<String>,
        /// Text in the name, display name, description or tags.
        #[arg(long, short = 'q')]
        query: Option<String>,
        /// Print JSON, as `GET /v1/catalog` answers.
        #[arg(long)]
        json: bool,
    },
    /// Print one template as JSON, as `GET /v1/catalog/{name}` answers.
    Show { name: String },
}

#[derive(Args)]
pub struct Target {
    /// The Nexus Gateway's URL.
    #[arg(long, env = "NEXUS_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The Gateway's API key (prefer the environment variable).
    #[arg(long, env = "API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

#[derive(Args)]
pub struct ManifestArgs {
    /// The manifest; `${VAR}` in its values is read from the environment.
    #[arg(long, short = 'f', default_value = "nexus-providers.yaml")]
    file: PathBuf,
    /// Delete providers that are on the server but not in the manifest
    /// (without it they are reported as ORPHAN and left alone).
    #[arg(long)]
    prune: bool,
}

#[derive(Args)]
pub struct PlanArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    manifest: ManifestArgs,
    /// Exit 0 when there are no changes, 2 when there are, 1 on error.
    #[arg(long)]
    detailed_exitcode: bool,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    manifest: ManifestArgs,
    /// Apply without asking for confirmation.
    #[arg(long)]
    auto_approve: bool,
}

#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    target: Target,
    /// Write to this file instead of standard output.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
}

pub const PROMPT: &str = "Apply these changes? Type 'yes' to continue: ";

pub async fn run(command: ProvidersCommand) -> Result<ExitCode, String> {
    match command {
        ProvidersCommand::Plan(args) => plan(args).await,
        ProvidersCommand::Apply(args) => apply(args).await,
        ProvidersCommand::Export(args) => export(args).await,
        ProvidersCommand::Catalog { command } => catalog(command),
    }
}

fn catalog(command: CatalogCommand) -> Result<ExitCode, String> {
    match command {
        CatalogCommand::List { auth_type, category, query, json } => {
            let auth_type = match auth_type.as_deref() {
                None => None,
                Some(raw) => Some(
                    nexus_core::AuthType::parse(raw)
                        .ok_or_else(|| format!("--auth-type: '{raw}' is not an auth type"))?,
                ),
            };
            let filter = nexus_catalog::Filter { auth_type, category: category.as_deref(), q: query.as_deref() };
            let found = nexus_catalog::search(&filter);
            if json {
                let list: Vec<_> = found.iter().map(|e| e.summary()).collect();
                println!("{}", serde_json::to_string_pretty(&list).map_err(|e| e.to_string())?);
                return Ok(ExitCode::SUCCESS);
            }
            let width = found.iter().map(|e| e.name.len()).max().unwrap_or(4).max(4);
            println!("{:width$}  {:25}  {:16}  DISPLAY NAME", "NAME", "AUTH TYPE", "CATEGORY");
            for e in &found {
                let auth = e.auth_type().map(|t| t.as_str()).unwrap_or("?");
                println!("{:width$}  {auth:25}  {:16}  {}", e.name, e.category, e.display_name);
            }
            println!("\n{} of {} templates", found.len(), nexus_catalog::entries().len());
            Ok(ExitCode::SUCCESS)
        }
        CatalogCommand::Show { name } => {
            let entry = nexus_catalog::get(&name)
                .ok_or_else(|| format!("no catalog template named '{name}' (`nexus providers catalog list`)"))?;
            println!("{}", serde_json::to_string_pretty(entry).map_err(|e| e.to_string())?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

impl Target {
    /// A client for this Gateway, its user agent naming `command`.
    pub fn client(&self, command: &str) -> Result<Client, String> {
        let api_key = self
            .api_key
            .as_deref()
            .filter(|k| !k.is_empty())
            .ok_or("API_KEY is not set: pass --api-key or set API_KEY to the Gateway's API key")?;
        let user_agent = format!("nexus-cli/{} ({command})", env!("CARGO_PKG_VERSION"));
        Client::new(&self.url, api_key, &user_agent).map_err(|e| e.to_string())
    }
}

fn client(target: &Target, command: &str) -> Result<Client, String> {
    target.client(&format!("providers {command}"))
}

/// Reads, expands and validates the manifest; every problem is one `file line N: …` line.
fn read_manifest(path: &Path) -> Result<Manifest, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("could not read {shown}: {e}"))?;
    Manifest::parse(&text, &|name| std::env::var(name).ok()).map_err(|e| {
        e.0.iter()
            .map(|p| match p.line {
                Some(line) => format!("{shown} line {line}: {}", p.message),
                None => format!("{shown}: {}", p.message),
            })
            .collect::<Vec<_>>()
            .join("\nerror: ")
    })
}

async fn compute(client: &Client, args: &ManifestArgs) -> Result<Plan, String> {
    let manifest = read_manifest(&args.file)?;
    let remote = client.list_providers().await.map_err(|e| e.to_string())?;
    Ok(Plan::compute(&manifest, &remote, args.prune))
}

async fn plan(args: PlanArgs) -> Result<ExitCode, String> {
    let client = client(&args.target, "plan")?;
    let plan = compute(&client, &args.manifest).await?;
    if args.json {
        let text = serde_json::to_string_pretty(&render::json(&plan)).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        print!("{}", render::human(&plan));
    }
    Ok(if args.detailed_exitcode && plan.has_changes() { ExitCode::from(2) } else { ExitCode::SUCCESS })
}

async fn apply(args: ApplyArgs) -> Result<ExitCode, String> {
    let client = client(&args.target, "apply")?;
    let plan = compute(&client, &args.manifest).await?;
    print!("{}", render::human(&plan));
    if !plan.has_changes() {
        return Ok(ExitCode::SUCCESS);
    }
    if !args.auto_approve && !confirmed().await? {
        println!("Apply cancelled; nothing was changed.");
        return Ok(ExitCode::FAILURE);
    }
    println!();
    let report = nexus_manifest::execute(&client, &plan, |change, result| {
        if let Ok(outcome) = result {
            println!("{}", done(change, outcome));
        }
    })
    .await;
    if let Some((action, name, why)) = &report.failed {
        let list = |items: &[(Action, String)]| {
            if items.is_empty() {
                "nothing".to_owned()
            } else {
                items.iter().map(|(a, n)| format!("{} {n}", sign(*a))).collect::<Vec<_>>().join(", ")
            }
        };
        let mut not_applied = vec![(*action, format!("{name} (failed)"))];
        not_applied.extend(report.not_attempted.iter().cloned());
        return Err(format!(
            "{} {name} failed: {why}\n  applied before the failure: {}\n  not applied: {}",
            verb(*action),
            list(&report.applied),
            list(&not_applied)
        ));
    }
    println!(
        "\nApply complete: {} created, {} updated, {} deleted.",
        plan.count(Action::Create),
        plan.count(Action::Update),
        plan.count(Action::Delete)
    );
    Ok(ExitCode::SUCCESS)
}

/// Asks on standard input; only the exact answer `yes` goes ahead (end of input is a no).
async fn confirmed() -> Result<bool, String> {
    print!("\n{PROMPT}");
    std::io::stdout().flush().map_err(|e| format!("writing the prompt: {e}"))?;
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await
    .map_err(|e| format!("reading the answer: {e}"))?
    .map_err(|e| format!("reading the answer: {e}"))?;
    if !std::io::stdin().is_terminal() {
        println!(); // a piped answer is not echoed: end the prompt's line
    }
    Ok(answer.trim() == "yes")
}

fn sign(action: Action) -> &'static str {
    match action {
        Action::Create => "+",
        Action::Update => "~",
        Action::Delete => "-",
        Action::Orphan => "!",
    }
}

fn verb(action: Action) -> &'static str {
    match action {
        Action::Create => "creating",
        Action::Update => "updating",
        Action::Delete => "deleting",
        Action::Orphan => "leaving",
    }
}

fn done(change: &Change, outcome: &StepOutcome) -> String {
    match outcome {
        StepOutcome::Created { id } => format!("+ created {} (id {id})", change.name),
        StepOutcome::Updated { fields } => format!("~ updated {} (fields: {})", change.name, fields.join(", ")),
        StepOutcome::Deleted { orphaned_connections } => {
            format!("- deleted {} ({orphaned_connections} connections orphaned)", change.name)
        }
    }
}

async fn export(args: ExportArgs) -> Result<ExitCode, String> {
    let client = client(&args.target, "export")?;
    let mut remote = client.list_providers().await.map_err(|e| e.to_string())?;
    remote.sort_by(|a, b| a.config.name.as_str().cmp(b.config.name.as_str()));
    let exported = nexus_manifest::export(&remote, client.base_url());
    match &args.output {
        None => print!("{}", exported.text),
        Some(path) => {
            std::fs::write(path, &exported.text).map_err(|e| format!("could not write {}: {e}", path.display()))?;
            eprintln!("Wrote {} providers to {}.", remote.len(), path.display());
            if !exported.variables.is_empty() {
                let vars: Vec<&str> = exported.variables.iter().map(|(v, _)| v.as_str()).collect();
                eprintln!("Set {} to the live client secrets before planning against it.", vars.join(", "));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
