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
    /// Starts `moto_server` on an unused loopback port (see [`unused_port`]) and waits until
    /// it answers; tries another port when the first is taken before `moto_server` binds it.
    pub fn start() -> Result<Self> {
        let mut last = None;
        for _ in 0..3 {
            match Self::start_on(unused_port()?) {
                Ok(aws) => return Ok(aws),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("moto_server did not start")))
    }

    /// Starts `moto_server` on `port` of 127.0.0.1 and waits until it answers. Answers from
    /// another process that holds the port (a proxy, an earlier server) do not count: where
    /// `/proc` tells which process listens, the listener must be this `moto_server`.
    pub fn start_on(port: u16) -> Result<Self> {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            bail!("cannot start moto_server on 127.0.0.1:{port}: another process listens there");
        }
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
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && listens(child.id(), port) != Some(false)
            {
                return Ok(Self { child, url });
            }
            if let Ok(Some(status)) = child.try_wait() {
                bail!("moto_server exited at start on 127.0.0.1:{port} ({status})");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        bail!("moto_server did not answer on {url} within 30 s")
    }
}

/// A port of 127.0.0.1 that nothing listens on now, for a server started next.
///
/// Picked below the kernel's ephemeral range, so that no `bind` to port 0 elsewhere (another
/// test's proxy, an outgoing connection's source port) can take it between the pick and the
/// server's own bind; successive picks in one process never repeat until the range wraps.
pub fn unused_port() -> Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 12_000;
    let high = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .filter(|&start| start > LOW + 1_000)
        .unwrap_or(32_768);
    let span = high - LOW;
    // Each process starts at its own place in the range, so that two test binaries running
    // at once rarely walk the same ports.
    let _ = NEXT.compare_exchange(
        0,
        std::process::id().wrapping_mul(7_919) % span + 1,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..200 {
        let offset = NEXT.fetch_add(1, Ordering::SeqCst) % span;
        let Ok(port) = u16::try_from(LOW + offset) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .context("no free port on 127.0.0.1")
}

/// Whether process `pid` holds the IPv4 socket that listens on `port`; `None` where `/proc`
/// cannot tell (another system, or no listener yet).
fn listens(pid: u32, port: u16) -> Option<bool> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let local = format!(":{port:04X}");
    let inode = table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl, local_address, rem_address, st, tx:rx, tr:when, retrnsmt, uid, timeout, inode
        (fields.len() > 9 && fields[1].ends_with(&local) && fields[3] == "0A")
            .then(|| fields[9].to_string())
    })?;
    let socket = format!("socket:[{inode}]");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == socket.as_str())
    }))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unused_ports_differ_and_stay_below_the_ephemeral_range() {
        let picks: Vec<u16> = (0..20).map(|_| unused_port().expect("a port")).collect();
        let distinct: std::collections::BTreeSet<_> = picks.iter().collect();
        assert_eq!(distinct.len(), picks.len(), "{picks:?}");
        assert!(
            picks.iter().all(|&p| (12_000..32_768).contains(&p)),
            "{picks:?}"
        );
        // Nothing listens on a pick: binding it works.
        for p in picks {
            std::net::TcpListener::bind(("127.0.0.1", p)).expect("the pick is free");
        }
    }

    #[test]
    fn a_port_another_process_listens_on_is_never_taken_for_moto() {
        let port = unused_port().expect("a port");
        let _held = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind");
        let e = LocalAws::start_on(port).err().expect("refused").to_string();
        assert!(e.contains("another process listens there"), "{e}");
        // The listener is this process's, and not another's.
        assert_eq!(listens(std::process::id(), port), Some(true));
        let mut other = Command::new("sleep").arg("5").spawn().expect("sleep");
        assert_eq!(listens(other.id(), port), Some(false));
        let _ = other.kill();
        let _ = other.wait();
    }
}
