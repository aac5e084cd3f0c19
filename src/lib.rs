//! protond: a self-hosted, git-driven successor to AWS Proton.
//!
//! A cycle reads the repos (`source`), builds the catalogue and the specs (`catalog`,
//! `spec`), renders what they ask for (`render`, `desired`), diffs it with what the state
//! store records (`plan`, `state`) and starts deployments (`daemon`, `provision`); major
//! upgrades become pull requests (`propose`, `forge`). [`model`] is the vocabulary every
//! module speaks (resource ids, kinds, versions, statuses); `ops` turns records into
//! operator views; `telemetry` counts and logs through typed events, which also offer
//! `notifications` (commit statuses, webhooks) to their own tasks; `server` is the
//! HTTP surface; `evaluate` runs the pure part of a cycle (desired → diff → schedule) for
//! the daemon and `protond plan` alike; `import` takes over the stacks AWS Proton deployed.
//! This crate is the library behind the `protond`
//! binary; `main.rs` only calls [`cli::main`].
//!
//! Visibility: modules are `pub(crate)` unless the binary, the integration tests or other
//! tools use them (the leaves `source`, `catalog`, `forge`, the vocabulary `model`, the
//! records of `state`, the pure `plan`, the `provision` seam, `config`, `desired`, `demo`).
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
// Outcome and action enums are short-lived values passed by reference; boxing their large
// variants would only add noise.
#![allow(clippy::large_enum_variant)]

pub mod actions;
pub(crate) mod bench;
pub mod catalog;
pub mod cli;
pub mod config;
pub(crate) mod daemon;
pub mod demo;
pub mod desired;
pub(crate) mod drift;
pub(crate) mod evaluate;
pub mod forge;
pub mod gate;
pub(crate) mod ha;
pub mod impact;
pub(crate) mod import;
pub mod model;
pub(crate) mod notifications;
pub(crate) mod ops;
pub mod plan;
pub(crate) mod preview;
pub(crate) mod propose;
pub mod provision;
pub(crate) mod render;
pub(crate) mod report;
pub(crate) mod server;
pub mod source;
pub(crate) mod spec;
pub mod state;
pub(crate) mod telemetry;

#[cfg(test)]
mod layering;

/// An error and its causes on one line (`outer: cause: root cause`), skipping a cause whose
/// text the line already holds. Errors of this crate never hold credentials.
#[must_use]
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}
