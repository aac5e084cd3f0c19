//! protond: a self-hosted, git-driven successor to AWS Proton.
//!
//! A cycle reads the repos (`source`), builds the catalogue and the specs (`catalog`,
//! `spec`), renders what they ask for (`render`, `desired`), diffs it with what the state
//! store records (`plan`, `state`) and starts deployments (`daemon`, `provision`); major
//! upgrades become pull requests (`propose`, `forge`). [`model`] is the vocabulary every
//! module speaks (resource ids, kinds, versions, statuses); [`ops`] turns records into
//! operator views; [`telemetry`] counts and logs through typed events; [`server`] is the
//! HTTP surface. This crate is the library behind the `protond` binary; `main.rs` only
//! calls [`cli::main`].
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
// Outcome and action enums are short-lived values passed by reference; boxing their large
// variants would only add noise.
#![allow(clippy::large_enum_variant)]

pub mod bench;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod desired;
pub mod evaluate;
pub mod forge;
pub mod model;
pub mod ops;
pub mod plan;
pub mod propose;
pub mod provision;
pub mod render;
pub mod server;
pub mod source;
pub mod spec;
pub mod state;
pub mod telemetry;

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
