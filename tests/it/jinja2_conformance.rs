//! Jinja2 conformance: bundles rendered by `protond render` and by Python Jinja2 (the engine
//! AWS Proton rendered with, through `scripts/jinja2_render.py`) from the very context
//! protond used (`protond render --context-json`) must be byte-identical. Runs when python3
//! with jinja2 is installed; under `CI=true` their absence is a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{examples, text};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether python3 can import jinja2; fails under CI when it cannot.
fn jinja2_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import jinja2"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but python3 with jinja2 is missing: pip install jinja2"
        );
        eprintln!("python3 with jinja2 not installed: Jinja2 conformance not checked");
    }
    ok
}

fn write(root: &Path, files: &[(&str, &str)]) {
    for (p, c) in files {
        let path = root.join(p);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, c).expect("write");
    }
}

/// Renders `bundle` for `spec` with protond (into `work/protond`, contexts in
/// `work/contexts`), then with Jinja2 (into `work/jinja2`).
fn render_both(bundle: &Path, spec: &Path, work: &Path) -> (Output, Output) {
    let ours = Command::new(env!("CARGO_BIN_EXE_protond"))
        .arg("render")
        .arg(bundle)
        .arg("--spec")
        .arg(spec)
        .arg("--out-dir")
        .arg(work.join("protond"))
        .arg("--context-json")
        .arg(work.join("contexts"))
        .output()
        .expect("run protond render");
    let theirs = Command::new("python3")
        .arg(repo().join("scripts/jinja2_render.py"))
        .arg(bundle)
        .arg(work.join("contexts"))
        .arg(work.join("jinja2"))
        .output()
        .expect("run scripts/jinja2_render.py");
    (ours, theirs)
}

/// Every file Jinja2 rendered, as (path, protond's bytes, Jinja2's bytes).
fn pairs(work: &Path) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![work.join("jinja2")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)
            .expect("read jinja2 output")
            .flatten()
        {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path
                .strip_prefix(work.join("jinja2"))
                .expect("below")
                .to_path_buf();
            let ours = std::fs::read(work.join("protond").join(&rel)).unwrap_or_default();
            let theirs = std::fs::read(&path).expect("read");
            out.push((rel.display().to_string(), ours, theirs));
        }
    }
    out.sort();
    out
}

const SCHEMA: &str = r#"schema:
  format:
    openapi: "3.0.0"
  environment_input_type: "FilterInput"
  types:
    FilterInput:
      type: object
      properties:
        description: {type: string, default: "a shared environment for the payments team and friends"}
        suffix: {type: string, default: ""}
        ports: {type: array, items: {type: integer}, default: [8080, 443, 80, 9090, 22]}
        size: {type: integer, default: 123456789}
        ratio: {type: number, default: 2.71828}
        enabled: {type: boolean, default: true}
        tags:
          type: object
          properties: {team: {type: string}, Cost: {type: string}, env: {type: string}}
          default: {team: payments, Cost: "42", env: dev}
"#;

/// A template exercising Jinja2 filters, tests and globals minijinja lacked or implemented
/// differently.
const TEMPLATE: &str = r#"AWSTemplateFormatVersion: '2010-09-09'
Description: '{{ environment.inputs.description | truncate(30, true) | title }}'
Resources:
  Bucket:
    Type: AWS::S3::Bucket
    Properties:
      BucketName: '{{ environment.name | lower | replace("_", "-") }}-{{ environment.inputs.suffix | default("x", true) }}'
      Tags:
{% for k, v in environment.inputs.tags | dictsort(false, 'key', true) %}
        - Key: '{{ k | upper }}'
          Value: '[{{ v | string | center(9) }}]'
{% endfor %}
Outputs:
  Ports:
    Value: '{{ environment.inputs.ports | map("string") | join(",") }} {{ environment.inputs.ports | sum }} {{ environment.inputs.ports | max }} {{ environment.inputs.ports | sort(true) | first }}'
  Batches:
    Value: '{% for b in environment.inputs.ports | batch(2, 0) %}{{ b | join("+") }};{% endfor %}'
  Sizes:
    Value: '{{ environment.inputs.size | filesizeformat(true) }} {{ environment.inputs.size | filesizeformat }} {{ environment.inputs.ratio | round(2, "floor") }} {{ environment.inputs.ratio * 1e20 }}'
  Words:
    Value: '{{ environment.inputs.description | wordcount }} {{ environment.inputs.description | wordwrap(12, wrapstring="/") }}'
  Flags:
    Value: '{{ environment.inputs.enabled }} {{ environment.inputs.size is divisibleby(3) }} {{ environment.inputs.tags is sequence }} {{ "1_000" | int }} {{ "x" | float(1.5) }}'
  Json:
    Value: '{{ environment.inputs.tags | tojson | urlencode }}'
  Globals:
    Value: '{% set c = cycler("a", "b") %}{{ c.next() }}{{ c.next() }}{{ c.next() }} {% set ns = namespace(n=0) %}{% for p in environment.inputs.ports %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }} {{ range(3) | list | pprint }}'
"#;

/// A bundle using many Jinja2 filters, and the example environment bundle with both of its
/// specs, render byte for byte as Python Jinja2 renders them; a changed context changes
/// Jinja2's output (the harness renders the context protond wrote, nothing else).
#[test]
fn bundles_render_as_jinja2_renders_them() {
    if !jinja2_available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let bundle = tmp.path().join("filters/v1");
    write(
        &bundle,
        &[
            ("schema/schema.yaml", SCHEMA),
            (
                "infrastructure/manifest.yaml",
                "infrastructure:\n  templates:\n    - file: cloudformation.yaml\n      rendering_engine: jinja\n      template_language: cloudformation\n",
            ),
            ("infrastructure/cloudformation.yaml", TEMPLATE),
        ],
    );
    let spec = tmp.path().join("filters-env.yaml");
    write(
        tmp.path(),
        &[(
            "filters-env.yaml",
            "proton: EnvironmentSpec\nname: Filters_Env\nspec:\n  suffix: \"\"\n",
        )],
    );
    let env_bundle = examples().join("platform-templates/basic-env/v1");
    let env_specs = examples().join("platform-envs/proton/environments");
    let cases = [
        (bundle.clone(), spec.clone()),
        (env_bundle.clone(), env_specs.join("dev.yaml")),
        (env_bundle, env_specs.join("prod.yaml")),
    ];
    let mut compared = 0;
    for (i, (bundle, spec)) in cases.iter().enumerate() {
        let work = tmp.path().join(format!("work{i}"));
        let (ours, theirs) = render_both(bundle, spec, &work);
        assert!(
            ours.status.success(),
            "protond render {}: {}",
            spec.display(),
            text(&ours)
        );
        assert!(
            theirs.status.success(),
            "jinja2 {}: {}",
            spec.display(),
            text(&theirs)
        );
        for (path, ours, theirs) in pairs(&work) {
            assert!(
                ours == theirs,
                "{path} ({}) differs from Jinja2's rendering:\nprotond:\n{}\njinja2:\n{}",
                spec.display(),
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs)
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 3, "one rendered file per case compared");

    // The filter bundle's output is what Jinja2 computed, not an echo: spot-check values.
    let rendered = std::fs::read_to_string(
        tmp.path()
            .join("work0/protond/Filters_Env/infrastructure/cloudformation.yaml"),
    )
    .expect("rendered");
    for want in [
        "Value: '[ payments]'",
        "8080,443,80,9090,22 17715 9090 9090",
        "117.7 MiB 123.5 MB 2.71 2.71828e+20",
        "True True True 1000 1.5",
        "aba 5 [0, 1, 2]",
    ] {
        assert!(rendered.contains(want), "{want:?} not in:\n{rendered}");
    }

    // Control: a context changed after protond rendered makes Jinja2's output differ.
    let ctx_file = tmp
        .path()
        .join("work1/contexts/dev/infrastructure/cloudformation.yaml.json");
    let ctx = std::fs::read_to_string(&ctx_file).expect("context written");
    assert!(
        ctx.contains("\"team\": \"platform\""),
        "context holds the spec's inputs: {ctx}"
    );
    std::fs::write(
        &ctx_file,
        ctx.replace("\"team\": \"platform\"", "\"team\": \"tampered\""),
    )
    .expect("write");
    let out = Command::new("python3")
        .arg(repo().join("scripts/jinja2_render.py"))
        .arg(&cases[1].0)
        .arg(tmp.path().join("work1/contexts"))
        .arg(tmp.path().join("work1/jinja2"))
        .output()
        .expect("rerun");
    assert!(out.status.success(), "{}", text(&out));
    let changed = pairs(&tmp.path().join("work1"));
    assert!(
        changed.iter().any(|(_, ours, theirs)| ours != theirs),
        "a changed context must change Jinja2's output"
    );
}

/// An undefined output handed to a filter fails the render naming the file and the output,
/// as any undefined use does (it rendered `null` before).
#[test]
fn a_filter_on_an_undefined_output_fails_naming_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bundle = tmp.path().join("outs/v1");
    write(
        &bundle,
        &[
            (
                "schema/schema.yaml",
                "schema:\n  format:\n    openapi: \"3.0.0\"\n  environment_input_type: \"In\"\n  types:\n    In:\n      type: object\n      properties: {}\n",
            ),
            (
                "infrastructure/manifest.yaml",
                "infrastructure:\n  templates:\n    - file: cloudformation.yaml\n      rendering_engine: jinja\n      template_language: cloudformation\n",
            ),
            (
                "infrastructure/cloudformation.yaml",
                "Resources:\n  T:\n    Type: AWS::SNS::Topic\n    Properties:\n      TopicName: {{ environment.outputs.Missing | tojson }}\n",
            ),
        ],
    );
    write(
        tmp.path(),
        &[("e.yaml", "proton: EnvironmentSpec\nname: e\nspec: {}\n")],
    );
    let out = Command::new(env!("CARGO_BIN_EXE_protond"))
        .arg("render")
        .arg(&bundle)
        .arg("--spec")
        .arg(tmp.path().join("e.yaml"))
        .output()
        .expect("run protond render");
    let t = text(&out);
    assert!(!out.status.success(), "must fail: {t}");
    assert!(
        t.contains("infrastructure/cloudformation.yaml:5"),
        "names file and line: {t}"
    );
    assert!(
        t.contains("environment.outputs.Missing"),
        "names the output: {t}"
    );
    assert!(!t.contains("null"), "{t}");
}
