//! The change-set gate on real git repos and `moto_server`, through the `protond` binary:
//! tagging a minor that changes a `DynamoDB` table's key schema (a replacement) and adds a
//! queue updates the instances without the table and holds those with it as `needs
//! approval` (in `plan`, `status`, `approvals` and the metrics); an approval through
//! `protond approve` lets the dev one deploy, and prod's moves only after its own approval
//! (here through the spec repo's `.protond/approvals.yaml`) and after dev. Through the
//! running daemon: the hold is notified (`approval_needed`) and counted
//! (`protond_needs_approval`), and the token-protected API approves.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use hmac::{KeyInit, Mac};
use serde_json::Value;

use crate::common::text;
use crate::common::until;
use crate::common::world::World;

const ORDERS_DEV: &str = "service_instance/orders/orders-dev";
const ORDERS_PROD: &str = "service_instance/orders/orders-prod";
const PLAIN_DEV: &str = "service_instance/orders/plain-dev";
const PLAIN_PROD: &str = "service_instance/orders/plain-prod";

const SCHEMA: &str = r#"schema:
  format:
    openapi: "3.0.0"
  service_input_type: "DbServiceInput"
  types:
    DbServiceInput:
      type: object
      description: "Inputs of one instance"
      properties:
        with_table:
          title: "With a table"
          type: boolean
          description: "Whether the instance has its own DynamoDB table"
          default: false
"#;

const MANIFEST: &str = "infrastructure:\n  templates:\n    - file: \"cloudformation.yaml\"\n      rendering_engine: jinja\n      template_language: cloudformation\n";

/// The instance template of db-svc v1.0: a parameter, and a table when asked for.
const TEMPLATE_V10: &str = r"AWSTemplateFormatVersion: '2010-09-09'
Resources:
  Settings:
    Type: AWS::SSM::Parameter
    Properties:
      Name: '/protond/{{ environment.name }}/{{ service_instance.name }}/db'
      Type: String
      Value: 'v1'
{% if service_instance.inputs.with_table %}
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: '{{ service_instance.name }}-orders'
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions:
        - AttributeName: id
          AttributeType: S
      KeySchema:
        - AttributeName: id
          KeyType: HASH
{% endif %}
";

fn write(root: &Path, path: &str, text: &str) {
    let p = root.join("platform-templates").join(path);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

/// v1.1: the table's key changes (a replacement) and every instance gets a queue.
pub(crate) fn v11() -> String {
    TEMPLATE_V10
        .replace("AttributeName: id", "AttributeName: pk")
        .replace(
            "      Value: 'v1'\n",
            "      Value: 'v1'\n  Inbox:\n    Type: AWS::SQS::Queue\n",
        )
}

const SERVICE: &str = r"proton: ServiceSpec
name: orders
template: {name: db-svc, major: 1}
instances:
  - name: orders-dev
    environment: dev
    spec: {with_table: true}
  - name: orders-prod
    environment: prod
    spec: {with_table: true}
  - name: plain-dev
    environment: dev
    spec: {with_table: false}
  - name: plain-prod
    environment: prod
    spec: {with_table: false}
";

fn world() -> World {
    builder().build()
}

/// The examples plus db-svc v1.0 and the orders service, stages dev and prod.
pub(crate) fn builder() -> crate::common::world::WorldBuilder {
    World::examples_on_moto()
        .setup(|root| {
            write(root, "db-svc/v1/schema/schema.yaml", SCHEMA);
            write(root, "db-svc/v1/.compatible-envs", "basic-env:1\n");
            write(
                root,
                "db-svc/v1/instance_infrastructure/manifest.yaml",
                MANIFEST,
            );
            write(
                root,
                "db-svc/v1/instance_infrastructure/cloudformation.yaml",
                TEMPLATE_V10,
            );
            crate::common::git(&root.join("platform-templates"), &["add", "-A"]);
            crate::common::git(
                &root.join("platform-templates"),
                &["commit", "-q", "-m", "db-svc"],
            );
            std::fs::write(root.join("payments/proton/services/orders.yaml"), SERVICE)
                .expect("write");
            crate::common::git(&root.join("payments"), &["add", "-A"]);
            crate::common::git(&root.join("payments"), &["commit", "-q", "-m", "orders"]);
        })
        .tagged(&["db-svc"])
        .config(|c| {
            c.section("[rollout]\nstages = [\"dev\", \"prod\"]");
        })
}

async fn versions(w: &World) -> std::collections::BTreeMap<String, String> {
    w.store()
        .await
        .resources()
        .await
        .expect("records")
        .into_iter()
        .filter(|r| r.id.starts_with("service_instance/orders/"))
        .map(|r| (r.id, r.version.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replacing_minor_waits_for_approval_then_rolls_out_in_stage_order() {
    let w = world();
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    let v = versions(&w).await;
    assert_eq!(v.len(), 4, "{v:?}");
    assert!(v.values().all(|v| v == "1.0"), "{v:?}");

    // Tag v1.1: the table's key changes, a queue is added.
    w.write(
        "platform-templates",
        "db-svc/v1/instance_infrastructure/cloudformation.yaml",
        &v11(),
    );
    w.commit("platform-templates", "db-svc: key by pk, add a queue");
    w.tag("db-svc/v1.1", "second");
    let out = w.reconcile();
    let v = versions(&w).await;
    assert_eq!(v[PLAIN_DEV], "1.1", "no table: it updates ({})", text(&out));
    assert_eq!(v[ORDERS_DEV], "1.0", "the table would be replaced: held");
    assert_eq!(v[ORDERS_PROD], "1.0");
    assert_eq!(v[PLAIN_PROD], "1.0", "prod waits for dev: {v:?}");

    let plan = text(&w.run(&["plan", "--no-fetch"]));
    let line = plan
        .lines()
        .find(|l| l.contains(ORDERS_DEV) && l.contains("approval"))
        .unwrap_or_else(|| panic!("{ORDERS_DEV} in the plan: {plan}"));
    assert!(line.contains("needs approval of 1.1"), "{line}");
    assert!(
        line.contains("AWS::DynamoDB::Table Table: replaced (KeySchema)"),
        "{line}"
    );
    assert!(
        !plan.contains("Inbox"),
        "an added queue needs no approval: {plan}"
    );
    let status = text(&w.run(&["status"]));
    assert!(status.contains("Needs approval"), "{status}");
    assert!(
        status.contains(&format!("{ORDERS_DEV}: db-svc 1.1 needs approval")),
        "{status}"
    );
    let approvals = text(&w.run(&["approvals", "--output", "json"]));
    let doc: serde_json::Value = serde_json::from_str(&approvals).expect("json");
    assert_eq!(doc["needs_approval"][0]["resource"], ORDERS_DEV, "{doc}");
    assert_eq!(doc["needs_approval"][0]["version"], "1.1", "{doc}");

    // An approval of another version, or of another resource, changes nothing.
    let refused = w.run(&["approve", ORDERS_DEV, "2.0"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(text(&refused).contains("same major"), "{}", text(&refused));
    let ok = w.run(&["approve", ORDERS_DEV, "1.2", "--by", "alice"]);
    assert!(ok.status.success(), "{}", text(&ok));
    w.reconcile();
    assert_eq!(versions(&w).await[ORDERS_DEV], "1.0", "1.2 is not 1.1");

    // Prod approved first, through the spec repo: it still waits for dev.
    w.write(
        "payments",
        ".protond/approvals.yaml",
        &format!(
            "approvals:\n  - resource: {ORDERS_PROD}\n    version: \"1.1\"\n    by: bob\n    reason: rebuilt from the stream\n"
        ),
    );
    w.commit("payments", "approve orders-prod 1.1");
    w.reconcile();
    let v = versions(&w).await;
    assert_eq!(v[ORDERS_PROD], "1.0", "prod waits for dev: {v:?}");
    assert_eq!(v[PLAIN_PROD], "1.0", "{v:?}");

    // The dev approval: dev deploys, then prod (stage order).
    let ok = w.run(&[
        "approve",
        ORDERS_DEV,
        "1.1",
        "--by",
        "alice",
        "--reason",
        "dev data is disposable",
    ]);
    assert!(ok.status.success(), "{}", text(&ok));
    let out = w.reconcile();
    let v = versions(&w).await;
    assert!(v.values().all(|v| v == "1.1"), "{v:?}: {}", text(&out));
    let store = w.store().await;
    let dev = store.deployments(Some(ORDERS_DEV), 1).await.expect("dev");
    let prod = store.deployments(Some(ORDERS_PROD), 1).await.expect("prod");
    assert!(prod[0].id > dev[0].id, "prod after dev");
    let notes = store
        .action_notes(&[dev[0].id, prod[0].id])
        .await
        .expect("notes");
    assert_eq!(
        notes[&dev[0].id].requested_by.as_deref(),
        Some("approved 1.1 by alice (cli): dev data is disposable")
    );
    assert_eq!(
        notes[&prod[0].id].requested_by.as_deref(),
        Some("approved 1.1 by bob (spec repo payments): rebuilt from the stream")
    );
    let status = text(&w.run(&["status"]));
    assert!(!status.contains("Needs approval"), "{status}");
}

const API_TOKEN: &str = "gate-api-token-0123456789";
pub(crate) const SECRET: &str = "gate-signing-secret-42";

/// A webhook receiver on 127.0.0.1 that checks every request (POST, JSON, the HMAC
/// signature) and keeps the events it accepted, or what was wrong.
#[derive(Clone, Default)]
pub(crate) struct Receiver {
    pub(crate) events: Arc<Mutex<Vec<Value>>>,
    pub(crate) violations: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    pub(crate) async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let me = self.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, h: HeaderMap, body: Bytes| {
                let me = me.clone();
                async move { me.handle(&method, &uri, &h, &body) }
            },
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}/hooks/webhook")
    }

    fn handle(&self, method: &Method, uri: &Uri, h: &HeaderMap, body: &[u8]) -> StatusCode {
        let header = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
        mac.update(body);
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let parsed = serde_json::from_slice::<Value>(body);
        let wrong = if method != Method::POST || uri.path() != "/hooks/webhook" {
            Some(format!("{method} {}", uri.path()))
        } else if header("content-type") != "application/json" {
            Some(format!("content-type {}", header("content-type")))
        } else if header("x-protond-signature") != signature {
            Some("bad signature".to_string())
        } else {
            parsed.as_ref().err().map(|e| format!("not JSON: {e}"))
        };
        match (wrong, parsed) {
            (None, Ok(v)) => {
                self.events.lock().expect("lock").push(v);
                StatusCode::OK
            }
            (w, _) => {
                let w = w.unwrap_or_default();
                self.violations.lock().expect("lock").push(w);
                StatusCode::BAD_REQUEST
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_notifies_counts_and_takes_an_approval_through_the_api() {
    let receiver = Receiver::default();
    let hook = receiver.start().await;
    let port = crate::common::free_port();
    let w = builder()
        .env("T_API", API_TOKEN)
        .env("HOOK_SECRET", SECRET)
        .config(move |c| {
            c.top("poll_interval = \"1h\"")
                .section("[daemon]\nshutdown_grace = \"10s\"\nwatch = false")
                .section(&format!(
                    "[server]\ntoken_env = \"T_API\"\nlisten = \"127.0.0.1:{port}\""
                ))
                .section(&format!(
                    "[[notify]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"{hook}\"\nsecret_env = \"HOOK_SECRET\"\nevents = [\"approval_needed\"]"
                ));
        })
        .build();
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    w.write(
        "platform-templates",
        "db-svc/v1/instance_infrastructure/cloudformation.yaml",
        &v11(),
    );
    w.commit("platform-templates", "db-svc: key by pk, add a queue");
    w.tag("db-svc/v1.1", "second");

    let log = w.dir("daemon.log");
    let mut child = w
        .command(&["run"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("protond runs");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    until("the hold is notified", &log, || async {
        !receiver.events.lock().expect("lock").is_empty()
    })
    .await;
    let event = receiver.events.lock().expect("lock")[0].clone();
    assert_eq!(event["event"], "approval_needed", "{event}");
    assert_eq!(event["resource"], ORDERS_DEV, "{event}");
    assert!(
        event["summary"]
            .as_str()
            .is_some_and(|s| s.contains("replaced (KeySchema)")),
        "{event}"
    );
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.lines().any(|l| l == "protond_needs_approval 1"),
        "{metrics}"
    );
    let page = http.get(format!("{base}/")).send().await.expect("page");
    let page = page.text().await.expect("text");
    assert!(page.contains("<h2>Needs approval</h2>"), "{page}");

    // The API: no token, no version, then an approval.
    let url = format!("{base}/api/v1/resources/{ORDERS_DEV}/approve");
    let r = http
        .post(&url)
        .json(&serde_json::json!({"version": "1.1"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 401);
    let r = http
        .post(&url)
        .bearer_auth(API_TOKEN)
        .json(&serde_json::json!({"by": "carol"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 409);
    let store = w.store().await;
    assert!(store.approvals().await.expect("approvals").is_empty());
    let r = http
        .post(&url)
        .bearer_auth(API_TOKEN)
        .json(&serde_json::json!({"version": "1.1", "by": "carol", "reason": "ok"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
    until("dev moves to 1.1", &log, || async {
        versions(&w)
            .await
            .get(ORDERS_DEV)
            .is_some_and(|v| v == "1.1")
    })
    .await;
    // Then prod reaches the gate, and waits for its own approval.
    until("prod needs approval", &log, || async {
        store
            .needs_approval()
            .await
            .is_ok_and(|p| p.contains_key(ORDERS_PROD) && !p.contains_key(ORDERS_DEV))
    })
    .await;
    let dev = store.deployments(Some(ORDERS_DEV), 1).await.expect("dev");
    let notes = store.action_notes(&[dev[0].id]).await.expect("notes");
    assert_eq!(
        notes[&dev[0].id].requested_by.as_deref(),
        Some("approved 1.1 by carol (api): ok")
    );
    assert!(
        receiver.violations.lock().expect("lock").is_empty(),
        "{:?}",
        receiver.violations.lock().expect("lock")
    );
    let _ = child.kill();
    let _ = child.wait();
}
