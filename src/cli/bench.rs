//! `protond bench`: measures read, render and plan cycles on generated fleets (each size in
//! a child process of its own, so its peak memory is its own) and, unless `--no-aws`, a
//! deployment on a `moto_server`, then prints the figures. The measuring lives in the library's
//! `bench` module; this command only runs it and prints. It must never deploy anywhere but
//! the `moto_server` the library starts on 127.0.0.1.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::bench::{DeployFigures, Figures};

/// What `protond bench` measures besides the fleet sizes, for its targets table: a real
/// daemon on these sizes (`--daemon-instances`) and the render against Python Jinja2 on
/// kept sample contexts (`--render-contexts`).
#[derive(clap::Args, Debug, Default)]
pub struct TargetsArgs {
    /// Also measure a real daemon (memory, tag to first deployment call) on these fleet
    /// sizes, for the targets table (`5000,50000`; each needs `moto_server`).
    #[arg(long, value_delimiter = ',')]
    daemon_instances: Vec<usize>,
    /// Also measure the render against Python Jinja2 on these kept sample contexts, for the
    /// targets table (`scripts/render_bench` keeps them).
    #[arg(long)]
    render_contexts: Option<std::path::PathBuf>,
}

/// `protond bench`: figures for each fleet size in `sizes`, generated below `dir` (a
/// temporary folder, removed afterwards, by default). `deploy`: how the deployment figures
/// are taken, `None` to skip them. Then the issue-20 targets, judged from this run's figures.
pub(super) fn bench_cmd(
    sizes: &[usize],
    dir: Option<&Path>,
    json: bool,
    deploy: Option<crate::bench::DeployPlan>,
    postgres: Option<&str>,
    extra: &TargetsArgs,
) -> Result<ExitCode> {
    if (deploy.is_some() || !extra.daemon_instances.is_empty()) && !crate::bench::moto_available() {
        bail!(
            "the deployment figures need moto_server on the PATH (python3 -m pip install 'moto[server]'); pass --no-aws to skip them"
        );
    }
    let root = match dir {
        Some(d) => d.to_path_buf(),
        None => std::env::temp_dir().join(format!("protond-bench-{}", std::process::id())),
    };
    let rows = measure_sizes(sizes, &root)?;
    let stores = match postgres {
        Some(server) => {
            let mut out = Vec::new();
            for n in sizes {
                eprintln!("bench: the state store for {n} instances, SQLite and PostgreSQL ...");
                out.extend(crate::bench::store::measure(
                    &root.join(format!("store-{n}")),
                    *n,
                    server,
                )?);
            }
            out
        }
        None => Vec::new(),
    };
    let deployed = match deploy {
        Some(plan) => {
            let n = plan.instances;
            eprintln!("bench: deploying {n} instances on moto_server ...");
            let d = crate::bench::measure_deployment(&root.join(format!("deploy-{n}")), plan);
            if d.is_err() && dir.is_none() {
                let _ = std::fs::remove_dir_all(&root);
            }
            Some(d?)
        }
        None => None,
    };
    let daemons = daemon_figures(&extra.daemon_instances, &root, dir.is_none());
    if dir.is_none() {
        let _ = std::fs::remove_dir_all(&root);
    }
    let daemons = daemons?;
    let render = match &extra.render_contexts {
        Some(contexts) => {
            eprintln!("bench: render against Python Jinja2 ...");
            Some(render::medians(contexts)?)
        }
        None => None,
    };
    print_figures(&rows, deployed.as_ref(), json)?;
    print_store_figures(&stores, json);
    if !daemons.is_empty() && !json {
        print!(
            "\nA real daemon on fleets with their records seeded:\n\n{}",
            crate::bench::daemon::table(&daemons)
        );
    }
    let targets = crate::bench::targets::targets(crate::bench::targets::Run {
        fleets: &rows,
        deployed: deployed.as_ref(),
        daemons: &daemons,
        render,
    });
    if json {
        for d in &daemons {
            println!("{}", serde_json::json!({ "daemon": d }));
        }
        println!("{}", serde_json::json!({ "targets": targets }));
    } else {
        print!(
            "\nIssue 20's targets, from this run's figures:\n\n{}",
            crate::bench::targets::table(&targets)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A real daemon's figures on each of `sizes`, below `root/daemon-<size>` (removed after
/// each when `remove`).
fn daemon_figures(
    sizes: &[usize],
    root: &Path,
    remove: bool,
) -> Result<Vec<crate::bench::daemon::DaemonFigures>> {
    let mut rows = Vec::new();
    for n in sizes {
        eprintln!("bench: a daemon on {n} instances with their records seeded ...");
        let dir = root.join(format!("daemon-{n}"));
        let figures = crate::bench::daemon::measure(&dir, *n);
        if remove {
            let _ = std::fs::remove_dir_all(&dir);
        }
        rows.push(figures?);
    }
    Ok(rows)
}

/// The figures of each size, below `root/<size>`: measured here for a single size, else
/// each in a `protond bench --json --no-aws` child process.
fn measure_sizes(sizes: &[usize], root: &Path) -> Result<Vec<Figures>> {
    if let [n] = sizes {
        return Ok(vec![crate::bench::measure(&root.join(n.to_string()), *n)?]);
    }
    // One process per size: peak RSS is then that size's own.
    let exe = std::env::current_exe().context("cannot find the protond binary")?;
    sizes
        .iter()
        .map(|n| {
            eprintln!("bench: {n} instances ...");
            measure_in_child(&exe, *n, root)
        })
        .collect()
}

/// Runs `exe bench` for `n` instances and reads the figures it prints.
fn measure_in_child(exe: &Path, n: usize, root: &Path) -> Result<Figures> {
    let out = std::process::Command::new(exe)
        .args([
            "bench",
            "--json",
            "--no-aws",
            "--instances",
            &n.to_string(),
            "--dir",
        ])
        .arg(root)
        // The store figures run once, in the parent.
        .env_remove("PROTOND_BENCH_POSTGRES_URL")
        .output()
        .context("cannot run protond bench")?;
    if !out.status.success() {
        bail!(
            "bench for {n} instances failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // Its first line is the size's figures (its targets follow).
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().next().unwrap_or_default())
        .context("bench child printed no figures")
}

/// Prints the figures as tables, or as one JSON object per size (and one
/// `{"deployment": ...}`).
fn print_figures(rows: &[Figures], deployed: Option<&DeployFigures>, json: bool) -> Result<()> {
    if json {
        for f in rows {
            println!("{}", serde_json::to_string(f)?);
        }
        if let Some(d) = deployed {
            println!("{}", serde_json::json!({ "deployment": d }));
        }
    } else {
        print!("{}", crate::bench::table(rows));
        let reading: Vec<_> = rows
            .iter()
            .map(|f| (f.instances, f.repos, &f.reading))
            .collect();
        print!(
            "\nReading repos, each no-op next to its floor:\n\n{}",
            crate::bench::repos::table(&reading)
        );
        if let Some(d) = deployed {
            print!(
                "\nDeployment, on moto_server:\n\n{}",
                crate::bench::deploy_table(d)
            );
            print!(
                "\nprotond against the plain loop, by endpoint latency (min / median):\n\n{}",
                crate::bench::latency_table(d)
            );
        }
    }
    Ok(())
}

/// Prints the state store's figures (`--postgres`), if any: a table, or one
/// `{"store": ...}` line each.
fn print_store_figures(rows: &[crate::bench::store::StoreFigures], json: bool) {
    if rows.is_empty() {
        return;
    }
    if json {
        for f in rows {
            println!("{}", serde_json::json!({ "store": f }));
        }
    } else {
        print!(
            "\nThe state store's share of a cycle, SQLite next to PostgreSQL:\n\n{}",
            crate::bench::store::table(rows)
        );
    }
}

mod render;

pub(super) use render::render_cmd;

/// The modes of `protond bench` other than the fleet figures.
#[derive(clap::Subcommand, Debug)]
pub enum BenchMode {
    /// Documents per second of the daemon's render (guard and rendered hash included) on
    /// kept AWS sample contexts, against the engine alone and Python Jinja2 (see
    /// `scripts/render_bench`).
    Render(render::RenderArgs),
    /// Sharded scale on PostgreSQL: a fleet of `--shards × --instances`, a single
    /// reconciler on all of it, then every shard's leader evaluating its share at once
    /// (no-op and new-minor cycles, min / median of `--runs`).
    Shards(ShardsArgs),
    /// A real daemon's memory (RSS at rest, peak in a tag cycle, `reconcile --once` peak) and
    /// tag to first deployment call on generated fleets whose records are seeded in the store,
    /// against a `moto_server` started on 127.0.0.1 (3 runs each).
    Daemon(DaemonArgs),
}

/// `protond bench shards`.
#[derive(clap::Args, Debug)]
pub struct ShardsArgs {
    /// Shards (leaders at once).
    #[arg(long, default_value_t = 3)]
    shards: u32,
    /// Service instances per shard.
    #[arg(long, default_value_t = 5000)]
    instances: usize,
    /// Runs of each cycle.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Where the generated repos go (a fresh temporary folder, removed, by default).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// The PostgreSQL server (a user who may create databases).
    #[arg(long, env = "PROTOND_BENCH_POSTGRES_URL")]
    postgres: String,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

/// `protond bench daemon`'s arguments.
#[derive(clap::Args, Debug)]
pub struct DaemonArgs {
    /// Fleet sizes, in service instances.
    #[arg(long, value_delimiter = ',', default_value = "5000")]
    instances: Vec<usize>,
    /// Where the generated repos go (a fresh temporary folder by default, removed afterwards).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Print one JSON object per size instead of a table.
    #[arg(long)]
    json: bool,
}

/// `protond bench shards`: see [`ShardsArgs`].
///
/// # Errors
///
/// When measuring fails (see [`crate::bench::store::measure_sharded`]).
pub(super) fn shards_cmd(args: &ShardsArgs) -> Result<ExitCode> {
    let root = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("protond-bench-shards-{}", std::process::id()))
    });
    let rows = crate::bench::store::measure_sharded(
        &root,
        args.instances,
        args.shards,
        &args.postgres,
        args.runs.max(1),
    );
    if args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&root);
    }
    let rows = rows?;
    if args.json {
        for f in &rows {
            println!("{}", serde_json::json!({ "shards": f }));
        }
    } else {
        print!("{}", crate::bench::store::shard_table(&rows));
    }
    Ok(ExitCode::SUCCESS)
}

/// `protond bench daemon`: [`crate::bench::daemon::measure`] for each size.
pub(super) fn daemon_cmd(args: &DaemonArgs) -> Result<ExitCode> {
    if !crate::bench::moto_available() {
        bail!(
            "the daemon figures need moto_server on the PATH (python3 -m pip install 'moto[server]')"
        );
    }
    let root = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("protond-bench-daemon-{}", std::process::id())),
    };
    let mut rows = Vec::new();
    for n in &args.instances {
        eprintln!("bench: a daemon on {n} instances with their records seeded ...");
        let figures = crate::bench::daemon::measure(&root.join(format!("daemon-{n}")), *n);
        if args.dir.is_none() {
            let _ = std::fs::remove_dir_all(root.join(format!("daemon-{n}")));
        }
        rows.push(figures?);
    }
    if args.json {
        for f in &rows {
            println!("{}", serde_json::json!({ "daemon": f }));
        }
    } else {
        print!("{}", crate::bench::daemon::table(&rows));
    }
    Ok(ExitCode::SUCCESS)
}
