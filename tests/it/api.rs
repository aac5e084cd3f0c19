//! The API's conventions against a running `protond run` on a `moto_server`: JSON error
//! bodies (404 for unknown paths and ids, 405 with `Allow`, 400 for bad queries, 401),
//! `GET /api/v1/resources/{id}` with stored outputs, placement and the last deployments
//! (who asked included), cursor pagination that loses and repeats nothing, and the status
//! page's outputs and pipelines section.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{self, world::World};

const API_TOKEN: &str = "api-token-for-api-tests-0123";

/// A `protond run` on a free port over the examples; killed when dropped.
struct Daemon {
    child: Child,
    base: String,
    log: std::path::PathBuf,
    world: World,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn start() -> Self {
        let world = World::examples_on_moto()
            .env("T_API", API_TOKEN)
            .config(|c| {
                c.top("poll_interval = \"1h\"")
                    .section("[daemon]\nshutdown_grace = \"10s\"\nwatch = false")
                    .section("[server]\ntoken_env = \"T_API\"");
            })
            .build();
        let port = common::free_port();
        let log = world.dir("daemon.log");
        let child = world
            .command(&["run", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("protond runs");
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            world,
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        reqwest::get(format!("{}{path}", self.base))
            .await
            .expect("GET answers")
    }

    async fn json(&self, path: &str) -> Value {
        let r = self.get(path).await;
        assert_eq!(r.status(), 200, "{path}");
        r.json().await.expect("json")
    }

    /// Polls `f` every 200 ms for up to 90 s.
    async fn wait_for<F, Fut>(&self, what: &str, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(90) {
            if f().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "timed out waiting for {what}; daemon log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// Every item of a paged list, following `next` from an envelope answer, with the
    /// number of pages.
    async fn walk(&self, path: &str, limit: usize) -> (Vec<Value>, usize) {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut after = String::new();
        for pages in 1..=200 {
            let r = self
                .get(&format!("{path}{sep}limit={limit}&after={after}"))
                .await;
            assert_eq!(r.status(), 200, "{path}");
            let link = r
                .headers()
                .get("link")
                .map(|v| v.to_str().expect("link").to_string());
            let page: Value = r.json().await.expect("json");
            let got = page["items"].as_array().expect("items").clone();
            assert!(got.len() <= limit, "{page}");
            items.extend(got);
            let Some(next) = page["next"].as_str() else {
                assert!(link.is_none(), "no Link on the last page");
                return (items, pages);
            };
            let link = link.expect("a Link header when more follow");
            assert!(link.ends_with("; rel=\"next\""), "{link}");
            assert!(link.contains(&format!("limit={limit}")), "{link}");
            after = next.replace('/', "%2F");
        }
        panic!("{path}: more than 200 pages");
    }
}

/// Asserts `r` is a JSON error `{"error", "status"}` with `status`; returns the message.
async fn json_error(r: reqwest::Response, status: u16) -> String {
    assert_eq!(r.status().as_u16(), status);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("application/json")
    );
    let v: Value = r.json().await.expect("a JSON error body");
    assert_eq!(v["status"], status, "{v}");
    v["error"].as_str().expect("error message").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_resources_pages_and_the_page() {
    let d = Daemon::start();
    let http = reqwest::Client::new();
    d.wait_for("the 7 first deployments", || async {
        let Ok(r) = reqwest::get(format!("{}/api/v1/deployments", d.base)).await else {
            return false;
        };
        r.json::<Value>().await.is_ok_and(|v| {
            v.as_array().is_some_and(|a| {
                a.iter().filter(|x| x["status"] == "succeeded").count() >= 7
                    && a.iter().all(|x| x["status"] != "in_progress")
            })
        })
    })
    .await;

    // 1. Errors are JSON: unknown paths, wrong methods (with Allow), bad queries, no token.
    let m = json_error(d.get("/no/such/path").await, 404).await;
    assert!(m.contains("/no/such/path"), "{m}");
    let r = d.get("/api/v1/reconcile").await;
    let allow = r.headers()["allow"].to_str().expect("allow").to_string();
    assert!(allow.contains("POST") && !allow.contains("GET"), "{allow}");
    let m = json_error(r, 405).await;
    assert!(m.contains("POST"), "{m}");
    let r = http
        .post(format!("{}/api/v1/templates", d.base))
        .send()
        .await
        .expect("post");
    assert!(
        r.headers()["allow"]
            .to_str()
            .expect("allow")
            .contains("GET")
    );
    json_error(r, 405).await;
    json_error(d.get("/api/v1/deployments?limit=many").await, 400).await;
    let m = json_error(d.get("/api/v1/deployments?after=x").await, 400).await;
    assert!(m.contains("after"), "{m}");
    let r = http
        .post(format!("{}/api/v1/reconcile", d.base))
        .send()
        .await
        .expect("post");
    json_error(r, 401).await;
    let m = json_error(d.get("/api/v1/resources/environment/nowhere").await, 404).await;
    assert!(m.contains("environment/nowhere"), "{m}");

    // 2. One resource: record, placement, stored outputs, drift, last deployments.
    let id = "service_instance/payments/payments-dev";
    let r = http
        .post(format!("{}/api/v1/resources/{id}/redeploy", d.base))
        .bearer_auth(API_TOKEN)
        .json(&json!({"by": "alice"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
    let path = format!("/api/v1/resources/{id}");
    d.wait_for("the redeploy asked by alice", || async {
        let v: Value = d.json(&path).await;
        v["deployments"][0]["requested_by"] == "api:alice"
            && v["deployments"][0]["status"] == "succeeded"
    })
    .await;
    let one = d.json(&path).await;
    assert_eq!(one["id"], id);
    assert_eq!(one["kind"], "service_instance");
    assert_eq!(one["template"], "web-svc");
    assert_eq!(one["version"], "1.0");
    assert_eq!(one["status"], "deployed");
    assert_eq!(one["recorded"], true);
    let stack = one["placement"]["stack_name"].as_str().expect("stack");
    assert!(!stack.is_empty(), "{one}");
    assert!(
        one["placement"]["stack_id"]
            .as_str()
            .is_some_and(|s| s.starts_with("arn:aws:cloudformation:")),
        "{one}"
    );
    assert!(one["outputs"].is_object(), "{one}");
    assert!(one["drift"].is_array(), "{one}");
    let deps = one["deployments"].as_array().expect("deployments");
    assert!(deps.len() >= 2, "the create and the redeploy: {one}");
    assert!(deps.iter().all(|x| x["resource"] == id), "{one}");
    assert!(
        deps[0]["id"].as_i64() > deps[1]["id"].as_i64(),
        "newest first"
    );
    let few = d.json(&format!("{path}?deployments=1")).await;
    assert_eq!(few["deployments"].as_array().map(Vec::len), Some(1));
    // An environment's stored outputs are its stack's outputs.
    let env = d.json("/api/v1/resources/environment/dev").await;
    let outputs = env["outputs"].as_object().expect("outputs");
    assert!(!outputs.is_empty(), "{env}");
    // The POST of the same prefix still routes to the actions.
    let r = http
        .post(format!("{}/api/v1/resources/{id}/explode", d.base))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("post");
    json_error(r, 404).await;

    // 3. Pagination: every item once, in order, across pages; today's array by default.
    let all = d.json("/api/v1/deployments?limit=1000").await;
    let all_ids: Vec<i64> = all
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|x| x["id"].as_i64())
        .collect();
    assert!(all_ids.len() >= 8, "{all}");
    let (paged, page_count) = d.walk("/api/v1/deployments", 3).await;
    let paged_ids: Vec<i64> = paged.iter().filter_map(|x| x["id"].as_i64()).collect();
    assert_eq!(paged_ids, all_ids, "no deployment lost or repeated");
    assert_eq!(page_count, all_ids.len().div_ceil(3));
    let (mine, _) = d
        .walk(&format!("/api/v1/deployments?resource={id}"), 1)
        .await;
    assert_eq!(mine.len(), deps.len());
    for (list, key) in [
        ("/api/v1/environments", "id"),
        ("/api/v1/services", "service"),
        ("/api/v1/templates", "tag"),
        ("/api/v1/rollouts", "template"),
        ("/api/v1/proposals", "path"),
    ] {
        let whole = d.json(list).await;
        let whole: Vec<&Value> = whole
            .as_array()
            .expect("array")
            .iter()
            .map(|x| &x[key])
            .collect();
        let (paged, page_count) = d.walk(list, 1).await;
        let paged: Vec<&Value> = paged.iter().map(|x| &x[key]).collect();
        assert_eq!(paged, whole, "{list}");
        assert_eq!(page_count, whole.len().max(1), "{list}");
    }
    // The array answer names the next page in a Link header.
    let r = d.get("/api/v1/environments?limit=1").await;
    let link = r.headers()["link"].to_str().expect("link").to_string();
    assert_eq!(
        link,
        "</api/v1/environments?limit=1&after=environment%2Fdev>; rel=\"next\""
    );
    let first: Value = r.json().await.expect("json");
    assert_eq!(first.as_array().map(Vec::len), Some(1));
    let rest = d
        .json("/api/v1/environments?limit=1&after=environment%2Fdev")
        .await;
    assert_eq!(rest["items"][0]["id"], "environment/prod");

    // 4. The page: outputs per resource, the pipelines section, ids and times unwrapped.
    let html = d.get("/").await.text().await.expect("html");
    let (key, value) = outputs.iter().next().expect("an output");
    let env_row = html
        .lines()
        .find(|l| l.contains("<td class=\"id\"><code>environment/dev</code>"))
        .expect("environment/dev row");
    assert!(env_row.contains("<details class=\"outputs\">"), "{env_row}");
    assert!(env_row.contains(key.as_str()), "{env_row}");
    assert!(
        env_row.contains(value.as_str().expect("string output")),
        "{env_row}"
    );
    let pipelines = html
        .split("<h2>Pipelines</h2>")
        .nth(1)
        .and_then(|s| s.split("<h2>").next())
        .expect("a Pipelines section");
    assert!(pipelines.contains("pipeline/payments"), "{pipelines}");
    let store = d.world.store().await;
    let pipe = store
        .resources()
        .await
        .expect("resources")
        .into_iter()
        .find(|r| r.id == "pipeline/payments")
        .expect("pipeline record");
    assert!(
        pipelines.contains(&pipe.placement.stack_name),
        "{pipelines}"
    );
    match store.pipeline_runs().await.expect("runs").first() {
        Some(run) => assert!(pipelines.contains(&run.triggered_by), "{pipelines}"),
        None => assert!(pipelines.contains("none recorded"), "{pipelines}"),
    }
    assert!(
        html.contains("code.id,td.id>code,time{white-space:nowrap}"),
        "{html}"
    );
    assert!(html.contains("<time>"), "timestamps are marked: {html}");
}
