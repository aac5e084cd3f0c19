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
        let store = crate::state::Store::open_config(&config).await?;
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
        // What the daemon's drift checks found (read only: the plan never checks or heals).
        let drift = store.drift().await?;
        let mut out = std::io::stdout().lock();
        match output {
            OutputFormat::Json => {
                let mut doc = plan_json(&eval, &snapshot);
                doc["drift"] = serde_json::to_value(&drift)?;
                doc["quarantine"] = quarantine_json(&eval, &config);
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
                write!(out, "{}", drift_section(&drift, &eval, &config.drift))?;
                write!(out, "{}", quarantine_section(&eval, &config))?;
            }
        }
        // Problems listed (invalid specs, unreadable repos, drift): exit 1, as the README's
        // exit codes say.
        Ok(if has_problems(&eval) || !drift.is_empty() {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    })
}

/// The releases this evaluation quarantines (the daemon records them on its next cycle) and
/// the rollbacks offered; empty when none.
fn quarantine_section(eval: &Evaluation, config: &crate::config::Config) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    for q in &eval.new_quarantines {
        let _ = writeln!(
            s,
            "\nQuarantined by the next cycle: {} {}: {}",
            q.template, q.version, q.reason
        );
    }
    if !eval.rollback_offers.is_empty() {
        s.push_str("\nRollbacks available from quarantined releases:\n");
        for (id, r) in &eval.rollback_offers {
            let line = crate::ops::quarantine::rollback_line(id, r, config.quarantine.rollback);
            let _ = writeln!(s, "  {line}");
        }
    }
    s
}

fn quarantine_json(eval: &Evaluation, config: &crate::config::Config) -> serde_json::Value {
    let new: Vec<serde_json::Value> = eval
        .new_quarantines
        .iter()
        .map(|q| serde_json::json!({"template": q.template, "version": q.version.to_string(), "reason": q.reason}))
        .collect();
    let offers: Vec<serde_json::Value> = eval
        .rollback_offers
        .iter()
        .map(|(id, r)| {
            serde_json::json!({
                "resource": id,
                "from": r.from.to_string(),
                "to": r.to.to_string(),
                "mode": config.quarantine.rollback.as_str(),
                "line": crate::ops::quarantine::rollback_line(id, r, config.quarantine.rollback),
            })
        })
        .collect();
    serde_json::json!({"new": new, "rollback_offers": offers})
}

/// Whether the plan lists problems: the desired state's (bad spec files, unread repos) or
/// an invalid resource.
fn has_problems(eval: &Evaluation) -> bool {
    !eval.set.problems.is_empty()
        || eval
            .plan
            .actions
            .iter()
            .any(|a| matches!(a.action, crate::plan::ActionKind::Invalid { .. }))
}

/// The drift the daemon's checks found, with what the policy does about it; empty when none.
fn drift_section(
    drift: &BTreeMap<String, Vec<crate::state::drift::DriftRecord>>,
    eval: &Evaluation,
    policy: &crate::config::DriftConfig,
) -> String {
    if drift.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "\nDrift (live AWS differs from the record; found by the daemon's drift check):\n",
    );
    for (id, records) in drift {
        let declared = eval.set.resources.iter().find(|r| &r.desired.id == id);
        let heal = declared.is_some_and(|r| {
            policy.policy_for(r.environment.as_deref(), &r.desired.repo)
                == crate::config::DriftPolicy::Heal
        });
        let what = if heal {
            "policy heal: redeployed through the normal path (a missing stack is recreated)"
        } else {
            "policy report: not redeployed (set [drift] policy = \"heal\" or redeploy it)"
        };
        s.push_str(&format!("  {id} ({what}):\n"));
        for r in records {
            s.push_str(&format!(
                "    {}: {} (since {})\n",
                r.kind, r.detail, r.found_at
            ));
        }
    }
    s
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
