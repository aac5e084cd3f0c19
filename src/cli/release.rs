//! `protond release accept <template>/v<major>.<minor>`: an operator accepts the commit a
//! release tag was moved to. It records the new commit as the release's commit in the store
//! and in protond's references of the template repo's mirror (keeping the replaced commit
//! under `refs/protond/accepted/`), so that the daemon rolls the change out as a release
//! change through the stage gates. It refuses while the tag is not moved; it must never
//! deploy anything itself.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, Result, anyhow, bail};

use super::{load_config, runtime};
use crate::catalog::releases::TagPattern;
use crate::config::Config;
use crate::source::{self, Mirror};
use crate::state::Store;

/// What `protond release` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReleaseAction {
    /// Accept the commit a moved release tag names now: it rolls out as a minor rollout.
    Accept,
}

/// `protond release accept`: checks that the release's tag was moved away from its recorded
/// commit, then records the tag's commit as the release's.
pub(super) fn release_cmd(config: &Path, action: ReleaseAction, release: &str) -> Result<ExitCode> {
    let ReleaseAction::Accept = action;
    let config = load_config(config)?;
    runtime()?.block_on(async move {
        let store = crate::state::Store::open(&config.state).await?;
        println!("{}", accept(&config, &store, release).await?);
        Ok(ExitCode::SUCCESS)
    })
}

/// Accepts the moved tag of `release` (`<template>/v<major>.<minor>`): records the tag's
/// commit as the release's in the store, then in the mirror's references. Returns what was
/// done, as a line for the operator.
///
/// # Errors
///
/// When the release is unknown, its tag is not moved or was deleted, or the store or the
/// mirror cannot be read or written.
pub(crate) async fn accept(config: &Config, store: &Store, release: &str) -> Result<String> {
    let pattern = TagPattern::new(crate::config::DEFAULT_TAG_PATTERN).map_err(|e| anyhow!(e))?;
    let Some((template, version)) = pattern.parse(release) else {
        bail!("{release:?} is not <template>/v<major>.<minor>, e.g. web-svc/v1.2");
    };
    let Some(record) = store
        .template_versions()
        .await?
        .into_iter()
        .find(|v| v.template == template && v.version == version && v.registered)
    else {
        bail!("{template} {version} is not a registered release (has protond seen its tag?)");
    };
    let repo = config
        .template_repos
        .iter()
        .find(|r| r.name == record.repo)
        .ok_or_else(|| anyhow!("template repo {} is not in the config", record.repo))?;
    let mirror = Mirror::open(&repo.url, &config.data_dir.join("git"))
        .with_context(|| format!("open the mirror of template repo {}", repo.name))?;
    let tag = mirror
        .tags()?
        .into_iter()
        .find(|t| t.name == record.tag)
        .ok_or_else(|| {
            anyhow!(
                "tag {} no longer exists (the release is withdrawn): there is nothing to accept",
                record.tag
            )
        })?;
    let recorded = mirror.protond_refs(source::RELEASE_REFS)?;
    let current = recorded
        .get(&record.tag)
        .map_or(record.commit.clone(), ToString::to_string);
    let new = tag.commit.to_string();
    if current == new {
        bail!(
            "tag {} is not moved: it names the release's commit {current}; nothing to accept",
            record.tag
        );
    }
    let old = gix::ObjectId::from_hex(current.as_bytes())
        .with_context(|| format!("recorded commit {current:?} of {}", record.tag))?;
    // The store first: if a reference cannot be written, running the command again
    // finishes the job (the mirror still says the tag is moved).
    store.accept_release(&template, version, &new).await?;
    mirror.set_protond_ref(source::ACCEPTED_REFS, &record.tag, old)?;
    mirror.set_protond_ref(source::RELEASE_REFS, &record.tag, tag.commit)?;
    Ok(format!(
        "release {template} {version} now at {new} (was {current}): it rolls out stage by stage as a minor rollout"
    ))
}
