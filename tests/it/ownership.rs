//! Ownership and identity, tried as a hostile tenant and as an operator running two
//! installations would: protond never updates or deletes a stack it cannot prove is its own
//! (both `protond:resource` and `protond:installation` match), two installations on one
//! account each touch only their own stacks, and a state file written before stacks were
//! tagged with their installation keeps its stacks in place. `moto_server`, real git repos and
//! real `SQLite` files.

use std::collections::BTreeMap;

use protond::model::ResourceStatus;
use protond::provision::cloudformation::{legacy_stack_name, stack_name};

use crate::common::world::World;
use crate::common::{cfn_client, text};

const REPORTS: &str = "service_instance/reports/reports-dev";
const TOPIC: &str = "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n";

/// Creates a stack out of band, as someone else would, and waits until it is complete.
async fn foreign_stack(url: &str, name: &str, tags: &[(&str, &str)]) -> String {
    let cfn = cfn_client(url);
    let mut call = cfn.create_stack().stack_name(name).template_body(TOPIC);
    for (k, v) in tags {
        call = call.tags(
            aws_sdk_cloudformation::types::Tag::builder()
                .key(*k)
                .value(*v)
                .build(),
        );
    }
    let out = call.send().await.expect("create the foreign stack");
    out.stack_id().expect("stack id").to_string()
}

/// A stack's id, status, tags and template, to compare before and after.
async fn fingerprint(url: &str, name: &str) -> (String, String, BTreeMap<String, String>, String) {
    let cfn = cfn_client(url);
    let out = cfn
        .describe_stacks()
        .stack_name(name)
        .send()
        .await
        .expect("describe");
    let s = out.stacks().first().expect("the stack exists");
    let template = cfn
        .get_template()
        .stack_name(name)
        .send()
        .await
        .expect("template")
        .template_body()
        .unwrap_or_default()
        .to_string();
    (
        s.stack_id().unwrap_or_default().to_string(),
        s.stack_status()
            .map(|x| x.as_str().to_string())
            .unwrap_or_default(),
        s.tags()
            .iter()
            .map(|t| {
                (
                    t.key().unwrap_or_default().to_string(),
                    t.value().unwrap_or_default().to_string(),
                )
            })
            .collect(),
        template,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn foreign_stacks_under_a_wanted_name_are_never_touched() {
    let w = World::examples_on_moto()
        .config(|c| {
            c.top("installation = \"ours\"");
        })
        .build();
    let url = w.aws_url().to_string();
    // Before protond ever runs, two stacks already sit under names it will want: one of
    // another installation, one with no protond tags at all.
    let prod = stack_name("environment/prod");
    foreign_stack(
        &url,
        &prod,
        &[
            ("protond:resource", "environment/prod"),
            ("protond:installation", "theirs"),
        ],
    )
    .await;
    let reports = stack_name(REPORTS);
    foreign_stack(&url, &reports, &[("team", "someone-else")]).await;
    let before = (
        fingerprint(&url, &prod).await,
        fingerprint(&url, &reports).await,
    );

    let out = w.reconcile();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let log = text(&out);
    assert!(
        log.contains(&format!("stack {prod} is not protond's environment/prod")),
        "{log}"
    );
    assert!(
        log.contains(&format!("stack {reports} is not protond's {REPORTS}")),
        "{log}"
    );
    // Untouched: same stack, same tags, same template, not updated.
    let after = (
        fingerprint(&url, &prod).await,
        fingerprint(&url, &reports).await,
    );
    assert_eq!(before, after);
    // Everything else deployed, tagged with this installation.
    let store = w.store().await;
    let ours: Vec<_> = w
        .stacks()
        .await
        .into_iter()
        .filter(|s| s.tags.get("protond:installation").map(String::as_str) == Some("ours"))
        .collect();
    assert!(
        ours.iter().any(|s| s.resource() == Some("environment/dev")),
        "{ours:#?}"
    );
    let history = store.deployments(None, 100).await.expect("history");
    for id in ["environment/prod", REPORTS] {
        let d = history
            .iter()
            .find(|d| d.deployment.resource_id == id)
            .expect("an attempt");
        assert!(
            d.error
                .as_deref()
                .is_some_and(|e| e.contains("leaves it alone")),
            "{d:?}"
        );
    }
    let prod_error = history
        .iter()
        .find(|d| d.deployment.resource_id == "environment/prod")
        .and_then(|d| d.error.clone())
        .unwrap_or_default();
    assert!(
        prod_error.contains("protond:installation=\"theirs\""),
        "{prod_error}"
    );
    let reports_error = history
        .iter()
        .find(|d| d.deployment.resource_id == REPORTS)
        .and_then(|d| d.error.clone())
        .unwrap_or_default();
    assert!(
        reports_error.contains("protond:resource=none, protond:installation=none"),
        "{reports_error}"
    );

    // `plan` shows both as held by an ownership conflict.
    let plan = w.run(&["plan"]);
    let plan_text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan_text.contains(&format!(
            "held  environment/prod: ownership conflict: stack {prod}"
        )),
        "{plan_text}"
    );
    assert!(
        plan_text.contains(&format!(
            "held  {REPORTS}: ownership conflict: stack {reports}"
        )),
        "{plan_text}"
    );

    // A second run changes nothing and still exits 1.
    let out = w.reconcile();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        (
            fingerprint(&url, &prod).await,
            fingerprint(&url, &reports).await
        ),
        before
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stack_replaced_out_of_band_is_neither_updated_nor_deleted() {
    let w = World::examples_on_moto().build();
    let url = w.aws_url().to_string();
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    // Someone deletes reports' stack and puts their own under the same name.
    let name = stack_name(REPORTS);
    let cfn = cfn_client(&url);
    cfn.delete_stack()
        .stack_name(&name)
        .send()
        .await
        .expect("delete");
    foreign_stack(&url, &name, &[("protond:resource", REPORTS)]).await;
    let before = fingerprint(&url, &name).await;

    // A spec change would update it: refused, and the resource shows the conflict.
    w.replace(
        "payments",
        "proton/services/reports.yaml",
        "visibility_timeout: 120",
        "visibility_timeout: 130",
    );
    w.commit("payments", "tune reports");
    let out = w.reconcile();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(fingerprint(&url, &name).await, before);
    let store = w.store().await;
    let record = store
        .resources()
        .await
        .expect("records")
        .into_iter()
        .find(|r| r.id == REPORTS)
        .expect("record");
    assert_eq!(record.status, ResourceStatus::Conflict);
    let status = w.run(&["status"]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("conflict"),
        "{}",
        text(&status)
    );

    // The service is removed from its spec: the delete is refused too.
    std::fs::remove_file(w.dir("payments/proton/services/reports.yaml")).expect("rm");
    w.commit("payments", "retire reports");
    let out = w.reconcile();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(fingerprint(&url, &name).await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_installations_on_one_account_each_touch_only_their_own_stacks() {
    let a = World::examples_on_moto()
        .config(|c| {
            c.top("installation = \"team-a\"");
        })
        .build();
    // B: the same examples under other names, on A's moto_server.
    let b = World::examples_on_moto()
        .config(|c| {
            c.top("installation = \"team-b\"");
        })
        .build();
    b.redirect_aws(a.aws_url());
    for (path, pairs) in [
        (
            "platform-envs/proton/environments/dev.yaml",
            vec![("name: dev", "name: b-dev")],
        ),
        (
            "platform-envs/proton/environments/prod.yaml",
            vec![("name: prod", "name: b-prod")],
        ),
        (
            "payments/proton/services/payments.yaml",
            vec![
                ("name: payments\n", "name: b-payments\n"),
                ("name: payments-dev", "name: b-payments-dev"),
                ("name: payments-prod", "name: b-payments-prod"),
                ("environment: dev", "environment: b-dev"),
                ("environment: prod", "environment: b-prod"),
            ],
        ),
        (
            "payments/proton/services/reports.yaml",
            vec![
                ("name: reports\n", "name: b-reports\n"),
                ("name: reports-dev", "name: b-reports-dev"),
                ("environment: dev", "environment: b-dev"),
            ],
        ),
    ] {
        let p = b.dir(path);
        let mut t = std::fs::read_to_string(&p).expect("read");
        for (from, to) in pairs {
            assert!(t.contains(from), "{path}: {from}");
            t = t.replace(from, to);
        }
        std::fs::write(&p, t).expect("write");
    }
    b.commit("platform-envs", "b names");
    b.commit("payments", "b names");

    let installation_of = |s: &crate::common::LiveStack| {
        s.tags
            .get("protond:installation")
            .cloned()
            .unwrap_or_default()
    };
    for w in [&a, &b] {
        let out = w.reconcile();
        assert!(out.status.success(), "{}", text(&out));
    }
    let stacks = a.stacks().await;
    assert_eq!(stacks.len(), 14, "{stacks:#?}");
    let mut by_installation: BTreeMap<String, usize> = BTreeMap::new();
    for s in &stacks {
        *by_installation.entry(installation_of(s)).or_default() += 1;
    }
    assert_eq!(
        by_installation,
        BTreeMap::from([("team-a".to_string(), 7), ("team-b".to_string(), 7)])
    );
    let a_stacks: Vec<_> = stacks
        .iter()
        .filter(|s| installation_of(s) == "team-a")
        .map(|s| s.name.clone())
        .collect();
    let mut fingerprints = Vec::new();
    for name in &a_stacks {
        fingerprints.push(fingerprint(a.aws_url(), name).await);
    }

    // B updates and deletes its own; A's stacks do not move.
    b.replace(
        "payments",
        "proton/services/payments.yaml",
        "desired_count: 3",
        "desired_count: 4",
    );
    std::fs::remove_file(b.dir("payments/proton/services/reports.yaml")).expect("rm");
    b.commit("payments", "scale and retire");
    let out = b.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    let b_store = b.store().await;
    let deletes = b_store
        .deployments(None, 100)
        .await
        .expect("history")
        .into_iter()
        .filter(|d| d.deployment.action == "delete")
        .count();
    assert_eq!(deletes, 1, "b-reports deleted");
    let mut after = Vec::new();
    for name in &a_stacks {
        after.push(fingerprint(a.aws_url(), name).await);
    }
    assert_eq!(fingerprints, after, "B touched A's stacks");
    // A sees nothing to do.
    let a_store = a.store().await;
    let before = a_store
        .deployments(None, 1000)
        .await
        .expect("history")
        .len();
    let out = a.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        a_store
            .deployments(None, 1000)
            .await
            .expect("history")
            .len(),
        before
    );

    // B now declares an environment A owns: a conflict, and A's stack stays as it is.
    b.write(
        "platform-envs",
        "proton/environments/dev-too.yaml",
        &std::fs::read_to_string(a.dir("platform-envs/proton/environments/dev.yaml"))
            .expect("read"),
    );
    b.commit("platform-envs", "claim dev");
    let dev = stack_name("environment/dev");
    let before = fingerprint(a.aws_url(), &dev).await;
    let out = b.reconcile();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let b_store = b.store().await;
    let claim = b_store
        .deployments(Some("environment/dev"), 1)
        .await
        .expect("history");
    assert!(
        claim[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("protond:installation=\"team-a\"")),
        "{claim:?}"
    );
    assert_eq!(fingerprint(a.aws_url(), &dev).await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_state_file_from_before_installations_keeps_its_stacks() {
    if !crate::common::sqlite_only("a state file from before installations (an old SQLite schema)")
    {
        return;
    }
    let w = World::examples_on_moto().build();
    let url = w.aws_url().to_string();
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    // Make the world look as the previous release left it: stacks under the legacy names,
    // without the installation tag, and a state file without placements or an
    // installation (the schema before migration 0006).
    let store = w.store().await;
    let records = store.resources().await.expect("records");
    let cfn = cfn_client(&url);
    let mut legacy_stacks = Vec::new();
    for r in &records {
        let new = stack_name(&r.id);
        let body = cfn
            .get_template()
            .stack_name(&new)
            .send()
            .await
            .expect("template")
            .template_body()
            .unwrap_or_default()
            .to_string();
        let (_, _, tags, _) = fingerprint(&url, &new).await;
        let tags: Vec<(String, String)> = tags
            .into_iter()
            .filter(|(k, _)| k != "protond:installation")
            .collect();
        legacy_stacks.push((legacy_stack_name(&r.id), body, tags));
    }
    // A fresh account (named resources inside the stacks must not clash), then the stacks
    // as the previous release named and tagged them.
    reqwest::Client::new()
        .post(format!("{url}/moto-api/reset"))
        .send()
        .await
        .expect("reset moto");
    for (name, body, tags) in legacy_stacks {
        let mut call = cfn.create_stack().stack_name(name).template_body(body);
        for (k, v) in tags {
            call = call.tags(
                aws_sdk_cloudformation::types::Tag::builder()
                    .key(k)
                    .value(v)
                    .build(),
            );
        }
        call.send().await.expect("legacy stack");
    }
    drop(store);
    let db = w.state_db();
    let sql = "ALTER TABLE resources DROP COLUMN stack_name; ALTER TABLE resources DROP COLUMN stack_id; \
               ALTER TABLE resources DROP COLUMN region; ALTER TABLE resources DROP COLUMN role_arn; \
               ALTER TABLE deployments DROP COLUMN stack_name; ALTER TABLE deployments DROP COLUMN stack_id; \
               ALTER TABLE deployments DROP COLUMN region; ALTER TABLE deployments DROP COLUMN role_arn; \
               DROP TABLE meta; DELETE FROM _sqlx_migrations WHERE version = 6;";
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()",
        ])
        .arg(&db)
        .arg(sql)
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "{}", text(&out));
    let legacy: Vec<String> = w.stacks().await.into_iter().map(|s| s.name).collect();

    // The new release migrates the file and leaves every stack where it is.
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    let mut now: Vec<String> = w.stacks().await.into_iter().map(|s| s.name).collect();
    let mut was = legacy.clone();
    now.sort();
    was.sort();
    assert_eq!(now, was, "no stack created or deleted");
    // A change updates the legacy stack in place, tags it with the installation, and
    // records where it lives.
    w.replace(
        "payments",
        "proton/services/reports.yaml",
        "visibility_timeout: 120",
        "visibility_timeout: 125",
    );
    w.commit("payments", "tune reports");
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    let mut now: Vec<String> = w.stacks().await.into_iter().map(|s| s.name).collect();
    now.sort();
    assert_eq!(now, was);
    let (_, status, tags, _) = fingerprint(&url, &legacy_stack_name(REPORTS)).await;
    assert_eq!(status, "UPDATE_COMPLETE");
    assert!(tags.contains_key("protond:installation"), "{tags:?}");
    let store = w.store().await;
    let record = store
        .resources()
        .await
        .expect("records")
        .into_iter()
        .find(|r| r.id == REPORTS)
        .expect("record");
    assert_eq!(record.placement.stack_name, legacy_stack_name(REPORTS));
    assert!(record.placement.stack_id.is_some());
}
