//! The hostile-input suite, git part: what one team's repo can do to protond, and what it
//! must not be able to do to everyone else.
//!
//! * A 512 MiB blob of zeros on a side branch of a spec repo is never fetched (only the
//!   configured branch and release tags are): `reconcile --once` stays small in memory and the
//!   configured branch deploys.
//! * The same blob on the configured branch is refused without being inflated
//!   (`[git] max_object_bytes`): the error names the repo, the limit and the key, `--once`
//!   exits 1, and the other repos deploy. Once the blob is gone the repo deploys; when a
//!   large file comes back on a repo fetched before, the last fetched state is used and said
//!   so (`--once`, `protond status`, `/readyz`).
//! * 160 MiB that do not compress, on the configured branch, are refused once the pack
//!   exceeds `[git] max_pack_bytes` (the received pack holds each object compressed while it
//!   arrives).
//! * A repo whose fetch stalls is skipped after `[git] fetch_timeout`; the others deploy in
//!   the same cycle.
//! * A repo URL carrying a password is refused when the config is loaded.
//! * No credential ever appears in the arguments of a process protond starts: a `git` first
//!   on `PATH` logs every invocation while a proposal is pushed with a token set.
//!
//! Each case prints `hostile: <case>: bound …, peak RSS … MiB, … s` (README, "Limits and
//! guarantees"): `cargo test --test it hostile_git:: -- --nocapture`.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::common::memory::{Rss, wait_with_peak};
use crate::common::world::World;
use crate::common::{self, git, text};

/// The blob: 512 MiB of zeros.
const BIG: u64 = 512 * 1024 * 1024;
/// What `reconcile --once` may take at its peak, whatever a repo holds.
const RSS_BOUND_MIB: u64 = 300;

/// Commits a `BIG`-byte file of zeros (sparse on disk) in `repo` on the branch checked out,
/// then deletes the working copy (the commit keeps it, compressed to about 0.5 MiB).
fn commit_big_blob(repo: &Path) {
    commit_zeros(repo, BIG);
}

/// Commits a file of `len` zeros in `repo`, then deletes the working copy.
fn commit_zeros(repo: &Path, len: u64) {
    let file = repo.join("big.bin");
    let f = std::fs::File::create(&file).expect("create");
    f.set_len(len).expect("a sparse file of zeros");
    drop(f);
    git(repo, &["add", "big.bin"]);
    git(repo, &["commit", "-q", "-m", "a large file"]);
    std::fs::remove_file(&file).expect("remove the working copy");
}

/// `protond reconcile --once` in `w`, with its output, peak RSS and duration.
fn reconcile_measured(w: &World) -> (Output, Rss, Duration) {
    let start = Instant::now();
    let child = w
        .command(&["reconcile", "--once"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("protond starts");
    let (out, peak) = wait_with_peak(child, Duration::from_mins(5));
    (out, peak, start.elapsed())
}

/// The `protond:resource` tags of the live stacks.
async fn deployed(w: &World) -> Vec<String> {
    let mut ids: Vec<String> = w
        .stacks()
        .await
        .iter()
        .filter_map(|s| s.resource().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_blob_on_a_side_branch_is_never_fetched() {
    let w = World::examples_on_moto().build();
    let payments = w.dir("payments");
    git(&payments, &["checkout", "-q", "-b", "side"]);
    commit_big_blob(&payments);
    git(&payments, &["checkout", "-q", "main"]);

    let (out, peak, took) = reconcile_measured(&w);
    println!(
        "hostile: 512 MiB zero blob on a side branch: bound {RSS_BOUND_MIB} MiB, peak RSS {} MiB, {:.1} s",
        peak.peak_mib(),
        took.as_secs_f64()
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        peak.peak_mib() < RSS_BOUND_MIB,
        "peak RSS {} MiB",
        peak.peak_mib()
    );
    let ids = deployed(&w).await;
    for id in [
        "environment/dev",
        "service_instance/payments/payments-dev",
        "service_instance/payments/payments-prod",
    ] {
        assert!(ids.iter().any(|i| i == id), "{id} not deployed: {ids:?}");
    }
    // The side branch never reached the mirror.
    let mirrors = w.dir("data/git");
    let mirror = std::fs::read_dir(&mirrors)
        .expect("mirrors")
        .map(|e| e.expect("entry").path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("payments-"))
        })
        .expect("the payments mirror");
    let heads = git(
        &mirror,
        &["for-each-ref", "--format=%(refname)", "refs/heads"],
    );
    assert_eq!(heads.trim(), "refs/heads/main", "{heads}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_blob_on_the_configured_branch_is_refused_and_named() {
    let w = World::examples_on_moto().build();
    let payments = w.dir("payments");
    commit_big_blob(&payments);

    // Never fetched before: refused, the repo unknown, the environments deploy.
    let (out, peak, took) = reconcile_measured(&w);
    println!(
        "hostile: 512 MiB zero blob on the configured branch: bound {RSS_BOUND_MIB} MiB (git.max_object_bytes 32 MiB), peak RSS {} MiB, {:.1} s",
        peak.peak_mib(),
        took.as_secs_f64()
    );
    let logs = text(&out);
    assert_eq!(out.status.code(), Some(1), "{logs}");
    assert!(
        peak.peak_mib() < RSS_BOUND_MIB,
        "peak RSS {} MiB",
        peak.peak_mib()
    );
    let problem = logs
        .lines()
        .find(|l| l.starts_with("problem: spec repo payments:"))
        .unwrap_or_else(|| panic!("no problem line for payments:\n{logs}"));
    for needle in [
        "an object larger than 33554432 bytes",
        "[git] max_object_bytes",
        "payments",
        "its resources are unknown",
    ] {
        assert!(problem.contains(needle), "{needle:?} in {problem}");
    }
    let ids = deployed(&w).await;
    assert!(
        ids.iter().any(|i| i == "environment/dev") && ids.iter().any(|i| i == "environment/prod"),
        "the other repo's environments: {ids:?}"
    );
    assert!(
        !ids.iter().any(|i| i.contains("payments")),
        "payments was read: {ids:?}"
    );

    // The blob goes: the repo deploys.
    git(&payments, &["reset", "-q", "--hard", "HEAD~1"]);
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    let ids = deployed(&w).await;
    assert!(
        ids.iter()
            .any(|i| i == "service_instance/payments/payments-prod"),
        "{ids:?}"
    );

    // A large file comes back on a repo fetched before (2 MiB against a limit lowered to
    // 1 MiB, to keep the test quick): refused again, the last fetched state kept and said
    // so, in the exit code, `protond status` and `/readyz`.
    w.edit_config(|t| format!("{t}[git]\nmax_object_bytes = 1048576\n"));
    commit_zeros(&payments, 2 * 1024 * 1024);
    let out = w.reconcile();
    let logs = text(&out);
    assert_eq!(out.status.code(), Some(1), "{logs}");
    assert!(
        logs.lines().any(|l| l.starts_with(
            "problem: spec repo payments: not fetched; read as last fetched: refused to fetch"
        ) && l.contains("[git] max_object_bytes")),
        "{logs}"
    );
    let status = w.run(&["status"]);
    let shown = text(&status);
    assert!(status.status.success(), "{shown}");
    assert!(
        shown.contains("Repos the last cycle could not fetch or read")
            && shown.contains("spec repo payments: not fetched; read as last fetched")
            && shown.contains("max_object_bytes"),
        "{shown}"
    );
    let json = w.run(&["status", "--output", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).expect("status json");
    let repos = &doc["skipped_repos"]["repos"];
    assert_eq!(repos[0]["repo"], "payments", "{doc}");
    assert_eq!(repos[0]["fallback"], "last_fetched", "{doc}");
    assert_eq!(repos[0]["source"], "spec", "{doc}");

    // The daemon stays ready (every other repo is served) and names the repo and the cause.
    let port = common::free_port();
    let daemon = w.spawn(&["run", "--listen", &format!("127.0.0.1:{port}")]);
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_mins(1);
    let ready = loop {
        let answer = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await;
        if let Ok(r) = answer
            && r.status() == 200
        {
            let body: serde_json::Value = r.json().await.expect("json");
            if body["skipped_repos"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
            {
                break body;
            }
        }
        assert!(Instant::now() < deadline, "{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    daemon.terminate();
    let skipped = &ready["skipped_repos"][0];
    assert_eq!(skipped["repo"], "payments", "{ready}");
    assert!(
        skipped["reason"]
            .as_str()
            .is_some_and(|r| r.contains("max_object_bytes")),
        "{ready}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incompressible_blob_is_refused_at_the_pack_limit() {
    let w = World::examples_on_moto().build();
    let payments = w.dir("payments");
    // 160 MiB that zlib cannot shrink (a xorshift stream): the pack itself is that large.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut data = vec![0u8; 160 * 1024 * 1024];
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(payments.join("noise.bin"), &data).expect("write");
    drop(data);
    git(&payments, &["add", "noise.bin"]);
    git(&payments, &["commit", "-q", "-m", "noise"]);
    std::fs::remove_file(payments.join("noise.bin")).expect("remove the working copy");

    let (out, peak, took) = reconcile_measured(&w);
    println!(
        "hostile: 160 MiB incompressible blob on the configured branch: bound {RSS_BOUND_MIB} MiB (git.max_pack_bytes 128 MiB), peak RSS {} MiB, {:.1} s",
        peak.peak_mib(),
        took.as_secs_f64()
    );
    let logs = text(&out);
    assert_eq!(out.status.code(), Some(1), "{logs}");
    assert!(
        peak.peak_mib() < RSS_BOUND_MIB,
        "peak RSS {} MiB",
        peak.peak_mib()
    );
    assert!(
        logs.lines()
            .any(|l| l.starts_with("problem: spec repo payments:")
                && l.contains("more than 134217728 bytes of pack data")
                && l.contains("[git] max_pack_bytes")),
        "{logs}"
    );
    let ids = deployed(&w).await;
    assert!(ids.iter().any(|i| i == "environment/prod"), "{ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repo_whose_fetch_stalls_is_skipped_and_the_others_deploy() {
    let w = World::examples_on_moto()
        .config(|c| {
            c.section("[git]\nfetch_timeout = \"2s\"");
        })
        .build();
    // The payments remote answers nothing for 20 s: a stalled server.
    let bin = w.dir("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let real = std::process::Command::new("sh")
        .args(["-c", "command -v git-upload-pack"])
        .output()
        .expect("sh");
    let real = String::from_utf8_lossy(&real.stdout).trim().to_string();
    let script =
        format!("#!/bin/sh\ncase \"$*\" in *payments*) sleep 20 ;; esac\nexec '{real}' \"$@\"\n");
    std::fs::write(bin.join("git-upload-pack"), script).expect("write");
    let mut perms = std::fs::metadata(bin.join("git-upload-pack"))
        .expect("meta")
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(bin.join("git-upload-pack"), perms).expect("chmod");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let start = Instant::now();
    let child = w
        .command(&["reconcile", "--once"])
        .env("PATH", path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("protond starts");
    let (out, peak) = wait_with_peak(child, Duration::from_mins(2));
    let took = start.elapsed();
    println!(
        "hostile: a repo whose fetch stalls: bound git.fetch_timeout 2 s, peak RSS {} MiB, {:.1} s",
        peak.peak_mib(),
        took.as_secs_f64()
    );
    let logs = text(&out);
    assert_eq!(out.status.code(), Some(1), "{logs}");
    assert!(took < Duration::from_secs(15), "the cycle waited: {took:?}");
    assert!(
        logs.lines()
            .any(|l| l.starts_with("problem: spec repo payments:")
                && l.contains("longer than [git] fetch_timeout (2s)")),
        "{logs}"
    );
    assert!(
        logs.contains("Repos skipped this cycle."),
        "the cycle's event: {logs}"
    );
    let ids = deployed(&w).await;
    assert!(
        ids.iter().any(|i| i == "environment/dev") && ids.iter().any(|i| i == "environment/prod"),
        "the other repo's environments: {ids:?}"
    );
}

#[test]
fn a_repo_url_with_a_password_is_refused_at_config_load() {
    const PASSWORD: &str = "hunter2-in-url";
    let w = World::builder()
        .examples()
        .config(|c| {
            c.repo_url(
                "payments",
                &format!("https://deploy:{PASSWORD}@git.example.invalid/acme/payments.git"),
            )
            .repo_url("platform-envs", "http://git.example.invalid/acme/envs.git");
        })
        .build();
    let start = Instant::now();
    for args in [&["check-config"][..], &["reconcile", "--once"]] {
        let out = w.run(args);
        let logs = text(&out);
        assert!(!out.status.success(), "{args:?}: {logs}");
        assert!(
            !logs.contains(PASSWORD),
            "{args:?} shows the password: {logs}"
        );
        for needle in [
            "spec_repos[1].url",
            "carries a password",
            "PROTOND_GIT_TOKEN",
            "credential helper",
            "spec_repos[0].url",
            "plain http",
        ] {
            assert!(logs.contains(needle), "{args:?}: {needle:?} in {logs}");
        }
    }
    assert!(!w.dir("data/git").exists(), "nothing may be fetched");
    println!(
        "hostile: a repo URL with a password: refused at config load (check-config and reconcile), {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

/// Puts in `bin` a `git` and a `git-upload-pack` (which gix runs to fetch a local repo) that
/// log each invocation's arguments and environment names to `log`, then run the real one.
fn logging_git(bin: &Path, log: &Path) {
    std::fs::create_dir_all(bin).expect("mkdir");
    for program in ["git", "git-upload-pack"] {
        let real = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .output()
            .expect("sh");
        let real = String::from_utf8_lossy(&real.stdout).trim().to_string();
        assert!(!real.is_empty(), "{program} is on PATH");
        let script = format!(
            "#!/bin/sh\n{{\n  printf 'argv: [{program}]'\n  for a in \"$@\"; do printf ' [%s]' \"$a\"; done\n  printf '\\n'\n  printf 'env:'\n  env | sed -n 's/^\\([A-Za-z_][A-Za-z0-9_]*\\)=.*/ \\1/p' | tr -d '\\n'\n  printf '\\n'\n}} >> '{}'\nexec '{real}' \"$@\"\n",
            log.display()
        );
        let path = bin.join(program);
        std::fs::write(&path, script).expect("write");
        let mut perms = std::fs::metadata(&path).expect("meta").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&path, perms).expect("chmod");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_reaches_a_child_process_command_line() {
    const TOKEN: &str = "argv-secret-token-4711";
    // The platform repo is named by an https URL, which git configuration (for gix and for
    // git alike) rewrites to the local repo: the push of a proposal goes the https way, token
    // included, without any network.
    let remote = "https://127.0.0.1:9/acme/platform-envs.git";
    let w0 = World::examples_on_moto()
        .config(move |c| {
            c.repo_url("platform-envs", remote)
                .repo_line("platform-envs", "forge = { kind = \"git\" }");
        })
        .build();
    let root = w0.root.clone();
    let log = root.join("git-invocations.log");
    logging_git(&root.join("bin"), &log);
    std::fs::write(
        root.join("gitconfig"),
        format!(
            "[url \"{}\"]\n\tinsteadOf = {remote}\n[user]\n\tname = t\n\temail = t@example.invalid\n",
            root.join("platform-envs").display()
        ),
    )
    .expect("gitconfig");
    let path = format!(
        "{}:{}",
        root.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = [
        ("PROTOND_GIT_TOKEN", TOKEN.to_string()),
        (
            "GIT_CONFIG_GLOBAL",
            root.join("gitconfig").display().to_string(),
        ),
        ("PATH", path),
    ];
    let run = |args: &[&str]| {
        let mut c = w0.command(args);
        for (k, v) in &env {
            c.env(k, v);
        }
        c.output().expect("protond runs")
    };
    let out = run(&["reconcile", "--once"]);
    assert!(out.status.success(), "{}", text(&out));

    // A new major of the environment template: protond pushes an upgrade branch.
    let t = w0.dir("platform-templates");
    common::copy_tree(&t.join("basic-env/v1"), &t.join("basic-env/v2"));
    git(&t, &["add", "-A"]);
    git(&t, &["commit", "-q", "-m", "basic-env v2"]);
    git(&t, &["tag", "-a", "basic-env/v2.0", "-m", "basic-env 2.0"]);
    let out = run(&["reconcile", "--once"]);
    let logs = text(&out);
    assert!(out.status.success(), "{logs}");
    assert!(!logs.contains(TOKEN), "the token reached the logs: {logs}");
    let branches = git(&w0.dir("platform-envs"), &["branch", "--list", "protond/*"]);
    assert!(!branches.trim().is_empty(), "no branch was pushed:\n{logs}");

    let calls = std::fs::read_to_string(&log).expect("the wrapper ran");
    let argv: Vec<&str> = calls.lines().filter(|l| l.starts_with("argv:")).collect();
    let pushes: Vec<&&str> = argv.iter().filter(|l| l.contains("[push]")).collect();
    assert!(!pushes.is_empty(), "no git push seen:\n{calls}");
    let fetches = argv
        .iter()
        .filter(|l| l.starts_with("argv: [git-upload-pack]"))
        .count();
    assert!(fetches >= 2, "gix's fetches not seen:\n{calls}");
    assert!(
        pushes.iter().all(|l| l.contains(&format!("[{remote}]"))),
        "{pushes:?}"
    );
    // The token went to git in its environment (only the same user can read it there).
    assert!(calls.contains(" GIT_CONFIG_KEY_0"), "{calls}");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{TOKEN}"));
    for line in calls.lines() {
        assert!(
            !line.contains(TOKEN) && !line.contains(&basic),
            "a credential on a command line: {line}"
        );
    }
    println!(
        "hostile: credentials on command lines: {} git invocation(s) ({} push, {fetches} fetch), none carries the token",
        argv.len(),
        pushes.len()
    );
}
