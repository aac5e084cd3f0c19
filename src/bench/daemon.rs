//! `protond bench --daemon N`: a real daemon's memory and its tag latency on a fleet whose
//! records are already in the store (no stack is created first, so that 50,000 instances
//! measure in minutes): the fleet is generated, every resource recorded as deployed the way a
//! finished deployment leaves it ([`super::state`]), then `protond run` is started against a
//! `moto_server` on 127.0.0.1 and measured [`super::RUNS`] times from the same saved state:
//!
//! * **RSS at rest**: `VmRSS` once its first cycle found nothing to start and its start-up
//!   drift check finished;
//! * **tag to first deployment call**: from just before `git tag bench-svc/v1.1` (on a commit
//!   that adds a stack description to the service template, so that every rendering of the
//!   new minor is new text) to the daemon's first "Deployment started." of it (the call
//!   itself may fail on `moto_server`, where the recorded stacks do not exist: only its
//!   timing counts);
//! * **peak RSS in the tag cycle**: `VmHWM` once that cycle finished;
//! * **`reconcile --once` peak**: the peak RSS the kernel counted for a `reconcile --once`
//!   on the same state (`wait4`'s `ru_maxrss`), which finds nothing to start.
//!
//! It writes only under its generated folder, and deploys only to the `moto_server` it starts.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::{Protond, RUNS, median};
use crate::plan::{self, ResourceKind};
use crate::state::ResourceRecord;

/// A real daemon's figures on a fleet with its records seeded.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DaemonFigures {
    /// Service instances.
    pub instances: usize,
    /// Resources recorded as deployed before the daemon starts.
    pub records: usize,
    /// `VmRSS` after the first (no-op) cycle, MiB, per run.
    pub rest_rss_mib: Vec<f64>,
    /// `VmHWM` once the tag cycle finished, MiB, per run.
    pub tag_cycle_hwm_mib: Vec<f64>,
    /// Tag to the first "Deployment started." of it, per run.
    pub tag_to_first: Vec<Duration>,
    /// `VmHWM` of `reconcile --once` on the same state (nothing to start), MiB.
    pub once_hwm_mib: f64,
}

/// `VmRSS` and `VmHWM` of process `pid`, in MiB.
fn rss_of(pid: u32) -> Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let field = |name: &str| super::status_mib(&status, name);
    match (field("VmRSS:"), field("VmHWM:")) {
        (Some(rss), Some(hwm)) => Ok((rss, hwm)),
        _ => bail!("no VmRSS or VmHWM in /proc/{pid}/status"),
    }
}

/// Records every resource of the generated fleet as deployed: the environments first (so
/// that instances render), then the instances. Returns how many.
fn seed(config: &crate::config::Config, state: &super::state::State) -> Result<usize> {
    let mut cache = crate::desired::ComputeCache::default();
    let (_, snapshot, set, _) = super::cycle(config, None, true, state, &mut cache)?;
    let envs: Vec<ResourceRecord> = super::as_deployed(&set)
        .into_iter()
        .filter(|r| r.kind == ResourceKind::Environment)
        .collect();
    drop(set);
    state.record(&envs)?;
    let (plan, _, set, _) = super::cycle(config, Some(&snapshot), false, state, &mut cache)?;
    drop(plan);
    let rest: Vec<ResourceRecord> = super::as_deployed(&set)
        .into_iter()
        .filter(|r| r.kind != ResourceKind::Environment)
        .collect();
    state.record(&rest)?;
    // The next cycle must find nothing to do, or the daemon's figures would include deploys.
    let (plan, _, _, _) = super::cycle(config, Some(&snapshot), false, state, &mut cache)?;
    let changes = plan
        .changes()
        .filter(|a| a.action != plan::ActionKind::NoOp);
    if let Some(a) = changes.into_iter().next() {
        bail!("the seeded fleet still plans {:?} for {}", a.action, a.id);
    }
    Ok(envs.len() + rest.len())
}

/// Copies the state database `from` (and its WAL files) to `to`.
fn copy_state(from: &Path, to: &Path) -> Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let (a, b) = (
            format!("{}{suffix}", from.display()),
            format!("{}{suffix}", to.display()),
        );
        let _ = std::fs::remove_file(&b);
        if Path::new(&a).exists() {
            std::fs::copy(&a, &b).with_context(|| format!("cannot copy {a} to {b}"))?;
        }
    }
    Ok(())
}

/// One run: the daemon from the saved state, at rest, then a tag. (RSS at rest, tag latency,
/// peak RSS of the tag cycle.) The template repo's mirror is removed first: it would still
/// hold the last run's tag.
fn run_once(
    dir: &Path,
    config: &crate::config::Config,
    config_path: &Path,
    timeout: Duration,
) -> Result<(f64, Duration, f64)> {
    for t in &config.template_repos {
        let folder = crate::source::Mirror::folder_of(&t.url)?;
        let _ = std::fs::remove_dir_all(config.data_dir.join("git").join(folder));
    }
    let release = prepare_release(&dir.join("templates"))?;
    let config = config_path;
    let mut d = Protond::spawn(config, &["run", "--no-server"])?;
    d.tolerate_failures = true;
    let pid = d.child.id();
    // At rest: the first cycle has found nothing to start, and the start-up drift check
    // (every record against `moto_server`, where the seeded stacks do not exist) has
    // finished too: it would otherwise share the two cores with the tag cycle.
    let (mut cycled, mut drifted) = (false, false);
    d.wait_for(
        Instant::now() + timeout,
        "the first cycle and the start-up drift check",
        |l| {
            cycled |= l.message.starts_with("Reconcile cycle finished");
            drifted |= l.message.starts_with("Drift check finished");
            cycled && drifted
        },
    )?;
    std::thread::sleep(Duration::from_secs(2));
    let (rest, _) = rss_of(pid)?;
    let tag = "bench-svc/v1.1";
    let t = Instant::now();
    super::git(
        &dir.join("templates"),
        &["tag", "-a", tag, "-m", tag, release],
    )?;
    let first = d.wait_for(t + timeout, "the first deployment of the tag", |l| {
        l.message == "Deployment started." && l.span_str("version") == "1.1"
    })?;
    let latency = first.at.saturating_duration_since(t);
    d.wait_for(t + timeout, "the tag cycle to finish", |l| {
        l.message.starts_with("Reconcile cycle finished")
    })?;
    let (_, hwm) = rss_of(pid)?;
    d.stop(Instant::now() + Duration::from_mins(2))?;
    super::git(&dir.join("templates"), &["tag", "-d", tag])?;
    Ok((rest, latency, hwm))
}

/// The commit the tag names: the service template with one change that every rendering
/// shows (a stack description), on branch `bench-v1.1` beside `main`, so that the tag cycle
/// renders, compares and deploys new text as a real minor does. (A tag on `main`'s commit
/// would render every document as it was, and the change-set gate need not parse those.)
/// Made before the daemon starts: its watcher would see the branch move.
fn prepare_release(templates: &Path) -> Result<&'static str> {
    const BRANCH: &str = "bench-v1.1";
    let file = "bench-svc/v1/instance_infrastructure/cloudformation.yaml";
    super::git(templates, &["checkout", "-q", "-B", BRANCH, "main"])?;
    let path = templates.join(file);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    super::write(
        &path,
        &format!("Description: '{{{{ service.name }}}} on bench-svc 1.1'\n{text}"),
    )?;
    super::git(
        templates,
        &["commit", "-q", "-a", "-m", "bench-svc 1.1: a description"],
    )?;
    super::git(templates, &["checkout", "-q", "main"])?;
    Ok(BRANCH)
}

/// `reconcile --once` on the saved state: its peak RSS, MiB.
fn once_hwm(config: &Path, timeout: Duration) -> Result<f64> {
    let mut p = Protond::spawn(config, &["reconcile", "--once"])?;
    p.tolerate_failures = true;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(kib) = peak_if_exited(&p.child)? {
            let kib = u32::try_from(kib).context("peak RSS out of range")?;
            return Ok(f64::from(kib) / 1024.0);
        }
        if Instant::now() > deadline {
            bail!("reconcile --once did not finish; {}", p.recent());
        }
        // Drain its log so that it never blocks on a full pipe.
        while p.lines.try_recv().is_ok() {}
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The peak RSS in KiB of `child` once it has exited, as the kernel counted it (`wait4`'s
/// `ru_maxrss`), reaping it; `None` while it runs. Exact, where sampling `VmHWM` reads
/// nothing from a process that exits between two samples (at 100 instances `reconcile
/// --once` did, and the bench reported 0 MiB).
fn peak_if_exited(child: &std::process::Child) -> Result<Option<i64>> {
    let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
    let mut status = 0;
    // SAFETY: `rusage` is plain data that `wait4` fills; an all-zero value is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `wait4` only writes `status` and `usage`, both valid for its whole call. It
    // reaps only this child, which `Child` no longer waits for afterwards (its `try_wait`
    // then fails, and `Protond`'s drop leaves it alone).
    let reaped = unsafe { libc::wait4(pid, &raw mut status, libc::WNOHANG, &raw mut usage) };
    match reaped {
        0 => Ok(None),
        r if r == pid => Ok(Some(usage.ru_maxrss)),
        _ => Err(std::io::Error::last_os_error()).context("wait for reconcile --once"),
    }
}

/// Generates a fleet of `instances` under `dir`, seeds its records, and measures a real
/// daemon on it ([`RUNS`] runs from the same saved state).
///
/// # Errors
///
/// When `moto_server` cannot start, seeding leaves changes to make, or the daemon does not
/// log what it should in time.
pub fn measure(dir: &Path, instances: usize) -> Result<DaemonFigures> {
    std::fs::create_dir_all(dir)?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    let aws = crate::demo::LocalAws::start()
        .context("the daemon figures need moto_server on the PATH")?;
    let config_path = super::generate(&dir, instances)?;
    let generated = std::fs::read_to_string(&config_path)?;
    std::fs::write(
        &config_path,
        super::aws_config(&generated, &aws.url, "200ms")?,
    )?;
    let config = super::load(&config_path)?;
    let records = {
        let state = super::state::State::open(&config)?;
        let records = seed(&config, &state)?;
        // Closed (and its WAL checkpointed) before the file is copied: a copy taken while
        // the last connection checkpoints is a torn, malformed database.
        state.close();
        records
    };
    let db = config
        .state
        .strip_prefix("sqlite://")
        .map(Path::new)
        .context("the bench's state is a SQLite file")?
        .to_path_buf();
    let saved = dir.join("seeded.db");
    copy_state(&db, &saved)?;
    let timeout = Duration::from_mins(2) + Duration::from_millis(10) * u32::try_from(instances)?;
    let once_hwm_mib = once_hwm(&config_path, timeout)?;
    let (mut rest, mut latency, mut hwm) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..RUNS {
        copy_state(&saved, &db)?;
        eprintln!(
            "bench: daemon run {} of {RUNS} on {instances} instances ...",
            run + 1
        );
        let (r, l, h) = run_once(&dir, &config, &config_path, timeout)?;
        rest.push(r);
        latency.push(l);
        hwm.push(h);
    }
    drop(aws);
    Ok(DaemonFigures {
        instances,
        records,
        rest_rss_mib: rest,
        tag_cycle_hwm_mib: hwm,
        tag_to_first: latency,
        once_hwm_mib,
    })
}

/// The daemon figures as a Markdown table: min / median of the runs.
#[must_use]
pub fn table(rows: &[DaemonFigures]) -> String {
    use std::fmt::Write as _;
    let mib = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        let min = v.first().copied().unwrap_or_default();
        let mid = v.get(v.len() / 2).copied().unwrap_or_default();
        format!("{min:.0} / {mid:.0} MiB")
    };
    let mut out = String::from(
        "| instances | records | daemon RSS at rest | peak RSS in a tag cycle | tag to first deployment call | `reconcile --once` peak |\n|---:|---:|---:|---:|---:|---:|\n",
    );
    for f in rows {
        let min = f.tag_to_first.iter().min().copied().unwrap_or_default();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.2} / {:.2} s | {:.0} MiB |",
            f.instances,
            f.records,
            mib(&f.rest_rss_mib),
            mib(&f.tag_cycle_hwm_mib),
            min.as_secs_f64(),
            median(&f.tag_to_first).as_secs_f64(),
            f.once_hwm_mib,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::peak_if_exited;

    /// The peak of a process too short-lived to sample, and of one that holds memory, as
    /// the kernel counted them.
    #[test]
    fn a_childs_peak_is_read_when_it_exits_however_short_it_lived() {
        #[expect(clippy::zombie_processes, reason = "`peak_if_exited` reaps it")]
        let peak = |script: &str| {
            let child = std::process::Command::new("sh")
                .args(["-c", script])
                .spawn()
                .expect("sh");
            loop {
                if let Some(kib) = peak_if_exited(&child).expect("wait4") {
                    return kib;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        };
        let brief = peak("true");
        assert!(
            brief > 0,
            "a process that exits at once still has a peak: {brief} KiB"
        );
        // The shell holds the 32 MB its command substitution read.
        let holding = peak("x=$(head -c 32000000 /dev/zero | tr '\\0' a); : \"${#x}\"");
        assert!(
            holding >= 30_000,
            "a child holding 32 MB peaked at {holding} KiB"
        );
        assert!(holding > brief);
    }
}
