//! `protond plan`: reads the repos and the store and shows what a reconcile would do now,
//! through the daemon's own load → evaluate (compute, diff, schedule) path, each hold with
//! its reason. It is read-only: it must never write the store, deploy, or open a proposal.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::Value;

use super::{OutputFormat, load_config, runtime};
use crate::desired::Snapshot;
use crate::evaluate::Evaluation;
use crate::plan::schedule::Schedule;

/// `protond plan`: loads the desired state (fetching the repos first unless `fetch` is
/// false), evaluates it against the store's records, and prints the plan and the schedule.
pub(super) fn plan_cmd(config: &Path, output: OutputFormat, fetch: bool) -> Result<ExitCode> {
    let config = load_config(config)?;
    runtime()?.block_on(async move {
        // Read-only: the plan reads the repos and the store, and writes nothing.
        let store = crate::state::Store::open(&config.state).await?;
        let cfg = config.clone();
        let mut snapshot =
            tokio::task::spawn_blocking(move || crate::desired::load(&cfg, None, fetch))
                .await
                .context("reading the repos panicked")?;
        snapshot.add_forgotten(&store.forgotten_repos().await?);
        if !crate::daemon::customer::stacks_to_read(&snapshot).is_empty() {
            use crate::provision::cloudformation::{CloudFormation, Settings};
            let cfn = CloudFormation::new(Settings::from_config(&config)).await;
            crate::daemon::customer::read_stacks(&cfn, &mut snapshot).await;
        }
        let waiting = crate::daemon::reconcile::waiting(&store).await?;
        let facts = crate::daemon::reconcile::read_facts(
            &store,
            BTreeSet::new(),
            waiting,
            BTreeMap::new(),
            std::time::SystemTime::now(),
        )
        .await?;
        let eval = crate::evaluate::evaluate(&snapshot, &facts, &config, None);
        let mut out = std::io::stdout().lock();
        match output {
            OutputFormat::Json => {
                let doc = plan_json(&eval, &snapshot);
                writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
            }
            OutputFormat::Table => {
                let table = crate::ops::plan_table(&eval.plan, &eval.set, &snapshot.catalog);
                write!(out, "{table}")?;
                write!(
                    out,
                    "{}",
                    customer_managed_section(&eval.set.customer_managed)
                )?;
                write!(out, "{}", schedule_section(&eval.schedule))?;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// The customer-managed environments, which protond never deploys, and where their outputs
/// come from; empty when there are none.
fn customer_managed_section(environments: &BTreeMap<String, String>) -> String {
    if environments.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "\nCustomer-managed environments (never created, updated or deleted by protond):\n",
    );
    for (id, how) in environments {
        s.push_str(&format!("  {id}  customer-managed: {how}\n"));
    }
    s
}

/// The `--output json` document: the actions, the schedule's decisions, the proposals, and
/// what could not be used (unknown repos, problems, rejected releases).
fn plan_json(eval: &Evaluation, snapshot: &Snapshot) -> Value {
    let rejected: Vec<Value> = snapshot
        .catalog
        .rejected
        .iter()
        .map(|r| {
            serde_json::json!({
                "template": r.template,
                "version": r.version.to_string(),
                "tag": r.tag,
                "repo": r.repo,
                "reason": r.reason,
            })
        })
        .collect();
    serde_json::json!({
        "actions": eval.plan.actions,
        "schedule": eval.schedule.decisions,
        "proposals": eval.plan.proposals,
        "unknown_repos": eval.set.unknown_repos,
        "notes": eval.set.record_notes,
        "problems": eval.set.problems,
        "customer_managed": eval.set.customer_managed,
        "rejected_releases": rejected,
    })
}

/// What the daemon would start now and what it holds, with each hold's reason.
fn schedule_section(schedule: &Schedule) -> String {
    let starts = schedule.starts().count();
    let holds: Vec<_> = schedule.holds().collect();
    let mut out = format!("\nThe daemon would start {starts} change(s) now");
    if holds.is_empty() {
        out.push_str(".\n");
        return out;
    }
    out.push_str(&format!(" and hold {}:\n", holds.len()));
    for (a, why) in holds {
        out.push_str(&format!("  held  {}: {why}\n", a.id));
    }
    out
}
