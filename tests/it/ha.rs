//! High availability on PostgreSQL (issue 19): several real `protond run` replicas on one
//! real PostgreSQL database and a `moto_server` converge the example fleet with exactly one
//! deployer; a leader killed with `kill -9` mid-deployment is replaced and its deployment
//! adopted, 20 times in a row; a leader paused past its lease (SIGSTOP) records and starts
//! nothing once resumed; a webhook sent to a follower reaches the leader.
//!
//! Each replica has its own data folder (git mirrors), as replicas on several hosts do, and
//! its own port. The database comes from `PROTOND_TEST_POSTGRES_URL` (`scripts/postgres`);
//! without it the tests say so and pass, except in CI.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::Connection as _;
use sqlx::Executor as _;

use crate::common;
use crate::common::world::World;
use protond::state::Store;

const GH_SECRET: &str = "ha-github-secret-8123";
const PROD: &str = "service_instance/payments/payments-prod";
const SVC: &str = "proton/services/payments.yaml";

/// A fresh database on the test server, or `None` where none runs (not in CI).
pub(crate) async fn database() -> Option<String> {
    let Ok(admin) = std::env::var("PROTOND_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs the PostgreSQL tests: set PROTOND_TEST_POSTGRES_URL (scripts/postgres)"
        );
        eprintln!("note: PROTOND_TEST_POSTGRES_URL is not set; HA test skipped");
        return None;
    };
    let name = format!("protond_ha_{:016x}", rand::random::<u64>());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect to the test server");
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .expect("create a database");
    let mut url = reqwest::Url::parse(&admin).expect("a URL");
    url.set_path(&name);
    Some(url.to_string())
}

/// The examples on a `moto_server` with the state on `url`: polling every `poll`, webhooks
/// signed with [`GH_SECRET`], no watcher (only the leader's timer and webhooks trigger).
pub(crate) fn world(url: &str, poll: &str) -> World {
    let poll = poll.to_string();
    let w = World::examples_on_moto()
        .config(move |c| {
            c.top(&format!("poll_interval = \"{poll}\""))
                .section("[daemon]\nshutdown_grace = \"5s\"\nwatch = false")
                .section("[server]\ngithub_secret_env = \"T_GH\"");
        })
        .build();
    use_state(&w, url);
    w
}

/// Points `w`'s config at the state on `url`.
pub(crate) fn use_state(w: &World, url: &str) {
    let url = url.to_string();
    w.edit_config(move |t| {
        let start = t.find("state = \"").expect("a state line");
        let end = start + t[start..].find('\n').expect("a line");
        format!("{}state = \"{url}\"{}", &t[..start], &t[end..])
    });
}

/// One `protond run` replica, its log in a file; killed when dropped.
pub(crate) struct Replica {
    pub(crate) id: String,
    child: Child,
    base: String,
    log: PathBuf,
}

impl Replica {
    /// Starts replica `id` with lease `lease`, its own data folder and port.
    fn start(w: &World, id: &str, lease: &str) -> Self {
        Self::start_with(w, id, lease, &[])
    }

    /// [`Replica::start`] with more environment.
    pub(crate) fn start_with(w: &World, id: &str, lease: &str, env: &[(&str, &str)]) -> Self {
        let config = w.dir(&format!("proton-{id}.toml"));
        let text = std::fs::read_to_string(w.config_path()).expect("config");
        let text = text.replacen("data_dir = \"", &format!("data_dir = \"{id}-"), 1);
        assert!(text.contains(&format!("data_dir = \"{id}-")), "{text}");
        // Into the config's own `[ha]` when it has one (the sharding suite's `shards`).
        let text = if text.contains("\n[ha]\n") {
            text.replacen("\n[ha]\n", &format!("\n[ha]\nlease = \"{lease}\"\n"), 1)
        } else {
            format!("{text}\n[ha]\nlease = \"{lease}\"\n")
        };
        std::fs::write(&config, text).expect("write config");
        let port = common::free_port();
        let log = w.dir(&format!("{id}.log"));
        let child = common::protond(&config, &["run", "--listen", &format!("127.0.0.1:{port}")])
            .env("PROTOND_REPLICA_ID", id)
            .env("T_GH", GH_SECRET)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("protond runs");
        Self {
            id: id.to_string(),
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    pub(crate) fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let r = reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        Some((status, r.text().await.ok()?))
    }

    /// `/readyz` as JSON, when it answers 200.
    pub(crate) async fn ready(&self) -> Option<Value> {
        let (status, body) = self.get("/readyz").await?;
        (status == 200).then(|| serde_json::from_str(&body).ok())?
    }

    async fn role(&self) -> Option<String> {
        Some(self.ready().await?["role"].as_str()?.to_string())
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` every 100 ms until it holds, or panics after `secs` with the replicas' logs.
pub(crate) async fn until<F, Fut>(what: &str, secs: u64, replicas: &[&Replica], mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logs: String = replicas
        .iter()
        .map(|r| format!("--- {} ---\n{}\n", r.id, r.logs()))
        .collect();
    panic!("timed out waiting for {what}\n{logs}");
}

/// Sends `r` a signed GitHub push webhook for `repo` of `w`; it must be accepted (202).
pub(crate) async fn push_webhook(w: &World, r: &Replica, repo: &str) {
    use hmac::{KeyInit as _, Mac as _};
    let body = serde_json::to_vec(&serde_json::json!({
        "ref": "refs/heads/main",
        "repository": { "clone_url": w.dir(repo).display().to_string() }
    }))
    .expect("json");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(GH_SECRET.as_bytes()).expect("key");
    mac.update(&body);
    let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let res = reqwest::Client::new()
        .post(format!("{}/webhooks/github", r.base))
        .header("X-GitHub-Event", "push")
        .header("X-Hub-Signature-256", sig)
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 202);
}

/// The one replica that says it leads, once exactly one does.
async fn leader<'a>(replicas: &[&'a Replica]) -> Option<&'a Replica> {
    let mut leaders = Vec::new();
    for r in replicas {
        if r.role().await.as_deref() == Some("leader") {
            leaders.push(*r);
        }
    }
    (leaders.len() == 1).then(|| leaders[0])
}

/// Every deployment row, oldest first.
pub(crate) async fn history(store: &Store) -> Vec<protond::state::DeploymentRecord> {
    let mut rows = store.deployments(None, 100_000).await.expect("history");
    rows.reverse();
    rows
}

/// The fleet converged: 7 live stacks, 7 records, nothing in flight.
pub(crate) async fn converged(w: &World, store: &Store) -> bool {
    w.stacks().await.len() == 7
        && store.resources().await.is_ok_and(|r| r.len() == 7)
        && store.in_flight().await.is_ok_and(|f| f.is_empty())
}

/// Every live stack recorded exactly once, nothing in flight.
pub(crate) async fn assert_consistent(w: &World, store: &Store) {
    let stacks = w.stacks().await;
    let mut per_resource: BTreeMap<String, usize> = BTreeMap::new();
    for s in &stacks {
        *per_resource
            .entry(s.resource().unwrap_or("").to_string())
            .or_default() += 1;
    }
    assert!(
        per_resource.values().all(|n| *n == 1),
        "duplicate stacks: {per_resource:?}"
    );
    let recorded: Vec<String> = store
        .resources()
        .await
        .expect("resources")
        .into_iter()
        .map(|r| r.id)
        .collect();
    let live: Vec<String> = per_resource.into_keys().collect();
    assert_eq!(recorded, live, "records and stacks disagree");
    assert!(store.in_flight().await.expect("in flight").is_empty());
    for d in history(store).await {
        assert_ne!(d.status, "in_progress", "{d:?}");
    }
}

async fn converge_with(n: usize) {
    let Some(url) = database().await else { return };
    let w = world(&url, "1s");
    let ids: Vec<String> = (1..=n).map(|i| format!("r{i}")).collect();
    let replicas: Vec<Replica> = ids.iter().map(|id| Replica::start(&w, id, "2s")).collect();
    let all: Vec<&Replica> = replicas.iter().collect();
    let store = Store::open(&url).await.expect("open the state");
    until("the fleet to converge", 90, &all, || converged(&w, &store)).await;
    // A few more cycles: a second deployer would show now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_consistent(&w, &store).await;
    let rows = history(&store).await;
    let mut per: BTreeMap<(String, String), usize> = BTreeMap::new();
    for d in &rows {
        assert_eq!(d.status, "succeeded", "{d:?}");
        *per.entry((
            d.deployment.resource_id.clone(),
            d.deployment.action.to_string(),
        ))
        .or_default() += 1;
    }
    assert_eq!(per.len(), 7, "{per:?}");
    assert!(per.values().all(|c| *c == 1), "a doubled row: {per:?}");
    let lead = leader(&all).await.expect("exactly one leader");
    let (_, metrics) = lead.get("/metrics").await.expect("metrics");
    assert!(metrics.contains("protond_is_leader 1"), "{metrics}");
    assert!(
        metrics.contains(&format!("protond_leader{{replica=\"{}\"}} 1", lead.id)),
        "{metrics}"
    );
    assert!(metrics.contains("protond_lease_epoch 1"), "{metrics}");
    let mut deployers = 0;
    for r in &replicas {
        let ready = r.ready().await.expect("every replica is ready");
        assert_eq!(ready["leader"], lead.id.as_str(), "{ready}");
        if r.id != lead.id {
            assert_eq!(ready["role"], "follower", "{ready}");
            let (_, m) = r.get("/metrics").await.expect("metrics");
            assert!(m.contains("protond_is_leader 0"), "{m}");
            // Followers serve the shared state: the same seven deployments.
            assert!(
                m.contains("protond_resources{kind=\"environment\",status=\"deployed\"} 2"),
                "{m}"
            );
            let (_, page) = r.get("/").await.expect("page");
            assert!(page.contains("<h2>Replicas</h2>"), "{page}");
        }
        if r.logs().contains("Deployment started.") {
            deployers += 1;
        }
    }
    assert_eq!(deployers, 1, "exactly one replica deploys");
    // A one-off reconcile needs every lease: refused while a replica leads, naming it.
    let once = w.reconcile();
    let err = common::text(&once);
    assert!(!once.status.success(), "{err}");
    assert!(
        err.contains(&format!("lease shard-0 is held by replica {}", lead.id)),
        "{err}"
    );
    eprintln!(
        "{n} replicas: one leader ({}), {} deployments",
        lead.id,
        rows.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_converge_with_one_deployer() {
    converge_with(2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_converge_with_one_deployer() {
    converge_with(3).await;
}

/// Changes the prod instance's `desired_count` from `from` to `to` and commits it.
pub(crate) fn bump(w: &World, from: u32, to: u32) {
    w.edit("payments", SVC, |t| {
        let (head, tail) = t.split_at(t.find("payments-prod").expect("prod"));
        format!(
            "{head}{}",
            tail.replacen(
                &format!("desired_count: {from}"),
                &format!("desired_count: {to}"),
                1
            )
        )
    });
    w.commit("payments", &format!("prod desired_count {to}"));
}

/// Rows of `resource` after row `after`.
pub(crate) async fn rows_of(
    store: &Store,
    resource: &str,
    after: i64,
) -> Vec<protond::state::DeploymentRecord> {
    history(store)
        .await
        .into_iter()
        .filter(|d| d.id > after && d.deployment.resource_id == resource)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_leader_mid_deployment_twenty_times() {
    let Some(url) = database().await else { return };
    let w = world(&url, "1s");
    let store = Store::open(&url).await.expect("open the state");
    let start =
        |id: &str| Replica::start_with(&w, id, "1s", &[("PROTOND_TEST_RECORD_DELAY", "1s")]);
    let mut replicas = vec![start("k0"), start("k1")];
    {
        let all: Vec<&Replica> = replicas.iter().collect();
        until("the fleet to converge", 90, &all, || converged(&w, &store)).await;
    }
    let mut takeovers = Vec::new();
    let started = Instant::now();
    for round in 0..20u32 {
        let last = history(&store).await.last().map_or(0, |d| d.id);
        // 3 → 4 → 3 …: the schema's maximum is 10.
        bump(&w, 3 + round % 2, 4 - round % 2);
        let all: Vec<&Replica> = replicas.iter().collect();
        // The leader, once a deployment of the change has started.
        let deadline = Instant::now() + Duration::from_secs(30);
        let lead_id = loop {
            if Instant::now() > deadline {
                let logs: String = all
                    .iter()
                    .map(|r| format!("--- {} ---\n{}\n", r.id, r.logs()))
                    .collect();
                panic!("no deployment of round {round} started\n{logs}");
            }
            if rows_of(&store, PROD, last)
                .await
                .iter()
                .any(|d| d.status == "in_progress")
                && let Some(l) = leader(&all).await
            {
                break l.id.clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let at = replicas
            .iter()
            .position(|r| r.id == lead_id)
            .expect("leader");
        let mut dead = replicas.remove(at);
        let killed = Instant::now();
        let _ = dead.child.kill();
        let _ = dead.child.wait();
        replicas.push(start(&format!("k{}", round + 2)));
        let all: Vec<&Replica> = replicas.iter().collect();
        until("a new leader", 30, &all, || async {
            leader(&all).await.is_some()
        })
        .await;
        let new = leader(&all).await.expect("leader");
        let takeover = killed.elapsed();
        takeovers.push(takeover);
        until("the change to converge", 60, &all, || async {
            let rows = rows_of(&store, PROD, last).await;
            rows.last().is_some_and(|d| d.status == "succeeded")
                && store.in_flight().await.is_ok_and(|f| f.is_empty())
        })
        .await;
        let rows = rows_of(&store, PROD, last).await;
        let succeeded = rows.iter().filter(|d| d.status == "succeeded").count();
        assert_eq!(succeeded, 1, "round {round}: {rows:#?}");
        for d in &rows[..rows.len() - 1] {
            common::assert_interrupted(d);
        }
        assert_consistent(&w, &store).await;
        eprintln!(
            "round {round:2}: killed {} after its deployment started; {} leads after {} ms; {} row(s) for the change",
            dead.id,
            new.id,
            takeover.as_millis(),
            rows.len()
        );
    }
    let mean = takeovers.iter().sum::<Duration>() / 20;
    let max = takeovers.iter().max().copied().unwrap_or_default();
    eprintln!(
        "kill -9 x20 with a 1s lease: takeover mean {} ms, max {} ms; {} s in all",
        mean.as_millis(),
        max.as_millis(),
        started.elapsed().as_secs()
    );
    assert!(max < Duration::from_secs(10), "{takeovers:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_paused_past_its_lease_records_and_starts_nothing() {
    let Some(url) = database().await else { return };
    let w = world(&url, "1s");
    let store = Store::open(&url).await.expect("open the state");
    let replicas = [
        Replica::start(&w, "p1", "1s"),
        Replica::start(&w, "p2", "1s"),
    ];
    let all: Vec<&Replica> = replicas.iter().collect();
    until("the fleet to converge", 90, &all, || converged(&w, &store)).await;
    let old = leader(&all).await.expect("a leader");
    let other = all.iter().find(|r| r.id != old.id).expect("two");
    old.signal("-STOP");
    let last = history(&store).await.last().map_or(0, |d| d.id);
    // A change the paused leader would deploy if it still thought it led.
    bump(&w, 3, 4);
    until("the other replica to lead", 30, &all, || async {
        other.role().await.as_deref() == Some("leader")
    })
    .await;
    until("the change to converge", 60, &all, || async {
        rows_of(&store, PROD, last)
            .await
            .last()
            .is_some_and(|d| d.status == "succeeded")
    })
    .await;
    let before = history(&store).await;
    let seen = old.logs().len();
    old.signal("-CONT");
    until("the old leader to follow", 30, &all, || async {
        let ready = old.ready().await;
        ready.is_some_and(|r| r["role"] == "follower" && r["leader"] == other.id.as_str())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after_resume = old.logs()[seen..].to_string();
    assert!(
        after_resume.contains("Lost the lease"),
        "the old leader says it lost the lead:\n{after_resume}"
    );
    assert!(
        !after_resume.contains("Deployment started."),
        "{after_resume}"
    );
    assert!(
        !after_resume.contains("Leading: reconciling."),
        "{after_resume}"
    );
    let after = history(&store).await;
    assert_eq!(
        after.len(),
        before.len(),
        "no row from the old leader: {:#?}",
        &after[before.len().min(after.len())..]
    );
    let rows = rows_of(&store, PROD, last).await;
    assert_eq!(rows.len(), 1, "one deployment of the change: {rows:#?}");
    assert_consistent(&w, &store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_sent_to_a_follower_triggers_the_leaders_cycle() {
    let Some(url) = database().await else { return };
    // Polling once an hour: after the first cycle, only the webhook fetches.
    let w = world(&url, "1h");
    let store = Store::open(&url).await.expect("open the state");
    let replicas = [
        Replica::start(&w, "w1", "2s"),
        Replica::start(&w, "w2", "2s"),
    ];
    let all: Vec<&Replica> = replicas.iter().collect();
    until("the fleet to converge", 90, &all, || converged(&w, &store)).await;
    let lead = leader(&all).await.expect("a leader");
    let follower = all.iter().find(|r| r.id != lead.id).expect("two");
    let last = history(&store).await.last().map_or(0, |d| d.id);
    bump(&w, 3, 5);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        rows_of(&store, PROD, last).await.is_empty(),
        "nothing fetches without the webhook"
    );
    let sent = Instant::now();
    push_webhook(&w, follower, "payments").await;
    until("the leader to deploy the change", 30, &all, || async {
        rows_of(&store, PROD, last)
            .await
            .last()
            .is_some_and(|d| d.status == "succeeded")
    })
    .await;
    eprintln!(
        "webhook to a follower -> deployed by the leader in {} ms",
        sent.elapsed().as_millis()
    );
    assert!(
        follower.logs().contains("queued for the leader"),
        "{}",
        follower.logs()
    );
    assert!(
        lead.logs().contains("Webhooks forwarded by followers"),
        "{}",
        lead.logs()
    );
    assert!(!follower.logs().contains("Deployment started."));
}
