//! `CodeBuild` provisioning manifests (`rendering_engine: codebuild`, Proton's
//! `provisioning: CODEBUILD`): recognising them and reading their settings (image, runtimes,
//! `provision` and `deprovision` commands). Running them is
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
        Ok(Self {
            image: s.image.clone(),
            runtimes: s.runtimes.clone(),
            provision: s.provision.clone(),
            deprovision: s.deprovision.clone(),
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
