//! `protond check-config`: loads a `proton.toml` and lists every problem. It reads the file,
//! the metadata of local repo paths (they must be git repositories), and the state store
//! only when it exists, read-only, to warn about resources recorded from spec repos that are
//! no longer configured. It must never create, migrate or write the store, fetch a repo, or
//! call AWS.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use crate::config::Config;

/// `protond check-config`: prints a one-line summary of a valid config (with `[ha] shards`
/// above 1, a line naming each shard's spec repos; and a warning per spec repo that the
/// state holds resources of but the config no longer names), or each problem and their count (exit 1): every unknown key with its line and the nearest valid
/// key, every local repo path that is not a git repository, every invalid value.
pub(super) fn check_config_cmd(config: &Path) -> ExitCode {
    match Config::load_checked(config) {
        Ok(c) => {
            println!(
                "{}: ok ({} template repos, {} spec repos)",
                config.display(),
                c.template_repos.len(),
                c.spec_repos.len()
            );
            if c.ha.shards > 1 {
                println!("{}", shard_summary(&c));
            }
            for w in unconfigured_warnings(&c) {
                eprintln!("warning: {w}");
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!("{} problem(s) in {}", errors.len(), config.display());
            ExitCode::from(1)
        }
    }
}

/// Each shard's spec repos (`[ha] shards` above 1), by `shard_of`: `shards: 0: a, b; 1: c;
/// 2: -`. A shard whose replicas are gone has its repos taken over elsewhere at run time.
fn shard_summary(config: &Config) -> String {
    let mut per_shard = vec![Vec::new(); config.ha.shards as usize];
    for r in &config.spec_repos {
        let shard = crate::config::shard_of(&r.name, config.ha.shards, r.shard);
        if let Some(names) = per_shard.get_mut(shard as usize) {
            names.push(r.name.as_str());
        }
    }
    let shards: Vec<String> = per_shard
        .iter()
        .enumerate()
        .map(|(i, names)| {
            let names = if names.is_empty() {
                "-".to_string()
            } else {
                names.join(", ")
            };
            format!("{i}: {names}")
        })
        .collect();
    format!("shards: {}", shards.join("; "))
}

/// One warning per spec repo whose resources the state holds and that the config does not
/// name (or names as retired); a warning too when the store cannot be read. Nothing when
/// the store does not exist.
fn unconfigured_warnings(config: &Config) -> Vec<String> {
    let read = async {
        let Some(store) = crate::state::Store::open_read_only(config).await? else {
            return Ok((BTreeMap::new(), BTreeMap::new()));
        };
        let counts = store.resources_per_repo().await?;
        // A store written before `protond forget` existed has no such table: none forgotten.
        let forgotten = store.forgotten_repos().await.unwrap_or_default();
        Ok::<_, crate::state::StateError>((counts, forgotten))
    };
    let result = match super::runtime() {
        Ok(rt) => rt.block_on(read),
        Err(e) => return vec![format!("the state store was not checked: {e:#}")],
    };
    let (counts, forgotten) = match result {
        Ok(read) => read,
        Err(e) => return vec![format!("the state store was not checked: {e}")],
    };
    let mut out = Vec::new();
    for (repo, n) in counts {
        match config.spec_repos.iter().find(|r| r.name == repo) {
            Some(r) if r.retired => out.push(format!(
                "spec repo {repo} is retired: its {n} recorded resource(s) are deleted by the next cycles, within the deletion budget"
            )),
            Some(_) => {}
            None if forgotten.contains_key(&repo) => out.push(format!(
                "spec repo {repo} is not in the config and was forgotten (protond forget): its {n} recorded resource(s) are deleted by the next cycles, within the deletion budget"
            )),
            None => out.push(format!(
                "the state holds {n} resource(s) deployed from spec repo {repo}, which is not in the config: they are kept as unknown and reconcile --once exits 1. Add the repo back, or delete them explicitly: set retired = true on its [[spec_repos]] entry, or run protond forget {repo}"
            )),
        }
    }
    out
}
