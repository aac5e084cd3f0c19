//! The abuse suite: bad input, one case at a time, against a converged deployment.
//!
//! The examples are deployed to a `moto_server` first (real git repos, the `protond` binary, a
//! real `SQLite` file). Then each case commits or tags one piece of bad input, and checks that
//!
//! * `protond plan` reports it with a clear error naming the file and the field or rule
//!   (every expected fragment must appear), and
//! * `protond reconcile --once` changes nothing: the same resource records (version, input
//!   and rendering hashes, status), the same stacks, and no new deployment.
//!
//! Then the case is undone (a revert commit; bad tags stay, each case tags a new minor) and
//! the next one runs against the same deployment, so a case that leaked would fail the ones
//! after it too. The suite prints one line per case and a total:
//! `cargo test --test it abuse:: -- --nocapture` (README, "Limits and guarantees").
//!
//! The HTTP cases (forged webhooks and tokens) run against `protond run` at the end.

use std::collections::BTreeSet;
use std::ops::Deref;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::world::World;
use crate::common::{self, text};

/// The suite's world: the examples on a `moto_server`, plus a third spec repo owned by another
/// team (empty at first), and the next minor version to tag.
struct Abuse {
    world: World,
    /// Minor versions tagged so far per template (each template case tags a new one).
    next_minor: std::cell::Cell<u32>,
}

impl Deref for Abuse {
    type Target = World;

    fn deref(&self) -> &World {
        &self.world
    }
}

/// What a deployment looks like from outside: records, stacks and the deployment count.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    records: BTreeSet<(String, String, String, String, String)>,
    stacks: BTreeSet<(String, String)>,
    deployments: usize,
}

impl Abuse {
    fn new() -> Self {
        let world = World::examples_on_moto()
            .repo("intruder", "another team\n")
            .config(|c| {
                c.spec_repo("intruder", &["allow_empty = true"]);
            })
            .build();
        Self {
            world,
            next_minor: std::cell::Cell::new(1),
        }
    }

    fn symlink(&self, repo: &str, path: &str, target: &str) {
        let p = self.root.join(repo).join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::os::unix::fs::symlink(target, p).expect("symlink");
    }

    /// Commits the template repo and tags the next minor of `template` there.
    fn release(&self, template: &str) -> String {
        self.commit("platform-templates", "bad release");
        let minor = self.next_minor.get();
        self.next_minor.set(minor + 1);
        let tag = format!("{template}/v1.{minor}");
        self.tag(&tag, "release");
        tag
    }

    async fn snapshot(&self) -> Snapshot {
        let store = self.store().await;
        let records = store
            .resources()
            .await
            .expect("resources")
            .into_iter()
            .map(|r| {
                (
                    r.id,
                    r.version.to_string(),
                    r.input_hash,
                    r.rendered_hash,
                    r.status.to_string(),
                )
            })
            .collect();
        let deployments = store
            .deployments(None, 100_000)
            .await
            .expect("history")
            .len();
        let stacks = self
            .stacks()
            .await
            .into_iter()
            .map(|s| (s.name, s.status))
            .collect();
        Snapshot {
            records,
            stacks,
            deployments,
        }
    }
}

/// How a case is undone once checked.
enum Undo {
    /// `git revert` the case's commit in this repo.
    Revert(&'static str),
    /// `git revert` the case's commits in these two repos.
    Revert2(&'static str, &'static str),
    /// Nothing to undo (a bad tag stays; the next template case tags a newer minor).
    Keep,
}

struct Case {
    area: &'static str,
    name: &'static str,
    apply: fn(&Abuse),
    /// Fragments `protond plan` must print (file, field or rule, and the fix).
    expect: &'static [&'static str],
    /// Fragments it must not print.
    absent: &'static [&'static str],
    undo: Undo,
}

/// Offline cases: `protond render` on a bundle written for the case (nothing is deployed).
struct RenderCase {
    area: &'static str,
    name: &'static str,
    /// Template file name and text (Jinja), in an instance bundle with one string input.
    template: (&'static str, &'static str),
    /// The input value.
    value: &'static str,
    /// Whether the render must succeed (the value is data) or be refused.
    accepted: bool,
    /// Fragments the output must contain.
    expect: &'static [&'static str],
    /// Fragments the output must not contain.
    absent: &'static [&'static str],
}

const SVC: &str = "proton/services/payments.yaml";
const ENV: &str = "proton/environments/prod.yaml";
const WEB_CFN: &str = "web-svc/v1/instance_infrastructure/cloudformation.yaml";
const WEB_SCHEMA: &str = "web-svc/v1/schema/schema.yaml";
const WEB_MANIFEST: &str = "web-svc/v1/instance_infrastructure/manifest.yaml";

/// A valid service spec for the intruder repo, with `name` and an instance in `env`.
fn intruder_service(name: &str, env: &str) -> String {
    format!(
        "proton: ServiceSpec\nname: {name}\ntemplate: {{name: worker-svc, major: 1}}\ninstances:\n  - name: {name}-x\n    environment: {env}\n    spec: {{}}\n"
    )
}

fn cases() -> Vec<Case> {
    vec![
        // ---- Spec files ----
        Case {
            area: "spec",
            name: "malformed YAML in a new spec file",
            apply: |w| {
                w.write(
                    "payments",
                    "proton/services/bad.yaml",
                    "proton: ServiceSpec\nname: [oops\n",
                );
                w.commit("payments", "bad yaml");
            },
            expect: &["proton/services/bad.yaml", "line 3"],
            absent: &[],
            undo: Undo::Revert("payments"),
        },
        Case {
            area: "spec",
            name: "malformed YAML in a deployed spec file (its resources are kept)",
            apply: |w| {
                w.replace(
                    "payments",
                    SVC,
                    "  - name: payments-prod",
                    "  - name: [payments-prod",
                );
                w.commit("payments", "broken");
            },
            expect: &["proton/services/payments.yaml", "line"],
            absent: &[],
            undo: Undo::Revert("payments"),
        },
        Case {
            area: "spec",
            name: "wrong type for an input",
            apply: |w| {
                w.replace(
                    "payments",
                    SVC,
                    "desired_count: 3",
                    "desired_count: \"three\"",
                );
                w.commit("payments", "wrong type");
            },
            expect: &[
                "proton/services/payments.yaml",
                "instances[1].spec.desired_count",
                "integer",
            ],
            absent: &[],
            undo: Undo::Revert("payments"),
        },
        Case {
            area: "spec",
            name: "wrong type for a spec field (instances as a mapping)",
            apply: |w| {
                w.write(
                    "payments",
                    "proton/services/odd.yaml",
                    "proton: ServiceSpec\nname: odd\ntemplate: {name: worker-svc, major: 1}\ninstances: {a: b}\n",
                );
                w.commit("payments", "wrong shape");
            },
            expect: &["proton/services/odd.yaml", "instances"],
            absent: &[],
            undo: Undo::Revert("payments"),
        },
        Case {
            area: "spec",
            name: "input below the schema minimum",
            apply: |w| {
                w.replace(
                    "payments",
                    SVC,
                    "port: 8080\n      memory: \"2048\"",
                    "port: 80\n      memory: \"2048\"",
                );
                w.commit("payments", "low port");
            },
            expect: &[
                "proton/services/payments.yaml",
                "instances[1].spec.port",
                "1024",
            ],
            absent: &[],
            undo: Undo::Revert("payments"),
        },
        Case {
            area: "spec",
            name: "input outside the schema enum",
            apply: |w| {
                w.replace("payments", SVC, "memory: \"2048\"", "memory: \"4096\"");
                w.commit("payments", "enum");
            },
            expect: &[
                "proton/services/payments.yaml",
                "instances[1].spec.memory",
                "2048",
            ],
            absent: &[],
            undo: Undo::Revert("payments"),
        },
        Case {
            area: "spec",
            name: "input not matching the schema pattern",
            apply: |w| {
                w.replace(
                    "payments",
                    SVC,
                    "desired_count: 3\n      health_check_path: /health",
                    "desired_count: 3\n      health_check_path: \"health; rm -rf /\"",
                );
                w.commit("payments", "pattern");
            },
            expect: &[
                "proton/services/payments.yaml",
                "instances[1].spec.health_check_path",
                "pattern",
            ],
            absent: &[],
            undo: Undo::Revert("payments"),
        },
        Case {
            area: "spec",
            name: "unknown input",
            apply: |w| {
                w.replace(
                    "payments",
                    SVC,
                    "desired_count: 3",
                    "desired_count: 3\n      replicas: 9",
                );
                w.commit("payments", "unknown input");
            },
            expect: &[
                "proton/services/payments.yaml",
                "instances[1].spec.replicas",
                "unknown input",
            ],
            absent: &[],
            undo: Undo::Revert("payments"),
        },
        Case {
            area: "spec",
            name: "template that does not exist",
            apply: |w| {
                w.write(
                    "payments",
                    "proton/services/ghost.yaml",
                    "proton: ServiceSpec\nname: ghost\ntemplate: {name: nope-svc, major: 1}\ninstances:\n  - name: ghost-dev\n    environment: dev\n    spec: {}\n",
                );
                w.commit("payments", "ghost");
            },
            expect: &[
                "proton/services/ghost.yaml",
                "template",
                "nope-svc",
                "tag one",
            ],
            absent: &[],
            undo: Undo::Revert("payments"),
        },
        Case {
            area: "spec",
            name: "huge spec file (2 MiB)",
            apply: |w| {
                let mut big = String::from("proton: ServiceSpec\nname: big\n# ");
                big.push_str(&"x".repeat(2 * 1024 * 1024));
                big.push('\n');
                w.write("payments", "proton/services/big.yaml", &big);
                w.commit("payments", "huge");
            },
            expect: &["proton/services/big.yaml", "limited"],
            absent: &[],
            undo: Undo::Revert("payments"),
        },
        Case {
            area: "spec",
            name: "deep nesting in an input value",
            apply: |w| {
                let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
                w.replace(
                    "payments",
                    SVC,
                    "desired_count: 3",
                    &format!("desired_count: 3\n      extra: {deep}"),
                );
                w.commit("payments", "deep");
            },
            expect: &["proton/services/payments.yaml", "nested too deeply"],
            absent: &[],
            undo: Undo::Revert("payments"),
        },
        Case {
            area: "spec",
            name: "alias bomb (billion laughs)",
            apply: |w| {
                let mut bomb = String::from(
                    "proton: ServiceSpec\nname: bomb\nx0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
                );
                for i in 1..10 {
                    let prev = i - 1;
                    bomb.push_str(&format!(
                        "x{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
                    ));
                }
                w.write("payments", "proton/services/bomb.yaml", &bomb);
                w.commit("payments", "bomb");
            },
            expect: &["proton/services/bomb.yaml"],
            absent: &[],
            undo: Undo::Revert("payments"),
        },
        Case {
            area: "injection",
            name: "YAML injection through an input (a new key)",
            apply: |w| {
                w.replace(
                    "payments",
                    SVC,
                    "image: public.ecr.aws/nginx/nginx:stable\n      port: 8080\n      memory: \"2048\"",
                    "image: \"nginx'\\n    Evil: {Type: AWS::IAM::User}\\n#\"\n      port: 8080\n      memory: \"2048\"",
                );
                w.commit("payments", "yaml injection");
            },
            expect: &["payments-prod", "structure"],
            absent: &[],
            undo: Undo::Revert("payments"),
        },
        Case {
            area: "injection",
            name: "YAML injection through an input (closing the quote)",
            apply: |w| {
                w.replace(
                    "payments",
                    SVC,
                    "image: public.ecr.aws/nginx/nginx:stable\n      port: 8080\n      memory: \"2048\"",
                    "image: \"nginx' # \"\n      port: 8080\n      memory: \"2048\"",
                );
                w.commit("payments", "quote injection");
            },
            expect: &[
                "instance_infrastructure/cloudformation.yaml",
                "structure",
                "input values are data",
            ],
            absent: &[],
            undo: Undo::Revert("payments"),
        },
        Case {
            area: "injection",
            name: "YAML injection through an input (a mapping after a closed quote)",
            apply: |w| {
                w.replace(
                    "payments",
                    SVC,
                    "image: public.ecr.aws/nginx/nginx:stable\n      port: 8080\n      memory: \"2048\"",
                    "image: \"x': {Evil: !!binary aGk=} #\"\n      port: 8080\n      memory: \"2048\"",
                );
                w.commit("payments", "tag injection");
            },
            expect: &[
                "instance_infrastructure/cloudformation.yaml",
                "not valid YAML",
                "input values",
            ],
            absent: &[],
            undo: Undo::Revert("payments"),
        },
        Case {
            area: "injection",
            name: "reserved marker characters in an input",
            apply: |w| {
                w.replace(
                    "payments",
                    SVC,
                    "image: public.ecr.aws/nginx/nginx:stable\n      port: 8080\n      memory: \"2048\"",
                    "image: \"nginx\u{E001}x\"\n      port: 8080\n      memory: \"2048\"",
                );
                w.commit("payments", "marker");
            },
            expect: &[
                "instance_infrastructure/cloudformation.yaml",
                "service_instance.inputs.image",
                "reserved characters",
            ],
            absent: &[],
            undo: Undo::Revert("payments"),
        },
        // ---- Ownership and restrictions ----
        Case {
            area: "ownership",
            name: "a repo claiming another repo's service",
            apply: |w| {
                w.write(
                    "intruder",
                    "proton/services/payments.yaml",
                    &intruder_service("payments", "dev"),
                );
                w.commit("intruder", "claim payments");
            },
            expect: &[
                "intruder:proton/services/payments.yaml: name",
                "belongs to spec repo \"payments\"",
            ],
            // The owner is not blocked by the claim (no plan row for its instances is
            // invalid or unknown).
            absent: &[
                "@row invalid service_instance/payments/",
                "@row unknown service_instance/payments/",
            ],
            undo: Undo::Revert("intruder"),
        },
        Case {
            area: "ownership",
            name: "a new service declared by two repos at once",
            apply: |w| {
                w.write(
                    "intruder",
                    "proton/services/twin.yaml",
                    &intruder_service("twin", "dev"),
                );
                w.commit("intruder", "twin");
                w.write(
                    "payments",
                    "proton/services/twin.yaml",
                    &intruder_service("twin", "dev"),
                );
                w.commit("payments", "twin");
            },
            expect: &[
                "service \"twin\" is declared by more than one spec file",
                "intruder:proton/services/twin.yaml",
                "payments:proton/services/twin.yaml",
            ],
            absent: &[],
            undo: Undo::Revert2("intruder", "payments"),
        },
        Case {
            area: "ownership",
            name: "a repo deploying into a restricted environment",
            apply: |w| {
                w.write(
                    "intruder",
                    "proton/services/sneaky.yaml",
                    &intruder_service("sneaky", "prod"),
                );
                w.commit("intruder", "into prod");
            },
            expect: &[
                "proton/services/sneaky.yaml",
                "instances[0].environment",
                "allowed_service_repos",
            ],
            absent: &[],
            undo: Undo::Revert("intruder"),
        },
        Case {
            area: "ownership",
            name: "a service repo declaring an environment",
            apply: |w| {
                w.write(
                    "intruder",
                    "proton/environments/prod.yaml",
                    "proton: EnvironmentSpec\nname: prod\ntemplate: {name: basic-env, major: 1}\nspec: {team: intruder}\n",
                );
                w.commit("intruder", "own prod");
            },
            expect: &["proton/environments/prod.yaml", "platform"],
            absent: &[],
            undo: Undo::Revert("intruder"),
        },
        Case {
            area: "ownership",
            name: "the same environment declared twice",
            apply: |w| {
                let text =
                    std::fs::read_to_string(w.root.join("platform-envs").join(ENV)).expect("read");
                w.write("platform-envs", "proton/environments/prod-copy.yaml", &text);
                w.commit("platform-envs", "duplicate");
            },
            expect: &[
                "environment \"prod\" is declared more than once",
                "platform-envs:proton/environments/prod-copy.yaml",
            ],
            absent: &[],
            undo: Undo::Revert("platform-envs"),
        },
        Case {
            area: "ownership",
            name: "an environment not declared anywhere",
            apply: |w| {
                w.write(
                    "intruder",
                    "proton/services/lost.yaml",
                    &intruder_service("lost", "staging"),
                );
                w.commit("intruder", "lost");
            },
            expect: &[
                "proton/services/lost.yaml",
                "instances[0].environment",
                "staging",
            ],
            absent: &[],
            undo: Undo::Revert("intruder"),
        },
        // ---- Component paths ----
        Case {
            area: "paths",
            name: "component path traversal",
            apply: |w| {
                w.replace(
                    "payments",
                    SVC,
                    "path: proton/components/cache",
                    "path: ../platform-envs/proton",
                );
                w.commit("payments", "traversal");
            },
            expect: &["payments.yaml", "component"],
            absent: &[],
            undo: Undo::Revert("payments"),
        },
        Case {
            area: "paths",
            name: "absolute component path",
            apply: |w| {
                w.replace(
                    "payments",
                    SVC,
                    "path: proton/components/cache",
                    "path: /etc",
                );
                w.commit("payments", "absolute");
            },
            expect: &["payments.yaml", "component"],
            absent: &[],
            undo: Undo::Revert("payments"),
        },
        Case {
            area: "paths",
            name: "symlink in a component folder",
            apply: |w| {
                std::fs::remove_file(
                    w.root
                        .join("payments/proton/components/cache/cloudformation.yaml"),
                )
                .expect("rm");
                w.symlink(
                    "payments",
                    "proton/components/cache/cloudformation.yaml",
                    "/etc/passwd",
                );
                w.commit("payments", "symlink");
            },
            expect: &[
                "proton/components/cache/cloudformation.yaml",
                "symbolic link",
            ],
            absent: &[],
            undo: Undo::Revert("payments"),
        },
        // ---- Template releases ----
        Case {
            area: "release",
            name: "symlink in a bundle",
            apply: |w| {
                std::fs::remove_file(w.root.join("platform-templates").join(WEB_CFN)).expect("rm");
                w.symlink("platform-templates", WEB_CFN, "/etc/passwd");
                w.release("web-svc");
            },
            expect: &["Rejected template releases", "web-svc/v1.", "symbolic link"],
            absent: &[],
            undo: Undo::Revert("platform-templates"),
        },
        Case {
            area: "release",
            name: "path traversal in a bundle manifest",
            apply: |w| {
                w.replace(
                    "platform-templates",
                    WEB_MANIFEST,
                    "file: \"cloudformation.yaml\"",
                    "file: \"../../../../etc/passwd\"",
                );
                w.release("web-svc");
            },
            expect: &["Rejected template releases", "manifest.yaml", "etc/passwd"],
            absent: &[],
            undo: Undo::Revert("platform-templates"),
        },
        Case {
            area: "release",
            name: "malformed schema YAML",
            apply: |w| {
                w.replace(
                    "platform-templates",
                    WEB_SCHEMA,
                    "openapi: \"3.0.0\"",
                    "openapi: [\"3.0.0\"",
                );
                w.release("web-svc");
            },
            expect: &["Rejected template releases", "schema.yaml"],
            absent: &[],
            undo: Undo::Revert("platform-templates"),
        },
        Case {
            area: "release",
            name: "wrong type in a schema",
            apply: |w| {
                w.replace(
                    "platform-templates",
                    WEB_SCHEMA,
                    "minimum: 1024",
                    "minimum: low",
                );
                w.release("web-svc");
            },
            expect: &["Rejected template releases", "schema.yaml", "minimum"],
            absent: &[],
            undo: Undo::Revert("platform-templates"),
        },
        Case {
            area: "release",
            name: "deep nesting in a schema",
            apply: |w| {
                let mut nested = String::from(
                    "schema:\n  format: {openapi: \"3.0.0\"}\n  service_input_type: \"WebServiceInput\"\n  pipeline_input_type: \"PipelineInput\"\n  types:\n    PipelineInput: {type: object, properties: {}}\n    WebServiceInput:\n      type: object\n      properties:\n        image: {type: string}\n        deep:\n",
                );
                let mut indent = String::from("          ");
                for _ in 0..200 {
                    nested.push_str(&format!(
                        "{indent}type: object\n{indent}properties:\n{indent}  x:\n"
                    ));
                    indent.push_str("    ");
                }
                nested.push_str(&format!("{indent}type: string\n"));
                w.write("platform-templates", WEB_SCHEMA, &nested);
                w.release("web-svc");
            },
            expect: &[
                "Rejected template releases",
                "schema.yaml",
                "nested too deeply",
            ],
            absent: &[],
            undo: Undo::Revert("platform-templates"),
        },
        Case {
            area: "release",
            name: "huge template file (3 MiB)",
            apply: |w| {
                let mut big =
                    std::fs::read_to_string(w.root.join("platform-templates").join(WEB_CFN))
                        .expect("read");
                big.push_str("\n# ");
                big.push_str(&"x".repeat(3 * 1024 * 1024));
                big.push('\n');
                w.write("platform-templates", WEB_CFN, &big);
                w.release("web-svc");
            },
            expect: &["Rejected template releases", "cloudformation.yaml", "limit"],
            absent: &[],
            undo: Undo::Revert("platform-templates"),
        },
        Case {
            area: "release",
            name: "template syntax error",
            apply: |w| {
                w.replace(
                    "platform-templates",
                    WEB_CFN,
                    "Resources:",
                    "{% if %}\nResources:",
                );
                w.release("web-svc");
            },
            expect: &["Rejected template releases", "cloudformation.yaml"],
            absent: &[],
            undo: Undo::Revert("platform-templates"),
        },
        Case {
            area: "release",
            name: "tags not matching the pattern",
            apply: |w| {
                for tag in [
                    "web-svc/v1.9-rc1",
                    "web-svc/1.9",
                    "web-svc/v1",
                    "web-svc/v01.9",
                    "release-2026",
                ] {
                    w.tag(tag, "release");
                }
            },
            expect: &[
                "Ignored tags",
                "web-svc/1.9 (platform-templates): not a release; release tags look like \"{template}/v{major}.{minor}\", e.g. web-svc/v1.4",
                "web-svc/v1.9-rc1",
                "web-svc/v01.9",
            ],
            absent: &["release-2026"],
            undo: Undo::Keep,
        },
    ]
}

const UNQUOTED: (&str, &str) = (
    "cloudformation.yaml",
    "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n    Properties:\n      TopicName: {{ service_instance.inputs.name }}\n",
);
const QUOTED: (&str, &str) = (
    "cloudformation.yaml",
    "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n    Properties:\n      TopicName: '{{ service_instance.inputs.name }}'\n",
);
const JSON: (&str, &str) = (
    "cloudformation.json",
    "{\"Resources\": {\"Topic\": {\"Type\": \"AWS::SNS::Topic\", \"Properties\": {\"TopicName\": \"{{ service_instance.inputs.name }}\"}}}}\n",
);

fn render_cases() -> Vec<RenderCase> {
    let refused = &[
        "would change the template's structure",
        "input values are data",
    ][..];
    vec![
        RenderCase {
            area: "injection",
            name: "YAML tag in an unquoted position",
            template: UNQUOTED,
            value: "!!binary aGk=",
            accepted: false,
            expect: refused,
            absent: &[],
        },
        RenderCase {
            area: "injection",
            name: "YAML alias in an unquoted position",
            template: UNQUOTED,
            value: "*anchor",
            accepted: false,
            expect: &["cloudformation.yaml", "not valid YAML", "input values"],
            absent: &[],
        },
        RenderCase {
            area: "injection",
            name: "YAML flow mapping in an unquoted position",
            template: UNQUOTED,
            value: "{Evil: {Type: AWS::IAM::User}}",
            accepted: false,
            expect: refused,
            absent: &[],
        },
        RenderCase {
            area: "injection",
            name: "YAML comment in an unquoted position",
            template: UNQUOTED,
            value: "topic # Evil",
            accepted: false,
            expect: refused,
            absent: &[],
        },
        RenderCase {
            area: "injection",
            name: "JSON injection closing a string",
            template: JSON,
            value: "x\", \"Evil\": {\"Type\": \"AWS::IAM::User\"}, \"y\": \"",
            accepted: false,
            expect: refused,
            absent: &[],
        },
        RenderCase {
            area: "injection",
            name: "template syntax in an input stays literal",
            template: QUOTED,
            value: "{{ 7 * 7 }}{% if true %}yes{% endif %}",
            accepted: true,
            expect: &["TopicName: '{{ 7 * 7 }}{% if true %}yes{% endif %}'"],
            absent: &["49"],
        },
        RenderCase {
            area: "injection",
            name: "a newline in a quoted input stays inside the string",
            template: QUOTED,
            value: "a\nEvil: 1",
            accepted: true,
            expect: &["TopicName"],
            absent: &["\nEvil: 1\n"],
        },
    ]
}

/// Runs a render case in `dir`; returns why it failed, if it did.
fn run_render_case(dir: &std::path::Path, case: &RenderCase) -> Result<(), String> {
    let bundle = dir.join("svc/v1");
    let put = |rel: &str, text: &str| {
        let p = bundle.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    };
    put(
        "schema/schema.yaml",
        "schema:\n  format: {openapi: \"3.0.0\"}\n  service_input_type: In\n  types:\n    In:\n      type: object\n      properties:\n        name: {type: string}\n      required: [name]\n",
    );
    put(".compatible-envs", "basic-env:1\n");
    put(
        "instance_infrastructure/manifest.yaml",
        &format!(
            "infrastructure:\n  templates:\n    - file: \"{}\"\n      rendering_engine: jinja\n      template_language: cloudformation\n",
            case.template.0
        ),
    );
    put(
        &format!("instance_infrastructure/{}", case.template.0),
        case.template.1,
    );
    let value = serde_json::to_string(case.value).expect("json");
    let spec = dir.join("spec.yaml");
    std::fs::write(
        &spec,
        format!(
            "proton: ServiceSpec\nname: svc\ntemplate: {{name: svc, major: 1}}\ninstances:\n  - name: svc-dev\n    environment: dev\n    spec:\n      name: {value}\n"
        ),
    )
    .expect("spec");
    let out = Command::new(env!("CARGO_BIN_EXE_protond"))
        .arg("render")
        .arg(&bundle)
        .arg("--spec")
        .arg(&spec)
        .args(["--instance", "svc-dev"])
        .output()
        .expect("protond render");
    let all = text(&out);
    if all.contains("panicked") {
        return Err(format!("render panicked:\n{all}"));
    }
    if out.status.success() != case.accepted {
        return Err(format!(
            "render {} (expected {}):\n{all}",
            if out.status.success() {
                "succeeded"
            } else {
                "failed"
            },
            if case.accepted {
                "success"
            } else {
                "a refusal"
            }
        ));
    }
    let missing: Vec<&&str> = case.expect.iter().filter(|e| !all.contains(**e)).collect();
    if !missing.is_empty() {
        return Err(format!("output lacks {missing:?}:\n{all}"));
    }
    if let Some(bad) = case.absent.iter().find(|a| all.contains(**a)) {
        return Err(format!("output contains {bad:?}:\n{all}"));
    }
    Ok(())
}

/// Runs one case and undoes it; returns why it failed, if it did.
async fn run_case(w: &Abuse, case: &Case) -> Result<(), String> {
    let before = w.snapshot().await;
    (case.apply)(w);
    let result = check(w, case, &before).await;
    match case.undo {
        Undo::Revert(repo) => {
            w.git(repo, &["revert", "--no-edit", "HEAD"]);
        }
        Undo::Revert2(a, b) => {
            w.git(a, &["revert", "--no-edit", "HEAD"]);
            w.git(b, &["revert", "--no-edit", "HEAD"]);
        }
        Undo::Keep => {}
    }
    result
}

async fn check(w: &Abuse, case: &Case, before: &Snapshot) -> Result<(), String> {
    let plan = w.run(&["plan"]);
    let out = text(&plan);
    if out.contains("panicked") {
        return Err(format!("plan panicked:\n{out}"));
    }
    let missing: Vec<&&str> = case.expect.iter().filter(|e| !out.contains(**e)).collect();
    if !missing.is_empty() {
        return Err(format!("plan output lacks {missing:?}:\n{out}"));
    }
    // `@row ACTION ID-PREFIX` matches a plan row by its columns; anything else, the text.
    let has = |a: &str| match a.strip_prefix("@row ") {
        Some(row) => {
            let (action, prefix) = row.split_once(' ').unwrap_or((row, ""));
            out.lines().any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.first() == Some(&action)
                    && cols.get(2).is_some_and(|id| id.starts_with(prefix))
            })
        }
        None => out.contains(a),
    };
    if let Some(bad) = case.absent.iter().find(|a| has(a)) {
        return Err(format!("plan output contains {bad:?}:\n{out}"));
    }
    for line in out.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if matches!(first, "create" | "update" | "delete") {
            return Err(format!("plan wants to change something: {line}\n{out}"));
        }
    }
    let rec = w.run(&["reconcile", "--once"]);
    let rec_out = text(&rec);
    // A non-zero exit is expected when a resource is invalid; a crash or a deployment is not.
    if rec_out.contains("panicked") || rec_out.contains("Deployment started") {
        return Err(format!("reconcile crashed or deployed:\n{rec_out}"));
    }
    let after = w.snapshot().await;
    if *before != after {
        return Err(format!(
            "something changed:\nbefore {before:#?}\nafter {after:#?}"
        ));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let w = Abuse::new();
    let first = w.run(&["reconcile", "--once"]);
    assert!(first.status.success(), "{}", text(&first));
    let start = w.snapshot().await;
    assert_eq!(start.records.len(), 7, "{start:#?}");
    let cases = cases();
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let t = Instant::now();
        let result = run_case(&w, case).await;
        let verdict = if result.is_ok() { "ok" } else { "FAILED" };
        println!(
            "abuse  {:02} {:<10} {:<66} {verdict} ({} ms)",
            i + 1,
            case.area,
            case.name,
            t.elapsed().as_millis()
        );
        if let Err(e) = result {
            failures.push(format!("{} ({}): {e}", case.name, case.area));
        }
    }
    // After every case is undone, the deployment is exactly what it was, and a real change
    // still goes through: nothing is stuck.
    let end = w.snapshot().await;
    assert_eq!(start, end);
    w.replace("payments", SVC, "desired_count: 3", "desired_count: 4");
    w.commit("payments", "scale");
    let out = w.run(&["reconcile", "--once"]);
    assert!(out.status.success(), "{}", text(&out));
    let scaled = w.snapshot().await;
    assert_eq!(scaled.deployments, end.deployments + 1);
    let offline = render_cases();
    for (i, case) in offline.iter().enumerate() {
        let dir = w.root.join(format!("offline-{i}"));
        let result = run_render_case(&dir, case);
        println!(
            "abuse r{:02} {:<10} {:<66} {}",
            i + 1,
            case.area,
            case.name,
            if result.is_ok() { "ok" } else { "FAILED" }
        );
        if let Err(e) = result {
            failures.push(format!("{} ({}): {e}", case.name, case.area));
        }
    }
    let http = http_cases(&w).await;
    let total = cases.len() + offline.len() + http.len();
    for (i, (name, result)) in http.iter().enumerate() {
        println!(
            "abuse h{:02} {:<10} {:<66} {}",
            i + 1,
            "http",
            name,
            if result.is_ok() { "ok" } else { "FAILED" }
        );
        if let Err(e) = result {
            failures.push(format!("{name} (http): {e}"));
        }
    }
    let controls = http
        .iter()
        .filter(|(n, _)| n.starts_with("control"))
        .count();
    println!(
        "abuse suite: {} bad inputs and {controls} control(s): {} passed, {} failed",
        total - controls,
        total - failures.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Forged webhooks and tokens against `protond run`: each is refused and triggers nothing.
async fn http_cases(w: &Abuse) -> Vec<(&'static str, Result<(), String>)> {
    let port = common::free_port();
    let cfg = w.config_path();
    let text_cfg = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(
        &cfg,
        format!(
            "{}\n[server]\ntoken_env = \"ABUSE_TOKEN\"\ngithub_secret_env = \"ABUSE_GH\"\ngitlab_token_env = \"ABUSE_GL\"\n",
            text_cfg.replace("data_dir = \"data\"\n", "data_dir = \"data\"\npoll_interval = \"1h\"\n[daemon]\nwatch = false\n")
        ),
    )
    .expect("config");
    let mut child = common::protond(&cfg, &["run", "--listen", &format!("127.0.0.1:{port}")])
        .env("ABUSE_TOKEN", "right-token")
        .env("ABUSE_GH", "right-secret")
        .env("ABUSE_GL", "right-gitlab")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("daemon");
    let base = format!("http://127.0.0.1:{port}");
    let results = http_checks(&base, w).await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    results
}

async fn http_checks(base: &str, w: &Abuse) -> Vec<(&'static str, Result<(), String>)> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Ready means serving, not that the first cycle ran: wait for it, so that its fetch
    // cannot read the change committed below (as a forged webhook's fetch would).
    while Instant::now() < deadline {
        let cycles = match client.get(format!("{base}/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if cycles.lines().any(|l| {
            l.strip_prefix("protond_reconcile_cycles_total ")
                .and_then(|v| v.trim().parse::<f64>().ok())
                .is_some_and(|v| v >= 1.0)
        }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let payments = w.root.join("payments");
    let body = serde_json::json!({
        "ref": "refs/heads/main",
        "repository": {"clone_url": payments.display().to_string()}
    })
    .to_string();
    let forged_sig = "sha256=0000000000000000000000000000000000000000000000000000000000000000";
    let mut results = Vec::new();
    let cases: Vec<(&'static str, reqwest::RequestBuilder)> = vec![
        (
            "GitHub webhook with a forged signature",
            client
                .post(format!("{base}/webhooks/github"))
                .header("X-GitHub-Event", "push")
                .header("X-Hub-Signature-256", forged_sig)
                .body(body.clone()),
        ),
        (
            "GitHub webhook without a signature",
            client
                .post(format!("{base}/webhooks/github"))
                .header("X-GitHub-Event", "push")
                .body(body.clone()),
        ),
        (
            "GitLab webhook with a wrong token",
            client
                .post(format!("{base}/webhooks/gitlab"))
                .header("X-Gitlab-Event", "Push Hook")
                .header("X-Gitlab-Token", "wrong")
                .body(body.clone()),
        ),
        (
            "notify API with a wrong bearer token",
            client
                .post(format!("{base}/api/v1/notify"))
                .bearer_auth("wrong-token")
                .json(&serde_json::json!({"resource": "environment/dev", "status": "failed"})),
        ),
        (
            "rollout halt without a token",
            client.post(format!("{base}/api/v1/rollouts/web-svc/v1.0/halt")),
        ),
        (
            "reconcile API with a wrong bearer token",
            client
                .post(format!("{base}/api/v1/reconcile"))
                .bearer_auth("right-token-but-longer"),
        ),
    ];
    for (name, req) in cases {
        let result = match req.send().await {
            Ok(r) if r.status().as_u16() == 401 || r.status().as_u16() == 403 => Ok(()),
            Ok(r) => Err(format!("answered {}", r.status())),
            Err(e) => Err(format!("request failed: {e}")),
        };
        results.push((name, result));
    }
    // A change waits in the payments repo; only a fetch would see it (no polling, no
    // watcher here). The forged requests above must not have caused one.
    w.replace("payments", SVC, "desired_count: 4", "desired_count: 5");
    w.commit("payments", "scale again");
    let before = w.snapshot().await.deployments;
    for (name, req) in [
        (
            "forged GitHub webhook after a change",
            client
                .post(format!("{base}/webhooks/github"))
                .header("X-GitHub-Event", "push")
                .header("X-Hub-Signature-256", forged_sig)
                .body(body.clone()),
        ),
        (
            "forged GitLab webhook after a change",
            client
                .post(format!("{base}/webhooks/gitlab"))
                .header("X-Gitlab-Event", "Push Hook")
                .header("X-Gitlab-Token", "right-gitlab-but-not-quite")
                .body(body.clone()),
        ),
    ] {
        let refused = req.send().await.is_ok_and(|r| r.status().as_u16() == 401);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = w.snapshot().await.deployments;
        results.push((
            name,
            if refused && now == before {
                Ok(())
            } else {
                Err(format!("refused: {refused}; deployments {before} -> {now}"))
            },
        ));
    }
    // The control: the same webhook correctly signed triggers the fetch and the deployment,
    // of the repo it names only: a change waiting in platform-envs stays unseen.
    w.replace(
        "platform-envs",
        "proton/environments/dev.yaml",
        "log_level: debug",
        "log_level: info",
    );
    w.commit("platform-envs", "quieter dev");
    let env_before = w
        .snapshot()
        .await
        .records
        .into_iter()
        .find(|r| r.0 == "environment/dev");
    let mut mac =
        <hmac::Hmac<sha2::Sha256> as hmac::KeyInit>::new_from_slice(b"right-secret").expect("key");
    hmac::Mac::update(&mut mac, body.as_bytes());
    let sig = format!(
        "sha256={}",
        hex::encode(hmac::Mac::finalize(mac).into_bytes())
    );
    let accepted = client
        .post(format!("{base}/webhooks/github"))
        .header("X-GitHub-Event", "push")
        .header("X-Hub-Signature-256", sig)
        .body(body.clone())
        .send()
        .await
        .map(|r| r.status());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut now = before;
    while Instant::now() < deadline && now == before {
        tokio::time::sleep(Duration::from_millis(200)).await;
        now = w.snapshot().await.deployments;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let env_after = w
        .snapshot()
        .await
        .records
        .into_iter()
        .find(|r| r.0 == "environment/dev");
    results.push((
        "control: a correctly signed webhook deploys its repo's change, only",
        if now > before && env_before.is_some() && env_before == env_after {
            Ok(())
        } else {
            Err(format!(
                "answered {accepted:?}; deployments {before} -> {now}; environment/dev {env_before:?} -> {env_after:?}"
            ))
        },
    ));
    // Nothing was halted by the refused requests.
    match client.get(format!("{base}/api/v1/rollouts")).send().await {
        Ok(r) => {
            let t = r.text().await.unwrap_or_default();
            if t.contains("\"halted\":true") {
                results.push(("refused requests changed nothing", Err(t)));
            }
        }
        Err(e) => results.push(("refused requests changed nothing", Err(e.to_string()))),
    }
    results
}
