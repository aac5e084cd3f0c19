//! The hostile-input suite, rendering part: deep documents and unbounded templates against the
//! real binary on a `moto_server`. Each case prints one line of figures:
//! `hostile: <case>: bound …, peak RSS … MiB, … s` (README, "Limits and guarantees").
//!
//! * A team's component file nested 1,000,000 levels deep is refused in under a second, and
//!   everything else of the same `reconcile --once` cycle deploys: the environments of the
//!   platform team and the team's other instances.
//! * A team's component whose render never ends (lazy lists walked without fuel) is stopped
//!   by the render's time budget, and the rest of the cycle deploys.
//! * A template release whose render would allocate without bound is rejected when it is
//!   tagged (trial render within the render bounds), with the reason in `protond plan`, and
//!   the process's peak RSS stays bounded.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::memory::wait_with_peak;
use crate::common::text;
use crate::common::world::World;

const COMPONENT: &str = "proton/components/cache/cloudformation.yaml";
const WEB_CFN: &str = "web-svc/v1/instance_infrastructure/cloudformation.yaml";

/// `protond` with `args` in `w` (`None`: without a config), to the end, with its peak RSS and
/// wall time.
fn measured(w: Option<&World>, args: &[&str]) -> (std::process::Output, u64, Duration) {
    let start = Instant::now();
    let mut command = if let Some(w) = w {
        w.command(args)
    } else {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_protond"));
        c.args(args);
        c
    };
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("protond starts");
    let (out, rss) = wait_with_peak(child, Duration::from_mins(5));
    (out, rss.peak_mib(), start.elapsed())
}

/// The environments and the teams' instances are deployed, the component is not.
async fn assert_all_but_the_component_deployed(w: &World, out: &std::process::Output) {
    let deployed: Vec<String> = w
        .store()
        .await
        .resources()
        .await
        .expect("resources")
        .into_iter()
        .filter(|r| r.status == "deployed")
        .map(|r| r.id)
        .collect();
    for id in [
        "environment/dev",
        "environment/prod",
        "service_instance/payments/payments-prod",
        "service_instance/reports/reports-dev",
    ] {
        assert!(
            deployed.iter().any(|d| d == id),
            "{id} not deployed: {deployed:?}\n{}",
            text(out)
        );
    }
    assert!(
        !deployed.iter().any(|d| d.starts_with("component/")),
        "{deployed:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_nested_a_million_levels_fails_alone() {
    let w = World::examples_on_moto().build();
    let levels = 1_000_000;
    let deep = format!("A: {}{}\n", "[".repeat(levels), "]".repeat(levels));
    w.write("payments", COMPONENT, &deep);
    w.commit("payments", "a component nested a million levels deep");

    // The check alone: render the component as the daemon would.
    let spec = w.dir("payments").join("proton/services/payments.yaml");
    let folder = w.dir("payments").join("proton/components/cache");
    let (out, rss, took) = measured(
        None,
        &[
            "render",
            folder.to_str().expect("utf-8"),
            "--spec",
            spec.to_str().expect("utf-8"),
            "--instance",
            "payments-dev",
        ],
    );
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    for fragment in [
        "cloudformation.yaml",
        "nested too deeply: more than 128 levels",
    ] {
        assert!(said.contains(fragment), "missing {fragment:?}:\n{said}");
    }
    println!(
        "hostile: component nested {levels} levels (protond render): bound 128 levels, peak RSS {rss} MiB, {:.2} s",
        took.as_secs_f64()
    );
    // Not a speed target (that is the figure printed above): a parse that followed the
    // nesting (quadratic, or a stack per level) would take minutes or crash, not seconds.
    assert!(took < Duration::from_secs(10), "took {took:?}");

    // The cycle: everything but the component (and the instance waiting for it) deploys.
    let (out, rss, took) = measured(Some(&w), &["reconcile", "--once"]);
    println!(
        "hostile: component nested {levels} levels (reconcile --once): bound 128 levels, peak RSS {rss} MiB, {:.2} s",
        took.as_secs_f64()
    );
    assert_all_but_the_component_deployed(&w, &out).await;
    let plan = w.run(&["plan"]);
    let said = text(&plan);
    for fragment in [
        "component/payments/payments-dev",
        "cloudformation.yaml",
        "nested too deeply: more than 128 levels",
    ] {
        assert!(said.contains(fragment), "missing {fragment:?}:\n{said}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_template_that_allocates_without_bound_is_rejected_when_tagged() {
    let w = World::examples_on_moto().build();
    // Within the old fuel, this line alone allocated 100 MB (and its copies about 2 GB).
    w.edit("platform-templates", WEB_CFN, |t| {
        format!("{{% set pad = \"x\" * 100000000 %}}\n{t}")
    });
    w.commit(
        "platform-templates",
        "a template that allocates without bound",
    );
    w.tag("web-svc/v1.1", "unbounded");
    // And one that amplifies through a filter (a gigabyte of indentation).
    w.edit("platform-templates", WEB_CFN, |t| {
        let t = t.replacen("{% set pad = \"x\" * 100000000 %}\n", "", 1);
        format!("# {{{{ (\"x\\n\" * 1000)|indent(1000000) }}}}\n{t}")
    });
    w.commit("platform-templates", "amplify through indent");
    w.tag("web-svc/v1.2", "amplified");

    let (out, rss, took) = measured(Some(&w), &["plan"]);
    let said = text(&out);
    println!(
        "hostile: unbounded template at release (protond plan, 2 tags): bound fuel 1,000,000 and 16 MiB per value, peak RSS {rss} MiB, {:.2} s",
        took.as_secs_f64()
    );
    let rejected = said
        .split("Rejected template releases:")
        .nth(1)
        .unwrap_or_else(|| panic!("no rejected releases:\n{said}"));
    for fragment in [
        "web-svc/v1.1",
        "web-svc/v1.2",
        "instance_infrastructure/cloudformation.yaml",
        "the render exceeds its bounds",
        "fuel",
        "indent",
    ] {
        assert!(rejected.contains(fragment), "missing {fragment:?}:\n{said}");
    }
    assert!(rss < 300, "peak RSS {rss} MiB");

    // The cycle records the rejection and deploys v1.0 as before.
    let out = w.reconcile();
    let store = w.store().await;
    let versions: Vec<String> = store
        .resources()
        .await
        .expect("resources")
        .into_iter()
        .filter(|r| r.id.starts_with("service_instance/payments/"))
        .map(|r| r.version.to_string())
        .collect();
    assert!(
        !versions.is_empty() && versions.iter().all(|v| v == "1.0"),
        "{versions:?}\n{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_that_never_ends_is_stopped_by_the_time_budget() {
    // Lazily repeated lists cost no fuel, and comparing them walks them without fuel: only
    // the render's time budget ends this (it would run for hours).
    let w = World::examples_on_moto().build();
    let never = "Resources:\n  Q:\n    Type: AWS::SQS::Queue\n    Properties:\n      QueueName: '{% for i in range(1000) %}{% if ([1] * 100000000) == ([1] * 100000000) %}x{% endif %}{% endfor %}q'\n";
    w.write("payments", COMPONENT, never);
    w.commit("payments", "a component that never ends");

    let (out, rss, took) = measured(Some(&w), &["reconcile", "--once"]);
    // `render::deadline::TIME_BUDGET`.
    let budget = Duration::from_secs(10);
    println!(
        "hostile: component whose render never ends (reconcile --once): bound {} s per render, peak RSS {rss} MiB, {:.2} s",
        budget.as_secs(),
        took.as_secs_f64()
    );
    let said = text(&out);
    assert!(said.contains("time budget"), "{said}");
    assert!(took < budget * 4, "took {took:?}\n{said}");
    assert_all_but_the_component_deployed(&w, &out).await;
}
