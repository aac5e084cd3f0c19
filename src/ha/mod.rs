//! High availability on a shared `PostgreSQL` state (issue 19): sharding ([`shard`]).
//!
//! Decides which leases a replica wants and what a leader may change; it must never talk
//! to AWS or git.

pub mod shard;
