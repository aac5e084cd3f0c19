//! `protond import`: takes over the `CloudFormation` stacks AWS Proton deployed, without
//! deploying them again.
//!
//! For every resource the spec repos declare and the store has no record of, [`run`] finds
//! the live stack Proton made for it (by Proton's tags, [`matching`], or the operator's
//! mapping file), renders the resource exactly as the daemon would (the same
//! `desired::compute_held`, with the outputs of the stacks taken over so far, so dependants
//! render as they will), and compares the two semantically ([`compare`]): *identical*,
//! *differs* (by logical id), *not found*, *ambiguous* (two candidates), or why it cannot be
//! looked at (*blocked* on a dependency not taken over, *invalid*, *unusable*). A stack that
//! differs from the newest minor is compared with the older registered minors too: one that
//! matches is identical at that minor, and the daemon's next cycles upgrade it through the
//! rollout gates like any other resource on an older minor.
//!
//! With `apply`, each identical stack (and each differing one the operator accepted) is
//! taken over: a history row (`import`) is begun, protond's ownership tags are added to the
//! stack (`UpdateStack` with the previous template and parameter values: nothing else
//! changes), and the row is finished with the record, whose placement names Proton's stack
//! (its name, `StackId`, the configured region and the environment's role), so later
//! updates go to it through the ownership gate. A process that stops between the two is
//! finished by the next import (or adopted by the daemon, through the tags' deployment id).
//!
//! # Guarantees
//! * Never creates or deletes a stack, and never changes a stack's template, parameters or
//!   resources: the only write to AWS is the tag update.
//! * A stack already carrying protond's tags for another resource or installation is never
//!   taken.
//! * Without `apply`, nothing is written (the store's installation name aside, recorded at
//!   first use as by every command that opens the store).
//!
//! Self-managed (Terraform) resources are not stacks: [`self_managed`] reads the folders
//! Proton committed to the infrastructure repo (`[self_managed]`), each found by its
//! `.proton/deployment-metadata.json`, and compares their template files with the
//! rendering. With `apply`, a matching folder is recorded as deployed (an `import` history
//! row, the self-managed record naming the folder), as a reported apply would be, so the
//! daemon opens no pull request for it; nothing is written to the repo.
//!
//! [`specs`] drafts spec files from Proton's API export (`--write-specs`).

pub mod compare;
pub mod matching;
pub mod self_managed;
pub mod specs;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::config::Config;
use crate::desired::{self, Resource, Snapshot};
use crate::model::{DeploymentAction, Placement, ResourceKind, Version};
use crate::plan::DesiredState;
use crate::provision::Provisioning;
use crate::provision::cloudformation::{
    CloudFormation, LiveStack, TAG_DEPLOYMENT, check_owner, ownership_tags,
};
use crate::spec::SpecFile;
use crate::state::{NewDeployment, Outcome, ResourceRecord, StateError, Store};
use compare::Difference;

/// What the operator asked for.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Take the stacks over (otherwise a dry run).
    pub apply: bool,
    /// Resources whose differing stack is taken over all the same (the next cycle updates
    /// it in place).
    pub accept_diff: BTreeSet<String>,
    /// Resource id → stack name or ARN, for stacks Proton's tags do not identify.
    pub map: BTreeMap<String, String>,
    /// Read the infrastructure repo as last fetched (`--no-fetch`).
    pub no_fetch: bool,
}

/// What was found for one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The live stack is what protond renders (at `live_version`).
    Identical,
    /// The live stack differs from what protond renders; the differences say how.
    Differs,
    /// No stack was found.
    NotFound,
    /// More than one stack could be it; the candidates are listed.
    Ambiguous,
    /// A stack was found but cannot be taken over as it stands, or could not be read.
    Unusable,
    /// It cannot be rendered before a resource it depends on is deployed or taken over.
    Blocked,
    /// Its spec, inputs or template are invalid.
    Invalid,
    /// Self-managed (Terraform), and no infrastructure repo is configured to read.
    SelfManaged,
}

impl Verdict {
    /// The verdict as the table shows it.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Identical => "identical",
            Self::Differs => "differs",
            Self::NotFound => "not found",
            Self::Ambiguous => "ambiguous",
            Self::Unusable => "unusable",
            Self::Blocked => "blocked",
            Self::Invalid => "invalid",
            Self::SelfManaged => "self-managed",
        }
    }
}

/// How the stack was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchedBy {
    /// By Proton's tags.
    Tags,
    /// By the mapping file.
    Map,
}

/// Whether a resource was (or would be) taken over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum ImportState {
    /// Not taken over (the verdict says why).
    No,
    /// A dry run: `--apply` would take it over.
    WouldImport,
    /// Taken over by deployment `deployment` (its history row).
    Imported {
        /// The history row.
        deployment: i64,
    },
    /// Taking it over failed; nothing was recorded (the history row says why).
    Failed {
        /// Why.
        error: String,
    },
}

/// One resource's line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Resource id.
    pub resource: String,
    /// Its kind.
    pub kind: ResourceKind,
    /// What was found.
    pub verdict: Verdict,
    /// Its template.
    pub template: String,
    /// The version its spec resolves to now.
    pub version: Version,
    /// The version the live stack matches (identical), or is closest to (differs).
    pub live_version: Option<Version>,
    /// The stack's name.
    pub stack: Option<String>,
    /// The stack's id.
    pub stack_id: Option<String>,
    /// How the stack was found.
    pub matched_by: Option<MatchedBy>,
    /// Stacks that could be it (ambiguous).
    pub candidates: Vec<String>,
    /// How the live stack differs from what protond renders at `version`.
    pub differences: Vec<Difference>,
    /// Why, for every verdict but identical.
    pub reason: Option<String>,
    /// Whether it was taken over.
    pub import: ImportState,
}

/// What [`run`] found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// One line per resource declared and not recorded.
    pub findings: Vec<Finding>,
    /// Resources already recorded (left alone).
    pub recorded: usize,
    /// Problems not tied to one resource (options naming unknown resources, the desired
    /// state's problems).
    pub problems: Vec<String>,
    /// Whether stacks were taken over (`--apply`).
    pub applied: bool,
}

/// Why import could not run.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The state store failed.
    #[error("state store")]
    Store(#[from] StateError),
}

/// Stack statuses a stack can be taken over in: its last operation is complete.
const SETTLED: [&str; 5] = [
    "CREATE_COMPLETE",
    "UPDATE_COMPLETE",
    "UPDATE_ROLLBACK_COMPLETE",
    "IMPORT_COMPLETE",
    "IMPORT_ROLLBACK_COMPLETE",
];

/// The rounds of discovery: each takes over what the previous one unblocked (environments,
/// then components, instances, pipelines).
const MAX_ROUNDS: usize = 8;

/// Finds, compares and (with `opts.apply`) takes over the stack of every declared resource
/// the store has no record of. `installation` is this installation's name.
///
/// # Errors
///
/// [`ImportError`] when the store cannot be read or written; AWS failures are reported per
/// resource.
pub async fn run(
    config: &Config,
    store: &Store,
    cfn: &CloudFormation,
    snapshot: &Snapshot,
    installation: &str,
    opts: &Options,
) -> Result<Report, ImportError> {
    let records = store.resources().await?;
    let halted = store
        .rollouts()
        .await?
        .into_iter()
        .filter(|(_, (halted, _))| *halted)
        .map(|(key, _)| key)
        .collect();
    let infra = read_infra(config, !opts.no_fetch).await;
    let mut finder = Finder {
        infra: &infra,
        config,
        cfn,
        snapshot,
        opts,
        installation,
        roles: crate::evaluate::environment_field(snapshot, |e| e.role_arn.as_ref()),
        components: components(snapshot),
        halted,
        listings: BTreeMap::new(),
    };
    let (findings, adoptions, problems) = finder.discover(records.clone()).await;
    let mut report = Report {
        findings,
        recorded: records.len(),
        problems,
        applied: opts.apply,
    };
    if let Ok((_, unreadable)) = &infra {
        report.problems.extend(unreadable.iter().cloned());
    }
    report
        .problems
        .extend(unused_options(opts, &report.findings));
    for (i, a) in adoptions {
        report.findings[i].import = if opts.apply {
            match &a.target {
                Target::Stack(stack) => take_over(store, cfn, installation, &a.dep, stack).await?,
                Target::Folder { folder, branch } => {
                    record_folder(store, &a, folder, branch).await?
                }
            }
        } else {
            ImportState::WouldImport
        };
    }
    Ok(report)
}

/// `(service, instance)` → the name of the component it attaches, from the spec files.
fn components(snapshot: &Snapshot) -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    for f in snapshot.spec_repos.iter().flat_map(|r| &r.files) {
        if let Ok(SpecFile::Service(s)) = &f.spec {
            for i in &s.instances {
                if let Some(c) = &i.component {
                    out.insert((s.name.clone(), i.name.clone()), c.name.clone());
                }
            }
        }
    }
    out
}

/// Options naming resources that are not among the findings, or not differing.
fn unused_options(opts: &Options, findings: &[Finding]) -> Vec<String> {
    let by_id: BTreeMap<&str, &Finding> =
        findings.iter().map(|f| (f.resource.as_str(), f)).collect();
    let mut out = Vec::new();
    for id in &opts.accept_diff {
        match by_id.get(id.as_str()) {
            Some(f) if f.verdict == Verdict::Differs => {}
            Some(f) => out.push(format!(
                "--accept-diff {id}: its stack is {}, not differing; nothing to accept",
                f.verdict.label()
            )),
            None => out.push(format!(
                "--accept-diff {id}: not a resource the spec repos declare and the store has no record of"
            )),
        }
    }
    for id in opts.map.keys() {
        if !by_id.contains_key(id.as_str()) {
            out.push(format!(
                "--map: {id} is not a resource the spec repos declare and the store has no record of; its line is ignored"
            ));
        }
    }
    out
}

/// What to take over: the history row to write (its placement names the stack), what was
/// read, and the outputs to record.
struct Adoption {
    dep: NewDeployment,
    target: Target,
    outputs: BTreeMap<String, String>,
}

/// A live stack, or a folder of the infrastructure repo.
enum Target {
    Stack(LiveStack),
    Folder {
        /// The folder Proton committed.
        folder: String,
        /// The branch the daemon's pull requests for it will use.
        branch: String,
    },
}

impl Adoption {
    fn stack_id(&self) -> Option<String> {
        match &self.target {
            Target::Stack(s) => s.info.id.clone(),
            Target::Folder { .. } => None,
        }
    }
}

/// The infrastructure repo's folders by resource id and its unreadable metadata files, or
/// why it could not be read.
type Infra = Result<(BTreeMap<String, Vec<self_managed::Folder>>, Vec<String>), String>;

/// Most files and bytes read from the infrastructure repo.
const INFRA_FILES: usize = 100_000;
const INFRA_BYTES: u64 = 512 * 1024 * 1024;

/// Reads every file of the infrastructure repo's branch, and of the pipeline repo's when
/// one is configured (fetched first when `fetch`), off the runtime; their folders together.
async fn read_infra(config: &Config, fetch: bool) -> Infra {
    let Some(sm) = config.self_managed.clone() else {
        return Err("no infrastructure repo is configured: set [self_managed] url (and forge) to the repo AWS Proton committed to, then import again".into());
    };
    let mut repos = vec![(sm.url.clone(), sm.branch.clone())];
    if let Some(p) = &sm.pipelines {
        repos.push((p.url.clone(), p.branch.clone()));
    }
    let mut all: BTreeMap<String, Vec<self_managed::Folder>> = BTreeMap::new();
    let mut unreadable = Vec::new();
    for (url, branch) in repos {
        let cache = config.data_dir.join("git");
        let options = config.fetch_options(&url);
        let files = tokio::task::spawn_blocking(move || {
            read_repo_files(&url, &branch, &cache, &options, fetch)
        })
        .await
        .map_err(|e| format!("reading the infrastructure repo panicked: {e}"))??;
        let (folders, problems) = self_managed::folders(&files);
        for (id, f) in folders {
            all.entry(id).or_default().extend(f);
        }
        unreadable.extend(problems);
    }
    Ok((all, unreadable))
}

/// Every text file of `branch` of the repo at `url` (fetched first when `fetch`).
fn read_repo_files(
    url: &str,
    branch: &str,
    cache: &std::path::Path,
    options: &crate::source::FetchOptions,
    fetch: bool,
) -> Result<Vec<(String, String)>, String> {
    let fail = |e: crate::source::SourceError| format!("repo {url}: {}", crate::error_chain(&e));
    let mirror = if fetch {
        crate::source::Mirror::sync_with(url, cache, options)
    } else {
        crate::source::Mirror::open(url, cache)
    }
    .map_err(fail)?;
    let head = mirror.branch_head(branch).map_err(fail)?;
    let entries = mirror
        .read_tree(head, "", INFRA_FILES, INFRA_BYTES)
        .map_err(fail)?;
    Ok(entries
        .into_iter()
        .filter_map(|e| match e.kind {
            crate::source::EntryKind::Blob(b) | crate::source::EntryKind::Executable(b) => {
                String::from_utf8(b).ok().map(|t| (e.path, t))
            }
            _ => None,
        })
        .collect())
}

/// What the discovery knows while it runs.
struct Finder<'a> {
    /// The infrastructure repo, for self-managed resources.
    infra: &'a Infra,
    config: &'a Config,
    cfn: &'a CloudFormation,
    snapshot: &'a Snapshot,
    opts: &'a Options,
    installation: &'a str,
    /// Environment → the role its spec names.
    roles: BTreeMap<String, String>,
    /// `(service, instance)` → component name.
    components: BTreeMap<(String, String), String>,
    /// Halted rollouts (no new resource gets one).
    halted: BTreeSet<(String, Version)>,
    /// The stacks each role sees (`None`: the default credentials), listed once.
    listings: BTreeMap<Option<String>, Result<Vec<LiveStack>, String>>,
}

/// A stack found for a resource, or why none was.
enum Found {
    Stack(LiveStack, MatchedBy),
    None(Verdict, String, Vec<String>),
}

impl Finder<'_> {
    /// Rounds of: render with the records plus the stacks taken over so far, examine each
    /// ready resource not examined yet. Returns the findings, the adoptions (by finding
    /// index) and the desired state's problems.
    async fn discover(
        &mut self,
        mut records: Vec<ResourceRecord>,
    ) -> (Vec<Finding>, Vec<(usize, Adoption)>, Vec<String>) {
        let recorded: BTreeSet<String> = records.iter().map(|r| r.id.clone()).collect();
        let mut findings: Vec<Finding> = Vec::new();
        let mut adoptions = Vec::new();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut last = desired::DesiredSet::default();
        for _ in 0..MAX_ROUNDS {
            last = self.compute(&records, &BTreeMap::new());
            let mut progress = false;
            for r in &last.resources {
                let id = &r.desired.id;
                if recorded.contains(id) || seen.contains(id) {
                    continue;
                }
                let (finding, adoption) = match &r.desired.state {
                    DesiredState::Ready { .. } => self.examine(r, &records).await,
                    DesiredState::Invalid { error } => {
                        (finding(r, Verdict::Invalid, Some(error.clone())), None)
                    }
                    DesiredState::Blocked { .. } => continue,
                };
                seen.insert(id.clone());
                progress = true;
                if let Some(a) = adoption {
                    records.push(ResourceRecord::deployed_by(
                        &a.dep,
                        a.outputs.clone(),
                        a.stack_id(),
                    ));
                    adoptions.push((findings.len(), a));
                }
                findings.push(finding);
            }
            if !progress {
                break;
            }
        }
        let have: BTreeSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
        for r in &last.resources {
            if let DesiredState::Blocked { on } = &r.desired.state
                && !recorded.contains(&r.desired.id)
                && !seen.contains(&r.desired.id)
            {
                let missing: Vec<&str> = on
                    .iter()
                    .map(String::as_str)
                    .filter(|d| !have.contains(d))
                    .collect();
                let why = format!(
                    "waits on {}: not deployed, and not taken over by this import (see its line)",
                    missing.join(", ")
                );
                findings.push(finding(r, Verdict::Blocked, Some(why)));
            }
        }
        (findings, adoptions, last.problems)
    }

    /// The desired state with `pins` (resource → version), as the daemon computes it.
    fn compute(
        &self,
        records: &[ResourceRecord],
        pins: &BTreeMap<String, Version>,
    ) -> desired::DesiredSet {
        desired::compute_held(
            self.snapshot,
            records,
            &self.config.account_id,
            pins,
            &self.halted,
        )
    }

    /// Finds and compares the stack of one ready resource; the adoption when it is to be
    /// taken over (identical, or differing and accepted).
    async fn examine(
        &mut self,
        r: &Resource,
        records: &[ResourceRecord],
    ) -> (Finding, Option<Adoption>) {
        if r.provisioning == Provisioning::SelfManaged {
            return self.examine_folder(r);
        }
        let (region, role) =
            crate::evaluate::wanted_place(r.environment.as_ref(), &self.roles, self.config);
        let (stack, matched_by) = match self.find(&r.desired.id, role.as_deref()).await {
            Found::Stack(s, by) => (s, by),
            Found::None(verdict, why, candidates) => {
                let mut f = finding(r, verdict, Some(why));
                f.candidates = candidates;
                return (f, None);
            }
        };
        let mut f = finding(r, Verdict::Unusable, None);
        f.stack = Some(stack.info.name.clone());
        f.stack_id.clone_from(&stack.info.id);
        f.matched_by = Some(matched_by);
        if !SETTLED.contains(&stack.info.status.as_str()) {
            f.reason = Some(format!(
                "stack {} is {}: only a stack whose last operation completed ({}) can be taken over",
                stack.info.name,
                stack.info.status,
                SETTLED.join(", ")
            ));
            return (f, None);
        }
        let compared = match self.compare(r, &stack, role.as_deref(), records).await {
            Ok(c) => c,
            Err(why) => {
                f.reason = Some(why);
                return (f, None);
            }
        };
        f.live_version = Some(compared.version);
        f.verdict = if compared.identical {
            Verdict::Identical
        } else {
            Verdict::Differs
        };
        f.differences = compared.differences;
        let accepted = self.opts.accept_diff.contains(&r.desired.id);
        if !compared.identical {
            f.reason = Some(differs_reason(&f, accepted));
            if !accepted {
                return (f, None);
            }
        }
        let placement = Placement {
            stack_name: stack.info.name.clone(),
            stack_id: stack.info.id.clone(),
            region: Some(region),
            role_arn: role,
        };
        let dep = NewDeployment {
            resource_id: r.desired.id.clone(),
            kind: r.desired.kind,
            repo: r.desired.repo.clone(),
            environment: r.environment.clone(),
            action: DeploymentAction::Import,
            reason: (!compared.identical).then(|| "accepted_diff".to_string()),
            template: r.desired.template.clone(),
            from_version: None,
            to_version: compared.version,
            input_hash: compared.input_hash,
            rendered_hash: compared.rendered_hash,
            spec_commit: r.spec_commit.clone(),
            placement,
        };
        let outputs = stack.info.outputs.clone();
        (
            f,
            Some(Adoption {
                dep,
                target: Target::Stack(stack),
                outputs,
            }),
        )
    }

    /// Finds and compares the folder Proton committed for a self-managed resource; the
    /// adoption when it is to be recorded (identical, or differing and accepted).
    fn examine_folder(&self, r: &Resource) -> (Finding, Option<Adoption>) {
        let id = &r.desired.id;
        let folders = match self.infra {
            Ok((folders, _)) => folders,
            // No repo configured: the resource's repo goes on as it is (not a failure).
            Err(why) if self.config.self_managed.is_none() => {
                return (finding(r, Verdict::SelfManaged, Some(why.clone())), None);
            }
            Err(why) => return (finding(r, Verdict::Unusable, Some(why.clone())), None),
        };
        let mut f = finding(r, Verdict::Unusable, None);
        let folder = match folders.get(id).map(Vec::as_slice).unwrap_or_default() {
            [one] => one,
            [] => {
                f.verdict = Verdict::NotFound;
                f.reason = Some(format!(
                    "no folder of the infrastructure repo has a {} whose resourceMetadata.arn names {id}; without it protond cannot tell what Proton committed, and the next cycle opens a pull request for it",
                    self_managed::METADATA
                ));
                return (f, None);
            }
            many => {
                f.verdict = Verdict::Ambiguous;
                f.candidates = many.iter().map(|x| format!("{}/", x.path)).collect();
                f.reason = Some(format!(
                    "{} folders have a {} naming {id}; remove the stale ones from the infrastructure repo",
                    many.len(),
                    self_managed::METADATA
                ));
                return (f, None);
            }
        };
        f.stack = Some(format!("{}/", folder.path));
        let meta = &folder.meta;
        let file = format!("{}/{}", folder.path, self_managed::METADATA);
        if meta.deleted {
            f.reason = Some(format!(
                "{file} has isResourceDeleted: true (Proton destroyed it); not recorded: the next cycle deploys it anew through a pull request"
            ));
            return (f, None);
        }
        if meta.template != r.desired.template || meta.major != r.desired.version.major {
            f.reason = Some(format!(
                "{file} says Proton deployed {} {}.{}, and the spec asks for {} {}: not recorded; make the spec name the template Proton used, import, then change it",
                meta.template, meta.major, meta.minor, r.desired.template, r.desired.version
            ));
            return (f, None);
        }
        let live_version = Version {
            major: meta.major,
            minor: meta.minor,
        };
        f.live_version = Some(live_version);
        f.differences = self_managed::diff_files(&r.documents, folder);
        let identical = f.differences.is_empty();
        f.verdict = if identical {
            Verdict::Identical
        } else {
            Verdict::Differs
        };
        let accepted = self.opts.accept_diff.contains(id);
        if !identical {
            f.reason = Some(differs_reason(&f, accepted));
            if !accepted {
                return (f, None);
            }
        }
        let rendered_hash = if identical {
            rendered_hash(r)
        } else {
            let live: Vec<(String, String)> = folder
                .files
                .iter()
                .map(|(n, t)| (n.clone(), t.clone()))
                .collect();
            desired::hash_documents(&live)
        };
        let (region, role) =
            crate::evaluate::wanted_place(r.environment.as_ref(), &self.roles, self.config);
        let dep = NewDeployment {
            resource_id: id.clone(),
            kind: r.desired.kind,
            repo: r.desired.repo.clone(),
            environment: r.environment.clone(),
            action: DeploymentAction::Import,
            reason: (!identical).then(|| "accepted_diff".to_string()),
            template: r.desired.template.clone(),
            from_version: None,
            to_version: live_version,
            input_hash: r.desired.input_hash.clone(),
            rendered_hash,
            spec_commit: r.spec_commit.clone(),
            placement: Placement {
                stack_name: crate::provision::cloudformation::stack_name(id),
                stack_id: None,
                region: Some(region),
                role_arn: role,
            },
        };
        let target = Target::Folder {
            folder: folder.path.clone(),
            branch: format!("{}deploy/{id}", self.config.proposals.branch_prefix),
        };
        let outputs = self_managed::outputs_for(id, folders);
        (
            f,
            Some(Adoption {
                dep,
                target,
                outputs,
            }),
        )
    }

    /// The stack of resource `id`: the mapped one, else the one Proton's tags name.
    async fn find(&mut self, id: &str, role: Option<&str>) -> Found {
        if let Some(given) = self.opts.map.get(id) {
            return self.mapped(id, given, role).await;
        }
        let key = role.map(str::to_string);
        self.list(role).await;
        let listing = match self.listings.get(&key) {
            Some(Ok(l)) => l,
            Some(Err(why)) => return Found::None(Verdict::Unusable, why.clone(), Vec::new()),
            None => return Found::None(Verdict::Unusable, "not listed".into(), Vec::new()),
        };
        let mut found: Vec<&LiveStack> = listing
            .iter()
            .filter(|s| {
                matching::proton_target(&s.info.name, &s.info.tags)
                    .and_then(|t| matching::resource_for(&t, &self.components))
                    .is_some_and(|r| r.to_string() == id)
                    && matching::free_for(&s.info.tags, id, self.installation)
            })
            .collect();
        match found.len() {
            1 => Found::Stack(found.remove(0).clone(), MatchedBy::Tags),
            0 => {
                let untagged = listing
                    .iter()
                    .filter(|s| {
                        s.info.name.starts_with(matching::PROTON_STACK_PREFIX)
                            && matching::proton_target(&s.info.name, &s.info.tags).is_none()
                    })
                    .count();
                let hint = if untagged > 0 {
                    format!(
                        "; {untagged} stack(s) named {}* carry none of Proton's tags, and could be it",
                        matching::PROTON_STACK_PREFIX
                    )
                } else {
                    String::new()
                };
                Found::None(
                    Verdict::NotFound,
                    format!(
                        "no stack in {} {} carries AWS Proton's tags for {id} ({}){hint}; if Proton made one, give it with --map",
                        self.config.region,
                        role.map_or_else(
                            || "(default credentials)".to_string(),
                            |r| format!("(as {r})")
                        ),
                        expected_tags(id)
                    ),
                    Vec::new(),
                )
            }
            _ => Found::None(
                Verdict::Ambiguous,
                format!(
                    "{} stacks carry AWS Proton's tags for {id}; say which with --map",
                    found.len()
                ),
                {
                    let mut names: Vec<String> =
                        found.iter().map(|s| s.info.name.clone()).collect();
                    names.sort();
                    names
                },
            ),
        }
    }

    /// The stack the mapping file gives for `id`.
    async fn mapped(&self, id: &str, given: &str, role: Option<&str>) -> Found {
        if let Some(region) = given
            .strip_prefix("arn:")
            .and_then(|a| a.split(':').nth(2))
            .filter(|r| *r != self.config.region)
        {
            return Found::None(
                Verdict::Unusable,
                format!(
                    "--map gives {given} for {id}, a stack in {region}; protond deploys in the configured region {} (aws.region), where import looks",
                    self.config.region
                ),
                Vec::new(),
            );
        }
        match self.cfn.describe_live(given, role).await {
            Ok(Some(s)) if matching::free_for(&s.info.tags, id, self.installation) => {
                Found::Stack(s, MatchedBy::Map)
            }
            Ok(Some(s)) => Found::None(
                Verdict::Unusable,
                format!(
                    "stack {} carries protond's tags of another resource or installation ({}); it is not taken",
                    s.info.name,
                    owner_tags(&s)
                ),
                Vec::new(),
            ),
            Ok(None) => Found::None(
                Verdict::NotFound,
                format!(
                    "--map gives {given} for {id}, and no such stack exists in {}",
                    self.config.region
                ),
                Vec::new(),
            ),
            Err(e) => Found::None(Verdict::Unusable, crate::error_chain(&e), Vec::new()),
        }
    }

    /// Lists the stacks `role` sees into `listings`, once.
    async fn list(&mut self, role: Option<&str>) {
        let key = role.map(str::to_string);
        if !self.listings.contains_key(&key) {
            let listed = self
                .cfn
                .list_stacks(role)
                .await
                .map_err(|e| format!("cannot list the stacks: {}", crate::error_chain(&e)));
            self.listings.insert(key, listed);
        }
    }

    /// Compares the live stack with the rendering at the resource's version and, when they
    /// differ, at every other registered minor of its major (newest first).
    async fn compare(
        &self,
        r: &Resource,
        stack: &LiveStack,
        role: Option<&str>,
        records: &[ResourceRecord],
    ) -> Result<Compared, String> {
        let target = stack.info.id.clone().unwrap_or(stack.info.name.clone());
        let body = self
            .cfn
            .template_body(&target, role)
            .await
            .map_err(|e| crate::error_chain(&e))?;
        let live = compare::parse_template(
            &body,
            &format!("the live template of stack {}", stack.info.name),
        )
        .map_err(|e| e.to_string())?;
        let differences = differences_of(&live, stack, r)?;
        let ready = |d: Vec<Difference>, res: &Resource| Compared {
            identical: d.is_empty(),
            version: res.desired.version,
            input_hash: res.desired.input_hash.clone(),
            rendered_hash: rendered_hash(res),
            differences: d,
        };
        if differences.is_empty() {
            return Ok(ready(differences, r));
        }
        let mut closest = (differences.len(), r.desired.version);
        for v in self.other_minors(r) {
            let pins = BTreeMap::from([(r.desired.id.clone(), v)]);
            let set = self.compute(records, &pins);
            let Some(other) = set.resources.iter().find(|x| x.desired.id == r.desired.id) else {
                continue;
            };
            let Ok(d) = differences_of(&live, stack, other) else {
                continue;
            };
            if d.is_empty() {
                return Ok(ready(d, other));
            }
            if d.len() < closest.0 && v < r.desired.version {
                closest = (d.len(), v);
            }
        }
        let live_docs: Vec<(String, String)> = r
            .documents
            .iter()
            .map(|(path, _)| (path.clone(), body.clone()))
            .collect();
        Ok(Compared {
            identical: false,
            version: closest.1,
            input_hash: r.desired.input_hash.clone(),
            rendered_hash: desired::hash_documents(&live_docs),
            differences,
        })
    }

    /// The registered, usable minors of the resource's template major other than its own,
    /// newest first.
    fn other_minors(&self, r: &Resource) -> Vec<Version> {
        let want = r.desired.version;
        let mut out: Vec<Version> = self
            .snapshot
            .catalog
            .releases()
            .filter(|x| x.template == r.desired.template && x.version.major == want.major)
            .filter(|x| x.version != want && x.usable())
            .map(|x| x.version)
            .collect();
        out.sort_unstable_by(|a, b| b.cmp(a));
        out
    }
}

/// A comparison's result: identical or not, at which version, the hashes to record, and the
/// differences at the resource's own version.
struct Compared {
    identical: bool,
    version: Version,
    input_hash: String,
    rendered_hash: String,
    differences: Vec<Difference>,
}

fn rendered_hash(r: &Resource) -> String {
    match &r.desired.state {
        DesiredState::Ready { rendered_hash } => rendered_hash.clone(),
        _ => String::new(),
    }
}

/// The differences between the live template (parsed) and stack, and `r`'s rendering.
fn differences_of(
    live: &serde_json::Value,
    stack: &LiveStack,
    r: &Resource,
) -> Result<Vec<Difference>, String> {
    let [(path, text)] = r.documents.as_slice() else {
        return Err(format!(
            "{} renders {} documents; a CloudFormation resource renders exactly one",
            r.desired.id,
            r.documents.len()
        ));
    };
    let rendered = compare::parse_template(text, &format!("the rendered {path}"))
        .map_err(|e| e.to_string())?;
    let mut d = compare::diff_templates(live, &rendered);
    d.extend(compare::diff_parameters(&stack.parameters, &rendered));
    Ok(d)
}

/// Why a differing stack is (or is not) taken over.
fn differs_reason(f: &Finding, accepted: bool) -> String {
    let n = f.differences.len();
    let closest = match f.live_version {
        Some(v) if v != f.version => format!(
            "; closest to {} {v}, recorded as such, so the update to {} goes through the rollout gates",
            f.template, f.version
        ),
        _ => String::new(),
    };
    if accepted {
        format!(
            "{n} difference(s) accepted (--accept-diff): taken over as it is; the next cycle updates it in place{closest}"
        )
    } else {
        format!(
            "{n} difference(s) from what protond renders for {} {}; not taken over unless accepted with --accept-diff {}",
            f.template, f.version, f.resource
        )
    }
}

/// The tags Proton put on the stack of `id`, for a "not found" message.
fn expected_tags(id: &str) -> String {
    match crate::model::ResourceId::parse(id) {
        Ok(crate::model::ResourceId::Environment { name }) => {
            format!("aws:proton:environment = …:environment/{name}, no service tag")
        }
        Ok(crate::model::ResourceId::ServiceInstance { service, instance }) => {
            format!("aws:proton:service-instance = …:service/{service}/service-instance/{instance}")
        }
        Ok(crate::model::ResourceId::Pipeline { service }) => {
            format!("aws:proton:service = …:service/{service}, no service-instance tag")
        }
        Ok(crate::model::ResourceId::Component { service, instance }) => format!(
            "a directly defined component: aws:proton:service-instance = …:service/{service}/service-instance/{instance}, no aws:proton:template, and the stack named {}<component name>-cloudformation-…",
            matching::PROTON_STACK_PREFIX
        ),
        Err(_) => String::new(),
    }
}

fn owner_tags(s: &LiveStack) -> String {
    use crate::provision::cloudformation::{TAG_INSTALLATION, TAG_RESOURCE};
    format!(
        "{TAG_RESOURCE}={}, {TAG_INSTALLATION}={}",
        s.info.tags.get(TAG_RESOURCE).map_or("none", String::as_str),
        s.info
            .tags
            .get(TAG_INSTALLATION)
            .map_or("none", String::as_str)
    )
}

/// A finding for `r` without a stack.
fn finding(r: &Resource, verdict: Verdict, reason: Option<String>) -> Finding {
    Finding {
        resource: r.desired.id.clone(),
        kind: r.desired.kind,
        verdict,
        template: r.desired.template.clone(),
        version: r.desired.version,
        live_version: None,
        stack: None,
        stack_id: None,
        matched_by: None,
        candidates: Vec::new(),
        differences: Vec::new(),
        reason,
        import: ImportState::No,
    }
}

/// Takes one stack over: settles an import an earlier run left in flight, then begins the
/// history row, adds the ownership tags (naming the row), checks the ownership gate accepts
/// the stack, and finishes the row with the record.
async fn take_over(
    store: &Store,
    cfn: &CloudFormation,
    installation: &str,
    dep: &NewDeployment,
    stack: &LiveStack,
) -> Result<ImportState, ImportError> {
    let id = &dep.resource_id;
    if let Some(row) = store
        .in_flight()
        .await?
        .into_iter()
        .find(|d| &d.deployment.resource_id == id)
    {
        if row.deployment.action != DeploymentAction::Import {
            return Ok(ImportState::Failed {
                error: format!(
                    "deployment {} of {id} ({}) is in flight; finish it with `protond reconcile --once`, then import again",
                    row.id, row.deployment.action
                ),
            });
        }
        if let Some(done) = settle(store, cfn, installation, &row).await? {
            return Ok(done);
        }
    }
    let deployment = store.begin_deployment(dep).await?;
    let role = dep.placement.role_arn.as_deref();
    let tags = ownership_tags(dep, deployment, installation);
    let outcome = match cfn.add_tags(stack, role, &tags).await {
        Ok(Some(info)) => match check_owner(&info, id, installation, true) {
            Ok(()) => Ok(ResourceRecord::deployed_by(dep, info.outputs, info.id)),
            Err(c) => Err(format!("after tagging, the ownership gate refuses it: {c}")),
        },
        Ok(None) => Err(format!(
            "stack {} disappeared while being tagged",
            stack.info.name
        )),
        Err(e) => Err(format!(
            "adding protond's tags to stack {} failed (its template, parameters and resources are as they were): {}",
            stack.info.name,
            crate::error_chain(&e)
        )),
    };
    match outcome {
        Ok(record) => {
            store
                .finish_deployment(deployment, &Outcome::Succeeded(record))
                .await?;
            tracing::info!(resource = %id, stack = %stack.info.name, deployment, "Took over the stack AWS Proton deployed.");
            Ok(ImportState::Imported { deployment })
        }
        Err(error) => {
            let failed = Outcome::Failed {
                error: error.clone(),
                retryable: false,
            };
            store.finish_deployment(deployment, &failed).await?;
            tracing::warn!(resource = %id, stack = %stack.info.name, error = %error, "Could not take over the stack.");
            Ok(ImportState::Failed { error })
        }
    }
}

/// Records a self-managed resource as deployed from the folder Proton committed: settles an
/// import an earlier run left in flight, names the folder in the self-managed record (so
/// the daemon's next pull request for it goes there), and writes the history row with the
/// record. Nothing is written to the infrastructure repo.
async fn record_folder(
    store: &Store,
    a: &Adoption,
    folder: &str,
    branch: &str,
) -> Result<ImportState, ImportError> {
    let id = &a.dep.resource_id;
    if let Some(row) = store
        .in_flight()
        .await?
        .into_iter()
        .find(|d| &d.deployment.resource_id == id)
    {
        if row.deployment.action != DeploymentAction::Import {
            return Ok(ImportState::Failed {
                error: format!(
                    "deployment {} of {id} ({}) is in flight; finish it (`protond notify`), then import again",
                    row.id, row.deployment.action
                ),
            });
        }
        store
            .finish_deployment(row.id, &Outcome::Interrupted)
            .await?;
    }
    let deployment = store.begin_deployment(&a.dep).await?;
    store
        .put_self_managed(&crate::state::SelfManagedRecord {
            resource_id: id.clone(),
            deployment_id: deployment,
            folder: folder.to_string(),
            branch: branch.to_string(),
            number: None,
            url: None,
            state: "done".into(),
            updated_at: String::new(),
        })
        .await?;
    let record = ResourceRecord::deployed_by(&a.dep, a.outputs.clone(), None);
    store
        .finish_deployment(deployment, &Outcome::Succeeded(record))
        .await?;
    tracing::info!(resource = %id, folder, deployment, "Recorded the self-managed resource AWS Proton committed.");
    Ok(ImportState::Imported { deployment })
}

/// Finishes an import row an earlier run left in flight: recorded if the stack carries that
/// row's tags, otherwise interrupted (and `None`: take the stack over afresh).
async fn settle(
    store: &Store,
    cfn: &CloudFormation,
    installation: &str,
    row: &crate::state::DeploymentRecord,
) -> Result<Option<ImportState>, ImportError> {
    let p = &row.deployment.placement;
    let target = p.stack_id.clone().unwrap_or(p.stack_name.clone());
    let live = cfn
        .describe(&target, p.role_arn.as_deref())
        .await
        .ok()
        .flatten();
    let tagged = live.filter(|info| {
        info.tags.get(TAG_DEPLOYMENT) == Some(&row.id.to_string())
            && check_owner(info, &row.deployment.resource_id, installation, true).is_ok()
    });
    if let Some(info) = tagged {
        let record = ResourceRecord::deployed_by(&row.deployment, info.outputs, info.id);
        store
            .finish_deployment(row.id, &Outcome::Succeeded(record))
            .await?;
        return Ok(Some(ImportState::Imported { deployment: row.id }));
    }
    store
        .finish_deployment(row.id, &Outcome::Interrupted)
        .await?;
    Ok(None)
}
