//! The deploy path, counted at the wire: a stack this installation has no record of costs two
//! `CloudFormation` calls (`CreateStack`, then `DescribeStacks` until it settles, no read
//! before the create); a stack already under the name takes the adoption path (read, the
//! ownership gate, then an update) and is never created twice; and instances start as soon
//! as their environment succeeds, not at the next poll. Every call goes through a recording
//! proxy on 127.0.0.1 in front of a real `moto_server`; the real `protond` binary, real git
//! repos and a real `SQLite` file.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::text;
use crate::common::world::World;

/// One `CloudFormation` call as the proxy saw it: when its answer went back, its `Action`,
/// its `StackName` (empty when none), and whether the answer was an error.
#[derive(Debug, Clone)]
struct Call {
    answered: Instant,
    action: String,
    stack: String,
    error: bool,
}

/// A proxy in front of `moto_server` on its own thread and runtime, recording every call it
/// forwards. Dropping it stops the thread.
struct Recorder {
    url: String,
    calls: Arc<Mutex<Vec<Call>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The value of `key` in a form-encoded body (the AWS query protocol), percent-decoded.
fn form_value(body: &[u8], key: &str) -> String {
    let raw = String::from_utf8_lossy(body)
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=').map(str::to_string))
        .unwrap_or_default();
    raw.replace("%2F", "/").replace("%3A", ":")
}

async fn forward(
    upstream: Arc<String>,
    client: reqwest::Client,
    calls: Arc<Mutex<Vec<Call>>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let action = form_value(&body, "Action");
    let stack = form_value(&body, "StackName");
    let url = format!(
        "{upstream}{}",
        uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut req = client.request(method, url).body(body);
    for (k, v) in &headers {
        if k != "host" && k != "content-length" {
            req = req.header(k, v);
        }
    }
    let (status, ct, bytes) = match req.send().await {
        Ok(resp) => {
            let status = resp.status();
            let ct = resp
                .headers()
                .get("content-type")
                .cloned()
                .unwrap_or(axum::http::HeaderValue::from_static("text/xml"));
            (status, ct, resp.bytes().await.unwrap_or_default())
        }
        Err(e) => (
            axum::http::StatusCode::BAD_GATEWAY,
            axum::http::HeaderValue::from_static("text/plain"),
            axum::body::Bytes::from(e.to_string()),
        ),
    };
    if !action.is_empty() {
        calls.lock().expect("calls").push(Call {
            answered: Instant::now(),
            action,
            stack,
            error: !status.is_success(),
        });
    }
    (status, [("content-type", ct)], bytes).into_response()
}

impl Recorder {
    fn start(upstream: &str) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let upstream = Arc::new(upstream.to_string());
        let recorded = calls.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("proxy runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let client = reqwest::Client::new();
                let app = axum::Router::new().fallback(
                    move |method: axum::http::Method,
                          uri: axum::http::Uri,
                          headers: axum::http::HeaderMap,
                          body: axum::body::Bytes| {
                        forward(
                            upstream.clone(),
                            client.clone(),
                            recorded.clone(),
                            method,
                            uri,
                            headers,
                            body,
                        )
                    },
                );
                tokio::select! {
                    _ = axum::serve(listener, app) => {}
                    _ = stopped => {}
                }
            });
        });
        Self {
            url,
            calls,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The calls so far, and forgets them.
    fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().expect("calls"))
    }

    fn snapshot(&self) -> Vec<Call> {
        self.calls.lock().expect("calls").clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The calls made on each stack, in order, by stack name.
fn per_stack(calls: &[Call]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in calls.iter().filter(|c| c.stack.starts_with("protond-")) {
        let mark = if c.error { "!" } else { "" };
        out.entry(c.stack.clone())
            .or_default()
            .push(format!("{}{mark}", c.action));
    }
    out
}

/// Every stack on the `moto_server` at `url`: name to `StackId`.
async fn stack_ids(url: &str) -> BTreeMap<String, String> {
    let out = crate::common::cfn_client(url)
        .describe_stacks()
        .send()
        .await
        .expect("describe stacks");
    out.stacks()
        .iter()
        .map(|s| {
            (
                s.stack_name().unwrap_or_default().to_string(),
                s.stack_id().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The examples on `moto_server`, behind a recording proxy, with a fixed installation name
/// (the state file may then be thrown away and recreated).
fn world(top: &'static [&'static str]) -> (World, Recorder) {
    let w = World::examples_on_moto()
        .config(move |c| {
            c.top("installation = \"ours\"");
            for line in top {
                c.top(line);
            }
        })
        .build();
    let proxy = Recorder::start(w.aws_url());
    w.redirect_aws(&proxy.url);
    (w, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_is_two_calls_and_a_stack_already_there_takes_the_adoption_path() {
    let (w, proxy) = world(&[]);
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    let calls = proxy.take();
    let stacks = per_stack(&calls);
    // Seven resources, seven stacks, each created directly and read once as it settled
    // (moto_server completes a create at once): two calls per stack, like a plain loop.
    assert_eq!(stacks.len(), 7, "{stacks:#?}");
    for (stack, actions) in &stacks {
        assert_eq!(actions, &["CreateStack", "DescribeStacks"], "{stack}");
    }
    let total = calls
        .iter()
        .filter(|c| c.action != "AssumeRole" && c.action != "GetCallerIdentity")
        .count();
    eprintln!("first run: {total} calls for {} stacks", stacks.len());
    assert!(total <= 2 * stacks.len(), "{total} calls: {calls:#?}");

    // The state is lost (a restored backup, a new machine): every stack is already there,
    // tagged as this installation's. The creates meet them, read them, pass the ownership
    // gate and take them over with an update that changes nothing; no stack is created
    // twice and each keeps its StackId.
    let before = stack_ids(w.aws_url()).await;
    std::fs::remove_file(w.state_db()).expect("remove the state file");
    let _ = std::fs::remove_file(w.state_db().with_extension("db-wal"));
    let _ = std::fs::remove_file(w.state_db().with_extension("db-shm"));
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("A stack of this resource already exists under its name"),
        "{}",
        text(&out)
    );
    let after = stack_ids(w.aws_url()).await;
    assert_eq!(before, after);
    let adopted = per_stack(&proxy.take());
    for (stack, actions) in &adopted {
        assert_eq!(
            actions.first().map(String::as_str),
            Some("CreateStack!"),
            "{stack}: {actions:?}"
        );
        assert_eq!(
            actions.get(1).map(String::as_str),
            Some("DescribeStacks"),
            "{stack}: {actions:?}"
        );
        assert_eq!(
            actions
                .iter()
                .filter(|a| a.starts_with("CreateStack"))
                .count(),
            1,
            "{stack}: {actions:?}"
        );
    }
    let store = w.store().await;
    let records = store.resources().await.expect("resources");
    assert_eq!(records.len(), 7, "{records:#?}");
    for r in &records {
        let stack_id = r.placement.stack_id.clone();
        assert!(
            stack_id.is_some() && after.values().any(|id| Some(id) == stack_id.as_ref()),
            "{r:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_start_as_soon_as_their_environment_succeeds() {
    // Polling once a minute: only the end of a deployment can start the next cycle soon.
    let (w, proxy) = world(&["poll_interval = \"60s\""]);
    let mut daemon = w.spawn(&["run", "--no-server"]);
    let started = Instant::now();
    // Every stack created, environments first.
    loop {
        let creates = proxy
            .snapshot()
            .iter()
            .filter(|c| c.action == "CreateStack" && !c.error)
            .count();
        if creates == 7 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(50),
            "only {creates} stacks created in 50 s (the poll is 60 s):\n{}",
            {
                daemon.terminate();
                daemon.wait();
                daemon.log()
            }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let calls = proxy.snapshot();
    let stack_of = |resource: &str| protond::provision::cloudformation::stack_name(resource);
    // The environment instances deploy into settles (its last read), then its first
    // instance's create.
    let env = stack_of("environment/dev");
    let settled = calls
        .iter()
        .filter(|c| c.stack == env && c.action == "DescribeStacks")
        .map(|c| c.answered)
        .max()
        .expect("the environment was read");
    let instance = stack_of("service_instance/payments/payments-dev");
    let created = calls
        .iter()
        .find(|c| c.stack == instance && c.action == "CreateStack")
        .map(|c| c.answered)
        .expect("the instance was created");
    assert!(created > settled, "the instance was created first");
    let latency = created - settled;
    eprintln!("environment success to its first instance's CreateStack: {latency:?}");
    assert!(
        latency < Duration::from_secs(10),
        "{latency:?}: the instance waited for a poll"
    );
    daemon.terminate();
    assert!(daemon.wait().success(), "{}", daemon.log());
}
