//! Removing a spec repo from the config deletes nothing (issue 14, point 7): its resources
//! are unknown, kept, listed by `plan` and `check-config`, and `reconcile --once` exits 1,
//! until a person says otherwise (`retired = true` on its entry, or `protond forget`); then
//! they are deleted within the deletion budget. Real git repos, a real `SQLite` file, the
//! `protond` binary and a `moto_server`.

use std::collections::BTreeMap;
use std::process::Output;

use crate::common::world::World;

/// The examples on a `moto_server`, with an explicit deletion budget of 5 (the default).
fn world() -> World {
    World::examples_on_moto()
        .config(|c| {
            c.section("[daemon]\ndeletion_budget = 5");
        })
        .build()
}

/// The `[[spec_repos]]` entry of `payments` as the world writes it.
const PAYMENTS: &str = "[[spec_repos]]\nname = \"payments\"\nurl = \"payments\"\n";

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Recorded resources per spec repo.
async fn per_repo(w: &World) -> BTreeMap<String, usize> {
    w.store()
        .await
        .resources_per_repo()
        .await
        .expect("resources per repo")
}

/// Deploys the examples and returns (live stacks, resources of `payments`).
async fn deployed(w: &World) -> (usize, usize) {
    let out = w.reconcile();
    assert!(out.status.success(), "{}", stderr(&out));
    let stacks = w.stacks().await.len();
    let payments = per_repo(w).await["payments"];
    assert!(payments > 1 && payments < stacks, "{stacks} {payments}");
    (stacks, payments)
}

/// Removes the `payments` entry from the config.
fn remove_payments(w: &World) {
    w.edit_config(|t| {
        assert!(t.contains(PAYMENTS), "{t}");
        t.replace(PAYMENTS, "")
    });
}

/// The removed repo's resources stay, recorded and live, and are reported.
async fn assert_kept(w: &World, stacks: usize, payments: usize) {
    let out = w.reconcile();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("problem: spec repo payments is not in the config")
            && stderr(&out).contains("protond forget payments"),
        "{}",
        stderr(&out)
    );
    assert_eq!(w.stacks().await.len(), stacks);
    assert_eq!(per_repo(w).await["payments"], payments);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_repo_deletes_nothing_until_it_is_retired_within_the_budget() {
    let w = world();
    // check-config never creates the store.
    let out = w.run(&["check-config"]);
    assert!(out.status.success(), "{}", stderr(&out));
    if crate::common::sqlite_only("the state file's absence") {
        assert!(!w.state_db().exists());
    }
    let (stacks, payments) = deployed(&w).await;

    // Removed from the config: kept, unknown, reported; reconcile exits 1.
    remove_payments(&w);
    let out = w.run(&["check-config"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "warning: the state holds {payments} resource(s) deployed from spec repo payments, which is not in the config"
        )),
        "{}",
        stderr(&out)
    );
    assert_kept(&w, stacks, payments).await;
    // The plan lists the unread repo among its problems: it exits 1 too.
    let out = w.run(&["plan", "--no-fetch"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stdout(&out).contains("\nProblems:\n"), "{}", stdout(&out));
    let plan = stdout(&out);
    let unknown = plan
        .lines()
        .filter(|l| l.starts_with("unknown") && l.contains("repo payments is not in the config"))
        .count();
    assert_eq!(unknown, payments, "{plan}");
    assert!(!plan.lines().any(|l| l.starts_with("delete")), "{plan}");

    // Retired, over the budget: refused, nothing deleted. The repo need not exist any more.
    std::fs::remove_dir_all(w.dir("payments")).expect("remove the repo");
    w.edit_config(|t| {
        format!("{t}{PAYMENTS}retired = true\n")
            .replace("deletion_budget = 5", "deletion_budget = 1")
    });
    let out = w.run(&["check-config"]);
    assert!(
        stderr(&out).contains("warning: spec repo payments is retired"),
        "{}",
        stderr(&out)
    );
    let out = w.reconcile();
    assert!(stderr(&out).contains("deletion budget"), "{}", stderr(&out));
    assert_eq!(w.stacks().await.len(), stacks);

    // Within the budget: deleted, in order; the plan said so first.
    w.edit_config(|t| t.replace("deletion_budget = 1", "deletion_budget = 5"));
    let out = w.run(&["plan", "--no-fetch"]);
    let plan = stdout(&out);
    let deletes = plan
        .lines()
        .filter(|l| l.starts_with("delete") && l.contains("repo payments is retired"))
        .count();
    assert_eq!(deletes, payments, "{plan}");
    let out = w.reconcile();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(w.stacks().await.len(), stacks - payments);
    assert!(!per_repo(&w).await.contains_key("payments"));
    let out = w.run(&["check-config"]);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn protond_forget_deletes_a_removed_repos_resources() {
    let w = world();
    let (stacks, payments) = deployed(&w).await;

    // Refused for a configured repo and for a repo with nothing recorded.
    let out = w.run(&["forget", "payments"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is in the config"),
        "{}",
        stderr(&out)
    );
    remove_payments(&w);
    let out = w.run(&["forget", "paymnets"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no resources"), "{}", stderr(&out));

    // Forgotten, then added back: the mark is dropped and nothing is deleted, even once the
    // repo is removed again.
    let out = w.run(&["forget", "payments"]);
    assert!(out.status.success(), "{}", stderr(&out));
    w.edit_config(|t| format!("{t}{PAYMENTS}"));
    let out = w.reconcile();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        w.store()
            .await
            .forgotten_repos()
            .await
            .expect("forgotten")
            .is_empty()
    );
    remove_payments(&w);
    assert_kept(&w, stacks, payments).await;

    // Forgotten for good: the plan shows the deletes, the next reconcile makes them.
    let out = w.run(&["forget", "payments"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("{payments} resource(s)")),
        "{}",
        stdout(&out)
    );
    let out = w.run(&["check-config"]);
    assert!(
        stderr(&out).contains("was forgotten (protond forget)"),
        "{}",
        stderr(&out)
    );
    let out = w.run(&["plan", "--no-fetch"]);
    let plan = stdout(&out);
    let deletes = plan
        .lines()
        .filter(|l| l.starts_with("delete") && l.contains("forgotten with protond forget"))
        .count();
    assert_eq!(deletes, payments, "{plan}");
    let out = w.reconcile();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(w.stacks().await.len(), stacks - payments);
    assert!(!per_repo(&w).await.contains_key("payments"));
    // Nothing left: the mark is dropped.
    let _ = w.reconcile();
    assert!(
        w.store()
            .await
            .forgotten_repos()
            .await
            .expect("forgotten")
            .is_empty()
    );
}
