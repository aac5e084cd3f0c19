//! The per-repo dashboard issue against the fake GitHub: opened once, edited in place when
//! what it lists changes (an upgrade pull request, an operator hold), found again by its
//! title by a new process (no second issue, no edit while nothing changed).

use crate::common::forge::{FakeForge, Kind};
use crate::common::world::World;
use crate::common::{self};
use crate::proposals::release;

const TOKEN: &str = "dashboard-token-1";
const TITLE: &str = "protond dashboard (payments)";
const DEV: &str = "service_instance/payments/payments-dev";

fn reconcile_ok(w: &World) {
    let out = w.reconcile();
    let logs = common::text(&out);
    assert!(out.status.success(), "protond failed:\n{logs}");
    assert!(!logs.contains(TOKEN), "the token reached the logs:\n{logs}");
}

fn issue_posts(github: &FakeForge) -> usize {
    github
        .requests()
        .iter()
        .filter(|r| *r == "POST /repos/acme/payments/issues")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_dashboard_issue_per_repo_edited_in_place_and_found_again_after_a_restart() {
    let w = World::examples_on_moto()
        .env("FORGE_TOKEN", TOKEN)
        .config(|c| {
            c.repo_line("payments", "__FORGE__");
            c.repo_line("payments", "proposals = { dashboard = true }");
        })
        .build();
    let github =
        FakeForge::start(Kind::GitHub, "", TOKEN, "acme/payments", w.dir("payments")).await;
    let cfg = w.config_path();
    let text = std::fs::read_to_string(&cfg).expect("config");
    let forge = format!(
        "forge = {{ kind = \"github\", api_url = \"{}\", repo = \"acme/payments\", token_env = \"FORGE_TOKEN\" }}",
        github.url
    );
    std::fs::write(&cfg, text.replace("__FORGE__", &forge)).expect("config");

    // Nothing pending yet: the issue opens with every section empty.
    reconcile_ok(&w);
    assert_eq!(github.violations(), Vec::<String>::new());
    let issues = github.issues();
    assert_eq!(issues.len(), 1, "{issues:#?}");
    assert_eq!(issues[0].title, TITLE);
    assert!(
        issues[0]
            .body
            .contains("## Open upgrade pull requests\n\nNone."),
        "{}",
        issues[0].body
    );

    // A new major: the pull request opens and the same issue lists it.
    release(&w, "web-svc", 2, "web-svc 2.0", |_, t| t);
    reconcile_ok(&w);
    assert_eq!(github.violations(), Vec::<String>::new());
    let prs = github.prs();
    assert_eq!(prs.len(), 1, "{prs:#?}");
    let issues = github.issues();
    assert_eq!(issues.len(), 1, "{issues:#?}");
    assert_eq!(issues[0].edits, 1);
    let line = "- `proton/services/payments.yaml`: **web-svc** v1 to v2 ([#1](https://forge.invalid/acme/payments/pull/1))";
    assert!(issues[0].body.contains(line), "{}", issues[0].body);

    // Nothing changed: a new process finds the issue by title and leaves it alone.
    let before = github.requests().len();
    reconcile_ok(&w);
    assert_eq!(github.violations(), Vec::<String>::new());
    assert_eq!(github.issues().len(), 1);
    assert_eq!(github.issues()[0].edits, 1, "edited without a change");
    assert_eq!(issue_posts(&github), 1);
    let after: Vec<String> = github.requests()[before..].to_vec();
    assert!(
        after
            .iter()
            .any(|r| r.starts_with("GET /repos/acme/payments/issues?state=open")),
        "found by listing open issues: {after:#?}"
    );

    // An operator hold on one of the repo's resources: the issue is edited to show it.
    let out = w.run(&[
        "hold", DEV, "--until", "2h", "--reason", "demo day", "--by", "alice",
    ]);
    assert!(out.status.success(), "{}", common::text(&out));
    reconcile_ok(&w);
    assert_eq!(github.violations(), Vec::<String>::new());
    let issues = github.issues();
    assert_eq!(issues.len(), 1, "{issues:#?}");
    assert_eq!(issues[0].edits, 2);
    assert!(
        issues[0]
            .body
            .contains(&format!("- hold on `{DEV}` until ")),
        "{}",
        issues[0].body
    );
    assert!(
        issues[0].body.contains("alice: demo day"),
        "{}",
        issues[0].body
    );
    assert_eq!(issue_posts(&github), 1, "one issue, ever");
}
