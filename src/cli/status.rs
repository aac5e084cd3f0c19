//! `protond status`: lists every managed resource (template version, available updates, last
//! deployment), the rollouts, the releases whose tag moved or was deleted, the pipelines, the
//! open proposals, the repos the daemon's last cycle could not fetch or read, from the
//! store and, for pipelines, from AWS, and the customer-managed environments (never in the
//! store: read from the spec repos as last fetched, and the stacks they name). It only
//! reads: it must never write the store, fetch, or start a deployment.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use super::{OutputFormat, load_config, runtime};

/// `protond status`: prints the store's view of the fleet as tables or one JSON document.
pub(super) fn status_cmd(config: &Path, output: OutputFormat) -> Result<ExitCode> {
    let config = load_config(config)?;
    runtime()?.block_on(async move {
        let store = crate::state::Store::open_config(&config).await?;
        let overview = store.overview().await?;
        // What the daemon recorded: invalid specs (its last cycle) and drift (its checks).
        let findings = crate::ops::findings_from_store(&store.spec_findings().await?);
        let rows = crate::ops::with_drift(
            crate::ops::status_with(&overview, &findings),
            &store.drift().await?,
        );
        let releases = releases_json(&overview);
        let skipped = store.skipped_repos().await?;
        let rollouts = store.rollout_progress().await?;
        let (section, quarantine) = quarantine_view(&store, &overview, &config).await?;
        let proposals = store.proposals().await?;
        let pipelines = pipelines(&config, &store, &rows).await?;
        let customer = customer_managed(&config).await?;
        let (flight_lines, flight_json) = super::actions::in_flight(&store).await?;
        let (gate, gate_json) = super::approve::pending(&store).await?;
        let mut out = std::io::stdout().lock();
        match output {
            OutputFormat::Json => writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "resources": rows,
                    "rollouts": rollouts,
                    "proposals": proposals,
                    "pipelines": pipelines,
                    "releases": releases,
                    "skipped_repos": skipped,
                    "customer_managed": customer,
                    "in_flight": flight_json,
                    "quarantine": quarantine,
                    "holds": super::holds::status_view(&store).await?.1,
                    "needs_approval": gate_json,
                }))?
            )?,
            OutputFormat::Table => {
                write!(out, "{}", crate::ops::status_table(&rows))?;
                write!(
                    out,
                    "{}{section}{gate}",
                    crate::ops::rollouts_table(&rollouts)
                )?;
                write!(
                    out,
                    "{}",
                    crate::ops::releases_table(&overview.template_versions)
                )?;
                write!(out, "{}", crate::ops::pipelines_table(&pipelines))?;
                write!(out, "{}", crate::ops::proposals_table(&proposals))?;
                write!(out, "{}", crate::ops::customer_managed_table(&customer))?;
                write!(out, "{}", super::holds::status_view(&store).await?.0)?;
                if !skipped.repos.is_empty() {
                    writeln!(
                        out,
                        "\nRepos the last cycle could not fetch or read (since {}):",
                        skipped.since
                    )?;
                    for r in &skipped.repos {
                        writeln!(out, "  {r}")?;
                    }
                }
                if !flight_lines.is_empty() {
                    writeln!(out, "\nIn flight (`protond wait <resource>` follows one):")?;
                    for l in &flight_lines {
                        writeln!(out, "{l}")?;
                    }
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// The registered releases, as JSON.
fn releases_json(overview: &crate::state::Overview) -> Vec<serde_json::Value> {
    overview
        .template_versions
        .iter()
        .filter(|v| v.registered)
        .map(|v| {
            serde_json::json!({
                "template": v.template,
                "version": v.version.to_string(),
                "tag": v.tag,
                "commit": v.commit,
                "state": v.tag_state,
                "tag_commit": v.tag_commit,
            })
        })
        .collect()
}

/// The pipelines' rows (read from `CodePipeline` only when there are pipelines).
async fn pipelines(
    config: &crate::config::Config,
    store: &crate::state::Store,
    rows: &[crate::ops::StatusRow],
) -> Result<Vec<crate::provision::codepipeline::PipelineRow>> {
    if !rows
        .iter()
        .any(|r| r.kind == crate::model::ResourceKind::Pipeline)
    {
        return Ok(Vec::new());
    }
    let cfn = crate::provision::cloudformation::CloudFormation::new(
        crate::provision::cloudformation::Settings::from_config(config),
    )
    .await;
    let cp = crate::provision::codepipeline::CodePipeline::new(cfn.sdk_config());
    Ok(crate::provision::codepipeline::pipeline_rows(
        &store.resources().await?,
        &store.pipeline_runs().await?,
        &cfn,
        &cp,
    )
    .await)
}

/// The stopped releases and the rollbacks from quarantined ones: as a text section, and as
/// JSON with the release history.
async fn quarantine_view(
    store: &crate::state::Store,
    overview: &crate::state::Overview,
    config: &crate::config::Config,
) -> Result<(String, serde_json::Value)> {
    let stops = store.stops().await?;
    let rollbacks = crate::ops::quarantine::rollbacks_from_store(
        &stops,
        &overview.template_versions,
        &overview.resources,
        &store.last_failures().await?,
    );
    let mode = config.quarantine.rollback;
    let history = store.release_events(None, None).await?;
    Ok((
        crate::ops::quarantine::stops_section(&stops, &rollbacks, mode),
        crate::ops::quarantine::json(&stops, &rollbacks, mode, &history),
    ))
}

/// The customer-managed environments the spec repos (as last fetched) declare, with the
/// stacks they name read for their outputs.
async fn customer_managed(
    config: &crate::config::Config,
) -> Result<Vec<crate::ops::CustomerManagedRow>> {
    let cfg = config.clone();
    let mut snapshot = tokio::task::spawn_blocking(move || crate::desired::load(&cfg, None, false))
        .await
        .map_err(|e| anyhow::anyhow!("reading the repos panicked: {e}"))?;
    if !crate::daemon::customer::stacks_to_read(&snapshot).is_empty() {
        use crate::provision::cloudformation::{CloudFormation, Settings};
        let cfn = CloudFormation::new(Settings::from_config(config)).await;
        crate::daemon::customer::read_stacks(&cfn, &mut snapshot).await;
    }
    Ok(crate::ops::customer_managed_rows(&snapshot))
}
