use super::*;

const SCHEMA_ENV: &str = "schema:\n  format:\n    openapi: \"3.0.0\"\n  environment_input_type: \"EnvInput\"\n  types:\n    EnvInput:\n      type: object\n      properties:\n        cidr:\n          type: string\n          default: 10.0.0.0/16\n";
const SCHEMA_SVC: &str = "schema:\n  format:\n    openapi: \"3.0.0\"\n  service_input_type: \"SvcInput\"\n  pipeline_input_type: \"PipeInput\"\n  types:\n    SvcInput:\n      type: object\n      properties:\n        port:\n          type: number\n          default: 80\n    PipeInput:\n      type: object\n      properties:\n        dockerfile:\n          type: string\n          default: Dockerfile\n";
const MANIFEST_JINJA: &str = "infrastructure:\n  templates:\n    - file: \"cloudformation.yaml\"\n      rendering_engine: jinja\n      template_language: cloudformation\n";
const CFN: &str = "Resources:\n  T:\n    Type: AWS::SNS::Topic\n";

fn files(entries: &[(&str, &str)]) -> BundleFiles {
    let mut f = BundleFiles::new("test-bundle");
    for (p, c) in entries {
        f.insert(p, c.as_bytes().to_vec()).expect("safe path");
    }
    f
}

fn env_bundle() -> Vec<(&'static str, &'static str)> {
    vec![
        ("schema/schema.yaml", SCHEMA_ENV),
        ("infrastructure/manifest.yaml", MANIFEST_JINJA),
        ("infrastructure/cloudformation.yaml", CFN),
    ]
}

fn svc_bundle() -> Vec<(&'static str, &'static str)> {
    vec![
        ("schema/schema.yaml", SCHEMA_SVC),
        ("instance_infrastructure/manifest.yaml", MANIFEST_JINJA),
        ("instance_infrastructure/cloudformation.yaml", CFN),
        ("pipeline_infrastructure/manifest.yaml", MANIFEST_JINJA),
        ("pipeline_infrastructure/cloudformation.yaml", CFN),
        (
            ".template-registration.yaml",
            "compatible_environments:\n  - basic-env:1\n  - other-env:2\nsupported_component_sources:\n  - DIRECTLY_DEFINED\n",
        ),
    ]
}

fn messages(errs: &[BundleError]) -> String {
    errs.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn environment_bundle_loads() {
    let b = Bundle::load("basic-env", 1, &files(&env_bundle())).expect("valid");
    assert_eq!(b.kind, TemplateKind::Environment);
    assert_eq!(b.infrastructure.files.len(), 1);
    assert_eq!(b.infrastructure.files[0].engine, Engine::Jinja);
    assert!(b.pipeline.is_none());
    assert!(b.compatible_environments.is_empty());
}

#[test]
fn service_bundle_reads_registration() {
    let b = Bundle::load("web-svc", 1, &files(&svc_bundle())).expect("valid");
    assert_eq!(b.kind, TemplateKind::Service);
    assert!(b.pipeline.is_some());
    assert_eq!(
        b.compatible_environments,
        vec![
            EnvTemplateRef {
                name: "basic-env".into(),
                major: 1
            },
            EnvTemplateRef {
                name: "other-env".into(),
                major: 2
            }
        ]
    );
    assert!(b.supports_components());
}

#[test]
fn older_compatible_envs_file_is_read() {
    let mut entries: Vec<_> = svc_bundle()
        .into_iter()
        .filter(|(p, _)| !p.starts_with(".template") && !p.starts_with("pipeline"))
        .collect();
    entries[0].1 = "schema:\n  format:\n    openapi: \"3.0.0\"\n  service_input_type: \"SvcInput\"\n  types:\n    SvcInput:\n      type: object\n      properties:\n        port:\n          type: number\n";
    entries.push((
        ".compatible-envs",
        "fargate-env:1\n\n# comment\nvpc-env:3\n",
    ));
    let b = Bundle::load("svc", 1, &files(&entries)).expect("valid");
    let names: Vec<String> = b
        .compatible_environments
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(names, ["fargate-env:1", "vpc-env:3"]);
    assert!(!b.supports_components());
}

#[test]
fn service_without_compatible_environments_is_rejected() {
    let entries: Vec<_> = svc_bundle()
        .into_iter()
        .filter(|(p, _)| !p.starts_with(".template"))
        .collect();
    let errs = Bundle::load("svc", 1, &files(&entries)).expect_err("invalid");
    assert!(
        messages(&errs).contains("compatible environment"),
        "{}",
        messages(&errs)
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let entries = vec![
        ("schema/schema.yaml", SCHEMA_ENV),
        (
            "infrastructure/manifest.yaml",
            "infrastructure:\n  templates:\n    - file: \"../../etc/passwd\"\n      rendering_engine: jinja\n      template_language: cloudformation\n    - file: \"/abs.yaml\"\n      rendering_engine: hcl\n      template_language: cloudformation\n",
        ),
        ("pipeline_infrastructure/manifest.yaml", MANIFEST_JINJA),
        (
            ".template-registration.yaml",
            "compatible_environments: [\"nocolon\"]\n",
        ),
    ];
    let errs = Bundle::load("e", 1, &files(&entries)).expect_err("invalid");
    let all = messages(&errs);
    assert!(all.contains("escapes the bundle"), "{all}");
    assert!(all.contains("is absolute"), "{all}");
    assert!(
        all.contains("hcl goes with template_language terraform"),
        "{all}"
    );
    assert!(
        all.contains("environment templates have no pipeline"),
        "{all}"
    );
    assert!(
        all.contains("environment templates have no compatible environments"),
        "{all}"
    );
    assert!(errs.len() >= 5, "{all}");
}

#[test]
fn manifest_errors_name_file_and_fix() {
    let mut entries = env_bundle();
    entries[1].1 = "infrastructure:\n  templates:\n    - file: cloudformation.yaml\n      rendering_engine: mustache\n      template_language: cloudformation\n";
    let errs = Bundle::load("e", 1, &files(&entries)).expect_err("invalid");
    let all = messages(&errs);
    assert!(all.contains("infrastructure/manifest.yaml"), "{all}");
    assert!(all.contains("mustache"), "{all}");
    assert!(
        all.contains("rendering_engine: jinja|handlebars|hcl"),
        "{all}"
    );
    let mut entries = env_bundle();
    entries[1].1 = "infrastructure:\n  templates:\n    - file: missing.yaml\n      rendering_engine: jinja\n      template_language: cloudformation\n";
    let all = messages(&Bundle::load("e", 1, &files(&entries)).expect_err("invalid"));
    assert!(
        all.contains("infrastructure/missing.yaml: file is missing"),
        "{all}"
    );
}

#[test]
fn layout_must_be_one_kind() {
    let mut entries = env_bundle();
    entries.push(("instance_infrastructure/manifest.yaml", MANIFEST_JINJA));
    let all = messages(&Bundle::load("e", 1, &files(&entries)).expect_err("both"));
    assert!(all.contains("has both"), "{all}");
    let all = messages(
        &Bundle::load("e", 1, &files(&[("schema/schema.yaml", SCHEMA_ENV)])).expect_err("none"),
    );
    assert!(all.contains("has neither"), "{all}");
}

#[test]
fn terraform_star_takes_every_file() {
    let entries = vec![
        ("schema/schema.yaml", SCHEMA_ENV),
        (
            "infrastructure/manifest.yaml",
            "infrastructure:\n  templates:\n    - file: \"*\"\n      rendering_engine: hcl\n      template_language: terraform\n",
        ),
        ("infrastructure/main.tf", "resource \"x\" \"y\" {}\n"),
        ("infrastructure/outputs.tf", "output \"o\" { value = 1 }\n"),
    ];
    let b = Bundle::load("tf-env", 1, &files(&entries)).expect("valid");
    let paths: Vec<&str> = b
        .infrastructure
        .files
        .iter()
        .map(|f| f.path.as_str())
        .collect();
    assert_eq!(
        paths,
        ["infrastructure/main.tf", "infrastructure/outputs.tf"]
    );
    assert_eq!(b.infrastructure.language(), Language::Terraform);
    let mut bad = entries.clone();
    bad[1].1 = "infrastructure:\n  templates:\n    - file: \"*\"\n      rendering_engine: jinja\n      template_language: cloudformation\n";
    let all = messages(&Bundle::load("tf-env", 1, &files(&bad)).expect_err("invalid"));
    assert!(all.contains("only allowed for Terraform"), "{all}");
}

#[test]
fn unsafe_paths_cannot_be_inserted() {
    let mut f = BundleFiles::new("x");
    for p in ["../a", "/etc/passwd", "a/../../b", "C:/x", "", "a\u{1}b"] {
        assert!(f.insert(p, vec![]).is_err(), "{p:?} accepted");
    }
    assert!(f.insert("./a/./b.yaml", vec![]).is_ok());
    assert!(f.get("a/b.yaml").is_some());
}

fn write_tree(dir: &Path, entries: &[(&str, &str)]) {
    for (p, c) in entries {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, c).expect("write");
    }
}

#[test]
fn read_dir_rejects_symlinks_and_reads_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tree(dir.path(), &env_bundle());
    let ok = read_dir(dir.path(), &Limits::default()).expect("reads");
    assert_eq!(ok.len(), 3);
    Bundle::load("e", 1, &ok).expect("valid");
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("infrastructure/leak.yaml"))
            .expect("symlink");
        let errs = read_dir(dir.path(), &Limits::default()).expect_err("symlink");
        let all = messages(&errs);
        assert!(
            all.contains("infrastructure/leak.yaml: is a symbolic link"),
            "{all}"
        );
    }
}

#[test]
fn read_dir_enforces_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tree(dir.path(), &env_bundle());
    std::fs::write(dir.path().join("big.bin"), vec![b'x'; 4096]).expect("write");
    for i in 0..5 {
        std::fs::write(dir.path().join(format!("extra{i}.txt")), "x").expect("write");
    }
    let limits = Limits {
        max_files: 5,
        max_file_bytes: 1000,
        max_total_bytes: 100_000,
        max_depth: 4,
    };
    let all = messages(&read_dir(dir.path(), &limits).expect_err("limits"));
    assert!(all.contains("big.bin: file is 4096 bytes"), "{all}");
    assert!(
        all.contains("more than 5 files") || all.contains("more than the limit of 5"),
        "{all}"
    );
    let deep = tempfile::tempdir().expect("tempdir");
    write_tree(deep.path(), &[("a/b/c/d/e/f/g.txt", "x")]);
    let all = messages(&read_dir(deep.path(), &limits).expect_err("depth"));
    assert!(all.contains("nested deeper"), "{all}");
}

#[test]
fn component_folder_loads() {
    let f = files(&[
        ("manifest.yaml", MANIFEST_JINJA),
        ("cloudformation.yaml", CFN),
    ]);
    assert_eq!(detect_layout(&f), Layout::Component);
    let c = ComponentBundle::load(&f).expect("valid");
    assert_eq!(c.infrastructure.files[0].path, "cloudformation.yaml");
    let f = files(&[(
        "manifest.yaml",
        "infrastructure:\n  templates:\n    - file: ../secret.yaml\n      rendering_engine: jinja\n      template_language: cloudformation\n",
    )]);
    let all = messages(&ComponentBundle::load(&f).expect_err("escape"));
    assert!(all.contains("escapes the bundle"), "{all}");
}

#[test]
fn name_and_major_come_from_the_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let v = dir.path().join("fargate-svc").join("v3");
    std::fs::create_dir_all(&v).expect("mkdir");
    assert_eq!(
        name_and_major_from_path(&v),
        ("fargate-svc".to_string(), Some(3))
    );
    assert_eq!(
        name_and_major_from_path(&dir.path().join("fargate-svc")).1,
        None
    );
}

#[test]
fn path_errors_name_the_path() {
    let msg = |p: &str| check_relative_path(p).expect_err(p).to_string();
    assert_eq!(msg(""), "empty path");
    assert_eq!(
        msg("/etc/passwd"),
        "path \"/etc/passwd\" is absolute; use a path relative to the bundle"
    );
    assert_eq!(
        msg("a/../../b"),
        "path \"a/../../b\" escapes the bundle with \"..\"; keep every file inside it"
    );
    assert_eq!(msg("a\nb"), "path \"a\\nb\" contains control characters");
    assert_eq!(msg("./."), "path \"./.\" names no file");
    assert_eq!(check_relative_path("./a//b").expect("ok"), "a/b");
}

#[test]
fn env_template_ref_errors_quote_the_reference() {
    let err = |s: &str| EnvTemplateRef::parse(s).expect_err(s);
    assert_eq!(
        err("fargate-env").to_string(),
        "\"fargate-env\" is not of the form <environment-template>:<major>, e.g. fargate-env:1"
    );
    let major = err("fargate-env: one");
    assert!(matches!(major, EnvTemplateRefError::Major { .. }));
    assert_eq!(
        major.to_string(),
        "\"fargate-env: one\": major version \" one\" is not a whole number"
    );
    assert!(std::error::Error::source(&major).is_some());
    assert_eq!(
        err(" :1").to_string(),
        "\" :1\": the template name is empty"
    );
    assert_eq!(
        EnvTemplateRef::parse(" fargate-env : 2 ").expect("ok"),
        EnvTemplateRef {
            name: "fargate-env".into(),
            major: 2
        }
    );
}
