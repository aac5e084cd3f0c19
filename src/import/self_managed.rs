//! What AWS Proton committed for its self-managed (Terraform) resources, read from the
//! infrastructure repo so that `protond import` can record them without a pull request.
//!
//! Proton wrote one folder per deployed resource, with `.proton/deployment-metadata.json`
//! beside the compiled Terraform (AWS Proton User Guide, "Self-managed provisioning" and
//! "Terraform `IaC` files"): `deploymentId` (a string), `isResourceDeleted` (a boolean) and
//! `resourceMetadata` with the resource's `arn`, its `templateArn`,
//! `templateMajorVersion`/`templateMinorVersion` (strings) and, for service instances,
//! `environmentArn`. The resource is the one its `arn` names (`environment/<env>`,
//! `service/<svc>/service-instance/<inst>`, `service/<svc>/pipeline`), wherever the folder
//! is, so both of Proton's layouts work.
//!
//! A folder matches protond's rendering when every template file protond renders is in it
//! with the same text (trailing white space aside) and it holds no other template file. The
//! files protond generates (`proton.*`: Proton's variables and values) are not compared:
//! their header names protond, not Proton. Outputs are not in the repo, except as Proton
//! passed them on: an environment's in its instances' `proton.auto.tfvars.json`
//! (`environment.outputs`), an instance's in its service's pipeline folder
//! (`service_instances[].outputs`); those are recovered.
//!
//! Pure: no I/O (the caller reads the repo's files).

use std::collections::BTreeMap;

use serde_json::Value;

use super::compare::{Change, Difference};
use crate::provision::self_managed::resource_id_from;

/// The metadata file's path inside a resource's folder.
pub const METADATA: &str = ".proton/deployment-metadata.json";

/// `.proton/deployment-metadata.json`, as Proton wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// `deploymentId`.
    pub deployment_id: String,
    /// `isResourceDeleted`.
    pub deleted: bool,
    /// `resourceMetadata.arn`.
    pub arn: String,
    /// The template's name, from `resourceMetadata.templateArn`.
    pub template: String,
    /// `templateMajorVersion`.
    pub major: u32,
    /// `templateMinorVersion`.
    pub minor: u32,
}

/// Reads a metadata file; `path` names it in errors.
///
/// # Errors
///
/// What is missing or malformed, naming the file and the field.
pub fn parse_metadata(text: &str, path: &str) -> Result<Metadata, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("{path}: not JSON: {e}"))?;
    let meta = &v["resourceMetadata"];
    let text_of = |v: &Value, field: &str| -> Result<String, String> {
        match v {
            Value::String(s) if !s.is_empty() => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            _ => Err(format!(
                "{path}: `{field}` is missing or not a string; Proton wrote it in every deployment's metadata"
            )),
        }
    };
    let number = |field: &str| -> Result<u32, String> {
        text_of(&meta[field], &format!("resourceMetadata.{field}"))?
            .parse()
            .map_err(|_| format!("{path}: `resourceMetadata.{field}` is not a whole number"))
    };
    let template_arn = text_of(&meta["templateArn"], "resourceMetadata.templateArn")?;
    let template = template_arn
        .rsplit_once(":environment-template/")
        .or_else(|| template_arn.rsplit_once(":service-template/"))
        .map(|(_, name)| name.to_string())
        .filter(|n| !n.is_empty() && !n.contains('/'))
        .ok_or_else(|| {
            format!(
                "{path}: `resourceMetadata.templateArn` ({template_arn}) is not an environment- or service-template ARN"
            )
        })?;
    Ok(Metadata {
        deployment_id: text_of(&v["deploymentId"], "deploymentId")?,
        deleted: v["isResourceDeleted"]
            .as_bool()
            .ok_or_else(|| format!("{path}: `isResourceDeleted` is missing or not true/false"))?,
        arn: text_of(&meta["arn"], "resourceMetadata.arn")?,
        template,
        major: number("templateMajorVersion")?,
        minor: number("templateMinorVersion")?,
    })
}

/// One resource's folder in the infrastructure repo.
#[derive(Debug, Clone, PartialEq)]
pub struct Folder {
    /// The folder, from the repo's root.
    pub path: String,
    /// Its metadata.
    pub meta: Metadata,
    /// Its own files (not those of subfolders, not `.proton/`), by name.
    pub files: BTreeMap<String, String>,
    /// Its `proton.auto.tfvars.json`, parsed, when it has one.
    pub tfvars: Option<Value>,
}

/// The folders Proton committed, by resource id, from every file of the repo (path from the
/// root, text), and the metadata files that could not be read.
#[must_use]
pub fn folders(files: &[(String, String)]) -> (BTreeMap<String, Vec<Folder>>, Vec<String>) {
    let mut out: BTreeMap<String, Vec<Folder>> = BTreeMap::new();
    let mut problems = Vec::new();
    for (path, text) in files {
        let Some(folder) = path.strip_suffix(METADATA) else {
            continue;
        };
        let folder = folder.trim_end_matches('/').to_string();
        let meta = match parse_metadata(text, path) {
            Ok(m) => m,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        let prefix = if folder.is_empty() {
            String::new()
        } else {
            format!("{folder}/")
        };
        let own: BTreeMap<String, String> = files
            .iter()
            .filter_map(|(p, t)| {
                let name = p.strip_prefix(&prefix)?;
                (!name.contains('/')).then(|| (name.to_string(), t.clone()))
            })
            .collect();
        let tfvars = own
            .get("proton.auto.tfvars.json")
            .and_then(|t| serde_json::from_str(t).ok());
        let id = resource_id_from(&meta.arn);
        out.entry(id).or_default().push(Folder {
            path: folder,
            meta,
            files: own,
            tfvars,
        });
    }
    (out, problems)
}

/// A rendered document's name in the resource's folder, as the self-managed provisioner
/// commits it (the `*infrastructure/` folder of the bundle dropped).
fn committed_name(path: &str) -> &str {
    match path.split_once('/') {
        Some((first, rest)) if first.ends_with("infrastructure") => rest,
        _ => path,
    }
}

/// Whether a file is one protond generates (Proton's variables and values).
fn generated(name: &str) -> bool {
    name.starts_with("proton.")
}

fn lines(text: &str) -> String {
    format!("{} line(s)", text.lines().count())
}

/// How the folder's template files differ from protond's `documents` (from the repo
/// towards the rendering: *added* only protond renders, *removed* only the repo has).
#[must_use]
pub fn diff_files(documents: &[(String, String)], folder: &Folder) -> Vec<Difference> {
    let rendered: BTreeMap<&str, &str> = documents
        .iter()
        .map(|(p, t)| (committed_name(p), t.as_str()))
        .filter(|(n, _)| !generated(n))
        .collect();
    let mut out = Vec::new();
    for (name, text) in &rendered {
        let at = format!("{}/{name}", folder.path);
        match folder.files.get(*name) {
            None => out.push(Difference {
                change: Change::Added,
                at,
                resource: None,
                live: None,
                rendered: Some(lines(text)),
            }),
            Some(live) if live.trim_end() != text.trim_end() => out.push(Difference {
                change: Change::Changed,
                at,
                resource: None,
                live: Some(first_difference(live, text).0),
                rendered: Some(first_difference(live, text).1),
            }),
            Some(_) => {}
        }
    }
    for (name, text) in &folder.files {
        if !generated(name) && !rendered.contains_key(name.as_str()) {
            out.push(Difference {
                change: Change::Removed,
                at: format!("{}/{name}", folder.path),
                resource: None,
                live: Some(lines(text)),
                rendered: None,
            });
        }
    }
    out
}

/// The first line where `live` and `rendered` differ, each side as `line N: text`.
fn first_difference(live: &str, rendered: &str) -> (String, String) {
    let (mut live, mut rendered) = (live.lines(), rendered.lines());
    let mut number = 1;
    loop {
        match (live.next(), rendered.next()) {
            (Some(was), Some(now)) if was.trim_end() == now.trim_end() => number += 1,
            (was, now) => {
                let show = |text: Option<&str>| {
                    let text = text.unwrap_or("(end of file)");
                    let short: String = text.trim().chars().take(100).collect();
                    format!("line {number}: {short}")
                };
                return (show(was), show(now));
            }
        }
    }
}

/// The outputs Proton passed on for `id`: an environment's from its instances' values
/// (`environment.outputs`), an instance's from its service's pipeline values
/// (`service_instances[].outputs`); empty when none is committed.
#[must_use]
pub fn outputs_for(id: &str, folders: &BTreeMap<String, Vec<Folder>>) -> BTreeMap<String, String> {
    let strings = |v: &Value| -> BTreeMap<String, String> {
        v.as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| {
                        let s = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                        (k.clone(), s)
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let values = folders.values().flatten().filter_map(|f| f.tfvars.as_ref());
    match crate::model::ResourceId::parse(id) {
        Ok(crate::model::ResourceId::Environment { name }) => values
            .filter(|v| v["service_instance"].is_object() && v["environment"]["name"] == *name)
            .map(|v| strings(&v["environment"]["outputs"]))
            .find(|o| !o.is_empty())
            .unwrap_or_default(),
        Ok(crate::model::ResourceId::ServiceInstance { service, instance }) => values
            .filter(|v| v["service"]["name"] == *service)
            .filter_map(|v| v["service_instances"].as_array())
            .flatten()
            .find(|i| i["name"] == *instance)
            .map(|i| strings(&i["outputs"]))
            .unwrap_or_default(),
        _ => BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const META: &str = r#"{
  "deploymentId" : "c8f7a5e5-1b0a-4f4e-9c1e-0d2f6b8a7e11",
  "isResourceDeleted" : false,
  "resourceMetadata" : {
    "arn" : "arn:aws:proton:us-east-1:123456789012:service/api/service-instance/api-dev",
    "templateArn" : "arn:aws:proton:us-east-1:123456789012:service-template/tf-svc",
    "templateMajorVersion" : "1",
    "templateMinorVersion" : "2",
    "environmentArn" : "arn:aws:proton:us-east-1:123456789012:environment/dev"
  }
}"#;

    #[test]
    fn metadata_as_proton_wrote_it() {
        let m = parse_metadata(META, "dev/api-api-dev/.proton/deployment-metadata.json")
            .expect("valid");
        assert_eq!(m.template, "tf-svc");
        assert_eq!((m.major, m.minor), (1, 2));
        assert!(!m.deleted);
        assert_eq!(resource_id_from(&m.arn), "service_instance/api/api-dev");
    }

    #[test]
    fn metadata_errors_name_the_file_and_the_field() {
        let cases = [
            ("{}", "`resourceMetadata.templateArn`"),
            (
                &META.replace(
                    "\"templateMinorVersion\" : \"2\"",
                    "\"templateMinorVersion\" : \"x\"",
                ),
                "`resourceMetadata.templateMinorVersion` is not a whole number",
            ),
            (
                &META.replace(
                    "\"isResourceDeleted\" : false",
                    "\"isResourceDeleted\" : \"no\"",
                ),
                "`isResourceDeleted`",
            ),
            (
                &META.replace("service-template/tf-svc", "template/tf-svc"),
                "not an environment- or service-template ARN",
            ),
            ("not json", "not JSON"),
        ];
        for (text, want) in cases {
            let e = parse_metadata(text, "f.json").expect_err(want);
            assert!(e.starts_with("f.json: ") && e.contains(want), "{e}");
        }
    }

    fn repo() -> Vec<(String, String)> {
        vec![
            ("dev/.proton/deployment-metadata.json".into(), META.replace("service/api/service-instance/api-dev", "environment/dev").replace("service-template", "environment-template")),
            ("dev/main.tf".into(), "resource \"x\" \"y\" {}\n".into()),
            ("dev/api-api-dev/.proton/deployment-metadata.json".into(), META.into()),
            ("dev/api-api-dev/main.tf".into(), "a\nb\n".into()),
            ("dev/api-api-dev/extra.tf".into(), "c\n".into()),
            ("dev/api-api-dev/proton.auto.tfvars.json".into(), r#"{ "environment" : { "name" : "dev", "outputs" : { "vpc_id" : "vpc-1" } }, "service_instance" : { "name" : "api-dev" } }"#.into()),
            ("broken/.proton/deployment-metadata.json".into(), "{".into()),
        ]
    }

    #[test]
    fn folders_by_resource_with_their_own_files() {
        let (f, problems) = folders(&repo());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("broken/.proton/deployment-metadata.json: "));
        let env = &f["environment/dev"][0];
        assert_eq!(env.path, "dev");
        assert_eq!(env.files.keys().collect::<Vec<_>>(), ["main.tf"]);
        let inst = &f["service_instance/api/api-dev"][0];
        assert_eq!(inst.files.len(), 3);
        assert_eq!(
            outputs_for("environment/dev", &f),
            BTreeMap::from([("vpc_id".to_string(), "vpc-1".to_string())])
        );
    }

    #[test]
    fn files_compare_by_text_generated_ones_aside() {
        let (f, _) = folders(&repo());
        let inst = &f["service_instance/api/api-dev"][0];
        let same = vec![
            (
                "instance_infrastructure/main.tf".to_string(),
                "a\nb".to_string(),
            ),
            (
                "instance_infrastructure/extra.tf".to_string(),
                "c\n".to_string(),
            ),
            ("proton.auto.tfvars.json".to_string(), "{}".to_string()),
        ];
        assert_eq!(diff_files(&same, inst), Vec::new());
        let other = vec![
            (
                "instance_infrastructure/main.tf".to_string(),
                "a\nB\n".to_string(),
            ),
            (
                "instance_infrastructure/new.tf".to_string(),
                "n\n".to_string(),
            ),
        ];
        let d = diff_files(&other, inst);
        let shown: Vec<String> = d.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "~ dev/api-api-dev/main.tf: live line 2: b -> rendered line 2: B",
                "+ dev/api-api-dev/new.tf (only in protond's rendering: 1 line(s))",
                "- dev/api-api-dev/extra.tf (only in the live stack: 1 line(s))",
            ]
        );
    }
}
