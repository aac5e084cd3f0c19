//! Reading the configured repos into a [`Snapshot`]. Blocking git work: run it off the async
//! runtime. Never decides ownership and never hides a failure: a repo that cannot be read is
//! recorded as such (a template repo in `template_repo_errors`, a spec repo as `unknown`),
//! which is what keeps its resources from being deleted; a repo read from its last fetched
//! state because fetching it failed is listed in `stale_repos`.
//!
//! # Fairness
//!
//! A read runs in two rounds. First every mirror that needs it is fetched, once (what every
//! entry of its URL reads: [`Config::fetch_options`]), within `[git] fetch_timeout`, on at
//! most `[git] fetch_concurrency` threads at once (a local repo whose references match its
//! mirror's is compared in process and not fetched); then every repo is read, within
//! `[git] read_timeout`, on at most [`PARALLEL`] threads (mirrors are kept open between
//! cycles, see [`crate::source`]). A job over its budget is left behind: a fetch is told to stop at its
//! next read (and the next fetch of that mirror is refused until it has), and its repo counts
//! as not fetched (read as last fetched) or not read (unknown). Every other repo proceeds.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use super::{Fetch, Snapshot, SpecEntry, SpecRepoState};
use crate::catalog::releases::{self, Catalog, ReleaseRefs, TagPattern, TagPatternError};
use crate::catalog::{ComponentBundle, Limits};
use crate::config::{Config, SpecRepo, TemplateRepo};
use crate::render;
use crate::source::{self, EntryKind, Mirror, SourceError, Tag};
use crate::spec::{self, SpecFile};

/// Most repos fetched or read at once.
pub const PARALLEL: usize = 4;

/// Why a repo could not be read this cycle.
#[derive(Debug, thiserror::Error)]
enum RepoError {
    /// The configured tag pattern does not compile.
    #[error(transparent)]
    TagPattern(TagPatternError),
    /// Fetching failed and there was no mirror to fall back on (the fetch's error chain).
    #[error("{0}")]
    Unreachable(String),
    /// The mirror could not be opened (without fetching).
    #[error(transparent)]
    Open(SourceError),
    /// The mirror's tags, branch or tree could not be read.
    #[error(transparent)]
    Read(SourceError),
    /// The spec folder has no spec files, and the repo does not allow that.
    #[error(
        "the spec folder {folder}/ on {branch} is empty or missing; its resources are kept (set allow_empty = true to let an empty folder delete them)"
    )]
    EmptyFolder {
        /// The configured folder.
        folder: String,
        /// The configured branch.
        branch: String,
    },
    /// Reading the repo took longer than `[git] read_timeout`.
    #[error(
        "reading the repo took longer than [git] read_timeout ({}s) and was abandoned this cycle; its resources are kept as they are (raise read_timeout if the repo is this large)",
        .0.as_secs()
    )]
    ReadTimeout(Duration),
    /// Reading the repo panicked.
    #[error("reading the repo failed unexpectedly: {0}")]
    Panicked(String),
}

impl RepoError {
    /// The reason shown to users.
    fn reason(&self) -> String {
        self.to_string()
    }
}

/// A repo's mirror, and why it is the last fetched state instead of a fresh one.
struct Opened {
    mirror: Mirror,
    stale: Option<String>,
}

/// How a mirror stands after the fetch round.
#[derive(Debug, Clone)]
enum Fetched {
    /// Fetched now.
    Fresh,
    /// The fetch failed (its error chain), or was over its budget.
    Failed(String),
}

/// Reads every configured repo. Blocking. `previous` lets unchanged tags reuse their
/// validated bundles. `fetch` false only opens existing mirrors (no network).
#[must_use]
pub fn load(config: &Config, previous: Option<&Catalog>, fetch: bool) -> Snapshot {
    let previous = previous.map(|catalog| {
        Arc::new(Snapshot {
            catalog: catalog.clone(),
            ..Snapshot::default()
        })
    });
    load_shared(Arc::new(config.clone()), previous, &Fetch::from(fetch))
}

/// Like [`load`], but spec repos whose branch head is the commit `previous` read are not read
/// again: their parsed files are reused (a commit's content never changes).
#[must_use]
pub fn load_cached(config: &Config, previous: Option<&Snapshot>, fetch: bool) -> Snapshot {
    load_cached_with(config, previous, &Fetch::from(fetch))
}

/// Like [`load_cached`], fetching only what `fetch` names first.
#[must_use]
pub fn load_cached_with(config: &Config, previous: Option<&Snapshot>, fetch: &Fetch) -> Snapshot {
    load_shared(
        Arc::new(config.clone()),
        previous.cloned().map(Arc::new),
        fetch,
    )
}

/// [`load_cached_with`] on shared values (what the daemon holds): nothing is copied.
#[must_use]
pub fn load_shared(
    config: Arc<Config>,
    previous: Option<Arc<Snapshot>>,
    fetch: &Fetch,
) -> Snapshot {
    let cache = config.data_dir.join("git");
    Loader {
        config,
        fetch: fetch.clone(),
        cache,
        previous,
    }
    .load()
}

/// One read of the configured repos.
struct Loader {
    config: Arc<Config>,
    fetch: Fetch,
    /// Where mirrors live.
    cache: PathBuf,
    /// The last read: unchanged releases and spec commits are reused, and a repo not fetched
    /// now stays as stale as it was.
    previous: Option<Arc<Snapshot>>,
}

/// What one read job found.
enum RepoRead {
    /// A template repo's releases, and why its mirror is stale.
    Template(Result<Catalog, RepoError>, Option<String>),
    /// A spec repo, and why its mirror is stale.
    Spec(SpecRepoState, Option<String>),
}

impl Loader {
    fn load(&self) -> Snapshot {
        let fetched = self.fetch_round();
        let index = Index::of(self.previous.as_deref());
        let mut snapshot = Snapshot::default();
        let mut jobs: Vec<Job<RepoRead>> = Vec::new();
        let mut order = Vec::new();
        for repo in &self.config.template_repos {
            let opened = self.opener(&repo.name, &repo.url, &fetched, &index);
            let (repo, previous) = (repo.clone(), self.previous.clone());
            order.push((repo.name.clone(), None));
            jobs.push(Box::new(move |_| {
                let mut stale = None;
                let read = opened().and_then(|o| {
                    stale.clone_from(&o.stale);
                    template_repo(&repo, &o.mirror, previous.as_deref())
                });
                RepoRead::Template(read, stale)
            }));
        }
        for repo in &self.config.spec_repos {
            // A retired repo is never read: it need not exist any more.
            if repo.retired {
                snapshot
                    .retired_repos
                    .insert(repo.name.clone(), super::RETIRED_IN_CONFIG.to_string());
                continue;
            }
            let opened = self.opener(&repo.name, &repo.url, &fetched, &index);
            let previous = index
                .specs
                .get(repo.name.as_str())
                .and_then(|i| Some((self.previous.clone()?, *i)));
            let spec = repo.clone();
            order.push((repo.name.clone(), Some(repo.clone())));
            jobs.push(Box::new(move |_| {
                let previous = previous.as_ref().map(|(p, i)| &p.spec_repos[*i]);
                let (state, last_fetched) = spec_repo(&spec, opened(), previous);
                RepoRead::Spec(state, last_fetched)
            }));
        }
        let read_timeout = self.config.git.read_timeout;
        for ((name, spec), outcome) in order.into_iter().zip(run_bounded(jobs, read_timeout)) {
            let read = match outcome {
                Outcome::Done(read) => read,
                Outcome::TimedOut => failed(spec, RepoError::ReadTimeout(read_timeout)),
                Outcome::Panicked(m) => failed(spec, RepoError::Panicked(m)),
            };
            match read {
                RepoRead::Template(Ok(catalog), stale) => {
                    snapshot.catalog.merge(catalog);
                    snapshot.stale_repos.extend(stale.map(|r| (name, r)));
                }
                RepoRead::Template(Err(e), _) => {
                    snapshot.template_repo_errors.push((name, e.reason()));
                }
                RepoRead::Spec(state, last_fetched) => {
                    if state.unknown.is_none() {
                        snapshot.stale_repos.extend(last_fetched.map(|r| (name, r)));
                    }
                    snapshot.spec_repos.push(state);
                }
            }
        }
        snapshot
    }

    /// Round one: fetches each mirror that a wanted repo reads (and each never fetched, when
    /// fetching at all), once, within the fetch budget.
    fn fetch_round(&self) -> BTreeMap<String, Fetched> {
        let entries = self
            .config
            .template_repos
            .iter()
            .map(|r| (&r.name, &r.url))
            .chain(
                self.config
                    .spec_repos
                    .iter()
                    .filter(|r| !r.retired)
                    .map(|r| (&r.name, &r.url)),
            );
        let mut mirrors: BTreeMap<String, (String, bool)> = BTreeMap::new();
        for (name, url) in entries {
            let folder = Mirror::key_of(url);
            let wanted = self.fetch.wants(name)
                || (self.fetch != Fetch::None && !self.cache.join(&folder).exists());
            let entry = mirrors
                .entry(folder)
                .or_insert_with(|| (url.clone(), false));
            entry.1 |= wanted;
        }
        let mut folders = Vec::new();
        let mut jobs: Vec<Job<Result<(), String>>> = Vec::new();
        let mut options = self.config.fetch_options_by_mirror();
        for (folder, (url, wanted)) in mirrors {
            if !wanted {
                continue;
            }
            let cache = self.cache.clone();
            let options = options
                .remove(&folder)
                .unwrap_or_else(|| self.config.fetch_options(&url));
            folders.push(folder);
            jobs.push(Box::new(move |stop| {
                let mut options = options;
                options.interrupt = stop;
                Mirror::sync_with(&url, &cache, &options)
                    .map(drop)
                    .map_err(|e| crate::error_chain(&e))
            }));
        }
        let budget = self.config.git.fetch_timeout;
        folders
            .into_iter()
            .zip(run_bounded_on(jobs, budget, self.config.git.fetch_concurrency))
            .map(|(folder, outcome)| {
                let fetched = match outcome {
                    Outcome::Done(Ok(())) => Fetched::Fresh,
                    Outcome::Done(Err(reason)) => Fetched::Failed(reason),
                    Outcome::TimedOut => Fetched::Failed(format!(
                        "fetching took longer than [git] fetch_timeout ({}s) and was stopped (raise fetch_timeout if the repo is this large)",
                        budget.as_secs()
                    )),
                    Outcome::Panicked(m) => {
                        Fetched::Failed(format!("fetching failed unexpectedly: {m}"))
                    }
                };
                (folder, fetched)
            })
            .collect()
    }

    /// How to open repo `name`'s mirror in a read job, given the fetch round and the last
    /// read's `index`.
    fn opener(
        &self,
        name: &str,
        url: &str,
        fetched: &BTreeMap<String, Fetched>,
        index: &Index<'_>,
    ) -> impl FnOnce() -> Result<Opened, RepoError> + Send + 'static {
        let status = fetched.get(&Mirror::key_of(url)).cloned();
        // Not fetched now: as stale as the last read said.
        let carried = index.stale.get(name).map(|why| (*why).to_owned());
        // Never fetched, and not fetched now: why the last read could not fetch it.
        let unread = index.unread.get(name).map(|why| (*why).to_owned());
        let (url, cache) = (url.to_owned(), self.cache.clone());
        move || match status {
            Some(Fetched::Fresh) => Mirror::open(&url, &cache)
                .map(|mirror| Opened {
                    mirror,
                    stale: None,
                })
                .map_err(RepoError::Open),
            Some(Fetched::Failed(reason)) => match Mirror::open(&url, &cache) {
                Ok(mirror) => Ok(Opened {
                    mirror,
                    stale: Some(reason),
                }),
                Err(_) => Err(RepoError::Unreachable(reason)),
            },
            None => match Mirror::open(&url, &cache) {
                Ok(mirror) => Ok(Opened {
                    mirror,
                    stale: carried,
                }),
                Err(e @ SourceError::NotSynced { .. }) => {
                    Err(unread.map_or(RepoError::Open(e), RepoError::Unreachable))
                }
                Err(e) => Err(RepoError::Open(e)),
            },
        }
    }
}

/// The last read, by repo name: looked up once per repo (a scan of it for each repo was
/// quadratic in the repos; issue 20).
#[derive(Default)]
struct Index<'p> {
    /// Spec repos, by name: their position in the last read.
    specs: HashMap<&'p str, usize>,
    /// Why a repo's mirror was stale.
    stale: HashMap<&'p str, &'p str>,
    /// Why a repo could not be read (a spec repo unknown, else a template repo in error).
    unread: HashMap<&'p str, &'p str>,
}

impl<'p> Index<'p> {
    fn of(previous: Option<&'p Snapshot>) -> Self {
        let Some(p) = previous else {
            return Self::default();
        };
        let mut unread: HashMap<&str, &str> = p
            .template_repo_errors
            .iter()
            .map(|(repo, why)| (repo.as_str(), why.as_str()))
            .collect();
        // A spec repo's reason wins over a template repo's of the same name.
        unread.extend(
            p.spec_repos
                .iter()
                .filter_map(|s| Some((s.repo.as_str(), s.unknown.as_deref()?))),
        );
        let mut specs = HashMap::new();
        for (i, s) in p.spec_repos.iter().enumerate() {
            // The first of a name, as a scan found it.
            specs.entry(s.repo.as_str()).or_insert(i);
        }
        let mut stale = HashMap::new();
        for (repo, why) in &p.stale_repos {
            stale.entry(repo.as_str()).or_insert(why.as_str());
        }
        Self {
            specs,
            stale,
            unread,
        }
    }
}

/// What a read job that did not finish leaves: a template repo in error, a spec repo unknown.
fn failed(spec: Option<SpecRepo>, e: RepoError) -> RepoRead {
    match spec {
        None => RepoRead::Template(Err(e), None),
        Some(repo) => RepoRead::Spec(
            SpecRepoState {
                repo: repo.name,
                branch: repo.branch,
                platform: repo.platform,
                commit: None,
                files: super::SpecFiles::default(),
                unknown: Some(e.reason()),
                approvals: Ok(Vec::new()),
            },
            None,
        ),
    }
}

/// The releases of one template repo.
fn template_repo(
    repo: &TemplateRepo,
    mirror: &Mirror,
    previous: Option<&Snapshot>,
) -> Result<Catalog, RepoError> {
    let pattern = TagPattern::new(&repo.tag_pattern).map_err(RepoError::TagPattern)?;
    let tags = mirror.tags().map_err(RepoError::Read)?;
    let refs = release_refs(&repo.name, mirror, &tags, &pattern)?;
    let limits = Limits::default();
    Ok(releases::read_releases(
        (&repo.name, &repo.subdirectory),
        mirror,
        &tags,
        &refs,
        &pattern,
        &limits,
        previous.map(|p| &p.catalog),
        &|b, f| {
            render::check_release_file(b, f)
                .err()
                .map(|e| e.to_string())
        },
    ))
}

/// One spec repo at its branch head (reused from `previous` when its head is the commit read
/// then), and why its mirror is stale.
fn spec_repo(
    repo: &SpecRepo,
    opened: Result<Opened, RepoError>,
    previous: Option<&SpecRepoState>,
) -> (SpecRepoState, Option<String>) {
    let mut state = SpecRepoState {
        repo: repo.name.clone(),
        branch: repo.branch.clone(),
        platform: repo.platform,
        commit: None,
        files: super::SpecFiles::default(),
        unknown: None,
        approvals: Ok(Vec::new()),
    };
    let opened = match opened {
        Ok(o) => o,
        Err(e) => {
            state.unknown = Some(e.reason());
            return (state, None);
        }
    };
    // The references alone: an unchanged repo is reused without opening it.
    let head = opened
        .mirror
        .branch_target(&repo.branch)
        .ok()
        .map(|h| h.to_string());
    let reusable =
        previous.filter(|s| s.unknown.is_none() && s.commit.is_some() && s.commit == head);
    if let Some(prev) = reusable {
        // The commit's files are the same; what the config says of the repo may not be.
        let state = SpecRepoState {
            branch: state.branch,
            platform: state.platform,
            ..prev.clone()
        };
        return (state, opened.stale);
    }
    if let Err(e) = read_spec_repo(&opened.mirror, repo, &mut state) {
        state.unknown = Some(e.reason());
    }
    (state, opened.stale)
}

/// A job of [`run_bounded`]: given the flag that asks it to stop.
type Job<T> = Box<dyn FnOnce(Arc<AtomicBool>) -> T + Send>;

/// How a job of [`run_bounded`] ended.
enum Outcome<T> {
    Done(T),
    /// Over its budget: its stop flag was set and it was left behind.
    TimedOut,
    /// It panicked (the message), or its thread could not start.
    Panicked(String),
}

/// [`run_bounded_on`] with [`PARALLEL`] threads.
fn run_bounded<T: Send + 'static>(jobs: Vec<Job<T>>, budget: Duration) -> Vec<Outcome<T>> {
    run_bounded_on(jobs, budget, PARALLEL)
}

/// Runs `jobs` on up to `parallel` threads at once, each given `budget` from its start, and
/// returns their outcomes in order. A job over its budget is told to stop (its flag is set)
/// and left behind: its thread ends on its own and its result is dropped.
fn run_bounded_on<T: Send + 'static>(
    jobs: Vec<Job<T>>,
    budget: Duration,
    parallel: usize,
) -> Vec<Outcome<T>> {
    let parallel = parallel.max(1);
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<T, String>)>();
    let mut out: Vec<Option<Outcome<T>>> = jobs.iter().map(|_| None).collect();
    let mut queue = jobs.into_iter().enumerate();
    let mut running: BTreeMap<usize, (Instant, Arc<AtomicBool>)> = BTreeMap::new();
    loop {
        while running.len() < parallel {
            let Some((i, job)) = queue.next() else { break };
            let stop = Arc::new(AtomicBool::new(false));
            let (tx, flag) = (tx.clone(), stop.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("protond-repo-{i}"))
                .spawn(move || {
                    let result =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(flag)))
                            .map_err(|p| panic_message(p.as_ref()));
                    // The receiver is gone once the job was left behind.
                    let _ = tx.send((i, result));
                });
            match spawned {
                Ok(_) => {
                    running.insert(i, (Instant::now() + budget, stop));
                }
                Err(e) => out[i] = Some(Outcome::Panicked(format!("no thread to run it: {e}"))),
            }
        }
        let Some(deadline) = running.values().map(|(d, _)| *d).min() else {
            break;
        };
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((i, result)) => {
                if running.remove(&i).is_some() {
                    out[i] = Some(match result {
                        Ok(v) => Outcome::Done(v),
                        Err(m) => Outcome::Panicked(m),
                    });
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                running.retain(|i, (deadline, stop)| {
                    let over = *deadline <= now;
                    if over {
                        stop.store(true, Ordering::SeqCst);
                        out[*i] = Some(Outcome::TimedOut);
                    }
                    !over
                });
            }
            // Unreachable while `tx` lives; treat what runs as over its budget.
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    out.into_iter()
        .map(|o| o.unwrap_or(Outcome::TimedOut))
        .collect()
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panicked".to_owned())
}

/// Reads the spec files of `repo`'s folder at its branch head into `state`.
fn read_spec_repo(
    mirror: &Mirror,
    repo: &SpecRepo,
    state: &mut SpecRepoState,
) -> Result<(), RepoError> {
    let (branch, folder) = (&repo.branch, &repo.folder);
    let head = mirror.branch_head(branch).map_err(RepoError::Read)?;
    state.commit = Some(head.to_string());
    let entries = match mirror.read_tree(head, folder, 10_000, 64 * 1024 * 1024) {
        Ok(e) => e,
        // A missing folder is an empty one (refused below unless allowed).
        Err(SourceError::FolderNotFound { .. }) => Vec::new(),
        Err(e) => return Err(RepoError::Read(e)),
    };
    let specs: Vec<_> = entries
        .into_iter()
        .filter(|e| {
            let p = e.path.to_ascii_lowercase();
            // Proton read spec files by their exact extension.
            #[allow(clippy::case_sensitive_file_extension_comparisons)]
            let yaml = p.ends_with(".yaml") || p.ends_with(".yml");
            yaml && !p.starts_with("components/")
        })
        .collect();
    if specs.is_empty() && !repo.allow_empty {
        return Err(RepoError::EmptyFolder {
            folder: folder.clone(),
            branch: branch.clone(),
        });
    }
    for e in specs {
        let path = format!("{folder}/{}", e.path);
        let resource =
            spec::templates::lookup(&repo.templates, &path).and_then(|m| m.resource.as_deref());
        let (mut spec, text) = parse_spec_file(&path, &e.path, e.kind, resource);
        // The config's template for header-less files (fixed for the process, so a reused
        // read of the same commit had the same mappings applied).
        if let Ok(s) = &mut spec
            && let Err(e) = spec::templates::apply(s, &path, &repo.name, &repo.templates)
        {
            spec = Err(vec![e.to_string()]);
        }
        let components = read_components(mirror, head, &spec);
        state.files.push(SpecEntry {
            path,
            spec,
            text,
            components,
        });
    }
    state.approvals = read_approvals(mirror, head, &repo.name);
    Ok(())
}

/// The repo's `.protond/approvals.yaml` at `commit` (none when absent), or why it is refused.
fn read_approvals(
    mirror: &Mirror,
    commit: gix::ObjectId,
    repo: &str,
) -> Result<Vec<crate::gate::Approval>, Vec<String>> {
    let path = crate::gate::file::PATH;
    let (folder, name) = path.rsplit_once('/').unwrap_or(("", path));
    let entries = match mirror.read_tree(commit, folder, 64, 1024 * 1024) {
        Ok(e) => e,
        Err(SourceError::FolderNotFound { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(vec![format!("spec repo {repo}: {path}: {e}")]),
    };
    let Some(entry) = entries.into_iter().find(|e| e.path == name) else {
        return Ok(Vec::new());
    };
    match entry.kind {
        EntryKind::Blob(b) | EntryKind::Executable(b) => match String::from_utf8(b) {
            Ok(text) => crate::gate::file::parse(repo, &text),
            Err(_) => Err(vec![format!("spec repo {repo}: {path}: not UTF-8 text")]),
        },
        _ => Err(vec![format!(
            "spec repo {repo}: {path}: is a link or submodule; make it a regular file"
        )]),
    }
}

/// Parses one spec file (at `path`, `relative` to the spec folder) and returns it with its
/// text (empty when it is not UTF-8 or not a regular file). A file without `name:` is named
/// `resource` (from the config's mapping), else by its stem.
fn parse_spec_file(
    path: &str,
    relative: &str,
    kind: EntryKind,
    resource: Option<&str>,
) -> (Result<SpecFile, Vec<String>>, String) {
    let stem = resource.map_or_else(
        || {
            Path::new(relative)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        },
        str::to_string,
    );
    match kind {
        EntryKind::Blob(b) | EntryKind::Executable(b) => match String::from_utf8(b) {
            Ok(text) => {
                let spec = spec::parse(&text, path, &stem)
                    .map_err(|es| es.iter().map(ToString::to_string).collect());
                (spec, text)
            }
            Err(_) => (Err(vec![format!("{path}: not UTF-8 text")]), String::new()),
        },
        _ => (
            Err(vec![format!(
                "{path}: is a link or submodule; spec files must be regular files"
            )]),
            String::new(),
        ),
    }
}

/// The component folders a service spec's instances attach, read at `commit`.
fn read_components(
    mirror: &Mirror,
    commit: gix::ObjectId,
    spec: &Result<SpecFile, Vec<String>>,
) -> BTreeMap<String, Result<ComponentBundle, Vec<String>>> {
    let mut components = BTreeMap::new();
    if let Ok(SpecFile::Service(s)) = spec {
        for c in s.instances.iter().filter_map(|i| i.component.as_ref()) {
            components
                .entry(c.path.clone())
                .or_insert_with(|| read_component(mirror, commit, &c.path));
        }
    }
    components
}

/// One component folder, checked like a template bundle; its problems one per entry.
fn read_component(
    mirror: &Mirror,
    commit: gix::ObjectId,
    path: &str,
) -> Result<ComponentBundle, Vec<String>> {
    let limits = Limits::default();
    let entries = mirror
        .read_tree(commit, path, limits.max_files, limits.max_total_bytes)
        .map_err(|e| vec![e.to_string()])?;
    if entries.is_empty() {
        return Err(vec![format!("component folder {path}/ does not exist")]);
    }
    let files = releases::files_from_tree(path, entries)
        .map_err(|es| es.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let component = ComponentBundle::load(&files)
        .map_err(|es| es.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    for f in &component.infrastructure.files {
        render::check_syntax(f).map_err(|e| vec![format!("{path}/{e}")])?;
    }
    Ok(component)
}

/// protond's release references in `mirror`, recording (at first sight) the commit of every
/// release tag that has none yet, so that a later move or deletion of the tag cannot change
/// the release or lose its objects. A reference that cannot be written is logged, and the
/// release is read at its tag this time.
fn release_refs(
    repo: &str,
    mirror: &Mirror,
    tags: &[Tag],
    pattern: &TagPattern,
) -> Result<ReleaseRefs, RepoError> {
    let mut refs = ReleaseRefs {
        recorded: mirror
            .protond_refs(source::RELEASE_REFS)
            .map_err(RepoError::Read)?,
        accepted: mirror
            .protond_refs(source::ACCEPTED_REFS)
            .map_err(RepoError::Read)?,
    };
    for tag in tags {
        if pattern.parse(&tag.name).is_none() || refs.recorded.contains_key(&tag.name) {
            continue;
        }
        match mirror.set_protond_ref(source::RELEASE_REFS, &tag.name, tag.commit) {
            Ok(()) => {
                refs.recorded.insert(tag.name.clone(), tag.commit);
            }
            Err(e) => {
                tracing::warn!(repo, tag = %tag.name, error = %crate::error_chain(&e), "Release commit not recorded in the mirror.");
            }
        }
    }
    Ok(refs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job<T: Send + 'static>(f: impl FnOnce(Arc<AtomicBool>) -> T + Send + 'static) -> Job<T> {
        Box::new(f)
    }

    #[test]
    fn a_job_over_its_budget_is_left_behind_and_told_to_stop() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut jobs = vec![job(move |stop: Arc<AtomicBool>| {
            // A fetch that stalls, and stops once asked to.
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = tx.send("stopped");
            0
        })];
        for i in 1..=6 {
            jobs.push(job(move |_| i));
        }
        jobs.push(job(|_| panic!("boom")));
        let start = Instant::now();
        // Long enough for a panic's backtrace to be captured on a busy machine.
        let outcomes = run_bounded(jobs, Duration::from_secs(2));
        let took = start.elapsed();
        assert!(took < Duration::from_secs(6), "{took:?}");
        assert!(matches!(outcomes[0], Outcome::TimedOut));
        for (i, o) in outcomes.iter().enumerate().take(7).skip(1) {
            assert!(matches!(o, Outcome::Done(v) if *v == i), "job {i}");
        }
        assert!(matches!(&outcomes[7], Outcome::Panicked(m) if m == "boom"));
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(2)),
            Ok("stopped"),
            "the stop flag reached the job"
        );
    }

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .current_dir(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    #[test]
    fn one_url_read_by_several_entries_is_fetched_once_with_what_each_reads() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let origin = tmp.path().join("shared");
        std::fs::create_dir_all(&origin).expect("mkdir");
        git(&origin, &["init", "-q", "-b", "main"]);
        std::fs::write(origin.join("README.md"), "main\n").expect("write");
        git(&origin, &["add", "-A"]);
        git(&origin, &["commit", "-q", "-m", "main"]);
        git(&origin, &["tag", "-a", "-m", "r", "svc/v1.0"]);
        for branch in ["staging", "huge"] {
            git(&origin, &["checkout", "-q", "-b", branch, "main"]);
            std::fs::write(origin.join("README.md"), branch).expect("write");
            git(&origin, &["commit", "-q", "-am", branch]);
        }
        let text = format!(
            "data_dir = \"data\"\n\
             [[template_repos]]\nname = \"templates\"\nurl = \"shared\"\n\
             [[spec_repos]]\nname = \"a\"\nurl = \"shared\"\nallow_empty = true\n\
             [[spec_repos]]\nname = \"b\"\nurl = \"{}\"\nbranch = \"staging\"\nallow_empty = true\n",
            origin.display()
        );
        let raw: crate::config::RawConfig = toml::from_str(&text).expect("parses");
        let config = Config::compile(raw, "p.toml", tmp.path()).expect("compiles");
        let snapshot = load(&config, None, true);
        assert!(snapshot.template_repo_errors.is_empty(), "{snapshot:?}");
        assert!(
            snapshot.stale_repos.is_empty(),
            "{:?}",
            snapshot.stale_repos
        );
        let head = |b: &str| Some(git(&origin, &["rev-parse", b]));
        let commits: Vec<_> = snapshot
            .spec_repos
            .iter()
            .map(|s| (s.repo.as_str(), s.unknown.clone(), s.commit.clone()))
            .collect();
        assert_eq!(
            commits,
            [("a", None, head("main")), ("b", None, head("staging"))]
        );
        let mirrors: Vec<_> = std::fs::read_dir(tmp.path().join("data/git"))
            .expect("cache")
            .map(|e| e.expect("entry").path())
            .collect();
        assert_eq!(mirrors.len(), 1, "one mirror: {mirrors:?}");
        let refs = git(&mirrors[0], &["for-each-ref", "--format=%(refname)"]);
        let refs: Vec<&str> = refs.lines().collect();
        assert_eq!(
            refs,
            [
                "refs/heads/main",
                "refs/heads/staging",
                "refs/protond/releases/svc/v1.0",
                "refs/tags/svc/v1.0"
            ]
        );
    }

    #[test]
    fn no_more_than_parallel_jobs_run_at_once() {
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let jobs = (0..3 * PARALLEL)
            .map(|_| {
                let (running, most) = (running.clone(), most.clone());
                job(move |_| {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        let outcomes = run_bounded(jobs, Duration::from_secs(10));
        assert!(outcomes.iter().all(|o| matches!(o, Outcome::Done(()))));
        let most = most.load(Ordering::SeqCst);
        assert!((1..=PARALLEL).contains(&most), "{most} at once");
        assert!(run_bounded::<()>(Vec::new(), Duration::from_secs(1)).is_empty());
    }
}
