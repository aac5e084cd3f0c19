//! The services of one computation, keyed and rendered on every core, then gathered in
//! order: a new minor re-renders the whole fleet (issue 20: at 50,000 instances the tag cycle
//! rendered on one of the machine's cores). Each thread renders into a fork of the builder
//! (the records and environment outputs are shared, read-only); the rows, the problems and
//! the render cache are then filled in the services' order, exactly as one thread would.
//! [`map_ordered`] does the same for any pure function over a slice (the change-set gate's
//! document comparisons).

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::cache::{ComputeCache, Key, Keys};
use super::memo::Memo;
use super::ownership::{SvcDecision, SvcVerdict};
use super::resolve::Templates;
use super::rows::Builder;
use super::service::{self, Targets};
use super::{DesiredSet, Resource};

/// Below this many services one thread does it all: threads cost more than they save.
const MIN_PER_THREAD: usize = 128;

/// At most this many threads.
const MAX_THREADS: usize = 8;

/// What one service came to on a worker.
struct Done {
    /// Its cache entry's name and key (`None` when not cached).
    slot: Option<(String, Key)>,
    /// Whether the cache holds its rendering under `slot` (nothing was rendered).
    kept: bool,
    resources: Vec<Resource>,
    problems: Vec<String>,
    /// The render keys of its rows, and how many were reused.
    memo: Memo,
}

/// What every worker reads.
struct Shared<'s, 'a> {
    templates: &'s Templates<'a>,
    targets: &'s Targets<'a>,
    keys: &'s Keys<'a>,
    cache: Option<&'s ComputeCache>,
    services: &'s [(&'a str, &'s SvcDecision<'a>)],
}

/// Adds the rows of every service to `b`, in order, reusing `cache` where it can.
pub(super) fn render_services<'a>(
    b: &mut Builder<'_>,
    templates: &Templates<'a>,
    targets: &Targets<'a>,
    services: &std::collections::BTreeMap<&'a str, SvcDecision<'a>>,
    keys: &Keys<'a>,
    mut cache: Option<&mut ComputeCache>,
) {
    let services: Vec<(&str, &SvcDecision<'_>)> = services.iter().map(|(n, d)| (*n, d)).collect();
    let threads = threads_for(services.len());
    let done = {
        let shared = Shared {
            templates,
            targets,
            keys,
            cache: cache.as_deref(),
            services: &services,
        };
        if threads <= 1 {
            let mut fork = b.fork();
            (0..services.len())
                .map(|i| shared.one(&mut fork, i))
                .collect()
        } else {
            shared.on_threads(b, threads)
        }
    };
    for ((_, decision), done) in services.iter().zip(done) {
        b.out
            .problems
            .extend(decision.problems.iter().map(ToString::to_string));
        match (cache.as_deref_mut(), done.slot) {
            (Some(cache), Some((cached, key))) if done.kept => {
                // Kept when asked; still kept (nothing is evicted while rendering).
                cache.take_kept(b, &cached, &key);
            }
            (Some(cache), Some((cached, key))) => {
                b.out.resources.extend(done.resources.iter().cloned());
                b.out.problems.extend(done.problems.iter().cloned());
                cache.keep(cached, key, done.resources, done.problems, done.memo);
            }
            _ => {
                b.out.resources.extend(done.resources);
                b.out.problems.extend(done.problems);
            }
        }
    }
}

/// `f` of every item, on every core when there are enough items, in the items' order: what
/// one thread would give. A panic in `f` panics here.
pub(crate) fn map_ordered<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = threads_for(items.len());
    if threads == 1 {
        return items.iter().map(&f).collect();
    }
    on_threads(items.len(), threads, || (), |(), i| f(&items[i]))
}

/// `f` of every index below `len` on `threads` threads, each with its own state made by
/// `state` (on this thread) and taking the next index not yet taken; the results in index
/// order. A panic in `f` panics here, as it would on one thread.
fn on_threads<S: Send, R: Send>(
    len: usize,
    threads: usize,
    mut state: impl FnMut() -> S,
    f: impl Fn(&mut S, usize) -> R + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let mut done: Vec<Option<R>> = std::iter::repeat_with(|| None).take(len).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (mut mine, next, f) = (state(), &next, &f);
                scope.spawn(move || {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= len {
                            break out;
                        }
                        out.push((i, f(&mut mine, i)));
                    }
                })
            })
            .collect();
        for worker in workers {
            match worker.join() {
                Ok(results) => {
                    for (i, r) in results {
                        done[i] = Some(r);
                    }
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    // Every index was taken by exactly one worker, and every worker joined.
    let mut mine = state();
    done.into_iter()
        .enumerate()
        .map(|(i, r)| r.unwrap_or_else(|| f(&mut mine, i)))
        .collect()
}

/// Threads for `services` services on this machine.
fn threads_for(services: usize) -> usize {
    #[cfg(test)]
    if let Some(threads) = tests::THREADS.with(std::cell::Cell::get) {
        return threads;
    }
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    cores.min(MAX_THREADS).min(services / MIN_PER_THREAD).max(1)
}

impl Shared<'_, '_> {
    /// Service `i`: its key, and its rows unless the cache keeps them.
    fn one(&self, fork: &mut Builder<'_>, i: usize) -> Done {
        let (name, decision) = self.services[i];
        let slot = match (self.cache, &decision.verdict) {
            (Some(_), SvcVerdict::Deploy(d)) => Some((
                format!("service/{name}"),
                self.keys.service(fork, self.targets, name, d),
            )),
            _ => None,
        };
        if let (Some(cache), Some((cached, key))) = (self.cache, &slot)
            && cache.is_kept(cached, key)
        {
            return Done {
                slot,
                kept: true,
                resources: Vec::new(),
                problems: Vec::new(),
                memo: Memo::default(),
            };
        }
        // The rows of its kept renderings that this rendering may reuse one by one.
        fork.memo.on = slot.is_some();
        fork.memo.earlier = match (self.cache, &slot) {
            (Some(cache), Some((cached, _))) => cache.earlier(cached),
            _ => Vec::new(),
        };
        service::render(fork, self.templates, self.targets, name, &decision.verdict);
        let DesiredSet {
            resources,
            problems,
            ..
        } = std::mem::take(&mut fork.out);
        let mut memo = std::mem::take(&mut fork.memo);
        memo.earlier = Vec::new();
        Done {
            slot,
            kept: false,
            resources,
            problems,
            memo,
        }
    }

    /// Every service on `threads` threads, each taking the next service not yet taken;
    /// the results in the services' order.
    fn on_threads(&self, b: &Builder<'_>, threads: usize) -> Vec<Done> {
        on_threads(
            self.services.len(),
            threads,
            || b.fork(),
            |fork, i| self.one(fork, i),
        )
    }
}

#[cfg(test)]
mod tests;
