//! The desired state: template releases and spec files, checked for ownership and rendered.
//!
//! [`load`] reads the configured repos (blocking git work: run it off the async runtime) into
//! a [`Snapshot`]; [`compute`] turns a snapshot plus what is deployed into rendered
//! [`Resource`]s and the planner's [`plan::Desired`] rows. `compute` does no I/O and never
//! deletes anything itself: it only tells the planner which repos are unknown. Ownership
//! rules (decided in `ownership`, a pure function):
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
//! its deployed resources are never deleted because of it. So is a repo that deployed
//! resources and is no longer in the config: absence is never permission. Only a repo a
//! person retired (`retired = true`, or `protond forget`; [`Snapshot::retired_repos`]) has
//! its resources deleted, by the planner, within the deletion budget. So is a repo whose declarations
//! were refused by the rules above: what it declared before cannot be told from what it
//! declares now.
//!
//! Layout: `load` (git → [`Snapshot`]), `ownership` (who may declare what), `resolve`
//! (template releases, pins, placement checks), `context` (rendering contexts, shared with
//! `protond render`), `rows` (planner rows), `environment` and `service` (rendering one
//! declaration), `cache` ([`ComputeCache`]).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::catalog::ComponentBundle;
use crate::catalog::releases::Catalog;
use crate::plan::{self, Version};
use crate::spec::SpecFile;
use crate::state::ResourceRecord;

mod cache;
mod context;
mod customer;
mod environment;
mod load;
mod memo;
mod ownership;
mod parallel;
pub(crate) use parallel::map_ordered;
mod resolve;
mod rows;
mod service;
mod versions;

pub use cache::{ComputeCache, limit_allocator_arenas, release_freed_memory};
pub use context::{ServiceContext, SpecSource, environment_context};
pub use load::{load, load_cached, load_cached_with, load_shared};
pub use versions::{Resolved, resolve_versions};

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
    /// The configured branch the specs are read from.
    pub branch: String,
    /// Whether environments may be declared here.
    pub platform: bool,
    /// Branch head, when read.
    pub commit: Option<String>,
    /// Spec files, shared with the next read while the branch head stays the same.
    pub files: SpecFiles,
    /// Why the repo is unknown (fetch or read failed, or the folder is unexpectedly empty).
    pub unknown: Option<String>,
    /// The approvals of its `.protond/approvals.yaml` (none when absent), or every problem
    /// with the file (the rest of the repo is read as usual).
    pub approvals: Result<Vec<crate::gate::Approval>, Vec<String>>,
}

/// A spec repo's files, shared: a read that finds the same branch head reuses them without
/// copying. Reads as a `Vec`; a write copies first when they are shared.
#[derive(Debug, Clone, Default)]
pub struct SpecFiles(std::sync::Arc<Vec<SpecEntry>>);

impl From<Vec<SpecEntry>> for SpecFiles {
    fn from(mut files: Vec<SpecEntry>) -> Self {
        // Kept until the repo's branch moves: no room beyond the files (a vector grown by
        // pushes is up to twice their size, 4 MB over 5,000 repos).
        files.shrink_to_fit();
        Self(std::sync::Arc::new(files))
    }
}

impl FromIterator<SpecEntry> for SpecFiles {
    fn from_iter<I: IntoIterator<Item = SpecEntry>>(iter: I) -> Self {
        iter.into_iter().collect::<Vec<_>>().into()
    }
}

impl<'a> IntoIterator for &'a SpecFiles {
    type Item = &'a SpecEntry;
    type IntoIter = std::slice::Iter<'a, SpecEntry>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl std::ops::Deref for SpecFiles {
    type Target = Vec<SpecEntry>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for SpecFiles {
    fn deref_mut(&mut self) -> &mut Self::Target {
        std::sync::Arc::make_mut(&mut self.0)
    }
}

/// Everything read from git in one cycle.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Releases of every template repo.
    pub catalog: Catalog,
    /// Template repos that could not be read at all (name, reason).
    pub template_repo_errors: Vec<(String, String)>,
    /// Repos (template or spec) read from their last fetched state because fetching them
    /// failed, this cycle or the last one that tried (name, reason). Their resources are
    /// deployed from that state; the failure is reported, not hidden.
    pub stale_repos: Vec<(String, String)>,
    /// Spec repos (the configured ones that are not retired).
    pub spec_repos: Vec<SpecRepoState>,
    /// Repos whose resources are to be deleted, with how a person said so: `retired = true`
    /// in the config, or `protond forget`. Never read from git. A repo that deployed
    /// resources and is neither here nor in `spec_repos` is unknown: its resources are kept.
    pub retired_repos: BTreeMap<String, String>,
    /// Customer-managed environments' outputs read from their stacks (environment name →
    /// outputs, or why they could not be read); filled after the read from git by
    /// `daemon::customer::read_stacks`, the one step that calls AWS for them.
    pub customer_stacks: BTreeMap<String, Result<BTreeMap<String, String>, String>>,
}

/// How a repo retired in the config is described in `retired_repos`.
pub const RETIRED_IN_CONFIG: &str = "retired = true in the config";

impl Snapshot {
    /// Adds the repos `protond forget` marked (repo → when), except those in the config
    /// again: a configured repo is read as usual, whatever the store says.
    pub fn add_forgotten(&mut self, forgotten: &BTreeMap<String, String>) {
        for (repo, at) in forgotten {
            if self.spec_repos.iter().any(|r| &r.repo == repo) {
                continue;
            }
            self.retired_repos
                .entry(repo.clone())
                .or_insert_with(|| format!("forgotten with protond forget at {at}"));
        }
    }
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

/// A rendered resource, ready to deploy.
#[derive(Debug, Clone)]
pub struct Resource {
    /// The planner's row: id, kind, repo, template, version, hashes and state. Shared, not
    /// copied, between the render cache and each cycle's desired set (and borrowed by the
    /// planner).
    pub desired: std::sync::Arc<plan::Desired>,
    /// Environment the resource lives in (its own name for environments).
    pub environment: Option<String>,
    /// Rendered documents (path, text); empty unless the state is ready. Shared, not
    /// copied, between the render cache and each cycle's desired set.
    pub documents: Documents,
    /// How it is provisioned, from its bundle's manifest (`template_language`).
    pub provisioning: crate::provision::Provisioning,
    /// Commit of the spec repo that declared it.
    pub spec_commit: Option<String>,
    /// For instances: start the service's pipeline once this deploys.
    pub start_pipeline: bool,
}

/// Rendered documents (path, text), shared: cloning a [`Resource`] (the render cache hands
/// out its rows every cycle) never copies a document. Reads as a `Vec`; a write copies first
/// when the documents are shared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Documents(std::sync::Arc<Vec<(String, String)>>);

impl From<Vec<(String, String)>> for Documents {
    fn from(docs: Vec<(String, String)>) -> Self {
        Self(std::sync::Arc::new(docs))
    }
}

impl<'a> IntoIterator for &'a Documents {
    type Item = &'a (String, String);
    type IntoIter = std::slice::Iter<'a, (String, String)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl std::ops::Deref for Documents {
    type Target = Vec<(String, String)>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Documents {
    fn deref_mut(&mut self) -> &mut Self::Target {
        std::sync::Arc::make_mut(&mut self.0)
    }
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
    /// Why a deployed resource is kept or deleted when its repo is not read, by resource id:
    /// "repo X is not in the config" (kept, unknown) or "repo X is retired (…)" (deleted).
    /// `protond plan` shows it in place of the generic reason.
    pub record_notes: BTreeMap<String, String>,
    /// Customer-managed environments (id → where their outputs come from): never deployed,
    /// updated or deleted; their outputs are what instances see.
    pub customer_managed: BTreeMap<String, String>,
}

impl DesiredSet {
    /// The planner's input: its rows borrowed, never copied (at 50,000 resources a copy
    /// for each diff was tens of MiB).
    #[must_use]
    pub fn desired(&self) -> Vec<&plan::Desired> {
        self.resources.iter().map(|r| &*r.desired).collect()
    }
}

/// Hash of a JSON value in canonical form (`serde_json` sorts object keys by default).
#[must_use]
pub fn hash_json(v: &Value) -> String {
    hex::encode(Sha256::digest(v.to_string().as_bytes()))
}

/// Hash of rendered documents, normalised: YAML documents are compared by content, not
/// by formatting or comments.
#[must_use]
pub fn hash_documents(docs: &[(String, String)]) -> String {
    hash_parsed_documents(docs.iter().map(|(p, t)| (p.as_str(), t.as_str(), None)))
}

/// [`hash_documents`] of (path, text, parse) triples, where a document the render guard
/// already parsed comes with that parse in canonical JSON (the same parse of the same text,
/// so the same hash) and is not parsed again.
pub(crate) fn hash_parsed_documents<'a>(
    docs: impl IntoIterator<Item = (&'a str, &'a str, Option<&'a crate::render::CanonicalJson>)>,
) -> String {
    let mut h = Sha256::new();
    for (path, text, parsed) in docs {
        h.update(path.as_bytes());
        h.update([0]);
        let parsed_now;
        let canonical = if let Some(c) = parsed {
            c.as_bytes()
        } else {
            // Rendered Terraform is not checked by the guard: the depth check keeps this
            // linear.
            parsed_now = crate::catalog::yaml::from_str::<serde_yaml::Value>(text)
                .ok()
                .and_then(|v| serde_json::to_vec(&v).ok());
            parsed_now.as_deref()
        };
        match canonical {
            Some(canonical) => h.update(canonical),
            None => h.update(text.as_bytes()),
        }
        h.update([0]);
    }
    hex::encode(h.finalize())
}

/// Id of an environment.
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
    compute_held(snapshot, deployed, account_id, pins, &BTreeSet::new())
}

/// Like [`compute_pinned`], and no new resource is given a `halted` (template, version): it
/// gets the newest minor that is neither halted nor withdrawn.
#[must_use]
pub fn compute_held(
    snapshot: &Snapshot,
    deployed: &[ResourceRecord],
    account_id: &str,
    pins: &BTreeMap<String, Version>,
    halted: &BTreeSet<(String, Version)>,
) -> DesiredSet {
    compute_declared(&Declared::new(snapshot, deployed), account_id, pins, halted)
}

/// [`compute_held`] on declarations already read (one evaluation's computations share them).
#[must_use]
pub fn compute_declared(
    declared: &Declared<'_>,
    account_id: &str,
    pins: &BTreeMap<String, Version>,
    halted: &BTreeSet<(String, Version)>,
) -> DesiredSet {
    compute_reusing(declared, account_id, pins, halted, None)
}

/// What every computation of one evaluation reads the same, whatever pins and halts it
/// renders with: who declares what (the ownership rules) and what each record runs. Read
/// once, for the staged prediction, the first rendering and the change-set gate's.
pub struct Declared<'a> {
    snapshot: &'a Snapshot,
    deployed: &'a [ResourceRecord],
    owners: ownership::Ownership<'a>,
    /// Resource id → the template and version its record runs.
    runs: BTreeMap<&'a str, (&'a str, Version)>,
    /// Per service, what its cache key reads besides the account and its releases: hashed
    /// by the first computation that needs it.
    service_keys: BTreeMap<&'a str, std::sync::OnceLock<memo::Key>>,
}

impl<'a> Declared<'a> {
    /// The declarations of `snapshot`, owned as the `deployed` records say.
    #[must_use]
    pub fn new(snapshot: &'a Snapshot, deployed: &'a [ResourceRecord]) -> Self {
        let owners = owners(snapshot, deployed);
        let service_keys = owners
            .services
            .keys()
            .map(|name| (*name, std::sync::OnceLock::new()))
            .collect();
        Self {
            snapshot,
            deployed,
            owners,
            runs: deployed
                .iter()
                .map(|r| (r.id.as_str(), (r.template.as_str(), r.version)))
                .collect(),
            service_keys,
        }
    }

    /// The catalogue as a computation with `pins` and `halted` resolves it.
    fn templates<'s>(
        &'s self,
        pins: &'s BTreeMap<String, Version>,
        halted: &'s BTreeSet<(String, Version)>,
    ) -> resolve::Templates<'s> {
        resolve::Templates {
            catalog: &self.snapshot.catalog,
            repos_failed: !self.snapshot.template_repo_errors.is_empty(),
            pins,
            deployed: &self.runs,
            halted,
        }
    }
}

/// [`compute_held`] on what `declared` read, reusing through `cache` (when given) the rows of
/// every declaration whose inputs are unchanged.
fn compute_reusing(
    declared: &Declared<'_>,
    account_id: &str,
    pins: &BTreeMap<String, Version>,
    halted: &BTreeSet<(String, Version)>,
    mut cache: Option<&mut ComputeCache>,
) -> DesiredSet {
    let (snapshot, deployed) = (declared.snapshot, declared.deployed);
    let mut b = rows::Builder::new(deployed, account_id);
    b.customer_stacks = &snapshot.customer_stacks;
    for (repo, reason) in &snapshot.template_repo_errors {
        b.out
            .problems
            .push(format!("template repo {repo}: {reason}"));
    }
    b.out.problems.extend(moved_tags(&snapshot.catalog));
    let templates = declared.templates(pins, halted);
    let owners = &declared.owners;
    b.out
        .problems
        .extend(owners.problems.iter().map(ToString::to_string));
    b.out.unknown_repos.clone_from(&owners.unknown_repos);
    note_unread_repos(&mut b.out, owners, deployed);
    let keys = cache::Keys::new(&templates, account_id, &declared.service_keys);
    render_environments(&mut b, &templates, owners, &keys, cache.as_deref_mut());
    let targets = resolve::environment_targets(&owners.environments);
    parallel::render_services(&mut b, &templates, &targets, &owners.services, &keys, cache);
    mark_pipeline_starters(&mut b.out, snapshot);
    b.out
}

/// Who declares what, by the ownership rules.
fn owners<'a>(snapshot: &'a Snapshot, deployed: &[ResourceRecord]) -> ownership::Ownership<'a> {
    let deployed_from: ownership::DeployedFrom<'_> = deployed
        .iter()
        .map(|r| (r.id.as_str(), r.repo.as_str()))
        .collect();
    ownership::decide(
        &snapshot.spec_repos,
        &snapshot.retired_repos,
        &deployed_from,
    )
}

/// Adds every environment's row, reused through `cache` where its inputs are unchanged.
fn render_environments(
    b: &mut rows::Builder<'_>,
    templates: &resolve::Templates<'_>,
    owners: &ownership::Ownership<'_>,
    keys: &cache::Keys<'_>,
    mut cache: Option<&mut ComputeCache>,
) {
    for (name, verdict) in &owners.environments {
        let render = |b: &mut rows::Builder<'_>| environment::render(b, templates, name, verdict);
        match (cache.as_deref_mut(), verdict) {
            (Some(cache), ownership::EnvVerdict::Deploy(d)) => {
                let key = keys.environment(b, name, d);
                cache.reuse(b, format!("environment/{name}"), key, render);
            }
            _ => render(b),
        }
    }
}

/// Notes, per deployed resource of a repo that is not read, why it is kept (not in the
/// config) or deleted (retired), and logs each retirement once per computation.
fn note_unread_repos(
    out: &mut DesiredSet,
    owners: &ownership::Ownership<'_>,
    deployed: &[ResourceRecord],
) {
    for (repo, how) in &owners.retiring {
        let n = deployed.iter().filter(|r| &r.repo == repo).count();
        tracing::info!(repo = %repo, resources = n, how = %how, "Spec repo is retired: its resources are deleted, within the deletion budget.");
    }
    for r in deployed {
        let note = if owners.unconfigured.contains(&r.repo) {
            format!("repo {} is not in the config; kept as is", r.repo)
        } else if let Some(how) = owners.retiring.get(&r.repo) {
            format!("repo {} is retired ({how})", r.repo)
        } else {
            continue;
        };
        out.record_notes.insert(r.id.clone(), note);
    }
}

/// One problem line per release tag moved away from its release's recorded commit: the move
/// is refused until an operator accepts it.
fn moved_tags(catalog: &crate::catalog::releases::Catalog) -> Vec<String> {
    catalog
        .releases()
        .filter_map(|r| match &r.state {
            crate::catalog::releases::ReleaseState::Moved { tag_commit } => Some(format!(
                "template repo {}: release tag {} was moved from {} to {tag_commit}; the move is refused: {} {} stays on its recorded commit and nothing is redeployed (run `protond release accept {}/v{}` to roll the new commit out stage by stage, or tag a new minor)",
                r.repo, r.tag, r.commit, r.template, r.version, r.template, r.version
            )),
            _ => None,
        })
        .collect()
}

/// Flags the instances of services that ask for their pipeline to start after an instance
/// deploys (`start_pipeline_on_deploy`).
fn mark_pipeline_starters(out: &mut DesiredSet, snapshot: &Snapshot) {
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
    if starters.is_empty() {
        return;
    }
    for r in &mut out.resources {
        r.start_pipeline = starters
            .iter()
            .any(|p| r.desired.id.starts_with(p.as_str()));
    }
}

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;
