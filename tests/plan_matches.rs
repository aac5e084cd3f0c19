//! `protond plan` shows what the daemon will do now: against a halted minor, a closed
//! maintenance window, a spec pinned to a minor and a failed create, the plan lists each as
//! held with its reason, and `reconcile --once` then starts exactly what the plan said would
//! start and nothing it said is held. Real git repos, moto_server, a real SQLite file.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Output;

use common::git;
use protond::demo::LocalAws as Moto;
use protond::state::Store;

const BROKEN: &str = "AWSTemplateFormatVersion: '2010-09-09'\n\
Resources:\n  Broken:\n    Type: AWS::SQS::Queue\n    Properties:\n      DelaySeconds: !GetAtt NoSuchResource.Arn\n";
const MANIFEST: &str = "infrastructure:\n  templates:\n    - file: \"cloudformation.yaml\"\n      rendering_engine: jinja\n      template_language: cloudformation\n";

struct World {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    _moto: Moto,
}

impl World {
    fn new() -> Self {
        let moto = Moto::start().expect("moto_server starts (scripts/test installs it)");
        let (tmp, root) = common::tagged_examples();
        // Prod's maintenance window never opens (a year long past this test).
        let toml = format!(
            "state = \"sqlite://state/state.db\"\ndata_dir = \"data\"\n\
             [aws]\nregion = \"us-east-1\"\nendpoint_url = \"{url}\"\npoll_interval = \"200ms\"\nmax_attempts = 1\nchange_sets = false\n\
             [rollout]\nstages = [\"dev\", \"prod\"]\nsoak = \"0s\"\nwindows = {{ prod = \"0 0 0 1 1 * 2099\" }}\n\
             [[template_repos]]\nname = \"platform-templates\"\nurl = \"platform-templates\"\n\
             [[spec_repos]]\nname = \"platform-envs\"\nurl = \"platform-envs\"\nplatform = true\n\
             [[spec_repos]]\nname = \"payments\"\nurl = \"payments\"\n",
            url = moto.url
        );
        std::fs::write(root.join("proton.toml"), toml).expect("config");
        Self {
            _tmp: tmp,
            root,
            _moto: moto,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        common::protond(&self.root.join("proton.toml"), args)
            .output()
            .expect("protond runs")
    }

    fn edit(&self, repo: &str, path: &str, f: impl FnOnce(String) -> String) {
        let p = self.root.join(repo).join(path);
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, f(text)).expect("write");
    }

    fn commit(&self, repo: &str, message: &str) {
        let dir = self.root.join(repo);
        git(&dir, &["add", "-A"]);
        git(&dir, &["commit", "-q", "-m", message]);
    }

    fn release(&self, template: &str, tag: &str) {
        self.edit(
            "platform-templates",
            &format!("{template}/v1/NOTES"),
            |_| tag.to_string(),
        );
        self.commit("platform-templates", tag);
        git(
            &self.root.join("platform-templates"),
            &["tag", "-a", tag, "-m", tag],
        );
    }

    async fn store(&self) -> Store {
        Store::open(&format!("sqlite://{}/state/state.db", self.root.display()))
            .await
            .expect("store")
    }

    /// The plan's schedule: (resource, verdict, hold label).
    fn schedule(&self) -> Vec<(String, String, String)> {
        let out = self.run(&["plan", "--output", "json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        doc["schedule"]
            .as_array()
            .expect("schedule")
            .iter()
            .map(|d| {
                let s = |k: &str| d[k].as_str().unwrap_or_default().to_string();
                (s("id"), s("verdict"), s("hold"))
            })
            .collect()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn verdict<'a>(schedule: &'a [(String, String, String)], id: &str) -> (&'a str, &'a str) {
    schedule
        .iter()
        .find(|(i, _, _)| i == id)
        .map(|(_, v, h)| (v.as_str(), h.as_str()))
        .unwrap_or_else(|| panic!("{id} not in the schedule: {schedule:#?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_shows_each_hold_and_reconcile_does_what_it_showed() {
    let w = World::new();
    // Reports follows worker-svc 1.0 exactly.
    w.edit("payments", "proton/services/reports.yaml", |t| {
        t.replace(
            "template: {name: worker-svc, major: 1}",
            "template: {name: worker-svc, major: 1, minor: 0}",
        )
    });
    w.commit("payments", "pin reports");
    let out = w.run(&["reconcile", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // A component whose create fails in CloudFormation.
    w.edit("payments", "proton/components/broken/manifest.yaml", |_| {
        MANIFEST.into()
    });
    w.edit(
        "payments",
        "proton/components/broken/cloudformation.yaml",
        |_| BROKEN.into(),
    );
    let spec = std::fs::read_to_string(w.root.join("payments/proton/services/payments.yaml"))
        .expect("spec");
    let spec = spec.replace(
        "      health_check_path: /health\n",
        "      health_check_path: /health\n    component: {name: broken, path: proton/components/broken}\n",
    );
    // Only the second instance (prod) gets the broken component: the first already has one.
    let (dev, prod) = spec.split_at(spec.find("  - name: payments-prod").expect("prod"));
    let dev = dev.replacen(
        "    component: {name: broken, path: proton/components/broken}\n",
        "",
        1,
    );
    w.edit("payments", "proton/services/payments.yaml", |_| {
        format!("{dev}{prod}")
    });
    w.commit("payments", "broken component");
    let out = w.run(&["reconcile", "--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    // New minors: environments (dev may go, prod's window is closed), web services (halted
    // by an operator), workers (pinned by the spec).
    w.release("basic-env", "basic-env/v1.1");
    w.release("web-svc", "web-svc/v1.1");
    w.release("worker-svc", "worker-svc/v1.1");
    let out = w.run(&["rollout", "halt", "web-svc/v1.1", "--reason", "testing"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let schedule = w.schedule();
    assert_eq!(verdict(&schedule, "environment/dev"), ("start", ""));
    assert_eq!(verdict(&schedule, "environment/prod"), ("hold", "window"));
    assert_eq!(
        verdict(&schedule, "service_instance/payments/payments-dev"),
        ("hold", "rollout_halted")
    );
    assert_eq!(
        verdict(&schedule, "pipeline/payments"),
        ("hold", "rollout_halted")
    );
    assert_eq!(
        verdict(&schedule, "service_instance/reports/reports-dev"),
        ("hold", "pinned_by_spec")
    );
    assert_eq!(
        verdict(&schedule, "component/payments/payments-prod"),
        ("hold", "failed_until_change")
    );
    // The table says the same, with the reasons in words.
    let out = w.run(&["plan"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("outside the maintenance window of stage prod"),
        "{text}"
    );
    assert!(
        text.contains("rollout of web-svc 1.1 is halted: testing"),
        "{text}"
    );
    assert!(
        text.contains("the spec pins this minor; 1.1 is available"),
        "{text}"
    );
    assert!(text.contains("not retried until"), "{text}");

    // The daemon does what the plan showed: every start starts, no hold does.
    let store = w.store().await;
    let before = store
        .deployments(None, 10_000)
        .await
        .expect("history")
        .len();
    let out = w.run(&["reconcile", "--once"]);
    let history = store.deployments(None, 10_000).await.expect("history");
    let deployed: BTreeSet<String> = history[..history.len() - before]
        .iter()
        .map(|d| d.deployment.resource_id.clone())
        .collect();
    for (id, v, hold) in &schedule {
        match v.as_str() {
            "start" => assert!(
                deployed.contains(id),
                "{id} was to start: {deployed:?}\n{}",
                stderr(&out)
            ),
            _ => assert!(
                !deployed.contains(id),
                "{id} was held ({hold}) but deployed"
            ),
        }
    }
    // And the holds stand afterwards.
    let again = w.schedule();
    for id in [
        "environment/prod",
        "service_instance/payments/payments-dev",
        "service_instance/reports/reports-dev",
        "component/payments/payments-prod",
    ] {
        assert_eq!(verdict(&again, id), verdict(&schedule, id), "{id}");
    }
}
