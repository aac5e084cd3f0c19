//! A wall-clock budget for one Jinja render, on top of fuel.
//!
//! Fuel bounds what a template executes, but minijinja walks some values without charging
//! fuel: a lazily repeated list (`[1] * 100000000`, created for free) compared with `==`,
//! searched with `in` or joined with `~` costs seconds per operation, and a loop of such
//! operations has no practical end. No engine hook can stop one, so each render runs on a
//! worker thread and the caller waits at most [`TIME_BUDGET`]: past it, the render fails as a
//! bound violation naming the file, and the cycle goes on with every other resource.
//!
//! A render cannot be killed, so the worker thread is abandoned and runs until the template
//! ends (its memory is bounded by [`super::bounds`]). So that one hostile template cannot
//! start a new runaway thread every cycle, its source is remembered while its abandoned render
//! runs: renders of the same source then fail at once with the same error, and are tried
//! again once it has ended.
//!
//! Only templates that can build such values need the worker: a lazy list is made by `*`
//! (repetition) or `+` (concatenation) inside a Jinja tag, and a template whose tags use
//! neither is bounded by fuel alone, so it renders on the calling thread
//! ([`can_build_lazy_sequences`]; none of the AWS samples or examples uses either). The
//! hand-off to a worker roughly halves render throughput, so it is paid only where needed.
//!
//! Each calling thread keeps one worker, reused for every render (a channel hand-off, not a
//! thread per render); a worker whose render ran over the budget is replaced. Compiling a
//! template is bounded the same way: minijinja folds constant expressions (`[1] * n == …`)
//! while it compiles.

use std::cell::RefCell;
use std::collections::HashSet;
use std::hash::{Hash as _, Hasher as _};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// How long one render may run before it is abandoned. Real templates render in
/// milliseconds; fuel stops ordinary runaways far sooner.
pub const TIME_BUDGET: Duration = Duration::from_secs(10);

/// Why a render did not finish within its budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overrun {
    /// It ran past the budget and was abandoned.
    TimedOut(Duration),
    /// An abandoned render of the same source is still running.
    StillRunning(Duration),
}

impl std::fmt::Display for Overrun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Overrun::TimedOut(d) => write!(
                f,
                "it ran longer than its time budget of {} s and was abandoned",
                d.as_secs_f64()
            ),
            Overrun::StillRunning(d) => write!(
                f,
                "an earlier render of this template ran longer than its time budget of {} s and is still running; it is tried again once that one ends",
                d.as_secs_f64()
            ),
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// Sources whose abandoned render still runs (by hash).
static RUNAWAY: Mutex<Option<HashSet<u64>>> = Mutex::new(None);

thread_local! {
    static WORKER: RefCell<Option<SyncSender<Job>>> = const { RefCell::new(None) };
}

/// Whether a Jinja tag of `source` (`{{ … }}` or `{% … %}`) uses `*` or `+`, the operators
/// that build lazy lists for free. Conservative: a `*` or `+` in a string literal inside a
/// tag counts too.
#[must_use]
pub fn can_build_lazy_sequences(source: &str) -> bool {
    let bytes = source.as_bytes();
    let mut i = 0;
    while let Some(open) = bytes[i..].windows(2).position(|w| w == b"{{" || w == b"{%") {
        let start = i + open + 2;
        let close: &[u8] = if bytes[i + open + 1] == b'{' {
            b"}}"
        } else {
            b"%}"
        };
        let end = bytes[start..]
            .windows(2)
            .position(|w| w == close)
            .map_or(bytes.len(), |p| start + p);
        if bytes[start..end].iter().any(|b| *b == b'*' || *b == b'+') {
            return true;
        }
        i = (end + 2).min(bytes.len());
        if i >= bytes.len() {
            break;
        }
    }
    false
}

fn source_key(source: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    source.hash(&mut h);
    h.finish()
}

fn runaway(key: u64) -> bool {
    RUNAWAY
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .is_some_and(|s| s.contains(&key))
}

fn set_runaway(key: u64, running: bool) {
    let mut guard = RUNAWAY.lock().unwrap_or_else(PoisonError::into_inner);
    let set = guard.get_or_insert_with(HashSet::new);
    if running {
        set.insert(key);
    } else {
        set.remove(&key);
    }
}

/// A worker thread running jobs one after another; `None` when no thread can be started.
fn spawn_worker() -> Option<SyncSender<Job>> {
    let (tx, rx): (SyncSender<Job>, Receiver<Job>) = mpsc::sync_channel(0);
    std::thread::Builder::new()
        .name("protond-render".into())
        .spawn(move || {
            while let Ok(job) = rx.recv() {
                job();
            }
        })
        .ok()?;
    Some(tx)
}

/// Runs `render` (of a template whose text is `source`) within `budget`.
///
/// # Errors
///
/// [`Overrun`] when it ran past `budget` (it goes on running, abandoned) or when an abandoned
/// render of the same `source` still runs.
pub fn run<T: Send + 'static>(
    source: &str,
    budget: Duration,
    render: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Overrun> {
    let key = source_key(source);
    if runaway(key) {
        return Err(Overrun::StillRunning(budget));
    }
    let (done_tx, done_rx) = mpsc::sync_channel::<T>(1);
    let job: Job = Box::new(move || {
        let _ = done_tx.send(render());
    });
    let sender = WORKER.with(|w| w.borrow_mut().take()).or_else(spawn_worker);
    let Some(sender) = sender else {
        // No thread to be had (resource exhaustion): render here, unbounded in time.
        job();
        return done_rx.recv().map_err(|_| Overrun::TimedOut(budget));
    };
    let job = match sender.send(job) {
        Ok(()) => None,
        Err(mpsc::SendError(job)) => Some(job),
    };
    if let Some(job) = job {
        // The worker is gone (a render panicked): render here.
        job();
        return done_rx.recv().map_err(|_| Overrun::TimedOut(budget));
    }
    match done_rx.recv_timeout(budget) {
        Ok(value) => {
            WORKER.with(|w| *w.borrow_mut() = Some(sender));
            Ok(value)
        }
        Err(RecvTimeoutError::Timeout) => {
            // Abandon the worker (dropping `sender` ends it after this job) and remember the
            // source until its render ends.
            set_runaway(key, true);
            drop(sender);
            let watcher = std::thread::Builder::new()
                .name("protond-render-watch".into())
                .spawn(move || {
                    let _ = done_rx.recv();
                    set_runaway(key, false);
                });
            if watcher.is_err() {
                set_runaway(key, false);
            }
            Err(Overrun::TimedOut(budget))
        }
        // The render panicked: its worker is gone.
        Err(RecvTimeoutError::Disconnected) => Err(Overrun::TimedOut(budget)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn only_tags_with_star_or_plus_need_the_worker() {
        for (src, risky) in [
            ("A: {{ a }}\n", false),
            ("A: 1 + 2 * 3 outside any tag\n", false),
            ("{% for x in xs %}{{ x | indent(2) }}{% endfor %}", false),
            ("{{ [1] * 100000000 == [1] }}", true),
            ("{% set l = l + l %}", true),
            ("{{ a }} {{ b * 2 }}", true),
            ("{{ '+' }}", true),
            ("{{ unterminated * ", true),
            ("", false),
            ("{", false),
        ] {
            assert_eq!(can_build_lazy_sequences(src), risky, "{src}");
        }
    }

    #[test]
    fn a_fast_render_returns_its_value_and_reuses_the_worker() {
        for i in 0..100 {
            assert_eq!(run("fast", TIME_BUDGET, move || i * 2), Ok(i * 2));
        }
    }

    #[test]
    fn a_render_over_budget_is_abandoned_and_its_source_refused_until_it_ends() {
        let budget = Duration::from_millis(50);
        let start = Instant::now();
        let slow = || std::thread::sleep(Duration::from_millis(600));
        assert_eq!(
            run("slow source", budget, slow),
            Err(Overrun::TimedOut(budget))
        );
        assert!(start.elapsed() < Duration::from_millis(500));
        // While it runs, the same source fails at once; another source renders.
        assert_eq!(
            run("slow source", budget, || ()),
            Err(Overrun::StillRunning(budget))
        );
        assert_eq!(run("other source", budget, || 1), Ok(1));
        // Once it has ended, the source is tried again.
        std::thread::sleep(Duration::from_millis(900));
        assert_eq!(run("slow source", budget, || 2), Ok(2));
    }

    #[test]
    fn a_panicking_render_is_an_error_and_the_next_one_works() {
        let r: Result<(), Overrun> = run("panics", TIME_BUDGET, || panic!("boom"));
        assert!(r.is_err());
        assert_eq!(run("after", TIME_BUDGET, || 3), Ok(3));
    }
}
