//! Holds, freeze windows and rollbacks end to end (issue 18, points 4 and 5): `protond hold`
//! with an end that the running daemon honours by itself, a `[[rollout.freeze]]` window of
//! one stage, and `protond rollback --to` / `unpin`, on real git repos, a real `SQLite` file
//! and a `moto_server`.

use std::process::Output;
use std::time::{Duration, Instant, SystemTime};

use crate::common::git;
use crate::common::world::World;

const DEV: &str = "service_instance/payments/payments-dev";
const PROD: &str = "service_instance/payments/payments-prod";
const CFN: &str = "web-svc/v1/instance_infrastructure/cloudformation.yaml";

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The examples on a `moto_server`, polling every second, with `rollout` appended to the
/// config.
fn world(rollout: &str) -> World {
    let w = World::examples_on_moto()
        .config(|c| {
            c.top("poll_interval = \"1s\"")
                .section("[daemon]\nshutdown_grace = \"10s\"");
        })
        .build();
    w.edit_config(|text| format!("{text}{rollout}"));
    w
}

/// Tags web-svc 1.`minor` (a template change: a `Release` output).
fn tag_minor(w: &World, minor: u32) {
    w.edit("platform-templates", CFN, |s| {
        format!("{s}  Release{minor}:\n    Value: '1.{minor}'\n")
    });
    w.commit("platform-templates", &format!("1.{minor}"));
    git(
        &w.root.join("platform-templates"),
        &["tag", "-a", &format!("web-svc/v1.{minor}"), "-m", "minor"],
    );
}

/// The deployed version of each resource.
async fn versions(w: &World) -> std::collections::BTreeMap<String, String> {
    w.store()
        .await
        .resources()
        .await
        .expect("resources")
        .into_iter()
        .map(|r| (r.id, r.version.to_string()))
        .collect()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}\n{}", stdout(o), stderr(o));
    stdout(o)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hold_stops_a_new_minor_until_it_ends_then_the_daemon_deploys_it() {
    let w = world("");
    ok(&w.reconcile());
    // Unknown target forms and a past end are refused with the fix.
    let bad = w.run(&["hold", "env:dev", "--until", "1h", "--reason", "x"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("environment:<name>"),
        "{}",
        stderr(&bad)
    );
    let past = w.run(&[
        "hold",
        DEV,
        "--until",
        "2020-01-01T00:00:00Z",
        "--reason",
        "x",
    ]);
    assert!(stderr(&past).contains("has passed"), "{}", stderr(&past));

    let until_text =
        humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(15)).to_string();
    let until = humantime::parse_rfc3339(&until_text).expect("until");
    let out = ok(&w.run(&[
        "hold",
        DEV,
        "--until",
        &until_text,
        "--reason",
        "demo day",
        "--by",
        "alice",
    ]));
    assert!(out.contains(&until_text), "{out}");
    tag_minor(&w, 1);
    let out = w.reconcile();
    ok(&out);
    let v = versions(&w).await;
    assert_eq!(v[DEV], "1.0", "held: {}", stderr(&out));
    assert_eq!(v[PROD], "1.1", "the hold covers dev only");
    // The plan shows the hold, who set it and when it ends.
    let plan = stdout(&w.run(&["plan", "--no-fetch"]));
    let line = plan
        .lines()
        .find(|l| l.contains("held") && l.contains(DEV))
        .unwrap_or_else(|| panic!("{plan}"));
    assert!(
        line.contains("held by cli:alice until ") && line.contains(&until_text),
        "{line}"
    );
    assert!(line.contains("demo day"), "{line}");
    let holds = ok(&w.run(&["holds"]));
    assert!(
        holds.contains(DEV) && holds.contains("cli:alice"),
        "{holds}"
    );
    assert!(SystemTime::now() < until, "the steps above took too long");

    // The running daemon deploys it once the hold ends, nobody doing anything.
    let mut daemon = w.spawn(&["run", "--no-server"]);
    let deadline = Instant::now() + Duration::from_mins(1);
    while versions(&w).await[DEV] != "1.1" {
        assert!(Instant::now() < deadline, "{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let late = SystemTime::now().duration_since(until);
    assert!(late.is_ok(), "deployed before the hold ended: {late:?}");
    daemon.terminate();
    let _ = daemon.wait();
    let history = w
        .store()
        .await
        .deployments(Some(DEV), 10)
        .await
        .expect("history");
    assert_eq!(history[0].deployment.to_version.to_string(), "1.1");
    assert_eq!(
        history[0].deployment.reason.as_deref(),
        Some("minor_upgrade")
    );
    // RFC 3339 in UTC to the second: text order is time order.
    assert!(
        history[0].started_at >= until_text,
        "started {} before the hold ended at {until_text}",
        history[0].started_at
    );

    // With --all, spec changes wait too, until the hold is lifted.
    ok(&w.run(&[
        "hold",
        "environment:prod",
        "--until",
        "1h",
        "--reason",
        "incident",
        "--all",
    ]));
    w.edit("payments", "proton/services/payments.yaml", |s| {
        s.replacen("desired_count: 3", "desired_count: 5", 1)
    });
    w.commit("payments", "scale prod");
    ok(&w.reconcile());
    let store = w.store().await;
    let before = store.deployments(Some(PROD), 10).await.expect("history");
    assert_ne!(before[0].deployment.reason.as_deref(), Some("spec_change"));
    let plan = stdout(&w.run(&["plan", "--no-fetch"]));
    assert!(
        plan.lines()
            .any(|l| l.contains(PROD) && l.contains("(environment:prod: incident)")),
        "{plan}"
    );
    ok(&w.run(&["unhold", "environment:prod"]));
    ok(&w.reconcile());
    let after = store.deployments(Some(PROD), 10).await.expect("history");
    assert_eq!(after[0].deployment.reason.as_deref(), Some("spec_change"));
    assert_eq!(after[0].status, "succeeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_freeze_window_holds_minors_of_its_stage_while_another_stage_proceeds() {
    // An absolute window around now, on prod only (read in Berlin time).
    let fmt = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    let now = SystemTime::now();
    let (from, to) = (
        fmt(now - Duration::from_hours(1)),
        fmt(now + Duration::from_hours(1)),
    );
    let w = world(&format!(
        "[rollout]\nstages = [\"dev\", \"prod\"]\nsoak = \"0s\"\ntimezone = \"Europe/Berlin\"\n[[rollout.freeze]]\nstages = [\"prod\"]\nfrom = \"{from}\"\nto = \"{to}\"\nreason = \"launch week\"\n"
    ));
    ok(&w.reconcile());
    tag_minor(&w, 1);
    // A spec change of prod lands with the minor: it still deploys.
    w.edit("payments", "proton/services/payments.yaml", |s| {
        s.replacen("desired_count: 3", "desired_count: 7", 1)
    });
    w.commit("payments", "scale prod");
    let out = w.reconcile();
    ok(&out);
    let v = versions(&w).await;
    assert_eq!(v[DEV], "1.1", "dev is not frozen");
    assert_eq!(v[PROD], "1.0", "prod's minor waits: {}", stderr(&out));
    let history = w
        .store()
        .await
        .deployments(Some(PROD), 10)
        .await
        .expect("history");
    assert_eq!(history[0].deployment.reason.as_deref(), Some("spec_change"));
    assert_eq!(history[0].status, "succeeded");
    let plan = stdout(&w.run(&["plan", "--no-fetch"]));
    assert!(
        plan.lines()
            .any(|l| l.contains(PROD)
                && l.contains(&format!("freeze window until {to}: launch week"))),
        "{plan}"
    );
    // A bad window is refused with its key and the fix.
    w.edit_config(|t| t.replace(&format!("to = \"{to}\""), "to = \"01-03\""));
    let bad = w.run(&["plan", "--no-fetch"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("rollout.freeze[0].to") && stderr(&bad).contains("MM-DD"),
        "{}",
        stderr(&bad)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_pins_an_earlier_minor_and_unpin_follows_the_newest_again() {
    let w = world("");
    ok(&w.reconcile());
    tag_minor(&w, 1);
    ok(&w.reconcile());
    assert_eq!(versions(&w).await[DEV], "1.1");

    // Refused: an unregistered version, another major, a template hold form.
    for (to, why) in [
        ("v1.5", "not a registered release"),
        ("v2.0", "never crosses a major"),
    ] {
        let o = w.run(&["rollback", DEV, "--to", to]);
        assert_eq!(o.status.code(), Some(1), "{to}");
        assert!(stderr(&o).contains(why), "{to}: {}", stderr(&o));
    }
    let o = w.run(&["rollback", "template:web-svc", "--to", "v1.0"]);
    assert!(
        stderr(&o).contains("not a rollback target"),
        "{}",
        stderr(&o)
    );

    // A stage target reads the stages from the spec repos; the version it runs is allowed.
    let out = ok(&w.run(&["rollback", "stage:prod", "--to", "web-svc/v1.1"]));
    assert!(out.contains(&format!("{PROD}: stays on 1.1")), "{out}");
    assert!(!out.contains(DEV), "{out}");
    ok(&w.run(&["unpin", "stage:prod"]));
    let out = ok(&w.run(&["rollback", DEV, "--to", "v1.0", "--by", "bob"]));
    assert!(out.contains(&format!("{DEV}: 1.1 -> 1.0")), "{out}");
    ok(&w.reconcile());
    let v = versions(&w).await;
    assert_eq!((v[DEV].as_str(), v[PROD].as_str()), ("1.0", "1.1"));
    let store = w.store().await;
    let history = store.deployments(Some(DEV), 10).await.expect("history");
    assert_eq!(history[0].deployment.reason.as_deref(), Some("rollback"));
    assert_eq!(history[0].deployment.to_version.to_string(), "1.0");

    // A newer minor leaves the pinned instance where it is; the plan says why.
    tag_minor(&w, 2);
    ok(&w.reconcile());
    let v = versions(&w).await;
    assert_eq!((v[DEV].as_str(), v[PROD].as_str()), ("1.0", "1.2"));
    let plan = stdout(&w.run(&["plan", "--no-fetch"]));
    assert!(
        plan.lines().any(|l| l.contains(DEV)
            && l.contains("pinned on 1.0")
            && l.contains("1.2 is available")),
        "{plan}"
    );
    let status = ok(&w.run(&["status"]));
    assert!(status.contains("web-svc 1.0, by cli:bob"), "{status}");

    // Unpinned, it follows the newest minor again.
    ok(&w.run(&["unpin", DEV]));
    ok(&w.reconcile());
    assert_eq!(versions(&w).await[DEV], "1.2");
    let o = w.run(&["unpin", DEV]);
    assert_eq!(o.status.code(), Some(1), "nothing left to unpin");
}

#[tokio::test(flavor = "multi_thread")]
async fn holds_through_the_api_need_the_token_and_show_on_the_page() {
    const TOKEN: &str = "holds-api-token-0123456789";
    let w = World::examples_on_moto()
        .env("T_API", TOKEN)
        .config(|c| {
            c.top("poll_interval = \"1h\"")
                .section("[daemon]\nshutdown_grace = \"10s\"\nwatch = false")
                .section("[server]\ntoken_env = \"T_API\"");
        })
        .build();
    let port = crate::common::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut daemon = w.spawn(&["run", "--listen", &format!("127.0.0.1:{port}")]);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_mins(1);
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let body = serde_json::json!({"target": "stage:prod", "until": "2h", "reason": "launch", "by": "carol"});
    let r = http
        .post(format!("{base}/api/v1/holds"))
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 401, "no token");
    let bad = serde_json::json!({"target": "prod", "until": "2h", "reason": "x"});
    let r = http
        .post(format!("{base}/api/v1/holds"))
        .bearer_auth(TOKEN)
        .json(&bad)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    let text = r.text().await.expect("text");
    assert!(text.contains("stage:<name>"), "{text}");
    let r = http
        .post(format!("{base}/api/v1/holds"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 201);
    let listed: serde_json::Value = http
        .get(format!("{base}/api/v1/holds"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let h = &listed["holds"][0];
    assert_eq!(
        (
            h["target"].as_str(),
            h["by"].as_str(),
            h["active"].as_bool()
        ),
        (Some("stage:prod"), Some("api:carol"), Some(true)),
        "{listed}"
    );
    let page = http
        .get(format!("{base}/"))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("text");
    assert!(
        page.contains("<h2>Holds and pins</h2>") && page.contains("api:carol"),
        "{page}"
    );
    let cli = ok(&w.run(&["holds"]));
    assert!(cli.contains("stage:prod: version moves, until"), "{cli}");
    for (status, what) in [(200, "lifted"), (404, "gone")] {
        let r = http
            .delete(format!("{base}/api/v1/holds/stage:prod"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("delete");
        assert_eq!(r.status(), status, "{what}");
    }
    daemon.terminate();
    let _ = daemon.wait();
}
