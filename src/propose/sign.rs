//! Signed proposal commits (`[proposals] sign`, `signing_key`), through git's own signing:
//! the commit protond wrote into the mirror is written again by `git commit-tree -S` with
//! `gpg.format` and `user.signingkey` set on its command line (`commit-tree` does not read
//! `commit.gpgsign`, hence `-S`), with the
//! same tree, parents, message, author and committer (names, emails and times), so only the
//! signature is added.
//!
//! It must never read the key itself or pass anything secret on a command line: git runs
//! `ssh-keygen` or `gpg`, which read the key (without a passphrase, or through their agent).

use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncWriteExt as _;

use crate::config::Signing;

/// Signing failed.
#[derive(Debug, thiserror::Error)]
#[error(
    "signing the upgrade commit with [proposals] signing_key {key}: {message}; check the key (no passphrase, or an agent holding it) or remove [proposals] sign"
)]
pub struct SignError {
    /// The key (a path or key id: not secret).
    key: String,
    /// git's message, trimmed.
    message: String,
}

/// A commit's parts, from `git cat-file commit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parts {
    /// Tree id.
    pub tree: String,
    /// Parent ids.
    pub parents: Vec<String>,
    /// `(name, email, date)`, the date as git's raw `SECONDS ZONE`.
    pub author: (String, String, String),
    /// Likewise.
    pub committer: (String, String, String),
    /// The message.
    pub message: String,
}

/// `Name <email> 1700000000 +0000` as name, email and date.
fn ident(text: &str) -> Option<(String, String, String)> {
    let (who, date) = text.rsplit_once('>')?;
    let (name, email) = who.split_once('<')?;
    Some((
        name.trim().to_string(),
        email.trim().to_string(),
        date.trim().to_string(),
    ))
}

/// Parses a raw commit object (pure).
#[must_use]
pub fn parse(raw: &str) -> Option<Parts> {
    let (headers, message) = raw.split_once("\n\n").unwrap_or((raw, ""));
    let (mut tree, mut parents, mut author, mut committer) = (None, Vec::new(), None, None);
    for line in headers.lines() {
        let (key, value) = line.split_once(' ')?;
        match key {
            "tree" => tree = Some(value.to_string()),
            "parent" => parents.push(value.to_string()),
            "author" => author = ident(value),
            "committer" => committer = ident(value),
            _ => {}
        }
    }
    Some(Parts {
        tree: tree?,
        parents,
        author: author?,
        committer: committer?,
        message: message.to_string(),
    })
}

async fn git(
    git_dir: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
    input: Option<&str>,
) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new("git");
    // The state password is protond's alone: never a child's.
    cmd.env_remove(crate::state::pg::PASSWORD_ENV);
    cmd.arg("--git-dir")
        .arg(git_dir)
        .args(args)
        .envs(envs.iter().copied())
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("could not run git: {e}"))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .await
            .map_err(|e| format!("writing to git: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("waiting for git: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr)
            .trim()
            .chars()
            .take(500)
            .collect())
    }
}

/// Writes commit `commit` of the repo at `git_dir` again, signed as `signing` says; the
/// signed commit's id.
///
/// # Errors
///
/// [`SignError`] with git's message when the commit cannot be read or signed.
pub async fn sign(git_dir: &Path, commit: &str, signing: &Signing) -> Result<String, SignError> {
    let fail = |message: String| SignError {
        key: signing.key.clone(),
        message,
    };
    let raw = git(git_dir, &["cat-file", "commit", commit], &[], None)
        .await
        .map_err(fail)?;
    let parts = parse(&raw).ok_or_else(|| fail(format!("commit {commit} cannot be read")))?;
    let format = format!("gpg.format={}", signing.format);
    let key = format!("user.signingkey={}", signing.key);
    let mut args = vec!["-c", &format, "-c", &key, "commit-tree", "-S", &parts.tree];
    for p in &parts.parents {
        args.extend(["-p", p.as_str()]);
    }
    let (an, ae, ad) = &parts.author;
    let (cn, ce, cd) = &parts.committer;
    let envs = [
        ("GIT_AUTHOR_NAME", an.as_str()),
        ("GIT_AUTHOR_EMAIL", ae.as_str()),
        ("GIT_AUTHOR_DATE", ad.as_str()),
        ("GIT_COMMITTER_NAME", cn.as_str()),
        ("GIT_COMMITTER_EMAIL", ce.as_str()),
        ("GIT_COMMITTER_DATE", cd.as_str()),
    ];
    git(git_dir, &args, &envs, Some(&parts.message))
        .await
        .map(|id| id.trim().to_string())
        .map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_raw_commit() {
        let raw = "tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\
                   parent 1111111111111111111111111111111111111111\n\
                   author protond <protond@example.com> 1700000000 +0100\n\
                   committer Some One <one@example.com> 1700000001 -0500\n\
                   \n\
                   Upgrade payments\n\nBody line.\n";
        let parts = parse(raw).expect("parses");
        assert_eq!(parts.tree, "4b825dc642cb6eb9a060e54bf8d69288fbee4904");
        assert_eq!(parts.parents, ["1111111111111111111111111111111111111111"]);
        assert_eq!(
            parts.author,
            (
                "protond".into(),
                "protond@example.com".into(),
                "1700000000 +0100".into()
            )
        );
        assert_eq!(parts.committer.0, "Some One");
        assert_eq!(parts.message, "Upgrade payments\n\nBody line.\n");
        assert!(parse("parent x\n\nmessage").is_none(), "no tree");
    }
}
