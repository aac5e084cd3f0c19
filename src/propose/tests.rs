use super::rewrite::{InputEdit, rewrite};
use super::*;
use crate::catalog::{Bundle, BundleFiles};

const MANIFEST: &str = "infrastructure:\n  templates:\n    - file: \"cloudformation.yaml\"\n      rendering_engine: jinja\n      template_language: cloudformation\n";
const CFN: &str = "Resources:\n  T:\n    Type: AWS::SNS::Topic\n";

fn svc(major: u32, schema: &str) -> Bundle {
    let mut f = BundleFiles::new("test");
    for (p, c) in [
        ("schema/schema.yaml", schema),
        ("instance_infrastructure/manifest.yaml", MANIFEST),
        ("instance_infrastructure/cloudformation.yaml", CFN),
        ("pipeline_infrastructure/manifest.yaml", MANIFEST),
        ("pipeline_infrastructure/cloudformation.yaml", CFN),
        (".compatible-envs", "basic-env:1\n"),
    ] {
        f.insert(p, c.as_bytes().to_vec()).expect("path");
    }
    Bundle::load("web-svc", major, &f).expect("bundle")
}

fn env(major: u32, schema: &str) -> Bundle {
    let mut f = BundleFiles::new("test");
    for (p, c) in [
        ("schema/schema.yaml", schema),
        ("infrastructure/manifest.yaml", MANIFEST),
        ("infrastructure/cloudformation.yaml", CFN),
    ] {
        f.insert(p, c.as_bytes().to_vec()).expect("path");
    }
    Bundle::load("basic-env", major, &f).expect("bundle")
}

const SVC_V1: &str = "schema:\n  format:\n    openapi: \"3.0.0\"\n  service_input_type: \"In\"\n  pipeline_input_type: \"Pipe\"\n  types:\n    In:\n      type: object\n      properties:\n        port:\n          type: integer\n          default: 80\n        legacy:\n          type: string\n    Pipe:\n      type: object\n      properties:\n        dockerfile:\n          type: string\n          default: Dockerfile\n";

const SVC_V2: &str = "schema:\n  format:\n    openapi: \"3.0.0\"\n  service_input_type: \"In\"\n  pipeline_input_type: \"Pipe\"\n  types:\n    In:\n      type: object\n      properties:\n        port:\n          type: string\n          default: \"80\"\n        cpu:\n          type: integer\n          default: 256\n        region:\n          type: string\n          description: \"Where the service runs\"\n      required: [cpu, region]\n    Pipe:\n      type: object\n      properties:\n        dockerfile:\n          type: string\n          default: Dockerfile\n";

const SPEC: &str = "# The payments service.\n# Owned by team payments.\nproton: ServiceSpec\nname: payments\ntemplate: {name: web-svc, major: 1, minor: 3}\npipeline:\n  dockerfile: Dockerfile   # the default\ninstances:\n  - name: payments-dev\n    environment: dev\n    spec:\n      port: 8080\n      # a legacy flag\n      legacy: \"yes\"\n    component: {name: cache, path: proton/components/cache}\n  - name: payments-prod\n    environment: prod\n    spec:\n      legacy: |\n        multi\n        line\n      port: 9090\n";

#[test]
fn rewrite_keeps_comments_bumps_major_fills_and_drops() {
    let to = svc(2, SVC_V2);
    let r = rewrite(SPEC, &to).expect("rewrite");
    assert!(r.formatting_kept, "{}", r.text);
    assert!(
        r.text
            .starts_with("# The payments service.\n# Owned by team payments.\n")
    );
    assert!(
        r.text.contains("template: {name: web-svc, major: 2}\n"),
        "{}",
        r.text
    );
    assert!(r.text.contains("dockerfile: Dockerfile   # the default"));
    assert_eq!(r.unpinned, Some(3));
    assert!(!r.text.contains("legacy"), "{}", r.text);
    assert!(!r.text.contains("multi"), "{}", r.text);
    // Both instances gain cpu (default) and region (placeholder), in their own block.
    assert_eq!(r.text.matches("cpu: 256  # added by web-svc v2").count(), 2);
    assert_eq!(r.text.matches("region: \"FILL-ME(protond)").count(), 2);
    assert!(r.has_placeholders());
    let parsed: serde_yaml::Value = serde_yaml::from_str(&r.text).expect("yaml");
    assert_eq!(
        parsed["instances"][0]["spec"]["cpu"],
        serde_yaml::Value::from(256)
    );
    assert_eq!(
        parsed["instances"][1]["spec"]["port"],
        serde_yaml::Value::from(9090)
    );
    assert_eq!(
        parsed["instances"][0]["component"]["name"],
        serde_yaml::Value::from("cache")
    );
    assert!(r.edits.contains(&InputEdit::Dropped {
        path: "instances[1].spec.legacy".into()
    }));
    assert!(r.edits.contains(&InputEdit::Filled {
        path: "instances[0].spec.cpu".into(),
        value: "256".into()
    }));
    assert!(r.edits.contains(&InputEdit::Placeholder {
        path: "instances[0].spec.region".into(),
        about: Some("Where the service runs".into())
    }));
}

#[test]
fn placeholder_fails_validation_until_filled() {
    let to = svc(2, SVC_V2);
    let r = rewrite(SPEC, &to).expect("rewrite");
    let errs = crate::spec::parse(&r.text, "proton/services/payments.yaml", "payments")
        .expect_err("placeholder must not validate");
    let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert!(
        text.iter().any(|e| e.starts_with(
            "proton/services/payments.yaml: instances[0].spec.region: still holds the placeholder"
        )),
        "{text:?}"
    );
    let filled = r.text.replace(
        "\"FILL-ME(protond): string region required by web-svc v2\"",
        "eu-west-1",
    );
    crate::spec::parse(&filled, "proton/services/payments.yaml", "payments")
        .expect("valid once filled");
}

#[test]
fn block_style_header_and_null_spec_are_edited_in_place() {
    let to = env(
        3,
        "schema:\n  format:\n    openapi: \"3.0.0\"\n  environment_input_type: \"E\"\n  types:\n    E:\n      type: object\n      properties:\n        team:\n          type: string\n          default: platform\n      required: [team]\n",
    );
    let text = "proton: EnvironmentSpec\nname: dev\ntemplate:\n  name: basic-env\n  major: 1\n  minor: 0\nstage: dev\nspec:\n";
    let r = rewrite(text, &to).expect("rewrite");
    assert!(r.formatting_kept, "{}", r.text);
    assert_eq!(
        r.text,
        "proton: EnvironmentSpec\nname: dev\ntemplate:\n  name: basic-env\n  major: 3\nstage: dev\nspec:\n  team: \"platform\"  # added by basic-env v3: its default\n"
    );
}

#[test]
fn flow_style_inputs_fall_back_to_a_whole_rewrite() {
    let to = svc(2, SVC_V2);
    let text = "# header comment\nproton: ServiceSpec\nname: s\ntemplate: {name: web-svc, major: 1}\ninstances:\n  - {name: a, environment: dev, spec: {port: 1, legacy: x}}\n";
    let r = rewrite(text, &to).expect("rewrite");
    assert!(!r.formatting_kept);
    assert!(r.text.starts_with("# header comment\n"));
    let v: serde_yaml::Value = serde_yaml::from_str(&r.text).expect("yaml");
    assert_eq!(v["template"]["major"], serde_yaml::Value::from(2));
    assert_eq!(
        v["instances"][0]["spec"]["port"],
        serde_yaml::Value::from(1)
    );
    assert!(v["instances"][0]["spec"].get("legacy").is_none());
    assert_eq!(
        v["instances"][0]["spec"]["cpu"],
        serde_yaml::Value::from(256)
    );
}

#[test]
fn schema_diff_lists_added_removed_and_changed_inputs() {
    let rows = schema_diff(
        &svc(1, SVC_V1),
        &svc(2, SVC_V2),
        &[InputKind::Service, InputKind::Pipeline],
    );
    let text: Vec<String> = rows.iter().map(|(a, b)| format!("{a}: {b}")).collect();
    assert_eq!(
        text,
        vec![
            "service.port: type integer → string; default `80` → `\"80\"`",
            "service.cpu: added: integer, required, default `256`",
            "service.region: added: string, required",
            "service.legacy: removed",
        ]
    );
}

#[test]
fn render_summary_names_cloudformation_resources() {
    let old = vec![(
        "cloudformation.yaml".to_string(),
        "Resources:\n  A:\n    Type: AWS::SNS::Topic\n  B:\n    Type: AWS::SQS::Queue\n"
            .to_string(),
    )];
    let new = vec![(
        "cloudformation.yaml".to_string(),
        "Resources:\n  A:\n    Type: AWS::SNS::Topic\n    Properties: {TopicName: x}\n  C:\n    Type: AWS::S3::Bucket\n".to_string(),
    )];
    assert_eq!(
        summarize_render(&old, &new),
        "1 added: `C` (AWS::S3::Bucket); 1 removed: `B` (AWS::SQS::Queue); 1 changed: `A`"
    );
    assert_eq!(summarize_render(&old, &old), "no resource changes");
    let tf_old = vec![("main.tf".to_string(), "a\nb\n".to_string())];
    let tf_new = vec![("main.tf".to_string(), "a\nc\nd\n".to_string())];
    assert_eq!(
        summarize_render(&tf_old, &tf_new),
        "2 lines added, 1 removed"
    );
}

#[test]
fn branch_names_depend_only_on_the_file() {
    assert_eq!(
        branch_name("protond/", "proton/services/payments.yaml"),
        "protond/upgrade/proton/services/payments-4bdfb6c8"
    );
    assert!(branch_name("bot-", "proton/a b@{x}.yml").starts_with("bot-upgrade/proton/a-b--x--"));
    // Paths that clean up alike still get their own branches.
    assert_ne!(
        branch_name("p/", "s/a.b.yaml"),
        branch_name("p/", "s/a-b.yaml")
    );
    assert_ne!(branch_name("p/", "s/x.yaml"), branch_name("p/", "s/x.yml"));
}

#[test]
fn rewrite_errors_say_what_is_wrong_with_the_file() {
    let to = svc(2, SVC_V2);
    let err = |text: &str| rewrite(text, &to).expect_err(text);
    let parse = err("a: [");
    assert!(matches!(parse, RewriteError::Parse(_)));
    assert!(parse.to_string().starts_with("not valid YAML: "), "{parse}");
    assert!(std::error::Error::source(&parse).is_some());
    assert_eq!(err("- a\n").to_string(), "the spec file is not a mapping");
    assert_eq!(
        err("proton: ServiceSpec\nname: x\n").to_string(),
        "the spec file has no `template:` header to bump"
    );
}

#[test]
fn build_and_step_errors_keep_their_former_text() {
    let to = svc(2, SVC_V2);
    let build = BuildError {
        path: "proton/web.yaml".into(),
        major: 2,
        source: rewrite("- a\n", &to).expect_err("not a mapping"),
    };
    assert_eq!(
        build.to_string(),
        "proton/web.yaml: cannot rewrite for v2: the spec file is not a mapping"
    );
    let source = gix::ObjectId::from_hex(b"not-hex").expect_err("not an id");
    let gix_text = source.to_string();
    let step = StepError::Base {
        base: "not-hex".into(),
        source,
    };
    assert_eq!(
        step.to_string(),
        format!("writing the upgrade commit: {gix_text}")
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let Err(open) = crate::source::Mirror::open("/nowhere/repo.git", tmp.path()) else {
        panic!("a mirror that was never synced opened");
    };
    let open_text = open.to_string();
    assert_eq!(StepError::Mirror(open).to_string(), open_text);
}

#[test]
fn set_minor_edits_only_the_template_header() {
    use super::rewrite::set_minor;
    let flow = "# c\nproton: ServiceSpec\ntemplate: {name: web-svc, major: 1}  # keep\nname: x\n";
    let block =
        "proton: ServiceSpec\ntemplate:\n  name: web-svc\n  # the major\n  major: 1\nname: x\n";
    let cases: &[(&str, Option<u32>, Option<&str>)] = &[
        (
            flow,
            Some(0),
            Some(
                "# c\nproton: ServiceSpec\ntemplate: {name: web-svc, major: 1, minor: 0}  # keep\nname: x\n",
            ),
        ),
        (
            "template: {name: web-svc, major: 1, minor: 2}\n",
            Some(0),
            Some("template: {name: web-svc, major: 1, minor: 0}\n"),
        ),
        (
            "template: {name: web-svc, minor: 2, major: 1}\n",
            None,
            Some("template: {name: web-svc, major: 1}\n"),
        ),
        (flow, None, Some(flow)),
        (
            block,
            Some(3),
            Some(
                "proton: ServiceSpec\ntemplate:\n  name: web-svc\n  # the major\n  major: 1\n  minor: 3\nname: x\n",
            ),
        ),
        (
            "template:\n  name: t\n  major: 1\n  minor: 2 # pinned\n",
            Some(0),
            Some("template:\n  name: t\n  major: 1\n  minor: 0 # pinned\n"),
        ),
        (
            "template:\n  name: t\n  minor: 2\n  major: 1\n",
            None,
            Some("template:\n  name: t\n  major: 1\n"),
        ),
        ("proton: ServiceSpec\nname: x\n", Some(0), None),
    ];
    for (text, minor, want) in cases {
        assert_eq!(
            set_minor(text, *minor).as_deref(),
            *want,
            "{text:?} {minor:?}"
        );
    }
}
