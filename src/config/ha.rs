//! High availability and sharding settings (issue 19): the `state` URL's check (`sqlite://`,
//! `postgres://` or `postgresql://`, never a password inside), `state_password_file`, `[ha]`
//! (`lease`, `replica_id`, `shards`, `shard`) and `[[spec_repos]] shard`, compiled with every
//! error naming the key and the fix; and [`shard_of`], the pure rendezvous hash that gives a
//! spec repo its shard.
//!
//! It reads the process's environment (`PROTOND_REPLICA_ID`, `PROTOND_SHARD`) and the host
//! name only in [`Process::current`]; everything else is pure and table-tested. It must never
//! read the password (the state store does, from `PROTOND_STATE_PASSWORD` or the file), open
//! the database, or decide who leads (the state store's election does).

use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{ConfigError, RawConfig};

/// The environment variable holding the `PostgreSQL` password when `state_password_file` is
/// not set.
pub const STATE_PASSWORD_ENV: &str = "PROTOND_STATE_PASSWORD";
/// The environment variable that overrides `[ha] replica_id`.
pub const REPLICA_ID_ENV: &str = "PROTOND_REPLICA_ID";
/// The environment variable that overrides `[ha] shard`.
pub const SHARD_ENV: &str = "PROTOND_SHARD";

/// The default leader lease.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);
/// The shortest lease accepted.
const MIN_LEASE: Duration = Duration::from_secs(1);
/// The longest lease accepted.
const MAX_LEASE: Duration = Duration::from_mins(5);
/// The most shards accepted.
pub const MAX_SHARDS: u32 = 64;
/// The longest replica id accepted.
const MAX_REPLICA_ID: usize = 128;

/// `[ha]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHa {
    /// The leader lease, e.g. `15s` (1s to 5m).
    #[serde(default)]
    pub lease: Option<String>,
    /// This replica's name (default `<hostname>-<pid>`; `PROTOND_REPLICA_ID` overrides).
    #[serde(default)]
    pub replica_id: Option<String>,
    /// Spec repos spread over this many leaders (1 to 64).
    #[serde(default)]
    pub shards: Option<u32>,
    /// This replica's home shard (below `shards`; `PROTOND_SHARD` overrides).
    #[serde(default)]
    pub shard: Option<u32>,
}

/// `[ha]` after checks, with the environment's overrides applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ha {
    /// The leader lease: a replica takes over once the leader has not renewed it for this long.
    pub lease: Duration,
    /// This replica's name, in the lease rows, `/readyz` and the metrics.
    pub replica_id: String,
    /// How many shards the spec repos are spread over (1: one leader for all).
    pub shards: u32,
    /// This replica's home shard, below `shards`.
    pub shard: u32,
}

/// What the running process contributes: the environment's overrides and the default
/// replica id's parts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Process {
    /// `PROTOND_REPLICA_ID`, when set and not empty.
    pub replica_id: Option<String>,
    /// `PROTOND_SHARD`, when set and not empty (checked by [`compile`]).
    pub shard: Option<String>,
    /// This machine's host name.
    pub host: String,
    /// This process's id.
    pub pid: u32,
}

impl Process {
    /// The environment, host name and pid of this process.
    #[must_use]
    pub fn current() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let from_file = |p: &str| std::fs::read_to_string(p).ok();
        let host = from_file("/proc/sys/kernel/hostname")
            .or_else(|| from_file("/etc/hostname"))
            .or_else(|| var("HOSTNAME"))
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "protond".into());
        Self {
            replica_id: var(REPLICA_ID_ENV),
            shard: var(SHARD_ENV),
            host,
            pid: std::process::id(),
        }
    }
}

/// Whether `state` names a `PostgreSQL` database.
#[must_use]
pub fn is_postgres(state: &str) -> bool {
    state.starts_with("postgres://") || state.starts_with("postgresql://")
}

/// Checks the `state` URL: `sqlite://…`, or `postgres://…`/`postgresql://…` with a host and
/// no password (neither `user:password@` nor `?password=`).
fn check_state(state: &str, file: &str, errors: &mut Vec<ConfigError>) {
    let mut err = |message: String| {
        errors.push(ConfigError {
            file: file.into(),
            key: "state".into(),
            message,
        });
    };
    if state.starts_with("sqlite://") {
        return;
    }
    if !is_postgres(state) {
        err(format!(
            "{:?} is not a sqlite:// or postgres:// URL, e.g. \"sqlite://state/state.db\" or \"postgres://protond@db.internal:5432/protond?sslmode=verify-full\"",
            shown(state)
        ));
        return;
    }
    let rest = state.split_once("://").map_or("", |(_, r)| r);
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    // The user info runs to the last `@` before the query, so that a password holding an
    // unescaped `/` or `@` is still found (an `@` in a database name is written `%40`).
    let (userinfo, after) = before_query.rsplit_once('@').unwrap_or(("", before_query));
    let host = after.split('/').next().unwrap_or("");
    let query_keys: Vec<&str> = query
        .split('&')
        .map(|kv| kv.split('=').next().unwrap_or(""))
        .collect();
    if userinfo.contains(':')
        || query_keys
            .iter()
            .any(|k| k.eq_ignore_ascii_case("password"))
    {
        err(format!(
            "the URL holds a password (shown here without it: {:?}); a config file is no place for it: put it in {STATE_PASSWORD_ENV} or state_password_file, and remove it from the URL",
            shown(state)
        ));
    }
    let host_name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    if host_name.is_empty() && !query_keys.iter().any(|k| k.eq_ignore_ascii_case("host")) {
        err("the postgres:// URL names no host; e.g. \"postgres://protond@db.internal:5432/protond?sslmode=verify-full\"".into());
    }
}

/// `url` as it may be shown: the scheme and what follows the last `@` before the query, no
/// query (where a password could be).
fn shown(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let before_query = rest.split('?').next().unwrap_or("");
    let after = before_query
        .rsplit_once('@')
        .map_or(before_query, |(_, a)| a);
    format!("{scheme}://{after}")
}

/// Checks `state` ([`check_state`]) and compiles `[ha]`, `state_password_file` and
/// `[[spec_repos]] shard` against it and the process's overrides; every problem goes to
/// `errors` (the defaults stand in).
pub(super) fn compile(
    raw: &RawConfig,
    state: &str,
    process: &Process,
    file: &str,
    errors: &mut Vec<ConfigError>,
) -> Ha {
    check_state(state, file, errors);
    let mut err = |key: String, message: String| {
        errors.push(ConfigError {
            file: file.into(),
            key,
            message,
        });
    };
    let table = raw.ha.as_ref();
    let raw_ha = table.unwrap_or(&EMPTY);
    let postgres = is_postgres(state);
    if raw.state_password_file.is_some() && !postgres {
        err(
            "state_password_file".into(),
            "only a postgres:// state has a password; remove state_password_file, or set state to a postgres:// URL".into(),
        );
    }
    let lease = lease(raw_ha.lease.as_deref(), &mut err);
    let replica_id = replica_id(raw_ha, process, &mut err);
    let shards = match raw_ha.shards {
        None => 1,
        Some(n) if (1..=MAX_SHARDS).contains(&n) => n,
        Some(n) => {
            err(
                "ha.shards".into(),
                format!("{n} shards: give 1 (one leader for every repo) to {MAX_SHARDS}"),
            );
            1
        }
    };
    let shard = home_shard(raw_ha, process, shards, &mut err);
    if !postgres {
        let need = "HA and sharding need state = postgres://…; a SQLite file has one writer";
        if shards > 1 {
            err(
                "ha.shards".into(),
                format!("{need}: set state to a postgres:// URL, or remove [ha]"),
            );
        } else if table.is_some() {
            err(
                "ha".into(),
                format!("{need}: set state to a postgres:// URL, or remove [ha]"),
            );
        }
    }
    for (i, n) in raw.spec_repos.iter().enumerate() {
        let Some(n) = n.shard else { continue };
        let key = format!("spec_repos[{i}].shard");
        if !postgres {
            err(key, "sharding needs state = postgres://…; a SQLite file has one writer: remove shard, or set state to a postgres:// URL".into());
        } else if n >= shards {
            err(
                key,
                format!(
                    "{n} is not a shard: ha.shards is {shards}, so shards are 0 to {}; lower it, or raise ha.shards",
                    shards - 1
                ),
            );
        }
    }
    Ha {
        lease,
        replica_id,
        shards,
        shard,
    }
}

/// An absent `[ha]`.
static EMPTY: RawHa = RawHa {
    lease: None,
    replica_id: None,
    shards: None,
    shard: None,
};

fn lease(value: Option<&str>, err: &mut impl FnMut(String, String)) -> Duration {
    let Some(v) = value else {
        return DEFAULT_LEASE;
    };
    match humantime::parse_duration(v) {
        Ok(d) if (MIN_LEASE..=MAX_LEASE).contains(&d) => d,
        Ok(_) => {
            err(
                "ha.lease".into(),
                format!(
                    "{v:?} is out of range; give 1s to 5m (default 15s: a replica takes over about 15s after the leader stops)"
                ),
            );
            DEFAULT_LEASE
        }
        Err(e) => {
            err(
                "ha.lease".into(),
                format!("{v:?} is not a duration ({e}); write e.g. \"15s\" or \"1m\""),
            );
            DEFAULT_LEASE
        }
    }
}

/// `PROTOND_REPLICA_ID`, else `[ha] replica_id` when not empty, else `<hostname>-<pid>`.
fn replica_id(raw: &RawHa, process: &Process, err: &mut impl FnMut(String, String)) -> String {
    let given = process
        .replica_id
        .as_deref()
        .map(|v| (v, format!("ha.replica_id ({REPLICA_ID_ENV})")))
        .or_else(|| {
            raw.replica_id
                .as_deref()
                .filter(|v| !v.is_empty())
                .map(|v| (v, "ha.replica_id".to_string()))
        });
    let valid = |id: &str| {
        !id.is_empty()
            && id.len() <= MAX_REPLICA_ID
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    };
    let default = || {
        let host: String = process
            .host
            .chars()
            .map(|c| if valid(&c.to_string()) { c } else { '-' })
            .take(MAX_REPLICA_ID - 11)
            .collect();
        format!("{host}-{}", process.pid)
    };
    match given {
        None => default(),
        Some((id, _)) if valid(id) => id.to_string(),
        Some((id, key)) => {
            err(
                key,
                format!(
                    "{id:?} is not a replica id: use 1 to {MAX_REPLICA_ID} letters, digits, '-', '.' or '_' (a pod or host name), or leave it empty for <hostname>-<pid>"
                ),
            );
            default()
        }
    }
}

/// `PROTOND_SHARD`, else `[ha] shard`, else 0; below `shards`.
fn home_shard(
    raw: &RawHa,
    process: &Process,
    shards: u32,
    err: &mut impl FnMut(String, String),
) -> u32 {
    let (value, key) = match process.shard.as_deref() {
        Some(text) => {
            let Ok(n) = text.trim().parse::<u32>() else {
                err(
                    format!("ha.shard ({SHARD_ENV})"),
                    format!(
                        "{SHARD_ENV}={text:?} is not a shard number; give 0 to {}, or unset it to use ha.shard",
                        shards - 1
                    ),
                );
                return 0;
            };
            (n, format!("ha.shard ({SHARD_ENV})"))
        }
        None => (raw.shard.unwrap_or(0), "ha.shard".to_string()),
    };
    if value >= shards {
        err(
            key,
            format!(
                "{value} is not a shard: ha.shards is {shards}, so shards are 0 to {}; lower it, or raise ha.shards",
                shards - 1
            ),
        );
        return 0;
    }
    value
}

/// The weight of `shard` for `repo_name` (rendezvous hashing): the first 8 bytes of
/// SHA-256 over a fixed prefix, the name, a zero byte and the shard (big-endian). Fixed
/// forever: changing it would move repos between shards on upgrade.
fn weight(repo_name: &str, shard: u32) -> u64 {
    let mut h = Sha256::new();
    h.update(b"protond-shard\0");
    h.update(repo_name.as_bytes());
    h.update([0]);
    h.update(shard.to_be_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The shards in the order `repo_name` prefers them (rendezvous hashing: highest weight
/// first, ties to the lower shard). The first is its shard; when that shard's replicas are
/// gone, the next live one in this order takes it, and only its repos move.
#[must_use]
pub fn shard_order(repo_name: &str, shards: u32) -> Vec<u32> {
    let mut order: Vec<(u64, u32)> = (0..shards.max(1))
        .map(|s| (weight(repo_name, s), s))
        .collect();
    order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    order.into_iter().map(|(_, s)| s).collect()
}

/// The shard of a spec repo: its explicit `shard` when set (and below `shards`), else the
/// rendezvous hash of its name over `shards` (consistent: going from N to N+1 shards moves
/// only about 1/(N+1) of the repos, all to the new shard). `shards` 0 counts as 1.
#[must_use]
pub fn shard_of(repo_name: &str, shards: u32, explicit: Option<u32>) -> u32 {
    let shards = shards.max(1);
    if let Some(n) = explicit.filter(|n| *n < shards) {
        return n;
    }
    (0..shards)
        .max_by(|a, b| {
            weight(repo_name, *a)
                .cmp(&weight(repo_name, *b))
                .then(b.cmp(a))
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
