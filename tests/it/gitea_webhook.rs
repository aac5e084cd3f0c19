//! `POST /webhooks/gitea`: Gitea's and Forgejo's signed push deliveries trigger a fetch of the
//! repo they name; a missing or wrong signature is refused before anything happens, and a
//! delivery received twice is acted on once.

use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

use crate::common;
use crate::common::world::World;

const SECRET: &str = "gitea-webhook-secret-8910";

fn signature(body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitea_and_forgejo_pushes_are_verified_deduplicated_and_fetched() {
    let w = World::examples_on_moto()
        .env("T_GITEA", SECRET)
        .config(|c| {
            c.top("poll_interval = \"1h\"")
                .section("[daemon]\nwatch = false")
                .section("[server]\ngitea_secret_env = \"T_GITEA\"");
        })
        .build();
    let port = common::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut daemon = w.spawn(&["run", "--listen", &format!("127.0.0.1:{port}")]);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_mins(1);
    while !http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let payments = w.dir("payments");
    let push = serde_json::to_vec(&json!({
        "ref": "refs/heads/main",
        "repository": {"clone_url": payments.display().to_string()}
    }))
    .expect("json");
    let send_push = |headers: Vec<(&'static str, String)>| {
        let mut r = http
            .post(format!("{base}/webhooks/gitea"))
            .body(push.clone());
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r.send()
    };

    // No signature, a wrong one: 401 with a JSON body, nothing fetched.
    for headers in [
        vec![("X-Gitea-Event", "push".to_string())],
        vec![
            ("X-Gitea-Event", "push".to_string()),
            ("X-Gitea-Signature", "00".repeat(32)),
        ],
    ] {
        let r = send_push(headers).await.expect("post");
        assert_eq!(r.status(), 401);
        let body: Value = r.json().await.expect("json error body");
        assert_eq!(body["error"], "bad signature", "{body}");
    }

    // Gitea's signed push: the repo it names is fetched.
    let good = vec![
        ("X-Gitea-Event", "push".to_string()),
        ("X-Gitea-Delivery", "d-1".to_string()),
        ("X-Gitea-Signature", signature(&push)),
    ];
    let r = send_push(good.clone()).await.expect("post");
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body, json!({ "fetching": ["payments"] }));
    // The same delivery again is answered, not acted on.
    let again: Value = send_push(good)
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(again["duplicate"], true, "{again}");
    // Forgejo's own headers are accepted too (another delivery of another push).
    let forgejo_push = serde_json::to_vec(&json!({
        "ref": "refs/heads/main",
        "after": "forgejo",
        "repository": {"clone_url": payments.display().to_string()}
    }))
    .expect("json");
    let r = http
        .post(format!("{base}/webhooks/gitea"))
        .header("X-Forgejo-Event", "push")
        .header("X-Forgejo-Delivery", "d-2")
        .header("X-Forgejo-Signature", signature(&forgejo_push))
        .body(forgejo_push)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 202);

    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for (state, n) in [("accepted", 2), ("rejected", 2), ("duplicate", 1)] {
        let line = format!("protond_webhooks_total{{state=\"{state}\"}} {n}");
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing:\n{metrics}"
        );
    }
    daemon.terminate();
    let _ = daemon.wait_for_line(Duration::from_secs(20), |l| l.contains("bye"));
    let log = daemon.log();
    assert!(log.contains("Rejected a Gitea webhook"), "{log}");
    assert!(!log.contains(SECRET));
}
