//! Templates given in the config for Proton's header-less spec files: a `[[spec_repos]]`
//! entry maps folders or single files to a template (`templates = [{ path, name, major }]`),
//! so spec files exactly as Proton kept them (no `name:`, no `template:`) deploy unchanged.
//!
//! The most specific mapping (an exact file, else the deepest folder) applies; a mapping of
//! one file may also name its resource (`resource`). A file's own
//! `template:` header is checked against it: the same name and major agree (the header may
//! pin a minor); anything else is a conflict, reported on the file with the two fixes. Pure:
//! it never reads git or the config file.

use serde::Deserialize;

use super::{SpecError, SpecFile, TemplateRef};

/// One mapping of a spec repo's folder or file to a template.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateMapping {
    /// A folder or a file, relative to the spec repo's root (inside its spec `folder`).
    pub path: String,
    /// Template name.
    pub name: String,
    /// Major version followed.
    pub major: u32,
    /// When set, pins this exact minor.
    #[serde(default)]
    pub minor: Option<u32>,
    /// For a single file: the resource's name when the file has no `name:` (default: the
    /// file's stem), e.g. the service a Proton service sync `proton-ops.yaml` named.
    #[serde(default)]
    pub resource: Option<String>,
}

impl TemplateMapping {
    /// The template the mapping gives.
    #[must_use]
    pub fn template(&self) -> TemplateRef {
        TemplateRef {
            name: self.name.clone(),
            major: self.major,
            minor: self.minor,
        }
    }

    /// Whether the mapping covers `file` (a path relative to the repo's root): the file
    /// itself, or a file anywhere below the folder.
    #[must_use]
    pub fn covers(&self, file: &str) -> bool {
        let path = self.path.trim_end_matches('/');
        file == path
            || file
                .strip_prefix(path)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// The mapping that applies to `file`: the longest path covering it.
#[must_use]
pub fn lookup<'a>(mappings: &'a [TemplateMapping], file: &str) -> Option<&'a TemplateMapping> {
    mappings
        .iter()
        .filter(|m| m.covers(file))
        .max_by_key(|m| m.path.trim_end_matches('/').len())
}

/// Gives `spec` (read from `file` in spec repo `repo`) the template its mapping names, when it
/// has no header; a header naming another template or major than the mapping is an error on
/// the file.
pub fn apply(
    spec: &mut SpecFile,
    file: &str,
    repo: &str,
    mappings: &[TemplateMapping],
) -> Result<(), SpecError> {
    let Some(m) = lookup(mappings, file) else {
        return Ok(());
    };
    let slot = match spec {
        SpecFile::Environment(e) => &mut e.template,
        SpecFile::Service(s) => &mut s.template,
    };
    match slot {
        None => {
            *slot = Some(m.template());
            Ok(())
        }
        Some(h) if h.name == m.name && h.major == m.major => {
            if h.minor.is_none() {
                h.minor = m.minor;
            }
            Ok(())
        }
        Some(h) => Err(SpecError {
            file: file.into(),
            field: "template".into(),
            message: format!(
                "the header names {h}, but the config maps {:?} to {} ([[spec_repos]] {repo:?}, templates); remove the header's `template:` to follow the config, or change the mapping (or give this file a mapping of its own)",
                m.path,
                m.template()
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::parse;

    fn map(path: &str, name: &str, major: u32) -> TemplateMapping {
        TemplateMapping {
            path: path.into(),
            name: name.into(),
            major,
            minor: None,
            resource: None,
        }
    }

    #[test]
    fn the_most_specific_mapping_applies() {
        let maps = [
            map("proton", "svc", 1),
            map("proton/envs", "vpc-env", 1),
            map("proton/envs/prod.yaml", "vpc-env", 2),
        ];
        let name = |f: &str| lookup(&maps, f).map(|m| (m.name.as_str(), m.major));
        assert_eq!(name("proton/envs/dev.yaml"), Some(("vpc-env", 1)));
        assert_eq!(name("proton/envs/deep/er/dev.yaml"), Some(("vpc-env", 1)));
        assert_eq!(name("proton/envs/prod.yaml"), Some(("vpc-env", 2)));
        assert_eq!(name("proton/api.yaml"), Some(("svc", 1)));
        assert_eq!(name("proton/envsx/a.yaml"), Some(("svc", 1)));
        assert_eq!(name("other/a.yaml"), None);
    }

    #[test]
    fn a_header_less_file_gets_the_template_and_a_header_must_agree() {
        let maps = [TemplateMapping {
            minor: Some(2),
            ..map("proton/envs", "vpc-env", 1)
        }];
        let text = "proton: EnvironmentSpec\nspec:\n  cidr: 10.0.0.0/16\n";
        let mut spec = parse(text, "proton/envs/dev.yaml", "dev").expect("parses");
        apply(&mut spec, "proton/envs/dev.yaml", "platform", &maps).expect("applies");
        assert_eq!(spec.name(), "dev");
        assert_eq!(
            spec.template().map(ToString::to_string).as_deref(),
            Some("vpc-env v1.2")
        );

        // Same name and major: the header stands (its own minor pin, or the mapping's).
        let text = "proton: EnvironmentSpec\ntemplate: {name: vpc-env, major: 1, minor: 0}\n";
        let mut spec = parse(text, "proton/envs/a.yaml", "a").expect("parses");
        apply(&mut spec, "proton/envs/a.yaml", "platform", &maps).expect("agrees");
        assert_eq!(spec.template().and_then(|t| t.minor), Some(0));

        // Another template or major: an error on the file naming both fixes.
        let text = "proton: EnvironmentSpec\ntemplate: {name: vpc-env, major: 2}\n";
        let mut spec = parse(text, "proton/envs/b.yaml", "b").expect("parses");
        let e = apply(&mut spec, "proton/envs/b.yaml", "platform", &maps).expect_err("conflict");
        assert_eq!(
            (e.file.as_str(), e.field.as_str()),
            ("proton/envs/b.yaml", "template")
        );
        assert!(
            e.message.contains("vpc-env v2") && e.message.contains("vpc-env v1.2"),
            "{e}"
        );
        assert!(e.message.contains("remove the header's `template:`"), "{e}");

        // Files no mapping covers are left as they are.
        let mut spec = parse(text, "elsewhere/b.yaml", "b").expect("parses");
        apply(&mut spec, "elsewhere/b.yaml", "platform", &maps).expect("untouched");
        assert_eq!(spec.template().map(|t| t.major), Some(2));
    }
}
