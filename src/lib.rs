//! protond: a self-hosted, git-driven successor to AWS Proton.
//!
//! Data flows one way: sources -> catalog/spec -> render -> plan -> provision -> state.
//! This crate is the library behind the `protond` binary; `main.rs` only parses the
//! command line and calls [`cli::run`].
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
