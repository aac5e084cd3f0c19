//! Immutable releases on real git repos and `moto_server`, through the `protond` binary: a
//! moved release tag is refused and reported and redeploys nothing until `protond release
//! accept`, after which it rolls out dev first (prod waits for the soak); a deleted tag
//! downgrades nothing and shows as withdrawn.

use std::path::PathBuf;

use crate::common::text;
use crate::common::world::World;

const DEV: &str = "service_instance/payments/payments-dev";
const PROD: &str = "service_instance/payments/payments-prod";

fn world() -> World {
    World::examples_on_moto()
        .config(|c| {
            c.section("[rollout]\nstages = [\"dev\", \"prod\"]\nsoak = \"1h\"");
        })
        .build()
}

/// Changes the web service's instance template and commits it.
fn change_web_svc(w: &World) {
    w.replace(
        "platform-templates",
        "web-svc/v1/instance_infrastructure/cloudformation.yaml",
        "VisibilityTimeout: 60",
        "VisibilityTimeout: 61",
    );
    w.commit("platform-templates", "change web-svc v1");
}

/// The template repo's mirror in protond's cache.
fn mirror(w: &World) -> PathBuf {
    std::fs::read_dir(w.dir("data/git"))
        .expect("mirrors")
        .map(|e| e.expect("entry").path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("platform-templates"))
        })
        .expect("template mirror")
}

async fn history_len(w: &World) -> usize {
    w.store()
        .await
        .deployments(None, 1000)
        .await
        .expect("history")
        .len()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_moved_tag_redeploys_nothing_until_accepted_then_rolls_out_dev_first() {
    let w = world();
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    let before = history_len(&w).await;

    change_web_svc(&w);
    w.git(
        "platform-templates",
        &["tag", "-f", "-a", "web-svc/v1.0", "-m", "moved"],
    );
    let out = w.reconcile();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a moved tag is a problem: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("release tag web-svc/v1.0 was moved"),
        "{}",
        text(&out)
    );
    assert_eq!(history_len(&w).await, before, "nothing is redeployed");
    let status = w.run(&["status"]);
    assert!(
        text(&status).contains("web-svc 1.0: moved"),
        "{}",
        text(&status)
    );
    let plan = w.run(&["plan", "--no-fetch"]);
    assert!(text(&plan).contains("was moved"), "{}", text(&plan));

    let accept = w.run(&["release", "accept", "web-svc/v1.0"]);
    assert!(accept.status.success(), "{}", text(&accept));
    let again = w.run(&["release", "accept", "web-svc/v1.0"]);
    assert!(!again.status.success());
    assert!(text(&again).contains("is not moved"), "{}", text(&again));

    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    let store = w.store().await;
    let dev = store.deployments(Some(DEV), 1).await.expect("dev");
    assert_eq!(dev[0].deployment.reason.as_deref(), Some("release_changed"));
    let prod = store.deployments(Some(PROD), 1).await.expect("prod");
    assert_ne!(
        prod[0].deployment.reason.as_deref(),
        Some("release_changed"),
        "prod waits for dev's soak"
    );
    let status = w.run(&["status"]);
    assert!(!text(&status).contains("moved"), "{}", text(&status));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_tag_downgrades_nothing_and_shows_withdrawn() {
    let w = World::examples_on_moto().build();
    assert!(w.reconcile().status.success());
    change_web_svc(&w);
    w.tag("web-svc/v1.1", "second");
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    let before = history_len(&w).await;

    w.git("platform-templates", &["tag", "-d", "web-svc/v1.1"]);
    crate::common::git(&mirror(&w), &["tag", "-d", "web-svc/v1.1"]);
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(history_len(&w).await, before, "nothing is downgraded");
    let records = w.store().await.resources().await.expect("records");
    let dev = records.iter().find(|r| r.id == DEV).expect("dev");
    assert_eq!(dev.version.to_string(), "1.1");
    let status = w.run(&["status"]);
    assert!(
        text(&status).contains("web-svc 1.1: withdrawn"),
        "{}",
        text(&status)
    );
}
