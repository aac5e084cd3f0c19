//! Cycle tests against the fake provisioner, on real git repos and a real `SQLite` file, with
//! a test clock: the rollout, soak, halt and deletion-budget rules as the daemon applies
//! them, and the order of the provisioner calls they cause.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use super::ctx::Provisioners;
use super::*;
use crate::plan::Version;
use crate::provision::fake::{Call, Fake, Script};

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const ENV_OUTPUTS: &[(&str, &str)] = &[
    ("TopicArn", "arn:aws:sns:us-east-1:123456789012:t"),
    ("SharedPolicyArn", "arn:aws:iam::123456789012:policy/p"),
    ("ConfigParameter", "/protond/config"),
    ("DeadLetterQueueArn", "arn:aws:sqs:us-east-1:123456789012:q"),
];

struct World {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    fake: Fake,
    now: Arc<AtomicU64>,
    ctx: Arc<Ctx>,
}

impl World {
    /// The example repos with their first releases, stages dev then prod with a one-hour
    /// soak, and `extra` appended to the config.
    async fn new(extra: &str) -> Self {
        Self::new_on("sqlite://state/state.db", extra).await
    }

    /// [`World::new`] with the state at `state`.
    async fn new_on(state: &str, extra: &str) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_path_buf();
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repos");
        for name in ["platform-templates", "platform-envs", "payments"] {
            let dir = root.join(name);
            crate::demo::copy_tree(&examples.join(name), &dir).expect("copy");
            git(&dir, &["init", "-q", "-b", "main"]);
            git(&dir, &["add", "-A"]);
            git(&dir, &["commit", "-q", "-m", "initial"]);
        }
        for t in ["basic-env", "web-svc", "worker-svc"] {
            git(
                &root.join("platform-templates"),
                &["tag", "-a", &format!("{t}/v1.0"), "-m", "first"],
            );
        }
        let toml = format!(
            "state = \"{state}\"\ndata_dir = \"data\"\n\
             [aws]\nregion = \"us-east-1\"\nendpoint_url = \"http://127.0.0.1:9\"\nmax_attempts = 1\n\
             [rollout]\nstages = [\"dev\", \"prod\"]\nsoak = \"1h\"\n\
             [[template_repos]]\nname = \"platform-templates\"\nurl = \"platform-templates\"\n\
             [[spec_repos]]\nname = \"platform-envs\"\nurl = \"platform-envs\"\nplatform = true\n\
             [[spec_repos]]\nname = \"payments\"\nurl = \"payments\"\n{extra}"
        );
        std::fs::write(root.join("proton.toml"), toml).expect("config");
        let fake = fake_with_environments();
        let mut ctx = replica(&root, &fake).await;
        // The store stamps records with the real time: start the test clock there.
        let start = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let now = Arc::new(AtomicU64::new(start));
        let clock = now.clone();
        ctx.set_clock(Arc::new(move || {
            SystemTime::UNIX_EPOCH + Duration::from_secs(clock.load(Ordering::SeqCst))
        }));
        Self {
            _tmp: tmp,
            root,
            fake,
            now,
            ctx,
        }
    }

    fn advance(&self, by: Duration) {
        self.now.fetch_add(by.as_secs(), Ordering::SeqCst);
    }

    async fn once(&self) -> OnceReport {
        run_once(&self.ctx).await.expect("reconcile")
    }

    /// What a cycle would read from the store now (nothing running, waiting or backing off).
    async fn facts(&self) -> crate::evaluate::Facts {
        reconcile::read_facts(
            &self.ctx.store,
            std::collections::BTreeSet::default(),
            std::collections::BTreeSet::default(),
            BTreeMap::default(),
            (self.ctx.clock)(),
        )
        .await
        .expect("facts")
    }

    /// The provisioner calls since `from`, as (operation, resource, version).
    fn calls_since(&self, from: usize) -> Vec<(String, String, String)> {
        self.fake.calls()[from..]
            .iter()
            .map(|c: &Call| {
                (
                    c.operation.to_string(),
                    c.resource.clone(),
                    c.version.clone(),
                )
            })
            .collect()
    }

    fn tag(&self, tag: &str) {
        let dir = self.root.join("platform-templates");
        std::fs::write(dir.join("web-svc/v1/NOTES"), tag).expect("write");
        git(&dir, &["add", "-A"]);
        git(&dir, &["commit", "-q", "-m", tag]);
        git(&dir, &["tag", "-a", tag, "-m", tag]);
    }

    /// Versions deployed, by resource.
    async fn versions(&self) -> BTreeMap<String, String> {
        self.ctx
            .store
            .resources()
            .await
            .expect("records")
            .into_iter()
            .map(|r| (r.id, r.version.to_string()))
            .collect()
    }
}

/// A fake provisioner whose environments succeed with the outputs instances need.
fn fake_with_environments() -> Fake {
    let fake = Fake::new();
    let outputs: BTreeMap<String, String> = ENV_OUTPUTS
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    for env in ["environment/dev", "environment/prod"] {
        fake.script(env, Script::Succeed(outputs.clone()));
    }
    fake
}

/// A replica of the world at `root` (its config and store) deploying through `fake`.
async fn replica(root: &Path, fake: &Fake) -> Arc<Ctx> {
    let config = crate::config::Config::load(&root.join("proton.toml")).expect("config loads");
    let store = crate::state::Store::open_config(&config)
        .await
        .expect("store");
    let cfn = crate::provision::cloudformation::CloudFormation::new(
        crate::provision::cloudformation::Settings::from_config(&config),
    )
    .await;
    let provisioners = Provisioners {
        cloudformation: Arc::new(fake.clone()),
        self_managed: Arc::new(fake.clone()),
        codebuild: Arc::new(fake.clone()),
    };
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    Ctx::with_provisioners(
        Arc::new(config),
        store,
        cfn,
        provisioners,
        "test".into(),
        tx,
    )
}

const DEV: &str = "service_instance/payments/payments-dev";
const PROD: &str = "service_instance/payments/payments-prod";

#[tokio::test(flavor = "multi_thread")]
async fn a_minor_rolls_out_stage_by_stage_after_the_soak() {
    let w = World::new("").await;
    let first = w.once().await;
    assert_eq!(first.failed, 0, "{first:?}");
    assert!(first.problems.is_empty(), "{first:?}");
    let mark = w.fake.calls().len();
    assert_eq!(
        mark,
        7,
        "every example resource applied once: {:?}",
        w.fake.calls()
    );

    w.tag("web-svc/v1.1");
    w.once().await;
    // Dev first; prod waits for dev's soak.
    let calls = w.calls_since(mark);
    assert!(
        calls.contains(&("apply".into(), DEV.into(), "1.1".into())),
        "{calls:?}"
    );
    assert!(!calls.iter().any(|c| c.1 == PROD), "{calls:?}");
    assert_eq!(w.versions().await[PROD], "1.0");

    // Half the soak later: still held.
    w.advance(Duration::from_mins(30));
    let mark = w.fake.calls().len();
    w.once().await;
    assert!(w.calls_since(mark).iter().all(|c| c.1 != PROD));

    // The soak is over (with room for the real seconds the test took: the store stamps
    // records with the real time): prod follows.
    w.advance(Duration::from_secs(1900));
    let mark = w.fake.calls().len();
    w.once().await;
    let calls = w.calls_since(mark);
    let facts = w.facts().await;
    let snapshot = crate::desired::load(&w.ctx.config, None, false);
    let eval = crate::evaluate::evaluate(&snapshot, &facts, &w.ctx.config, None);
    assert!(
        calls.contains(&("apply".into(), PROD.into(), "1.1".into())),
        "{:#?} {:#?}",
        eval.schedule,
        eval.rollout_holds,
    );
    assert_eq!(w.versions().await[PROD], "1.1");
}

/// Staged evaluation (issue 20): on a tag that moves the fleet stage by stage, the upgrades
/// the rollout gate holds are rendered only on the version they run, and the evaluation
/// decides exactly what rendering every upgrade decides.
#[tokio::test(flavor = "multi_thread")]
async fn a_staged_evaluation_decides_what_rendering_every_upgrade_decides_with_fewer_renders() {
    // With the change-set gate (its rendering on the deployed versions is the second pass)
    // and without it (the first rendering, staged, is the last).
    staged_against_unstaged("").await;
    staged_against_unstaged("[gate]\nenabled = false\n").await;
}

async fn staged_against_unstaged(extra: &str) {
    use crate::evaluate::staged::UNSTAGED;
    let w = World::new(extra).await;
    // A service only in prod: every resource of it waits for dev.
    let team = w.root.join("payments");
    std::fs::write(
        team.join("proton/services/ledger.yaml"),
        "proton: ServiceSpec\nname: ledger\ntemplate: {name: web-svc, major: 1}\ninstances:\n  - name: ledger-prod\n    environment: prod\n    spec: {}\n",
    )
    .expect("write");
    git(&team, &["add", "-A"]);
    git(&team, &["commit", "-q", "-m", "ledger"]);
    let first = w.once().await;
    assert_eq!(first.failed, 0, "{first:?}");
    let evaluate = |snapshot: &crate::desired::Snapshot,
                    facts: &crate::evaluate::Facts,
                    cache: &mut crate::desired::ComputeCache,
                    staged: bool| {
        UNSTAGED.with(|u| u.set(!staged));
        let before = cache.rendered_total();
        let e = crate::evaluate::evaluate(snapshot, facts, &w.ctx.config, Some(cache));
        UNSTAGED.with(|u| u.set(false));
        (e, cache.rendered_total() - before)
    };
    // Both caches warm from the cycle before the tag.
    let (mut staged, mut unstaged) = (
        crate::desired::ComputeCache::default(),
        crate::desired::ComputeCache::default(),
    );
    let (snapshot, at_rest) = (
        crate::desired::load(&w.ctx.config, None, true),
        w.facts().await,
    );
    evaluate(&snapshot, &at_rest, &mut staged, true);
    evaluate(&snapshot, &at_rest, &mut unstaged, false);

    w.tag("web-svc/v1.1");
    let (snapshot, facts) = (
        crate::desired::load(&w.ctx.config, None, true),
        w.facts().await,
    );
    let (a, renders_staged) = evaluate(&snapshot, &facts, &mut staged, true);
    let (b, renders_unstaged) = evaluate(&snapshot, &facts, &mut unstaged, false);
    assert_eq!(a.plan, b.plan);
    assert_eq!(a.schedule.decisions, b.schedule.decisions);
    assert_eq!(a.rollout_holds, b.rollout_holds);
    assert_eq!(a.set.desired(), b.set.desired());
    // Dev starts now, prod is held on the version it runs.
    let holds: Vec<&str> = a.rollout_holds.keys().map(String::as_str).collect();
    assert!(holds.contains(&PROD), "{holds:?}");
    assert!(
        holds.contains(&"service_instance/ledger/ledger-prod"),
        "{holds:?}"
    );
    assert!(!holds.contains(&DEV), "{holds:?}");
    assert!(
        renders_staged < renders_unstaged,
        "staged {renders_staged} renders, unstaged {renders_unstaged}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_once_starts_instances_when_their_environment_ends_not_after_every_deployment() {
    let w = World::new("").await;
    // The prod environment's create hangs until let go; dev's instance must not wait for it.
    let prod_env = w.fake.hold("environment/prod");
    let ctx = w.ctx.clone();
    let once = tokio::spawn(async move { run_once(&ctx).await });
    let deadline = std::time::Instant::now() + Duration::from_mins(1);
    while !w.fake.calls().iter().any(|c| c.resource == DEV) {
        assert!(
            std::time::Instant::now() < deadline,
            "the dev instance did not start while environment/prod was in flight: {:?}",
            w.fake.calls()
        );
        assert!(!once.is_finished(), "reconcile --once ended early");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The prod instance waits for its environment.
    assert!(!w.fake.calls().iter().any(|c| c.resource == PROD));
    prod_env.notify_one();
    let report = once.await.expect("joined").expect("reconcile");
    assert_eq!(report.failed, 0, "{report:?}");
    assert!(report.failing.is_empty(), "{report:?}");
    let calls = w.fake.calls();
    assert_eq!(
        calls.len(),
        7,
        "each example resource applied once: {calls:?}"
    );
    let at = |id: &str| calls.iter().position(|c| c.resource == id);
    assert!(at("environment/prod") < at(PROD), "{calls:?}");
    assert_eq!(w.versions().await.len(), 7);
}

#[test]
fn the_generation_of_the_next_once_cycle_is_one_past_the_deepest_that_ended() {
    let ids = |v: &[&str]| {
        v.iter()
            .map(|s| (*s).to_string())
            .collect::<std::collections::BTreeSet<_>>()
    };
    let gens = || -> BTreeMap<String, u32> {
        [("a", 1), ("b", 3), ("c", 2)]
            .iter()
            .map(|(k, g)| ((*k).to_string(), *g))
            .collect()
    };
    // (ended, current, next)
    let cases: &[(&[&str], u32, u32)] = &[
        (&["a"], 3, 2),
        (&["a", "b"], 3, 4),
        (&["c"], 5, 3),
        (&[], 3, 4),
        (&["unknown"], 7, 8),
    ];
    for (ended, current, want) in cases {
        let mut g = gens();
        assert_eq!(
            next_generation(&mut g, &ids(ended), *current),
            *want,
            "{ended:?}"
        );
        assert!(
            ended.iter().all(|e| !g.contains_key(*e)),
            "{ended:?} forgotten"
        );
    }
}

#[test]
fn a_deployment_that_ended_during_the_cycle_is_not_waited_for() {
    type Case = (
        &'static [&'static str],
        &'static [&'static str],
        usize,
        Option<&'static [&'static str]>,
    );
    let ids = |v: &[&str]| -> std::collections::BTreeSet<String> {
        v.iter().map(|s| (*s).to_string()).collect()
    };
    // (running before, running after, started by the cycle, ended during it)
    let cases: &[Case] = &[
        // Nothing ended: wait.
        (&[], &["a", "b"], 2, None),
        (&["a"], &["a", "b"], 1, None),
        // One of the two started ended before the cycle looked (the race a wait missed).
        (&[], &["b"], 2, Some(&[])),
        // One running before ended while the cycle ran.
        (&["a"], &["b"], 1, Some(&["a"])),
        (&["a", "c"], &["c"], 0, Some(&["a"])),
    ];
    for (before, after, started, want) in cases {
        let got = ended_during(&ids(before), &ids(after), *started);
        assert_eq!(
            got,
            want.map(ids),
            "{before:?} -> {after:?}, {started} started"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_minor_halts_its_rollout() {
    let w = World::new("").await;
    w.once().await;
    w.tag("web-svc/v1.1");
    w.fake.script(
        DEV,
        Script::Fail {
            message: "boom".into(),
            retryable: false,
        },
    );
    let report = w.once().await;
    assert_eq!(report.failed, 1, "{report:?}");
    let halted = w.ctx.store.rollouts().await.expect("rollouts");
    let (is_halted, reason) = &halted[&(
        "web-svc".to_string(),
        crate::plan::Version { major: 1, minor: 1 },
    )];
    assert!(is_halted, "{halted:?}");
    assert!(reason.contains(DEV) && reason.contains("boom"), "{reason}");

    // However long we wait, prod stays on 1.0 and dev is not retried unchanged.
    w.advance(Duration::from_hours(24));
    let mark = w.fake.calls().len();
    w.once().await;
    assert_eq!(w.calls_since(mark), vec![]);
    assert_eq!(w.versions().await[PROD], "1.0");
}

#[tokio::test(flavor = "multi_thread")]
async fn deletes_beyond_the_budget_are_refused_then_done_within_it() {
    let w = World::new("[daemon]\ndeletion_budget = 2\n").await;
    w.once().await;
    let services = w.root.join("payments/proton/services");
    std::fs::remove_file(services.join("payments.yaml")).expect("rm");
    git(&w.root.join("payments"), &["add", "-A"]);
    git(
        &w.root.join("payments"),
        &["commit", "-q", "-m", "retire payments"],
    );

    let mark = w.fake.calls().len();
    let report = w.once().await;
    // payments has two instances, a component and a pipeline: four deletes, budget two.
    assert_eq!(
        w.calls_since(mark),
        vec![],
        "nothing is deleted over the budget"
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("4 deletions refused") && p.contains("budget is 2")),
        "{report:?}"
    );

    // Within the budget, one kind at a time: the pipeline first, then the instances.
    std::fs::write(
        w.root.join("proton.toml"),
        std::fs::read_to_string(w.root.join("proton.toml"))
            .expect("config")
            .replace("deletion_budget = 2", "deletion_budget = 4"),
    )
    .expect("config");
    let w2 = World {
        ctx: {
            let config = crate::config::Config::load(&w.root.join("proton.toml")).expect("config");
            let store = crate::state::Store::open_config(&config)
                .await
                .expect("store");
            let cfn = w.ctx.cfn.clone();
            let provisioners = Provisioners {
                cloudformation: Arc::new(w.fake.clone()),
                self_managed: Arc::new(w.fake.clone()),
                codebuild: Arc::new(w.fake.clone()),
            };
            let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
            Ctx::with_provisioners(
                Arc::new(config),
                store,
                cfn,
                provisioners,
                "test".into(),
                tx,
            )
        },
        ..w
    };
    let mark = w2.fake.calls().len();
    let report = w2.once().await;
    assert!(report.problems.is_empty(), "{report:?}");
    let deletes: Vec<String> = w2
        .calls_since(mark)
        .into_iter()
        .filter(|c| c.0 == "delete")
        .map(|c| c.1)
        .collect();
    assert_eq!(deletes.len(), 4, "{deletes:?}");
    assert_eq!(deletes[0], "pipeline/payments", "{deletes:?}");
    assert!(deletes[3].starts_with("component/"), "{deletes:?}");
    assert!(!w2.versions().await.keys().any(|k| k.contains("payments")));
}

impl World {
    /// Moves release tag `tag` to a new commit that changes the web service's instance
    /// template (so that every instance would render differently).
    fn move_tag(&self, tag: &str) {
        let dir = self.root.join("platform-templates");
        let cfn = dir.join("web-svc/v1/instance_infrastructure/cloudformation.yaml");
        let text = std::fs::read_to_string(&cfn).expect("read");
        let changed = text.replace("VisibilityTimeout: 60", "VisibilityTimeout: 61");
        assert_ne!(text, changed, "the template changes");
        std::fs::write(&cfn, changed).expect("write");
        git(&dir, &["add", "-A"]);
        git(&dir, &["commit", "-q", "-m", "change v1 in place"]);
        git(&dir, &["tag", "-f", "-a", tag, "-m", "moved"]);
    }

    /// Deletes release tag `tag` upstream and in protond's mirror (as a pruning fetch or a
    /// rebuilt mirror would), leaving protond's own references alone.
    fn delete_tag(&self, tag: &str) {
        git(&self.root.join("platform-templates"), &["tag", "-d", tag]);
        let mirror = crate::source::Mirror::open(
            &self.ctx.config.template_repos[0].url,
            &self.ctx.config.data_dir.join("git"),
        )
        .expect("mirror");
        git(mirror.path(), &["tag", "-d", tag]);
    }

    /// Adds an instance `payments-extra` in stage dev to the payments service.
    fn add_instance(&self) {
        let dir = self.root.join("payments");
        let file = dir.join("proton/services/payments.yaml");
        let mut text = std::fs::read_to_string(&file).expect("read");
        text.push_str(
            "  - name: payments-extra\n    environment: dev\n    spec:\n      image: public.ecr.aws/nginx/nginx:stable\n      port: 8080\n      memory: \"512\"\n      desired_count: 1\n      health_check_path: /health\n",
        );
        std::fs::write(&file, text).expect("write");
        git(&dir, &["add", "-A"]);
        git(&dir, &["commit", "-q", "-m", "one more instance"]);
    }

    async fn release(&self, template: &str, minor: u32) -> crate::state::TemplateVersionRecord {
        self.ctx
            .store
            .template_versions()
            .await
            .expect("versions")
            .into_iter()
            .find(|v| v.template == template && v.version == Version { major: 1, minor })
            .expect("recorded")
    }
}

const EXTRA: &str = "service_instance/payments/payments-extra";

#[tokio::test(flavor = "multi_thread")]
async fn a_moved_tag_redeploys_nothing_until_accepted_then_rolls_out_stage_by_stage() {
    let w = World::new("").await;
    w.once().await;
    let first_commit = w.release("web-svc", 0).await.commit;

    // The tag is moved: refused and reported, nothing is deployed.
    w.move_tag("web-svc/v1.0");
    let mark = w.fake.calls().len();
    let report = w.once().await;
    assert_eq!(w.calls_since(mark), vec![], "a moved tag deploys nothing");
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("release tag web-svc/v1.0 was moved")
                && p.contains("protond release accept web-svc/v1.0")),
        "{report:?}"
    );
    let rec = w.release("web-svc", 0).await;
    assert_eq!(rec.commit, first_commit, "the first-seen commit sticks");
    assert_eq!(rec.tag_state, crate::model::TagState::Moved);
    let moved_to = rec.tag_commit.clone().expect("tag commit");
    let mark = w.fake.calls().len();
    w.once().await;
    assert_eq!(
        w.calls_since(mark),
        vec![],
        "still nothing on the next pass"
    );

    // Accepted: dev first, prod only after the soak.
    crate::cli::release::accept(&w.ctx.config, &w.ctx.store, "web-svc/v1.0")
        .await
        .expect("accept");
    let err = crate::cli::release::accept(&w.ctx.config, &w.ctx.store, "web-svc/v1.0")
        .await
        .expect_err("not moved any more");
    assert!(err.to_string().contains("is not moved"), "{err}");
    let rec = w.release("web-svc", 0).await;
    assert_eq!(rec.commit, moved_to);
    assert_eq!(rec.tag_state, crate::model::TagState::Current);
    let mark = w.fake.calls().len();
    let report = w.once().await;
    assert!(report.problems.is_empty(), "{report:?}");
    let calls = w.calls_since(mark);
    assert!(
        calls.contains(&("apply".into(), DEV.into(), "1.0".into())),
        "{calls:?}"
    );
    assert!(!calls.iter().any(|c| c.1 == PROD), "{calls:?}");
    let history = w
        .ctx
        .store
        .deployments(Some(DEV), 1)
        .await
        .expect("history");
    assert_eq!(
        history[0].deployment.reason.as_deref(),
        Some("release_changed")
    );

    w.advance(Duration::from_mins(30));
    let mark = w.fake.calls().len();
    w.once().await;
    assert!(w.calls_since(mark).iter().all(|c| c.1 != PROD), "soaking");

    w.advance(Duration::from_secs(1900));
    let mark = w.fake.calls().len();
    w.once().await;
    let calls = w.calls_since(mark);
    assert!(
        calls.contains(&("apply".into(), PROD.into(), "1.0".into())),
        "{calls:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_tag_downgrades_nothing_and_new_instances_do_not_get_it() {
    let w = World::new("").await;
    w.once().await;
    w.tag("web-svc/v1.1");
    w.once().await;
    w.advance(Duration::from_hours(2));
    w.once().await;
    assert_eq!(w.versions().await[PROD], "1.1");

    w.delete_tag("web-svc/v1.1");
    let mark = w.fake.calls().len();
    let report = w.once().await;
    assert_eq!(w.calls_since(mark), vec![], "nothing is downgraded");
    assert!(report.problems.is_empty(), "{report:?}");
    assert_eq!(w.versions().await[DEV], "1.1");
    assert_eq!(w.versions().await[PROD], "1.1");
    assert_eq!(
        w.release("web-svc", 1).await.tag_state,
        crate::model::TagState::Withdrawn
    );

    // A new instance gets the newest usable minor, not the withdrawn one.
    w.add_instance();
    w.once().await;
    let versions = w.versions().await;
    assert_eq!(versions[EXTRA], "1.0", "{versions:?}");
    assert_eq!(versions[DEV], "1.1", "{versions:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_halted_minor_is_not_given_to_a_new_instance() {
    let w = World::new("").await;
    w.once().await;
    w.tag("web-svc/v1.1");
    w.once().await;
    assert_eq!(w.versions().await[DEV], "1.1");
    w.ctx
        .store
        .set_rollout("web-svc", Version { major: 1, minor: 1 }, true, "by a test")
        .await
        .expect("halt");
    w.add_instance();
    w.advance(Duration::from_hours(2));
    w.once().await;
    let versions = w.versions().await;
    assert_eq!(versions[EXTRA], "1.0", "{versions:?}");
    assert_eq!(
        versions[PROD], "1.0",
        "the halted rollout holds prod: {versions:?}"
    );
    assert_eq!(versions[DEV], "1.1", "{versions:?}");
}

/// A cycle under `scope`: which (operation, resource) it calls the provisioner for.
async fn sharded_cycle(w: &World, scope: &crate::ha::shard::Scope) -> Vec<(String, String)> {
    w.ctx.set_scope(scope.clone());
    let mark = w.fake.calls().len();
    let report = w.once().await;
    assert_eq!(report.failed, 0, "{report:?}");
    w.calls_since(mark)
        .into_iter()
        .map(|(op, id, _)| (op, id))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_shard_deploys_and_deletes_only_its_own_and_environments_only_on_shard_0() {
    use crate::ha::shard::Scope;
    use std::collections::BTreeSet;
    let w = World::new("[daemon]\ndeletion_budget = 10\n").await;
    // Both spec repos on shard 1 of two: shard 0's leader deploys only the environments.
    let explicit = BTreeMap::from([
        ("payments".to_string(), 1),
        ("platform-envs".to_string(), 1),
    ]);
    let shard0 = Scope::new(2, BTreeSet::from([0]), explicit.clone());
    let shard1 = Scope::new(2, BTreeSet::from([1]), explicit);

    let calls = sharded_cycle(&w, &shard1).await;
    assert!(
        calls.is_empty(),
        "shard 1 deploys no environment, and its instances wait for theirs: {calls:?}"
    );
    let calls = sharded_cycle(&w, &shard0).await;
    let ids: BTreeSet<&str> = calls.iter().map(|c| c.1.as_str()).collect();
    assert_eq!(
        ids,
        BTreeSet::from(["environment/dev", "environment/prod"]),
        "shard 0 deploys the environments and nothing of shard 1's repo: {calls:?}"
    );
    let calls = sharded_cycle(&w, &shard1).await;
    assert_eq!(calls.len(), 5, "payments' five resources: {calls:?}");
    assert!(
        calls
            .iter()
            .all(|(op, id)| op == "apply" && !id.starts_with("environment/")),
        "{calls:?}"
    );
    assert!(sharded_cycle(&w, &shard1).await.is_empty(), "converged");
    assert!(sharded_cycle(&w, &shard0).await.is_empty(), "converged");

    // The service is removed: shard 0 deletes nothing of shard 1's repo, shard 1 deletes it.
    std::fs::remove_file(w.root.join("payments/proton/services/payments.yaml")).expect("rm");
    git(&w.root.join("payments"), &["add", "-A"]);
    git(&w.root.join("payments"), &["commit", "-q", "-m", "retire"]);
    assert!(sharded_cycle(&w, &shard0).await.is_empty(), "not shard 0's");
    let calls = sharded_cycle(&w, &shard1).await;
    assert!(
        calls.len() == 4 && calls.iter().all(|(op, _)| op == "delete"),
        "{calls:?}"
    );
}

/// Each resource applied through `fake`, with how many times.
fn applied(fake: &Fake) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for c in fake.calls() {
        *out.entry(c.resource.clone()).or_default() += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn two_sharded_replicas_on_one_store_deploy_each_resource_once_and_one_takes_over() {
    use crate::ha::shard::Scope;
    use std::collections::BTreeSet;
    // One store for both replicas: SQLite, or PostgreSQL with PROTOND_TEST_STATE=postgres.
    let dir = tempfile::tempdir().expect("tempdir");
    let url = crate::state::testing::url(dir.path()).await;
    let a = World::new_on(&url, "").await;
    let b_fake = fake_with_environments();
    let b = replica(&a.root, &b_fake).await;
    let explicit = BTreeMap::from([
        ("payments".to_string(), 1),
        ("platform-envs".to_string(), 1),
    ]);
    a.ctx
        .set_scope(Scope::new(2, BTreeSet::from([0]), explicit.clone()));
    b.set_scope(Scope::new(2, BTreeSet::from([1]), explicit.clone()));
    // Both replicas' cycles at once, until neither starts anything.
    for _ in 0..5 {
        let (ra, rb) = tokio::join!(run_once(&a.ctx), run_once(&b));
        let (ra, rb) = (ra.expect("a reconciles"), rb.expect("b reconciles"));
        assert_eq!((ra.failed, rb.failed), (0, 0), "{ra:?} {rb:?}");
    }
    let (on_a, on_b) = (applied(&a.fake), applied(&b_fake));
    assert_eq!(
        on_a.keys().collect::<Vec<_>>(),
        ["environment/dev", "environment/prod"],
        "shard 0: the environments only"
    );
    assert_eq!(on_b.len(), 5, "shard 1: payments' resources: {on_b:?}");
    assert!(
        on_a.values().chain(on_b.values()).all(|n| *n == 1),
        "each applied once: {on_a:?} {on_b:?}"
    );
    let history = a.ctx.store.deployments(None, 100).await.expect("history");
    let mut rows: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &history {
        *rows.entry(d.deployment.resource_id.as_str()).or_default() += 1;
    }
    assert_eq!(rows.len(), 7, "{rows:?}");
    assert!(
        rows.values().all(|n| *n == 1),
        "one history row each: {rows:?}"
    );

    // Shard 1's replica is gone; a takes its shard over, and a change of its repo deploys
    // once, through a.
    drop(b);
    a.ctx
        .set_scope(Scope::new(2, BTreeSet::from([0, 1]), explicit));
    a.tag("web-svc/v1.1");
    let mark = a.fake.calls().len();
    a.once().await;
    let calls = a.calls_since(mark);
    assert_eq!(
        calls,
        vec![("apply".to_string(), DEV.to_string(), "1.1".to_string())],
        "dev first, by the taker"
    );
    assert_eq!(
        b_fake.calls().len(),
        5,
        "nothing more through the gone replica"
    );
}
