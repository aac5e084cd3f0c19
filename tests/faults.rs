//! Faults: the AWS endpoint down and back, throttling, and the state store locked by
//! someone else.
//! Real git repos, the `protond` binary, moto_server and a real SQLite file.

use std::path::PathBuf;
use std::process::Output;

mod common;
use common::protond;

use protond::demo::LocalAws as Moto;
use protond::state::Store;

struct World {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    port: u16,
}

impl World {
    /// The examples, pointed at a port where nothing listens yet.
    fn new() -> Self {
        let (tmp, root) = common::tagged_examples();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let toml = format!(
            "state = \"sqlite://state/state.db\"\ndata_dir = \"data\"\n\
             [aws]\nregion = \"us-east-1\"\nendpoint_url = \"http://127.0.0.1:{port}\"\npoll_interval = \"200ms\"\nmax_attempts = 2\nchange_sets = false\n\
             [[template_repos]]\nname = \"platform-templates\"\nurl = \"platform-templates\"\n\
             [[spec_repos]]\nname = \"platform-envs\"\nurl = \"platform-envs\"\nplatform = true\n\
             [[spec_repos]]\nname = \"payments\"\nurl = \"payments\"\n"
        );
        std::fs::write(root.join("proton.toml"), toml).expect("config");
        Self {
            _tmp: tmp,
            root,
            port,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        protond(&self.root.join("proton.toml"), args)
            .output()
            .expect("protond runs")
    }

    async fn store(&self) -> Store {
        Store::open(&format!("sqlite://{}/state/state.db", self.root.display()))
            .await
            .expect("store")
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_endpoint_down_then_back_loses_nothing() {
    let w = World::new();
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
    let moto = Moto::start_on(w.port).expect("moto_server starts on the same port");
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
    let w = World::new();
    let moto = Moto::start_on(w.port).expect("moto_server");
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
    let check = sqlx::SqlitePool::connect(&url).await.expect("connect");
    let ok: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&check)
        .await
        .expect("integrity");
    assert_eq!(ok, "ok");
    check.close().await;
    assert!(
        w.run(&["rollout", "halt", "web-svc/v1.0", "--reason", "test"])
            .status
            .success()
    );
    let store = w.store().await;
    assert_eq!(store.resources().await.expect("resources").len(), 7);
    drop(moto);
}

/// A proxy in front of moto_server that answers the first `throttle` CreateStack calls with
/// CloudFormation's `Throttling` error and forwards everything else.
async fn throttling_proxy(
    upstream: String,
    throttle: usize,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let throttled = Arc::new(AtomicUsize::new(0));
    let count = throttled.clone();
    let client = reqwest::Client::new();
    let app = axum::Router::new().fallback(
        move |method: axum::http::Method,
              uri: axum::http::Uri,
              headers: axum::http::HeaderMap,
              body: axum::body::Bytes| {
            let client = client.clone();
            let upstream = upstream.clone();
            let count = count.clone();
            async move {
                use axum::response::IntoResponse as _;
                if String::from_utf8_lossy(&body).contains("Action=CreateStack")
                    && count.fetch_add(1, Ordering::SeqCst) < throttle
                {
                    return (
                        axum::http::StatusCode::BAD_REQUEST,
                        [("content-type", "text/xml")],
                        "<ErrorResponse xmlns=\"http://cloudformation.amazonaws.com/doc/2010-05-15/\"><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>t</RequestId></ErrorResponse>",
                    )
                        .into_response();
                }
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
                match req.send().await {
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
                }
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), throttled)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_and_nothing_is_created_twice() {
    let w = World::new();
    let moto = Moto::start_on(w.port).expect("moto_server");
    let (proxy, throttled) = throttling_proxy(moto.url.clone(), 5).await;
    let cfg = w.root.join("proton.toml");
    let text_cfg = std::fs::read_to_string(&cfg)
        .expect("config")
        .replace(&format!("http://127.0.0.1:{}", w.port), &proxy);
    std::fs::write(&cfg, text_cfg).expect("config");
    // Throttled calls are retried (by the SDK, then by the daemon's backoff); a second run
    // finishes whatever the first left failed as retryable.
    let first = w.run(&["reconcile", "--once"]);
    assert!(!text(&first).contains("panicked"), "{}", text(&first));
    if !first.status.success() {
        let out = w.run(&["reconcile", "--once"]);
        assert!(out.status.success(), "{}", text(&out));
    }
    assert!(
        throttled.load(std::sync::atomic::Ordering::SeqCst) >= 5,
        "the proxy throttled"
    );
    let store = w.store().await;
    let records = store.resources().await.expect("resources");
    assert_eq!(records.len(), 7, "{records:#?}");
    assert!(store.in_flight().await.expect("in flight").is_empty());
    // Exactly one stack per resource on moto.
    let stacks = common::cfn_client(&moto.url)
        .describe_stacks()
        .send()
        .await
        .expect("stacks");
    let live = stacks
        .stacks()
        .iter()
        .filter(|s| s.stack_status().map(|x| x.as_str()) != Some("DELETE_COMPLETE"))
        .count();
    assert_eq!(live, 7);
}
