//! Peak memory of a child process, read from `/proc/<pid>/status` while it runs (Linux).
//!
//! `VmHWM` is the kernel's high-water mark of the process's resident set: it only grows, so
//! sampling it every few milliseconds until the process exits gives its peak, short of what
//! it allocates in its last sampling interval. The hostile-input suites print these figures.

use std::process::{Child, ExitStatus, Output};
use std::time::{Duration, Instant};

/// Resident-set figures of one process, in KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rss {
    /// The current resident set (`VmRSS`).
    pub now_kib: u64,
    /// The peak resident set so far (`VmHWM`).
    pub peak_kib: u64,
}

impl Rss {
    /// The peak in MiB, for messages.
    pub fn peak_mib(self) -> u64 {
        self.peak_kib / 1024
    }
}

/// Reads `VmRSS` and `VmHWM` of `pid`; `None` once the process is gone.
pub fn rss(pid: u32) -> Option<Rss> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some(Rss {
        now_kib: field("VmRSS:")?,
        peak_kib: field("VmHWM:")?,
    })
}

/// Waits for `child` (its stdout and stderr must be piped or null), sampling its peak RSS
/// every 5 ms; returns its output and the last peak seen. Panics after `timeout`.
pub fn wait_with_peak(mut child: Child, timeout: Duration) -> (Output, Rss) {
    let pid = child.id();
    let start = Instant::now();
    let mut peak = Rss::default();
    // Drain the pipes in threads so a chatty child never blocks on a full pipe.
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    let status: ExitStatus = loop {
        if let Some(r) = rss(pid) {
            peak.now_kib = r.now_kib;
            peak.peak_kib = peak.peak_kib.max(r.peak_kib);
        }
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let join = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
        h.map(|h| h.join().expect("pipe reader"))
            .unwrap_or_default()
    };
    let output = Output {
        status,
        stdout: join(stdout),
        stderr: join(stderr),
    };
    (output, peak)
}

fn drain(mut pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}
