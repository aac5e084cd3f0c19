//! The outbox: offering never waits, a full queue drops and counts, targets get only the
//! event types they asked for, commit statuses go only to repos with a forge API.

use super::*;
use crate::config::{NotifyTarget, SecretSource, Transport};

fn config(targets: Vec<NotifyTarget>, queue: usize) -> Config {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = Config::compile(
        toml::from_str(
            "[[spec_repos]]\nname = \"envs\"\nurl = \"envs\"\nforge = { kind = \"github\", api_url = \"http://127.0.0.1:9\", repo = \"acme/envs\" }\n\
             [[spec_repos]]\nname = \"plain\"\nurl = \"plain\"\n",
        )
        .expect("toml"),
        "proton.toml",
        dir.path(),
    )
    .expect("config");
    c.notifications.targets = targets;
    c.notifications.queue = queue;
    c.notifications.commit_statuses = true;
    c
}

/// A target on a port of 127.0.0.1 that accepts connections and never answers.
fn silent(events: Vec<NotifyEvent>, addr: std::net::SocketAddr) -> NotifyTarget {
    NotifyTarget {
        name: "silent".into(),
        transport: Transport::Slack,
        url: SecretSource::Inline(format!("http://{addr}/hook")),
        secret: None,
        events,
    }
}

fn dropped(o: &Outbox, transport: &str) -> u64 {
    o.metrics()
        .dropped
        .get_or_create(&TransportLabels {
            transport: transport.into(),
        })
        .get()
}

#[tokio::test]
async fn a_full_queue_drops_the_newest_and_counts_without_waiting() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let o = Outbox::default();
    let mut c = config(vec![silent(vec![NotifyEvent::DeploymentFailed], addr)], 2);
    c.notifications.timeout = Duration::from_secs(30);
    o.start(&c, "test");
    let started = std::time::Instant::now();
    for i in 0..10 {
        o.offer(Notification::new(
            NotifyEvent::DeploymentFailed,
            format!("n{i}"),
        ));
        // Not asked for: neither queued nor dropped.
        o.offer(Notification::new(NotifyEvent::DriftFound, "drift"));
    }
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "offer waited"
    );
    // The worker holds one, the queue two: at least seven dropped (eight if the worker had
    // not taken one yet).
    let d = dropped(&o, "slack");
    assert!((7..=8).contains(&d), "dropped {d}");
    assert!(
        !o.drain(Duration::from_millis(50)).await,
        "nothing was answered"
    );
    // After the drain nothing is queued or counted.
    o.offer(Notification::new(NotifyEvent::DeploymentFailed, "late"));
    assert_eq!(dropped(&o, "slack"), d);
    drop(listener);
}

#[tokio::test]
async fn commit_statuses_only_for_repos_with_a_forge_api() {
    let o = Outbox::default();
    o.start(&config(Vec::new(), 1), "test");
    let update = |repo: &str| StatusUpdate {
        repo: repo.into(),
        commit: "0".repeat(40),
        resource: "environment/dev".into(),
        state: StatusState::Pending,
        description: "Deploying".into(),
    };
    for _ in 0..5 {
        o.status(update("plain"));
    }
    assert_eq!(dropped(&o, "commit_status"), 0, "no forge: never queued");
    for _ in 0..5 {
        o.status(update("envs"));
    }
    assert!(dropped(&o, "commit_status") >= 3);
    o.drain(Duration::from_millis(10)).await;
}

#[test]
fn an_outbox_never_started_takes_nothing() {
    let o = Outbox::default();
    o.offer(Notification::new(NotifyEvent::DeploymentFailed, "x"));
    assert_eq!(dropped(&o, "webhook"), 0);
}
