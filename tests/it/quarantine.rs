//! Quarantine end to end (issue 18 point 3), on a `moto_server` and real git repos: a minor
//! that fails on its first stage is quarantined after `quarantine_after` failures, never
//! reaches prod or new instances, and its dev resources return to the previous minor under
//! `rollback = "auto"`; `protond release quarantine|release` by hand, the release history,
//! the rollback offered under `rollback = "offer"`, a real rollback stage by stage from a
//! minor the fleet runs, and the move forward once the quarantine is released.

use std::process::Output;
use std::sync::{Arc, Mutex};

use protond::model::Version;
use protond::state::{DeploymentRecord, StopKind, Store};

use crate::common::until;
use crate::common::world::World;

const CFN: &str = "web-svc/v1/instance_infrastructure/cloudformation.yaml";
const DEV: &str = "service_instance/payments/payments-dev";
const DEV2: &str = "service_instance/payments/payments-dev2";
const DEV3: &str = "service_instance/payments/payments-dev3";
const PROD: &str = "service_instance/payments/payments-prod";

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn v(major: u32, minor: u32) -> Version {
    Version { major, minor }
}

/// An instance of payments in `env` named `name`, as a spec file addition.
fn instance(name: &str, env: &str) -> String {
    format!(
        "  - name: {name}\n    environment: {env}\n    spec:\n      image: public.ecr.aws/nginx/nginx:stable\n      port: 8080\n      memory: \"512\"\n      desired_count: 1\n      health_check_path: /health\n"
    )
}

async fn version_of(store: &Store, id: &str) -> Option<Version> {
    let records = store.resources().await.expect("resources");
    records.iter().find(|r| r.id == id).map(|r| r.version)
}

async fn history_of(store: &Store, id: &str) -> Vec<DeploymentRecord> {
    let mut h: Vec<DeploymentRecord> = store
        .deployments(None, 1000)
        .await
        .expect("history")
        .into_iter()
        .filter(|d| d.deployment.resource_id == id)
        .collect();
    h.sort_by_key(|d| d.id);
    h
}

#[tokio::test(flavor = "multi_thread")]
#[allow(clippy::too_many_lines)] // one story, step by step
async fn a_failing_minor_is_quarantined_and_its_dev_resources_roll_back() {
    let w = World::examples_on_moto()
        .config(|c| {
            c.section("[rollout]\nstages = [\"dev\", \"prod\"]\nquarantine_after = 2\nrollback = \"auto\"\n");
        })
        .build();
    // Two dev instances and one prod instance of web-svc, all on 1.0.
    w.edit("payments", "proton/services/payments.yaml", |s| {
        s.replacen(
            "  - name: payments-prod\n",
            &format!(
                "{}  - name: payments-prod\n",
                instance("payments-dev2", "dev")
            ),
            1,
        )
    });
    w.commit("payments", "A second dev instance.");
    let out = w.reconcile();
    assert!(out.status.success(), "{}", stderr(&out));
    let store = w.store().await;
    for id in [DEV, DEV2, PROD] {
        assert_eq!(version_of(&store, id).await, Some(v(1, 0)), "{id}");
    }

    // 1.1 fails to deploy (moto refuses the template): both dev resources fail, the second
    // failure quarantines it, and the dev resources are deployed on 1.0 again.
    w.edit("platform-templates", CFN, |s| s.replacen("Resources:", "Resources:\n  Broken:\n    Type: AWS::SQS::Queue\n    Properties:\n      DelaySeconds: !GetAtt NoSuchResource.Arn\n", 1));
    w.commit("platform-templates", "1.1");
    w.tag("web-svc/v1.1", "Broken.");
    let out = w.reconcile();
    let err = stderr(&out);
    assert!(err.contains("Release quarantined."), "{err}");
    assert!(err.contains("Minor rollout halted."), "{err}");
    let stops = store.stops().await.expect("stops");
    assert_eq!(stops.len(), 1, "{stops:?}");
    let s = &stops[0];
    assert_eq!(
        (s.template.as_str(), s.version, s.kind, s.by.as_str()),
        ("web-svc", v(1, 1), StopKind::Quarantine, "protond")
    );
    assert!(
        s.reason
            .starts_with("2 of 2 resources of stage dev failed;"),
        "{}",
        s.reason
    );
    for id in [DEV, DEV2] {
        let h = history_of(&store, id).await;
        let tail: Vec<(String, Option<String>, Version)> = h[h.len() - 2..]
            .iter()
            .map(|d| {
                (
                    d.status.as_str().to_string(),
                    d.deployment.reason.clone(),
                    d.deployment.to_version,
                )
            })
            .collect();
        assert_eq!(
            tail,
            [
                ("failed".into(), Some("minor_upgrade".into()), v(1, 1)),
                ("succeeded".into(), Some("rollback".into()), v(1, 0)),
            ],
            "{id}"
        );
        let records = store.resources().await.expect("resources");
        let r = records.iter().find(|r| r.id == id).expect("record");
        assert_eq!(r.version, v(1, 0), "{id}");
        assert!(r.status == protond::model::ResourceStatus::Deployed, "{id}");
    }
    // Prod never got 1.1: no deployment of it at all.
    let prod = history_of(&store, PROD).await;
    assert!(
        prod.iter().all(|d| d.deployment.to_version != v(1, 1)),
        "{prod:?}"
    );
    assert_eq!(version_of(&store, PROD).await, Some(v(1, 0)));

    // A dev instance added now gets 1.0, not the quarantined 1.1.
    w.edit("payments", "proton/services/payments.yaml", |s| {
        s.replacen(
            "  - name: payments-prod\n",
            &format!(
                "{}  - name: payments-prod\n",
                instance("payments-dev3", "dev")
            ),
            1,
        )
    });
    w.commit("payments", "A third dev instance.");
    let out = w.reconcile();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(version_of(&store, DEV3).await, Some(v(1, 0)));
    assert!(
        history_of(&store, PROD)
            .await
            .iter()
            .all(|d| d.deployment.to_version != v(1, 1))
    );

    // Status and the history show it.
    let status = stdout(&w.run(&["status"]));
    assert!(
        status.contains("web-svc 1.1: QUARANTINED by protond"),
        "{status}"
    );
    let history = w.run(&["release", "history", "web-svc"]);
    assert!(history.status.success(), "{}", stderr(&history));
    let text = stdout(&history);
    assert!(
        text.contains("quarantined") && text.contains("protond"),
        "{text}"
    );

    // By hand: release, quarantine again, refuse an unknown release, and the alias.
    let out = w.run(&[
        "release",
        "release",
        "web-svc/v1.1",
        "--reason",
        "looked at it",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("released by cli:"),
        "{}",
        stdout(&out)
    );
    assert!(store.quarantined().await.expect("q").is_empty());
    let out = w.run(&[
        "release",
        "quarantine",
        "web-svc/v1.1",
        "--reason",
        "still broken",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stops = store.stops().await.expect("stops");
    assert!(stops[0].by.starts_with("cli:"), "{stops:?}");
    assert_eq!(stops[0].reason, "still broken");
    let out = w.run(&["release", "quarantine", "web-svc/v9.9"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a registered release"),
        "{}",
        stderr(&out)
    );
    let events = store
        .release_events(Some("web-svc"), Some(v(1, 1)))
        .await
        .expect("events");
    let got: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(got, ["quarantined", "released", "quarantined"]);

    // A good 1.2 rolls out everywhere; quarantined by hand, it is offered back under
    // "offer", and rolled back stage by stage under "auto" (to 1.0: 1.1 is quarantined).
    w.edit("platform-templates", CFN, |s| {
        let fixed = s.replacen("  Broken:\n    Type: AWS::SQS::Queue\n    Properties:\n      DelaySeconds: !GetAtt NoSuchResource.Arn\n", "", 1);
        format!("{fixed}  Release:\n    Value: '1.2'\n")
    });
    w.commit("platform-templates", "1.2");
    w.tag("web-svc/v1.2", "Fixed.");
    let out = w.reconcile();
    assert!(out.status.success(), "{}", stderr(&out));
    // The next cycle announced what the CLI recorded, once.
    let err = stderr(&out);
    assert_eq!(err.matches("Release released.").count(), 1, "{err}");
    assert_eq!(err.matches("Release quarantined.").count(), 1, "{err}");
    for id in [DEV, DEV2, DEV3, PROD] {
        assert_eq!(version_of(&store, id).await, Some(v(1, 2)), "{id}");
    }
    let out = w.run(&[
        "release",
        "quarantine",
        "web-svc/v1.2",
        "--reason",
        "latency",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    w.edit_config(|t| t.replace("rollback = \"auto\"", "rollback = \"offer\""));
    let plan = stdout(&w.run(&["plan"]));
    assert!(
        plan.contains(&format!(
            "rollback available: protond rollback {PROD} --to v1.0"
        )),
        "{plan}"
    );
    let out = w.reconcile();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        version_of(&store, PROD).await,
        Some(v(1, 2)),
        "offered only"
    );
    w.edit_config(|t| t.replace("rollback = \"offer\"", "rollback = \"auto\""));
    let out = w.reconcile();
    assert!(out.status.success(), "{}", stderr(&out));
    for id in [DEV, DEV2, DEV3, PROD] {
        assert_eq!(version_of(&store, id).await, Some(v(1, 0)), "{id}");
        let last = history_of(&store, id).await.pop().expect("history");
        assert_eq!(last.deployment.reason.as_deref(), Some("rollback"), "{id}");
        assert_eq!(last.deployment.from_version, Some(v(1, 2)), "{id}");
    }
    // Stage order: prod's rollback started after every dev rollback finished.
    let prod_start = history_of(&store, PROD)
        .await
        .pop()
        .expect("prod")
        .started_at;
    for id in [DEV, DEV2, DEV3] {
        let dev = history_of(&store, id).await.pop().expect("dev");
        assert!(
            dev.finished_at.clone().expect("finished") <= prod_start,
            "{id} {dev:?} / {prod_start}"
        );
    }

    // Released, 1.2 rolls forward again.
    let out = w.run(&["release", "release", "web-svc/v1.2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = w.reconcile();
    assert!(out.status.success(), "{}", stderr(&out));
    for id in [DEV, DEV2, DEV3, PROD] {
        assert_eq!(version_of(&store, id).await, Some(v(1, 2)), "{id}");
    }
}

const API_TOKEN: &str = "api-token-for-quarantine-4821";

/// A Slack-compatible hook on 127.0.0.1 that keeps each message's text; anything but a
/// `POST /hook` with a JSON `{"text": ...}` body is recorded as a violation.
async fn slack_fake() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let s = seen.clone();
    let app = axum::Router::new().fallback(
        move |method: axum::http::Method, uri: axum::http::Uri, body: axum::body::Bytes| {
            let s = s.clone();
            async move {
                let text = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["text"].as_str().map(str::to_string));
                let entry = match (method == axum::http::Method::POST, uri.path(), text) {
                    (true, "/hook", Some(t)) => t,
                    (_, path, _) => format!("VIOLATION {method} {path}"),
                };
                s.lock().expect("lock").push(entry);
                axum::http::StatusCode::OK
            }
        },
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hook"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_through_the_api_is_notified_shown_and_counted() {
    let port = crate::common::free_port();
    let (hook, seen) = slack_fake().await;
    let w = World::examples_on_moto()
        .env("T_API", API_TOKEN)
        .env("SLACK_HOOK", &hook)
        .config(move |c| {
            c.top("poll_interval = \"1h\"")
                .section("[daemon]\nshutdown_grace = \"10s\"\nwatch = false")
                .section(&format!(
                    "[server]\ntoken_env = \"T_API\"\nlisten = \"127.0.0.1:{port}\""
                ))
                .section("[notifications]\nbackoff = \"100ms\"")
                .section("[[notify]]\nname = \"chat\"\nkind = \"slack\"\nurl_env = \"SLACK_HOOK\"\nevents = [\"release_quarantined\", \"release_released\"]");
        })
        .build();
    let log = w.dir("daemon.log");
    let mut child = w
        .command(&["run"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("protond runs");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    until("/healthz", &log, || async {
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let store = w.store().await;
    until("the first deployments", &log, || async {
        store
            .resources()
            .await
            .is_ok_and(|r| r.iter().any(|r| r.id == DEV))
            && store.in_flight().await.is_ok_and(|f| f.is_empty())
    })
    .await;
    let url = |action: &str| format!("{base}/api/v1/rollouts/web-svc/v1.0/{action}");

    // Without the token: 401, nothing recorded.
    let r = http.post(url("quarantine")).send().await.expect("post");
    assert_eq!(r.status(), 401);
    assert!(store.stops().await.expect("stops").is_empty());

    // Quarantined through the API: recorded as by api, notified, on the page and metrics.
    let r = http
        .post(url("quarantine"))
        .bearer_auth(API_TOKEN)
        .json(&serde_json::json!({"reason": "pager"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["changed"], true, "{body}");
    let stops = store.stops().await.expect("stops");
    assert_eq!(
        (
            stops[0].kind,
            stops[0].by.as_str(),
            stops[0].reason.as_str()
        ),
        (StopKind::Quarantine, "api", "pager")
    );
    until("the quarantine notification", &log, || async {
        seen.lock()
            .expect("lock")
            .iter()
            .any(|t| t.contains("web-svc v1.0: quarantined by api: pager"))
    })
    .await;
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("protond_release_quarantined{template=\"web-svc\",version=\"1.0\"} 1"),
        "{metrics}"
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
        page.contains("<h2>Stopped releases</h2>")
            && page.contains("<td>web-svc 1.0</td><td class=\"bad\">quarantined</td><td>api</td>"),
        "{page}"
    );

    // Released: notified, and the gauge is gone.
    let r = http
        .post(url("release"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    until("the release notification", &log, || async {
        seen.lock()
            .expect("lock")
            .iter()
            .any(|t| t.contains("web-svc v1.0: released by api"))
    })
    .await;
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        !metrics.contains("protond_release_quarantined{"),
        "{metrics}"
    );
    let history: serde_json::Value = http
        .get(format!("{base}/api/v1/release-events"))
        .send()
        .await
        .expect("history")
        .json()
        .await
        .expect("json");
    let rows: Vec<(&str, &str)> = history
        .as_array()
        .expect("array")
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap_or(""),
                e["by"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [("quarantined", "api"), ("released", "api")],
        "{history}"
    );
    let all = seen.lock().expect("lock").clone();
    assert_eq!(all.len(), 2, "one message per event, nothing else: {all:?}");
    assert!(all.iter().all(|t| !t.starts_with("VIOLATION")), "{all:?}");
    let _ = child.kill();
    let _ = child.wait();
}
