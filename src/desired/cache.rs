//! Reuse of earlier renderings, per declaration: each environment and each service is rendered
//! again only when something it reads has changed (its spec file at its commit, the release
//! each of its resources resolves to after pins and halts, the deployed records and outputs
//! of its resources and of the environments its instances target, the account). A commit in
//! one spec repo re-renders that repo's declarations only; a new minor held back renders only
//! the resources that move to it. Must hash everything a declaration's rendering reads: a
//! missed input would serve a stale result. Never decides anything itself.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;

pub(super) use super::memo::Key;
use super::memo::{Hasher, Memo, RenderKey};
use super::ownership::{EnvDecl, SvcDecl};
use super::resolve::Templates;
use super::rows::Builder;
use super::service::Targets;
use super::{
    DesiredSet, Resource, Snapshot, component_id, environment, environment_id, instance_id,
    pipeline_id, service,
};
use crate::plan::Version;
use crate::state::ResourceRecord;

/// How many renderings of one declaration are kept: a cycle renders twice while a rollout is
/// held (the new minors, then the held resources on the version they run), and both are
/// reused by the next cycle.
const SLOTS: usize = 2;

/// One rendering of a declaration: the rows and problems it added.
#[derive(Debug)]
struct Slot {
    key: Key,
    /// The computation that last used it.
    used: u64,
    resources: Vec<Resource>,
    problems: Vec<String>,
    /// (index in `resources`, render key) of each row whose documents a later rendering of
    /// the declaration may reuse ([`super::rows::Memo`]).
    renders: Box<[(u32, RenderKey)]>,
}

/// The renderings kept for one declaration, newest first, and the computation that last
/// used them.
#[derive(Debug, Default)]
struct Entry {
    slots: Vec<Slot>,
    used: u64,
}

/// Renderings of earlier computations, by declaration: [`ComputeCache::compute_held`] renders
/// again only the environments and services whose inputs changed (same spec commit, releases,
/// deployed records, pins and halts reuse the rows). Rendered documents are shared between
/// the cache and the sets it hands out ([`super::Documents`]), never copied.
#[derive(Debug, Default)]
pub struct ComputeCache {
    entries: HashMap<String, Entry>,
    /// Computations so far.
    generation: u64,
    /// Rows rendered (not reused) by the last computation.
    rendered: usize,
    /// Rows reused by the last computation.
    reused: usize,
    /// Rows rendered by every computation so far.
    rendered_total: u64,
}

impl ComputeCache {
    /// [`super::compute_pinned`], reusing every declaration whose inputs are unchanged.
    pub fn compute(
        &mut self,
        snapshot: &Snapshot,
        deployed: &[ResourceRecord],
        account_id: &str,
        pins: &BTreeMap<String, Version>,
    ) -> DesiredSet {
        self.compute_held(snapshot, deployed, account_id, pins, &BTreeSet::new())
    }

    /// [`super::compute_held`] (new resources skip the `halted` minors), reusing every
    /// declaration whose inputs are unchanged: a halted rollout, which may stand for days,
    /// keeps the reuse.
    pub fn compute_held(
        &mut self,
        snapshot: &Snapshot,
        deployed: &[ResourceRecord],
        account_id: &str,
        pins: &BTreeMap<String, Version>,
        halted: &BTreeSet<(String, Version)>,
    ) -> DesiredSet {
        let declared = super::Declared::new(snapshot, deployed);
        self.compute_declared(&declared, account_id, pins, halted)
    }

    /// [`ComputeCache::compute_held`] on declarations already read (one evaluation's
    /// computations share them).
    pub fn compute_declared(
        &mut self,
        declared: &super::Declared<'_>,
        account_id: &str,
        pins: &BTreeMap<String, Version>,
        halted: &BTreeSet<(String, Version)>,
    ) -> DesiredSet {
        self.generation += 1;
        self.rendered = 0;
        self.reused = 0;
        let set = super::compute_reusing(declared, account_id, pins, halted, Some(self));
        // Declarations and renderings neither this computation nor the one before used are
        // gone (a finished rollout's rendering on the version it left, say).
        let keep_from = self.generation.saturating_sub(1);
        self.entries.retain(|_, e| {
            e.slots.retain(|s| s.used >= keep_from);
            e.used >= keep_from
        });
        set
    }

    /// Rows the last computation rendered (the others were reused).
    #[must_use]
    pub fn last_rendered(&self) -> usize {
        self.rendered
    }

    /// Rows the last computation reused.
    #[must_use]
    pub fn last_reused(&self) -> usize {
        self.reused
    }

    /// Rows rendered (not reused) by every computation so far: an evaluation may compute
    /// more than once.
    #[must_use]
    pub fn rendered_total(&self) -> u64 {
        self.rendered_total
    }

    /// Adds declaration `name`'s rows to `b`: the kept ones when `key` matches a kept
    /// rendering, else those `render` adds (kept for next time). `key` `None`: always
    /// rendered, never kept.
    pub(super) fn reuse(
        &mut self,
        b: &mut Builder<'_>,
        name: String,
        key: Option<Key>,
        render: impl FnOnce(&mut Builder<'_>),
    ) {
        if let Some(key) = key
            && self.take_kept(b, &name, &key)
        {
            return;
        }
        let (resources, problems) = (b.out.resources.len(), b.out.problems.len());
        render(b);
        let rendered = (
            b.out.resources[resources..].to_vec(),
            b.out.problems[problems..].to_vec(),
        );
        match key {
            Some(key) => self.keep(name, key, rendered.0, rendered.1, Memo::default()),
            None => self.count_rendered(rendered.0.len()),
        }
    }

    fn count_rendered(&mut self, rows: usize) {
        self.rendered += rows;
        self.rendered_total += rows as u64;
    }

    /// The rows of declaration `name`'s kept renderings that a new rendering may reuse, by
    /// render key ([`Memo::earlier`]).
    pub(super) fn earlier(&self, name: &str) -> Vec<(RenderKey, Resource)> {
        self.entries.get(name).map_or_else(Vec::new, |e| {
            e.slots
                .iter()
                .flat_map(|s| {
                    s.renders
                        .iter()
                        .filter_map(|(i, k)| Some((*k, s.resources.get(*i as usize)?.clone())))
                })
                .collect()
        })
    }

    /// Whether a rendering of declaration `name` under `key` is kept (reads only: asked from
    /// several threads at once).
    pub(super) fn is_kept(&self, name: &str, key: &Key) -> bool {
        self.entries
            .get(name)
            .is_some_and(|e| e.slots.iter().any(|s| &s.key == key))
    }

    /// Adds the kept rendering of declaration `name` under `key` to `b`, if there is one.
    pub(super) fn take_kept(&mut self, b: &mut Builder<'_>, name: &str, key: &Key) -> bool {
        let Some(entry) = self.entries.get_mut(name) else {
            return false;
        };
        let Some(slot) = entry.slots.iter_mut().find(|s| &s.key == key) else {
            return false;
        };
        entry.used = self.generation;
        slot.used = self.generation;
        b.out.resources.extend(slot.resources.iter().cloned());
        b.out.problems.extend(slot.problems.iter().cloned());
        self.reused += slot.resources.len();
        true
    }

    /// Keeps `resources` and `problems` as the rendering of declaration `name` under `key`
    /// (newest first; the oldest beyond [`SLOTS`] goes), with the render keys `memo` made
    /// (its reused rows count as reused, not rendered).
    pub(super) fn keep(
        &mut self,
        name: String,
        key: Key,
        mut resources: Vec<Resource>,
        problems: Vec<String>,
        memo: Memo,
    ) {
        let reused = memo.hits.min(resources.len());
        self.count_rendered(resources.len() - reused);
        self.reused += reused;
        // Kept until the declaration changes: no room beyond what is kept (tens of
        // thousands of entries at rest).
        resources.shrink_to_fit();
        let entry = self.entries.entry(name).or_default();
        entry.used = self.generation;
        entry.slots.truncate(SLOTS - 1);
        entry.slots.reserve_exact(1);
        entry.slots.insert(
            0,
            Slot {
                key,
                used: self.generation,
                resources,
                problems,
                renders: memo.made.into_boxed_slice(),
            },
        );
    }
}

/// Hands the memory the allocator holds free back to the operating system (glibc's
/// `malloc_trim`): a cycle frees its snapshot, renderings and plan, and without this the
/// freed pages of every allocator arena stay resident until reused. Called once a cycle has
/// finished, and once a drift check has; a no-op elsewhere than Linux with glibc.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Caps glibc's allocator at 2 arenas (`M_ARENA_MAX`) unless `MALLOC_ARENA_MAX` is set:
/// by default every thread that meets contention gets an arena of its own (up to 8 per
/// core), and the freed pages of each stay resident in fragments. Must run before the async
/// runtime starts its threads (glibc reads the cap when it makes its first extra arena).
/// Measured on `protond run` at 5,000 instances (release): RSS at rest 112 to 118 MiB by
/// default, 109 to 111 MiB with 2 arenas. A no-op elsewhere than Linux with glibc.
pub fn limit_allocator_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: `mallopt` only sets a tunable of the allocator; no allocation is in flight
        // on another thread yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// What every declaration's key shares in one computation: the catalogue, pins and halts
/// (read through each declaration's resolved releases) and the account.
///
/// A declaration's key holds the releases its resources resolve to, not every release of
/// its template nor the pins: a new minor held back by the rollout or change-set gate leaves
/// the key of a resource rendered on the version it runs as it was the cycle before, so
/// that rendering is reused (issue 20: the gate rendered the whole fleet a second time).
pub(super) struct Keys<'a> {
    templates: &'a Templates<'a>,
    account_id: &'a str,
    /// Per service: the hash of what its key reads besides the account and its releases,
    /// the same in every computation of one evaluation (the gate's computation on other pins
    /// hashes only the releases again).
    declarations: &'a BTreeMap<&'a str, OnceLock<Key>>,
}

impl<'a> Keys<'a> {
    /// The shared parts of the keys of one computation.
    pub fn new(
        templates: &'a Templates<'a>,
        account_id: &'a str,
        declarations: &'a BTreeMap<&'a str, OnceLock<Key>>,
    ) -> Self {
        Self {
            templates,
            account_id,
            declarations,
        }
    }

    fn start(&self, kind: &str, name: &str) -> Hasher {
        let mut h = Hasher::new();
        h.put(kind);
        h.put(name);
        h.put(self.account_id);
        h
    }

    /// The key of environment `name` as declared by `d`; `None` for a customer-managed one
    /// (never rendered; its outputs are read each cycle).
    pub fn environment(&self, b: &Builder<'_>, name: &str, d: &EnvDecl<'_>) -> Option<Key> {
        if d.spec.customer_managed.is_some() {
            return None;
        }
        let template = d.spec.template.as_ref();
        let mut h = self.start("environment", name);
        h.decl(d.repo_name(), d.commit(), d.path(), &d.file.text);
        h.put_fmt(format_args!("{template:?}"));
        h.releases(environment::release(self.templates, name, d).map(|r| vec![r]));
        resource(&mut h, b, &environment_id(name));
        Some(h.finish())
    }

    /// The key of service `name` as declared by `d`, with the environments its instances
    /// may target.
    pub fn service(
        &self,
        b: &Builder<'_>,
        targets: &Targets<'_>,
        name: &str,
        d: &SvcDecl<'_>,
    ) -> Key {
        let declaration = match self.declarations.get(name) {
            Some(cell) => *cell.get_or_init(|| Self::declaration(b, targets, name, d)),
            None => Self::declaration(b, targets, name, d),
        };
        let mut h = Hasher::new();
        h.put_bytes(&declaration);
        h.put(self.account_id);
        h.releases(service::releases(self.templates, name, d));
        h.finish()
    }

    /// What service `name`'s key reads besides the account and its releases: its file, its
    /// resources' records, and each instance's environment as declared and deployed.
    fn declaration(b: &Builder<'_>, targets: &Targets<'_>, name: &str, d: &SvcDecl<'_>) -> Key {
        let template = d.spec.template.as_ref();
        let mut h = Hasher::new();
        h.put("service");
        h.put(name);
        h.decl(d.repo_name(), d.commit(), d.path(), &d.file.text);
        h.put_fmt(format_args!("{template:?}"));
        for inst in &d.spec.instances {
            resource(&mut h, b, &instance_id(name, &inst.name));
            resource(&mut h, b, &component_id(name, &inst.name));
            h.put(&inst.environment);
            h.target(targets.get(inst.environment.as_str()));
            match b.outputs_of(&environment_id(&inst.environment)) {
                Some(outputs) => h.outputs(outputs),
                None => h.put("not deployed"),
            }
        }
        resource(&mut h, b, &pipeline_id(name));
        h.finish()
    }
}

/// What a resource's rendering reads of itself: its record.
fn resource(h: &mut Hasher, b: &Builder<'_>, id: &str) {
    h.put(id);
    match b.record(id) {
        Some(r) => h.record(r),
        None => h.put("no record"),
    }
}

#[cfg(test)]
mod tests;
