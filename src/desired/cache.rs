//! Reuse of the last [`compute_held`] result when nothing it reads has changed. Must hash
//! everything `compute_held` reads: a missed input would serve a stale result.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use super::{DesiredSet, Snapshot, compute_held};
use crate::plan::Version;
use crate::state::ResourceRecord;

/// The last [`compute_held`] result and what it was computed from: a cycle whose inputs
/// are unchanged (same spec commits, releases, deployed records, pins and halts) reuses it instead
/// of rendering everything again.
#[derive(Debug, Default)]
pub struct ComputeCache {
    key: Option<String>,
    set: Option<DesiredSet>,
}

impl ComputeCache {
    /// [`super::compute_pinned`], or the previous result when nothing it reads has changed.
    pub fn compute(
        &mut self,
        snapshot: &Snapshot,
        deployed: &[ResourceRecord],
        account_id: &str,
        pins: &BTreeMap<String, Version>,
    ) -> DesiredSet {
        self.compute_held(snapshot, deployed, account_id, pins, &BTreeSet::new())
    }

    /// [`compute_held`] (new resources skip the `halted` minors), or the previous result when
    /// nothing it reads has changed: a halted rollout, which may stand for days, keeps the
    /// reuse.
    pub fn compute_held(
        &mut self,
        snapshot: &Snapshot,
        deployed: &[ResourceRecord],
        account_id: &str,
        pins: &BTreeMap<String, Version>,
        halted: &BTreeSet<(String, Version)>,
    ) -> DesiredSet {
        let key = compute_key(snapshot, deployed, account_id, pins, halted);
        if self.key.as_deref() == Some(key.as_str())
            && let Some(set) = &self.set
        {
            return set.clone();
        }
        let set = compute_held(snapshot, deployed, account_id, pins, halted);
        self.key = Some(key);
        self.set = Some(set.clone());
        set
    }
}

/// What [`compute_held`] reads, as one hash.
fn compute_key(
    snapshot: &Snapshot,
    deployed: &[ResourceRecord],
    account_id: &str,
    pins: &BTreeMap<String, Version>,
    halted: &BTreeSet<(String, Version)>,
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
        // A moved tag is a problem line; a deleted one changes what new resources get.
        put(&format!("{:?}", r.state));
    }
    for s in &snapshot.spec_repos {
        put(&s.repo);
        put(&s.branch);
        put(if s.platform { "platform" } else { "-" });
        put(s.commit.as_deref().unwrap_or("-"));
        put(s.unknown.as_deref().unwrap_or("-"));
    }
    for (repo, how) in &snapshot.retired_repos {
        put(repo);
        put(how);
    }
    // Customer-managed environments' stack outputs change without a commit.
    put("customer stacks");
    for (environment, read) in &snapshot.customer_stacks {
        put(environment);
        match read {
            Ok(outputs) => {
                for (k, v) in outputs {
                    put(k);
                    put(v);
                }
            }
            Err(e) => put(e),
        }
    }
    put("records");
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
    put("halted");
    for (template, v) in halted {
        put(template);
        put(&v.to_string());
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A halt changes what new resources get: it must change the key, or a cycle after a
    /// halt (or a resume) would be served the rendering from before it.
    #[test]
    fn halts_are_part_of_the_key() {
        let snapshot = Snapshot::default();
        let none = BTreeMap::new();
        let halted = BTreeSet::from([("svc".to_string(), Version { major: 1, minor: 1 })]);
        let a = compute_key(&snapshot, &[], "1", &none, &BTreeSet::new());
        let b = compute_key(&snapshot, &[], "1", &none, &halted);
        assert_ne!(a, b);
        assert_eq!(b, compute_key(&snapshot, &[], "1", &none, &halted));
    }

    /// A customer-managed environment's stack outputs change without a commit: a cycle
    /// after they change must render its instances again.
    #[test]
    fn customer_stack_outputs_are_part_of_the_key() {
        let mut snapshot = Snapshot::default();
        let none = BTreeMap::new();
        let key = |s: &Snapshot| compute_key(s, &[], "1", &none, &BTreeSet::new());
        let empty = key(&snapshot);
        snapshot.customer_stacks.insert(
            "dev".into(),
            Ok(BTreeMap::from([("Vpc".to_string(), "vpc-1".to_string())])),
        );
        let one = key(&snapshot);
        snapshot.customer_stacks.insert(
            "dev".into(),
            Ok(BTreeMap::from([("Vpc".to_string(), "vpc-2".to_string())])),
        );
        let two = key(&snapshot);
        assert!(empty != one && one != two, "{empty} {one} {two}");
    }
}
