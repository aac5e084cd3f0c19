//! Desired state as written by people: environment and service spec files.
//!
//! A spec file is Proton's own spec (`proton: EnvironmentSpec` / `proton: ServiceSpec`) plus a
//! small header naming the resource and its template (Proton kept those in its API; here
//! they live in git). Proton's header-less form is accepted too, with the template given
//! separately. This module parses and checks one file at a time; it never reads git and never
//! validates inputs against a schema (the caller does, with the template at hand). Templates
//! the config gives header-less files are applied by [`templates`].

use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;

use crate::catalog::check_relative_path;

pub mod templates;

/// Largest spec file accepted, in bytes.
pub const MAX_SPEC_BYTES: usize = 1024 * 1024;

/// A problem with a spec file: the file, the field, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {field}: {message}")]
pub struct SpecError {
    /// The spec file (path in its repo).
    pub file: String,
    /// The field, e.g. `instances[1].environment`, or `.` for the whole file.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// Which template (and how strictly) a resource follows.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateRef {
    /// Template name.
    pub name: String,
    /// Major version followed.
    pub major: u32,
    /// When set, pins this exact minor: no automatic minor updates.
    #[serde(default)]
    pub minor: Option<u32>,
}

impl fmt::Display for TemplateRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.minor {
            Some(minor) => write!(f, "{} v{}.{minor}", self.name, self.major),
            None => write!(f, "{} v{}", self.name, self.major),
        }
    }
}

/// A spec's inputs (its `spec:` block), kept as their JSON text and read when a rendering
/// or a check needs them.
///
/// The daemon keeps every spec of the fleet between cycles, and renders a declaration only
/// when something it reads changed: as a value, one instance's few inputs held a map node of
/// about 0.6 KiB (30 MB at 50,000 instances); as text they take their length. The text is
/// the value's own JSON (keys in order), which reads back to the same value.
#[derive(Clone, PartialEq, Eq)]
pub struct SpecInputs(Box<str>);

impl SpecInputs {
    /// The inputs `value` holds.
    #[must_use]
    pub fn new(value: &serde_json::Value) -> Self {
        // Serializing a JSON value cannot fail (its keys are strings).
        Self(serde_json::to_string(value).unwrap_or_default().into())
    }

    /// The inputs, as a value.
    #[must_use]
    pub fn value(&self) -> serde_json::Value {
        // The text is a value's own JSON: it reads back (`Null` only were it not).
        serde_json::from_str(&self.0).unwrap_or_default()
    }

    /// The inputs' JSON text.
    #[must_use]
    pub fn as_json(&self) -> &str {
        &self.0
    }
}

impl From<serde_json::Value> for SpecInputs {
    fn from(value: serde_json::Value) -> Self {
        Self::new(&value)
    }
}

impl std::fmt::Debug for SpecInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `proton: EnvironmentSpec`.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvironmentSpec {
    /// Environment name.
    pub name: String,
    /// Template followed; `None` in Proton's header-less form.
    pub template: Option<TemplateRef>,
    /// Rollout stage, e.g. `dev`, `staging`, `prod`.
    pub stage: Option<String>,
    /// Spec repos allowed to deploy services here; `None` means any.
    pub allowed_service_repos: Option<Vec<String>>,
    /// AWS account id, when known.
    pub account_id: Option<String>,
    /// Role to assume for deployments into this environment.
    pub role_arn: Option<String>,
    /// Inputs (the `spec:` block).
    pub inputs: SpecInputs,
    /// Set for a customer-managed environment (Proton's `CUSTOMER_MANAGED` provisioning):
    /// protond never deploys it; instances read the outputs given here.
    pub customer_managed: Option<CustomerManaged>,
}

/// A customer-managed environment's outputs: given in the spec, read from an existing
/// `CloudFormation` stack (`DescribeStacks`), or both (the given ones win).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerManaged {
    /// Outputs given in the spec, by key.
    #[serde(default)]
    pub outputs: std::collections::BTreeMap<String, String>,
    /// The name or ARN of an existing stack whose outputs the environment has, read in the
    /// environment's account (its `role_arn`) and the configured region.
    #[serde(default)]
    pub stack: Option<String>,
}

/// A directly defined component attached to a service instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentRef {
    /// Component name.
    pub name: String,
    /// Folder in the spec repo holding `manifest.yaml` and the `IaC` file.
    pub path: String,
}

/// One service instance.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceSpec {
    /// Instance name.
    pub name: String,
    /// Environment it deploys into.
    pub environment: String,
    /// Inputs (the `spec:` block).
    pub inputs: SpecInputs,
    /// Attached component, if any.
    pub component: Option<ComponentRef>,
}

/// `proton: ServiceSpec`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    /// Service name.
    pub name: String,
    /// Template followed; `None` in Proton's header-less form.
    pub template: Option<TemplateRef>,
    /// Pipeline inputs, when the spec has a `pipeline:` block.
    pub pipeline: Option<serde_json::Value>,
    /// The service's instances, one per environment it runs in.
    pub instances: Vec<InstanceSpec>,
    /// Start the service's `CodePipeline` pipeline after an instance deploys.
    pub start_pipeline_on_deploy: bool,
    /// The service's source code repository, as Proton's `CreateService` took it.
    pub source: SourceRepo,
}

/// A service's source code repository: `service.repository_id`, `service.branch_name` and
/// `service.repository_connection_arn` in the rendering context (Proton's `CreateService`
/// `repositoryId`, `branchName` and `repositoryConnectionArn`). Each is optional: a template
/// that uses one the spec does not give fails to render, naming the spec and the field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceRepo {
    /// `repository_id:`, e.g. `acme/payments`.
    pub repository_id: Option<String>,
    /// `branch_name:`, e.g. `main`.
    pub branch_name: Option<String>,
    /// `repository_connection_arn:`, the `CodeStar` connection to the repository.
    pub repository_connection_arn: Option<String>,
}

/// A parsed spec file.
#[derive(Debug, Clone, PartialEq)]
pub enum SpecFile {
    /// An environment.
    Environment(EnvironmentSpec),
    /// A service and its instances.
    Service(ServiceSpec),
}

impl SpecFile {
    /// The resource name.
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            Self::Environment(e) => &e.name,
            Self::Service(s) => &s.name,
        }
    }

    /// The template header, if any.
    #[must_use]
    pub fn template(&self) -> Option<&TemplateRef> {
        match self {
            Self::Environment(e) => e.template.as_ref(),
            Self::Service(s) => s.template.as_ref(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    name: String,
    path: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstance {
    name: String,
    environment: String,
    #[serde(default)]
    spec: Option<serde_yaml::Value>,
    #[serde(default)]
    component: Option<RawComponent>,
}

#[derive(Deserialize)]
#[serde(tag = "proton", deny_unknown_fields)]
enum RawSpec {
    EnvironmentSpec {
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        template: Option<TemplateRef>,
        #[serde(default)]
        stage: Option<String>,
        #[serde(default)]
        allowed_service_repos: Option<Vec<String>>,
        #[serde(default)]
        account_id: Option<String>,
        #[serde(default)]
        role_arn: Option<String>,
        #[serde(default)]
        spec: Option<serde_yaml::Value>,
        #[serde(default)]
        customer_managed: Option<CustomerManaged>,
    },
    ServiceSpec {
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        template: Option<TemplateRef>,
        #[serde(default)]
        pipeline: Option<serde_yaml::Value>,
        #[serde(default)]
        instances: Vec<RawInstance>,
        #[serde(default)]
        start_pipeline_on_deploy: bool,
        #[serde(default)]
        repository_id: Option<String>,
        #[serde(default)]
        branch_name: Option<String>,
        #[serde(default)]
        repository_connection_arn: Option<String>,
    },
}

/// Whether `name` is a valid Proton resource name: letters, digits, `-` and `_`, starting
/// with a letter or digit, at most 100 characters.
#[must_use]
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Converts YAML inputs to JSON, rejecting what JSON cannot hold (non-string keys, tags).
/// Marks a value a protond upgrade pull request could not fill in: a spec holding it fails
/// validation until someone replaces it.
pub const PLACEHOLDER: &str = "FILL-ME(protond)";

fn find_placeholders(v: &serde_json::Value, at: &str, found: &mut dyn FnMut(String)) {
    match v {
        serde_json::Value::String(s) if s.starts_with(PLACEHOLDER) => found(at.to_string()),
        serde_json::Value::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                find_placeholders(x, &format!("{at}[{i}]"), found);
            }
        }
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                find_placeholders(x, &format!("{at}.{k}"), found);
            }
        }
        _ => {}
    }
}

fn to_json(
    value: Option<serde_yaml::Value>,
    file: &str,
    field: &str,
    errors: &mut Vec<SpecError>,
) -> serde_json::Value {
    let Some(value) = value else {
        return serde_json::Value::Object(serde_json::Map::new());
    };
    if value.is_null() {
        return serde_json::Value::Object(serde_json::Map::new());
    }
    match serde_json::to_value(&value) {
        Ok(v @ serde_json::Value::Object(_)) => {
            find_placeholders(&v, field, &mut |at| {
                errors.push(SpecError {
                    file: file.into(),
                    field: at,
                    message: format!(
                        "still holds the placeholder {PLACEHOLDER:?} left by a protond upgrade pull request; replace it with a real value (see the comment beside it and the pull request)"
                    ),
                });
            });
            v
        }
        Ok(_) => {
            errors.push(SpecError {
                file: file.into(),
                field: field.into(),
                message: "must be a mapping of input names to values".into(),
            });
            serde_json::Value::Null
        }
        Err(e) => {
            errors.push(SpecError {
                file: file.into(),
                field: field.into(),
                message: format!("cannot be used as inputs: {e}"),
            });
            serde_json::Value::Null
        }
    }
}

/// A customer-managed environment says where its outputs come from: outputs, a stack, or both.
fn check_customer_managed(file: &str, c: &CustomerManaged, errors: &mut Vec<SpecError>) {
    let err = |field: &str, message: String| SpecError {
        file: file.into(),
        field: field.into(),
        message,
    };
    if c.outputs.is_empty() && c.stack.is_none() {
        errors.push(err(
            "customer_managed",
            "gives neither `outputs` nor `stack`; give the environment's outputs (`outputs: {VpcId: vpc-0abc}`) or the existing stack to read them from (`stack: my-network`)".into(),
        ));
    }
    if let Some(stack) = &c.stack
        && (stack.is_empty()
            || stack.len() > 2048
            || stack
                .chars()
                .any(|ch| ch.is_control() || ch.is_whitespace()))
    {
        errors.push(err(
            "customer_managed.stack",
            format!("{stack:?} is not a stack name or ARN"),
        ));
    }
    for key in c.outputs.keys() {
        if key.is_empty()
            || !key
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        {
            errors.push(err(
                &format!("customer_managed.outputs.{key}"),
                "output keys are letters, digits and '_' (as CloudFormation output keys)".into(),
            ));
        }
    }
}

/// A service's source repository fields, each checked against Proton's limits
/// (`CreateService`: 1..=200 characters for the id and branch, an ARN for the connection).
fn source_repo(
    file: &str,
    repository_id: Option<String>,
    branch_name: Option<String>,
    repository_connection_arn: Option<String>,
    errors: &mut Vec<SpecError>,
) -> SourceRepo {
    let mut check = |field: &str, v: &Option<String>, what: &str| {
        if let Some(v) = v
            && (v.is_empty() || v.len() > 200 || v.chars().any(char::is_control))
        {
            errors.push(SpecError {
                file: file.into(),
                field: field.into(),
                message: format!(
                    "{v:?} is not a valid {what}: give 1 to 200 characters without line breaks, or remove the field"
                ),
            });
        }
    };
    check(
        "repository_id",
        &repository_id,
        "repository id (e.g. `acme/payments`)",
    );
    check("branch_name", &branch_name, "branch name (e.g. `main`)");
    check(
        "repository_connection_arn",
        &repository_connection_arn,
        "connection ARN",
    );
    if let Some(arn) = &repository_connection_arn
        && !arn.starts_with("arn:")
    {
        errors.push(SpecError {
            file: file.into(),
            field: "repository_connection_arn".into(),
            message: format!(
                "{arn:?} is not an ARN; give the connection's ARN (`arn:aws:codestar-connections:REGION:ACCOUNT:connection/ID`)"
            ),
        });
    }
    SourceRepo {
        repository_id,
        branch_name,
        repository_connection_arn,
    }
}

/// The field behind a type error in a document that is valid YAML. serde reports errors in
/// an internally tagged enum without their path, so each top-level field is checked alone.
fn locate_type_error(text: &str) -> Option<(String, String)> {
    use serde_yaml::Value;
    fn check<T: serde::de::DeserializeOwned>(v: &Value) -> Option<String> {
        serde_yaml::from_value::<T>(v.clone())
            .err()
            .map(|e| e.to_string())
    }
    let Ok(Value::Mapping(map)) = crate::catalog::yaml::from_str::<Value>(text) else {
        return None;
    };
    for (k, v) in &map {
        let Some(key) = k.as_str() else { continue };
        let problem = match key {
            "name"
            | "stage"
            | "account_id"
            | "role_arn"
            | "repository_id"
            | "branch_name"
            | "repository_connection_arn" => check::<Option<String>>(v),
            "template" => check::<Option<TemplateRef>>(v),
            "allowed_service_repos" => check::<Option<Vec<String>>>(v),
            "start_pipeline_on_deploy" => check::<bool>(v),
            "customer_managed" => check::<Option<CustomerManaged>>(v),
            "pipeline" | "spec" => match v {
                Value::Mapping(_) | Value::Null => None,
                _ => Some("expected a mapping of inputs".to_string()),
            },
            "instances" => match v {
                Value::Sequence(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let Some(e) = check::<RawInstance>(item) {
                            return Some((format!("instances[{i}]"), e));
                        }
                    }
                    None
                }
                Value::Null => None,
                _ => Some("expected a list of instances (`- name: ...`)".to_string()),
            },
            _ => None,
        };
        if let Some(p) = problem {
            return Some((key.to_string(), p));
        }
    }
    None
}

/// Parses one spec file. `default_name` names the resource when the file has no `name:`
/// (Proton's header-less form); usually the file's stem. Every problem is reported.
pub fn parse(text: &str, file: &str, default_name: &str) -> Result<SpecFile, Vec<SpecError>> {
    let err = |field: &str, message: String| SpecError {
        file: file.to_string(),
        field: field.to_string(),
        message,
    };
    if text.len() > MAX_SPEC_BYTES {
        return Err(vec![err(
            ".",
            format!(
                "file is {} bytes; spec files are limited to {MAX_SPEC_BYTES} bytes",
                text.len()
            ),
        )]);
    }
    let raw: RawSpec = crate::catalog::yaml::from_str(text).map_err(|e| {
        let msg = e.to_string();
        if (msg.contains("invalid type") || msg.contains("invalid value"))
            && let Some((field, message)) = locate_type_error(text)
        {
            return vec![err(&field, message)];
        }
        let hint = if msg.contains("proton") {
            "; the file must start with `proton: EnvironmentSpec` or `proton: ServiceSpec`"
        } else {
            ""
        };
        vec![err(".", format!("{msg}{hint}"))]
    })?;
    let mut errors = Vec::new();
    let check_name = |field: &str, name: &str, errors: &mut Vec<SpecError>| {
        if !is_valid_name(name) {
            errors.push(err(
                field,
                format!(
                    "{name:?} is not a valid name: use letters, digits, '-' and '_', start with a letter or digit, at most 100 characters"
                ),
            ));
        }
    };
    let spec = match raw {
        RawSpec::EnvironmentSpec {
            name,
            template,
            stage,
            allowed_service_repos,
            account_id,
            role_arn,
            spec,
            customer_managed,
        } => {
            let name = name.unwrap_or_else(|| default_name.to_string());
            check_name("name", &name, &mut errors);
            if let Some(t) = &template {
                check_name("template.name", &t.name, &mut errors);
            }
            if let Some(id) = &account_id
                && (id.len() != 12 || !id.chars().all(|c| c.is_ascii_digit()))
            {
                errors.push(err(
                    "account_id",
                    format!("{id:?} is not a 12-digit AWS account id"),
                ));
            }
            let inputs = SpecInputs::new(&to_json(spec, file, "spec", &mut errors));
            if let Some(c) = &customer_managed {
                check_customer_managed(file, c, &mut errors);
            }
            SpecFile::Environment(EnvironmentSpec {
                name,
                template,
                stage,
                allowed_service_repos,
                account_id,
                role_arn,
                inputs,
                customer_managed,
            })
        }
        RawSpec::ServiceSpec {
            name,
            template,
            pipeline,
            instances,
            start_pipeline_on_deploy,
            repository_id,
            branch_name,
            repository_connection_arn,
        } => {
            let name = name.unwrap_or_else(|| default_name.to_string());
            check_name("name", &name, &mut errors);
            if let Some(t) = &template {
                check_name("template.name", &t.name, &mut errors);
            }
            let pipeline = pipeline.map(|p| to_json(Some(p), file, "pipeline", &mut errors));
            let mut seen = BTreeSet::new();
            let mut out = Vec::with_capacity(instances.len());
            for (i, inst) in instances.into_iter().enumerate() {
                let field = format!("instances[{i}]");
                check_name(&format!("{field}.name"), &inst.name, &mut errors);
                check_name(
                    &format!("{field}.environment"),
                    &inst.environment,
                    &mut errors,
                );
                if !seen.insert(inst.name.clone()) {
                    errors.push(err(
                        &format!("{field}.name"),
                        format!(
                            "instance {:?} is declared twice; instance names must be unique within a service",
                            inst.name
                        ),
                    ));
                }
                let inputs = SpecInputs::new(&to_json(
                    inst.spec,
                    file,
                    &format!("{field}.spec"),
                    &mut errors,
                ));
                let component = inst.component.and_then(|c| {
                    check_name(&format!("{field}.component.name"), &c.name, &mut errors);
                    match check_relative_path(&c.path) {
                        Ok(path) => Some(ComponentRef { name: c.name, path }),
                        Err(e) => {
                            errors.push(err(&format!("{field}.component.path"), e.to_string()));
                            None
                        }
                    }
                });
                out.push(InstanceSpec {
                    name: inst.name,
                    environment: inst.environment,
                    inputs,
                    component,
                });
            }
            if start_pipeline_on_deploy && pipeline.is_none() {
                errors.push(err(
                    "start_pipeline_on_deploy",
                    "is set, but the service has no `pipeline:` block; add one or remove the flag"
                        .into(),
                ));
            }
            SpecFile::Service(ServiceSpec {
                name,
                template,
                pipeline,
                instances: out,
                start_pipeline_on_deploy,
                source: source_repo(
                    file,
                    repository_id,
                    branch_name,
                    repository_connection_arn,
                    &mut errors,
                ),
            })
        }
    };
    if errors.is_empty() {
        Ok(spec)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_header_form_service() {
        let text = "proton: ServiceSpec\nname: payments\ntemplate: {name: fargate-svc, major: 1}\npipeline: {dockerfile: Dockerfile}\ninstances:\n  - name: payments-dev\n    environment: dev\n    spec: {port: 8080}\n    component: {name: bucket, path: components/bucket}\n";
        let SpecFile::Service(s) =
            parse(text, "proton/services/payments.yaml", "x").expect("parses")
        else {
            panic!("expected a service")
        };
        assert_eq!(s.name, "payments");
        assert_eq!(
            s.template,
            Some(TemplateRef {
                name: "fargate-svc".into(),
                major: 1,
                minor: None
            })
        );
        assert_eq!(s.instances[0].inputs.value()["port"], 8080);
        assert_eq!(
            s.pipeline.as_ref().map(|p| p["dockerfile"].clone()),
            Some("Dockerfile".into())
        );
        assert_eq!(
            s.instances[0].component.as_ref().map(|c| c.path.as_str()),
            Some("components/bucket")
        );
    }

    #[test]
    fn inputs_kept_as_text_read_back_to_the_value_yaml_gives() {
        // Every kind of scalar, nesting, key order, unicode and numbers at their edges.
        let block = "spec:\n      zeta: 1\n      alpha: {b: [1, 2.5, -3], a: null}\n      big: 18446744073709551615\n      neg: -9223372036854775808\n      tiny: 1.0e-300\n      huge: 1.7976931348623157e308\n      third: 0.1\n      flag: true\n      word: \"caf\u{e9} \\\"q\\\" \\u0001\"\n      list: [{x: y}, [], {}]\n";
        let text = format!(
            "proton: ServiceSpec\nname: s\ntemplate: {{name: t, major: 1}}\ninstances:\n  - name: i\n    environment: dev\n    {block}"
        );
        let SpecFile::Service(s) = parse(&text, "s.yaml", "s").expect("parses") else {
            panic!("a service spec");
        };
        let yaml: serde_yaml::Value =
            serde_yaml::from_str(&block.replace("\n      ", "\n  ")).expect("yaml");
        let expected = serde_json::to_value(&yaml["spec"]).expect("json");
        let kept = &s.instances[0].inputs;
        assert_eq!(kept.value(), expected);
        assert_eq!(kept.value()["big"], serde_json::json!(u64::MAX));
        assert_eq!(kept.value()["tiny"], serde_json::json!(1.0e-300));
        // The text is the value's own JSON: equal inputs are equal texts.
        assert_eq!(
            kept.as_json(),
            serde_json::to_string(&expected).expect("text")
        );
        assert_eq!(SpecInputs::new(&expected), *kept);
    }

    #[test]
    fn header_less_form_takes_default_name() {
        let text = "proton: EnvironmentSpec\nspec:\n  vpc_cidr: 10.0.0.0/16\n";
        let spec = parse(text, "spec.yaml", "fargate-env-prod").expect("parses");
        assert_eq!(spec.name(), "fargate-env-prod");
        assert!(spec.template().is_none());
    }

    #[test]
    fn reports_every_problem_with_its_field() {
        let text = "proton: ServiceSpec\nname: 'bad name'\ninstances:\n  - name: a\n    environment: dev\n  - name: a\n    environment: 'd v'\n    component: {name: c, path: ../../etc}\n";
        let errs = parse(text, "svc.yaml", "x").expect_err("invalid");
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"name"), "{errs:?}");
        assert!(fields.contains(&"instances[1].name"), "{errs:?}");
        assert!(fields.contains(&"instances[1].environment"), "{errs:?}");
        assert!(fields.contains(&"instances[1].component.path"), "{errs:?}");
        assert!(errs.iter().all(|e| e.file == "svc.yaml"));
    }

    #[test]
    fn unknown_field_and_kind_are_errors() {
        let errs = parse("proton: ServiceSpec\ninstance: []\n", "a.yaml", "a").expect_err("bad");
        assert!(errs[0].message.contains("unknown field"), "{errs:?}");
        let errs = parse("proton: Widget\n", "b.yaml", "b").expect_err("bad");
        assert!(errs[0].message.contains("Widget"), "{errs:?}");
        let errs = parse("name: x\n", "c.yaml", "c").expect_err("bad");
        assert!(errs[0].message.contains("proton"), "{errs:?}");
    }

    #[test]
    fn inputs_must_be_a_mapping_and_size_is_bounded() {
        let errs =
            parse("proton: EnvironmentSpec\nspec: [1, 2]\n", "e.yaml", "e").expect_err("bad");
        assert_eq!(errs[0].field, "spec");
        let huge = format!(
            "proton: EnvironmentSpec\nspec:\n  a: '{}'\n",
            "x".repeat(MAX_SPEC_BYTES)
        );
        let errs = parse(&huge, "h.yaml", "h").expect_err("too big");
        assert!(errs[0].message.contains("limited"), "{errs:?}");
    }

    #[test]
    fn type_errors_name_their_field() {
        let cases = [
            (
                "proton: ServiceSpec\nname: a\ninstances: {a: b}\n",
                "instances",
            ),
            (
                "proton: ServiceSpec\nname: a\ninstances:\n  - name: x\n    environment: [dev]\n",
                "instances[0]",
            ),
            (
                "proton: EnvironmentSpec\nname: a\nallowed_service_repos: payments\n",
                "allowed_service_repos",
            ),
            (
                "proton: ServiceSpec\nname: a\ntemplate: {name: t, major: one}\n",
                "template",
            ),
        ];
        for (text, field) in cases {
            let errs = parse(text, "s.yaml", "s").expect_err("invalid");
            assert_eq!(errs[0].field, field, "{errs:?}");
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!(
            "proton: EnvironmentSpec\nspec:\n  a: {}{}\n",
            "[".repeat(5000),
            "]".repeat(5000)
        );
        assert!(parse(&deep, "d.yaml", "d").is_err());
    }

    #[test]
    fn service_names_its_source_repository() {
        let text = "proton: ServiceSpec\nname: a\nrepository_id: acme/a\nbranch_name: release\nrepository_connection_arn: arn:aws:codestar-connections:us-east-1:123456789012:connection/x\n";
        let SpecFile::Service(s) = parse(text, "a.yaml", "a").expect("parses") else {
            panic!("expected a service")
        };
        assert_eq!(s.source.repository_id.as_deref(), Some("acme/a"));
        assert_eq!(s.source.branch_name.as_deref(), Some("release"));
        assert!(s.source.repository_connection_arn.is_some());
        let SpecFile::Service(s) =
            parse("proton: ServiceSpec\nname: a\n", "a.yaml", "a").expect("parses")
        else {
            panic!("expected a service")
        };
        assert_eq!(s.source, SourceRepo::default());
        let errs = parse(
            "proton: ServiceSpec\nname: a\nbranch_name: ''\nrepository_connection_arn: conn\n",
            "a.yaml",
            "a",
        )
        .expect_err("invalid");
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["branch_name", "repository_connection_arn"],
            "{errs:?}"
        );
        let errs = parse(
            "proton: ServiceSpec\nname: a\nbranch_name: [x]\n",
            "a.yaml",
            "a",
        )
        .expect_err("invalid");
        assert_eq!(errs[0].field, "branch_name", "{errs:?}");
    }

    #[test]
    fn customer_managed_environments_give_outputs_or_a_stack() {
        let text = "proton: EnvironmentSpec\nname: legacy\ntemplate: {name: basic-env, major: 1}\ncustomer_managed:\n  stack: legacy-network\n  outputs: {TopicArn: 'arn:aws:sns:us-east-1:111122223333:t'}\n";
        let SpecFile::Environment(e) = parse(text, "e.yaml", "x").expect("parses") else {
            panic!("expected an environment")
        };
        let c = e.customer_managed.expect("customer-managed");
        assert_eq!(c.stack.as_deref(), Some("legacy-network"));
        assert_eq!(c.outputs.len(), 1);
        let errs = parse(
            "proton: EnvironmentSpec\nname: a\ncustomer_managed: {}\n",
            "e.yaml",
            "a",
        )
        .expect_err("neither");
        assert_eq!(errs[0].field, "customer_managed", "{errs:?}");
        let errs = parse(
            "proton: EnvironmentSpec\nname: a\ncustomer_managed: {outputs: {'a b': x}}\n",
            "e.yaml",
            "a",
        )
        .expect_err("bad key");
        assert_eq!(errs[0].field, "customer_managed.outputs.a b", "{errs:?}");
        let errs = parse(
            "proton: EnvironmentSpec\nname: a\ncustomer_managed: {stack: s, state: x}\n",
            "e.yaml",
            "a",
        )
        .expect_err("unknown field");
        assert!(
            errs[0].message.contains("unknown field `state`"),
            "{errs:?}"
        );
    }

    #[test]
    fn pinned_minor_is_kept() {
        let text = "proton: EnvironmentSpec\nname: prod\ntemplate: {name: net, major: 2, minor: 3}\nstage: prod\naccount_id: '123456789012'\n";
        let SpecFile::Environment(e) = parse(text, "e.yaml", "x").expect("parses") else {
            panic!("expected an environment")
        };
        assert_eq!(e.template.and_then(|t| t.minor), Some(3));
        assert_eq!(e.stage.as_deref(), Some("prod"));
    }
}
