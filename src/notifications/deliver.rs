//! Sending: the webhook payload and its HMAC-SHA256 signature, the Slack message, commit
//! statuses through the forge client, each with retries and exponential backoff.
//!
//! Payloads and signatures are pure functions (tested); the workers only send. Errors name
//! the target and the variable or file to fix, never a URL (Slack's hold a token) or a
//! secret: request errors are stripped of their URL before they are logged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;

use super::{COMMIT_STATUS, Metrics, Notification, SentLabels, StatusUpdate};
use crate::config::{Notifications, NotifyEvent, NotifyTarget, SecretSource, Transport};
use crate::forge::{AnyForge, StatusDraft};

/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_mins(5);

/// What every worker shares.
#[derive(Debug)]
pub(super) struct Settings {
    attempts: u32,
    backoff: Duration,
    status_url: Option<String>,
    installation: String,
    client: reqwest::Client,
}

impl Settings {
    pub(super) fn new(n: &Notifications, installation: &str) -> Self {
        let client = reqwest::Client::builder()
            .timeout(n.timeout)
            .connect_timeout(n.timeout)
            .user_agent(concat!("protond/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Self {
            attempts: n.attempts,
            backoff: n.backoff,
            status_url: n.status_url.clone(),
            installation: installation.into(),
            client,
        }
    }
}

/// Why an attempt failed, and whether another may succeed.
#[derive(Debug)]
struct Failure {
    message: String,
    retryable: bool,
}

impl Failure {
    fn permanent(message: String) -> Self {
        Self {
            message,
            retryable: false,
        }
    }
}

/// The wait before retry `n` (1 for the first).
fn backoff(base: Duration, n: u32) -> Duration {
    base.saturating_mul(1 << n.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

/// Runs `attempt` up to `attempts` times while it fails with a retryable error.
async fn with_retries<F, Fut>(attempts: u32, base: Duration, mut attempt: F) -> Result<(), Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), Failure>>,
{
    let mut n = 0;
    loop {
        n += 1;
        match attempt().await {
            Ok(()) => return Ok(()),
            Err(f) if f.retryable && n < attempts => {
                tracing::debug!(attempt = n, error = %f.message, "Notification attempt failed; retrying.");
                tokio::time::sleep(backoff(base, n)).await;
            }
            Err(f) => return Err(f),
        }
    }
}

fn count(metrics: &Metrics, transport: &str, ok: bool) {
    metrics
        .sent
        .get_or_create(&SentLabels {
            transport: transport.into(),
            result: if ok { "ok" } else { "failed" }.into(),
        })
        .inc();
}

/// Reads a value from where the config says it is.
fn read(source: &SecretSource, what: &str, target: &str) -> Result<String, Failure> {
    let value = match source {
        SecretSource::Inline(v) => Some(v.clone()),
        SecretSource::Env(var) => std::env::var(var).ok(),
        SecretSource::File(p) => std::fs::read_to_string(p).ok(),
    }
    .map(|v| v.trim_end().to_string())
    .filter(|v| !v.is_empty());
    value.ok_or_else(|| {
        Failure::permanent(match source {
            SecretSource::Env(var) => {
                format!("{target}: the {what} is missing: set the environment variable {var}")
            }
            SecretSource::File(p) => format!(
                "{target}: the {what} is missing: {} cannot be read or is empty",
                p.display()
            ),
            SecretSource::Inline(_) => format!("{target}: the {what} is empty"),
        })
    })
}

/// A title for people.
fn title(event: NotifyEvent) -> &'static str {
    match event {
        NotifyEvent::DeploymentFailed => "Deployment failed",
        NotifyEvent::RolloutHalted => "Rollout halted",
        NotifyEvent::ReleaseRefused => "Release refused",
        NotifyEvent::DriftFound => "Drift found",
        NotifyEvent::ConflictFound => "Conflict found",
        NotifyEvent::PullRequestOpened => "Upgrade pull request opened",
        NotifyEvent::ReleaseQuarantined => "Release quarantined",
        NotifyEvent::ReleaseReleased => "Release released",
        NotifyEvent::ApprovalNeeded => "Approval needed",
    }
}

/// The webhook document (README "Notifications" documents it).
pub(super) fn webhook_payload(
    n: &Notification,
    id: &str,
    timestamp: &str,
    installation: &str,
    status_url: Option<&str>,
) -> Value {
    json!({
        "id": id,
        "event": n.event.as_str(),
        "timestamp": timestamp,
        "installation": installation,
        "resource": n.resource,
        "summary": n.summary,
        "details": n.details,
        "status_url": status_url,
    })
}

/// `sha256=<hex>`: HMAC-SHA256 of `body` with `secret`.
pub(super) fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The Slack message: `{"text": …}`.
pub(super) fn slack_message(
    n: &Notification,
    installation: &str,
    status_url: Option<&str>,
) -> Value {
    let mut text = format!("*{}* ({installation}): {}", title(n.event), n.summary);
    if let Some(url) = status_url {
        text.push_str(&format!(" <{url}|status page>"));
    }
    json!({ "text": text })
}

/// Sends one request; 2xx is delivered, 408, 429 and 5xx may be retried.
async fn post(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&'static str, String)],
    body: Vec<u8>,
    target: &str,
) -> Result<(), Failure> {
    let mut req = client
        .post(url)
        .header("Content-Type", "application/json")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    match req.send().await {
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(resp) => {
            let status = resp.status().as_u16();
            Err(Failure {
                message: format!("{target}: answered HTTP {status}"),
                retryable: matches!(status, 408 | 429 | 500..),
            })
        }
        Err(e) => Err(Failure {
            message: format!("{target}: {}", crate::error_chain(&e.without_url())),
            retryable: true,
        }),
    }
}

fn delivery_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Sends `n` to `target` once (each retry sends the same body, id and signature).
async fn deliver(target: &NotifyTarget, n: &Notification, s: &Settings) -> Result<(), Failure> {
    let name = target.name.as_str();
    let url = read(&target.url, "address", name)?;
    let (body, headers) = match target.transport {
        Transport::Webhook => {
            let secret = match &target.secret {
                Some(src) => read(src, "signing secret", name)?,
                None => return Err(Failure::permanent(format!("{name}: no signing secret"))),
            };
            let id = delivery_id();
            let now = chrono::Utc::now();
            let timestamp = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let payload =
                webhook_payload(n, &id, &timestamp, &s.installation, s.status_url.as_deref());
            let body = serde_json::to_vec(&payload).unwrap_or_default();
            let headers = vec![
                ("X-Protond-Event", n.event.as_str().to_string()),
                ("X-Protond-Delivery", id),
                ("X-Protond-Timestamp", now.timestamp().to_string()),
                ("X-Protond-Signature", signature(&secret, &body)),
            ];
            (body, headers)
        }
        Transport::Slack => {
            let msg = slack_message(n, &s.installation, s.status_url.as_deref());
            (serde_json::to_vec(&msg).unwrap_or_default(), Vec::new())
        }
    };
    with_retries(s.attempts, s.backoff, || {
        post(&s.client, &url, &headers, body.clone(), name)
    })
    .await
}

/// Delivers what `rx` brings to `target`, one at a time, until the outbox closes.
pub(super) async fn target_worker(
    target: NotifyTarget,
    mut rx: mpsc::Receiver<Arc<Notification>>,
    settings: Arc<Settings>,
    metrics: Metrics,
) {
    while let Some(n) = rx.recv().await {
        let result = deliver(&target, &n, &settings).await;
        count(&metrics, target.transport.as_str(), result.is_ok());
        match result {
            Ok(()) => {
                tracing::debug!(target = %target.name, event = n.event.as_str(), "Notification delivered.");
            }
            Err(f) => {
                tracing::warn!(target = %target.name, event = n.event.as_str(), error = %f.message, "Notification not delivered.");
            }
        }
    }
}

/// Sets the commit statuses `rx` brings, in order, until the outbox closes.
pub(super) async fn status_worker(
    forges: BTreeMap<String, AnyForge>,
    mut rx: mpsc::Receiver<StatusUpdate>,
    settings: Arc<Settings>,
    metrics: Metrics,
) {
    while let Some(u) = rx.recv().await {
        let Some(forge) = forges.get(&u.repo) else {
            continue;
        };
        let draft = StatusDraft {
            state: u.state,
            context: format!("protond/{}", u.resource),
            description: u.description.clone(),
            target_url: settings.status_url.clone(),
        };
        let result = with_retries(settings.attempts, settings.backoff, || async {
            forge
                .set_status(&u.commit, &draft)
                .await
                .map_err(|e| Failure {
                    retryable: e.is_retryable(),
                    message: crate::error_chain(&e),
                })
        })
        .await;
        count(&metrics, COMMIT_STATUS, result.is_ok());
        match result {
            Ok(()) => {
                tracing::debug!(repo = %u.repo, resource = %u.resource, commit = %u.commit, state = ?u.state, "Commit status set.");
            }
            Err(f) => {
                tracing::warn!(repo = %u.repo, resource = %u.resource, commit = %u.commit, error = %f.message, "Commit status not set.");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn payload_and_message_shapes() {
        let n = Notification::new(
            NotifyEvent::DeploymentFailed,
            "environment/dev failed: boom",
        )
        .resource("environment/dev")
        .detail("error", "boom");
        let p = webhook_payload(&n, "abc", "2026-01-01T00:00:00Z", "prod-1", None);
        assert_eq!(
            p,
            json!({
                "id": "abc", "event": "deployment_failed", "timestamp": "2026-01-01T00:00:00Z",
                "installation": "prod-1", "resource": "environment/dev",
                "summary": "environment/dev failed: boom", "details": {"error": "boom"},
                "status_url": null,
            })
        );
        let m = slack_message(&n, "prod-1", Some("https://p.example/"));
        assert_eq!(
            m["text"],
            "*Deployment failed* (prod-1): environment/dev failed: boom <https://p.example/|status page>"
        );
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let s = Duration::from_secs(1);
        assert_eq!(backoff(s, 1), s);
        assert_eq!(backoff(s, 3), Duration::from_secs(4));
        assert_eq!(backoff(s, 40), MAX_BACKOFF);
    }

    #[test]
    fn a_missing_secret_names_its_variable_not_its_value() {
        let e = read(
            &SecretSource::Env("PROTOND_TEST_UNSET_VARIABLE_X".into()),
            "signing secret",
            "ops-hook",
        )
        .expect_err("unset");
        assert_eq!(
            e.message,
            "ops-hook: the signing secret is missing: set the environment variable PROTOND_TEST_UNSET_VARIABLE_X"
        );
        assert!(!e.retryable);
    }

    #[tokio::test]
    async fn retries_stop_at_the_attempts_or_a_permanent_failure() {
        let mut calls = 0;
        let r = with_retries(3, Duration::from_millis(1), || {
            calls += 1;
            async {
                Err(Failure {
                    message: "down".into(),
                    retryable: true,
                })
            }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 3);
        let mut calls = 0;
        let r = with_retries(3, Duration::from_millis(1), || {
            calls += 1;
            async { Err(Failure::permanent("no".into())) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1);
    }
}
