//! `protond import`: takes over the stacks AWS Proton deployed (a dry run unless `--apply`),
//! and `--write-specs`, which drafts spec files from Proton's API export. The finding,
//! comparing and recording live in `crate::import`; this file reads the arguments and the
//! files they name, takes the writer lock for `--apply` (as `reconcile` does), and prints.
//! It must never decide what to take over.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use super::{OutputFormat, load_config, runtime};
use crate::config::Config;
use crate::import::specs::Drafts;
use crate::import::{self, Finding, ImportState, Options, Report, Verdict, matching};
use crate::provision::cloudformation::{CloudFormation, Settings};

/// Arguments of `protond import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Config file.
    #[arg(long, default_value = "proton.toml")]
    pub config: PathBuf,
    /// Take the identical stacks (and the accepted differing ones) over: record them and add
    /// protond's ownership tags. Without it, a dry run that changes nothing.
    #[arg(long)]
    pub apply: bool,
    /// Take this resource's stack over although it differs from what protond renders; the
    /// next cycle then updates it in place (repeatable).
    #[arg(long = "accept-diff", value_name = "RESOURCE")]
    pub accept_diff: Vec<String>,
    /// File mapping resource ids to stack names or ARNs (`<id> <stack>` lines, or a YAML or
    /// JSON mapping), for stacks Proton's tags do not identify.
    #[arg(long, value_name = "FILE")]
    pub map: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub output: OutputFormat,
    /// Use the already fetched mirrors; do not fetch.
    #[arg(long)]
    pub no_fetch: bool,
    /// Draft spec files for what Proton ran into this folder, then exit (no stack is taken
    /// over).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["apply", "accept_diff", "map"])]
    pub write_specs: Option<PathBuf>,
    /// JSON export of Proton's API (a file, or a folder of `*.json` files) that
    /// `--write-specs` drafts from; without it, the drafts come from the stacks' tags and
    /// hold placeholders to fill.
    #[arg(long, value_name = "FILE_OR_DIR", requires = "write_specs")]
    pub proton_export: Option<PathBuf>,
}

/// `protond import`: see [`ImportArgs`]. Exits 0 when every resource without a record was
/// (or, in a dry run, would be) taken over (self-managed ones aside), 1 otherwise.
pub(super) fn import_cmd(args: &ImportArgs) -> Result<ExitCode> {
    let config = load_config(&args.config)?;
    if let Some(dir) = &args.write_specs {
        return write_specs_cmd(&config, dir, args.proton_export.as_deref(), !args.no_fetch);
    }
    let opts = options(args)?;
    runtime()?.block_on(async move {
        // The writer lock first, as `reconcile` takes it: no daemon deploys meanwhile.
        // On PostgreSQL, every lease instead (no replica reconciles meanwhile).
        let pg = crate::state::Backend::of(&config.state) == Some(crate::state::Backend::Postgres);
        let _lock = if opts.apply && !pg {
            Some(crate::state::WriterLock::acquire(&config.state)?)
        } else {
            None
        };
        let store = crate::state::Store::open_config(&config).await?;
        let leases = if opts.apply && pg {
            // Every shard's lease, as many as the replicas recorded (a config with another
            // count would leave some shard's leader running).
            store.check_shards(config.ha.shards.max(1)).await?;
            let settings = crate::ha::Settings::from_config(&config);
            Some(crate::ha::Elector::exclusive(store.clone(), settings).await?)
        } else {
            None
        };
        let installation = store.installation(config.installation.as_deref()).await?;
        let cfn = CloudFormation::new(Settings::from_config(&config)).await;
        let snapshot = snapshot(&config, &store, !args.no_fetch).await?;
        let report = import::run(&config, &store, &cfn, &snapshot, &installation, &opts).await;
        if let Some(leases) = leases {
            leases.release().await;
        }
        let report = report?;
        let mut out = std::io::stdout().lock();
        match args.output {
            OutputFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?,
            OutputFormat::Table => write!(out, "{}", table(&report))?,
        }
        for p in &report.problems {
            eprintln!("problem: {p}");
        }
        // Self-managed resources without an infrastructure repo to read are not taken over:
        // their repo goes on.
        let complete = report.problems.is_empty()
            && report
                .findings
                .iter()
                .filter(|f| f.verdict != Verdict::SelfManaged)
                .all(|f| {
                    matches!(
                        f.import,
                        ImportState::WouldImport | ImportState::Imported { .. }
                    )
                });
        Ok(if complete {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
}

/// The options the arguments ask for: the mapping file read and checked, the accepted ids
/// checked.
fn options(args: &ImportArgs) -> Result<Options> {
    let mut problems = Vec::new();
    for id in &args.accept_diff {
        if let Err(e) = crate::model::ResourceId::parse(id) {
            problems.push(format!("--accept-diff: {e}"));
        }
    }
    let map = match &args.map {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the mapping file {}", path.display()))?;
            match matching::parse_map(&text, &path.display().to_string()) {
                Ok(m) => m,
                Err(errors) => {
                    problems.extend(errors.iter().map(ToString::to_string));
                    BTreeMap::default()
                }
            }
        }
        None => BTreeMap::default(),
    };
    if !problems.is_empty() {
        bail!("invalid arguments:\n  {}", problems.join("\n  "));
    }
    Ok(Options {
        apply: args.apply,
        accept_diff: args.accept_diff.iter().cloned().collect(),
        map,
        no_fetch: args.no_fetch,
    })
}

/// The repos read as the daemon reads them (fetched first unless `fetch` is false).
async fn snapshot(
    config: &Config,
    store: &crate::state::Store,
    fetch: bool,
) -> Result<crate::desired::Snapshot> {
    let cfg = config.clone();
    let mut snapshot = tokio::task::spawn_blocking(move || crate::desired::load(&cfg, None, fetch))
        .await
        .context("reading the repos panicked")?;
    snapshot.add_forgotten(&store.forgotten_repos().await?);
    Ok(snapshot)
}

/// The report as a table: one line per resource, its differences, candidates and reason
/// below it, and a closing summary.
fn table(report: &Report) -> String {
    let mut rows = vec![vec![
        "RESOURCE".to_string(),
        "FOUND".to_string(),
        "STACK".to_string(),
        "IMPORT".to_string(),
    ]];
    for f in &report.findings {
        rows.push(vec![
            f.resource.clone(),
            verdict_cell(f),
            f.stack.clone().unwrap_or_else(|| "-".into()),
            import_cell(&f.import),
        ]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let line = format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
        out.push_str(line.trim_end());
        out.push('\n');
        if let Some(f) = i.checked_sub(1).and_then(|i| report.findings.get(i)) {
            out.push_str(&details(f));
        }
    }
    out.push_str(&summary(report));
    out
}

fn verdict_cell(f: &Finding) -> String {
    match (f.verdict, f.live_version) {
        (Verdict::Identical, Some(v)) if v != f.version => format!("identical at {v}"),
        (v, _) => v.label().to_string(),
    }
}

fn import_cell(i: &ImportState) -> String {
    match i {
        ImportState::No => "no".into(),
        ImportState::WouldImport => "would import".into(),
        ImportState::Imported { deployment } => format!("imported (deployment {deployment})"),
        ImportState::Failed { .. } => "FAILED".into(),
    }
}

/// The lines under a resource: differences, candidates, why, and a failure.
fn details(f: &Finding) -> String {
    let mut out = String::new();
    for d in &f.differences {
        out.push_str(&format!("    {d}\n"));
    }
    for c in &f.candidates {
        out.push_str(&format!("    candidate: {c}\n"));
    }
    if let Some(r) = &f.reason {
        out.push_str(&format!("    {r}\n"));
    }
    if let ImportState::Failed { error } = &f.import {
        out.push_str(&format!("    failed: {error}\n"));
    }
    out
}

fn summary(report: &Report) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &report.findings {
        *counts.entry(f.verdict.label()).or_default() += 1;
    }
    let found: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    let count =
        |want: fn(&ImportState) -> bool| report.findings.iter().filter(|f| want(&f.import)).count();
    let would = count(|i| matches!(i, ImportState::WouldImport));
    let done = count(|i| matches!(i, ImportState::Imported { .. }));
    let failed = count(|i| matches!(i, ImportState::Failed { .. }));
    let mut out = format!(
        "\n{} resource(s) without a record: {}; {} already recorded, left alone.\n",
        report.findings.len(),
        if found.is_empty() {
            "none".into()
        } else {
            found.join(", ")
        },
        report.recorded
    );
    if report.applied {
        out.push_str(&format!(
            "Took over {done} stack(s) (history: one `import` row each){}.\n",
            if failed > 0 {
                format!("; {failed} failed")
            } else {
                String::new()
            }
        ));
    } else {
        out.push_str(&format!(
            "Dry run: nothing was changed. `protond import --apply` would take over {would} stack(s).\n"
        ));
    }
    out
}

/// `protond import --write-specs DIR`: drafts spec files from the export (or, without one,
/// from the Proton stacks found) and writes them below `dir`, refusing to overwrite.
fn write_specs_cmd(
    config: &Config,
    dir: &Path,
    export: Option<&Path>,
    fetch: bool,
) -> Result<ExitCode> {
    let drafts = match export {
        Some(path) => drafts_from_export(path)?,
        None => runtime()?.block_on(drafts_from_stacks(config, fetch))?,
    };
    let files = drafts.files(export.is_some());
    if files.is_empty() {
        bail!(
            "nothing to draft: the export names no environment or service, and no Proton stack was found"
        );
    }
    let existing: Vec<String> = files
        .iter()
        .map(|(p, _)| dir.join(p))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if !existing.is_empty() {
        bail!(
            "not overwriting existing files (move them away or choose another folder): {}",
            existing.join(", ")
        );
    }
    let mut placeholders = 0;
    for (rel, text) in &files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        let fill = text.matches(crate::spec::PLACEHOLDER).count();
        placeholders += fill;
        let note = if fill > 0 {
            format!(" ({fill} placeholder(s) to fill)")
        } else {
            String::new()
        };
        println!("wrote {}{note}", path.display());
    }
    println!(
        "\n{} spec file(s) drafted. Review them{}, copy them into your spec repos' spec folders (environments into a platform repo), commit, then run `protond import` to compare them with the live stacks.",
        files.len(),
        if placeholders > 0 {
            ", replace every FILL-ME(protond) (protond validate refuses them until then)"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// The drafts of an export: a JSON file (one output, or an array of them), or a folder of
/// `*.json` files. Every document that is not a Proton output is reported.
fn drafts_from_export(path: &Path) -> Result<Drafts> {
    let mut files: Vec<PathBuf> = if path.is_dir() {
        std::fs::read_dir(path)
            .with_context(|| format!("cannot read the export folder {}", path.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect()
    } else {
        vec![path.to_path_buf()]
    };
    files.sort();
    let mut drafts = Drafts::default();
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the export file {}", file.display()))?;
        let doc: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", file.display()))?;
        let items: Vec<(String, &serde_json::Value)> = match &doc {
            serde_json::Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, d)| (format!("{}[{i}]", file.display()), d))
                .collect(),
            d => vec![(file.display().to_string(), d)],
        };
        for (origin, d) in items {
            if let Err(e) = drafts.add_export(d, &origin) {
                problems.push(e.to_string());
            }
        }
    }
    if !problems.is_empty() {
        bail!(
            "the export has documents protond cannot use:\n  {}",
            problems.join("\n  ")
        );
    }
    Ok(drafts)
}

/// Drafts from the tags of the Proton stacks the default credentials, and the roles the
/// environment specs name, see in the configured region.
async fn drafts_from_stacks(config: &Config, fetch: bool) -> Result<Drafts> {
    let cfn = CloudFormation::new(Settings::from_config(config)).await;
    let cfg = config.clone();
    let snapshot = tokio::task::spawn_blocking(move || crate::desired::load(&cfg, None, fetch))
        .await
        .context("reading the repos panicked")?;
    let roles: BTreeSet<Option<String>> = std::iter::once(None)
        .chain(
            crate::evaluate::environment_field(&snapshot, |e| e.role_arn.as_ref())
                .into_values()
                .map(Some),
        )
        .collect();
    let mut drafts = Drafts::default();
    for role in roles {
        let stacks = cfn
            .list_stacks(role.as_deref())
            .await
            .with_context(|| format!("listing the stacks in {}", config.region))?;
        for s in stacks {
            if let Some(target) = matching::proton_target(&s.info.name, &s.info.tags) {
                drafts.add_stack(&target, &s.info.tags);
            }
        }
    }
    Ok(drafts)
}
