//! `CodeBuild` provisioning manifests (`rendering_engine: codebuild`, Proton's
//! `provisioning: CODEBUILD`): recognising them and reading their settings (image, runtimes,
//! `provision` and `deprovision` commands, and `project_properties`, whose keys are checked
//! here and whose values are rendered at deployment). Running them is
//! `provision::codebuild`'s; this module never performs I/O.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
struct RawManifest {
    infrastructure: RawInfra,
}

#[derive(Debug, Deserialize)]
struct RawInfra {
    templates: Vec<RawTemplate>,
}

#[derive(Debug, Deserialize)]
struct RawTemplate {
    rendering_engine: String,
    #[serde(default)]
    settings: Option<RawSettings>,
}

#[derive(Debug, Deserialize)]
struct RawSettings {
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    runtimes: BTreeMap<String, serde_yaml::Value>,
    #[serde(default)]
    provision: Vec<String>,
    #[serde(default)]
    deprovision: Vec<String>,
    #[serde(default)]
    project_properties: Option<Value>,
}

/// The `project_properties` protond applies to a build: `AWS::CodeBuild::Project` properties
/// (Proton added them to the stack that made its project), by key, with their sub-keys.
pub const PROJECT_PROPERTIES: [(&str, &[&str]); 6] = [
    ("VpcConfig", &["VpcId", "Subnets", "SecurityGroupIds"]),
    ("TimeoutInMinutes", &[]),
    ("QueuedTimeoutInMinutes", &[]),
    (
        "Environment",
        &[
            "ComputeType",
            "Image",
            "Type",
            "PrivilegedMode",
            "EnvironmentVariables",
            "ImagePullCredentialsType",
            "Certificate",
        ],
    ),
    ("ServiceRole", &[]),
    ("EncryptionKey", &[]),
];

/// Properties protond sets itself on every build, and why a manifest cannot.
const SET_BY_PROTOND: [(&str, &str); 5] = [
    ("Name", "the project is `[codebuild] project` in the config"),
    ("Source", "the source is the bundle in the artifact bucket"),
    (
        "Artifacts",
        "the artifact is proton-outputs.json in the artifact bucket",
    ),
    (
        "SecondarySources",
        "the source is the bundle in the artifact bucket",
    ),
    (
        "SecondaryArtifacts",
        "the artifact is proton-outputs.json in the artifact bucket",
    ),
];

/// Checks `project_properties`' keys (values are rendered and checked at deployment).
fn check_project_properties(v: &Value) -> Result<BTreeMap<String, Value>, String> {
    let at = "infrastructure.templates[0].settings.project_properties";
    let Value::Object(map) = v else {
        return Err(format!(
            "{at}: expected a mapping of CodeBuild project properties (e.g. `VpcConfig: {{VpcId, Subnets, SecurityGroupIds}}`)"
        ));
    };
    let supported: Vec<&str> = PROJECT_PROPERTIES.iter().map(|(k, _)| *k).collect();
    for (key, value) in map {
        if let Some((_, why)) = SET_BY_PROTOND.iter().find(|(k, _)| k == key) {
            return Err(format!("{at}.{key}: protond sets it ({why}); remove it"));
        }
        let Some((_, subkeys)) = PROJECT_PROPERTIES.iter().find(|(k, _)| k == key) else {
            return Err(format!(
                "{at}.{key}: not a CodeBuild project property protond applies; use one of {}",
                supported.join(", ")
            ));
        };
        if subkeys.is_empty() {
            continue;
        }
        let Value::Object(inner) = value else {
            return Err(format!(
                "{at}.{key}: expected a mapping with {}",
                subkeys.join(", ")
            ));
        };
        if let Some(k) = inner.keys().find(|k| !subkeys.contains(&k.as_str())) {
            return Err(format!(
                "{at}.{key}.{k}: not supported; use {}",
                subkeys.join(", ")
            ));
        }
    }
    Ok(map.clone().into_iter().collect())
}

/// A `CodeBuild` manifest's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Build image (else `[codebuild] image`).
    pub image: Option<String>,
    /// `runtime-versions` of the install phase.
    pub runtimes: BTreeMap<String, serde_yaml::Value>,
    /// Commands run on create and update.
    pub provision: Vec<String>,
    /// Commands run on delete.
    pub deprovision: Vec<String>,
    /// `project_properties` as written (values may hold Jinja, rendered with the inputs).
    pub project_properties: BTreeMap<String, Value>,
}

/// Whether a manifest's text asks for `CodeBuild` provisioning (`rendering_engine: codebuild`).
#[must_use]
pub fn is_codebuild_manifest(text: &str) -> bool {
    super::yaml::from_str::<Value>(text).is_ok_and(|v| {
        v.pointer("/infrastructure/templates")
            .and_then(Value::as_array)
            .is_some_and(|ts| {
                ts.iter()
                    .any(|t| t.get("rendering_engine").and_then(Value::as_str) == Some("codebuild"))
            })
    })
}

impl Manifest {
    /// Reads a `CodeBuild` manifest: one template, `rendering_engine: codebuild`, with
    /// `settings.provision` and `settings.deprovision` commands.
    pub fn parse(text: &str) -> Result<Self, String> {
        let expected = "expected `infrastructure: {templates: [{rendering_engine: codebuild, settings: {image, runtimes, provision: [commands], deprovision: [commands]}}]}`";
        let raw: RawManifest =
            super::yaml::from_str(text).map_err(|e| format!("{e}; {expected}"))?;
        let [t] = raw.infrastructure.templates.as_slice() else {
            return Err(format!(
                "infrastructure.templates: CodeBuild provisioning takes exactly one entry; {expected}"
            ));
        };
        if t.rendering_engine != "codebuild" {
            return Err(format!(
                "infrastructure.templates[0].rendering_engine: {:?} cannot be mixed with codebuild; {expected}",
                t.rendering_engine
            ));
        }
        let Some(s) = &t.settings else {
            return Err(format!(
                "infrastructure.templates[0].settings is missing; {expected}"
            ));
        };
        for (key, commands) in [("provision", &s.provision), ("deprovision", &s.deprovision)] {
            if commands.is_empty() {
                return Err(format!(
                    "infrastructure.templates[0].settings.{key} lists no command; add the shell commands that {key} the infrastructure"
                ));
            }
        }
        let project_properties = match &s.project_properties {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(v) => check_project_properties(v)?,
        };
        Ok(Self {
            image: s.image.clone(),
            runtimes: s.runtimes.clone(),
            provision: s.provision.clone(),
            deprovision: s.deprovision.clone(),
            project_properties,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{BundleFiles, ComponentBundle, read_infrastructure};

    const MANIFEST: &str = "infrastructure:\n  templates:\n    - rendering_engine: codebuild\n      settings:\n        provision:\n          - ./up.sh\n        deprovision:\n          - ./down.sh\n";

    fn files(entries: &[(&str, &[u8])]) -> BundleFiles {
        let mut f = BundleFiles::new("test-bundle");
        for (p, c) in entries {
            f.insert(p, c.to_vec()).expect("safe path");
        }
        f
    }

    /// `project_properties`: Proton's documented `VpcConfig` is read; a property protond
    /// sets, an unknown one and an unknown sub-key are refused, naming the field.
    #[test]
    fn project_properties_keys_are_checked() {
        let with = |props: &str| {
            super::Manifest::parse(&format!("{MANIFEST}        project_properties:\n{props}"))
        };
        let m = with("          VpcConfig:\n            VpcId: \"{{ environment.inputs.vpc }}\"\n            Subnets: \"{{ environment.inputs.subnets }}\"\n            SecurityGroupIds: [sg-1]\n          TimeoutInMinutes: 90\n")
            .expect("valid");
        assert_eq!(
            m.project_properties["VpcConfig"]["VpcId"],
            "{{ environment.inputs.vpc }}"
        );
        let at = "infrastructure.templates[0].settings.project_properties";
        for (props, want) in [
            (
                "          Source: {Type: S3}\n",
                format!("{at}.Source: protond sets it"),
            ),
            (
                "          Triggers: {}\n",
                format!("{at}.Triggers: not a CodeBuild project property"),
            ),
            (
                "          VpcConfig:\n            Vpc: x\n",
                format!("{at}.VpcConfig.Vpc: not supported; use VpcId, Subnets, SecurityGroupIds"),
            ),
            ("          - x\n", format!("{at}: expected a mapping")),
        ] {
            let e = with(props).expect_err(&want);
            assert!(e.starts_with(&want), "{e}");
        }
    }

    /// A `CodeBuild` folder is accepted with every file of the folder (and no `IaC` file);
    /// components, binaries and manifests without commands are refused, naming the file.
    #[test]
    fn codebuild_folders_are_read_whole() {
        let f = files(&[
            ("infrastructure/manifest.yaml", MANIFEST.as_bytes()),
            ("infrastructure/up.sh", b"echo up\n"),
            ("infrastructure/lib/app.ts", b"// app\n"),
        ]);
        let infra = read_infrastructure(&f, "infrastructure").expect("accepted");
        assert!(infra.files.is_empty());
        let paths: Vec<&str> = infra
            .codebuild
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|(p, _)| p.as_str())
            .collect();
        assert_eq!(paths, ["lib/app.ts", "manifest.yaml", "up.sh"]);

        let binary = files(&[
            ("infrastructure/manifest.yaml", MANIFEST.as_bytes()),
            ("infrastructure/tool", &[0xff, 0xfe, 0x00]),
        ]);
        let e = read_infrastructure(&binary, "infrastructure").expect_err("binary");
        assert!(e[0].to_string().contains("is not UTF-8 text"), "{e:?}");

        let no_commands = MANIFEST.replace("        deprovision:\n          - ./down.sh\n", "");
        let f = files(&[("infrastructure/manifest.yaml", no_commands.as_bytes())]);
        let e = read_infrastructure(&f, "infrastructure").expect_err("no deprovision");
        assert!(e[0].to_string().contains("settings.deprovision"), "{e:?}");

        let component = files(&[("manifest.yaml", MANIFEST.as_bytes())]);
        let e = ComponentBundle::load(&component).expect_err("component");
        assert!(
            e[0].to_string().contains("components cannot use CodeBuild"),
            "{e:?}"
        );
    }
}
