//! What the HTTP limits refused or cut: each refusal is counted in
//! `protond_http_refused_total{reason}` as it happens (with a debug line), and a summary of
//! the last minute is logged as one warning, so an attack neither goes unseen nor floods the
//! log. This module only counts; it never decides what to refuse.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::daemon::Ctx;
use crate::telemetry::events::{HttpRefusal, HttpRefused};

/// How often the summary warning is written (when anything was refused).
const SUMMARY_EVERY: Duration = Duration::from_mins(1);

/// Refusals since the last summary, by reason.
pub(super) struct Refusals {
    ctx: Arc<Ctx>,
    counts: [AtomicU64; HttpRefusal::ALL.len()],
}

impl Refusals {
    /// No refusals yet; counted in `ctx`'s metrics.
    pub(super) fn new(ctx: Arc<Ctx>) -> Self {
        Self {
            ctx,
            counts: Default::default(),
        }
    }

    /// Counts one refusal (metric and debug line now, warning in the next summary).
    pub(super) fn note(&self, reason: HttpRefusal) {
        HttpRefused { reason }.emit(&self.ctx.telemetry);
        if let Some(c) = self.counts.get(reason as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counts since the last call, reset to zero.
    fn take(&self) -> Vec<(HttpRefusal, u64)> {
        HttpRefusal::ALL
            .iter()
            .zip(&self.counts)
            .map(|(r, c)| (*r, c.swap(0, Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Logs one warning per minute while anything is refused; ends with the server.
    pub(super) async fn summarize(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(SUMMARY_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let counts = self.take();
            if !counts.is_empty() {
                let text = counts
                    .iter()
                    .map(|(r, n)| format!("{}={n}", r.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ");
                tracing::warn!(
                    refused = %text,
                    "HTTP limits refused requests or closed connections in the last minute (see [server] in the config; counted in protond_http_refused_total)."
                );
            }
        }
    }
}
