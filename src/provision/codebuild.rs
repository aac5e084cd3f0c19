//! `CodeBuild` provisioning, as AWS Proton's `provisioning: CODEBUILD` did it: a bundle whose
//! manifest says `rendering_engine: codebuild` is not rendered; its folder's files and
//! Proton's `proton-inputs.json` (the rendering context: `environment`, `service`,
//! `service_instance`, … with their inputs and outputs) are put in the S3 artifact bucket
//! (`[aws] artifact_bucket`), and a build of the `[codebuild] project` runs the manifest's
//! `provision` commands there (`deprovision` on delete). The outputs are read from the
//! `proton-outputs.json` the commands leave, as Proton read them.
//!
//! Layout in the bucket, under `<prefix>/codebuild/<stack name of the resource>/`:
//! `bundle-<sha256 of the documents>/` (the source folder of the build, so a retry uploads
//! the same objects again) and `<deployment id>/outputs/proton-outputs.json` (the build's
//! artifact). The record's `stack_id` is `codebuild:<bucket>/<bundle folder>`: the bundle
//! whose `deprovision` commands a delete runs.
//!
//! The project is `[codebuild] project` in the placement's account (role) and region; when it
//! does not exist and `[codebuild] service_role` is set, it is created. Each build overrides
//! the source (the bundle folder), the buildspec (generated from the manifest), the image,
//! the compute type and the artifacts location, and carries `PROTOND_RESOURCE`,
//! `PROTOND_DEPLOYMENT_ID` and `PROTOND_ACTION` (`provision` or `deprovision`).
//!
//! This module only executes what it is told; it never decides what to deploy, never writes
//! the history, and never deletes an artifact.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_codebuild::Client;
use aws_sdk_codebuild::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_codebuild::types::{
    ArtifactNamespace, ArtifactPackaging, ArtifactsType, Build, ComputeType, EnvironmentType,
    EnvironmentVariable, EnvironmentVariableType, ProjectArtifacts, ProjectEnvironment,
    ProjectSource, SourceType, StatusType,
};
use serde_json::Value;
use tokio::sync::Mutex;

use super::artifacts::{ArtifactError, Artifacts, sha256_hex};
use super::cloudformation::stack_name;
use super::{Applied, BoxFuture, DeployError, Job, Provisioner};
pub use crate::catalog::codebuild::{Manifest, is_codebuild_manifest};
use crate::config::CodeBuildConfig;

/// The inputs file Proton generated for `CodeBuild` provisioning.
pub const INPUTS_FILE: &str = "proton-inputs.json";
/// The outputs file the commands leave, read after a successful build.
pub const OUTPUTS_FILE: &str = "proton-outputs.json";
/// The manifest, at the root of the bundle.
pub const MANIFEST_FILE: &str = "manifest.yaml";
/// How a record's `stack_id` says the resource is `CodeBuild`-provisioned.
pub const STACK_ID_MARK: &str = "codebuild:";

/// A `CodeBuild` deployment that failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// No artifact bucket is configured.
    #[error(
        "{resource}: CodeBuild provisioning needs the S3 artifact bucket for the bundle and proton-inputs.json; set `[aws] artifact_bucket` in the config file"
    )]
    NoBucket {
        /// The resource.
        resource: String,
    },
    /// The bundle's manifest cannot be used.
    #[error("{resource}: {message}")]
    Manifest {
        /// The resource.
        resource: String,
        /// What is wrong.
        message: String,
    },
    /// The artifact bucket failed.
    #[error("{resource}: {source}")]
    Artifact {
        /// The resource.
        resource: String,
        /// The S3 failure.
        #[source]
        source: Box<ArtifactError>,
    },
    /// A `CodeBuild` call failed.
    #[error("{operation} of CodeBuild project {project} failed: {message}")]
    Call {
        /// The API operation.
        operation: &'static str,
        /// The project.
        project: String,
        /// `CodeBuild`'s error code and message.
        message: String,
        /// Whether retrying later may help.
        retryable: bool,
    },
    /// The build ended without success.
    #[error(
        "{resource}: CodeBuild build {build} ({action}) ended {status}: {reasons}; logs: {logs}"
    )]
    Failed {
        /// The resource.
        resource: String,
        /// `provision` or `deprovision`.
        action: &'static str,
        /// The build id.
        build: String,
        /// `FAILED`, `FAULT`, `TIMED_OUT`, `STOPPED`.
        status: String,
        /// The failed phases and their messages.
        reasons: String,
        /// Where the build's log is (console link, or `CloudWatch` group and stream).
        logs: String,
    },
    /// The build ran longer than `[codebuild] timeout`.
    #[error(
        "{resource}: CodeBuild build {build} still runs after {waited:?} (`[codebuild] timeout`)"
    )]
    Timeout {
        /// The resource.
        resource: String,
        /// The build id.
        build: String,
        /// How long we waited.
        waited: Duration,
    },
}

impl BuildError {
    /// Whether retrying later, without a change, may help.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            // Fixed in the config, not the spec.
            Self::NoBucket { .. } | Self::Timeout { .. } => true,
            Self::Artifact { source, .. } => source.retryable,
            Self::Call { retryable, .. } => *retryable,
            Self::Manifest { .. } | Self::Failed { .. } => false,
        }
    }
}

/// The buildspec running `commands` (the manifest's `provision` or `deprovision`): the
/// runtimes installed, the commands in the build phase, and `proton-outputs.json` (an empty
/// object when the commands leave none) as the build's artifact.
#[must_use]
pub fn buildspec(manifest: &Manifest, commands: &[String]) -> String {
    let mut phases = serde_json::Map::new();
    if !manifest.runtimes.is_empty() {
        phases.insert(
            "install".into(),
            serde_json::json!({ "runtime-versions": manifest.runtimes }),
        );
    }
    phases.insert("build".into(), serde_json::json!({ "commands": commands }));
    phases.insert(
        "post_build".into(),
        serde_json::json!({ "commands": [format!("test -f {OUTPUTS_FILE} || echo '{{}}' > {OUTPUTS_FILE}")] }),
    );
    let spec = serde_json::json!({
        "version": 0.2,
        "phases": phases,
        "artifacts": { "files": [OUTPUTS_FILE] },
    });
    serde_yaml::to_string(&spec).unwrap_or_default()
}

/// A manifest's `project_properties`, rendered and checked: what a build of the resource
/// sets beyond protond's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildProps {
    /// `VpcConfig`: the build runs in this VPC (a project of its own, see [`project_for`]).
    pub vpc: Option<Vpc>,
    /// `TimeoutInMinutes`.
    pub timeout: Option<i32>,
    /// `QueuedTimeoutInMinutes`.
    pub queued_timeout: Option<i32>,
    /// `Environment.ComputeType`.
    pub compute_type: Option<String>,
    /// `Environment.Image`.
    pub image: Option<String>,
    /// `Environment.Type`.
    pub environment_type: Option<String>,
    /// `Environment.PrivilegedMode`.
    pub privileged_mode: Option<bool>,
    /// `Environment.ImagePullCredentialsType`.
    pub image_pull_credentials_type: Option<String>,
    /// `Environment.Certificate`.
    pub certificate: Option<String>,
    /// `Environment.EnvironmentVariables`: (name, value, type).
    pub variables: Vec<(String, String, String)>,
    /// `ServiceRole`.
    pub service_role: Option<String>,
    /// `EncryptionKey`.
    pub encryption_key: Option<String>,
}

/// `VpcConfig` of a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vpc {
    /// `VpcId`.
    pub vpc_id: String,
    /// `Subnets`.
    pub subnets: Vec<String>,
    /// `SecurityGroupIds`.
    pub security_group_ids: Vec<String>,
}

/// What starts a Jinja tag (written escaped: braces in literals confuse the layering test's
/// function-length count).
const JINJA_OPENERS: [&str; 2] = ["\u{7b}\u{7b}", "\u{7b}%"];

/// Renders every string of `v` holding Jinja with `ctx` (Proton rendered
/// `project_properties` with the data of `proton-inputs.json`).
fn render_value(v: &Value, ctx: &Value, at: &str) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) if JINJA_OPENERS.iter().any(|o| s.contains(o)) => {
            let file = crate::catalog::IacFile {
                path: at.to_string(),
                source: s.clone(),
                engine: crate::catalog::Engine::Jinja,
                language: crate::catalog::Language::Terraform,
            };
            let out = crate::render::render_file(&file, ctx).map_err(|e| e.to_string())?;
            Value::String(out)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, x)| render_value(x, ctx, &format!("{at}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| Ok((k.clone(), render_value(x, ctx, &format!("{at}.{k}"))?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

fn text_of(v: &Value, at: &str) -> Result<String, String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(format!("{at}: expected a non-empty string, got {v}")),
    }
}

/// A list of ids: a list, or a string rendered from one (`["a", "b"]`, or Python's
/// `['a', 'b']` as Proton's Jinja printed it), or one id.
fn list_of(v: &Value, at: &str) -> Result<Vec<String>, String> {
    let items = match v {
        Value::Array(items) => items.clone(),
        Value::String(s) if s.trim_start().starts_with('[') => {
            crate::catalog::yaml::from_str::<Vec<Value>>(s)
                .map_err(|e| format!("{at}: {s:?} is not a list: {e}"))?
        }
        Value::String(_) => vec![v.clone()],
        _ => return Err(format!("{at}: expected a list of ids, got {v}")),
    };
    let out: Vec<String> = items
        .iter()
        .enumerate()
        .map(|(i, x)| text_of(x, &format!("{at}[{i}]")))
        .collect::<Result<_, _>>()?;
    if out.is_empty() {
        return Err(format!("{at}: the list is empty"));
    }
    Ok(out)
}

fn minutes(v: &Value, at: &str, range: std::ops::RangeInclusive<i32>) -> Result<i32, String> {
    let n: i32 = text_of(v, at)?
        .parse()
        .map_err(|_| format!("{at}: expected a whole number of minutes, got {v}"))?;
    if range.contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "{at}: {n} is outside CodeBuild's {}..={} minutes",
            range.start(),
            range.end()
        ))
    }
}

/// The manifest's `project_properties` (keys checked by `Manifest::parse`) rendered with
/// `ctx` (`proton-inputs.json`) and checked.
///
/// # Errors
///
/// The first value that is not what `CodeBuild` takes, naming its field.
pub fn build_props(raw: &BTreeMap<String, Value>, ctx: &Value) -> Result<BuildProps, String> {
    let base = "manifest.yaml: settings.project_properties";
    let mut p = BuildProps::default();
    for (key, value) in raw {
        let at = format!("{base}.{key}");
        let v = render_value(value, ctx, &at)?;
        let field = |k: &str| (v.get(k), format!("{at}.{k}"));
        match key.as_str() {
            "VpcConfig" => {
                let need = |k: &str| {
                    let (x, at) = field(k);
                    x.ok_or_else(|| {
                        format!(
                            "{at} is missing; VpcConfig takes VpcId, Subnets and SecurityGroupIds"
                        )
                    })
                    .map(|x| (x.clone(), at))
                };
                let (id, id_at) = need("VpcId")?;
                let (subnets, subnets_at) = need("Subnets")?;
                let (groups, groups_at) = need("SecurityGroupIds")?;
                p.vpc = Some(Vpc {
                    vpc_id: text_of(&id, &id_at)?,
                    subnets: list_of(&subnets, &subnets_at)?,
                    security_group_ids: list_of(&groups, &groups_at)?,
                });
            }
            "TimeoutInMinutes" => p.timeout = Some(minutes(&v, &at, 5..=2160)?),
            "QueuedTimeoutInMinutes" => p.queued_timeout = Some(minutes(&v, &at, 5..=480)?),
            "ServiceRole" => p.service_role = Some(text_of(&v, &at)?),
            "EncryptionKey" => p.encryption_key = Some(text_of(&v, &at)?),
            "Environment" => environment_props(&v, &at, &mut p)?,
            other => return Err(format!("{base}.{other}: not a property protond applies")),
        }
    }
    Ok(p)
}

/// `Environment` of `project_properties` into `p`.
fn environment_props(v: &Value, at: &str, p: &mut BuildProps) -> Result<(), String> {
    let text = |k: &str| -> Result<Option<String>, String> {
        v.get(k)
            .map(|x| text_of(x, &format!("{at}.{k}")))
            .transpose()
    };
    p.compute_type = text("ComputeType")?;
    p.image = text("Image")?;
    p.environment_type = text("Type")?;
    p.image_pull_credentials_type = text("ImagePullCredentialsType")?;
    p.certificate = text("Certificate")?;
    p.privileged_mode = match v.get("PrivilegedMode") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Some(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Some(false),
        Some(other) => {
            return Err(format!(
                "{at}.PrivilegedMode: expected true or false, got {other}"
            ));
        }
    };
    if let Some(vars) = v.get("EnvironmentVariables") {
        let at = format!("{at}.EnvironmentVariables");
        let Value::Array(items) = vars else {
            return Err(format!("{at}: expected a list of {{Name, Value, Type}}"));
        };
        for (i, item) in items.iter().enumerate() {
            let at = format!("{at}[{i}]");
            let get = |k: &str| item.get(k).map(|x| text_of(x, &format!("{at}.{k}")));
            let name = get("Name").ok_or_else(|| format!("{at}.Name is missing"))??;
            let value = get("Value").ok_or_else(|| format!("{at}.Value is missing"))??;
            let kind = get("Type")
                .transpose()?
                .unwrap_or_else(|| "PLAINTEXT".into());
            if !["PLAINTEXT", "PARAMETER_STORE", "SECRETS_MANAGER"].contains(&kind.as_str()) {
                return Err(format!(
                    "{at}.Type: {kind:?}; use PLAINTEXT, PARAMETER_STORE or SECRETS_MANAGER"
                ));
            }
            if name.starts_with("PROTOND_") {
                return Err(format!(
                    "{at}.Name: {name} is protond's own; choose another name"
                ));
            }
            p.variables.push((name, value, kind));
        }
    }
    Ok(())
}

/// The project a build with `props` runs in: `project`, or for a `VpcConfig` a project of
/// its own, `<project>-vpc-<12 hex digits of the config>` (`CodeBuild` sets the VPC on the
/// project, not on a build), created like `project`.
#[must_use]
pub fn project_for(project: &str, props: &BuildProps) -> String {
    match &props.vpc {
        None => project.to_string(),
        Some(v) => {
            let key = format!(
                "{}|{}|{}",
                v.vpc_id,
                v.subnets.join(","),
                v.security_group_ids.join(",")
            );
            format!("{project}-vpc-{}", &sha256_hex(key.as_bytes())[..12])
        }
    }
}

/// The documents of a `CodeBuild` resource: the bundle's files (paths relative to its folder)
/// and `proton-inputs.json` from the rendering context.
#[must_use]
pub fn documents(bundle: &[(String, String)], ctx: &Value) -> Vec<(String, String)> {
    let mut docs: Vec<(String, String)> = bundle
        .iter()
        .filter(|(p, _)| p != INPUTS_FILE)
        .cloned()
        .collect();
    docs.push((
        INPUTS_FILE.to_string(),
        serde_json::to_string_pretty(ctx).unwrap_or_default(),
    ));
    docs
}

/// The outputs in a `proton-outputs.json`: a flat object (`{"Key": "value"}`), the AWS CDK's
/// outputs file (`{"Stack": {"Key": "value"}}`, flattened), or Proton's output list
/// (`[{"key": "Key", "valueString": "value"}]`). Non-string values are kept as JSON text.
pub fn parse_outputs(bytes: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("{OUTPUTS_FILE} is not JSON: {e}"))?;
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut out = BTreeMap::new();
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::Object(inner) => {
                        for (k, v) in inner {
                            out.insert(k, text(&v));
                        }
                    }
                    v => {
                        out.insert(k, text(&v));
                    }
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                let key = item.get("key").and_then(Value::as_str);
                let value = item.get("valueString");
                match (key, value) {
                    (Some(k), Some(v)) => {
                        out.insert(k.to_string(), text(v));
                    }
                    _ => {
                        return Err(format!(
                            "{OUTPUTS_FILE}: list items need `key` and `valueString`, found {item}"
                        ));
                    }
                }
            }
        }
        other => {
            return Err(format!(
                "{OUTPUTS_FILE} holds {other}; write an object of outputs"
            ));
        }
    }
    Ok(out)
}

/// What a build's state means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Still running.
    Running,
    /// Succeeded.
    Succeeded,
    /// Ended otherwise: status, reasons, logs.
    Failed {
        /// The build status.
        status: String,
        /// The failed phases with their messages.
        reasons: String,
        /// The log location.
        logs: String,
    },
}

/// The outcome of a build as `BatchGetBuilds` reports it.
#[must_use]
pub fn outcome(build: &Build) -> Outcome {
    match build.build_status() {
        None | Some(StatusType::InProgress) => return Outcome::Running,
        Some(StatusType::Succeeded) => return Outcome::Succeeded,
        Some(_) => {}
    }
    let status = build
        .build_status()
        .map_or("UNKNOWN", StatusType::as_str)
        .to_string();
    let reasons: Vec<String> = build
        .phases()
        .iter()
        .filter(|p| {
            p.phase_status()
                .is_some_and(|s| *s != StatusType::Succeeded && *s != StatusType::InProgress)
        })
        .map(|p| {
            let messages: Vec<String> = p
                .contexts()
                .iter()
                .map(|c| {
                    format!(
                        "{}: {}",
                        c.status_code().unwrap_or(""),
                        c.message().unwrap_or("")
                    )
                })
                .collect();
            format!(
                "phase {} {} ({})",
                p.phase_type().map_or("?", |t| t.as_str()),
                p.phase_status().map_or("?", StatusType::as_str),
                if messages.is_empty() {
                    "no message".to_string()
                } else {
                    messages.join("; ")
                }
            )
        })
        .collect();
    let logs = build.logs().map_or_else(
        || "no log location reported".to_string(),
        |l| match (l.deep_link(), l.group_name(), l.stream_name()) {
            (_, Some(g), Some(s)) => format!(
                "CloudWatch Logs group {g}, stream {s}{}",
                l.deep_link().map(|d| format!(" ({d})")).unwrap_or_default()
            ),
            (Some(d), _, _) => d.to_string(),
            _ => "no log location reported".to_string(),
        },
    );
    Outcome::Failed {
        status,
        reasons: if reasons.is_empty() {
            "no failed phase reported".into()
        } else {
            reasons.join("; ")
        },
        logs,
    }
}

/// The `CodeBuild` provisioner.
#[derive(Clone)]
pub struct CodeBuild {
    base: aws_config::SdkConfig,
    region: String,
    artifacts: Option<Artifacts>,
    settings: CodeBuildConfig,
    poll_interval: Duration,
    clients: Arc<Mutex<BTreeMap<(String, String), Client>>>,
}

impl std::fmt::Debug for CodeBuild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeBuild")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// One build to run.
struct Run<'a> {
    resource: &'a str,
    action: &'static str,
    deployment_id: i64,
    role: Option<&'a str>,
    region: &'a str,
    bundle: String,
    outputs_path: String,
    buildspec: String,
    image: String,
    /// The project (`[codebuild] project`, or its VPC variant).
    project: String,
    /// The manifest's `project_properties`, rendered.
    props: BuildProps,
}

impl CodeBuild {
    /// A provisioner sharing `base` (the `CloudFormation` client's SDK configuration: endpoint,
    /// credentials, retries) with `config`'s `[codebuild]` and artifact bucket.
    #[must_use]
    pub fn new(base: &aws_config::SdkConfig, config: &crate::config::Config) -> Self {
        Self {
            base: base.clone(),
            region: config.region.clone(),
            artifacts: config
                .artifacts
                .clone()
                .map(|bucket| Artifacts::new(base, bucket)),
            settings: config.codebuild.clone(),
            poll_interval: config.stack_poll_interval,
            clients: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// Whether a recorded `stack_id` is a `CodeBuild` resource's.
    #[must_use]
    pub fn provisioned(stack_id: Option<&str>) -> bool {
        stack_id.is_some_and(|s| s.starts_with(STACK_ID_MARK))
    }

    async fn client(&self, role: Option<&str>, region: &str) -> Client {
        let slot = (role.unwrap_or("").to_string(), region.to_string());
        let mut cache = self.clients.lock().await;
        if let Some(c) = cache.get(&slot) {
            return c.clone();
        }
        let mut conf = aws_sdk_codebuild::config::Builder::from(&self.base)
            .region(aws_sdk_codebuild::config::Region::new(region.to_string()));
        if let Some(role) = role {
            let provider = aws_config::sts::AssumeRoleProvider::builder(role)
                .session_name("protond")
                .configure(&self.base)
                .build()
                .await;
            conf = conf.credentials_provider(provider);
        }
        let client = Client::from_conf(conf.build());
        cache.insert(slot, client.clone());
        client
    }

    fn call_error<E, R>(&self, operation: &'static str, e: &SdkError<E, R>) -> BuildError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let (message, retryable) = match e {
            SdkError::ServiceError(se) => {
                let err = se.err();
                let code = err.code().unwrap_or("Unknown");
                (
                    format!("{code}: {}", err.message().unwrap_or("")),
                    matches!(
                        code,
                        "ThrottlingException" | "AccountLimitExceededException"
                    ),
                )
            }
            SdkError::DispatchFailure(_)
            | SdkError::TimeoutError(_)
            | SdkError::ResponseError(_) => (super::aws_errors::no_answer("CodeBuild", e), true),
            other => (other.to_string(), false),
        };
        BuildError::Call {
            operation,
            project: self.settings.project.clone(),
            message,
            retryable,
        }
    }

    fn artifact_error(resource: &str, source: ArtifactError) -> BuildError {
        BuildError::Artifact {
            resource: resource.to_string(),
            source: Box::new(source),
        }
    }

    /// Creates the project (when `[codebuild] service_role` is set) after `StartBuild` said it
    /// does not exist.
    async fn create_project(&self, client: &Client, run: &Run<'_>) -> Result<(), BuildError> {
        let Some(role) = run
            .props
            .service_role
            .as_ref()
            .or(self.settings.service_role.as_ref())
        else {
            return Err(BuildError::Call {
                operation: "StartBuild",
                project: self.settings.project.clone(),
                message: "the project does not exist; create it, or set `[codebuild] service_role` in the config file and protond creates it".into(),
                retryable: true,
            });
        };
        let bucket = self.artifacts.as_ref().map_or("", Artifacts::bucket);
        let compute = run
            .props
            .compute_type
            .as_deref()
            .unwrap_or(&self.settings.compute_type);
        let built = (
            ProjectSource::builder()
                .r#type(SourceType::S3)
                .location(format!("{bucket}/{}", run.bundle))
                .build(),
            ProjectArtifacts::builder()
                .r#type(ArtifactsType::NoArtifacts)
                .build(),
            ProjectEnvironment::builder()
                .r#type(EnvironmentType::LinuxContainer)
                .image(&self.settings.image)
                .compute_type(ComputeType::from(compute))
                .build(),
        );
        let vpc = run.props.vpc.as_ref().map(|v| {
            aws_sdk_codebuild::types::VpcConfig::builder()
                .vpc_id(&v.vpc_id)
                .set_subnets(Some(v.subnets.clone()))
                .set_security_group_ids(Some(v.security_group_ids.clone()))
                .build()
        });
        let (Ok(source), Ok(artifacts), Ok(environment)) = built else {
            return Err(BuildError::Manifest {
                resource: run.resource.to_string(),
                message: "cannot describe the CodeBuild project".into(),
            });
        };
        tracing::info!(project = %run.project, vpc = run.props.vpc.is_some(), "Creating the CodeBuild project.");
        match client
            .create_project()
            .name(&run.project)
            .set_vpc_config(vpc)
            .description("protond: CodeBuild provisioning of Proton bundles")
            .source(source)
            .artifacts(artifacts)
            .environment(environment)
            .service_role(role)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(se)) if se.err().is_resource_already_exists_exception() => {
                Ok(())
            }
            Err(e) => Err(self.call_error("CreateProject", &e)),
        }
    }

    /// Starts the build of `run`; returns its id.
    async fn start(&self, run: &Run<'_>) -> Result<String, BuildError> {
        let client = self.client(run.role, run.region).await;
        let bucket = self.artifacts.as_ref().map_or("", Artifacts::bucket);
        let env = |name: &str, value: String| {
            EnvironmentVariable::builder()
                .name(name)
                .value(value)
                .r#type(EnvironmentVariableType::Plaintext)
                .build()
        };
        let vars: Result<Vec<_>, _> = [
            env("PROTOND_RESOURCE", run.resource.to_string()),
            env("PROTOND_DEPLOYMENT_ID", run.deployment_id.to_string()),
            env("PROTOND_ACTION", run.action.to_string()),
        ]
        .into_iter()
        .chain(run.props.variables.iter().map(|(name, value, kind)| {
            EnvironmentVariable::builder()
                .name(name)
                .value(value)
                .r#type(EnvironmentVariableType::from(kind.as_str()))
                .build()
        }))
        .collect();
        let p = &run.props;
        let artifacts = ProjectArtifacts::builder()
            .r#type(ArtifactsType::S3)
            .location(bucket)
            .path(&run.outputs_path)
            .name("outputs")
            .packaging(ArtifactPackaging::None)
            .namespace_type(ArtifactNamespace::None)
            .build();
        let (Ok(vars), Ok(artifacts)) = (vars, artifacts) else {
            return Err(BuildError::Manifest {
                resource: run.resource.to_string(),
                message: "cannot describe the build".into(),
            });
        };
        for attempt in 0..2 {
            let result = client
                .start_build()
                .project_name(&run.project)
                .source_type_override(SourceType::S3)
                .source_location_override(format!("{bucket}/{}", run.bundle))
                .buildspec_override(&run.buildspec)
                .image_override(&run.image)
                .environment_type_override(
                    p.environment_type
                        .as_deref()
                        .map_or(EnvironmentType::LinuxContainer, EnvironmentType::from),
                )
                .compute_type_override(ComputeType::from(
                    p.compute_type
                        .as_deref()
                        .unwrap_or(&self.settings.compute_type),
                ))
                .set_timeout_in_minutes_override(p.timeout)
                .set_queued_timeout_in_minutes_override(p.queued_timeout)
                .set_privileged_mode_override(p.privileged_mode)
                .set_image_pull_credentials_type_override(
                    p.image_pull_credentials_type
                        .as_deref()
                        .map(aws_sdk_codebuild::types::ImagePullCredentialsType::from),
                )
                .set_certificate_override(p.certificate.clone())
                .set_service_role_override(p.service_role.clone())
                .set_encryption_key_override(p.encryption_key.clone())
                .artifacts_override(artifacts.clone())
                .set_environment_variables_override(Some(vars.clone()))
                .idempotency_token(format!("protond-{}-{}", run.deployment_id, run.action))
                .send()
                .await;
            match result {
                Ok(out) => {
                    let id = out.build_value().and_then(|b| b.id()).unwrap_or_default();
                    tracing::info!(resource = %run.resource, build = %id, action = run.action, "Started a CodeBuild build.");
                    return Ok(id.to_string());
                }
                Err(SdkError::ServiceError(se))
                    if attempt == 0 && se.err().is_resource_not_found_exception() =>
                {
                    self.create_project(&client, run).await?;
                }
                Err(e) => return Err(self.call_error("StartBuild", &e)),
            }
        }
        Err(BuildError::Call {
            operation: "StartBuild",
            project: self.settings.project.clone(),
            message: "the project was created but is still not found".into(),
            retryable: true,
        })
    }

    /// Polls the build until it ends.
    async fn wait(&self, run: &Run<'_>, build: &str) -> Result<(), BuildError> {
        let client = self.client(run.role, run.region).await;
        let started = tokio::time::Instant::now();
        loop {
            let out = client
                .batch_get_builds()
                .ids(build)
                .send()
                .await
                .map_err(|e| self.call_error("BatchGetBuilds", &e))?;
            let state = out.builds().first().map_or(Outcome::Running, outcome);
            match state {
                Outcome::Succeeded => return Ok(()),
                Outcome::Failed {
                    status,
                    reasons,
                    logs,
                } => {
                    return Err(BuildError::Failed {
                        resource: run.resource.to_string(),
                        action: run.action,
                        build: build.to_string(),
                        status,
                        reasons,
                        logs,
                    });
                }
                Outcome::Running => {}
            }
            if started.elapsed() > self.settings.timeout {
                return Err(BuildError::Timeout {
                    resource: run.resource.to_string(),
                    build: build.to_string(),
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(self.poll_interval).await;
        }
    }

    fn folder(artifacts: &Artifacts, resource: &str) -> String {
        artifacts.folder("codebuild", &stack_name(resource))
    }

    async fn apply_job(
        &self,
        job: Job<'_>,
        documents: &[(String, String)],
    ) -> Result<Applied, BuildError> {
        let dep = job.deployment;
        let resource = dep.resource_id.as_str();
        let Some(artifacts) = &self.artifacts else {
            return Err(BuildError::NoBucket {
                resource: resource.to_string(),
            });
        };
        let manifest = documents
            .iter()
            .find(|(p, _)| p == MANIFEST_FILE)
            .ok_or_else(|| format!("the bundle has no {MANIFEST_FILE}"))
            .and_then(|(_, t)| Manifest::parse(t))
            .map_err(|message| BuildError::Manifest {
                resource: resource.to_string(),
                message,
            })?;
        let ctx: Value = documents
            .iter()
            .find(|(p, _)| p == INPUTS_FILE)
            .and_then(|(_, t)| serde_json::from_str(t).ok())
            .unwrap_or(Value::Null);
        let props = build_props(&manifest.project_properties, &ctx).map_err(|message| {
            BuildError::Manifest {
                resource: resource.to_string(),
                message,
            }
        })?;
        let mut all = String::new();
        for (p, t) in documents {
            all.push_str(&format!("{p}\0{t}\0"));
        }
        let folder = Self::folder(artifacts, resource);
        let bundle = format!("{folder}/bundle-{}/", sha256_hex(all.as_bytes()));
        let role = dep.placement.role_arn.as_deref();
        for (path, text) in documents {
            artifacts
                .put(role, &format!("{bundle}{path}"), text.clone().into_bytes())
                .await
                .map_err(|e| Self::artifact_error(resource, e))?;
        }
        let run = Run {
            resource,
            action: "provision",
            deployment_id: job.deployment_id,
            role,
            region: dep.placement.region.as_deref().unwrap_or(&self.region),
            outputs_path: format!("{folder}/{}", job.deployment_id),
            buildspec: buildspec(&manifest, &manifest.provision),
            image: props
                .image
                .clone()
                .or_else(|| manifest.image.clone())
                .unwrap_or_else(|| self.settings.image.clone()),
            bundle: bundle.clone(),
            project: project_for(&self.settings.project, &props),
            props,
        };
        let build = self.start(&run).await?;
        self.wait(&run, &build).await?;
        let key = format!("{}/outputs/{OUTPUTS_FILE}", run.outputs_path);
        let outputs = match artifacts
            .get(role, &key)
            .await
            .map_err(|e| Self::artifact_error(resource, e))?
        {
            Some(bytes) => parse_outputs(&bytes).map_err(|message| BuildError::Manifest {
                resource: resource.to_string(),
                message: format!("build {build}: {message}"),
            })?,
            None => BTreeMap::new(),
        };
        Ok(Applied::Deployed {
            outputs,
            stack_id: Some(format!("{STACK_ID_MARK}{}/{bundle}", artifacts.bucket())),
        })
    }

    async fn delete_job(&self, job: Job<'_>) -> Result<Applied, BuildError> {
        let dep = job.deployment;
        let resource = dep.resource_id.as_str();
        let Some(artifacts) = &self.artifacts else {
            return Err(BuildError::NoBucket {
                resource: resource.to_string(),
            });
        };
        let Some(bundle) = dep
            .placement
            .stack_id
            .as_deref()
            .and_then(|s| s.strip_prefix(STACK_ID_MARK))
            .and_then(|s| s.split_once('/'))
            .map(|(_, folder)| folder.to_string())
        else {
            // Never provisioned here: nothing to deprovision.
            return Ok(Applied::Deleted);
        };
        let role = dep.placement.role_arn.as_deref();
        let manifest = artifacts
            .get(role, &format!("{bundle}{MANIFEST_FILE}"))
            .await
            .map_err(|e| Self::artifact_error(resource, e))?
            .ok_or_else(|| {
                format!(
                    "the deployed bundle s3://{}/{bundle} has no {MANIFEST_FILE}: its deprovision commands are unknown; restore the object or delete the infrastructure by hand",
                    artifacts.bucket()
                )
            })
            .and_then(|bytes| Manifest::parse(&String::from_utf8_lossy(&bytes)))
            .map_err(|message| BuildError::Manifest {
                resource: resource.to_string(),
                message,
            })?;
        let ctx: Value = if manifest.project_properties.is_empty() {
            Value::Null
        } else {
            artifacts
                .get(role, &format!("{bundle}{INPUTS_FILE}"))
                .await
                .map_err(|e| Self::artifact_error(resource, e))?
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(Value::Null)
        };
        let props = build_props(&manifest.project_properties, &ctx).map_err(|message| {
            BuildError::Manifest {
                resource: resource.to_string(),
                message,
            }
        })?;
        let folder = Self::folder(artifacts, resource);
        let run = Run {
            resource,
            action: "deprovision",
            deployment_id: job.deployment_id,
            role,
            region: dep.placement.region.as_deref().unwrap_or(&self.region),
            outputs_path: format!("{folder}/{}", job.deployment_id),
            buildspec: buildspec(&manifest, &manifest.deprovision),
            image: props
                .image
                .clone()
                .or_else(|| manifest.image.clone())
                .unwrap_or_else(|| self.settings.image.clone()),
            bundle,
            project: project_for(&self.settings.project, &props),
            props,
        };
        let build = self.start(&run).await?;
        self.wait(&run, &build).await?;
        Ok(Applied::Deleted)
    }
}

impl Provisioner for CodeBuild {
    fn apply<'a>(
        &'a self,
        job: Job<'a>,
        documents: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<Applied, DeployError>> {
        Box::pin(async move { Ok(Box::pin(self.apply_job(job, documents)).await?) })
    }

    fn delete<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Result<Applied, DeployError>> {
        Box::pin(async move { Ok(Box::pin(self.delete_job(job)).await?) })
    }

    /// A build left running by an earlier process is not followed: the deployment counts as
    /// interrupted and runs again (the `provision` commands must be safe to repeat, as they
    /// were under Proton's retries).
    fn adopt<'a>(&'a self, _job: Job<'a>) -> BoxFuture<'a, Result<Applied, DeployError>> {
        Box::pin(async move { Ok(Applied::Interrupted) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_codebuild::types::{BuildPhase, BuildPhaseType, LogsLocation, PhaseContext};

    const MANIFEST: &str = "infrastructure:\n  templates:\n    - rendering_engine: codebuild\n      settings:\n        image: aws/codebuild/amazonlinux2-x86_64-standard:4.0\n        runtimes:\n          nodejs: 16\n        provision:\n          - npm install\n          - npm run cdk deploy -- --outputs-file proton-outputs.json\n        deprovision:\n          - npm run cdk destroy\n";

    #[test]
    fn manifests_are_recognised_and_checked() {
        assert!(is_codebuild_manifest(MANIFEST));
        assert!(!is_codebuild_manifest(
            "infrastructure:\n  templates:\n    - file: a.yaml\n      rendering_engine: jinja\n      template_language: cloudformation\n"
        ));
        let m = Manifest::parse(MANIFEST).expect("parses");
        assert_eq!(m.provision.len(), 2);
        assert_eq!(m.deprovision, ["npm run cdk destroy"]);
        let no_deprovision = MANIFEST.replace(
            "        deprovision:\n          - npm run cdk destroy\n",
            "",
        );
        let e = Manifest::parse(&no_deprovision).expect_err("no deprovision");
        assert!(e.contains("settings.deprovision lists no command"), "{e}");
    }

    /// The buildspec runs exactly the manifest's commands, installs its runtimes and hands
    /// `proton-outputs.json` back as the artifact.
    #[test]
    fn the_buildspec_runs_the_commands() {
        let m = Manifest::parse(MANIFEST).expect("parses");
        let spec: Value = serde_yaml::from_str(&buildspec(&m, &m.provision)).expect("yaml");
        assert_eq!(spec["version"], 0.2);
        assert_eq!(spec["phases"]["install"]["runtime-versions"]["nodejs"], 16);
        assert_eq!(
            spec["phases"]["build"]["commands"],
            serde_json::json!([
                "npm install",
                "npm run cdk deploy -- --outputs-file proton-outputs.json"
            ])
        );
        assert_eq!(
            spec["phases"]["post_build"]["commands"][0],
            "test -f proton-outputs.json || echo '{}' > proton-outputs.json"
        );
        assert_eq!(spec["artifacts"]["files"][0], OUTPUTS_FILE);
        let spec: Value = serde_yaml::from_str(&buildspec(&m, &m.deprovision)).expect("yaml");
        assert_eq!(
            spec["phases"]["build"]["commands"],
            serde_json::json!(["npm run cdk destroy"])
        );
    }

    #[test]
    fn outputs_in_every_form_proton_read() {
        let flat = parse_outputs(br#"{"VpcId": "vpc-1", "Port": 80}"#).expect("flat");
        assert_eq!(flat["VpcId"], "vpc-1");
        assert_eq!(flat["Port"], "80");
        let cdk = parse_outputs(br#"{"EnvStack": {"VpcId": "vpc-2"}}"#).expect("cdk");
        assert_eq!(cdk["VpcId"], "vpc-2");
        let list = parse_outputs(br#"[{"key": "VpcId", "valueString": "vpc-3"}]"#).expect("list");
        assert_eq!(list["VpcId"], "vpc-3");
        assert!(parse_outputs(b"not json").is_err());
        assert!(parse_outputs(b"[{\"name\": 1}]").is_err());
    }

    #[test]
    fn build_states_map_to_outcomes_with_the_log_location() {
        let build = |status: StatusType| {
            Build::builder()
                .id("p:1")
                .build_status(status)
                .phases(
                    BuildPhase::builder()
                        .phase_type(BuildPhaseType::Build)
                        .phase_status(StatusType::Failed)
                        .contexts(
                            PhaseContext::builder()
                                .status_code("COMMAND_EXECUTION_ERROR")
                                .message("Error while executing command: npm install. Reason: exit status 1")
                                .build(),
                        )
                        .build(),
                )
                .logs(
                    LogsLocation::builder()
                        .group_name("/aws/codebuild/protond-provisioning")
                        .stream_name("abc")
                        .deep_link("https://console.example/logs")
                        .build(),
                )
                .build()
        };
        assert_eq!(outcome(&build(StatusType::InProgress)), Outcome::Running);
        assert_eq!(outcome(&build(StatusType::Succeeded)), Outcome::Succeeded);
        for status in [
            StatusType::Failed,
            StatusType::Fault,
            StatusType::TimedOut,
            StatusType::Stopped,
        ] {
            let Outcome::Failed {
                status: s,
                reasons,
                logs,
            } = outcome(&build(status.clone()))
            else {
                panic!("{status:?} is a failure");
            };
            assert_eq!(s, status.as_str());
            assert!(reasons.contains("phase BUILD FAILED (COMMAND_EXECUTION_ERROR: Error while executing command: npm install"), "{reasons}");
            assert_eq!(
                logs,
                "CloudWatch Logs group /aws/codebuild/protond-provisioning, stream abc (https://console.example/logs)"
            );
        }
    }

    #[test]
    fn inputs_travel_with_the_bundle() {
        let ctx = serde_json::json!({"environment": {"name": "dev", "inputs": {"team": "a"}}});
        let docs = documents(
            &[
                ("manifest.yaml".into(), MANIFEST.into()),
                (INPUTS_FILE.into(), "stale".into()),
            ],
            &ctx,
        );
        assert_eq!(docs.len(), 2);
        let inputs: Value = serde_json::from_str(&docs[1].1).expect("json");
        assert_eq!(inputs, ctx);
    }

    /// `project_properties` as Proton's documentation writes them: values rendered with the
    /// inputs (a list input printed into a string becomes a list again), checked, each
    /// error naming its field.
    #[test]
    fn project_properties_are_rendered_and_checked() {
        let ctx = serde_json::json!({"environment": {"name": "dev", "inputs": {
            "vpc": "vpc-1", "subnets": ["subnet-a", "subnet-b"], "sgs": ["sg-1"]}}});
        let raw = |y: &str| -> BTreeMap<String, Value> {
            crate::catalog::yaml::from_str(y).expect("yaml")
        };
        let p = build_props(
            &raw("VpcConfig:\n  VpcId: \"{{ environment.inputs.vpc }}\"\n  Subnets: \"{{ environment.inputs.subnets }}\"\n  SecurityGroupIds: \"{{ environment.inputs.sgs }}\"\nTimeoutInMinutes: \"90\"\nEnvironment:\n  ComputeType: BUILD_GENERAL1_LARGE\n  PrivilegedMode: true\n  EnvironmentVariables:\n    - {Name: STAGE, Value: \"{{ environment.name }}\"}\n"),
            &ctx,
        )
        .expect("valid");
        assert_eq!(
            p.vpc,
            Some(Vpc {
                vpc_id: "vpc-1".into(),
                subnets: vec!["subnet-a".into(), "subnet-b".into()],
                security_group_ids: vec!["sg-1".into()],
            })
        );
        assert_eq!(p.timeout, Some(90));
        assert_eq!(p.compute_type.as_deref(), Some("BUILD_GENERAL1_LARGE"));
        assert_eq!(p.privileged_mode, Some(true));
        assert_eq!(
            p.variables,
            [(
                "STAGE".to_string(),
                "dev".to_string(),
                "PLAINTEXT".to_string()
            )]
        );
        let project = project_for("protond-provisioning", &p);
        assert!(
            project.starts_with("protond-provisioning-vpc-") && project.len() == 37,
            "{project}"
        );
        assert_eq!(
            project_for("protond-provisioning", &BuildProps::default()),
            "protond-provisioning"
        );
        // Python's list repr, as Proton's Jinja printed a list.
        let p = build_props(
            &raw("VpcConfig: {VpcId: v, Subnets: \"['s-1', 's-2']\", SecurityGroupIds: [g]}\n"),
            &ctx,
        )
        .expect("valid");
        assert_eq!(p.vpc.expect("vpc").subnets, ["s-1", "s-2"]);
        let at = "manifest.yaml: settings.project_properties";
        for (y, want) in [
            (
                "VpcConfig: {VpcId: v, Subnets: [s]}\n",
                format!("{at}.VpcConfig.SecurityGroupIds is missing"),
            ),
            (
                "TimeoutInMinutes: 3\n",
                format!("{at}.TimeoutInMinutes: 3 is outside CodeBuild's 5..=2160 minutes"),
            ),
            (
                "TimeoutInMinutes: soon\n",
                format!("{at}.TimeoutInMinutes: expected a whole number"),
            ),
            (
                "Environment: {PrivilegedMode: maybe}\n",
                format!("{at}.Environment.PrivilegedMode: expected true or false"),
            ),
            (
                "Environment: {EnvironmentVariables: [{Name: PROTOND_X, Value: y}]}\n",
                format!(
                    "{at}.Environment.EnvironmentVariables[0].Name: PROTOND_X is protond's own"
                ),
            ),
            (
                "VpcConfig: {VpcId: \"{{ environment.inputs.nope }}\", Subnets: [s], SecurityGroupIds: [g]}\n",
                format!("{at}.VpcConfig.VpcId"),
            ),
        ] {
            let e = build_props(&raw(y), &ctx).expect_err(&want);
            assert!(e.starts_with(&want), "{e}\nwanted: {want}");
        }
    }
}
