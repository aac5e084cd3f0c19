//! The daemon's side of quarantine: records the quarantines the cycle's evaluation decided
//! (`crate::evaluate::quarantine`) and announces every new row of the release history,
//! whoever wrote it (the daemon, or `protond release quarantine|release` from another
//! process), as typed events that feed the `[[notify]]` targets. It decides nothing.

use super::ctx::Ctx;
use crate::evaluate::quarantine::{BY_PROTOND, NewQuarantine};
use crate::state::{StateError, StopKind};
use crate::telemetry::events::{ReleaseQuarantined, ReleaseReleased, RolloutHalted};

/// Records the releases the quarantine rule stopped this cycle. A quarantine also halts the
/// rollout, so `rollout_halted` is emitted too (targets subscribed to it keep being told).
///
/// # Errors
///
/// A store failure (the cycle then starts nothing on a decision it could not record).
pub(super) async fn record(ctx: &Ctx, new: &[NewQuarantine]) -> Result<(), StateError> {
    for q in new {
        let stopped = ctx
            .store
            .stop_rollout(
                &q.template,
                q.version,
                StopKind::Quarantine,
                BY_PROTOND,
                &q.reason,
            )
            .await?;
        if stopped {
            RolloutHalted {
                template: &q.template,
                version: q.version,
                reason: &q.reason,
            }
            .emit(&ctx.telemetry);
        }
    }
    announce(ctx).await
}

/// Emits an event for every release-history row not announced yet (each once, whichever
/// process recorded it).
async fn announce(ctx: &Ctx) -> Result<(), StateError> {
    for e in ctx.store.take_unannounced_release_events().await? {
        match e.event.as_str() {
            "quarantined" => ReleaseQuarantined {
                template: &e.template,
                version: e.version,
                by: &e.by,
                reason: &e.reason,
            }
            .emit(&ctx.telemetry),
            "released" => ReleaseReleased {
                template: &e.template,
                version: e.version,
                by: &e.by,
                reason: &e.reason,
            }
            .emit(&ctx.telemetry),
            _ => {}
        }
    }
    Ok(())
}
