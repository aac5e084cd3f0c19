//! `protond bench`: the reconcile cycle at fleet size, measured on generated real git repos.
//!
//! For each fleet size N (service instances), a generator writes a template repo (one
//! environment and one service template, tagged `v1.0`), a platform repo with four
//! environments, and N/10 service repos of five services with two instances each, all as
//! real git repos. Then it measures, in this process:
//!
//! * **cold**: first read (clone of every mirror), render and plan, with the environments
//!   recorded as deployed so that every instance renders;
//! * **no-op**: the same again with nothing changed (fetch included, and without fetch);
//! * **new minor**: after tagging `bench-svc/v1.1`, the cycle that sees it;
//! * **baseline**: `git rev-parse HEAD^{tree}` in every repo, one process each;
//! * **peak RSS** (`VmHWM`) and **render throughput** (instances rendered per second).
//!
//! Cycles here are read + render + plan, the part of a reconcile that grows with the fleet;
//! no stack is deployed.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::config::{Config, RawConfig};
use crate::desired;
use crate::plan::{self, ActionKind, UpdateReason};
use crate::state::ResourceRecord;

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
                status: "deployed".into(),
                spec_commit: r.spec_commit.clone(),
                updated_at: String::new(),
            }),
            _ => None,
        })
        .collect()
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// One cycle's read + render + plan, as the daemon runs it (reusing what the previous cycle
/// read and rendered when its inputs are unchanged); returns (plan, snapshot, set, render
/// time).
fn cycle(
    config: &Config,
    previous: Option<&desired::Snapshot>,
    fetch: bool,
    deployed: &[ResourceRecord],
    cache: &mut desired::ComputeCache,
) -> (plan::Plan, desired::Snapshot, desired::DesiredSet, Duration) {
    let snapshot = desired::load_cached(config, previous, fetch);
    let t = Instant::now();
    let set = cache.compute(
        &snapshot,
        deployed,
        &config.account_id,
        &std::collections::BTreeMap::new(),
    );
    let render = t.elapsed();
    let observed: Vec<_> = deployed.iter().map(ResourceRecord::to_deployed).collect();
    let plan = plan::diff(
        &set.desired(),
        &observed,
        &set.unknown_repos,
        &snapshot.catalog.latest_major(),
    );
    (plan, snapshot, set, render)
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

    // Environments deployed, so that instances render.
    let (_, snapshot, set, _) = cycle(
        &config,
        None,
        true,
        &[],
        &mut desired::ComputeCache::default(),
    );
    let envs: Vec<ResourceRecord> = as_deployed(&set)
        .into_iter()
        .filter(|r| r.kind == plan::ResourceKind::Environment)
        .collect();
    drop((snapshot, set));
    // The mirrors exist now; a truly cold read clones them again.
    std::fs::remove_dir_all(config.data_dir.join("git")).ok();

    let mut cache = desired::ComputeCache::default();
    let t = Instant::now();
    let (plan, snapshot, set, render) = cycle(&config, None, true, &envs, &mut cache);
    let cold = t.elapsed();
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
    let render_per_sec = instances as f64 / render.as_secs_f64().max(1e-9);
    let deployed: Vec<ResourceRecord> = as_deployed(&set);
    drop((plan, set));
    // Deploying changes the records (and so the rendering inputs): the daemon's first cycle
    // after the deployments renders once more; the no-op cycles are the ones after it.
    let (_, snapshot, _, _) = cycle(&config, Some(&snapshot), false, &deployed, &mut cache);

    let t = Instant::now();
    let (plan, snapshot, _, _) = cycle(&config, Some(&snapshot), true, &deployed, &mut cache);
    let noop_fetch = t.elapsed();
    if plan.changes().count() != 0 {
        bail!("the no-op cycle planned changes");
    }
    let t = Instant::now();
    let (plan, snapshot, _, _) = cycle(&config, Some(&snapshot), false, &deployed, &mut cache);
    let noop = t.elapsed();
    if plan.changes().count() != 0 {
        bail!("the no-op cycle (no fetch) planned changes");
    }

    let templates = dir.join("templates");
    git(
        &templates,
        &["tag", "-a", "bench-svc/v1.1", "-m", "bench-svc 1.1"],
    )?;
    let t = Instant::now();
    let (plan, _, _, _) = cycle(&config, Some(&snapshot), true, &deployed, &mut cache);
    let new_minor = t.elapsed();
    let minor_upgrades = plan
        .changes()
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
        bail!("the new minor reached {minor_upgrades} of {instances} instances");
    }

    let mut dirs = vec![templates, dir.join("platform")];
    dirs.extend((0..repos).map(|r| dir.join(format!("svc-{r:04}"))));
    let t = Instant::now();
    for d in &dirs {
        git(d, &["rev-parse", "-q", "HEAD^{tree}"])?;
    }
    let rev_parse = t.elapsed();

    Ok(Figures {
        instances,
        repos,
        generate: generate_time,
        cold,
        noop_fetch,
        noop,
        new_minor,
        minor_upgrades,
        rev_parse,
        render_per_sec,
        peak_rss_mib: peak_rss_mib(),
    })
}

/// The figures as a Markdown table.
#[must_use]
pub fn table(rows: &[Figures]) -> String {
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    let mut out = String::from(
        "| instances | repos | cold cycle | no-op (fetch) | no-op (no fetch) | new minor | `git rev-parse` all repos | no-op / rev-parse | render | peak RSS |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for f in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {:.1}x | {:.0} inst/s | {:.0} MiB |",
            f.instances,
            f.repos,
            ms(f.cold),
            ms(f.noop_fetch),
            ms(f.noop),
            ms(f.new_minor),
            ms(f.rev_parse),
            f.noop.as_secs_f64() / f.rev_parse.as_secs_f64().max(1e-9),
            f.render_per_sec,
            f.peak_rss_mib
        );
    }
    out
}
