//! What one fetch of a mirror takes, and the fetch itself: the references a mirror needs
//! ([`Want`], [`refspecs`]), the bounds of one fetch ([`FetchOptions`]: the largest object
//! inflated, the largest pack received, a stop flag for time budgets), and a guard so that a
//! mirror is never fetched twice at once.
//!
//! It never decides what a branch or tag means (callers say what they read), and never writes
//! outside `refs/heads/` and `refs/tags/` of a mirror: protond's own references
//! (`refs/protond/…`) are never a fetch destination, and nothing is pruned.
//!
//! # Memory
//!
//! gix receives a pack as a stream: each entry is inflated into a sink to check it, and only
//! its compressed bytes are kept while it is being read. Indexing the pack then inflates whole
//! objects, which `gitoxide.objects.allocLimit` bounds (set from
//! [`FetchOptions::max_object_bytes`] on every repository handle that fetches): an entry that
//! declares a larger size is refused before anything is allocated for it. The pack's
//! bookkeeping (about 36 bytes per object) counts against the same limit. The received bytes
//! are counted as they arrive and the fetch is stopped once they exceed
//! [`FetchOptions::max_pack_bytes`], which bounds what one incompressible object can hold.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use gix::bstr::ByteSlice;

use super::{Credentials, Remote};

/// Default of [`FetchOptions::max_object_bytes`]: 32 MiB. Far above the catalog's per-file
/// limit, and enough bookkeeping for packs of about 900,000 objects.
pub const DEFAULT_MAX_OBJECT_BYTES: u64 = 32 * 1024 * 1024;
/// Default of [`FetchOptions::max_pack_bytes`]: 128 MiB (with a process of about 60 MiB, an
/// incompressible object stays under 200 MiB of memory while it is refused).
pub const DEFAULT_MAX_PACK_BYTES: u64 = 128 * 1024 * 1024;

/// Something a config entry reads from a repository, and so must be fetched.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Want {
    /// One branch, by short name (`main`) or full name (`refs/heads/main`); other
    /// references (`refs/…` outside `refs/heads/`) are never fetched.
    Branch(String),
    /// The tags whose names start with this literal text (`""`: every tag).
    TagsStartingWith(String),
    /// Every branch and every tag.
    Everything,
}

/// The fetch refspecs that bring in everything `wants` name, force-updating (so moved tags
/// are seen), each source mapped onto the same name in the mirror. Sorted and without
/// overlaps: a tag prefix covered by a shorter one is dropped. A tag prefix that cannot be
/// written as a refspec glob fetches every tag instead; a branch that is not a valid
/// reference name is left out (reading it then fails, naming it).
#[must_use]
pub fn refspecs(wants: &[Want]) -> Vec<String> {
    let mut branches = BTreeSet::new();
    let mut prefixes = BTreeSet::new();
    for want in wants {
        match want {
            Want::Everything => {
                branches.insert("*".to_owned());
                prefixes.insert(String::new());
            }
            Want::Branch(name) => {
                let name = name.strip_prefix("refs/heads/").unwrap_or(name);
                let spec = format!("+refs/heads/{name}:refs/heads/{name}");
                if !name.contains('*') && !name.starts_with("refs/") && valid(&spec) {
                    branches.insert(name.to_owned());
                }
            }
            Want::TagsStartingWith(prefix) => {
                let spec = format!("+refs/tags/{prefix}*:refs/tags/{prefix}*");
                let glob_safe = !prefix.contains('*') && !prefix.starts_with('/');
                prefixes.insert(if glob_safe && valid(&spec) {
                    prefix.clone()
                } else {
                    String::new()
                });
            }
        }
    }
    if branches.contains("*") {
        branches.retain(|b| b == "*");
    }
    let mut specs: Vec<String> = branches
        .iter()
        .map(|b| format!("+refs/heads/{b}:refs/heads/{b}"))
        .collect();
    let mut kept: Vec<&String> = Vec::new();
    // Sorted: a prefix comes before every longer text it starts.
    for p in &prefixes {
        if !kept.iter().any(|k| p.starts_with(k.as_str())) {
            kept.push(p);
        }
    }
    specs.extend(
        kept.iter()
            .map(|p| format!("+refs/tags/{p}*:refs/tags/{p}*")),
    );
    specs
}

/// Whether gix accepts `spec` as a fetch refspec.
fn valid(spec: &str) -> bool {
    gix::refspec::parse(
        spec.as_bytes().as_bstr(),
        gix::refspec::parse::Operation::Fetch,
    )
    .is_ok()
}

/// How one fetch is bounded, and what it brings in.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// The refspecs (see [`refspecs`]).
    pub refspecs: Vec<String>,
    /// The largest object inflated in memory, in bytes; a pack holding a larger one is refused.
    pub max_object_bytes: u64,
    /// The most pack bytes one fetch may receive.
    pub max_pack_bytes: u64,
    /// Set it to stop the fetch at its next read (a caller's time budget).
    pub interrupt: Arc<AtomicBool>,
}

impl FetchOptions {
    /// Fetches what `wants` name, within the default limits.
    #[must_use]
    pub fn new(wants: &[Want]) -> Self {
        Self {
            refspecs: refspecs(wants),
            max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
            max_pack_bytes: DEFAULT_MAX_PACK_BYTES,
            interrupt: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The same, with these limits.
    #[must_use]
    pub fn with_limits(mut self, max_object_bytes: u64, max_pack_bytes: u64) -> Self {
        self.max_object_bytes = max_object_bytes;
        self.max_pack_bytes = max_pack_bytes;
        self
    }

    /// The configuration override that bounds what gix inflates.
    pub(super) fn alloc_limit_override(&self) -> String {
        format!("gitoxide.objects.allocLimit={}", self.max_object_bytes)
    }
}

/// Why [`fetch`] failed.
pub(super) enum Failure {
    /// More than `max_pack_bytes` arrived; the fetch was stopped.
    PackTooLarge,
    /// gix failed (an object over the allocation limit included: see
    /// [`gix::Error::is_resource_exhausted`]).
    Gix(gix::Error),
}

impl From<gix::Error> for Failure {
    fn from(e: gix::Error) -> Self {
        Self::Gix(e)
    }
}

/// Fetches `options.refspecs` of `remote` into `repo` (opened with
/// [`FetchOptions::alloc_limit_override`]), force-updating moved references. A branch the
/// remote does not have is left out (reading it then fails, naming it), as a glob that
/// matches nothing is. Returns whether a pack was received.
pub(super) fn fetch(
    repo: &gix::Repository,
    remote: &Remote,
    options: &FetchOptions,
) -> Result<bool, Failure> {
    fetch_specs(repo, remote, options, &options.refspecs)
}

fn fetch_specs(
    repo: &gix::Repository,
    remote: &Remote,
    options: &FetchOptions,
    specs: &[String],
) -> Result<bool, Failure> {
    if specs.is_empty() {
        return Ok(false);
    }
    let spec = repo
        .remote_at(remote.url.clone())?
        .with_fetch_tags(gix::remote::fetch::Tags::None)
        .with_refspecs(
            specs.iter().map(String::as_str),
            gix::remote::Direction::Fetch,
        )?;
    let explicit = remote.credentials.clone().or_else(Credentials::from_env);
    let mut credentials = Credentials::new(repo.clone(), explicit);
    let connection = spec
        .connect(gix::remote::Direction::Fetch)?
        .with_credentials(move |action| credentials.invoke(action));
    let budget = Arc::new(PackBudget {
        limit: usize::try_from(options.max_pack_bytes).unwrap_or(usize::MAX),
        exceeded: AtomicBool::new(false),
        interrupt: options.interrupt.clone(),
    });
    let progress = BudgetProgress::new(budget.clone(), [0; 4]);
    let prepared =
        connection.prepare_fetch(progress.clone(), gix::remote::ref_map::Options::default())?;
    // gix refuses a fetch in which a refspec naming one branch matches nothing: fetch the
    // rest (a missing branch stays missing, as it would with a glob).
    let matched: BTreeSet<usize> = prepared
        .ref_map()
        .mappings
        .iter()
        .filter_map(|m| match m.spec_index {
            gix::remote::fetch::refmap::SpecIndex::ExplicitInRemote(i) => Some(i),
            gix::remote::fetch::refmap::SpecIndex::Implicit(_) => None,
        })
        .collect();
    let missing = |(i, s): &(usize, &String)| !s.contains('*') && !matched.contains(i);
    if specs.iter().enumerate().any(|e| missing(&e)) {
        drop(prepared);
        let found: Vec<String> = specs
            .iter()
            .enumerate()
            .filter(|e| !missing(e))
            .map(|(_, s)| s.clone())
            .collect();
        return fetch_specs(repo, remote, options, &found);
    }
    let outcome = prepared.receive(progress, &options.interrupt);
    if budget.exceeded.load(Ordering::SeqCst) {
        return Err(Failure::PackTooLarge);
    }
    let outcome = outcome?;
    let changed = matches!(outcome.status, gix::remote::fetch::Status::Change { .. });
    tracing::debug!(url = %remote.display, changed, "Fetched.");
    Ok(changed)
}

/// The pack bytes one fetch may still receive; past them it sets the fetch's stop flag.
struct PackBudget {
    limit: usize,
    exceeded: AtomicBool,
    interrupt: Arc<AtomicBool>,
}

/// gix's id of the progress that counts the pack bytes read (`gix_pack`'s `ReadPackBytes`).
const READ_PACK_BYTES: gix::progress::Id = *b"BWRB";

/// A progress tree that shows nothing and counts the bytes of the pack being read against a
/// [`PackBudget`].
#[derive(Clone)]
struct BudgetProgress {
    budget: Arc<PackBudget>,
    id: gix::progress::Id,
    counter: gix::progress::StepShared,
}

impl BudgetProgress {
    fn new(budget: Arc<PackBudget>, id: gix::progress::Id) -> Self {
        Self {
            budget,
            id,
            counter: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn check(&self, received: usize) {
        if self.id == READ_PACK_BYTES && received > self.budget.limit {
            self.budget.exceeded.store(true, Ordering::SeqCst);
            self.budget.interrupt.store(true, Ordering::SeqCst);
        }
    }
}

impl gix::progress::Count for BudgetProgress {
    fn set(&self, step: gix::progress::Step) {
        self.counter.store(step, Ordering::Relaxed);
        self.check(step);
    }

    fn step(&self) -> gix::progress::Step {
        self.counter.load(Ordering::Relaxed)
    }

    fn inc_by(&self, step: gix::progress::Step) {
        let total = self
            .counter
            .fetch_add(step, Ordering::Relaxed)
            .saturating_add(step);
        self.check(total);
    }

    fn counter(&self) -> gix::progress::StepShared {
        self.counter.clone()
    }
}

impl gix::progress::Progress for BudgetProgress {
    fn init(&mut self, _max: Option<gix::progress::Step>, _unit: Option<gix::progress::Unit>) {}

    fn set_name(&mut self, _name: String) {}

    fn name(&self) -> Option<String> {
        None
    }

    fn id(&self) -> gix::progress::Id {
        self.id
    }

    fn message(&self, _level: gix::progress::MessageLevel, _message: String) {}
}

impl gix::progress::NestedProgress for BudgetProgress {
    type SubProgress = Self;

    fn add_child(&mut self, _name: impl Into<String>) -> Self {
        Self::new(self.budget.clone(), [0; 4])
    }

    fn add_child_with_id(&mut self, _name: impl Into<String>, id: gix::progress::Id) -> Self {
        Self::new(self.budget.clone(), id)
    }
}

/// The mirrors being fetched by this process now.
static FETCHING: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// Held while a mirror is fetched; dropping it lets the next fetch of that mirror start.
pub(super) struct Fetching(PathBuf);

impl Fetching {
    /// Claims `path`, or `None` when another fetch of it still runs (one stopped for its time
    /// budget may still be finishing its current read).
    pub(super) fn claim(path: &Path) -> Option<Self> {
        let mut set = FETCHING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        set.insert(path.to_owned()).then(|| Self(path.to_owned()))
    }
}

impl Drop for Fetching {
    fn drop(&mut self) {
        FETCHING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(wants: &[Want]) -> Vec<String> {
        refspecs(wants)
    }

    #[test]
    fn a_spec_repo_fetches_its_branch_only() {
        assert_eq!(
            specs(&[Want::Branch("main".into())]),
            ["+refs/heads/main:refs/heads/main"]
        );
        assert_eq!(
            specs(&[Want::Branch("refs/heads/release/2024".into())]),
            ["+refs/heads/release/2024:refs/heads/release/2024"]
        );
    }

    #[test]
    fn a_template_repo_fetches_the_tags_its_pattern_can_match() {
        // `{template}/v{major}.{minor}` starts with a placeholder: every tag.
        assert_eq!(
            specs(&[Want::TagsStartingWith(String::new())]),
            ["+refs/tags/*:refs/tags/*"]
        );
        // `releases/{template}-{major}.{minor}`: the literal prefix.
        assert_eq!(
            specs(&[Want::TagsStartingWith("releases/".into())]),
            ["+refs/tags/releases/*:refs/tags/releases/*"]
        );
    }

    #[test]
    fn a_shared_mirror_fetches_the_union_of_what_its_entries_read() {
        // The same URL as a spec repo on two branches and as a template repo.
        let wants = [
            Want::Branch("main".into()),
            Want::Branch("staging".into()),
            Want::TagsStartingWith("rel/".into()),
            Want::Branch("main".into()),
            Want::TagsStartingWith("rel/v".into()),
        ];
        assert_eq!(
            specs(&wants),
            [
                "+refs/heads/main:refs/heads/main",
                "+refs/heads/staging:refs/heads/staging",
                "+refs/tags/rel/*:refs/tags/rel/*",
            ]
        );
        // Every tag covers every prefix; every branch covers every branch.
        let wants = [
            Want::TagsStartingWith("rel/".into()),
            Want::TagsStartingWith(String::new()),
            Want::Branch("main".into()),
            Want::Everything,
        ];
        assert_eq!(
            specs(&wants),
            ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]
        );
    }

    #[test]
    fn patterns_that_cannot_be_a_glob_fetch_every_tag_and_bad_branches_are_left_out() {
        for prefix in ["a*b", "bad..name/", "/abs", "sp ace"] {
            assert_eq!(
                specs(&[Want::TagsStartingWith(prefix.into())]),
                ["+refs/tags/*:refs/tags/*"],
                "{prefix}"
            );
        }
        assert_eq!(
            specs(&[
                Want::Branch("a b".into()),
                Want::Branch("x*".into()),
                Want::Branch("refs/protond/releases/x".into()),
            ]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn nothing_is_ever_fetched_into_protond_references() {
        let wants = [
            Want::Everything,
            Want::Branch("main".into()),
            Want::TagsStartingWith("v".into()),
        ];
        for spec in specs(&wants) {
            let dst = spec.split_once(':').expect("src:dst").1;
            assert!(
                dst.starts_with("refs/heads/") || dst.starts_with("refs/tags/"),
                "{spec}"
            );
            assert!(spec.starts_with('+'), "force-updates: {spec}");
        }
    }

    #[test]
    fn one_fetch_per_mirror_at_a_time() {
        let path = Path::new("/nonexistent/protond-test-mirror.git");
        let first = Fetching::claim(path).expect("free");
        assert!(Fetching::claim(path).is_none());
        drop(first);
        assert!(Fetching::claim(path).is_some());
    }
}
