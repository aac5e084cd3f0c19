//! Proton's own files in the daemon (issue 16, section 2): a service's source repository from
//! its spec, header-less spec files mapped to templates in the config, template repos kept
//! under a subdirectory with nested bundles, and customer-managed environments. Each test runs
//! the real binary on real git repos and, where it deploys, its own `moto_server`.

use crate::common::world::World;
use crate::common::{self, text};

const PAYMENTS: &str = "proton/services/payments.yaml";

/// The body of the live stack of resource `id`.
async fn template_of(w: &World, id: &str) -> String {
    common::cfn_client(w.aws_url())
        .get_template()
        .stack_name(protond::provision::cloudformation::stack_name(id))
        .send()
        .await
        .expect("template")
        .template_body()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_spec_names_its_source_repository() {
    let w = World::examples_on_moto().build();
    w.replace(
        "payments",
        PAYMENTS,
        "branch_name: main",
        "branch_name: release/2",
    );
    w.commit("payments", "build from release/2");
    let out = w.reconcile();
    assert!(out.status.success(), "{}", text(&out));
    let body = template_of(&w, "pipeline/payments").await;
    assert!(
        body.contains("repository=acme/payments;branch=release/2;"),
        "the pipeline sees the spec's source:\n{body}"
    );

    // Without `branch_name`, the pipeline template's use of it is an error naming the spec
    // file and the field; the instances, whose templates do not use it, are unaffected.
    w.replace("payments", PAYMENTS, "branch_name: release/2\n", "");
    w.commit("payments", "forget the branch");
    let out = w.run(&["plan"]);
    let all = text(&out);
    assert!(
        all.contains(&format!(
            "{PAYMENTS}: branch_name: the template (pipeline_infrastructure/cloudformation.yaml:21) uses `service.branch_name`"
        ))
            && all.contains("add `branch_name: main`"),
        "{all}"
    );
    assert!(
        all.lines().filter(|l| l.starts_with("invalid")).count() == 1,
        "only the pipeline is invalid: {all}"
    );
}
