//! `protond hold`, `unhold`, `holds`, `rollback --to` and `unpin`: operator holds and pins,
//! written to the store (like `protond rollout`) where the daemon's next cycle reads them.
//! What a hold stops is decided by [`crate::plan::holds`], whether a pin is allowed by
//! [`crate::evaluate::rollback::check`]; this module only parses, calls them and prints. It
//! must never start, hold or cancel a deployment itself.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};

use super::rollback_pr::{self, Via};
use super::{OutputFormat, load_config, runtime};
use crate::config::Config;
use crate::evaluate::pins::{Pin, PinTarget};
use crate::model::Version;
use crate::plan::holds::{Hold, HoldTarget, parse_until, rfc3339};
use crate::state::{PinRecord, Store};

/// Who sets it: `cli:<by>`, or `cli:<user>` from the environment.
fn who(by: Option<&str>) -> String {
    let user = by.map_or_else(
        || {
            std::env::var("USER")
                .or_else(|_| std::env::var("USERNAME"))
                .unwrap_or_else(|_| "unknown".into())
        },
        ToString::to_string,
    );
    format!("cli:{user}")
}

/// What `protond hold` was given.
pub(super) struct HoldArgs<'a> {
    pub target: &'a str,
    pub until: &'a str,
    pub reason: &'a str,
    pub all: bool,
    pub by: Option<&'a str>,
}

/// `protond hold <target> --until <time> --reason <text> [--all]`.
pub(super) fn hold_cmd(config: &Path, args: &HoldArgs<'_>) -> Result<ExitCode> {
    let config = load_config(config)?;
    let target = HoldTarget::parse(args.target).map_err(anyhow::Error::msg)?;
    let now = SystemTime::now();
    let until = parse_until(args.until, now).map_err(anyhow::Error::msg)?;
    if args.reason.trim().is_empty() {
        bail!("--reason is empty; say why (it is shown with every change the hold stops)");
    }
    let hold = Hold {
        target,
        all: args.all,
        until,
        reason: args.reason.to_string(),
        by: who(args.by),
        set_at: String::new(),
    };
    if let HoldTarget::Stage(stage) = &hold.target
        && !config.stages.contains(stage)
    {
        eprintln!(
            "note: stage {stage:?} is not one of rollout.stages {:?}; the hold covers the environments whose spec names it",
            config.stages
        );
    }
    runtime()?.block_on(async move {
        let store = Store::open_config(&config).await?;
        store.put_hold(&hold).await?;
        let what = if hold.all {
            "every change (creates, updates, deletes)"
        } else {
            "minor upgrades, release changes and rollbacks (spec changes still deploy)"
        };
        println!(
            "hold on {} until {} by {}: {what} wait; `protond unhold {}` lifts it earlier",
            hold.target,
            rfc3339(hold.until),
            hold.by,
            hold.target
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// `protond unhold <target>`.
pub(super) fn unhold_cmd(config: &Path, target: &str) -> Result<ExitCode> {
    let config = load_config(config)?;
    let target = HoldTarget::parse(target).map_err(anyhow::Error::msg)?;
    runtime()?.block_on(async move {
        let store = Store::open_config(&config).await?;
        if store.delete_hold(&target).await? {
            println!("hold on {target} lifted");
            Ok(ExitCode::SUCCESS)
        } else {
            eprintln!("no hold on {target}; `protond holds` lists them");
            Ok(ExitCode::from(1))
        }
    })
}

/// `protond holds`: every hold (active or ended) and pin, with who set it and when it ends.
pub(super) fn holds_cmd(config: &Path, output: OutputFormat) -> Result<ExitCode> {
    let config = load_config(config)?;
    runtime()?.block_on(async move {
        let store = Store::open_config(&config).await?;
        let holds = store.holds().await?;
        let pins = store.pins().await?;
        let now = SystemTime::now();
        let mut out = std::io::stdout().lock();
        match output {
            OutputFormat::Json => writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&crate::ops::holds_json(&holds, &pins, now))?
            )?,
            OutputFormat::Table => {
                let table = crate::ops::holds_table(&holds, &pins, now);
                if table.is_empty() {
                    writeln!(out, "no holds or pins")?;
                }
                write!(out, "{table}")?;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// The holds and pins for `protond status`: the table section and the JSON.
pub(super) async fn status_view(store: &Store) -> Result<(String, serde_json::Value)> {
    let (holds, pins) = (store.holds().await?, store.pins().await?);
    let now = SystemTime::now();
    Ok((
        crate::ops::holds_table(&holds, &pins, now),
        crate::ops::holds_json(&holds, &pins, now),
    ))
}

/// Runs `hold`, `unhold`, `holds`, `rollback` and `unpin`.
pub(super) fn dispatch(command: super::Command) -> Result<ExitCode> {
    use super::Command;
    match command {
        Command::Hold {
            target,
            until,
            reason,
            all,
            by,
            config,
        } => hold_cmd(
            &config,
            &HoldArgs {
                target: &target,
                until: &until,
                reason: &reason,
                all,
                by: by.as_deref(),
            },
        ),
        Command::Unhold { target, config } => unhold_cmd(&config, &target),
        Command::Holds { config, output } => holds_cmd(&config, output),
        Command::Rollback {
            target,
            to,
            by,
            via,
            config,
        } => rollback_cmd(&config, &target, &to, by.as_deref(), via),
        Command::Unpin {
            target,
            template,
            via,
            config,
        } => unpin_cmd(&config, &target, template.as_deref(), via),
        _ => bail!("not a hold, pin or rollback command"),
    }
}

/// Reads a rollback target: a resource id, `environment:<name>` or `stage:<name>`.
fn pin_target(text: &str) -> Result<PinTarget> {
    let forms = "a resource id (service_instance/<service>/<instance>, ...), environment:<name> or stage:<name>";
    match HoldTarget::parse(text) {
        Ok(HoldTarget::Resource(id)) => Ok(PinTarget::Resource(id)),
        Ok(HoldTarget::Environment(e)) => Ok(PinTarget::Environment(e)),
        Ok(HoldTarget::Stage(s)) => Ok(PinTarget::Stage(s)),
        Ok(HoldTarget::Template(_)) | Err(_) => {
            bail!("{text:?} is not a rollback target; write {forms}")
        }
    }
}

/// Reads `--to`: `v1.0`, `1.0` or `<template>/v1.0`.
fn pin_version(text: &str) -> Result<(Option<String>, Version)> {
    if text.contains('/') {
        let pattern = crate::catalog::releases::TagPattern::new(crate::config::DEFAULT_TAG_PATTERN)
            .map_err(|e| anyhow::anyhow!(e))?;
        if let Some((template, v)) = pattern.parse(text) {
            return Ok((Some(template), v));
        }
    } else if let Some(v) = Version::parse(text.strip_prefix('v').unwrap_or(text)) {
        return Ok((None, v));
    }
    bail!(
        "--to {text:?} is not a version; write v<major>.<minor> (v1.0) or <template>/v<major>.<minor> (web-svc/v1.0)"
    )
}

/// The stage of each environment, from the spec repos as last fetched (for `stage:` targets
/// only; the daemon's mirrors are not fetched from here).
async fn stages(config: &Config, target: &PinTarget) -> Result<BTreeMap<String, String>> {
    if !matches!(target, PinTarget::Stage(_)) {
        return Ok(BTreeMap::new());
    }
    let cfg = config.clone();
    let snapshot = tokio::task::spawn_blocking(move || crate::desired::load(&cfg, None, false))
        .await
        .context("reading the spec repos panicked")?;
    Ok(crate::evaluate::environment_field(&snapshot, |e| {
        e.stage.as_ref()
    }))
}

/// `protond rollback <target> --to <version>`: checks and records a pin; the daemon moves
/// the covered resources back through the stage gates.
pub(super) fn rollback_cmd(
    config: &Path,
    target: &str,
    to: &str,
    by: Option<&str>,
    via: Via,
) -> Result<ExitCode> {
    let config = load_config(config)?;
    let target = pin_target(target)?;
    let (template, version) = pin_version(to)?;
    let pin = Pin {
        target,
        template,
        version,
    };
    runtime()?.block_on(async move {
        let store = Store::open_config(&config).await?;
        let stages = stages(&config, &pin.target).await?;
        let registered: BTreeSet<(String, Version)> = store
            .template_versions()
            .await?
            .into_iter()
            .filter(|v| v.registered)
            .map(|v| (v.template, v.version))
            .collect();
        let records = store.resources().await?;
        let checked = match crate::evaluate::rollback::check(&pin, &records, &stages, &registered) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("refused: {e}");
                return Ok(ExitCode::from(1));
            }
        };
        if via == Via::PullRequest {
            let ids = checked.moves.iter().map(|m| m.id.clone()).collect();
            let deployed = records.iter().map(|r| (r.id.clone(), r.version)).collect();
            let one = match &checked.pin.target {
                PinTarget::Resource(id) => Some(id.as_str()),
                _ => None,
            };
            let template = checked.pin.template.as_deref();
            return rollback_pr::open(&config, &ids, template, Some(version.minor), one, &deployed)
                .await;
        }
        let (kind, name) = pin_parts(&checked.pin.target);
        let record = PinRecord {
            target_kind: kind.into(),
            target_name: name.into(),
            template: checked.pin.template.clone(),
            version,
            by: who(by),
            set_at: String::new(),
        };
        store.put_pin(&record).await?;
        let template = checked.pin.template.as_deref().unwrap_or_default();
        println!(
            "pinned {} to {template} {version} by {}; `protond unpin {}` follows new minors again",
            target_text(&checked.pin.target),
            record.by,
            target_text(&checked.pin.target)
        );
        for m in &checked.moves {
            if m.from == m.to {
                println!("  {}: stays on {} (no newer minor applied)", m.id, m.to);
            } else {
                println!(
                    "  {}: {} -> {} (rollback, through the stage gates)",
                    m.id, m.from, m.to
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn pin_parts(t: &PinTarget) -> (&'static str, &str) {
    match t {
        PinTarget::Resource(n) => ("resource", n),
        PinTarget::Environment(n) => ("environment", n),
        PinTarget::Stage(n) => ("stage", n),
    }
}

fn target_text(t: &PinTarget) -> String {
    match pin_parts(t) {
        ("resource", id) => id.to_string(),
        (kind, name) => format!("{kind}:{name}"),
    }
}

/// `protond unpin <target> [--template <name>]`.
pub(super) fn unpin_cmd(
    config: &Path,
    target: &str,
    template: Option<&str>,
    via: Via,
) -> Result<ExitCode> {
    let config = load_config(config)?;
    let target = pin_target(target)?;
    runtime()?.block_on(async move {
        let store = Store::open_config(&config).await?;
        if via == Via::PullRequest {
            return unpin_pr(&config, &store, &target, template).await;
        }
        let (kind, name) = pin_parts(&target);
        let n = store.delete_pins(kind, name, template).await?;
        if n == 0 {
            eprintln!(
                "no pin on {}; `protond holds` lists them",
                target_text(&target)
            );
            return Ok(ExitCode::from(1));
        }
        println!(
            "unpinned {}: its resources follow the newest minor again (through the stage gates)",
            target_text(&target)
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// `protond unpin --via pull-request`: a pull request removing `minor:` from the spec files
/// declaring the target's resources.
async fn unpin_pr(
    config: &Config,
    store: &Store,
    target: &PinTarget,
    template: Option<&str>,
) -> Result<ExitCode> {
    let stages = stages(config, target).await?;
    let records = store.resources().await?;
    let ids: BTreeSet<String> = records
        .iter()
        .filter(|r| crate::evaluate::rollback::covers(target, r, &stages))
        .map(|r| r.id.clone())
        .collect();
    if ids.is_empty() {
        eprintln!(
            "refused: {} covers no deployed resource; `protond status` lists them",
            target_text(target)
        );
        return Ok(ExitCode::from(1));
    }
    let deployed = records.iter().map(|r| (r.id.clone(), r.version)).collect();
    let one = match target {
        PinTarget::Resource(id) => Some(id.as_str()),
        _ => None,
    };
    rollback_pr::open(config, &ids, template, None, one, &deployed).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollback_arguments_parse_or_name_the_fix() {
        let v = |major, minor| Version { major, minor };
        assert_eq!(pin_version("v1.0").expect("v"), (None, v(1, 0)));
        assert_eq!(pin_version("1.2").expect("v"), (None, v(1, 2)));
        assert_eq!(
            pin_version("web-svc/v1.0").expect("v"),
            (Some("web-svc".into()), v(1, 0))
        );
        let e = pin_version("latest").expect_err("bad").to_string();
        assert!(e.contains("v<major>.<minor>"), "{e}");
        assert_eq!(
            pin_target("stage:prod").expect("t"),
            PinTarget::Stage("prod".into())
        );
        let e = pin_target("template:web").expect_err("bad").to_string();
        assert!(e.contains("environment:<name>"), "{e}");
    }
}
