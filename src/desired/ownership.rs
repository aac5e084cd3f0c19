//! Who may declare and deploy what: the ownership rules of [`super`], as one pure function.
//!
//! [`decide`] reads the spec repos as loaded (their declarations, and which repos are unknown)
//! and where each deployed resource came from, and returns who deploys each name, the repos
//! whose resources must be kept, and the problems to show. It never renders, never reads
//! git or the store, and never makes a repo *known*: a repo it cannot vouch for goes into
//! `unknown_repos`, which is what keeps the planner from deleting that repo's resources.
//! A repo that deployed resources but is neither configured nor retired is such a repo
//! (`unconfigured`); only a retired one (`retiring`) is left out of `unknown_repos` with
//! nothing declared, which is what lets the planner delete its resources.

use std::collections::{BTreeMap, BTreeSet};

use super::{SpecEntry, SpecRepoState, environment_id};
use crate::spec::{EnvironmentSpec, ServiceSpec, SpecFile};

/// Where each deployed resource was deployed from: resource id → spec repo name.
pub(crate) type DeployedFrom<'a> = BTreeMap<&'a str, &'a str>;

/// One declaration of a name: the spec (`S`) as found in a file of a readable repo.
#[derive(Debug)]
pub(crate) struct Decl<'a, S> {
    /// The repo the file is in.
    pub repo: &'a SpecRepoState,
    /// The file.
    pub file: &'a SpecEntry,
    /// The parsed spec.
    pub spec: &'a S,
}

// Derived `Clone`/`Copy` would require `S: Copy`; a declaration is only references.
impl<S> Clone for Decl<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<S> Copy for Decl<'_, S> {}

impl<'a, S> Decl<'a, S> {
    /// The declaring repo's name.
    pub fn repo_name(&self) -> &'a str {
        &self.repo.repo
    }

    /// The file's path in its repo.
    pub fn path(&self) -> &'a str {
        &self.file.path
    }

    /// The spec commit the declaration was read at.
    pub fn commit(&self) -> Option<&'a String> {
        self.repo.commit.as_ref()
    }

    /// `repo:path`, as problems name a declaration.
    fn place(&self) -> String {
        format!("{}:{}", self.repo_name(), self.path())
    }
}

/// An environment declaration.
pub(crate) type EnvDecl<'a> = Decl<'a, EnvironmentSpec>;
/// A service declaration.
pub(crate) type SvcDecl<'a> = Decl<'a, ServiceSpec>;

/// What the rules decide for one environment name.
#[derive(Debug)]
pub(crate) enum EnvVerdict<'a> {
    /// Declared once: deploy this declaration.
    Deploy(EnvDecl<'a>),
    /// Declared more than once: one invalid row, carried by the declaration of the repo the
    /// environment is deployed from (or the first one).
    Duplicate {
        /// The declaration whose repo the invalid row names.
        carrier: EnvDecl<'a>,
        /// The error, naming every declaration.
        error: NameClash,
    },
}

/// What the rules decide for one service name.
#[derive(Debug)]
pub(crate) enum SvcVerdict<'a> {
    /// Deploy this declaration (the owner's, or the only one).
    Deploy(SvcDecl<'a>),
    /// The owner's repo cannot be read: nothing is rendered, and the declaring repos are
    /// unknown so that nothing of the service is deleted meanwhile.
    Withheld,
    /// Declared more than once with no single declaring owner: every instance of every
    /// declaration is invalid.
    Duplicate {
        /// Every declaration.
        decls: Vec<SvcDecl<'a>>,
        /// The error, naming every declaration.
        error: NameClash,
    },
}

/// The rules' decision for one service name, with the problems it raises.
#[derive(Debug)]
pub(crate) struct SvcDecision<'a> {
    /// Who deploys, if anyone.
    pub verdict: SvcVerdict<'a>,
    /// Declarations refused by the rules (one per refused file).
    pub problems: Vec<Problem>,
}

/// Everything [`decide`] decides.
#[derive(Debug, Default)]
pub(crate) struct Ownership<'a> {
    /// Environment name → verdict.
    pub environments: BTreeMap<&'a str, EnvVerdict<'a>>,
    /// Service name → decision.
    pub services: BTreeMap<&'a str, SvcDecision<'a>>,
    /// Repos whose deployed resources must be kept: unknown when loaded, or whose
    /// declarations were refused.
    pub unknown_repos: BTreeSet<String>,
    /// Problems not tied to one name: unknown repos, unparsable files, misplaced
    /// environments. Service problems are in their [`SvcDecision`].
    pub problems: Vec<Problem>,
    /// Repos that deployed resources and are no longer in the config (also in
    /// `unknown_repos`): their resources are kept.
    pub unconfigured: BTreeSet<String>,
    /// Retired repos that still have deployed resources, with how they were retired: their
    /// resources are deleted.
    pub retiring: BTreeMap<String, String>,
}

/// A problem the rules raise, shown to users as its text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Problem {
    /// The repo could not be read (fetch, parse of the tree, empty folder).
    #[error(
        "spec repo {repo}: {reason}; its resources are unknown and will not be changed or deleted"
    )]
    RepoUnknown {
        /// The repo.
        repo: String,
        /// Why, as loaded.
        reason: String,
    },
    /// Resources were deployed from a repo that is no longer in the config.
    #[error(
        "spec repo {repo} is not in the config, but {resources} resource(s) deployed from it are recorded; they are unknown and will not be changed or deleted. Add the repo back to the config, or delete them explicitly: set retired = true on its [[spec_repos]] entry, or run `protond forget {repo}`"
    )]
    RepoNotConfigured {
        /// The repo, as recorded.
        repo: String,
        /// How many of its resources are recorded.
        resources: usize,
    },
    /// A spec file did not parse: one problem per error, as the parser wrote it.
    #[error("{0}")]
    InvalidSpec(String),
    /// An environment declared in a repo that is not a platform repo.
    #[error(
        "{path}: environments may only be declared in platform repos; move it, or set platform = true for spec repo {repo:?}"
    )]
    EnvironmentOutsidePlatform {
        /// The file.
        path: String,
        /// Its repo.
        repo: String,
    },
    /// A service deployed from a repo that cannot be read now is declared elsewhere.
    #[error(
        "{repo}:{path}: name: service {service:?} is deployed from spec repo {:?}, which cannot be read now; this file may take it over once that repo is readable and no longer declares it",
        .owners.join(", ")
    )]
    OwnerUnreadable {
        /// The declaring repo.
        repo: String,
        /// The declaring file.
        path: String,
        /// The service.
        service: String,
        /// The repos it is deployed from that cannot be read.
        owners: Vec<String>,
    },
    /// A service owned by another repo is declared here too.
    #[error(
        "{repo}:{path}: name: service {service:?} belongs to spec repo {owner:?} ({owner_path}), which deployed it; rename the service in this file, or remove the file"
    )]
    OwnedElsewhere {
        /// The refused repo.
        repo: String,
        /// The refused file.
        path: String,
        /// The service.
        service: String,
        /// The owning repo.
        owner: String,
        /// The owner's file.
        owner_path: String,
    },
}

/// A name declared more than once; the invalid rows' error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NameClash {
    /// An environment name.
    #[error(
        "environment {name:?} is declared more than once ({}); a name belongs to exactly one spec file",
        .places.join(", ")
    )]
    Environment {
        /// The name.
        name: String,
        /// Every declaration, as `repo:path`.
        places: Vec<String>,
    },
    /// A service name.
    #[error(
        "service {name:?} is declared by more than one spec file ({}); a service belongs to exactly one repo",
        .places.join(", ")
    )]
    Service {
        /// The name.
        name: String,
        /// Every declaration, as `repo:path`.
        places: Vec<String>,
    },
}

/// Applies the ownership rules. `retired` names the repos a person retired (repo → how).
/// Pure: the same repos and records always give the same answer.
pub(crate) fn decide<'a>(
    spec_repos: &'a [SpecRepoState],
    retired: &BTreeMap<String, String>,
    deployed_from: &DeployedFrom<'_>,
) -> Ownership<'a> {
    let found = collect(spec_repos);
    let mut out = Ownership {
        unknown_repos: found.unknown_repos,
        problems: found.problems,
        ..Ownership::default()
    };
    unread_repos(spec_repos, retired, deployed_from, &mut out);
    for (name, decls) in found.environments {
        if let Some(verdict) = environment_verdict(name, &decls, deployed_from) {
            out.environments.insert(name, verdict);
        }
    }
    // In name order: a repo refused for one service is unknown for the next ones too.
    for (name, decls) in found.services {
        let owners = deployed_owners(name, deployed_from);
        let decision = service_decision(name, decls, &owners, &mut out.unknown_repos);
        out.services.insert(name, decision);
    }
    out
}

/// Sorts the repos that deployed resources but are not read: retired ones go to
/// `retiring` (their resources will be deleted); the others are unknown, with a problem, so
/// that a repo dropped from the config deletes nothing. A repo both configured and retired
/// cannot happen (the loader does not read retired repos); configured wins.
fn unread_repos(
    spec_repos: &[SpecRepoState],
    retired: &BTreeMap<String, String>,
    deployed_from: &DeployedFrom<'_>,
    out: &mut Ownership<'_>,
) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for repo in deployed_from.values() {
        *counts.entry(repo).or_default() += 1;
    }
    // By name: a scan of the repos for each repo was quadratic (issue 20: 25 million
    // compares at 5,000 repos).
    let read: BTreeSet<&str> = spec_repos.iter().map(|r| r.repo.as_str()).collect();
    for (repo, resources) in counts {
        if read.contains(repo) {
            continue;
        }
        if let Some(how) = retired.get(repo) {
            out.retiring.insert(repo.to_string(), how.clone());
            continue;
        }
        out.unknown_repos.insert(repo.to_string());
        out.unconfigured.insert(repo.to_string());
        out.problems.push(Problem::RepoNotConfigured {
            repo: repo.to_string(),
            resources,
        });
    }
}

/// Declarations found in the readable repos, before the per-name rules.
#[derive(Default)]
struct Found<'a> {
    environments: BTreeMap<&'a str, Vec<EnvDecl<'a>>>,
    services: BTreeMap<&'a str, Vec<SvcDecl<'a>>>,
    unknown_repos: BTreeSet<String>,
    problems: Vec<Problem>,
}

/// Collects every declaration. A repo is unknown when it could not be read, when one of its
/// files does not parse (that file may still declare what it deployed), or when it declares
/// an environment without being a platform repo.
fn collect(spec_repos: &[SpecRepoState]) -> Found<'_> {
    let mut found = Found::default();
    for repo in spec_repos {
        if let Some(reason) = &repo.unknown {
            found.unknown_repos.insert(repo.repo.clone());
            found.problems.push(Problem::RepoUnknown {
                repo: repo.repo.clone(),
                reason: reason.clone(),
            });
            continue;
        }
        for file in &repo.files {
            match &file.spec {
                Err(errors) => {
                    found.unknown_repos.insert(repo.repo.clone());
                    found
                        .problems
                        .extend(errors.iter().cloned().map(Problem::InvalidSpec));
                }
                Ok(SpecFile::Environment(_)) if !repo.platform => {
                    found.problems.push(Problem::EnvironmentOutsidePlatform {
                        path: file.path.clone(),
                        repo: repo.repo.clone(),
                    });
                    found.unknown_repos.insert(repo.repo.clone());
                }
                Ok(SpecFile::Environment(spec)) => {
                    let decl = Decl { repo, file, spec };
                    found.environments.entry(&spec.name).or_default().push(decl);
                }
                Ok(SpecFile::Service(spec)) => {
                    let decl = Decl { repo, file, spec };
                    found.services.entry(&spec.name).or_default().push(decl);
                }
            }
        }
    }
    found
}

/// An environment declared once deploys; declared more often, it is one invalid row.
fn environment_verdict<'a>(
    name: &str,
    decls: &[EnvDecl<'a>],
    deployed_from: &DeployedFrom<'_>,
) -> Option<EnvVerdict<'a>> {
    if let [only] = decls {
        return Some(EnvVerdict::Deploy(*only));
    }
    let deployed_repo = deployed_from.get(environment_id(name).as_str()).copied();
    let carrier = decls
        .iter()
        .find(|d| Some(d.repo_name()) == deployed_repo)
        .or_else(|| decls.first())?;
    Some(EnvVerdict::Duplicate {
        carrier: *carrier,
        error: NameClash::Environment {
            name: name.to_string(),
            places: decls.iter().map(Decl::place).collect(),
        },
    })
}

/// The repos a service's instances are deployed from.
fn deployed_owners<'r>(service: &str, deployed_from: &DeployedFrom<'r>) -> BTreeSet<&'r str> {
    let prefix = format!("service_instance/{service}/");
    // Records are keyed by id, so the service's instances are one sorted range.
    deployed_from
        .range(prefix.as_str()..)
        .take_while(|(id, _)| id.starts_with(&prefix))
        .map(|(_, repo)| *repo)
        .collect()
}

/// Who deploys a service, given the repos it is deployed from (`owners`). Repos whose
/// declarations are refused are added to `unknown`.
// `owner` (the deployed repo) and `others` (the other declarations) are the words of the rule.
#[allow(clippy::similar_names)]
fn service_decision<'a>(
    name: &str,
    decls: Vec<SvcDecl<'a>>,
    owners: &BTreeSet<&str>,
    unknown: &mut BTreeSet<String>,
) -> SvcDecision<'a> {
    let owned: Vec<SvcDecl<'a>> = decls
        .iter()
        .filter(|d| owners.contains(d.repo_name()))
        .copied()
        .collect();
    // The owner's repo cannot be read now (a spec file there does not parse, say): it may
    // still declare the service, so no other repo may take it over meanwhile.
    let unreadable: Vec<String> = owners
        .iter()
        .filter(|r| unknown.contains(**r))
        .map(ToString::to_string)
        .collect();
    if owned.is_empty() && !unreadable.is_empty() {
        let problems = refuse(&decls, unknown, |d| Problem::OwnerUnreadable {
            repo: d.repo_name().to_string(),
            path: d.path().to_string(),
            service: name.to_string(),
            owners: unreadable.clone(),
        });
        return SvcDecision {
            verdict: SvcVerdict::Withheld,
            problems,
        };
    }
    match (&decls[..], &owned[..]) {
        ([only], _) => SvcDecision {
            verdict: SvcVerdict::Deploy(*only),
            problems: Vec::new(),
        },
        // A service already deployed from one repo belongs to it: a declaration elsewhere is
        // refused alone, and the owner keeps deploying.
        (_, [owner]) => {
            let others: Vec<SvcDecl<'a>> = decls
                .iter()
                .filter(|d| d.repo_name() != owner.repo_name())
                .copied()
                .collect();
            // What those files declared before is unknown now: delete nothing of their repos.
            let problems = refuse(&others, unknown, |d| Problem::OwnedElsewhere {
                repo: d.repo_name().to_string(),
                path: d.path().to_string(),
                service: name.to_string(),
                owner: owner.repo_name().to_string(),
                owner_path: owner.path().to_string(),
            });
            SvcDecision {
                verdict: SvcVerdict::Deploy(*owner),
                problems,
            }
        }
        _ => {
            // Keep everything the clashing repos deployed.
            for d in &decls {
                unknown.insert(d.repo_name().to_string());
            }
            let error = NameClash::Service {
                name: name.to_string(),
                places: decls.iter().map(Decl::place).collect(),
            };
            SvcDecision {
                verdict: SvcVerdict::Duplicate { decls, error },
                problems: Vec::new(),
            }
        }
    }
}

/// One problem per refused declaration; their repos become unknown.
fn refuse(
    refused: &[SvcDecl<'_>],
    unknown: &mut BTreeSet<String>,
    problem: impl Fn(&SvcDecl<'_>) -> Problem,
) -> Vec<Problem> {
    refused
        .iter()
        .map(|d| {
            unknown.insert(d.repo_name().to_string());
            problem(d)
        })
        .collect()
}

#[cfg(test)]
mod tests;
