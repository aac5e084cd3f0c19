//! Drafts protond spec files for what AWS Proton ran (`protond import --write-specs`).
//!
//! The best source is a JSON export of Proton's API saved before the shutdown: the outputs
//! of `aws proton get-environment`, `list-environments`, `get-service`, `list-services`,
//! `list-service-instances`, `get-service-instance` and `get-environment-account-connection`.
//! Their `spec` fields hold Proton's spec YAML (the inputs); names, template names and
//! major/minor versions, environment links and the source repository come from the other
//! fields. Without an export, the drafts are made from the Proton stacks found (their tags
//! name environments, services, instances and templates), and every value only the export
//! could give is the placeholder [`crate::spec::PLACEHOLDER`]: such a file fails validation
//! until someone fills it in.
//!
//! One file per environment (`environments/<name>.yaml`) and per service
//! (`services/<name>.yaml`), in protond's format (Proton's spec plus the template header).
//! Pure: the caller reads the export and writes the files.

use std::collections::BTreeMap;

use serde_json::Value;
use serde_yaml::{Mapping, Value as Yaml};

use super::matching::{ProtonTarget, arn_resource, proton_tag};
use crate::spec::PLACEHOLDER;

/// What the export (or the stacks) say about one environment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnvironmentDraft {
    /// The environment's name.
    pub name: String,
    /// Its template's name.
    pub template: Option<String>,
    /// Major and minor version Proton ran.
    pub version: Option<(u32, u32)>,
    /// Proton's spec YAML.
    pub spec: Option<String>,
    /// The account it was deployed to (an environment account connection's account).
    pub account_id: Option<String>,
    /// The role of its environment account connection.
    pub role_arn: Option<String>,
}

/// What the export (or the stacks) say about one service instance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceDraft {
    /// The instance's name.
    pub name: String,
    /// The environment it runs in.
    pub environment: Option<String>,
    /// Major and minor version Proton ran.
    pub version: Option<(u32, u32)>,
    /// Proton's spec YAML (the whole service spec, or the instance's own).
    pub spec: Option<String>,
}

/// What the export (or the stacks) say about one service.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceDraft {
    /// The service's name.
    pub name: String,
    /// Its template's name.
    pub template: Option<String>,
    /// Proton's spec YAML (pipeline and instances).
    pub spec: Option<String>,
    /// The pipeline's major and minor version, when it has a pipeline.
    pub pipeline_version: Option<(u32, u32)>,
    /// Whether it has a pipeline (a `pipeline` in the export, or a pipeline stack).
    pub pipeline: bool,
    /// Its instances, by name.
    pub instances: BTreeMap<String, InstanceDraft>,
    /// Source repository (`repositoryId`), branch and connection, as Proton knew them.
    pub source: Option<(String, String, String)>,
}

/// Everything known about what Proton ran.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Drafts {
    /// Environments by name.
    pub environments: BTreeMap<String, EnvironmentDraft>,
    /// Services by name.
    pub services: BTreeMap<String, ServiceDraft>,
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn version(v: &Value) -> Option<(u32, u32)> {
    let n = |k: &str| {
        v.get(k).and_then(|x| match x {
            Value::String(s) => s.parse().ok(),
            Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            _ => None,
        })
    };
    Some((
        n("templateMajorVersion")?,
        n("templateMinorVersion").unwrap_or(0),
    ))
}

/// Why an export document was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{origin}: not an AWS Proton API output (expected the JSON of get-environment, list-environments, get-service, list-services, get-service-instance, list-service-instances or get-environment-account-connection; found keys {keys})"
)]
pub struct ExportError {
    /// The file (and position, for an array item).
    pub origin: String,
    /// The document's top-level keys.
    pub keys: String,
}

impl Drafts {
    /// Adds one document of the export (`origin` names it in errors). Later documents fill
    /// what earlier ones left out; a `get-*` output wins over a `list-*` summary.
    ///
    /// # Errors
    ///
    /// [`ExportError`] for a document that is none of the outputs above.
    pub fn add_export(&mut self, doc: &Value, origin: &str) -> Result<(), ExportError> {
        let mut used = false;
        if let Some(e) = doc.get("environment") {
            self.add_environment(e, true);
            used = true;
        }
        for e in doc
            .get("environments")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.add_environment(e, false);
            used = true;
        }
        if let Some(s) = doc.get("service") {
            self.add_service(s);
            used = true;
        }
        for s in doc
            .get("services")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.add_service(s);
            used = true;
        }
        if let Some(i) = doc.get("serviceInstance") {
            self.add_instance(i, true);
            used = true;
        }
        for i in doc
            .get("serviceInstances")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.add_instance(i, false);
            used = true;
        }
        if let Some(c) = doc.get("environmentAccountConnection") {
            if let Some(name) = text(c, "environmentName") {
                let e = self.environment(&name);
                e.role_arn = text(c, "roleArn").or(e.role_arn.take());
                e.account_id = text(c, "environmentAccountId").or(e.account_id.take());
            }
            used = true;
        }
        if used {
            return Ok(());
        }
        let keys = doc.as_object().map_or_else(
            || "none (not an object)".into(),
            |m| m.keys().cloned().collect::<Vec<_>>().join(", "),
        );
        Err(ExportError {
            origin: origin.to_string(),
            keys,
        })
    }

    fn environment(&mut self, name: &str) -> &mut EnvironmentDraft {
        self.environments
            .entry(name.to_string())
            .or_insert_with(|| EnvironmentDraft {
                name: name.to_string(),
                ..EnvironmentDraft::default()
            })
    }

    fn service(&mut self, name: &str) -> &mut ServiceDraft {
        self.services
            .entry(name.to_string())
            .or_insert_with(|| ServiceDraft {
                name: name.to_string(),
                ..ServiceDraft::default()
            })
    }

    fn add_environment(&mut self, v: &Value, full: bool) {
        let Some(name) = text(v, "name") else { return };
        let e = self.environment(&name);
        let keep = |new: Option<String>, old: &mut Option<String>| {
            if full || old.is_none() {
                *old = new.or(old.take());
            }
        };
        keep(text(v, "templateName"), &mut e.template);
        keep(text(v, "spec"), &mut e.spec);
        keep(text(v, "environmentAccountId"), &mut e.account_id);
        if full || e.version.is_none() {
            e.version = version(v).or(e.version);
        }
    }

    fn add_service(&mut self, v: &Value) {
        let Some(name) = text(v, "name") else { return };
        let s = self.service(&name);
        s.template = text(v, "templateName").or(s.template.take());
        s.spec = text(v, "spec").or(s.spec.take());
        if let Some(p) = v.get("pipeline").filter(|p| p.is_object()) {
            s.pipeline = true;
            s.pipeline_version = version(p).or(s.pipeline_version);
        }
        if let Some(repo) = text(v, "repositoryId") {
            s.source = Some((
                repo,
                text(v, "branchName").unwrap_or_default(),
                text(v, "repositoryConnectionArn").unwrap_or_default(),
            ));
        }
    }

    fn add_instance(&mut self, v: &Value, full: bool) {
        let (Some(service), Some(name)) = (text(v, "serviceName"), text(v, "name")) else {
            return;
        };
        let s = self.service(&service);
        if s.template.is_none() {
            s.template = text(v, "templateName");
        }
        let i = s
            .instances
            .entry(name.clone())
            .or_insert_with(|| InstanceDraft {
                name,
                ..InstanceDraft::default()
            });
        i.environment = text(v, "environmentName").or(i.environment.take());
        if full || i.version.is_none() {
            i.version = version(v).or(i.version);
        }
        if full || i.spec.is_none() {
            i.spec = text(v, "spec").or(i.spec.take());
        }
    }

    /// Adds what a Proton stack's tags say (`target`, and its template's ARN in
    /// `aws:proton:template`), for drafts made without an export.
    pub fn add_stack(&mut self, target: &ProtonTarget, tags: &BTreeMap<String, String>) {
        let template = proton_tag(tags, "template").map(template_of);
        match target {
            ProtonTarget::Environment { name } => {
                let e = self.environment(name);
                if let Some((t, v)) = template {
                    e.template = e.template.take().or(Some(t));
                    e.version = e.version.or(v);
                }
            }
            ProtonTarget::ServiceInstance {
                service,
                instance,
                environment,
            } => {
                let s = self.service(service);
                if let Some((t, _)) = &template {
                    s.template = s.template.take().or(Some(t.clone()));
                }
                let i = s.instances.entry(instance.clone()).or_default();
                i.name.clone_from(instance);
                i.environment = i.environment.take().or(environment.clone());
                i.version = i.version.or(template.and_then(|(_, v)| v));
            }
            ProtonTarget::Pipeline { service } => {
                let s = self.service(service);
                s.pipeline = true;
                if let Some((t, v)) = template {
                    s.template = s.template.take().or(Some(t));
                    s.pipeline_version = s.pipeline_version.or(v);
                }
            }
            ProtonTarget::Component { .. } => {}
        }
    }

    /// The spec files: (path below the output folder, text).
    #[must_use]
    pub fn files(&self, from_export: bool) -> Vec<(String, String)> {
        let source = if from_export {
            "AWS Proton's API export"
        } else {
            "the tags of the Proton stacks found (no export given: fill in every FILL-ME)"
        };
        let mut out = Vec::new();
        for e in self.environments.values() {
            out.push((
                format!("environments/{}.yaml", e.name),
                environment_file(e, source),
            ));
        }
        for s in self.services.values() {
            out.push((format!("services/{}.yaml", s.name), service_file(s, source)));
        }
        out
    }
}

/// The template name and, when the ARN names one, the version of a template ARN
/// (`…:environment-template/basic-env` or `…:service-template/web:1.2`).
fn template_of(arn: &str) -> (String, Option<(u32, u32)>) {
    let rest = arn_resource(arn);
    let rest = rest.split_once('/').map_or(rest, |(_, r)| r);
    match rest.split_once(':') {
        Some((name, v)) => {
            let parsed = v
                .split_once('.')
                .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
            (name.to_string(), parsed)
        }
        None => (rest.to_string(), None),
    }
}

/// Proton's spec YAML parsed (an empty mapping when absent or unreadable).
fn spec_yaml(spec: Option<&str>) -> Mapping {
    spec.and_then(|s| crate::catalog::yaml::from_str::<Mapping>(s).ok())
        .unwrap_or_default()
}

fn key(k: &str) -> Yaml {
    Yaml::String(k.to_string())
}

/// A mapping of one placeholder input, saying what to put there.
fn placeholder_inputs(what: &str) -> Yaml {
    let mut m = Mapping::new();
    m.insert(
        key("fill_me"),
        Yaml::String(format!("{PLACEHOLDER}: replace with {what}")),
    );
    Yaml::Mapping(m)
}

fn template_header(name: Option<&String>, major: Option<u32>) -> Yaml {
    let mut t = Mapping::new();
    t.insert(
        key("name"),
        Yaml::String(
            name.cloned()
                .unwrap_or_else(|| format!("{PLACEHOLDER}: the template's name")),
        ),
    );
    t.insert(
        key("major"),
        major.map_or_else(
            || Yaml::String(format!("{PLACEHOLDER}: the major version Proton ran")),
            |m| Yaml::Number(m.into()),
        ),
    );
    Yaml::Mapping(t)
}

fn yaml_text(m: Mapping) -> String {
    serde_yaml::to_string(&Yaml::Mapping(m)).unwrap_or_default()
}

fn environment_file(e: &EnvironmentDraft, source: &str) -> String {
    let mut m = Mapping::new();
    m.insert(key("proton"), key("EnvironmentSpec"));
    m.insert(key("name"), Yaml::String(e.name.clone()));
    m.insert(
        key("template"),
        template_header(e.template.as_ref(), e.version.map(|v| v.0)),
    );
    if let Some(a) = &e.account_id {
        m.insert(key("account_id"), Yaml::String(a.clone()));
    }
    if let Some(r) = &e.role_arn {
        m.insert(key("role_arn"), Yaml::String(r.clone()));
    }
    let spec = spec_yaml(e.spec.as_deref());
    let inputs = match spec.get("spec") {
        Some(v) if e.spec.is_some() => v.clone(),
        _ if e.spec.is_some() => Yaml::Mapping(Mapping::new()),
        _ => placeholder_inputs(
            "the inputs Proton deployed it with (`spec` of aws proton get-environment)",
        ),
    };
    m.insert(key("spec"), inputs);
    format!(
        "# Drafted by `protond import --write-specs` from {source}.\n{}# stage: <dev|staging|prod>   (rollout order of minor updates: set it)\n{}",
        ran(e.template.as_ref(), e.version),
        yaml_text(m)
    )
}

/// The comment saying which version Proton ran.
fn ran(template: Option<&String>, version: Option<(u32, u32)>) -> String {
    match (template, version) {
        (Some(t), Some((major, minor))) => format!(
            "# Proton ran {t} {major}.{minor}. protond follows the newest minor of the major; add `minor: {minor}` to `template` to stay on {major}.{minor}.\n"
        ),
        _ => String::new(),
    }
}

fn service_file(s: &ServiceDraft, source: &str) -> String {
    let spec = spec_yaml(s.spec.as_deref());
    let major = s
        .pipeline_version
        .or_else(|| s.instances.values().filter_map(|i| i.version).max())
        .map(|v| v.0);
    let mut m = Mapping::new();
    m.insert(key("proton"), key("ServiceSpec"));
    m.insert(key("name"), Yaml::String(s.name.clone()));
    m.insert(key("template"), template_header(s.template.as_ref(), major));
    if let Some((repo, branch, connection)) = &s.source {
        for (k, v) in [
            ("repository_id", repo),
            ("branch_name", branch),
            ("repository_connection_arn", connection),
        ] {
            if !v.is_empty() {
                m.insert(key(k), Yaml::String(v.clone()));
            }
        }
    }
    if s.pipeline || spec.contains_key("pipeline") {
        let inputs = match spec.get("pipeline") {
            Some(v) => v.clone(),
            None if s.spec.is_some() => Yaml::Mapping(Mapping::new()),
            None => placeholder_inputs(
                "the pipeline inputs (`pipeline` in `spec` of aws proton get-service)",
            ),
        };
        m.insert(key("pipeline"), inputs);
    }
    let listed: Vec<&Yaml> = spec
        .get("instances")
        .and_then(Yaml::as_sequence)
        .map(|s| s.iter().collect())
        .unwrap_or_default();
    let mut instances = Vec::new();
    let mut names: Vec<String> = s.instances.keys().cloned().collect();
    for item in &listed {
        if let Some(n) = item.get("name").and_then(Yaml::as_str)
            && !names.iter().any(|x| x == n)
        {
            names.push(n.to_string());
        }
    }
    for name in names {
        instances.push(Yaml::Mapping(instance_entry(s, &listed, &name)));
    }
    m.insert(key("instances"), Yaml::Sequence(instances));
    let version = s
        .pipeline_version
        .or_else(|| s.instances.values().filter_map(|i| i.version).max());
    format!(
        "# Drafted by `protond import --write-specs` from {source}.\n{}{}",
        ran(s.template.as_ref(), version),
        yaml_text(m)
    )
}

/// One instance of a service spec: name, environment and inputs, from the service's spec
/// (`listed`), else the instance's own spec, else placeholders.
fn instance_entry(s: &ServiceDraft, listed: &[&Yaml], name: &str) -> Mapping {
    let from_service = listed
        .iter()
        .find(|i| i.get("name").and_then(Yaml::as_str) == Some(name));
    let draft = s.instances.get(name);
    let from_instance = draft.and_then(|d| {
        let own = spec_yaml(d.spec.as_deref());
        let whole = own
            .get("instances")
            .and_then(Yaml::as_sequence)
            .and_then(|items| {
                items
                    .iter()
                    .find(|i| i.get("name").and_then(Yaml::as_str) == Some(name))
                    .cloned()
            });
        whole.or_else(|| own.contains_key("spec").then(|| Yaml::Mapping(own.clone())))
    });
    let entry = from_service.map(|x| (*x).clone()).or(from_instance);
    let environment = entry
        .as_ref()
        .and_then(|e| e.get("environment"))
        .and_then(Yaml::as_str)
        .map(str::to_string)
        .or_else(|| draft.and_then(|d| d.environment.clone()));
    let mut m = Mapping::new();
    m.insert(key("name"), Yaml::String(name.to_string()));
    m.insert(
        key("environment"),
        Yaml::String(environment.unwrap_or_else(|| format!("{PLACEHOLDER}: its environment"))),
    );
    let inputs = match entry.as_ref().and_then(|e| e.get("spec")) {
        Some(v) => v.clone(),
        None if entry.is_some() => Yaml::Mapping(Mapping::new()),
        None => {
            placeholder_inputs("the instance's inputs (`spec` of aws proton get-service-instance)")
        }
    };
    m.insert(key("spec"), inputs);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn export() -> Drafts {
        let mut d = Drafts::default();
        let docs = [
            json!({"environments": [{"name": "dev", "templateName": "basic-env", "templateMajorVersion": "1", "templateMinorVersion": "0"}]}),
            json!({"environment": {"name": "dev", "templateName": "basic-env", "templateMajorVersion": "1", "templateMinorVersion": "2",
                "environmentAccountId": "111122223333",
                "spec": "proton: EnvironmentSpec\n\nspec:\n  team: platform\n  retention_days: 4\n"}}),
            json!({"environmentAccountConnection": {"environmentName": "dev", "roleArn": "arn:aws:iam::111122223333:role/proton", "environmentAccountId": "111122223333"}}),
            json!({"service": {"name": "payments", "templateName": "web-svc", "repositoryId": "org/payments", "branchName": "main",
                "pipeline": {"templateMajorVersion": "1", "templateMinorVersion": "0"},
                "spec": "proton: ServiceSpec\npipeline:\n  dockerfile: Dockerfile\ninstances:\n  - name: payments-dev\n    environment: dev\n    spec:\n      port: 8080\n"}}),
            json!({"serviceInstances": [{"name": "payments-dev", "serviceName": "payments", "environmentName": "dev", "templateName": "web-svc", "templateMajorVersion": "1", "templateMinorVersion": "0"}]}),
        ];
        for (i, doc) in docs.iter().enumerate() {
            d.add_export(doc, &format!("doc {i}"))
                .expect("a Proton output");
        }
        d
    }

    #[test]
    fn an_export_becomes_spec_files() {
        let files = export().files(true);
        let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            vec!["environments/dev.yaml", "services/payments.yaml"]
        );
        let env = crate::spec::parse(&files[0].1, "dev.yaml", "dev").expect("valid");
        let crate::spec::SpecFile::Environment(e) = env else {
            panic!("an environment")
        };
        assert_eq!(
            e.template.map(|t| (t.name, t.major)),
            Some(("basic-env".into(), 1))
        );
        assert_eq!(
            e.inputs.value(),
            json!({"team": "platform", "retention_days": 4})
        );
        assert_eq!(
            e.role_arn.as_deref(),
            Some("arn:aws:iam::111122223333:role/proton")
        );
        assert_eq!(e.account_id.as_deref(), Some("111122223333"));
        assert!(
            files[0].1.contains("Proton ran basic-env 1.2"),
            "{}",
            files[0].1
        );
        let svc = crate::spec::parse(&files[1].1, "payments.yaml", "payments").expect("valid");
        let crate::spec::SpecFile::Service(s) = svc else {
            panic!("a service")
        };
        assert_eq!(s.pipeline, Some(json!({"dockerfile": "Dockerfile"})));
        assert_eq!(s.instances.len(), 1);
        assert_eq!(s.instances[0].environment, "dev");
        assert_eq!(s.instances[0].inputs.value(), json!({"port": 8080}));
        assert_eq!(s.source.repository_id.as_deref(), Some("org/payments"));
        assert_eq!(s.source.branch_name.as_deref(), Some("main"));
        assert_eq!(s.source.repository_connection_arn, None);
    }

    #[test]
    fn stacks_alone_give_placeholders_that_fail_validation() {
        let mut d = Drafts::default();
        let arn = "arn:aws:proton:us-east-1:1";
        let tags = |pairs: &[(&str, String)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_string(), v.clone()))
                .collect()
        };
        d.add_stack(
            &ProtonTarget::Environment { name: "dev".into() },
            &tags(&[(
                "aws:proton:template",
                format!("{arn}:environment-template/basic-env"),
            )]),
        );
        d.add_stack(
            &ProtonTarget::ServiceInstance {
                service: "payments".into(),
                instance: "payments-dev".into(),
                environment: Some("dev".into()),
            },
            &tags(&[(
                "aws:proton:template",
                format!("{arn}:service-template/web-svc:1.3"),
            )]),
        );
        let files = d.files(false);
        for (path, text) in &files {
            assert!(text.contains(PLACEHOLDER), "{path}: {text}");
            assert!(
                crate::spec::parse(text, path, "x").is_err(),
                "{path} validates: {text}"
            );
        }
        // The service's major came from the template ARN; only its inputs are missing.
        let errs = crate::spec::parse(&files[1].1, "s.yaml", "s").expect_err("placeholder");
        assert!(
            errs.iter().all(|e| e.message.contains("placeholder")),
            "{errs:?}"
        );
        assert!(files[1].1.contains("environment: dev"), "{}", files[1].1);
    }

    #[test]
    fn other_documents_are_refused_with_their_keys() {
        let err = Drafts::default()
            .add_export(&json!({"stacks": []}), "export/x.json")
            .expect_err("not Proton");
        assert!(
            err.to_string()
                .starts_with("export/x.json: not an AWS Proton API output")
        );
        assert!(err.to_string().ends_with("found keys stacks)"));
        assert_eq!(
            template_of("arn:aws:proton:r:a:service-template/web:1.2"),
            ("web".into(), Some((1, 2)))
        );
    }
}
