//! protond's integration tests, in one binary (one link instead of one per suite): each suite
//! is a module, named as its file was when each was a binary of its own, so a test is
//! `<suite>::<name>`, e.g. `cargo test --test it faults::` runs the fault suite.
//!
//! The suites share [`common`]: the test [`common::world::World`] (git repos, config,
//! `moto_server`) and helpers. Tests run in parallel threads of this one process; every test
//! owns its temporary folder and its `moto_server`, and nothing here sets process environment
//! variables. What they do share is listed in [`common`] with the lock that serialises it.

// Test code: helpers take owned values as the HTTP handlers that call them receive them;
// table tests name their rows with single letters; a metric counter is compared exactly.
#![allow(
    clippy::needless_pass_by_value,
    clippy::many_single_char_names,
    clippy::float_cmp,
    clippy::format_collect
)]

mod common;

mod abuse;
mod actions;
mod api;
mod cli;
mod codebuild;
mod daemon;
mod dashboard;
mod deploy_calls;
mod deploy_files;
mod drift;
mod faults;
mod forge_options;
mod gate;
mod git_plan;
mod gitea_webhook;
mod github_app;
mod ha;
mod holds;
mod hostile_git;
mod hostile_http;
mod hostile_render;
mod iam_policy;
mod import;
mod import_terraform;
mod jinja2_conformance;
mod large_templates;
mod logs;
mod notify;
mod one_writer;
mod ownership;
mod plan_matches;
mod postgres;
mod preview;
mod proposals;
mod proton_specs;
mod quarantine;
mod releases;
mod relocation;
mod report;
mod retire;
mod rollback_pr;
mod self_managed;
mod server;
mod shards;
mod signed_commits;
mod state_concurrency;
mod state_copy;
mod terraform_pipelines;
mod visible;
