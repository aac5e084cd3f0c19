//! Table tests of `wanted`, `shard_of` and `Scope`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::*;
use crate::plan::{Action, ActionKind, MajorProposal, Version};

const TTL: Duration = Duration::from_secs(10);

fn lease(shard: u32, holder: &str, remaining_ms: i64) -> LeaseRecord {
    LeaseRecord {
        name: lease_name(shard),
        holder: holder.into(),
        epoch: 1,
        remaining_ms,
    }
}

fn replica(id: &str, shard: i64, silent_ms: i64) -> ReplicaRecord {
    ReplicaRecord {
        id: id.into(),
        shard,
        listen: None,
        started_at: "2026-01-01T00:00:00Z".into(),
        silent_ms,
        sharding: None,
    }
}

fn names(shards: &[u32]) -> Vec<String> {
    shards.iter().map(|s| lease_name(*s)).collect()
}

/// (what, (home, me), shards, leases, replicas, wanted).
type Case<'a> = (
    &'a str,
    (u32, &'a str),
    u32,
    &'a [LeaseRecord],
    &'a [ReplicaRecord],
    Vec<String>,
);

#[test]
fn wanted_table() {
    // a, b, c are the replicas of shards 0, 1, 2; c may be live or silent for 25 s.
    let all_live = vec![
        replica("a", 0, 100),
        replica("b", 1, 100),
        replica("c", 2, 100),
    ];
    let c_gone = vec![
        replica("a", 0, 100),
        replica("b", 1, 100),
        replica("c", 2, 25_000),
    ];
    let held = vec![
        lease(0, "a", 5_000),
        lease(1, "b", 5_000),
        lease(2, "c", 5_000),
    ];
    // c's lease expired 12 s ago (more than one lease period).
    let lapsed = vec![
        lease(0, "a", 5_000),
        lease(1, "b", 5_000),
        lease(2, "c", -12_000),
    ];
    // Expired only 3 s ago: not yet an orphan.
    let fresh = vec![
        lease(0, "a", 5_000),
        lease(1, "b", 5_000),
        lease(2, "c", -3_000),
    ];
    // The orphan shard-2 goes to one of a and b; `taker` names it, `(home, id)`.
    let pick = orphan_taker("shard-2", ["a", "b"].into_iter()).expect("a or b");
    let (taker, other) = if pick == "a" {
        ((0, "a"), (1, "b"))
    } else {
        ((1, "b"), (0, "a"))
    };
    let borrowed = vec![
        lease(0, "a", 5_000),
        lease(1, "b", 5_000),
        lease(2, taker.1, 5_000),
    ];
    #[rustfmt::skip]
    let cases: Vec<Case<'_>> = vec![
        ("unsharded", (0, "a"), 1, &[], &[], names(&[0])),
        ("shards 0 counts as 1", (0, "a"), 0, &[], &[], names(&[0])),
        ("home only, all live", (1, "b"), 3, &held, &all_live, names(&[1])),
        ("home wanted even while another holds it", (2, "c2"), 3, &held, &all_live, names(&[2])),
        ("home replica live, lease lapsed: no orphan", (0, "a"), 3, &lapsed, &all_live, names(&[0])),
        ("lapsed less than a lease: wait", taker, 3, &fresh, &c_gone, names(&[taker.0])),
        ("orphan to the rendezvous winner", taker, 3, &lapsed, &c_gone, names(&[taker.0, 2])),
        ("the other live replica does not try", other, 3, &lapsed, &c_gone, names(&[other.0])),
        ("borrowed kept while shard 2 has no replica", taker, 3, &borrowed, &c_gone, names(&[taker.0, 2])),
        ("borrowed given back once c is live", taker, 3, &borrowed, &all_live, names(&[taker.0])),
    ];
    for (what, (home, me), shards, leases, replicas, want) in cases {
        let got = wanted(home, shards, me, leases, replicas, TTL, TTL);
        assert_eq!(got, want, "{what}");
    }
}

#[test]
fn absent_lease_is_an_orphan_and_exactly_one_replica_takes_it() {
    // Shard 2 never started: its lease does not exist and nobody of shard 2 is live.
    let replicas = vec![replica("a", 0, 0), replica("b", 1, 0)];
    let leases = vec![lease(0, "a", 5_000), lease(1, "b", 5_000)];
    let a = wanted(0, 3, "a", &leases, &replicas, TTL, TTL);
    let b = wanted(1, 3, "b", &leases, &replicas, TTL, TTL);
    let takers = [&a, &b]
        .iter()
        .filter(|w| w.contains(&lease_name(2)))
        .count();
    assert_eq!(takers, 1, "a wants {a:?}, b wants {b:?}");
}

#[test]
fn orphans_spread_over_live_replicas() {
    let ids: Vec<String> = (0..4).map(|i| format!("replica-{i}")).collect();
    let takers: BTreeSet<&str> = (0..64)
        .map(|s| {
            let name = lease_name(s);
            orphan_taker(&name, ids.iter().map(String::as_str)).expect("some replica")
        })
        .collect();
    assert_eq!(takers.len(), 4, "64 orphans all went to {takers:?}");
}

#[test]
fn a_replica_not_yet_recorded_counts_itself_live() {
    // "z" has not recorded itself yet; it is the only candidate, so it takes the orphan.
    let got = wanted(0, 2, "z", &[], &[], TTL, TTL);
    assert_eq!(got, names(&[0, 1]));
}

#[test]
fn a_replica_takes_no_orphan_before_it_has_been_up_one_lease_period() {
    // Replicas started together: "z" is first and nobody else has recorded itself yet.
    // Taking shard 1 now would only mean handing it back (and aborting what it started
    // there) once shard 1's own replica records itself a moment later.
    let early = TTL.saturating_sub(Duration::from_millis(1));
    assert_eq!(
        wanted(0, 2, "z", &[], &[], TTL, Duration::ZERO),
        names(&[0])
    );
    assert_eq!(wanted(0, 2, "z", &[], &[], TTL, early), names(&[0]));
    // A lapsed lease waits too.
    let lapsed = vec![lease(0, "z", 5_000), lease(1, "y", -12_000)];
    let gone = vec![replica("y", 1, 25_000)];
    assert_eq!(wanted(0, 2, "z", &lapsed, &gone, TTL, early), names(&[0]));
    assert_eq!(wanted(0, 2, "z", &lapsed, &gone, TTL, TTL), names(&[0, 1]));
    // A shard it already holds is kept whatever its age (only taking waits).
    let mine = vec![lease(0, "z", 5_000), lease(1, "z", 5_000)];
    assert_eq!(
        wanted(0, 2, "z", &mine, &gone, TTL, Duration::ZERO),
        names(&[0, 1])
    );
}

#[test]
fn lease_names_round_trip() {
    assert_eq!(lease_shard(&lease_name(7)), Some(7));
    assert_eq!(lease_shard("leader"), None);
    assert_eq!(lease_shard("shard-x"), None);
}

fn action(id: &str, kind: ResourceKind) -> Action {
    Action {
        id: id.into(),
        kind,
        template: "t".into(),
        version: Version { major: 1, minor: 0 },
        deployed: None,
        action: ActionKind::Create,
    }
}

/// Two repo names, on shards 0 and 1 of two.
fn two_repos() -> (String, String) {
    let all: Vec<String> = (0..100).map(|i| format!("repo-{i}")).collect();
    let on = |s| {
        all.iter()
            .find(|n| shard_of(n, 2, None) == s)
            .expect("a repo on each shard")
            .clone()
    };
    (on(0), on(1))
}

#[test]
fn scope_owns_table() {
    let (r0, r1) = two_repos();
    let explicit = BTreeMap::from([("pinned".to_string(), 1)]);
    let s0 = Scope::new(2, BTreeSet::from([0]), explicit.clone());
    let s1 = Scope::new(2, BTreeSet::from([1]), explicit.clone());
    let both = Scope::new(2, BTreeSet::from([0, 1]), explicit);
    let none = Scope::new(2, BTreeSet::new(), BTreeMap::new());
    let all = Scope::all();
    #[rustfmt::skip]
    let cases = [
        (&s0, ResourceKind::ServiceInstance, r0.as_str(), true),
        (&s0, ResourceKind::ServiceInstance, r1.as_str(), false),
        (&s1, ResourceKind::ServiceInstance, r1.as_str(), true),
        (&s1, ResourceKind::Pipeline, r0.as_str(), false),
        // Environments on shard 0 only, whichever repo declares them.
        (&s0, ResourceKind::Environment, r1.as_str(), true),
        (&s1, ResourceKind::Environment, r1.as_str(), false),
        (&s1, ResourceKind::Component, "pinned", true),
        (&s0, ResourceKind::Component, "pinned", false),
        (&both, ResourceKind::ServiceInstance, r1.as_str(), true),
        (&both, ResourceKind::Environment, r1.as_str(), true),
        (&all, ResourceKind::Environment, r1.as_str(), true),
        (&none, ResourceKind::Environment, "x", false),
    ];
    for (scope, kind, repo, want) in cases {
        assert_eq!(scope.owns(kind, repo), want, "{scope:?} {kind:?} {repo}");
    }
}

#[test]
fn retain_owned_drops_other_shards_and_unknown_repos() {
    let (r0, r1) = two_repos();
    let repos = BTreeMap::from([
        ("svc-a", r0.as_str()),
        ("svc-b", r1.as_str()),
        ("env-e", r1.as_str()),
    ]);
    let plan = Plan {
        actions: vec![
            action("svc-a", ResourceKind::ServiceInstance),
            action("svc-b", ResourceKind::ServiceInstance),
            action("env-e", ResourceKind::Environment),
            action("lost", ResourceKind::ServiceInstance),
        ],
        proposals: vec![MajorProposal {
            id: "env-e".into(),
            template: "t".into(),
            current: 1,
            available: 2,
        }],
    };
    let ids = |p: &Plan| p.actions.iter().map(|a| a.id.clone()).collect::<Vec<_>>();
    let mut on0 = plan.clone();
    Scope::from_leases(2, ["shard-0"], BTreeMap::new())
        .retain_owned(&mut on0, |id| repos.get(id).copied());
    assert_eq!(ids(&on0), ["svc-a", "env-e"]);
    assert!(on0.proposals.is_empty(), "a pull request to shard 1's repo");
    let mut on1 = plan.clone();
    Scope::from_leases(2, ["shard-1"], BTreeMap::new())
        .retain_owned(&mut on1, |id| repos.get(id).copied());
    assert_eq!(ids(&on1), ["svc-b"]);
    assert_eq!(on1.proposals.len(), 1);
    let mut all = plan.clone();
    Scope::all().retain_owned(&mut all, |_| None);
    assert_eq!(all, plan, "unsharded keeps everything");
}

#[test]
fn each_leader_replaces_only_the_rows_it_answers_for() {
    let (r0, r1) = two_repos();
    let known: Known<'_> = BTreeMap::from([
        ("svc-a", (ResourceKind::ServiceInstance, r0.as_str())),
        ("svc-b", (ResourceKind::ServiceInstance, r1.as_str())),
        ("env-e", (ResourceKind::Environment, r1.as_str())),
    ]);
    let stored: Vec<String> = ["svc-a", "svc-b", "env-e", "gone"]
        .map(String::from)
        .to_vec();
    let on0 = Scope::from_leases(2, ["shard-0"], BTreeMap::new());
    let on1 = Scope::from_leases(2, ["shard-1"], BTreeMap::new());
    // (what, scope, current rows, rows replaced).
    let cases: [(&str, &Scope, &[&str], &[&str]); 6] = [
        (
            "shard 0: its service, environments, left-over rows",
            &on0,
            &[],
            &["svc-a", "env-e", "gone"],
        ),
        ("shard 1: its service only", &on1, &[], &["svc-b"]),
        ("shard 1 still holds svc-b", &on1, &["svc-b"], &[]),
        (
            "shard 0 still holds its rows",
            &on0,
            &["svc-a", "env-e"],
            &["gone"],
        ),
        (
            "unsharded: every row not current",
            &Scope::all(),
            &["svc-b"],
            &["svc-a", "env-e", "gone"],
        ),
        (
            "both shards held: as unsharded but shard-scoped",
            &Scope::from_leases(2, ["shard-0", "shard-1"], BTreeMap::new()),
            &[],
            &["svc-a", "svc-b", "env-e", "gone"],
        ),
    ];
    for (what, scope, current, want) in cases {
        let got = scope.stale_rows(&stored, |id| current.contains(&id), &known);
        assert_eq!(got, want, "{what}");
    }
    assert!(
        !on1.answers_for("gone", &known),
        "shard 0 clears left-overs"
    );
    assert!(
        on0.answers_for("env-e", &known),
        "environments are shard 0's"
    );
}

#[test]
fn a_webhook_goes_to_the_leader_of_its_repos_shard() {
    let (r0, r1) = two_repos();
    let explicit = BTreeMap::from([("pinned".to_string(), 1)]);
    let on0 = Scope::from_leases(2, ["shard-0"], explicit.clone());
    let on1 = Scope::from_leases(2, ["shard-1"], explicit);
    // (what, scope, repo, spec repo, route).
    let cases = [
        ("own spec repo", &on0, r0.as_str(), true, Route::Here),
        (
            "other shard's repo",
            &on0,
            r1.as_str(),
            true,
            Route::Shard(1),
        ),
        ("override", &on0, "pinned", true, Route::Shard(1)),
        ("override, held", &on1, "pinned", true, Route::Here),
        ("template repo", &on1, "templates", false, Route::Everywhere),
        ("unsharded", &Scope::all(), r1.as_str(), true, Route::Here),
        ("unsharded template", &Scope::all(), "t", false, Route::Here),
    ];
    for (what, scope, repo, spec, want) in cases {
        assert_eq!(scope.route(repo, spec), want, "{what}");
    }
    let spec = |r: &str| r != "templates";
    assert!(on1.takes_wakeup(Some(&r1), spec));
    assert!(
        !on1.takes_wakeup(Some(&r0), spec),
        "shard 0's leader takes it"
    );
    assert!(on1.takes_wakeup(Some("templates"), spec));
    assert!(
        on1.takes_wakeup(None, spec),
        "a webhook naming no repo: everyone"
    );
}

/// (other, key, mine, theirs) of a disagreement, or none.
type Want<'a> = Option<(&'a str, &'a str, &'a str, &'a str)>;

#[test]
fn replicas_with_another_sharding_config_are_named_with_the_key() {
    let a = fingerprint(3, &BTreeMap::from([("payments".to_string(), 1)]));
    let same = fingerprint(3, &BTreeMap::from([("payments".to_string(), 1)]));
    let moved = fingerprint(3, &BTreeMap::from([("payments".to_string(), 2)]));
    let unpinned = fingerprint(3, &BTreeMap::new());
    let four = fingerprint(4, &BTreeMap::from([("payments".to_string(), 1)]));
    assert_eq!(a, same);
    assert_eq!(a, r#"{"ha.shards":"3","spec_repos.payments.shard":"1"}"#);
    let with = |id: &str, fp: Option<&str>, silent_ms: i64| ReplicaRecord {
        sharding: fp.map(str::to_string),
        ..replica(id, 0, silent_ms)
    };
    // (what, replicas, (other, key, mine, theirs) or none).
    let cases: Vec<(&str, Vec<ReplicaRecord>, Want<'_>)> = vec![
        ("alone", vec![with("me", Some(&moved), 0)], None),
        ("same", vec![with("b", Some(&same), 100)], None),
        (
            "another override",
            vec![with("b", Some(&same), 100), with("c", Some(&moved), 100)],
            Some(("c", "spec_repos.payments.shard", "1", "2")),
        ),
        (
            "an override missing there",
            vec![with("b", Some(&unpinned), 100)],
            Some(("b", "spec_repos.payments.shard", "1", "unset")),
        ),
        (
            "another count",
            vec![with("b", Some(&four), 100)],
            Some(("b", "ha.shards", "3", "4")),
        ),
        (
            "a silent replica does not count",
            vec![with("b", Some(&moved), 25_000)],
            None,
        ),
        (
            "an earlier version says nothing",
            vec![with("b", None, 100)],
            None,
        ),
    ];
    for (what, replicas, want) in cases {
        let got = disagreement("me", &a, &replicas, TTL);
        let got = got.as_ref().map(|d| {
            (
                d.other.as_str(),
                d.key.as_str(),
                d.mine.as_str(),
                d.theirs.as_str(),
            )
        });
        assert_eq!(got, want, "{what}");
    }
    let d = disagreement("me", &a, &[with("b", Some(&moved), 0)], TTL).expect("differs");
    let text = d.to_string();
    assert!(
        text.contains("replicas me and b")
            && text.contains("spec_repos.payments.shard is 1 on me and 2 on b"),
        "{text}"
    );
}
