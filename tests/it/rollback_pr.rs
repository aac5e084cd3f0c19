//! `protond rollback --via pull-request` and `unpin --via pull-request` end to end (issue 18,
//! point 5's second form): real git repos, the `protond` binary, a `moto_server`, and a fake
//! GitHub on 127.0.0.1 that checks every request. The pull request's branch is read from the
//! spec repo it was pushed to; merging it (plain git) is what moves the resources.

use std::process::Output;

use crate::common::forge::{FakeForge, Kind};
use crate::common::world::World;
use crate::common::{self, git};

const TOKEN: &str = "forge-secret-token-456";
const DEV: &str = "service_instance/payments/payments-dev";
const FILE: &str = "proton/services/payments.yaml";
const CFN: &str = "web-svc/v1/instance_infrastructure/cloudformation.yaml";

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", common::text(o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        !common::text(o).contains(TOKEN),
        "the token reached the output"
    );
    out
}

async fn version(w: &World, id: &str) -> String {
    w.store()
        .await
        .resources()
        .await
        .expect("resources")
        .into_iter()
        .find(|r| r.id == id)
        .map(|r| r.version.to_string())
        .expect("deployed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_via_pull_request_pins_the_service_file_and_the_merge_moves_it() {
    let w = World::examples_on_moto()
        .env("FORGE_TOKEN", TOKEN)
        .config(|c| {
            c.repo_line("payments", "__FORGE__");
        })
        .build();
    w.edit_config(|t| t.replace("__FORGE__", "# forge"));
    ok(&w.reconcile());
    w.edit("platform-templates", CFN, |s| {
        format!("{s}  Release1:\n    Value: '1.1'\n")
    });
    w.commit("platform-templates", "1.1");
    w.tag("web-svc/v1.1", "minor");
    ok(&w.reconcile());
    assert_eq!(version(&w, DEV).await, "1.1");

    // Without a forge: refused, naming the key and the fix; nothing pushed.
    let o = w.run(&["rollback", DEV, "--to", "v1.0", "--via", "pull-request"]);
    assert!(!o.status.success());
    let err = common::text(&o);
    assert!(
        err.contains("has no `forge`") && err.contains("[[spec_repos]]"),
        "{err}"
    );

    let github = FakeForge::start(
        Kind::GitHub,
        "/api/v3",
        TOKEN,
        "acme/payments",
        w.dir("payments"),
    )
    .await;
    w.edit_config(|t| {
        t.replacen(
            "# forge",
            &format!(
                "forge = {{ kind = \"github\", api_url = \"{}\", repo = \"acme/payments\", token_env = \"FORGE_TOKEN\" }}",
                github.url
            ),
            1,
        )
    });
    let out = ok(&w.run(&["rollback", DEV, "--to", "v1.0", "--via", "pull-request"]));
    assert!(
        out.contains("pins every resource of service payments"),
        "{out}"
    );
    assert_eq!(github.violations(), Vec::<String>::new());
    let prs = github.prs();
    assert_eq!(prs.len(), 1, "{prs:#?}");
    let pr = &prs[0];
    assert!(
        pr.head
            .starts_with("protond/rollback/proton/services/payments-"),
        "{}",
        pr.head
    );
    assert_eq!(pr.title, "Roll back service payments to web-svc v1.0");
    assert!(
        out.contains(&format!(
            "https://forge.invalid/acme/payments/pull/{}",
            pr.number
        )),
        "the pull request's address is printed: {out}"
    );
    for needle in [
        format!("| `{DEV}` | 1.1 | v1.0 |"),
        "| `service_instance/payments/payments-prod` | 1.1 | v1.0 |".to_string(),
        "now pins **web-svc v1.0**".to_string(),
    ] {
        assert!(pr.body.contains(&needle), "{needle}\n{}", pr.body);
    }
    // The pushed branch: `minor: 0` in the header, every other line as written.
    let pushed = w.git("payments", &["show", &format!("{}:{FILE}", pr.head)]);
    let before = std::fs::read_to_string(w.dir("payments").join(FILE)).expect("spec");
    assert_eq!(
        pushed,
        before.replace(
            "template: {name: web-svc, major: 1}",
            "template: {name: web-svc, major: 1, minor: 0}"
        )
    );
    // No pin recorded: until merged nothing moves.
    ok(&w.reconcile());
    assert_eq!(version(&w, DEV).await, "1.1");

    // Merged (as a person would): the daemon moves the instance back.
    git(&w.dir("payments"), &["merge", "-q", "--ff-only", &pr.head]);
    ok(&w.reconcile());
    assert_eq!(version(&w, DEV).await, "1.0");

    // `unpin --via pull-request` opens a second one dropping `minor:`.
    let out = ok(&w.run(&["unpin", DEV, "--via", "pull-request"]));
    let prs = github.prs();
    assert_eq!(prs.len(), 2, "{out}\n{prs:#?}");
    assert!(prs[1].head.starts_with("protond/unpin/"), "{}", prs[1].head);
    let pushed = w.git("payments", &["show", &format!("{}:{FILE}", prs[1].head)]);
    assert_eq!(pushed, before);
    assert_eq!(github.violations(), Vec::<String>::new());
}
