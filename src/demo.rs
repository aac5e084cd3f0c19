//! `protond demo`: the quick start. Turns `example-repos/` into local git repos with release
//! tags, writes a config, starts a `moto_server` on 127.0.0.1 when no AWS endpoint is given,
//! and runs the reconciler on them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A `moto_server` this process started; stopped on drop.
pub struct LocalAws {
    child: Child,
    /// Its endpoint.
    pub url: String,
}

impl Drop for LocalAws {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LocalAws {
    /// Starts `moto_server` on a free loopback port and waits until it answers.
    pub fn start() -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("no free port on 127.0.0.1")?
            .port();
        Self::start_on(port)
    }

    /// Starts `moto_server` on `port` of 127.0.0.1 and waits until it answers.
    pub fn start_on(port: u16) -> Result<Self> {
        let mut child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context(
                "cannot start moto_server; install it with: python3 -m pip install 'moto[server]'",
            )?;
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(Self { child, url });
            }
            if let Ok(Some(status)) = child.try_wait() {
                bail!("moto_server exited at start ({status})");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        bail!("moto_server did not answer on {url} within 30 s")
    }
}

fn git(dir: &Path, args: &[&str]) -> Result<()> {
    git_as(dir, args, ("protond demo", "demo@protond.invalid"))
}

/// Runs git in `dir` as author and committer `identity` (name, email), so that it works on
/// machines with no git identity.
pub(crate) fn git_as(dir: &Path, args: &[&str], identity: (&str, &str)) -> Result<()> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", identity.0)
        .env("GIT_AUTHOR_EMAIL", identity.1)
        .env("GIT_COMMITTER_NAME", identity.0)
        .env("GIT_COMMITTER_EMAIL", identity.1)
        .output()
        .with_context(|| format!("cannot run git in {}", dir.display()))?;
    if !out.status.success() {
        bail!(
            "git {} failed in {}: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Copies a folder tree (regular files and folders).
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    for entry in
        std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))?
    {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("cannot copy to {}", target.display()))?;
        }
    }
    Ok(())
}

/// Creates the demo repos under `dir` (once) and returns the config path.
pub fn prepare(examples: &Path, dir: &Path, endpoint: &str, local: bool) -> Result<PathBuf> {
    for name in ["platform-templates", "platform-envs", "payments"] {
        let repo = dir.join(name);
        if repo.join(".git").exists() {
            continue;
        }
        copy_tree(&examples.join(name), &repo)?;
        git(&repo, &["init", "-q", "-b", "main"])?;
        // So that the README's "edit and commit" step works on machines with no git identity.
        git(&repo, &["config", "user.name", "protond demo"])?;
        git(&repo, &["config", "user.email", "demo@protond.invalid"])?;
        git(&repo, &["add", "-A"])?;
        git(
            &repo,
            &["commit", "-q", "-m", "Initial import from example-repos"],
        )?;
        if name == "platform-templates" {
            for t in ["basic-env", "web-svc", "worker-svc"] {
                git(
                    &repo,
                    &[
                        "tag",
                        "-a",
                        &format!("{t}/v1.0"),
                        "-m",
                        &format!("{t} 1.0: first release"),
                    ],
                )?;
            }
        }
    }
    let config = dir.join("proton.toml");
    // The demo's own moto_server takes fixed test credentials: written here, so that every
    // command run in this folder (`protond status`, `plan`) works without AWS variables.
    let credentials = if local {
        "# The moto_server `protond demo` started: fixed test credentials (loopback only).\n\
         local_credentials = true\n"
    } else {
        ""
    };
    let text = format!(
        "# Written by `protond demo`. Edit the repos next to this file and commit to see protond react.\n\
         state = \"sqlite://state/state.db\"\n\
         data_dir = \"data\"\n\
         poll_interval = \"10s\"\n\n\
         [aws]\n\
         region = \"us-east-1\"\n\
         endpoint_url = \"{endpoint}\"\n\
         {credentials}\
         poll_interval = \"1s\"\n\
         # moto_server returns no outputs for change-set stacks.\n\
         change_sets = false\n\n\
         [daemon]\n\
         shutdown_grace = \"10s\"\n\n\
         [[template_repos]]\nname = \"platform-templates\"\nurl = \"platform-templates\"\n\n\
         # Major upgrades are proposed on branches `protond/upgrade/...` of the spec repos\n\
         # (no forge API here; see proton.toml.example for GitHub, GitLab and Gitea).\n\
         [[spec_repos]]\nname = \"platform-envs\"\nurl = \"platform-envs\"\nplatform = true\nforge = {{ kind = \"git\" }}\n\n\
         [[spec_repos]]\nname = \"payments\"\nurl = \"payments\"\nforge = {{ kind = \"git\" }}\n\n\
         [rollout]\nstages = [\"dev\", \"prod\"]\n"
    );
    std::fs::write(&config, text).with_context(|| format!("cannot write {}", config.display()))?;
    Ok(config)
}
