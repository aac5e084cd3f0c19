//! `protond rollout halt|resume`: halts (a pause: nothing moves back, unlike `protond release
//! quarantine`) or resumes (lifts a halt or a quarantine, like `protond release release`) the
//! rollout of a minor version by recording it in the store and the release history, where
//! the daemon's scheduler reads it. It must never start,
//! hold or cancel a deployment itself.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Result, bail};

use super::{load_config, runtime};

/// What `protond rollout` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RolloutAction {
    /// Stop the version from reaching further resources.
    Halt,
    /// Let it continue (failed deployments of it are retried).
    Resume,
}

/// `protond rollout`: parses `<template>/v<major>.<minor>` and records the halt or resume,
/// with its reason.
pub(super) fn rollout_cmd(
    config: &Path,
    action: RolloutAction,
    version: &str,
    reason: &str,
) -> Result<ExitCode> {
    let config = load_config(config)?;
    let pattern = crate::catalog::releases::TagPattern::new(crate::config::DEFAULT_TAG_PATTERN)
        .map_err(|e| anyhow::anyhow!(e))?;
    let Some((template, v)) = pattern.parse(version) else {
        bail!("{version:?} is not <template>/v<major>.<minor>, e.g. web-svc/v1.2");
    };
    runtime()?.block_on(async move {
        let store = crate::state::Store::open_config(&config).await?;
        let halted = action == RolloutAction::Halt;
        let by = super::release::operator();
        if halted {
            // A pause: nothing moves back (`release quarantine` is for a bad release).
            let kind = crate::state::StopKind::Halt;
            store.stop_rollout(&template, v, kind, &by, reason).await?;
        } else if store
            .lift_rollout(&template, v, &by, reason)
            .await?
            .is_none()
        {
            // Not halted: still retries the version's failed deployments, as it always did.
            store.set_rollout(&template, v, false, reason).await?;
        }
        println!(
            "rollout of {template} {v} {}",
            if halted { "halted" } else { "resumed" }
        );
        Ok(ExitCode::SUCCESS)
    })
}
