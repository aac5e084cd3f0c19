//! `protond demo`: the quick start. Copies `example-repos` into local git repos with release
//! tags (through the library's `demo` module), starts a `moto_server` unless
//! `AWS_ENDPOINT_URL` is set, deploys everything, prints the status, then keeps the daemon
//! and its status page running (or exits, with `--once`). It must never touch real AWS on
//! its own: without `AWS_ENDPOINT_URL` it talks only to the `moto_server` it started.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::mpsc::UnboundedReceiver;

use super::{load_config, runtime};
use crate::daemon::Ctx;
use crate::demo::LocalAws;

/// `protond demo`: prepares the demo repos and config below `dir` from `examples`, deploys
/// them, and runs the daemon (until Ctrl-C, or once with `once`).
pub(super) fn demo_cmd(
    dir: &Path,
    examples: &Path,
    once: bool,
    listen: Option<std::net::SocketAddr>,
) -> Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    let (local, endpoint) = aws_endpoint()?;
    if local.is_some() {
        reset_state(&dir)?;
    }
    let config_path = crate::demo::prepare(examples, &dir, &endpoint, local.is_some())?;
    let mut config = load_config(&config_path)?;
    if let Some(listen) = listen {
        config.server.listen = listen;
    }
    eprintln!("Demo repos and config: {}", dir.display());
    let code = runtime()?.block_on(async move {
        let (ctx, wake) = crate::daemon::context(config).await?;
        let report = crate::daemon::run_once(&ctx).await?;
        let rows = crate::ops::status(&ctx.store.overview().await?);
        println!("{}", crate::ops::status_table(&rows));
        println!(
            "{} deployment(s) succeeded, {} failed.",
            report.succeeded, report.failed
        );
        print_commands(&dir, once);
        if once {
            return Ok::<_, anyhow::Error>(if report.failed == 0 && report.failing.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        serve_and_run(ctx, wake, &dir).await?;
        Ok(ExitCode::SUCCESS)
    })?;
    drop(local);
    Ok(code)
}

/// The AWS endpoint to use: `AWS_ENDPOINT_URL` if set, else a `moto_server` started here (and
/// stopped when its handle is dropped).
fn aws_endpoint() -> Result<(Option<LocalAws>, String)> {
    Ok(match std::env::var("AWS_ENDPOINT_URL") {
        Ok(url) if !url.is_empty() => (None, url),
        _ => {
            let aws = LocalAws::start()?;
            let url = aws.url.clone();
            eprintln!("Started moto_server on {url} (local AWS; stopped when protond exits).");
            (Some(aws), url)
        }
    })
}

/// Removes the demo's state. A `moto_server` started here holds nothing: state left by an
/// earlier demo run would describe stacks that no longer exist. The repos are kept.
fn reset_state(dir: &Path) -> Result<()> {
    let state = dir.join("state");
    if state.exists() {
        std::fs::remove_dir_all(&state)
            .with_context(|| format!("cannot reset {}", state.display()))?;
        eprintln!(
            "The local AWS starts empty, so the demo state starts afresh ({} removed; repos kept).",
            state.display()
        );
    }
    Ok(())
}

/// Prints the exact commands to try next: this binary's path, and the config, which every
/// command finds by itself when run in the demo folder.
fn print_commands(dir: &Path, once: bool) {
    let exe =
        std::env::current_exe().map_or_else(|_| "protond".into(), |p| p.display().to_string());
    let config = dir.join("proton.toml");
    println!();
    if once {
        println!(
            "The local AWS stops with this command; to look around, run `protond demo` without --once."
        );
        return;
    }
    println!("Try, in another terminal (the demo's folder holds its proton.toml, so no --config):");
    println!("  cd {}", dir.display());
    println!("  {exe} status");
    println!("  {exe} plan");
    println!("  {exe} check-config");
    println!("From anywhere else, add --config {}", config.display());
    println!();
}

/// Serves the status page (if its address is free) and runs the daemon until it stops.
async fn serve_and_run(ctx: Arc<Ctx>, wake: UnboundedReceiver<()>, dir: &Path) -> Result<()> {
    let listen = ctx.config.server.listen;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = match crate::server::bind(listen) {
        Ok(l) => {
            println!("Status page: http://{listen}/  (metrics at /metrics, JSON under /api/v1/)");
            let secrets = crate::server::Secrets::from_env(&ctx.config.server);
            let stopped = async move {
                let _ = stop_rx.await;
            };
            Some(tokio::spawn(crate::server::serve(
                ctx.clone(),
                secrets,
                l,
                stopped,
            )))
        }
        Err(e) => {
            eprintln!("Not serving the status page: cannot listen on {listen}: {e}");
            None
        }
    };
    println!(
        "protond is running. Try: edit {}/payments/proton/services/payments.yaml, then `git commit -am change` there, or tag a new release in {}/platform-templates. Ctrl-C stops.",
        dir.display(),
        dir.display()
    );
    let result = crate::daemon::run(ctx, wake).await;
    let _ = stop_tx.send(());
    if let Some(h) = server {
        let _ = h.await;
    }
    result?;
    Ok(())
}
