//! The desired state: template releases and spec files, checked for ownership and rendered.
//!
//! [`load`] reads the configured repos (blocking git work: run it off the async runtime) into
//! a [`Snapshot`]; [`compute`] turns a snapshot plus what is deployed into rendered
//! [`Resource`]s and the planner's [`plan::Desired`] rows. Ownership rules live here:
//!
//! * a service belongs to the repo it is deployed from: another repo declaring the same name
//!   is refused alone (a problem), and the owner keeps deploying; while the owner's repo is
//!   unknown, no other repo takes the service over. A name declared twice with no single
//!   declaring owner (new, or twice in the owning repo) is an error for both;
//! * environments only come from repos marked `platform = true`, and an environment name
//!   declared twice is an error for both;
//! * an environment may restrict which spec repos deploy into it (`allowed_service_repos`);
//! * an instance may only target an environment whose template major is in its service
//!   template's `compatible_environments`.
//!
//! A repo that fails to fetch or parse, or whose spec folder is suddenly empty, is *unknown*:
//! its deployed resources are never deleted because of it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::catalog::releases::{self, Catalog, TagPattern};
use crate::catalog::schema::InputKind;
use crate::catalog::{ComponentBundle, Infrastructure, Limits, TemplateKind};
use crate::config::Config;
use crate::plan::{self, DesiredState, ResourceKind, Version};
use crate::render::{self, EnvironmentInfo, InstanceInfo, ServiceInfo};
use crate::source::Mirror;
use crate::spec::{self, SpecFile};
use crate::state::ResourceRecord;

/// One spec file as read from a repo.
#[derive(Debug, Clone)]
pub struct SpecEntry {
    /// Path in the repo.
    pub path: String,
    /// The parsed spec, or every problem with it.
    pub spec: Result<SpecFile, Vec<String>>,
    /// The file's text (empty when it is not UTF-8 or not a regular file).
    pub text: String,
    /// Component folders the spec's instances attach, read at the same commit.
    pub components: BTreeMap<String, Result<ComponentBundle, Vec<String>>>,
}

/// One spec repo at its branch head.
#[derive(Debug, Clone)]
pub struct SpecRepoState {
    /// Repo name from the config.
    pub repo: String,
    /// Whether environments may be declared here.
    pub platform: bool,
    /// Branch head, when read.
    pub commit: Option<String>,
    /// Spec files.
    pub files: Vec<SpecEntry>,
    /// Why the repo is unknown (fetch or read failed, or the folder is unexpectedly empty).
    pub unknown: Option<String>,
}

/// Everything read from git in one cycle.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Releases of every template repo.
    pub catalog: Catalog,
    /// Template repos that could not be read at all (name, reason).
    pub template_repo_errors: Vec<(String, String)>,
    /// Spec repos.
    pub spec_repos: Vec<SpecRepoState>,
}

fn sync_or_open(url: &str, cache: &Path) -> Result<(Mirror, Option<String>), String> {
    match Mirror::sync(url, cache) {
        Ok(m) => Ok((m, None)),
        Err(fetch) => match Mirror::open(url, cache) {
            Ok(m) => Ok((
                m,
                Some(format!(
                    "fetch failed, using the last fetched state: {}",
                    crate::error_chain(&fetch)
                )),
            )),
            Err(_) => Err(crate::error_chain(&fetch)),
        },
    }
}

/// Reads every configured repo. Blocking. `previous` lets unchanged tags reuse their
/// validated bundles. `fetch` false only opens existing mirrors (no network).
#[must_use]
pub fn load(config: &Config, previous: Option<&Catalog>, fetch: bool) -> Snapshot {
    load_inner(config, previous, None, &Fetch::from(fetch))
}

/// Which repos a read fetches first; the others are read from their mirrors as last
/// fetched (a repo never fetched is fetched anyway).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Fetch {
    /// Fetch nothing.
    #[default]
    None,
    /// Fetch every repo.
    All,
    /// Fetch these repos (by configured name).
    Only(BTreeSet<String>),
}

impl From<bool> for Fetch {
    fn from(all: bool) -> Self {
        if all { Self::All } else { Self::None }
    }
}

impl Fetch {
    /// Whether the repo named `name` is fetched.
    #[must_use]
    pub fn wants(&self, name: &str) -> bool {
        match self {
            Self::None => false,
            Self::All => true,
            Self::Only(names) => names.contains(name),
        }
    }

    /// Both requests at once: `All` wins, named repos add up.
    #[must_use]
    pub fn merge(self, other: Self) -> Self {
        match (self, other) {
            (Self::All, _) | (_, Self::All) => Self::All,
            (Self::None, x) | (x, Self::None) => x,
            (Self::Only(mut a), Self::Only(b)) => {
                a.extend(b);
                Self::Only(a)
            }
        }
    }
}

/// Like [`load`], but spec repos whose branch head is the commit `previous` read are not read
/// again: their parsed files are reused (a commit's content never changes).
#[must_use]
pub fn load_cached(config: &Config, previous: Option<&Snapshot>, fetch: bool) -> Snapshot {
    load_inner(
        config,
        previous.map(|p| &p.catalog),
        previous,
        &Fetch::from(fetch),
    )
}

/// Like [`load_cached`], fetching only what `fetch` names first.
#[must_use]
pub fn load_cached_with(config: &Config, previous: Option<&Snapshot>, fetch: &Fetch) -> Snapshot {
    load_inner(config, previous.map(|p| &p.catalog), previous, fetch)
}

fn load_inner(
    config: &Config,
    previous: Option<&Catalog>,
    previous_specs: Option<&Snapshot>,
    fetch: &Fetch,
) -> Snapshot {
    let cache = config.data_dir.join("git");
    let limits = Limits::default();
    let mut snapshot = Snapshot::default();
    let open = |name: &str, url: &str| -> Result<(Mirror, Option<String>), String> {
        if fetch.wants(name) {
            return sync_or_open(url, &cache);
        }
        match Mirror::open(url, &cache) {
            Ok(m) => Ok((m, None)),
            // Never fetched yet: fetch it now, when fetching at all.
            Err(_) if *fetch != Fetch::None => sync_or_open(url, &cache),
            Err(e) => Err(e.to_string()),
        }
    };
    for repo in &config.template_repos {
        let pattern = match TagPattern::new(&repo.tag_pattern) {
            Ok(p) => p,
            Err(e) => {
                snapshot.template_repo_errors.push((repo.name.clone(), e));
                continue;
            }
        };
        let (mirror, warning) = match open(&repo.name, &repo.url) {
            Ok(x) => x,
            Err(e) => {
                snapshot.template_repo_errors.push((repo.name.clone(), e));
                continue;
            }
        };
        if let Some(w) = warning {
            tracing::warn!(repo = %repo.name, "{w}");
        }
        match mirror.tags() {
            Ok(tags) => {
                let cat = releases::read_releases(
                    &repo.name,
                    &mirror,
                    &tags,
                    &pattern,
                    &limits,
                    previous,
                    &|f| render::check_syntax(f).err().map(|e| e.to_string()),
                );
                snapshot.catalog.merge(cat);
            }
            Err(e) => snapshot
                .template_repo_errors
                .push((repo.name.clone(), e.to_string())),
        }
    }
    for repo in &config.spec_repos {
        let mut state = SpecRepoState {
            repo: repo.name.clone(),
            platform: repo.platform,
            commit: None,
            files: Vec::new(),
            unknown: None,
        };
        match open(&repo.name, &repo.url) {
            Err(e) => state.unknown = Some(e),
            Ok((mirror, warning)) => {
                if let Some(w) = warning {
                    tracing::warn!(repo = %repo.name, "{w}");
                }
                let head = mirror.branch_head(&repo.branch).ok().map(|h| h.to_string());
                let reusable = previous_specs.and_then(|p| {
                    p.spec_repos.iter().find(|s| {
                        s.repo == repo.name
                            && s.unknown.is_none()
                            && s.commit.is_some()
                            && s.commit == head
                    })
                });
                match reusable {
                    Some(prev) => state = prev.clone(),
                    None => read_spec_repo(
                        &mirror,
                        &repo.branch,
                        &repo.folder,
                        repo.allow_empty,
                        &mut state,
                    ),
                }
            }
        }
        snapshot.spec_repos.push(state);
    }
    snapshot
}

fn read_spec_repo(
    mirror: &Mirror,
    branch: &str,
    folder: &str,
    allow_empty: bool,
    state: &mut SpecRepoState,
) {
    let head = match mirror.branch_head(branch) {
        Ok(h) => h,
        Err(e) => {
            state.unknown = Some(e.to_string());
            return;
        }
    };
    state.commit = Some(head.to_string());
    let entries = match mirror.read_tree(head, folder, 10_000, 64 * 1024 * 1024) {
        Ok(e) => e,
        // A missing folder is an empty one (refused below unless allowed).
        Err(crate::source::SourceError::FolderNotFound { .. }) => Vec::new(),
        Err(e) => {
            state.unknown = Some(e.to_string());
            return;
        }
    };
    let specs: Vec<_> = entries
        .into_iter()
        .filter(|e| {
            let p = e.path.to_ascii_lowercase();
            (p.ends_with(".yaml") || p.ends_with(".yml")) && !p.starts_with("components/")
        })
        .collect();
    if specs.is_empty() && !allow_empty {
        state.unknown = Some(format!(
            "the spec folder {folder}/ on {branch} is empty or missing; its resources are kept (set allow_empty = true to let an empty folder delete them)"
        ));
        return;
    }
    for e in specs {
        let path = format!("{folder}/{}", e.path);
        let stem = Path::new(&e.path)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut text = String::new();
        let spec = match e.kind {
            crate::source::EntryKind::Blob(b) | crate::source::EntryKind::Executable(b) => {
                match String::from_utf8(b) {
                    Ok(t) => {
                        text = t;
                        spec::parse(&text, &path, &stem)
                            .map_err(|es| es.iter().map(ToString::to_string).collect())
                    }
                    Err(_) => Err(vec![format!("{path}: not UTF-8 text")]),
                }
            }
            _ => Err(vec![format!(
                "{path}: is a link or submodule; spec files must be regular files"
            )]),
        };
        let mut components = BTreeMap::new();
        if let Ok(SpecFile::Service(s)) = &spec {
            for inst in &s.instances {
                if let Some(c) = &inst.component {
                    components
                        .entry(c.path.clone())
                        .or_insert_with(|| read_component(mirror, head, &c.path));
                }
            }
        }
        state.files.push(SpecEntry {
            path,
            spec,
            text,
            components,
        });
    }
}

fn read_component(
    mirror: &Mirror,
    commit: gix::ObjectId,
    path: &str,
) -> Result<ComponentBundle, Vec<String>> {
    let limits = Limits::default();
    let entries = mirror
        .read_tree(commit, path, limits.max_files, limits.max_total_bytes)
        .map_err(|e| vec![e.to_string()])?;
    if entries.is_empty() {
        return Err(vec![format!("component folder {path}/ does not exist")]);
    }
    let files = releases::files_from_tree(path, entries)?;
    let component = ComponentBundle::load(&files)
        .map_err(|es| es.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    for f in &component.infrastructure.files {
        render::check_syntax(f).map_err(|e| vec![format!("{path}/{e}")])?;
    }
    Ok(component)
}

/// A rendered resource, ready to deploy.
#[derive(Debug, Clone)]
pub struct Resource {
    /// Planner row.
    pub desired: plan::Desired,
    /// Environment the resource lives in (its own name for environments).
    pub environment: Option<String>,
    /// Rendered documents (path, text).
    pub documents: Vec<(String, String)>,
    /// Spec commit.
    pub spec_commit: Option<String>,
    /// For instances: start the service's pipeline once this deploys.
    pub start_pipeline: bool,
}

/// The result of [`compute`].
#[derive(Debug, Clone, Default)]
pub struct DesiredSet {
    /// Resources, rendered where possible.
    pub resources: Vec<Resource>,
    /// Repos whose deployed resources must not be deleted this cycle.
    pub unknown_repos: BTreeSet<String>,
    /// Problems that are not tied to one resource (bad spec files, unknown repos).
    pub problems: Vec<String>,
}

impl DesiredSet {
    /// The planner's input.
    #[must_use]
    pub fn desired(&self) -> Vec<plan::Desired> {
        self.resources.iter().map(|r| r.desired.clone()).collect()
    }
}

/// Hash of a JSON value in canonical form (serde_json sorts object keys by default).
#[must_use]
pub fn hash_json(v: &Value) -> String {
    hex::encode(Sha256::digest(v.to_string().as_bytes()))
}

/// Hash of rendered documents, normalised: YAML documents are compared by content, not
/// by formatting or comments.
#[must_use]
pub fn hash_documents(docs: &[(String, String)]) -> String {
    let mut h = Sha256::new();
    for (path, text) in docs {
        h.update(path.as_bytes());
        h.update([0]);
        match serde_yaml::from_str::<serde_yaml::Value>(text)
            .ok()
            .and_then(|v| serde_json::to_string(&v).ok())
        {
            Some(canonical) => h.update(canonical.as_bytes()),
            None => h.update(text.as_bytes()),
        }
        h.update([0]);
    }
    hex::encode(h.finalize())
}

/// Stable resource ids.
#[must_use]
pub fn environment_id(env: &str) -> String {
    format!("environment/{env}")
}
/// Id of a service instance.
#[must_use]
pub fn instance_id(service: &str, instance: &str) -> String {
    format!("service_instance/{service}/{instance}")
}
/// Id of a service pipeline.
#[must_use]
pub fn pipeline_id(service: &str) -> String {
    format!("pipeline/{service}")
}
/// Id of a component attached to an instance.
#[must_use]
pub fn component_id(service: &str, instance: &str) -> String {
    format!("component/{service}/{instance}")
}

struct Builder<'a> {
    out: DesiredSet,
    deployed: BTreeMap<&'a str, &'a ResourceRecord>,
    account_id: String,
    pins: &'a BTreeMap<String, Version>,
}

impl Builder<'_> {
    /// The release a held-back resource stays on, when the caller pinned it.
    fn pinned<'c>(
        &self,
        catalog: &'c Catalog,
        id: &str,
        template: &str,
    ) -> Option<&'c releases::Release> {
        let v = self.pins.get(id)?;
        catalog.resolve(template, v.major, Some(v.minor))
    }

    // One row per field of the planner row; a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        id: String,
        kind: ResourceKind,
        repo: &str,
        template: &str,
        version: Version,
        inputs: &Value,
        environment: Option<String>,
        spec_commit: Option<&String>,
        state: Result<Vec<(String, String)>, DesiredState>,
    ) {
        let (state, documents) = match state {
            Ok(docs) => (
                DesiredState::Ready {
                    rendered_hash: hash_documents(&docs),
                },
                docs,
            ),
            Err(s) => (s, Vec::new()),
        };
        self.out.resources.push(Resource {
            desired: plan::Desired {
                id,
                kind,
                repo: repo.to_string(),
                template: template.to_string(),
                version,
                input_hash: hash_json(inputs),
                state,
            },
            environment,
            documents,
            spec_commit: spec_commit.cloned(),
            start_pipeline: false,
        });
    }

    fn outputs_of(&self, id: &str) -> Option<BTreeMap<String, String>> {
        self.deployed.get(id).map(|r| r.outputs.clone())
    }
}

fn render_all(infra: &Infrastructure, ctx: &Value) -> Result<Vec<(String, String)>, DesiredState> {
    let mut docs = infra
        .files
        .iter()
        .map(|f| {
            render::render_file(f, ctx)
                .map(|text| (f.path.clone(), text))
                .map_err(|e| DesiredState::Invalid {
                    error: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if infra.language() == crate::catalog::Language::Terraform {
        // Proton's generated inputs travel with the files (and count in the rendered hash,
        // so new environment outputs redeploy dependants).
        docs.extend(crate::provision::terraform::generated_files(ctx));
    }
    Ok(docs)
}

/// Schema violations of one spec file, one per line.
fn violations(path: &str, vs: &[crate::catalog::schema::Violation]) -> String {
    vs.iter()
        .map(|v| format!("{path}: {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn invalid(error: impl Into<String>) -> DesiredState {
    DesiredState::Invalid {
        error: error.into(),
    }
}

struct EnvDecl<'a> {
    repo: &'a str,
    path: &'a str,
    spec: &'a spec::EnvironmentSpec,
    commit: Option<&'a String>,
}

/// Adds a directly defined component's planner row.
fn push_component(
    b: &mut Builder<'_>,
    d: &SvcDecl<'_>,
    id: String,
    c: &spec::ComponentRef,
    environment: &str,
    state: Result<Vec<(String, String)>, DesiredState>,
) {
    b.push(
        id,
        ResourceKind::Component,
        d.repo,
        &format!("component:{}", c.name),
        Version { major: 0, minor: 0 },
        &Value::String(c.path.clone()),
        Some(environment.to_string()),
        d.commit,
        state,
    );
}

struct SvcDecl<'a> {
    repo: &'a str,
    path: &'a str,
    spec: &'a spec::ServiceSpec,
    commit: Option<&'a String>,
    components: &'a BTreeMap<String, Result<ComponentBundle, Vec<String>>>,
}

/// The last [`compute_pinned`] result and what it was computed from: a cycle whose inputs
/// are unchanged (same spec commits, releases, deployed records and pins) reuses it instead
/// of rendering everything again.
#[derive(Debug, Default)]
pub struct ComputeCache {
    key: Option<String>,
    set: Option<DesiredSet>,
}

/// What [`compute_pinned`] reads, as one hash.
fn compute_key(
    snapshot: &Snapshot,
    deployed: &[ResourceRecord],
    account_id: &str,
    pins: &BTreeMap<String, Version>,
) -> String {
    let mut h = Sha256::new();
    let mut put = |s: &str| {
        h.update(s.as_bytes());
        h.update([0]);
    };
    put(account_id);
    for (repo, reason) in &snapshot.template_repo_errors {
        put(repo);
        put(reason);
    }
    for r in snapshot.catalog.releases() {
        put(&r.template);
        put(&r.version.to_string());
        put(&r.commit);
    }
    for s in &snapshot.spec_repos {
        put(&s.repo);
        put(s.commit.as_deref().unwrap_or("-"));
        put(s.unknown.as_deref().unwrap_or("-"));
    }
    for d in deployed {
        put(&d.id);
        put(d.kind.as_str());
        put(&d.repo);
        put(&d.version.to_string());
        put(&d.template);
        put(&d.input_hash);
        put(&d.rendered_hash);
        put(d.status.as_str());
        put(d.environment.as_deref().unwrap_or("-"));
        for (k, v) in &d.outputs {
            put(k);
            put(v);
        }
    }
    for (id, v) in pins {
        put(id);
        put(&v.to_string());
    }
    hex::encode(h.finalize())
}

impl ComputeCache {
    /// [`compute_pinned`], or the previous result when nothing it reads has changed.
    pub fn compute(
        &mut self,
        snapshot: &Snapshot,
        deployed: &[ResourceRecord],
        account_id: &str,
        pins: &BTreeMap<String, Version>,
    ) -> DesiredSet {
        let key = compute_key(snapshot, deployed, account_id, pins);
        if self.key.as_deref() == Some(key.as_str())
            && let Some(set) = &self.set
        {
            return set.clone();
        }
        let set = compute_pinned(snapshot, deployed, account_id, pins);
        self.key = Some(key);
        self.set = Some(set.clone());
        set
    }
}

/// Checks ownership and renders every resource. Pure apart from logging.
#[must_use]
pub fn compute(snapshot: &Snapshot, deployed: &[ResourceRecord], account_id: &str) -> DesiredSet {
    compute_pinned(snapshot, deployed, account_id, &BTreeMap::new())
}

/// Like [`compute`], but the resources in `pins` stay on the given version instead of the
/// newest minor: used for resources whose minor rollout is held back, so that their spec
/// changes still deploy.
#[must_use]
pub fn compute_pinned(
    snapshot: &Snapshot,
    deployed: &[ResourceRecord],
    account_id: &str,
    pins: &BTreeMap<String, Version>,
) -> DesiredSet {
    let mut b = Builder {
        out: DesiredSet::default(),
        deployed: deployed.iter().map(|r| (r.id.as_str(), r)).collect(),
        account_id: account_id.to_string(),
        pins,
    };
    let catalog = &snapshot.catalog;
    for (repo, reason) in &snapshot.template_repo_errors {
        b.out
            .problems
            .push(format!("template repo {repo}: {reason}"));
    }
    let template_repos_failed = !snapshot.template_repo_errors.is_empty();

    // Collect declarations, applying the ownership rules.
    let mut envs: BTreeMap<&str, Vec<EnvDecl>> = BTreeMap::new();
    let mut svcs: BTreeMap<&str, Vec<SvcDecl>> = BTreeMap::new();
    for repo in &snapshot.spec_repos {
        if let Some(reason) = &repo.unknown {
            b.out.unknown_repos.insert(repo.repo.clone());
            b.out.problems.push(format!(
                "spec repo {}: {reason}; its resources are unknown and will not be changed or deleted",
                repo.repo
            ));
            continue;
        }
        for file in &repo.files {
            match &file.spec {
                Err(errors) => {
                    b.out.unknown_repos.insert(repo.repo.clone());
                    b.out.problems.extend(errors.iter().cloned());
                }
                Ok(SpecFile::Environment(e)) => {
                    if !repo.platform {
                        b.out.problems.push(format!(
                            "{}: environments may only be declared in platform repos; move it, or set platform = true for spec repo {:?}",
                            file.path, repo.repo
                        ));
                        b.out.unknown_repos.insert(repo.repo.clone());
                        continue;
                    }
                    envs.entry(e.name.as_str()).or_default().push(EnvDecl {
                        repo: &repo.repo,
                        path: &file.path,
                        spec: e,
                        commit: repo.commit.as_ref(),
                    });
                }
                Ok(SpecFile::Service(s)) => {
                    svcs.entry(s.name.as_str()).or_default().push(SvcDecl {
                        repo: &repo.repo,
                        path: &file.path,
                        spec: s,
                        commit: repo.commit.as_ref(),
                        components: &file.components,
                    });
                }
            }
        }
    }

    // Environments.
    let mut env_templates: BTreeMap<&str, (String, u32)> = BTreeMap::new();
    let mut env_allowed: BTreeMap<&str, Option<&Vec<String>>> = BTreeMap::new();
    for (name, decls) in &envs {
        if decls.len() > 1 {
            let places: Vec<String> = decls
                .iter()
                .map(|d| format!("{}:{}", d.repo, d.path))
                .collect();
            // One resource per name, carried by the declaration of the repo it is deployed
            // from (or the first).
            let deployed_repo = b
                .deployed
                .get(environment_id(name).as_str())
                .map(|r| r.repo.clone());
            let carrier = decls
                .iter()
                .find(|d| Some(d.repo) == deployed_repo.as_deref())
                .or_else(|| decls.first());
            if let Some(d) = carrier {
                b.push(
                    environment_id(name),
                    ResourceKind::Environment,
                    d.repo,
                    d.spec.template.as_ref().map_or("", |t| t.name.as_str()),
                    Version { major: 0, minor: 0 },
                    &Value::Null,
                    Some((*name).to_string()),
                    d.commit,
                    Err(invalid(format!(
                        "environment {name:?} is declared more than once ({}); a name belongs to exactly one spec file",
                        places.join(", ")
                    ))),
                );
            }
            continue;
        }
        let d = &decls[0];
        let Some(t) = &d.spec.template else {
            b.push(
                environment_id(name),
                ResourceKind::Environment,
                d.repo,
                "",
                Version { major: 0, minor: 0 },
                &Value::Null,
                Some((*name).to_string()),
                d.commit,
                Err(invalid(format!(
                    "{}: template: missing; add `template: {{name: <environment-template>, major: N}}`",
                    d.path
                ))),
            );
            continue;
        };
        env_templates.insert(name, (t.name.clone(), t.major));
        env_allowed.insert(name, d.spec.allowed_service_repos.as_ref());
        let release = b
            .pinned(catalog, &environment_id(name), &t.name)
            .or_else(|| catalog.resolve(&t.name, t.major, t.minor));
        let (version, state, inputs) = match release {
            None => (
                Version {
                    major: t.major,
                    minor: t.minor.unwrap_or(0),
                },
                Err(if template_repos_failed && !catalog.knows(&t.name) {
                    invalid(format!(
                        "template {t} is not available: a template repo could not be read"
                    ))
                } else {
                    invalid(format!(
                        "{}: template: no registered release of {t}; tag one (e.g. {}/v{}.0)",
                        d.path, t.name, t.major
                    ))
                }),
                d.spec.inputs.clone(),
            ),
            Some(r) if r.bundle.kind != TemplateKind::Environment => (
                r.version,
                Err(invalid(format!(
                    "{}: template: {} is a service template",
                    d.path, t.name
                ))),
                d.spec.inputs.clone(),
            ),
            Some(r) => {
                match r
                    .bundle
                    .schema
                    .validate(InputKind::Environment, &d.spec.inputs, "spec")
                {
                    Err(vs) => (
                        r.version,
                        Err(invalid(violations(d.path, &vs))),
                        d.spec.inputs.clone(),
                    ),
                    Ok(inputs) => {
                        let info = EnvironmentInfo {
                            name: (*name).to_string(),
                            inputs: inputs.clone(),
                            outputs: BTreeMap::new(),
                            account_id: d
                                .spec
                                .account_id
                                .clone()
                                .unwrap_or_else(|| b.account_id.clone()),
                        };
                        (
                            r.version,
                            render_all(
                                &r.bundle.infrastructure,
                                &render::environment_context(&info),
                            ),
                            inputs,
                        )
                    }
                }
            }
        };
        b.push(
            environment_id(name),
            ResourceKind::Environment,
            d.repo,
            &t.name,
            version,
            &inputs,
            Some((*name).to_string()),
            d.commit,
            state,
        );
    }

    // Services.
    for (name, decls) in &svcs {
        // A service already deployed from one repo belongs to it: a declaration elsewhere
        // is refused alone, and the owner keeps deploying.
        let prefix = format!("service_instance/{name}/");
        // Records are keyed by id, so the service's instances are one sorted range.
        let owners: BTreeSet<&str> = b
            .deployed
            .range(prefix.as_str()..)
            .take_while(|(id, _)| id.starts_with(&prefix))
            .map(|(_, r)| r.repo.as_str())
            .collect();
        let owned: Vec<_> = decls.iter().filter(|d| owners.contains(d.repo)).collect();
        // Its repo cannot be read now (a spec file there does not parse, say): it may still
        // declare the service, so no other repo may take it over meanwhile.
        let unreadable: Vec<&str> = owners
            .iter()
            .copied()
            .filter(|r| b.out.unknown_repos.contains(*r))
            .collect();
        if owned.is_empty() && !unreadable.is_empty() {
            for d in decls {
                b.out.problems.push(format!(
                    "{}:{}: name: service {name:?} is deployed from spec repo {:?}, which cannot be read now; this file may take it over once that repo is readable and no longer declares it",
                    d.repo,
                    d.path,
                    unreadable.join(", ")
                ));
                b.out.unknown_repos.insert(d.repo.to_string());
            }
            continue;
        }
        if decls.len() > 1 && owned.len() == 1 {
            let owner = owned[0];
            for d in decls.iter().filter(|d| d.repo != owner.repo) {
                b.out.problems.push(format!(
                    "{}:{}: name: service {name:?} belongs to spec repo {:?} ({}), which deployed it; rename the service in this file, or remove the file",
                    d.repo, d.path, owner.repo, owner.path
                ));
                // What this file declared before is unknown now: delete nothing of its repo.
                b.out.unknown_repos.insert(d.repo.to_string());
            }
            service(
                &mut b,
                catalog,
                name,
                owner,
                &env_templates,
                &env_allowed,
                template_repos_failed,
            );
            continue;
        }
        if decls.len() > 1 {
            let places: Vec<String> = decls
                .iter()
                .map(|d| format!("{}:{}", d.repo, d.path))
                .collect();
            for d in decls {
                for inst in &d.spec.instances {
                    b.push(
                        instance_id(name, &inst.name),
                        ResourceKind::ServiceInstance,
                        d.repo,
                        d.spec.template.as_ref().map_or("", |t| t.name.as_str()),
                        Version { major: 0, minor: 0 },
                        &Value::Null,
                        Some(inst.environment.clone()),
                        d.commit,
                        Err(invalid(format!(
                            "service {name:?} is declared by more than one spec file ({}); a service belongs to exactly one repo",
                            places.join(", ")
                        ))),
                    );
                }
                // Keep everything the clashing repos deployed.
                b.out.unknown_repos.insert(d.repo.to_string());
            }
            continue;
        }
        service(
            &mut b,
            catalog,
            name,
            &decls[0],
            &env_templates,
            &env_allowed,
            template_repos_failed,
        );
    }
    // Services that ask for their pipeline to start after an instance deploys.
    let starters: BTreeSet<String> = snapshot
        .spec_repos
        .iter()
        .flat_map(|r| &r.files)
        .filter_map(|f| match &f.spec {
            Ok(SpecFile::Service(s)) if s.start_pipeline_on_deploy => {
                Some(format!("service_instance/{}/", s.name))
            }
            _ => None,
        })
        .collect();
    if !starters.is_empty() {
        for r in &mut b.out.resources {
            r.start_pipeline = starters
                .iter()
                .any(|p| r.desired.id.starts_with(p.as_str()));
        }
    }
    b.out
}

#[allow(clippy::too_many_lines)]
fn service(
    b: &mut Builder<'_>,
    catalog: &Catalog,
    name: &str,
    d: &SvcDecl<'_>,
    env_templates: &BTreeMap<&str, (String, u32)>,
    env_allowed: &BTreeMap<&str, Option<&Vec<String>>>,
    template_repos_failed: bool,
) {
    let fail_all = |b: &mut Builder<'_>, template: &str, version: Version, msg: String| {
        for inst in &d.spec.instances {
            b.push(
                instance_id(name, &inst.name),
                ResourceKind::ServiceInstance,
                d.repo,
                template,
                version,
                &inst.inputs,
                Some(inst.environment.clone()),
                d.commit,
                Err(invalid(msg.clone())),
            );
        }
    };
    let Some(t) = &d.spec.template else {
        fail_all(
            b,
            "",
            Version { major: 0, minor: 0 },
            format!(
                "{}: template: missing; add `template: {{name: <service-template>, major: N}}`",
                d.path
            ),
        );
        return;
    };
    let Some(release) = catalog.resolve(&t.name, t.major, t.minor) else {
        let msg = if template_repos_failed && !catalog.knows(&t.name) {
            format!("template {t} is not available: a template repo could not be read")
        } else {
            format!(
                "{}: template: no registered release of {t}; tag one (e.g. {}/v{}.0)",
                d.path, t.name, t.major
            )
        };
        fail_all(
            b,
            &t.name,
            Version {
                major: t.major,
                minor: t.minor.unwrap_or(0),
            },
            msg,
        );
        return;
    };
    let bundle = &release.bundle;
    if bundle.kind != TemplateKind::Service {
        fail_all(
            b,
            &t.name,
            release.version,
            format!(
                "{}: template: {} is an environment template",
                d.path, t.name
            ),
        );
        return;
    }
    let service = ServiceInfo {
        name: name.to_string(),
        branch_name: "main".into(),
        repository_id: d.repo.to_string(),
        repository_connection_arn: String::new(),
    };
    let mut infos: Vec<InstanceInfo> = Vec::new();
    let mut all_deployed = true;
    for (i, inst) in d.spec.instances.iter().enumerate() {
        let id = instance_id(name, &inst.name);
        let env_id = environment_id(&inst.environment);
        let release = b.pinned(catalog, &id, &t.name).unwrap_or(release);
        let bundle = &release.bundle;
        let check = || -> Result<Value, String> {
            let Some((env_t, env_major)) = env_templates.get(inst.environment.as_str()) else {
                return Err(format!(
                    "{}: instances[{i}].environment: environment {:?} has no valid declaration in a platform repo (it is missing, declared twice, or invalid: see the environment's own error)",
                    d.path, inst.environment
                ));
            };
            if let Some(Some(allowed)) = env_allowed.get(inst.environment.as_str())
                && !allowed.iter().any(|r| r == d.repo)
            {
                return Err(format!(
                    "{}: instances[{i}].environment: environment {:?} only accepts services from {} (its allowed_service_repos); repo {:?} is not allowed: pick another environment, or ask the platform team to add the repo there",
                    d.path,
                    inst.environment,
                    allowed.join(", "),
                    d.repo
                ));
            }
            if !bundle
                .compatible_environments
                .iter()
                .any(|c| &c.name == env_t && c.major == *env_major)
            {
                let compatible: Vec<String> = bundle
                    .compatible_environments
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                return Err(format!(
                    "{}: instances[{i}].environment: {:?} runs {env_t}:{env_major}, which {} v{} is not compatible with (compatible: {})",
                    d.path,
                    inst.environment,
                    t.name,
                    release.version.major,
                    compatible.join(", ")
                ));
            }
            if inst.component.is_some() && !bundle.supports_components() {
                return Err(format!(
                    "{}: instances[{i}].component: {} v{} does not accept components (add DIRECTLY_DEFINED to supported_component_sources)",
                    d.path, t.name, release.version.major
                ));
            }
            bundle
                .schema
                .validate(
                    InputKind::Service,
                    &inst.inputs,
                    &format!("instances[{i}].spec"),
                )
                .map_err(|vs| violations(d.path, &vs))
        };
        let inputs = match check() {
            Ok(v) => v,
            Err(msg) => {
                all_deployed = false;
                // Its component stays declared (and so is never deleted) while the
                // instance is invalid.
                if let Some(c) = &inst.component {
                    push_component(
                        b,
                        d,
                        component_id(name, &inst.name),
                        c,
                        &inst.environment,
                        Err(invalid(format!("its instance {id} is invalid: {msg}"))),
                    );
                }
                b.push(
                    id,
                    ResourceKind::ServiceInstance,
                    d.repo,
                    &t.name,
                    release.version,
                    &inst.inputs,
                    Some(inst.environment.clone()),
                    d.commit,
                    Err(invalid(msg)),
                );
                continue;
            }
        };
        let env_outputs = b.outputs_of(&env_id);
        let env_info = EnvironmentInfo {
            name: inst.environment.clone(),
            inputs: Value::Object(serde_json::Map::new()),
            outputs: env_outputs.clone().unwrap_or_default(),
            account_id: b.account_id.clone(),
        };
        let mut info = InstanceInfo {
            name: inst.name.clone(),
            inputs: inputs.clone(),
            outputs: b.outputs_of(&id).unwrap_or_default(),
            environment: env_info,
            component_outputs: BTreeMap::new(),
        };
        // Component first: it needs the environment, and the instance needs its outputs.
        let mut blocked_on = Vec::new();
        if env_outputs.is_none() {
            blocked_on.push(env_id.clone());
        }
        if let Some(c) = &inst.component {
            let cid = component_id(name, &inst.name);
            let state = match d.components.get(&c.path) {
                None => Err(invalid(format!(
                    "{}: component folder {} was not read",
                    d.path, c.path
                ))),
                Some(Err(es)) => Err(invalid(es.join("\n"))),
                Some(Ok(_)) if env_outputs.is_none() => Err(DesiredState::Blocked {
                    on: vec![env_id.clone()],
                }),
                Some(Ok(component)) => {
                    let ctx = render::component_context(
                        &service,
                        &info,
                        &c.name,
                        &Value::Object(serde_json::Map::new()),
                    );
                    render_all(&component.infrastructure, &ctx)
                }
            };
            push_component(b, d, cid.clone(), c, &inst.environment, state);
            match b.outputs_of(&cid) {
                Some(o) => info.component_outputs = o,
                None => blocked_on.push(cid),
            }
        }
        let state = if blocked_on.is_empty() {
            render_all(
                &bundle.infrastructure,
                &render::instance_context(&service, &info),
            )
        } else {
            Err(DesiredState::Blocked { on: blocked_on })
        };
        if b.outputs_of(&id).is_none() {
            all_deployed = false;
        }
        b.push(
            id,
            ResourceKind::ServiceInstance,
            d.repo,
            &t.name,
            release.version,
            &inputs,
            Some(inst.environment.clone()),
            d.commit,
            state,
        );
        infos.push(info);
    }
    let release = b
        .pinned(catalog, &pipeline_id(name), &t.name)
        .unwrap_or(release);
    let bundle = &release.bundle;
    if let (Some(pipeline), Some(pipeline_inputs)) = (&bundle.pipeline, &d.spec.pipeline) {
        let id = pipeline_id(name);
        let (inputs, state) =
            match bundle
                .schema
                .validate(InputKind::Pipeline, pipeline_inputs, "pipeline")
            {
                Err(vs) => (
                    pipeline_inputs.clone(),
                    Err(invalid(violations(d.path, &vs))),
                ),
                Ok(inputs) if !all_deployed => {
                    let on = d
                        .spec
                        .instances
                        .iter()
                        .map(|i| instance_id(name, &i.name))
                        .collect();
                    (inputs, Err(DesiredState::Blocked { on }))
                }
                Ok(inputs) => {
                    let ctx = render::pipeline_context(&service, &inputs, &infos);
                    let state = render_all(pipeline, &ctx);
                    (inputs, state)
                }
            };
        b.push(
            id,
            ResourceKind::Pipeline,
            d.repo,
            &t.name,
            release.version,
            &inputs,
            None,
            d.commit,
            state,
        );
    } else if d.spec.pipeline.is_some() && bundle.pipeline.is_none() {
        b.out.problems.push(format!(
            "{}: pipeline: {} v{} has no pipeline_infrastructure; the pipeline block is ignored",
            d.path, t.name, release.version.major
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::Fetch;

    #[test]
    fn fetch_requests_merge() {
        let only = |names: &[&str]| Fetch::Only(names.iter().map(|s| s.to_string()).collect());
        assert_eq!(Fetch::None.merge(only(&["a"])), only(&["a"]));
        assert_eq!(only(&["a"]).merge(only(&["b"])), only(&["a", "b"]));
        assert_eq!(only(&["a"]).merge(Fetch::All), Fetch::All);
        assert_eq!(Fetch::All.merge(Fetch::None), Fetch::All);
        assert!(only(&["a"]).wants("a") && !only(&["a"]).wants("b"));
        assert!(!Fetch::None.wants("a") && Fetch::All.wants("a"));
    }
}
