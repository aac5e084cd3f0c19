//! Repository handles kept open between cycles, and the in-process check that a local
//! source repository has nothing new for its mirror.
//!
//! Opening a repository with gix reads its configuration (and git's global and system
//! configuration) each time: for a fleet of hundreds of repos that was most of a no-op cycle.
//! [`open`] keeps one `gix::ThreadSafeRepository` per path, process-wide, and hands out the
//! same handle until the folder at that path is replaced (a new clone is moved into place, or
//! someone deleted and recreated it): the cache is keyed by path and checked against the
//! folder's device and inode. A kept handle stays current: gix reads loose references from
//! disk on every lookup, re-reads `packed-refs` when it changes, and looks for new packs when
//! an object is missing; but it sizes its table of pack indexes when opened, so a fetch that
//! adds a pack replaces the kept handle ([`reopen`]).
//!
//! [`up_to_date`] compares what a fetch would write (the refspecs' sources in a local
//! repository) with the mirror's references, without any child process, so that an unchanged
//! local repo is never fetched. It never writes anything, and any doubt (a symbolic
//! reference, an unreadable repo) answers "fetch", which keeps the fetch's own error and
//! guarantees.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use gix::bstr::ByteSlice;

/// The identity of the folder a handle was opened from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
}

impl Identity {
    fn of(path: &Path) -> Option<Identity> {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(path).ok().map(|m| Identity {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

type Handles = Mutex<HashMap<PathBuf, (Identity, gix::ThreadSafeRepository)>>;

fn handles() -> &'static Handles {
    static HANDLES: OnceLock<Handles> = OnceLock::new();
    HANDLES.get_or_init(Handles::default)
}

/// The repository at `path`, opened once and kept while the folder there stays the same.
///
/// # Errors
///
/// gix's error when the repository cannot be opened (nothing is kept then).
pub(super) fn open(path: &Path) -> gix::Result<gix::ThreadSafeRepository> {
    let identity = Identity::of(path);
    if let Some(identity) = identity
        && let Some((kept, repo)) = handles()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(path)
        && *kept == identity
    {
        return Ok(repo.clone());
    }
    let repo = gix::ThreadSafeRepository::open(path)?;
    if let Some(identity) = identity {
        handles()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(path.to_owned(), (identity, repo.clone()));
    }
    Ok(repo)
}

/// The repository at `path`, opened afresh and kept in place of the handle kept so far (after
/// a fetch added a pack: a handle sizes its table of pack indexes when it is opened).
///
/// # Errors
///
/// gix's error when the repository cannot be opened (the old handle is dropped then).
pub(super) fn reopen(path: &Path) -> gix::Result<gix::ThreadSafeRepository> {
    handles()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(path);
    open(path)
}

/// Whether the mirror already has every reference that fetching `refspecs` from the local
/// repository at `source` would write, at the same object. `false` on any doubt.
pub(super) fn up_to_date(source: &Path, mirror: &gix::Repository, refspecs: &[String]) -> bool {
    let Ok(source) = open(source) else {
        return false;
    };
    let source = source.to_thread_local();
    refspecs
        .iter()
        .all(|spec| spec_up_to_date(&source, mirror, spec).unwrap_or(false))
}

/// One `+refs/…:refs/…` refspec mapping each name onto itself (what `fetch::refspecs`
/// writes): `None` for anything else, or an unreadable reference.
fn spec_up_to_date(source: &gix::Repository, mirror: &gix::Repository, spec: &str) -> Option<bool> {
    let (src, dst) = spec.strip_prefix('+')?.split_once(':')?;
    if src != dst {
        return None;
    }
    let same = |name: &str, id: gix::ObjectId| -> Option<bool> {
        let mut theirs = mirror.try_find_reference(name).ok()?;
        Some(
            theirs
                .as_mut()
                .and_then(|r| r.target().try_id().map(ToOwned::to_owned))
                == Some(id),
        )
    };
    if let Some(prefix) = src.strip_suffix('*') {
        if prefix.contains('*') {
            return None;
        }
        let platform = source.references().ok()?;
        for reference in platform.prefixed(prefix.as_bytes().as_bstr()).ok()? {
            let reference = reference.ok()?;
            let id = reference.target().try_id()?.to_owned();
            if !same(&reference.name().as_bstr().to_str_lossy(), id)? {
                return Some(false);
            }
        }
        return Some(true);
    }
    match source.try_find_reference(src).ok()? {
        // A branch the source lacks is left out of a fetch too.
        None => Some(true),
        Some(reference) => {
            let id = reference.target().try_id()?.to_owned();
            same(src, id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) {
        let out = std::process::Command::new("git")
            .current_dir(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {out:?}");
    }

    #[test]
    fn kept_handles_are_reused_until_the_folder_is_replaced() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("repo");
        std::fs::create_dir(&path).expect("mkdir");
        git(&path, &["init", "-q", "--bare"]);
        let first = open(&path).expect("opens");
        let again = open(&path).expect("opens");
        assert_eq!(first.path(), again.path());
        let kept = |p: &Path| handles().lock().expect("lock").get(p).map(|(i, _)| *i);
        let before = kept(&path).expect("kept");
        // Replaced by another folder (as a new clone is moved into place).
        let other = tmp.path().join("other");
        std::fs::create_dir(&other).expect("mkdir");
        git(&other, &["init", "-q", "--bare"]);
        std::fs::remove_dir_all(&path).expect("rm");
        std::fs::rename(&other, &path).expect("mv");
        open(&path).expect("opens");
        assert_ne!(kept(&path).expect("kept"), before);
        // Reopening replaces the kept handle with a fresh one of the same folder.
        let fresh = reopen(&path).expect("reopens");
        assert_eq!(fresh.path(), open(&path).expect("opens").path());
        assert!(open(&tmp.path().join("missing")).is_err());
    }

    #[test]
    fn up_to_date_compares_what_the_refspecs_fetch() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        std::fs::create_dir(&src).expect("mkdir");
        git(&src, &["init", "-q", "-b", "main"]);
        std::fs::write(src.join("f"), "1").expect("write");
        git(&src, &["add", "."]);
        git(&src, &["commit", "-q", "-m", "one"]);
        git(&src, &["tag", "-a", "svc/v1.0", "-m", "v1"]);
        let mirror_path = tmp.path().join("mirror");
        git(tmp.path(), &["clone", "-q", "--mirror", "src", "mirror"]);
        let mirror = gix::open(&mirror_path).expect("opens");
        let specs = |s: &[&str]| s.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let all = specs(&[
            "+refs/heads/main:refs/heads/main",
            "+refs/tags/svc/*:refs/tags/svc/*",
        ]);
        assert!(up_to_date(&src, &mirror, &all));
        // A branch the source lacks is not fetched either.
        assert!(up_to_date(
            &src,
            &mirror,
            &specs(&["+refs/heads/gone:refs/heads/gone"])
        ));
        git(&src, &["tag", "-a", "svc/v1.1", "-m", "v1.1"]);
        assert!(!up_to_date(&src, &mirror, &all));
        assert!(up_to_date(
            &src,
            &mirror,
            &specs(&["+refs/heads/main:refs/heads/main"])
        ));
        std::fs::write(src.join("f"), "2").expect("write");
        git(&src, &["commit", "-q", "-am", "two"]);
        assert!(!up_to_date(
            &src,
            &mirror,
            &specs(&["+refs/heads/main:refs/heads/main"])
        ));
        // Anything it cannot compare means "fetch".
        assert!(!up_to_date(&tmp.path().join("missing"), &mirror, &all));
        assert!(!up_to_date(&src, &mirror, &specs(&["refs/heads/main"])));
    }
}
