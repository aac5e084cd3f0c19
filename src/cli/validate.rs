//! `protond validate`: checks template bundles (and optionally a spec file's inputs against
//! them) and lists every problem. Also the bundle and spec loading that `protond render`
//! shares. It only reads files: it never renders for deployment, never opens the store, and
//! never calls AWS.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::catalog::schema::InputKind;
use crate::catalog::{self, Bundle, ComponentBundle, Infrastructure, Layout, Limits, TemplateKind};
use crate::render;
use crate::spec::{self, ServiceSpec, SpecFile};

/// How deep below a given path `validate` looks for bundles.
const MAX_SEARCH_DEPTH: usize = 32;
/// How many folders `validate` looks at below one given path, at most.
const MAX_SEARCH_FOLDERS: usize = 100_000;

/// Whether `p` is a bundle folder: a template's `vN` folder or a component folder.
fn is_bundle(p: &Path) -> bool {
    p.join("schema").is_dir()
        || p.join("infrastructure").is_dir()
        || p.join("instance_infrastructure").is_dir()
        || p.join("manifest.yaml").is_file()
}

/// Finds bundle folders below `path`, at any depth: itself if it is one, else every bundle
/// in the folders below it (a template repo, a Proton template sync `subdirectory`, a
/// template folder's `vN` children). A bundle's own folders are not searched further;
/// hidden folders (`.git`, `.github`) and symbolic links are skipped. The second value says
/// whether the search stopped at [`MAX_SEARCH_DEPTH`] or [`MAX_SEARCH_FOLDERS`].
fn find_bundles(path: &Path) -> (Vec<PathBuf>, bool) {
    if is_bundle(path) {
        return (vec![path.to_path_buf()], false);
    }
    let mut found = Vec::new();
    let mut visited = 0usize;
    let mut truncated = false;
    // Depth-first, in name order, so the report lists bundles as the tree does.
    let mut stack = vec![(path.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        visited += 1;
        if visited > MAX_SEARCH_FOLDERS {
            truncated = true;
            break;
        }
        let mut children: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        children.sort();
        for child in children.into_iter().rev() {
            if is_bundle(&child) {
                found.push(child);
            } else if depth + 1 < MAX_SEARCH_DEPTH {
                stack.push((child, depth + 1));
            } else {
                truncated = true;
            }
        }
    }
    found.sort();
    (found, truncated)
}

/// A bundle read from disk, whichever layout it has.
pub(super) enum Loaded {
    /// An environment or service template's `vN` folder.
    Template(Box<Bundle>),
    /// A directly defined component's folder.
    Component(ComponentBundle),
}

impl Loaded {
    /// What `validate` says the bundle is: `service template web-svc v1`, or `component`.
    fn describe(&self) -> String {
        match self {
            Loaded::Template(b) => format!("{} template {} v{}", b.kind, b.name, b.major),
            Loaded::Component(_) => "component".into(),
        }
    }
}

/// Reads and checks the bundle in `dir` (layout, schema, manifest, `IaC` syntax), every
/// problem as one line.
pub(super) fn load(dir: &Path) -> Result<Loaded, Vec<String>> {
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

/// `protond validate`: checks every bundle found below `paths`, prints `ok` or `FAIL` with
/// the problems for each, and exits 1 if there is any problem.
pub(super) fn validate(paths: &[PathBuf], spec_file: Option<&Path>) -> Result<ExitCode> {
    let mut problems = 0usize;
    let mut checked = 0usize;
    for path in paths {
        let (bundles, truncated) = find_bundles(path);
        if truncated {
            eprintln!(
                "{}: stopped looking for bundles at {MAX_SEARCH_DEPTH} folders deep or {MAX_SEARCH_FOLDERS} folders; validate a smaller folder",
                path.display()
            );
            problems += 1;
        }
        if bundles.is_empty() {
            eprintln!(
                "{}: no template bundle found (expected schema/ and infrastructure/ or instance_infrastructure/, or a component manifest.yaml)",
                path.display()
            );
            problems += 1;
        }
        for dir in bundles {
            checked += 1;
            problems += check_bundle(&dir, spec_file)?;
        }
    }
    println!("{checked} bundle(s) checked, {problems} problem(s)");
    Ok(if problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Checks one bundle folder (and the spec's inputs against it, for a template), prints `ok`
/// or `FAIL` with its problems, and returns how many problems it has.
fn check_bundle(dir: &Path, spec_file: Option<&Path>) -> Result<usize> {
    let problems = match load(dir) {
        Ok(loaded) => {
            let spec_problems = match (spec_file, &loaded) {
                (Some(spec_path), Loaded::Template(bundle)) => {
                    let spec = read_spec(spec_path, None)?;
                    validate_spec_inputs(bundle, &spec, spec_path)
                        .err()
                        .unwrap_or_default()
                }
                _ => Vec::new(),
            };
            if spec_problems.is_empty() {
                println!("ok    {} ({})", dir.display(), loaded.describe());
                return Ok(0);
            }
            spec_problems
        }
        Err(errors) => errors,
    };
    println!("FAIL  {}", dir.display());
    for p in &problems {
        println!("      {p}");
    }
    Ok(problems.len())
}

/// Reads and parses a spec file; `name` (or else the file's stem) names a spec without `name:`.
pub(super) fn read_spec(path: &Path, name: Option<&str>) -> Result<SpecFile> {
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
pub(super) struct Inputs {
    /// The environment's inputs (`Null` for a service).
    pub(super) main: Value,
    /// Each service instance's inputs, in the spec's order.
    pub(super) instances: Vec<Value>,
    /// The pipeline's inputs (`Null` without a pipeline).
    pub(super) pipeline: Value,
}

/// Checks the spec's inputs against the bundle's schema (and that the spec's kind, pipeline
/// and components fit the template), every problem as one line prefixed with `path`.
pub(super) fn validate_spec_inputs(
    bundle: &Bundle,
    spec: &SpecFile,
    path: &Path,
) -> Result<Inputs, Vec<String>> {
    let mut checker = Checker {
        bundle,
        file: path.display().to_string(),
        problems: Vec::new(),
    };
    if let Some(t) = spec.template()
        && (t.name != bundle.name || t.major != bundle.major)
    {
        eprintln!(
            "warning: {}: template is {} v{} but the bundle is {} v{}",
            checker.file, t.name, t.major, bundle.name, bundle.major
        );
    }
    let out = match (spec, bundle.kind) {
        (SpecFile::Environment(e), TemplateKind::Environment) => Inputs {
            main: checker.check(InputKind::Environment, &e.inputs.value(), "spec"),
            instances: Vec::new(),
            pipeline: Value::Null,
        },
        (SpecFile::Service(s), TemplateKind::Service) => checker.service(s),
        (_, kind) => {
            checker.problems.push(format!(
                "{}: is a {} spec but {} v{} is a {kind} template",
                checker.file,
                match spec {
                    SpecFile::Environment(_) => "environment",
                    SpecFile::Service(_) => "service",
                },
                bundle.name,
                bundle.major
            ));
            return Err(checker.problems);
        }
    };
    if checker.problems.is_empty() {
        Ok(out)
    } else {
        Err(checker.problems)
    }
}

/// Checks a spec's inputs against one bundle, collecting problems as lines that start with
/// the spec file's path.
struct Checker<'a> {
    bundle: &'a Bundle,
    file: String,
    problems: Vec<String>,
}

impl Checker<'_> {
    /// The validated `value` (defaults filled in), or `Null` after recording its problems.
    fn check(&mut self, kind: InputKind, value: &Value, prefix: &str) -> Value {
        match self.bundle.schema.validate(kind, value, prefix) {
            Ok(v) => v,
            Err(vs) => {
                let file = &self.file;
                self.problems
                    .extend(vs.iter().map(|v| format!("{file}: {v}")));
                Value::Null
            }
        }
    }

    /// A service spec's instance and pipeline inputs; also checks that the template has the
    /// pipeline and allows the components the spec asks for.
    fn service(&mut self, s: &ServiceSpec) -> Inputs {
        let instances = s
            .instances
            .iter()
            .enumerate()
            .map(|(i, inst)| {
                self.check(
                    InputKind::Service,
                    &inst.inputs.value(),
                    &format!("instances[{i}].spec"),
                )
            })
            .collect();
        let pipeline = match (&s.pipeline, &self.bundle.pipeline) {
            (Some(p), Some(_)) => self.check(InputKind::Pipeline, p, "pipeline"),
            (None, Some(_)) => self.check(InputKind::Pipeline, &Value::Null, "pipeline"),
            (Some(_), None) => {
                self.problems.push(format!(
                    "{}: pipeline: the template has no pipeline_infrastructure; remove the pipeline block",
                    self.file
                ));
                Value::Null
            }
            (None, None) => Value::Null,
        };
        for (i, inst) in s.instances.iter().enumerate() {
            if inst.component.is_some() && !self.bundle.supports_components() {
                self.problems.push(format!(
                    "{}: instances[{i}].component: template {} v{} does not allow components (supported_component_sources lacks DIRECTLY_DEFINED)",
                    self.file, self.bundle.name, self.bundle.major
                ));
            }
        }
        Inputs {
            main: Value::Null,
            instances,
            pipeline,
        }
    }
}
