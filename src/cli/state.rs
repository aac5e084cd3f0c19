//! `protond state copy --from URL --to URL`: moves the state from one store to another
//! (a `SQLite` file to PostgreSQL when going HA), through `state::copy`, and prints the rows
//! of each table on both sides and whether the status view is the same. Stop the daemon
//! first: the copy is of the source as it is when it is read.
//!
//! It prints what the library returns; it never writes the source, and it refuses a
//! non-empty target unless `--force`.

use std::process::ExitCode;

use anyhow::Result;

use super::runtime;
use crate::state::Store;
use crate::state::copy::{CopyError, CopyReport, copy};

/// What `protond state` does.
#[derive(clap::Subcommand, Debug)]
pub enum StateAction {
    /// Copy every table of the state (ids kept) from one store to another, in one
    /// transaction on the target, then check rows per table and the status view on both.
    /// Leases, replicas and queued webhooks are not copied; the target is migrated when
    /// opened. Stop every protond using the source first.
    Copy {
        /// The source: `sqlite://path/state.db` or `postgres://user@host:5432/db` (the
        /// password from `PROTOND_STATE_PASSWORD`).
        #[arg(long)]
        from: String,
        /// The target, created and migrated if new (a `SQLite` file, or an existing
        /// PostgreSQL database).
        #[arg(long)]
        to: String,
        /// Replace the rows of a target that already holds state.
        #[arg(long)]
        force: bool,
    },
}

/// Runs `protond state …`.
pub(super) fn state_cmd(action: StateAction) -> Result<ExitCode> {
    let StateAction::Copy { from, to, force } = action;
    if from == to {
        eprintln!("--from and --to name the same store ({from}): name another target");
        return Ok(ExitCode::from(2));
    }
    runtime()?.block_on(async move {
        let source = Store::open(&from).await?;
        let target = Store::open(&to).await?;
        match copy(&source, &target, force).await {
            Ok(report) => {
                print!("{}", table(&report, source.location(), target.location()));
                Ok(ExitCode::SUCCESS)
            }
            Err(e @ CopyError::NotEmpty { .. }) => {
                eprintln!("{e}");
                Ok(ExitCode::from(1))
            }
            Err(e) => Err(e.into()),
        }
    })
}

/// The rows per table on both sides, then the verdict.
fn table(report: &CopyReport, from: &str, to: &str) -> String {
    let mut out = format!("copied {from} to {to}\n");
    out.push_str(&format!(
        "{:<20} {:>10} {:>10}\n",
        "TABLE", "SOURCE", "COPY"
    ));
    for (table, a, b) in &report.tables {
        out.push_str(&format!("{table:<20} {a:>10} {b:>10}\n"));
    }
    let total: i64 = report.tables.iter().map(|(_, a, _)| a).sum();
    out.push_str(&format!(
        "{total} rows in {} tables; status view {}\n",
        report.tables.len(),
        if report.same_overview {
            "identical on both"
        } else {
            "DIFFERS"
        }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_each_table_and_the_verdict() {
        let report = CopyReport {
            tables: vec![("meta", 1, 1), ("deployments", 12, 12)],
            same_overview: true,
        };
        assert_eq!(
            table(&report, "a.db", "postgres://h/db"),
            "copied a.db to postgres://h/db\n\
             TABLE                    SOURCE       COPY\n\
             meta                          1          1\n\
             deployments                  12         12\n\
             13 rows in 2 tables; status view identical on both\n"
        );
    }
}
