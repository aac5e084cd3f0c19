//! Template bundles in AWS Proton's own layout: reading them (from a folder or, later, a git
//! tree), enforcing Proton's limits and path rules, and parsing manifests, schemas and
//! compatibility files.
//!
//! A bundle is always read into a [`BundleFiles`] first: an in-memory map of safe relative
//! paths to bytes. Every source (a folder here, a git tree at a tag elsewhere) goes through
//! the same checks, so a symlink or a `..` can never reach the renderer. This module never
//! renders and never deploys.

pub mod codebuild;
pub mod releases;
pub mod schema;
pub mod yaml;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;

use schema::{InputKind, Schema};

/// Size and count limits for one bundle, as AWS Proton enforced them: 10 MB per bundle,
/// 2 MB per file, and (Proton's `CodeBuild` bundle limit) 500 files.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most files a bundle may hold.
    pub max_files: usize,
    /// Largest single file, in bytes.
    pub max_file_bytes: u64,
    /// Largest bundle, all files together, in bytes.
    pub max_total_bytes: u64,
    /// Deepest folder nesting below the bundle root.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_files: 500,
            max_file_bytes: 2 * 1024 * 1024,
            max_total_bytes: 10 * 1024 * 1024,
            max_depth: 16,
        }
    }
}

/// A problem with a bundle: where (a path relative to the bundle, possibly with a field) and
/// what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}/{location}: {message}")]
pub struct BundleError {
    /// The bundle's folder or `<repo>@<tag>` as the user knows it.
    pub origin: String,
    /// A path inside the bundle, optionally followed by `: field`.
    pub location: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// A bundle's files after the safety checks: relative `/`-separated paths to their bytes.
#[derive(Debug, Clone, Default)]
pub struct BundleFiles {
    /// Where the files came from, for messages.
    pub origin: String,
    files: BTreeMap<String, Vec<u8>>,
}

impl BundleFiles {
    /// An empty set of files from `origin`.
    #[must_use]
    pub fn new(origin: impl Into<String>) -> Self {
        Self {
            origin: origin.into(),
            files: BTreeMap::new(),
        }
    }

    /// Adds a file after checking its path; returns the error instead of adding an unsafe path.
    pub fn insert(&mut self, path: &str, bytes: Vec<u8>) -> Result<(), BundleError> {
        let clean = check_relative_path(path).map_err(|e| self.error(path, e.to_string()))?;
        self.files.insert(clean, bytes);
        Ok(())
    }

    /// The bytes of one file.
    #[must_use]
    pub fn get(&self, path: &str) -> Option<&[u8]> {
        self.files.get(path).map(Vec::as_slice)
    }

    /// Whether any file lives below `folder/`.
    #[must_use]
    pub fn has_folder(&self, folder: &str) -> bool {
        let prefix = format!("{folder}/");
        self.files.keys().any(|k| k.starts_with(&prefix))
    }

    /// Files directly or indirectly below `folder/`, as (path, bytes).
    pub fn under<'a>(&'a self, folder: &str) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let prefix = format!("{folder}/");
        self.files
            .iter()
            .filter(move |(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// Number of files.
    #[must_use]
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether there are no files.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Total size of all files in bytes.
    #[must_use]
    pub fn total_bytes(&self) -> u64 {
        self.files.values().map(|v| v.len() as u64).sum()
    }

    /// Enforces the limits on what was collected; every breach is reported.
    #[must_use]
    pub fn check_limits(&self, limits: &Limits) -> Vec<BundleError> {
        let mut errors = Vec::new();
        if self.files.len() > limits.max_files {
            errors.push(self.error(
                ".",
                format!(
                    "bundle has {} files, more than the limit of {}; remove files that are not part of the template",
                    self.files.len(),
                    limits.max_files
                ),
            ));
        }
        for (path, bytes) in &self.files {
            if bytes.len() as u64 > limits.max_file_bytes {
                errors.push(self.error(
                    path,
                    format!(
                        "file is {} bytes, more than the limit of {} bytes",
                        bytes.len(),
                        limits.max_file_bytes
                    ),
                ));
            }
            if path.split('/').count() > limits.max_depth {
                errors.push(self.error(
                    path,
                    format!("path is nested deeper than {} folders", limits.max_depth),
                ));
            }
        }
        let total = self.total_bytes();
        if total > limits.max_total_bytes {
            errors.push(self.error(
                ".",
                format!(
                    "bundle is {total} bytes, more than the limit of {} bytes",
                    limits.max_total_bytes
                ),
            ));
        }
        errors
    }

    /// A file as UTF-8 text, or an error naming it.
    pub fn text(&self, path: &str) -> Result<&str, BundleError> {
        let bytes = self
            .get(path)
            .ok_or_else(|| self.error(path, "file is missing".to_string()))?;
        std::str::from_utf8(bytes)
            .map_err(|e| self.error(path, format!("file is not UTF-8 text ({e})")))
    }

    /// A [`BundleError`] about `location` in these files.
    #[must_use]
    pub fn error(&self, location: &str, message: impl Into<String>) -> BundleError {
        BundleError {
            origin: self.origin.clone(),
            location: location.to_string(),
            message: message.into(),
        }
    }
}

/// Why [`check_relative_path`] refused a path. Every message but [`PathError::Empty`] names
/// the path as given, and says how to fix it where there is a fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is the empty string.
    #[error("empty path")]
    Empty,
    /// The path starts at a root (`/`, `\`) or names a drive (`C:`).
    #[error("path {path:?} is absolute; use a path relative to the bundle")]
    Absolute {
        /// The path as given.
        path: String,
    },
    /// A `..` part would leave the root.
    #[error("path {path:?} escapes the bundle with \"..\"; keep every file inside it")]
    Escapes {
        /// The path as given.
        path: String,
    },
    /// A part holds a control character (a newline, a NUL, ...).
    #[error("path {path:?} contains control characters")]
    ControlCharacters {
        /// The path as given.
        path: String,
    },
    /// Only separators and `.` parts: the path names the root itself.
    #[error("path {path:?} names no file")]
    NoFile {
        /// The path as given.
        path: String,
    },
}

/// Checks that `path` is a plain relative path that stays inside its root, and returns it
/// normalised (`/`-separated, no `.` parts).
///
/// # Errors
///
/// A [`PathError`] saying what is wrong with the path.
pub fn check_relative_path(path: &str) -> Result<String, PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.starts_with('/') || path.starts_with('\\') || path.contains(':') {
        return Err(PathError::Absolute { path: path.into() });
    }
    let mut parts = Vec::new();
    for part in path.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => return Err(PathError::Escapes { path: path.into() }),
            p if p.chars().any(char::is_control) => {
                return Err(PathError::ControlCharacters { path: path.into() });
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(PathError::NoFile { path: path.into() });
    }
    Ok(parts.join("/"))
}

/// Reads a bundle folder from disk. Symlinks and special files are rejected (not followed);
/// reading stops early once the limits are clearly exceeded, so a huge tree costs little.
pub fn read_dir(dir: &Path, limits: &Limits) -> Result<BundleFiles, Vec<BundleError>> {
    let mut files = BundleFiles::new(dir.display().to_string());
    let mut errors = Vec::new();
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) => {
            return Err(vec![
                files.error(".", format!("cannot read the bundle folder: {e}")),
            ]);
        }
    };
    if !meta.is_dir() {
        return Err(vec![files.error(
            ".",
            "not a folder; pass the bundle folder (e.g. my-template/v1)",
        )]);
    }
    let mut stack = vec![(dir.to_path_buf(), String::new(), 0usize)];
    let mut budget = limits.max_total_bytes.saturating_mul(2);
    while let Some((path, rel, depth)) = stack.pop() {
        let entries = match std::fs::read_dir(&path) {
            Ok(e) => e,
            Err(e) => {
                errors.push(files.error(&rel, format!("cannot read folder: {e}")));
                continue;
            }
        };
        let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            let child_rel = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if name == ".git" {
                continue;
            }
            let meta = match entry.path().symlink_metadata() {
                Ok(m) => m,
                Err(e) => {
                    errors.push(files.error(&child_rel, format!("cannot read: {e}")));
                    continue;
                }
            };
            if meta.file_type().is_symlink() {
                errors.push(files.error(
                    &child_rel,
                    "is a symbolic link; bundles may not contain links (copy the file in instead)",
                ));
            } else if meta.is_dir() {
                if depth + 1 > limits.max_depth {
                    errors.push(files.error(
                        &child_rel,
                        format!("nested deeper than {} folders", limits.max_depth),
                    ));
                } else {
                    stack.push((entry.path(), child_rel, depth + 1));
                }
            } else if meta.is_file() {
                if files.len() > limits.max_files {
                    errors.push(files.error(
                        ".",
                        format!(
                            "bundle has more than {} files; remove files that are not part of the template",
                            limits.max_files
                        ),
                    ));
                    return Err(errors);
                }
                if meta.len() > limits.max_file_bytes || meta.len() > budget {
                    errors.push(files.error(
                        &child_rel,
                        format!(
                            "file is {} bytes, more than the limit of {} bytes",
                            meta.len(),
                            limits.max_file_bytes.min(limits.max_total_bytes)
                        ),
                    ));
                    continue;
                }
                budget = budget.saturating_sub(meta.len());
                match std::fs::read(entry.path()) {
                    Ok(bytes) => {
                        if let Err(e) = files.insert(&child_rel, bytes) {
                            errors.push(e);
                        }
                    }
                    Err(e) => errors.push(files.error(&child_rel, format!("cannot read: {e}"))),
                }
            } else {
                errors.push(files.error(&child_rel, "is not a regular file or folder"));
            }
        }
    }
    errors.extend(files.check_limits(limits));
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(errors)
    }
}

/// The engine that renders an `IaC` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Jinja, as Proton ran it (minijinja here).
    Jinja,
    /// Handlebars (`.hbs` templates), as Proton supported them.
    Handlebars,
    /// No rendering: Terraform files are passed through with generated input files.
    Hcl,
}

/// The `IaC` language of a rendered file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// AWS `CloudFormation` (YAML or JSON).
    Cloudformation,
    /// Terraform (self-managed provisioning).
    Terraform,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    infrastructure: RawInfra,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInfra {
    templates: Vec<RawManifestTemplate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifestTemplate {
    file: String,
    rendering_engine: Engine,
    template_language: Language,
}

/// One `IaC` file of an infrastructure folder, with its engine and language.
#[derive(Debug, Clone)]
pub struct IacFile {
    /// Path relative to the bundle (e.g. `instance_infrastructure/cloudformation.yaml`).
    pub path: String,
    /// The file's text.
    pub source: String,
    /// Rendering engine from the manifest.
    pub engine: Engine,
    /// `IaC` language from the manifest.
    pub language: Language,
}

/// An infrastructure folder (`infrastructure/`, `instance_infrastructure/`,
/// `pipeline_infrastructure/`, or a component's folder) after reading its manifest.
#[derive(Debug, Clone)]
pub struct Infrastructure {
    /// The folder relative to the bundle.
    pub folder: String,
    /// Its `IaC` files, in manifest order.
    pub files: Vec<IacFile>,
    /// `CodeBuild` provisioning (`rendering_engine: codebuild`): every file of the folder
    /// (path relative to the folder, text), the manifest included; `files` is then empty.
    /// The manifest's commands are read by `provision::codebuild`.
    pub codebuild: Option<Vec<(String, String)>>,
}

impl Infrastructure {
    /// The language of the folder (all files share one).
    #[must_use]
    pub fn language(&self) -> Language {
        self.files
            .first()
            .map_or(Language::Cloudformation, |f| f.language)
    }
}

/// Reads `folder/manifest.yaml` and the files it names.
pub fn read_infrastructure(
    files: &BundleFiles,
    folder: &str,
) -> Result<Infrastructure, Vec<BundleError>> {
    let manifest_path = if folder.is_empty() {
        "manifest.yaml".to_string()
    } else {
        format!("{folder}/manifest.yaml")
    };
    let text = files.text(&manifest_path).map_err(|e| vec![e])?;
    if let Some(result) = read_codebuild(files, folder, &manifest_path, text) {
        return result;
    }
    let raw: RawManifest = yaml::from_str(text).map_err(|e| {
        vec![files.error(
            &manifest_path,
            format!(
                "{e}; expected `infrastructure: {{templates: [{{file, rendering_engine: jinja|handlebars|hcl, template_language: cloudformation|terraform}}]}}`"
            ),
        )]
    })?;
    let mut errors = Vec::new();
    let mut out = Infrastructure {
        folder: folder.to_string(),
        files: Vec::new(),
        codebuild: None,
    };
    if raw.infrastructure.templates.is_empty() {
        errors.push(files.error(
            &format!("{manifest_path}: infrastructure.templates"),
            "lists no template file; add one entry",
        ));
    }
    let languages: Vec<Language> = raw
        .infrastructure
        .templates
        .iter()
        .map(|t| t.template_language)
        .collect();
    if languages.windows(2).any(|w| w[0] != w[1]) {
        errors.push(files.error(
            &format!("{manifest_path}: infrastructure.templates"),
            "mixes template languages; one folder is either CloudFormation or Terraform",
        ));
    }
    for (i, t) in raw.infrastructure.templates.iter().enumerate() {
        let field = format!("{manifest_path}: infrastructure.templates[{i}]");
        match (t.rendering_engine, t.template_language) {
            (Engine::Hcl, Language::Cloudformation) => errors.push(files.error(
                &field,
                "rendering_engine hcl goes with template_language terraform; use jinja or handlebars for CloudFormation",
            )),
            (Engine::Jinja | Engine::Handlebars, Language::Terraform) => errors.push(files.error(
                &field,
                "Terraform templates are not rendered; use rendering_engine: hcl",
            )),
            _ => {}
        }
        if t.file == "*" {
            if t.template_language != Language::Terraform {
                errors.push(files.error(
                    &format!("{field}.file"),
                    "\"*\" is only allowed for Terraform; name the CloudFormation file",
                ));
                continue;
            }
            let prefix = if folder.is_empty() {
                String::new()
            } else {
                format!("{folder}/")
            };
            let all: Vec<(String, String)> = if folder.is_empty() {
                Vec::new()
            } else {
                files
                    .under(folder)
                    .filter(|(p, _)| *p != manifest_path)
                    .filter(|(p, _)| {
                        // Proton matched file names exactly (`.tf`, not `.TF`).
                        #[allow(clippy::case_sensitive_file_extension_comparisons)]
                        let tf = p.ends_with(".tf");
                        !p[prefix.len()..].contains('/') && tf
                    })
                    .map(|(p, b)| (p.to_string(), String::from_utf8_lossy(b).into_owned()))
                    .collect()
            };
            if all.is_empty() {
                errors.push(files.error(&field, "\"*\" matches no .tf files in the folder"));
            }
            for (path, source) in all {
                out.files.push(IacFile {
                    path,
                    source,
                    engine: t.rendering_engine,
                    language: t.template_language,
                });
            }
            continue;
        }
        let rel = match check_relative_path(&t.file) {
            Ok(r) => r,
            Err(e) => {
                errors.push(files.error(&format!("{field}.file"), e.to_string()));
                continue;
            }
        };
        let path = if folder.is_empty() {
            rel
        } else {
            format!("{folder}/{rel}")
        };
        match files.text(&path) {
            Ok(source) => out.files.push(IacFile {
                path,
                source: source.to_string(),
                engine: t.rendering_engine,
                language: t.template_language,
            }),
            Err(mut e) => {
                e.message = format!(
                    "{} (named by {manifest_path}); add the file or fix `file`",
                    e.message
                );
                errors.push(e);
            }
        }
    }
    if out.language() == Language::Cloudformation && out.files.len() > 1 {
        errors.push(files.error(
            &format!("{manifest_path}: infrastructure.templates"),
            "CloudFormation allows exactly one template file per folder",
        ));
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// A `CodeBuild` provisioning folder (`rendering_engine: codebuild` in its manifest): `None`
/// for any other manifest. Its manifest is checked by `provision::codebuild`; every
/// file of the folder travels to `CodeBuild` as it is (text files only).
fn read_codebuild(
    files: &BundleFiles,
    folder: &str,
    manifest_path: &str,
    text: &str,
) -> Option<Result<Infrastructure, Vec<BundleError>>> {
    if !codebuild::is_codebuild_manifest(text) {
        return None;
    }
    if folder.is_empty() {
        // A directly defined component's folder.
        return Some(Err(vec![files.error(
            manifest_path,
            "rendering_engine codebuild is for environments and services; components cannot use CodeBuild provisioning (nor could they in Proton): use CloudFormation",
        )]));
    }
    if let Err(e) = codebuild::Manifest::parse(text) {
        return Some(Err(vec![files.error(manifest_path, e)]));
    }
    let prefix = format!("{folder}/");
    let mut bundle = Vec::new();
    let mut errors = Vec::new();
    let all: Vec<(String, Vec<u8>)> = files
        .under(folder)
        .map(|(p, b)| (p.to_string(), b.to_vec()))
        .collect();
    for (path, bytes) in all {
        match String::from_utf8(bytes) {
            Ok(t) => bundle.push((path[prefix.len()..].to_string(), t)),
            Err(_) => errors.push(files.error(
                &path,
                "is not UTF-8 text; CodeBuild bundles carry text files only (fetch binaries in the provision commands)",
            )),
        }
    }
    Some(if errors.is_empty() {
        Ok(Infrastructure {
            folder: folder.to_string(),
            files: Vec::new(),
            codebuild: Some(bundle),
        })
    } else {
        Err(errors)
    })
}

/// Environment or service template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateKind {
    /// Has `infrastructure/`.
    Environment,
    /// Has `instance_infrastructure/` (and maybe `pipeline_infrastructure/`).
    Service,
}

impl fmt::Display for TemplateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Environment => "environment",
            Self::Service => "service",
        })
    }
}

/// A reference to an environment template major version, as in `fargate-env:1`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EnvTemplateRef {
    /// Environment template name.
    pub name: String,
    /// Major version.
    pub major: u32,
}

impl fmt::Display for EnvTemplateRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.major)
    }
}

/// Why [`EnvTemplateRef::parse`] refused a reference. Every message quotes the text as
/// given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvTemplateRefError {
    /// No `:` between the name and the major version.
    #[error("{input:?} is not of the form <environment-template>:<major>, e.g. fargate-env:1")]
    Form {
        /// The text as given.
        input: String,
    },
    /// The part after the `:` is not a whole number.
    #[error("{input:?}: major version {major:?} is not a whole number")]
    Major {
        /// The text as given.
        input: String,
        /// The part after the `:`, as given.
        major: String,
        /// Why it did not parse.
        #[source]
        source: std::num::ParseIntError,
    },
    /// Nothing (or only spaces) before the `:`.
    #[error("{input:?}: the template name is empty")]
    EmptyName {
        /// The text as given.
        input: String,
    },
}

impl EnvTemplateRef {
    /// Parses `name:major`.
    ///
    /// # Errors
    ///
    /// An [`EnvTemplateRefError`] naming the part that is wrong.
    pub fn parse(s: &str) -> Result<Self, EnvTemplateRefError> {
        let (name, major) = s
            .trim()
            .split_once(':')
            .ok_or_else(|| EnvTemplateRefError::Form { input: s.into() })?;
        let major = major
            .trim()
            .parse()
            .map_err(|source| EnvTemplateRefError::Major {
                input: s.into(),
                major: major.into(),
                source,
            })?;
        if name.trim().is_empty() {
            return Err(EnvTemplateRefError::EmptyName { input: s.into() });
        }
        Ok(Self {
            name: name.trim().to_string(),
            major,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistration {
    #[serde(default)]
    compatible_environments: Vec<String>,
    #[serde(default)]
    supported_component_sources: Vec<String>,
}

/// Component sources a service template may accept.
pub const DIRECTLY_DEFINED: &str = "DIRECTLY_DEFINED";

/// A validated template bundle (one major version of one template).
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Template name.
    pub name: String,
    /// Major version (the `vN` folder).
    pub major: u32,
    /// Environment or service.
    pub kind: TemplateKind,
    /// The input schema.
    pub schema: Schema,
    /// `infrastructure/` (environment) or `instance_infrastructure/` (service).
    pub infrastructure: Infrastructure,
    /// `pipeline_infrastructure/`, if the service template has one.
    pub pipeline: Option<Infrastructure>,
    /// Environment templates a service template may deploy into.
    pub compatible_environments: Vec<EnvTemplateRef>,
    /// e.g. `DIRECTLY_DEFINED`.
    pub supported_component_sources: Vec<String>,
}

impl Bundle {
    /// Whether directly defined components may be attached to instances of this template.
    #[must_use]
    pub fn supports_components(&self) -> bool {
        self.supported_component_sources
            .iter()
            .any(|s| s == DIRECTLY_DEFINED)
    }

    /// Parses and checks a bundle's files, reporting every problem at once.
    pub fn load(name: &str, major: u32, files: &BundleFiles) -> Result<Self, Vec<BundleError>> {
        let mut errors = Vec::new();
        let has_env = files.has_folder("infrastructure");
        let has_svc = files.has_folder("instance_infrastructure");
        let kind = match (has_env, has_svc) {
            (true, false) => Some(TemplateKind::Environment),
            (false, true) => Some(TemplateKind::Service),
            (true, true) => {
                errors.push(files.error(
                    ".",
                    "has both infrastructure/ (environment) and instance_infrastructure/ (service); keep one",
                ));
                None
            }
            (false, false) => {
                errors.push(files.error(
                    ".",
                    "has neither infrastructure/ (environment template) nor instance_infrastructure/ (service template); is this the vN folder of a Proton bundle?",
                ));
                None
            }
        };
        if kind == Some(TemplateKind::Environment) && files.has_folder("pipeline_infrastructure") {
            errors.push(files.error(
                "pipeline_infrastructure",
                "environment templates have no pipeline; remove the folder or use instance_infrastructure/",
            ));
        }
        let schema = match files.text("schema/schema.yaml") {
            Ok(text) => {
                match Schema::parse(text, &format!("{}/schema/schema.yaml", files.origin)) {
                    Ok(s) => Some(s),
                    Err(es) => {
                        errors.extend(es.into_iter().map(|e| BundleError {
                            origin: files.origin.clone(),
                            location: format!("schema/schema.yaml: {}", e.path),
                            message: e.message,
                        }));
                        None
                    }
                }
            }
            Err(e) => {
                errors.push(e);
                None
            }
        };
        if let (Some(schema), Some(kind)) = (&schema, kind) {
            let wanted = match kind {
                TemplateKind::Environment => InputKind::Environment,
                TemplateKind::Service => InputKind::Service,
            };
            if schema.input_type(wanted).is_none() {
                errors.push(files.error(
                    "schema/schema.yaml: schema",
                    format!(
                        "a {kind} template's schema needs `{}_input_type`",
                        match kind {
                            TemplateKind::Environment => "environment",
                            TemplateKind::Service => "service",
                        }
                    ),
                ));
            }
            let has_pipeline = files.has_folder("pipeline_infrastructure");
            if has_pipeline && schema.input_type(InputKind::Pipeline).is_none() {
                // Proton allowed pipelines without inputs; nothing to report.
            }
            if !has_pipeline && schema.input_type(InputKind::Pipeline).is_some() {
                errors.push(files.error(
                    "schema/schema.yaml: schema.pipeline_input_type",
                    "declares pipeline inputs but the bundle has no pipeline_infrastructure/ folder",
                ));
            }
        }
        let infra_folder = match kind {
            Some(TemplateKind::Service) => "instance_infrastructure",
            _ => "infrastructure",
        };
        let infrastructure = if kind.is_some() {
            read_infrastructure(files, infra_folder)
                .map_err(|es| errors.extend(es))
                .ok()
        } else {
            None
        };
        let pipeline =
            if kind == Some(TemplateKind::Service) && files.has_folder("pipeline_infrastructure") {
                match read_infrastructure(files, "pipeline_infrastructure") {
                    // CloudFormation, or Terraform (self-managed, like instances).
                    Ok(p) => Some(p),
                    Err(es) => {
                        errors.extend(es);
                        None
                    }
                }
            } else {
                None
            };
        let (compatible_environments, supported_component_sources) =
            read_registration(files, kind, &mut errors);
        match (kind, schema, infrastructure) {
            (Some(kind), Some(schema), Some(infrastructure)) if errors.is_empty() => Ok(Self {
                name: name.to_string(),
                major,
                kind,
                schema,
                infrastructure,
                pipeline,
                compatible_environments,
                supported_component_sources,
            }),
            _ => Err(errors),
        }
    }
}

fn read_registration(
    files: &BundleFiles,
    kind: Option<TemplateKind>,
    errors: &mut Vec<BundleError>,
) -> (Vec<EnvTemplateRef>, Vec<String>) {
    let mut envs = Vec::new();
    let mut sources = Vec::new();
    let reg = ".template-registration.yaml";
    let old = ".compatible-envs";
    if let Some(bytes) = files.get(reg) {
        let text = String::from_utf8_lossy(bytes);
        match yaml::from_str::<Option<RawRegistration>>(&text) {
            Ok(raw) => {
                let raw = raw.unwrap_or(RawRegistration {
                    compatible_environments: Vec::new(),
                    supported_component_sources: Vec::new(),
                });
                for (i, e) in raw.compatible_environments.iter().enumerate() {
                    match EnvTemplateRef::parse(e) {
                        Ok(r) => envs.push(r),
                        Err(e) => errors.push(files.error(
                            &format!("{reg}: compatible_environments[{i}]"),
                            e.to_string(),
                        )),
                    }
                }
                for (i, s) in raw.supported_component_sources.iter().enumerate() {
                    if s == DIRECTLY_DEFINED {
                        sources.push(s.clone());
                    } else {
                        errors.push(files.error(
                            &format!("{reg}: supported_component_sources[{i}]"),
                            format!("{s:?} is not a component source; the only one is DIRECTLY_DEFINED"),
                        ));
                    }
                }
            }
            Err(e) => errors.push(files.error(
                reg,
                format!(
                    "{e}; expected `compatible_environments: [\"env-template:1\"]` and optional `supported_component_sources: [DIRECTLY_DEFINED]`"
                ),
            )),
        }
    } else if let Some(bytes) = files.get(old) {
        for (i, line) in String::from_utf8_lossy(bytes).lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match EnvTemplateRef::parse(line) {
                Ok(r) => envs.push(r),
                Err(e) => errors.push(files.error(&format!("{old}:{}", i + 1), e.to_string())),
            }
        }
    }
    match kind {
        Some(TemplateKind::Service) if envs.is_empty() => errors.push(files.error(
            reg,
            "a service template must list its compatible environment templates in .template-registration.yaml (compatible_environments: [\"my-env:1\"]) or .compatible-envs",
        )),
        Some(TemplateKind::Environment) if files.get(reg).is_some() || files.get(old).is_some() => {
            errors.push(files.error(
                reg,
                "environment templates have no compatible environments or component sources; remove the file",
            ));
        }
        _ => {}
    }
    (envs, sources)
}

/// A directly defined component: a folder holding `manifest.yaml` and one `IaC` file.
#[derive(Debug, Clone)]
pub struct ComponentBundle {
    /// The folder's infrastructure.
    pub infrastructure: Infrastructure,
}

impl ComponentBundle {
    /// Reads a component folder's manifest and `IaC` file.
    pub fn load(files: &BundleFiles) -> Result<Self, Vec<BundleError>> {
        let infrastructure = read_infrastructure(files, "")?;
        Ok(Self { infrastructure })
    }
}

/// What a folder holds, guessed from its layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// A template major version folder (`vN/`).
    Template,
    /// A directly defined component folder (`manifest.yaml` at the top).
    Component,
}

/// Tells a template bundle from a component folder.
#[must_use]
pub fn detect_layout(files: &BundleFiles) -> Layout {
    if files.get("manifest.yaml").is_some()
        && !files.has_folder("infrastructure")
        && !files.has_folder("instance_infrastructure")
    {
        Layout::Component
    } else {
        Layout::Template
    }
}

/// Guesses a bundle's template name and major version from its folder path:
/// `.../fargate-svc/v1` gives (`fargate-svc`, 1).
#[must_use]
pub fn name_and_major_from_path(dir: &Path) -> (String, Option<u32>) {
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let base = canonical
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(major) = base.strip_prefix('v').and_then(|m| m.parse::<u32>().ok()) {
        let parent = canonical
            .parent()
            .and_then(Path::file_name)
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        (parent, Some(major))
    } else {
        (base, None)
    }
}

/// A `serde_yaml` error as a short sentence with its line and column.
#[must_use]
pub fn yaml_error(e: &serde_yaml::Error) -> String {
    let msg = e.to_string();
    let msg = match e.location() {
        Some(loc) if !msg.contains("line") => {
            format!("{msg} (line {}, column {})", loc.line(), loc.column())
        }
        _ => msg,
    };
    if msg.contains("recursion limit exceeded") {
        format!("{msg}: the document is nested too deeply (over 128 levels); flatten it")
    } else if msg.contains("repetition limit exceeded") {
        format!("{msg}: aliases expand to too many nodes; write the values out instead")
    } else {
        msg
    }
}

#[cfg(test)]
mod tests;
