//! `[notifications]` and `[[notify]]`: commit statuses on spec commits and outgoing
//! notifications (signed JSON webhooks, Slack-compatible messages), as written and after
//! checks.
//!
//! Secrets (a webhook's signing secret, a URL holding a token as Slack's do) are never held
//! here: only the name of the environment variable or file that holds them, read when a
//! notification is sent. This module must never read them, nor anything but the config.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, duration};

/// `[notifications]`: settings shared by every target and the commit statuses.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotifications {
    /// Set a commit status (`protond/<resource>`) on the spec commit of each deployment,
    /// through the spec repo's `forge` (default false).
    #[serde(default)]
    pub commit_statuses: Option<bool>,
    /// The status page's public address, linked from commit statuses and messages (default
    /// none).
    #[serde(default)]
    pub status_url: Option<String>,
    /// Notifications waiting per target before new ones are dropped (default 1000).
    #[serde(default)]
    pub queue: Option<usize>,
    /// Attempts per notification (default 5).
    #[serde(default)]
    pub attempts: Option<u32>,
    /// Wait before the first retry, doubled at each retry up to 5 minutes (default `1s`).
    #[serde(default)]
    pub backoff: Option<String>,
    /// Time for one request, connecting included (default `10s`).
    #[serde(default)]
    pub timeout: Option<String>,
    /// How long `reconcile --once` and a stopping `run` wait for queued notifications
    /// (default `10s`).
    #[serde(default)]
    pub drain_timeout: Option<String>,
}

/// `[[notify]]`: one receiver of notifications.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotifyTarget {
    /// A name for logs and errors (default `notify[<index>]`); the URL is never logged.
    #[serde(default)]
    pub name: Option<String>,
    /// `webhook` (JSON signed with HMAC-SHA256) or `slack` (an incoming-webhook message).
    pub kind: String,
    /// The address, when it holds no secret.
    #[serde(default)]
    pub url: Option<String>,
    /// Environment variable holding the address (Slack's holds a token).
    #[serde(default)]
    pub url_env: Option<String>,
    /// Environment variable holding a webhook's signing secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// File holding a webhook's signing secret (trailing whitespace ignored).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Event types sent (default all): `deployment_failed`, `rollout_halted`,
    /// `release_refused`, `drift_found`, `conflict_found`, `pull_request_opened`,
    /// `release_quarantined`, `release_released`, `approval_needed`.
    #[serde(default)]
    pub events: Option<Vec<String>>,
}

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NotifyEvent {
    /// A deployment failed.
    DeploymentFailed,
    /// A minor rollout was halted by a failure.
    RolloutHalted,
    /// A release was refused (its check failed) or quarantined (its tag moved).
    ReleaseRefused,
    /// A stack differs from what protond deployed.
    DriftFound,
    /// A stack protond would touch belongs to something else.
    ConflictFound,
    /// An upgrade pull request was opened.
    PullRequestOpened,
    /// A release was quarantined (automatically or by hand).
    ReleaseQuarantined,
    /// A quarantined release was released.
    ReleaseReleased,
    /// The change-set gate holds a minor upgrade until a person approves it.
    ApprovalNeeded,
}

impl NotifyEvent {
    /// Every event type, in documentation order.
    pub const ALL: [Self; 9] = [
        Self::DeploymentFailed,
        Self::RolloutHalted,
        Self::ReleaseRefused,
        Self::DriftFound,
        Self::ConflictFound,
        Self::PullRequestOpened,
        Self::ReleaseQuarantined,
        Self::ReleaseReleased,
        Self::ApprovalNeeded,
    ];

    /// The name in the config, the payload and the `X-Protond-Event` header.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DeploymentFailed => "deployment_failed",
            Self::RolloutHalted => "rollout_halted",
            Self::ReleaseRefused => "release_refused",
            Self::DriftFound => "drift_found",
            Self::ConflictFound => "conflict_found",
            Self::PullRequestOpened => "pull_request_opened",
            Self::ReleaseQuarantined => "release_quarantined",
            Self::ReleaseReleased => "release_released",
            Self::ApprovalNeeded => "approval_needed",
        }
    }
}

/// How a target is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A JSON document signed with HMAC-SHA256 (`X-Protond-Signature`).
    Webhook,
    /// A Slack-compatible incoming-webhook message (`{"text": …}`).
    Slack,
}

impl Transport {
    /// The name in the config and the `transport` metric label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Slack => "slack",
        }
    }
}

/// Where a value is read from when it is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Written in the config (not a secret).
    Inline(String),
    /// An environment variable's name.
    Env(String),
    /// A file's path.
    File(PathBuf),
}

/// A `[[notify]]` target after checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyTarget {
    /// For logs and errors.
    pub name: String,
    /// How it is spoken to.
    pub transport: Transport,
    /// Where its address is.
    pub url: SecretSource,
    /// Where a webhook's signing secret is.
    pub secret: Option<SecretSource>,
    /// The event types it receives.
    pub events: Vec<NotifyEvent>,
}

/// `[notifications]` and `[[notify]]` after checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notifications {
    /// Commit statuses on spec commits.
    pub commit_statuses: bool,
    /// The status page's public address.
    pub status_url: Option<String>,
    /// Queue length per target.
    pub queue: usize,
    /// Attempts per notification.
    pub attempts: u32,
    /// First retry delay.
    pub backoff: Duration,
    /// Time per request.
    pub timeout: Duration,
    /// Time to send what is queued at exit.
    pub drain_timeout: Duration,
    /// The receivers.
    pub targets: Vec<NotifyTarget>,
}

impl Default for Notifications {
    fn default() -> Self {
        Self {
            commit_statuses: false,
            status_url: None,
            queue: 1000,
            attempts: 5,
            backoff: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            targets: Vec::new(),
        }
    }
}

impl Notifications {
    /// Checks both sections; every problem goes to `errors`.
    pub(super) fn compile(
        raw: &RawNotifications,
        targets: &[RawNotifyTarget],
        file: &str,
        errors: &mut Vec<ConfigError>,
    ) -> Self {
        let d = Self::default();
        let mut err = |key: String, message: String| {
            errors.push(ConfigError {
                file: file.into(),
                key,
                message,
            });
        };
        if raw.queue == Some(0) {
            err(
                "notifications.queue".into(),
                "must be at least 1 (notifications waiting per target)".into(),
            );
        }
        if raw.attempts == Some(0) {
            err("notifications.attempts".into(), "must be at least 1".into());
        }
        if let Some(u) = &raw.status_url
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            err(
                "notifications.status_url".into(),
                format!("{u:?} is not an http(s) address, e.g. \"https://protond.example.com/\""),
            );
        }
        let targets = targets
            .iter()
            .enumerate()
            .filter_map(|(i, t)| compile_target(i, t, &mut err))
            .collect();
        let mut durations = Vec::new();
        let time = |v: &Option<String>, d: Duration, key: &str, es: &mut Vec<ConfigError>| {
            duration(v.as_deref(), d, &format!("notifications.{key}"), file, es)
        };
        durations.push(time(&raw.backoff, d.backoff, "backoff", errors));
        durations.push(time(&raw.timeout, d.timeout, "timeout", errors));
        durations.push(time(
            &raw.drain_timeout,
            d.drain_timeout,
            "drain_timeout",
            errors,
        ));
        Self {
            commit_statuses: raw.commit_statuses.unwrap_or(false),
            status_url: raw.status_url.clone(),
            queue: raw.queue.unwrap_or(d.queue).max(1),
            attempts: raw.attempts.unwrap_or(d.attempts).max(1),
            backoff: durations[0],
            timeout: durations[1],
            drain_timeout: durations[2],
            targets,
        }
    }
}

fn compile_target(
    i: usize,
    t: &RawNotifyTarget,
    err: &mut impl FnMut(String, String),
) -> Option<NotifyTarget> {
    let key = |k: &str| format!("notify[{i}].{k}");
    let transport = match t.kind.as_str() {
        "webhook" => Transport::Webhook,
        "slack" => Transport::Slack,
        other => {
            err(
                key("kind"),
                format!("unknown kind {other:?}; use \"webhook\" or \"slack\""),
            );
            return None;
        }
    };
    let url = match (&t.url, &t.url_env) {
        (Some(u), None) => SecretSource::Inline(u.clone()),
        (None, Some(v)) => SecretSource::Env(v.clone()),
        _ => {
            err(
                key("url"),
                "give exactly one of url or url_env (the environment variable holding an address with a token, as Slack's)".into(),
            );
            return None;
        }
    };
    if let SecretSource::Inline(u) = &url
        && !(u.starts_with("https://") || u.starts_with("http://"))
    {
        err(key("url"), format!("{u:?} is not an http(s) address"));
    }
    let secret = match (&t.secret_env, &t.secret_file) {
        (Some(v), None) => Some(SecretSource::Env(v.clone())),
        (None, Some(p)) => Some(SecretSource::File(p.clone())),
        (None, None) => None,
        (Some(_), Some(_)) => {
            err(
                key("secret_env"),
                "give secret_env or secret_file, not both".into(),
            );
            None
        }
    };
    match (transport, &secret) {
        (Transport::Webhook, None) => err(
            key("secret_env"),
            "a webhook is signed: set secret_env (an environment variable) or secret_file holding the signing secret".into(),
        ),
        (Transport::Slack, Some(_)) => err(
            key("secret_env"),
            "a Slack message is not signed: remove secret_env/secret_file (put the address in url_env)".into(),
        ),
        _ => {}
    }
    let events = match &t.events {
        None => NotifyEvent::ALL.to_vec(),
        Some(names) => {
            let mut out = Vec::new();
            for name in names {
                match NotifyEvent::ALL.iter().find(|e| e.as_str() == name) {
                    Some(e) if !out.contains(e) => out.push(*e),
                    Some(_) => {}
                    None => err(
                        key("events"),
                        format!(
                            "unknown event {name:?}; use {}",
                            NotifyEvent::ALL.map(NotifyEvent::as_str).join(", ")
                        ),
                    ),
                }
            }
            out
        }
    };
    Some(NotifyTarget {
        name: t.name.clone().unwrap_or_else(|| format!("notify[{i}]")),
        transport,
        url,
        secret,
        events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(text: &str) -> Result<Notifications, Vec<String>> {
        #[derive(Deserialize)]
        struct Doc {
            #[serde(default)]
            notifications: RawNotifications,
            #[serde(default)]
            notify: Vec<RawNotifyTarget>,
        }
        let doc: Doc = toml::from_str(text).expect("toml");
        let mut errors = Vec::new();
        let n = Notifications::compile(&doc.notifications, &doc.notify, "proton.toml", &mut errors);
        if errors.is_empty() {
            Ok(n)
        } else {
            Err(errors.iter().map(ToString::to_string).collect())
        }
    }

    #[test]
    fn defaults_and_targets() {
        assert_eq!(compile("").expect("empty"), Notifications::default());
        let n = compile(
            "[notifications]\ncommit_statuses = true\nqueue = 3\nbackoff = \"2s\"\n\
             [[notify]]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/h\"\nsecret_env = \"S\"\nevents = [\"deployment_failed\", \"drift_found\"]\n\
             [[notify]]\nname = \"chat\"\nkind = \"slack\"\nurl_env = \"SLACK_URL\"\n",
        )
        .expect("valid");
        assert!(n.commit_statuses);
        assert_eq!((n.queue, n.backoff), (3, Duration::from_secs(2)));
        assert_eq!(n.targets[0].name, "notify[0]");
        assert_eq!(
            n.targets[0].events,
            [NotifyEvent::DeploymentFailed, NotifyEvent::DriftFound]
        );
        assert_eq!(n.targets[1].url, SecretSource::Env("SLACK_URL".into()));
        assert_eq!(n.targets[1].events, NotifyEvent::ALL);
    }

    #[test]
    fn errors_name_the_key_and_the_fix() {
        let errors = compile(
            "[notifications]\nqueue = 0\n\
             [[notify]]\nkind = \"webhook\"\nurl = \"http://x/\"\n\
             [[notify]]\nkind = \"email\"\nurl = \"http://x/\"\n\
             [[notify]]\nkind = \"slack\"\nurl = \"http://x/\"\nurl_env = \"U\"\n\
             [[notify]]\nkind = \"slack\"\nurl = \"http://x/\"\nevents = [\"deployment_faild\"]\n",
        )
        .expect_err("invalid");
        let all = errors.join("\n");
        for needle in [
            "proton.toml: notifications.queue: must be at least 1",
            "notify[0].secret_env: a webhook is signed",
            "notify[1].kind: unknown kind \"email\"",
            "notify[2].url: give exactly one of url or url_env",
            "notify[3].events: unknown event \"deployment_faild\"; use deployment_failed, rollout_halted",
        ] {
            assert!(all.contains(needle), "{needle} missing in:\n{all}");
        }
    }
}
