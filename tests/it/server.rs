//! The HTTP surface of a running `protond run`: every endpoint, webhook signatures both
//! ways, metrics that change after a deployment, the bearer token, and the status page
//! rendered in headless Chromium. Real git repos, a real `moto_server`, a real `SQLite` file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

use crate::common::world::World;
use crate::common::{self, git};

const API_TOKEN: &str = "api-token-for-tests-0123";
const GH_SECRET: &str = "github-webhook-secret-4567";
const GL_TOKEN: &str = "gitlab-webhook-token-89ab";

/// A `protond run` serving on a free port, over the examples on a `moto_server`; killed when
/// dropped.
struct Daemon {
    child: Child,
    base: String,
    log: PathBuf,
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
        // Polling once an hour and no watcher: only webhooks and the API trigger fetches.
        let world = World::examples_on_moto()
            .env("T_API", API_TOKEN)
            .env("T_GH", GH_SECRET)
            .env("T_GL", GL_TOKEN)
            .config(|c| {
                c.top("poll_interval = \"1h\"")
                    .section("[daemon]\nshutdown_grace = \"10s\"\nwatch = false")
                    .section("[server]\ntoken_env = \"T_API\"\ngithub_secret_env = \"T_GH\"\ngitlab_token_env = \"T_GL\"");
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

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

async fn wait_for<F, Fut>(what: &str, d: &Daemon, mut f: F)
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
    panic!("timed out waiting for {what}; daemon log:\n{}", d.logs());
}

/// The value of one metric series in the text exposition, if present.
fn metric(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|p| p.join(name))
                    .find(|p| p.is_file())
            })
        })
}

/// Runs headless Chromium on `url` with everything but 127.0.0.1 unreachable.
fn run_chromium(bin: &Path, profile: &Path, args: &[&str], url: &str) -> std::process::Output {
    Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
            "--window-size=1400,1000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_of_a_running_daemon() {
    let d = Daemon::start();
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let http = http.clone();
        let url = format!("{}{path}", d.base);
        async move { http.get(url).send().await }
    };

    // Liveness at once; readiness once the first fetch is done.
    wait_for("/healthz", &d, || async {
        get("/healthz").await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert_eq!(
        get("/healthz")
            .await
            .expect("healthz")
            .text()
            .await
            .expect("text"),
        "ok\n"
    );
    wait_for("/readyz", &d, || async {
        get("/readyz").await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    // Everything deploys (7 resources: 2 environments, 3 instances, a pipeline, a component).
    wait_for("the first deployments", &d, || async {
        let Ok(r) = get("/metrics").await else {
            return false;
        };
        let text = r.text().await.unwrap_or_default();
        let created: f64 = ["environment", "service_instance", "pipeline", "component"]
            .iter()
            .filter_map(|k| {
                metric(
                    &text,
                    "protond_deployments_total",
                    &format!("kind=\"{k}\",action=\"create\",outcome=\"succeeded\""),
                )
            })
            .sum();
        created >= 7.0 && metric(&text, "protond_deployments_in_flight", "") == Some(0.0)
    })
    .await;
    // Content negotiation: OpenMetrics when asked for, Prometheus text 0.0.4 otherwise; both
    // pass `promtool check metrics` where promtool is installed.
    let open = http
        .get(format!("{}/metrics", d.base))
        .header(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .expect("metrics");
    assert!(
        open.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("application/openmetrics-text")
    );
    let open = open.text().await.expect("text");
    assert!(open.ends_with("# EOF\n"), "{open}");
    let metrics = get("/metrics").await.expect("metrics");
    assert_eq!(
        metrics.headers()["content-type"].to_str().expect("ct"),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = metrics.text().await.expect("text");
    assert!(
        !text.contains("# EOF") && !text.contains("_created"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE protond_reconcile_cycles_total counter"),
        "{text}"
    );
    promtool_check(&text);
    assert!(
        metric(&text, "protond_reconcile_cycles_total", "").is_some_and(|v| v >= 1.0),
        "{text}"
    );
    assert!(
        metric(&text, "protond_reconcile_duration_seconds_count", "").is_some_and(|v| v >= 1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "protond_resources",
            "kind=\"service_instance\",status=\"deployed\""
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "protond_deployments_in_flight", ""),
        Some(0.0),
        "{text}"
    );
    assert!(
        !text.contains("protond-"),
        "no stack names in labels:\n{text}"
    );

    // The read-only API.
    let templates: Value = get("/api/v1/templates")
        .await
        .expect("t")
        .json()
        .await
        .expect("json");
    assert!(
        templates
            .as_array()
            .expect("array")
            .iter()
            .any(|t| t["template"] == "web-svc"
                && t["version"] == "1.0"
                && t["registered"] == true),
        "{templates}"
    );
    let envs: Value = get("/api/v1/environments")
        .await
        .expect("e")
        .json()
        .await
        .expect("json");
    let env_ids: Vec<&str> = envs
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(env_ids, ["environment/dev", "environment/prod"]);
    let services: Value = get("/api/v1/services")
        .await
        .expect("s")
        .json()
        .await
        .expect("json");
    let payments = services
        .as_array()
        .expect("array")
        .iter()
        .find(|s| s["service"] == "payments")
        .expect("payments");
    assert_eq!(
        payments["instances"].as_array().expect("instances").len(),
        2
    );
    assert_eq!(payments["pipeline"]["id"], "pipeline/payments");
    assert_eq!(
        payments["components"][0]["id"],
        "component/payments/payments-dev"
    );
    let deps: Value = get("/api/v1/deployments?limit=3")
        .await
        .expect("d")
        .json()
        .await
        .expect("json");
    assert_eq!(deps.as_array().expect("array").len(), 3);
    let one: Value = get("/api/v1/deployments?resource=environment/dev")
        .await
        .expect("d")
        .json()
        .await
        .expect("json");
    assert!(
        one.as_array()
            .expect("array")
            .iter()
            .all(|x| x["resource"] == "environment/dev")
    );
    let rollouts: Value = get("/api/v1/rollouts")
        .await
        .expect("r")
        .json()
        .await
        .expect("json");
    assert!(rollouts.is_array());
    let proposals: Value = get("/api/v1/proposals")
        .await
        .expect("p")
        .json()
        .await
        .expect("json");
    assert_eq!(proposals, json!([]));

    // A spec change the daemon cannot see on its own (no watcher, hourly poll).
    let payments_repo = d.world.dir("payments");
    let spec = payments_repo.join("proton/services/payments.yaml");
    let t = std::fs::read_to_string(&spec).expect("spec");
    std::fs::write(&spec, t.replace("desired_count: 3", "desired_count: 4")).expect("write");
    git(&payments_repo, &["commit", "-qam", "scale prod"]);
    let updates = |text: &str| {
        metric(
            text,
            "protond_deployments_total",
            "kind=\"service_instance\",action=\"update\",outcome=\"succeeded\"",
        )
        .unwrap_or(0.0)
    };
    let push = serde_json::to_vec(&json!({
        "ref": "refs/heads/main",
        "repository": { "clone_url": payments_repo.display().to_string() }
    }))
    .expect("json");

    // Bad GitHub signatures are rejected, logged, and not acted on.
    for sig in [
        None,
        Some(sign("wrong-secret", &push)),
        Some("sha256=zz".to_string()),
    ] {
        let mut req = http
            .post(format!("{}/webhooks/github", d.base))
            .header("X-GitHub-Event", "push")
            .header("Content-Type", "application/json")
            .body(push.clone());
        if let Some(s) = sig {
            req = req.header("X-Hub-Signature-256", s);
        }
        assert_eq!(req.send().await.expect("post").status(), 401);
    }
    let bad_gl = http
        .post(format!("{}/webhooks/gitlab", d.base))
        .header("X-Gitlab-Event", "Push Hook")
        .header("X-Gitlab-Token", "nope")
        .body(push.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(bad_gl.status(), 401);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let text = get("/metrics").await.expect("m").text().await.expect("t");
    assert_eq!(
        updates(&text),
        0.0,
        "a rejected webhook must not trigger anything"
    );
    assert_eq!(
        metric(&text, "protond_webhooks_total", "state=\"rejected\""),
        Some(4.0),
        "{text}"
    );
    assert!(d.logs().contains("Rejected a GitHub webhook"));
    assert!(d.logs().contains("Rejected a GitLab webhook"));

    // A correctly signed GitHub push triggers the fetch; the update deploys; metrics move.
    let ok = http
        .post(format!("{}/webhooks/github", d.base))
        .header("X-GitHub-Event", "push")
        .header("X-Hub-Signature-256", sign(GH_SECRET, &push))
        .body(push.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(ok.status(), 202);
    let body: Value = ok.json().await.expect("json");
    assert_eq!(body, json!({ "fetching": ["payments"] }));
    wait_for("the webhook-triggered update", &d, || async {
        let text = get("/metrics")
            .await
            .expect("m")
            .text()
            .await
            .unwrap_or_default();
        updates(&text) >= 1.0
    })
    .await;
    // A GitLab push with the right token is accepted too; other events are ignored.
    let gl = http
        .post(format!("{}/webhooks/gitlab", d.base))
        .header("X-Gitlab-Event", "Push Hook")
        .header("X-Gitlab-Token", GL_TOKEN)
        .body(
            serde_json::to_vec(
                &json!({"project": {"git_http_url": payments_repo.display().to_string()}}),
            )
            .expect("json"),
        )
        .send()
        .await
        .expect("post");
    assert_eq!(gl.status(), 202);
    assert_eq!(
        gl.json::<Value>().await.expect("json"),
        json!({ "fetching": ["payments"] })
    );
    let issue = http
        .post(format!("{}/webhooks/gitlab", d.base))
        .header("X-Gitlab-Event", "Issue Hook")
        .header("X-Gitlab-Token", GL_TOKEN)
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(issue.status(), 202);
    assert!(issue.json::<Value>().await.expect("json")["ignored"].is_string());

    // Mutating endpoints need the bearer token.
    let halt = format!("{}/api/v1/rollouts/web-svc/v1.0/halt", d.base);
    assert_eq!(http.post(&halt).send().await.expect("post").status(), 401);
    assert_eq!(
        http.post(&halt)
            .bearer_auth("wrong")
            .send()
            .await
            .expect("post")
            .status(),
        401
    );
    let r = http
        .post(&halt)
        .bearer_auth(API_TOKEN)
        .json(&json!({"reason": "ops freeze"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    let rollouts: Value = get("/api/v1/rollouts")
        .await
        .expect("r")
        .json()
        .await
        .expect("json");
    assert!(
        rollouts
            .as_array()
            .expect("array")
            .iter()
            .any(|r| r["template"] == "web-svc" && r["halted"] == "ops freeze"),
        "{rollouts}"
    );
    let resume = format!("{}/api/v1/rollouts/web-svc/v1.0/resume", d.base);
    assert_eq!(
        http.post(&resume)
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .expect("post")
            .status(),
        200
    );
    assert_eq!(
        http.post(format!("{}/api/v1/reconcile", d.base))
            .send()
            .await
            .expect("post")
            .status(),
        401
    );
    // Outcome reports (self-managed provisioning) need the token too, and name a waiting
    // deployment; the full flow is in tests/it/self_managed.rs.
    let notify = format!("{}/api/v1/notify", d.base);
    let body = json!({"resourceArn": "arn:aws:proton:us-east-1:123456789012:environment/dev", "status": "SUCCEEDED"});
    assert_eq!(
        http.post(&notify)
            .json(&body)
            .send()
            .await
            .expect("post")
            .status(),
        401
    );
    let r = http
        .post(&notify)
        .bearer_auth(API_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 409);
    assert!(
        r.text()
            .await
            .expect("text")
            .contains("environment/dev: no self-managed deployment is waiting")
    );
    let r = http
        .post(&notify)
        .bearer_auth(API_TOKEN)
        .json(&json!({"resource": "environment/dev", "status": "DONE"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);

    // An outdated service: web-svc 2.0 is tagged; the API-triggered fetch registers it.
    let t = d.world.dir("platform-templates");
    common::copy_tree(&t.join("web-svc/v1"), &t.join("web-svc/v2"));
    git(&t, &["add", "-A"]);
    git(&t, &["commit", "-qm", "web-svc v2"]);
    git(&t, &["tag", "-a", "web-svc/v2.0", "-m", "web-svc 2.0"]);
    let r = http
        .post(format!("{}/api/v1/reconcile", d.base))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 202);
    wait_for("web-svc 2.0 to register", &d, || async {
        let v: Value = get("/api/v1/templates")
            .await
            .expect("t")
            .json()
            .await
            .unwrap_or(Value::Null);
        v.as_array()
            .is_some_and(|a| a.iter().any(|t| t["version"] == "2.0"))
    })
    .await;
    let html = get("/").await.expect("page").text().await.expect("html");
    assert!(
        html.contains("update available: major v2 available"),
        "{html}"
    );

    // The page in headless Chromium: the DOM shows the outdated instances, and the screenshot
    // shows the yellow "update available" cells.
    let Some(bin) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is required in CI (scripts/test installs the Debian package)"
        );
        eprintln!("chromium not installed; skipping the browser half of this test");
        return;
    };
    let profile = tempfile::tempdir().expect("profile");
    let url = format!("{}/", d.base);
    let dom = run_chromium(&bin, profile.path(), &["--dump-dom"], &url);
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom_text.contains("<h1>protond status</h1>"),
        "chromium output:\n{dom_text}\n{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let row = dom_text
        .lines()
        .find(|l| l.contains("service_instance/payments/payments-prod"))
        .expect("payments-prod row");
    assert!(
        row.contains("update available: major v2 available"),
        "{row}"
    );
    let shot = profile.path().join("page.png");
    let out = run_chromium(
        &bin,
        profile.path(),
        &[&format!("--screenshot={}", shot.display())],
        &url,
    );
    assert!(
        shot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&shot).expect("png"),
    ));
    let mut reader = decoder.read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("png frame");
    assert_eq!((info.width, info.height), (1400, 1000));
    let channels = info.color_type.samples();
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(channels).collect();
    let yellow = pixels
        .iter()
        .filter(|p| p[0] == 0xff && p[1] == 0xf8 && p[2] == 0xc5)
        .count();
    let white = pixels
        .iter()
        .filter(|p| p[0] == 0xff && p[1] == 0xff && p[2] == 0xff)
        .count();
    assert!(
        yellow > 1000,
        "the update-available cells are not visible ({yellow} yellow pixels)"
    );
    assert!(white < pixels.len(), "blank screenshot");
    if let Ok(keep) = std::env::var("PROTOND_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).expect("copy screenshot");
    }
}

/// `promtool check metrics` (the format and Prometheus' naming lints) on `text`, where
/// promtool is installed.
fn promtool_check(text: &str) {
    use std::io::Write;
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        eprintln!("promtool is not installed: the exposition format is not linted");
        return;
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
