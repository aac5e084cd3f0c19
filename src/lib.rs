//! protond: a self-hosted, git-driven successor to AWS Proton.
//!
//! Data flows one way: sources -> catalog/spec -> render -> plan -> provision -> state.
//! This crate is the library behind the `protond` binary; `main.rs` only parses the
//! command line and calls [`cli::run`].
#![deny(missing_docs)]

pub mod catalog;
pub mod cli;
pub mod config;
pub mod plan;
pub mod render;
pub mod spec;
pub mod state;
