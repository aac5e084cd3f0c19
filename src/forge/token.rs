//! Where a forge API token comes from: a `token_file` (re-read whenever its modification
//! time changes, so a rotated secret is picked up without a restart) or else an environment
//! variable.
//!
//! It must never log, format or store a token: its `Debug` shows only the file's path, and
//! its errors name the file and what is wrong with it, never its contents.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::ForgeError;
use crate::config::ForgeKind;

/// A token's source, with the last file contents read and their modification time.
#[derive(Clone, Default)]
pub struct TokenSource {
    file: Option<PathBuf>,
    cached: Arc<Mutex<Option<(SystemTime, String)>>>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// A source reading `file` when set, else the environment.
    #[must_use]
    pub fn new(file: Option<PathBuf>) -> Self {
        Self {
            file,
            cached: Arc::default(),
        }
    }

    /// The token, trimmed: the file's when one is configured, else variable `env`'s.
    ///
    /// # Errors
    ///
    /// [`ForgeError::TokenFile`] when the file cannot be read or is empty,
    /// [`ForgeError::MissingToken`] when the variable is unset or empty.
    pub fn read(&self, kind: ForgeKind, env: &str) -> Result<String, ForgeError> {
        let Some(path) = &self.file else {
            return std::env::var(env)
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .ok_or_else(|| ForgeError::MissingToken {
                    forge: kind.as_str(),
                    var: env.to_string(),
                });
        };
        let fail = |message: String| ForgeError::TokenFile {
            forge: kind.as_str(),
            path: path.display().to_string(),
            message,
        };
        let mtime = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map_err(|e| fail(e.to_string()))?;
        let mut cached = self
            .cached
            .lock()
            .map_err(|_| fail("lock poisoned".into()))?;
        if let Some((at, token)) = cached.as_ref()
            && *at == mtime
        {
            return Ok(token.clone());
        }
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let token = text.trim().to_string();
        if token.is_empty() {
            return Err(fail("it is empty".into()));
        }
        *cached = Some((mtime, token.clone()));
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewritten_file_is_read_again_and_never_shown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "first-secret\n").expect("write");
        let source = TokenSource::new(Some(path.clone()));
        assert_eq!(
            source.read(ForgeKind::GitHub, "UNUSED").expect("read"),
            "first-secret"
        );
        std::fs::write(&path, "second-secret").expect("write");
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(later))
            .expect("set mtime");
        assert_eq!(
            source.read(ForgeKind::GitHub, "UNUSED").expect("read"),
            "second-secret"
        );
        assert!(!format!("{source:?}").contains("secret-"));
        std::fs::write(&path, "  \n").expect("write");
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(later + std::time::Duration::from_secs(5)))
            .expect("set mtime");
        let e = source.read(ForgeKind::Gitea, "UNUSED").expect_err("empty");
        assert!(e.to_string().contains("is empty"), "{e}");
        assert!(e.to_string().contains("token_file"), "{e}");
    }
}
