//! `protond redeploy`, `retry`, `cancel`, `wait` and `history`: manual actions on one
//! resource and following them. The actions only leave a request in the store through
//! [`crate::actions`] (the daemon acts on it at its next cycle); `wait` and `history` only
//! read. None of them deploys or calls AWS itself.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::{load_config, runtime};
use crate::actions::ActionError;
use crate::model::DeploymentStatus;
use crate::state::Store;

/// A manual action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// Deploy the current desired state even if unchanged.
    Redeploy,
    /// Lift a failed-until-change hold (`true`: also an ownership conflict).
    Retry(bool),
    /// Cancel the deployment in flight.
    Cancel,
}

/// Who asks, for the history: `cli:<user>`, or `by` when given.
pub(super) fn who(by: Option<&str>) -> String {
    match by {
        Some(b) => format!("cli:{b}"),
        None => format!(
            "cli:{}",
            std::env::var("USER")
                .or_else(|_| std::env::var("USERNAME"))
                .unwrap_or_else(|_| "unknown".into())
        ),
    }
}

/// Runs `action` on `resource`; exit 1 when refused.
pub(super) fn action_cmd(
    config: &Path,
    action: Action,
    resource: &str,
    by: Option<&str>,
) -> Result<ExitCode> {
    let config = load_config(config)?;
    let by = who(by);
    let poll = Some(config.poll_interval.as_secs().max(1));
    runtime()?.block_on(async move {
        let store = Store::open_config(&config).await?;
        let done = match action {
            Action::Redeploy => crate::actions::redeploy(&store, resource, &by, poll).await,
            Action::Retry(resolved) => {
                crate::actions::retry(&store, resource, &by, resolved, poll).await
            }
            Action::Cancel => crate::actions::cancel(&store, resource, &by).await,
        };
        match done {
            Ok(message) => {
                tracing::info!(resource = %resource, by = %by, action = ?action, "Manual action recorded.");
                println!("{message}");
                if action != Action::Cancel
                    && let Some(woken) = wake_daemon(&config.server).await
                {
                    println!("{woken}");
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(ActionError::State(e)) => Err(e.into()),
            Err(e) => {
                eprintln!("refused: {e}");
                Ok(ExitCode::from(1))
            }
        }
    })
}

/// Asks a daemon serving this config's API to start a cycle now (`POST /api/v1/reconcile`),
/// when its token is in this environment; says so when it did. Best effort: without an
/// answer, the request waits for the next poll.
pub(super) async fn wake_daemon(server: &crate::config::Server) -> Option<String> {
    let token = std::env::var(&server.token_env)
        .ok()
        .filter(|t| !t.is_empty())?;
    if !server.enabled {
        return None;
    }
    let mut addr = server.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .ok()?;
    let answer = client
        .post(format!("http://{addr}/api/v1/reconcile"))
        .bearer_auth(token)
        .send()
        .await
        .ok()?;
    answer.status().is_success().then(|| {
        format!("woke the daemon at {addr} (POST /api/v1/reconcile): its cycle starts now")
    })
}

/// `protond wait`: follows `resource`'s deployment in flight (or the one a pending request
/// is about to start) to its end, printing each new progress line; exit 0 when it
/// succeeded, 1 when it failed, 2 past `timeout`.
pub(super) fn wait_cmd(config: &Path, resource: &str, timeout: Duration) -> Result<ExitCode> {
    let config = load_config(config)?;
    runtime()?.block_on(async move {
        let store = Store::open_config(&config).await?;
        let started = Instant::now();
        let mut shown: Option<String> = None;
        let first = store.deployments(Some(resource), 1).await?;
        let Some(mut last) = first.into_iter().next() else {
            eprintln!(
                "{resource}: no deployment in the history; `protond status` lists the resource ids"
            );
            return Ok(ExitCode::from(1));
        };
        let mut pending = store.deploy_requests().await?.contains_key(resource)
            && last.status != DeploymentStatus::InProgress;
        loop {
            if last.status == DeploymentStatus::InProgress {
                pending = false;
                let notes = store.action_notes(&[last.id]).await?;
                let line = notes
                    .get(&last.id)
                    .and_then(|n| n.progress.as_ref())
                    .map(|p| {
                        format!(
                            "{resource}: deployment {} stack {} {} ({}s){}",
                            last.id,
                            p.stack,
                            p.status,
                            p.elapsed_secs,
                            p.last_event
                                .as_ref()
                                .map(|e| format!(": {e}"))
                                .unwrap_or_default()
                        )
                    });
                if line.is_some() && line != shown {
                    if let Some(l) = &line {
                        println!("{l}");
                    }
                    shown = line;
                }
            } else if !pending {
                return Ok(report_end(resource, &last));
            }
            if started.elapsed() > timeout {
                eprintln!(
                    "{resource}: still {} after {}s; stopped waiting (the deployment goes on)",
                    if pending { "queued" } else { "in progress" },
                    timeout.as_secs()
                );
                return Ok(ExitCode::from(2));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let newest = store.deployments(Some(resource), 1).await?;
            if let Some(d) = newest.into_iter().next() {
                if d.id != last.id {
                    pending = false;
                }
                last = d;
            }
        }
    })
}

fn report_end(resource: &str, d: &crate::state::DeploymentRecord) -> ExitCode {
    if d.status == DeploymentStatus::Succeeded {
        println!(
            "{resource}: deployment {} ({}) succeeded",
            d.id,
            d.deployment.action.as_str()
        );
        return ExitCode::SUCCESS;
    }
    println!(
        "{resource}: deployment {} ({}) failed: {}",
        d.id,
        d.deployment.action.as_str(),
        d.error.as_deref().unwrap_or("no error recorded")
    );
    ExitCode::from(1)
}

/// `protond history`: the newest deployments (of one resource), with who asked.
pub(super) fn history_cmd(config: &Path, resource: Option<&str>, limit: i64) -> Result<ExitCode> {
    let config = load_config(config)?;
    runtime()?.block_on(async move {
        let store = Store::open_config(&config).await?;
        let rows = store.deployments(resource, limit.clamp(1, 10_000)).await?;
        let ids: Vec<i64> = rows.iter().map(|d| d.id).collect();
        let notes = store.action_notes(&ids).await?;
        println!(
            "{:<6} {:<40} {:<8} {:<11} {:<20} {:<24} ERROR",
            "ID", "RESOURCE", "ACTION", "STATUS", "STARTED", "REQUESTED BY"
        );
        for d in &rows {
            let n = notes.get(&d.id);
            let by = n.and_then(|n| n.requested_by.as_deref()).unwrap_or("-");
            let error: String = d.error.as_deref().unwrap_or("").chars().take(120).collect();
            println!(
                "{:<6} {:<40} {:<8} {:<11} {:<20} {:<24} {error}",
                d.id,
                d.deployment.resource_id,
                d.deployment.action.as_str(),
                d.status.as_str(),
                d.started_at.chars().take(19).collect::<String>(),
                by
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// The deployments in flight, for `protond status`: one line each (stack, status, last event,
/// elapsed, who asked) and the same as JSON.
pub(super) async fn in_flight(store: &Store) -> Result<(Vec<String>, serde_json::Value)> {
    let rows = store.in_flight().await?;
    let ids: Vec<i64> = rows.iter().map(|d| d.id).collect();
    let notes = store.action_notes(&ids).await?;
    let mut lines = Vec::new();
    let mut json = Vec::new();
    for d in &rows {
        let n = notes.get(&d.id).cloned().unwrap_or_default();
        let p = n.progress.clone().unwrap_or_default();
        lines.push(format!(
            "  {} deployment {} ({}): stack {} {} for {}s{}{}{}",
            d.deployment.resource_id,
            d.id,
            d.deployment.action.as_str(),
            if p.stack.is_empty() { "-" } else { &p.stack },
            if p.status.is_empty() {
                "starting"
            } else {
                &p.status
            },
            p.elapsed_secs,
            p.last_event
                .as_ref()
                .map(|e| format!(", last event: {e}"))
                .unwrap_or_default(),
            n.requested_by
                .as_ref()
                .map(|b| format!(", requested by {b}"))
                .unwrap_or_default(),
            n.cancel_requested_by
                .as_ref()
                .map(|b| format!(", cancel requested by {b}"))
                .unwrap_or_default(),
        ));
        json.push(serde_json::json!({
            "id": d.id,
            "resource": d.deployment.resource_id,
            "action": d.deployment.action,
            "started_at": d.started_at,
            "requested_by": n.requested_by,
            "cancel_requested_by": n.cancel_requested_by,
            "progress": n.progress,
        }));
    }
    Ok((lines, serde_json::Value::Array(json)))
}
