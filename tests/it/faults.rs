//! Faults: the AWS endpoint down and back, throttling, protond killed (`kill -9`) while a
//! create, an update or a delete is in flight, spec remotes that vanish or are force-pushed
//! to an empty branch, and the state store locked by someone else or out of space.
//!
//! Real git repos, the `protond` binary, `moto_server` (one per test, on 127.0.0.1) and a real
//! `SQLite` file. `CloudFormation` faults are injected by a small proxy in front of `moto_server`
//! ([`Proxy`]) whose per-request policy can throttle a call, forward it and then hold the
//! answer (the call reached AWS, protond never hears back), or hold it without forwarding
//! (the call never reached AWS). A full state store is a tiny tmpfs when this process may
//! mount one, else a file-size limit (`ulimit -f`) on protond.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::world::World;
use crate::common::{self, LiveStack, git, live_stacks, text};

use protond::demo::LocalAws as Moto;
use protond::state::{DeploymentRecord, Store};

/// The examples, pointed at a port where nothing listens yet, two attempts a call.
fn world() -> World {
    World::builder()
        .examples()
        .tagged(&["basic-env", "web-svc", "worker-svc"])
        .aws_down()
        .config(|c| {
            c.max_attempts(2);
        })
        .build()
}

fn message(v: &serde_json::Value) -> &str {
    v["fields"]["message"].as_str().unwrap_or("")
}

async fn template_of(moto: &str, stack: &str) -> String {
    common::cfn_client(moto)
        .get_template()
        .stack_name(stack)
        .send()
        .await
        .expect("get template")
        .template_body()
        .unwrap_or("")
        .to_string()
}

/// Every live stack is protond's, recorded exactly once, complete, and nothing is in flight
/// or left `in_progress` in the history. Returns the stacks.
async fn assert_consistent(store: &Store, moto: &str) -> Vec<LiveStack> {
    let stacks = live_stacks(moto).await;
    let tagged: Vec<&str> = stacks.iter().filter_map(LiveStack::resource).collect();
    assert_eq!(tagged.len(), stacks.len(), "untagged stacks: {stacks:#?}");
    let live: BTreeSet<&str> = tagged.iter().copied().collect();
    assert_eq!(live.len(), tagged.len(), "duplicate stacks: {tagged:?}");
    for s in &stacks {
        assert!(
            s.status == "CREATE_COMPLETE" || s.status == "UPDATE_COMPLETE",
            "{s:?}"
        );
    }
    let records = store.resources().await.expect("resources");
    let recorded: BTreeSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(recorded, live, "records and stacks disagree");
    assert!(
        records.iter().all(|r| r.status == "deployed"),
        "{records:#?}"
    );
    let in_flight = store.in_flight().await.expect("in flight");
    assert!(in_flight.is_empty(), "{in_flight:#?}");
    for d in store.deployments(None, 10_000).await.expect("history") {
        assert_ne!(d.status, "in_progress", "{d:?}");
    }
    stacks
}

// ---------------------------------------------------------------------------------------
// The fault-injecting proxy.

/// How long a held call is held: far longer than any test waits for it.
const HOLD: Duration = Duration::from_mins(1);

/// What the proxy does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Pass it through.
    Forward,
    /// Answer `CloudFormation`'s `Throttling` error without forwarding.
    Throttle,
    /// Forward it, then hold the answer: the call reached AWS, the caller never hears back.
    HoldAnswer,
    /// Hold it and never forward it: the call never reaches AWS.
    HoldRequest,
    /// Forward it, then answer a 500 instead of AWS's answer: the call took effect, the
    /// caller's SDK sees a transient error and retries.
    LoseAnswer,
}

/// A proxy in front of `moto_server` on its own thread and runtime (so tests may block). While
/// armed, `policy` decides per request, given its `Action`; disarmed, it forwards everything.
/// Dropping it stops the thread and abandons the held requests.
struct Proxy {
    url: String,
    armed: Arc<AtomicBool>,
    throttled: Arc<AtomicUsize>,
    held: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    client: reqwest::Client,
    policy: Arc<dyn Fn(&str) -> Verdict + Send + Sync>,
    armed: Arc<AtomicBool>,
    throttled: Arc<AtomicUsize>,
    held: Arc<AtomicUsize>,
}

/// The value of `key` in a form-encoded body (the AWS query protocol).
fn form_value(body: &[u8], key: &str) -> Option<String> {
    String::from_utf8_lossy(body)
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=').map(str::to_string))
}

async fn proxied(
    s: ProxyState,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let action = form_value(&body, "Action").unwrap_or_default();
    let verdict = if s.armed.load(Ordering::SeqCst) {
        (s.policy)(&action)
    } else {
        Verdict::Forward
    };
    match verdict {
        Verdict::Throttle => {
            s.throttled.fetch_add(1, Ordering::SeqCst);
            return (
                axum::http::StatusCode::BAD_REQUEST,
                [("content-type", "text/xml")],
                "<ErrorResponse xmlns=\"http://cloudformation.amazonaws.com/doc/2010-05-15/\"><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>t</RequestId></ErrorResponse>",
            )
                .into_response();
        }
        Verdict::HoldRequest => {
            s.held.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(HOLD).await;
            return (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "held by the test proxy, never forwarded",
            )
                .into_response();
        }
        Verdict::Forward | Verdict::HoldAnswer | Verdict::LoseAnswer => {}
    }
    let url = format!(
        "{}{}",
        s.upstream,
        uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut req = s.client.request(method, url).body(body);
    for (k, v) in &headers {
        if k != "host" && k != "content-length" {
            req = req.header(k, v);
        }
    }
    let response = match req.send().await {
        Ok(resp) => {
            let status = resp.status();
            let ct = resp
                .headers()
                .get("content-type")
                .cloned()
                .unwrap_or(axum::http::HeaderValue::from_static("text/xml"));
            let bytes = resp.bytes().await.unwrap_or_default();
            (status, [("content-type", ct)], bytes).into_response()
        }
        Err(e) => (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    if verdict == Verdict::HoldAnswer {
        s.held.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(HOLD).await;
    }
    if verdict == Verdict::LoseAnswer {
        return (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/xml")],
            "<ErrorResponse xmlns=\"http://cloudformation.amazonaws.com/doc/2010-05-15/\"><Error><Type>Receiver</Type><Code>InternalFailure</Code><Message>the answer was lost by the test proxy</Message></Error><RequestId>t</RequestId></ErrorResponse>",
        )
            .into_response();
    }
    response
}

impl Proxy {
    /// Starts a proxy to `upstream`, armed.
    fn start(upstream: &str, policy: impl Fn(&str) -> Verdict + Send + Sync + 'static) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let state = ProxyState {
            upstream: upstream.to_string(),
            client: reqwest::Client::new(),
            policy: Arc::new(policy),
            armed: Arc::new(AtomicBool::new(true)),
            throttled: Arc::default(),
            held: Arc::default(),
        };
        let (armed, throttled, held) = (
            state.armed.clone(),
            state.throttled.clone(),
            state.held.clone(),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("proxy runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let app = axum::Router::new().fallback(
                    move |method: axum::http::Method,
                          uri: axum::http::Uri,
                          headers: axum::http::HeaderMap,
                          body: axum::body::Bytes| {
                        proxied(state.clone(), method, uri, headers, body)
                    },
                );
                tokio::select! {
                    _ = axum::serve(listener, app) => {}
                    _ = stopped => {}
                }
            });
            // Dropping the runtime abandons the held requests.
        });
        Self {
            url,
            armed,
            throttled,
            held,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn arm(&self, on: bool) {
        self.armed.store(on, Ordering::SeqCst);
    }

    fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests are held.
    fn wait_held(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.held() < n {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------
// The AWS endpoint down, throttled; the state store locked.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_endpoint_down_then_back_loses_nothing() {
    let w = world();
    // Down: every deployment fails as retryable; nothing is recorded as deployed, nothing
    // stays in flight, and the process exits cleanly with a non-zero code.
    let out = w.run(&["reconcile", "--once"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("panicked"), "{}", text(&out));
    {
        let store = w.store().await;
        assert!(store.resources().await.expect("resources").is_empty());
        assert!(store.in_flight().await.expect("in flight").is_empty());
        let history = store.deployments(None, 100).await.expect("history");
        assert!(!history.is_empty());
        assert!(
            history.iter().all(|d| d.status == "failed" && d.retryable),
            "{history:#?}"
        );
    }
    // Back: the same command deploys everything; no stack is created twice.
    let moto = Moto::start_on(w.aws_port()).expect("moto_server starts on the same port");
    let out = w.run(&["reconcile", "--once"]);
    assert!(out.status.success(), "{}", text(&out));
    let store = w.store().await;
    let records = store.resources().await.expect("resources");
    assert_eq!(records.len(), 7, "{records:#?}");
    assert!(records.iter().all(|r| r.status == "deployed"));
    assert!(store.in_flight().await.expect("in flight").is_empty());
    drop(moto);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_state_store_is_a_clear_error_and_nothing_is_corrupted() {
    if !common::sqlite_only("an exclusive lock on the state file") {
        return;
    }
    let w = world();
    let moto = Moto::start_on(w.aws_port()).expect("moto_server");
    assert!(w.run(&["reconcile", "--once"]).status.success());
    let url = format!("sqlite://{}/state/state.db", w.root.display());
    // Someone else holds the write lock (an exclusive transaction) while protond runs.
    let pool = sqlx::SqlitePool::connect(&url).await.expect("connect");
    let mut lock = pool.acquire().await.expect("connection");
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut *lock)
        .await
        .expect("lock");
    let out = w.run(&["rollout", "halt", "web-svc/v1.0", "--reason", "test"]);
    assert!(!out.status.success(), "{}", text(&out));
    let msg = text(&out);
    assert!(
        msg.contains("state") && (msg.contains("locked") || msg.contains("busy")),
        "unclear error: {msg}"
    );
    sqlx::query("ROLLBACK")
        .execute(&mut *lock)
        .await
        .expect("unlock");
    drop(lock);
    pool.close().await;
    // Afterwards: intact, and the same command works.
    assert_eq!(integrity(&w.state_db()).await, "ok");
    assert!(
        w.run(&["rollout", "halt", "web-svc/v1.0", "--reason", "test"])
            .status
            .success()
    );
    let store = w.store().await;
    assert_eq!(store.resources().await.expect("resources").len(), 7);
    drop(moto);
}

/// `PRAGMA integrity_check` of the `SQLite` file at `path`.
async fn integrity(path: &std::path::Path) -> String {
    let url = format!("sqlite://{}", path.display());
    let check = sqlx::SqlitePool::connect(&url).await.expect("connect");
    let ok: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&check)
        .await
        .expect("integrity");
    check.close().await;
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_and_nothing_is_created_twice() {
    let w = world();
    let moto = Moto::start_on(w.aws_port()).expect("moto_server");
    // The first 5 CreateStack calls are answered with `Throttling`.
    let creates = AtomicUsize::new(0);
    let proxy = Proxy::start(&moto.url, move |action| {
        if action == "CreateStack" && creates.fetch_add(1, Ordering::SeqCst) < 5 {
            Verdict::Throttle
        } else {
            Verdict::Forward
        }
    });
    w.redirect_aws(&proxy.url);
    // Throttled calls are retried (by the SDK, then by the daemon's backoff); a second run
    // finishes whatever the first left failed as retryable.
    let first = w.run(&["reconcile", "--once"]);
    assert!(!text(&first).contains("panicked"), "{}", text(&first));
    if !first.status.success() {
        let out = w.run(&["reconcile", "--once"]);
        assert!(out.status.success(), "{}", text(&out));
    }
    assert!(
        proxy.throttled.load(Ordering::SeqCst) >= 5,
        "the proxy throttled"
    );
    let store = w.store().await;
    let stacks = assert_consistent(&store, &moto.url).await;
    assert_eq!(stacks.len(), 7, "exactly one stack per resource");
}

// ---------------------------------------------------------------------------------------
// kill -9 while a stack call is in flight.

const PROD: &str = "service_instance/payments/payments-prod";
const REPORTS: &str = "service_instance/reports/reports-dev";

/// The examples behind a disarmed proxy that, once armed, applies `verdict` to every
/// `action` call.
struct Faulty {
    w: World,
    moto: Moto,
    proxy: Proxy,
}

impl Faulty {
    fn new(action: &'static str, verdict: Verdict) -> Self {
        let w = world();
        let moto = Moto::start_on(w.aws_port()).expect("moto_server");
        let proxy = Proxy::start(&moto.url, move |a| {
            if a == action {
                verdict
            } else {
                Verdict::Forward
            }
        });
        proxy.arm(false);
        w.redirect_aws(&proxy.url);
        Self { w, moto, proxy }
    }

    fn converge(&self) {
        let out = self.w.run(&["reconcile", "--once"]);
        assert!(out.status.success(), "{}", text(&out));
    }

    /// Runs `protond run` with the proxy armed and kills it (SIGKILL) once it logged
    /// `started` and every deployment it has in flight is held at the proxy. Disarms the
    /// proxy and returns the deployments the dead process left in flight.
    async fn kill_9_while_held(&self, started: &str) -> Vec<DeploymentRecord> {
        self.proxy.arm(true);
        let mut daemon = self.w.spawn(&["run", "--no-server"]);
        assert!(
            daemon.wait_for(Duration::from_mins(1), |v| message(v) == started),
            "the daemon did not start a deployment:\n{}",
            daemon.log()
        );
        assert!(
            self.proxy.wait_held(1, Duration::from_secs(30)),
            "no call was held:\n{}",
            daemon.log()
        );
        // Calls started in the same cycle (two environments at once): let each reach the
        // proxy before the kill.
        let store = self.w.store().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline
            && store.in_flight().await.expect("in flight").len() > self.proxy.held()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let status = daemon.kill_9();
        assert_eq!(
            status.signal(),
            Some(9),
            "the daemon had already exited: {status:?}\n{}",
            daemon.log()
        );
        self.proxy.arm(false);
        let in_flight = store.in_flight().await.expect("in flight");
        assert!(
            !in_flight.is_empty(),
            "nothing was in flight:\n{}",
            daemon.log()
        );
        in_flight
    }

    /// `reconcile --once` after the kill: succeeds, adopting what was in flight.
    fn restart(&self) -> String {
        let out = self.w.run(&["reconcile", "--once"]);
        let log = text(&out);
        assert!(out.status.success(), "{log}");
        assert!(log.contains("Adopted an in-flight deployment."), "{log}");
        log
    }
}

async fn record(store: &Store, id: &str) -> Option<protond::state::ResourceRecord> {
    store
        .resources()
        .await
        .expect("resources")
        .into_iter()
        .find(|r| r.id == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_create_adopts_the_stack_it_created() {
    let f = Faulty::new("CreateStack", Verdict::HoldAnswer);
    let killed = f.kill_9_while_held("Deployment started.").await;
    // The calls reached AWS: the stacks exist, tagged with the in-flight deployments, and
    // nothing is recorded as deployed yet.
    let stacks = live_stacks(&f.moto.url).await;
    for d in &killed {
        assert_eq!(d.deployment.action, "create", "{d:?}");
        let stack = stacks
            .iter()
            .find(|s| s.resource() == Some(d.deployment.resource_id.as_str()))
            .unwrap_or_else(|| panic!("no stack for {d:?}: {stacks:#?}"));
        assert_eq!(
            stack.tags.get("protond:deployment"),
            Some(&d.id.to_string())
        );
    }
    let store = f.w.store().await;
    assert!(store.resources().await.expect("resources").is_empty());

    f.restart();
    let stacks = assert_consistent(&store, &f.moto.url).await;
    assert_eq!(stacks.len(), 7);
    // Adopted, not created a second time.
    for d in &killed {
        let history = store
            .deployments(Some(&d.deployment.resource_id), 100)
            .await
            .expect("history");
        assert_eq!(history.len(), 1, "{history:#?}");
        assert_eq!(history[0].id, d.id);
        assert_eq!(history[0].status, "succeeded", "{history:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_before_a_create_reaches_aws_retries_it_once() {
    let f = Faulty::new("CreateStack", Verdict::HoldRequest);
    let killed = f.kill_9_while_held("Deployment started.").await;
    // Nothing reached AWS.
    assert!(live_stacks(&f.moto.url).await.is_empty());

    f.restart();
    let store = f.w.store().await;
    let stacks = assert_consistent(&store, &f.moto.url).await;
    assert_eq!(stacks.len(), 7);
    // The interrupted deployment is recorded as such, and a new one created the stack.
    for d in &killed {
        let history = store
            .deployments(Some(&d.deployment.resource_id), 100)
            .await
            .expect("history");
        let row = history.iter().find(|x| x.id == d.id).expect("row");
        common::assert_interrupted(row);
        assert_eq!(history.len(), 2, "{history:#?}");
        assert_eq!(history[0].status, "succeeded", "{history:#?}");
        assert_eq!(history[0].deployment.action, "create");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_update_records_the_new_inputs() {
    let f = Faulty::new("UpdateStack", Verdict::HoldAnswer);
    f.converge();
    let store = f.w.store().await;
    let before = record(&store, PROD).await.expect("prod");
    f.w.edit("payments", "proton/services/payments.yaml", |t| {
        t.replacen("desired_count: 3", "desired_count: 6", 1)
    });
    f.w.commit("payments", "scale prod");

    let killed = f.kill_9_while_held("Deployment started.").await;
    let [d] = killed.as_slice() else {
        panic!("one update in flight: {killed:#?}")
    };
    assert_eq!(d.deployment.resource_id, PROD);
    assert_eq!(d.deployment.action, "update");
    assert_eq!(d.deployment.reason.as_deref(), Some("spec_change"));
    assert_ne!(d.deployment.input_hash, before.input_hash);
    // The update reached AWS; the record still has the old inputs.
    let stacks = live_stacks(&f.moto.url).await;
    let stack = stacks
        .iter()
        .find(|s| s.resource() == Some(PROD))
        .expect("prod stack");
    assert!(
        template_of(&f.moto.url, &stack.name)
            .await
            .contains("count=6"),
        "the update did not reach moto"
    );
    assert_eq!(
        stack.tags.get("protond:deployment"),
        Some(&d.id.to_string())
    );
    assert_eq!(
        record(&store, PROD).await.expect("prod").input_hash,
        before.input_hash
    );

    f.restart();
    let stacks = assert_consistent(&store, &f.moto.url).await;
    assert_eq!(stacks.len(), 7);
    let after = record(&store, PROD).await.expect("prod");
    assert_eq!(after.input_hash, d.deployment.input_hash);
    assert_eq!(after.rendered_hash, d.deployment.rendered_hash);
    assert_ne!(after.rendered_hash, before.rendered_hash);
    assert_eq!(after.spec_commit, d.deployment.spec_commit);
    // The adopted update finished it: no second update.
    let history = store.deployments(Some(PROD), 100).await.expect("history");
    assert_eq!(history[0].id, d.id, "{history:#?}");
    assert_eq!(history[0].status, "succeeded");
    let stack = stacks
        .iter()
        .find(|s| s.resource() == Some(PROD))
        .expect("prod stack");
    assert!(
        template_of(&f.moto.url, &stack.name)
            .await
            .contains("count=6")
    );
}

/// Converges, then removes the reports service from the payments repo.
fn retire_reports(f: &Faulty) {
    f.converge();
    std::fs::remove_file(f.w.root.join("payments/proton/services/reports.yaml")).expect("rm");
    f.w.commit("payments", "retire reports");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_delete_removes_the_record() {
    let f = Faulty::new("DeleteStack", Verdict::HoldAnswer);
    retire_reports(&f);
    let killed = f.kill_9_while_held("Delete started.").await;
    let [d] = killed.as_slice() else {
        panic!("one delete in flight: {killed:#?}")
    };
    assert_eq!(d.deployment.resource_id, REPORTS);
    assert_eq!(d.deployment.action, "delete");
    // The delete reached AWS; the record is still there.
    assert!(
        !live_stacks(&f.moto.url)
            .await
            .iter()
            .any(|s| s.resource() == Some(REPORTS))
    );
    let store = f.w.store().await;
    assert!(record(&store, REPORTS).await.is_some());

    f.restart();
    let stacks = assert_consistent(&store, &f.moto.url).await;
    assert_eq!(stacks.len(), 6);
    assert!(record(&store, REPORTS).await.is_none());
    let history = store
        .deployments(Some(REPORTS), 100)
        .await
        .expect("history");
    assert_eq!(history[0].id, d.id, "{history:#?}");
    assert_eq!(history[0].status, "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_before_a_delete_reaches_aws_retries_it() {
    let f = Faulty::new("DeleteStack", Verdict::HoldRequest);
    retire_reports(&f);
    let killed = f.kill_9_while_held("Delete started.").await;
    let [d] = killed.as_slice() else {
        panic!("one delete in flight: {killed:#?}")
    };
    assert_eq!(d.deployment.resource_id, REPORTS);
    // Nothing reached AWS: the stack is still there.
    assert!(
        live_stacks(&f.moto.url)
            .await
            .iter()
            .any(|s| s.resource() == Some(REPORTS))
    );

    f.restart();
    let store = f.w.store().await;
    let stacks = assert_consistent(&store, &f.moto.url).await;
    assert_eq!(stacks.len(), 6);
    assert!(record(&store, REPORTS).await.is_none());
    let history = store
        .deployments(Some(REPORTS), 100)
        .await
        .expect("history");
    let row = history.iter().find(|x| x.id == d.id).expect("row");
    common::assert_interrupted(row);
    assert_eq!(history[0].deployment.action, "delete");
    assert_eq!(history[0].status, "succeeded", "{history:#?}");
}

// ---------------------------------------------------------------------------------------
// Spec remotes that vanish or are force-pushed to an empty branch.

/// Whether one of the JSON log lines of `out` satisfies `pred`.
fn logged(out: &Output, pred: impl Fn(&serde_json::Value) -> bool) -> bool {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .any(|l| serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| pred(&v)))
}

/// The resource ids `protond status --output json` lists.
fn status_ids(w: &World) -> BTreeSet<String> {
    let out = w.run(&["status", "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    v["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_and_emptied_spec_remotes_delete_nothing() {
    let w = world();
    let moto = Moto::start_on(w.aws_port()).expect("moto_server");
    // A sixth resource in the payments repo, so that emptying it exceeds the default
    // deletion budget (5).
    w.edit("payments", "proton/services/reports.yaml", |t| {
        format!(
            "{t}  - name: reports-prod\n    environment: prod\n    spec:\n      visibility_timeout: 120\n      max_receive_count: 3\n      use_dead_letter_queue: true\n      schedule: hourly\n"
        )
    });
    w.commit("payments", "reports in prod");
    let out = w.run(&["reconcile", "--once"]);
    assert!(out.status.success(), "{}", text(&out));
    let store = w.store().await;
    let stacks = assert_consistent(&store, &moto.url).await;
    assert_eq!(stacks.len(), 8);
    let all: BTreeSet<String> = stacks
        .iter()
        .filter_map(|s| s.resource().map(str::to_string))
        .collect();
    let in_payments = store
        .resources()
        .await
        .expect("resources")
        .iter()
        .filter(|r| r.repo == "payments")
        .count();
    assert_eq!(in_payments, 6);
    let deployments = store
        .deployments(None, 10_000)
        .await
        .expect("history")
        .len();
    // Nothing deleted, nothing deployed at all: every stack and record is still there.
    let unchanged = || async {
        assert_eq!(
            store
                .deployments(None, 10_000)
                .await
                .expect("history")
                .len(),
            deployments,
            "something was deployed"
        );
        let stacks = assert_consistent(&store, &moto.url).await;
        assert_eq!(stacks.len(), 8);
    };

    // (a) The remote vanishes (its mirror in data/ remains): a fetch failure, named; the
    // last fetched state is used, and `--once` says so in its exit code.
    let payments = w.root.join("payments");
    let moved = w.root.join("payments.moved");
    std::fs::rename(&payments, &moved).expect("move the remote away");
    let out = w.run(&["reconcile", "--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "problem: spec repo payments: not fetched; read as last fetched: failed to fetch"
        ),
        "the fetch failure is not named: {}",
        text(&out)
    );
    assert!(
        logged(&out, |v| message(v) == "Repos skipped this cycle."
            && v["fields"]["repos"].as_str().is_some_and(
                |r| r.contains("spec repo payments: not fetched")
            )),
        "the cycle's event: {}",
        text(&out)
    );
    unchanged().await;
    assert_eq!(status_ids(&w), all);
    std::fs::rename(&moved, &payments).expect("restore the remote");

    // (b) The branch is force-pushed to an orphan commit without any file.
    let old = git(&payments, &["rev-parse", "main"]).trim().to_string();
    git(&payments, &["checkout", "-q", "--orphan", "emptied"]);
    git(&payments, &["rm", "-q", "-r", "-f", "."]);
    git(&payments, &["commit", "-q", "--allow-empty", "-m", "empty"]);
    git(&payments, &["branch", "-f", "main", "emptied"]);
    let out = w.run(&["reconcile", "--once"]);
    // Something could not be acted on: a non-zero exit, with the problem printed.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "problem: spec repo payments: the spec folder proton/ on main is empty or missing"
        ),
        "{}",
        text(&out)
    );
    assert!(
        logged(&out, |v| v["fields"]["problem"].as_str().is_some_and(|p| p
            .starts_with(
                "spec repo payments: the spec folder proton/ on main is empty or missing"
            )
            && p.contains("set allow_empty = true")
            && p.contains("will not be changed or deleted"))),
        "the empty branch is not refused clearly: {}",
        text(&out)
    );
    unchanged().await;

    // (c) With allow_empty = true, a missing or empty spec folder means "delete everything":
    // 6 deletes exceed the default budget of 5, and nothing is deleted.
    w.edit_config(|t| {
        t.replace(
            "url = \"payments\"",
            "url = \"payments\"\nallow_empty = true",
        )
    });
    let out = w.run(&["reconcile", "--once"]);
    assert!(
        logged(&out, |v| message(v).contains("deletion budget")
            && v["fields"]["deletes"] == 6
            && v["fields"]["budget"] == 5),
        "the deletion budget did not refuse: {}",
        text(&out)
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("problem: 6 deletions refused: the per-cycle deletion budget is 5"),
        "{}",
        text(&out)
    );
    unchanged().await;
    std::fs::create_dir_all(payments.join("proton")).expect("mkdir");
    std::fs::write(payments.join("proton/README.md"), "Nothing here.\n").expect("write");
    w.commit("payments", "empty spec folder");
    git(&payments, &["branch", "-f", "main", "emptied"]);
    let out = w.run(&["reconcile", "--once"]);
    assert!(
        logged(&out, |v| message(v).contains("deletion budget")
            && v["fields"]["deletes"] == 6
            && v["fields"]["budget"] == 5),
        "the deletion budget did not refuse: {}",
        text(&out)
    );
    unchanged().await;

    // (d) The old history restored: a no-op.
    git(&payments, &["branch", "-f", "main", &old]);
    let out = w.run(&["reconcile", "--once"]);
    assert!(out.status.success(), "{}", text(&out));
    unchanged().await;
    assert_eq!(status_ids(&w), all);
}

// ---------------------------------------------------------------------------------------
// The state store out of space.

/// Free bytes on the filesystem holding `dir`.
fn free_bytes(dir: &std::path::Path) -> u64 {
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(dir)
        .output()
        .expect("df runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df output")
}

/// A tmpfs this test mounted; unmounted when dropped (lazily if still busy), also when the
/// test fails.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` on `dir`, unless mounting is not allowed here (or
    /// `PROTOND_TEST_NO_TMPFS` is set).
    fn mount(dir: &std::path::Path, size: &str) -> Option<Self> {
        if std::env::var_os("PROTOND_TEST_NO_TMPFS").is_some() {
            return None;
        }
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .ok()?;
        out.status.success().then(|| Self(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        for _ in 0..20 {
            let done = Command::new("umount")
                .arg(&self.0)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if done {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// `cmd` run under a file-size limit of `kib` KiB (`ulimit -f`), with SIGXFSZ ignored so
/// that writes beyond it fail with EFBIG instead of killing the process.
fn with_file_size_limit(cmd: &Command, kib: u64) -> Command {
    let mut c = Command::new("bash");
    c.arg("-c")
        .arg("trap '' XFSZ; ulimit -f \"$1\" || exit 99; shift; exec \"$@\"")
        .arg("protond-limited")
        .arg(kib.to_string())
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_state_store_is_a_clear_error_and_nothing_is_corrupted() {
    if !common::sqlite_only("a full filesystem under the state file") {
        return;
    }
    let w = world();
    let moto = Moto::start_on(w.aws_port()).expect("moto_server");
    let state = w.root.join("state");
    std::fs::create_dir_all(&state).expect("state folder");
    // Only the state folder is small: the git mirrors in data/ are elsewhere.
    let tmpfs = Tmpfs::mount(&state, "1m");
    let db = w.state_db();
    // The store exists (empty) before space runs out.
    let out = w.run(&["status"]);
    assert!(out.status.success(), "{}", text(&out));

    // Deploying all 7 resources from scratch writes far more than is left.
    let reconcile = w.command(&["reconcile", "--once"]);
    let out = if tmpfs.is_some() {
        eprintln!("state store full: tmpfs (ENOSPC)");
        let free = free_bytes(&state);
        let leave = 160 * 1024;
        assert!(free > leave, "tmpfs too small: {free}");
        let filler = vec![0u8; usize::try_from(free - leave).expect("size")];
        std::fs::write(state.join("filler"), filler).expect("fill the tmpfs");
        w.run(&["reconcile", "--once"])
    } else {
        eprintln!("state store full: file-size limit (EFBIG)");
        with_file_size_limit(&reconcile, 256)
            .output()
            .expect("protond runs")
    };
    let log = text(&out);
    assert_ne!(out.status.code(), Some(0), "{log}");
    assert_ne!(out.status.code(), Some(99), "ulimit -f failed: {log}");
    assert!(out.status.code().is_some(), "killed by a signal: {log}");
    assert!(!log.contains("panicked"), "{log}");
    let error = String::from_utf8_lossy(&out.stderr)
        .lines()
        .find(|l| l.starts_with("error: "))
        .map_or_else(|| panic!("no error line: {log}"), str::to_string);
    for part in [
        format!("cannot write the state database {}", db.display()),
        "free space on the filesystem holding it".to_string(),
    ] {
        assert!(
            error.contains(&part),
            "unclear error, {part:?} missing: {error}"
        );
    }
    assert!(
        error.contains("database or disk is full") || error.contains("disk I/O error"),
        "the cause is missing: {error}"
    );

    // Space again; the file is intact.
    if tmpfs.is_some() {
        std::fs::remove_file(state.join("filler")).expect("remove the filler");
    }
    assert_eq!(integrity(&db).await, "ok");
    {
        // Nothing is recorded as deployed that is not live.
        let store = w.store().await;
        let live = live_stacks(&moto.url).await;
        let records = store.resources().await.expect("resources");
        for r in &records {
            assert!(
                live.iter().any(|s| s.resource() == Some(r.id.as_str())),
                "{} is recorded but not live",
                r.id
            );
        }
        eprintln!(
            "when the store filled: {} stacks live, {} recorded, {} in flight",
            live.len(),
            records.len(),
            store.in_flight().await.expect("in flight").len()
        );
    }
    // The same command converges.
    let out = w.run(&["reconcile", "--once"]);
    assert!(out.status.success(), "{}", text(&out));
    let store = w.store().await;
    let stacks = assert_consistent(&store, &moto.url).await;
    assert_eq!(stacks.len(), 7);
    assert_eq!(integrity(&db).await, "ok");
    drop(store);
    drop(tmpfs);
}

/// A proxy to `moto` that gives the first `action` call `verdict` and forwards everything
/// else; the flag is set once that call came.
fn first_call(moto: &str, action: &'static str, verdict: Verdict) -> (Proxy, Arc<AtomicBool>) {
    let came = Arc::new(AtomicBool::new(false));
    let once = came.clone();
    let proxy = Proxy::start(moto, move |a| {
        if a == action && !once.swap(true, Ordering::SeqCst) {
            verdict
        } else {
            Verdict::Forward
        }
    });
    (proxy, came)
}

/// Adds `line` to the config's `[aws]` section.
fn aws_key(w: &World, line: &str) {
    w.edit_config(|t| {
        t.replacen(
            "max_attempts = 2\n",
            &format!("max_attempts = 2\n{line}\n"),
            1,
        )
    });
}

/// The 7 example resources are deployed, each by exactly one successful deployment.
async fn seven_deployed_once_each(store: &Store, moto: &str) {
    let stacks = assert_consistent(store, moto).await;
    assert_eq!(stacks.len(), 7);
    for s in &stacks {
        let id = s.resource().expect("tagged");
        let history = store.deployments(Some(id), 100).await.expect("history");
        assert_eq!(history.len(), 1, "{history:#?}");
        assert_eq!(history[0].status, "succeeded", "{history:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_answer_was_lost_is_adopted_with_one_stack_and_one_row() {
    let w = world();
    let moto = Moto::start_on(w.aws_port()).expect("moto_server");
    // The first CreateStack takes effect, but its answer is lost; the SDK retries it and
    // CloudFormation answers that the stack already exists.
    let (proxy, lost) = first_call(&moto.url, "CreateStack", Verdict::LoseAnswer);
    w.redirect_aws(&proxy.url);
    let out = w.run(&["reconcile", "--once"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(lost.load(Ordering::SeqCst), "no answer was lost");
    // The retried create met the stack its first attempt made: read, passed the ownership
    // gate (this resource, this installation) and taken over with an update that changes
    // nothing.
    assert!(
        text(&out).contains("A stack of this resource already exists under its name"),
        "{}",
        text(&out)
    );
    seven_deployed_once_each(&w.store().await, &moto.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_poll_never_answered_is_retried_not_waited_for_forever() {
    // One deployment at a time: `moto_server` is not safe against a stack read while
    // another of its calls is still creating resources (it then answers 500 for that stack
    // from then on), which a retried call makes likelier.
    let w = World::builder()
        .examples()
        .tagged(&["basic-env", "web-svc", "worker-svc"])
        .aws_down()
        .config(|c| {
            c.max_attempts(2).section("[daemon]\nconcurrency = 1");
        })
        .build();
    let moto = Moto::start_on(w.aws_port()).expect("moto_server");
    // The first status poll reaches CloudFormation, but its answer never comes back (a
    // connection dropped on the way, an endpoint that accepted and went silent).
    let (proxy, _) = first_call(&moto.url, "DescribeStacks", Verdict::HoldAnswer);
    w.redirect_aws(&proxy.url);
    aws_key(&w, "call_timeout = \"2s\"");
    let started = Instant::now();
    let out = w.run(&["reconcile", "--once"]);
    let took = started.elapsed();
    assert!(out.status.success(), "{}", text(&out));
    assert!(proxy.wait_held(1, Duration::ZERO), "no answer was held");
    // The held answer would come only after HOLD: the attempt timed out and was retried.
    assert!(
        took < HOLD,
        "reconcile --once waited {took:?} for an answer that never came\n{}",
        text(&out)
    );
    seven_deployed_once_each(&w.store().await, &moto.url).await;
}

#[test]
fn a_zero_call_timeout_is_refused_naming_the_key() {
    let w = world();
    aws_key(&w, "call_timeout = \"0s\"");
    let out = w.run(&["check-config"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("aws.call_timeout"), "{}", text(&out));
    assert!(text(&out).contains("longer than zero"), "{}", text(&out));
}
