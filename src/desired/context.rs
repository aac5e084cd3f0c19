//! The rendering contexts templates see, built one way for the daemon and `protond render`.
//!
//! A service's `service.*` values come from its [`SpecSource`]: the daemon passes the spec
//! repo the service is declared in ([`SpecSource::of_repo`]: its configured name and branch),
//! `protond render` the values of its flags. Everything else (environment and instance
//! blocks, components, pipelines) is built by the same functions in both. Pure: no I/O.

use std::collections::BTreeMap;

use serde_json::Value;

use super::SpecRepoState;
use crate::render::{self, EnvironmentInfo, InstanceInfo, ServiceInfo};
use crate::spec::EnvironmentSpec;

/// Where a service's spec lives, as templates see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecSource {
    /// `service.repository_id`.
    pub repository_id: String,
    /// `service.branch_name`.
    pub branch: String,
    /// `service.repository_connection_arn` (empty: protond needs no source connection).
    pub connection_arn: String,
}

impl SpecSource {
    /// The source of a service the daemon reads from `repo`: the repo's configured name (never
    /// its URL, which may carry credentials) and branch.
    #[must_use]
    pub fn of_repo(repo: &SpecRepoState) -> Self {
        Self {
            repository_id: repo.repo.clone(),
            branch: repo.branch.clone(),
            connection_arn: String::new(),
        }
    }
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
            account_id: account_id.to_string(),
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
