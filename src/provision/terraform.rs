//! Self-managed provisioning for `template_language: terraform`, as AWS Proton did it.
//!
//! protond does not run Terraform. It writes the template's `.tf` files, plus the input files
//! Proton generated, into an infrastructure repo at Proton's folder layout, on a branch with
//! a pull request. The repo's own automation (the workflows written for Proton keep working)
//! plans on the pull request, applies on merge, and reports back with `protond notify` or
//! `POST /api/v1/notify`. Until then the deployment stays in progress; the outputs reported
//! then flow to dependants exactly like `CloudFormation` outputs.
//!
//! Layout and file names follow what Proton committed:
//!
//! | Resource | Folder | Variables file |
//! |---|---|---|
//! | environment | `<env>/` | `proton.environment.variables.tf` |
//! | service instance | `<env>/<service>-<instance>/` | `proton.service_instance.variables.tf` |
//! | pipeline | `<service>/pipeline/` | `proton.pipeline.variables.tf` |
//!
//! Every folder also gets `proton.auto.tfvars.json` (the inputs, and the environment's
//! outputs for instances) and `.proton/deployment-metadata.json` (`deploymentId`,
//! `isResourceDeleted`, `resourceMetadata` with Proton-shaped ARNs, so workflows that derive
//! the folder from the ARN still work). A delete commits the metadata with
//! `isResourceDeleted: true` and keeps the `.tf` files, so the automation can destroy.

use crate::model::ResourceId;
use serde_json::{Value, json};

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

fn env_vars(ctx: &Value) -> Value {
    let e = &ctx["environment"];
    json!({
        "account_id": e["account_id"],
        "name": e["name"],
        "outputs": e["outputs"],
    })
}

fn service_vars(ctx: &Value) -> Value {
    let s = &ctx["service"];
    json!({
        "name": s["name"],
        "branch_name": s["branch_name"],
        "repository_connection_arn": s["repository_connection_arn"],
        "repository_id": s["repository_id"],
    })
}

/// `proton.<kind>.variables.tf` and `proton.auto.tfvars.json` for a rendering context, as
/// (file name, contents).
#[must_use]
pub fn generated_files(ctx: &Value) -> Vec<(String, String)> {
    let kind = context_kind(ctx);
    let (variables, tfvars) = match kind {
        "environment" => (
            "variable \"environment\" {\n  type = object({\n    inputs = map(string)\n    name   = string\n  })\n  default = null\n}\n"
                .to_string(),
            json!({
                "environment": {
                    "name": ctx["environment"]["name"],
                    "inputs": ctx["environment"]["inputs"],
                }
            }),
        ),
        "service_instance" => (
            "variable \"environment\" {\n  type = object({\n    account_id = string\n    name       = string\n    outputs    = map(string)\n  })\n  default = null\n}\n\n\
             variable \"service\" {\n  type = object({\n    name                      = string\n    branch_name               = string\n    repository_connection_arn = string\n    repository_id             = string\n  })\n  default = null\n}\n\n\
             variable \"service_instance\" {\n  type = object({\n    name       = string\n    inputs     = map(string)\n    components = map(string)\n  })\n  default = null\n}\n"
                .to_string(),
            json!({
                "environment": env_vars(ctx),
                "service": service_vars(ctx),
                "service_instance": {
                    "name": ctx["service_instance"]["name"],
                    "inputs": ctx["service_instance"]["inputs"],
                    "components": {},
                },
            }),
        ),
        _ => (
            "variable \"service_instances\" {\n  type = list(object({\n    name    = string\n    inputs  = map(string)\n    outputs = map(string)\n    environment = object({\n      account_id = string\n      name       = string\n      outputs    = map(string)\n    })\n  }))\n  default = null\n}\n\n\
             variable \"service\" {\n  type = object({\n    name                      = string\n    branch_name               = string\n    repository_connection_arn = string\n    repository_id             = string\n  })\n  default = null\n}\n\n\
             variable \"pipeline\" {\n  type = object({\n    inputs = map(string)\n  })\n  default = null\n}\n"
                .to_string(),
            json!({
                "pipeline": { "inputs": ctx["pipeline"]["inputs"] },
                "service": service_vars(ctx),
                "service_instances": ctx["service_instances"]
                    .as_array()
                    .map(|xs| xs.iter().map(|i| json!({
                        "name": i["name"],
                        "inputs": i["inputs"],
                        "outputs": i["outputs"],
                        "environment": {
                            "account_id": i["environment"]["account_id"],
                            "name": i["environment"]["name"],
                            "outputs": i["environment"]["outputs"],
                        },
                    })).collect::<Vec<_>>())
                    .unwrap_or_default(),
            }),
        ),
    };
    let mut tfvars = tfvars;
    if let Some(m) = tfvars.as_object_mut() {
        m.insert("//".into(), Value::String(MANAGED.into()));
    }
    vec![
        (
            format!("proton.{kind}.variables.tf"),
            format!("/* {MANAGED} */\n\n{variables}"),
        ),
        (
            "proton.auto.tfvars.json".into(),
            serde_json::to_string_pretty(&tfvars).unwrap_or_default() + "\n",
        ),
    ]
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

/// Where a resource's files go in the infrastructure repo.
///
/// # Errors
///
/// For components (Proton never provisioned them this way) and malformed ids.
pub fn folder_for(resource_id: &str, environment: Option<&str>) -> Result<String, LayoutError> {
    let resource = || resource_id.to_string();
    match ResourceId::parse(resource_id) {
        Ok(ResourceId::Environment { name }) => Ok(name),
        Ok(ResourceId::ServiceInstance { service, instance }) => {
            let env = environment.ok_or_else(|| LayoutError::NoEnvironment {
                resource: resource(),
            })?;
            Ok(format!("{env}/{service}-{instance}"))
        }
        Ok(ResourceId::Pipeline { service }) => Ok(format!("{service}/pipeline")),
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

    #[test]
    fn environment_files_match_proton() {
        let ctx = json!({"environment": {"name": "dev", "inputs": {"vpc_name": "dev"}, "outputs": {}, "account_id": "123456789012"}});
        let files = generated_files(&ctx);
        assert_eq!(files[0].0, "proton.environment.variables.tf");
        assert!(files[0].1.contains("variable \"environment\""));
        assert!(files[0].1.contains("inputs = map(string)"));
        assert_eq!(files[1].0, "proton.auto.tfvars.json");
        let v: Value = serde_json::from_str(&files[1].1).expect("json");
        assert_eq!(
            v["environment"],
            json!({"name": "dev", "inputs": {"vpc_name": "dev"}})
        );
        assert!(
            v["//"]
                .as_str()
                .is_some_and(|s| s.contains("managed by protond"))
        );
    }

    #[test]
    fn instance_files_carry_environment_outputs() {
        let ctx = json!({
            "environment": {"name": "dev", "inputs": {}, "outputs": {"vpc_id": "vpc-1"}, "account_id": "123456789012"},
            "service": {"name": "api", "branch_name": "main", "repository_id": "o/r", "repository_connection_arn": ""},
            "service_instance": {"name": "api-dev", "inputs": {"size": 2}, "outputs": {}, "components": {"default": {"outputs": {}}}},
        });
        let files = generated_files(&ctx);
        assert_eq!(files[0].0, "proton.service_instance.variables.tf");
        let v: Value = serde_json::from_str(&files[1].1).expect("json");
        assert_eq!(v["environment"]["outputs"]["vpc_id"], "vpc-1");
        assert_eq!(v["environment"]["account_id"], "123456789012");
        assert_eq!(v["service"]["name"], "api");
        assert_eq!(v["service_instance"]["inputs"]["size"], 2);
        assert_eq!(v["service_instance"]["components"], json!({}));
    }

    #[test]
    fn folders_and_arns_follow_proton() {
        assert_eq!(
            folder_for("environment/dev", Some("dev")).as_deref(),
            Ok("dev")
        );
        assert_eq!(
            folder_for("service_instance/api/api-dev", Some("dev")).as_deref(),
            Ok("dev/api-api-dev")
        );
        assert_eq!(
            folder_for("pipeline/api", None).as_deref(),
            Ok("api/pipeline")
        );
        assert!(folder_for("component/api/x", Some("dev")).is_err());
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
