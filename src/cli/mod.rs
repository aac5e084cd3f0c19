//! The command line: argument parsing, logging setup, and the dispatch of each subcommand
//! to its own file (`validate`, `render`, `plan`, `status`, `run` and `reconcile`, `demo`,
//! `bench`, `notify`, `rollout`, `hold`, `unhold`, `holds`, `rollback`, `unpin` (`holds.rs`), `forget`, `check-config`, `import`, `state copy` (`state.rs`), `refresh`, and the manual actions
//! `redeploy`, `retry`, `cancel`, `wait`, `history` in `actions.rs`). Errors are printed once, with their chain
//! (`{:#}`), and turned into exit codes here and nowhere else; anyhow is used in this module
//! and nowhere else in the crate.
//!
//! Commands hold no policy: each one calls the library and prints what it returns. Nothing
//! here decides what to deploy, hold or delete.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::config::Config;

mod actions;
mod approve;
mod bench;
mod check_config;
mod demo;
mod forget;
mod holds;
mod import;
mod notify;
mod plan;
mod preview;
mod refresh;
pub(crate) mod release;
mod render;
mod report;
mod rollback_pr;
mod rollout;
mod run;
mod state;
mod status;
mod validate;

pub use import::ImportArgs;
pub use notify::NotifyStatus;
pub use preview::{PreviewArgs, PreviewFormat};
pub use render::RenderArgs;
pub use rollout::RolloutAction;
pub use state::StateAction;

/// protond: self-hosted, git-driven successor to AWS Proton.
#[derive(Debug, Parser)]
#[command(name = "protond", version, about)]
pub struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "pretty",
        env = "PROTOND_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Logs to stderr in `format`, filtered by `PROTOND_LOG` (`info` by default).
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("PROTOND_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal, and never when NO_COLOR is set (no-color.org).
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    // Span fields kept as JSON, so that each line prints every field once
    // (`telemetry::logfmt`).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new());
    let _ = match format {
        LogFormat::Json => builder
            .with_writer(std::io::stderr)
            .event_format(crate::telemetry::logfmt::Lines { json: true })
            .try_init(),
        LogFormat::Pretty => builder
            .with_writer(OneLine)
            .event_format(crate::telemetry::logfmt::Lines { json: false })
            .try_init(),
    };
}

/// The text log's writer: one event, one line. A multi-line value (an error with context
/// lines, a tool's output) has its inner line breaks written as `\n`, so that a line-based
/// collector never splits an event or mistakes its second line for another one.
#[derive(Clone, Copy)]
struct OneLine;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for OneLine {
    type Writer = OneLine;

    fn make_writer(&'a self) -> Self::Writer {
        OneLine
    }
}

impl std::io::Write for OneLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // One write of the whole event, so that concurrent events do not interleave.
        std::io::stderr().lock().write_all(&one_line(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// `event` with its inner line breaks escaped (`\\n`) and carriage returns dropped; the
/// final line break stays.
fn one_line(event: &[u8]) -> Vec<u8> {
    let body = event.strip_suffix(b"\n").unwrap_or(event);
    let mut line = Vec::with_capacity(event.len() + 8);
    for &b in body {
        match b {
            b'\n' => line.extend_from_slice(b"\\n"),
            b'\r' => {}
            _ => line.push(b),
        }
    }
    if body.len() < event.len() {
        line.push(b'\n');
    }
    line
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check template bundles (a `vN` folder, a template folder, a whole template repo, or a
    /// component folder); lists every problem and exits non-zero if there are any.
    Validate {
        /// Bundle folders or template repo roots.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Also validate this spec file's inputs against the bundle.
        #[arg(long)]
        spec: Option<PathBuf>,
    },
    /// Render a bundle for a spec file and print the `IaC`.
    Render(Box<RenderArgs>),
    /// Read the repos and show what a reconcile would do, without doing it.
    Plan {
        /// Config file.
        #[arg(long, default_value = "proton.toml")]
        config: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
        /// Use the already fetched mirrors; do not fetch.
        #[arg(long)]
        no_fetch: bool,
    },
    /// Preview a candidate release before tagging it: which resources would move to it,
    /// their rendered diff and predicted stack impact, grouped and by stage.
    Preview(Box<PreviewArgs>),
    /// List every managed resource: template version, available updates, last deployment.
    Status {
        /// Config file.
        #[arg(long, default_value = "proton.toml")]
        config: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// The fleet report: per template, how many resources run each version, how many
    /// minors and majors behind they are, the oldest version running and where, the pull
    /// requests waiting and the rollouts stopped. Reads the store only.
    Report {
        /// Config file.
        #[arg(long, default_value = "proton.toml")]
        config: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// Run the reconciler: fetch, plan and deploy continuously until SIGTERM.
    Run {
        /// Config file.
        #[arg(long, default_value = "proton.toml")]
        config: PathBuf,
        /// Serve HTTP on this address (overrides server.listen, default 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Do not serve HTTP.
        #[arg(long, conflicts_with = "listen")]
        no_server: bool,
    },
    /// Run reconcile cycles until nothing more changes, then exit; non-zero if any
    /// deployment failed, a resource is invalid, or something could not be acted on (a spec
    /// file that does not parse, an unreadable repo, deletions refused by the budget).
    Reconcile {
        /// Config file.
        #[arg(long, default_value = "proton.toml")]
        config: PathBuf,
        /// Run until converged, then exit (the only mode for now).
        #[arg(long, default_value_t = true)]
        once: bool,
    },
    /// The quick start: the daemon on `example-repos`, as local git repos with release tags,
    /// against a `moto_server` started here unless `AWS_ENDPOINT_URL` is set.
    Demo {
        /// Where the demo repos, config and state live.
        #[arg(long, default_value = ".protond-demo")]
        dir: PathBuf,
        /// The example repos to start from.
        #[arg(long, default_value = "example-repos")]
        examples: PathBuf,
        /// Deploy everything, print the status, and exit.
        #[arg(long)]
        once: bool,
        /// Address of the status page, API and metrics (default 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Halt or resume the rollout of a minor version, e.g. `rollout halt web-svc/v1.2`.
    Rollout {
        /// `halt` or `resume`.
        #[arg(value_enum)]
        action: RolloutAction,
        /// `<template>/v<major>.<minor>`.
        version: String,
        /// Why (shown in status and logs).
        #[arg(long, default_value = "by an operator")]
        reason: String,
        /// Config file.
        #[arg(long, default_value = "proton.toml")]
        config: PathBuf,
    },
    /// Hold automatic minor upgrades, release changes and rollbacks (every change with
    /// `--all`) of a resource, `environment:<name>`, `stage:<name>` or `template:<name>`
    /// until a time; the hold ends by itself.
    Hold {
        /// A resource id (`service_instance/web/dev`), `environment:<name>`, `stage:<name>`
        /// or `template:<name>`.
        target: String,
        /// When it ends: RFC 3339 (`2026-12-24T18:00:00Z`) or a duration from now (`2h`,
        /// `3d`).
        #[arg(long)]
        until: String,
        /// Why (shown with every change it holds).
        #[arg(long)]
        reason: String,
        /// Hold every change: creates, spec changes, redeploys and deletes too.
        #[arg(long)]
        all: bool,
        /// Who sets it (default the user running the command).
        #[arg(long)]
        by: Option<String>,
        /// Config file.
        #[arg(long, default_value = "proton.toml")]
        config: PathBuf,
    },
    /// Lift the hold on a target before it ends.
    Unhold {
        /// The target the hold names, as given to `protond hold`.
        target: String,
        /// Config file.
        #[arg(long, default_value = "proton.toml")]
        config: PathBuf,
    },
    /// List the holds (who set each, when it ends, why) and the pins.
    Holds {
        /// Config file.
        #[arg(long, default_value = "proton.toml")]
        config: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
    /// Pin a resource, `environment:<name>` or `stage:<name>` to an earlier minor of the
    /// major it runs (`--to v1.0` or `--to web-svc/v1.0`); the daemon moves it back
    /// through the stage gates and keeps it there until `protond unpin`.
    Rollback {
        /// A resource id, `environment:<name>` or `stage:<name>`.
        target: String,
        /// The version: `v<major>.<minor>` or `<template>/v<major>.<minor>`.
        #[arg(long)]
        to: String,
        /// Who sets it (default the user running the command).
        #[arg(long)]
        by: Option<String>,
        /// `pin` (default): record a pin in the state store; `pull-request`: open a pull
        /// request setting `minor:` in the spec files (needs the spec repo's `forge`).
        #[arg(long, value_enum, default_value_t)]
        via: rollback_pr::Via,
        /// Config file.
        #[arg(long, default_value = "proton.toml")]
        config: PathBuf,
    },
    /// Remove the pins on a target: its resources follow the newest minor again.
    Unpin {
        /// The target given to `protond rollback`.
        target: String,
        /// Only the pin of this template.
        #[arg(long)]
        template: Option<String>,
        /// `pin` (default): delete the pin; `pull-request`: open a pull request removing
        /// `minor:` from the spec files.
        #[arg(long, value_enum, default_value_t)]
        via: rollback_pr::Via,
        /// Config file.
        #[arg(long, default_value = "proton.toml")]
        config: PathBuf,
    },
    /// Accept the commit a moved release tag names now (`accept <template>/v<major>.<minor>`):
    /// the change then rolls out as a minor rollout, stage by stage. Refused while the tag is
    /// not moved. `quarantine` / `release` stop a bad release or let it continue; `history`
    /// prints quarantines and releases.
    Release {
        /// `accept`, `quarantine`, `release` or `history`.
        #[arg(value_enum)]
        action: release::ReleaseAction,
        /// `<template>/v<major>.<minor>` (for `history`: optional, or a template name).
        release: Option<String>,
        /// Why (`quarantine`, `release`; shown in status, the history and notifications).
        #[arg(long)]
        reason: Option<String>,
        /// Config file.
        #[arg(long, default_value = "proton.toml")]
        config: PathBuf,
    },
    /// Report the outcome of a self-managed (Terraform) deployment, as Proton's
    /// `NotifyResourceDeploymentStatusChange` did.
    Notify {
        /// Resource id (e.g. `environment/dev`) or its Proton-style ARN.
        resource: String,
        /// `succeeded` or `failed`.
        #[arg(long, value_enum)]
        status: NotifyStatus,
        /// JSON file with the outputs: an object of strings, `[{"key", "valueString"}]`, or
        /// the output of `terraform output -json`.
        #[arg(long)]
        outputs: Option<PathBuf>,
        /// Why it failed.
        #[arg(long)]
        message: Option<String>,
        /// The deployment id from `.proton/deployment-metadata.json`; a report for another
        /// deployment is refused.
        #[arg(long)]
        deployment_id: Option<i64>,
        /// Config file.
        #[arg(long, default_value = "proton.toml")]
        config: PathBuf,
    },
    /// Measure read, render and plan cycles on generated fleets of real git repos, and print
    /// the figures (each size runs in its own process, so peak memory is its own); then
    /// deploy one fleet on a `moto_server` started on 127.0.0.1: protond against a plain SDK
    /// loop, and the delay from a new tag to its first deployment call.
    Bench {
        /// Fleet sizes, in service instances.
        #[arg(long, value_delimiter = ',', default_value = "100,1000,5000")]
        instances: Vec<usize>,
        /// Where the generated repos go (a fresh temporary folder by default).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Print one JSON object per size (and one `{"deployment": ...}`) instead of tables.
        #[arg(long)]
        json: bool,
        /// Skip the deployment figures (they need `moto_server`).
        #[arg(long)]
        no_aws: bool,
        /// Service instances of the fleet deployed on `moto_server`.
        #[arg(long, default_value_t = 100)]
        deploy_instances: usize,
        /// New minor tags timed from tag to first deployment call.
        #[arg(long, default_value_t = 3)]
        tags: usize,
        /// Timed runs of protond's `reconcile --once` and the plain SDK loop (min / median).
        #[arg(long, default_value_t = 3)]
        deploy_runs: usize,
        /// Also run them behind a 127.0.0.1 proxy adding this latency to every request
        /// (`50ms`), where protond's concurrent deployments pay off.
        #[arg(long, value_parser = humantime::parse_duration)]
        deploy_latency: Option<std::time::Duration>,
        /// Another measurement instead of the fleet figures (`render`).
        #[command(subcommand)]
        mode: Option<bench::BenchMode>,
        /// A PostgreSQL server (`postgres://user@host/db`, a user who may create databases):
        /// also measure the state store's share of a cycle on it next to `SQLite`, each size
        /// in a new database dropped afterwards.
        #[arg(long, env = "PROTOND_BENCH_POSTGRES_URL")]
        postgres: Option<String>,
        /// What the targets table also measures (`--daemon-instances`, `--render-contexts`).
        #[command(flatten)]
        targets: bench::TargetsArgs,
    },
    /// Delete, explicitly, the resources deployed from a spec repo removed from the config:
    /// marks the repo in the state store; the next cycles delete its resources within the
    /// deletion budget (as `retired = true` on its entry would). Adding the repo back
    /// cancels it.
    Forget {
        /// The repo's name, as it was in the config.
        repo: String,
        /// Config file.
        #[arg(long, default_value = "proton.toml")]
        config: PathBuf,
    },
    /// Take over the `CloudFormation` stacks AWS Proton deployed for the resources the spec
    /// repos declare, without deploying them again: finds each stack (Proton's tags, or
    /// `--map`), compares it with what protond renders, and with `--apply` records it and
    /// adds protond's ownership tags. A dry run by default. `--write-specs` drafts spec files
    /// from Proton's API export instead.
    Import(Box<ImportArgs>),
    /// Work on the state store itself: `state copy --from URL --to URL` moves it (a `SQLite`
    /// file to PostgreSQL, or back), checked by rows per table and the status view.
    State {
        /// What to do.
        #[command(subcommand)]
        action: StateAction,
    },
    /// Ask the running daemon (`protond run`) to fetch every repo and re-read live state
    /// now: a drift check of every recorded stack and a cycle. Sends the API token from the
    /// variable `server.token_env` names to `POST /api/v1/refresh`.
    Refresh {
        /// Config file (its `[server] listen` address and `token_env`).
        #[arg(long, default_value = "proton.toml")]
        config: PathBuf,
        /// The daemon's base URL, when not `http://<server.listen>`.
        #[arg(long)]
        url: Option<String>,
    },
    /// Deploy a resource's current desired state even if nothing changed: queues a request
    /// the daemon's next cycle turns into an update, through the normal gates.
    Redeploy {
        /// Resource id (`protond status` lists them), e.g. `environment/dev`.
        resource: String,
        /// Who asks, for the history (default: the user running the command).
        #[arg(long)]
        by: Option<String>,
        /// Config file.
        #[arg(long, default_value = "proton.toml")]
        config: PathBuf,
    },
    /// Retry a resource whose last deployment failed and waits for a change: lifts the hold;
    /// the daemon's next cycle deploys it again.
    Retry {
        /// Resource id.
        resource: String,
        /// The ownership conflict it ended in is resolved: retry it too (the ownership check
        /// runs again).
        #[arg(long)]
        conflict_resolved: bool,
        /// Who asks, for the history.
        #[arg(long)]
        by: Option<String>,
        /// Config file.
        #[arg(long, default_value = "proton.toml")]
        config: PathBuf,
    },
    /// Cancel a resource's deployment in flight (`CancelUpdateStack` for a stack update;
    /// a self-managed deployment stops waiting for its outcome). Recorded as cancelled.
    Cancel {
        /// Resource id.
        resource: String,
        /// Who asks, for the history.
        #[arg(long)]
        by: Option<String>,
        /// Config file.
        #[arg(long, default_value = "proton.toml")]
        config: PathBuf,
    },
    /// Follow a resource's deployment (in flight, or queued) to its end, printing its stack's
    /// progress; exit 0 when it succeeded, 1 when it failed, 2 on timeout.
    Wait {
        /// Resource id.
        resource: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
        /// Config file.
        #[arg(long, default_value = "proton.toml")]
        config: PathBuf,
    },
    /// The deployment history, newest first, with who asked for each deployment.
    History {
        /// Only this resource.
        resource: Option<String>,
        /// How many rows.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Config file.
        #[arg(long, default_value = "proton.toml")]
        config: PathBuf,
    },
    /// Check a `proton.toml` and list every problem.
    CheckConfig {
        /// Config file.
        #[arg(long, default_value = "proton.toml")]
        config: PathBuf,
    },
    /// Print a shell completion script, e.g. `protond completions bash >
    /// /etc/bash_completion.d/protond`, or `protond completions zsh > ~/.zfunc/_protond`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `protond man > /usr/local/share/man/man1/protond.1`;
    /// with `--dir`, write it and one page per command (`protond-status.1`, …) there.
    Man {
        /// Write every page into this folder instead of printing the main one.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Approve one version of a resource the change-set gate holds (`needs approval`: the
    /// version would replace or remove a stateful resource); the daemon's next cycle lets
    /// it through the rollout gate. Works while the daemon runs.
    Approve {
        /// Resource id, e.g. `service_instance/web/dev`.
        resource: String,
        /// The version approved, e.g. `1.1` (a newer minor needs a new approval).
        version: String,
        /// Who approves, for the history (default: the user running the command).
        #[arg(long)]
        by: Option<String>,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
        /// Config file.
        #[arg(long, default_value = "proton.toml")]
        config: PathBuf,
    },
    /// List what the change-set gate holds until an approval (as the daemon's last cycle
    /// found it) and the approvals given.
    Approvals {
        /// Config file.
        #[arg(long, default_value = "proton.toml")]
        config: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        output: OutputFormat,
    },
}

/// Output format of `plan` and `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// A readable table.
    Table,
    /// JSON.
    Json,
}

/// Runs the command line and returns the process exit code.
#[must_use]
pub fn main() -> ExitCode {
    crate::state::pg::take_password_from_env();
    let cli = Cli::parse();
    if cli.command.only_prints() {
        default_sigpipe();
    }
    match run(cli) {
        Ok(code) => code,
        // The reader went away (`protond status | head`): nothing is wrong.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

impl Command {
    /// Commands that read local files and print, and start no child process, fetch nothing
    /// and serve nothing: for them, a reader that goes away (`protond validate … | head`) ends
    /// the process as it does `ls`, instead of a "Broken pipe" panic. (`plan` and `status`
    /// fetch through `git` children, whose closed pipes must stay errors, not signals: they
    /// write with `writeln!` and end quietly on the broken-pipe error instead, in `main`.)
    fn only_prints(&self) -> bool {
        matches!(
            self,
            Self::Validate { .. }
                | Self::Render { .. }
                | Self::CheckConfig { .. }
                | Self::Completions { .. }
                | Self::Man { .. }
        )
    }
}

/// Restores the default action of `SIGPIPE` (end the process), which Rust's runtime sets to
/// "ignore" so that writes fail with `EPIPE` instead; the daemon keeps that.
fn default_sigpipe() {
    // SAFETY: called once at start, before any thread is spawned; `signal` with `SIG_DFL`
    // installs no handler code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Runs one parsed command.
pub fn run(cli: Cli) -> Result<ExitCode> {
    init_logging(cli.log_format);
    match cli.command {
        Command::Run {
            config,
            listen,
            no_server,
        } => run::run_daemon(&config, listen, no_server),
        Command::Bench {
            mode: Some(bench::BenchMode::Render(args)),
            ..
        } => bench::render_cmd(&args),
        Command::Bench {
            mode: Some(bench::BenchMode::Shards(args)),
            ..
        } => bench::shards_cmd(&args),
        Command::Bench {
            mode: Some(bench::BenchMode::Daemon(args)),
            ..
        } => bench::daemon_cmd(&args),
        Command::Bench {
            mode: None,
            instances,
            dir,
            json,
            no_aws,
            deploy_instances,
            tags,
            deploy_runs,
            deploy_latency,
            postgres,
            targets,
        } => bench::bench_cmd(
            &instances,
            dir.as_deref(),
            json,
            (!no_aws).then_some(crate::bench::DeployPlan {
                instances: deploy_instances,
                tags,
                runs: deploy_runs,
                latency: deploy_latency,
            }),
            postgres.as_deref(),
            &targets,
        ),
        Command::Notify {
            resource,
            status,
            outputs,
            message,
            deployment_id,
            config,
        } => notify::notify_cmd(
            &config,
            &resource,
            status,
            outputs.as_deref(),
            message,
            deployment_id,
        ),
        c @ (Command::Rollout { .. }
        | Command::Release { .. }
        | Command::Approve { .. }
        | Command::Approvals { .. }) => release_command(c),
        c @ (Command::Hold { .. }
        | Command::Unhold { .. }
        | Command::Holds { .. }
        | Command::Rollback { .. }
        | Command::Unpin { .. }) => holds::dispatch(c),
        Command::Demo {
            dir,
            examples,
            once,
            listen,
        } => demo::demo_cmd(&dir, &examples, once, listen),
        Command::Reconcile { config, once: _ } => run::reconcile_once(&config),
        Command::Validate { paths, spec } => validate::validate(&paths, spec.as_deref()),
        Command::Render(args) => render::render_cmd(&args),
        Command::Plan {
            config,
            output,
            no_fetch,
        } => plan::plan_cmd(&config, output, !no_fetch),
        Command::Preview(args) => preview::preview_cmd(&args),
        Command::Status { config, output } => status::status_cmd(&config, output),
        Command::Report { config, output } => report::report_cmd(&config, output),
        Command::Forget { repo, config } => forget::forget_cmd(&config, &repo),
        Command::CheckConfig { config } => Ok(check_config::check_config_cmd(&config)),
        Command::Completions { shell } => Ok(completions(shell)),
        Command::Man { dir } => man_cmd(dir.as_deref()),
        Command::Refresh { config, url } => refresh::refresh_cmd(&config, url.as_deref()),
        c @ (Command::Redeploy { .. }
        | Command::Retry { .. }
        | Command::Cancel { .. }
        | Command::Wait { .. }
        | Command::History { .. }) => manual_action(c),
        Command::Import(args) => import::import_cmd(&args),
        Command::State { action } => state::state_cmd(action),
    }
}

/// The release commands: `rollout`, `release`, `approve`, `approvals`.
fn release_command(command: Command) -> Result<ExitCode> {
    match command {
        Command::Rollout {
            action,
            version,
            reason,
            config,
        } => rollout::rollout_cmd(&config, action, &version, &reason),
        Command::Release {
            action,
            release,
            reason,
            config,
        } => release::release_cmd(&config, action, release.as_deref(), reason.as_deref()),
        Command::Approve {
            resource,
            version,
            by,
            reason,
            config,
        } => approve::approve_cmd(
            &config,
            &resource,
            &version,
            by.as_deref(),
            reason.as_deref(),
        ),
        Command::Approvals { config, output } => approve::approvals_cmd(&config, output),
        _ => anyhow::bail!("internal error: not a release command"),
    }
}

/// `protond completions <shell>`: the completion script, from the clap definitions.
fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut cmd, "protond", &mut std::io::stdout());
    ExitCode::SUCCESS
}

/// `protond man [--dir DIR]`: the man page, or every page written into `dir`.
fn man_cmd(dir: Option<&Path>) -> Result<ExitCode> {
    let cmd = <Cli as clap::CommandFactory>::command();
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("cannot write the pages to {}", dir.display()))?;
            println!("man pages written to {}", dir.display());
        }
        None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The manual actions (`redeploy`, `retry`, `cancel`, `wait`, `history`).
fn manual_action(command: Command) -> Result<ExitCode> {
    match command {
        Command::Redeploy {
            resource,
            by,
            config,
        } => actions::action_cmd(&config, actions::Action::Redeploy, &resource, by.as_deref()),
        Command::Retry {
            resource,
            conflict_resolved,
            by,
            config,
        } => actions::action_cmd(
            &config,
            actions::Action::Retry(conflict_resolved),
            &resource,
            by.as_deref(),
        ),
        Command::Cancel {
            resource,
            by,
            config,
        } => actions::action_cmd(&config, actions::Action::Cancel, &resource, by.as_deref()),
        Command::Wait {
            resource,
            timeout,
            config,
        } => actions::wait_cmd(&config, &resource, std::time::Duration::from_secs(timeout)),
        Command::History {
            resource,
            limit,
            config,
        } => actions::history_cmd(&config, resource.as_deref(), limit),
        other => anyhow::bail!("not a manual action: {other:?}"),
    }
}

/// A multi-threaded tokio runtime for the commands that talk to the store or to AWS.
fn runtime() -> Result<tokio::runtime::Runtime> {
    crate::desired::limit_allocator_arenas();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Loads `proton.toml`, every problem listed in one error.
fn load_config(path: &Path) -> Result<Config> {
    Config::load(path).map_err(|errors| {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid configuration:\n  {}", list.join("\n  "))
    })
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn an_event_is_one_line() {
        assert_eq!(one_line(b"a b\n"), b"a b\n");
        assert_eq!(
            one_line(b"WARN failed error=line one\nline two\r\n  three\n"),
            b"WARN failed error=line one\\nline two\\n  three\n"
        );
        // A partial write without its final break keeps every byte it has.
        assert_eq!(one_line(b"x\ny"), b"x\\ny");
    }
}
