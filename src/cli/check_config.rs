//! `protond check-config`: loads a `proton.toml` and lists every problem. It only reads the
//! file: it must never open the store, fetch a repo, or call AWS.

use std::path::Path;
use std::process::ExitCode;

use crate::config::Config;

/// `protond check-config`: prints a one-line summary of a valid config, or each problem and
/// their count (exit 1).
pub(super) fn check_config_cmd(config: &Path) -> ExitCode {
    match Config::load(config) {
        Ok(c) => {
            println!(
                "{}: ok ({} template repos, {} spec repos)",
                config.display(),
                c.template_repos.len(),
                c.spec_repos.len()
            );
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
