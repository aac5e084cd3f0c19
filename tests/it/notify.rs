//! Notifications end to end: commit statuses on the spec commits and notifications to a
//! signed webhook and a Slack-compatible hook reach an HTTP fake on 127.0.0.1 that checks
//! every request (method, path, headers, token, body schema, HMAC signature); an endpoint
//! that is down (never answers, or refuses connections) does not slow the daemon, and a full
//! queue drops and counts. Real git, the real AWS SDK on `moto_server`, the `protond` binary.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

use crate::common::world::World;
use crate::common::{self, git};

const FORGE_TOKEN: &str = "forge-token-5b2e";
const SIGNING_SECRET: &str = "s3cret-signing-key-91c";
const SLACK_PATH: &str = "/hooks/slack/T000/B000/XXXXsecret";
const STATUS_URL: &str = "https://protond.example/status";

/// A commit status the fake accepted.
#[derive(Debug, Clone)]
struct Status {
    repo: String,
    sha: String,
    context: String,
    state: String,
    description: String,
}

/// What the fake has seen.
#[derive(Debug, Default)]
struct Seen {
    statuses: Vec<Status>,
    webhooks: Vec<Value>,
    slack: Vec<String>,
    violations: Vec<String>,
}

/// GitHub's statuses API, a signed webhook receiver and a Slack hook, on one port.
#[derive(Clone)]
struct Fake {
    url: String,
    seen: Arc<Mutex<Seen>>,
}

impl Fake {
    async fn start() -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let s = seen.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let s = s.clone();
                async move { handle(&s, &method, &uri, &headers, &body) }
            },
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}"),
            seen,
        }
    }

    fn seen<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().expect("lock"))
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn keys(v: &Value) -> Vec<&str> {
    v.as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

/// Checks one request; returns what is wrong with it, if anything.
fn check(seen: &mut Seen, method: &Method, path: &str, h: &HeaderMap, body: &[u8]) -> Vec<String> {
    let mut wrong = Vec::new();
    if method != Method::POST {
        wrong.push(format!("method {method}"));
    }
    if header(h, "content-type") != "application/json" {
        wrong.push(format!("content-type {:?}", header(h, "content-type")));
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return vec!["body is not JSON".into()];
    };
    if let Some(rest) = path.strip_prefix("/gh/repos/") {
        let parts: Vec<&str> = rest.split('/').collect();
        let [owner, repo, "statuses", sha] = parts[..] else {
            return vec![format!("unknown forge path {path}")];
        };
        if header(h, "authorization") != format!("Bearer {FORGE_TOKEN}") {
            wrong.push("missing or wrong token".into());
        }
        if header(h, "accept") != "application/vnd.github+json"
            || header(h, "x-github-api-version") != "2022-11-28"
        {
            wrong.push("GitHub API headers missing".into());
        }
        if !is_hex(sha, 40) {
            wrong.push(format!("sha {sha}"));
        }
        let mut k = keys(&v);
        k.sort_unstable();
        if k != ["context", "description", "state", "target_url"] {
            wrong.push(format!("status fields {k:?}"));
        }
        let state = v["state"].as_str().unwrap_or("");
        if !["pending", "success", "failure"].contains(&state) {
            wrong.push(format!("state {state}"));
        }
        let context = v["context"].as_str().unwrap_or("");
        let description = v["description"].as_str().unwrap_or("");
        if !context.starts_with("protond/") || description.chars().count() > 140 {
            wrong.push(format!(
                "context {context:?} or description {description:?}"
            ));
        }
        if v["target_url"] != STATUS_URL {
            wrong.push(format!("target_url {}", v["target_url"]));
        }
        if wrong.is_empty() {
            seen.statuses.push(Status {
                repo: format!("{owner}/{repo}"),
                sha: sha.into(),
                context: context.into(),
                state: state.into(),
                description: description.into(),
            });
        }
    } else if path == "/hooks/webhook" {
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(SIGNING_SECRET.as_bytes()).expect("key");
        mac.update(body);
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        if header(h, "x-protond-signature") != expected {
            wrong.push("bad signature".into());
        }
        let delivery = header(h, "x-protond-delivery");
        if !is_hex(delivery, 32) || v["id"] != delivery {
            wrong.push(format!("delivery id {delivery:?} / {}", v["id"]));
        }
        if header(h, "x-protond-timestamp").parse::<u64>().is_err() {
            wrong.push("timestamp header".into());
        }
        if v["event"] != header(h, "x-protond-event") {
            wrong.push("event header and body differ".into());
        }
        let mut k = keys(&v);
        k.sort_unstable();
        if k != [
            "details",
            "event",
            "id",
            "installation",
            "resource",
            "status_url",
            "summary",
            "timestamp",
        ] || !v["details"].is_object()
            || !v["summary"].is_string()
            || v["installation"].as_str().is_none_or(str::is_empty)
            || !v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z'))
            || v["status_url"] != STATUS_URL
        {
            wrong.push(format!("webhook schema: {v}"));
        }
        if wrong.is_empty() {
            seen.webhooks.push(v);
        }
    } else if path == SLACK_PATH {
        if keys(&v) != ["text"] || h.contains_key("x-protond-signature") {
            wrong.push(format!("slack message {v}"));
        }
        if wrong.is_empty() {
            seen.slack
                .push(v["text"].as_str().unwrap_or_default().to_string());
        }
    } else {
        wrong.push(format!("unknown path {path}"));
    }
    wrong
}

fn handle(
    seen: &Mutex<Seen>,
    method: &Method,
    uri: &Uri,
    h: &HeaderMap,
    body: &[u8],
) -> (StatusCode, String) {
    let mut seen = seen.lock().expect("lock");
    let path = uri.path();
    let wrong = check(&mut seen, method, path, h, body);
    if wrong.is_empty() {
        (StatusCode::CREATED, json!({"id": 1}).to_string())
    } else {
        seen.violations
            .push(format!("{method} {path}: {}", wrong.join("; ")));
        (StatusCode::UNPROCESSABLE_ENTITY, "{}".into())
    }
}

/// A stack that `CloudFormation` rejects (moto fails it at create).
const BROKEN: &str = "Resources:\n  Broken:\n    Type: AWS::SQS::Queue\n    Properties:\n      DelaySeconds: !GetAtt NoSuchResource.Arn\n";

/// Breaks `files` of the template repo before its releases are tagged.
fn break_templates(root: &Path, files: &[&str]) {
    let t = root.join("platform-templates");
    for f in files {
        let p = t.join(f);
        let text = std::fs::read_to_string(&p).expect("template");
        std::fs::write(&p, text.replacen("Resources:", BROKEN, 1)).expect("write");
    }
    git(&t, &["commit", "-qam", "broken"]);
}

const WEB_INSTANCE: &str = "web-svc/v1/instance_infrastructure/cloudformation.yaml";
const WORKER_INSTANCE: &str = "worker-svc/v1/instance_infrastructure/cloudformation.yaml";

/// The examples on moto with `broken` templates, notifying `webhook` and `slack` (URLs)
/// with `settings` lines under `[notifications]`.
fn world(broken: &'static [&'static str], webhook: &str, slack: &str, settings: &str) -> World {
    let (webhook, slack, settings) = (webhook.to_string(), slack.to_string(), settings.to_string());
    World::examples_on_moto()
        .setup(move |root| break_templates(root, broken))
        .env("NOTIFY_SECRET", SIGNING_SECRET)
        .env("SLACK_HOOK", &slack)
        .env("FORGE_TOKEN", FORGE_TOKEN)
        .config(move |c| {
            c.top("poll_interval = \"1h\"")
                .section("[daemon]\nwatch = false\nshutdown_grace = \"10s\"")
                .section(&format!(
                    "[notifications]\nstatus_url = \"{STATUS_URL}\"\nbackoff = \"100ms\"\n{settings}"
                ))
                .section(&format!(
                    "[[notify]]\nname = \"ops-webhook\"\nkind = \"webhook\"\nurl = \"{webhook}\"\nsecret_env = \"NOTIFY_SECRET\"\nevents = [\"deployment_failed\", \"conflict_found\"]"
                ))
                .section("[[notify]]\nname = \"chat\"\nkind = \"slack\"\nurl_env = \"SLACK_HOOK\"");
        })
        .build()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn commit_statuses_and_notifications_reach_the_fakes() {
    let fake = Fake::start().await;
    let url = fake.url.clone();
    let forge = |repo: &str| {
        format!(
            "forge = {{ kind = \"github\", api_url = \"{url}/gh\", repo = \"{repo}\", token_env = \"FORGE_TOKEN\" }}"
        )
    };
    let (envs, payments) = (forge("acme/envs"), forge("acme/payments"));
    let w = world(
        &[WEB_INSTANCE],
        &format!("{}/hooks/webhook", fake.url),
        &format!("{}{SLACK_PATH}", fake.url),
        "commit_statuses = true",
    );
    w.edit_config(|t| {
        t.replace(
            "url = \"platform-envs\"\n",
            &format!("url = \"platform-envs\"\n{envs}\n"),
        )
        .replace(
            "url = \"payments\"\n",
            &format!("url = \"payments\"\n{payments}\n"),
        )
    });
    let out = w.reconcile();
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "two instances fail: {log}");
    assert_eq!(fake.seen(|s| s.violations.clone()), Vec::<String>::new());

    // Every deployment with a spec commit has its status: pending, then how it ended.
    let store = w.store().await;
    let history = store.deployments(None, 1000).await.expect("history");
    let statuses = fake.seen(|s| s.statuses.clone());
    let mut failed = Vec::new();
    for d in history
        .iter()
        .filter(|d| d.deployment.spec_commit.is_some())
    {
        let dep = &d.deployment;
        let repo = if dep.repo == "payments" {
            "acme/payments"
        } else {
            "acme/envs"
        };
        let context = format!("protond/{}", dep.resource_id);
        let mine: Vec<&Status> = statuses.iter().filter(|s| s.context == context).collect();
        let states: Vec<&str> = mine.iter().map(|s| s.state.as_str()).collect();
        let last = if d.status == "failed" {
            "failure"
        } else {
            "success"
        };
        assert_eq!(states, ["pending", last], "{context}: {mine:?}");
        for s in &mine {
            assert_eq!(
                (s.repo.as_str(), Some(&s.sha)),
                (repo, dep.spec_commit.as_ref())
            );
        }
        if d.status == "failed" {
            assert!(mine[1].description.contains("CreateStack"), "{mine:?}");
            failed.push(dep.resource_id.clone());
        }
    }
    failed.sort();
    assert_eq!(
        failed,
        [
            "service_instance/payments/payments-dev",
            "service_instance/payments/payments-prod"
        ]
    );
    assert!(
        statuses
            .iter()
            .any(|s| s.context == "protond/environment/dev" && s.state == "success"),
        "{statuses:?}"
    );

    // Each failure reached the webhook (signature checked by the fake) and the Slack hook.
    let webhooks = fake.seen(|s| s.webhooks.clone());
    let mut resources: Vec<&str> = webhooks
        .iter()
        .map(|v| {
            assert_eq!(v["event"], "deployment_failed", "{v}");
            assert!(
                v["details"]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("NoSuchResource")),
                "{v}"
            );
            assert_eq!(v["details"]["repo"], "payments");
            v["resource"].as_str().expect("resource")
        })
        .collect();
    resources.sort_unstable();
    assert_eq!(resources, failed);
    let slack = fake.seen(|s| s.slack.clone());
    assert_eq!(slack.len(), 2, "{slack:?}");
    for text in &slack {
        assert!(
            text.starts_with("*Deployment failed*") && text.contains(STATUS_URL),
            "{text}"
        );
    }
    // No secret reached the log.
    for secret in [SIGNING_SECRET, "XXXXsecret", FORGE_TOKEN] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}

/// Seconds from the start of `protond run` until `n` deployments failed, and the metrics
/// then.
async fn run_until_failures(w: &World, n: usize) -> (Duration, String) {
    let port = common::free_port();
    let started = Instant::now();
    let mut d = w.spawn(&["run", "--listen", &format!("127.0.0.1:{port}")]);
    let deadline = started + Duration::from_secs(90);
    let mut seen = 0;
    while seen < n {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            d.wait_for_line(left, |l| l.contains("Deployment failed.")),
            "{seen} of {n} failures: {}",
            d.log()
        );
        seen += 1;
    }
    let elapsed = started.elapsed();
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let t = Instant::now();
    d.terminate();
    let status = d.wait();
    assert!(status.success(), "{}", d.log());
    // Stopping waits for running deployments (none) and the drain (1 s), not for the
    // silent receiver (30 s a request).
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "stop took {:?}",
        t.elapsed()
    );
    (elapsed, metrics)
}

fn value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_down_endpoint_does_not_slow_the_daemon_and_a_full_queue_drops() {
    const BROKEN_ALL: &[&str] = &[WEB_INSTANCE, WORKER_INSTANCE];
    // Three deployments fail: both web-svc instances and the worker (the pipeline waits for
    // its instances).
    const FAILURES: usize = 3;
    let settings = "queue = 1\ntimeout = \"30s\"\nattempts = 3\ndrain_timeout = \"1s\"";

    // Healthy receivers.
    let fake = Fake::start().await;
    let ok = world(
        BROKEN_ALL,
        &format!("{}/hooks/webhook", fake.url),
        &format!("{}{SLACK_PATH}", fake.url),
        settings,
    );
    let (t_ok, _) = run_until_failures(&ok, FAILURES).await;

    // A webhook that accepts connections and never answers, a Slack hook that refuses them.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let refused = common::free_port();
    let down = world(
        BROKEN_ALL,
        &format!(
            "http://{}/hooks/webhook",
            silent.local_addr().expect("addr")
        ),
        &format!("http://127.0.0.1:{refused}{SLACK_PATH}"),
        settings,
    );
    let (t_down, metrics) = run_until_failures(&down, FAILURES).await;
    assert_eq!(fake.seen(|s| s.violations.clone()), Vec::<String>::new());

    // Delivery waits 30 s a request: had the daemon waited for it, the three failures would
    // have taken minutes.
    assert!(
        t_down < t_ok + Duration::from_secs(5),
        "down {t_down:?} against {t_ok:?} with healthy receivers"
    );
    let cycles = value(&metrics, "protond_reconcile_duration_seconds_count");
    let seconds = value(&metrics, "protond_reconcile_duration_seconds_sum");
    assert!(cycles >= 1.0 && seconds / cycles < 5.0, "{metrics}");
    // The silent webhook holds one, its queue one more: the rest are dropped and counted.
    let dropped = value(
        &metrics,
        "protond_notifications_dropped_total{transport=\"webhook\"}",
    );
    assert!(dropped >= 1.0, "{metrics}");
    eprintln!(
        "healthy receivers: {t_ok:?}; down: {t_down:?}; mean cycle {:.3} s; dropped {dropped}",
        seconds / cycles
    );
    assert_eq!(
        value(
            &metrics,
            "protond_notifications_sent_total{transport=\"webhook\",result=\"ok\"}"
        ),
        0.0
    );
    drop(silent);
}
