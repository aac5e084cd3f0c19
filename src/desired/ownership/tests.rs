//! One table row per ownership rule of the `desired` module doc.

use std::collections::{BTreeMap, BTreeSet};

use super::super::fixtures::{env, repo, svc, unknown_repo};
use super::*;

/// No repo retired.
static NONE_RETIRED: BTreeMap<String, String> = BTreeMap::new();

const BAD: &str = "proton: ServiceSpec\nname: 'bad name'\n";

/// What [`decide`] decided, in words: `name: verdict`.
fn verdicts(o: &Ownership<'_>) -> Vec<String> {
    let envs = o.environments.iter().map(|(name, v)| match v {
        EnvVerdict::Deploy(d) => format!("env {name}: deploy from {}", d.repo_name()),
        EnvVerdict::Duplicate { carrier, .. } => {
            format!("env {name}: duplicate carried by {}", carrier.repo_name())
        }
    });
    let svcs = o.services.iter().map(|(name, d)| match &d.verdict {
        SvcVerdict::Deploy(d) => format!("svc {name}: deploy from {}", d.repo_name()),
        SvcVerdict::Withheld => format!("svc {name}: withheld"),
        SvcVerdict::Duplicate { decls, .. } => format!("svc {name}: duplicate x{}", decls.len()),
    });
    envs.chain(svcs).collect()
}

/// Every problem, the name-free ones first.
fn problems(o: &Ownership<'_>) -> Vec<Problem> {
    let per_service = o.services.values().flat_map(|d| d.problems.iter().cloned());
    o.problems.iter().cloned().chain(per_service).collect()
}

struct Case {
    rule: &'static str,
    repos: Vec<SpecRepoState>,
    /// Deployed records: (id, repo).
    deployed: &'static [(&'static str, &'static str)],
    verdicts: &'static [&'static str],
    unknown: &'static [&'static str],
    /// The kinds of problem raised, in order.
    problems: &'static [&'static str],
}

fn kind(p: &Problem) -> &'static str {
    match p {
        Problem::RepoUnknown { .. } => "repo unknown",
        Problem::RepoNotConfigured { .. } => "repo not configured",
        Problem::InvalidSpec(_) => "invalid spec",
        Problem::EnvironmentOutsidePlatform { .. } => "environment outside platform",
        Problem::OwnerUnreadable { .. } => "owner unreadable",
        Problem::OwnedElsewhere { .. } => "owned elsewhere",
    }
}

#[test]
#[allow(clippy::too_many_lines)] // one row per rule reads best as one table
fn ownership_rules() {
    let web = svc("web", 1, None, &[("web-dev", "dev")]);
    let api = svc("api", 1, None, &[("api-dev", "dev")]);
    let cases = vec![
        Case {
            rule: "a readable repo deploys what it declares",
            repos: vec![repo(
                "a",
                true,
                &[("dev.yaml", &env("dev")), ("web.yaml", &web)],
            )],
            deployed: &[],
            verdicts: &["env dev: deploy from a", "svc web: deploy from a"],
            unknown: &[],
            problems: &[],
        },
        Case {
            rule: "an unknown repo declares nothing and is kept",
            repos: vec![
                unknown_repo("b", "fetch failed"),
                repo("a", false, &[("web.yaml", &web)]),
            ],
            deployed: &[("service_instance/old/i", "b")],
            verdicts: &["svc web: deploy from a"],
            unknown: &["b"],
            problems: &["repo unknown"],
        },
        Case {
            rule: "a file that does not parse makes its repo unknown; its other files still deploy",
            repos: vec![repo("a", false, &[("bad.yaml", BAD), ("web.yaml", &web)])],
            deployed: &[],
            verdicts: &["svc web: deploy from a"],
            unknown: &["a"],
            problems: &["invalid spec"],
        },
        Case {
            rule: "environments only come from platform repos",
            repos: vec![repo("a", false, &[("dev.yaml", &env("dev"))])],
            deployed: &[],
            verdicts: &[],
            unknown: &["a"],
            problems: &["environment outside platform"],
        },
        Case {
            rule: "an environment declared twice is one invalid row, carried by the repo it is deployed from",
            repos: vec![
                repo("p1", true, &[("dev.yaml", &env("dev"))]),
                repo("p2", true, &[("dev.yaml", &env("dev"))]),
            ],
            deployed: &[("environment/dev", "p2")],
            verdicts: &["env dev: duplicate carried by p2"],
            unknown: &[],
            problems: &[],
        },
        Case {
            rule: "a new environment declared twice is carried by the first declaration",
            repos: vec![
                repo("p1", true, &[("dev.yaml", &env("dev"))]),
                repo("p2", true, &[("dev.yaml", &env("dev"))]),
            ],
            deployed: &[],
            verdicts: &["env dev: duplicate carried by p1"],
            unknown: &[],
            problems: &[],
        },
        Case {
            rule: "a service belongs to the repo that deployed it; another declaring repo is refused alone and kept",
            repos: vec![
                repo("a", false, &[("web.yaml", &web)]),
                repo("b", false, &[("web.yaml", &web)]),
            ],
            deployed: &[("service_instance/web/web-dev", "b")],
            verdicts: &["svc web: deploy from b"],
            unknown: &["a"],
            problems: &["owned elsewhere"],
        },
        Case {
            rule: "no takeover while the owner's repo cannot be fetched",
            repos: vec![
                unknown_repo("a", "fetch failed"),
                repo("b", false, &[("web.yaml", &web)]),
            ],
            deployed: &[("service_instance/web/web-dev", "a")],
            verdicts: &["svc web: withheld"],
            unknown: &["a", "b"],
            problems: &["repo unknown", "owner unreadable"],
        },
        Case {
            rule: "no takeover while a file of the owner's repo does not parse",
            repos: vec![
                repo("a", false, &[("bad.yaml", BAD)]),
                repo("b", false, &[("web.yaml", &web)]),
            ],
            deployed: &[("service_instance/web/web-dev", "a")],
            verdicts: &["svc web: withheld"],
            unknown: &["a", "b"],
            problems: &["invalid spec", "owner unreadable"],
        },
        Case {
            rule: "a readable owner that no longer declares a service lets another repo take it over",
            repos: vec![
                repo("a", false, &[("api.yaml", &api)]),
                repo("b", false, &[("web.yaml", &web)]),
            ],
            deployed: &[("service_instance/web/web-dev", "a")],
            verdicts: &["svc api: deploy from a", "svc web: deploy from b"],
            unknown: &[],
            problems: &[],
        },
        Case {
            rule: "a new service declared by two repos is an error for both, and both are kept",
            repos: vec![
                repo("a", false, &[("web.yaml", &web)]),
                repo("b", false, &[("web.yaml", &web)]),
            ],
            deployed: &[],
            verdicts: &["svc web: duplicate x2"],
            unknown: &["a", "b"],
            problems: &[],
        },
        Case {
            rule: "a service declared twice in its owning repo is an error for both files",
            repos: vec![repo("a", false, &[("web.yaml", &web), ("web2.yaml", &web)])],
            deployed: &[("service_instance/web/web-dev", "a")],
            verdicts: &["svc web: duplicate x2"],
            unknown: &["a"],
            problems: &[],
        },
        Case {
            rule: "a repo refused for one service cannot hand over the next one",
            repos: vec![
                repo("a", false, &[("api.yaml", &api)]),
                repo("b", false, &[("api.yaml", &api)]),
                repo("c", false, &[("web.yaml", &web)]),
            ],
            deployed: &[
                ("service_instance/api/api-dev", "b"),
                ("service_instance/web/web-dev", "a"),
            ],
            verdicts: &["svc api: deploy from b", "svc web: withheld"],
            unknown: &["a", "c"],
            problems: &["owned elsewhere", "owner unreadable"],
        },
        Case {
            rule: "records of other services with a common prefix do not make an owner",
            repos: vec![
                repo("a", false, &[]),
                repo("b", false, &[("web.yaml", &web)]),
            ],
            deployed: &[
                ("service_instance/web2/web-dev", "a"),
                ("service_instance/we/x", "a"),
            ],
            verdicts: &["svc web: deploy from b"],
            unknown: &[],
            problems: &[],
        },
    ];
    for case in cases {
        let deployed: DeployedFrom<'_> = case.deployed.iter().copied().collect();
        let o = decide(&case.repos, &NONE_RETIRED, &deployed);
        assert_eq!(verdicts(&o), case.verdicts, "{}", case.rule);
        let unknown: BTreeSet<String> = case.unknown.iter().map(ToString::to_string).collect();
        assert_eq!(o.unknown_repos, unknown, "{}", case.rule);
        let kinds: Vec<&str> = problems(&o).iter().map(kind).collect();
        assert_eq!(kinds, case.problems, "{}", case.rule);
    }
}

#[test]
fn problems_read_as_before() {
    let web = svc("web", 1, None, &[("web-dev", "dev")]);
    let repos = vec![
        unknown_repo("a", "fetch failed"),
        repo("b", false, &[("web.yaml", &web), ("dev.yaml", &env("dev"))]),
    ];
    let deployed: DeployedFrom<'_> = [("service_instance/web/web-dev", "a")]
        .into_iter()
        .collect();
    let text: Vec<String> = problems(&decide(&repos, &NONE_RETIRED, &deployed))
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        text,
        [
            "spec repo a: fetch failed; its resources are unknown and will not be changed or deleted",
            "dev.yaml: environments may only be declared in platform repos; move it, or set platform = true for spec repo \"b\"",
            "b:web.yaml: name: service \"web\" is deployed from spec repo \"a\", which cannot be read now; this file may take it over once that repo is readable and no longer declares it",
        ]
    );
    let repos = vec![
        repo("a", false, &[("web.yaml", &web)]),
        repo("b", false, &[("web.yaml", &web)]),
    ];
    let deployed: DeployedFrom<'_> = [("service_instance/web/web-dev", "a")]
        .into_iter()
        .collect();
    let o = decide(&repos, &NONE_RETIRED, &deployed);
    assert_eq!(
        problems(&o)[0].to_string(),
        "b:web.yaml: name: service \"web\" belongs to spec repo \"a\" (web.yaml), which deployed it; rename the service in this file, or remove the file"
    );
    let o = decide(&repos, &NONE_RETIRED, &DeployedFrom::new());
    let SvcVerdict::Duplicate { error, .. } = &o.services["web"].verdict else {
        panic!("expected a clash")
    };
    assert_eq!(
        error.to_string(),
        "service \"web\" is declared by more than one spec file (a:web.yaml, b:web.yaml); a service belongs to exactly one repo"
    );
}

#[test]
fn environment_clash_names_every_file() {
    let repos = vec![
        repo("p1", true, &[("dev.yaml", &env("dev"))]),
        repo("p2", true, &[("envs/dev.yaml", &env("dev"))]),
    ];
    let o = decide(&repos, &NONE_RETIRED, &DeployedFrom::new());
    let EnvVerdict::Duplicate { error, .. } = &o.environments["dev"] else {
        panic!("expected a clash")
    };
    assert_eq!(
        error.to_string(),
        "environment \"dev\" is declared more than once (p1:dev.yaml, p2:envs/dev.yaml); a name belongs to exactly one spec file"
    );
}

/// The rule for repos that deployed resources but are not read: absent from the config is
/// unknown (kept, with a problem naming the fix); retired is deleted (left out of
/// `unknown_repos`, nothing declared); configured wins over a stale retirement.
#[test]
fn unconfigured_and_retired_repos() {
    struct Row {
        rule: &'static str,
        /// Configured repos (readable, empty unless `web` is named).
        configured: &'static [&'static str],
        /// Retired repos.
        retired: &'static [&'static str],
        deployed: &'static [(&'static str, &'static str)],
        unknown: &'static [&'static str],
        unconfigured: &'static [&'static str],
        retiring: &'static [&'static str],
        problems: &'static [&'static str],
    }
    let web = svc("web", 1, None, &[("web-dev", "dev")]);
    let rows = [
        Row {
            rule: "a repo removed from the config is unknown, with a problem",
            configured: &["a"],
            retired: &[],
            deployed: &[("service_instance/old/i", "gone"), ("pipeline/old", "gone")],
            unknown: &["gone"],
            unconfigured: &["gone"],
            retiring: &[],
            problems: &["repo not configured"],
        },
        Row {
            rule: "a retired repo is not unknown: its resources may be deleted",
            configured: &["a"],
            retired: &["gone"],
            deployed: &[("service_instance/old/i", "gone")],
            unknown: &[],
            unconfigured: &[],
            retiring: &["gone"],
            problems: &[],
        },
        Row {
            rule: "a configured repo is read as usual even if marked retired",
            configured: &["a"],
            retired: &["a"],
            deployed: &[("service_instance/old/i", "a")],
            unknown: &[],
            unconfigured: &[],
            retiring: &[],
            problems: &[],
        },
        Row {
            rule: "a retired repo without resources is nothing to report",
            configured: &["a"],
            retired: &["gone"],
            deployed: &[],
            unknown: &[],
            unconfigured: &[],
            retiring: &[],
            problems: &[],
        },
        Row {
            rule: "a service of a removed repo is not taken over by another repo",
            configured: &["web"],
            retired: &[],
            deployed: &[("service_instance/web/web-dev", "gone")],
            unknown: &["gone", "web"],
            unconfigured: &["gone"],
            retiring: &[],
            problems: &["repo not configured", "owner unreadable"],
        },
        Row {
            rule: "a service of a retired repo may be taken over by another repo",
            configured: &["web"],
            retired: &["gone"],
            deployed: &[("service_instance/web/web-dev", "gone")],
            unknown: &[],
            unconfigured: &[],
            retiring: &["gone"],
            problems: &[],
        },
    ];
    let set =
        |names: &[&str]| -> BTreeSet<String> { names.iter().map(ToString::to_string).collect() };
    for row in rows {
        let repos: Vec<SpecRepoState> = row
            .configured
            .iter()
            .map(|name| {
                if *name == "web" {
                    repo(name, false, &[("web.yaml", &web)])
                } else {
                    repo(name, false, &[])
                }
            })
            .collect();
        let retired: BTreeMap<String, String> = row
            .retired
            .iter()
            .map(|r| ((*r).to_string(), "retired = true in the config".to_string()))
            .collect();
        let deployed: DeployedFrom<'_> = row.deployed.iter().copied().collect();
        let o = decide(&repos, &retired, &deployed);
        assert_eq!(o.unknown_repos, set(row.unknown), "{}", row.rule);
        assert_eq!(o.unconfigured, set(row.unconfigured), "{}", row.rule);
        let retiring: BTreeSet<String> = o.retiring.keys().cloned().collect();
        assert_eq!(retiring, set(row.retiring), "{}", row.rule);
        let kinds: Vec<&str> = problems(&o).iter().map(kind).collect();
        assert_eq!(kinds, row.problems, "{}", row.rule);
    }
    let deployed: DeployedFrom<'_> = [("service_instance/old/i", "gone"), ("pipeline/old", "gone")]
        .into_iter()
        .collect();
    let o = decide(&[], &NONE_RETIRED, &deployed);
    assert_eq!(
        o.problems[0].to_string(),
        "spec repo gone is not in the config, but 2 resource(s) deployed from it are recorded; they are unknown and will not be changed or deleted. Add the repo back to the config, or delete them explicitly: set retired = true on its [[spec_repos]] entry, or run `protond forget gone`"
    );
}
