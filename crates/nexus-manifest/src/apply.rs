//! Carrying out a plan: one request per change, in plan order, stopping at the
//! first failure so that what was and was not applied is always known.
//!
//! After every create and update the provider the server answers with is
//! compared with the manifest again; a difference (a server that normalized
//! something differently, a concurrent edit) is a failure, not a silent
//! success.

use crate::client::Client;
use crate::plan::{drift, Action, Change, Plan, Request};

/// What one applied change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    Created { id: String },
    Updated { fields: Vec<String> },
    Deleted { orphaned_connections: i64 },
}

/// The result of [`execute`].
#[derive(Debug, Clone, Default)]
pub struct ApplyReport {
    /// Changes that were applied, in order.
    pub applied: Vec<(Action, String)>,
    /// The change that failed and why.
    pub failed: Option<(Action, String, String)>,
    /// Changes after the failure, not attempted.
    pub not_attempted: Vec<(Action, String)>,
}

impl ApplyReport {
    pub fn succeeded(&self) -> bool {
        self.failed.is_none()
    }
}

/// Applies every actionable change of `plan` (orphans are skipped), calling
/// `progress` after each attempt.
pub async fn execute(
    client: &Client,
    plan: &Plan,
    mut progress: impl FnMut(&Change, &Result<StepOutcome, String>),
) -> ApplyReport {
    let mut report = ApplyReport::default();
    let mut steps = plan.changes.iter().filter(|c| c.request.is_some());
    for change in steps.by_ref() {
        let result = step(client, change).await;
        progress(change, &result);
        match result {
            Ok(_) => report.applied.push((change.action, change.name.clone())),
            Err(why) => {
                report.failed = Some((change.action, change.name.clone(), why));
                break;
            }
        }
    }
    report.not_attempted = steps.map(|c| (c.action, c.name.clone())).collect();
    report
}

async fn step(client: &Client, change: &Change) -> Result<StepOutcome, String> {
    let returned = match &change.request {
        Some(Request::Create(body)) => client.create(&body.0).await.map_err(|e| e.to_string())?,
        Some(Request::Patch { id, body }) => client.patch(id, &body.0).await.map_err(|e| e.to_string())?,
        Some(Request::Delete { id }) => {
            let deleted = client.delete(id).await.map_err(|e| e.to_string())?;
            return Ok(StepOutcome::Deleted { orphaned_connections: deleted.orphaned_connections });
        }
        None => return Err("nothing to do".to_owned()),
    };
    if let Some(expected) = &change.expected {
        let left = drift(&expected.config, expected.fingerprint.as_deref(), &returned);
        if !left.is_empty() {
            return Err(format!(
                "the server accepted the request but its result still differs from the manifest in: {}",
                left.join(", ")
            ));
        }
    }
    Ok(match change.action {
        Action::Create => StepOutcome::Created { id: returned.id },
        _ => StepOutcome::Updated { fields: change.fields.clone() },
    })
}
