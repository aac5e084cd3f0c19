//! `protond preview <template> --bundle <dir | git ref>`: what a candidate release would do to
//! the fleet before it is tagged. Reads the config, the repos and the store the way `protond
//! plan` does, puts the candidate into the catalog (after the same checks as a release tag),
//! computes the desired state with and without it, and prints the resources that would move
//! to it with their predicted `CloudFormation` impact ([`crate::preview`]); with
//! `--change-sets`, asks `CloudFormation` through a change set per live stack (always
//! deleted); with `--comment`, posts the Markdown report to the template repo's pull request.
//!
//! Read-only: it must never write the store, tag, deploy, or execute a change set.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};

use super::{load_config, runtime};
use crate::catalog::releases::{self, Release, ReleaseState};
use crate::catalog::{self, BundleFiles, Limits};
use crate::config::{Config, TemplateRepo};
use crate::desired::{DesiredSet, Snapshot};
use crate::evaluate::Facts;
use crate::plan::Version;
use crate::preview::{self, Candidate, Moving, Preview};
use crate::source::Mirror;

/// Output format of `preview`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PreviewFormat {
    /// A readable table.
    Table,
    /// JSON (the shape the README documents).
    Json,
    /// The Markdown report (what `--comment` posts).
    Markdown,
}

/// Arguments of `protond preview`.
#[derive(Debug, clap::Args)]
pub struct PreviewArgs {
    /// The template whose candidate release is previewed.
    pub template: String,
    /// The candidate: a bundle folder (`<template>/vN`), a template repo checkout, or a git
    /// ref (branch, tag or commit) of the configured template repo's mirror.
    #[arg(long)]
    pub bundle: String,
    /// The version it would be tagged as (`v1.3`); default the next minor of the template's
    /// newest major.
    #[arg(long = "as", value_name = "vM.m")]
    pub as_version: Option<String>,
    /// Confirm the prediction with a `CloudFormation` change set on each live stack (created,
    /// described, and always deleted; never executed).
    #[arg(long)]
    pub change_sets: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub output: PreviewFormat,
    /// Post the Markdown report as a comment on this pull request (merge request) of the
    /// template repo, through its `forge`.
    #[arg(long, value_name = "PR")]
    pub comment: Option<u64>,
    /// Config file.
    #[arg(long, default_value = "proton.toml")]
    pub config: PathBuf,
    /// Use the already fetched mirrors; do not fetch.
    #[arg(long)]
    pub no_fetch: bool,
}

/// The candidate's files and where they came from.
struct Read {
    files: BundleFiles,
    origin: String,
    folder: String,
    kind: &'static str,
    commit: Option<String>,
}

/// `protond preview`.
pub(super) fn preview_cmd(args: &PreviewArgs) -> Result<ExitCode> {
    let config = load_config(&args.config)?;
    runtime()?.block_on(async move {
        let (snapshot, facts) = read_world(&config, !args.no_fetch).await?;
        let repo = template_repo(&config, &snapshot, &args.template)?;
        let version = candidate_version(
            &snapshot,
            &args.template,
            args.as_version.as_deref(),
            &args.bundle,
        )?;
        let read = read_candidate(&config, repo, &args.template, version, &args.bundle)?;
        let candidate = Candidate {
            template: args.template.clone(),
            version: version.to_string(),
            source: read.origin.clone(),
            read_as: read.kind.to_string(),
            commit: read.commit.clone(),
        };
        let checked = releases::check_candidate(
            &read.files,
            (&read.origin, &read.folder),
            &args.template,
            version,
            &Limits::default(),
            &|b, f| {
                crate::render::check_release_file(b, f)
                    .err()
                    .map(|e| e.to_string())
            },
        );
        let (mut report, templates) = match checked {
            Err(reason) => (rejected(candidate, reason), BTreeMap::new()),
            Ok(bundle) => {
                let release = Release {
                    repo: repo.name.clone(),
                    template: args.template.clone(),
                    version,
                    tag: tag_name(repo, &args.template, version),
                    commit: read.commit.clone().unwrap_or_else(|| "candidate".into()),
                    notes: None,
                    bundle: Arc::new(bundle),
                    state: ReleaseState::Current,
                    replaced: None,
                };
                compute(&snapshot, &facts, &config, candidate, &release)
            }
        };
        if args.change_sets && report.rejected.is_none() {
            report.change_sets =
                Box::pin(change_sets(&config, &facts, &report.resources, &templates)).await;
        }
        print(&report, args.output)?;
        if let Some(number) = args.comment {
            comment(repo, number, &report).await?;
        }
        Ok(if report.rejected.is_some() {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    })
}

/// The repos (as `protond plan` reads them) and the store's facts; no records when the
/// store does not exist (it is not created).
async fn read_world(config: &Config, fetch: bool) -> Result<(Snapshot, Facts)> {
    let cfg = config.clone();
    let mut snapshot = tokio::task::spawn_blocking(move || crate::desired::load(&cfg, None, fetch))
        .await
        .context("reading the repos panicked")?;
    let path = config.state.strip_prefix("sqlite://").unwrap_or_default();
    // A PostgreSQL store is read as it is (connected, never migrated); a SQLite file only
    // when it exists.
    let store = match crate::state::Backend::of(&config.state) {
        Some(crate::state::Backend::Postgres) => {
            crate::state::Store::open_read_only(config).await?
        }
        _ if Path::new(path).exists() => Some(crate::state::Store::open_config(config).await?),
        _ => None,
    };
    let facts = if let Some(store) = store {
        snapshot.add_forgotten(&store.forgotten_repos().await?);
        let waiting = crate::daemon::reconcile::waiting(&store).await?;
        crate::daemon::reconcile::read_facts(
            &store,
            BTreeSet::new(),
            waiting,
            BTreeMap::new(),
            std::time::SystemTime::now(),
        )
        .await?
    } else {
        empty_facts()
    };
    if !crate::daemon::customer::stacks_to_read(&snapshot).is_empty() {
        use crate::provision::cloudformation::{CloudFormation, Settings};
        let cfn = CloudFormation::new(Settings::from_config(config)).await;
        crate::daemon::customer::read_stacks(&cfn, &mut snapshot).await;
    }
    Ok((snapshot, facts))
}

/// Facts without a store: nothing deployed, nothing halted.
fn empty_facts() -> Facts {
    Facts::empty(std::time::SystemTime::now())
}

/// The template repo `template` is released from (the only one, for a template with no
/// release yet).
fn template_repo<'a>(
    config: &'a Config,
    snapshot: &Snapshot,
    template: &str,
) -> Result<&'a TemplateRepo> {
    let released = snapshot
        .catalog
        .releases()
        .find(|r| r.template == template)
        .map(|r| r.repo.clone());
    match (released, config.template_repos.as_slice()) {
        (Some(name), repos) => repos.iter().find(|r| r.name == name).ok_or_else(|| {
            anyhow!("template {template} is released from repo {name}, which is not in the config")
        }),
        (None, [only]) => Ok(only),
        (None, _) => bail!(
            "template {template} has no release in any configured template repo; with several [[template_repos]], tag its first release before previewing the next (or check the template name)"
        ),
    }
}

/// The version the candidate would be tagged as: `--as`, else the next minor of the
/// template's newest major (else `v<N>.0`, N from the bundle folder's `vN`).
fn candidate_version(
    snapshot: &Snapshot,
    template: &str,
    given: Option<&str>,
    bundle: &str,
) -> Result<Version> {
    if let Some(v) = given {
        let v = parse_version(v)?;
        if let Some(r) = snapshot
            .catalog
            .releases()
            .find(|r| r.template == template && r.version == v)
        {
            bail!(
                "{template} v{v} is already released (tag {}); a release never changes (a moved tag is refused), so preview the next version: --as v{}.{} (or leave --as out)",
                r.tag,
                v.major,
                v.minor + 1
            );
        }
        return Ok(v);
    }
    let newest = snapshot
        .catalog
        .releases()
        .filter(|r| r.template == template)
        .map(|r| r.version)
        .max();
    if let Some(v) = newest {
        return Ok(Version {
            major: v.major,
            minor: v.minor + 1,
        });
    }
    match catalog::name_and_major_from_path(Path::new(bundle)) {
        (_, Some(major)) => Ok(Version { major, minor: 0 }),
        (_, None) => bail!(
            "template {template} has no release yet: give the version the candidate would be tagged as with --as v<major>.<minor>"
        ),
    }
}

/// `v1.3` or `1.3`.
fn parse_version(text: &str) -> Result<Version> {
    let t = text.trim().trim_start_matches('v');
    let parsed = t
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
    parsed
        .map(|(major, minor)| Version { major, minor })
        .ok_or_else(|| {
            anyhow!("--as {text:?} is not a version; write it as v<major>.<minor>, e.g. v1.3")
        })
}

/// The release tag the candidate would get (`worker-svc/v1.1`).
fn tag_name(repo: &TemplateRepo, template: &str, version: Version) -> String {
    repo.tag_pattern
        .replace("{template}", template)
        .replace("{major}", &version.major.to_string())
        .replace("{minor}", &version.minor.to_string())
}

/// Reads the candidate's files: a bundle folder, the bundle folder of a template repo
/// checkout, or the bundle folder at a git ref of the template repo's mirror.
fn read_candidate(
    config: &Config,
    repo: &TemplateRepo,
    template: &str,
    version: Version,
    bundle: &str,
) -> Result<Read> {
    let folder = releases::bundle_folder(&repo.subdirectory, template, version.major);
    let limits = Limits::default();
    let path = Path::new(bundle);
    if path.is_dir() {
        let (dir, read_as) = if is_bundle(path) {
            if let (_, Some(major)) = catalog::name_and_major_from_path(path)
                && major != version.major
            {
                bail!(
                    "--bundle {bundle} is a v{major} bundle folder but the candidate is v{version}; pass the v{} folder or change --as",
                    version.major
                );
            }
            (path.to_path_buf(), "bundle folder")
        } else {
            let dir = path.join(&folder);
            if !dir.is_dir() {
                bail!(
                    "--bundle {bundle} is neither a bundle folder (schema/ and infrastructure/ or instance_infrastructure/) nor a template repo checkout holding {folder}/"
                );
            }
            (dir, "template repo checkout")
        };
        let files = catalog::read_dir(&dir, &limits).map_err(|es| problems(&es))?;
        return Ok(Read {
            files,
            origin: dir.display().to_string(),
            folder: String::new(),
            kind: read_as,
            commit: None,
        });
    }
    let mirror = Mirror::open(&repo.url, &config.data_dir.join("git")).with_context(|| {
        format!("--bundle {bundle} is not a folder, and the mirror of template repo {} cannot be opened to read it as a git ref", repo.name)
    })?;
    let commit = mirror.resolve_commit(bundle).with_context(|| {
        format!("--bundle {bundle} is not a folder, nor a branch, tag or commit of template repo {} (fetched refs only: run protond plan first, or pass a checkout folder)", repo.name)
    })?;
    let entries = mirror.read_tree(commit, &folder, limits.max_files, limits.max_total_bytes)?;
    let origin = format!("{}@{bundle}", repo.name);
    let files = releases::files_from_tree(&format!("{origin}:{folder}"), entries)
        .map_err(|es| problems(&es))?;
    Ok(Read {
        files,
        origin,
        folder,
        kind: "git ref",
        commit: Some(commit.to_string()),
    })
}

/// Whether `p` is a template bundle folder.
fn is_bundle(p: &Path) -> bool {
    p.join("schema").is_dir()
        || p.join("infrastructure").is_dir()
        || p.join("instance_infrastructure").is_dir()
}

/// Bundle errors as one error, one problem a line.
fn problems(es: &[catalog::BundleError]) -> anyhow::Error {
    let lines: Vec<String> = es.iter().map(ToString::to_string).collect();
    anyhow!("the candidate cannot be read:\n  {}", lines.join("\n  "))
}

/// A preview of a rejected candidate.
fn rejected(candidate: Candidate, reason: String) -> Preview {
    Preview {
        candidate,
        rejected: Some(reason),
        resources: Vec::new(),
        groups: Vec::new(),
        stages: Vec::new(),
        schema: preview::SchemaImpact::default(),
        change_sets: Vec::new(),
    }
}

/// The preview of an accepted candidate, and the candidate's rendered `CloudFormation`
/// template of each moving resource (for change sets).
fn compute(
    snapshot: &Snapshot,
    facts: &Facts,
    config: &Config,
    candidate: Candidate,
    release: &Release,
) -> (Preview, BTreeMap<String, String>) {
    let (template, version) = (release.template.clone(), release.version);
    let previous = snapshot
        .catalog
        .releases()
        .filter(|r| {
            r.template == template && r.version.major == version.major && r.version < version
        })
        .max_by_key(|r| r.version)
        .map(|r| r.bundle.clone());
    let mut with = snapshot.clone();
    with.catalog.insert(release.clone());
    let (cand, current) = desired_sets(snapshot, &with, facts, config, &template);
    let stages = crate::evaluate::environment_field(snapshot, |e| e.stage.as_ref());
    let order = &config.stages;
    let mut resources = preview::moving(
        (&cand, &current),
        &facts.records,
        (&template, version),
        &stages,
        order,
    );
    let groups = preview::group(&mut resources, order);
    let schema = preview::schema_impact(
        (&cand, &current),
        (&template, version),
        (previous.as_deref(), &release.bundle),
        &resources,
        &preview::declared_inputs(snapshot),
    );
    let templates = candidate_templates(&cand, &resources);
    let report = Preview {
        candidate,
        rejected: None,
        stages: preview::by_stage(&resources),
        resources,
        groups,
        schema,
        change_sets: Vec::new(),
    };
    (report, templates)
}

/// The desired state with the candidate (`with`), and without it, each resource of
/// `template` rendered on the version its record runs (operator pins kept in both).
fn desired_sets(
    snapshot: &Snapshot,
    with: &Snapshot,
    facts: &Facts,
    config: &Config,
    template: &str,
) -> (DesiredSet, DesiredSet) {
    let stages = crate::evaluate::environment_field(snapshot, |e| e.stage.as_ref());
    let pins = crate::evaluate::pins::resolve(&facts.pins, &facts.records, &stages);
    let halted: BTreeSet<(String, Version)> = facts.halted.keys().cloned().collect();
    let cand =
        crate::desired::compute_held(with, &facts.records, &config.account_id, &pins, &halted);
    let mut running = pins;
    for r in facts.records.iter().filter(|r| r.template == template) {
        running.entry(r.id.clone()).or_insert(r.version);
    }
    let current = crate::desired::compute_held(
        snapshot,
        &facts.records,
        &config.account_id,
        &running,
        &halted,
    );
    (cand, current)
}

/// The candidate's rendered template of each moving resource with a `CloudFormation`
/// document.
fn candidate_templates(cand: &DesiredSet, moving: &[Moving]) -> BTreeMap<String, String> {
    moving
        .iter()
        .filter(|m| m.documents.iter().any(|d| d.cloudformation))
        .filter_map(|m| {
            let r = cand.resources.iter().find(|r| r.desired.id == m.id)?;
            let (_, text) = r.documents.first()?;
            Some((m.id.clone(), text.clone()))
        })
        .collect()
}

/// One change set per moving resource with a recorded stack, compared with the prediction.
async fn change_sets(
    config: &Config,
    facts: &Facts,
    moving: &[Moving],
    templates: &BTreeMap<String, String>,
) -> Vec<preview::ChangeSetVerdict> {
    use crate::provision::cloudformation::{CloudFormation, Settings};
    let cfn = CloudFormation::new(Settings::from_config(config)).await;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = format!("protond-preview-{stamp}");
    let mut out = Vec::new();
    for m in moving {
        let Some(body) = templates.get(&m.id) else {
            continue;
        };
        let predicted: Vec<_> = m.changes().cloned().collect();
        let Some(record) = facts.records.iter().find(|r| r.id == m.id) else {
            continue;
        };
        let verdict = match cfn
            .preview_change_set(&m.id, &record.placement, body, &name)
            .await
        {
            Ok(aws) => preview::confirm(&m.id, &predicted, aws),
            Err(e) => preview::ChangeSetVerdict {
                id: m.id.clone(),
                status: "error".into(),
                details: vec![crate::error_chain(&e)],
                aws: Vec::new(),
            },
        };
        out.push(verdict);
    }
    out
}

/// Prints the preview in `format`.
fn print(report: &Preview, format: PreviewFormat) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        PreviewFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(report)?)?,
        PreviewFormat::Table => write!(out, "{}", preview::report::table(report))?,
        PreviewFormat::Markdown => write!(
            out,
            "{}",
            preview::report::markdown(report, crate::forge::MAX_COMMENT_BYTES)
        )?,
    }
    Ok(())
}

/// Posts the Markdown report on pull request `number` of the template repo's forge.
async fn comment(repo: &TemplateRepo, number: u64, report: &Preview) -> Result<()> {
    let Some(forge) = &repo.forge else {
        bail!(
            "--comment needs the template repo's forge: add a [template_repos.forge] table to template repo {} (kind, repo, token_env), as spec repos have",
            repo.name
        );
    };
    let body = preview::report::markdown(report, crate::forge::MAX_COMMENT_BYTES);
    let posted = crate::forge::AnyForge::new(forge)
        .comment(number, &body)
        .await
        .with_context(|| {
            format!(
                "commenting on pull request {number} of template repo {}",
                repo.name
            )
        })?;
    if !posted {
        bail!(
            "template repo {}'s forge is kind \"git\", which has no API to comment through; set its kind to github, gitlab or gitea",
            repo.name
        );
    }
    eprintln!(
        "Posted the preview on pull request {number} of template repo {}.",
        repo.name
    );
    Ok(())
}
