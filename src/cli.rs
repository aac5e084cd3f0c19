//! The command line: argument parsing and the porcelain commands. Errors are printed once,
//! with their chain, and turned into exit codes here and nowhere else.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::catalog::schema::InputKind;
use crate::catalog::{self, Bundle, ComponentBundle, Infrastructure, Layout, Limits, TemplateKind};
use crate::config::Config;
use crate::desired::{ServiceContext, SpecSource, environment_context};
use crate::render::{self, InstanceInfo};
use crate::spec::{self, SpecFile};

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
    /// Render a bundle for a spec file and print the IaC.
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
    /// against a moto_server started here unless `AWS_ENDPOINT_URL` is set.
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
    /// Report the outcome of a self-managed (Terraform) deployment, as Proton's
    /// NotifyResourceDeploymentStatusChange did.
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
    /// deploy one fleet on a moto_server started on 127.0.0.1: protond against a plain SDK
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
        /// Service instances of the fleet deployed on moto_server.
        #[arg(long, default_value_t = 100)]
        deploy_instances: usize,
        /// New minor tags timed from tag to first deployment call.
        #[arg(long, default_value_t = 3)]
        tags: usize,
    },
    /// Check a `proton.toml` and list every problem.
    CheckConfig {
        /// Config file.
        #[arg(long, default_value = "proton.toml")]
        config: PathBuf,
    },
}

/// Arguments of `protond render`.
#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// The bundle folder (`<template>/vN`) or a component folder.
    pub bundle: PathBuf,
    /// Spec file (Proton's format, with or without the protond header).
    #[arg(long)]
    pub spec: PathBuf,
    /// Render only this service instance (default: every instance and the pipeline).
    #[arg(long)]
    pub instance: Option<String>,
    /// Render only the pipeline.
    #[arg(long, conflicts_with = "instance")]
    pub pipeline: bool,
    /// Environment output available as `environment.outputs.K` (repeatable).
    #[arg(long = "env-output", value_name = "K=V")]
    pub env_outputs: Vec<String>,
    /// Instance output for pipelines, `K=V` for all instances or `INSTANCE:K=V` (repeatable).
    #[arg(long = "instance-output", value_name = "[INSTANCE:]K=V")]
    pub instance_outputs: Vec<String>,
    /// Component output available as `service_instance.components.default.outputs.K`.
    #[arg(long = "component-output", value_name = "K=V")]
    pub component_outputs: Vec<String>,
    /// Environment account id.
    #[arg(long, default_value = "123456789012")]
    pub account_id: String,
    /// Resource name when the spec has no `name:` (default: the spec file's stem).
    #[arg(long)]
    pub name: Option<String>,
    /// Source repository id for `service.repository_id`.
    #[arg(long, default_value = "example/repository")]
    pub repository_id: String,
    /// Source branch for `service.branch_name`.
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// Write each rendered file below this folder instead of printing.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
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
        } => run_daemon(&config, listen, no_server),
        Command::Bench {
            instances,
            dir,
            json,
            no_aws,
            deploy_instances,
            tags,
        } => bench_cmd(
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
        } => notify_cmd(
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
        } => rollout_cmd(&config, action, &version, &reason),
        Command::Demo {
            dir,
            examples,
            once,
        } => demo_cmd(&dir, &examples, once),
        Command::Reconcile { config, once: _ } => reconcile_once(&config),
        Command::Validate { paths, spec } => validate(&paths, spec.as_deref()),
        Command::Render(args) => render_cmd(&args),
        Command::Plan {
            config,
            output,
            no_fetch,
        } => plan_cmd(&config, output, !no_fetch),
        Command::Status { config, output } => status_cmd(&config, output),
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: ok ({} template repos, {} spec repos)",
                    config.display(),
                    c.template_repos.len(),
                    c.spec_repos.len()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(errors) => {
                for e in &errors {
                    eprintln!("{e}");
                }
                eprintln!("{} problem(s) in {}", errors.len(), config.display());
                Ok(ExitCode::from(1))
            }
        },
    }
}

/// Finds bundle folders below `path`: itself if it is one, its `vN` children if it is a
/// template folder, and `*/vN` if it is a template repo.
fn find_bundles(path: &Path) -> Vec<PathBuf> {
    let is_bundle = |p: &Path| {
        p.join("schema").is_dir()
            || p.join("infrastructure").is_dir()
            || p.join("instance_infrastructure").is_dir()
            || p.join("manifest.yaml").is_file()
    };
    if is_bundle(path) {
        return vec![path.to_path_buf()];
    }
    let mut found = Vec::new();
    let children = |p: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(p)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.is_dir() && !p.ends_with(".git"))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    for child in children(path) {
        if is_bundle(&child) {
            found.push(child);
        } else {
            found.extend(children(&child).into_iter().filter(|c| is_bundle(c)));
        }
    }
    found
}

/// A bundle read from disk, whichever layout it has.
enum Loaded {
    Template(Box<Bundle>),
    Component(ComponentBundle),
}

fn load(dir: &Path) -> Result<Loaded, Vec<String>> {
    let files = catalog::read_dir(dir, &Limits::default())
        .map_err(|es| es.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let strings = |es: Vec<catalog::BundleError>| -> Vec<String> {
        es.iter().map(ToString::to_string).collect()
    };
    let loaded = match catalog::detect_layout(&files) {
        Layout::Component => Loaded::Component(ComponentBundle::load(&files).map_err(strings)?),
        Layout::Template => {
            let (name, major) = catalog::name_and_major_from_path(dir);
            let Some(major) = major else {
                return Err(vec![format!(
                    "{}: the bundle folder must be named vN (e.g. fargate-svc/v1) so its major version is known",
                    dir.display()
                )]);
            };
            Loaded::Template(Box::new(
                Bundle::load(&name, major, &files).map_err(strings)?,
            ))
        }
    };
    let infras: Vec<&Infrastructure> = match &loaded {
        Loaded::Template(b) => std::iter::once(&b.infrastructure)
            .chain(b.pipeline.as_ref())
            .collect(),
        Loaded::Component(c) => vec![&c.infrastructure],
    };
    let syntax: Vec<String> = infras
        .iter()
        .flat_map(|i| i.files.iter())
        .filter_map(|f| render::check_syntax(f).err())
        .map(|e| format!("{}/{e}", dir.display()))
        .collect();
    if syntax.is_empty() {
        Ok(loaded)
    } else {
        Err(syntax)
    }
}

fn validate(paths: &[PathBuf], spec_file: Option<&Path>) -> Result<ExitCode> {
    let mut problems = 0usize;
    let mut checked = 0usize;
    for path in paths {
        let bundles = find_bundles(path);
        if bundles.is_empty() {
            eprintln!(
                "{}: no template bundle found (expected schema/ and infrastructure/ or instance_infrastructure/, or a component manifest.yaml)",
                path.display()
            );
            problems += 1;
        }
        for dir in bundles {
            checked += 1;
            match load(&dir) {
                Ok(loaded) => {
                    let mut spec_problems = Vec::new();
                    if let (Some(spec_path), Loaded::Template(bundle)) = (spec_file, &loaded) {
                        let spec = read_spec(spec_path, None)?;
                        spec_problems = validate_spec_inputs(bundle, &spec, spec_path)
                            .err()
                            .unwrap_or_default();
                    }
                    if spec_problems.is_empty() {
                        let what = match &loaded {
                            Loaded::Template(b) => {
                                format!("{} template {} v{}", b.kind, b.name, b.major)
                            }
                            Loaded::Component(_) => "component".into(),
                        };
                        println!("ok    {} ({what})", dir.display());
                    } else {
                        println!("FAIL  {}", dir.display());
                        for p in &spec_problems {
                            println!("      {p}");
                        }
                        problems += spec_problems.len();
                    }
                }
                Err(errors) => {
                    println!("FAIL  {}", dir.display());
                    for e in &errors {
                        println!("      {e}");
                    }
                    problems += errors.len();
                }
            }
        }
    }
    println!("{checked} bundle(s) checked, {problems} problem(s)");
    Ok(if problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn read_spec(path: &Path, name: Option<&str>) -> Result<SpecFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read spec file {}", path.display()))?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match spec::parse(&text, &path.display().to_string(), name.unwrap_or(&stem)) {
        Ok(s) => Ok(s),
        Err(errors) => {
            let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
            bail!("invalid spec file:\n  {}", list.join("\n  "))
        }
    }
}

/// Validated inputs for every part of a spec.
struct Inputs {
    main: Value,
    instances: Vec<Value>,
    pipeline: Value,
}

fn validate_spec_inputs(
    bundle: &Bundle,
    spec: &SpecFile,
    path: &Path,
) -> Result<Inputs, Vec<String>> {
    let mut problems = Vec::new();
    let file = path.display().to_string();
    if let Some(t) = spec.template()
        && (t.name != bundle.name || t.major != bundle.major)
    {
        eprintln!(
            "warning: {file}: template is {} v{} but the bundle is {} v{}",
            t.name, t.major, bundle.name, bundle.major
        );
    }
    let mut check = |kind: InputKind, value: &Value, prefix: &str| -> Value {
        match bundle.schema.validate(kind, value, prefix) {
            Ok(v) => v,
            Err(vs) => {
                problems.extend(vs.iter().map(|v| format!("{file}: {v}")));
                Value::Null
            }
        }
    };
    let out = match (spec, bundle.kind) {
        (SpecFile::Environment(e), TemplateKind::Environment) => Inputs {
            main: check(InputKind::Environment, &e.inputs, "spec"),
            instances: Vec::new(),
            pipeline: Value::Null,
        },
        (SpecFile::Service(s), TemplateKind::Service) => {
            let instances = s
                .instances
                .iter()
                .enumerate()
                .map(|(i, inst)| {
                    check(
                        InputKind::Service,
                        &inst.inputs,
                        &format!("instances[{i}].spec"),
                    )
                })
                .collect();
            let pipeline = match (&s.pipeline, &bundle.pipeline) {
                (Some(p), Some(_)) => check(InputKind::Pipeline, p, "pipeline"),
                (None, Some(_)) => check(InputKind::Pipeline, &Value::Null, "pipeline"),
                (Some(_), None) => {
                    problems.push(format!(
                        "{file}: pipeline: the template has no pipeline_infrastructure; remove the pipeline block"
                    ));
                    Value::Null
                }
                (None, None) => Value::Null,
            };
            for (i, inst) in s.instances.iter().enumerate() {
                if inst.component.is_some() && !bundle.supports_components() {
                    problems.push(format!(
                        "{file}: instances[{i}].component: template {} v{} does not allow components (supported_component_sources lacks DIRECTLY_DEFINED)",
                        bundle.name, bundle.major
                    ));
                }
            }
            Inputs {
                main: Value::Null,
                instances,
                pipeline,
            }
        }
        (_, kind) => {
            problems.push(format!(
                "{file}: is a {} spec but {} v{} is a {kind} template",
                match spec {
                    SpecFile::Environment(_) => "environment",
                    SpecFile::Service(_) => "service",
                },
                bundle.name,
                bundle.major
            ));
            return Err(problems);
        }
    };
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

fn key_values(items: &[String], flag: &str) -> Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .with_context(|| format!("--{flag} {kv:?}: expected K=V"))
        })
        .collect()
}

fn render_cmd(args: &RenderArgs) -> Result<ExitCode> {
    let loaded = match load(&args.bundle) {
        Ok(l) => l,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            bail!(
                "{} is not a valid bundle ({} problem(s))",
                args.bundle.display(),
                errors.len()
            );
        }
    };
    let spec = read_spec(&args.spec, args.name.as_deref())?;
    let env_outputs = key_values(&args.env_outputs, "env-output")?;
    let component_outputs = key_values(&args.component_outputs, "component-output")?;
    let mut instance_outputs: BTreeMap<Option<String>, BTreeMap<String, String>> = BTreeMap::new();
    for item in &args.instance_outputs {
        let (inst, kv) = match item.split_once(':') {
            Some((i, kv)) if !i.contains('=') => (Some(i.to_string()), kv),
            _ => (None, item.as_str()),
        };
        instance_outputs
            .entry(inst)
            .or_default()
            .extend(key_values(&[kv.to_string()], "instance-output")?);
    }
    // The daemon's context builder, with the source given by the flags.
    let source = SpecSource {
        repository_id: args.repository_id.clone(),
        branch: args.branch.clone(),
        connection_arn: format!(
            "arn:aws:codestar-connections:us-east-1:{}:connection/protond-render",
            args.account_id
        ),
    };
    let service = ServiceContext::new(spec.name(), &source, &args.account_id);
    let mut outputs: Vec<(String, String)> = Vec::new();
    let mut failed = Vec::new();
    let mut emit = |label: String, infra: &Infrastructure, ctx: &Value| {
        for file in &infra.files {
            match render::render_file(file, ctx) {
                Ok(text) => outputs.push((format!("{label}/{}", file.path), text)),
                Err(e) => failed.push(format!("{label}: {}/{e}", args.bundle.display())),
            }
        }
    };
    let env_info = |name: &str| service.instance_environment(name, env_outputs.clone());
    match (&loaded, &spec) {
        (Loaded::Template(bundle), _) => {
            let inputs = validate_spec_inputs(bundle, &spec, &args.spec)
                .map_err(|p| anyhow::anyhow!("spec inputs are invalid:\n  {}", p.join("\n  ")))?;
            match &spec {
                SpecFile::Environment(e) => {
                    let ctx =
                        environment_context(e, inputs.main, env_outputs.clone(), &args.account_id);
                    emit(e.name.clone(), &bundle.infrastructure, &ctx);
                }
                SpecFile::Service(s) => {
                    if let Some(wanted) = &args.instance
                        && !s.instances.iter().any(|i| &i.name == wanted)
                    {
                        let names: Vec<&str> =
                            s.instances.iter().map(|i| i.name.as_str()).collect();
                        bail!(
                            "--instance {wanted:?} is not in the spec; instances: {}",
                            names.join(", ")
                        );
                    }
                    let infos: Vec<InstanceInfo> = s
                        .instances
                        .iter()
                        .zip(inputs.instances)
                        .map(|(inst, inputs)| {
                            let mut outs = instance_outputs.get(&None).cloned().unwrap_or_default();
                            outs.extend(
                                instance_outputs
                                    .get(&Some(inst.name.clone()))
                                    .cloned()
                                    .unwrap_or_default(),
                            );
                            InstanceInfo {
                                name: inst.name.clone(),
                                inputs,
                                outputs: outs,
                                environment: env_info(&inst.environment),
                                component_outputs: if inst.component.is_some()
                                    || !component_outputs.is_empty()
                                {
                                    component_outputs.clone()
                                } else {
                                    BTreeMap::new()
                                },
                            }
                        })
                        .collect();
                    if !args.pipeline {
                        for info in infos
                            .iter()
                            .filter(|i| args.instance.as_ref().is_none_or(|w| w == &i.name))
                        {
                            emit(
                                info.name.clone(),
                                &bundle.infrastructure,
                                &service.instance(info),
                            );
                        }
                    }
                    if args.instance.is_none() {
                        match &bundle.pipeline {
                            Some(p) => emit(
                                "pipeline".into(),
                                p,
                                &service.pipeline(&inputs.pipeline, &infos),
                            ),
                            None if args.pipeline => {
                                bail!("{} has no pipeline_infrastructure", args.bundle.display())
                            }
                            None => {}
                        }
                    }
                }
            }
        }
        (Loaded::Component(component), SpecFile::Service(s)) => {
            let inst = match &args.instance {
                Some(w) => s.instances.iter().find(|i| &i.name == w),
                None => s.instances.iter().find(|i| i.component.is_some()),
            }
            .context("pass --instance NAME: the instance the component is attached to")?;
            let info = InstanceInfo {
                name: inst.name.clone(),
                inputs: inst.inputs.clone(),
                outputs: BTreeMap::new(),
                environment: env_info(&inst.environment),
                component_outputs: BTreeMap::new(),
            };
            let name = inst
                .component
                .as_ref()
                .map_or("default", |c| c.name.as_str());
            let ctx = service.component(&info, name);
            emit(
                format!("{}/component", inst.name),
                &component.infrastructure,
                &ctx,
            );
        }
        (Loaded::Component(_), SpecFile::Environment(_)) => {
            bail!("components attach to service instances; pass a service spec")
        }
    }
    if !failed.is_empty() {
        for f in &failed {
            eprintln!("{f}");
        }
        eprintln!("{} file(s) failed to render", failed.len());
        return Ok(ExitCode::from(1));
    }
    let single = outputs.len() == 1;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (label, text) in &outputs {
        if let Some(dir) = &args.out_dir {
            let path = dir.join(label);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            writeln!(out, "wrote {}", path.display())?;
        } else if single {
            write!(out, "{text}")?;
        } else {
            writeln!(out, "---\n# protond: {label}")?;
            write!(out, "{text}")?;
            if !text.ends_with('\n') {
                writeln!(out)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The outcome `protond notify` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NotifyStatus {
    /// Applied (or destroyed).
    Succeeded,
    /// Failed.
    Failed,
}

/// What `protond rollout` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RolloutAction {
    /// Stop the version from reaching further resources.
    Halt,
    /// Let it continue (failed deployments of it are retried).
    Resume,
}

/// Output format of `plan` and `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// A readable table.
    Table,
    /// JSON.
    Json,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn load_config(path: &Path) -> Result<Config> {
    Config::load(path).map_err(|errors| {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid configuration:\n  {}", list.join("\n  "))
    })
}

fn plan_cmd(config: &Path, output: OutputFormat, fetch: bool) -> Result<ExitCode> {
    let config = load_config(config)?;
    runtime()?.block_on(async move {
        // Read-only: the plan reads the repos and the store, and writes nothing.
        let store = crate::state::Store::open(&config.state).await?;
        let cfg = config.clone();
        let snapshot = tokio::task::spawn_blocking(move || crate::desired::load(&cfg, None, fetch))
            .await
            .context("reading the repos panicked")?;
        let waiting = crate::daemon::reconcile::waiting(&store).await?;
        let facts = crate::daemon::reconcile::read_facts(
            &store,
            std::collections::BTreeSet::new(),
            waiting,
            BTreeMap::new(),
            std::time::SystemTime::now(),
        )
        .await?;
        let eval = crate::evaluate::evaluate(&snapshot, &facts, &config, None);
        let (set, plan) = (&eval.set, &eval.plan);
        let mut out = std::io::stdout().lock();
        match output {
            OutputFormat::Json => {
                let doc = serde_json::json!({
                    "actions": plan.actions,
                    "schedule": eval.schedule.decisions,
                    "proposals": plan.proposals,
                    "unknown_repos": set.unknown_repos,
                    "problems": set.problems,
                    "rejected_releases": snapshot.catalog.rejected.iter().map(|r| serde_json::json!({
                        "template": r.template, "version": r.version.to_string(), "tag": r.tag, "repo": r.repo, "reason": r.reason,
                    })).collect::<Vec<_>>(),
                });
                writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
            }
            OutputFormat::Table => {
                write!(out, "{}", crate::ops::plan_table(plan, set, &snapshot.catalog))?;
                write!(out, "{}", schedule_section(&eval.schedule))?;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// What the daemon would start now and what it holds, with each hold's reason.
fn schedule_section(schedule: &crate::plan::schedule::Schedule) -> String {
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

fn status_cmd(config: &Path, output: OutputFormat) -> Result<ExitCode> {
    let config = load_config(config)?;
    runtime()?.block_on(async move {
        let store = crate::state::Store::open(&config.state).await?;
        let rows = crate::ops::status(&store.overview().await?);
        let rollouts = store.rollout_progress().await?;
        let proposals = store.proposals().await?;
        let pipelines = if rows
            .iter()
            .any(|r| r.kind == crate::model::ResourceKind::Pipeline)
        {
            let cfn = crate::provision::cloudformation::CloudFormation::new(
                crate::provision::cloudformation::Settings::from_config(&config),
            )
            .await;
            let cp = crate::provision::codepipeline::CodePipeline::new(cfn.sdk_config());
            crate::provision::codepipeline::pipeline_rows(
                &store.resources().await?,
                &store.pipeline_runs().await?,
                &cfn,
                &cp,
            )
            .await
        } else {
            Vec::new()
        };
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
                }))?
            )?,
            OutputFormat::Table => {
                write!(out, "{}", crate::ops::status_table(&rows))?;
                write!(out, "{}", crate::ops::rollouts_table(&rollouts))?;
                write!(out, "{}", crate::ops::pipelines_table(&pipelines))?;
                write!(out, "{}", crate::ops::proposals_table(&proposals))?;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn run_daemon(
    config: &Path,
    listen: Option<std::net::SocketAddr>,
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
            let addr = ctx.config.server.listen;
            Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!("cannot listen on {addr} (server.listen); is another protond running? Use --listen or --no-server")
            })?)
        } else {
            None
        };
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

fn reconcile_once(config: &Path) -> Result<ExitCode> {
    let config = load_config(config)?;
    runtime()?.block_on(async move {
        let (ctx, _wake) = crate::daemon::context(config).await?;
        let report = crate::daemon::run_once(&ctx).await?;
        for p in &report.problems {
            eprintln!("problem: {}", p.replace('\n', "\n  "));
        }
        eprintln!(
            "{} cycle(s): {} deployment(s) succeeded, {} failed{}{}",
            report.cycles,
            report.succeeded,
            report.failed,
            if report.waiting > 0 {
                format!(
                    ", {} waiting for their outcome (protond notify)",
                    report.waiting
                )
            } else {
                String::new()
            },
            if report.failing.is_empty() {
                String::new()
            } else {
                format!("; failing: {}", report.failing.join(", "))
            }
        );
        Ok(
            if report.failed == 0 && report.failing.is_empty() && report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            },
        )
    })
}

fn demo_cmd(dir: &Path, examples: &Path, once: bool) -> Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    let (local, endpoint) = match std::env::var("AWS_ENDPOINT_URL") {
        Ok(url) if !url.is_empty() => (None, url),
        _ => {
            let aws = crate::demo::LocalAws::start()?;
            let url = aws.url.clone();
            eprintln!("Started moto_server on {url} (local AWS; stopped when protond exits).");
            (Some(aws), url)
        }
    };
    // A moto_server started here holds nothing: state left by an earlier demo run would
    // describe stacks that no longer exist. Start the state afresh (the repos are kept).
    let state = dir.join("state");
    if local.is_some() && state.exists() {
        std::fs::remove_dir_all(&state)
            .with_context(|| format!("cannot reset {}", state.display()))?;
        eprintln!(
            "The local AWS starts empty, so the demo state starts afresh ({} removed; repos kept).",
            state.display()
        );
    }
    let config_path = crate::demo::prepare(examples, &dir, &endpoint)?;
    let mut config = load_config(&config_path)?;
    config.local_credentials = local.is_some();
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
        if once {
            return Ok::<_, anyhow::Error>(if report.failed == 0 && report.failing.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        let listen = ctx.config.server.listen;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => {
                println!("Status page: http://{listen}/  (metrics at /metrics, JSON under /api/v1/)");
                let secrets = crate::server::Secrets::from_env(&ctx.config.server);
                Some(tokio::spawn(crate::server::serve(ctx.clone(), secrets, l, async move {
                    let _ = stop_rx.await;
                })))
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
        Ok(ExitCode::SUCCESS)
    })?;
    drop(local);
    Ok(code)
}

/// `deploy`: the fleet size and tag count of the deployment figures, `None` to skip them.
fn bench_cmd(
    sizes: &[usize],
    dir: Option<&Path>,
    json: bool,
    deploy: Option<(usize, usize)>,
) -> Result<ExitCode> {
    if deploy.is_some() && !crate::bench::moto_available() {
        bail!(
            "the deployment figures need moto_server on the PATH (python3 -m pip install 'moto[server]'); pass --no-aws to skip them"
        );
    }
    let tmp;
    let root = match dir {
        Some(d) => d.to_path_buf(),
        None => {
            tmp = std::env::temp_dir().join(format!("protond-bench-{}", std::process::id()));
            tmp.clone()
        }
    };
    let mut rows = Vec::new();
    if let [n] = sizes {
        rows.push(crate::bench::measure(&root.join(n.to_string()), *n)?);
    } else {
        // One process per size: peak RSS is then that size's own.
        let exe = std::env::current_exe().context("cannot find the protond binary")?;
        for n in sizes {
            eprintln!("bench: {n} instances ...");
            let out = std::process::Command::new(&exe)
                .args([
                    "bench",
                    "--json",
                    "--no-aws",
                    "--instances",
                    &n.to_string(),
                    "--dir",
                ])
                .arg(&root)
                .output()
                .context("cannot run protond bench")?;
            if !out.status.success() {
                bail!(
                    "bench for {n} instances failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            let f: crate::bench::Figures =
                serde_json::from_slice(&out.stdout).context("bench child printed no figures")?;
            rows.push(f);
        }
    }
    let deployed = match deploy {
        Some((n, tags)) => {
            eprintln!("bench: deploying {n} instances on moto_server ...");
            let d = crate::bench::measure_deployment(&root.join(format!("deploy-{n}")), n, tags);
            if d.is_err() && dir.is_none() {
                let _ = std::fs::remove_dir_all(&root);
            }
            Some(d?)
        }
        None => None,
    };
    if dir.is_none() {
        let _ = std::fs::remove_dir_all(&root);
    }
    if json {
        for f in &rows {
            println!("{}", serde_json::to_string(f)?);
        }
        if let Some(d) = &deployed {
            println!("{}", serde_json::json!({ "deployment": d }));
        }
    } else {
        print!("{}", crate::bench::table(&rows));
        if let Some(d) = &deployed {
            print!(
                "\nDeployment, on moto_server:\n\n{}",
                crate::bench::deploy_table(d)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn notify_cmd(
    config: &Path,
    resource: &str,
    status: NotifyStatus,
    outputs: Option<&Path>,
    message: Option<String>,
    deployment_id: Option<i64>,
) -> Result<ExitCode> {
    let config = load_config(config)?;
    let outputs = match outputs {
        None => std::collections::BTreeMap::new(),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            let v: Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: not JSON", p.display()))?;
            crate::provision::terraform::parse_outputs(&v)
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
        }
    };
    runtime()?.block_on(async move {
        let store = crate::state::Store::open(&config.state).await?;
        let outcome = crate::provision::self_managed::notify(
            &store,
            resource,
            deployment_id,
            status == NotifyStatus::Succeeded,
            outputs,
            message,
        )
        .await?;
        let what = match outcome {
            crate::state::Outcome::Succeeded(r) => {
                format!("deployed ({} output(s))", r.outputs.len())
            }
            crate::state::Outcome::Deleted => "deleted".into(),
            _ => "failed".into(),
        };
        println!(
            "{}: recorded as {what}; the daemon continues with its dependants at its next cycle",
            crate::provision::self_managed::resource_id_from(resource)
        );
        Ok(ExitCode::SUCCESS)
    })
}

fn rollout_cmd(
    config: &Path,
    action: RolloutAction,
    version: &str,
    reason: &str,
) -> Result<ExitCode> {
    let config = load_config(config)?;
    let pattern = crate::catalog::releases::TagPattern::new(crate::config::DEFAULT_TAG_PATTERN)
        .map_err(|e| anyhow::anyhow!(e))?;
    let Some((template, v)) = pattern.parse(version) else {
        bail!("{version:?} is not <template>/v<major>.<minor>, e.g. web-svc/v1.2");
    };
    runtime()?.block_on(async move {
        let store = crate::state::Store::open(&config.state).await?;
        let halted = action == RolloutAction::Halt;
        store.set_rollout(&template, v, halted, reason).await?;
        println!(
            "rollout of {template} {v} {}",
            if halted { "halted" } else { "resumed" }
        );
        Ok(ExitCode::SUCCESS)
    })
}
