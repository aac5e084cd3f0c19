//! Table tests of `[ha]`, the state URL, `state_password_file`, `[[spec_repos]] shard` and
//! the rendezvous hash.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::config::{Config, RawConfig};

const PG: &str = "state = \"postgres://protond@db.internal:5432/protond?sslmode=verify-full&sslrootcert=/etc/protond/db-ca.pem\"\n";
const SQLITE: &str = "state = \"sqlite://s.db\"\n";
const REPOS: &str = "[[spec_repos]]\nname = \"a\"\nurl = \"a\"\n[[spec_repos]]\nname = \"b\"\nurl = \"b\"\nshard = 2\n";

fn process() -> Process {
    Process {
        replica_id: None,
        shard: None,
        host: "web-1.example".into(),
        pid: 4242,
    }
}

/// `[ha]` and friends compiled from `text` with `process`: the result and each error as
/// `key: message`.
fn compile_with(text: &str, process: &Process) -> (Ha, Vec<String>) {
    let raw: RawConfig = toml::from_str(text).expect("parses");
    let state = raw.state.clone().unwrap_or_else(|| "sqlite://s.db".into());
    let mut errors = Vec::new();
    let ha = compile(&raw, &state, process, "proton.toml", &mut errors);
    let errors = errors
        .iter()
        .map(|e| {
            assert_eq!(e.file, "proton.toml");
            format!("{}: {}", e.key, e.message)
        })
        .collect();
    (ha, errors)
}

fn compile_text(text: &str) -> (Ha, Vec<String>) {
    compile_with(text, &process())
}

/// The keys of the errors.
fn keys(errors: &[String]) -> Vec<&str> {
    errors
        .iter()
        .map(|e| e.split(": ").next().expect("a key"))
        .collect()
}

#[test]
fn defaults_without_the_table() {
    let expected = Ha {
        lease: Duration::from_secs(15),
        replica_id: "web-1.example-4242".into(),
        shards: 1,
        shard: 0,
    };
    assert_eq!(compile_text(SQLITE), (expected.clone(), Vec::new()));
    assert_eq!(compile_text(PG), (expected.clone(), Vec::new()));
    assert_eq!(compile_text(&format!("{PG}[ha]\n")), (expected, Vec::new()));
}

#[test]
fn a_full_table_on_postgres() {
    let (ha, errors) = compile_text(&format!(
        "{PG}state_password_file = \"/run/secrets/protond-db-password\"\n[ha]\nlease = \"30s\"\nreplica_id = \"protond-0\"\nshards = 3\nshard = 2\n{REPOS}"
    ));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        ha,
        Ha {
            lease: Duration::from_secs(30),
            replica_id: "protond-0".into(),
            shards: 3,
            shard: 2,
        }
    );
}

/// Each invalid value: the key named, and the fix in the message.
#[test]
fn every_invalid_value_names_its_key_and_fix() {
    let table: &[(&str, &[&str], &str)] = &[
        // (config, keys in error, a phrase of the first message)
        (
            &format!("{SQLITE}[ha]\n"),
            &["ha"],
            "HA and sharding need state = postgres://…; a SQLite file has one writer",
        ),
        (
            &format!("{SQLITE}[ha]\nshards = 2\n"),
            &["ha.shards"],
            "HA and sharding need state = postgres://…",
        ),
        (
            &format!("{SQLITE}{REPOS}"),
            &["spec_repos[1].shard"],
            "sharding needs state = postgres://…",
        ),
        (
            &format!("{SQLITE}state_password_file = \"p\"\n"),
            &["state_password_file"],
            "only a postgres:// state has a password",
        ),
        (
            &format!("{PG}[ha]\nlease = \"0.5s\"\n"),
            &["ha.lease"],
            "give 1s to 5m",
        ),
        (
            &format!("{PG}[ha]\nlease = \"6m\"\n"),
            &["ha.lease"],
            "give 1s to 5m",
        ),
        (
            &format!("{PG}[ha]\nlease = \"soon\"\n"),
            &["ha.lease"],
            "is not a duration",
        ),
        (
            &format!("{PG}[ha]\nshards = 0\n"),
            &["ha.shards"],
            "give 1 (one leader for every repo) to 64",
        ),
        (&format!("{PG}[ha]\nshards = 65\n"), &["ha.shards"], "to 64"),
        (
            &format!("{PG}[ha]\nshards = 3\nshard = 3\n"),
            &["ha.shard"],
            "shards are 0 to 2",
        ),
        (
            &format!("{PG}[ha]\nshards = 2\n{REPOS}"),
            &["spec_repos[1].shard"],
            "2 is not a shard: ha.shards is 2, so shards are 0 to 1",
        ),
        (
            &format!("{PG}{REPOS}"),
            &["spec_repos[1].shard"],
            "ha.shards is 1",
        ),
        (
            &format!("{PG}[ha]\nreplica_id = \"a b\"\n"),
            &["ha.replica_id"],
            "is not a replica id",
        ),
        (
            "state = \"postgres://protond:hunter2@db:5432/protond\"\n",
            &["state"],
            "put it in PROTOND_STATE_PASSWORD or state_password_file",
        ),
        (
            "state = \"postgresql://db/protond?sslmode=require&password=hunter2\"\n",
            &["state"],
            "put it in PROTOND_STATE_PASSWORD or state_password_file",
        ),
        (
            "state = \"postgres:///protond\"\n",
            &["state"],
            "names no host",
        ),
        (
            "state = \"mysql://u:hunter2@db/x\"\n",
            &["state"],
            "is not a sqlite:// or postgres:// URL",
        ),
        (
            "state = \"mysql://u:a/hunter2@db/x?password=hunter2\"\n",
            &["state"],
            "\"mysql://db/x\" is not a sqlite://",
        ),
        (
            "state = \"postgres://protond:p/hunter2@db/protond\"\n",
            &["state"],
            "(shown here without it: \"postgres://db/protond\")",
        ),
        (
            "state = \"postgres://protond:p@hunter2@db/protond\"\n",
            &["state"],
            "put it in PROTOND_STATE_PASSWORD",
        ),
    ];
    for (text, want, phrase) in table {
        let (_, errors) = compile_text(text);
        assert_eq!(keys(&errors), *want, "{text}: {errors:?}");
        assert!(errors[0].contains(phrase), "{text}: {errors:?}");
        assert!(
            !errors.iter().any(|e| e.contains("hunter2")),
            "a password shown: {errors:?}"
        );
    }
    // What is accepted: a socket folder in the query, the postgresql scheme, no user.
    for ok in [
        "state = \"postgres://protond@/protond?host=/run/postgresql\"\n",
        "state = \"postgresql://db.internal/protond\"\n",
        "state = \"postgres://protond@[::1]:5432/protond?sslmode=verify-full\"\n",
    ] {
        assert_eq!(compile_text(ok).1, Vec::<String>::new(), "{ok}");
    }
}

/// `PROTOND_REPLICA_ID` and `PROTOND_SHARD` win over the file, and are checked like it.
#[test]
fn the_environment_overrides_replica_id_and_shard() {
    let text = format!("{PG}[ha]\nreplica_id = \"from-file\"\nshards = 4\nshard = 1\n");
    let env = |id: Option<&str>, shard: Option<&str>| Process {
        replica_id: id.map(Into::into),
        shard: shard.map(Into::into),
        ..process()
    };
    let (ha, errors) = compile_with(&text, &env(Some("protond-7f9c"), Some("3")));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!((ha.replica_id.as_str(), ha.shard), ("protond-7f9c", 3));
    let (ha, _) = compile_with(&text, &env(None, None));
    assert_eq!((ha.replica_id.as_str(), ha.shard), ("from-file", 1));
    let (_, errors) = compile_with(&text, &env(Some("x/y"), Some("4")));
    assert_eq!(
        keys(&errors),
        [
            "ha.replica_id (PROTOND_REPLICA_ID)",
            "ha.shard (PROTOND_SHARD)"
        ],
        "{errors:?}"
    );
    let (_, errors) = compile_with(&text, &env(None, Some("two")));
    assert!(
        errors[0]
            .starts_with("ha.shard (PROTOND_SHARD): PROTOND_SHARD=\"two\" is not a shard number"),
        "{errors:?}"
    );
    // The default id makes a host name that is not one valid.
    let odd = Process {
        host: "my host!".into(),
        ..process()
    };
    assert_eq!(compile_with(PG, &odd).0.replica_id, "my-host--4242");
}

/// Through `Config::compile`: a postgres state is accepted (the error it used to give is
/// gone), the password file is taken from the config's folder, the shards are on the repos.
#[test]
fn config_compile_accepts_postgres() {
    let text = format!("{PG}state_password_file = \"secrets/db\"\n[ha]\nshards = 3\n{REPOS}");
    let raw: RawConfig = toml::from_str(&text).expect("parses");
    let config = Config::compile(raw, "p.toml", Path::new("/etc/protond")).expect("valid");
    assert!(
        config
            .state
            .starts_with("postgres://protond@db.internal:5432/protond?")
    );
    assert_eq!(
        config.state_password_file.as_deref(),
        Some(Path::new("/etc/protond/secrets/db"))
    );
    assert_eq!(config.ha.shards, 3);
    let shards: Vec<Option<u32>> = config.spec_repos.iter().map(|r| r.shard).collect();
    assert_eq!(shards, [None, Some(2)]);
    let raw: RawConfig = toml::from_str(&format!("{SQLITE}[ha]\n")).expect("parses");
    let errors = Config::compile(raw, "p.toml", Path::new(".")).expect_err("sqlite with [ha]");
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "p.toml: ha: HA and sharding need state = postgres://…; a SQLite file has one writer: set state to a postgres:// URL, or remove [ha]"
        ]
    );
}

/// The hash is fixed: these shards must never change (repos would move on upgrade).
#[test]
fn shard_of_is_stable() {
    let got: Vec<(&str, u32)> = ["payments", "platform-envs", "checkout", "a", ""]
        .into_iter()
        .map(|n| (n, shard_of(n, 8, None)))
        .collect();
    assert_eq!(got, GOLDEN, "the rendezvous hash changed");
}

/// Computed independently of this code, in Python: `max(range(8), key=lambda s:
/// (int.from_bytes(sha256(b"protond-shard\0" + name + b"\0" + s.to_bytes(4, "big"))
/// .digest()[:8], "big"), -s))`.
const GOLDEN: [(&str, u32); 5] = [
    ("payments", 0),
    ("platform-envs", 7),
    ("checkout", 0),
    ("a", 6),
    ("", 7),
];

/// Going from 3 to 4 shards moves about a quarter of 1,000 names, each to the new shard;
/// an explicit shard wins; one shard (or 0) puts everything on shard 0.
#[test]
fn shard_of_is_consistent_and_explicit_wins() {
    let names: Vec<String> = (0..1000).map(|i| format!("team-{i}-specs")).collect();
    let mut per_shard = [0u32; 4];
    let mut moved = 0;
    for n in &names {
        let (three, four) = (shard_of(n, 3, None), shard_of(n, 4, None));
        per_shard[four as usize] += 1;
        if three != four {
            moved += 1;
            assert_eq!(four, 3, "{n} moved from {three} to an old shard {four}");
        }
        assert!(three < 3);
        assert_eq!(shard_order(n, 4)[0], four, "{n}");
        assert_eq!(shard_of(n, 1, None), 0);
        assert_eq!(shard_of(n, 0, None), 0);
    }
    println!("3 -> 4 shards: {moved} of 1000 names moved; per shard {per_shard:?}");
    assert!((200..=300).contains(&moved), "{moved} of 1000 moved");
    for count in per_shard {
        assert!((180..=320).contains(&count), "unbalanced: {per_shard:?}");
    }
    // Explicit shards win; one past the end falls back to the hash.
    for (explicit, want) in [(Some(0), 0), (Some(2), 2), (Some(3), 3)] {
        assert_eq!(shard_of("team-1-specs", 4, explicit), want);
    }
    assert_eq!(
        shard_of("team-1-specs", 4, Some(9)),
        shard_of("team-1-specs", 4, None)
    );
    // The fallback order lists every shard once.
    let mut order = shard_order("team-1-specs", 5);
    order.sort_unstable();
    assert_eq!(order, [0, 1, 2, 3, 4]);
}
