//! Desired state from real git repos: releases from tags, spec files from branch heads,
//! ownership rules, and the plan at each step as the repos move forward. Deployments are
//! recorded straight into a real `SQLite` store (provisioning is not under test here).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;
use std::process::Command;

use crate::common::world::World;
use crate::common::{copy_tree, git};
use protond::model::DeploymentAction;

use protond::config::Config;
use protond::desired::{self, DesiredSet, Snapshot};
use protond::plan::{self, ActionKind, DesiredState, Plan, UpdateReason, Version};
use protond::state::{NewDeployment, Outcome, ResourceRecord, Store};

/// The suite's world (the examples, no AWS), its loaded config, and its state store, into
/// which deployments are recorded straight.
struct Planner {
    world: World,
    config: Config,
    store: Store,
}

impl Deref for Planner {
    type Target = World;

    fn deref(&self) -> &World {
        &self.world
    }
}

impl Planner {
    fn snapshot(&self) -> Snapshot {
        desired::load(&self.config, None, true)
    }

    async fn plan(&self) -> (Snapshot, DesiredSet, Plan) {
        let snapshot = self.snapshot();
        let deployed = self.store.resources().await.expect("resources");
        let set = desired::compute(&snapshot, &deployed, "123456789012");
        let observed: Vec<_> = deployed.iter().map(ResourceRecord::to_deployed).collect();
        let plan = plan::diff(
            &set.desired(),
            &observed,
            &set.unknown_repos,
            &snapshot.catalog.latest_major(),
        );
        (snapshot, set, plan)
    }

    /// Records every create/update/delete of the plan as a successful deployment, with
    /// outputs named after the rendered template's `Outputs`.
    async fn apply(&self, set: &DesiredSet, plan: &Plan) -> usize {
        let mut n = 0;
        for a in plan.changes() {
            let dep = NewDeployment {
                resource_id: a.id.clone(),
                kind: a.kind,
                repo: String::new(),
                environment: None,
                action: match a.action {
                    ActionKind::Create => DeploymentAction::Create,
                    ActionKind::Delete => DeploymentAction::Delete,
                    _ => DeploymentAction::Update,
                },
                reason: None,
                template: a.template.clone(),
                from_version: a.deployed,
                to_version: a.version,
                input_hash: String::new(),
                rendered_hash: String::new(),
                spec_commit: None,
                placement: protond::model::Placement::default(),
            };
            let id = self.store.begin_deployment(&dep).await.expect("begin");
            let outcome = if a.action == ActionKind::Delete {
                Outcome::Deleted
            } else {
                let r = set
                    .resources
                    .iter()
                    .find(|r| r.desired.id == a.id)
                    .expect("desired resource");
                let DesiredState::Ready { rendered_hash } = &r.desired.state else {
                    panic!("{} is not ready", a.id)
                };
                let mut outputs = BTreeMap::new();
                for (_, doc) in &r.documents {
                    let v: serde_yaml::Value = serde_yaml::from_str(doc).expect("yaml");
                    if let Some(map) = v.get("Outputs").and_then(|o| o.as_mapping()) {
                        for k in map.keys().filter_map(|k| k.as_str()) {
                            let value = if k.ends_with("Arn") {
                                format!("arn:aws:iam::123456789012:policy/{}", k.to_lowercase())
                            } else {
                                format!("{}-{k}", a.id.replace('/', "-"))
                            };
                            outputs.insert(k.to_string(), value);
                        }
                    }
                }
                Outcome::Succeeded(ResourceRecord {
                    id: a.id.clone(),
                    kind: a.kind,
                    repo: r.desired.repo.clone(),
                    environment: r.environment.clone(),
                    template: a.template.clone(),
                    version: a.version,
                    input_hash: r.desired.input_hash.clone(),
                    rendered_hash: rendered_hash.clone(),
                    outputs: outputs.into(),
                    status: protond::model::ResourceStatus::Deployed,
                    spec_commit: r.spec_commit.clone(),
                    updated_at: String::new(),
                    placement: protond::model::Placement::default(),
                })
            };
            self.store
                .finish_deployment(id, &outcome)
                .await
                .expect("finish");
            n += 1;
        }
        n
    }

    /// Plans and applies until nothing changes; returns the final plan.
    async fn converge(&self) -> Plan {
        for _ in 0..6 {
            let (_, set, plan) = self.plan().await;
            if self.apply(&set, &plan).await == 0 {
                return plan;
            }
        }
        panic!("did not converge")
    }
}

fn action<'a>(plan: &'a Plan, id: &str) -> &'a ActionKind {
    &plan
        .actions
        .iter()
        .find(|a| a.id == id)
        .unwrap_or_else(|| panic!("{id} not in plan: {plan:#?}"))
        .action
}

/// The examples with releases tagged three ways (annotated with notes, lightweight, and a
/// tag that is no release), the config naming every repo by absolute path (one a `file://`
/// URL), no AWS.
async fn world() -> Planner {
    let world = World::builder()
        .examples()
        .tag("basic-env/v1.0", Some("First environment release."))
        .tag("web-svc/v1.0", Some("Web services on queues."))
        .tag("worker-svc/v1.0", None)
        .tag("not-a-release", None)
        .config(|c| {
            let payments = format!("file://{}/payments", c.root().display());
            c.absolute_paths().repo_url("payments", &payments);
        })
        .build();
    let config = Config::load(&world.config_path()).expect("config loads");
    let store = Store::open(&config.state).await.expect("store");
    Planner {
        world,
        config,
        store,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn repos_moving_forward_drive_the_plan() {
    let w = world().await;

    // Step 1: releases from tags; environments first, everything else waits for outputs.
    let (snapshot, _, plan) = w.plan().await;
    let release = snapshot
        .catalog
        .resolve("basic-env", 1, None)
        .expect("basic-env 1.0");
    assert_eq!(release.version, Version { major: 1, minor: 0 });
    assert_eq!(release.notes.as_deref(), Some("First environment release."));
    assert_eq!(
        snapshot
            .catalog
            .resolve("worker-svc", 1, None)
            .and_then(|r| r.notes.clone()),
        None,
        "lightweight tags have no release notes"
    );
    assert!(
        snapshot.catalog.rejected.is_empty(),
        "{:?}",
        snapshot.catalog.rejected
    );
    assert_eq!(action(&plan, "environment/dev"), &ActionKind::Create);
    assert_eq!(action(&plan, "environment/prod"), &ActionKind::Create);
    assert!(matches!(
        action(&plan, "service_instance/payments/payments-prod"),
        ActionKind::Blocked { on } if on == &vec!["environment/prod".to_string()]
    ));
    assert!(matches!(
        action(&plan, "pipeline/payments"),
        ActionKind::Blocked { .. }
    ));
    let order: Vec<&str> = plan.actions.iter().map(|a| a.kind.as_str()).collect();
    let mut sorted = order.clone();
    sorted.sort_by_key(|k| protond::plan::ResourceKind::parse(k));
    assert_eq!(
        order, sorted,
        "environments, components, instances, pipelines"
    );

    // Deploy in waves until converged: components before instances, pipeline last.
    let plan = w.converge().await;
    assert!(
        plan.actions.iter().all(|a| a.action == ActionKind::NoOp),
        "{plan:#?}"
    );
    let ids: BTreeSet<String> = w
        .store
        .resources()
        .await
        .expect("r")
        .into_iter()
        .map(|r| r.id)
        .collect();
    for id in [
        "environment/dev",
        "environment/prod",
        "component/payments/payments-dev",
        "service_instance/payments/payments-dev",
        "service_instance/payments/payments-prod",
        "service_instance/reports/reports-dev",
        "pipeline/payments",
    ] {
        assert!(ids.contains(id), "{id} not deployed: {ids:?}");
    }

    // Step 2: a new minor is followed by every instance of that major.
    let t = "platform-templates";
    let cfn = "web-svc/v1/instance_infrastructure/cloudformation.yaml";
    let text = std::fs::read_to_string(w.dir(t).join(cfn)).expect("read");
    w.write(
        t,
        cfn,
        &text.replace("Outputs:", "# v1.1: same resources, new comment\nOutputs:"),
    );
    w.commit(t, "web-svc 1.1");
    git(
        &w.dir(t),
        &["tag", "-a", "web-svc/v1.1", "-m", "Minor improvements."],
    );
    let (_, _, plan) = w.plan().await;
    let upgrade = ActionKind::Update {
        reason: UpdateReason::MinorUpgrade {
            from: Version { major: 1, minor: 0 },
            to: Version { major: 1, minor: 1 },
        },
    };
    assert_eq!(
        action(&plan, "service_instance/payments/payments-dev"),
        &upgrade
    );
    assert_eq!(
        action(&plan, "service_instance/payments/payments-prod"),
        &upgrade
    );
    assert_eq!(
        action(&plan, "service_instance/reports/reports-dev"),
        &ActionKind::NoOp
    );
    w.converge().await;

    // Step 3: a broken release is rejected with its reason and never used.
    w.write(t, "web-svc/v1/instance_infrastructure/manifest.yaml", "infrastructure:\n  templates:\n    - file: ../../../etc/passwd\n      rendering_engine: jinja\n      template_language: cloudformation\n");
    w.commit(t, "broken");
    git(&w.dir(t), &["tag", "web-svc/v1.2"]);
    let (snapshot, _, plan) = w.plan().await;
    let rejected = snapshot
        .catalog
        .rejected
        .iter()
        .find(|r| r.tag == "web-svc/v1.2")
        .expect("rejected");
    assert!(
        rejected.reason.contains("escapes the bundle"),
        "{}",
        rejected.reason
    );
    assert_eq!(
        snapshot
            .catalog
            .resolve("web-svc", 1, None)
            .map(|r| r.version.minor),
        Some(1)
    );
    assert_eq!(plan.changes().count(), 0, "{plan:#?}");
    let (versions, ()) = (w.store.template_versions().await.expect("versions"), ());
    assert!(
        versions.is_empty(),
        "plan() in this test does not record; the CLI does"
    );

    // Step 4: a new major is proposed, not deployed.
    git(&w.dir(t), &["checkout", "-q", "HEAD~1", "--", "web-svc"]);
    copy_tree(&w.dir(t).join("web-svc/v1"), &w.dir(t).join("web-svc/v2"));
    w.commit(t, "fix, and web-svc v2");
    git(
        &w.dir(t),
        &["tag", "-a", "web-svc/v2.0", "-m", "Breaking: new inputs."],
    );
    let (_, _, plan) = w.plan().await;
    assert_eq!(plan.changes().count(), 0, "{plan:#?}");
    let proposed: Vec<&str> = plan.proposals.iter().map(|p| p.id.as_str()).collect();
    assert!(
        proposed.contains(&"service_instance/payments/payments-dev"),
        "{proposed:?}"
    );
    assert!(
        plan.proposals
            .iter()
            .all(|p| p.current == 1 && p.available == 2)
    );

    // Step 5: a merged spec change deploys as a spec change.
    let p = "payments";
    let spec_path = "proton/services/payments.yaml";
    let spec = std::fs::read_to_string(w.dir(p).join(spec_path)).expect("read");
    w.write(
        p,
        spec_path,
        &spec.replacen("desired_count: 3", "desired_count: 4", 1),
    );
    w.commit(p, "scale prod");
    let (_, _, plan) = w.plan().await;
    assert_eq!(
        action(&plan, "service_instance/payments/payments-prod"),
        &ActionKind::Update {
            reason: UpdateReason::SpecChange
        }
    );
    assert_eq!(
        action(&plan, "service_instance/payments/payments-dev"),
        &ActionKind::NoOp
    );
    w.converge().await;

    // Step 6: ownership. The same service declared in a second repo is refused there; the
    // repo it is deployed from keeps it, and nothing either deployed is deleted.
    let reports =
        std::fs::read_to_string(w.dir(p).join("proton/services/reports.yaml")).expect("read");
    w.write("platform-envs", "proton/services/reports.yaml", &reports);
    w.commit("platform-envs", "claim reports");
    let (_, set, plan) = w.plan().await;
    assert_eq!(
        action(&plan, "service_instance/reports/reports-dev"),
        &ActionKind::NoOp
    );
    assert!(
        set.problems.iter().any(|m| m
            .contains("platform-envs:proton/services/reports.yaml: name: service \"reports\" belongs to spec repo \"payments\"")),
        "{:?}",
        set.problems
    );
    assert!(set.unknown_repos.contains("platform-envs"));
    assert_eq!(plan.changes().count(), 0, "{plan:#?}");
    // The owner's file stops parsing while the claim stands: the claim still takes nothing
    // over (the owner may still declare it), and nothing is deleted.
    let owner_file = w.dir(p).join("proton/services/reports.yaml");
    std::fs::write(&owner_file, "proton: ServiceSpec\nname: [reports\n").expect("write");
    w.commit(p, "typo");
    let (_, set, plan) = w.plan().await;
    assert_eq!(
        action(&plan, "service_instance/reports/reports-dev"),
        &ActionKind::Unknown
    );
    assert!(
        set.problems.iter().any(
            |m| m.contains("is deployed from spec repo \"payments\", which cannot be read now")
        ),
        "{:?}",
        set.problems
    );
    assert_eq!(plan.changes().count(), 0, "{plan:#?}");
    std::fs::write(&owner_file, &reports).expect("write");
    w.commit(p, "fix typo");
    git(
        &w.dir("platform-envs"),
        &["rm", "-q", "proton/services/reports.yaml"],
    );
    w.commit("platform-envs", "unclaim");

    // An environment in a non-platform repo is refused; a restricted environment refuses
    // other repos.
    w.write(p, "proton/environments/rogue.yaml", "proton: EnvironmentSpec\nname: rogue\ntemplate: {name: basic-env, major: 1}\nspec: {team: x}\n");
    w.commit(p, "rogue env");
    let (_, set, plan) = w.plan().await;
    assert!(
        set.problems.iter().any(|m| m.contains("platform repos")),
        "{:?}",
        set.problems
    );
    assert!(!plan.actions.iter().any(|a| a.id == "environment/rogue"));
    git(&w.dir(p), &["rm", "-q", "proton/environments/rogue.yaml"]);
    w.commit(p, "no rogue");
    let dev = "proton/environments/dev.yaml";
    let env_text = std::fs::read_to_string(w.dir("platform-envs").join(dev)).expect("read");
    w.write(
        "platform-envs",
        dev,
        &env_text.replace(
            "allowed_service_repos: [payments]",
            "allowed_service_repos: [platform-envs]",
        ),
    );
    w.commit("platform-envs", "restrict dev");
    let (_, _, plan) = w.plan().await;
    match action(&plan, "service_instance/reports/reports-dev") {
        ActionKind::Invalid { error } => assert!(
            error.contains("only accepts services from platform-envs"),
            "{error}"
        ),
        other => panic!("expected invalid, got {other:?}"),
    }
    w.write("platform-envs", dev, &env_text);
    w.commit("platform-envs", "unrestrict dev");

    // Step 7: removing a service deletes its instances, after everything else.
    git(&w.dir(p), &["rm", "-q", "proton/services/reports.yaml"]);
    w.commit(p, "retire reports");
    let (_, _, plan) = w.plan().await;
    assert_eq!(
        action(&plan, "service_instance/reports/reports-dev"),
        &ActionKind::Delete
    );
    assert_eq!(
        plan.actions.last().map(|a| a.action.clone()),
        Some(ActionKind::Delete)
    );
    w.converge().await;

    // Step 8: the repo becomes unreachable. With a cached mirror the last fetched state is
    // used; with no mirror at all its resources are unknown. Never a delete.
    std::fs::rename(w.dir(p), w.root.join("payments-gone")).expect("rename");
    let (_, _, plan) = w.plan().await;
    assert!(
        !plan.actions.iter().any(|a| a.action == ActionKind::Delete),
        "{plan:#?}"
    );
    std::fs::remove_dir_all(w.config.data_dir.join("git")).expect("drop cache");
    let (_, set, plan) = w.plan().await;
    assert!(
        set.unknown_repos.contains("payments"),
        "{:?}",
        set.unknown_repos
    );
    assert_eq!(
        action(&plan, "service_instance/payments/payments-prod"),
        &ActionKind::Unknown
    );
    assert!(
        !plan.actions.iter().any(|a| a.action == ActionKind::Delete),
        "{plan:#?}"
    );
    std::fs::rename(w.root.join("payments-gone"), w.dir(p)).expect("rename back");

    // Step 9: an emptied spec folder is unknown unless the config says it may delete.
    git(&w.dir(p), &["rm", "-q", "-r", "proton/services"]);
    w.commit(p, "empty");
    let (_, set, plan) = w.plan().await;
    assert!(set.unknown_repos.contains("payments"));
    assert!(
        !plan.actions.iter().any(|a| a.action == ActionKind::Delete),
        "{plan:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_bad_spec_fails_alone_and_blocks_deletes_of_its_repo() {
    let w = world().await;
    w.converge().await;
    let p = "payments";
    w.write(
        p,
        "proton/services/reports.yaml",
        "proton: ServiceSpec\nname: reports\ninstances: [oops\n",
    );
    w.write(
        p,
        "proton/services/payments.yaml",
        &std::fs::read_to_string(w.dir(p).join("proton/services/payments.yaml"))
            .expect("read")
            .replace("port: 8080", "port: 70000"),
    );
    w.commit(p, "break things");
    let (_, set, plan) = w.plan().await;
    assert!(
        set.problems.iter().any(|m| m.contains("reports.yaml")),
        "{:?}",
        set.problems
    );
    match action(&plan, "service_instance/payments/payments-dev") {
        ActionKind::Invalid { error } => assert!(
            error.contains("instances[0].spec.port: 70000 is above maximum 65535"),
            "{error}"
        ),
        other => panic!("expected invalid, got {other:?}"),
    }
    // reports.yaml no longer parses: its instance is kept, not deleted.
    assert_eq!(
        action(&plan, "service_instance/reports/reports-dev"),
        &ActionKind::Unknown
    );
    // Environments in another repo are untouched.
    assert_eq!(action(&plan, "environment/dev"), &ActionKind::NoOp);
    assert_eq!(plan.changes().count(), 0, "{plan:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn incompatible_environment_is_refused() {
    let w = world().await;
    let t = "platform-templates";
    w.write(t, "web-svc/v1/.template-registration.yaml", "compatible_environments:\n  - other-env:1\nsupported_component_sources:\n  - DIRECTLY_DEFINED\n");
    w.commit(t, "only other-env");
    git(&w.dir(t), &["tag", "-f", "web-svc/v1.0"]);
    w.converge().await;
    let (_, _, plan) = w.plan().await;
    match action(&plan, "service_instance/payments/payments-dev") {
        ActionKind::Invalid { error } => assert!(error.contains("not compatible"), "{error}"),
        other => panic!("expected invalid, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn components_need_directly_defined_and_go_after_their_instance() {
    let w = world().await;
    let t = "platform-templates";
    // Deployed everything first (the world converges), then the template stops accepting
    // components: the instance carrying one is refused, nothing is deleted.
    w.converge().await;
    w.write(
        t,
        "web-svc/v1/.template-registration.yaml",
        "compatible_environments:\n  - basic-env:1\n",
    );
    w.commit(t, "no components");
    // A new minor: a release tag moved in place is refused (releases are immutable).
    git(&w.dir(t), &["tag", "web-svc/v1.1"]);
    let (_, _, plan) = w.plan().await;
    match action(&plan, "service_instance/payments/payments-dev") {
        ActionKind::Invalid { error } => assert!(
            error.contains(
                "does not accept components (add DIRECTLY_DEFINED to supported_component_sources)"
            ),
            "{error}"
        ),
        other => panic!("expected invalid, got {other:?}"),
    }
    assert_eq!(
        plan.changes()
            .filter(|a| a.action == ActionKind::Delete)
            .count(),
        0,
        "{plan:#?}"
    );
    // With components accepted again, removing the service deletes the instance before its
    // component (and the pipeline first).
    w.write(t, "web-svc/v1/.template-registration.yaml", "compatible_environments:\n  - basic-env:1\nsupported_component_sources:\n  - DIRECTLY_DEFINED\n");
    w.commit(t, "components again");
    git(&w.dir(t), &["tag", "web-svc/v1.2"]);
    git(
        &w.dir("payments"),
        &["rm", "-q", "proton/services/payments.yaml"],
    );
    git(&w.dir("payments"), &["commit", "-qm", "drop payments"]);
    let (_, _, plan) = w.plan().await;
    let deletes: Vec<&str> = plan
        .changes()
        .filter(|a| a.action == ActionKind::Delete)
        .map(|a| a.id.as_str())
        .collect();
    let pos = |id: &str| {
        deletes
            .iter()
            .position(|d| *d == id)
            .unwrap_or_else(|| panic!("{id} not deleted: {deletes:?}"))
    };
    assert!(
        pos("pipeline/payments") < pos("service_instance/payments/payments-dev"),
        "{deletes:?}"
    );
    assert!(
        pos("service_instance/payments/payments-dev") < pos("component/payments/payments-dev"),
        "{deletes:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unchanged_inputs_reuse_the_last_rendering_and_changes_do_not() {
    let w = world().await;
    w.converge().await;
    let deployed = w.store.resources().await.expect("resources");
    let first = desired::load_cached(&w.config, None, true);
    let mut cache = desired::ComputeCache::default();
    let none = std::collections::BTreeMap::new();
    let a = cache.compute(&first, &deployed, "123456789012", &none);
    // Same commits, releases and records: reused (spec states too).
    let second = desired::load_cached(&w.config, Some(&first), false);
    assert_eq!(second.spec_repos.len(), first.spec_repos.len());
    let b = cache.compute(&second, &deployed, "123456789012", &none);
    assert_eq!(a.desired(), b.desired());
    // A spec change is seen (its repo is read again) and rendered anew.
    w.write(
        "payments",
        "proton/services/payments.yaml",
        &std::fs::read_to_string(w.dir("payments").join("proton/services/payments.yaml"))
            .expect("spec")
            .replace("desired_count: 3", "desired_count: 5"),
    );
    w.commit("payments", "scale");
    let third = desired::load_cached(&w.config, Some(&second), true);
    let c = cache.compute(&third, &deployed, "123456789012", &none);
    let prod = |s: &desired::DesiredSet| {
        s.resources
            .iter()
            .find(|r| r.desired.id == "service_instance/payments/payments-prod")
            .map(|r| r.desired.input_hash.clone())
            .expect("prod")
    };
    assert_ne!(prod(&b), prod(&c));
    // A changed record (new environment outputs) renders anew too.
    let mut changed = deployed.clone();
    let env = changed
        .iter_mut()
        .find(|r| r.id == "environment/prod")
        .expect("env");
    env.outputs.insert(
        "TopicArn".into(),
        "arn:aws:sns:us-east-1:123456789012:moved".into(),
    );
    let d = cache.compute(&third, &changed, "123456789012", &none);
    assert_ne!(
        d.desired(),
        c.desired(),
        "new environment outputs must re-render"
    );
    let e = cache.compute(&third, &deployed, "123456789012", &none);
    assert_eq!(e.desired(), c.desired());
}

#[test]
fn cli_plan_and_status() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let w = rt.block_on(world());
    let config = w.root.join("proton.toml");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_protond"))
            .args(args)
            .output()
            .expect("protond runs")
    };
    let out = run(&["plan", "--config", config.to_str().expect("utf8")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("create") && text.contains("environment/dev"),
        "{text}"
    );
    assert!(text.contains("waiting for environment/prod"), "{text}");
    let out = run(&[
        "plan",
        "--config",
        config.to_str().expect("utf8"),
        "--output",
        "json",
        "--no-fetch",
    ]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let actions = doc["actions"].as_array().expect("actions");
    assert!(
        actions
            .iter()
            .any(|a| a["id"] == "environment/prod" && a["action"] == "create"),
        "{doc}"
    );
    // The CLI records the catalogue; status shows deployed resources and available updates.
    rt.block_on(w.converge());
    let t = w.dir("platform-templates");
    copy_tree(&t.join("web-svc/v1"), &t.join("web-svc/v2"));
    git(&t, &["add", "-A"]);
    git(&t, &["commit", "-q", "-m", "web-svc v2"]);
    git(&t, &["tag", "web-svc/v1.3"]);
    git(&t, &["tag", "web-svc/v2.0"]);
    let recorded = rt
        .block_on(w.store.template_versions())
        .expect("versions")
        .len();
    let out = run(&["plan", "--config", config.to_str().expect("utf8")]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("minor upgrade 1.0 -> 1.3"), "{text}");
    assert!(text.contains("Major versions available"), "{text}");
    // `plan` is read-only: the daemon records the catalogue, not the plan.
    assert_eq!(
        rt.block_on(w.store.template_versions())
            .expect("versions")
            .len(),
        recorded
    );
    // Hold the minor so that reconciling records the catalogue without applying it.
    let out = run(&[
        "rollout",
        "halt",
        "web-svc/v1.3",
        "--config",
        config.to_str().expect("utf8"),
    ]);
    assert!(out.status.success());
    let out = run(&[
        "reconcile",
        "--once",
        "--config",
        config.to_str().expect("utf8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["status", "--config", config.to_str().expect("utf8")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("service_instance/payments/payments-prod"),
        "{text}"
    );
    assert!(text.contains("minor 1.3, major v2"), "{text}");
    assert!(text.contains("create succeeded"), "{text}");
    let out = run(&[
        "status",
        "--config",
        config.to_str().expect("utf8"),
        "--output",
        "json",
    ]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let prod = rows["resources"]
        .as_array()
        .and_then(|r| {
            r.iter()
                .find(|x| x["id"] == "service_instance/payments/payments-prod")
        })
        .expect("row");
    assert_eq!(prod["minor_available"], "1.3");
    assert_eq!(prod["major_available"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn changed_environment_outputs_rerender_dependants() {
    let w = world().await;
    w.converge().await;
    // The dev environment's stack now reports a different topic (e.g. it was replaced).
    let mut env = w
        .store
        .resources()
        .await
        .expect("resources")
        .into_iter()
        .find(|r| r.id == "environment/dev")
        .expect("dev");
    env.outputs.insert(
        "TopicArn".into(),
        "arn:aws:sns:us-east-1:123456789012:replaced".into(),
    );
    let dep = NewDeployment {
        resource_id: env.id.clone(),
        kind: env.kind,
        repo: env.repo.clone(),
        environment: env.environment.clone(),
        action: DeploymentAction::Update,
        reason: None,
        template: env.template.clone(),
        from_version: Some(env.version),
        to_version: env.version,
        input_hash: env.input_hash.clone(),
        rendered_hash: env.rendered_hash.clone(),
        spec_commit: None,
        placement: protond::model::Placement::default(),
    };
    let id = w.store.begin_deployment(&dep).await.expect("begin");
    w.store
        .finish_deployment(id, &Outcome::Succeeded(env))
        .await
        .expect("finish");
    let (_, _, plan) = w.plan().await;
    let rerender = ActionKind::Update {
        reason: UpdateReason::Rerender,
    };
    assert_eq!(
        action(&plan, "service_instance/payments/payments-dev"),
        &rerender
    );
    assert_eq!(
        action(&plan, "service_instance/reports/reports-dev"),
        &rerender
    );
    assert_eq!(
        action(&plan, "service_instance/payments/payments-prod"),
        &ActionKind::NoOp
    );
    assert_eq!(action(&plan, "environment/dev"), &ActionKind::NoOp);
}

#[tokio::test(flavor = "multi_thread")]
async fn spec_repos_are_read_at_their_configured_branch() {
    let mut w = world().await;
    // `live` is what is deployed; `main` carries an unmerged change.
    let envs = w.dir("platform-envs");
    git(&envs, &["branch", "live"]);
    w.write("platform-envs", "proton/environments/staging.yaml", "proton: EnvironmentSpec\nname: staging\ntemplate: {name: basic-env, major: 1}\nspec: {team: platform}\n");
    w.commit("platform-envs", "staging, not merged to live");
    let (_, _, plan) = w.plan().await;
    assert!(plan.actions.iter().any(|a| a.id == "environment/staging"));
    let toml = std::fs::read_to_string(w.root.join("proton.toml")).expect("read");
    std::fs::write(
        w.root.join("proton.toml"),
        toml.replace("platform = true\n", "platform = true\nbranch = \"live\"\n"),
    )
    .expect("write");
    w.config = Config::load(&w.root.join("proton.toml")).expect("config");
    let (_, _, plan) = w.plan().await;
    assert!(
        !plan.actions.iter().any(|a| a.id == "environment/staging"),
        "{plan:#?}"
    );
    assert_eq!(action(&plan, "environment/dev"), &ActionKind::Create);
    // Merging to live brings it in.
    git(&envs, &["checkout", "-q", "live"]);
    git(&envs, &["merge", "-q", "--ff-only", "main"]);
    let (_, _, plan) = w.plan().await;
    assert_eq!(action(&plan, "environment/staging"), &ActionKind::Create);
}
