//! Signed proposal commits: with `[proposals] sign = "ssh"` and a key made by `ssh-keygen`
//! here, the upgrade branch's commit carries an SSH signature that `git verify-commit`
//! accepts with an allowed-signers file naming the key, keeps the configured author, and is
//! signed again when the proposal is updated; without a key file protond reports the key and
//! pushes nothing unsigned.

use std::process::Command;

use crate::common::world::World;
use crate::common::{self};
use crate::proposals::{PAYMENTS_BRANCH, release};

fn keygen(path: &std::path::Path) -> String {
    let out = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "protond-signing",
            "-f",
        ])
        .arg(path)
        .output()
        .expect("ssh-keygen runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(path.with_extension("pub")).expect("public key")
}

/// `git verify-commit` of `rev` in the payments repo against `signers`: success and stderr.
fn verify(w: &World, signers: &std::path::Path, rev: &str) -> (bool, String) {
    let out = Command::new("git")
        .arg("-C")
        .arg(w.dir("payments"))
        .arg("-c")
        .arg(format!("gpg.ssh.allowedSignersFile={}", signers.display()))
        .args(["verify-commit", "--raw", rev])
        .output()
        .expect("git runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn proposal_commits_are_signed_through_git_with_the_configured_ssh_key() {
    let w = World::examples_on_moto()
        .config(|c| {
            c.repo_line("payments", "forge = { kind = \"git\" }");
            c.section(
                "[proposals]\nauthor = \"bot <bot@example.invalid>\"\nsign = \"ssh\"\nsigning_key = \"__KEY__\"",
            );
        })
        .build();
    let key = w.dir("signing_key");
    let public = keygen(&key);
    w.edit_config(|t| t.replace("__KEY__", &key.display().to_string()));
    let signers = w.dir("allowed_signers");
    std::fs::write(&signers, format!("protond-signing {public}")).expect("signers");

    release(&w, "web-svc", 2, "web-svc 2.0", |_, t| t);
    let out = w.reconcile();
    assert!(out.status.success(), "{}", common::text(&out));
    let (ok, detail) = verify(&w, &signers, PAYMENTS_BRANCH);
    assert!(
        ok,
        "the proposal commit does not verify: {detail}\n{}\n{}",
        w.git("payments", &["cat-file", "commit", PAYMENTS_BRANCH]),
        common::text(&out)
    );
    assert!(detail.contains("Good \"git\" signature"), "{detail}");
    let show = |format: &str| {
        w.git(
            "payments",
            &["log", "-1", &format!("--format={format}"), PAYMENTS_BRANCH],
        )
    };
    assert_eq!(show("%an <%ae>").trim(), "bot <bot@example.invalid>");
    assert_eq!(show("%s").trim(), "Upgrade service payments to web-svc v2");
    let first = show("%H");

    // An unknown signer is refused: the signature is really checked.
    let stranger = w.dir("stranger");
    let other = keygen(&stranger);
    let others = w.dir("other_signers");
    std::fs::write(&others, format!("protond-signing {other}")).expect("signers");
    assert!(!verify(&w, &others, PAYMENTS_BRANCH).0);

    // A newer major updates the branch: signed again.
    release(&w, "web-svc", 3, "web-svc 3.0", |_, t| t);
    let out = w.reconcile();
    assert!(out.status.success(), "{}", common::text(&out));
    assert_ne!(show("%H"), first, "the branch moved");
    let (ok, detail) = verify(&w, &signers, PAYMENTS_BRANCH);
    assert!(ok, "the updated commit does not verify: {detail}");

    // The key is gone: the failure names it, and the branch keeps its signed commit.
    std::fs::remove_file(&key).expect("remove key");
    release(&w, "web-svc", 4, "web-svc 4.0", |_, t| t);
    let before = show("%H");
    let out = w.reconcile();
    let logs = common::text(&out);
    assert!(logs.contains("signing_key"), "{logs}");
    assert_eq!(show("%H"), before, "nothing unsigned was pushed");
}
