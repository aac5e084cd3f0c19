//! The rendering contexts templates see, built one way for the daemon and `protond render`.
//!
//! A service's `service.*` source values come from its [`SpecSource`]: what the service spec
//! names ([`SpecSource::of_spec`]), which `protond render` flags may override; a value
//! neither gives is undefined for templates, never an empty string. Everything else (environment and instance
//! blocks, components, pipelines) is built by the same functions in both. Pure: no I/O.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::render::{self, EnvironmentInfo, InstanceInfo, ServiceInfo};
use crate::spec::{EnvironmentSpec, ServiceSpec};

/// A service's source code repository, as templates see it (`service.repository_id`,
/// `service.branch_name`, `service.repository_connection_arn`). A value that is `None` is
/// undefined for templates: using it fails to render (see [`missing_source_field`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecSource {
    /// `service.repository_id`.
    pub repository_id: Option<String>,
    /// `service.branch_name`.
    pub branch: Option<String>,
    /// `service.repository_connection_arn`.
    pub connection_arn: Option<String>,
}

impl SpecSource {
    /// The source a service spec names (its `repository_id`, `branch_name` and
    /// `repository_connection_arn` fields); never the spec repo's own name, URL or branch.
    #[must_use]
    pub fn of_spec(spec: &ServiceSpec) -> Self {
        Self {
            repository_id: spec.source.repository_id.clone(),
            branch: spec.source.branch_name.clone(),
            connection_arn: spec.source.repository_connection_arn.clone(),
        }
    }
}

/// The source field (`repository_id`, `branch_name` or `repository_connection_arn`) that
/// `error` shows a template needed, when `error` is an undefined variable naming
/// `service.<field>` and `source` does not give that field.
#[must_use]
pub fn missing_source_field(
    source: &SpecSource,
    error: &render::RenderError,
) -> Option<&'static str> {
    let render::RenderError::Undefined { variable, .. } = error else {
        return None;
    };
    let mentions = |field: &str| {
        let needle = format!("service.{field}");
        variable.match_indices(&needle).any(|(at, _)| {
            let after = variable[at + needle.len()..].chars().next();
            let before = variable[..at].chars().next_back();
            !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
                && !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.')
        })
    };
    [
        ("repository_id", &source.repository_id),
        ("branch_name", &source.branch),
        ("repository_connection_arn", &source.connection_arn),
    ]
    .into_iter()
    .find(|(field, given)| given.is_none() && mentions(field))
    .map(|(field, _)| field)
}

/// The message for a template that uses the source field `field` of a service whose spec
/// `spec_file` does not give it.
#[must_use]
pub fn missing_source_message(spec_file: &str, field: &str, error: &render::RenderError) -> String {
    let example = match field {
        "repository_id" => "acme/payments",
        "branch_name" => "main",
        _ => "arn:aws:codestar-connections:us-east-1:111122223333:connection/ID",
    };
    let at = match error {
        render::RenderError::Undefined { file, line, .. } => format!("{file}:{line}"),
        other => other.to_string(),
    };
    format!(
        "{spec_file}: {field}: the template ({at}) uses `service.{field}`, which the service spec does not give; add `{field}: {example}` to the spec, beside `name:` (Proton took it when the service was created)"
    )
}

/// The context of an environment's `infrastructure/` files: its validated `inputs`, the
/// `outputs` known, and its spec's account id (else `default_account_id`).
#[must_use]
pub fn environment_context(
    spec: &EnvironmentSpec,
    inputs: Value,
    outputs: BTreeMap<String, String>,
    default_account_id: &str,
) -> Value {
    render::environment_context(&EnvironmentInfo {
        name: spec.name.clone(),
        inputs,
        outputs,
        account_id: spec
            .account_id
            .clone()
            .unwrap_or_else(|| default_account_id.to_string()),
    })
}

/// Builds the contexts of one service's instances, components and pipeline.
#[derive(Debug, Clone)]
pub struct ServiceContext {
    service: ServiceInfo,
    source: SpecSource,
    account_id: String,
}

impl ServiceContext {
    /// The contexts of service `name` declared at `source`, whose instances' environments
    /// are in `account_id`.
    #[must_use]
    pub fn new(name: &str, source: &SpecSource, account_id: &str) -> Self {
        Self {
            service: ServiceInfo {
                name: name.to_string(),
                branch_name: source.branch.clone(),
                repository_id: source.repository_id.clone(),
                repository_connection_arn: source.connection_arn.clone(),
            },
            source: source.clone(),
            account_id: account_id.to_string(),
        }
    }

    /// What to report for a rendering failure of this service, declared in `spec_file`: a
    /// source field the template uses but the spec does not give is named as such.
    #[must_use]
    pub fn describe(&self, spec_file: &str, error: &render::RenderError) -> String {
        match missing_source_field(&self.source, error) {
            Some(field) => missing_source_message(spec_file, field, error),
            None => error.to_string(),
        }
    }

    /// The `service` block templates see.
    #[must_use]
    pub fn service(&self) -> &ServiceInfo {
        &self.service
    }

    /// The environment an instance sees: its name and known `outputs`; its inputs are not
    /// shown to instances.
    #[must_use]
    pub fn instance_environment(
        &self,
        environment: &str,
        outputs: BTreeMap<String, String>,
    ) -> EnvironmentInfo {
        EnvironmentInfo {
            name: environment.to_string(),
            inputs: Value::Object(serde_json::Map::new()),
            outputs,
            account_id: self.account_id.clone(),
        }
    }

    /// The context of an instance's `instance_infrastructure/` files.
    #[must_use]
    pub fn instance(&self, instance: &InstanceInfo) -> Value {
        render::instance_context(&self.service, instance)
    }

    /// The context of the directly defined component `component` attached to `instance`.
    #[must_use]
    pub fn component(&self, instance: &InstanceInfo, component: &str) -> Value {
        render::component_context(
            &self.service,
            instance,
            component,
            &Value::Object(serde_json::Map::new()),
        )
    }

    /// The context of the service's `pipeline_infrastructure/` files.
    #[must_use]
    pub fn pipeline(&self, inputs: &Value, instances: &[InstanceInfo]) -> Value {
        render::pipeline_context(&self.service, inputs, instances)
    }
}
