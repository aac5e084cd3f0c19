use super::*;
use crate::catalog::{Engine, IacFile, Language};

fn cfn(engine: Engine, source: &str) -> IacFile {
    IacFile {
        path: "instance_infrastructure/cloudformation.yaml".into(),
        source: source.into(),
        engine,
        language: Language::Cloudformation,
    }
}

fn env_info() -> EnvironmentInfo {
    EnvironmentInfo {
        name: "dev".into(),
        inputs: json!({"vpc_cidr": "10.0.0.0/16"}),
        outputs: BTreeMap::from([("VPC".to_string(), "vpc-123".to_string())]),
        account_id: "123456789012".into(),
    }
}

fn service() -> ServiceInfo {
    ServiceInfo {
        name: "payments".into(),
        branch_name: Some("main".into()),
        repository_id: Some("acme/payments".into()),
        repository_connection_arn: Some(
            "arn:aws:codestar-connections:us-east-1:123456789012:connection/x".into(),
        ),
    }
}

fn instance(inputs: Value) -> InstanceInfo {
    InstanceInfo {
        name: "payments-dev".into(),
        inputs,
        outputs: BTreeMap::new(),
        environment: env_info(),
        component_outputs: BTreeMap::new(),
    }
}

fn render_jinja(source: &str, inputs: Value) -> Result<String, RenderError> {
    let ctx = instance_context(&service(), &instance(inputs));
    render_file(&cfn(Engine::Jinja, source), &ctx)
}

#[test]
fn jinja_renders_every_namespace() {
    let src = "Resources:\n  Q:\n    Type: AWS::SQS::Queue\n    Properties:\n      QueueName: '{{service.name}}-{{service_instance.name}}-{{environment.name}}'\n      Tags:\n        - Key: vpc\n          Value: '{{environment.outputs.VPC}}'\n        - Key: port\n          Value: '{{service_instance.inputs.port}}'\n        - Key: account\n          Value: '{{environment.account_id}}'\n        - Key: repo\n          Value: '{{service.repository_id}}@{{service.branch_name}}'\n";
    let out = render_jinja(src, json!({"port": 8080})).expect("renders");
    assert!(
        out.contains("QueueName: 'payments-payments-dev-dev'"),
        "{out}"
    );
    assert!(out.contains("Value: 'vpc-123'"));
    assert!(out.contains("Value: '8080'"));
    assert!(out.contains("Value: '123456789012'"));
    assert!(out.contains("Value: 'acme/payments@main'"));
    assert!(!out.contains(guard::OPEN) && !out.contains(guard::CLOSE));
}

#[test]
fn jinja_builtins_proton_templates_use() {
    let src = "A: '{{ service_instance.inputs.missing | default(\"fallback\") }}'\nB: '{{ 'x' if service_instance.inputs.missing is defined else 'y' }}'\nC: '{{ service_instance.inputs.long | truncate(8, true, '') }}'\nD: {{ service_instance.inputs.list | tojson }}\nE: '{{ service_instance.name ~ \"-suffix\" }}'\nF: '{% raw %}{{ not rendered }}{% endraw %}'\n{% if service_instance.inputs.missing %}G: 1\n{% endif %}H: {{ service_instance.inputs.list | length }}\n";
    let out = render_jinja(
        src,
        json!({"long": "abcdefghijklmnopqrst", "list": ["a", "b"]}),
    )
    .expect("renders");
    assert!(out.contains("A: 'fallback'"), "{out}");
    assert!(out.contains("B: 'y'"), "{out}");
    assert!(out.contains("C: 'abcdefgh'"), "{out}");
    assert!(
        out.contains("D: [\"a\",\"b\"]") || out.contains("D: [\"a\", \"b\"]"),
        "{out}"
    );
    assert!(out.contains("E: 'payments-dev-suffix'"), "{out}");
    assert!(out.contains("F: '{{ not rendered }}'"), "{out}");
    assert!(!out.contains("G:"), "{out}");
    assert!(out.contains("H: 2"), "{out}");
    let t = render_jinja("A: '{{ service_instance.inputs.s | truncate(9) }}'\nB: '{{ service_instance.inputs.s | truncate(length=40) }}'\n", json!({"s": "hello big wide world"})).expect("renders");
    assert!(t.contains("A: 'hello...'"), "{t}");
    assert!(t.contains("B: 'hello big wide world'"), "{t}");
}

#[test]
fn undefined_variable_names_variable_file_and_line() {
    let src = "A: 1\nB: '{{ environment.outputs.Missing }}'\n";
    let err = render_jinja(src, json!({})).expect_err("undefined");
    match &err {
        RenderError::Undefined {
            file,
            line,
            variable,
        } => {
            assert_eq!(file, "instance_infrastructure/cloudformation.yaml");
            assert_eq!(*line, 2);
            assert!(
                variable.contains("environment.outputs.Missing"),
                "{variable}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("cloudformation.yaml:2"), "{msg}");
}

#[test]
fn handlebars_renders_same_context_and_names_undefined() {
    let src = "Resources:\n  Q:\n    Type: AWS::SQS::Queue\n    Properties:\n      QueueName: '{{service.name}}-{{service_instance.name}}'\n      DelaySeconds: {{service_instance.inputs.delay}}\n{{#if service_instance.inputs.fifo}}      FifoQueue: true\n{{/if}}      Tags:\n        - Key: vpc\n          Value: '{{environment.outputs.VPC}}'\n";
    let ctx = instance_context(&service(), &instance(json!({"delay": 5, "fifo": true})));
    let out = render_file(&cfn(Engine::Handlebars, src), &ctx).expect("renders");
    assert!(out.contains("QueueName: 'payments-payments-dev'"), "{out}");
    assert!(out.contains("DelaySeconds: 5"), "{out}");
    assert!(out.contains("FifoQueue: true"), "{out}");
    assert!(out.contains("Value: 'vpc-123'"), "{out}");
    let bad = "A: 1\nB: '{{environment.outputs.Nope}}'\n";
    match render_file(&cfn(Engine::Handlebars, bad), &ctx) {
        Err(RenderError::Undefined { variable, line, .. }) => {
            assert!(variable.contains("environment.outputs.Nope"), "{variable}");
            assert_eq!(line, 2);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn template_syntax_in_values_is_not_executed() {
    for engine in [Engine::Jinja, Engine::Handlebars] {
        let src = if engine == Engine::Jinja {
            "A: '{{ service_instance.inputs.name }}'\n"
        } else {
            "A: '{{service_instance.inputs.name}}'\n"
        };
        let ctx = instance_context(
            &service(),
            &instance(json!({"name": "{{ environment.outputs.VPC }}{% if true %}x{% endif %}"})),
        );
        let out = render_file(&cfn(engine, src), &ctx).expect("renders");
        assert!(
            out.contains("{{ environment.outputs.VPC }}"),
            "{engine:?}: {out}"
        );
        assert!(!out.contains("vpc-123"), "{engine:?}: {out}");
    }
}

#[test]
fn yaml_injection_through_inputs_is_rejected() {
    let src = "Resources:\n  Bucket:\n    Type: AWS::S3::Bucket\n    Properties:\n      BucketName: '{{ service_instance.inputs.name }}'\n";
    let attack = "x'\n  Evil:\n    Type: AWS::IAM::User\n    Properties: {UserName: 'pwn";
    for engine in [Engine::Jinja, Engine::Handlebars] {
        let src = if engine == Engine::Handlebars {
            src.replace(
                "{{ service_instance.inputs.name }}",
                "{{service_instance.inputs.name}}",
            )
        } else {
            src.to_string()
        };
        let ctx = instance_context(&service(), &instance(json!({"name": attack})));
        let err = render_file(&cfn(engine, &src), &ctx).expect_err("injection");
        assert!(
            matches!(
                err,
                RenderError::Injection { .. } | RenderError::NotYaml { .. }
            ),
            "{engine:?}: {err:?}"
        );
        assert!(err.to_string().contains("cloudformation.yaml"), "{err}");
    }
    let plain = "Resources:\n  Bucket:\n    Type: AWS::S3::Bucket\n    Properties:\n      BucketName: {{ service_instance.inputs.name }}\n";
    for attack in [
        "x\n  Evil:\n    Type: AWS::IAM::User",
        "!Ref AWS::AccountId",
        "[a, b]",
    ] {
        let err = render_jinja(plain, json!({"name": attack})).expect_err(attack);
        assert!(
            matches!(err, RenderError::Injection { .. }),
            "{attack:?}: {err:?}"
        );
    }
    let err = render_jinja(plain, json!({"name": "a\u{E001}b"})).expect_err("reserved");
    assert!(matches!(err, RenderError::Reserved { .. }), "{err:?}");
}

fn with_component(outputs: &[(&str, &str)]) -> Value {
    let mut inst = instance(json!({}));
    inst.component_outputs = outputs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    instance_context(&service(), &inst)
}

#[test]
fn proton_filters_produce_valid_blocks_at_their_column() {
    let src = "Resources:\n  Role:\n    Type: AWS::IAM::Role\n    Properties:\n      ManagedPolicyArns:\n        - !Ref Base\n        {{ service_instance.components.default.outputs | proton_cfn_iam_policy_arns }}\n  Task:\n    Type: AWS::ECS::TaskDefinition\n    Properties:\n      ContainerDefinitions:\n        - Name: app\n          Environment:\n            - Name: A\n              Value: b\n            {{ service_instance.components.default.outputs | proton_cfn_ecs_task_definition_formatted_env_vars }}\n  Fn:\n    Type: AWS::Lambda::Function\n    Properties:\n      Environment:\n        Variables:\n          {{ service_instance.components.default.outputs | proton_cfn_lambda_function_formatted_env_vars }}\n      FunctionName: {{ 'This-is_valid_37' | proton_cfn_sanitize }}\n      Role: {{ 'arn:aws:some-service::123456789012:some-resource/resource-name' | proton_cfn_sanitize }}\n";
    let ctx = with_component(&[
        ("BucketName", "my-bucket"),
        ("PolicyArn", "arn:aws:iam::123456789012:policy/read-bucket"),
        ("NotAPolicy", "arn:aws:iam::123456789012:role/r"),
    ]);
    let out = render_file(&cfn(Engine::Jinja, src), &ctx).expect("renders");
    let doc: serde_yaml::Value = serde_yaml::from_str(&out).expect("yaml");
    let arns = &doc["Resources"]["Role"]["Properties"]["ManagedPolicyArns"];
    assert_eq!(arns.as_sequence().map(Vec::len), Some(2), "{out}");
    assert_eq!(arns[1], "arn:aws:iam::123456789012:policy/read-bucket");
    let env = &doc["Resources"]["Task"]["Properties"]["ContainerDefinitions"][0]["Environment"];
    assert_eq!(env.as_sequence().map(Vec::len), Some(4), "{out}");
    assert_eq!(env[1]["Name"], "BucketName");
    assert_eq!(env[1]["Value"], "my-bucket");
    let vars = &doc["Resources"]["Fn"]["Properties"]["Environment"]["Variables"];
    assert_eq!(vars["BucketName"], "my-bucket", "{out}");
    let props = &doc["Resources"]["Fn"]["Properties"];
    assert_eq!(props["FunctionName"], "This-is_valid_37");
    assert_eq!(
        props["Role"],
        "arn:aws:some-service::123456789012:some-resource/resource-name"
    );
    let bad = cfn(
        Engine::Jinja,
        "A: {{ 'this::is::incorrect' | proton_cfn_sanitize }}\n",
    );
    let err = render_file(&bad, &ctx).expect_err("sanitize rejects");
    assert!(
        err.to_string().contains(
            "Illegal character(s) detected in \"this::is::incorrect\". Must match regex ^[a-zA-Z0-9_-]*$ or be a valid ARN"
        ),
        "{err}"
    );

    // No component: the blocks are empty and the document still parses.
    let ctx = with_component(&[]);
    let src2 = "L:\n  - a\n  {{ service_instance.components.default.outputs | proton_cfn_iam_policy_arns }}\n";
    let out = render_file(&cfn(Engine::Jinja, src2), &ctx).expect("renders");
    let doc: serde_yaml::Value = serde_yaml::from_str(&out).expect("yaml");
    assert_eq!(doc["L"].as_sequence().map(Vec::len), Some(1));
}

#[test]
fn filter_values_are_quoted_and_raw_false_validates() {
    let ctx = with_component(&[("Evil", "x\n- injected")]);
    let src = "E:\n  {{ service_instance.components.default.outputs | proton_cfn_ecs_task_definition_formatted_env_vars }}\n";
    let out = render_file(&cfn(Engine::Jinja, src), &ctx).expect("renders");
    let doc: serde_yaml::Value = serde_yaml::from_str(&out).expect("yaml");
    assert_eq!(doc["E"].as_sequence().map(Vec::len), Some(1), "{out}");
    let strict = "E:\n  {{ service_instance.components.default.outputs | proton_cfn_ecs_task_definition_formatted_env_vars(raw=False) }}\n";
    let err = render_file(&cfn(Engine::Jinja, strict), &ctx).expect_err("validates");
    assert!(err.to_string().contains("does not match"), "{err}");
    let ok = with_component(&[("Fine", "abc-1_2")]);
    render_file(&cfn(Engine::Jinja, strict), &ok).expect("valid value passes");
    let lambda = "V:\n  {{ service_instance.components.default.outputs | proton_cfn_lambda_function_formatted_env_vars(raw=False) }}\n";
    assert!(render_file(&cfn(Engine::Jinja, lambda), &ctx).is_err());
}

#[test]
fn pipeline_context_lists_instances() {
    let mut a = instance(json!({"port": 1}));
    a.outputs.insert("Url".into(), "http://a".into());
    let mut b = instance(json!({"port": 2}));
    b.name = "payments-prod".into();
    let ctx = pipeline_context(&service(), &json!({"dockerfile": "Dockerfile"}), &[a, b]);
    let src = "Resources:\n{% for service_instance in service_instances %}  Deploy{{loop.index}}:\n    Type: AWS::SNS::Topic\n    Properties:\n      TopicName: '{{ service_instance.name }}-{{ service_instance.environment.account_id }}'\n{% endfor %}Outputs:\n  D:\n    Value: '{{ pipeline.inputs.dockerfile }} {{ service_instances[0].outputs.Url }}'\n";
    let out = render_file(&cfn(Engine::Jinja, src), &ctx).expect("renders");
    assert!(
        out.contains("Deploy1:") && out.contains("Deploy2:"),
        "{out}"
    );
    assert!(
        out.contains("TopicName: 'payments-prod-123456789012'"),
        "{out}"
    );
    assert!(out.contains("Value: 'Dockerfile http://a'"), "{out}");
}

#[test]
fn component_context_has_component_name() {
    let ctx = component_context(&service(), &instance(json!({})), "bucket", &json!({}));
    let src = "Resources:\n  B:\n    Type: AWS::S3::Bucket\n    Properties:\n      BucketName: '{{ component.name }}-{{ service_instance.name }}'\n";
    let out = render_file(&cfn(Engine::Jinja, src), &ctx).expect("renders");
    assert!(out.contains("'bucket-payments-dev'"), "{out}");
}

#[test]
fn syntax_errors_name_file_and_line() {
    let bad = cfn(Engine::Jinja, "A: 1\nB: {% if %}\n");
    let err = check_syntax(&bad).expect_err("syntax");
    assert!(err.to_string().contains("cloudformation.yaml:2"), "{err}");
    let bad = cfn(Engine::Handlebars, "A: 1\nB: {{#if x}}\n");
    assert!(check_syntax(&bad).is_err());
}

#[test]
fn runaway_templates_are_stopped() {
    let src = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";
    let err = render_jinja(src, json!({})).expect_err("fuel");
    assert!(err.to_string().to_lowercase().contains("fuel"), "{err}");
}

#[test]
fn terraform_files_pass_through() {
    let f = IacFile {
        path: "infrastructure/main.tf".into(),
        source: "variable \"x\" {}\n${var.x}\n{{ not jinja }}".into(),
        engine: Engine::Hcl,
        language: Language::Terraform,
    };
    assert_eq!(render_file(&f, &json!({})).expect("pass"), f.source);
}

#[test]
fn sanitize_error_quotes_the_value_in_protons_words() {
    assert_eq!(filters::sanitize("ok_Value-1").expect("safe"), "ok_Value-1");
    let err = filters::sanitize("a b").expect_err("space");
    assert_eq!(err.value, "a b");
    assert_eq!(
        err.to_string(),
        "Illegal character(s) detected in \"a b\". Must match regex ^[a-zA-Z0-9_-]*$ or be a valid ARN"
    );
}

/// Renders `src` and expects it refused by a bound; prints the time it took.
fn refused_by_a_bound(case: &str, src: &str) -> String {
    let start = std::time::Instant::now();
    let err = render_jinja(src, json!({})).expect_err(case);
    println!(
        "render bound: {case}: refused in {:?}: {err}",
        start.elapsed()
    );
    assert!(matches!(err, RenderError::Bound { .. }), "{case}: {err}");
    assert!(err.to_string().contains("cloudformation.yaml"), "{err}");
    err.to_string()
}

#[test]
fn string_repetition_is_bounded_by_fuel() {
    let e = refused_by_a_bound("repeat", r#"A: '{{ "x" * 100000000 }}'"#);
    assert!(e.contains("fuel"), "{e}");
    refused_by_a_bound(
        "doubling",
        r#"{% set ns = namespace(s="x") %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}A: {{ ns.s|length }}"#,
    );
}

#[test]
fn output_is_bounded() {
    let e = refused_by_a_bound(
        "output",
        r#"{% for i in range(100000) %}{{ "x" * 100 }}{% endfor %}"#,
    );
    assert!(e.contains(&bounds::MAX_OUTPUT_BYTES.to_string()), "{e}");
    // A lazily repeated list printed whole is streamed into the bound, not copied first.
    refused_by_a_bound("print lazy list", "A: {{ [1] * 100000000 }}");
    // Handlebars (no fuel): its loops walk the context's lists, its output is bounded.
    let each = "{{#each service_instance.inputs.items}}{{../service.name}}{{/each}}";
    let items = vec![0; bounds::MAX_OUTPUT_BYTES / 8];
    let ctx = instance_context(&service(), &instance(json!({ "items": items })));
    let err = render_file(&cfn(Engine::Handlebars, each), &ctx).expect_err("handlebars");
    assert!(matches!(err, RenderError::Bound { .. }), "{err}");
}

#[test]
fn amplifying_filters_are_refused_before_they_allocate() {
    for (case, src) in [
        ("indent", r#"A: {{ "a\nb"|indent(1000000000) }}"#),
        (
            "replace",
            r#"A: {{ ("a" * 100000)|replace("", "x" * 1000) }}"#,
        ),
        (
            "replace count",
            r#"A: {{ ("a" * 100000)|replace("a", "x" * 1000, 100000) }}"#,
        ),
        ("join", r#"A: {{ range(100000)|join("x" * 1000) }}"#),
        ("format", r#"A: {{ "%999999999s"|format("a") }}"#),
        (
            "tojson",
            r"A: {{ ([range(100000)|list] * 1000)|tojson|length }}",
        ),
        (
            "tojson indent",
            r"A: {{ [[[1]]]|tojson(indent=1000000000) }}",
        ),
        (
            "pprint",
            r"A: {{ ([range(100000)|list] * 1000)|pprint|length }}",
        ),
        ("string", r"A: {{ ([1] * 100000000)|string|length }}"),
        ("split", r#"A: {{ ("a," * 10000000)|split(",")|length }}"#),
        ("lines", r#"A: {{ ("a\n" * 10000000)|lines|length }}"#),
        (
            "sum",
            r"A: {{ ([[1] * 10000] * 10000)|sum(start=[])|length }}",
        ),
        (
            "str.replace",
            r#"A: {{ ("a" * 100000).replace("a", "x" * 1000) }}"#,
        ),
        (
            "str.join",
            r#"A: {{ ("x" * 1000).join(range(100000)|map("string")) }}"#,
        ),
        ("str.format", r#"A: {{ "{:>999999999}".format(1) }}"#),
        (
            "str.split",
            r#"A: {{ ("a," * 10000000).split(",")|length }}"#,
        ),
    ] {
        refused_by_a_bound(case, src);
    }
}

#[test]
fn bounded_filters_keep_their_results() {
    let src = r#"A: '{{ "a\nb"|indent(2) }}|{{ "aaa"|replace("a", "b", 2) }}|{{ "aaa"|replace("a", "c") }}|{{ [1, 2]|join("-") }}|{{ "%3s"|format("x") }}|{{ {"k": 1}|tojson }}|{{ "a b"|split|length }}|{{ [1, 2]|sum }}|{{ "a-b".replace("-", "+") }}|{{ "-".join(["x", "y"]) }}|{{ "{}!".format(1) }}'"#;
    let out = render_jinja(src, json!({})).expect("renders");
    assert_eq!(out, "A: 'a\n  b|bba|ccc|1-2|  x|{\"k\": 1}|2|3|a+b|x-y|1!'");
}

/// Every template bundle of the example repos and of the AWS Proton samples (when
/// `../shared/proton-samples` is there) passes the release check, trial render included.
#[test]
fn real_bundles_pass_the_release_check() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = Vec::new();
    for base in [
        root.join("example-repos/platform-templates"),
        root.join("../shared/proton-samples/environment-templates"),
        root.join("../shared/proton-samples/service-templates"),
    ] {
        let Ok(templates) = std::fs::read_dir(&base) else {
            continue;
        };
        for t in templates.flatten() {
            if let Ok(majors) = std::fs::read_dir(t.path()) {
                dirs.extend(majors.flatten().map(|m| m.path()).filter(|p| p.is_dir()));
            }
        }
    }
    assert!(dirs.len() >= 3, "{dirs:?}");
    for dir in dirs {
        let files = crate::catalog::read_dir(&dir, &crate::catalog::Limits::default())
            .unwrap_or_else(|e| panic!("{}: {e:?}", dir.display()));
        let (name, major) = crate::catalog::name_and_major_from_path(&dir);
        let Ok(bundle) = crate::catalog::Bundle::load(&name, major.unwrap_or(1), &files) else {
            continue;
        };
        for f in bundle
            .infrastructure
            .files
            .iter()
            .chain(bundle.pipeline.iter().flat_map(|p| &p.files))
        {
            check_release_file(&bundle, f)
                .unwrap_or_else(|e| panic!("{}: {}: {e}", dir.display(), f.path));
        }
    }
}

#[test]
fn the_release_check_refuses_only_bound_violations() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("example-repos/platform-templates/web-svc/v1");
    let files =
        crate::catalog::read_dir(&dir, &crate::catalog::Limits::default()).expect("example bundle");
    let bundle = crate::catalog::Bundle::load("web-svc", 1, &files).expect("loads");
    let base = bundle.infrastructure.files[0].clone();
    let with = |source: String| IacFile {
        source,
        ..base.clone()
    };
    // An ordinary error (here an undefined variable) may come from the placeholders: it passes.
    check_release_file(
        &bundle,
        &with(format!("{{{{ nothing.here }}}}\n{}", base.source)),
    )
    .expect("ordinary errors are left to deploy time");
    for src in [
        format!("{{% set pad = \"x\" * 100000000 %}}\n{}", base.source),
        format!("# {{{{ \"a\"|indent(1000000000) }}}}\n{}", base.source),
        format!("A: {}{}\n", "[".repeat(1000), "]".repeat(1000)),
    ] {
        let e = check_release_file(&bundle, &with(src)).expect_err("refused");
        assert!(
            matches!(e, RenderError::Bound { .. } | RenderError::TooDeep { .. }),
            "{e}"
        );
    }
}

#[test]
fn handlebars_partials_that_could_recurse_are_refused() {
    let ctx = instance_context(&service(), &instance(json!({})));
    for src in [
        "{{#*inline \"p\"}}x{{> p}}{{/inline}}{{> p}}",
        "{{#*inline \"p\"}}{{#if service.name}}{{> q}}{{/if}}{{/inline}}{{#*inline \"q\"}}{{> p}}{{/inline}}{{> p}}",
    ] {
        let file = cfn(Engine::Handlebars, src);
        assert!(check_syntax(&file).is_err(), "{src}");
        let e = render_file(&file, &ctx).expect_err(src);
        assert!(e.to_string().contains("inline partial"), "{e}");
    }
    // Calling an inline partial from outside its definition is fine.
    let ok = cfn(
        Engine::Handlebars,
        "{{#*inline \"p\"}}A: 1{{/inline}}{{> p}}\n",
    );
    assert_eq!(render_file(&ok, &ctx).expect("renders"), "A: 1\n");
}

#[test]
fn a_jinja_render_that_walks_lazy_lists_is_stopped_by_its_time_budget() {
    // `[1] * n` is built lazily without fuel, and comparing two of them walks both without
    // charging fuel either: only the time budget stops this.
    let src = "A: {% for i in range(20) %}{% if ([1] * 1000000) == ([1] * 1000000) %}x{% endif %}{% endfor %}\n";
    let budget = std::time::Duration::from_millis(100);
    let start = std::time::Instant::now();
    let e = jinja::render_within("hostile.yaml", src, &json!({}), budget).expect_err("stopped");
    let took = start.elapsed();
    println!("render: lazy-list walk stopped after {took:?} (budget {budget:?})");
    assert!(matches!(e, RenderError::Bound { .. }), "{e}");
    assert!(e.to_string().contains("hostile.yaml"), "{e}");
    assert!(e.to_string().contains("time budget"), "{e}");
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    // While the abandoned render runs, the same template fails at once.
    let again = jinja::render_within("hostile.yaml", src, &json!({}), budget).expect_err("refused");
    assert!(again.to_string().contains("still running"), "{again}");
    // Any other template renders as usual meanwhile.
    assert_eq!(
        jinja::render_within("ok.yaml", "A: 1\n", &json!({}), budget).expect("renders"),
        "A: 1\n"
    );
}

#[test]
fn compiled_templates_are_cached_and_never_stale() {
    let ctx = json!({"name": "cache-test-a1", "n": 3});
    let v1 = cfn(Engine::Jinja, "A: {{ name }}\nB: cache-test-v1\n");
    let v2 = cfn(Engine::Jinja, "A: {{ name }}\nB: cache-test-v2\n");
    let first = render_file(&v1, &ctx).expect("renders");
    assert!(jinja::is_cached(&v1.path, &v1.source));
    assert_eq!(render_file(&v1, &ctx).expect("renders again"), first);
    // Same file name, new source (a new release): its own template, not the cached one.
    assert_eq!(
        render_file(&v2, &ctx).expect("renders"),
        "A: cache-test-a1\nB: cache-test-v2\n"
    );
    assert_eq!(render_file(&v1, &ctx).expect("renders"), first);
    // A template that does not compile is not cached, and fails the same way every time.
    let broken = cfn(Engine::Jinja, "A: {{ name \nB: cache-test-broken\n");
    let e1 = render_file(&broken, &ctx).expect_err("syntax error");
    assert!(!jinja::is_cached(&broken.path, &broken.source));
    assert_eq!(render_file(&broken, &ctx).expect_err("syntax error"), e1);
    // Errors of a cached template are those of a fresh one (undefined variable, its line).
    let e = render_file(&v1, &json!({"n": 1})).expect_err("undefined");
    assert!(
        matches!(e, RenderError::Undefined { line: 1, ref variable, .. } if variable == "name"),
        "{e:?}"
    );
}

#[test]
fn the_rendered_hash_reuses_the_guards_parse() {
    // Values on the fast path and off it: the hash from the guard's parse is the hash of the
    // text parsed again.
    for (source, ctx) in [
        (
            "A: {{ name }}\nB: [1, 2]\n# comment\n",
            json!({"name": "plain"}),
        ),
        (
            "A: '{{ name }}'\nB: !Ref X\n",
            json!({"name": "quoted: with # and [x]"}),
        ),
        ("A: {{ n }}\n", json!({"n": 1.5})),
    ] {
        let file = cfn(Engine::Jinja, source);
        let (text, parsed) = render_file_parsed(&file, &ctx).expect("renders");
        assert!(parsed.is_some());
        let docs = [(file.path.clone(), text.clone())];
        assert_eq!(
            crate::desired::hash_parsed_documents([(
                file.path.as_str(),
                text.as_str(),
                parsed.as_ref()
            )]),
            crate::desired::hash_documents(&docs),
            "{source}"
        );
    }
}
