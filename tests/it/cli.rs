//! The `protond validate`, `protond render` and `protond check-config` commands, run as a
//! user runs them, on bundles and configs written by the tests themselves.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn protond(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_protond"))
        .args(args)
        .output()
        .expect("run protond")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write(root: &Path, files: &[(&str, &str)]) {
    for (p, c) in files {
        let path = root.join(p);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, c).expect("write");
    }
}

const SVC_SCHEMA: &str = r#"schema:
  format:
    openapi: "3.0.0"
  service_input_type: "QueueInput"
  pipeline_input_type: "PipelineInput"
  types:
    QueueInput:
      type: object
      required: [team]
      properties:
        port:
          type: integer
          minimum: 1
          maximum: 65535
          default: 8080
        team:
          type: string
          pattern: "^[a-z]+$"
        size:
          type: string
          enum: [small, large]
          default: small
    PipelineInput:
      type: object
      properties:
        dockerfile:
          type: string
          default: Dockerfile
"#;

const JINJA_MANIFEST: &str = "infrastructure:\n  templates:\n    - file: cloudformation.yaml\n      rendering_engine: jinja\n      template_language: cloudformation\n";
const HBS_MANIFEST: &str = "infrastructure:\n  templates:\n    - file: cloudformation.yaml\n      rendering_engine: handlebars\n      template_language: cloudformation\n";

const INSTANCE_CFN: &str = r"AWSTemplateFormatVersion: '2010-09-09'
Resources:
  Queue:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: '{{ service.name }}-{{ service_instance.name }}'
      Tags:
        - Key: team
          Value: '{{ service_instance.inputs.team }}'
        - Key: port
          Value: '{{ service_instance.inputs.port }}'
        - Key: topic
          Value: '{{ environment.outputs.TopicArn }}'
Outputs:
  QueueUrl:
    Value: !Ref Queue
";

const PIPELINE_CFN: &str = r"AWSTemplateFormatVersion: '2010-09-09'
Resources:
{% for service_instance in service_instances %}
  Param{{ loop.index }}:
    Type: AWS::SSM::Parameter
    Properties:
      Type: String
      Name: '/{{ service.name }}/{{ service_instance.name }}'
      Value: '{{ pipeline.inputs.dockerfile }} {{ service_instance.outputs.QueueUrl }}'
{% endfor %}
";

const HBS_CFN: &str = r"AWSTemplateFormatVersion: '2010-09-09'
Resources:
  Queue:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: '{{service.name}}-{{service_instance.name}}'
{{#if service_instance.inputs.fifo}}
      FifoQueue: true
{{/if}}
      DelaySeconds: {{service_instance.inputs.delay}}
";

fn service_bundle(root: &Path) -> PathBuf {
    write(
        root,
        &[
            ("queue-svc/v1/schema/schema.yaml", SVC_SCHEMA),
            (
                "queue-svc/v1/instance_infrastructure/manifest.yaml",
                JINJA_MANIFEST,
            ),
            (
                "queue-svc/v1/instance_infrastructure/cloudformation.yaml",
                INSTANCE_CFN,
            ),
            (
                "queue-svc/v1/pipeline_infrastructure/manifest.yaml",
                JINJA_MANIFEST,
            ),
            (
                "queue-svc/v1/pipeline_infrastructure/cloudformation.yaml",
                PIPELINE_CFN,
            ),
            (
                "queue-svc/v1/.template-registration.yaml",
                "compatible_environments:\n  - basic-env:1\n",
            ),
        ],
    );
    root.join("queue-svc/v1")
}

const SPEC: &str = "proton: ServiceSpec\nname: orders\ntemplate: {name: queue-svc, major: 1}\npipeline: {}\ninstances:\n  - name: orders-dev\n    environment: dev\n    spec: {team: core}\n  - name: orders-prod\n    environment: prod\n    spec: {team: core, port: 443}\n";

#[test]
fn validate_accepts_a_good_repo_and_names_each_bundle() {
    let dir = tempfile::tempdir().expect("tempdir");
    service_bundle(dir.path());
    let out = protond(&["validate", dir.path().to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("service template queue-svc v1"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("1 bundle(s) checked, 0 problem(s)"),
        "{}",
        text(&out)
    );
}

#[test]
fn validate_lists_every_problem_and_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = service_bundle(dir.path());
    write(
        &b,
        &[
            (
                "instance_infrastructure/cloudformation.yaml",
                "A: {% if %}\n",
            ),
            (
                "pipeline_infrastructure/manifest.yaml",
                "infrastructure:\n  templates:\n    - file: ../../../etc/passwd\n      rendering_engine: jinja\n      template_language: cloudformation\n",
            ),
        ],
    );
    let out = protond(&["validate", b.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("escapes the bundle"), "{t}");
    assert!(t.contains("FAIL"), "{t}");
}

#[test]
fn validate_reports_syntax_errors_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = service_bundle(dir.path());
    write(
        &b,
        &[(
            "instance_infrastructure/cloudformation.yaml",
            "A: 1\nB: {% if %}\n",
        )],
    );
    let out = protond(&["validate", b.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("instance_infrastructure/cloudformation.yaml:2"),
        "{}",
        text(&out)
    );
}

#[test]
fn render_instance_and_pipeline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = service_bundle(dir.path());
    let spec = dir.path().join("orders.yaml");
    std::fs::write(&spec, SPEC).expect("write");
    let (b, spec) = (b.to_str().expect("utf8"), spec.to_str().expect("utf8"));
    let out = protond(&[
        "render",
        b,
        "--spec",
        spec,
        "--instance",
        "orders-prod",
        "--env-output",
        "TopicArn=arn:aws:sns:us-east-1:123456789012:t",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let doc: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).expect("yaml");
    let props = &doc["Resources"]["Queue"]["Properties"];
    assert_eq!(props["QueueName"], "orders-orders-prod");
    assert_eq!(props["Tags"][1]["Value"], "443");
    assert_eq!(
        props["Tags"][2]["Value"],
        "arn:aws:sns:us-east-1:123456789012:t"
    );

    let out = protond(&[
        "render",
        b,
        "--spec",
        spec,
        "--pipeline",
        "--instance-output",
        "QueueUrl=https://q",
        "--instance-output",
        "orders-prod:QueueUrl=https://prod",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let doc: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).expect("yaml");
    assert_eq!(
        doc["Resources"]["Param1"]["Properties"]["Value"],
        "Dockerfile https://q"
    );
    assert_eq!(
        doc["Resources"]["Param2"]["Properties"]["Value"],
        "Dockerfile https://prod"
    );
    assert_eq!(
        doc["Resources"]["Param2"]["Properties"]["Name"],
        "/orders/orders-prod"
    );
}

#[test]
fn render_names_undefined_environment_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = service_bundle(dir.path());
    let spec = dir.path().join("orders.yaml");
    std::fs::write(&spec, SPEC).expect("write");
    let out = protond(&[
        "render",
        b.to_str().expect("utf8"),
        "--spec",
        spec.to_str().expect("utf8"),
        "--instance",
        "orders-dev",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("environment.outputs.TopicArn"), "{t}");
    assert!(t.contains("cloudformation.yaml:13"), "{t}");
}

#[test]
fn render_rejects_invalid_inputs_with_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = service_bundle(dir.path());
    let spec = dir.path().join("bad.yaml");
    std::fs::write(
        &spec,
        "proton: ServiceSpec\nname: orders\ninstances:\n  - name: a\n    environment: dev\n    spec: {team: core}\n  - name: b\n    environment: dev\n    spec: {team: Core1, port: 70000, size: huge}\n",
    )
    .expect("write");
    let out = protond(&[
        "render",
        b.to_str().expect("utf8"),
        "--spec",
        spec.to_str().expect("utf8"),
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("instances[1].spec.port: 70000 is above maximum 65535"),
        "{t}"
    );
    assert!(t.contains("instances[1].spec.team"), "{t}");
    assert!(t.contains("instances[1].spec.size"), "{t}");
}

#[test]
fn render_rejects_yaml_injection_in_inputs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = service_bundle(dir.path());
    write(
        &b,
        &[(
            "schema/schema.yaml",
            &SVC_SCHEMA.replace("pattern: \"^[a-z]+$\"", "minLength: 1"),
        )],
    );
    let spec = dir.path().join("evil.yaml");
    std::fs::write(
        &spec,
        "proton: ServiceSpec\nname: orders\ninstances:\n  - name: a\n    environment: dev\n    spec:\n      team: \"x'\\n  Evil:\\n    Type: AWS::IAM::User\\n    Properties: {UserName: 'pwn\"\n",
    )
    .expect("write");
    let out = protond(&[
        "render",
        b.to_str().expect("utf8"),
        "--spec",
        spec.to_str().expect("utf8"),
        "--instance",
        "a",
        "--env-output",
        "TopicArn=t",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("AWS::IAM::User"));
    let t = text(&out);
    assert!(
        t.contains("input value") || t.contains("not valid YAML"),
        "{t}"
    );
}

#[test]
fn handlebars_bundle_renders() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        &[
            (
                "hb-svc/v2/schema/schema.yaml",
                "schema:\n  format:\n    openapi: \"3.0.0\"\n  service_input_type: \"In\"\n  types:\n    In:\n      type: object\n      properties:\n        fifo:\n          type: boolean\n          default: false\n        delay:\n          type: integer\n          default: 0\n",
            ),
            (
                "hb-svc/v2/instance_infrastructure/manifest.yaml",
                HBS_MANIFEST,
            ),
            (
                "hb-svc/v2/instance_infrastructure/cloudformation.yaml",
                HBS_CFN,
            ),
            ("hb-svc/v2/.compatible-envs", "basic-env:1\n"),
            (
                "spec.yaml",
                "proton: ServiceSpec\ninstances:\n  - name: w1\n    environment: dev\n    spec: {fifo: true, delay: 5}\n",
            ),
        ],
    );
    let out = protond(&[
        "render",
        dir.path().join("hb-svc/v2").to_str().expect("utf8"),
        "--spec",
        dir.path().join("spec.yaml").to_str().expect("utf8"),
        "--name",
        "worker",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let doc: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).expect("yaml");
    let props = &doc["Resources"]["Queue"]["Properties"];
    assert_eq!(props["QueueName"], "worker-w1");
    assert_eq!(props["FifoQueue"], true);
    assert_eq!(props["DelaySeconds"], 5);
}

#[test]
fn check_config_reports_problems() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("proton.toml");
    std::fs::write(&cfg, "poll_interval = \"often\"\n").expect("write");
    let out = protond(&["check-config", "--config", cfg.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("poll_interval"), "{}", text(&out));
    // The example is valid once the local repos it names are git repositories.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("proton.toml.example");
    let copy = dir.path().join("example.toml");
    std::fs::copy(&example, &copy).expect("copy the example");
    for repo in ["platform-templates", "platform-envs", "payments"] {
        git_init(&dir.path().join("example-repos").join(repo));
    }
    let out = protond(&["check-config", "--config", copy.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", text(&out));
}

fn git_init(path: &Path) {
    std::fs::create_dir_all(path).expect("mkdir");
    let out = Command::new("git")
        .args(["init", "-q"])
        .arg(path)
        .output()
        .expect("run git");
    assert!(out.status.success(), "{}", text(&out));
}

/// `check-config` reports every unknown key (top level, nested table, array of tables) with
/// its line and the nearest valid key, and a local repo path that does not exist, in one run
/// (exit 1); the daemon's commands refuse the same config, naming every unknown key.
#[test]
fn check_config_reports_every_unknown_key_and_missing_local_repo() {
    let dir = tempfile::tempdir().expect("tempdir");
    git_init(&dir.path().join("templates"));
    let cfg = dir.path().join("proton.toml");
    let toml = "poll_intervall = \"30s\"\n\n[aws]\nregoin = \"eu-west-1\"\n\n\
                [[template_repos]]\nname = \"templates\"\nurl = \"templates\"\n\n\
                [[spec_repos]]\nname = \"envs\"\nurl = \"repos/envs\"\nbrnach = \"main\"\n";
    std::fs::write(&cfg, toml).expect("write");
    let file = cfg.display().to_string();
    let out = protond(&["check-config", "--config", &file]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let missing = dir.path().join("repos/envs").display().to_string();
    let expected = [
        format!(
            "{file}: poll_intervall: unknown key on line 1; did you mean `poll_interval`? Rename it, or remove it"
        ),
        format!(
            "{file}: aws.regoin: unknown key on line 4; did you mean `region`? Rename it, or remove it"
        ),
        format!(
            "{file}: spec_repos[0].brnach: unknown key on line 13; did you mean `branch`? Rename it, or remove it"
        ),
        format!(
            "{file}: spec_repos[0].url: \"repos/envs\" is a local path ({missing}), which does not exist; give the path of the repo (relative paths are taken from the config file's folder), or clone it there (git clone <remote> {missing})"
        ),
        format!("4 problem(s) in {file}"),
    ];
    assert_eq!(lines, expected, "{}", text(&out));
    // The daemon refuses to start on it too (exit 2, an error), naming every unknown key;
    // the missing local repo is not its concern (a repo gone for a while stays unknown).
    let out = protond(&["reconcile", "--once", "--config", &file]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(!text(&out).contains("spec_repos[0].url"), "{}", text(&out));
    for key in ["poll_intervall", "aws.regoin", "spec_repos[0].brnach"] {
        assert!(
            text(&out).contains(&format!("{file}: {key}: unknown key")),
            "{}",
            text(&out)
        );
    }
}

/// `check-config` accepts a `PostgreSQL` state with `[ha]` (it used to refuse `postgres://`),
/// and names each key and fix for the HA mistakes: `[ha]` or a repo's shard on a `SQLite`
/// state, a password in the URL (never echoed), a shard past `shards`, a bad
/// `PROTOND_SHARD`.
#[test]
fn check_config_checks_the_ha_settings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("proton.toml");
    let file = cfg.display().to_string();
    let check = |toml: &str, shard_env: Option<&str>| {
        std::fs::write(&cfg, toml).expect("write");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_protond"));
        cmd.args(["check-config", "--config", &file])
            .env_remove("PROTOND_SHARD")
            .env_remove("PROTOND_REPLICA_ID");
        if let Some(v) = shard_env {
            cmd.env("PROTOND_SHARD", v);
        }
        cmd.output().expect("run protond")
    };
    let repos = "[[spec_repos]]\nname = \"payments\"\nurl = \"https://github.com/acme/payments.git\"\nshard = 2\n[[spec_repos]]\nname = \"checkout\"\nurl = \"https://github.com/acme/checkout.git\"\n[[spec_repos]]\nname = \"search\"\nurl = \"https://github.com/acme/search.git\"\n";
    let good = format!(
        "state = \"postgres://protond@db.internal:5432/protond?sslmode=verify-full\"\nstate_password_file = \"/run/secrets/protond-db-password\"\n[ha]\nlease = \"20s\"\nshards = 3\nshard = 1\n{repos}"
    );
    let out = check(&good, None);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "{file}: ok (0 template repos, 3 spec repos)\nshards: 0: checkout; 1: -; 2: payments, search\n"
        ),
        "{}",
        text(&out)
    );
    // The environment's shard is checked like the file's.
    let out = check(&good, Some("3"));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "{file}: ha.shard (PROTOND_SHARD): 3 is not a shard: ha.shards is 3, so shards are 0 to 2"
        )),
        "{}",
        text(&out)
    );
    let bad = format!("state = \"sqlite://state.db\"\n[ha]\nlease = \"1h\"\n{repos}");
    let out = check(&bad, None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        [
            format!(
                "{file}: ha.lease: \"1h\" is out of range; give 1s to 5m (default 15s: a replica takes over about 15s after the leader stops)"
            ),
            format!(
                "{file}: ha: HA and sharding need state = postgres://…; a SQLite file has one writer: set state to a postgres:// URL, or remove [ha]"
            ),
            format!(
                "{file}: spec_repos[0].shard: sharding needs state = postgres://…; a SQLite file has one writer: remove shard, or set state to a postgres:// URL"
            ),
            format!("3 problem(s) in {file}"),
        ],
        "{}",
        text(&out)
    );
    let out = check(
        "state = \"postgres://protond:s3cret-pw@db.internal/protond\"\n",
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("{file}: state: the URL holds a password")),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("put it in PROTOND_STATE_PASSWORD or state_password_file"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("s3cret-pw"), "{}", text(&out));
}

/// A reader that goes away (`protond render … | head -1`) ends the command quietly, as it
/// does `ls`: no "Broken pipe" error or panic on stderr.
#[test]
fn a_closed_pipe_ends_a_printing_command_quietly() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let bundle = tmp.path().join("basic-env/v1");
    let source = crate::common::examples().join("platform-templates/basic-env/v1");
    for f in ["infrastructure/manifest.yaml", "schema/schema.yaml"] {
        std::fs::create_dir_all(bundle.join(f).parent().expect("folder")).expect("mkdir");
        std::fs::copy(source.join(f), bundle.join(f)).expect("copy");
    }
    // Far more output than a pipe buffers.
    let mut template = std::fs::read_to_string(source.join("infrastructure/cloudformation.yaml"))
        .expect("template");
    for i in 0..20_000 {
        template.push_str(&format!("# filler line {i}\n"));
    }
    std::fs::write(bundle.join("infrastructure/cloudformation.yaml"), template).expect("write");
    let spec = crate::common::examples().join("platform-envs/proton/environments/dev.yaml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_protond"))
        .arg("render")
        .arg(&bundle)
        .arg("--spec")
        .arg(&spec)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("read a line");
    assert!(first.starts_with("AWSTemplateFormatVersion"), "{first}");
    // The reader is gone (dropped above).
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty(), "stderr: {stderr}");
    assert!(
        out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
        "{:?}",
        out.status
    );
}

/// Shell completions and man pages come from the clap definitions, so every command is in
/// them.
#[test]
fn completions_and_man_pages_cover_every_command() {
    let help = text(&protond(&["--help"]));
    let commands: Vec<String> = help
        .split("Commands:")
        .nth(1)
        .expect("a command list")
        .split("Options:")
        .next()
        .expect("commands")
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect();
    assert!(commands.len() > 10, "{commands:?}");
    for shell in ["bash", "zsh", "fish"] {
        let out = protond(&["completions", shell]);
        assert!(out.status.success(), "{}", text(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        for c in &commands {
            assert!(script.contains(c.as_str()), "{shell} completion lacks {c}");
        }
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = protond(&["man", "--dir", tmp.path().to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", text(&out));
    let main = std::fs::read_to_string(tmp.path().join("protond.1")).expect("protond.1");
    assert!(
        main.starts_with(".ie") && main.contains(".SH NAME"),
        "{main}"
    );
    for c in &commands {
        let page = tmp.path().join(format!("protond-{c}.1"));
        assert!(page.is_file(), "no man page for {c}");
    }
    let printed = protond(&["man"]);
    let printed = String::from_utf8_lossy(&printed.stdout);
    assert!(
        printed.contains(".SH SUBCOMMANDS") && printed.contains("protond\\-status(1)"),
        "{printed}"
    );
}
