//! Security-as-Code for Nexus providers (SPEC section 8).
//!
//! Operators keep their providers in a reviewed YAML file (`nexus-providers.yaml`)
//! and let `nexus providers plan | apply | export` reconcile a running Nexus with
//! it. This crate holds everything of that except the command line:
//!
//! * [`yaml`]: YAML text to a tree whose every node knows its line;
//! * [`env`]: `${VAR}` expansion (`$$` for a literal dollar);
//! * [`manifest`]: the `providers:` list, typed and validated by `nexus-core`'s own
//!   rules, each problem reported with its line;
//! * [`plan`]: the drift between the manifest and the server, including a changed
//!   `client_secret` seen only through its fingerprint, and the requests that fix it;
//! * [`render`]: the plan for people and, as JSON, for programs;
//! * [`export`]: the live providers written back as a manifest, secrets as placeholders;
//! * [`client`] and [`apply`]: the Gateway's provider API and executing a plan against it.
//!
//! The plan is computed on the same normalized [`nexus_core::ProviderConfig`] the
//! server stores, so "no changes" means the server holds exactly what the file says.

pub mod apply;
pub mod client;
pub mod env;
pub mod export;
pub mod manifest;
pub mod plan;
pub mod render;
pub mod yaml;

pub use apply::{execute, ApplyReport, StepOutcome};
pub use client::{Client, ClientError, RemoteProvider};
pub use export::{export, Exported};
pub use manifest::{DesiredProvider, Manifest, ManifestError, Problem};
pub use plan::{Action, Change, FieldDiff, Plan};
