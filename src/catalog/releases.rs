//! Template releases from git tags.
//!
//! A release is a tag matching the repo's pattern (default `{template}/v{major}.{minor}`); the
//! bundle is read from the tagged commit's `<template>/v<major>/` folder and validated. An
//! invalid bundle is recorded as rejected with its reason and never used. The annotated
//! tag's message is the release note. Tags that do not match the pattern are ignored.
//!
//! Releases are immutable: the commit a tag named when protond first saw it is kept in
//! protond's own reference (`refs/protond/releases/<tag>`, see [`ReleaseRefs`]) and the
//! bundle is always read there. A tag moved since is [`ReleaseState::Moved`] (reported, not
//! followed until `protond release accept`); a tag deleted since is
//! [`ReleaseState::Withdrawn`] (kept for the resources that run it, never given to new ones).
//! This module only reads; the loader writes the references.

use std::collections::BTreeMap;
use std::sync::Arc;

use regex::Regex;

use super::{Bundle, BundleError, BundleFiles, Limits};
use crate::plan::Version;
use crate::source::{EntryKind, Mirror, SourceError, Tag, TreeEntry};

/// Why [`TagPattern::new`] refused a pattern. Both messages quote the pattern as configured.
#[derive(Debug, thiserror::Error)]
pub enum TagPatternError {
    /// One of the three placeholders is missing.
    #[error("tag pattern {pattern:?} must contain {{template}}, {{major}} and {{minor}}")]
    MissingPlaceholder {
        /// The pattern as configured.
        pattern: String,
    },
    /// The regular expression built from the pattern did not compile (too large).
    #[error("tag pattern {pattern:?}: {source}")]
    Regex {
        /// The pattern as configured.
        pattern: String,
        /// Why the regex crate refused it. Also in the message, which has always named it;
        /// [`crate::error_chain`] prints it once.
        #[source]
        source: regex::Error,
    },
}

/// A compiled tag pattern.
#[derive(Debug, Clone)]
pub struct TagPattern {
    re: Regex,
    pattern: String,
}

impl TagPattern {
    /// Compiles a pattern with `{template}`, `{major}` and `{minor}` placeholders.
    ///
    /// # Errors
    ///
    /// A [`TagPatternError`] when a placeholder is missing or the pattern does not compile.
    pub fn new(pattern: &str) -> Result<Self, TagPatternError> {
        let mut re = String::from("^");
        let mut rest = pattern;
        let mut seen = [false; 3];
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("{template}") {
                re.push_str(r"(?P<template>[A-Za-z0-9][A-Za-z0-9_-]{0,99})");
                seen[0] = true;
                rest = r;
            } else if let Some(r) = rest.strip_prefix("{major}") {
                re.push_str(r"(?P<major>0|[1-9][0-9]{0,8})");
                seen[1] = true;
                rest = r;
            } else if let Some(r) = rest.strip_prefix("{minor}") {
                re.push_str(r"(?P<minor>0|[1-9][0-9]{0,8})");
                seen[2] = true;
                rest = r;
            } else {
                let c = rest.chars().next().unwrap_or_default();
                re.push_str(&regex::escape(&c.to_string()));
                rest = &rest[c.len_utf8()..];
            }
        }
        re.push('$');
        if seen != [true; 3] {
            return Err(TagPatternError::MissingPlaceholder {
                pattern: pattern.to_string(),
            });
        }
        let re = Regex::new(&re).map_err(|source| TagPatternError::Regex {
            pattern: pattern.to_string(),
            source,
        })?;
        Ok(Self {
            re,
            pattern: pattern.to_string(),
        })
    }

    /// Parses a tag name into (template, version), or None if it does not match.
    #[must_use]
    pub fn parse(&self, tag: &str) -> Option<(String, Version)> {
        let caps = self.re.captures(tag)?;
        Some((
            caps.name("template")?.as_str().to_string(),
            Version {
                major: caps.name("major")?.as_str().parse().ok()?,
                minor: caps.name("minor")?.as_str().parse().ok()?,
            },
        ))
    }

    /// The pattern as configured.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.pattern
    }
}

/// Where a release's tag stands against the commit protond recorded for it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ReleaseState {
    /// The tag still names the recorded commit.
    #[default]
    Current,
    /// The tag was moved to another commit: the release stays on the recorded one until an
    /// operator accepts the move (`protond release accept`).
    Moved {
        /// The commit the tag names now.
        tag_commit: String,
    },
    /// The tag was deleted: the release stays known for the resources that run it, and new
    /// resources never get it.
    Withdrawn,
}

impl ReleaseState {
    /// `current`, `moved` or `withdrawn`, as `protond status` shows it.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::Moved { .. } => "moved",
            Self::Withdrawn => "withdrawn",
        }
    }
}

/// protond's own references in a template repo's mirror, by tag name: the commit recorded
/// for each release tag (first seen, or accepted), and the commit an accepted move replaced.
#[derive(Debug, Clone, Default)]
pub struct ReleaseRefs {
    /// `refs/protond/releases/<tag>`: the release's commit.
    pub recorded: BTreeMap<String, gix::ObjectId>,
    /// `refs/protond/accepted/<tag>`: the commit the release had before an accepted move.
    pub accepted: BTreeMap<String, gix::ObjectId>,
}

/// A valid, registered release.
#[derive(Debug, Clone)]
pub struct Release {
    /// Template repo name.
    pub repo: String,
    /// Template name.
    pub template: String,
    /// The template version (`major.minor`).
    pub version: Version,
    /// The release tag.
    pub tag: String,
    /// Tagged commit.
    pub commit: String,
    /// Annotated tag message.
    pub notes: Option<String>,
    /// The validated bundle.
    pub bundle: Arc<Bundle>,
    /// Whether the tag still names [`Release::commit`].
    pub state: ReleaseState,
    /// The commit this release had before an operator accepted a moved tag: resources
    /// rendered from it are updated as a release change, through the rollout gate.
    pub replaced: Option<String>,
}

impl Release {
    /// Whether new resources may be given this release (its tag was not deleted).
    #[must_use]
    pub fn usable(&self) -> bool {
        self.state != ReleaseState::Withdrawn
    }
}

/// A release tag whose bundle was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Template repo name.
    pub repo: String,
    /// Template name.
    pub template: String,
    /// The template version (`major.minor`).
    pub version: Version,
    /// The release tag.
    pub tag: String,
    /// Tagged commit.
    pub commit: String,
    /// Every problem, one per line.
    pub reason: String,
    /// Annotated tag message.
    pub notes: Option<String>,
}

/// All releases known from the template repos.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    releases: BTreeMap<String, BTreeMap<Version, Release>>,
    /// Rejected release tags.
    pub rejected: Vec<Rejected>,
    /// Tags that name a released template but do not match the tag pattern (likely typos,
    /// such as `web-svc/1.4` or `web-svc/v1.4-rc1`).
    pub ignored: Vec<IgnoredTag>,
}

/// A tag that looks like a release of a known template but does not match the pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredTag {
    /// Template repo name.
    pub repo: String,
    /// The tag.
    pub tag: String,
    /// The repo's tag pattern.
    pub pattern: String,
    /// A release tag of the same template in that pattern.
    pub example: String,
}

impl Catalog {
    /// The release a resource following `major` (optionally pinned to `minor`) should run:
    /// the pinned minor, else the newest minor whose tag was not deleted.
    #[must_use]
    pub fn resolve(&self, template: &str, major: u32, minor: Option<u32>) -> Option<&Release> {
        let versions = self.releases.get(template)?;
        match minor {
            Some(minor) => versions.get(&Version { major, minor }),
            None => self.newest(template, major, Release::usable),
        }
    }

    /// The newest release of `template`'s `major` that `keep` accepts.
    #[must_use]
    pub fn newest(
        &self,
        template: &str,
        major: u32,
        keep: impl Fn(&Release) -> bool,
    ) -> Option<&Release> {
        self.releases
            .get(template)?
            .range(
                Version { major, minor: 0 }..=Version {
                    major,
                    minor: u32::MAX,
                },
            )
            .rev()
            .map(|(_, r)| r)
            .find(|r| keep(r))
    }

    /// Newest registered major per template.
    #[must_use]
    pub fn latest_major(&self) -> BTreeMap<String, u32> {
        self.releases
            .iter()
            .filter_map(|(t, v)| v.keys().next_back().map(|k| (t.clone(), k.major)))
            .collect()
    }

    /// Every registered release.
    pub fn releases(&self) -> impl Iterator<Item = &Release> {
        self.releases.values().flat_map(BTreeMap::values)
    }

    /// Whether a template has any release at all.
    #[must_use]
    pub fn knows(&self, template: &str) -> bool {
        self.releases.contains_key(template)
    }

    /// Adds a release (used by [`read_releases`] and tests).
    pub fn insert(&mut self, release: Release) {
        self.releases
            .entry(release.template.clone())
            .or_default()
            .insert(release.version, release);
    }

    /// Merges another repo's catalogue. A template released from two repos is an error for
    /// both: their releases are rejected.
    pub fn merge(&mut self, other: Catalog) {
        for (template, versions) in other.releases {
            let clash = self
                .releases
                .get(&template)
                .and_then(|mine| mine.values().next())
                .zip(versions.values().next())
                .filter(|(a, b)| a.repo != b.repo)
                .map(|(a, b)| (a.repo.clone(), b.repo.clone()));
            if let Some((a, b)) = clash {
                let reason = format!(
                    "template {template:?} is released from two repos ({a} and {b}); a template name belongs to exactly one repo"
                );
                let mine = self.releases.remove(&template).unwrap_or_default();
                for r in mine.into_values().chain(versions.into_values()) {
                    self.rejected.push(Rejected {
                        repo: r.repo,
                        template: r.template,
                        version: r.version,
                        tag: r.tag,
                        commit: r.commit,
                        reason: reason.clone(),
                        notes: r.notes,
                    });
                }
            } else {
                self.releases.entry(template).or_default().extend(versions);
            }
        }
        self.rejected.extend(other.rejected);
        self.ignored.extend(other.ignored);
    }
}

/// Turns tree entries into bundle files, rejecting links and submodules.
///
/// # Errors
///
/// Every unsafe path, link and submodule, one [`BundleError`] each (located at the entry's
/// path below `origin`).
pub fn files_from_tree(
    origin: &str,
    entries: Vec<TreeEntry>,
) -> Result<BundleFiles, Vec<BundleError>> {
    let mut files = BundleFiles::new(origin);
    let mut errors = Vec::new();
    for e in entries {
        match e.kind {
            EntryKind::Blob(b) | EntryKind::Executable(b) => {
                if let Err(err) = files.insert(&e.path, b) {
                    errors.push(err);
                }
            }
            EntryKind::Symlink => errors.push(files.error(
                &e.path,
                "is a symbolic link; bundles may not contain links (copy the file in instead)",
            )),
            EntryKind::Submodule => errors.push(files.error(
                &e.path,
                "is a git submodule; bundles must contain the files themselves",
            )),
        }
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(errors)
    }
}

/// Checks one `IaC` file of a bundle (the rendering engine's parse, and a trial render within
/// the render bounds: `render::check_release_file`), returning the problem as text. Passed in
/// by the caller, so that the catalogue does not depend on the renderer (which depends on the
/// catalogue's types).
pub type SyntaxCheck<'a> = &'a (dyn Fn(&Bundle, &super::IacFile) -> Option<String> + Sync);

/// Why a release's bundle was rejected; its message becomes [`Rejected::reason`].
#[derive(Debug, thiserror::Error)]
enum ReleaseError {
    /// The tagged tree could not be read (or broke a limit while reading).
    #[error("{origin}: {source}")]
    Read {
        /// `<repo>@<tag>`.
        origin: String,
        /// The mirror's error.
        #[source]
        source: SourceError,
    },
    /// The tagged commit has no `<template>/v<major>/` folder.
    #[error(
        "{origin}: folder {folder}/ does not exist at this tag; a tag {tag} must point at a commit containing {folder}/"
    )]
    MissingFolder {
        /// `<repo>@<tag>`.
        origin: String,
        /// `<template>/v<major>`.
        folder: String,
        /// The tag's name.
        tag: String,
    },
    /// The bundle is unsafe, over a limit, invalid, or holds a file that does not parse:
    /// every problem, one per line (bundle problems first, then syntax).
    #[error("{}", problem_lines(.bundle, .syntax))]
    Invalid {
        /// Problems with the files, manifest, schema or compatibility.
        bundle: Vec<BundleError>,
        /// Syntax problems of `IaC` files, as `<repo>@<tag>:<folder>/<problem>`.
        syntax: Vec<String>,
    },
}

/// The lines of [`ReleaseError::Invalid`].
fn problem_lines(bundle: &[BundleError], syntax: &[String]) -> String {
    bundle
        .iter()
        .map(ToString::to_string)
        .chain(syntax.iter().cloned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where the bundle of `template` major `major` lives in a template repo whose bundles are
/// under `subdirectory` (empty: the repo's root), as Proton's template sync read it.
#[must_use]
pub fn bundle_folder(subdirectory: &str, template: &str, major: u32) -> String {
    let sub = subdirectory.trim_matches('/');
    if sub.is_empty() || sub == "." {
        format!("{template}/v{major}")
    } else {
        format!("{sub}/{template}/v{major}")
    }
}

/// Reads and validates one release's bundle at its tag.
fn read_release(
    mirror: &Mirror,
    tag: &Tag,
    (subdirectory, template): (&str, &str),
    version: Version,
    limits: &Limits,
    check: SyntaxCheck<'_>,
) -> Result<Bundle, ReleaseError> {
    let folder = bundle_folder(subdirectory, template, version.major);
    let origin = format!("{}@{}", mirror.display_url(), tag.name);
    let entries = mirror
        .read_tree(
            tag.commit,
            &folder,
            limits.max_files,
            limits.max_total_bytes,
        )
        .map_err(|source| ReleaseError::Read {
            origin: origin.clone(),
            source,
        })?;
    if entries.is_empty() {
        return Err(ReleaseError::MissingFolder {
            origin,
            folder,
            tag: tag.name.clone(),
        });
    }
    let files = files_from_tree(&format!("{origin}:{folder}"), entries).map_err(|bundle| {
        ReleaseError::Invalid {
            bundle,
            syntax: Vec::new(),
        }
    })?;
    check_files(&files, (&origin, &folder), template, version, limits, check)
}

/// Checks a candidate release's files as a tagged release's are checked (limits, layout,
/// schema, manifest, each `IaC` file's syntax and trial render), for `protond preview`.
/// `origin` names where the files came from (`<dir>` or `<repo>@<commit>`), `folder` the
/// bundle folder within it.
///
/// # Errors
///
/// Every problem, one per line, exactly as a rejected tag's reason would list them.
pub fn check_candidate(
    files: &BundleFiles,
    (origin, folder): (&str, &str),
    template: &str,
    version: Version,
    limits: &Limits,
    check: SyntaxCheck<'_>,
) -> Result<Bundle, String> {
    check_files(files, (origin, folder), template, version, limits, check)
        .map_err(|e| e.to_string())
}

/// The checks of one release's files, once read.
fn check_files(
    files: &BundleFiles,
    (origin, folder): (&str, &str),
    template: &str,
    version: Version,
    limits: &Limits,
    check: SyntaxCheck<'_>,
) -> Result<Bundle, ReleaseError> {
    let mut problems = files.check_limits(limits);
    let mut syntax = Vec::new();
    let bundle = match Bundle::load(template, version.major, files) {
        Ok(b) => Some(b),
        Err(errs) => {
            problems.extend(errs);
            None
        }
    };
    if let Some(b) = &bundle {
        for f in b
            .infrastructure
            .files
            .iter()
            .chain(b.pipeline.iter().flat_map(|p| &p.files))
        {
            if let Some(e) = check(b, f) {
                syntax.push(if folder.is_empty() {
                    format!("{origin}/{e}")
                } else {
                    format!("{origin}:{folder}/{e}")
                });
            }
        }
    }
    match bundle {
        Some(b) if problems.is_empty() && syntax.is_empty() => Ok(b),
        _ => Err(ReleaseError::Invalid {
            bundle: problems,
            syntax,
        }),
    }
}

/// The release tags as protond reads them: each tag at its recorded commit (when one is
/// recorded), with its [`ReleaseState`], plus a withdrawn entry for each recorded tag that is
/// gone. Tags not matching `pattern` pass through unchanged.
#[must_use]
pub fn effective_tags(
    tags: &[Tag],
    refs: &ReleaseRefs,
    pattern: &TagPattern,
) -> Vec<(Tag, ReleaseState)> {
    let mut out: Vec<(Tag, ReleaseState)> = tags
        .iter()
        .map(|t| match refs.recorded.get(&t.name) {
            Some(&c) if c != t.commit && pattern.parse(&t.name).is_some() => (
                Tag {
                    name: t.name.clone(),
                    commit: c,
                    message: t.message.clone(),
                },
                ReleaseState::Moved {
                    tag_commit: t.commit.to_string(),
                },
            ),
            _ => (t.clone(), ReleaseState::Current),
        })
        .collect();
    for (name, &commit) in &refs.recorded {
        if pattern.parse(name).is_some() && !tags.iter().any(|t| &t.name == name) {
            out.push((
                Tag {
                    name: name.clone(),
                    commit,
                    message: None,
                },
                ReleaseState::Withdrawn,
            ));
        }
    }
    out
}

/// Reads every release of one template repo (`repo`, its bundles under `subdirectory`, empty
/// for the root). `previous` lets unchanged tags (same commit)
/// reuse their already-validated bundle instead of reading the tree again; `syntax` checks
/// each `IaC` file (see [`SyntaxCheck`]). `refs` are protond's references in the mirror: a
/// release is read at its recorded commit, whatever its tag names now.
#[must_use]
#[allow(clippy::too_many_arguments)]
pub fn read_releases(
    (repo, subdirectory): (&str, &str),
    mirror: &Mirror,
    tags: &[Tag],
    refs: &ReleaseRefs,
    pattern: &TagPattern,
    limits: &Limits,
    previous: Option<&Catalog>,
    syntax: SyntaxCheck<'_>,
) -> Catalog {
    let mut catalog = Catalog::default();
    let mut unmatched = Vec::new();
    let mut templates = std::collections::BTreeSet::new();
    for (tag, state) in &effective_tags(tags, refs, pattern) {
        let replaced = refs.accepted.get(&tag.name).map(ToString::to_string);
        let Some((template, version)) = pattern.parse(&tag.name) else {
            unmatched.push(tag.name.clone());
            continue;
        };
        templates.insert(template.clone());
        let commit = tag.commit.to_string();
        if let Some(prev) =
            previous.and_then(|p| p.resolve(&template, version.major, Some(version.minor)))
            && prev.commit == commit
            && prev.repo == repo
        {
            let mut r = prev.clone();
            r.notes.clone_from(&tag.message);
            r.state = state.clone();
            r.replaced = replaced;
            catalog.insert(r);
            continue;
        }
        match read_release(
            mirror,
            tag,
            (subdirectory, &template),
            version,
            limits,
            syntax,
        ) {
            Ok(bundle) => catalog.insert(Release {
                repo: repo.to_string(),
                template,
                version,
                tag: tag.name.clone(),
                commit,
                notes: tag.message.clone(),
                bundle: Arc::new(bundle),
                state: state.clone(),
                replaced,
            }),
            Err(reason) => catalog.rejected.push(Rejected {
                repo: repo.to_string(),
                template,
                version,
                tag: tag.name.clone(),
                commit,
                reason: reason.to_string(),
                notes: tag.message.clone(),
            }),
        }
    }
    // Tags that start like a release of a known template (`web-svc/...`, `web-svc-...`) but
    // do not match are worth a note: they are usually a typo in a release tag.
    catalog.ignored = unmatched
        .into_iter()
        .filter_map(|t| {
            // The longest known template the tag starts with (`web-svc` before `web`).
            let template = templates
                .iter()
                .filter(|tpl| {
                    t.strip_prefix(tpl.as_str())
                        .is_some_and(|rest| rest.starts_with(['/', '-', '@', '_', '.']))
                })
                .max_by_key(|tpl| tpl.len())?;
            Some(IgnoredTag {
                repo: repo.to_string(),
                example: pattern
                    .as_str()
                    .replace("{template}", template)
                    .replace("{major}", "1")
                    .replace("{minor}", "4"),
                pattern: pattern.as_str().to_string(),
                tag: t,
            })
        })
        .collect();
    catalog
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_pattern_parses_release_tags() {
        let p = TagPattern::new(crate::config::DEFAULT_TAG_PATTERN).expect("pattern");
        assert_eq!(
            p.parse("fargate-svc/v1.4"),
            Some(("fargate-svc".into(), Version { major: 1, minor: 4 }))
        );
        for bad in [
            "fargate-svc/v1",
            "fargate-svc/1.4",
            "v1.4",
            "fargate-svc/v1.4-rc1",
            "a/b/v1.0",
            "x/v01.0",
        ] {
            assert_eq!(p.parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn custom_pattern_and_escaping() {
        let p = TagPattern::new("release-{template}@{major}.{minor}").expect("pattern");
        assert_eq!(
            p.parse("release-web@2.10"),
            Some((
                "web".into(),
                Version {
                    major: 2,
                    minor: 10
                }
            ))
        );
        assert_eq!(p.parse("release-webX2.10"), None);
        assert!(TagPattern::new("{template}-{major}").is_err());
    }

    #[test]
    fn tag_pattern_errors_quote_the_pattern() {
        let err = TagPattern::new("{template}-{major}").expect_err("no minor");
        assert!(matches!(err, TagPatternError::MissingPlaceholder { .. }));
        assert_eq!(
            err.to_string(),
            "tag pattern \"{template}-{major}\" must contain {template}, {major} and {minor}"
        );
    }

    #[test]
    fn files_from_tree_reports_each_link_submodule_and_unsafe_path() {
        let entry = |path: &str, kind| TreeEntry {
            path: path.into(),
            kind,
        };
        let errs = files_from_tree(
            "repo@web/v1.0:web/v1",
            vec![
                entry("ok.yaml", EntryKind::Blob(b"a: 1\n".to_vec())),
                entry("leak.yaml", EntryKind::Symlink),
                entry("vendor", EntryKind::Submodule),
                entry("../up.yaml", EntryKind::Blob(Vec::new())),
            ],
        )
        .expect_err("rejected");
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "repo@web/v1.0:web/v1/leak.yaml: is a symbolic link; bundles may not contain links (copy the file in instead)",
                "repo@web/v1.0:web/v1/vendor: is a git submodule; bundles must contain the files themselves",
                "repo@web/v1.0:web/v1/../up.yaml: path \"../up.yaml\" escapes the bundle with \"..\"; keep every file inside it",
            ]
        );
    }

    #[test]
    fn release_errors_print_the_rejection_reason() {
        let missing = ReleaseError::MissingFolder {
            origin: "repo@web/v1.0".into(),
            folder: "web/v1".into(),
            tag: "web/v1.0".into(),
        };
        assert_eq!(
            missing.to_string(),
            "repo@web/v1.0: folder web/v1/ does not exist at this tag; a tag web/v1.0 must point at a commit containing web/v1/"
        );
        let files = BundleFiles::new("repo@web/v1.0:web/v1");
        let invalid = ReleaseError::Invalid {
            bundle: vec![
                files.error("a.yaml", "first"),
                files.error("b.yaml", "second"),
            ],
            syntax: vec!["repo@web/v1.0:web/v1/c.yaml: third".into()],
        };
        assert_eq!(
            invalid.to_string(),
            "repo@web/v1.0:web/v1/a.yaml: first\nrepo@web/v1.0:web/v1/b.yaml: second\nrepo@web/v1.0:web/v1/c.yaml: third"
        );
    }
}
