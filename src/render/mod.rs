//! Rendering `IaC` files with Proton's two engines behind one interface, and the rendering
//! context Proton gave them.
//!
//! * [`render_file`] renders one manifest-listed file with Jinja (minijinja, with Proton's
//!   filters) or Handlebars; Terraform (`hcl`) files pass through untouched.
//! * `CloudFormation` output then goes through [`guard`]: input values are data and may never
//!   add or change YAML structure.
//! * The `*_context` functions build the namespaces of DESIGN.md (`environment`, `service`,
//!   `service_instance`, `pipeline`, `service_instances`, `component`).
//!
//! This module never reads files, git or AWS: callers hand it text and values.

pub mod bounds;
pub mod deadline;
pub mod filters;
pub mod guard;
mod handlebars_engine;
mod jinja;
pub mod jinja2;
pub mod skeleton;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Value, json};

use crate::catalog::schema::{InputKind, Schema};
use crate::catalog::{Bundle, Engine, IacFile, Language, TemplateKind};

/// A rendering failure, naming the file and, where known, the line and variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A variable the template uses is not in the context.
    #[error(
        "{file}:{line}: undefined variable `{variable}`; define it in the spec (inputs), supply it (outputs), or guard it with `is defined`"
    )]
    Undefined {
        /// Template file.
        file: String,
        /// 1-based line.
        line: usize,
        /// The expression that was undefined, e.g. `environment.outputs.VPC`.
        variable: String,
    },
    /// A template syntax or evaluation error.
    #[error("{file}:{line}: {message}")]
    Template {
        /// Template file.
        file: String,
        /// 1-based line (0 when unknown).
        line: usize,
        /// What went wrong.
        message: String,
    },
    /// The render went past one of its bounds ([`bounds`]): fuel, output size, the size of a
    /// value it built, or recursion.
    #[error(
        "{file}:{line}: the render exceeds its bounds: {message}; make the template do less (fewer or shorter loops, smaller repeated strings and lists)"
    )]
    Bound {
        /// Template file.
        file: String,
        /// 1-based line (0 when unknown).
        line: usize,
        /// Which bound, and by how much where known.
        message: String,
    },
    /// The rendered document is not valid YAML/JSON.
    #[error(
        "{file}: the rendered document is not valid YAML: {message}; check the template and the input values used there"
    )]
    NotYaml {
        /// Template file.
        file: String,
        /// Parser message.
        message: String,
    },
    /// The rendered document is nested deeper than the parser's limit.
    #[error(
        "{file}: the rendered document is nested too deeply: more than {limit} levels (line {line}); flatten the template, or the input values nested there"
    )]
    TooDeep {
        /// Template file.
        file: String,
        /// 1-based line of the first collection past the limit.
        line: usize,
        /// The limit.
        limit: usize,
    },
    /// An input value would have changed the document's structure.
    #[error(
        "{file}: an input value would change the template's structure at {at}: {value:?}; input values are data and may not contain YAML structure (line breaks, quotes closing a string, '#', tags, lists or mappings in unquoted positions)"
    )]
    Injection {
        /// Template file.
        file: String,
        /// Where in the document.
        at: String,
        /// The offending value.
        value: String,
    },
    /// The context holds reserved characters.
    #[error("{file}: input value at {path} contains reserved characters (U+E000..U+E003)")]
    Reserved {
        /// Template file.
        file: String,
        /// Path of the value in the context.
        path: String,
    },
}

/// Checks a template's syntax without rendering it.
pub fn check_syntax(file: &IacFile) -> Result<(), RenderError> {
    match file.engine {
        Engine::Jinja => jinja::check(&file.path, &file.source),
        Engine::Handlebars => handlebars_engine::check(&file.path, &file.source),
        Engine::Hcl => Ok(()),
    }
}

/// Checks one file of a template release when it is registered: its syntax, then a trial
/// render within the render bounds, with the schema's defaults and placeholders for required
/// inputs without one (by type: `"x"`, `1`, `true`, `[]`, `{}`) and for every output the file
/// names (`outputs.NAME`). Only a bound violation ([`RenderError::Bound`],
/// [`RenderError::TooDeep`]) refuses the file: an ordinary error of the trial render may come
/// from the placeholders, and is reported at deploy time with the real inputs if it is real.
pub fn check_release_file(bundle: &Bundle, file: &IacFile) -> Result<(), RenderError> {
    check_syntax(file)?;
    if file.engine == Engine::Hcl {
        return Ok(());
    }
    match render_file(file, &trial_context(bundle, file)) {
        Err(e @ (RenderError::Bound { .. } | RenderError::TooDeep { .. })) => Err(e),
        _ => Ok(()),
    }
}

/// The context of a trial render of `file` (see [`check_release_file`]).
fn trial_context(bundle: &Bundle, file: &IacFile) -> Value {
    let inputs = |kind: InputKind| trial_inputs(&bundle.schema, kind);
    let outputs: BTreeMap<String, String> = output_names(&file.source)
        .into_iter()
        .map(|n| (n, "placeholder".to_string()))
        .collect();
    let environment = EnvironmentInfo {
        name: "trial".into(),
        inputs: inputs(InputKind::Environment),
        outputs: outputs.clone(),
        account_id: "123456789012".into(),
    };
    let service = ServiceInfo {
        name: "trial".into(),
        branch_name: Some("main".into()),
        repository_id: Some("trial/trial".into()),
        repository_connection_arn: Some(
            "arn:aws:codestar-connections:us-east-1:123456789012:connection/trial".into(),
        ),
    };
    let instance = InstanceInfo {
        name: "trial".into(),
        inputs: inputs(InputKind::Service),
        outputs: outputs.clone(),
        environment: environment.clone(),
        component_outputs: outputs,
    };
    match bundle.kind {
        TemplateKind::Environment => environment_context(&environment),
        TemplateKind::Service if file.path.starts_with("pipeline_infrastructure/") => {
            pipeline_context(&service, &inputs(InputKind::Pipeline), &[instance])
        }
        TemplateKind::Service => instance_context(&service, &instance),
    }
}

/// The schema's defaults, with a placeholder for each required input without one.
fn trial_inputs(schema: &Schema, kind: InputKind) -> Value {
    let mut given = serde_json::Map::new();
    for p in schema.properties(kind) {
        if p.required && p.default.is_none() {
            let placeholder = match p.type_name.as_str() {
                "number" | "integer" => json!(1),
                "boolean" => json!(true),
                "array" => json!([]),
                "object" => json!({}),
                _ => json!("x"),
            };
            given.insert(p.name, placeholder);
        }
    }
    let given = Value::Object(given);
    // A placeholder may break a pattern or a minimum: then the defaults are filled in by hand.
    schema.validate(kind, &given, "").unwrap_or_else(|_| {
        let mut all = given.as_object().cloned().unwrap_or_default();
        for p in schema.properties(kind) {
            if let Some(d) = p.default {
                all.entry(p.name).or_insert(d);
            }
        }
        Value::Object(all)
    })
}

/// The names a template reads as `outputs.NAME` or `outputs["NAME"]`.
fn output_names(source: &str) -> BTreeSet<String> {
    static RE: std::sync::OnceLock<Option<regex::Regex>> = std::sync::OnceLock::new();
    let Some(re) = RE
        .get_or_init(|| regex::Regex::new(r#"outputs(?:\.|\[\s*["'])([A-Za-z0-9_-]+)"#).ok())
        .as_ref()
    else {
        return BTreeSet::new();
    };
    re.captures_iter(source)
        .filter_map(|c| c.get(1).map(|m| m.as_str().to_string()))
        .collect()
}

/// Renders one `IaC` file with `ctx`. `CloudFormation` output is checked by the guard.
pub fn render_file(file: &IacFile, ctx: &Value) -> Result<String, RenderError> {
    render_file_parsed(file, ctx).map(|(text, _)| text)
}

/// The parse of a rendered `CloudFormation` document in canonical JSON, as the rendered hash
/// reads it: `serde_json::to_string` of the guard's parse, or `None` when JSON cannot write
/// that parse (a key that is null, a list or a mapping; the hash then reads the text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalJson(Option<Vec<u8>>);

impl CanonicalJson {
    /// The canonical JSON of `parse`.
    #[must_use]
    pub fn of(parse: &serde_yaml::Value) -> Self {
        Self(serde_json::to_vec(parse).ok())
    }

    /// JSON text already written as `serde_json` writes the parse.
    pub(crate) fn from_json(text: Vec<u8>) -> Self {
        Self(Some(text))
    }

    /// The JSON text's bytes (UTF-8), or `None` when the parse has none.
    #[must_use]
    pub fn as_bytes(&self) -> Option<&[u8]> {
        self.0.as_deref()
    }
}

/// [`render_file`], also returning the guard's parse of a rendered `CloudFormation` document
/// in canonical JSON (`None` for other languages), so that the rendered hash need not parse
/// it again.
pub fn render_file_parsed(
    file: &IacFile,
    ctx: &Value,
) -> Result<(String, Option<CanonicalJson>), RenderError> {
    if has_reserved_anywhere(ctx)
        && let Some(path) = find_reserved(ctx, &mut Vec::new())
    {
        return Err(RenderError::Reserved {
            file: file.path.clone(),
            path,
        });
    }
    let marked = match file.engine {
        Engine::Jinja => jinja::render(&file.path, &file.source, ctx)?,
        Engine::Handlebars => handlebars_engine::render(&file.path, &file.source, ctx)?,
        Engine::Hcl => return Ok((file.source.clone(), None)),
    };
    let marked = guard::apply_indent_blocks(marked);
    match file.language {
        Language::Cloudformation => guard::check_yaml_canonical(&marked)
            .map(|(text, parsed)| (text, Some(parsed)))
            .map_err(|e| match e {
                guard::GuardError::NotYaml { message } => RenderError::NotYaml {
                    file: file.path.clone(),
                    message,
                },
                guard::GuardError::TooDeep { line, limit } => RenderError::TooDeep {
                    file: file.path.clone(),
                    line,
                    limit,
                },
                guard::GuardError::Injection { at, value } => RenderError::Injection {
                    file: file.path.clone(),
                    at,
                    value,
                },
            }),
        Language::Terraform => Ok((guard::strip(&marked), None)),
    }
}

/// Renders a Jinja file with the daemon's engine (compiled template cache, bounds, time
/// budget, printed values marked) but neither the reserved-character check nor the guard:
/// the engine's own cost, for `benches/render.rs`. Returns the marked text.
#[doc(hidden)]
pub fn render_jinja_unguarded(file: &IacFile, ctx: &Value) -> Result<String, RenderError> {
    jinja::render(&file.path, &file.source, ctx)
}

/// Whether any string or key of `v` holds a reserved character: the check of every render,
/// which builds no path ([`find_reserved`] names the first one).
fn has_reserved_anywhere(v: &Value) -> bool {
    match v {
        Value::String(s) => guard::has_reserved(s),
        Value::Array(items) => items.iter().any(has_reserved_anywhere),
        Value::Object(map) => map
            .iter()
            .any(|(k, item)| guard::has_reserved(k) || has_reserved_anywhere(item)),
        _ => false,
    }
}

fn find_reserved(v: &Value, path: &mut Vec<String>) -> Option<String> {
    match v {
        Value::String(s) if guard::has_reserved(s) => Some(path.join(".")),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            path.push(format!("[{i}]"));
            let r = find_reserved(item, path);
            path.pop();
            r
        }),
        Value::Object(map) => map.iter().find_map(|(k, item)| {
            if guard::has_reserved(k) {
                return Some(format!("{}.{k}", path.join(".")));
            }
            path.push(k.clone());
            let r = find_reserved(item, path);
            path.pop();
            r
        }),
        _ => None,
    }
}

/// What the context knows of an environment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EnvironmentInfo {
    /// Environment name.
    pub name: String,
    /// Validated inputs (with defaults).
    pub inputs: Value,
    /// Outputs of the deployed environment stack.
    pub outputs: BTreeMap<String, String>,
    /// AWS account id the environment lives in.
    pub account_id: String,
}

/// What the context knows of a service.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServiceInfo {
    /// Service name.
    pub name: String,
    /// Source branch of the service's code; undefined for templates when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch_name: Option<String>,
    /// Source repository id (`owner/repo`); undefined for templates when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository_id: Option<String>,
    /// Source connection ARN, for pipelines; undefined for templates when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository_connection_arn: Option<String>,
}

/// A rendered or deployed instance, as seen by its pipeline.
#[derive(Debug, Clone, Default)]
pub struct InstanceInfo {
    /// Instance name.
    pub name: String,
    /// Validated inputs.
    pub inputs: Value,
    /// Outputs of the instance stack.
    pub outputs: BTreeMap<String, String>,
    /// The instance's environment.
    pub environment: EnvironmentInfo,
    /// Outputs of the attached component, if any.
    pub component_outputs: BTreeMap<String, String>,
}

fn environment_value(env: &EnvironmentInfo) -> Value {
    json!({
        "name": env.name,
        "inputs": env.inputs,
        "outputs": env.outputs,
        "account_id": env.account_id,
    })
}

fn instance_value(service: &ServiceInfo, inst: &InstanceInfo) -> Value {
    json!({
        "name": inst.name,
        "inputs": inst.inputs,
        "outputs": inst.outputs,
        "environment": environment_value(&inst.environment),
        "service": {"name": service.name},
        "components": {"default": {"outputs": inst.component_outputs}},
    })
}

/// The context of an environment's `infrastructure/` files.
#[must_use]
pub fn environment_context(env: &EnvironmentInfo) -> Value {
    json!({ "environment": environment_value(env) })
}

/// The context of a service instance's `instance_infrastructure/` files.
#[must_use]
pub fn instance_context(service: &ServiceInfo, inst: &InstanceInfo) -> Value {
    json!({
        "environment": environment_value(&inst.environment),
        "service": service,
        "service_instance": instance_value(service, inst),
    })
}

/// The context of a service's `pipeline_infrastructure/` files.
#[must_use]
pub fn pipeline_context(
    service: &ServiceInfo,
    inputs: &Value,
    instances: &[InstanceInfo],
) -> Value {
    json!({
        "service": service,
        "pipeline": {"inputs": inputs},
        "service_instances": instances.iter().map(|i| instance_value(service, i)).collect::<Vec<_>>(),
    })
}

/// The context of a directly defined component attached to `inst`.
#[must_use]
pub fn component_context(
    service: &ServiceInfo,
    inst: &InstanceInfo,
    component_name: &str,
    inputs: &Value,
) -> Value {
    json!({
        "environment": environment_value(&inst.environment),
        "service": service,
        "service_instance": instance_value(service, inst),
        "component": {"name": component_name, "inputs": inputs},
    })
}

#[cfg(test)]
mod tests;
