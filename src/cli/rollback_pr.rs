//! `protond rollback --via pull-request` and `unpin --via pull-request`: a rollback as a pull
//! request to the spec repo instead of a pin in the store. For each spec file declaring a
//! covered resource it writes (or removes) `minor:` in the file's `template:` reference
//! ([`crate::propose::rewrite::set_minor`], every other line kept), commits that on
//! `protond/rollback/<file>-<hash>` (`protond/unpin/...`), pushes it and opens one pull request
//! through the repo's `forge`; the daemon moves the resources once it is merged, like any
//! spec change. It must never write the store, deploy, or fetch the daemon's mirrors (it
//! reads the spec repos as last fetched).

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::config::{Config, ForgeConfig, SpecRepo};
use crate::desired::{SpecEntry, SpecRepoState};
use crate::forge::{AnyForge, Forge, PullRequestDraft};
use crate::model::Version;
use crate::spec::SpecFile;

/// How `rollback` and `unpin` act.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    /// Record (or delete) a pin in the state store (the default).
    #[default]
    Pin,
    /// Open a pull request setting (or removing) `minor:` in the spec files.
    PullRequest,
}

/// One spec file to change.
struct FileEdit<'a> {
    repo: &'a SpecRepo,
    state: &'a SpecRepoState,
    entry: &'a SpecEntry,
    /// `service payments` or `environment dev`.
    what: String,
    template: String,
    major: u32,
    /// The minor the file pins now, if any.
    pinned: Option<u32>,
    /// The resources the file declares.
    owned: Vec<String>,
    text: String,
}

/// The spec files declaring any of `ids` on `template` (any when `None`), with `minor` set
/// (or removed); files already so are left out.
fn edits<'a>(
    config: &'a Config,
    snapshot: &'a crate::desired::Snapshot,
    ids: &BTreeSet<String>,
    template: Option<&str>,
    minor: Option<u32>,
) -> Result<Vec<FileEdit<'a>>> {
    let mut out = Vec::new();
    for state in &snapshot.spec_repos {
        let Some(repo) = config.spec_repos.iter().find(|r| r.name == state.repo) else {
            continue;
        };
        for entry in &state.files {
            let Ok(spec) = &entry.spec else { continue };
            let Some(t) = spec.template() else { continue };
            let owned = crate::propose::owned_ids(spec);
            if template.is_some_and(|n| n != t.name) || !owned.iter().any(|i| ids.contains(i)) {
                continue;
            }
            let text = crate::propose::rewrite::set_minor(&entry.text, minor).with_context(|| {
                format!(
                    "{}: {}: no `template:` header protond can edit; set `minor:` in it by hand",
                    state.repo, entry.path
                )
            })?;
            if text == entry.text {
                continue;
            }
            let what = match spec {
                SpecFile::Service(s) => format!("service {}", s.name),
                SpecFile::Environment(e) => format!("environment {}", e.name),
            };
            out.push(FileEdit {
                repo,
                state,
                entry,
                what,
                template: t.name.clone(),
                major: t.major,
                pinned: t.minor,
                owned,
                text,
            });
        }
    }
    Ok(out)
}

/// The pull request's body: `head`, what moves (each of `owned` from its deployed version
/// to `to`), and `note` when set.
fn body(
    head: &str,
    owned: &[String],
    to: &str,
    deployed: &BTreeMap<String, Version>,
    note: &str,
) -> String {
    let mut out = format!("{head}\n\n");
    if !note.is_empty() {
        out.push_str(note);
        out.push_str("\n\n");
    }
    out.push_str("Once merged, the daemon moves (through the stage gates):\n\n| Resource | From | To |\n|---|---|---|\n");
    for id in owned {
        let from = deployed
            .get(id)
            .map_or_else(|| "not deployed".to_string(), ToString::to_string);
        out.push_str(&format!("| `{id}` | {from} | {to} |\n"));
    }
    out
}

/// The note when the target is one resource but the file pins every resource of `what`.
fn whole_service_note(target: Option<&str>, what: &str, owned: &[String]) -> String {
    match target {
        Some(id) if owned.len() > 1 && owned.iter().any(|o| o == id) => format!(
            "The template reference is per service: this pins every resource of {what}, not only `{id}` \
             (for one instance alone, record a pin: `protond rollback {id} --to ...` without --via)."
        ),
        _ => String::new(),
    }
}

/// The body's first line: what the change does to the file.
fn head(e: &FileEdit<'_>, minor: Option<u32>) -> String {
    match (minor, e.pinned) {
        (Some(m), _) => format!(
            "Requested with `protond rollback --via pull-request`: `{}` of {} now pins **{} v{}.{m}**.",
            e.entry.path, e.what, e.template, e.major
        ),
        (None, p) => format!(
            "Requested with `protond unpin --via pull-request`: `{}` of {} drops `minor: {}` and follows the newest {} v{} minor again.",
            e.entry.path,
            e.what,
            p.map_or_else(String::new, |m| m.to_string()),
            e.template,
            e.major
        ),
    }
}

/// Checks every file's repo has a forge before anything is pushed.
fn forges<'a>(edits: &[FileEdit<'a>]) -> Result<Vec<&'a ForgeConfig>> {
    edits
        .iter()
        .map(|e| {
            e.repo.forge.as_ref().with_context(|| {
                format!(
                    "spec repo {:?} has no `forge` for --via pull-request ({}); add \
                     `forge = {{ kind = \"github\", api_url = \"...\", repo = \"owner/name\", token_env = \"...\" }}` \
                     to its [[spec_repos]] table, or drop --via to record a pin",
                    e.repo.name, e.entry.path
                )
            })
        })
        .collect()
}

/// Commits `e` on `branch`, pushes it, and opens (or updates) its pull request; returns
/// the pull request's address, or the branch for the plain `git` forge.
async fn open_one(
    config: &Config,
    e: &FileEdit<'_>,
    forge_cfg: &ForgeConfig,
    branch: &str,
    draft: PullRequestDraft,
) -> Result<String> {
    let base = e.state.commit.clone().with_context(|| {
        format!(
            "spec repo {:?} was never read; run `protond reconcile --once` first",
            e.repo.name
        )
    })?;
    let mirror = crate::source::Mirror::open(&e.repo.url, &config.data_dir.join("git"))?;
    let git_dir = mirror.path().to_path_buf();
    let (path, text, message) = (
        e.entry.path.clone(),
        e.text.clone(),
        format!("{}\n\n{}", draft.title, draft.body),
    );
    let (name, email) = (
        config.proposals.author_name.clone(),
        config.proposals.author_email.clone(),
    );
    let commit = tokio::task::spawn_blocking(move || -> Result<String> {
        let base = gix::ObjectId::from_hex(base.as_bytes()).context("the spec repo's head")?;
        Ok(mirror
            .write_commit(
                base,
                &[(path, text.into_bytes())],
                &[],
                &message,
                (&name, &email),
            )?
            .to_string())
    })
    .await
    .context("writing the commit panicked")??;
    crate::forge::push_branch(&git_dir, &e.repo.url, &commit, branch, forge_cfg).await?;
    let forge = AnyForge::new(forge_cfg);
    if let Some(pr) = forge.find_open_to(branch, &draft.base).await? {
        forge.update(pr.number, &draft).await?;
        return Ok(format!("{} (updated)", pr.url));
    }
    let (pr, warnings) = forge.open_with(&draft, &e.repo.pull_options).await?;
    for w in warnings {
        eprintln!("warning: the pull request is open, but an option could not be applied: {w}");
    }
    Ok(pr.map_or_else(
        || format!("branch {branch} pushed (the `git` forge opens no pull request)"),
        |p| p.url,
    ))
}

/// Opens one pull request per spec file declaring `ids`: `minor` set (rollback) or removed
/// (unpin, `minor` `None`). `target` is the resource id when one resource was named.
pub(super) async fn open(
    config: &Config,
    ids: &BTreeSet<String>,
    template: Option<&str>,
    minor: Option<u32>,
    target: Option<&str>,
    deployed: &BTreeMap<String, Version>,
) -> Result<ExitCode> {
    let cfg = config.clone();
    let snapshot = tokio::task::spawn_blocking(move || crate::desired::load(&cfg, None, false))
        .await
        .context("reading the spec repos panicked")?;
    let edits = edits(config, &snapshot, ids, template, minor)?;
    if edits.is_empty() {
        bail!(
            "no spec file to change: the spec files declaring {} already say so (or declare none); `protond holds` lists pins",
            ids.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let forge_cfgs = forges(&edits)?;
    for (e, forge_cfg) in edits.iter().zip(forge_cfgs) {
        let (kind, to, title) = if let Some(m) = minor {
            let to = format!("v{}.{m}", e.major);
            let title = format!("Roll back {} to {} {to}", e.what, e.template);
            ("rollback", to, title)
        } else {
            let to = format!("the newest v{} minor", e.major);
            let title = format!("Unpin {}: follow {} {to}", e.what, e.template);
            ("unpin", to, title)
        };
        let note = whole_service_note(target, &e.what, &e.owned);
        if !note.is_empty() {
            println!("note: {note}");
        }
        let branch = crate::propose::branch_name("", &e.entry.path).replacen(
            "upgrade/",
            &format!("protond/{kind}/"),
            1,
        );
        let draft = PullRequestDraft {
            branch: branch.clone(),
            base: e.repo.branch.trim_start_matches("refs/heads/").to_string(),
            title: crate::forge::draft_title(forge_cfg.kind, &title, e.repo.pull_options.draft),
            body: body(&head(e, minor), &e.owned, &to, deployed, &note),
        };
        let url = open_one(config, e, forge_cfg, &branch, draft).await?;
        println!("{}: {}: {title}: {url}", e.repo.name, e.entry.path);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_says_what_moves_and_when_the_whole_service_is_pinned() {
        let owned = vec![
            "service_instance/p/a".to_string(),
            "service_instance/p/b".to_string(),
        ];
        let deployed = BTreeMap::from([(owned[0].clone(), Version { major: 1, minor: 1 })]);
        let b = body("Head.", &owned, "v1.0", &deployed, "Note.");
        assert_eq!(
            b,
            "Head.\n\nNote.\n\nOnce merged, the daemon moves (through the stage gates):\n\n\
             | Resource | From | To |\n|---|---|---|\n\
             | `service_instance/p/a` | 1.1 | v1.0 |\n\
             | `service_instance/p/b` | not deployed | v1.0 |\n"
        );
        for (target, want) in [
            (Some("service_instance/p/a"), true),
            (Some("service_instance/q/a"), false),
            (None, false),
        ] {
            let note = whole_service_note(target, "service p", &owned);
            assert_eq!(
                note.contains("pins every resource of service p"),
                want,
                "{target:?}"
            );
        }
        assert!(
            whole_service_note(Some("environment/dev"), "environment dev", &owned[..1]).is_empty()
        );
    }
}
