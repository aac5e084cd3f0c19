//! The one test world every suite builds: a temporary folder holding git repos (the project's
//! example repos, releases tagged in the template repo, extra repos a suite asks for), a
//! `proton.toml` written from a [`Toml`] description, and, if asked, a `moto_server` of its own.
//! Then the ways tests act on it: run the `protond` binary with that config, edit and commit
//! files, open the state store, list the stacks.
//!
//! It must never touch anything outside its temporary folder, share a `moto_server` between
//! tests, or set environment variables of the test process: the suites run in parallel
//! threads of one binary (see [`super::DEFAULT_LISTEN`] for the one thing they do share).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use protond::demo::LocalAws as Moto;
use protond::state::Store;

use super::{LiveStack, copy_tree, examples, git, live_stacks};

/// The three example repos, copied as git repos with one commit each.
const EXAMPLE_REPOS: [&str; 3] = ["platform-templates", "platform-envs", "payments"];

/// A temporary folder of git repos and a `proton.toml`, and the AWS endpoint it names. The
/// folder is deleted and the `moto_server` stopped when the world is dropped.
pub struct World {
    /// The folder holding the repos and `proton.toml`.
    pub root: PathBuf,
    /// The endpoint the config names: this world's `moto_server`, or a port where nothing
    /// listens yet ([`WorldBuilder::aws_down`]). Empty without AWS.
    aws_url: String,
    /// This world's `moto_server`, stopped on drop.
    _moto: Option<Moto>,
    /// Environment every `protond` command of this world gets (tokens the config names).
    env: Vec<(String, String)>,
    /// The `SQLite` file the config names (unused on PostgreSQL).
    state_db: PathBuf,
    /// This world's own PostgreSQL database when the suites run on PostgreSQL (the config's
    /// `state`), dropped with the world.
    database: Option<super::Database>,
    /// Dropped last: deletes the folder.
    _tmp: tempfile::TempDir,
}

/// How a world's config reaches AWS.
enum Aws {
    /// No `[aws]` section: nothing is provisioned.
    None,
    /// A `moto_server` of the world's own, started by [`WorldBuilder::build`].
    Moto,
    /// A free port of 127.0.0.1 where nothing listens: the test starts `moto_server` there
    /// itself when AWS should come back (`Moto::start_on(w.aws_port())`).
    Down,
}

/// A step of the world's setup that runs on its folder after the repos exist.
type Setup = Box<dyn FnOnce(&Path)>;

/// A change to the world's config.
type ConfigEdit = Box<dyn FnOnce(&mut Toml)>;

/// Describes a [`World`]; [`WorldBuilder::build`] makes it. Steps run in this order: the
/// example repos, the extra repos, the `setup` steps, the tags, the `moto_server`, the config.
#[must_use = "a builder does nothing until .build()"]
pub struct WorldBuilder {
    /// Whether to copy the example repos.
    examples: bool,
    /// Extra repos: name and README text.
    repos: Vec<(String, String)>,
    setup: Vec<Setup>,
    /// Tags of the template repo: name and message (none: lightweight).
    tags: Vec<(String, Option<String>)>,
    aws: Aws,
    config: Vec<ConfigEdit>,
    /// Environment for every `protond` command.
    env: Vec<(String, String)>,
}

impl World {
    /// A builder for an empty world (no repos, no AWS, the default config).
    pub fn builder() -> WorldBuilder {
        WorldBuilder {
            examples: false,
            repos: Vec::new(),
            setup: Vec::new(),
            tags: Vec::new(),
            aws: Aws::None,
            config: Vec::new(),
            env: Vec::new(),
        }
    }

    /// The world most suites start from: the example repos with the first releases of the
    /// three example templates tagged, and a `moto_server`.
    pub fn examples_on_moto() -> WorldBuilder {
        Self::builder()
            .examples()
            .tagged(&["basic-env", "web-svc", "worker-svc"])
            .moto()
    }

    /// The folder of repo `name` (or any path under the root).
    pub fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The config file.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("proton.toml")
    }

    /// The `protond` binary with `args` and this world's config, AWS test credentials, JSON
    /// logs and the world's environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = super::protond(&self.config_path(), args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Runs `protond` with `args` to the end.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("protond runs")
    }

    /// `protond reconcile --once`.
    pub fn reconcile(&self) -> Output {
        self.run(&["reconcile", "--once"])
    }

    /// Writes `text` to `path` in `repo`, creating folders.
    pub fn write(&self, repo: &str, path: &str, text: &str) {
        let p = self.dir(repo).join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }

    /// Rewrites `path` in `repo` with `f`.
    pub fn edit(&self, repo: &str, path: &str, f: impl FnOnce(String) -> String) {
        let p = self.dir(repo).join(path);
        let text = std::fs::read_to_string(&p).expect("read");
        std::fs::write(&p, f(text)).expect("write");
    }

    /// Replaces the first `from` in `path` of `repo` with `to`; `from` must be there.
    pub fn replace(&self, repo: &str, path: &str, from: &str, to: &str) {
        self.edit(repo, path, |text| {
            assert!(text.contains(from), "{path} has no {from:?}");
            text.replacen(from, to, 1)
        });
    }

    /// Rewrites `proton.toml` with `f`.
    pub fn edit_config(&self, f: impl FnOnce(String) -> String) {
        self.edit(".", "proton.toml", f);
    }

    /// Runs git in `repo`; returns stdout.
    pub fn git(&self, repo: &str, args: &[&str]) -> String {
        git(&self.dir(repo), args)
    }

    /// Commits everything in `repo` (`git add -A`, then a commit that must not be empty).
    pub fn commit(&self, repo: &str, message: &str) {
        self.git(repo, &["add", "-A"]);
        self.git(repo, &["commit", "-q", "-m", message]);
    }

    /// Tags `tag` (annotated, with `message`) at the head of the template repo.
    pub fn tag(&self, tag: &str, message: &str) {
        self.git("platform-templates", &["tag", "-a", tag, "-m", message]);
    }

    /// The endpoint of this world's `moto_server` (running, or to be started on
    /// [`World::aws_port`]).
    pub fn aws_url(&self) -> &str {
        &self.aws_url
    }

    /// The port of [`World::aws_url`].
    pub fn aws_port(&self) -> u16 {
        self.aws_url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("the world has an AWS endpoint")
    }

    /// Sends protond's AWS calls to `url` (a proxy) instead of the `moto_server`.
    pub fn redirect_aws(&self, url: &str) {
        let moto = self.aws_url.clone();
        self.edit_config(|t| t.replace(&moto, url));
    }

    /// The state store's `SQLite` file, for the tests of what only `SQLite` has (they call
    /// [`super::sqlite_only`] first).
    pub fn state_db(&self) -> PathBuf {
        assert!(
            self.database.is_none(),
            "state_db() is the SQLite file: call common::sqlite_only() first"
        );
        self.state_db.clone()
    }

    /// The `state` URL of the config (as written, relative to the root when a `SQLite` file).
    pub fn state_url(&self) -> String {
        match &self.database {
            Some(db) => db.url.clone(),
            None => format!("sqlite://{}", self.state_db.display()),
        }
    }

    /// Opens the state store.
    pub async fn store(&self) -> Store {
        Store::open(&self.state_url()).await.expect("store")
    }

    /// The stacks on the world's `moto_server` that are not deleted.
    pub async fn stacks(&self) -> Vec<LiveStack> {
        live_stacks(&self.aws_url).await
    }
}

impl WorldBuilder {
    /// Copies the three example repos as git repos, one commit each.
    pub fn examples(mut self) -> Self {
        self.examples = true;
        self
    }

    /// Adds a git repo `name` holding a `README.md` with `readme`, one commit.
    pub fn repo(mut self, name: &str, readme: &str) -> Self {
        self.repos.push((name.into(), readme.into()));
        self
    }

    /// Runs `f` on the world's folder once the repos exist, before the tags: changes the
    /// template repo's releases should include go here.
    pub fn setup(mut self, f: impl FnOnce(&Path) + 'static) -> Self {
        self.setup.push(Box::new(f));
        self
    }

    /// Tags `<name>/v1.0` (annotated, "first release") in the template repo for each name.
    pub fn tagged(mut self, names: &[&str]) -> Self {
        for name in names {
            self.tags
                .push((format!("{name}/v1.0"), Some("first release".into())));
        }
        self
    }

    /// Tags `tag` in the template repo: annotated with `message`, or lightweight.
    pub fn tag(mut self, tag: &str, message: Option<&str>) -> Self {
        self.tags.push((tag.into(), message.map(str::to_string)));
        self
    }

    /// Starts a `moto_server` of the world's own; the config's `[aws]` section names it.
    pub fn moto(mut self) -> Self {
        self.aws = Aws::Moto;
        self
    }

    /// Names a free port of 127.0.0.1 in the config's `[aws]` section, where nothing listens
    /// until the test starts `moto_server` there.
    pub fn aws_down(mut self) -> Self {
        self.aws = Aws::Down;
        self
    }

    /// Changes the config; may be called more than once.
    pub fn config(mut self, f: impl FnOnce(&mut Toml) + 'static) -> Self {
        self.config.push(Box::new(f));
        self
    }

    /// Sets `key` to `value` in the environment of every `protond` the world runs.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Makes the world: repos, tags, `moto_server`, `proton.toml`.
    pub fn build(self) -> World {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_path_buf();
        if self.examples {
            for name in EXAMPLE_REPOS {
                copy_tree(&examples().join(name), &root.join(name));
                init_repo(&root.join(name));
            }
        }
        for (name, readme) in &self.repos {
            let dir = root.join(name);
            std::fs::create_dir_all(&dir).expect("mkdir");
            std::fs::write(dir.join("README.md"), readme).expect("write");
            init_repo(&dir);
        }
        for f in self.setup {
            f(&root);
        }
        let templates = root.join("platform-templates");
        for (tag, message) in &self.tags {
            match message {
                Some(m) => git(&templates, &["tag", "-a", tag, "-m", m]),
                None => git(&templates, &["tag", tag]),
            };
        }
        let (moto, aws_url) = match self.aws {
            Aws::None => (None, String::new()),
            Aws::Moto => {
                let moto = Moto::start().expect("moto_server starts (scripts/test installs it)");
                let url = moto.url.clone();
                (Some(moto), url)
            }
            Aws::Down => (None, format!("http://127.0.0.1:{}", super::free_port())),
        };
        let mut toml = Toml::new(&root, (!aws_url.is_empty()).then(|| aws_url.clone()));
        let database = super::Database::for_suites();
        if let Some(db) = &database {
            toml.state.clone_from(&db.url);
        }
        for f in self.config {
            f(&mut toml);
        }
        std::fs::write(root.join("proton.toml"), toml.render()).expect("config");
        let state_db = toml.state_db();
        World {
            root,
            aws_url,
            _moto: moto,
            env: self.env,
            state_db,
            database,
            _tmp: tmp,
        }
    }
}

/// `git init -b main` in `dir`, then one commit of everything there.
fn init_repo(dir: &Path) {
    git(dir, &["init", "-q", "-b", "main"]);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "initial"]);
}

/// A world's `proton.toml`, written by [`WorldBuilder::build`] in this order: `state`,
/// `data_dir`, the extra top-level keys, `[aws]`, the extra sections, the template repo, the
/// spec repos. Tests edit the written text with plain string replacements, so the layout is
/// one key a line, each table's keys right under its header.
pub struct Toml {
    /// The world's folder, which relative paths in the config are relative to.
    root: PathBuf,
    /// The `state` URL (`sqlite://PATH`).
    state: String,
    /// The `data_dir` (git mirrors, caches).
    data_dir: String,
    /// Extra top-level key lines.
    top: Vec<String>,
    /// `[aws]`'s endpoint and `max_attempts`, if the world has AWS.
    aws: Option<(String, u32)>,
    /// Extra sections, each its header and key lines.
    sections: Vec<String>,
    /// The `[[template_repos]]` tables.
    template_repos: Vec<Repo>,
    /// The `[[spec_repos]]` tables.
    spec_repos: Vec<Repo>,
}

/// One `[[template_repos]]` or `[[spec_repos]]` table.
struct Repo {
    /// The repo's name, also its folder under the root.
    name: String,
    /// Where protond fetches it from.
    url: String,
    /// Lines after `name` and `url`.
    lines: Vec<String>,
}

impl Repo {
    fn new(name: &str, lines: &[&str]) -> Self {
        Self {
            name: name.into(),
            url: name.into(),
            lines: lines.iter().map(|l| (*l).to_string()).collect(),
        }
    }
}

impl Toml {
    /// The default: the state store and git mirrors under the root (relative paths), AWS at
    /// `aws` with one attempt a call, and the example repos by relative path, `platform-envs`
    /// the platform repo.
    fn new(root: &Path, aws: Option<String>) -> Self {
        Self {
            root: root.to_path_buf(),
            state: "sqlite://state/state.db".into(),
            data_dir: "data".into(),
            top: Vec::new(),
            aws: aws.map(|url| (url, 1)),
            sections: Vec::new(),
            template_repos: vec![Repo::new("platform-templates", &[])],
            spec_repos: vec![
                Repo::new("platform-envs", &["platform = true"]),
                Repo::new("payments", &[]),
            ],
        }
    }

    /// The world's folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Puts the state store and the git mirrors under `<root>/data` and names every repo
    /// by its absolute path.
    pub fn absolute_paths(&mut self) -> &mut Self {
        let data = self.root.join("data");
        self.data_dir = data.display().to_string();
        if self.state.starts_with("sqlite://") {
            self.state = format!("sqlite://{}/state.db", data.display());
        }
        let root = self.root.display().to_string();
        for r in self.template_repos.iter_mut().chain(&mut self.spec_repos) {
            r.url = format!("{root}/{}", r.name);
        }
        self
    }

    /// Adds a top-level key line, e.g. `poll_interval = "1s"`.
    pub fn top(&mut self, line: &str) -> &mut Self {
        self.top.push(line.into());
        self
    }

    /// Adds a section (its header and keys), e.g. `[daemon]\nwatch = false`.
    pub fn section(&mut self, text: &str) -> &mut Self {
        self.sections.push(text.trim_end().into());
        self
    }

    /// Sets `[aws] max_attempts`.
    pub fn max_attempts(&mut self, n: u32) -> &mut Self {
        let aws = self.aws.as_mut().expect("the world has AWS");
        aws.1 = n;
        self
    }

    /// Adds a spec repo `name` at the relative path `name`, with extra `lines`.
    pub fn spec_repo(&mut self, name: &str, lines: &[&str]) -> &mut Self {
        self.spec_repos.push(Repo::new(name, lines));
        self
    }

    /// Sets the URL of repo `name`.
    pub fn repo_url(&mut self, name: &str, url: &str) -> &mut Self {
        self.repo_mut(name).url = url.into();
        self
    }

    /// Adds `line` to the table of repo `name`, e.g. a `forge = {...}`.
    pub fn repo_line(&mut self, name: &str, line: &str) -> &mut Self {
        self.repo_mut(name).lines.push(line.into());
        self
    }

    fn repo_mut(&mut self, name: &str) -> &mut Repo {
        self.template_repos
            .iter_mut()
            .chain(&mut self.spec_repos)
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no repo {name} in the config"))
    }

    /// The `SQLite` file `state` names, relative to the root if relative (on PostgreSQL,
    /// where the default file would be).
    fn state_db(&self) -> PathBuf {
        let path = self
            .state
            .strip_prefix("sqlite://")
            .unwrap_or("state/state.db");
        self.root.join(path)
    }

    /// The config's text, one key a line.
    fn render(&self) -> String {
        let mut lines = vec![
            format!("state = \"{}\"", self.state),
            format!("data_dir = \"{}\"", self.data_dir),
        ];
        lines.extend(self.top.iter().cloned());
        if let Some((url, attempts)) = &self.aws {
            lines.extend([
                "[aws]".to_string(),
                "region = \"us-east-1\"".to_string(),
                format!("endpoint_url = \"{url}\""),
                "poll_interval = \"200ms\"".to_string(),
                format!("max_attempts = {attempts}"),
                "change_sets = false".to_string(),
            ]);
        }
        lines.extend(self.sections.iter().cloned());
        for (table, repos) in [
            ("template_repos", &self.template_repos),
            ("spec_repos", &self.spec_repos),
        ] {
            for r in repos {
                lines.extend([
                    format!("[[{table}]]"),
                    format!("name = \"{}\"", r.name),
                    format!("url = \"{}\"", r.url),
                ]);
                lines.extend(r.lines.iter().cloned());
            }
        }
        lines.iter().map(|l| format!("{l}\n")).collect()
    }
}

/// The suites edit the written config with string replacements (`"url = \"payments\""`,
/// `"poll_interval = \"1s\"\n[aws]"`, `"data_dir = \"data\"\n"`): the layout they rely on.
#[test]
fn the_config_has_the_layout_the_suites_edit() {
    let w = World::builder()
        .aws_down()
        .config(|c| {
            c.top("poll_interval = \"1s\"")
                .max_attempts(2)
                .section("[daemon]\nshutdown_grace = \"10s\"\n")
                .repo_line("payments", "allow_empty = true")
                .spec_repo("intruder", &[]);
        })
        .build();
    let text = std::fs::read_to_string(w.config_path()).expect("config");
    assert_eq!(
        text,
        format!(
            "state = \"{state}\"\ndata_dir = \"data\"\npoll_interval = \"1s\"\n\
             [aws]\nregion = \"us-east-1\"\nendpoint_url = \"{url}\"\npoll_interval = \"200ms\"\nmax_attempts = 2\nchange_sets = false\n\
             [daemon]\nshutdown_grace = \"10s\"\n\
             [[template_repos]]\nname = \"platform-templates\"\nurl = \"platform-templates\"\n\
             [[spec_repos]]\nname = \"platform-envs\"\nurl = \"platform-envs\"\nplatform = true\n\
             [[spec_repos]]\nname = \"payments\"\nurl = \"payments\"\nallow_empty = true\n\
             [[spec_repos]]\nname = \"intruder\"\nurl = \"intruder\"\n",
            url = w.aws_url(),
            state = if super::on_postgres() {
                w.state_url()
            } else {
                "sqlite://state/state.db".into()
            },
        )
    );
    if super::sqlite_only("the state file's path") {
        assert_eq!(w.state_db(), w.root.join("state/state.db"));
    }
    assert_eq!(
        w.aws_url(),
        format!("http://127.0.0.1:{}", w.aws_port()).as_str()
    );
}
