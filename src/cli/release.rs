//! `protond release quarantine|release <template>/v<major>.<minor>` stops a bad release or
//! lets it continue (recorded in the store, with who and why, and in the release history,
//! which `protond release history [<template>[/v<major>.<minor>]]` prints); the daemon acts
//! on it in its next cycle.
//!
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
    /// Quarantine a release: its rollout stops, no new resource or later stage gets it,
    /// and resources on it are offered (or, under `rollback = "auto"`, given) the previous
    /// minor.
    Quarantine,
    /// Release a quarantine (or a halt): the rollout continues and its failed deployments
    /// are retried.
    Release,
    /// Print the history of releases (quarantines, releases, halts, resumes).
    History,
}

/// `protond release`: accepts a moved tag, quarantines or releases a release, or prints the
/// release history. `release` is `<template>/v<major>.<minor>` (for `history`, optional, or a
/// template name).
pub(super) fn release_cmd(
    config: &Path,
    action: ReleaseAction,
    release: Option<&str>,
    reason: Option<&str>,
) -> Result<ExitCode> {
    let config = load_config(config)?;
    runtime()?.block_on(async move {
        let store = crate::state::Store::open_config(&config).await?;
        let need = || {
            release.ok_or_else(|| {
                anyhow!("give the release: <template>/v<major>.<minor>, e.g. web-svc/v1.2")
            })
        };
        let line = match action {
            ReleaseAction::Accept => accept(&config, &store, need()?).await?,
            ReleaseAction::Quarantine => quarantine(&store, need()?, reason).await?,
            ReleaseAction::Release => lift(&store, need()?, reason).await?,
            ReleaseAction::History => history(&store, release).await?,
        };
        println!("{line}");
        Ok(ExitCode::SUCCESS)
    })
}

/// Who runs this command, for the history: `cli:<user>`.
pub(super) fn operator() -> String {
    format!(
        "cli:{}",
        std::env::var("USER")
            .or_else(|_| std::env::var("USERNAME"))
            .unwrap_or_else(|_| "unknown".into())
    )
}

fn parse_release(release: &str) -> Result<(String, crate::model::Version)> {
    let pattern = TagPattern::new(crate::config::DEFAULT_TAG_PATTERN).map_err(|e| anyhow!(e))?;
    pattern
        .parse(release)
        .ok_or_else(|| anyhow!("{release:?} is not <template>/v<major>.<minor>, e.g. web-svc/v1.2"))
}

/// Quarantines `release` by hand (any registered release).
async fn quarantine(store: &Store, release: &str, reason: Option<&str>) -> Result<String> {
    let (template, version) = parse_release(release)?;
    let known = store
        .template_versions()
        .await?
        .iter()
        .any(|v| v.template == template && v.version == version && v.registered);
    if !known {
        bail!("{template} {version} is not a registered release (has protond seen its tag?)");
    }
    let reason = reason.unwrap_or("by an operator");
    let by = operator();
    let kind = crate::state::StopKind::Quarantine;
    Ok(
        if store
            .stop_rollout(&template, version, kind, &by, reason)
            .await?
        {
            format!(
                "release {template} {version} quarantined by {by}: {reason}; `protond release release {release}` lets it continue"
            )
        } else {
            format!("release {template} {version} was already quarantined")
        },
    )
}

/// Releases the quarantine (or halt) of `release`.
async fn lift(store: &Store, release: &str, reason: Option<&str>) -> Result<String> {
    let (template, version) = parse_release(release)?;
    let reason = reason.unwrap_or("by an operator");
    let by = operator();
    match store.lift_rollout(&template, version, &by, reason).await? {
        Some(crate::state::StopKind::Quarantine) => Ok(format!(
            "release {template} {version} released by {by}: its rollout continues and its failed deployments are retried"
        )),
        Some(crate::state::StopKind::Halt) => Ok(format!(
            "rollout of {template} {version} resumed by {by} (it was halted, not quarantined)"
        )),
        None => bail!("{template} {version} is neither quarantined nor halted: nothing to release"),
    }
}

/// The release history as a table: all, one template's (`web-svc`), or one release's.
async fn history(store: &Store, filter: Option<&str>) -> Result<String> {
    let (template, version) = match filter {
        None => (None, None),
        Some(f) if f.contains('/') => {
            let (t, v) = parse_release(f)?;
            (Some(t), Some(v))
        }
        Some(t) => (Some(t.to_string()), None),
    };
    let events = store.release_events(template.as_deref(), version).await?;
    let mut out = vec![format!(
        "{:<25} {:<24} {:<8} {:<12} {:<16} REASON",
        "AT", "TEMPLATE", "VERSION", "EVENT", "BY"
    )];
    for e in &events {
        out.push(format!(
            "{:<25} {:<24} {:<8} {:<12} {:<16} {}",
            e.at,
            e.template,
            e.version.to_string(),
            e.event,
            e.by,
            e.reason
        ));
    }
    if events.is_empty() {
        out.push("(no release was quarantined, released, halted or resumed)".into());
    }
    Ok(out.join("\n"))
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
