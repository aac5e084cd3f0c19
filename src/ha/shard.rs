//! Sharding for very large fleets (issue 19): which leases a replica tries to hold ([`wanted`]: its home shard,
//! plus orphans no live replica of their own serves), and which changes a leader holding
//! some shards may make ([`Scope`]: the repos of its shards; environments on shard 0 only).
//!
//! Pure and table-tested (`shard/tests.rs`): the elector passes the lease and replica rows
//! in, the cycle passes its plan. It must never read the store, a clock or the environment,
//! and never acquire or release a lease itself (the elector does).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sha2::{Digest, Sha256};

pub use super::lease_name;
use crate::config::{Config, shard_of};
use crate::model::ResourceKind;
use crate::plan::Plan;
use crate::state::lease::{LeaseRecord, ReplicaRecord};

/// The shard a lease name stands for (`shard-3` → 3), `None` for any other name.
#[must_use]
pub fn lease_shard(name: &str) -> Option<u32> {
    name.strip_prefix("shard-")?.parse().ok()
}

fn first_u64(digest: &[u8]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The replica that takes over the orphaned lease `lease` among `live` replica ids:
/// rendezvous hashing of the lease name over the ids (highest weight, ties to the smaller
/// id), so that replicas agree without talking and orphans spread over them.
fn orphan_taker<'a>(lease: &str, live: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let w = |id: &str| {
        let mut h = Sha256::new();
        h.update(b"protond-orphan\0");
        h.update(lease.as_bytes());
        h.update([0]);
        h.update(id.as_bytes());
        first_u64(&h.finalize())
    };
    live.max_by(|a, b| w(a).cmp(&w(b)).then(b.cmp(a)))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The leases replica `me` (home shard `home` of `shards`) tries to hold this round:
///
/// * always its home shard's lease;
/// * a borrowed shard it holds now, as long as no live replica of that shard exists (a
///   replica is live while it recorded itself less than two lease periods ago); once one
///   is, it is given back (no longer wanted: the elector releases it);
/// * an orphan: a shard whose lease is absent or expired for longer than one lease period
///   and which has no live replica of its own, when `me` is the replica rendezvous hashing
///   of the lease name picks among the live replicas (the others do not try; should two
///   try anyway, acquiring is atomic and one wins). Only once `me` has been up (`up_for`)
///   for one lease period: replicas started together have all recorded themselves by then,
///   so the first to start does not take its peers' shards only to hand them back a moment
///   later, aborting the deployments it started there (the next leader would have to adopt
///   them).
///
/// Sorted by shard. With `shards` ≤ 1 it is `["shard-0"]`.
#[must_use]
pub fn wanted(
    home: u32,
    shards: u32,
    me: &str,
    leases: &[LeaseRecord],
    replicas: &[ReplicaRecord],
    lease_ttl: Duration,
    up_for: Duration,
) -> Vec<String> {
    let shards = shards.max(1);
    let settled = up_for >= lease_ttl;
    let ttl = millis(lease_ttl);
    let live: Vec<&ReplicaRecord> = replicas
        .iter()
        .filter(|r| r.silent_ms < ttl.saturating_mul(2))
        .collect();
    let has_own = |shard: u32| {
        live.iter()
            .any(|r| r.shard == i64::from(shard) && r.id != me)
    };
    let mut live_ids: BTreeSet<&str> = live.iter().map(|r| r.id.as_str()).collect();
    live_ids.insert(me);
    let mut out = Vec::new();
    for shard in 0..shards {
        let name = lease_name(shard);
        if shard == home.min(shards - 1) {
            out.push(name);
            continue;
        }
        if has_own(shard) {
            continue;
        }
        let lease = leases.iter().find(|l| l.name == name);
        let mine = lease.is_some_and(|l| l.holder == me && l.remaining_ms > 0);
        let orphan = lease.is_none_or(|l| l.remaining_ms < -ttl);
        if mine || (settled && orphan && orphan_taker(&name, live_ids.iter().copied()) == Some(me))
        {
            out.push(name);
        }
    }
    out
}

/// Where a webhook's repo is fetched and reconciled ([`Scope::route`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// By this leader only (a spec repo of a shard it holds, or everything unsharded).
    Here,
    /// By the leader of this other shard: queued for it (`wakeups`).
    Shard(u32),
    /// By every leader (a template repo: the catalogue is shared): here, and queued.
    Everywhere,
}

/// The resources a leader knows this cycle (the desired set and the records): id → kind
/// and repo.
pub type Known<'a> = BTreeMap<&'a str, (ResourceKind, &'a str)>;

/// The sharding config a replica runs with, as it records it with itself: `ha.shards` and
/// every `spec_repos.<name>.shard`, as a JSON object (keys sorted). Replicas that record
/// different ones would place repos on different shards.
#[must_use]
pub fn fingerprint(shards: u32, explicit: &BTreeMap<String, u32>) -> String {
    let mut keys: BTreeMap<String, String> = explicit
        .iter()
        .map(|(repo, n)| (format!("spec_repos.{repo}.shard"), n.to_string()))
        .collect();
    keys.insert("ha.shards".into(), shards.max(1).to_string());
    serde_json::to_string(&keys).unwrap_or_default()
}

/// The sharding config of `config` ([`fingerprint`]).
#[must_use]
pub fn config_fingerprint(config: &Config) -> String {
    let explicit = config
        .spec_repos
        .iter()
        .filter_map(|r| Some((r.name.clone(), r.shard?)))
        .collect();
    fingerprint(config.ha.shards, &explicit)
}

/// Two live replicas that run with different sharding configs: neither may lead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disagreement {
    /// This replica.
    pub me: String,
    /// The other replica.
    pub other: String,
    /// The first key that differs (`ha.shards`, `spec_repos.<name>.shard`).
    pub key: String,
    /// Its value here (`unset`: not given).
    pub mine: String,
    /// Its value there.
    pub theirs: String,
}

impl std::fmt::Display for Disagreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "replicas {} and {} run with different sharding configs: {} is {} on {} and {} on {}; \
             neither leads until they agree: give every replica the same [ha] shards and \
             [[spec_repos]] shard, and restart the one that differs",
            self.me, self.other, self.key, self.mine, self.me, self.theirs, self.other
        )
    }
}

/// The first live replica (recorded less than two lease periods ago) other than `me` whose
/// sharding config differs from `mine`, and the first key that differs; `None` when every
/// live replica agrees (a replica that records none, an earlier version, is not counted).
#[must_use]
pub fn disagreement(
    me: &str,
    mine: &str,
    replicas: &[ReplicaRecord],
    lease_ttl: Duration,
) -> Option<Disagreement> {
    let ttl = millis(lease_ttl);
    let parse = |text: &str| -> BTreeMap<String, String> {
        serde_json::from_str(text)
            .unwrap_or_else(|_| BTreeMap::from([("(unreadable)".to_string(), text.to_string())]))
    };
    let here = parse(mine);
    replicas
        .iter()
        .filter(|r| r.id != me && r.silent_ms < ttl.saturating_mul(2))
        .filter_map(|r| Some((r, r.sharding.as_deref()?)))
        .filter(|(_, theirs)| *theirs != mine)
        .find_map(|(r, theirs)| {
            let there = parse(theirs);
            let key = here
                .keys()
                .chain(there.keys())
                .find(|k| here.get(*k) != there.get(*k))?;
            let value = |m: &BTreeMap<String, String>| {
                m.get(key).cloned().unwrap_or_else(|| "unset".to_string())
            };
            Some(Disagreement {
                me: me.to_string(),
                other: r.id.clone(),
                key: key.clone(),
                mine: value(&here),
                theirs: value(&there),
            })
        })
}

/// What a leader holding some shards may change: the resources of the spec repos of its
/// shards, and environments when it holds shard 0. Resources of other shards' repos are
/// neither deployed nor deleted by it; it reads every repo and record all the same (rollout
/// stages, environment outputs and placement are fleet-wide).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// How many shards the spec repos are spread over.
    shards: u32,
    /// The shards held now.
    held: BTreeSet<u32>,
    /// Spec repos with an explicit `shard` in the config.
    explicit: BTreeMap<String, u32>,
}

impl Default for Scope {
    fn default() -> Self {
        Self::all()
    }
}

impl Scope {
    /// Unsharded: one leader owns everything.
    #[must_use]
    pub fn all() -> Self {
        Self {
            shards: 1,
            held: BTreeSet::from([0]),
            explicit: BTreeMap::new(),
        }
    }

    /// `held` shards of `shards`, with the repos given an explicit shard.
    #[must_use]
    pub fn new(shards: u32, held: BTreeSet<u32>, explicit: BTreeMap<String, u32>) -> Self {
        Self {
            shards: shards.max(1),
            held,
            explicit,
        }
    }

    /// The scope of the leases named `held` (`shard-N`; other names are ignored) of
    /// `shards` (the elector's `Settings::shards`: `[ha] shards` or its override), with
    /// `config`'s spec repos' explicit `shard`.
    #[must_use]
    pub fn from_config<'a>(
        config: &Config,
        shards: u32,
        held: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let explicit = config
            .spec_repos
            .iter()
            .filter_map(|r| Some((r.name.clone(), r.shard?)))
            .collect();
        Self::from_leases(shards, held, explicit)
    }

    /// The scope of the leases named `held` (`shard-N`; other names are ignored).
    #[must_use]
    pub fn from_leases<'a>(
        shards: u32,
        held: impl IntoIterator<Item = &'a str>,
        explicit: BTreeMap<String, u32>,
    ) -> Self {
        let held = held.into_iter().filter_map(lease_shard).collect();
        Self::new(shards, held, explicit)
    }

    /// Whether this is the unsharded scope holding everything.
    #[must_use]
    pub fn is_everything(&self) -> bool {
        self.shards == 1 && self.held.contains(&0)
    }

    /// The shard of spec repo `repo` ([`shard_of`]: its explicit shard, else the
    /// rendezvous hash of its name).
    #[must_use]
    pub fn shard_of(&self, repo: &str) -> u32 {
        shard_of(repo, self.shards, self.explicit.get(repo).copied())
    }

    /// The shard that deploys a resource of `kind` declared by `repo`: shard 0 for
    /// environments (every instance's placement and outputs hang on them), else its repo's.
    #[must_use]
    pub fn owner(&self, kind: ResourceKind, repo: &str) -> u32 {
        match kind {
            ResourceKind::Environment => 0,
            _ => self.shard_of(repo),
        }
    }

    /// Whether this leader may deploy or delete a resource of `kind` from `repo`.
    #[must_use]
    pub fn owns(&self, kind: ResourceKind, repo: &str) -> bool {
        self.is_everything() || self.held.contains(&self.owner(kind, repo))
    }

    /// Whether this leader answers for the per-resource bookkeeping row of `id` (needs
    /// approval, spec finding): a resource `known` (id → kind and repo, from the desired
    /// set and the records) that it owns; a resource no one knows any more (its row is
    /// left over) when it holds shard 0. Every other shard's rows are left to their leader,
    /// so that two leaders never replace each other's rows.
    #[must_use]
    pub fn answers_for(&self, id: &str, known: &Known<'_>) -> bool {
        if self.is_everything() {
            return true;
        }
        match known.get(id) {
            Some((kind, repo)) => self.owns(*kind, repo),
            None => self.held.contains(&0),
        }
    }

    /// Of the rows `stored` (resource ids), those this leader replaces now: rows it
    /// [answers for](Scope::answers_for) whose resource is not `current` any more.
    #[must_use]
    pub fn stale_rows<'a>(
        &self,
        stored: impl IntoIterator<Item = &'a String>,
        current: impl Fn(&str) -> bool,
        known: &Known<'_>,
    ) -> Vec<String> {
        stored
            .into_iter()
            .filter(|id| !current(id) && self.answers_for(id, known))
            .cloned()
            .collect()
    }

    /// Where a cycle request naming repo `repo` goes when this replica leads this scope
    /// (`spec`: whether `repo` is a spec repo; template repos are every leader's).
    #[must_use]
    pub fn route(&self, repo: &str, spec: bool) -> Route {
        if self.is_everything() {
            return Route::Here;
        }
        if !spec {
            return Route::Everywhere;
        }
        let shard = self.shard_of(repo);
        if self.held.contains(&shard) {
            Route::Here
        } else {
            Route::Shard(shard)
        }
    }

    /// Whether this leader acts on a webhook another replica queued (`repo`: the repo it
    /// named, `None`: every repo): not when it names a spec repo of a shard this leader does
    /// not hold (that shard's leader acts on it).
    #[must_use]
    pub fn takes_wakeup(&self, repo: Option<&str>, spec: impl Fn(&str) -> bool) -> bool {
        repo.is_none_or(|r| !matches!(self.route(r, spec(r)), Route::Shard(_)))
    }

    /// Drops from `plan` every action and proposal of a resource this leader does not own.
    /// `repo_of` gives a resource's repo (from the desired set or its record); a resource
    /// whose repo is unknown is left alone too.
    pub fn retain_owned<'a>(&self, plan: &mut Plan, repo_of: impl Fn(&str) -> Option<&'a str>) {
        if self.is_everything() {
            return;
        }
        plan.actions
            .retain(|a| repo_of(&a.id).is_some_and(|repo| self.owns(a.kind, repo)));
        // A proposal is a pull request to the repo: its repo's shard opens it, whatever
        // the resource's kind.
        plan.proposals.retain(|p| {
            repo_of(&p.id).is_some_and(|repo| self.held.contains(&self.shard_of(repo)))
        });
    }
}

#[cfg(test)]
mod tests;
