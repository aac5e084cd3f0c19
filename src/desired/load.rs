//! Reading the configured repos into a [`Snapshot`]. Blocking git work: run it off the async
//! runtime. Never decides ownership and never hides a failure: a repo that cannot be read is
//! recorded as such (a template repo in `template_repo_errors`, a spec repo as `unknown`),
//! which is what keeps its resources from being deleted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Fetch, Snapshot, SpecEntry, SpecRepoState};
use crate::catalog::releases::{self, Catalog, ReleaseRefs, TagPattern, TagPatternError};
use crate::catalog::{ComponentBundle, Limits};
use crate::config::{Config, SpecRepo, TemplateRepo};
use crate::render;
use crate::source::{self, EntryKind, Mirror, SourceError, Tag};
use crate::spec::{self, SpecFile};

/// Why a repo could not be read this cycle.
#[derive(Debug, thiserror::Error)]
enum RepoError {
    /// The configured tag pattern does not compile.
    #[error(transparent)]
    TagPattern(TagPatternError),
    /// Fetching failed and there was no mirror to fall back on.
    #[error(transparent)]
    Unreachable(SourceError),
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
}

impl RepoError {
    /// The reason shown to users. A failed fetch names its whole cause chain (it is all a
    /// user sees of the network error); the other errors their own message.
    fn reason(&self) -> String {
        match self {
            Self::Unreachable(e) => crate::error_chain(e),
            other => other.to_string(),
        }
    }
}

/// A repo's mirror, and the fetch error when it is the last fetched state instead of a
/// fresh one.
struct Opened {
    mirror: Mirror,
    stale: Option<SourceError>,
}

impl Opened {
    /// Warns when the mirror is stale.
    fn warn_if_stale(&self, repo: &str) {
        if let Some(e) = &self.stale {
            tracing::warn!(
                repo = %repo,
                "fetch failed, using the last fetched state: {}",
                crate::error_chain(e)
            );
        }
    }
}

/// Reads every configured repo. Blocking. `previous` lets unchanged tags reuse their
/// validated bundles. `fetch` false only opens existing mirrors (no network).
#[must_use]
pub fn load(config: &Config, previous: Option<&Catalog>, fetch: bool) -> Snapshot {
    Loader::new(config, &Fetch::from(fetch)).load(previous, None)
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
    Loader::new(config, fetch).load(previous.map(|p| &p.catalog), previous)
}

/// One read of the configured repos.
struct Loader<'a> {
    config: &'a Config,
    fetch: &'a Fetch,
    /// Where mirrors live.
    cache: PathBuf,
}

impl<'a> Loader<'a> {
    fn new(config: &'a Config, fetch: &'a Fetch) -> Self {
        Self {
            config,
            fetch,
            cache: config.data_dir.join("git"),
        }
    }

    fn load(&self, previous: Option<&Catalog>, previous_specs: Option<&Snapshot>) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for repo in &self.config.template_repos {
            match self.template_repo(repo, previous) {
                Ok(catalog) => snapshot.catalog.merge(catalog),
                Err(e) => snapshot
                    .template_repo_errors
                    .push((repo.name.clone(), e.reason())),
            }
        }
        for repo in &self.config.spec_repos {
            // A retired repo is never read: it need not exist any more.
            if repo.retired {
                snapshot
                    .retired_repos
                    .insert(repo.name.clone(), super::RETIRED_IN_CONFIG.to_string());
                continue;
            }
            snapshot
                .spec_repos
                .push(self.spec_repo(repo, previous_specs));
        }
        snapshot
    }

    /// Opens a repo's mirror, fetching it first when asked to (or when it was never fetched
    /// and fetching is allowed at all).
    fn open(&self, name: &str, url: &str) -> Result<Opened, RepoError> {
        if self.fetch.wants(name) {
            return sync_or_open(url, &self.cache);
        }
        match Mirror::open(url, &self.cache) {
            Ok(mirror) => Ok(Opened {
                mirror,
                stale: None,
            }),
            // Never fetched yet: fetch it now, when fetching at all.
            Err(_) if *self.fetch != Fetch::None => sync_or_open(url, &self.cache),
            Err(e) => Err(RepoError::Open(e)),
        }
    }

    /// The releases of one template repo.
    fn template_repo(
        &self,
        repo: &TemplateRepo,
        previous: Option<&Catalog>,
    ) -> Result<Catalog, RepoError> {
        let pattern = TagPattern::new(&repo.tag_pattern).map_err(RepoError::TagPattern)?;
        let opened = self.open(&repo.name, &repo.url)?;
        opened.warn_if_stale(&repo.name);
        let tags = opened.mirror.tags().map_err(RepoError::Read)?;
        let refs = release_refs(&repo.name, &opened.mirror, &tags, &pattern)?;
        let limits = Limits::default();
        Ok(releases::read_releases(
            &repo.name,
            &opened.mirror,
            &tags,
            &refs,
            &pattern,
            &limits,
            previous,
            &|b, f| {
                render::check_release_file(b, f)
                    .err()
                    .map(|e| e.to_string())
            },
        ))
    }

    /// One spec repo at its branch head; reused from `previous` when its head is the commit
    /// read then.
    fn spec_repo(&self, repo: &SpecRepo, previous: Option<&Snapshot>) -> SpecRepoState {
        let mut state = SpecRepoState {
            repo: repo.name.clone(),
            branch: repo.branch.clone(),
            platform: repo.platform,
            commit: None,
            files: Vec::new(),
            unknown: None,
        };
        let opened = match self.open(&repo.name, &repo.url) {
            Ok(o) => o,
            Err(e) => {
                state.unknown = Some(e.reason());
                return state;
            }
        };
        opened.warn_if_stale(&repo.name);
        let head = opened
            .mirror
            .branch_head(&repo.branch)
            .ok()
            .map(|h| h.to_string());
        let reusable = previous.and_then(|p| {
            p.spec_repos.iter().find(|s| {
                s.repo == repo.name && s.unknown.is_none() && s.commit.is_some() && s.commit == head
            })
        });
        if let Some(prev) = reusable {
            // The commit's files are the same; what the config says of the repo may not be.
            return SpecRepoState {
                branch: state.branch,
                platform: state.platform,
                ..prev.clone()
            };
        }
        if let Err(e) = read_spec_repo(&opened.mirror, repo, &mut state) {
            state.unknown = Some(e.reason());
        }
        state
    }
}

/// Fetches a repo, falling back on its last fetched mirror when the fetch fails.
fn sync_or_open(url: &str, cache: &Path) -> Result<Opened, RepoError> {
    match Mirror::sync(url, cache) {
        Ok(mirror) => Ok(Opened {
            mirror,
            stale: None,
        }),
        Err(fetch) => match Mirror::open(url, cache) {
            Ok(mirror) => Ok(Opened {
                mirror,
                stale: Some(fetch),
            }),
            Err(_) => Err(RepoError::Unreachable(fetch)),
        },
    }
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
        let (spec, text) = parse_spec_file(&path, &e.path, e.kind);
        let components = read_components(mirror, head, &spec);
        state.files.push(SpecEntry {
            path,
            spec,
            text,
            components,
        });
    }
    Ok(())
}

/// Parses one spec file (at `path`, `relative` to the spec folder) and returns it with its
/// text (empty when it is not UTF-8 or not a regular file).
fn parse_spec_file(
    path: &str,
    relative: &str,
    kind: EntryKind,
) -> (Result<SpecFile, Vec<String>>, String) {
    let stem = Path::new(relative)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
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
