//! A spec repo's approval file, `.protond/approvals.yaml`: approvals merged through the
//! repo's review (a pull request), read with the repo's snapshot. Parses only (through
//! `catalog::yaml`); which approvals count is decided by [`super::approval_for`].
//!
//! ```yaml
//! approvals:
//!   - resource: service_instance/web/dev
//!     version: "1.1"
//!     by: alice
//!     reason: the table is rebuilt from the stream
//! ```

use serde::Deserialize;

use super::Approval;
use crate::model::Version;

/// Where the file lives in a spec repo (from the repo's root).
pub const PATH: &str = ".protond/approvals.yaml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    approvals: Vec<RawApproval>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApproval {
    resource: String,
    version: serde_yaml::Value,
    by: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    template: Option<String>,
}

/// The approvals of `repo`'s file `text`, each tied to the repo.
///
/// # Errors
///
/// Every problem, each naming the file, the entry's field and the fix.
pub fn parse(repo: &str, text: &str) -> Result<Vec<Approval>, Vec<String>> {
    let raw: Raw = crate::catalog::yaml::from_str(text).map_err(|e| {
        vec![format!(
            "spec repo {repo}: {PATH}: {e}; write `approvals:` as a list of {{resource, version, by, reason}}"
        )]
    })?;
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, a) in raw.approvals.into_iter().enumerate() {
        let at = |field: &str| format!("spec repo {repo}: {PATH}: approvals[{i}].{field}");
        let version = match &a.version {
            serde_yaml::Value::String(s) => Version::parse(s.trim()),
            _ => None,
        };
        let Some(version) = version else {
            errors.push(format!(
                "{}: {:?} is not a version; write it quoted, as major.minor (\"1.1\")",
                at("version"),
                a.version
            ));
            continue;
        };
        if a.resource.split('/').count() < 2 {
            errors.push(format!(
                "{}: {:?} is not a resource id; write it as `protond plan` shows it (service_instance/<service>/<instance>)",
                at("resource"),
                a.resource
            ));
            continue;
        }
        if a.by.trim().is_empty() {
            errors.push(format!("{}: is empty; say who approves", at("by")));
            continue;
        }
        out.push(Approval {
            resource: a.resource,
            template: a.template,
            version,
            by: a.by,
            via: format!("spec repo {repo}"),
            reason: a.reason,
            at: None,
            repo: Some(repo.to_string()),
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}
