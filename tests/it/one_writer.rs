//! One writer per state file: while a `protond run` holds the state's writer lock, a second
//! `protond run` and a `protond reconcile --once` on the same config are refused at once
//! (exit 2, naming the holder's PID, host and start time), the read-only commands (`status`,
//! `plan --no-fetch`, the HTTP API) keep working, and the first daemon finishes its work
//! untouched. After `kill -9` of the holder the kernel has released the lock and the next
//! writer gets it.
//!
//! Real processes, a real `SQLite` file and a `moto_server`. The daemon's creates are held by a
//! small gate in front of `moto_server` ([`Gate`]) so that its deployments are in flight while
//! the other commands run. This file keeps its own helpers (besides `common`'s git and
//! process ones) so that it moves as one piece.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common;
use protond::demo::LocalAws as Moto;
use protond::model::DeploymentStatus;
use protond::state::Store;

/// How long a refused writer may take, from spawn to exit (it must not wait for the lock).
const REFUSED_WITHIN: Duration = Duration::from_secs(10);

/// A free TCP port on 127.0.0.1.
fn free_port() -> u16 {
    common::free_port()
}

/// The example repos and a config whose AWS endpoint is `endpoint`.
struct World {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl World {
    fn new(endpoint: &str) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_path_buf();
        for name in ["platform-templates", "platform-envs", "payments"] {
            let dir = root.join(name);
            common::copy_tree(&common::examples().join(name), &dir);
            common::git(&dir, &["init", "-q", "-b", "main"]);
            common::git(&dir, &["add", "-A"]);
            common::git(&dir, &["commit", "-q", "-m", "initial"]);
        }
        for t in ["basic-env", "web-svc", "worker-svc"] {
            common::git(
                &root.join("platform-templates"),
                &["tag", "-a", &format!("{t}/v1.0"), "-m", "first release"],
            );
        }
        let toml = format!(
            "state = \"sqlite://state/state.db\"\ndata_dir = \"data\"\n\
             [aws]\nregion = \"us-east-1\"\nendpoint_url = \"{endpoint}\"\npoll_interval = \"200ms\"\nchange_sets = false\n\
             [[template_repos]]\nname = \"platform-templates\"\nurl = \"platform-templates\"\n\
             [[spec_repos]]\nname = \"platform-envs\"\nurl = \"platform-envs\"\nplatform = true\n\
             [[spec_repos]]\nname = \"payments\"\nurl = \"payments\"\n"
        );
        std::fs::write(root.join("proton.toml"), toml).expect("config");
        Self { _tmp: tmp, root }
    }

    fn command(&self, args: &[&str]) -> Command {
        common::protond(&self.root.join("proton.toml"), args)
    }

    /// Runs a command to its end; returns its output and how long it took.
    fn run(&self, args: &[&str]) -> (Output, Duration) {
        let t = Instant::now();
        let out = self.command(args).output().expect("protond runs");
        (out, t.elapsed())
    }

    fn state_db(&self) -> PathBuf {
        self.root.join("state").join("state.db")
    }

    async fn store(&self) -> Store {
        Store::open(&format!("sqlite://{}", self.state_db().display()))
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

/// A `protond run`, killed (SIGKILL) and reaped when dropped so that a failing test leaves
/// no process behind.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An HTTP forwarder in front of `moto_server` that holds every `CreateStack` call (before
/// forwarding it) while closed, and forwards everything else at once.
struct Gate {
    url: String,
    open: Arc<AtomicBool>,
    held: Arc<AtomicUsize>,
    _thread: std::thread::JoinHandle<()>,
}

impl Gate {
    fn start(upstream: String) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let open = Arc::new(AtomicBool::new(false));
        let held = Arc::new(AtomicUsize::new(0));
        let (o, h) = (open.clone(), held.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("gate runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let client = reqwest::Client::new();
                let app = axum::Router::new().fallback(
                    move |method: axum::http::Method,
                          uri: axum::http::Uri,
                          headers: axum::http::HeaderMap,
                          body: axum::body::Bytes| {
                        let (client, upstream, open, held) =
                            (client.clone(), upstream.clone(), o.clone(), h.clone());
                        async move {
                            if String::from_utf8_lossy(&body).contains("Action=CreateStack") {
                                held.fetch_add(1, Ordering::SeqCst);
                                while !open.load(Ordering::SeqCst) {
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                }
                            }
                            forward(&client, &upstream, method, &uri, &headers, body).await
                        }
                    },
                );
                let _ = axum::serve(listener, app).await;
            });
        });
        Self {
            url,
            open,
            held,
            _thread: thread,
        }
    }

    /// Waits until at least `n` creates are held; false on timeout.
    fn wait_held(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.held.load(Ordering::SeqCst) >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

async fn forward(
    client: &reqwest::Client,
    upstream: &str,
    method: axum::http::Method,
    uri: &axum::http::Uri,
    headers: &axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let url = format!(
        "{upstream}{}",
        uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut req = client.request(method, url).body(body);
    for (k, v) in headers {
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

/// A refused writer: exit 2, quickly, naming the holder and the way out.
fn assert_refused(out: &Output, took: Duration, pid: u32, w: &World) {
    let msg = text(out);
    assert_eq!(out.status.code(), Some(2), "{msg}");
    assert!(took < REFUSED_WITHIN, "took {took:?}: {msg}");
    for part in [
        format!("PID {pid}"),
        "since ".to_string(),
        w.state_db().display().to_string(),
        "stop the other protond, or point this one at another state file".to_string(),
    ] {
        assert!(msg.contains(&part), "{part:?} missing from: {msg}");
    }
    assert!(!msg.contains("corrupt"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_is_refused_while_readers_work_and_the_first_finishes() {
    let moto = Moto::start().expect("moto_server");
    let gate = Gate::start(moto.url.clone());
    let w = World::new(&gate.url);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");

    // The first daemon: its creates are held at the gate, so its deployments are in flight.
    let mut first = Daemon(
        w.command(&["run", "--listen", &listen])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("daemon starts"),
    );
    let pid = first.0.id();
    assert!(
        gate.wait_held(1, Duration::from_mins(2)),
        "the daemon never created a stack"
    );
    let store = w.store().await;
    let in_flight = store.in_flight().await.expect("in flight");
    assert!(!in_flight.is_empty(), "nothing in flight");

    // The lock file beside the database names the holder.
    let lock_file = w.root.join("state").join("state.db.lock");
    let holder = std::fs::read_to_string(&lock_file).expect("lock file");
    assert!(holder.contains(&format!("pid={pid}\n")), "{holder}");
    assert!(
        holder.contains("host=") && holder.contains("since="),
        "{holder}"
    );

    // A second daemon (even on the same port: the lock is checked first) and a one-shot
    // reconcile are refused at once.
    let (out, took) = w.run(&["run", "--listen", &listen]);
    assert_refused(&out, took, pid, &w);
    let (out, took) = w.run(&["reconcile", "--once"]);
    assert_refused(&out, took, pid, &w);

    // Readers work meanwhile: status, plan from the cached repos, the daemon's API.
    let (out, _) = w.run(&["status"]);
    assert!(out.status.success(), "status: {}", text(&out));
    let (out, _) = w.run(&["plan", "--no-fetch"]);
    assert!(out.status.success(), "plan --no-fetch: {}", text(&out));
    let api = reqwest::get(format!("http://{listen}/api/v1/deployments"))
        .await
        .expect("API answers");
    assert!(api.status().is_success(), "{api:?}");
    let rows: serde_json::Value = api.json().await.expect("JSON");
    assert!(
        rows.as_array().is_some_and(|r| !r.is_empty()),
        "deployments: {rows}"
    );

    // The refused writers touched nothing: the first daemon's deployments are still in
    // flight, none was marked interrupted.
    let still = store.in_flight().await.expect("in flight");
    assert_eq!(
        still.iter().map(|d| d.id).collect::<Vec<_>>(),
        in_flight.iter().map(|d| d.id).collect::<Vec<_>>()
    );

    // The first daemon finishes its work: every resource deployed, every deployment
    // succeeded.
    gate.open.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_mins(3);
    loop {
        let records = store.resources().await.expect("resources");
        let flying = store.in_flight().await.expect("in flight");
        if records.len() == 7 && records.iter().all(|r| r.status == "deployed") && flying.is_empty()
        {
            break;
        }
        assert!(
            first.0.try_wait().expect("try_wait").is_none(),
            "the first daemon exited"
        );
        assert!(
            Instant::now() < deadline,
            "did not converge: {records:#?} {flying:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let history = store.deployments(None, 1000).await.expect("history");
    assert!(history.len() >= 7, "{history:#?}");
    for d in &history {
        assert_eq!(d.status, DeploymentStatus::Succeeded, "{d:#?}");
        assert!(
            !d.error.as_deref().unwrap_or("").contains("interrupted"),
            "{d:#?}"
        );
    }

    // kill -9: the kernel releases the lock; the next writer gets it and finds nothing to do.
    {
        use std::os::unix::process::ExitStatusExt as _;
        first.0.kill().expect("kill -9");
        let status = first.0.wait().expect("wait");
        assert_eq!(status.signal(), Some(9), "{status:?}");
    }
    let (out, _) = w.run(&["reconcile", "--once"]);
    assert!(out.status.success(), "after kill -9: {}", text(&out));
    let after = std::fs::read_to_string(&lock_file).expect("lock file");
    assert!(!after.contains(&format!("pid={pid}\n")), "{after}");
    drop(moto);
}
