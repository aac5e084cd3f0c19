//! Sharding (issue 19): three real `protond run` replicas, one per shard of `[ha] shards =
//! 3`, on one real PostgreSQL database and a `moto_server`. The fleet converges with each
//! resource deployed once (history rows, live stacks); each shard's repo is deployed by its
//! own replica once the leases settle; after `kill -9` of shard 1's replica, another replica
//! takes shard 1 over once its lease lapses, and deploys the next change of its repo, once.
//!
//! Repos: `payments` pinned to shard 1, `platform-envs` to shard 2 (its environments are
//! deployed by shard 0's leader all the same). Reuses the HA suite's helpers (`ha.rs`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use protond::state::Store;

use crate::ha::{Replica, assert_consistent, bump, converged, database, history, until, world};

/// The leases as stored: name → holder.
async fn holders(store: &Store) -> BTreeMap<String, String> {
    store
        .leases()
        .await
        .expect("leases")
        .into_iter()
        .filter(|l| l.remaining_ms > 0)
        .map(|l| (l.name, l.holder))
        .collect()
}

/// The resources whose deployment `r` started after its log's first `skip` bytes.
fn started_by(r: &Replica, skip: usize) -> Vec<String> {
    let logs = r.logs();
    logs.get(skip..)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("Deployment started."))
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            let resource = v
                .pointer("/fields/resource")
                .or_else(|| v.get("resource"))?;
            Some(resource.as_str()?.to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_shards_converge_each_repo_by_its_shard_and_an_orphan_is_taken_over() {
    let Some(url) = database().await else { return };
    let w = world(&url, "1s");
    w.edit_config(|t| {
        let t = t
            .replacen(
                "name = \"payments\"\n",
                "name = \"payments\"\nshard = 1\n",
                1,
            )
            .replacen(
                "name = \"platform-envs\"\n",
                "name = \"platform-envs\"\nshard = 2\n",
                1,
            );
        assert!(t.contains("shard = 1") && t.contains("shard = 2"), "{t}");
        format!("{t}\n[ha]\nshards = 3\n")
    });
    let replicas: Vec<Replica> = (0..3)
        .map(|k| {
            Replica::start_with(
                &w,
                &format!("s{k}"),
                "2s",
                &[("PROTOND_SHARD", &k.to_string())],
            )
        })
        .collect();
    let all: Vec<&Replica> = replicas.iter().collect();
    let store = Store::open(&url).await.expect("open the state");
    until("the fleet to converge", 90, &all, || converged(&w, &store)).await;
    // The leases settle on their own replicas (a replica that started first may have
    // borrowed an absent shard; it gives it back once that shard's replica is live).
    let own: BTreeMap<String, String> = (0..3)
        .map(|k| (format!("shard-{k}"), format!("s{k}")))
        .collect();
    until("each shard led by its own replica", 30, &all, || async {
        holders(&store).await == own
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_consistent(&w, &store).await;
    // One successful deployment per resource. A replica that borrowed an absent shard at
    // start ends its term when it gives the shard back: a deployment it had begun but not
    // yet handed to CloudFormation is then recorded as interrupted, and redone once.
    let mut per: BTreeMap<(String, String), usize> = BTreeMap::new();
    for d in history(&store).await {
        if d.status != "succeeded" {
            let error = d.error.clone().unwrap_or_default();
            assert!(
                error.contains("before this deployment reached the provisioner"),
                "{d:?}"
            );
            continue;
        }
        *per.entry((
            d.deployment.resource_id.clone(),
            d.deployment.action.to_string(),
        ))
        .or_default() += 1;
    }
    assert_eq!(per.len(), 7, "{per:?}");
    assert!(per.values().all(|c| *c == 1), "a doubled row: {per:?}");

    // Settled: a change of payments (shard 1) is deployed by s1, and only by it.
    let marks: Vec<usize> = replicas.iter().map(|r| r.logs().len()).collect();
    let after = history(&store).await.last().map_or(0, |d| d.id);
    bump(&w, 3, 4);
    let prod = "service_instance/payments/payments-prod";
    until("s1 to deploy the change", 60, &all, || async {
        history(&store)
            .await
            .iter()
            .any(|d| d.id > after && d.deployment.resource_id == prod && d.status == "succeeded")
    })
    .await;
    let by: Vec<Vec<String>> = replicas
        .iter()
        .zip(&marks)
        .map(|(r, m)| started_by(r, *m))
        .collect();
    assert_eq!(
        by,
        vec![vec![], vec![prod.to_string()], vec![]],
        "by s0, s1, s2"
    );

    // kill -9 of s1: shard 1 is orphaned; s0 or s2 takes it once the lease lapsed for a
    // lease period, and deploys payments' next change once.
    replicas[1].signal("-KILL");
    let killed = Instant::now();
    let others = [&replicas[0], &replicas[2]];
    until("another replica to take shard 1", 60, &all, || async {
        holders(&store)
            .await
            .get("shard-1")
            .is_some_and(|h| h != "s1")
    })
    .await;
    let taker = holders(&store).await["shard-1"].clone();
    eprintln!(
        "shard 1 taken over by {taker} {:?} after kill -9",
        killed.elapsed()
    );
    let marks: Vec<usize> = others.iter().map(|r| r.logs().len()).collect();
    let after = history(&store).await.last().map_or(0, |d| d.id);
    bump(&w, 4, 5);
    until("the taker to deploy the change", 60, &all, || async {
        history(&store)
            .await
            .iter()
            .any(|d| d.id > after && d.deployment.resource_id == prod && d.status == "succeeded")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (r, m) in others.iter().zip(&marks) {
        let want = if r.id == taker {
            vec![prod.to_string()]
        } else {
            vec![]
        };
        assert_eq!(started_by(r, *m), want, "{}", r.id);
    }
    let rows: Vec<_> = history(&store)
        .await
        .into_iter()
        .filter(|d| d.id > after)
        .collect();
    assert_eq!(rows.len(), 1, "one row for the change: {rows:?}");
    assert_consistent(&w, &store).await;
}
