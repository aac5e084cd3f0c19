//! The repo-reading figures of `protond bench`, each next to its floor, measured fairly:
//!
//! * **no-op without fetch** (3 runs, min and median; the facts read from the state store
//!   included, as in the daemon's cycle) against **refs in one process**: every
//!   repo opened once with gix (untimed, as the daemon keeps its mirrors open), then each
//!   one's references listed and `HEAD^{tree}` resolved, all in this process;
//! * **no-op with fetch** (3 runs, min and median) against a **sequential `git fetch` loop**:
//!   `git fetch` of each mirror from its repo with the refspecs the daemon fetches, one after
//!   another (nothing new, so each is one round of reference advertisement).
//!
//! It measures only; it never changes a repo (the fetch loop finds nothing to fetch).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::config::Config;
use crate::desired;
use crate::source::Mirror;

use super::RUNS;

/// The repo-reading figures of one fleet size.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RepoFigures {
    /// No-op cycles without fetch.
    pub noop_runs: Vec<Duration>,
    /// Every repo's references and `HEAD^{tree}`, read in this process with kept handles.
    pub refs_floor: Duration,
    /// No-op cycles with fetch.
    pub noop_fetch_runs: Vec<Duration>,
    /// `git fetch` of every mirror, one after another.
    pub fetch_loop: Duration,
}

/// Measures the no-op cycles after `previous` (nothing changed since) and their floors;
/// `dirs` are the generated repos.
///
/// # Errors
///
/// When a no-op cycle plans changes, or a repo or `git fetch` fails.
pub(super) fn measure(
    config: &Config,
    previous: desired::Snapshot,
    state: &super::state::State,
    cache: &mut desired::ComputeCache,
    dirs: &[PathBuf],
) -> Result<(RepoFigures, desired::Snapshot)> {
    let mut figures = RepoFigures::default();
    let mut snapshot = previous;
    for fetch in [false, true] {
        for _ in 0..RUNS {
            let t = Instant::now();
            let (plan, next, _, _) = super::cycle(config, Some(&snapshot), fetch, state, cache)?;
            let took = t.elapsed();
            if plan.changes().count() != 0 {
                bail!("a no-op cycle (fetch: {fetch}) planned changes");
            }
            snapshot = next;
            if fetch {
                figures.noop_fetch_runs.push(took);
            } else {
                figures.noop_runs.push(took);
            }
        }
    }
    figures.refs_floor = refs_floor(dirs)?;
    figures.fetch_loop = fetch_loop(config)?;
    Ok((figures, snapshot))
}

/// Every repo's references and `HEAD^{tree}`, with handles opened beforehand.
fn refs_floor(dirs: &[PathBuf]) -> Result<Duration> {
    let repos = dirs
        .iter()
        .map(|d| gix::open(d).with_context(|| format!("cannot open {}", d.display())))
        .collect::<Result<Vec<_>>>()?;
    let t = Instant::now();
    for repo in &repos {
        let refs = repo.references()?.all()?.filter_map(Result::ok).count();
        let tree = repo.head_commit()?.tree_id()?;
        std::hint::black_box((refs, tree));
    }
    Ok(t.elapsed())
}

/// `git fetch` of every mirror the daemon fetches, with its refspecs, one at a time.
fn fetch_loop(config: &Config) -> Result<Duration> {
    let cache = config.data_dir.join("git");
    let mut urls: Vec<&str> = config
        .template_repos
        .iter()
        .map(|r| r.url.as_str())
        .chain(config.spec_repos.iter().map(|r| r.url.as_str()))
        .collect();
    urls.sort_unstable();
    urls.dedup();
    let t = Instant::now();
    for url in urls {
        let mirror = cache.join(Mirror::folder_of(url)?);
        let mut args = vec!["fetch".to_owned(), "-q".to_owned(), url.to_owned()];
        args.extend(config.fetch_options(url).refspecs);
        let out = std::process::Command::new("git")
            .current_dir(&mirror)
            .args(&args)
            .output()
            .with_context(|| format!("cannot run git fetch in {}", mirror.display()))?;
        if !out.status.success() {
            bail!(
                "git fetch in {} failed: {}",
                mirror.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(t.elapsed())
}

/// The repo-reading figures as a Markdown table.
#[must_use]
pub fn table(rows: &[(usize, usize, &RepoFigures)]) -> String {
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    let min = |v: &[Duration]| v.iter().min().copied().unwrap_or_default();
    // Judged on medians, as the targets table judges them.
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    let mut out = String::from(
        "| instances | repos | no-op (no fetch) min / median | refs in one process | ratio (medians) | no-op (fetch) min / median | sequential `git fetch` loop | ratio (medians) |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (instances, repos, f) in rows {
        let (noop, noop_fetch) = (
            super::median(&f.noop_runs),
            super::median(&f.noop_fetch_runs),
        );
        let _ = writeln!(
            out,
            "| {instances} | {repos} | {} / {} | {} | {:.2}x | {} / {} | {} | {:.2}x |",
            ms(min(&f.noop_runs)),
            ms(noop),
            ms(f.refs_floor),
            ratio(noop, f.refs_floor),
            ms(min(&f.noop_fetch_runs)),
            ms(noop_fetch),
            ms(f.fetch_loop),
            ratio(noop_fetch, f.fetch_loop),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shows_min_median_and_ratios_to_the_floors() {
        let ms = Duration::from_millis;
        let f = RepoFigures {
            noop_runs: vec![ms(30), ms(20), ms(25)],
            refs_floor: ms(10),
            noop_fetch_runs: vec![ms(200), ms(300), ms(250)],
            fetch_loop: ms(1000),
        };
        let t = table(&[(5000, 500, &f)]);
        assert!(
            t.contains(
                "| 5000 | 500 | 20 ms / 25 ms | 10 ms | 2.50x | 200 ms / 250 ms | 1000 ms | 0.25x |"
            ),
            "{t}"
        );
    }
}
