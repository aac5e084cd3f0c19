//! Rendering on several threads gives what one thread gives: the same rows and problems in
//! the same order, the same cache counts, and a cache that serves the next computation alike.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use super::super::fixtures::{catalog, env, record, repo, svc};
use super::super::{ComputeCache, Snapshot, compute_held};
use crate::state::ResourceRecord;

thread_local! {
    /// Threads [`super::render_services`] uses on this (test) thread, when set.
    pub(super) static THREADS: Cell<Option<usize>> = const { Cell::new(None) };
}

/// A fleet of 10 team repos with 40 services each, every fifth with a second instance in
/// `prod` (not deployed: blocked), every seventh declared again in the next repo (a name
/// clash: invalid rows and problems), and one unparsable file per repo; `dev` and a third of
/// the instances deployed.
fn fleet() -> (Snapshot, Vec<ResourceRecord>) {
    let platform = repo(
        "platform",
        true,
        &[("dev.yaml", &env("dev")), ("prod.yaml", &env("prod"))],
    );
    let mut repos = vec![platform];
    let mut deployed = vec![record("environment/dev", "platform")];
    for t in 0..10 {
        let team = format!("team-{t}");
        let mut files = Vec::new();
        for s in 0..40 {
            let name = format!("svc-{t}-{s}");
            let mut instances = vec![(format!("{name}-dev"), "dev")];
            if s % 5 == 0 {
                instances.push((format!("{name}-prod"), "prod"));
            }
            if s % 3 == 0 {
                deployed.push(record(
                    &format!("service_instance/{name}/{name}-dev"),
                    &team,
                ));
            }
            let refs: Vec<(&str, &str)> = instances.iter().map(|(i, e)| (i.as_str(), *e)).collect();
            files.push((format!("{name}.yaml"), svc(&name, 1, None, &refs)));
            if s % 7 == 0 {
                // The same name in the previous team's repo.
                let clash = format!("svc-{}-{s}", (t + 9) % 10);
                let inst = format!("{clash}-x");
                files.push((
                    format!("{clash}-again.yaml"),
                    svc(&clash, 1, None, &[(inst.as_str(), "dev")]),
                ));
            }
        }
        files.push((
            "broken.yaml".to_string(),
            "proton: ServiceSpec\nname: [".to_string(),
        ));
        let files: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, t)| (p.as_str(), t.as_str()))
            .collect();
        repos.push(repo(&team, false, &files));
    }
    let snapshot = Snapshot {
        catalog: catalog(&[(1, 0), (1, 1)]),
        spec_repos: repos,
        ..Snapshot::default()
    };
    (snapshot, deployed)
}

/// One computation on `threads` threads (through `cache` when given): the set, printed.
fn on(
    threads: usize,
    (snapshot, deployed): &(Snapshot, Vec<ResourceRecord>),
    cache: Option<&mut ComputeCache>,
) -> String {
    THREADS.with(|t| t.set(Some(threads)));
    let (pins, halted) = (BTreeMap::new(), BTreeSet::new());
    let set = match cache {
        Some(cache) => cache.compute_held(snapshot, deployed, "123456789012", &pins, &halted),
        None => compute_held(snapshot, deployed, "123456789012", &pins, &halted),
    };
    THREADS.with(|t| t.set(None));
    format!("{set:?}")
}

#[test]
fn several_threads_render_what_one_thread_renders() {
    let inputs = fleet();
    let one = on(1, &inputs, None);
    // The fleet shows what the test is about: clashes and unparsable files among the rows.
    assert!(one.contains("svc-0-7"), "{one}");
    assert!(one.matches("Invalid").count() >= 10, "no invalid rows");
    assert!(one.matches("Blocked").count() >= 10, "no blocked rows");
    for threads in [2, 3, 8] {
        assert_eq!(on(threads, &inputs, None), one, "{threads} threads");
    }

    let (mut alone, mut shared) = (ComputeCache::default(), ComputeCache::default());
    assert_eq!(on(1, &inputs, Some(&mut alone)), one);
    assert_eq!(on(4, &inputs, Some(&mut shared)), one);
    assert_eq!(shared.last_rendered(), alone.last_rendered());
    assert!(shared.last_rendered() > 400, "{}", shared.last_rendered());

    // The next computation on threads reuses every rendering, as on one thread.
    assert_eq!(on(1, &inputs, Some(&mut alone)), one);
    assert_eq!(on(4, &inputs, Some(&mut shared)), one);
    assert_eq!(
        (shared.last_rendered(), shared.last_reused()),
        (alone.last_rendered(), alone.last_reused())
    );
    assert_eq!(shared.last_rendered(), 0);

    // A new deployed record renders its service again, on threads as on one thread.
    let mut next = inputs.clone();
    next.1
        .push(record("service_instance/svc-4-4/svc-4-4-dev", "team-4"));
    let expected = on(1, &next, None);
    assert_eq!(on(1, &next, Some(&mut alone)), expected);
    assert_eq!(on(4, &next, Some(&mut shared)), expected);
    assert_eq!(shared.last_rendered(), alone.last_rendered());
    assert!(shared.last_rendered() > 0 && shared.last_rendered() < 5);
}

#[test]
fn an_ordered_map_on_several_threads_gives_what_one_thread_gives() {
    let items: Vec<u64> = (0..1_000).collect();
    // Uneven work, so that the threads finish out of order.
    let f = |n: &u64| -> String {
        let spins = (n * 7919) % 3_000;
        let mut x = *n;
        for _ in 0..spins {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        }
        format!("{n}:{x}")
    };
    let expected: Vec<String> = items.iter().map(f).collect();
    for threads in [1, 2, 3, 8] {
        THREADS.with(|t| t.set(Some(threads)));
        let got = super::map_ordered(&items, f);
        THREADS.with(|t| t.set(None));
        assert_eq!(got, expected, "{threads} threads");
    }
    assert!(super::map_ordered(&Vec::<u64>::new(), f).is_empty());
}
