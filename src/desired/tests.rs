//! `compute` end to end on in-memory snapshots: the safety rules as the planner sees them,
//! pinned versions, and the rendering context's source.

use std::collections::{BTreeMap, BTreeSet};

use super::fixtures::{catalog, env, record, repo, svc, unknown_repo};
use super::*;
use crate::plan::{ActionKind, DesiredState};

#[test]
fn fetch_requests_merge() {
    let only =
        |names: &[&str]| Fetch::Only(names.iter().map(std::string::ToString::to_string).collect());
    assert_eq!(Fetch::None.merge(only(&["a"])), only(&["a"]));
    assert_eq!(only(&["a"]).merge(only(&["b"])), only(&["a", "b"]));
    assert_eq!(only(&["a"]).merge(Fetch::All), Fetch::All);
    assert_eq!(Fetch::All.merge(Fetch::None), Fetch::All);
    assert!(only(&["a"]).wants("a") && !only(&["a"]).wants("b"));
    assert!(!Fetch::None.wants("a") && Fetch::All.wants("a"));
}

fn snapshot(spec_repos: Vec<SpecRepoState>, svc_versions: &[(u32, u32)]) -> Snapshot {
    Snapshot {
        catalog: catalog(svc_versions),
        template_repo_errors: Vec::new(),
        stale_repos: Vec::new(),
        spec_repos,
        retired_repos: BTreeMap::new(),
        customer_stacks: BTreeMap::new(),
    }
}

/// The planner's action per id for `set` against `deployed`.
fn plan(set: &DesiredSet, deployed: &[ResourceRecord]) -> BTreeMap<String, ActionKind> {
    let deployed: Vec<plan::Deployed> = deployed.iter().map(ResourceRecord::to_deployed).collect();
    plan::diff(
        &set.desired(),
        &deployed,
        &set.unknown_repos,
        &BTreeMap::new(),
    )
    .actions
    .into_iter()
    .map(|a| (a.id, a.action))
    .collect()
}

fn platform() -> SpecRepoState {
    repo("platform", true, &[("dev.yaml", &env("dev"))])
}

#[test]
fn an_unknown_repos_resources_are_kept_never_deleted() {
    let deployed = vec![
        record("environment/dev", "platform"),
        record("service_instance/web/web-dev", "team"),
        record("pipeline/web", "team"),
    ];
    let unreadable = [
        unknown_repo("team", "fetch failed"),
        repo(
            "team",
            false,
            &[("bad.yaml", "proton: ServiceSpec\nname: 'bad name'\n")],
        ),
        unknown_repo(
            "team",
            "the spec folder proton/ on main is empty or missing",
        ),
    ];
    for team in unreadable {
        let set = compute(&snapshot(vec![platform(), team], &[(1, 0)]), &deployed, "1");
        assert!(set.unknown_repos.contains("team"), "{:?}", set.problems);
        let actions = plan(&set, &deployed);
        assert_eq!(actions["service_instance/web/web-dev"], ActionKind::Unknown);
        assert_eq!(actions["pipeline/web"], ActionKind::Unknown);
        assert!(
            !actions.values().any(|a| *a == ActionKind::Delete),
            "{actions:?}"
        );
    }
    // The contrast: a readable repo that no longer declares the service deletes it.
    let set = compute(
        &snapshot(vec![platform(), repo("team", false, &[])], &[(1, 0)]),
        &deployed,
        "1",
    );
    assert_eq!(plan(&set, &deployed)["pipeline/web"], ActionKind::Delete);
}

#[test]
fn no_takeover_while_the_owners_repo_cannot_be_read() {
    let deployed = vec![
        record("environment/dev", "platform"),
        record("service_instance/web/web-dev", "team"),
    ];
    let web = svc("web", 1, None, &[("web-dev", "dev")]);
    let set = compute(
        &snapshot(
            vec![
                platform(),
                unknown_repo("team", "fetch failed"),
                repo("other", false, &[("web.yaml", &web)]),
            ],
            &[(1, 0)],
        ),
        &deployed,
        "1",
    );
    // Nothing of the service is rendered from the other repo, and nothing is deleted.
    assert!(!set.resources.iter().any(|r| r.desired.repo == "other"));
    assert_eq!(
        set.unknown_repos,
        BTreeSet::from(["team".to_string(), "other".to_string()])
    );
    let actions = plan(&set, &deployed);
    assert_eq!(actions["service_instance/web/web-dev"], ActionKind::Unknown);
    assert!(
        set.problems
            .iter()
            .any(|p| p.contains("cannot be read now"))
    );
}

fn versions(set: &DesiredSet) -> BTreeMap<&str, Version> {
    set.resources
        .iter()
        .map(|r| (r.desired.id.as_str(), r.desired.version))
        .collect()
}

#[test]
fn versions_follow_the_major_the_spec_minor_and_the_callers_pins() {
    let deployed = vec![
        record("environment/dev", "platform"),
        record("service_instance/web/a", "team"),
        record("service_instance/web/b", "team"),
    ];
    let v = |major, minor| Version { major, minor };
    let follow = svc("web", 1, None, &[("a", "dev"), ("b", "dev")]);
    let pinned_minor = svc("web", 1, Some(0), &[("a", "dev"), ("b", "dev")]);
    let spec = |text: &str| {
        snapshot(
            vec![platform(), repo("team", false, &[("web.yaml", text)])],
            &[(1, 0), (1, 1), (1, 2)],
        )
    };

    let set = compute(&spec(&follow), &deployed, "1");
    let got = versions(&set);
    assert_eq!(got["service_instance/web/a"], v(1, 2), "highest minor");
    assert_eq!(got["pipeline/web"], v(1, 2));

    let set = compute(&spec(&pinned_minor), &deployed, "1");
    assert_eq!(
        versions(&set)["service_instance/web/a"],
        v(1, 0),
        "spec minor"
    );

    let pins = BTreeMap::from([
        ("service_instance/web/a".to_string(), v(1, 1)),
        ("pipeline/web".to_string(), v(1, 0)),
    ]);
    let set = compute_pinned(&spec(&follow), &deployed, "1", &pins);
    let got = versions(&set);
    assert_eq!(got["service_instance/web/a"], v(1, 1), "held back");
    assert_eq!(got["service_instance/web/b"], v(1, 2), "not held back");
    assert_eq!(got["pipeline/web"], v(1, 0), "pipeline held back");
    assert!(
        set.resources
            .iter()
            .all(|r| matches!(r.desired.state, DesiredState::Ready { .. })),
        "{:?}",
        set.resources
    );
}

#[test]
fn instances_see_their_specs_source_repository_never_the_spec_repo() {
    let deployed = vec![record("environment/dev", "platform")];
    let web = svc("web", 1, None, &[("web-dev", "dev")])
        .replace("branch_name: main", "branch_name: release");
    let mut team = repo("team", false, &[("web.yaml", &web)]);
    team.branch = "spec-branch".into();
    let snap = snapshot(vec![platform(), team], &[(1, 0)]);
    let set = compute(&snap, &deployed, "1");
    let inst = set
        .resources
        .iter()
        .find(|r| r.desired.id == "service_instance/web/web-dev")
        .expect("rendered");
    let text = &inst.documents[0].1;
    assert!(text.contains("Value: 'release'"), "{text}");
    assert!(text.contains("Value: 'acme/web'"), "{text}");

    // A spec that does not name its branch: the template's use of it is an error naming the
    // spec file and the field, never an empty string or the spec repo's branch.
    let bare = web.replace("branch_name: release\n", "");
    let team = repo("team", false, &[("web.yaml", &bare)]);
    let snap = snapshot(vec![platform(), team], &[(1, 0)]);
    let set = compute(&snap, &deployed, "1");
    let inst = set
        .resources
        .iter()
        .find(|r| r.desired.id == "service_instance/web/web-dev")
        .expect("declared");
    let DesiredState::Invalid { error } = &inst.desired.state else {
        panic!("expected invalid, got {:?}", inst.desired.state)
    };
    assert!(error.starts_with("web.yaml: branch_name: "), "{error}");
    assert!(error.contains("add `branch_name: main`"), "{error}");
}

#[test]
fn customer_managed_environments_have_no_row_and_give_their_outputs() {
    let spec = |cm: &str| {
        format!(
            "proton: EnvironmentSpec\nname: dev\ntemplate: {{name: basic-env, major: 1}}\ncustomer_managed: {cm}\n"
        )
    };
    let web = svc("web", 1, None, &[("web-dev", "dev")]);
    let given = repo(
        "platform",
        true,
        &[("dev.yaml", &spec("{outputs: {Out: given}}"))],
    );
    let team = repo("team", false, &[("web.yaml", &web)]);
    let snap = snapshot(vec![given, team.clone()], &[(1, 0)]);
    let set = compute(&snap, &[], "1");
    assert!(
        set.resources
            .iter()
            .all(|r| r.desired.id != "environment/dev"),
        "no row: nothing creates, updates or deletes it"
    );
    assert_eq!(
        set.customer_managed
            .get("environment/dev")
            .map(String::as_str),
        Some("1 output(s) given in dev.yaml")
    );
    let inst = set
        .resources
        .iter()
        .find(|r| r.desired.id == "service_instance/web/web-dev")
        .expect("instance");
    assert!(
        matches!(inst.desired.state, DesiredState::Ready { .. }),
        "{:?}",
        inst.desired.state
    );

    // From a stack: read before the computation; not read (no AWS) or unreadable is invalid.
    let from_stack = repo("platform", true, &[("dev.yaml", &spec("{stack: net}"))]);
    let mut snap = snapshot(vec![from_stack, team.clone()], &[(1, 0)]);
    let state = |snap: &Snapshot, deployed: &[ResourceRecord]| {
        compute(snap, deployed, "1")
            .resources
            .into_iter()
            .find(|r| r.desired.id == "environment/dev")
            .map(|r| r.desired.state.clone())
    };
    assert!(
        matches!(state(&snap, &[]), Some(DesiredState::Invalid { error }) if error.contains("were not read"))
    );
    snap.customer_stacks
        .insert("dev".into(), Err("stack net does not exist".into()));
    assert!(
        matches!(state(&snap, &[]), Some(DesiredState::Invalid { error }) if error.contains("stack net does not exist"))
    );
    snap.customer_stacks.insert(
        "dev".into(),
        Ok(BTreeMap::from([("Out".to_string(), "read".to_string())])),
    );
    assert_eq!(state(&snap, &[]), None);

    // An environment protond deployed is never handed over silently: invalid, kept.
    let deployed = [record("environment/dev", "platform")];
    assert!(
        matches!(state(&snap, &deployed), Some(DesiredState::Invalid { error }) if error.contains("protond deployed environment/dev"))
    );
    let plan = plan(&compute(&snap, &deployed, "1"), &deployed);
    assert!(
        !plan.values().any(|a| matches!(a, ActionKind::Delete)),
        "{plan:?}"
    );
}
