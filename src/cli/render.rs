//! `protond render`: renders a bundle for a spec file and prints the `IaC` (or writes it below
//! `--out-dir`). The rendering context comes from the daemon's own builder
//! ([`ServiceContext`], [`environment_context`]), with the spec's source given by the flags,
//! so what this prints is what the daemon would deploy for the same inputs. It must never
//! build a context of its own, open the store, or call AWS.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::validate::{Inputs, Loaded, load, read_spec, validate_spec_inputs};
use crate::catalog::{Bundle, ComponentBundle, Engine, IacFile, Infrastructure};
use crate::desired::{ServiceContext, SpecSource, environment_context};
use crate::render::{self, EnvironmentInfo, InstanceInfo};
use crate::spec::{ServiceSpec, SpecFile};

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
    /// Source repository id for `service.repository_id` (default: the spec's
    /// `repository_id:`; undefined when neither gives it).
    #[arg(long)]
    pub repository_id: Option<String>,
    /// Source branch for `service.branch_name` (default: the spec's `branch_name:`).
    #[arg(long)]
    pub branch: Option<String>,
    /// Source connection for `service.repository_connection_arn` (default: the spec's
    /// `repository_connection_arn:`).
    #[arg(long)]
    pub repository_connection_arn: Option<String>,
    /// Write each rendered file below this folder instead of printing.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Also write, below this folder, the context each file is rendered with, one JSON file
    /// per rendered file (`<label>/<path>.json`: `{"file", "out", "engine", "context"}`), for
    /// rendering the same files with another engine (`scripts/jinja2_render.py`).
    #[arg(long, value_name = "DIR")]
    pub context_json: Option<PathBuf>,
}

/// `protond render`: loads the bundle and the spec, renders every file asked for, then
/// prints them (or writes them below `--out-dir`); exits 1 if any file failed to render.
pub(super) fn render_cmd(args: &RenderArgs) -> Result<ExitCode> {
    let loaded = load_bundle(&args.bundle)?;
    let spec = read_spec(&args.spec, args.name.as_deref())?;
    let outputs = FlagOutputs::parse(args)?;
    // The daemon's context builder, with the spec's source, which the flags override.
    let mut source = match &spec {
        SpecFile::Service(s) => SpecSource::of_spec(s),
        SpecFile::Environment(_) => SpecSource::default(),
    };
    source.repository_id = args.repository_id.clone().or(source.repository_id);
    source.branch = args.branch.clone().or(source.branch);
    source.connection_arn = args
        .repository_connection_arn
        .clone()
        .or(source.connection_arn);
    let mut renderer = Renderer {
        args,
        service: ServiceContext::new(spec.name(), &source, &args.account_id),
        outputs,
        files: Vec::new(),
        failed: Vec::new(),
    };
    match (&loaded, &spec) {
        (Loaded::Template(bundle), _) => renderer.template(bundle, &spec)?,
        (Loaded::Component(component), SpecFile::Service(s)) => {
            renderer.component(component, s)?;
        }
        (Loaded::Component(_), SpecFile::Environment(_)) => {
            bail!("components attach to service instances; pass a service spec")
        }
    }
    if !renderer.failed.is_empty() {
        for f in &renderer.failed {
            eprintln!("{f}");
        }
        eprintln!("{} file(s) failed to render", renderer.failed.len());
        return Ok(ExitCode::from(1));
    }
    write_files(&renderer.files, args.out_dir.as_deref())?;
    Ok(ExitCode::SUCCESS)
}

/// The bundle at `dir`, or an error after printing each of its problems.
fn load_bundle(dir: &Path) -> Result<Loaded> {
    match load(dir) {
        Ok(l) => Ok(l),
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            bail!(
                "{} is not a valid bundle ({} problem(s))",
                dir.display(),
                errors.len()
            );
        }
    }
}

/// Parses `K=V` flags (`flag` names them in errors).
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

/// The stack outputs given on the command line, standing in for deployed stacks' outputs.
struct FlagOutputs {
    /// `--env-output`: the environment's outputs.
    environment: BTreeMap<String, String>,
    /// `--component-output`: the attached component's outputs.
    component: BTreeMap<String, String>,
    /// `--instance-output`: per instance (`None`: for every instance).
    instance: BTreeMap<Option<String>, BTreeMap<String, String>>,
}

impl FlagOutputs {
    /// Parses the `--env-output`, `--component-output` and `--instance-output` flags.
    fn parse(args: &RenderArgs) -> Result<Self> {
        let environment = key_values(&args.env_outputs, "env-output")?;
        let component = key_values(&args.component_outputs, "component-output")?;
        let mut instance: BTreeMap<Option<String>, BTreeMap<String, String>> = BTreeMap::new();
        for item in &args.instance_outputs {
            let (inst, kv) = match item.split_once(':') {
                Some((i, kv)) if !i.contains('=') => (Some(i.to_string()), kv),
                _ => (None, item.as_str()),
            };
            instance
                .entry(inst)
                .or_default()
                .extend(key_values(&[kv.to_string()], "instance-output")?);
        }
        Ok(Self {
            environment,
            component,
            instance,
        })
    }

    /// Instance `name`'s outputs: those given for every instance, then its own.
    fn for_instance(&self, name: &str) -> BTreeMap<String, String> {
        let mut outs = self.instance.get(&None).cloned().unwrap_or_default();
        outs.extend(
            self.instance
                .get(&Some(name.to_string()))
                .cloned()
                .unwrap_or_default(),
        );
        outs
    }
}

/// One `protond render` run: the flags, the daemon's context builder, and the files rendered
/// so far (as `label/path` and text) or the ones that failed.
struct Renderer<'a> {
    args: &'a RenderArgs,
    service: ServiceContext,
    outputs: FlagOutputs,
    files: Vec<(String, String)>,
    failed: Vec<String>,
}

impl Renderer<'_> {
    /// Renders every file of `infra` with `ctx`, under `label`.
    fn emit(&mut self, label: &str, infra: &Infrastructure, ctx: &Value) {
        if let Some(bundle) = &infra.codebuild {
            // CodeBuild provisioning: the files as they travel, with proton-inputs.json.
            for (path, text) in crate::provision::codebuild::documents(bundle, ctx) {
                self.files
                    .push((format!("{label}/{}/{path}", infra.folder), text));
            }
            return;
        }
        for file in &infra.files {
            self.write_context(label, file, ctx);
            match render::render_file(file, ctx) {
                Ok(text) => self.files.push((format!("{label}/{}", file.path), text)),
                Err(e) => {
                    let spec = self.args.spec.display().to_string();
                    let e = self.service.describe(&spec, &e);
                    self.failed
                        .push(format!("{label}: {}/{e}", self.args.bundle.display()));
                }
            }
        }
    }

    /// With `--context-json DIR`: writes the context `file` is rendered with under `label`
    /// (a failure to write counts as a failed file).
    fn write_context(&mut self, label: &str, file: &IacFile, ctx: &Value) {
        let Some(dir) = &self.args.context_json else {
            return;
        };
        let out = format!("{label}/{}", file.path);
        let engine = match file.engine {
            Engine::Jinja => "jinja",
            Engine::Handlebars => "handlebars",
            Engine::Hcl => "hcl",
        };
        let doc =
            serde_json::json!({"file": file.path, "out": out, "engine": engine, "context": ctx});
        let path = dir.join(format!("{out}.json"));
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, format!("{doc:#}\n")));
        if let Err(e) = written {
            self.failed.push(format!(
                "{out}: cannot write its context to {}: {e}",
                path.display()
            ));
        }
    }

    /// The environment instances in `name` see, with the `--env-output` outputs.
    fn environment(&self, name: &str) -> EnvironmentInfo {
        self.service
            .instance_environment(name, self.outputs.environment.clone())
    }

    /// Renders a template bundle: the environment, or the service's instances and pipeline.
    fn template(&mut self, bundle: &Bundle, spec: &SpecFile) -> Result<()> {
        let inputs = validate_spec_inputs(bundle, spec, &self.args.spec)
            .map_err(|p| anyhow::anyhow!("spec inputs are invalid:\n  {}", p.join("\n  ")))?;
        match spec {
            SpecFile::Environment(e) => {
                let ctx = environment_context(
                    e,
                    inputs.main,
                    self.outputs.environment.clone(),
                    &self.args.account_id,
                );
                self.emit(&e.name, &bundle.infrastructure, &ctx);
                Ok(())
            }
            SpecFile::Service(s) => self.service_spec(bundle, s, inputs),
        }
    }

    /// Renders the instances asked for (`--instance`, or all unless `--pipeline`) and the
    /// pipeline (unless `--instance`).
    fn service_spec(&mut self, bundle: &Bundle, s: &ServiceSpec, inputs: Inputs) -> Result<()> {
        let args = self.args;
        if let Some(wanted) = &args.instance
            && !s.instances.iter().any(|i| &i.name == wanted)
        {
            let names: Vec<&str> = s.instances.iter().map(|i| i.name.as_str()).collect();
            bail!(
                "--instance {wanted:?} is not in the spec; instances: {}",
                names.join(", ")
            );
        }
        let infos = self.instance_infos(s, inputs.instances);
        if !args.pipeline {
            for info in infos
                .iter()
                .filter(|i| args.instance.as_ref().is_none_or(|w| w == &i.name))
            {
                let ctx = self.service.instance(info);
                self.emit(&info.name, &bundle.infrastructure, &ctx);
            }
        }
        if args.instance.is_none() {
            match &bundle.pipeline {
                Some(p) => {
                    let ctx = self.service.pipeline(&inputs.pipeline, &infos);
                    self.emit("pipeline", p, &ctx);
                }
                None if args.pipeline => {
                    bail!("{} has no pipeline_infrastructure", args.bundle.display())
                }
                None => {}
            }
        }
        Ok(())
    }

    /// What each of the spec's instances shows templates, with its validated `inputs` and
    /// the outputs given by the flags.
    fn instance_infos(&self, s: &ServiceSpec, inputs: Vec<Value>) -> Vec<InstanceInfo> {
        let component_outputs = &self.outputs.component;
        s.instances
            .iter()
            .zip(inputs)
            .map(|(inst, inputs)| InstanceInfo {
                name: inst.name.clone(),
                inputs,
                outputs: self.outputs.for_instance(&inst.name),
                environment: self.environment(&inst.environment),
                component_outputs: if inst.component.is_some() || !component_outputs.is_empty() {
                    component_outputs.clone()
                } else {
                    BTreeMap::new()
                },
            })
            .collect()
    }

    /// Renders a component bundle for the instance it is attached to (`--instance`, or the
    /// first instance with a component).
    fn component(&mut self, component: &ComponentBundle, s: &ServiceSpec) -> Result<()> {
        let inst = match &self.args.instance {
            Some(w) => s.instances.iter().find(|i| &i.name == w),
            None => s.instances.iter().find(|i| i.component.is_some()),
        }
        .context("pass --instance NAME: the instance the component is attached to")?;
        let info = InstanceInfo {
            name: inst.name.clone(),
            inputs: inst.inputs.value(),
            outputs: BTreeMap::new(),
            environment: self.environment(&inst.environment),
            component_outputs: BTreeMap::new(),
        };
        let name = inst
            .component
            .as_ref()
            .map_or("default", |c| c.name.as_str());
        let ctx = self.service.component(&info, name);
        self.emit(
            &format!("{}/component", inst.name),
            &component.infrastructure,
            &ctx,
        );
        Ok(())
    }
}

/// Prints the rendered files (a lone file as it is, several each under a `# protond: label`
/// header), or writes each below `out_dir` and prints its path.
fn write_files(files: &[(String, String)], out_dir: Option<&Path>) -> Result<()> {
    let single = files.len() == 1;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (label, text) in files {
        if let Some(dir) = out_dir {
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
    Ok(())
}
