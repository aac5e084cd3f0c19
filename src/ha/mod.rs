//! High availability on a PostgreSQL state (issue 19, point 2): which replica reconciles.
//!
//! Several `protond run` replicas share one PostgreSQL database. Each runs an [`Elector`]
//! that records the replica, renews the leases it holds and takes the leases it wants
//! (`shard-0` … `shard-{N-1}`; one lease, `shard-0`, "the leader", when unsharded), and
//! publishes what it holds ([`Held`]) on a `tokio::sync::watch`. The daemon reconciles
//! only while it holds a lease; every other replica follows (serves the status page, the
//! API and `/metrics`, and queues the webhooks it receives for the leader).
//!
//! Fencing is two-fold: the database refuses every write that claims a lease no longer
//! held at its epoch (`migrations/postgres/0016_ha.sql`, the claim set here through
//! [`crate::state::Store::set_fence`]), and a leader checks [`Held::valid_now`] (its own
//! monotonic clock, `lease - lease/5` after the last successful renewal) right before it
//! starts a deployment.
//!
//! This module decides who leads ([`wanted`] is the one policy, pure) and keeps the lease
//! claim; it must never reconcile, deploy or call AWS itself, and never send an empty
//! claim after having led while the work of that term may still run.

pub mod elector;
pub mod shard;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub use elector::{Elector, HaError};

use crate::config::Config;
use crate::state::lease::{LeaseRecord, ReplicaRecord};

/// How this replica takes part in the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// How long a lease lasts without renewal (renewed every third of it).
    pub lease: Duration,
    /// This replica's id, as the leases and replicas tables name it.
    pub replica_id: String,
    /// The number of shards (1: one leader).
    pub shards: u32,
    /// This replica's home shard (`0..shards`).
    pub shard: u32,
    /// The sharding config it runs with ([`shard::fingerprint`]), recorded with the replica.
    pub sharding: String,
}

impl Settings {
    /// The settings the config's `[ha]` section gives (with `PROTOND_REPLICA_ID` and
    /// `PROTOND_SHARD` already applied and checked by `config::ha`).
    #[must_use]
    pub fn from_config(config: &Config) -> Self {
        Self {
            lease: config.ha.lease,
            replica_id: config.ha.replica_id.clone(),
            shards: config.ha.shards.max(1),
            shard: config.ha.shard,
            sharding: shard::config_fingerprint(config),
        }
    }

    /// How often the elector heartbeats, renews and tries to acquire: a third of the lease.
    #[must_use]
    pub fn tick(&self) -> Duration {
        self.lease / 3
    }

    /// How long after the start of its last successful renewal a leader still trusts its
    /// lease: `lease - lease/5` (a margin for clock rates and the renewal's round trip).
    #[must_use]
    pub fn trusted_for(&self) -> Duration {
        self.lease.saturating_sub(self.lease / 5)
    }

    /// Every lease of the installation (`shard-0` … `shard-{N-1}`).
    #[must_use]
    pub fn all_leases(&self) -> Vec<String> {
        (0..self.shards).map(lease_name).collect()
    }
}

/// The lease of shard `n`.
#[must_use]
pub fn lease_name(shard: u32) -> String {
    format!("shard-{shard}")
}

/// The leases this replica should try to hold, given every lease and replica as stored:
/// its home shard's, plus orphaned shards it takes over until their own replica is back
/// ([`shard::wanted`]; `up_for`: how long this replica has been electing). Unsharded: the
/// one leader lease.
#[must_use]
pub fn wanted(
    settings: &Settings,
    leases: &[LeaseRecord],
    replicas: &[ReplicaRecord],
    up_for: Duration,
) -> Vec<String> {
    shard::wanted(
        settings.shard,
        settings.shards,
        &settings.replica_id,
        leases,
        replicas,
        settings.lease,
        up_for,
    )
}

/// What this replica holds now: lease name → epoch, and until when it trusts them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    /// The leases held, with their epochs.
    pub leases: BTreeMap<String, i64>,
    /// Until when (monotonic clock) the leases are trusted without another renewal.
    pub trusted_until: Option<Instant>,
}

impl Held {
    /// Whether this replica holds any lease (it reconciles).
    #[must_use]
    pub fn leading(&self) -> bool {
        !self.leases.is_empty()
    }

    /// Whether a deployment may start now: a lease is held and its last renewal is recent
    /// enough (checked right before every deployment starts).
    #[must_use]
    pub fn valid_now(&self) -> bool {
        self.valid_at(Instant::now())
    }

    /// [`Held::valid_now`] at `now`.
    #[must_use]
    pub fn valid_at(&self, now: Instant) -> bool {
        self.leading() && self.trusted_until.is_some_and(|t| now < t)
    }

    /// The claim sent to the database (name, epoch).
    #[must_use]
    pub fn claim(&self) -> Vec<(String, i64)> {
        self.leases.iter().map(|(n, e)| (n.clone(), *e)).collect()
    }
}

/// Who leads, as this replica last read the leases table (for `/readyz`, `/metrics` and
/// the status page).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Observed {
    /// Every lease as last read.
    pub leases: Vec<LeaseRecord>,
    /// Every replica as last read.
    pub replicas: Vec<ReplicaRecord>,
    /// Changes of a lease's holder or epoch this replica saw since it started.
    pub changes: u64,
    /// Why this replica refuses to lead: a live replica runs with another sharding config
    /// ([`shard::disagreement`]).
    pub conflict: Option<String>,
}

impl Observed {
    /// The live holder of `name` and its epoch, if any.
    #[must_use]
    pub fn holder(&self, name: &str) -> Option<(&str, i64)> {
        self.leases
            .iter()
            .find(|l| l.name == name && l.remaining_ms > 0)
            .map(|l| (l.holder.as_str(), l.epoch))
    }
}

/// How many leases changed holder or epoch between two readings (a lease seen for the
/// first time counts when it is not the first reading).
#[must_use]
pub fn changes(before: &[LeaseRecord], after: &[LeaseRecord], first: bool) -> u64 {
    if first {
        return 0;
    }
    let old: BTreeMap<&str, (&str, i64)> = before
        .iter()
        .map(|l| (l.name.as_str(), (l.holder.as_str(), l.epoch)))
        .collect();
    let n = after
        .iter()
        .filter(|l| old.get(l.name.as_str()) != Some(&(l.holder.as_str(), l.epoch)))
        .count();
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Who this replica is and who leads, for `/readyz` and the status page.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Standing {
    /// `leader` (holds a lease) or `follower`.
    pub role: &'static str,
    /// This replica's id.
    pub replica: String,
    /// The holder of the leader lease (`shard-0`), as last read.
    pub leader: Option<String>,
    /// Its epoch.
    pub epoch: Option<i64>,
    /// The leases this replica holds.
    pub holds: Vec<String>,
    /// Why it refuses to lead, if it does ([`Observed::conflict`]).
    pub conflict: Option<String>,
}

/// This replica's [`Standing`] from what it holds and observed.
#[must_use]
pub fn standing(settings: &Settings, held: &Held, observed: &Observed) -> Standing {
    let leader = observed.holder(&lease_name(0));
    Standing {
        role: if held.leading() { "leader" } else { "follower" },
        replica: settings.replica_id.clone(),
        leader: leader.map(|(h, _)| h.to_string()),
        epoch: leader.map(|(_, e)| e),
        holds: held.leases.keys().cloned().collect(),
        conflict: observed.conflict.clone(),
    }
}

/// The election's metrics as `OpenMetrics` lines (without `# EOF`): `protond_is_leader`
/// (0/1), `protond_leader{replica}` (1 on this replica's own series when it leads),
/// `protond_lease_epoch` (the leader lease's epoch as last read) and
/// `protond_leader_changes_total` (changes of holder or epoch this replica saw).
#[must_use]
pub fn metrics_text(role: &Standing, changes: u64) -> String {
    let leading = u8::from(role.role == "leader");
    let replica = role.replica.replace(['\\', '"', '\n'], "_");
    format!(
        "# HELP protond_is_leader Whether this replica holds a lease and reconciles.\n\
         # TYPE protond_is_leader gauge\n\
         protond_is_leader {leading}\n\
         # HELP protond_leader Whether the replica leads (this replica's own series).\n\
         # TYPE protond_leader gauge\n\
         protond_leader{{replica=\"{replica}\"}} {leading}\n\
         # HELP protond_lease_epoch The leader lease's epoch, as this replica last read it.\n\
         # TYPE protond_lease_epoch gauge\n\
         protond_lease_epoch {}\n\
         # HELP protond_leader_changes Changes of a lease's holder or epoch this replica saw.\n\
         # TYPE protond_leader_changes counter\n\
         protond_leader_changes_total {changes}\n",
        role.epoch.unwrap_or(0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(shards: u32, shard: u32) -> Settings {
        Settings {
            lease: Duration::from_secs(15),
            replica_id: "a".into(),
            shards,
            shard,
            sharding: String::new(),
        }
    }

    fn lease(name: &str, holder: &str, epoch: i64) -> LeaseRecord {
        LeaseRecord {
            name: name.into(),
            holder: holder.into(),
            epoch,
            remaining_ms: 1000,
        }
    }

    #[test]
    fn unsharded_wants_the_leader_lease_and_sharded_its_home_shard() {
        let cases = [
            ((1, 0), "shard-0"),
            ((3, 0), "shard-0"),
            ((3, 2), "shard-2"),
        ];
        // Every shard has a live replica of its own: nothing to take over (the orphan
        // takeover is table-tested in `shard/tests.rs`).
        let replicas: Vec<ReplicaRecord> = (0..3)
            .map(|k| ReplicaRecord {
                id: format!("r{k}"),
                shard: k,
                listen: None,
                started_at: "2026-01-01T00:00:00Z".into(),
                silent_ms: 0,
                sharding: None,
            })
            .collect();
        for ((shards, shard), want) in cases {
            assert_eq!(
                wanted(&settings(shards, shard), &[], &replicas, Duration::ZERO),
                [want]
            );
        }
        assert_eq!(
            settings(3, 0).all_leases(),
            ["shard-0", "shard-1", "shard-2"]
        );
    }

    #[test]
    fn a_lease_is_trusted_until_a_fifth_before_it_expires() {
        let s = settings(1, 0);
        assert_eq!(s.tick(), Duration::from_secs(5));
        assert_eq!(s.trusted_for(), Duration::from_secs(12));
        let now = Instant::now();
        let held = Held {
            leases: [("shard-0".to_string(), 3)].into(),
            trusted_until: Some(now + s.trusted_for()),
        };
        assert!(held.valid_at(now));
        assert!(held.valid_at(now + Duration::from_secs(11)));
        assert!(!held.valid_at(now + Duration::from_secs(12)));
        // Nothing held: never valid, whatever the time.
        let none = Held {
            leases: BTreeMap::new(),
            trusted_until: Some(now + s.trusted_for()),
        };
        assert!(!none.valid_at(now));
        assert!(!Held::default().valid_at(now));
        assert_eq!(held.claim(), [("shard-0".to_string(), 3)]);
    }

    #[test]
    fn changes_count_new_holders_and_epochs() {
        let a1 = [lease("shard-0", "a", 1)];
        let b2 = [lease("shard-0", "b", 2)];
        assert_eq!(changes(&[], &a1, true), 0);
        assert_eq!(changes(&[], &a1, false), 1);
        assert_eq!(changes(&a1, &a1, false), 0);
        assert_eq!(changes(&a1, &b2, false), 1);
        let observed = Observed {
            leases: b2.to_vec(),
            ..Observed::default()
        };
        assert_eq!(observed.holder("shard-0"), Some(("b", 2)));
        assert_eq!(observed.holder("shard-1"), None);
        let held = Held {
            leases: [("shard-0".to_string(), 2)].into(),
            trusted_until: None,
        };
        let mut s = settings(1, 0);
        s.replica_id = "b".into();
        let r = standing(&s, &held, &observed);
        assert_eq!(
            (r.role, r.leader.as_deref(), r.epoch),
            ("leader", Some("b"), Some(2))
        );
        let text = metrics_text(&r, 1);
        assert!(text.contains("protond_is_leader 1\n"), "{text}");
        assert!(text.contains("protond_leader{replica=\"b\"} 1\n"), "{text}");
        assert!(text.contains("protond_lease_epoch 2\n"), "{text}");
        assert!(text.contains("protond_leader_changes_total 1\n"), "{text}");
        let f = standing(&settings(1, 0), &Held::default(), &observed);
        assert_eq!(f.role, "follower");
        assert!(metrics_text(&f, 0).contains("protond_is_leader 0\n"));
    }
}
