//! `protond run` and `protond reconcile`: start the daemon with the configuration (and,
//! for `run`, the HTTP server), and report what `reconcile --once` did. The reconciler's
//! rules live in `daemon`; these commands must never decide what to deploy, hold or delete.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use tokio::net::TcpListener;

use super::{load_config, runtime};
use crate::daemon::OnceReport;

/// `protond run`: the reconciler until SIGTERM, serving HTTP on `listen` (or on
/// `server.listen`) unless `no_server`.
pub(super) fn run_daemon(
    config: &Path,
    listen: Option<SocketAddr>,
    no_server: bool,
) -> Result<ExitCode> {
    let mut config = load_config(config)?;
    if let Some(addr) = listen {
        config.server.listen = addr;
        config.server.enabled = true;
    }
    if no_server {
        config.server.enabled = false;
    }
    runtime()?.block_on(async move {
        // The state's writer lock first (in the context): a second daemon on the same state
        // file is told so, rather than that the port is taken.
        let (ctx, wake) = crate::daemon::context(config).await?;
        let listener = if ctx.config.server.enabled {
            Some(bind(ctx.config.server.listen)?)
        } else {
            None
        };
        // On PostgreSQL: elect a leader among the replicas (serving HTTP meanwhile).
        let shown = listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.to_string());
        crate::daemon::elect(&ctx, shown);
        let secrets = crate::server::Secrets::from_env(&ctx.config.server);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = listener.map(|l| {
            tokio::spawn(crate::server::serve(ctx.clone(), secrets, l, async move {
                let _ = stop_rx.await;
            }))
        });
        let result = crate::daemon::run(ctx, wake).await;
        let _ = stop_tx.send(());
        if let Some(h) = server {
            match h.await {
                Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server stopped with an error."),
                Err(e) => tracing::warn!(error = %e, "HTTP server task failed."),
                Ok(Ok(())) => {}
            }
        }
        result?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Binds the HTTP server's address, with a hint when it is taken.
fn bind(addr: SocketAddr) -> Result<TcpListener> {
    crate::server::bind(addr).with_context(|| {
        format!(
            "cannot listen on {addr} (server.listen); is another protond running? Use --listen or --no-server"
        )
    })
}

/// `protond reconcile --once`: cycles until nothing more changes, then prints the problems
/// and a summary; exits 1 if anything failed, is failing, or could not be acted on.
pub(super) fn reconcile_once(config: &Path) -> Result<ExitCode> {
    let config = load_config(config)?;
    runtime()?.block_on(async move {
        let (ctx, _wake) = crate::daemon::context(config).await?;
        // On PostgreSQL: every lease, or an error naming the replica that holds one.
        crate::daemon::exclusive(&ctx).await?;
        let report = crate::daemon::run_once(&ctx).await;
        if let Some(elector) = ctx.elector() {
            elector.release().await;
        }
        let report = report?;
        for p in &report.problems {
            eprintln!("problem: {}", p.replace('\n', "\n  "));
        }
        eprintln!("{}", summary(&report));
        Ok(
            if report.failed == 0 && report.failing.is_empty() && report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            },
        )
    })
}

/// The closing line of `reconcile --once`: cycles, deployments, and what still waits or fails.
fn summary(report: &OnceReport) -> String {
    let waiting = if report.waiting > 0 {
        format!(
            ", {} waiting for their outcome (protond notify)",
            report.waiting
        )
    } else {
        String::new()
    };
    let failing = if report.failing.is_empty() {
        String::new()
    } else {
        format!("; failing: {}", report.failing.join(", "))
    };
    format!(
        "{} cycle(s): {} deployment(s) succeeded, {} failed{waiting}{failing}",
        report.cycles, report.succeeded, report.failed
    )
}
