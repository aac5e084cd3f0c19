//! `protond approve <resource> <version>` (an approval for the change-set gate, written to
//! the store while the daemon runs, like `protond redeploy`) and `protond approvals` (what
//! the daemon's last cycle held as needing one, and the approvals given). Decides nothing:
//! [`crate::actions::approve`] checks and records, [`crate::gate`] decides what counts.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use super::{OutputFormat, load_config, runtime};
use crate::actions::{ActionError, ApprovalRequest};

/// `protond approve`: records the approval; exit 1 when refused.
pub(super) fn approve_cmd(
    config: &Path,
    resource: &str,
    version: &str,
    by: Option<&str>,
    reason: Option<&str>,
) -> Result<ExitCode> {
    let config = load_config(config)?;
    // `cli:<user>` as the other actions say it, without the prefix: `via` says how.
    let who = super::actions::who(by);
    let by = who.trim_start_matches("cli:");
    let poll = Some(config.poll_interval.as_secs().max(1));
    runtime()?.block_on(async move {
        let store = crate::state::Store::open_config(&config).await?;
        let req = ApprovalRequest {
            resource,
            version,
            by,
            via: "cli",
            reason,
        };
        match crate::actions::approve(&store, req, poll).await {
            Ok(message) => {
                tracing::info!(resource = %resource, version = %version, by = %by, "Approval recorded.");
                println!("{message}");
                if let Some(woken) = super::actions::wake_daemon(&config.server).await {
                    println!("{woken}");
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(ActionError::State(e)) => Err(e.into()),
            Err(e) => {
                eprintln!("refused: {e}");
                Ok(ExitCode::from(1))
            }
        }
    })
}

/// `protond approvals`: pending (from the daemon's last cycle) and given approvals.
pub(super) fn approvals_cmd(config: &Path, output: OutputFormat) -> Result<ExitCode> {
    let config = load_config(config)?;
    runtime()?.block_on(async move {
        let store = crate::state::Store::open_config(&config).await?;
        let pending = store.needs_approval().await?;
        let given = store.approvals().await?;
        let mut out = std::io::stdout().lock();
        match output {
            OutputFormat::Json => {
                let pending = pending_json(&pending);
                let given: Vec<_> = given
                    .iter()
                    .map(|a| {
                        serde_json::json!({
                            "resource": a.resource,
                            "template": a.template,
                            "version": a.version.to_string(),
                            "by": a.by,
                            "via": a.via,
                            "reason": a.reason,
                            "at": a.at,
                        })
                    })
                    .collect();
                let doc = serde_json::json!({ "needs_approval": pending, "approvals": given });
                writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
            }
            OutputFormat::Table => {
                write!(out, "{}", crate::ops::approvals_table(&pending, &given))?;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// What waits for an approval, as JSON rows (`approvals` and `status --output json`).
pub(super) fn pending_json(
    pending: &std::collections::BTreeMap<String, crate::state::PendingApproval>,
) -> Vec<serde_json::Value> {
    pending
        .iter()
        .map(|(id, p)| {
            serde_json::json!({
                "resource": id,
                "template": p.template,
                "version": p.version.to_string(),
                "changes": p.changes,
                "since": p.since,
            })
        })
        .collect()
}

/// What waits for an approval, as a table section and as JSON rows (for `status`).
pub(super) async fn pending(
    store: &crate::state::Store,
) -> Result<(String, Vec<serde_json::Value>)> {
    let pending = store.needs_approval().await?;
    Ok((
        crate::ops::needs_approval_table(&pending),
        pending_json(&pending),
    ))
}
