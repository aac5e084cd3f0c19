//! Reuse of single renderings within a declaration ([`Memo`]) and the hashing of every
//! render key ([`Hasher`]): the render cache's declaration keys and the render keys of
//! single resources. Never renders and never decides anything itself.

use sha2::{Digest, Sha256};

use super::Resource;
use super::resolve::{EnvTarget, ResolveError};
use crate::catalog::Infrastructure;
use crate::catalog::releases::Release;
use crate::state::{Outputs, ResourceRecord};

/// A declaration's key: the hash of everything its rendering reads.
pub(super) type Key = [u8; 32];

/// The key of one resource's rendering ([`render_key`]): 128 bits of SHA-256, kept for
/// every instance at rest.
pub(super) type RenderKey = [u8; 16];

/// Reuse of single renderings within a declaration (issue 20): when a service renders
/// again, each of its instances, components and pipeline whose rendering reads the same
/// bundle and context as a row of one of its kept renderings takes that row's documents
/// instead of rendering (a new minor moving one instance of a service, an output of a
/// sibling, a record's status). Only while a render cache is in use.
#[derive(Debug, Default)]
pub(crate) struct Memo {
    /// Whether renderings are keyed at all (a render cache is in use).
    pub on: bool,
    /// Rows of the declaration's kept renderings, by render key.
    pub earlier: Vec<(RenderKey, Resource)>,
    /// (index among the rows added, render key) of each row rendered or reused under a key.
    pub made: Vec<(u32, RenderKey)>,
    /// Rows reused.
    pub hits: usize,
}

/// What a resource's rendering reads, apart from its context: the bundle it renders.
pub(crate) enum Bundle<'a> {
    /// A template release's (a release is its commit's bundle).
    Release(&'a Release),
    /// A directly defined component's folder, read from a spec repo (named by its content:
    /// the folder, each file's path, text, engine and language).
    Component(&'a Infrastructure),
}

/// The key of resource `id`'s rendering of `bundle` with context `ctx`: everything a
/// rendering reads (a rendering reads nothing else; a failed one is never reused, so how a
/// failure is worded does not count).
pub(crate) fn render_key(id: &str, bundle: &Bundle<'_>, ctx: &serde_json::Value) -> RenderKey {
    let mut h = Hasher::new();
    h.put(id);
    match bundle {
        Bundle::Release(r) => h.releases(Ok(vec![r])),
        Bundle::Component(infra) => {
            h.put("component");
            h.put(&infra.folder);
            for f in &infra.files {
                h.put(&f.path);
                h.put(&f.source);
                h.put_fmt(format_args!("{:?} {:?}", f.engine, f.language));
            }
            for (path, text) in infra.codebuild.iter().flatten() {
                h.put(path);
                h.put(text);
            }
        }
    }
    // Writing into a hash cannot fail; the value is whole (no map key that is not a string).
    let _ = serde_json::to_writer(HashWriter(&mut h.0), ctx);
    let mut key = RenderKey::default();
    key.copy_from_slice(&h.finish()[..16]);
    key
}

/// Text or bytes written into a hash.
struct HashWriter<'a>(&'a mut Sha256);

impl std::fmt::Write for HashWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.update(s.as_bytes());
        Ok(())
    }
}

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// SHA-256 over fields, each ended by a zero byte.
pub(super) struct Hasher(Sha256);

impl Hasher {
    pub(super) fn new() -> Self {
        Self(Sha256::new())
    }

    /// The releases a declaration resolves to (each one's tag, commit and state: a release
    /// is its commit's bundle), or why it resolves to none (a template repo not read among
    /// the reasons).
    pub(super) fn releases(&mut self, resolved: Result<Vec<&Release>, ResolveError>) {
        match resolved {
            Ok(releases) => {
                for r in releases {
                    self.put(&r.repo);
                    self.put(&r.template);
                    self.put_fmt(format_args!("{}", r.version));
                    self.put(&r.tag);
                    self.put(&r.commit);
                    self.put_fmt(format_args!("{:?}", r.state));
                }
            }
            Err(e) => self.put_fmt(format_args!("{e:?}")),
        }
    }

    pub(super) fn put_bytes(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
        self.0.update([0]);
    }

    pub(super) fn put(&mut self, s: &str) {
        self.0.update(s.as_bytes());
        self.0.update([0]);
    }

    /// [`Self::put`] of formatted text, written straight into the hash (the keys of every
    /// service are computed at each cycle: no string is made for them).
    pub(super) fn put_fmt(&mut self, args: std::fmt::Arguments<'_>) {
        // Writing into a hash cannot fail.
        let _ = std::fmt::Write::write_fmt(&mut HashWriter(&mut self.0), args);
        self.0.update([0]);
    }

    pub(super) fn finish(self) -> Key {
        self.0.finalize().into()
    }

    /// A declaration: its repo, the commit read, the file and its text (the commit alone
    /// would do, but a rewritten file is cheap to tell apart).
    pub(super) fn decl(&mut self, repo: &str, commit: Option<&String>, path: &str, text: &str) {
        self.put(repo);
        self.put(commit.map_or("-", String::as_str));
        self.put(path);
        self.put(text);
    }

    pub(super) fn outputs(&mut self, outputs: &Outputs) {
        self.put("outputs");
        for (k, v) in outputs {
            self.put(k);
            self.put(v);
        }
    }

    /// What an instance's environment lets it run: the environment's template and major and
    /// the repos it accepts services from (written field by field: no `Debug` text).
    pub(super) fn target(&mut self, target: Option<&EnvTarget<'_>>) {
        let Some(t) = target else {
            self.put("no target");
            return;
        };
        self.put("target");
        self.put(t.template);
        self.put_fmt(format_args!("{}", t.major));
        match t.allowed_repos {
            None => self.put("any repo"),
            Some(repos) => {
                self.put_fmt(format_args!("{} repos", repos.len()));
                for r in repos {
                    self.put(r);
                }
            }
        }
    }

    pub(super) fn record(&mut self, d: &ResourceRecord) {
        self.put(d.kind.as_str());
        self.put(&d.repo);
        self.put_fmt(format_args!("{}", d.version));
        self.put(&d.template);
        self.put(&d.input_hash);
        self.put(&d.rendered_hash);
        self.put(d.status.as_str());
        self.put(d.environment.as_deref().unwrap_or("-"));
        self.outputs(&d.outputs);
    }
}
