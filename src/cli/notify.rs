//! `protond notify`: records the outcome of a self-managed (Terraform) deployment, as
//! Proton's `NotifyResourceDeploymentStatusChange` did, through the self-managed provisioner.
//! It must never record an outcome itself or for another deployment than the one reported:
//! the provisioner checks the deployment id and decides.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::Value;

use super::{load_config, runtime};

/// The outcome `protond notify` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NotifyStatus {
    /// Applied (or destroyed).
    Succeeded,
    /// Failed.
    Failed,
}

/// `protond notify`: reads the outputs file, if any, and records the outcome of
/// `resource`'s deployment waiting for it.
pub(super) fn notify_cmd(
    config: &Path,
    resource: &str,
    status: NotifyStatus,
    outputs: Option<&Path>,
    message: Option<String>,
    deployment_id: Option<i64>,
) -> Result<ExitCode> {
    let config = load_config(config)?;
    let outputs = match outputs {
        None => BTreeMap::new(),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            let v: Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: not JSON", p.display()))?;
            crate::provision::terraform::parse_outputs(&v)
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
        }
    };
    runtime()?.block_on(async move {
        let store = crate::state::Store::open_config(&config).await?;
        let outcome = crate::provision::self_managed::notify(
            &store,
            resource,
            deployment_id,
            status == NotifyStatus::Succeeded,
            outputs,
            message,
        )
        .await?;
        let what = match outcome {
            crate::state::Outcome::Succeeded(r) => {
                format!("deployed ({} output(s))", r.outputs.len())
            }
            crate::state::Outcome::Deleted => "deleted".into(),
            _ => "failed".into(),
        };
        println!(
            "{}: recorded as {what}; the daemon continues with its dependants at its next cycle",
            crate::provision::self_managed::resource_id_from(resource)
        );
        Ok(ExitCode::SUCCESS)
    })
}
