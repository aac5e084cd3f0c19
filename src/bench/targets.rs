//! The issue-20 targets of `protond bench`, each next to its floor or bound, judged from the
//! figures of the run that printed them: tag to first deployment call (5,000 and 50,000
//! instances), the no-op cycle without fetch against reading every repo's refs in one process
//! (within 2x), with fetch against a sequential `git fetch` loop (within 0.5x), the deploy
//! path against a plain sequential SDK loop (at most 1.0x, and faster behind latency), the
//! daemon's memory at the largest size (under 200 MB), and render against Python Jinja2 (at
//! least 10x).
//!
//! Pure: it only reads figures already measured. It never measures, and never hard-codes a
//! figure: a target this run did not measure says so, and how to measure it.

use std::fmt::Write as _;
use std::time::Duration;

use super::daemon::DaemonFigures;
use super::{DeployFigures, Figures, median};

/// 200 MB (the memory bound), in MiB.
pub const MEMORY_BOUND_MIB: f64 = 200.0 * 1000.0 * 1000.0 / 1024.0 / 1024.0;

/// Fleet sizes whose tag to first deployment call has a target, with the bound.
const TAG_BOUNDS: [(usize, Duration); 2] = [
    (5_000, Duration::from_millis(500)),
    (50_000, Duration::from_secs(2)),
];

/// The fleet size the memory target is stated for.
const MEMORY_AT: usize = 50_000;

/// Whether a target was met in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Measured, and within the target.
    Met,
    /// Measured, and outside the target.
    NotMet,
    /// Not measured in this run (the row says how).
    NotMeasured,
}

impl Verdict {
    fn of(met: bool) -> Self {
        if met { Self::Met } else { Self::NotMet }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Met => "met",
            Self::NotMet => "**not met**",
            Self::NotMeasured => "not measured",
        }
    }
}

/// One target: what was measured, next to its floor and the bound it must meet.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Target {
    /// The target, e.g. "no-op without fetch, 5000 instances".
    pub name: String,
    /// The figure of this run (min / median where it has runs), or how to measure it.
    pub measured: String,
    /// The floor it is compared with, if any.
    pub floor: String,
    /// The bound: a ratio to the floor or an absolute limit.
    pub bound: String,
    /// The measured ratio to the floor, or the figure, in the bound's unit.
    pub value: Option<f64>,
    /// Met, not met or not measured.
    pub verdict: Verdict,
}

/// Render figures of `protond bench render` (documents per second, median of its runs), when
/// the run measured them.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct RenderFigures {
    /// protond's render, guard and rendered hash included.
    pub protond: f64,
    /// Python Jinja2, templates compiled once.
    pub python: f64,
}

/// Everything one `protond bench` run measured.
#[derive(Debug, Clone, Copy)]
pub struct Run<'a> {
    /// The read, render and plan figures of each fleet size.
    pub fleets: &'a [Figures],
    /// The deployment on `moto_server`, unless `--no-aws`.
    pub deployed: Option<&'a DeployFigures>,
    /// The real daemon's figures (`--daemon-instances`).
    pub daemons: &'a [DaemonFigures],
    /// The render against Python Jinja2 (`--render-contexts`).
    pub render: Option<RenderFigures>,
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn min_median(v: &[Duration]) -> String {
    let min = v.iter().min().copied().unwrap_or_default();
    format!("{} / {}", ms(min), ms(median(v)))
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

fn not_measured(target: String, how: &str, bound: String) -> Target {
    Target {
        name: target,
        measured: how.to_string(),
        floor: String::new(),
        bound,
        value: None,
        verdict: Verdict::NotMeasured,
    }
}

/// Tag to first deployment call at 5,000 and 50,000 instances (a real daemon, median).
fn tag_targets(daemons: &[DaemonFigures]) -> Vec<Target> {
    TAG_BOUNDS
        .iter()
        .map(|&(n, bound)| {
            let target = format!("tag to first deployment call, {n} instances");
            let bound_text = format!("< {:.1} s", bound.as_secs_f64());
            match daemons.iter().find(|d| d.instances == n) {
                Some(d) => {
                    let m = median(&d.tag_to_first);
                    Target {
                        name: target,
                        measured: format!("{} (median of {})", ms(m), d.tag_to_first.len()),
                        floor: String::new(),
                        bound: bound_text,
                        value: Some(m.as_secs_f64()),
                        verdict: Verdict::of(m < bound),
                    }
                }
                None => not_measured(target, &format!("`--daemon-instances {n}`"), bound_text),
            }
        })
        .collect()
}

/// For each fleet size: the no-op cycles against their floors (ratio of medians).
fn reading_targets(fleets: &[Figures]) -> Vec<Target> {
    let mut out = Vec::new();
    for f in fleets {
        let r = &f.reading;
        if r.noop_runs.is_empty() || r.noop_fetch_runs.is_empty() {
            continue;
        }
        let noop = ratio(median(&r.noop_runs), r.refs_floor);
        out.push(Target {
            name: format!("no-op without fetch, {} instances", f.instances),
            measured: min_median(&r.noop_runs),
            floor: format!("{} (refs in one process)", ms(r.refs_floor)),
            bound: "≤ 2x".into(),
            value: Some(noop),
            verdict: Verdict::of(noop <= 2.0),
        });
        let fetch = ratio(median(&r.noop_fetch_runs), r.fetch_loop);
        out.push(Target {
            name: format!("no-op with fetch, {} instances", f.instances),
            measured: min_median(&r.noop_fetch_runs),
            floor: format!("{} (sequential `git fetch` loop)", ms(r.fetch_loop)),
            bound: "≤ 0.5x".into(),
            value: Some(fetch),
            verdict: Verdict::of(fetch <= 0.5),
        });
    }
    out
}

/// protond's deploy phase against the plain loop, for each endpoint latency.
fn deploy_targets(deployed: Option<&DeployFigures>) -> Vec<Target> {
    let Some(d) = deployed else {
        return vec![not_measured(
            "deploy against a plain SDK loop".into(),
            "without `--no-aws` (needs `moto_server`)",
            "≤ 1.0x".into(),
        )];
    };
    let mut out: Vec<Target> = d
        .by_latency
        .iter()
        .map(|r| {
            let value = r.ratio();
            let direct = r.latency.is_zero();
            Target {
                name: if direct {
                    format!("deploy, {} stacks on moto_server", d.stacks)
                } else {
                    format!(
                        "deploy, {} stacks behind {} latency",
                        d.stacks,
                        ms(r.latency)
                    )
                },
                measured: format!(
                    "{} ({} at once)",
                    min_median(&r.protond_deploy),
                    d.concurrency
                ),
                floor: format!(
                    "{} (plain sequential SDK loop, same requests)",
                    min_median(&r.plain_loop)
                ),
                bound: if direct { "≤ 1.0x" } else { "< 1.0x" }.into(),
                value: Some(value),
                verdict: Verdict::of(if direct { value <= 1.0 } else { value < 1.0 }),
            }
        })
        .collect();
    if !d.by_latency.iter().any(|r| !r.latency.is_zero()) {
        out.push(not_measured(
            format!("deploy, {} stacks behind latency", d.stacks),
            "`--deploy-latency 50ms`",
            "< 1.0x".into(),
        ));
    }
    out
}

/// The daemon's memory at the largest size measured (the bound is stated for 50,000).
fn memory_targets(daemons: &[DaemonFigures]) -> Vec<Target> {
    let bound = format!("< 200 MB ({MEMORY_BOUND_MIB:.0} MiB) at {MEMORY_AT}");
    let Some(d) = daemons.iter().max_by_key(|d| d.instances) else {
        return vec![not_measured(
            "daemon memory".into(),
            &format!("`--daemon-instances {MEMORY_AT}`"),
            bound,
        )];
    };
    let mid = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or_default()
    };
    let at = d.instances;
    [
        ("daemon RSS at rest", mid(&d.rest_rss_mib)),
        ("daemon peak RSS in a tag cycle", mid(&d.tag_cycle_hwm_mib)),
        ("`reconcile --once` peak RSS", d.once_hwm_mib),
    ]
    .into_iter()
    .map(|(what, mib)| Target {
        name: format!("{what}, {at} instances"),
        measured: format!("{mib:.0} MiB"),
        floor: String::new(),
        bound: bound.clone(),
        value: Some(mib),
        // Under the bound at a smaller fleet says nothing about 50,000.
        verdict: if at < MEMORY_AT && mib < MEMORY_BOUND_MIB {
            Verdict::NotMeasured
        } else {
            Verdict::of(mib < MEMORY_BOUND_MIB)
        },
    })
    .collect()
}

/// Render against Python Jinja2 (median documents per second of each).
fn render_target(render: Option<RenderFigures>) -> Target {
    let target = "render against Python Jinja2 (AWS sample bundles)".to_string();
    let bound = "≥ 10x".to_string();
    match render {
        Some(r) => {
            let value = r.protond / r.python.max(1e-9);
            Target {
                name: target,
                measured: format!("{:.0} documents/s", r.protond),
                floor: format!("{:.0} documents/s (Python Jinja2)", r.python),
                bound,
                value: Some(value),
                verdict: Verdict::of(value >= 10.0),
            }
        }
        None => not_measured(target, "`scripts/render_bench`", bound),
    }
}

/// Every target, judged from `run`'s figures.
#[must_use]
pub fn targets(run: Run<'_>) -> Vec<Target> {
    let mut out = tag_targets(run.daemons);
    out.extend(reading_targets(run.fleets));
    out.extend(deploy_targets(run.deployed));
    out.extend(memory_targets(run.daemons));
    out.push(render_target(run.render));
    out
}

/// The targets as a Markdown table.
#[must_use]
pub fn table(targets: &[Target]) -> String {
    let mut out = String::from(
        "| target | measured (min / median) | floor | bound | ratio or figure | verdict |\n|---|---:|---:|---:|---:|---|\n",
    );
    for t in targets {
        let value = match t.value {
            Some(v) if t.bound.ends_with('x') => format!("{v:.2}x"),
            Some(v) => format!("{v:.2}"),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            t.name,
            t.measured,
            t.floor,
            t.bound,
            value,
            t.verdict.label()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{LatencyRuns, repos::RepoFigures};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn fleet(instances: usize, noop: [u64; 3], floor: u64, fetch: [u64; 3], loop_: u64) -> Figures {
        Figures {
            instances,
            repos: instances / 10,
            generate: ms(1),
            cold: ms(1),
            noop_fetch: ms(fetch[0]),
            noop: ms(noop[0]),
            new_minor: ms(1),
            minor_upgrades: instances,
            rev_parse: ms(1),
            render_per_sec: 1.0,
            peak_rss_mib: 1.0,
            cold_runs: vec![],
            new_minor_runs: vec![],
            reading: RepoFigures {
                noop_runs: noop.map(ms).to_vec(),
                refs_floor: ms(floor),
                noop_fetch_runs: fetch.map(ms).to_vec(),
                fetch_loop: ms(loop_),
            },
        }
    }

    fn daemon(
        instances: usize,
        tag_ms: [u64; 3],
        rest: f64,
        peak: f64,
        once: f64,
    ) -> DaemonFigures {
        DaemonFigures {
            instances,
            records: instances + 4,
            rest_rss_mib: vec![rest; 3],
            tag_cycle_hwm_mib: vec![peak; 3],
            tag_to_first: tag_ms.map(ms).to_vec(),
            once_hwm_mib: once,
        }
    }

    fn deployed(by_latency: Vec<LatencyRuns>) -> DeployFigures {
        DeployFigures {
            instances: 100,
            stacks: 104,
            concurrency: 4,
            tag_latencies: vec![ms(200)],
            tag_median: ms(200),
            tag_max: ms(200),
            protond_process: ms(800),
            protond_deploy: ms(600),
            plain_loop: ms(650),
            ratio: 0.92,
            by_latency,
        }
    }

    /// The verdict and the value, the value rounded to 1e-6 (float noise aside).
    fn judged(t: &Target) -> (Verdict, Option<f64>) {
        (t.verdict, t.value.map(|v| (v * 1e6).round() / 1e6))
    }

    fn find<'a>(ts: &'a [Target], name: &str) -> &'a Target {
        ts.iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no target {name:?} in {ts:#?}"))
    }

    #[test]
    fn each_target_is_judged_from_the_figures_of_the_run() {
        let fleets = [fleet(5000, [60, 50, 70], 30, [300, 200, 250], 1000)];
        let daemons = [
            daemon(5000, [400, 700, 600], 100.0, 150.0, 120.0),
            daemon(50_000, [1500, 1900, 2500], 180.0, 400.0, 150.0),
        ];
        let d = deployed(vec![
            LatencyRuns {
                latency: Duration::ZERO,
                protond_deploy: vec![ms(600), ms(640), ms(700)],
                protond_process: vec![ms(800); 3],
                plain_loop: vec![ms(650), ms(660), ms(640)],
                bare_loop: vec![],
            },
            LatencyRuns {
                latency: ms(50),
                protond_deploy: vec![ms(3000); 3],
                protond_process: vec![ms(3300); 3],
                plain_loop: vec![ms(12000); 3],
                bare_loop: vec![],
            },
        ]);
        let ts = targets(Run {
            fleets: &fleets,
            deployed: Some(&d),
            daemons: &daemons,
            render: Some(RenderFigures {
                protond: 50_000.0,
                python: 10_000.0,
            }),
        });
        // Medians: 600 ms at 5,000 (over 0.5 s), 1.9 s at 50,000 (under 2 s).
        let t = find(&ts, "tag to first deployment call, 5000 instances");
        assert_eq!(judged(t), (Verdict::NotMet, Some(0.6)));
        let t = find(&ts, "tag to first deployment call, 50000 instances");
        assert_eq!(judged(t), (Verdict::Met, Some(1.9)));
        // No-op: median 60 ms against 30 ms is exactly 2x (met); fetch 250 / 1000 = 0.25x.
        let t = find(&ts, "no-op without fetch, 5000 instances");
        assert_eq!(judged(t), (Verdict::Met, Some(2.0)));
        assert_eq!(t.measured, "50 ms / 60 ms");
        let t = find(&ts, "no-op with fetch, 5000 instances");
        assert_eq!(judged(t), (Verdict::Met, Some(0.25)));
        // Deploy: 640 / 650 ms, under 1.0x; behind 50 ms, 0.25x.
        let t = find(&ts, "deploy, 104 stacks on moto_server");
        assert_eq!(t.verdict, Verdict::Met);
        assert!((t.value.expect("a ratio") - 640.0 / 650.0).abs() < 1e-9);
        let t = find(&ts, "deploy, 104 stacks behind 50 ms latency");
        assert_eq!(judged(t), (Verdict::Met, Some(0.25)));
        // Memory at the largest size: at rest and --once under 190.7 MiB, the tag cycle over.
        assert_eq!(
            find(&ts, "daemon RSS at rest, 50000 instances").verdict,
            Verdict::Met
        );
        assert_eq!(
            find(&ts, "daemon peak RSS in a tag cycle, 50000 instances").verdict,
            Verdict::NotMet
        );
        assert_eq!(
            find(&ts, "`reconcile --once` peak RSS, 50000 instances").verdict,
            Verdict::Met
        );
        // 50,000 against 10,000 documents/s: 5x, under the 10x asked.
        let t = find(&ts, "render against Python Jinja2 (AWS sample bundles)");
        assert_eq!(judged(t), (Verdict::NotMet, Some(5.0)));
    }

    #[test]
    fn a_target_this_run_did_not_measure_says_how_to_measure_it() {
        let fleets = [fleet(100, [3, 4, 5], 1, [30, 30, 30], 50)];
        let daemons = [daemon(5000, [300, 300, 300], 100.0, 150.0, 120.0)];
        let ts = targets(Run {
            fleets: &fleets,
            deployed: None,
            daemons: &daemons,
            render: None,
        });
        let t = find(&ts, "tag to first deployment call, 50000 instances");
        assert_eq!(t.verdict, Verdict::NotMeasured);
        assert!(t.measured.contains("--daemon-instances 50000"), "{t:?}");
        // No-op 4 ms against 1 ms: 4x, not met; fetch 30 / 50 = 0.6x, not met.
        assert_eq!(
            find(&ts, "no-op without fetch, 100 instances").verdict,
            Verdict::NotMet
        );
        assert_eq!(
            find(&ts, "no-op with fetch, 100 instances").verdict,
            Verdict::NotMet
        );
        assert_eq!(
            find(&ts, "deploy against a plain SDK loop").verdict,
            Verdict::NotMeasured
        );
        // Under the bound at 5,000 proves nothing at 50,000.
        assert_eq!(
            find(&ts, "daemon RSS at rest, 5000 instances").verdict,
            Verdict::NotMeasured
        );
        let t = find(&ts, "render against Python Jinja2 (AWS sample bundles)");
        assert_eq!(t.verdict, Verdict::NotMeasured);
        assert!(t.measured.contains("scripts/render_bench"));
        let text = table(&ts);
        assert!(
            text.contains("| no-op without fetch, 100 instances | 3 ms / 4 ms | 1 ms (refs in one process) | ≤ 2x | 4.00x | **not met** |"),
            "{text}"
        );
    }
}
