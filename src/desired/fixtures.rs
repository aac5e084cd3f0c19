//! Test fixtures for `desired`: spec repos, templates and records built in memory (no git, no
//! store), so the rules can be table-tested.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{SpecEntry, SpecRepoState};
use crate::catalog::releases::{Catalog, Release};
use crate::catalog::{Bundle, BundleFiles};
use crate::plan::{ResourceKind, Version};
use crate::spec;
use crate::state::ResourceRecord;

/// A readable spec repo on `main` holding `files` (path, YAML text).
pub fn repo(name: &str, platform: bool, files: &[(&str, &str)]) -> SpecRepoState {
    SpecRepoState {
        repo: name.to_string(),
        branch: "main".to_string(),
        platform,
        commit: Some(format!("{name}-head")),
        files: files.iter().map(|(path, text)| entry(path, text)).collect(),
        unknown: None,
        approvals: Ok(Vec::new()),
    }
}

/// A spec repo that could not be read.
pub fn unknown_repo(name: &str, reason: &str) -> SpecRepoState {
    SpecRepoState {
        unknown: Some(reason.to_string()),
        commit: None,
        ..repo(name, false, &[])
    }
}

fn entry(path: &str, text: &str) -> SpecEntry {
    SpecEntry {
        path: path.to_string(),
        spec: spec::parse(text, path, "x")
            .map_err(|es| es.iter().map(ToString::to_string).collect()),
        text: text.to_string(),
        components: BTreeMap::new(),
    }
}

/// An environment spec following `basic-env` v1.
pub fn env(name: &str) -> String {
    format!(
        "proton: EnvironmentSpec\nname: {name}\ntemplate: {{name: basic-env, major: 1}}\nspec: {{}}\n"
    )
}

/// A service spec following `web-svc` major `major` (and minor `minor`, when pinned), one
/// instance per (instance, environment), built from `acme/<name>` at `main`.
pub fn svc(name: &str, major: u32, minor: Option<u32>, instances: &[(&str, &str)]) -> String {
    let minor = minor.map(|m| format!(", minor: {m}")).unwrap_or_default();
    let mut text = format!(
        "proton: ServiceSpec\nname: {name}\ntemplate: {{name: web-svc, major: {major}{minor}}}\nrepository_id: acme/{name}\nbranch_name: main\npipeline: {{}}\ninstances:\n"
    );
    for (inst, env) in instances {
        text.push_str(&format!(
            "  - name: {inst}\n    environment: {env}\n    spec: {{}}\n"
        ));
    }
    text
}

const SCHEMA_ENV: &str = "schema:\n  format:\n    openapi: \"3.0.0\"\n  environment_input_type: \"EnvInput\"\n  types:\n    EnvInput:\n      type: object\n      properties:\n        cidr:\n          type: string\n          default: 10.0.0.0/16\n";
const SCHEMA_SVC: &str = "schema:\n  format:\n    openapi: \"3.0.0\"\n  service_input_type: \"SvcInput\"\n  pipeline_input_type: \"PipeInput\"\n  types:\n    SvcInput:\n      type: object\n      properties:\n        port:\n          type: number\n          default: 80\n    PipeInput:\n      type: object\n      properties:\n        dockerfile:\n          type: string\n          default: Dockerfile\n";
const MANIFEST: &str = "infrastructure:\n  templates:\n    - file: \"cloudformation.yaml\"\n      rendering_engine: jinja\n      template_language: cloudformation\n";
const ENV_CFN: &str = "Resources:\n  T:\n    Type: AWS::SNS::Topic\nOutputs:\n  Name:\n    Value: '{{ environment.name }}'\n";
const PIPE_CFN: &str = "Resources:\n  T:\n    Type: AWS::SNS::Topic\nOutputs:\n  Name:\n    Value: '{{ service.name }}'\n";
/// The instance file shows what the context says of the service's source.
const SVC_CFN: &str = "Resources:\n  T:\n    Type: AWS::SNS::Topic\nOutputs:\n  Branch:\n    Value: '{{ service.branch_name }}'\n  Repo:\n    Value: '{{ service.repository_id }}'\n";

fn bundle(name: &str, major: u32, entries: &[(&str, &str)]) -> Arc<Bundle> {
    let mut files = BundleFiles::new("fixture");
    for (p, c) in entries {
        files.insert(p, c.as_bytes().to_vec()).expect("safe path");
    }
    Arc::new(Bundle::load(name, major, &files).expect("valid fixture bundle"))
}

fn release(template: &str, major: u32, minor: u32, bundle: Arc<Bundle>) -> Release {
    Release {
        repo: "templates".into(),
        template: template.into(),
        version: Version { major, minor },
        tag: format!("{template}/v{major}.{minor}"),
        commit: format!("{template}-{major}-{minor}"),
        notes: None,
        bundle,
        state: crate::catalog::releases::ReleaseState::Current,
        replaced: None,
    }
}

/// `basic-env` at these versions.
pub fn env_releases(versions: &[(u32, u32)]) -> Vec<Release> {
    let files = [
        ("schema/schema.yaml", SCHEMA_ENV),
        ("infrastructure/manifest.yaml", MANIFEST),
        ("infrastructure/cloudformation.yaml", ENV_CFN),
    ];
    versions
        .iter()
        .map(|&(major, minor)| {
            release(
                "basic-env",
                major,
                minor,
                bundle("basic-env", major, &files),
            )
        })
        .collect()
}

/// `web-svc` at these versions, compatible with `basic-env` v1.
pub fn svc_releases(versions: &[(u32, u32)]) -> Vec<Release> {
    let files = [
        ("schema/schema.yaml", SCHEMA_SVC),
        ("instance_infrastructure/manifest.yaml", MANIFEST),
        ("instance_infrastructure/cloudformation.yaml", SVC_CFN),
        ("pipeline_infrastructure/manifest.yaml", MANIFEST),
        ("pipeline_infrastructure/cloudformation.yaml", PIPE_CFN),
        (
            ".template-registration.yaml",
            "compatible_environments:\n  - basic-env:1\n",
        ),
    ];
    versions
        .iter()
        .map(|&(major, minor)| release("web-svc", major, minor, bundle("web-svc", major, &files)))
        .collect()
}

/// A catalogue of `basic-env` v1.0 and `web-svc` at `svc_versions`.
pub fn catalog(svc_versions: &[(u32, u32)]) -> Catalog {
    let mut catalog = Catalog::default();
    for r in env_releases(&[(1, 0)])
        .into_iter()
        .chain(svc_releases(svc_versions))
    {
        catalog.insert(r);
    }
    catalog
}

/// A deployed record of `id` (kind from its prefix) from `repo`, with one output.
pub fn record(id: &str, repo: &str) -> ResourceRecord {
    let kind = [
        ("environment/", ResourceKind::Environment),
        ("pipeline/", ResourceKind::Pipeline),
        ("component/", ResourceKind::Component),
    ]
    .into_iter()
    .find(|(prefix, _)| id.starts_with(prefix))
    .map_or(ResourceKind::ServiceInstance, |(_, kind)| kind);
    ResourceRecord {
        id: id.to_string(),
        kind,
        repo: repo.to_string(),
        environment: None,
        template: String::new(),
        version: Version { major: 1, minor: 0 },
        input_hash: String::new(),
        rendered_hash: String::new(),
        outputs: crate::state::Outputs::from([("Out".to_string(), "x".to_string())]),
        status: crate::model::ResourceStatus::Deployed,
        spec_commit: None,
        updated_at: String::new(),
        placement: crate::model::Placement::default(),
    }
}
