//! Helpers shared by the integration tests: git with a fixed identity, copying the example
//! repos, and turning them into git repos with release tags.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

pub mod forge;

/// Runs git in `dir` with a fixed identity (CI machines may have none); returns stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Copies a folder tree.
pub fn copy_tree(from: &Path, to: &Path) {
    protond::demo::copy_tree(from, to).expect("copy tree");
}

/// The project's example repos.
pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repos")
}

/// Copies the three example repos under `root` as git repos, one commit each.
pub fn example_git_repos(root: &Path) {
    for name in ["platform-templates", "platform-envs", "payments"] {
        let dir = root.join(name);
        copy_tree(&examples().join(name), &dir);
        git(&dir, &["init", "-q", "-b", "main"]);
        git(&dir, &["add", "-A"]);
        git(&dir, &["commit", "-q", "-m", "initial"]);
    }
}

/// Tags `<name>/v1.0` (annotated) in the template repo for each name.
pub fn tag_first_releases(templates: &Path, names: &[&str]) {
    for name in names {
        git(
            templates,
            &["tag", "-a", &format!("{name}/v1.0"), "-m", "first release"],
        );
    }
}

/// The `protond` binary with `args`, then `--config <config>`, test AWS credentials (for a
/// moto_server) and JSON logs.
pub fn protond(config: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_protond"));
    c.args(args)
        .arg("--config")
        .arg(config)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env_remove("AWS_PROFILE")
        .env("PROTOND_LOG_FORMAT", "json");
    c
}

/// The example repos as git repos in a fresh temporary folder, with the first releases of
/// the three example templates tagged. Keep the `TempDir`: dropping it deletes the folder.
pub fn tagged_examples() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().to_path_buf();
    example_git_repos(&root);
    tag_first_releases(
        &root.join("platform-templates"),
        &["basic-env", "web-svc", "worker-svc"],
    );
    (tmp, root)
}

/// A CloudFormation client for a moto_server at `url`.
pub fn cfn_client(url: &str) -> aws_sdk_cloudformation::Client {
    let conf = aws_sdk_cloudformation::Config::builder()
        .behavior_version(aws_sdk_cloudformation::config::BehaviorVersion::latest())
        .region(aws_sdk_cloudformation::config::Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(aws_sdk_cloudformation::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .build();
    aws_sdk_cloudformation::Client::from_conf(conf)
}

/// A live (not deleted) stack on a moto_server.
#[derive(Debug)]
pub struct LiveStack {
    pub name: String,
    pub status: String,
    pub tags: BTreeMap<String, String>,
}

impl LiveStack {
    /// The protond resource the stack belongs to (its `protond:resource` tag).
    pub fn resource(&self) -> Option<&str> {
        self.tags.get("protond:resource").map(String::as_str)
    }
}

/// The stacks on the moto_server at `url` that are not deleted.
pub async fn live_stacks(url: &str) -> Vec<LiveStack> {
    let out = cfn_client(url)
        .describe_stacks()
        .send()
        .await
        .expect("describe stacks");
    out.stacks()
        .iter()
        .map(|s| LiveStack {
            name: s.stack_name().unwrap_or("").to_string(),
            status: s
                .stack_status()
                .map(|x| x.as_str().to_string())
                .unwrap_or_default(),
            tags: s
                .tags()
                .iter()
                .map(|t| {
                    (
                        t.key().unwrap_or("").to_string(),
                        t.value().unwrap_or("").to_string(),
                    )
                })
                .collect(),
        })
        .filter(|s| s.status != "DELETE_COMPLETE")
        .collect()
}

/// The lines a child writes to `stderr`, read on a thread.
pub fn log_lines(stderr: std::process::ChildStderr) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A deployment a restart found interrupted: failed, retryable, and saying so.
pub fn assert_interrupted(row: &protond::state::DeploymentRecord) {
    assert_eq!(row.status, "failed", "{row:?}");
    assert!(row.retryable, "{row:?}");
    assert!(
        row.error
            .as_deref()
            .is_some_and(|e| e.contains("interrupted")),
        "{row:?}"
    );
}
