//! Repository handles, and the in-process check that a local source repository has nothing
//! new for its mirror.
//!
//! Opening a repository with gix reads its configuration (and git's global and system
//! configuration) each time: for a fleet of hundreds of repos that was most of a no-op cycle.
//! But a full handle is also 15 to 30 KiB of heap (configuration, object store, pack caches)
//! plus the pages of its memory-mapped packs: kept for every repo, 5,000 mirrors and their
//! local sources held 150 MiB at rest (issue 20). So two things are kept, process-wide, by
//! path, and checked against the folder's device and inode (a new clone moved into place, or
//! a folder deleted and recreated, is opened afresh):
//!
//! - a reference store ([`refs`]) for every repo: what a no-op cycle reads (a branch's head,
//!   [`up_to_date`]), a few hundred bytes each;
//! - a full handle ([`open`]) for the [`KEPT`] repos used last: reading trees, tags and
//!   objects. A kept handle stays current: gix reads loose references from disk on every
//!   lookup, re-reads `packed-refs` when it changes, and looks for new packs when an object
//!   is missing; but it sizes its table of pack indexes when opened, so a fetch that adds a
//!   pack drops the kept handle ([`forget`]).
//!
//! [`up_to_date`] compares what a fetch would write (the refspecs' sources in a local
//! repository) with the mirror's references, through the reference stores alone, without any
//! child process, so that an unchanged local repo is never fetched. It never writes anything,
//! and any doubt (a symbolic reference, an unreadable repo, a layout it does not know)
//! answers "fetch", which keeps the fetch's own error and guarantees.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use gix::bstr::{BStr, ByteSlice};

/// How many full handles are kept: the repos a cycle reads objects from (those whose head
/// moved, the template repos) are few; every other repo is read through its reference store.
pub(super) const KEPT: usize = 64;

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

/// A kept full handle and when it was last handed out.
struct Kept {
    identity: Identity,
    repo: gix::ThreadSafeRepository,
    used: u64,
}

#[derive(Default)]
struct Full {
    kept: HashMap<PathBuf, Kept>,
    /// Handed out so far (the clock of `used`).
    clock: u64,
}

fn full() -> &'static Mutex<Full> {
    static FULL: OnceLock<Mutex<Full>> = OnceLock::new();
    FULL.get_or_init(Mutex::default)
}

type Stores = Mutex<HashMap<PathBuf, (Identity, gix::refs::file::Store)>>;

fn stores() -> &'static Stores {
    static STORES: OnceLock<Stores> = OnceLock::new();
    STORES.get_or_init(Stores::default)
}

/// The repository at `path`: the kept handle while the folder there stays the same, else
/// opened and kept in place of the one used longest ago (beyond [`KEPT`]).
///
/// # Errors
///
/// gix's error when the repository cannot be opened (nothing is kept then).
pub(super) fn open(path: &Path) -> gix::Result<gix::ThreadSafeRepository> {
    let identity = Identity::of(path);
    if let Some(identity) = identity {
        let mut full = full()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        full.clock += 1;
        let now = full.clock;
        if let Some(kept) = full.kept.get_mut(path)
            && kept.identity == identity
        {
            kept.used = now;
            return Ok(kept.repo.clone());
        }
    }
    let repo = gix::ThreadSafeRepository::open(path)?;
    if let Some(identity) = identity {
        let mut full = full()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        full.clock += 1;
        let used = full.clock;
        if full.kept.len() >= KEPT && !full.kept.contains_key(path) {
            let oldest = full
                .kept
                .iter()
                .min_by_key(|(_, k)| k.used)
                .map(|(p, _)| p.clone());
            if let Some(oldest) = oldest {
                full.kept.remove(&oldest);
            }
        }
        full.kept.insert(
            path.to_owned(),
            Kept {
                identity,
                repo: repo.clone(),
                used,
            },
        );
    }
    Ok(repo)
}

/// Drops the handle kept for `path` (after a fetch added a pack: a handle sizes its table of
/// pack indexes when it is opened); the next [`open`] opens it afresh.
pub(super) fn forget(path: &Path) {
    full()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .kept
        .remove(path);
}

/// The reference store of the git folder `git_dir`, kept while the folder stays the same.
/// `None` when there is no such folder.
pub(super) fn refs(git_dir: &Path) -> Option<gix::refs::file::Store> {
    let identity = Identity::of(git_dir)?;
    let mut stores = stores()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((kept, store)) = stores.get(git_dir)
        && *kept == identity
    {
        return Some(store.clone());
    }
    let store = gix::refs::file::Store::at(git_dir.to_owned(), gix::hash::Kind::Sha1);
    stores.insert(git_dir.to_owned(), (identity, store.clone()));
    Some(store)
}

/// The git folder of the local repository at `path` when its layout is the plain one: a
/// `.git` folder, or a bare repository. `None` for anything else (a `.git` file of a work
/// tree or submodule, reftable references), which its callers treat as "not known".
fn git_dir(path: &Path) -> Option<PathBuf> {
    let dot_git = path.join(".git");
    let dir = if dot_git.is_dir() {
        dot_git
    } else if path.join("HEAD").is_file() {
        path.to_owned()
    } else {
        return None;
    };
    let plain = dir.join("refs").is_dir()
        && !dir.join("reftable").exists()
        && !dir.join("commondir").exists();
    plain.then_some(dir)
}

/// The object a branch or other full reference name points at in the repository at `git_dir`,
/// read from its references alone: `None` when the reference is missing, symbolic, or
/// unreadable (the caller then asks the full handle, which peels).
pub(super) fn target(git_dir: &Path, name: &str) -> Option<gix::ObjectId> {
    let store = refs(git_dir)?;
    let reference = store.try_find(name).ok()??;
    reference.target.try_id().map(ToOwned::to_owned)
}

/// Whether the mirror at `mirror` already has every reference that fetching `refspecs` from
/// the local repository at `source` would write, at the same object. `false` on any doubt.
pub(super) fn up_to_date(source: &Path, mirror: &Path, refspecs: &[String]) -> bool {
    let Some(source) = git_dir(source).and_then(|d| refs(&d)) else {
        return false;
    };
    let Some(mirror) = refs(mirror) else {
        return false;
    };
    refspecs
        .iter()
        .all(|spec| spec_up_to_date(&source, &mirror, spec).unwrap_or(false))
}

/// One `+refs/…:refs/…` refspec mapping each name onto itself (what `fetch::refspecs`
/// writes): `None` for anything else, or an unreadable reference.
fn spec_up_to_date(
    source: &gix::refs::file::Store,
    mirror: &gix::refs::file::Store,
    spec: &str,
) -> Option<bool> {
    let (src, dst) = spec.strip_prefix('+')?.split_once(':')?;
    if src != dst {
        return None;
    }
    let same = |name: &BStr, id: gix::ObjectId| -> Option<bool> {
        let theirs = mirror.try_find(name).ok()?;
        Some(theirs.and_then(|r| r.target.try_id().map(ToOwned::to_owned)) == Some(id))
    };
    if let Some(prefix) = src.strip_suffix('*') {
        if prefix.contains('*') {
            return None;
        }
        let prefix = <&gix::path::RelativePath>::try_from(prefix).ok()?;
        let platform = source.iter().ok()?;
        for reference in platform.prefixed(prefix).ok()? {
            let reference = reference.ok()?;
            let id = reference.target.try_id()?.to_owned();
            if !same(reference.name.as_bstr(), id)? {
                return Some(false);
            }
        }
        return Some(true);
    }
    match source.try_find(src).ok()? {
        // A branch the source lacks is left out of a fetch too.
        None => Some(true),
        Some(reference) => {
            let id = reference.target.try_id()?.to_owned();
            same(src.as_bytes().as_bstr(), id)
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
        let kept = |p: &Path| full().lock().expect("lock").kept.get(p).map(|k| k.identity);
        let before = kept(&path).expect("kept");
        // Replaced by another folder (as a new clone is moved into place).
        let other = tmp.path().join("other");
        std::fs::create_dir(&other).expect("mkdir");
        git(&other, &["init", "-q", "--bare"]);
        std::fs::remove_dir_all(&path).expect("rm");
        std::fs::rename(&other, &path).expect("mv");
        open(&path).expect("opens");
        assert_ne!(kept(&path).expect("kept"), before);
        // Forgetting drops the kept handle; the next open opens the same folder afresh.
        forget(&path);
        assert!(kept(&path).is_none());
        assert_eq!(open(&path).expect("opens").path(), first.path());
        assert!(open(&tmp.path().join("missing")).is_err());
    }

    #[test]
    fn no_more_than_kept_handles_stay_open_and_the_one_used_longest_ago_goes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let paths: Vec<PathBuf> = (0..=KEPT + 4)
            .map(|i| {
                let path = tmp.path().join(format!("r{i}"));
                std::fs::create_dir(&path).expect("mkdir");
                git(&path, &["init", "-q", "--bare"]);
                path
            })
            .collect();
        let is_kept = |p: &Path| full().lock().expect("lock").kept.contains_key(p);
        open(&paths[0]).expect("opens");
        open(&paths[1]).expect("opens");
        // The first is used again: the second is now the one used longest ago.
        open(&paths[0]).expect("opens");
        for p in &paths[2..] {
            open(p).expect("opens");
            assert!(full().lock().expect("lock").kept.len() <= KEPT);
        }
        assert!(
            !is_kept(&paths[1]),
            "the least recently used handle is dropped"
        );
        assert!(is_kept(&paths[paths.len() - 1]));
        // Its reference store is kept all the same, and reads what the folder holds.
        assert!(refs(&paths[1]).is_some());
        assert_eq!(target(&paths[1], "refs/heads/main"), None);
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
        let mirror = mirror_path.clone();
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
        // A bare source is read the same way; a work tree whose `.git` is a file is not
        // known, so it is fetched.
        git(tmp.path(), &["clone", "-q", "--bare", "src", "bare"]);
        let bare = tmp.path().join("bare");
        let main = specs(&["+refs/heads/main:refs/heads/main"]);
        assert!(!up_to_date(&bare, &mirror, &main));
        git(
            &mirror,
            &["fetch", "-q", "../src", "+refs/heads/main:refs/heads/main"],
        );
        assert!(up_to_date(&bare, &mirror, &main));
        git(&src, &["worktree", "add", "-q", "../wt"]);
        assert!(tmp.path().join("wt/.git").is_file());
        assert!(!up_to_date(&tmp.path().join("wt"), &mirror, &main));
        // The mirror's branch as its reference names it, without opening the repository.
        assert_eq!(
            target(&mirror, "refs/heads/main").map(|id| id.to_string()),
            Some(rev(&src, "main"))
        );
        assert_eq!(target(&mirror, "refs/heads/gone"), None);
    }

    fn rev(dir: &Path, name: &str) -> String {
        let out = std::process::Command::new("git")
            .current_dir(dir)
            .args(["rev-parse", name])
            .output()
            .expect("git runs");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}
