//! `protond state copy`: the examples reconciled on one backend, copied to the other (a
//! `SQLite` world to PostgreSQL when a test server is there, a PostgreSQL world to a
//! `SQLite` file), then the config pointed at the copy: `protond status` shows the same, a
//! reconcile deploys nothing again, and a change deploys once with the next history id.

use std::process::{Command, Output};

use crate::common::world::World;
use crate::common::{self, text};

/// `protond state copy` with `args`.
fn state_copy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_protond"))
        .arg("state")
        .arg("copy")
        .args(args)
        .env("PROTOND_LOG_FORMAT", "json")
        .output()
        .expect("protond runs")
}

/// `protond status --output json`, parsed.
fn status(w: &World) -> serde_json::Value {
    let out = w.run(&["status", "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("status is JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copied_state_shows_the_same_and_deploys_nothing_again() {
    let w = World::examples_on_moto().build();
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    let from = w.state_url();
    // The other backend: PostgreSQL for a SQLite world when a server is there.
    let database = if common::on_postgres() {
        None
    } else {
        common::Database::on_test_server()
    };
    let to = database.as_ref().map_or_else(
        || format!("sqlite://{}", w.dir("copy/state.db").display()),
        |db| db.url.clone(),
    );
    let before = status(&w);
    let history = w
        .store()
        .await
        .deployments(None, 1000)
        .await
        .expect("history");
    assert!(history.len() >= 7, "{history:#?}");

    let out = state_copy(&["--from", &from, "--to", &to]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    let rows = format!(
        "{:<20} {:>10} {:>10}",
        "deployments",
        history.len(),
        history.len()
    );
    assert!(printed.contains(&rows), "{printed}");
    assert!(
        printed.contains("status view identical on both"),
        "{printed}"
    );
    // A second copy into the same target is refused, and changes nothing.
    let out = state_copy(&["--from", &from, "--to", &to]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("--force"), "{}", text(&out));

    // The config on the copy: the same status, and nothing to deploy.
    w.edit_config(|t| {
        let line = t.lines().next().expect("the state line").to_string();
        t.replacen(&line, &format!("state = \"{to}\""), 1)
    });
    assert_eq!(status(&w), before);
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    let copy = protond::state::Store::open(&to).await.expect("the copy");
    assert_eq!(
        copy.deployments(None, 1000).await.expect("history"),
        history,
        "a reconcile on the copy deployed again"
    );

    // A change deploys once, numbered after the copied history.
    w.replace(
        "payments",
        "proton/services/payments.yaml",
        "desired_count: 3",
        "desired_count: 5",
    );
    w.commit("payments", "scale prod");
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    let after = copy.deployments(None, 1000).await.expect("history");
    assert_eq!(after.len(), history.len() + 1, "{after:#?}");
    let newest = after.first().expect("a row");
    assert_eq!(
        newest.deployment.resource_id,
        "service_instance/payments/payments-prod"
    );
    assert_eq!(
        newest.id,
        history.iter().map(|d| d.id).max().expect("ids") + 1
    );
}
