//! Sharding (issue 19): three real `protond run` replicas, one per shard of `[ha] shards =
//! 3`, on one real PostgreSQL database and a `moto_server`. The fleet converges with each
//! resource deployed once (history rows, live stacks); each shard's repo is deployed by its
//! own replica once the leases settle; after `kill -9` of shard 1's replica, another replica
//! takes shard 1 over once its lease lapses, and deploys the next change of its repo, once.
//!
//! Repos: `payments` pinned to shard 1, `platform-envs` to shard 2 (its environments are
//! deployed by shard 0's leader all the same). Reuses the HA suite's helpers (`ha.rs`).
//!
//! A webhook for a repo of shard 1 sent to shard 0's replica is queued for shard 1's
//! leader, which fetches and deploys it.
//!
//! Replicas that disagree on the sharding (`[[spec_repos]] shard`) refuse to lead, naming
//! each other and the key, in the log and `/readyz`; once the odd one is gone, the other
//! leads again.
//!
//! Each shard's bookkeeping: with two shards, each leader replaces only its own rows of
//! `needs_approval` and `spec_findings`, so both shards' rows stay put cycle after cycle
//! and `approval_needed` is notified once per resource and version.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use protond::state::Store;

use crate::ha::{
    Replica, assert_consistent, bump, converged, database, history, push_webhook, rows_of, until,
    use_state, world,
};

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

const ORDERS_DEV: &str = "service_instance/orders/orders-dev";
const LEDGER_DEV: &str = "service_instance/ledger/ledger-dev";
const BROKEN_A: &str = "service_instance/broken-a/broken-a-dev";
const BROKEN_B: &str = "service_instance/broken-b/broken-b-dev";

/// A service of db-svc with one instance in dev, its own table or a bad input.
fn db_service(name: &str, spec: &str) -> String {
    format!(
        "proton: ServiceSpec\nname: {name}\ntemplate: {{name: db-svc, major: 1}}\ninstances:\n  - name: {name}-dev\n    environment: dev\n    spec: {spec}\n"
    )
}

/// The change-set gate's world (db-svc, `orders` in `payments`) with a second service
/// repo `ledger`: `ledger` on shard 0 and `payments` on shard 1 of two, each with a
/// resource that will need an approval and one invalid spec; the state on `url`;
/// `approval_needed` sent to `hook`.
fn two_shard_world(url: &str, hook: &str) -> crate::common::world::World {
    let hook = hook.to_string();
    let w = crate::gate::builder()
        .repo("ledger", "ledger\n")
        .setup(|root| {
            let services = root.join("ledger/proton/services");
            std::fs::create_dir_all(&services).expect("mkdir");
            std::fs::write(
                services.join("ledger.yaml"),
                db_service("ledger", "{with_table: true}"),
            )
            .expect("write");
            std::fs::write(
                services.join("broken-b.yaml"),
                db_service("broken-b", "{with_table: \"yes, please\"}"),
            )
            .expect("write");
            std::fs::write(
                root.join("payments/proton/services/broken-a.yaml"),
                db_service("broken-a", "{with_table: \"no, thanks\"}"),
            )
            .expect("write");
            let dev = root.join("platform-envs/proton/environments/dev.yaml");
            let text = std::fs::read_to_string(&dev).expect("dev");
            let text = text.replace("[payments]", "[payments, ledger]");
            assert!(text.contains("ledger"), "{text}");
            std::fs::write(&dev, text).expect("write");
            for repo in ["ledger", "payments", "platform-envs"] {
                crate::common::git(&root.join(repo), &["add", "-A"]);
                crate::common::git(&root.join(repo), &["commit", "-q", "-m", "services"]);
            }
        })
        .env("HOOK_SECRET", crate::gate::SECRET)
        .config(move |c| {
            c.spec_repo("ledger", &["shard = 0"])
                .repo_line("payments", "shard = 1")
                .top("poll_interval = \"1s\"")
                .section("[daemon]\nshutdown_grace = \"5s\"\nwatch = false")
                .section("[server]\ngithub_secret_env = \"T_GH\"")
                .section(&format!(
                    "[[notify]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"{hook}\"\nsecret_env = \"HOOK_SECRET\"\nevents = [\"approval_needed\"]"
                ))
                .section("[ha]\nshards = 2");
        })
        .build();
    use_state(&w, url);
    w
}

#[tokio::test(flavor = "multi_thread")]
async fn two_shards_keep_each_others_approvals_and_findings_and_notify_once() {
    let Some(url) = database().await else { return };
    let receiver = crate::gate::Receiver::default();
    let hook = receiver.start().await;
    let w = two_shard_world(&url, &hook);
    // Everything on db-svc 1.0 first (one exclusive reconcile holds both leases).
    let out = w.reconcile();
    let store = Store::open(&url).await.expect("open the state");
    let findings = store.spec_findings().await.expect("findings");
    assert_eq!(
        findings.keys().map(String::as_str).collect::<Vec<_>>(),
        [BROKEN_A, BROKEN_B],
        "{}",
        crate::common::text(&out)
    );
    w.write(
        "platform-templates",
        "db-svc/v1/instance_infrastructure/cloudformation.yaml",
        &crate::gate::v11(),
    );
    w.commit("platform-templates", "db-svc: key by pk, add a queue");
    w.tag("db-svc/v1.1", "second");
    let env = |k: &'static str| [("PROTOND_SHARD", k), ("HOOK_SECRET", crate::gate::SECRET)];
    let replicas = [
        Replica::start_with(&w, "a0", "2s", &env("0")),
        Replica::start_with(&w, "a1", "2s", &env("1")),
    ];
    let all: Vec<&Replica> = replicas.iter().collect();
    let own: BTreeMap<String, String> = [("shard-0", "a0"), ("shard-1", "a1")]
        .into_iter()
        .map(|(l, r)| (l.to_string(), r.to_string()))
        .collect();
    until("each shard led by its own replica", 60, &all, || async {
        holders(&store).await == own
    })
    .await;
    let held = || async {
        store
            .needs_approval()
            .await
            .expect("needs approval")
            .into_iter()
            .map(|(id, p)| (id, p.since))
            .collect::<BTreeMap<String, String>>()
    };
    until(
        "both shards' resources held for approval",
        60,
        &all,
        || async {
            let h = held().await;
            h.contains_key(ORDERS_DEV) && h.contains_key(LEDGER_DEV)
        },
    )
    .await;
    let first = held().await;
    // Several cycles of both leaders (poll 1 s): the rows never flip.
    let watched = Instant::now();
    let mut samples = 0;
    while watched.elapsed() < Duration::from_secs(8) {
        let now = held().await;
        assert_eq!(now, first, "needs_approval changed after {samples} samples");
        let f = store.spec_findings().await.expect("findings");
        assert_eq!(
            f.keys().map(String::as_str).collect::<Vec<_>>(),
            [BROKEN_A, BROKEN_B],
            "spec findings after {samples} samples"
        );
        samples += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(holders(&store).await, own, "the leases stayed put");
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for e in receiver.events.lock().expect("lock").iter() {
        assert_eq!(e["event"], "approval_needed", "{e}");
        *per.entry(e["resource"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
    }
    assert_eq!(
        per,
        BTreeMap::from([(LEDGER_DEV.to_string(), 1), (ORDERS_DEV.to_string(), 1)]),
        "one approval_needed per resource"
    );
    assert!(
        receiver.violations.lock().expect("lock").is_empty(),
        "{:?}",
        receiver.violations.lock().expect("lock")
    );
    eprintln!("2 shards: {samples} samples over 8 s, rows and findings steady, {per:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_sent_to_another_shards_replica_triggers_the_owners_cycle() {
    let Some(url) = database().await else { return };
    // Polling once an hour: after each leader's first cycle, only the webhook fetches.
    let w = world(&url, "1h");
    w.edit_config(|t| {
        let t = t
            .replacen(
                "name = \"payments\"\n",
                "name = \"payments\"\nshard = 1\n",
                1,
            )
            .replacen(
                "name = \"platform-envs\"\n",
                "name = \"platform-envs\"\nshard = 0\n",
                1,
            );
        format!("{t}\n[ha]\nshards = 2\n")
    });
    // No reconcile first: shard 1's instances wait on the environments shard 0 deploys,
    // and with an hourly poll only shard 0's request (queued when an environment succeeds)
    // starts shard 1's next cycle.
    let replicas: Vec<Replica> = (0..2)
        .map(|k| {
            Replica::start_with(
                &w,
                &format!("h{k}"),
                "2s",
                &[("PROTOND_SHARD", &k.to_string())],
            )
        })
        .collect();
    let all: Vec<&Replica> = replicas.iter().collect();
    let store = Store::open(&url).await.expect("open the state");
    let own: BTreeMap<String, String> = (0..2)
        .map(|k| (format!("shard-{k}"), format!("h{k}")))
        .collect();
    until("each shard led by its own replica", 60, &all, || async {
        holders(&store).await == own
    })
    .await;
    until("the fleet to converge", 90, &all, || converged(&w, &store)).await;
    // Started together, neither took the other's shard first (taking it and handing it back
    // would have ended h0's term and aborted the environments it had just started).
    for r in &replicas {
        assert!(!r.logs().contains("Lost the lead"), "{}", r.logs());
    }
    // Each leader's term began with a full fetch; then nothing fetches without a webhook.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let last = history(&store).await.last().map_or(0, |d| d.id);
    bump(&w, 3, 5);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let prod = "service_instance/payments/payments-prod";
    assert!(
        rows_of(&store, prod, last).await.is_empty(),
        "nothing fetches without the webhook"
    );
    let marks: Vec<usize> = replicas.iter().map(|r| r.logs().len()).collect();
    let sent = Instant::now();
    push_webhook(&w, &replicas[0], "payments").await;
    until(
        "shard 1's leader to deploy the change",
        30,
        &all,
        || async {
            rows_of(&store, prod, last)
                .await
                .last()
                .is_some_and(|d| d.status == "succeeded")
        },
    )
    .await;
    let latency = sent.elapsed();
    eprintln!(
        "webhook for shard 1's repo sent to shard 0's replica -> deployed by shard 1's leader in {} ms",
        latency.as_millis()
    );
    let h0 = &replicas[0].logs()[marks[0]..];
    let h1 = &replicas[1].logs()[marks[1]..];
    assert!(
        h0.contains("queued for the leader of the shard it concerns"),
        "{h0}"
    );
    assert!(!h0.contains("Deployment started."), "{h0}");
    assert!(h1.contains("Webhooks forwarded by followers"), "{h1}");
    assert_eq!(started_by(&replicas[1], marks[1]), [prod.to_string()]);
    let ready = replicas[0].ready().await.expect("h0 ready");
    assert_eq!(ready["role"], "leader", "{ready}");
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_that_disagree_on_the_sharding_refuse_to_lead() {
    let Some(url) = database().await else { return };
    let w = world(&url, "1s");
    let pin = |shard: u32| {
        move |t: String| {
            let t = t
                .replace("\nshard = 0\n", "\n")
                .replace("\nshard = 1\n", "\n");
            t.replacen(
                "name = \"payments\"\n",
                &format!("name = \"payments\"\nshard = {shard}\n"),
                1,
            )
        }
    };
    w.edit_config(|t| format!("{}\n[ha]\nshards = 2\n", pin(1)(t)));
    let c0 = Replica::start_with(&w, "c0", "2s", &[("PROTOND_SHARD", "0")]);
    let store = Store::open(&url).await.expect("open the state");
    until("c0 to lead shard 0", 30, &[&c0], || async {
        holders(&store).await.get("shard-0").map(String::as_str) == Some("c0")
    })
    .await;
    // c1 runs with payments pinned to shard 0 instead of 1.
    w.edit_config(pin(0));
    assert!(
        std::fs::read_to_string(w.config_path())
            .expect("config")
            .contains("shard = 0")
    );
    let c1 = Replica::start_with(&w, "c1", "2s", &[("PROTOND_SHARD", "1")]);
    let all = [&c0, &c1];
    let seen = Instant::now();
    until("nobody to lead", 30, &all, || async {
        holders(&store).await.is_empty()
    })
    .await;
    eprintln!(
        "disagreeing replicas: no lease held {} ms after the second one started",
        seen.elapsed().as_millis()
    );
    for (r, other, mine, theirs) in [(&c0, "c1", "1", "0"), (&c1, "c0", "0", "1")] {
        let ready = r.ready().await.expect("ready while refusing");
        let conflict = ready["sharding_conflict"].as_str().unwrap_or_default();
        let key = format!(
            "spec_repos.payments.shard is {mine} on {} and {theirs} on {other}",
            r.id
        );
        assert!(conflict.contains(&key), "{ready}");
        assert_eq!(ready["role"], "follower", "{ready}");
        assert!(r.logs().contains("Refusing to lead"), "{}", r.logs());
    }
    // Holding for a while: still nobody leads.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(holders(&store).await.is_empty());
    // The odd one goes: once it is silent for two lease periods, c0 leads again.
    drop(c1);
    until("c0 to lead again", 30, &[&c0], || async {
        holders(&store).await.get("shard-0").map(String::as_str) == Some("c0")
    })
    .await;
    let ready = c0.ready().await.expect("ready");
    assert!(ready["sharding_conflict"].is_null(), "{ready}");
    assert!(c0.logs().contains("agree on the sharding again"));
}
