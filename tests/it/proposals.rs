//! Major upgrades proposed as pull requests, end to end: real git repos, the `protond`
//! binary run once per step (so every step is a restart), the real AWS SDK against a
//! `moto_server`, and a fake of each forge API on 127.0.0.1 that checks every request.

use std::path::Path;
use std::process::Output;

use crate::common::forge::{FakeForge, Kind};
use crate::common::world::{Toml, World};
use crate::common::{self, git};

const TOKEN: &str = "forge-secret-token-123";
/// The upgrade branch of `proton/services/payments.yaml`: its path, and a hash of it.
pub(crate) const PAYMENTS_BRANCH: &str = "protond/upgrade/proton/services/payments-4bdfb6c8";

/// The examples on a `moto_server`, with `config`; every command gets the forge token.
fn world(config: impl FnOnce(&mut Toml) + 'static) -> World {
    World::examples_on_moto()
        .env("FORGE_TOKEN", TOKEN)
        .config(config)
        .build()
}

/// `protond reconcile --once`; the token must not reach its output.
fn reconcile(w: &World) -> Output {
    let out = w.reconcile();
    let logs = common::text(&out);
    assert!(!logs.contains(TOKEN), "the token reached the logs:\n{logs}");
    out
}

/// Adds major `major` of a template by copying v1 and applying `edit` to each file.
pub(crate) fn release(
    w: &World,
    template: &str,
    major: u32,
    notes: &str,
    edit: impl Fn(&str, String) -> String,
) {
    let t = w.dir("platform-templates");
    let from = t.join(template).join("v1");
    let to = t.join(template).join(format!("v{major}"));
    common::copy_tree(&from, &to);
    for rel in files_under(&to) {
        let p = to.join(&rel);
        let text = std::fs::read_to_string(&p).expect("read");
        std::fs::write(&p, edit(&rel, text)).expect("write");
    }
    git(&t, &["add", "-A"]);
    git(&t, &["commit", "-q", "-m", &format!("{template} v{major}")]);
    git(
        &t,
        &["tag", "-a", &format!("{template}/v{major}.0"), "-m", notes],
    );
}

/// `git show <rev>` in `repo`.
fn show(w: &World, repo: &str, rev: &str) -> String {
    w.git(repo, &["show", rev])
}

/// Deletes every proposal row of the state store, as if it were lost.
async fn clear_proposal_rows(w: &World) {
    // Installed already when a store was opened in this process.
    let _ = sqlx::any::install_drivers(&[sqlx::sqlite::any::DRIVER, sqlx::postgres::any::DRIVER]);
    let pool = sqlx::AnyPool::connect(&w.state_url()).await.expect("db");
    sqlx::query("DELETE FROM proposals")
        .execute(&pool)
        .await
        .expect("delete");
    pool.close().await;
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(
                    p.strip_prefix(dir)
                        .expect("under")
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out
}

/// web-svc v`major`: `health_check_path` removed, `cpu` (required, default 256) and
/// `region` (required, no default) added, and basic-env 2 accepted too.
fn web_svc_edit(rel: &str, text: String) -> String {
    match rel {
        "schema/schema.yaml" => text
            .replace(
                "        health_check_path:\n          title: \"Health check path\"\n          type: string\n          description: \"HTTP path the load balancer probes\"\n          default: \"/health\"\n          pattern: \"^/[a-zA-Z0-9/_-]*$\"\n          maxLength: 100\n",
                "        cpu:\n          type: integer\n          default: 256\n        region:\n          type: string\n          description: \"AWS region the service runs in\"\n",
            )
            .replace("      required:\n        - image\n", "      required:\n        - image\n        - cpu\n        - region\n"),
        "instance_infrastructure/cloudformation.yaml" => text.replace(
            ";health={{ service_instance.inputs.health_check_path }}",
            ";cpu={{ service_instance.inputs.cpu }};region={{ service_instance.inputs.region }}",
        ),
        ".template-registration.yaml" => text.replace("  - \"basic-env:1\"\n", "  - \"basic-env:1\"\n  - \"basic-env:2\"\n"),
        _ => text,
    }
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "protond failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn majors_open_one_pull_request_per_spec_update_it_and_survive_restarts() {
    // GitHub Enterprise (API under /api/v3) for the service repo, GitLab for the platform repo.
    // The fakes need the repo paths, which the world creates; start them after.
    let world = world(|c| {
        c.section("[proposals]\nmax_per_hour = 10\nauthor = \"bot <bot@example.invalid>\"")
            .repo_line("platform-envs", "__ENVS_FORGE__")
            .repo_line("payments", "__PAYMENTS_FORGE__");
    });
    let github = FakeForge::start(
        Kind::GitHub,
        "/api/v3",
        TOKEN,
        "acme/payments",
        world.dir("payments"),
    )
    .await;
    let gitlab = FakeForge::start(
        Kind::GitLab,
        "/api/v4",
        TOKEN,
        "platform/envs",
        world.dir("platform-envs"),
    )
    .await;
    let cfg = world.config_path();
    let text = std::fs::read_to_string(&cfg).expect("config");
    let text = text
        .replace(
            "__PAYMENTS_FORGE__",
            &format!("forge = {{ kind = \"github\", api_url = \"{}\", repo = \"acme/payments\", token_env = \"FORGE_TOKEN\" }}", github.url),
        )
        .replace(
            "__ENVS_FORGE__",
            &format!("forge = {{ kind = \"gitlab\", api_url = \"{}\", repo = \"platform/envs\", token_env = \"FORGE_TOKEN\" }}", gitlab.url),
        );
    std::fs::write(&cfg, text).expect("config");

    // v1 everywhere: deploy, no proposals, no forge calls.
    ok(&reconcile(&world));
    assert!(github.requests().is_empty() && gitlab.requests().is_empty());

    // Tag web-svc 2.0 and basic-env 2.0.
    release(
        &world,
        "web-svc",
        2,
        "web-svc 2.0\n\nAdds cpu and region; health checks move to the load balancer.",
        web_svc_edit,
    );
    release(
        &world,
        "basic-env",
        2,
        "basic-env 2.0: same inputs, new major",
        |_, t| t,
    );
    ok(&reconcile(&world));
    assert_eq!(github.violations(), Vec::<String>::new());
    assert_eq!(gitlab.violations(), Vec::<String>::new());
    let prs = github.prs();
    assert_eq!(
        prs.len(),
        1,
        "one pull request per spec file following web-svc: {prs:#?}"
    );
    let pr = &prs[0];
    assert_eq!(pr.head, PAYMENTS_BRANCH);
    assert_eq!(pr.title, "Upgrade service payments to web-svc v2");
    for needle in [
        "template **web-svc** v1",
        "to **v2**",
        "| From | v1 |",
        "| To | v2.0 |",
        "Adds cpu and region; health checks move to the load balancer.",
        "| `service.cpu` | added: integer, required, default `256` |",
        "| `service.region` | added: string, required |",
        "| `service.health_check_path` | removed |",
        "`instances[0].spec.region`: added as a **placeholder, fill it in** (AWS region the service runs in)",
        "`instances[1].spec.health_check_path`: removed",
        "| `service_instance/payments/payments-dev` | dev | web-svc 1.0 (deployed) |",
        "| `service_instance/payments/payments-prod` | prod | web-svc 1.0 (deployed) |",
        "| `pipeline/payments` |",
        "not rendered yet",
        "**Before merging:**",
    ] {
        assert!(
            pr.body.contains(needle),
            "body lacks {needle:?}:\n{}",
            pr.body
        );
    }
    // The branch holds the rewritten spec, comments kept.
    let branch_spec = show(
        &world,
        "payments",
        "protond/upgrade/proton/services/payments-4bdfb6c8:proton/services/payments.yaml",
    );
    assert!(
        branch_spec.contains("template: {name: web-svc, major: 2}"),
        "{branch_spec}"
    );
    assert!(
        branch_spec.starts_with("# The payments web service"),
        "{branch_spec}"
    );
    assert!(branch_spec.contains("cpu: 256"));
    assert!(branch_spec.contains("FILL-ME(protond)"));
    assert!(!branch_spec.contains("health_check_path"));
    let author = git(
        &world.dir("payments"),
        &["log", "-1", "--format=%an <%ae>", PAYMENTS_BRANCH],
    );
    assert_eq!(author.trim(), "bot <bot@example.invalid>");
    // The platform repo gets one merge request per environment spec.
    let mrs = gitlab.prs();
    let mut heads: Vec<&str> = mrs.iter().map(|p| p.head.as_str()).collect();
    heads.sort_unstable();
    assert_eq!(
        heads,
        [
            "protond/upgrade/proton/environments/dev-581847b6",
            "protond/upgrade/proton/environments/prod-36b82175"
        ]
    );
    assert!(
        mrs.iter()
            .all(|m| m.body.contains("basic-env 2.0: same inputs, new major"))
    );
    assert!(mrs.iter().all(|m| m.body.contains("No input changes.")));
    // Moving an environment ahead of its services' templates is flagged.
    let dev_mr = mrs
        .iter()
        .find(|m| m.head.contains("/environments/dev-"))
        .expect("dev mr");
    assert!(
        dev_mr.body.contains("**Upgrade these services first:**")
            && dev_mr
                .body
                .contains("`service_instance/payments/payments-dev` (web-svc v1"),
        "{}",
        dev_mr.body
    );

    // A restart with nothing new: not one forge call, no duplicates.
    let before = (github.requests().len(), gitlab.requests().len());
    ok(&reconcile(&world));
    assert_eq!((github.requests().len(), gitlab.requests().len()), before);

    // web-svc 3.0: the same pull request is updated, not duplicated.
    release(
        &world,
        "web-svc",
        3,
        "web-svc 3.0: bigger defaults",
        web_svc_edit,
    );
    ok(&reconcile(&world));
    assert_eq!(github.violations(), Vec::<String>::new());
    let prs = github.prs();
    assert_eq!(prs.len(), 1, "{prs:#?}");
    assert_eq!(prs[0].title, "Upgrade service payments to web-svc v3");
    assert!(prs[0].body.contains("web-svc 3.0: bigger defaults"));
    assert!(prs[0].state == "open");
    let branch_spec = show(
        &world,
        "payments",
        "protond/upgrade/proton/services/payments-4bdfb6c8:proton/services/payments.yaml",
    );
    assert!(
        branch_spec.contains("template: {name: web-svc, major: 3}"),
        "{branch_spec}"
    );
    let new_calls: Vec<String> = github.requests()[before.0..].to_vec();
    assert!(
        new_calls.iter().all(|r| !r.starts_with("POST")),
        "{new_calls:?}"
    );
    assert!(
        new_calls
            .iter()
            .any(|r| r.starts_with("PATCH /api/v3/repos/acme/payments/pulls/1")),
        "{new_calls:?}"
    );

    // A lost state store still finds the open pull request instead of opening another.
    clear_proposal_rows(&world).await;
    ok(&reconcile(&world));
    assert_eq!(github.prs().len(), 1);
    assert_eq!(gitlab.prs().len(), 2);
    assert_eq!(github.violations(), Vec::<String>::new());
    assert_eq!(gitlab.violations(), Vec::<String>::new());

    // prod is upgraded by hand: its merge request is closed with a comment, its branch deleted.
    let prod = world
        .dir("platform-envs")
        .join("proton/environments/prod.yaml");
    let text = std::fs::read_to_string(&prod).expect("prod spec");
    std::fs::write(&prod, text.replace("major: 1", "major: 2")).expect("write");
    git(
        &world.dir("platform-envs"),
        &["commit", "-qam", "prod to basic-env 2 by hand"],
    );
    // payments-prod (web-svc v1) does not accept basic-env 2: left as deployed, reported.
    let out = reconcile(&world);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("failing: service_instance/payments/payments-prod")
    );
    let mrs = gitlab.prs();
    let prod_mr = mrs
        .iter()
        .find(|m| m.head.contains("/environments/prod-"))
        .expect("prod mr");
    assert_eq!(prod_mr.state, "closed");
    assert!(
        prod_mr
            .comments
            .iter()
            .any(|c| c.contains("the spec now follows basic-env v2")),
        "{prod_mr:?}"
    );
    assert_eq!(
        mrs.iter()
            .find(|m| m.head.contains("/environments/dev-"))
            .expect("dev")
            .state,
        "open"
    );
    let branches = git(
        &world.dir("platform-envs"),
        &["branch", "--list", "protond/*"],
    );
    assert!(!branches.contains("prod"), "{branches}");
    assert!(branches.contains("dev"), "{branches}");

    // Someone fills in the placeholder on the branch and merges: the merge deploys v3.
    let p = world.dir("payments");
    git(&p, &["checkout", "-q", PAYMENTS_BRANCH]);
    let spec = p.join("proton/services/payments.yaml");
    let text = std::fs::read_to_string(&spec).expect("spec");
    let filled: String = text
        .lines()
        .map(|l| {
            if l.contains("FILL-ME(protond)") {
                let indent = &l[..l.len() - l.trim_start().len()];
                format!("{indent}region: eu-west-1")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&spec, filled + "\n").expect("write");
    git(&p, &["commit", "-qam", "fill in region"]);
    git(&p, &["checkout", "-q", "main"]);
    git(
        &p,
        &[
            "merge",
            "-q",
            "--no-ff",
            "-m",
            "merge upgrade",
            PAYMENTS_BRANCH,
        ],
    );
    github.set_state(1, "merged");
    ok(&reconcile(&world));
    assert_eq!(github.prs().len(), 1);
    assert_eq!(github.violations(), Vec::<String>::new());
    let status = world.run(&["status", "--output", "json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status json");
    let resources = status["resources"].as_array().expect("resources");
    let dev = resources
        .iter()
        .find(|r| r["id"] == "service_instance/payments/payments-dev")
        .expect("dev instance");
    assert_eq!(dev["version"], "3.0", "{dev}");
    let proposals = status["proposals"].as_array().expect("proposals in status");
    let payments = proposals
        .iter()
        .find(|p| p["path"] == "proton/services/payments.yaml")
        .expect("payments proposal");
    assert_eq!(payments["state"], "merged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitea_and_plain_git_forges_with_an_hourly_limit_and_declined_requests() {
    let world = world(|c| {
        c.section("[proposals]\nmax_per_hour = 1")
            .repo_line("platform-envs", "forge = { kind = \"git\" }")
            .repo_line("payments", "__PAYMENTS_FORGE__");
    });
    let gitea = FakeForge::start(
        Kind::Gitea,
        "/api/v1",
        TOKEN,
        "acme/payments",
        world.dir("payments"),
    )
    .await;
    let cfg = world.config_path();
    let text = std::fs::read_to_string(&cfg).expect("config").replace(
        "__PAYMENTS_FORGE__",
        &format!("forge = {{ kind = \"forgejo\", api_url = \"{}\", repo = \"acme/payments\", token_env = \"FORGE_TOKEN\" }}", gitea.url),
    );
    std::fs::write(&cfg, text).expect("config");
    release(&world, "web-svc", 2, "web-svc 2.0", web_svc_edit);
    release(&world, "basic-env", 2, "basic-env 2.0", |_, t| t);

    // Three spec files want a pull request; the limit lets one through per hour.
    ok(&reconcile(&world));
    let envs_branches = git(
        &world.dir("platform-envs"),
        &["branch", "--list", "protond/*"],
    );
    let opened = gitea.prs().len() + envs_branches.lines().count();
    assert_eq!(
        opened,
        1,
        "gitea {:?}, git branches {envs_branches}",
        gitea.prs()
    );
    ok(&reconcile(&world));
    let envs_branches = git(
        &world.dir("platform-envs"),
        &["branch", "--list", "protond/*"],
    );
    assert_eq!(gitea.prs().len() + envs_branches.lines().count(), 1);
    assert_eq!(gitea.violations(), Vec::<String>::new());

    // Lift the limit: the rest are opened (the plain git forge only pushes branches).
    let text = std::fs::read_to_string(&cfg)
        .expect("config")
        .replace("max_per_hour = 1", "max_per_hour = 50");
    std::fs::write(&cfg, text).expect("config");
    ok(&reconcile(&world));
    assert_eq!(gitea.prs().len(), 1);
    let envs_branches = git(
        &world.dir("platform-envs"),
        &["branch", "--list", "protond/*"],
    );
    assert_eq!(envs_branches.lines().count(), 2, "{envs_branches}");
    let dev = show(
        &world,
        "platform-envs",
        "protond/upgrade/proton/environments/dev-581847b6:proton/environments/dev.yaml",
    );
    assert!(
        dev.contains("template: {name: basic-env, major: 2}"),
        "{dev}"
    );
    assert!(dev.starts_with("# The development environment."), "{dev}");

    // The team closes the pull request unmerged: a spec change does not reopen it ...
    gitea.set_state(1, "closed");
    let spec = world.dir("payments").join("proton/services/payments.yaml");
    let text = std::fs::read_to_string(&spec).expect("spec");
    std::fs::write(&spec, text.replace("desired_count: 3", "desired_count: 4")).expect("write");
    git(&world.dir("payments"), &["commit", "-qam", "scale prod"]);
    ok(&reconcile(&world));
    assert_eq!(gitea.prs().len(), 1);
    // ... but a newer major does.
    release(&world, "web-svc", 3, "web-svc 3.0", web_svc_edit);
    ok(&reconcile(&world));
    let prs = gitea.prs();
    assert_eq!(prs.len(), 2, "{prs:#?}");
    assert_eq!(prs[1].state, "open");
    assert_eq!(prs[1].title, "Upgrade service payments to web-svc v3");
    assert_eq!(gitea.violations(), Vec::<String>::new());
}
