//! The render cache against the uncached computation: every input a declaration reads
//! changes what is rendered when it changes (never a stale row), and a commit in one spec
//! repo renders that repo's declarations only.

use std::collections::{BTreeMap, BTreeSet};

use super::super::fixtures::{catalog, env, record, repo, svc, svc_releases};
use super::super::{SpecRepoState, compute_held};
use super::*;
use crate::catalog::releases::ReleaseState;

/// Everything one computation reads.
#[derive(Clone)]
struct Inputs {
    snapshot: Snapshot,
    deployed: Vec<ResourceRecord>,
    account: String,
    pins: BTreeMap<String, Version>,
    halted: BTreeSet<(String, Version)>,
}

impl Inputs {
    fn uncached(&self) -> String {
        let set = compute_held(
            &self.snapshot,
            &self.deployed,
            &self.account,
            &self.pins,
            &self.halted,
        );
        format!("{set:?}")
    }

    fn cached(&self, cache: &mut ComputeCache) -> String {
        let set = cache.compute_held(
            &self.snapshot,
            &self.deployed,
            &self.account,
            &self.pins,
            &self.halted,
        );
        format!("{set:?}")
    }
}

fn team(name: &str, service: &str, commit: &str, instances: &[(&str, &str)]) -> SpecRepoState {
    let text = svc(service, 1, None, instances);
    let mut r = repo(name, false, &[(&format!("{service}.yaml"), &text)]);
    r.commit = Some(commit.to_string());
    r
}

/// Two environments (dev deployed with outputs, prod not), two team repos of one service each.
fn base() -> Inputs {
    let platform = repo(
        "platform",
        true,
        &[("dev.yaml", &env("dev")), ("prod.yaml", &env("prod"))],
    );
    let a = team(
        "team-a",
        "web",
        "a1",
        &[("web-dev", "dev"), ("web-prod", "prod")],
    );
    let b = team("team-b", "api", "b1", &[("api-dev", "dev")]);
    let snapshot = Snapshot {
        catalog: catalog(&[(1, 0)]),
        spec_repos: vec![platform, a, b],
        ..Snapshot::default()
    };
    Inputs {
        snapshot,
        deployed: vec![
            record("environment/dev", "platform"),
            record("service_instance/web/web-dev", "team-a"),
        ],
        account: "123456789012".into(),
        pins: BTreeMap::new(),
        halted: BTreeSet::new(),
    }
}

#[test]
fn a_commit_in_one_repo_renders_that_repos_declarations_only() {
    let mut cache = ComputeCache::default();
    let first = base();
    assert_eq!(first.cached(&mut cache), first.uncached());
    let all = cache.last_rendered();
    // 2 environments; web: 2 instances and its pipeline; api: 1 instance and its pipeline.
    assert_eq!((all, cache.last_reused()), (7, 0));

    assert_eq!(first.cached(&mut cache), first.uncached());
    assert_eq!((cache.last_rendered(), cache.last_reused()), (0, 7));

    // team-a commits a third instance: web renders again, but web-dev's rendering reads
    // what it read before and is reused; web-prod (blocked, not rendered but counted),
    // web-two and the pipeline (it lists the instances) are new.
    let mut next = first.clone();
    next.snapshot.spec_repos[1] = team(
        "team-a",
        "web",
        "a2",
        &[("web-dev", "dev"), ("web-prod", "prod"), ("web-two", "dev")],
    );
    assert_eq!(next.cached(&mut cache), next.uncached());
    assert_eq!((cache.last_rendered(), cache.last_reused()), (3, 5));

    // A commit that changes nothing of api's file renders api again (its commit is read),
    // and its instance's rendering, which reads the same, is reused (its pipeline, blocked on
    // the instance, is not rendered but counted).
    let mut again = next.clone();
    again.snapshot.spec_repos[2].commit = Some("b2".into());
    assert_eq!(again.cached(&mut cache), again.uncached());
    assert_eq!((cache.last_rendered(), cache.last_reused()), (1, 7));
}

/// Each change of an input renders again what reads it, and the rows equal the uncached
/// computation's; where the fixture's templates show the input, the rows change with it (so
/// a key that missed it would serve a stale row).
#[test]
fn every_input_of_a_declaration_changes_its_rows() {
    type Change = fn(&mut Inputs);
    // The fixture's templates print neither outputs nor the account: those
    // changes render again without changing the rows.
    let unseen = ["environment outputs", "own record", "account"];
    let changes: [(&str, Change); 12] = [
        ("new minor", |i| {
            i.snapshot.catalog.insert(svc_releases(&[(1, 1)]).remove(0));
        }),
        ("halted minor", |i| {
            i.snapshot.catalog.insert(svc_releases(&[(1, 1)]).remove(0));
            i.halted
                .insert(("web-svc".into(), Version { major: 1, minor: 1 }));
        }),
        ("withdrawn release", |i| {
            let mut r = svc_releases(&[(1, 0)]).remove(0);
            r.state = ReleaseState::Withdrawn;
            i.snapshot.catalog.insert(r);
        }),
        ("environment outputs", |i| {
            i.deployed[0].outputs.insert("Out".into(), "changed".into());
        }),
        ("environment deployed", |i| {
            i.deployed.push(record("environment/prod", "platform"));
        }),
        ("own record", |i| {
            i.deployed[1].outputs.insert("Url".into(), "u".into());
        }),
        ("own version", |i| {
            i.snapshot.catalog.insert(svc_releases(&[(1, 1)]).remove(0));
            i.deployed[1].version = Version { major: 1, minor: 1 };
        }),
        ("pin", |i| {
            i.snapshot.catalog.insert(svc_releases(&[(1, 1)]).remove(0));
            i.pins.insert(
                "service_instance/web/web-dev".into(),
                Version { major: 1, minor: 0 },
            );
        }),
        ("account", |i| i.account = "210987654321".into()),
        ("spec text", |i| {
            i.snapshot.spec_repos[2] = team("team-b", "api", "b1", &[("api-2", "dev")]);
        }),
        ("environment spec", |i| {
            let text = env("dev").replace("spec: {}", "spec: {cidr: 10.1.0.0/16}");
            i.snapshot.spec_repos[0] = repo(
                "platform",
                true,
                &[("dev.yaml", &text), ("prod.yaml", &env("prod"))],
            );
        }),
        ("environment's allowed repos", |i| {
            let text = format!("{}allowed_service_repos: [team-b]\n", env("dev"));
            i.snapshot.spec_repos[0] = repo(
                "platform",
                true,
                &[("dev.yaml", &text), ("prod.yaml", &env("prod"))],
            );
        }),
    ];
    for (what, change) in changes {
        let before = base();
        let mut cache = ComputeCache::default();
        before.cached(&mut cache);
        let mut after = before.clone();
        change(&mut after);
        let expected = after.uncached();
        if !unseen.contains(&what) {
            assert_ne!(expected, before.uncached(), "{what}: the change matters");
        }
        assert_eq!(after.cached(&mut cache), expected, "{what}");
        assert!(cache.last_rendered() > 0, "{what}");
    }
}

/// A customer-managed environment's stack outputs change without a commit: a cycle after
/// they change renders its instances again.
#[test]
fn customer_stack_outputs_render_their_instances_again() {
    let spec = "proton: EnvironmentSpec\nname: dev\ntemplate: {name: basic-env, major: 1}\ncustomer_managed: {stack: net}\n";
    let mut inputs = base();
    inputs.snapshot.spec_repos[0] = repo("platform", true, &[("dev.yaml", spec)]);
    inputs.deployed.remove(0);
    let outputs = |v: &str| Ok(BTreeMap::from([("Out".to_string(), v.to_string())]));
    inputs
        .snapshot
        .customer_stacks
        .insert("dev".into(), outputs("vpc-1"));
    let mut cache = ComputeCache::default();
    assert_eq!(inputs.cached(&mut cache), inputs.uncached());
    inputs.cached(&mut cache);
    assert_eq!(cache.last_rendered(), 0);
    inputs
        .snapshot
        .customer_stacks
        .insert("dev".into(), outputs("vpc-2"));
    assert_eq!(inputs.cached(&mut cache), inputs.uncached());
    // web's two instances and its pipeline, api's instance and its pipeline.
    assert_eq!(cache.last_rendered(), 5);
}

/// A new minor (1.1) held back: the inputs with it, and the same with web-dev pinned on 1.0.
fn held_rollout() -> (Inputs, Inputs) {
    let mut inputs = base();
    inputs
        .snapshot
        .catalog
        .insert(svc_releases(&[(1, 1)]).remove(0));
    let mut pinned = inputs.clone();
    pinned.pins.insert(
        "service_instance/web/web-dev".into(),
        Version { major: 1, minor: 0 },
    );
    (inputs, pinned)
}

/// The rows a held rollout renders (the new minor, then the held resources on the version
/// they run) are both kept: the next cycle renders neither again; a declaration gone from
/// two computations is forgotten.
#[test]
fn two_renderings_are_kept_and_unused_ones_dropped() {
    let (inputs, pinned) = held_rollout();
    let mut cache = ComputeCache::default();
    inputs.cached(&mut cache);
    pinned.cached(&mut cache);
    assert_eq!(inputs.cached(&mut cache), inputs.uncached());
    assert_eq!(cache.last_rendered(), 0);
    assert_eq!(pinned.cached(&mut cache), pinned.uncached());
    assert_eq!(cache.last_rendered(), 0);

    let mut without = inputs.clone();
    without.snapshot.spec_repos.truncate(2);
    without.cached(&mut cache);
    without.cached(&mut cache);
    assert!(!cache.entries.contains_key("service/api"));
    assert!(cache.entries.contains_key("service/web"));
}

/// A rendering the last two computations did not use is dropped, though its declaration is
/// still rendered (a finished rollout's rendering on the version it left).
#[test]
fn a_rendering_unused_for_two_computations_is_dropped() {
    let (inputs, pinned) = held_rollout();
    let mut cache = ComputeCache::default();
    pinned.cached(&mut cache);
    inputs.cached(&mut cache);
    // The pinned rendering was used by the computation before: kept.
    assert_eq!(cache.entries["service/web"].slots.len(), 2);
    inputs.cached(&mut cache);
    assert_eq!(cache.entries["service/web"].slots.len(), 1);
    assert_eq!(inputs.cached(&mut cache), inputs.uncached());
    assert_eq!(cache.last_rendered(), 0);
    // The dropped one renders again when it is asked for.
    assert_eq!(pinned.cached(&mut cache), pinned.uncached());
    assert!(cache.last_rendered() > 0);
}

/// A reused row shares its planner row and its documents with the cache's rendering (each
/// cycle's set holds pointers, not copies), and the planner borrows the set's rows.
#[test]
fn reused_rows_share_the_planner_row_and_documents() {
    let inputs = base();
    let mut cache = ComputeCache::default();
    let compute = |cache: &mut ComputeCache| {
        cache.compute_held(
            &inputs.snapshot,
            &inputs.deployed,
            &inputs.account,
            &inputs.pins,
            &inputs.halted,
        )
    };
    let first = compute(&mut cache);
    let second = compute(&mut cache);
    assert_eq!(cache.last_reused(), second.resources.len());
    assert!(!second.resources.is_empty());
    for (a, b) in first.resources.iter().zip(&second.resources) {
        assert!(
            std::sync::Arc::ptr_eq(&a.desired, &b.desired),
            "{}: the planner row was copied",
            b.desired.id
        );
        assert!(
            std::ptr::eq(a.documents.as_slice(), b.documents.as_slice()),
            "{}: the documents were copied",
            b.desired.id
        );
    }
    let rows = second.desired();
    for (row, r) in rows.iter().zip(&second.resources) {
        assert!(
            std::ptr::eq(*row, std::sync::Arc::as_ptr(&r.desired)),
            "the planner copied a row"
        );
    }
}

/// Issue 20: a new minor the gates hold back leaves a resource rendered on the version it
/// runs with the key it had the cycle before: the change-set gate's rendering of every
/// candidate on its deployed version reuses the last cycle's rows instead of rendering the
/// fleet again. A resource that does move to the new minor still renders.
#[test]
fn a_held_new_minor_reuses_the_rendering_on_the_version_resources_run() {
    let mut cache = ComputeCache::default();
    // Every service resource stays on 1.0, as the gate pins its candidates.
    let held = held_on_1_0(
        &base(),
        &mut cache,
        &[
            "service_instance/web/web-dev",
            "service_instance/web/web-prod",
            "pipeline/web",
            "service_instance/api/api-dev",
            "pipeline/api",
        ],
    );
    assert_eq!((cache.last_rendered(), cache.last_reused()), (0, 7));

    // Without the pins web and api move to 1.1: their rows render, the environments' not.
    let mut moved = held.clone();
    moved.pins.clear();
    assert_ne!(moved.uncached(), held.uncached());
    assert_eq!(moved.cached(&mut cache), moved.uncached());
    assert_eq!((cache.last_rendered(), cache.last_reused()), (5, 2));
}

/// `before` computed through `cache`, then a new minor (1.1) with `ids` pinned on 1.0,
/// computed through it too (checked against the uncached computation).
fn held_on_1_0(before: &Inputs, cache: &mut ComputeCache, ids: &[&str]) -> Inputs {
    before.cached(cache);
    let mut held = before.clone();
    held.snapshot
        .catalog
        .insert(svc_releases(&[(1, 1)]).remove(0));
    for id in ids {
        held.pins
            .insert((*id).into(), Version { major: 1, minor: 0 });
    }
    assert_eq!(held.cached(cache), held.uncached());
    held
}

/// A service without a pipeline reads no pipeline release: a new minor held back for all its
/// instances renders none of it again (its pipeline would follow the new minor, were there
/// one), while a service with a pipeline that moves renders again.
#[test]
fn a_held_new_minor_renders_nothing_of_a_service_without_a_pipeline() {
    let mut before = base();
    let web = svc("web", 1, None, &[("web-dev", "dev"), ("web-prod", "prod")])
        .replace("pipeline: {}\n", "");
    let mut team = repo("team-a", false, &[("web.yaml", &web)]);
    team.commit = Some("a1".into());
    before.snapshot.spec_repos[1] = team;
    let mut cache = ComputeCache::default();
    held_on_1_0(
        &before,
        &mut cache,
        &[
            "service_instance/web/web-dev",
            "service_instance/web/web-prod",
            "service_instance/api/api-dev",
        ],
    );
    // api's pipeline moves to 1.1: api renders again, but only its pipeline is new (its
    // instance, held on 1.0, reads what it read and is reused); web, every instance held,
    // is reused, as are the environments.
    assert_eq!((cache.last_rendered(), cache.last_reused()), (1, 5));
}

/// Issue 20: a service that renders again renders only the rows whose rendering reads
/// something new. A new minor with web-prod and api-dev pinned on 1.0 moves web-dev alone:
/// the pinned instances take their earlier rendering's documents (the same pointer, not a
/// copy), web-dev renders, and the set equals the uncached computation's.
#[test]
fn a_service_renders_again_only_the_rows_whose_rendering_reads_something_new() {
    let mut inputs = base();
    inputs.deployed.push(record("environment/prod", "platform"));
    let compute = |i: &Inputs, cache: &mut ComputeCache| {
        cache.compute_held(&i.snapshot, &i.deployed, &i.account, &i.pins, &i.halted)
    };
    let mut cache = ComputeCache::default();
    let first = compute(&inputs, &mut cache);
    let mut moved = inputs.clone();
    moved
        .snapshot
        .catalog
        .insert(svc_releases(&[(1, 1)]).remove(0));
    for id in [
        "service_instance/web/web-prod",
        "service_instance/api/api-dev",
    ] {
        moved.pins.insert(id.into(), Version { major: 1, minor: 0 });
    }
    let second = compute(&moved, &mut cache);
    assert_eq!(format!("{second:?}"), moved.uncached());
    // Rendered: web-dev, and both pipelines (blocked on undeployed instances: not rendered,
    // never reused). Reused: the two environments, web-prod and api-dev.
    assert_eq!((cache.last_rendered(), cache.last_reused()), (3, 4));
    let by_id = |set: &DesiredSet, id: &str| {
        set.resources
            .iter()
            .find(|r| r.desired.id == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} is not in the set"))
    };
    for (id, shared) in [
        ("service_instance/web/web-prod", true),
        ("service_instance/api/api-dev", true),
        ("service_instance/web/web-dev", false),
    ] {
        let (a, b) = (by_id(&first, id), by_id(&second, id));
        assert!(!b.documents.is_empty(), "{id} is rendered");
        assert_eq!(
            std::ptr::eq(a.documents.as_slice(), b.documents.as_slice()),
            shared,
            "{id}: documents shared"
        );
    }
    assert_eq!(
        by_id(&second, "service_instance/web/web-dev")
            .desired
            .version,
        Version { major: 1, minor: 1 }
    );
}

/// A directly defined component's rendering is keyed on its folder's content: a commit that
/// changes the component's template renders the component again, and the set equals the
/// uncached computation's.
#[test]
fn a_component_whose_files_change_renders_again() {
    let component = |body: &str| {
        let spec = svc("web", 1, None, &[("web-dev", "dev")]).replace(
            "environment: dev\n",
            "environment: dev\n    component: {name: queue, path: components/queue}\n",
        );
        let mut r = repo("team-a", false, &[("web.yaml", &spec)]);
        r.commit = Some(format!("c-{}", body.len()));
        let infrastructure = crate::catalog::Infrastructure {
            folder: String::new(),
            files: vec![crate::catalog::IacFile {
                path: "cloudformation.yaml".into(),
                source: body.into(),
                engine: crate::catalog::Engine::Jinja,
                language: crate::catalog::Language::Cloudformation,
            }],
            codebuild: None,
        };
        r.files[0].components.insert(
            "components/queue".into(),
            Ok(crate::catalog::ComponentBundle { infrastructure }),
        );
        r
    };
    let mut inputs = base();
    let mut release = svc_releases(&[(1, 0)]).remove(0);
    std::sync::Arc::make_mut(&mut release.bundle)
        .supported_component_sources
        .push("DIRECTLY_DEFINED".into());
    inputs.snapshot.catalog.insert(release);
    inputs.snapshot.spec_repos[1] = component("Resources: {Q: {Type: AWS::SQS::Queue}}\n");
    let mut cache = ComputeCache::default();
    assert_eq!(inputs.cached(&mut cache), inputs.uncached());
    let mut changed = inputs.clone();
    changed.snapshot.spec_repos[1] =
        component("Resources: {Q: {Type: AWS::SQS::Queue}, T: {Type: AWS::SNS::Topic}}\n");
    let after = changed.uncached();
    assert_ne!(after, inputs.uncached(), "the component's file is rendered");
    assert_eq!(changed.cached(&mut cache), after);
    assert!(after.contains("AWS::SQS::Queue}, T:"), "{after}");
}

/// One evaluation's computations share what they read the same (`Declared`): a computation
/// on other pins and halts, through the cache, gives what the uncached computation on those
/// pins gives, and each service's declaration is hashed once for all of them.
#[test]
fn computations_of_one_evaluation_share_the_declarations_and_differ_by_their_pins() {
    let mut i = base();
    i.snapshot.catalog.insert(svc_releases(&[(1, 1)]).remove(0));
    let declared = super::super::Declared::new(&i.snapshot, &i.deployed);
    let mut cache = ComputeCache::default();
    let dev = "service_instance/web/web-dev";
    let pinned = BTreeMap::from([(dev.to_string(), Version { major: 1, minor: 0 })]);
    let halted = BTreeSet::from([("web-svc".to_string(), Version { major: 1, minor: 1 })]);
    let runs = [
        (BTreeMap::new(), BTreeSet::new()),
        (pinned.clone(), BTreeSet::new()),
        (BTreeMap::new(), halted),
        (pinned, BTreeSet::new()),
    ];
    let mut hashed: Option<Vec<Key>> = None;
    for (pins, halted) in runs {
        let set = cache.compute_declared(&declared, &i.account, &pins, &halted);
        let expected = Inputs {
            pins: pins.clone(),
            halted: halted.clone(),
            ..i.clone()
        }
        .uncached();
        assert_eq!(format!("{set:?}"), expected, "{pins:?} {halted:?}");
        let now: Vec<Key> = declared
            .service_keys
            .values()
            .map(|k| *k.get().expect("hashed by the first computation"))
            .collect();
        assert_eq!(now.len(), 2, "web and api");
        assert_eq!(*hashed.get_or_insert_with(|| now.clone()), now);
    }
    // The pin is what tells the computations apart: web-dev moves without it.
    let mut version_of = |pins: &BTreeMap<String, Version>| {
        let set = cache.compute_declared(&declared, &i.account, pins, &BTreeSet::new());
        set.resources
            .iter()
            .find(|r| r.desired.id == dev)
            .map(|r| r.desired.version)
    };
    assert_eq!(
        version_of(&BTreeMap::new()),
        Some(Version { major: 1, minor: 1 })
    );
    assert_eq!(
        version_of(&BTreeMap::from([(
            dev.to_string(),
            Version { major: 1, minor: 0 }
        )])),
        Some(Version { major: 1, minor: 0 })
    );
}
