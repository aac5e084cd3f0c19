//! The one-writer lock on a state store: an OS advisory lock (`flock` on Unix, through
//! [`std::fs::File::try_lock`]) on a lock file beside the `SQLite` database, `<db>.lock`.
//!
//! Only the commands that record deployments (`protond run`, `protond reconcile`, `protond
//! import --apply`) take it, for their whole life; the kernel releases it when the process
//! ends, however it ends (`kill -9` included), so a stale lock is impossible and there is
//! nothing to clean up by hand. The
//! holder writes its PID, host name and start time into the file so that a refused writer
//! can say who holds it.
//!
//! This module never waits for the lock (a second writer is refused at once), never deletes
//! the lock file (unlinking it while another process opens it would let two processes hold
//! "the" lock on two different files), and never touches the database itself.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::StateError;

/// Who holds a state store's writer lock, as its lock file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    /// The holder's process id.
    pub pid: u32,
    /// The host it runs on.
    pub host: String,
    /// When it took the lock (RFC 3339).
    pub since: String,
}

impl LockHolder {
    /// This process, now.
    fn current() -> Self {
        Self {
            pid: std::process::id(),
            host: host_name(),
            since: super::now(),
        }
    }

    /// The lock file's text: one `key=value` line each for `pid`, `host` and `since`.
    fn to_text(&self) -> String {
        format!(
            "pid={}\nhost={}\nsince={}\n",
            self.pid, self.host, self.since
        )
    }

    /// Reads [`LockHolder::to_text`] back; `None` unless all three lines are there (the
    /// holder may not have written them yet).
    fn parse(text: &str) -> Option<Self> {
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        Some(Self {
            pid: field("pid")?.parse().ok()?,
            host: field("host")?.to_string(),
            since: field("since")?.to_string(),
        })
    }
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "protond PID {} on host {}, since {}",
            self.pid, self.host, self.since
        )
    }
}

/// The holder as the refusal message names it; an unknown holder is one that took the lock
/// but has not written its details yet (or a process other than protond).
pub(super) fn describe_holder(holder: Option<&LockHolder>) -> String {
    holder.map_or_else(
        || "another process that has not written its PID into the lock file".to_string(),
        ToString::to_string,
    )
}

/// The exclusive right to write a state store, held until dropped (or until the process
/// ends, whichever comes first).
#[derive(Debug)]
pub struct WriterLock {
    /// The locked file; `None` for an in-memory database, which no other process can open.
    file: Option<File>,
    /// The lock file's path.
    path: PathBuf,
}

impl WriterLock {
    /// Takes the writer lock of the store at `url` (`sqlite://path`) without waiting, and
    /// writes this process's PID, host name and start time into the lock file.
    ///
    /// # Errors
    ///
    /// [`StateError::Locked`] when another process (or another guard in this one) holds
    /// it; [`StateError::Url`] for a URL that is not `sqlite://`; [`StateError::LockFile`]
    /// when the lock file cannot be created, locked or written.
    pub fn acquire(url: &str) -> Result<Self, StateError> {
        let Some(rest) = url.strip_prefix("sqlite://") else {
            return Err(StateError::Url { url: url.into() });
        };
        // Connection options (`?mode=…`) are not part of the file name.
        let db = rest.split_once('?').map_or(rest, |(path, _)| path);
        if db.is_empty() || db == ":memory:" || rest.contains("mode=memory") {
            return Ok(Self {
                file: None,
                path: PathBuf::new(),
            });
        }
        let path = lock_path(Path::new(db));
        let io = |what: &'static str| {
            let path = path.clone();
            move |source| StateError::LockFile { path, what, source }
        };
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(io("create its folder"))?;
        }
        // Never truncate on open: the file holds the current holder's details.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("open it"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StateError::Locked {
                    database: PathBuf::from(db),
                    holder: read_holder(&mut file),
                    path,
                });
            }
            Err(TryLockError::Error(source)) => return Err(io("lock it")(source)),
        }
        let text = LockHolder::current().to_text();
        file.set_len(0).map_err(io("write it"))?;
        file.seek(SeekFrom::Start(0)).map_err(io("write it"))?;
        file.write_all(text.as_bytes()).map_err(io("write it"))?;
        file.flush().map_err(io("write it"))?;
        Ok(Self {
            file: Some(file),
            path,
        })
    }

    /// The lock file (empty for an in-memory database).
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WriterLock {
    /// Clears the holder's details (best effort) so that the file does not name a process
    /// that no longer holds it; closing the file then releases the lock.
    fn drop(&mut self) {
        if let Some(file) = &self.file {
            let _ = file.set_len(0);
        }
    }
}

/// `<db>.lock`, beside the database file.
fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// The holder named in a lock file someone else holds. The holder writes its details right
/// after taking the lock, so a few short re-reads cover a refusal that comes in between.
fn read_holder(file: &mut File) -> Option<Box<LockHolder>> {
    for attempt in 0..5 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut text = String::new();
        if file.seek(SeekFrom::Start(0)).is_ok()
            && file.read_to_string(&mut text).is_ok()
            && let Some(holder) = LockHolder::parse(&text)
        {
            return Some(Box::new(holder));
        }
    }
    None
}

/// This machine's host name, for the lock file; `unknown` when the system does not say.
fn host_name() -> String {
    let from_file = |p: &str| std::fs::read_to_string(p).ok();
    from_file("/proc/sys/kernel/hostname")
        .or_else(|| from_file("/etc/hostname"))
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(dir: &tempfile::TempDir) -> String {
        format!("sqlite://{}/nested/state.db", dir.path().display())
    }

    #[test]
    fn a_second_writer_is_refused_while_the_first_guard_lives_and_admitted_after_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = WriterLock::acquire(&url(&dir)).expect("first writer");
        assert_eq!(first.path(), dir.path().join("nested/state.db.lock"));
        let text = std::fs::read_to_string(first.path()).expect("lock file");
        let holder = LockHolder::parse(&text).expect("holder written");
        assert_eq!(holder.pid, std::process::id());
        assert!(!holder.host.is_empty());
        assert!(
            humantime::parse_rfc3339(&holder.since).is_ok(),
            "{}",
            holder.since
        );

        let err = WriterLock::acquire(&url(&dir)).expect_err("second writer refused");
        let StateError::Locked {
            database,
            path,
            holder: Some(named),
        } = &err
        else {
            panic!("not a Locked error naming the holder: {err:?}");
        };
        assert_eq!(database, &dir.path().join("nested/state.db"));
        assert_eq!(path, first.path());
        assert_eq!(**named, holder);
        assert_eq!(err.kind(), "locked");
        assert!(!err.is_retryable());
        let msg = err.to_string();
        let pid = format!("PID {}", holder.pid);
        for part in [
            pid.as_str(),
            holder.host.as_str(),
            holder.since.as_str(),
            "state.db",
            "stop the other protond, or point this one at another state file",
        ] {
            assert!(msg.contains(part), "{part:?} missing from: {msg}");
        }

        drop(first);
        let again = WriterLock::acquire(&url(&dir)).expect("admitted after drop");
        drop(again);
    }

    #[test]
    fn in_memory_and_bad_urls() {
        assert!(WriterLock::acquire("sqlite://:memory:").is_ok());
        assert!(matches!(
            WriterLock::acquire("mysql://x"),
            Err(StateError::Url { .. })
        ));
    }

    #[test]
    fn connection_options_are_not_part_of_the_lock_file_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lock = WriterLock::acquire(&format!("{}?mode=rwc", url(&dir))).expect("lock");
        assert_eq!(lock.path(), dir.path().join("nested/state.db.lock"));
    }

    #[test]
    fn an_unreadable_holder_is_described_without_details() {
        assert_eq!(LockHolder::parse("pid=12\nhost=\n"), None);
        assert!(describe_holder(None).contains("another process"));
    }
}
