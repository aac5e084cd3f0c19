//! A `protond run` a test started, and its JSON log lines as they come: wait for a line,
//! read what was seen so far, kill it. It must never outlive its test: it is killed and reaped
//! when dropped, also when the test fails.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::world::World;

/// A running `protond run`; killed (SIGKILL) and reaped when dropped.
pub struct Running {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl World {
    /// Starts `protond` with `args` (e.g. `run --no-server`), its stderr read line by line.
    pub fn spawn(&self, args: &[&str]) -> Running {
        Running::start(self.command(args))
    }
}

impl Running {
    /// Starts `cmd` with stderr piped and stdout dropped.
    pub fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("daemon starts");
        let stderr = child.stderr.take().expect("stderr");
        Self {
            child,
            lines: log_lines(stderr),
            seen: Vec::new(),
        }
    }

    /// Reads log lines until one satisfies `pred`, or times out.
    pub fn wait_for_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(line) = self.lines.recv_timeout(left) else {
                return false;
            };
            let hit = pred(&line);
            self.seen.push(line);
            if hit {
                return true;
            }
        }
        false
    }

    /// Reads log lines until a JSON one satisfies `pred`, or times out.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> bool {
        self.wait_for_line(timeout, |line| {
            serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| pred(&v))
        })
    }

    /// The log lines read so far.
    pub fn log(&self) -> String {
        self.seen.join("\n")
    }

    /// `kill -9`: no chance to record anything. Returns how the process ended.
    pub fn kill_9(&mut self) -> ExitStatus {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("wait")
    }

    /// Sends SIGTERM (a clean shutdown); asserts it was delivered.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self) -> ExitStatus {
        self.child.wait().expect("wait")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines a child writes to `stderr`, read on a thread.
fn log_lines(stderr: std::process::ChildStderr) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
