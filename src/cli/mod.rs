//! The command line: argument parsing, logging setup, and the dispatch of each subcommand
//! to its own file (`validate`, `render`, `plan`, `status`, `run` and `reconcile`, `demo`,
//! `bench`, `notify`, `rollout`, `forget`, `check-config`, `import`, and the manual actions
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
mod bench;
mod check_config;
mod demo;
mod forget;
mod import;
mod notify;
mod plan;
pub(crate) mod release;
mod render;
mod rollout;
mod run;
mod status;
mod validate;

pub use import::ImportArgs;
pub use notify::NotifyStatus;
pub use render::RenderArgs;
pub use rollout::RolloutAction;

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
    let filter = tracing_subscriber::EnvFilter::try_from_env("PROTOND_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
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
    /// List every managed resource: template version, available updates, last deployment.
    Status {
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
    /// Accept the commit a moved release tag names now (`accept <template>/v<major>.<minor>`):
    /// the change then rolls out as a minor rollout, stage by stage. Refused while the tag is
    /// not moved.
    Release {
        /// `accept`.
        #[arg(value_enum)]
        action: release::ReleaseAction,
        /// `<template>/v<major>.<minor>`.
        release: String,
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
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
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
            instances,
            dir,
            json,
            no_aws,
            deploy_instances,
            tags,
        } => bench::bench_cmd(
            &instances,
            dir.as_deref(),
            json,
            (!no_aws).then_some((deploy_instances, tags)),
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
        Command::Rollout {
            action,
            version,
            reason,
            config,
        } => rollout::rollout_cmd(&config, action, &version, &reason),
        Command::Release {
            action,
            release,
            config,
        } => release::release_cmd(&config, action, &release),
        Command::Demo {
            dir,
            examples,
            once,
        } => demo::demo_cmd(&dir, &examples, once),
        Command::Reconcile { config, once: _ } => run::reconcile_once(&config),
        Command::Validate { paths, spec } => validate::validate(&paths, spec.as_deref()),
        Command::Render(args) => render::render_cmd(&args),
        Command::Plan {
            config,
            output,
            no_fetch,
        } => plan::plan_cmd(&config, output, !no_fetch),
        Command::Status { config, output } => status::status_cmd(&config, output),
        Command::Forget { repo, config } => forget::forget_cmd(&config, &repo),
        Command::CheckConfig { config } => Ok(check_config::check_config_cmd(&config)),
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
        Command::Import(args) => import::import_cmd(&args),
    }
}

/// A multi-threaded tokio runtime for the commands that talk to the store or to AWS.
fn runtime() -> Result<tokio::runtime::Runtime> {
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
