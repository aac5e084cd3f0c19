//! Which template release a resource runs, and whether an instance may run where it asks.
//!
//! A resource follows the highest registered minor of its template's major, or the exact
//! minor its spec pins, or (for a held-back minor rollout) the version the caller pins by
//! resource id. A deployed resource is never moved down by itself (it keeps a withdrawn
//! minor it runs), and a new resource never gets a halted or withdrawn minor. An instance must target an environment with a valid declaration, that
//! accepts its repo (`allowed_service_repos`) and whose template major its service template
//! lists as compatible; its inputs must match the schema. Pure: no I/O, no rendering.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::ownership::EnvVerdict;
use crate::catalog::releases::{Catalog, Release};
use crate::catalog::schema::{InputKind, Violation};
use crate::catalog::{Bundle, TemplateKind};
use crate::plan::Version;
use crate::spec::{InstanceSpec, TemplateRef};

/// The catalogue as [`super::compute_pinned`] sees it.
pub(crate) struct Templates<'a> {
    /// Registered releases.
    pub catalog: &'a Catalog,
    /// Whether some template repo could not be read (a missing template may be there).
    pub repos_failed: bool,
    /// Resource id → the version it stays on.
    pub pins: &'a BTreeMap<String, Version>,
    /// Resource id → the template and version it runs (from the deployed records).
    pub deployed: &'a BTreeMap<&'a str, (&'a str, Version)>,
    /// Halted rollouts: never given to a new resource.
    pub halted: &'a BTreeSet<(String, Version)>,
}

/// Why a declaration has no release to render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ResolveError {
    /// The spec names no template (Proton's header-less form).
    #[error(
        "{path}: template: missing; add `template: {{name: <{kind}-template>, major: N}}`, or map the file (or its folder) to a template in the config: `templates = [{{ path = \"{path}\", name = \"<{kind}-template>\", major = N }}]` in its [[spec_repos]] entry"
    )]
    Missing {
        /// The spec file.
        path: String,
        /// `environment` or `service`: the kind the file needs.
        kind: &'static str,
    },
    /// No release of the template is known, and a template repo could not be read.
    #[error("template {template} is not available: a template repo could not be read")]
    Unavailable {
        /// The template asked for.
        template: TemplateRef,
    },
    /// No release of the template's major (or pinned minor) is registered.
    #[error(
        "{path}: template: no registered release of {template}; tag one (e.g. {}/v{}.0)",
        .template.name, .template.major
    )]
    NoRelease {
        /// The spec file.
        path: String,
        /// The template asked for.
        template: TemplateRef,
    },
    /// The release is of the other kind (a service template for an environment, say).
    #[error("{path}: template: {} is {}", .template.name, kind_with_article(*.found))]
    WrongKind {
        /// The spec file.
        path: String,
        /// The template asked for.
        template: TemplateRef,
        /// The version found.
        version: Version,
        /// The kind the release is.
        found: TemplateKind,
    },
}

fn kind_with_article(kind: TemplateKind) -> &'static str {
    match kind {
        TemplateKind::Environment => "an environment template",
        TemplateKind::Service => "a service template",
    }
}

impl ResolveError {
    /// The template name the invalid row records (empty when the spec names none).
    pub fn template(&self) -> &str {
        match self {
            Self::Missing { .. } => "",
            Self::Unavailable { template }
            | Self::NoRelease { template, .. }
            | Self::WrongKind { template, .. } => &template.name,
        }
    }

    /// The version the invalid row records: the one found, else the one asked for.
    pub fn version(&self) -> Version {
        match self {
            Self::Missing { .. } => Version { major: 0, minor: 0 },
            Self::Unavailable { template } | Self::NoRelease { template, .. } => Version {
                major: template.major,
                minor: template.minor.unwrap_or(0),
            },
            Self::WrongKind { version, .. } => *version,
        }
    }
}

impl<'a> Templates<'a> {
    /// The release the caller pinned resource `id` to, if any (and still registered).
    pub fn pinned(&self, id: &str, template: &str) -> Option<&'a Release> {
        let v = self.pins.get(id)?;
        self.catalog.resolve(template, v.major, Some(v.minor))
    }

    /// The release resource `id` runs, given the release its declaration resolves to
    /// (`base`, of `template`): the caller's pin first; then, unless the spec pins a minor
    /// (`spec_minor`), a deployed resource never moves down by itself (it stays on a newer
    /// minor it runs, e.g. one whose tag was deleted), and a new resource never gets a halted
    /// or withdrawn minor (it gets the newest usable one).
    pub fn for_resource(
        &self,
        id: &str,
        template: &str,
        base: &'a Release,
        spec_minor: bool,
    ) -> &'a Release {
        // A pin holds within the major the spec follows: a merged major upgrade wins.
        if let Some(p) = self.pinned(id, template)
            && p.version.major == base.version.major
        {
            return p;
        }
        if spec_minor {
            return base;
        }
        let major = base.version.major;
        let same_kind = |r: &Release| r.bundle.kind == base.bundle.kind;
        match self.deployed.get(id) {
            Some(&(t, v)) if t == template && v.major == major && v > base.version => self
                .catalog
                .resolve(template, major, Some(v.minor))
                .filter(|r| same_kind(r))
                .unwrap_or(base),
            Some(_) => base,
            None => {
                let usable = |r: &Release| {
                    r.usable()
                        && same_kind(r)
                        && !self.halted.contains(&(template.to_string(), r.version))
                };
                if usable(base) {
                    base
                } else {
                    self.catalog.newest(template, major, usable).unwrap_or(base)
                }
            }
        }
    }

    /// The release `template` resolves to for a spec at `path` asking for a `kind` template:
    /// the resource's pin (`pinned`) first, else the spec's pinned minor, else the highest
    /// minor of its major.
    pub fn resolve(
        &self,
        path: &str,
        template: Option<&TemplateRef>,
        kind: TemplateKind,
        pinned: Option<&'a Release>,
    ) -> Result<&'a Release, ResolveError> {
        let Some(t) = template else {
            return Err(ResolveError::Missing {
                path: path.to_string(),
                kind: match kind {
                    TemplateKind::Environment => "environment",
                    TemplateKind::Service => "service",
                },
            });
        };
        let Some(release) = pinned.or_else(|| self.catalog.resolve(&t.name, t.major, t.minor))
        else {
            return Err(if self.repos_failed && !self.catalog.knows(&t.name) {
                ResolveError::Unavailable {
                    template: t.clone(),
                }
            } else {
                ResolveError::NoRelease {
                    path: path.to_string(),
                    template: t.clone(),
                }
            });
        };
        if release.bundle.kind != kind {
            return Err(ResolveError::WrongKind {
                path: path.to_string(),
                template: t.clone(),
                version: release.version,
                found: release.bundle.kind,
            });
        }
        Ok(release)
    }
}

/// What an instance needs to know of the environment it targets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EnvTarget<'a> {
    /// The environment's template name.
    pub template: &'a str,
    /// The major it follows.
    pub major: u32,
    /// The spec repos it accepts services from; `None` means any.
    pub allowed_repos: Option<&'a [String]>,
}

/// Environments instances may target: those declared once with a template, whether or not
/// the template resolves (its own row says what is wrong with it).
pub(crate) fn environment_targets<'a>(
    environments: &BTreeMap<&'a str, EnvVerdict<'a>>,
) -> BTreeMap<&'a str, EnvTarget<'a>> {
    environments
        .iter()
        .filter_map(|(name, verdict)| {
            let EnvVerdict::Deploy(d) = verdict else {
                return None;
            };
            let t = d.spec.template.as_ref()?;
            let target = EnvTarget {
                template: &t.name,
                major: t.major,
                allowed_repos: d.spec.allowed_service_repos.as_deref(),
            };
            Some((*name, target))
        })
        .collect()
}

/// One instance of a service declaration, asking to run somewhere.
pub(crate) struct Placement<'a> {
    /// The spec file.
    pub path: &'a str,
    /// Its repo.
    pub repo: &'a str,
    /// The instance's index in the file (for field names in errors).
    pub index: usize,
    /// The instance.
    pub instance: &'a InstanceSpec,
    /// The service template's name.
    pub template: &'a str,
    /// The release the instance runs.
    pub release: &'a Release,
}

/// Why an instance cannot run where it asks, or with the inputs it gives.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum PlacementError {
    /// The environment has no single valid declaration.
    #[error(
        "{path}: instances[{index}].environment: environment {environment:?} has no valid declaration in a platform repo (it is missing, declared twice, or invalid: see the environment's own error)"
    )]
    NoEnvironment {
        /// The spec file.
        path: String,
        /// The instance's index.
        index: usize,
        /// The environment asked for.
        environment: String,
    },
    /// The environment's `allowed_service_repos` leaves this repo out.
    #[error(
        "{path}: instances[{index}].environment: environment {environment:?} only accepts services from {} (its allowed_service_repos); repo {repo:?} is not allowed: pick another environment, or ask the platform team to add the repo there",
        .allowed.join(", ")
    )]
    RepoNotAllowed {
        /// The spec file.
        path: String,
        /// The instance's index.
        index: usize,
        /// The environment asked for.
        environment: String,
        /// The repos it accepts.
        allowed: Vec<String>,
        /// The declaring repo.
        repo: String,
    },
    /// The service template does not list the environment's template major.
    #[error(
        "{path}: instances[{index}].environment: {environment:?} runs {env_template}:{env_major}, which {template} v{major} is not compatible with (compatible: {})",
        .compatible.join(", ")
    )]
    Incompatible {
        /// The spec file.
        path: String,
        /// The instance's index.
        index: usize,
        /// The environment asked for.
        environment: String,
        /// Its template.
        env_template: String,
        /// Its major.
        env_major: u32,
        /// The service template.
        template: String,
        /// The service template's major.
        major: u32,
        /// What the service template is compatible with.
        compatible: Vec<String>,
    },
    /// A component is attached but the template does not take components.
    #[error(
        "{path}: instances[{index}].component: {template} v{major} does not accept components (add DIRECTLY_DEFINED to supported_component_sources)"
    )]
    NoComponents {
        /// The spec file.
        path: String,
        /// The instance's index.
        index: usize,
        /// The service template.
        template: String,
        /// Its major.
        major: u32,
    },
    /// The inputs do not match the template's schema.
    #[error("{}", self::violations(.path, .violations))]
    Inputs {
        /// The spec file.
        path: String,
        /// Every violation.
        violations: Vec<Violation>,
    },
}

/// Schema violations of one spec file, one per line.
pub(crate) fn violations(path: &str, vs: &[Violation]) -> String {
    vs.iter()
        .map(|v| format!("{path}: {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Checks where an instance runs and returns its validated inputs (defaults filled in).
// An error is built at most once per invalid instance per cycle: its size costs nothing.
#[allow(clippy::result_large_err)]
pub(crate) fn check_instance(
    p: &Placement<'_>,
    targets: &BTreeMap<&str, EnvTarget<'_>>,
) -> Result<Value, PlacementError> {
    let (path, index, environment) = (p.path.to_string(), p.index, &p.instance.environment);
    let Some(target) = targets.get(environment.as_str()) else {
        return Err(PlacementError::NoEnvironment {
            path,
            index,
            environment: environment.clone(),
        });
    };
    if let Some(allowed) = target.allowed_repos
        && !allowed.iter().any(|r| r == p.repo)
    {
        return Err(PlacementError::RepoNotAllowed {
            path,
            index,
            environment: environment.clone(),
            allowed: allowed.to_vec(),
            repo: p.repo.to_string(),
        });
    }
    let bundle: &Bundle = &p.release.bundle;
    let major = p.release.version.major;
    if !bundle
        .compatible_environments
        .iter()
        .any(|c| c.name == target.template && c.major == target.major)
    {
        return Err(PlacementError::Incompatible {
            path,
            index,
            environment: environment.clone(),
            env_template: target.template.to_string(),
            env_major: target.major,
            template: p.template.to_string(),
            major,
            compatible: bundle
                .compatible_environments
                .iter()
                .map(ToString::to_string)
                .collect(),
        });
    }
    if p.instance.component.is_some() && !bundle.supports_components() {
        return Err(PlacementError::NoComponents {
            path,
            index,
            template: p.template.to_string(),
            major,
        });
    }
    bundle
        .schema
        .validate(
            InputKind::Service,
            &p.instance.inputs.value(),
            &format!("instances[{index}].spec"),
        )
        .map_err(|violations| PlacementError::Inputs { path, violations })
}

#[cfg(test)]
mod tests;
