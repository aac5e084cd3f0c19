//! Self-managed provisioning for `template_language: terraform`, as AWS Proton did it.
//!
//! protond does not run Terraform. It writes the template's `.tf` files, plus the input files
//! Proton generated, into an infrastructure repo at Proton's folder layout, on a branch with
//! a pull request. The repo's own automation (the workflows written for Proton keep working)
//! plans on the pull request, applies on merge, and reports back with `protond notify` or
//! `POST /api/v1/notify`. Until then the deployment stays in progress; the outputs reported
//! then flow to dependants exactly like `CloudFormation` outputs.
//!
//! Layout and file names follow what Proton committed (Proton's "Repository paths", both of
//! its layouts, and the `pipeline/<service>` folder of AWS's own Proton workflow sample):
//!
//! | Resource | Folder (`root` layout) | `environments` layout | Variables file |
//! |---|---|---|---|
//! | environment | `<env>/` | `environments/<env>/` | `proton.environment.variables.tf` |
//! | service instance | `<env>/<service>-<instance>/` | `environments/<env>/<service>-<instance>/` | `proton.service_instance.variables.tf` |
//! | pipeline | `pipeline/<service>/` | `pipeline/<service>/` | `proton.pipeline.variables.tf` |
//!
//! Every folder also gets `proton.auto.tfvars.json` (the variables' values, written the way
//! Proton's serializer wrote them: `"key" : value`, inputs keeping their JSON types, and
//! `proton_tags` with the tags Proton put) and `.proton/deployment-metadata.json`
//! (`deploymentId`, `isResourceDeleted`, `resourceMetadata` with Proton-shaped ARNs, so
//! workflows that derive the folder from the ARN still work). A delete commits the metadata
//! with `isResourceDeleted: true` and keeps the `.tf` files, so the automation can destroy.
//!
//! This module never does I/O: it computes names, folders and file contents.

use crate::model::ResourceId;
use serde_json::{Value, json};

pub use crate::config::Layout;

/// The header of generated files.
const MANAGED: &str = "This file is managed by protond (AWS Proton compatible). Changes made directly to it are overwritten at the next deployment.";

/// Which kind of context a Terraform folder was rendered with, from its keys.
fn context_kind(ctx: &Value) -> &'static str {
    if ctx.get("pipeline").is_some() {
        "pipeline"
    } else if ctx.get("service_instance").is_some() {
        "service_instance"
    } else {
        "environment"
    }
}

/// A JSON value whose objects keep the order they are built in (Proton's order).
enum Node {
    /// An object, in this order.
    Obj(Vec<(String, Node)>),
    /// A list.
    List(Vec<Node>),
    /// Anything else, written as it is (objects with sorted keys).
    Leaf(Value),
}

fn obj<const N: usize>(entries: [(&str, Node); N]) -> Node {
    Node::Obj(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

fn leaf(v: &Value) -> Node {
    Node::Leaf(v.clone())
}

fn env_vars(e: &Value) -> Node {
    obj([
        ("account_id", leaf(&e["account_id"])),
        ("name", leaf(&e["name"])),
        ("outputs", leaf(&e["outputs"])),
    ])
}

fn service_vars(ctx: &Value) -> Node {
    let s = &ctx["service"];
    obj([
        ("name", leaf(&s["name"])),
        ("branch_name", leaf(&s["branch_name"])),
        (
            "repository_connection_arn",
            leaf(&s["repository_connection_arn"]),
        ),
        ("repository_id", leaf(&s["repository_id"])),
    ])
}

/// `proton_tags`' declaration, the same in every variables file.
const TAGS_VARIABLE: &str =
    "variable \"proton_tags\" {\n  type    = map(string)\n  default = null\n}\n";

/// The variables file of each kind, as Proton wrote it (after its header comment).
const ENVIRONMENT_VARIABLES: &str = "variable \"environment\" {\n  type = object({\n    inputs = any\n    name   = string\n  })\n  default = null\n}\n";
const INSTANCE_VARIABLES: &str = "variable \"environment\" {\n  type = object({\n    account_id = string\n    name       = string\n    outputs    = map(string)\n  })\n  default = null\n}\n\n\
variable \"service\" {\n  type = object({\n    name                      = string\n    branch_name               = string\n    repository_connection_arn = string\n    repository_id             = string\n  })\n}\n\n\
variable \"service_instance\" {\n  type = object({\n    name       = string\n    inputs     = any\n    components = map(any)\n  })\n  default = null\n}\n";
const PIPELINE_VARIABLES: &str = "variable \"service_instances\" {\n  type = list(\n    object({\n      name    = string\n      inputs  = any\n      outputs = map(string)\n      environment = object({\n        account_id = string\n        name       = string\n        outputs    = map(string)\n      })\n    })\n  )\n}\n\n\
variable \"service\" {\n  type = object({\n    name                      = string\n    branch_name               = string\n    repository_connection_arn = string\n    repository_id             = string\n  })\n  default = null\n}\n\n\
variable \"pipeline\" {\n  type = object({\n    inputs = any\n  })\n  default = null\n}\n";

/// `proton_tags` until [`with_proton_tags`] fills it in, and what it looks for.
const TAGS_PLACEHOLDER: &str = "\n  \"proton_tags\" : { },\n  \"//\" : ";

/// `proton.<kind>.variables.tf` and `proton.auto.tfvars.json` for a rendering context, as
/// (file name, contents). `proton_tags` is empty here (it needs the deployment's ARNs);
/// [`with_proton_tags`] fills it in when the files are committed.
#[must_use]
pub fn generated_files(ctx: &Value) -> Vec<(String, String)> {
    let kind = context_kind(ctx);
    let (variables, values) = match kind {
        "environment" => (
            ENVIRONMENT_VARIABLES,
            vec![(
                "environment",
                obj([
                    ("name", leaf(&ctx["environment"]["name"])),
                    ("inputs", leaf(&ctx["environment"]["inputs"])),
                ]),
            )],
        ),
        "service_instance" => (
            INSTANCE_VARIABLES,
            vec![
                ("environment", env_vars(&ctx["environment"])),
                ("service", service_vars(ctx)),
                (
                    "service_instance",
                    obj([
                        ("name", leaf(&ctx["service_instance"]["name"])),
                        ("inputs", leaf(&ctx["service_instance"]["inputs"])),
                        (
                            "components",
                            Node::Leaf(components(&ctx["service_instance"]["components"])),
                        ),
                    ]),
                ),
            ],
        ),
        _ => (
            PIPELINE_VARIABLES,
            vec![
                (
                    "service_instances",
                    Node::List(
                        ctx["service_instances"]
                            .as_array()
                            .map(|xs| {
                                xs.iter()
                                    .map(|i| {
                                        obj([
                                            ("name", leaf(&i["name"])),
                                            ("inputs", leaf(&i["inputs"])),
                                            ("outputs", leaf(&i["outputs"])),
                                            ("environment", env_vars(&i["environment"])),
                                        ])
                                    })
                                    .collect()
                            })
                            .unwrap_or_default(),
                    ),
                ),
                ("service", service_vars(ctx)),
                (
                    "pipeline",
                    obj([("inputs", leaf(&ctx["pipeline"]["inputs"]))]),
                ),
            ],
        ),
    };
    let mut top: Vec<(String, Node)> = values
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    top.push(("proton_tags".into(), Node::Obj(Vec::new())));
    top.push(("//".into(), Node::Leaf(Value::String(MANAGED.into()))));
    let mut tfvars = String::new();
    write_node(&mut tfvars, &Node::Obj(top), 0);
    vec![
        (
            format!("proton.{kind}.variables.tf"),
            format!("/*\n{MANAGED}\n*/\n\n{variables}\n{TAGS_VARIABLE}"),
        ),
        ("proton.auto.tfvars.json".into(), tfvars),
    ]
}

/// The components block of an instance: each attached component's outputs, as Proton gave
/// them (`service_instance.components.default.outputs`); `{}` without one.
fn components(c: &Value) -> Value {
    match c.as_object() {
        Some(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| {
                    v.get("outputs")
                        .and_then(Value::as_object)
                        .is_some_and(|o| !o.is_empty())
                })
                .map(|(k, v)| (k.clone(), json!({"outputs": v["outputs"]})))
                .collect(),
        ),
        None => json!({}),
    }
}

/// Writes `node` as Jackson's default pretty printer did for Proton: `"key" : value`,
/// two-space indent per object level, `{ }` when empty, lists inline (`[ a, b ]`, `[ ]`),
/// no final newline.
fn write_node(out: &mut String, node: &Node, level: usize) {
    match node {
        Node::Obj(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push('\n');
                out.push_str(&"  ".repeat(level + 1));
                out.push_str(&Value::String(k.clone()).to_string());
                out.push_str(" : ");
                write_node(out, v, level + 1);
            }
            if entries.is_empty() {
                out.push(' ');
            } else {
                out.push('\n');
                out.push_str(&"  ".repeat(level));
            }
            out.push('}');
        }
        Node::List(xs) => {
            out.push_str("[ ");
            for (i, x) in xs.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_node(out, x, level);
            }
            out.push_str(if xs.is_empty() { "]" } else { " ]" });
        }
        Node::Leaf(Value::Object(m)) => write_node(
            out,
            &Node::Obj(m.iter().map(|(k, v)| (k.clone(), leaf(v))).collect()),
            level,
        ),
        Node::Leaf(Value::Array(xs)) => {
            write_node(out, &Node::List(xs.iter().map(leaf).collect()), level);
        }
        Node::Leaf(scalar) => out.push_str(&scalar.to_string()),
    }
}

/// The `proton_tags` Proton put on a resource: `proton:account`, `proton:template` (the
/// template's ARN), and the ARNs of the resource and what it belongs to
/// (`proton:environment`, `proton:service`, `proton:service-instance`).
#[must_use]
pub fn proton_tags(
    resource_id: &str,
    environment: Option<&str>,
    region: &str,
    account: &str,
    template: &str,
) -> Vec<(String, String)> {
    let base = format!("arn:aws:proton:{region}:{account}");
    let mut tags = vec![("proton:account".to_string(), account.to_string())];
    match ResourceId::parse(resource_id) {
        Ok(ResourceId::Environment { name }) => {
            tags.push((
                "proton:template".into(),
                format!("{base}:environment-template/{template}"),
            ));
            tags.push((
                "proton:environment".into(),
                format!("{base}:environment/{name}"),
            ));
        }
        Ok(ResourceId::ServiceInstance { service, instance }) => {
            tags.push((
                "proton:template".into(),
                format!("{base}:service-template/{template}"),
            ));
            if let Some(e) = environment {
                tags.push((
                    "proton:environment".into(),
                    format!("{base}:environment/{e}"),
                ));
            }
            tags.push(("proton:service".into(), format!("{base}:service/{service}")));
            tags.push((
                "proton:service-instance".into(),
                format!("{base}:service/{service}/service-instance/{instance}"),
            ));
        }
        Ok(ResourceId::Pipeline { service }) => {
            tags.push((
                "proton:template".into(),
                format!("{base}:service-template/{template}"),
            ));
            tags.push(("proton:service".into(), format!("{base}:service/{service}")));
        }
        _ => {}
    }
    tags
}

/// `documents` with `proton.auto.tfvars.json`'s `proton_tags` set to `tags` (in the order
/// given); other documents unchanged.
#[must_use]
pub fn with_proton_tags(
    documents: &[(String, String)],
    tags: &[(String, String)],
) -> Vec<(String, String)> {
    let mut block = String::new();
    write_node(
        &mut block,
        &Node::Obj(
            tags.iter()
                .map(|(k, v)| (k.clone(), Node::Leaf(Value::String(v.clone()))))
                .collect(),
        ),
        1,
    );
    let filled = format!("\n  \"proton_tags\" : {block},\n  \"//\" : ");
    documents
        .iter()
        .map(|(path, text)| {
            let is_tfvars = path.rsplit('/').next() == Some("proton.auto.tfvars.json");
            // The placeholder is the last top-level key but one: the last match is it.
            match text.rfind(TAGS_PLACEHOLDER).filter(|_| is_tfvars) {
                Some(at) => {
                    let mut t = text.clone();
                    t.replace_range(at..at + TAGS_PLACEHOLDER.len(), &filled);
                    (path.clone(), t)
                }
                None => (path.clone(), text.clone()),
            }
        })
        .collect()
}

/// Why a resource has no place in the infrastructure repo.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// An instance whose environment is unknown.
    #[error("{resource}: no environment known for the instance")]
    NoEnvironment {
        /// The resource.
        resource: String,
    },
    /// Components are `CloudFormation` only.
    #[error(
        "{resource}: Terraform components are not supported (as in Proton); use CloudFormation for directly defined components"
    )]
    Component {
        /// The resource.
        resource: String,
    },
    /// Not a resource id.
    #[error("{resource}: not a resource id")]
    NotAnId {
        /// The text given.
        resource: String,
    },
}

/// Where a resource's files go in the infrastructure repo; `under_environments` picks
/// Proton's `environments/<env>/` layout.
///
/// # Errors
///
/// For components (Proton never provisioned them this way) and malformed ids.
pub fn folder_for(
    resource_id: &str,
    environment: Option<&str>,
    under_environments: bool,
) -> Result<String, LayoutError> {
    let resource = || resource_id.to_string();
    let prefix = if under_environments {
        "environments/"
    } else {
        ""
    };
    match ResourceId::parse(resource_id) {
        Ok(ResourceId::Environment { name }) => Ok(format!("{prefix}{name}")),
        Ok(ResourceId::ServiceInstance { service, instance }) => {
            let env = environment.ok_or_else(|| LayoutError::NoEnvironment {
                resource: resource(),
            })?;
            Ok(format!("{prefix}{env}/{service}-{instance}"))
        }
        Ok(ResourceId::Pipeline { service }) => Ok(format!("pipeline/{service}")),
        Ok(ResourceId::Component { .. }) => Err(LayoutError::Component {
            resource: resource(),
        }),
        Err(_) => Err(LayoutError::NotAnId {
            resource: resource(),
        }),
    }
}

/// Proton-shaped ARNs for a resource, so workflows written for Proton keep parsing them.
#[must_use]
pub fn arns(
    resource_id: &str,
    environment: Option<&str>,
    region: &str,
    account: &str,
) -> (String, Option<String>) {
    let base = format!("arn:aws:proton:{region}:{account}");
    match ResourceId::parse(resource_id) {
        Ok(ResourceId::Environment { name }) => (format!("{base}:environment/{name}"), None),
        Ok(ResourceId::ServiceInstance { service, instance }) => (
            format!("{base}:service/{service}/service-instance/{instance}"),
            environment.map(|e| format!("{base}:environment/{e}")),
        ),
        Ok(ResourceId::Pipeline { service }) => {
            (format!("{base}:service/{service}/pipeline"), None)
        }
        _ => (format!("{base}:{resource_id}"), None),
    }
}

/// `.proton/deployment-metadata.json`.
#[must_use]
pub fn deployment_metadata(
    deployment_id: i64,
    deleted: bool,
    arn: &str,
    environment_arn: Option<&str>,
    template_arn: &str,
    major: u32,
    minor: u32,
) -> String {
    let mut meta = json!({
        "arn": arn,
        "templateArn": template_arn,
        "templateMajorVersion": major.to_string(),
        "templateMinorVersion": minor.to_string(),
    });
    if let (Some(e), Some(m)) = (environment_arn, meta.as_object_mut()) {
        m.insert("environmentArn".into(), Value::String(e.to_string()));
    }
    serde_json::to_string_pretty(&json!({
        "deploymentId": deployment_id.to_string(),
        "isResourceDeleted": deleted,
        "resourceMetadata": meta,
    }))
    .unwrap_or_default()
        + "\n"
}

/// Why [`parse_outputs`] refused reported outputs: which shape was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutputsError {
    /// An item of Proton's list shape lacks `key` (a string) or `valueString`.
    #[error("outputs[{index}]: expected {{\"key\": …, \"valueString\": …}}")]
    Item {
        /// The item's position in the list.
        index: usize,
    },
    /// The outputs are neither null, a list nor an object.
    #[error(
        "outputs must be an object of strings, [{{\"key\", \"valueString\"}}] or `terraform output -json`"
    )]
    Shape,
}

/// Outputs as reported: a JSON object of strings, Proton's `[{key, valueString}]`, or
/// `terraform output -json` (`{"name": {"value": …}}`).
///
/// # Errors
///
/// An [`OutputsError`] when the JSON has none of these shapes.
pub fn parse_outputs(
    v: &Value,
) -> Result<std::collections::BTreeMap<String, String>, OutputsError> {
    let text = |x: &Value| match x {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut out = std::collections::BTreeMap::new();
    match v {
        Value::Null => {}
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let (Some(k), Some(val)) = (
                    item.get("key").and_then(Value::as_str),
                    item.get("valueString"),
                ) else {
                    return Err(OutputsError::Item { index: i });
                };
                out.insert(k.to_string(), text(val));
            }
        }
        Value::Object(m) => {
            for (k, val) in m {
                let val = match val {
                    Value::Object(o) if o.contains_key("value") => &o["value"],
                    other => other,
                };
                out.insert(k.clone(), text(val));
            }
        }
        _ => {
            return Err(OutputsError::Shape);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files generated for `ctx`, with the tags of `resource` (template `template`),
    /// as (variables file name, variables, tfvars).
    fn generated(
        ctx: &Value,
        resource: &str,
        env: Option<&str>,
        account: &str,
        template: &str,
    ) -> (String, String, String) {
        let tags = proton_tags(resource, env, "us-east-1", account, template);
        let files = with_proton_tags(&generated_files(ctx), &tags);
        assert_eq!(files.len(), 2);
        assert_eq!(files[1].0, "proton.auto.tfvars.json");
        let tfvars = files[1].1.clone();
        // Valid JSON, whatever the layout of its text.
        let _: Value = serde_json::from_str(&tfvars).expect("tfvars is JSON");
        (files[0].0.clone(), files[0].1.clone(), tfvars)
    }

    #[test]
    fn environment_files_match_protons_documented_example() {
        let ctx = json!({"environment": {"name": "dev", "inputs": {"ssm_parameter_value": "MyNewParamValue"}, "outputs": {}, "account_id": "123456789012"}});
        let (name, variables, tfvars) = generated(
            &ctx,
            "environment/dev",
            Some("dev"),
            "123456789012",
            "fargate-env",
        );
        assert_eq!(name, "proton.environment.variables.tf");
        assert_eq!(
            variables,
            include_str!("testdata/terraform/environment.variables.tf")
        );
        assert_eq!(
            tfvars,
            include_str!("testdata/terraform/environment.tfvars.json")
        );
    }

    #[test]
    fn instance_files_match_proton_with_typed_inputs() {
        let ctx = json!({
            "environment": {"name": "blog_post_prod", "inputs": {"x": 1}, "account_id": "617296401743",
                "outputs": {"subnet_ids": "subnet-0e7c22c51f77a6da7", "security_group_id": "sg-04c716f42dd30a4c0"}},
            "service": {"name": "blog_post_lambdas", "branch_name": "main", "repository_id": "acme/blog",
                "repository_connection_arn": "arn:aws:codestar-connections:us-east-1:617296401743:connection/abc"},
            "service_instance": {"name": "blog_post_lambda_prod", "outputs": {},
                "inputs": {"function_name": "blog_post_lambda_prod", "memory": 512, "public": false, "subnets": ["a", "b"]},
                "components": {"default": {"outputs": {}}}},
        });
        let (name, variables, tfvars) = generated(
            &ctx,
            "service_instance/blog_post_lambdas/blog_post_lambda_prod",
            Some("blog_post_prod"),
            "617296401743",
            "blog-post-lambda-service",
        );
        assert_eq!(name, "proton.service_instance.variables.tf");
        assert_eq!(
            variables,
            include_str!("testdata/terraform/service_instance.variables.tf")
        );
        assert_eq!(
            tfvars,
            include_str!("testdata/terraform/service_instance.tfvars.json")
        );
    }

    #[test]
    fn pipeline_files_match_proton() {
        let ctx = json!({
            "service": {"name": "blog_post_lambdas", "branch_name": "main", "repository_id": "acme/blog",
                "repository_connection_arn": "arn:aws:codestar-connections:us-east-1:617296401743:connection/abc"},
            "pipeline": {"inputs": {"timeout": 30}},
            "service_instances": [{"name": "blog_post_lambda_prod", "inputs": {"memory": 512},
                "outputs": {"FunctionArn": "arn:aws:lambda:us-east-1:617296401743:function:f"},
                "environment": {"name": "blog_post_prod", "account_id": "617296401743", "outputs": {}, "inputs": {}}}],
        });
        let (name, variables, tfvars) = generated(
            &ctx,
            "pipeline/blog_post_lambdas",
            None,
            "617296401743",
            "blog-post-lambda-service",
        );
        assert_eq!(name, "proton.pipeline.variables.tf");
        assert_eq!(
            variables,
            include_str!("testdata/terraform/pipeline.variables.tf")
        );
        assert_eq!(
            tfvars,
            include_str!("testdata/terraform/pipeline.tfvars.json")
        );
    }

    #[test]
    fn component_outputs_reach_instances_and_tags_only_fill_the_top_level() {
        let ctx = json!({
            "environment": {"name": "dev", "inputs": {}, "outputs": {}, "account_id": "1"},
            "service": {"name": "api", "branch_name": "main", "repository_id": "o/r", "repository_connection_arn": ""},
            "service_instance": {"name": "api-dev", "outputs": {},
                "inputs": {"proton_tags": {}, "n": 2},
                "components": {"default": {"outputs": {"BucketName": "b"}}}},
        });
        let (_, _, tfvars) = generated(&ctx, "service_instance/api/api-dev", Some("dev"), "1", "t");
        let v: Value = serde_json::from_str(&tfvars).expect("json");
        assert_eq!(
            v["service_instance"]["components"]["default"]["outputs"]["BucketName"],
            "b"
        );
        assert_eq!(v["service_instance"]["inputs"]["proton_tags"], json!({}));
        assert_eq!(v["service_instance"]["inputs"]["n"], 2);
        assert_eq!(v["proton_tags"]["proton:account"], "1");
    }

    #[test]
    fn folders_and_arns_follow_proton() {
        assert_eq!(
            folder_for("environment/dev", Some("dev"), false).as_deref(),
            Ok("dev")
        );
        assert_eq!(
            folder_for("service_instance/api/api-dev", Some("dev"), false).as_deref(),
            Ok("dev/api-api-dev")
        );
        assert_eq!(
            folder_for("environment/dev", Some("dev"), true).as_deref(),
            Ok("environments/dev")
        );
        assert_eq!(
            folder_for("service_instance/api/api-dev", Some("dev"), true).as_deref(),
            Ok("environments/dev/api-api-dev")
        );
        // AWS's Proton workflow sample: `working_directory=pipeline/$service_name`.
        assert_eq!(
            folder_for("pipeline/api", None, true).as_deref(),
            Ok("pipeline/api")
        );
        assert!(folder_for("component/api/x", Some("dev"), false).is_err());
        assert!(Layout::Auto.under_environments(true));
        assert!(!Layout::Auto.under_environments(false));
        assert!(Layout::Environments.under_environments(false));
        assert!(!Layout::Root.under_environments(true));
        let (arn, env) = arns(
            "service_instance/api/api-dev",
            Some("dev"),
            "us-east-1",
            "123456789012",
        );
        assert_eq!(
            arn,
            "arn:aws:proton:us-east-1:123456789012:service/api/service-instance/api-dev"
        );
        assert_eq!(
            env.as_deref(),
            Some("arn:aws:proton:us-east-1:123456789012:environment/dev")
        );
        let meta: Value = serde_json::from_str(&deployment_metadata(
            7,
            true,
            &arn,
            env.as_deref(),
            "t",
            1,
            2,
        ))
        .expect("json");
        assert_eq!(meta["deploymentId"], "7");
        assert_eq!(meta["isResourceDeleted"], true);
        assert_eq!(meta["resourceMetadata"]["templateMinorVersion"], "2");
        assert!(meta["resourceMetadata"]["environmentArn"].is_string());
    }

    #[test]
    fn outputs_in_every_reported_shape() {
        let a = parse_outputs(&json!({"vpc_id": "vpc-1", "n": 3})).expect("object");
        assert_eq!(a["vpc_id"], "vpc-1");
        assert_eq!(a["n"], "3");
        let b = parse_outputs(&json!([{"key": "vpc_id", "valueString": "vpc-1"}])).expect("proton");
        assert_eq!(b["vpc_id"], "vpc-1");
        let c = parse_outputs(
            &json!({"vpc_id": {"sensitive": false, "type": "string", "value": "vpc-1"}}),
        )
        .expect("terraform");
        assert_eq!(c["vpc_id"], "vpc-1");
        assert!(parse_outputs(&json!([{"k": 1}])).is_err());
        assert!(parse_outputs(&json!("x")).is_err());
    }

    #[test]
    fn outputs_errors_name_the_expected_shape() {
        let item = parse_outputs(&json!([{"key": "a", "valueString": "1"}, {"k": 1}]))
            .expect_err("second item");
        assert_eq!(item, OutputsError::Item { index: 1 });
        assert_eq!(
            item.to_string(),
            "outputs[1]: expected {\"key\": …, \"valueString\": …}"
        );
        assert_eq!(
            parse_outputs(&json!(3)).expect_err("number").to_string(),
            "outputs must be an object of strings, [{\"key\", \"valueString\"}] or `terraform output -json`"
        );
    }
}
