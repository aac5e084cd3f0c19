//! Local repo paths in `proton.toml`: a `[[template_repos]]`, `[[spec_repos]]` or
//! `[self_managed]` (and its `pipeline_repository`) `url` that is a local path or `file://`
//! URL must name an existing git repository. `protond check-config` checks this; loading a
//! config for the daemon does not, so that a repo that is gone for a while stays "unknown,
//! not deleted" (and a mirror already fetched is read as last fetched) instead of stopping
//! the daemon.
//!
//! It looks at file metadata only: it must never read a repo's content, run git, or write.

use std::path::{Path, PathBuf};

use super::{ConfigError, RawConfig};

/// One error per local repo path that does not exist or is not a git repository; relative
/// paths are taken from `base` (the config file's folder). Retired spec repos are skipped:
/// they read nothing, so their repo may be gone.
pub(super) fn check(raw: &RawConfig, file: &str, base: &Path) -> Vec<ConfigError> {
    let templates = raw
        .template_repos
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("template_repos[{i}].url"), r.url.as_str()));
    let specs = raw
        .spec_repos
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.retired)
        .map(|(i, r)| (format!("spec_repos[{i}].url"), r.url.as_str()));
    let infra = raw
        .self_managed
        .iter()
        .map(|sm| ("self_managed.url".to_string(), sm.url.as_str()));
    let pipelines = raw
        .self_managed
        .iter()
        .filter_map(|sm| sm.pipeline_repository.as_ref())
        .map(|p| {
            (
                "self_managed.pipeline_repository.url".to_string(),
                p.url.as_str(),
            )
        });
    // Shown absolute: the error names the path protond would read, whatever its folder.
    let base = if base.as_os_str().is_empty() {
        Path::new(".")
    } else {
        base
    };
    let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
    templates
        .chain(specs)
        .chain(infra)
        .chain(pipelines)
        .filter_map(|(key, url)| {
            let path = local_path(url, &base)?;
            let message = problem(url, &path, &std::fs::metadata(&path))?;
            Some(ConfigError {
                file: file.into(),
                key,
                message,
            })
        })
        .collect()
}

/// The path a repo `url` names when it is local: a plain path (relative ones taken from
/// `base`) or a `file://` URL; `None` for a remote URL, `scp`-like ones (`git@host:org/repo`)
/// included.
fn local_path(url: &str, base: &Path) -> Option<PathBuf> {
    if let Some(path) = url.strip_prefix("file://") {
        return Some(PathBuf::from(path));
    }
    if url.contains("://") {
        return None;
    }
    // git's rule: a colon before the first slash makes it `[user@]host:path`.
    let scp = url
        .find(':')
        .is_some_and(|colon| url.find('/').is_none_or(|slash| colon < slash));
    if scp {
        return None;
    }
    let path = Path::new(url);
    Some(if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    })
}

/// What is wrong with local repo `path` (written `url`), given its metadata; `None` when it is
/// a git repository (a work tree, or a bare repository).
fn problem(url: &str, path: &Path, meta: &std::io::Result<std::fs::Metadata>) -> Option<String> {
    let shown = path.display();
    let what = format!("{url:?} is a local path ({shown})");
    match meta {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(format!(
            "{what}, which does not exist; give the path of the repo (relative paths are taken from the config file's folder), or clone it there (git clone <remote> {shown})"
        )),
        Err(e) => Some(format!(
            "{what}, which cannot be read ({e}); let the user protond runs as read it"
        )),
        Ok(m) if !m.is_dir() => Some(format!(
            "{what}, which is a file, not a git repository; give the folder of the repo"
        )),
        Ok(_) if is_git_repo(path) => None,
        Ok(_) => Some(format!(
            "{what}, which is not a git repository (no .git in it, and not a bare repository); give the repo's top folder, or make it one (git init {shown})"
        )),
    }
}

/// A work tree (`.git` folder or file) or a bare repository (`HEAD`, `objects/`, `refs/`).
fn is_git_repo(path: &Path) -> bool {
    path.join(".git").exists()
        || (path.join("HEAD").is_file()
            && path.join("objects").is_dir()
            && path.join("refs").is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_are_told_from_urls() {
        let base = Path::new("/etc/protond");
        let local = |url: &str| local_path(url, base);
        assert_eq!(
            local("repos/a"),
            Some(PathBuf::from("/etc/protond/repos/a"))
        );
        assert_eq!(local("/srv/a"), Some(PathBuf::from("/srv/a")));
        assert_eq!(local("file:///srv/a"), Some(PathBuf::from("/srv/a")));
        assert_eq!(local("./a:b"), Some(PathBuf::from("/etc/protond/./a:b")));
        assert_eq!(local("https://git.example.com/a.git"), None);
        assert_eq!(local("ssh://git@git.example.com/a.git"), None);
        assert_eq!(local("git@git.example.com:org/a.git"), None);
    }

    #[test]
    fn missing_files_and_plain_folders_are_named_with_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let at = |name: &str| {
            let path = dir.path().join(name);
            problem(name, &path, &std::fs::metadata(&path))
        };
        std::fs::write(dir.path().join("file"), "x").expect("write");
        std::fs::create_dir_all(dir.path().join("plain")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("work/.git")).expect("mkdir");
        for d in ["bare/objects", "bare/refs"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        std::fs::write(dir.path().join("bare/HEAD"), "ref: refs/heads/main\n").expect("write");
        let gone = at("gone").expect("missing");
        assert!(gone.contains("which does not exist"), "{gone}");
        assert!(gone.contains("git clone <remote>"), "{gone}");
        assert!(at("file").expect("a file").contains("is a file"));
        let plain = at("plain").expect("not a repo");
        assert!(plain.contains("not a git repository"), "{plain}");
        assert_eq!(at("work"), None);
        assert_eq!(at("bare"), None);
    }
}
