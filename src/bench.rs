//! `protond bench`: the reconcile cycle at fleet size, measured on generated real git repos.
//!
//! For each fleet size N (service instances, up to 50,000 and beyond with `--instances`), a
//! generator writes a template repo (one environment and one service template, tagged
//! `v1.0`), a platform repo with four environments, and N/10 service repos of five services
//! with two instances each, all as real git repos. Then it measures, in this process, each
//! timed cycle [`RUNS`] times (min and median):
//!
//! * **cold**: first read (clone of every mirror), render and plan, with the environments
//!   recorded as deployed so that every instance renders;
//! * **no-op**: the same again with nothing changed (fetch included, and without fetch);
//! * **new minor**: after tagging `bench-svc/v1.1` (then `v1.2`, `v1.3`), the cycle that sees it;
//! * **baseline**: `git rev-parse HEAD^{tree}` in every repo, one process each;
//! * **reading repos** ([`repos`]): each no-op next to its fair floor: every repo's
//!   references read in one process, and a sequential `git fetch` loop;
//! * **peak RSS** (`VmHWM`) and **render throughput** (instances rendered per second).
//!
//! Every cycle reads its facts from a real state store, as the daemon's does ([`state`]:
//! records written as finished deployments leave them), inside the timed region.
//!
//! Cycles here are read + render + plan, the part of a reconcile that grows with the fleet;
//! no stack is deployed.
//!
//! [`measure_deployment`] then deploys one fleet for real, on a `moto_server` it starts on
//! 127.0.0.1, with the `protond` binary as child processes:
//!
//! * **protond against a plain SDK loop**: `reconcile --once` creates every stack (timed as a
//!   whole process, and from its first "Deployment started." to its last "Deployment
//!   succeeded."); after a moto reset, a plain sequential `CreateStack` + `DescribeStacks`
//!   loop creates the same stacks from the same rendered templates with the same requests
//!   (protond's tags, capabilities, a token), and after another reset the bare loop (the
//!   template alone) (an untimed protond run first warms `moto_server` up); each runs
//!   `--deploy-runs` times (min / median),
//!   straight on `moto_server` and, with `--deploy-latency`, again behind [`latency`]'s
//!   proxy, which holds every request for that long (a real endpoint's round trip);
//! * **tag to first deployment call**: a watching daemon (`run`, polling hourly) converges on
//!   the fleet, then `bench-svc/v1.1`, `v1.2`, ... are tagged one at a time; each latency runs
//!   from just before `git tag` to the daemon's first "Deployment started." for that version
//!   (logged right before its first `CloudFormation` call).
//!
//! [`targets`] then judges each issue-20 target from the figures of the run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::config::{Config, RawConfig};
use crate::desired;
use crate::plan::{self, ActionKind, UpdateReason};
use crate::state::ResourceRecord;

pub mod daemon;
pub mod latency;
pub mod repos;
mod state;
pub mod store;
pub mod targets;

/// Instances per service repo: 5 services × 2 instances.
const SERVICES_PER_REPO: usize = 5;
const ENVIRONMENTS: [&str; 4] = ["dev", "test", "staging", "prod"];

/// Figures for one fleet size.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Figures {
    /// Service instances.
    pub instances: usize,
    /// Service repos.
    pub repos: usize,
    /// Generating the repos.
    pub generate: Duration,
    /// Cold cycle (clone, render, plan).
    pub cold: Duration,
    /// No-op cycle with fetch.
    pub noop_fetch: Duration,
    /// No-op cycle without fetch (mirrors only).
    pub noop: Duration,
    /// The cycle after a new minor tag (with fetch).
    pub new_minor: Duration,
    /// Minor upgrades planned by it.
    pub minor_upgrades: usize,
    /// `git rev-parse HEAD^{tree}` over all repos.
    pub rev_parse: Duration,
    /// Instances rendered per second in the cold cycle's render step.
    pub render_per_sec: f64,
    /// Peak resident set size so far, in MiB.
    pub peak_rss_mib: f64,
    /// The cold cycles ([`RUNS`]; `cold` is the fastest).
    #[serde(default)]
    pub cold_runs: Vec<Duration>,
    /// The new-minor cycles ([`RUNS`], one tag each; `new_minor` is the fastest).
    #[serde(default)]
    pub new_minor_runs: Vec<Duration>,
    /// The no-op cycles ([`RUNS`] each; `noop` and `noop_fetch` are the fastest) next to
    /// their repo-reading floors.
    #[serde(default)]
    pub reading: repos::RepoFigures,
}

fn git(dir: &Path, args: &[&str]) -> Result<()> {
    crate::demo::git_as(dir, args, ("protond bench", "bench@protond.invalid"))
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn commit_all(dir: &Path, message: &str) -> Result<()> {
    git(dir, &["init", "-q", "-b", "main"])?;
    git(dir, &["add", "-A"])?;
    git(dir, &["commit", "-q", "-m", message])
}

const MANIFEST: &str = "infrastructure:\n  templates:\n    - file: \"cloudformation.yaml\"\n      rendering_engine: jinja\n      template_language: cloudformation\n";

/// Writes the repos for `instances` service instances under `dir`; returns the config.
///
/// # Errors
///
/// When a file or git command fails.
pub fn generate(dir: &Path, instances: usize) -> Result<PathBuf> {
    let repos = instances.div_ceil(SERVICES_PER_REPO * 2);
    let t = dir.join("templates");
    write(
        &t.join("bench-env/v1/schema/schema.yaml"),
        "schema:\n  format:\n    openapi: \"3.0.0\"\n  environment_input_type: \"E\"\n  types:\n    E:\n      type: object\n      properties:\n        team:\n          type: string\n          default: platform\n",
    )?;
    write(
        &t.join("bench-env/v1/infrastructure/manifest.yaml"),
        MANIFEST,
    )?;
    write(
        &t.join("bench-env/v1/infrastructure/cloudformation.yaml"),
        "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n    Properties:\n      TopicName: '{{ environment.name }}-{{ environment.inputs.team }}'\nOutputs:\n  TopicArn:\n    Value: !Ref Topic\n",
    )?;
    write(
        &t.join("bench-svc/v1/schema/schema.yaml"),
        "schema:\n  format:\n    openapi: \"3.0.0\"\n  service_input_type: \"S\"\n  types:\n    S:\n      type: object\n      properties:\n        image:\n          type: string\n          default: nginx\n        port:\n          type: integer\n          default: 8080\n          minimum: 1\n          maximum: 65535\n        count:\n          type: integer\n          default: 1\n",
    )?;
    write(
        &t.join("bench-svc/v1/instance_infrastructure/manifest.yaml"),
        MANIFEST,
    )?;
    write(
        &t.join("bench-svc/v1/instance_infrastructure/cloudformation.yaml"),
        "Resources:\n  Settings:\n    Type: AWS::SSM::Parameter\n    Properties:\n      Name: '/{{ service.name }}/{{ service_instance.name }}'\n      Type: String\n      Value: 'image={{ service_instance.inputs.image }};port={{ service_instance.inputs.port }};count={{ service_instance.inputs.count }};topic={{ environment.outputs.TopicArn }}'\n{% for i in range(service_instance.inputs.count) %}\n  Queue{{ i }}:\n    Type: AWS::SQS::Queue\n{% endfor %}\n",
    )?;
    write(&t.join("bench-svc/v1/.compatible-envs"), "bench-env:1\n")?;
    commit_all(&t, "templates")?;
    git(&t, &["tag", "-a", "bench-env/v1.0", "-m", "bench-env 1.0"])?;
    git(&t, &["tag", "-a", "bench-svc/v1.0", "-m", "bench-svc 1.0"])?;

    let p = dir.join("platform");
    for (i, env) in ENVIRONMENTS.iter().enumerate() {
        write(
            &p.join(format!("proton/environments/{env}.yaml")),
            &format!(
                "proton: EnvironmentSpec\nname: {env}\ntemplate: {{name: bench-env, major: 1}}\nstage: {env}\nspec:\n  team: team{i}\n"
            ),
        )?;
    }
    commit_all(&p, "environments")?;

    let mut toml = format!(
        "state = \"sqlite://state/state.db\"\ndata_dir = \"data\"\n\
         [aws]\nregion = \"us-east-1\"\nendpoint_url = \"http://127.0.0.1:9\"\n\
         [rollout]\nstages = [{}]\n\
         [[template_repos]]\nname = \"templates\"\nurl = \"templates\"\n\
         [[spec_repos]]\nname = \"platform\"\nurl = \"platform\"\nplatform = true\n",
        ENVIRONMENTS
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut made = 0;
    for r in 0..repos {
        let repo = dir.join(format!("svc-{r:04}"));
        for s in 0..SERVICES_PER_REPO {
            if made >= instances {
                break;
            }
            let name = format!("s{r:04}x{s}");
            let mut text = format!(
                "proton: ServiceSpec\nname: {name}\ntemplate: {{name: bench-svc, major: 1}}\ninstances:\n"
            );
            for k in 0..2 {
                if made >= instances {
                    break;
                }
                let env = ENVIRONMENTS[(r + s + k) % ENVIRONMENTS.len()];
                let _ = write!(
                    text,
                    "  - name: {name}-{k}\n    environment: {env}\n    spec:\n      port: {}\n      count: {}\n",
                    8000 + k,
                    1 + (s % 3)
                );
                made += 1;
            }
            write(&repo.join(format!("proton/services/{name}.yaml")), &text)?;
        }
        commit_all(&repo, "services")?;
        let _ = write!(
            toml,
            "[[spec_repos]]\nname = \"svc-{r:04}\"\nurl = \"svc-{r:04}\"\n"
        );
    }
    let config = dir.join("proton.toml");
    write(&config, &toml)?;
    Ok(config)
}

fn load(config_path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(config_path)?;
    let raw: RawConfig = toml::from_str(&text)?;
    let base = config_path.parent().unwrap_or(Path::new("."));
    Config::compile(raw, &config_path.display().to_string(), base).map_err(|es| {
        anyhow::anyhow!(
            es.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

/// Records every ready resource of a desired set as deployed, as a finished deployment would.
fn as_deployed(set: &desired::DesiredSet) -> Vec<ResourceRecord> {
    set.resources
        .iter()
        .filter_map(|r| match &r.desired.state {
            plan::DesiredState::Ready { rendered_hash } => Some(ResourceRecord {
                id: r.desired.id.clone(),
                kind: r.desired.kind,
                repo: r.desired.repo.clone(),
                environment: r.environment.clone(),
                template: r.desired.template.clone(),
                version: r.desired.version,
                input_hash: r.desired.input_hash.clone(),
                rendered_hash: rendered_hash.clone(),
                outputs: [(
                    "TopicArn".to_string(),
                    format!("arn:aws:sns:us-east-1:123456789012:{}", r.desired.id),
                )]
                .into_iter()
                .collect(),
                status: crate::model::ResourceStatus::Deployed,
                spec_commit: r.spec_commit.clone(),
                updated_at: String::new(),
                placement: crate::model::Placement::default(),
            }),
            _ => None,
        })
        .collect()
}

/// Logs this process's `VmRSS` and `VmHWM` after a step, so that a run shows where memory
/// goes.
fn log_rss(step: &str) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| status_mib(&status, name).unwrap_or_default();
    eprintln!(
        "bench: after {step}: VmRSS {:.0} MiB, VmHWM {:.0} MiB{}",
        field("VmRSS:"),
        field("VmHWM:"),
        heap_in_use(),
    );
}

/// The allocator's heap in use and held, where glibc tells (`mallinfo2`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap_in_use() -> String {
    // SAFETY: `mallinfo2` only reads the allocator's counters.
    let heap = unsafe { libc::mallinfo2() };
    #[allow(clippy::cast_precision_loss)]
    let mib = |bytes: usize| bytes as f64 / 1024.0 / 1024.0;
    format!(
        ", heap in use {:.0} MiB, held by the allocator {:.0} MiB",
        mib(heap.uordblks + heap.hblkhd),
        mib(heap.arena + heap.hblkhd),
    )
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap_in_use() -> String {
    String::new()
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| status_mib(&s, "VmHWM:"))
        .unwrap_or_default()
}

/// A `/proc/PID/status` field given in kB (`name` with its colon, e.g. `VmHWM:`), in MiB.
fn status_mib(status: &str, name: &str) -> Option<f64> {
    status
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
}

/// What one bench cycle returns: the plan, the snapshot read, the desired set, the render
/// (evaluation) time and the schedule.
type CycleResult = (
    plan::Plan,
    desired::Snapshot,
    desired::DesiredSet,
    Duration,
    plan::schedule::Schedule,
);

/// One cycle as the daemon runs it: read the repos (reusing what the previous cycle read when
/// unchanged), read the facts from the state store, evaluate (render, diff, rollout gate,
/// schedule).
fn cycle_scheduled(
    config: &Config,
    previous: Option<&desired::Snapshot>,
    fetch: bool,
    state: &state::State,
    cache: &mut desired::ComputeCache,
) -> Result<CycleResult> {
    let snapshot = desired::load_cached(config, previous, fetch);
    let facts = state.facts()?;
    // The daemon's own evaluation (render, diff, rollout gate, schedule).
    let t = Instant::now();
    let eval = crate::evaluate::evaluate(&snapshot, &facts, config, Some(cache));
    let render = t.elapsed();
    drop(facts);
    // As the daemon's cycle ends.
    desired::release_freed_memory();
    Ok((eval.plan, snapshot, eval.set, render, eval.schedule))
}

/// [`cycle_scheduled`] without the schedule.
fn cycle(
    config: &Config,
    previous: Option<&desired::Snapshot>,
    fetch: bool,
    state: &state::State,
    cache: &mut desired::ComputeCache,
) -> Result<(plan::Plan, desired::Snapshot, desired::DesiredSet, Duration)> {
    let (plan, snapshot, set, render, _) = cycle_scheduled(config, previous, fetch, state, cache)?;
    Ok((plan, snapshot, set, render))
}

/// Runs of each timed cycle (cold, no-op, new minor).
pub const RUNS: usize = 3;

/// The cold cycles: each clones every mirror again and renders from an empty cache, with the
/// environments recorded; `RUNS` times. Returns the runs, the fastest render and the last
/// cycle's snapshot, desired set and cache.
fn cold_cycles(
    config: &Config,
    state: &state::State,
    instances: usize,
) -> Result<(
    Vec<Duration>,
    Duration,
    desired::Snapshot,
    desired::DesiredSet,
    desired::ComputeCache,
)> {
    let mut runs = Vec::new();
    let mut best_render = Duration::MAX;
    let mut last = None;
    for _ in 0..RUNS {
        drop(last.take());
        // A truly cold read clones the mirrors again.
        std::fs::remove_dir_all(config.data_dir.join("git")).ok();
        let mut cache = desired::ComputeCache::default();
        let t = Instant::now();
        let (plan, snapshot, set, render) = cycle(config, None, true, state, &mut cache)?;
        runs.push(t.elapsed());
        best_render = best_render.min(render);
        let creates = plan
            .changes()
            .filter(|a| a.action == ActionKind::Create)
            .count();
        if creates != instances {
            bail!(
                "the cold cycle planned {creates} creates for {instances} instances: {:?}",
                set.problems
            );
        }
        last = Some((snapshot, set, cache));
    }
    let (snapshot, set, cache) = last.context("no cold cycle ran")?;
    Ok((runs, best_render, snapshot, set, cache))
}

/// The cycles that each see a new minor tag (`bench-svc/v1.1`, `v1.2`, ...), `RUNS` times;
/// each must plan the upgrade of every instance (the first stage now, the others held by the
/// rollout gate: the schedule lists both).
fn new_minor_cycles(
    config: &Config,
    dir: &Path,
    mut snapshot: desired::Snapshot,
    state: &state::State,
    cache: &mut desired::ComputeCache,
    instances: usize,
) -> Result<Vec<Duration>> {
    let templates = dir.join("templates");
    let mut runs = Vec::new();
    for minor in 1..=RUNS {
        let tag = format!("bench-svc/v1.{minor}");
        git(&templates, &["tag", "-a", &tag, "-m", &tag])?;
        let t = Instant::now();
        let (_, next, _, _, schedule) =
            cycle_scheduled(config, Some(&snapshot), true, state, cache)?;
        runs.push(t.elapsed());
        snapshot = next;
        let minor_upgrades = schedule
            .decisions
            .iter()
            .map(|d| &d.action)
            .filter(|a| {
                matches!(
                    a.action,
                    ActionKind::Update {
                        reason: UpdateReason::MinorUpgrade { .. }
                    }
                )
            })
            .count();
        if minor_upgrades != instances {
            bail!("the new minor {tag} reached {minor_upgrades} of {instances} instances");
        }
    }
    Ok(runs)
}

/// Generates and measures one fleet size under `dir`.
///
/// # Errors
///
/// When generating fails, or a cycle does not see what it should (the figures would lie).
pub fn measure(dir: &Path, instances: usize) -> Result<Figures> {
    std::fs::create_dir_all(dir)?;
    let t = Instant::now();
    let config_path = generate(dir, instances)?;
    let generate_time = t.elapsed();
    let config = load(&config_path)?;
    let repos = config.spec_repos.len() - 1;
    let state = state::State::open(&config)?;

    // Environments deployed, so that instances render.
    let (_, snapshot, set, _) = cycle(
        &config,
        None,
        true,
        &state,
        &mut desired::ComputeCache::default(),
    )?;
    let envs: Vec<ResourceRecord> = as_deployed(&set)
        .into_iter()
        .filter(|r| r.kind == plan::ResourceKind::Environment)
        .collect();
    drop((snapshot, set));
    state.record(&envs)?;
    log_rss("the environments' cycle");

    let (cold_runs, render, snapshot, set, mut cache) = cold_cycles(&config, &state, instances)?;
    log_rss("the cold cycles");
    // Fleet sizes are far below 2^52: the conversion is exact.
    #[allow(clippy::cast_precision_loss)]
    let render_per_sec = instances as f64 / render.as_secs_f64().max(1e-9);
    let instances_deployed: Vec<ResourceRecord> = as_deployed(&set)
        .into_iter()
        .filter(|r| r.kind != plan::ResourceKind::Environment)
        .collect();
    drop(set);
    state.record(&instances_deployed)?;
    drop(instances_deployed);
    // Deploying changes the records (and so the rendering inputs): the daemon's first cycle
    // after the deployments renders once more; the no-op cycles are the ones after it.
    let (_, snapshot, _, _) = cycle(&config, Some(&snapshot), false, &state, &mut cache)?;
    log_rss("recording the instances and one cycle");

    let (reading, snapshot) = {
        let mut dirs = vec![dir.join("templates"), dir.join("platform")];
        dirs.extend((0..repos).map(|r| dir.join(format!("svc-{r:04}"))));
        repos::measure(&config, snapshot, &state, &mut cache, &dirs)?
    };
    log_rss("the no-op cycles");
    let new_minor_runs = new_minor_cycles(&config, dir, snapshot, &state, &mut cache, instances)?;
    log_rss("the new-minor cycles");

    let mut dirs = vec![dir.join("templates"), dir.join("platform")];
    dirs.extend((0..repos).map(|r| dir.join(format!("svc-{r:04}"))));
    let t = Instant::now();
    for d in &dirs {
        git(d, &["rev-parse", "-q", "HEAD^{tree}"])?;
    }
    let rev_parse = t.elapsed();

    let min = |v: &[Duration]| v.iter().min().copied().unwrap_or_default();
    Ok(Figures {
        instances,
        repos,
        generate: generate_time,
        cold: min(&cold_runs),
        noop_fetch: min(&reading.noop_fetch_runs),
        noop: min(&reading.noop_runs),
        new_minor: min(&new_minor_runs),
        minor_upgrades: instances,
        rev_parse,
        render_per_sec,
        peak_rss_mib: peak_rss_mib(),
        cold_runs,
        new_minor_runs,
        reading,
    })
}

/// The figures as a Markdown table: each timed cycle as min / median of its runs.
#[must_use]
pub fn table(rows: &[Figures]) -> String {
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    // Figures written before runs were kept have one run: the figure itself.
    let runs = |v: &[Duration], one: Duration| {
        if v.is_empty() {
            ms(one)
        } else {
            let min = v.iter().min().copied().unwrap_or_default();
            format!("{} / {}", ms(min), ms(median(v)))
        }
    };
    let mut out = String::from(
        "| instances | repos | cold cycle | no-op (fetch) | no-op (no fetch) | new minor | `git rev-parse` all repos | no-op / rev-parse | render | peak RSS |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for f in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {:.1}x | {:.0} inst/s | {:.0} MiB |",
            f.instances,
            f.repos,
            runs(&f.cold_runs, f.cold),
            runs(&f.reading.noop_fetch_runs, f.noop_fetch),
            runs(&f.reading.noop_runs, f.noop),
            runs(&f.new_minor_runs, f.new_minor),
            ms(f.rev_parse),
            f.noop.as_secs_f64() / f.rev_parse.as_secs_f64().max(1e-9),
            f.render_per_sec,
            f.peak_rss_mib
        );
    }
    out
}

/// Figures from deploying one fleet on a `moto_server`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DeployFigures {
    /// Service instances.
    pub instances: usize,
    /// Stacks created: the instances and the environments.
    pub stacks: usize,
    /// Deployments protond runs at once (`daemon.concurrency`).
    pub concurrency: usize,
    /// From just before each `git tag` to the watching daemon's first deployment of it.
    pub tag_latencies: Vec<Duration>,
    /// Median of `tag_latencies`.
    pub tag_median: Duration,
    /// Maximum of `tag_latencies`.
    pub tag_max: Duration,
    /// `protond reconcile --once` creating every stack, as a whole process (start, clones,
    /// every cycle).
    pub protond_process: Duration,
    /// Its first "Deployment started." to its last "Deployment succeeded.".
    pub protond_deploy: Duration,
    /// The plain sequential SDK loop creating the same stacks.
    pub plain_loop: Duration,
    /// `protond_deploy / plain_loop`.
    pub ratio: f64,
    /// The timed runs of protond and the plain loop, straight on `moto_server` (latency
    /// zero) and behind the latency proxy; the fields above are the medians of the first.
    #[serde(default)]
    pub by_latency: Vec<LatencyRuns>,
}

/// protond against the plain loop with `latency` added to every request, each run from an
/// empty `moto_server` and a fresh state.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct LatencyRuns {
    /// Added to every request (zero: `moto_server` directly).
    pub latency: Duration,
    /// protond's first "Deployment started." to its last "Deployment succeeded.", per run.
    pub protond_deploy: Vec<Duration>,
    /// The whole `reconcile --once` process, per run.
    pub protond_process: Vec<Duration>,
    /// The plain sequential SDK loop, per run: the same requests as protond's (template,
    /// tags, capabilities, token).
    pub plain_loop: Vec<Duration>,
    /// The bare loop, per run: the template body alone, no tags (less work for the
    /// endpoint than protond's requests).
    #[serde(default)]
    pub bare_loop: Vec<Duration>,
}

impl LatencyRuns {
    /// `median(protond_deploy) / median(plain_loop)`.
    #[must_use]
    pub fn ratio(&self) -> f64 {
        median(&self.protond_deploy).as_secs_f64()
            / median(&self.plain_loop).as_secs_f64().max(1e-9)
    }
}

/// How the deployment figures are taken (`protond bench --deploy-*`).
#[derive(Debug, Clone, Copy)]
pub struct DeployPlan {
    /// Service instances deployed.
    pub instances: usize,
    /// New minor tags timed from tag to first deployment call.
    pub tags: usize,
    /// Timed runs of protond and the plain loop, for each latency.
    pub runs: usize,
    /// An endpoint latency to measure besides none (`--deploy-latency`).
    pub latency: Option<Duration>,
}

/// The median of `samples` (the mean of the two middle ones for an even count); zero when
/// empty.
#[must_use]
pub fn median(samples: &[Duration]) -> Duration {
    let mut v = samples.to_vec();
    v.sort_unstable();
    match v.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}

/// Whether `moto_server` is on the `PATH`.
#[must_use]
pub fn moto_available() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join("moto_server").is_file()))
}

/// The generated config, pointed at a `moto_server`: polling hourly (so that only the watcher
/// triggers), watching, stacks created directly (`moto_server` returns no outputs for
/// change-set stacks), no soak and no maintenance windows.
fn aws_config(generated: &str, url: &str, stack_poll: &str) -> Result<String> {
    let endpoint = "endpoint_url = \"http://127.0.0.1:9\"\n";
    if !generated.contains(endpoint) || generated.contains("[daemon]") {
        bail!("the generated config changed shape; update bench::aws_config");
    }
    Ok(format!(
        "poll_interval = \"1h\"\n{}[daemon]\nwatch = true\nshutdown_grace = \"30s\"\n",
        generated.replace(
            endpoint,
            &format!(
                "endpoint_url = \"{url}\"\npoll_interval = \"{stack_poll}\"\nchange_sets = false\n"
            ),
        )
    ))
}

/// A `CloudFormation` client for the `moto_server` at `url`, with test credentials.
fn cfn_client(url: &str, region: &str) -> aws_sdk_cloudformation::Client {
    let conf = aws_sdk_cloudformation::Config::builder()
        .behavior_version(aws_sdk_cloudformation::config::BehaviorVersion::latest())
        .region(aws_sdk_cloudformation::config::Region::new(
            region.to_string(),
        ))
        .endpoint_url(url)
        .credentials_provider(aws_sdk_cloudformation::config::Credentials::new(
            "testing", "testing", None, None, "bench",
        ))
        .build();
    aws_sdk_cloudformation::Client::from_conf(conf)
}

/// Every stack `moto_server` lists, all pages.
async fn all_stacks(
    cfn: &aws_sdk_cloudformation::Client,
) -> Result<Vec<aws_sdk_cloudformation::types::Stack>> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = cfn
            .describe_stacks()
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "DescribeStacks: {}",
                    aws_sdk_cloudformation::error::DisplayErrorContext(&e)
                )
            })?;
        out.extend(page.stacks().iter().cloned());
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    Ok(out)
}

/// Live stacks (not deleted): (name, status).
async fn live_stacks(cfn: &aws_sdk_cloudformation::Client) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = all_stacks(cfn)
        .await?
        .iter()
        .filter_map(|s| {
            let status = s.stack_status().map_or("", |x| x.as_str()).to_string();
            (status != "DELETE_COMPLETE")
                .then(|| (s.stack_name().unwrap_or("").to_string(), status))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Checks that exactly `names` exist, all `CREATE_COMPLETE` (or any complete status when
/// `any_complete`).
async fn expect_stacks(
    cfn: &aws_sdk_cloudformation::Client,
    names: &[String],
    any_complete: bool,
    after: &str,
) -> Result<()> {
    let live = live_stacks(cfn).await?;
    let bad: Vec<&(String, String)> = live
        .iter()
        .filter(|(_, s)| {
            if any_complete {
                !s.ends_with("_COMPLETE") || s.contains("ROLLBACK")
            } else {
                s != "CREATE_COMPLETE"
            }
        })
        .collect();
    if !bad.is_empty() {
        bail!(
            "after {after}, {} stack(s) are not complete: {:?}",
            bad.len(),
            bad.iter().take(5).collect::<Vec<_>>()
        );
    }
    let mut want = names.to_vec();
    want.sort();
    let got: Vec<String> = live.into_iter().map(|(n, _)| n).collect();
    if got != want {
        bail!(
            "after {after}, moto_server has {} stacks where {} were expected",
            got.len(),
            want.len()
        );
    }
    Ok(())
}

async fn reset_moto(url: &str) -> Result<()> {
    reqwest::Client::new()
        .post(format!("{url}/moto-api/reset"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("cannot reset the moto_server at {url}"))?;
    Ok(())
}

/// One stack as protond created it: its name, template body and tags (its ownership tags,
/// read back from the stack protond created), so that the plain loop sends the same
/// requests.
#[derive(Debug, Clone)]
struct StackCall {
    name: String,
    body: String,
    tags: Vec<(String, String)>,
}

/// The tags of every live stack, by name.
async fn stack_tags(
    cfn: &aws_sdk_cloudformation::Client,
) -> Result<std::collections::HashMap<String, Vec<(String, String)>>> {
    Ok(all_stacks(cfn)
        .await?
        .iter()
        .map(|s| {
            let tags = s
                .tags()
                .iter()
                .map(|t| {
                    (
                        t.key().unwrap_or("").to_string(),
                        t.value().unwrap_or("").to_string(),
                    )
                })
                .collect();
            (s.stack_name().unwrap_or("").to_string(), tags)
        })
        .collect())
}

/// The stacks protond deploys for the fleet, in deployment order, rendered from the repos
/// and the recorded environment outputs, each with the tags protond's run gave it (read
/// from `cfn`, before the next reset).
async fn rendered_stacks(
    config: &Config,
    cfn: &aws_sdk_cloudformation::Client,
) -> Result<Vec<StackCall>> {
    let mut tags = stack_tags(cfn).await?;
    let store = crate::state::Store::open_config(config).await?;
    let deployed = store.resources().await?;
    drop(store);
    let snapshot = desired::load_cached(config, None, false);
    let set = desired::compute(&snapshot, &deployed, &config.account_id);
    let mut resources: Vec<&desired::Resource> = set.resources.iter().collect();
    resources.sort_by(|a, b| (a.desired.kind, &a.desired.id).cmp(&(b.desired.kind, &b.desired.id)));
    let mut out = Vec::new();
    for r in resources {
        match (&r.desired.state, r.documents.as_slice()) {
            (plan::DesiredState::Ready { .. }, [(_, body)]) => {
                let name = crate::provision::cloudformation::stack_name(&r.desired.id);
                let tags = tags.remove(&name).unwrap_or_default();
                if tags.is_empty() {
                    bail!("protond's stack {name} has no tags on moto_server");
                }
                out.push(StackCall {
                    name,
                    body: body.clone(),
                    tags,
                });
            }
            (state, _) => bail!("{} did not render: {state:?}", r.desired.id),
        }
    }
    Ok(out)
}

/// Creates each stack and polls it until `CREATE_COMPLETE`, one after the other. With
/// `same_requests`, each `CreateStack` carries what protond's does (its tags, the three
/// capabilities and a client request token), so that `moto_server` does the same work for
/// both; without, the template body alone (the bare loop).
async fn plain_loop(
    cfn: &aws_sdk_cloudformation::Client,
    stacks: &[StackCall],
    poll: Duration,
    same_requests: bool,
) -> Result<Duration> {
    use aws_sdk_cloudformation::error::DisplayErrorContext;
    use aws_sdk_cloudformation::types::{Capability, Tag};
    let t = Instant::now();
    for (i, StackCall { name, body, tags }) in stacks.iter().enumerate() {
        let mut call = cfn.create_stack().stack_name(name).template_body(body);
        if same_requests {
            call = call
                .set_capabilities(Some(vec![
                    Capability::CapabilityIam,
                    Capability::CapabilityNamedIam,
                    Capability::CapabilityAutoExpand,
                ]))
                .set_tags(Some(
                    tags.iter()
                        .map(|(k, v)| Tag::builder().key(k).value(v).build())
                        .collect(),
                ))
                .client_request_token(format!("bench-{i}"));
        }
        call.send()
            .await
            .map_err(|e| anyhow::anyhow!("CreateStack {name}: {}", DisplayErrorContext(&e)))?;
        loop {
            let out = cfn
                .describe_stacks()
                .stack_name(name)
                .send()
                .await
                .map_err(|e| {
                    anyhow::anyhow!("DescribeStacks {name}: {}", DisplayErrorContext(&e))
                })?;
            let status = out
                .stacks()
                .first()
                .and_then(|s| s.stack_status())
                .map_or("", |s| s.as_str());
            match status {
                "CREATE_COMPLETE" => break,
                "CREATE_IN_PROGRESS" => tokio::time::sleep(poll).await,
                other => bail!("the plain loop's stack {name} ended {other:?}"),
            }
        }
    }
    Ok(t.elapsed())
}

/// A `protond` child process with JSON logs on stderr, read line by line (each stamped
/// when read); killed on drop if still running.
struct Protond {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<(Instant, String)>,
    tail: std::collections::VecDeque<String>,
    started: Instant,
    /// Whether a "Deployment failed." line is read like any other (else it is an error).
    tolerate_failures: bool,
}

/// A parsed log line: when it was read, its message, and the whole object.
struct Log {
    at: Instant,
    message: String,
    value: serde_json::Value,
}

impl Log {
    fn field(&self, key: &str) -> &serde_json::Value {
        &self.value["fields"][key]
    }
    fn span(&self, key: &str) -> &serde_json::Value {
        &self.value["span"][key]
    }
    fn span_str(&self, key: &str) -> &str {
        self.span(key).as_str().unwrap_or("")
    }
}

impl Drop for Protond {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Protond {
    fn spawn(config: &Path, args: &[&str]) -> Result<Self> {
        use std::process::Stdio;
        let exe = std::env::current_exe().context("cannot find the protond binary")?;
        let started = Instant::now();
        let mut child = std::process::Command::new(exe)
            .args(args)
            .arg("--config")
            .arg(config)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env("PROTOND_LOG_FORMAT", "json")
            // Idle cycles are logged at debug: the bench waits for one.
            .env("PROTOND_LOG", "info,protond::telemetry::events=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run protond")?;
        let stderr = child
            .stderr
            .take()
            .context("no stderr from the protond child")?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child,
            lines,
            tail: std::collections::VecDeque::new(),
            started,
            tolerate_failures: false,
        })
    }

    /// The next log line before `deadline`; `Ok(None)` once the process closed its stderr.
    fn next(&mut self, deadline: Instant, waiting_for: &str) -> Result<Option<Log>> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (at, line) = match self.lines.recv_timeout(left) {
                Ok(x) => x,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Ok(None),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    bail!("timed out waiting for {waiting_for}; {}", self.recent())
                }
            };
            if self.tail.len() == 8 {
                self.tail.pop_front();
            }
            self.tail.push_back(line.clone());
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let message = value["fields"]["message"]
                .as_str()
                .unwrap_or("")
                .to_string();
            if message == "Deployment failed." && !self.tolerate_failures {
                bail!("a deployment failed: {line}");
            }
            return Ok(Some(Log { at, message, value }));
        }
    }

    /// The next log line satisfying `pred`, or an error on timeout or exit.
    fn wait_for(
        &mut self,
        deadline: Instant,
        waiting_for: &str,
        mut pred: impl FnMut(&Log) -> bool,
    ) -> Result<Log> {
        loop {
            match self.next(deadline, waiting_for)? {
                Some(log) if pred(&log) => return Ok(log),
                Some(_) => {}
                None => bail!(
                    "protond exited while waiting for {waiting_for}; {}",
                    self.recent()
                ),
            }
        }
    }

    /// Waits until `count` deployments matching `pred` succeeded and then a cycle started
    /// and held nothing (the daemon has nothing left to do).
    fn converge(
        &mut self,
        deadline: Instant,
        count: usize,
        what: &str,
        pred: impl Fn(&Log) -> bool,
    ) -> Result<()> {
        let mut done = 0;
        while done < count {
            self.wait_for(deadline, what, |l| {
                l.message == "Deployment succeeded." && pred(l)
            })?;
            done += 1;
        }
        self.wait_for(deadline, &format!("an idle cycle after {what}"), |l| {
            l.message == "Reconcile cycle finished; nothing to start."
                && l.field("held").as_u64() == Some(0)
        })?;
        Ok(())
    }

    fn recent(&self) -> String {
        format!(
            "last log lines:\n{}",
            self.tail.iter().cloned().collect::<Vec<_>>().join("\n")
        )
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(mut self, deadline: Instant) -> Result<()> {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .context("cannot run kill")?;
        if !sent.success() {
            bail!("kill -TERM {pid} failed");
        }
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!(
                        "the daemon exited with {status} after SIGTERM; {}",
                        self.recent()
                    );
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("the daemon did not exit after SIGTERM; {}", self.recent())
    }
}

/// `protond reconcile --once` on a fresh `moto_server`: (whole process, first deployment
/// start to last success).
fn protond_once(config: &Path, expected: usize, timeout: Duration) -> Result<(Duration, Duration)> {
    let mut p = Protond::spawn(config, &["reconcile", "--once"])?;
    let deadline = Instant::now() + timeout;
    let (mut first, mut last, mut succeeded) = (None, None, 0);
    while let Some(log) = p.next(deadline, "reconcile --once to finish")? {
        match log.message.as_str() {
            "Deployment started." => {
                first.get_or_insert(log.at);
            }
            "Deployment succeeded." => {
                last = Some(log.at);
                succeeded += 1;
            }
            _ => {}
        }
    }
    let status = p.child.wait()?;
    let process = p.started.elapsed();
    if !status.success() {
        bail!(
            "protond reconcile --once exited with {status}; {}",
            p.recent()
        );
    }
    if succeeded != expected {
        bail!("protond reconcile --once deployed {succeeded} stacks for {expected}");
    }
    match (first, last) {
        (Some(a), Some(b)) => Ok((process, b.saturating_duration_since(a))),
        _ => bail!("protond reconcile --once logged no deployments"),
    }
}

/// A watching daemon on a fresh `moto_server` and state: converges, then tags
/// `bench-svc/v1.1` .. `v1.<tags>` one after the other; returns each tag's latency to the
/// first deployment of it.
fn tag_latencies(
    dir: &Path,
    config: &Path,
    instances: usize,
    stacks: usize,
    tags: usize,
) -> Result<Vec<Duration>> {
    let templates = dir.join("templates");
    let mut d = Protond::spawn(config, &["run", "--no-server"])?;
    let per_rollout = Duration::from_mins(1) + Duration::from_millis(500) * u32::try_from(stacks)?;
    d.converge(
        Instant::now() + per_rollout,
        stacks,
        "the first deployments",
        |_| true,
    )?;
    let mut out = Vec::new();
    for minor in 1..=tags {
        let version = format!("1.{minor}");
        // Let the last cycle's tail pass; anything logged meanwhile is read (and checked).
        std::thread::sleep(Duration::from_millis(500));
        while let Ok((_, line)) = d.lines.try_recv() {
            if line.contains("\"Deployment failed.\"") {
                bail!("a deployment failed: {line}");
            }
        }
        let tag = format!("bench-svc/v{version}");
        let t = Instant::now();
        git(&templates, &["tag", "-a", &tag, "-m", &tag])?;
        let first = d.wait_for(
            t + Duration::from_mins(1),
            &format!("the first deployment of {tag}"),
            |l| {
                l.message == "Deployment started."
                    && l.span_str("version") == version
                    && l.field("reason")
                        .as_str()
                        .is_some_and(|r| r.contains("minor_upgrade"))
            },
        )?;
        out.push(first.at.saturating_duration_since(t));
        // Every instance moves to the new minor, stage by stage; then the daemon is idle.
        d.converge(
            Instant::now() + per_rollout,
            instances,
            &format!("the rollout of {tag}"),
            |l| l.span_str("version") == version,
        )?;
    }
    d.stop(Instant::now() + Duration::from_mins(1))?;
    Ok(out)
}

/// Removes protond's state and mirrors, as before a first start.
fn fresh_state(config: &Config) -> Result<()> {
    std::fs::remove_dir_all(&config.data_dir)
        .with_context(|| format!("cannot remove {}", config.data_dir.display()))?;
    if let Some(db) = config.state.strip_prefix("sqlite://")
        && let Some(state_dir) = Path::new(db).parent()
    {
        std::fs::remove_dir_all(state_dir)
            .with_context(|| format!("cannot remove {}", state_dir.display()))?;
    }
    Ok(())
}

/// Runs protond and the plain loop `runs` times each on `moto_server` (through `endpoint`,
/// the server itself or the latency proxy), each from an empty `moto_server` and a fresh
/// state; checks that every run leaves exactly `names`. Returns the runs and the rendered
/// stacks (read after protond's first run).
fn timed_pairs(
    rt: &tokio::runtime::Runtime,
    moto: &str,
    endpoint: &str,
    config_path: &Path,
    generated: &str,
    (runs, stacks): (usize, usize),
) -> Result<(LatencyRuns, Vec<StackCall>)> {
    std::fs::write(config_path, aws_config(generated, endpoint, "200ms")?)?;
    let config = load(config_path)?;
    let timeout = Duration::from_mins(2) + Duration::from_secs(2) * u32::try_from(stacks)?;
    let direct = cfn_client(moto, &config.region);
    let via = cfn_client(endpoint, &config.region);
    let mut out = LatencyRuns::default();
    let mut rendered = Vec::new();
    for run in 0..runs.max(1) {
        // Every other run times the loops first, so that neither side always runs on a
        // moto_server just reset after the other (the first run renders the loops' stacks
        // from protond's, so protond goes first there).
        let loops_first = run % 2 == 1;
        if loops_first {
            let (plain, bare) = rt.block_on(the_loops(&direct, &via, &rendered, &config, moto))?;
            out.plain_loop.push(plain);
            out.bare_loop.push(bare);
        }
        rt.block_on(reset_moto(moto))?;
        fresh_state(&config)?;
        let (process, deploy) = protond_once(config_path, stacks, timeout)?;
        if rendered.is_empty() {
            rendered = rt.block_on(rendered_stacks(&config, &direct))?;
        }
        let names: Vec<String> = rendered.iter().map(|s| s.name.clone()).collect();
        if names.len() != stacks {
            bail!("{} stacks rendered for {stacks}", names.len());
        }
        rt.block_on(expect_stacks(
            &direct,
            &names,
            false,
            "protond reconcile --once",
        ))?;
        out.protond_process.push(process);
        out.protond_deploy.push(deploy);
        if !loops_first {
            let (plain, bare) = rt.block_on(the_loops(&direct, &via, &rendered, &config, moto))?;
            out.plain_loop.push(plain);
            out.bare_loop.push(bare);
        }
    }
    Ok((out, rendered))
}

/// The plain loop sending protond's requests, then the bare loop, each from an empty
/// `moto_server` (reset through `moto`, timed through `via`); checks that each leaves exactly
/// the rendered stacks.
async fn the_loops(
    direct: &aws_sdk_cloudformation::Client,
    via: &aws_sdk_cloudformation::Client,
    rendered: &[StackCall],
    config: &Config,
    moto: &str,
) -> Result<(Duration, Duration)> {
    let names: Vec<String> = rendered.iter().map(|s| s.name.clone()).collect();
    let poll = config.stack_poll_interval;
    reset_moto(moto).await?;
    expect_stacks(direct, &[], false, "the moto reset").await?;
    let plain = plain_loop(via, rendered, poll, true).await?;
    expect_stacks(direct, &names, false, "the plain SDK loop").await?;
    reset_moto(moto).await?;
    let bare = plain_loop(via, rendered, poll, false).await?;
    expect_stacks(direct, &names, false, "the bare SDK loop").await?;
    Ok((plain, bare))
}

/// Deploys a fleet on a `moto_server` started here (under `dir`): protond against a plain
/// SDK loop (`plan.runs` times each, straight and behind `plan.latency`), then `plan.tags`
/// new minors seen by a watching daemon.
///
/// # Errors
///
/// When `moto_server` cannot start, a deployment fails, or a run does not create exactly the
/// fleet's stacks (the figures would lie).
pub fn measure_deployment(dir: &Path, plan: DeployPlan) -> Result<DeployFigures> {
    let DeployPlan {
        instances, tags, ..
    } = plan;
    if instances == 0 || tags == 0 {
        bail!("the deployment figures need at least one instance and one tag");
    }
    std::fs::create_dir_all(dir)?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    let aws = crate::demo::LocalAws::start()
        .context("the deployment figures need moto_server (or pass --no-aws)")?;
    let config_path = generate(&dir, instances)?;
    let generated = std::fs::read_to_string(&config_path)?;
    std::fs::write(&config_path, aws_config(&generated, &aws.url, "200ms")?)?;
    let config = load(&config_path)?;
    let stacks = instances + ENVIRONMENTS.len();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let timeout = Duration::from_mins(2) + Duration::from_secs(2) * u32::try_from(stacks)?;

    // A first run warms moto_server up (its first calls of each service are slow); every
    // timed run starts from a reset moto_server.
    protond_once(&config_path, stacks, timeout).context("warm-up run")?;
    let mut by_latency = Vec::new();
    let (straight, rendered) = timed_pairs(
        &rt,
        &aws.url,
        &aws.url,
        &config_path,
        &generated,
        (plan.runs, stacks),
    )?;
    by_latency.push(straight);
    if let Some(latency) = plan.latency.filter(|l| !l.is_zero()) {
        let proxy = latency::LatencyProxy::start(&aws.url, latency)?;
        let (mut runs, _) = timed_pairs(
            &rt,
            &aws.url,
            &proxy.url,
            &config_path,
            &generated,
            (plan.runs, stacks),
        )?;
        runs.latency = latency;
        by_latency.push(runs);
        std::fs::write(&config_path, aws_config(&generated, &aws.url, "200ms")?)?;
    }
    let names: Vec<String> = rendered.iter().map(|s| s.name.clone()).collect();

    // The watcher, from a fresh state on an empty moto_server.
    let cfn = cfn_client(&aws.url, &config.region);
    rt.block_on(reset_moto(&aws.url))?;
    fresh_state(&config)?;
    let latencies = tag_latencies(&dir, &config_path, instances, stacks, tags)?;
    rt.block_on(expect_stacks(&cfn, &names, true, "the watched rollouts"))?;
    drop(aws);

    let first = &by_latency[0];
    let protond_deploy = median(&first.protond_deploy);
    Ok(DeployFigures {
        instances,
        stacks,
        concurrency: config.concurrency,
        tag_median: median(&latencies),
        tag_max: latencies.iter().max().copied().unwrap_or_default(),
        tag_latencies: latencies,
        protond_process: median(&first.protond_process),
        protond_deploy,
        plain_loop: median(&first.plain_loop),
        ratio: first.ratio(),
        by_latency,
    })
}

/// The deployment figures as a Markdown table.
#[must_use]
pub fn deploy_table(d: &DeployFigures) -> String {
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    let mut out = String::from(
        "| instances | stacks | tag to first deployment call (median / max) | protond deploy (concurrency) | protond `reconcile --once` process | plain sequential SDK loop | protond / plain |\n|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let _ = writeln!(
        out,
        "| {} | {} | {} / {} (of {}) | {} ({}) | {} | {} | {:.2}x |",
        d.instances,
        d.stacks,
        ms(d.tag_median),
        ms(d.tag_max),
        d.tag_latencies.len(),
        ms(d.protond_deploy),
        d.concurrency,
        ms(d.protond_process),
        ms(d.plain_loop),
        d.ratio
    );
    out
}

/// protond against the plain loop for each endpoint latency, as a Markdown table: min /
/// median of the runs, and the ratio of the medians.
#[must_use]
pub fn latency_table(d: &DeployFigures) -> String {
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    let runs = |v: &[Duration]| {
        if v.is_empty() {
            return "not measured".to_string();
        }
        let min = v.iter().min().copied().unwrap_or_default();
        format!("{} / {}", ms(min), ms(median(v)))
    };
    let mut out = String::from(
        "| endpoint latency | stacks | runs | protond deploy (concurrency) | protond `reconcile --once` process | plain sequential SDK loop, same requests | protond / plain | bare loop (no tags) | protond / bare |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in &d.by_latency {
        let bare = if r.bare_loop.is_empty() {
            String::new()
        } else {
            format!(
                "{:.2}x",
                median(&r.protond_deploy).as_secs_f64()
                    / median(&r.bare_loop).as_secs_f64().max(1e-9)
            )
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} ({}) | {} | {} | {:.2}x | {} | {bare} |",
            ms(r.latency),
            d.stacks,
            r.protond_deploy.len(),
            runs(&r.protond_deploy),
            d.concurrency,
            runs(&r.protond_process),
            runs(&r.plain_loop),
            r.ratio(),
            runs(&r.bare_loop),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        let ms = Duration::from_millis;
        assert_eq!(median(&[ms(30), ms(10), ms(20)]), ms(20));
        assert_eq!(median(&[ms(40), ms(10), ms(20), ms(30)]), ms(25));
        assert_eq!(median(&[]), Duration::ZERO);
    }

    #[test]
    fn table_shows_min_and_median_of_the_runs() {
        let ms = Duration::from_millis;
        let f = Figures {
            instances: 20,
            repos: 2,
            generate: ms(1),
            cold: ms(100),
            noop_fetch: ms(10),
            noop: ms(4),
            new_minor: ms(50),
            minor_upgrades: 20,
            rev_parse: ms(8),
            render_per_sec: 1000.0,
            peak_rss_mib: 30.0,
            cold_runs: vec![ms(300), ms(100), ms(200)],
            new_minor_runs: vec![ms(50), ms(70), ms(60)],
            reading: repos::RepoFigures {
                noop_runs: vec![ms(4), ms(6), ms(5)],
                noop_fetch_runs: vec![ms(10), ms(30), ms(20)],
                ..repos::RepoFigures::default()
            },
        };
        let t = table(&[f]);
        assert!(
            t.contains("| 20 | 2 | 100 ms / 200 ms | 10 ms / 20 ms | 4 ms / 5 ms | 50 ms / 60 ms | 8 ms | 0.5x |"),
            "{t}"
        );
    }

    /// A small fleet end to end: every timed cycle runs [`RUNS`] times, the no-op cycles
    /// read the records the store holds (they would plan creates otherwise) and each new
    /// minor reaches every instance.
    #[test]
    fn a_small_fleet_is_measured_with_its_store() {
        let dir = std::env::temp_dir().join(format!("protond-bench-small-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let f = measure(&dir, 20).expect("measure");
        let config = load(&dir.join("proton.toml")).expect("config");
        let state = state::State::open(&config).expect("store");
        let records = state.facts().expect("facts").records.len();
        drop(state);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(records, 24, "20 instances and 4 environments recorded");
        assert_eq!(f.cold_runs.len(), RUNS);
        assert_eq!(f.new_minor_runs.len(), RUNS);
        assert_eq!(f.reading.noop_runs.len(), RUNS);
        assert_eq!(f.reading.noop_fetch_runs.len(), RUNS);
        assert_eq!(f.minor_upgrades, 20);
        assert_eq!(
            f.cold,
            f.cold_runs.iter().min().copied().unwrap_or_default()
        );
    }

    #[test]
    fn the_latency_table_shows_min_and_median_and_the_ratio_of_medians() {
        let ms = Duration::from_millis;
        let d = DeployFigures {
            instances: 100,
            stacks: 104,
            concurrency: 4,
            tag_latencies: vec![ms(200)],
            tag_median: ms(200),
            tag_max: ms(200),
            protond_process: ms(1200),
            protond_deploy: ms(1000),
            plain_loop: ms(800),
            ratio: 1.25,
            by_latency: vec![
                LatencyRuns {
                    latency: Duration::ZERO,
                    protond_deploy: vec![ms(1100), ms(900), ms(1000)],
                    protond_process: vec![ms(1200), ms(1300), ms(1250)],
                    plain_loop: vec![ms(800), ms(850), ms(700)],
                    bare_loop: vec![ms(500), ms(600), ms(400)],
                },
                LatencyRuns {
                    latency: ms(50),
                    protond_deploy: vec![ms(3000), ms(3100), ms(2900)],
                    protond_process: vec![ms(3300), ms(3400), ms(3200)],
                    plain_loop: vec![ms(12000), ms(11000), ms(11500)],
                    bare_loop: vec![],
                },
            ],
        };
        let t = latency_table(&d);
        assert!(t.contains("| 0 ms | 104 | 3 | 900 ms / 1000 ms (4) | 1200 ms / 1250 ms | 700 ms / 800 ms | 1.25x | 400 ms / 500 ms | 2.00x |"), "{t}");
        assert!(t.contains("| 50 ms | 104 | 3 | 2900 ms / 3000 ms (4) | 3200 ms / 3300 ms | 11000 ms / 11500 ms | 0.26x | not measured |  |"), "{t}");
    }

    /// The proxy forwards each request after its delay, and answers what the upstream
    /// answered.
    #[test]
    fn the_latency_proxy_delays_and_forwards() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let upstream = latency::LatencyProxy::start("http://127.0.0.1:9", Duration::ZERO)
            .expect("a proxy to nowhere");
        let proxy =
            latency::LatencyProxy::start(&upstream.url, Duration::from_millis(30)).expect("proxy");
        let t = Instant::now();
        let status = rt.block_on(async {
            reqwest::Client::new()
                .post(format!("{}/x?y=1", proxy.url))
                .body("Action=DescribeStacks")
                .send()
                .await
                .expect("an answer")
                .status()
        });
        // Port 9 refuses: the inner proxy answers 502, passed through the outer one.
        assert_eq!(status, reqwest::StatusCode::BAD_GATEWAY);
        assert!(
            t.elapsed() >= Duration::from_millis(30),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn aws_config_points_the_generated_config_at_moto() {
        let dir = std::env::temp_dir().join(format!("protond-bench-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = generate(&dir, 10).expect("generate");
        let text = std::fs::read_to_string(&config).expect("read");
        let text = aws_config(&text, "http://127.0.0.1:5000", "200ms").expect("rewrite");
        std::fs::write(&config, &text).expect("write");
        let c = load(&config).expect("compiles");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(c.endpoint_url.as_deref(), Some("http://127.0.0.1:5000"));
        assert_eq!(c.poll_interval, Duration::from_hours(1));
        assert!(c.watch && !c.change_sets && c.soak.is_zero() && c.windows.is_empty());
        assert_eq!(c.stack_poll_interval, Duration::from_millis(200));
    }
}
