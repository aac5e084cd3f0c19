//! `protond bench render`: documents per second of the daemon's render on kept sample
//! contexts (`KEEP_CONTEXTS` of `scripts/conformance.sh`, see `scripts/render_bench`), side
//! by side with the engine alone (no guard) and Python Jinja2 with templates compiled once
//! (`scripts/jinja2_render.py --bench`), each run timing all of them back to back so the
//! ratios come from one run. It only reads the kept files and starts the Python harness;
//! it never renders anything it then writes or deploys.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::catalog::{Engine, IacFile, Language};

/// Arguments of `protond bench render`.
#[derive(clap::Args, Debug)]
pub struct RenderArgs {
    /// The kept contexts: one folder per render, holding `bundle` (the bundle's path) and
    /// `contexts/` (the files `protond render --context-json` wrote).
    #[arg(long)]
    contexts: PathBuf,
    /// Runs; the minimum and median of each figure are printed.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Rounds per run: each round renders every kept document once.
    #[arg(long, default_value_t = 300)]
    rounds: usize,
    /// The Python Jinja2 harness.
    #[arg(long, default_value = "scripts/jinja2_render.py")]
    harness: PathBuf,
    /// Print the figures as one JSON object.
    #[arg(long)]
    json: bool,
}

/// One kept render: the file and its context.
struct Job {
    file: IacFile,
    context: Value,
}

/// A kept render's bundle and its contexts folder.
type Pair = (PathBuf, PathBuf);

/// Reads every kept render below `dir`: Jinja `CloudFormation` files (`.yaml`, `.yml`,
/// `.json`) only, the documents the guard checks. Also returns the (bundle, contexts) pairs.
fn load(dir: &Path) -> Result<(Vec<Job>, Vec<Pair>)> {
    let mut jobs = Vec::new();
    let mut pairs = Vec::new();
    let mut keeps: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("bundle").is_file())
        .collect();
    keeps.sort();
    for keep in keeps {
        let bundle = PathBuf::from(std::fs::read_to_string(keep.join("bundle"))?.trim());
        let contexts = keep.join("contexts");
        let mut files: Vec<PathBuf> = walk(&contexts)?;
        files.sort();
        for path in files {
            let job: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
                .with_context(|| format!("{}: not a context file", path.display()))?;
            let file = job["file"].as_str().unwrap_or_default().to_string();
            let cloudformation = [".yaml", ".yml", ".json"].iter().any(|e| file.ends_with(e));
            if job["engine"] != "jinja" || !cloudformation {
                continue;
            }
            let source = std::fs::read_to_string(bundle.join(&file))
                .with_context(|| format!("cannot read {file} in {}", bundle.display()))?;
            jobs.push(Job {
                file: IacFile {
                    path: file,
                    source,
                    engine: Engine::Jinja,
                    language: Language::Cloudformation,
                },
                context: job["context"].clone(),
            });
        }
        pairs.push((bundle, contexts));
    }
    Ok((jobs, pairs))
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(walk(&path)?);
        } else {
            out.push(path);
        }
    }
    Ok(out)
}

/// Documents per second of `rounds` rounds of `one` over `jobs`.
fn time(jobs: &[Job], rounds: usize, one: &dyn Fn(&Job) -> Result<()>) -> Result<f64> {
    let start = Instant::now();
    for _ in 0..rounds {
        for job in jobs {
            one(job)?;
        }
    }
    Ok(per_second(
        jobs.len() * rounds,
        start.elapsed().as_secs_f64(),
    ))
}

#[allow(clippy::cast_precision_loss)]
fn per_second(documents: usize, seconds: f64) -> f64 {
    documents as f64 / seconds.max(1e-9)
}

/// The engine alone: compiled template cache, bounds, printed values marked; no guard.
fn engine_only(job: &Job) -> Result<()> {
    crate::render::render_jinja_unguarded(&job.file, &job.context)?;
    Ok(())
}

/// What the daemon does per document: render, guard, rendered hash.
fn daemon(job: &Job) -> Result<()> {
    let (text, parsed) = crate::render::render_file_parsed(&job.file, &job.context)?;
    let hash = crate::desired::hash_parsed_documents([(
        job.file.path.as_str(),
        text.as_str(),
        parsed.as_ref(),
    )]);
    std::hint::black_box(hash);
    Ok(())
}

/// Python Jinja2's documents per second (the harness times its own rounds).
fn python(harness: &Path, pairs: &[Pair], rounds: usize) -> Result<(f64, usize)> {
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(harness).arg("--bench").arg(rounds.to_string());
    for (bundle, contexts) in pairs {
        cmd.arg(bundle).arg(contexts);
    }
    let out = cmd.output().context("cannot run python3")?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            harness.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{}: unexpected output", harness.display()))?;
    let documents = usize::try_from(v["documents"].as_u64().unwrap_or(0)).unwrap_or(0);
    Ok((
        per_second(documents, v["seconds"].as_f64().unwrap_or(0.0)),
        documents,
    ))
}

fn min_median(mut xs: Vec<f64>) -> (f64, f64) {
    xs.sort_by(f64::total_cmp);
    (
        xs.first().copied().unwrap_or(0.0),
        xs.get(xs.len() / 2).copied().unwrap_or(0.0),
    )
}

/// What `protond bench render` measured: (documents, renders kept) and (min, median) of
/// protond, the engine alone, Python Jinja2 and protond over Python.
type Measured = ((usize, usize), Vec<(f64, f64)>);

/// Measures the kept renders below `contexts` (`runs` runs of `rounds` rounds).
fn measure(contexts: &Path, runs: usize, rounds: usize, harness: &Path) -> Result<Measured> {
    let (jobs, pairs) = load(contexts)?;
    if jobs.is_empty() {
        bail!(
            "{}: no kept Jinja CloudFormation renders; keep some with KEEP_CONTEXTS=DIR scripts/conformance.sh",
            contexts.display()
        );
    }
    // Warm-up (compiles and caches every template, as the daemon's first cycle does), which
    // also checks that every kept render still renders.
    for job in &jobs {
        daemon(job).with_context(|| format!("{} no longer renders", job.file.path))?;
    }
    let mut figures: Vec<Vec<f64>> = vec![Vec::new(); 4];
    for run in 0..runs.max(1) {
        let d = time(&jobs, rounds, &daemon)?;
        let e = time(&jobs, rounds, &engine_only)?;
        let (p, documents) = python(harness, &pairs, rounds)?;
        if documents != jobs.len() * rounds {
            bail!(
                "Python rendered {documents} documents, protond {}: the sets differ",
                jobs.len() * rounds
            );
        }
        eprintln!(
            "bench render: run {}: {d:.0} / {e:.0} / {p:.0} documents/s",
            run + 1
        );
        figures[0].push(d);
        figures[1].push(e);
        figures[2].push(p);
        figures[3].push(d / p.max(1e-9));
    }
    Ok((
        (jobs.len(), pairs.len()),
        figures.into_iter().map(min_median).collect(),
    ))
}

/// The medians of protond's render and Python Jinja2's, for `protond bench`'s targets
/// table (3 runs of 300 rounds, the harness at its default place).
///
/// # Errors
///
/// When the kept renders cannot be read or Python does not render them all.
pub(crate) fn medians(contexts: &Path) -> Result<crate::bench::targets::RenderFigures> {
    let (_, stats) = measure(contexts, 3, 300, Path::new("scripts/jinja2_render.py"))?;
    Ok(crate::bench::targets::RenderFigures {
        protond: stats[0].1,
        python: stats[2].1,
    })
}

/// `protond bench render`.
pub(crate) fn render_cmd(args: &RenderArgs) -> Result<ExitCode> {
    let ((documents, kept), stats) =
        measure(&args.contexts, args.runs, args.rounds, &args.harness)?;
    if args.json {
        let mut obj = serde_json::Map::new();
        obj.insert("documents".into(), documents.into());
        obj.insert("runs".into(), args.runs.into());
        obj.insert("rounds".into(), args.rounds.into());
        for (name, (min, median)) in ["protond", "engine", "python_jinja2", "protond_over_python"]
            .iter()
            .zip(&stats)
        {
            obj.insert(
                (*name).into(),
                serde_json::json!({"min": min, "median": median}),
            );
        }
        println!("{}", Value::Object(obj));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} documents ({} renders kept), {} rounds per run, {} runs (min / median documents/s)",
        documents, kept, args.rounds, args.runs
    );
    let columns = [
        "protond (render, guard, hash)",
        "engine alone (no guard)",
        "Python Jinja2",
    ];
    for (name, (min, median)) in columns.iter().zip(&stats) {
        println!("{name:32} {min:>10.0} / {median:>10.0}");
    }
    let (min, median) = stats[3];
    println!(
        "{:32} {min:>9.2}x / {median:>9.2}x",
        "protond / Python Jinja2"
    );
    Ok(ExitCode::SUCCESS)
}
