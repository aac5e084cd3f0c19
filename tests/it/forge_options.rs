//! Forge options of upgrade pull requests, end to end against the fake forges: labels,
//! reviewers, assignees, draft mode and auto-merge (GitHub and Gitea), a token read from a
//! rotated file, Gitea's direct lookup of a pull request by branch (no list call), and a
//! schedule that keeps new pull requests closed until its window.

use crate::common::forge::{FakeForge, Kind};
use crate::common::world::World;
use crate::common::{self};
use crate::proposals::{PAYMENTS_BRANCH, release};

const TOKEN: &str = "forge-options-token-1";
const ROTATED: &str = "forge-options-token-2";

/// The examples with `payments` proposals going to a forge whose line is filled in later.
fn world(extra: &'static str) -> World {
    World::examples_on_moto()
        .env("FORGE_TOKEN", TOKEN)
        .config(move |c| {
            c.repo_line("payments", "__FORGE__");
            c.repo_line("payments", extra);
        })
        .build()
}

fn set_forge(w: &World, line: &str) {
    let cfg = w.config_path();
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(&cfg, text.replace("__FORGE__", line)).expect("config");
}

fn reconcile_ok(w: &World, secrets: &[&str]) {
    let out = w.reconcile();
    let logs = common::text(&out);
    assert!(out.status.success(), "protond failed:\n{logs}");
    for s in secrets {
        assert!(!logs.contains(s), "a token reached the logs:\n{logs}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_pull_requests_get_labels_reviewers_draft_and_auto_merge_with_a_token_file() {
    let w = world(
        "proposals = { labels = [\"dependencies\", \"upgrade\"], reviewers = [\"alice\"], assignees = [\"bob\"], draft = true, auto_merge = true }",
    );
    let github =
        FakeForge::start(Kind::GitHub, "", TOKEN, "acme/payments", w.dir("payments")).await;
    let token_file = w.dir("forge-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token");
    set_forge(
        &w,
        &format!(
            "forge = {{ kind = \"github\", api_url = \"{}\", repo = \"acme/payments\", token_env = \"UNSET_VARIABLE\", token_file = \"{}\" }}",
            github.url,
            token_file.display()
        ),
    );
    release(&w, "web-svc", 2, "web-svc 2.0", |_, t| t);
    reconcile_ok(&w, &[TOKEN]);
    assert_eq!(github.violations(), Vec::<String>::new());
    let prs = github.prs();
    assert_eq!(prs.len(), 1, "{prs:#?}");
    let pr = &prs[0];
    assert_eq!(pr.head, PAYMENTS_BRANCH);
    assert!(pr.draft, "{pr:#?}");
    assert_eq!(pr.labels, ["dependencies", "upgrade"]);
    assert_eq!(pr.reviewers, ["alice"]);
    assert_eq!(pr.assignees, ["bob"]);
    assert!(
        pr.auto_merge,
        "auto-merge through GraphQL: {:?}",
        github.requests()
    );
    assert!(github.requests().contains(&"POST /graphql".to_string()));

    // The token is rotated: the forge takes only the new one, the file holds it.
    github.set_token(ROTATED);
    std::fs::write(&token_file, ROTATED).expect("token");
    release(&w, "web-svc", 3, "web-svc 3.0", |_, t| t);
    reconcile_ok(&w, &[TOKEN, ROTATED]);
    assert_eq!(github.violations(), Vec::<String>::new());
    let prs = github.prs();
    assert_eq!(prs.len(), 1, "{prs:#?}");
    assert!(
        prs[0].title.contains("v3"),
        "updated with the rotated token: {prs:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitea_waits_for_the_schedule_then_opens_a_draft_found_again_by_branch() {
    // A schedule twelve hours away: nothing may open now.
    let closed_hour = (chrono::Utc::now()
        .format("%H")
        .to_string()
        .parse::<u32>()
        .expect("hour")
        + 12)
        % 24;
    let w = world(
        "proposals = { labels = [\"upgrade\"], reviewers = [\"alice\"], assignees = [\"bob\"], draft = true, auto_merge = true, schedule = \"__SCHEDULE__\" }",
    );
    let gitea = FakeForge::start(
        Kind::Gitea,
        "/api/v1",
        TOKEN,
        "acme/payments",
        w.dir("payments"),
    )
    .await;
    set_forge(
        &w,
        &format!(
            "forge = {{ kind = \"forgejo\", api_url = \"{}\", repo = \"acme/payments\", token_env = \"FORGE_TOKEN\" }}",
            gitea.url
        ),
    );
    let cfg = w.config_path();
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(
        &cfg,
        text.replace("__SCHEDULE__", &format!("* {closed_hour} * * *")),
    )
    .expect("config");
    release(&w, "web-svc", 2, "web-svc 2.0", |_, t| t);
    reconcile_ok(&w, &[TOKEN]);
    assert_eq!(gitea.prs().len(), 0, "opened outside its schedule");
    assert_eq!(gitea.requests(), Vec::<String>::new());

    // The window opens (every minute): the pull request opens, found by branch first.
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(
        &cfg,
        text.replace(&format!("* {closed_hour} * * *"), "* * * * *"),
    )
    .expect("config");
    reconcile_ok(&w, &[TOKEN]);
    assert_eq!(gitea.violations(), Vec::<String>::new());
    let prs = gitea.prs();
    assert_eq!(prs.len(), 1, "{prs:#?}");
    let pr = &prs[0];
    assert!(pr.title.starts_with("WIP: "), "{}", pr.title);
    assert_eq!(pr.labels, ["upgrade"]);
    assert_eq!(pr.reviewers, ["alice"]);
    assert_eq!(pr.assignees, ["bob"]);
    assert!(pr.auto_merge);
    let requests = gitea.requests();
    let lookup = format!("GET /api/v1/repos/acme/payments/pulls/main/{PAYMENTS_BRANCH}");
    assert!(requests.contains(&lookup), "{requests:#?}");
    assert!(
        !requests
            .iter()
            .any(|r| r.starts_with("GET /api/v1/repos/acme/payments/pulls?")),
        "listed pull requests: {requests:#?}"
    );
}
