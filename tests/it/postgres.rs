//! The PostgreSQL state backend as a user runs it: the password from `state_password_file`
//! or `PROTOND_STATE_PASSWORD` against a server that demands one (SCRAM), never shown in
//! any output, and a clear error for a wrong one. Needs the throwaway server scripts/test
//! starts (`scripts/postgres`); skipped with a note elsewhere, failing under CI.

use std::path::Path;
use std::process::{Command, Output};

use crate::common;

/// The test server's admin URL, and the password-protected role's URL and password.
fn server() -> Option<(String, String, String)> {
    let get = |k: &str| std::env::var(k).ok();
    if let (Some(a), Some(u), Some(p)) = (
        get("PROTOND_TEST_POSTGRES_URL"),
        get("PROTOND_TEST_POSTGRES_PASSWORD_URL"),
        get("PROTOND_TEST_POSTGRES_PASSWORD"),
    ) {
        return Some((a, u, p));
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI runs the PostgreSQL tests: scripts/postgres sets PROTOND_TEST_POSTGRES_*"
    );
    eprintln!("note: no PostgreSQL test server; test skipped");
    None
}

/// A new database owned by the password-protected role; the role's URL to it.
fn database(admin: &str, role_url: &str) -> String {
    let name = format!("protond_it_{:016x}", rand_u64());
    let out = Command::new("psql")
        .arg(admin)
        .args([
            "-q",
            "-c",
            &format!("CREATE DATABASE {name} OWNER protond_pw"),
        ])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let base = role_url.rsplit_once('/').expect("a URL with a database").0;
    format!("{base}/{name}")
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

fn config(dir: &Path, state: &str, password_file: Option<&Path>) -> std::path::PathBuf {
    let repo = dir.join("platform-templates");
    common::copy_tree(&common::examples().join("platform-templates"), &repo);
    common::git(&repo, &["init", "-q", "-b", "main"]);
    common::git(&repo, &["add", "-A"]);
    common::git(&repo, &["commit", "-q", "-m", "initial"]);
    let mut toml = format!("state = \"{state}\"\ndata_dir = \"data\"\n");
    if let Some(f) = password_file {
        toml.push_str(&format!("state_password_file = \"{}\"\n", f.display()));
    }
    toml.push_str(
        "[[template_repos]]\nname = \"platform-templates\"\nurl = \"platform-templates\"\n",
    );
    let path = dir.join("proton.toml");
    std::fs::write(&path, toml).expect("config");
    path
}

fn run(config: &Path, args: &[&str], env: Option<&str>) -> Output {
    let mut c = common::protond(config, args);
    c.env_remove("PROTOND_STATE_PASSWORD");
    if let Some(p) = env {
        c.env("PROTOND_STATE_PASSWORD", p);
    }
    c.output().expect("protond runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_password_comes_from_a_file_or_the_environment_and_never_shows() {
    let Some((admin, role_url, password)) = server() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let url = database(&admin, &role_url);

    // From the file (a trailing newline, as editors leave it).
    let file = tmp.path().join("db-password");
    std::fs::write(&file, format!("{password}\n")).expect("password file");
    let cfg = config(tmp.path(), &url, Some(&file));
    let out = run(&cfg, &["status"], None);
    assert!(out.status.success(), "{}", text(&out));
    let out = run(&cfg, &["check-config"], None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains(&password), "{}", text(&out));

    // From the environment, when the config names no file.
    let other = tempfile::tempdir().expect("tempdir");
    let cfg_env = config(other.path(), &url, None);
    let out = run(&cfg_env, &["status"], Some(&password));
    assert!(out.status.success(), "{}", text(&out));
    // Without any: the server refuses, and protond says which database.
    let out = run(&cfg_env, &["status"], None);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("cannot open the state database"),
        "{}",
        text(&out)
    );

    // A wrong password: refused, named as the database's answer, and never printed.
    let wrong = "not-the-password-4242";
    std::fs::write(&file, wrong).expect("password file");
    let out = run(&cfg, &["status"], None);
    let log = text(&out);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("password authentication failed"), "{log}");
    assert!(
        log.contains("protond_pw@127.0.0.1"),
        "the database is named: {log}"
    );
    assert!(!log.contains(wrong) && !log.contains(&password), "{log}");

    // An unreadable file: an error naming the file and the key.
    std::fs::remove_file(&file).expect("remove");
    let out = run(&cfg, &["status"], None);
    let log = text(&out);
    assert!(!out.status.success());
    assert!(
        log.contains("state_password_file") && log.contains("db-password"),
        "{log}"
    );
}
