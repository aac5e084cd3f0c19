//! `protond forget <repo>`: says, explicitly and on the record, that the resources deployed
//! from a spec repo removed from the config are to be deleted. It only marks the repo in the
//! store (`retired_repos`, with the time and the count) and logs it; the daemon's next
//! cycles plan the deletes like those of a `retired = true` repo, within the deletion
//! budget and in the usual order. It must never delete anything itself, and it refuses a
//! repo that is still in the config.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use super::{load_config, runtime};

/// `protond forget`: checks that `repo` is not configured and that the store holds
/// resources deployed from it, then marks it forgotten. Exit 1 when refused.
pub(super) fn forget_cmd(config: &Path, repo: &str) -> Result<ExitCode> {
    let config = load_config(config)?;
    if let Some(entry) = config.spec_repos.iter().find(|r| r.name == repo) {
        if entry.retired {
            println!(
                "spec repo {repo} is already retired in the config (retired = true): its resources are being deleted; nothing to do"
            );
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!(
            "spec repo {repo} is in the config: protond keeps deploying it. To delete its resources, set retired = true on its [[spec_repos]] entry, or remove the entry and run protond forget {repo} again"
        );
        return Ok(ExitCode::from(1));
    }
    runtime()?.block_on(async move {
        let store = crate::state::Store::open_config(&config).await?;
        let resources = store
            .resources_per_repo()
            .await?
            .get(repo)
            .copied()
            .unwrap_or(0);
        if resources == 0 {
            eprintln!(
                "the state holds no resources deployed from spec repo {repo}; nothing to forget (check the name: it is the `name` the repo's entry had in the config)"
            );
            return Ok(ExitCode::from(1));
        }
        store.forget_repo(repo, resources).await?;
        tracing::warn!(repo = %repo, resources, "Spec repo forgotten: its resources will be deleted by the next cycles, within the deletion budget.");
        println!(
            "spec repo {repo} forgotten: its {resources} resource(s) will be deleted by the next reconcile cycles, within the deletion budget (protond plan lists them). Adding the repo back to the config cancels this."
        );
        Ok(ExitCode::SUCCESS)
    })
}
