//! An in-memory forge (GitHub, GitLab or Gitea API) on 127.0.0.1 that checks every request:
//! the token header, the API version header, the path, the query, the JSON body's fields, and
//! that a pull request's head branch really exists in the git repo. Anything else is recorded
//! as a violation and answered with an error; tests assert there were none.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Which forge's API the fake speaks (paths, headers, JSON shapes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    GitHub,
    GitLab,
    Gitea,
}

/// A pull (or merge) request the fake holds, as protond opened and updated it.
#[derive(Debug, Clone)]
pub struct Pr {
    pub number: i64,
    pub head: String,
    pub base: String,
    pub title: String,
    pub body: String,
    /// open | closed | merged
    pub state: String,
    pub comments: Vec<String>,
    /// Label names (Gitea's ids mapped back through [`GITEA_LABELS`]).
    pub labels: Vec<String>,
    pub reviewers: Vec<String>,
    pub assignees: Vec<String>,
    /// GitHub's draft flag.
    pub draft: bool,
    /// Auto-merge enabled (GitHub GraphQL, Gitea `merge_when_checks_succeed`).
    pub auto_merge: bool,
}

/// The labels the fake Gitea repository has, as (id, name).
pub const GITEA_LABELS: [(i64, &str); 2] = [(1, "dependencies"), (2, "upgrade")];

fn str_list(v: &Value) -> Option<Vec<String>> {
    v.as_array()?
        .iter()
        .map(|x| x.as_str().filter(|s| !s.is_empty()).map(str::to_string))
        .collect()
}

/// What the fake has seen, shared between its server task and the test.
#[derive(Debug, Default)]
pub struct Inner {
    /// Pull requests in the order they were opened (number 1 first).
    pub prs: Vec<Pr>,
    /// `METHOD path?query`, in order.
    pub requests: Vec<String>,
    /// Requests that broke the API's rules, each with what was wrong.
    pub violations: Vec<String>,
    /// The token accepted now ([`FakeForge::set_token`] rotates it).
    pub token: String,
    /// A GitHub App whose installation tokens are accepted too ([`FakeForge::enable_app`]).
    pub app: Option<super::github_app::App>,
    /// Issues opened through the API (the dashboard's).
    pub issues: Vec<super::issues::Issue>,
}

/// A fake forge serving on 127.0.0.1 until the test's runtime ends.
#[derive(Clone)]
pub struct FakeForge {
    /// The API URL to put in the config (with its path prefix).
    pub url: String,
    pub inner: Arc<Mutex<Inner>>,
}

struct Cfg {
    kind: Kind,
    /// Path prefix of the API, e.g. `/api/v3`.
    prefix: String,
    repo: String,
    git_dir: PathBuf,
    inner: Arc<Mutex<Inner>>,
}

impl FakeForge {
    /// Serves on a free port of 127.0.0.1. `prefix` is the API path (e.g. `/api/v3` for
    /// GitHub Enterprise), `repo` the owner/name it knows, `git_dir` the repo branches live in.
    pub async fn start(
        kind: Kind,
        prefix: &str,
        token: &str,
        repo: &str,
        git_dir: PathBuf,
    ) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            token: token.into(),
            ..Inner::default()
        }));
        let cfg = Arc::new(Cfg {
            kind,
            prefix: prefix.into(),
            repo: repo.into(),
            git_dir,
            inner: inner.clone(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let cfg = cfg.clone();
                async move { handle(&cfg, method, uri, headers, body) }
            },
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}{prefix}"),
            inner,
        }
    }

    /// The pull requests so far.
    pub fn prs(&self) -> Vec<Pr> {
        self.inner.lock().expect("lock").prs.clone()
    }

    /// Every request so far, as `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.inner.lock().expect("lock").requests.clone()
    }

    /// The requests that broke the API's rules; tests assert there are none.
    pub fn violations(&self) -> Vec<String> {
        self.inner.lock().expect("lock").violations.clone()
    }

    /// Accepts only `token` from now on, as a forge does once a token is rotated.
    pub fn set_token(&self, token: &str) {
        self.inner.lock().expect("lock").token = token.into();
    }

    /// Installs `app` on the repository: its JWT mints installation tokens, accepted until
    /// they expire.
    pub fn enable_app(&self, app: super::github_app::App) {
        self.inner.lock().expect("lock").app = Some(app);
    }

    /// The App as it stands (tokens issued, lookups, uses).
    pub fn app(&self) -> super::github_app::App {
        self.inner
            .lock()
            .expect("lock")
            .app
            .clone()
            .expect("app enabled")
    }

    /// The issues so far.
    pub fn issues(&self) -> Vec<super::issues::Issue> {
        self.inner.lock().expect("lock").issues.clone()
    }

    /// Opens a pull request from `head` to `base` as a person would (not through the API),
    /// e.g. the one a preview comments on; its number.
    pub fn open_pr(&self, head: &str, base: &str, title: &str) -> i64 {
        let mut g = self.inner.lock().expect("lock");
        let number = i64::try_from(g.prs.len()).expect("few pull requests") + 1;
        g.prs.push(Pr {
            number,
            head: head.into(),
            base: base.into(),
            title: title.into(),
            body: String::new(),
            state: "open".into(),
            comments: Vec::new(),
            labels: Vec::new(),
            reviewers: Vec::new(),
            assignees: Vec::new(),
            draft: false,
            auto_merge: false,
        });
        number
    }

    /// Marks pull request `number` merged or closed, as a person would.
    pub fn set_state(&self, number: i64, state: &str) {
        let mut g = self.inner.lock().expect("lock");
        let pr = g
            .prs
            .iter_mut()
            .find(|p| p.number == number)
            .expect("pull request exists");
        pr.state = state.into();
    }
}

fn violation(cfg: &Cfg, what: String) -> Response {
    cfg.inner
        .lock()
        .expect("lock")
        .violations
        .push(what.clone());
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        axum::Json(json!({ "message": what })),
    )
        .into_response()
}

fn branch_exists(cfg: &Cfg, branch: &str) -> bool {
    std::process::Command::new("git")
        .arg("--git-dir")
        .arg(cfg.git_dir.join(".git"))
        .args([
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("refs/heads/{branch}"),
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn render(cfg: &Cfg, pr: &Pr) -> Value {
    let web = format!("https://forge.invalid/{}/pull/{}", cfg.repo, pr.number);
    match cfg.kind {
        Kind::GitLab => json!({
            "iid": pr.number,
            "web_url": web,
            "state": match pr.state.as_str() { "open" => "opened", s => s },
            "source_branch": pr.head,
            "target_branch": pr.base,
            "title": pr.title,
            "description": pr.body,
        }),
        _ => json!({
            "number": pr.number,
            "html_url": web,
            "state": if pr.state == "open" { "open" } else { "closed" },
            "merged": pr.state == "merged",
            "node_id": format!("PR_node_{}", pr.number),
            "head": { "ref": pr.head },
            "base": { "ref": pr.base },
            "title": pr.title,
            "body": pr.body,
        }),
    }
}

fn query(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.replace("%3A", ":").replace("%2F", "/"))
        })
        .collect()
}

fn q<'a>(qs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    qs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn string_field(body: &Value, key: &str) -> Option<String> {
    body.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn handle(cfg: &Cfg, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let line = format!(
        "{method} {path}{}",
        uri.query().map(|q| format!("?{q}")).unwrap_or_default()
    );
    cfg.inner.lock().expect("lock").requests.push(line.clone());
    // Authentication and headers.
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let token = cfg.inner.lock().expect("lock").token.clone();
    let json_or_null = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Some(r) = super::github_app::handle(
        &cfg.inner,
        &cfg.prefix,
        &cfg.repo,
        &method,
        &path,
        header("authorization"),
        &json_or_null,
    ) {
        return r;
    }
    let app_token = super::github_app::token_valid(&cfg.inner, header("authorization"));
    if app_token == Some(false) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "message": "Bad credentials" })),
        )
            .into_response();
    }
    let auth_ok = match cfg.kind {
        Kind::GitHub => {
            header("authorization") == format!("Bearer {token}") || app_token == Some(true)
        }
        Kind::GitLab => header("private-token") == token,
        Kind::Gitea => header("authorization") == format!("token {token}"),
    };
    if !auth_ok {
        return violation(cfg, format!("{line}: missing or wrong token header"));
    }
    if cfg.kind == Kind::GitHub
        && (header("accept") != "application/vnd.github+json"
            || header("x-github-api-version").is_empty())
    {
        return violation(
            cfg,
            format!("{line}: GitHub media type or API version header missing"),
        );
    }
    if header("user-agent").is_empty() {
        return violation(cfg, format!("{line}: no User-Agent"));
    }
    let json_body: Value = if body.is_empty() {
        Value::Null
    } else {
        if !header("content-type").starts_with("application/json") {
            return violation(cfg, format!("{line}: body is not declared as JSON"));
        }
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return violation(cfg, format!("{line}: body is not JSON: {e}")),
        }
    };
    let base = match cfg.kind {
        Kind::GitLab => format!(
            "{}/projects/{}/merge_requests",
            cfg.prefix,
            cfg.repo.replace('/', "%2F")
        ),
        _ => format!("{}/repos/{}/pulls", cfg.prefix, cfg.repo),
    };
    let comments = match cfg.kind {
        Kind::GitLab => None,
        _ => Some(format!("{}/repos/{}/issues/", cfg.prefix, cfg.repo)),
    };
    let qs = query(&uri);
    let mut g = cfg.inner.lock().expect("lock");
    if let Some(r) = super::issues::handle(
        &mut g,
        (cfg.kind, &cfg.prefix, &cfg.repo),
        (&method, &path, &line),
        &qs,
        &json_body,
    ) {
        return r;
    }

    // List.
    if method == Method::GET && path == base {
        let wanted_state = match cfg.kind {
            Kind::GitLab => q(&qs, "state") == Some("opened"),
            _ => q(&qs, "state") == Some("open"),
        };
        if !wanted_state {
            drop(g);
            return violation(cfg, format!("{line}: list without the open-state filter"));
        }
        let head = match cfg.kind {
            Kind::GitHub => match q(&qs, "head").and_then(|h| h.split_once(':')) {
                Some((owner, b)) if cfg.repo.starts_with(&format!("{owner}/")) => {
                    Some(b.to_string())
                }
                _ => {
                    drop(g);
                    return violation(cfg, format!("{line}: head filter must be owner:branch"));
                }
            },
            Kind::GitLab => q(&qs, "source_branch").map(str::to_string),
            Kind::Gitea => None,
        };
        let list: Vec<Value> = g
            .prs
            .iter()
            .filter(|p| p.state == "open" && head.as_ref().is_none_or(|h| &p.head == h))
            .map(|p| render(cfg, p))
            .collect();
        return axum::Json(Value::Array(list)).into_response();
    }
    // Open.
    if method == Method::POST && path == base {
        let (head_key, base_key, body_key) = match cfg.kind {
            Kind::GitLab => ("source_branch", "target_branch", "description"),
            _ => ("head", "base", "body"),
        };
        let (Some(head), Some(target), Some(title), Some(text)) = (
            string_field(&json_body, head_key),
            string_field(&json_body, base_key),
            string_field(&json_body, "title"),
            string_field(&json_body, body_key),
        ) else {
            drop(g);
            return violation(
                cfg,
                format!("{line}: missing {head_key}, {base_key}, title or {body_key}"),
            );
        };
        if target != "main" {
            drop(g);
            return violation(cfg, format!("{line}: base branch {target} does not exist"));
        }
        if !branch_exists(cfg, &head) {
            drop(g);
            return violation(cfg, format!("{line}: head branch {head} was not pushed"));
        }
        if g.prs.iter().any(|p| p.head == head && p.state == "open") {
            drop(g);
            return violation(
                cfg,
                format!("{line}: a pull request from {head} is already open"),
            );
        }
        let draft = match json_body.get("draft") {
            None => false,
            Some(Value::Bool(b)) if cfg.kind == Kind::GitHub => *b,
            Some(other) => {
                drop(g);
                return violation(cfg, format!("{line}: bad draft field {other}"));
            }
        };
        let labels = match (cfg.kind, json_body.get("labels")) {
            (_, None) => Vec::new(),
            (Kind::Gitea, Some(ids)) => {
                let names: Option<Vec<String>> = ids.as_array().and_then(|a| {
                    a.iter()
                        .map(|id| {
                            GITEA_LABELS
                                .iter()
                                .find(|(i, _)| Some(*i) == id.as_i64())
                                .map(|(_, n)| (*n).to_string())
                        })
                        .collect()
                });
                let Some(names) = names else {
                    drop(g);
                    return violation(cfg, format!("{line}: labels must be known label ids"));
                };
                names
            }
            (_, Some(other)) => {
                drop(g);
                return violation(cfg, format!("{line}: unexpected labels {other}"));
            }
        };
        let assignees = match (cfg.kind, json_body.get("assignees")) {
            (_, None) => Vec::new(),
            (Kind::Gitea, Some(a)) => {
                let Some(a) = str_list(a) else {
                    drop(g);
                    return violation(cfg, format!("{line}: assignees must be user names"));
                };
                a
            }
            (_, Some(other)) => {
                drop(g);
                return violation(cfg, format!("{line}: unexpected assignees {other}"));
            }
        };
        let pr = Pr {
            number: i64::try_from(g.prs.len()).unwrap_or(0) + 1,
            head,
            base: target,
            title,
            body: text,
            state: "open".into(),
            comments: Vec::new(),
            labels,
            reviewers: Vec::new(),
            assignees,
            draft,
            auto_merge: false,
        };
        let v = render(cfg, &pr);
        g.prs.push(pr);
        return (StatusCode::CREATED, axum::Json(v)).into_response();
    }
    if let Some(r) = options(cfg, &mut g, &method, &path, &line, &json_body) {
        return r;
    }
    // Comments.
    let note_path = |n: i64| match &comments {
        Some(c) => format!("{c}{n}/comments"),
        None => format!("{base}/{n}/notes"),
    };
    if method == Method::POST {
        let found = g.prs.iter().position(|p| note_path(p.number) == path);
        if let Some(i) = found {
            let Some(text) = string_field(&json_body, "body") else {
                drop(g);
                return violation(cfg, format!("{line}: comment without body"));
            };
            g.prs[i].comments.push(text);
            return (StatusCode::CREATED, axum::Json(json!({"id": 1}))).into_response();
        }
    }
    // One pull request.
    let number = path
        .strip_prefix(&format!("{base}/"))
        .and_then(|n| n.parse::<i64>().ok());
    let Some(number) = number else {
        drop(g);
        return violation(cfg, format!("{line}: unknown endpoint"));
    };
    let Some(i) = g.prs.iter().position(|p| p.number == number) else {
        drop(g);
        return violation(cfg, format!("{line}: no pull request {number}"));
    };
    let update_method = match cfg.kind {
        Kind::GitLab => Method::PUT,
        _ => Method::PATCH,
    };
    if method == Method::GET {
        return axum::Json(render(cfg, &g.prs[i])).into_response();
    }
    if method == update_method {
        let Some(obj) = json_body.as_object() else {
            drop(g);
            return violation(cfg, format!("{line}: update without a JSON object"));
        };
        let body_key = if cfg.kind == Kind::GitLab {
            "description"
        } else {
            "body"
        };
        let allowed = ["title", body_key, "state", "state_event"];
        if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
            drop(g);
            return violation(cfg, format!("{line}: unexpected field {k}"));
        }
        if g.prs[i].state != "open" {
            drop(g);
            return violation(
                cfg,
                format!("{line}: updating a pull request that is not open"),
            );
        }
        if let Some(t) = string_field(&json_body, "title") {
            g.prs[i].title = t;
        }
        if let Some(b) = string_field(&json_body, body_key) {
            g.prs[i].body = b;
        }
        let close = match cfg.kind {
            Kind::GitLab => obj.get("state_event").and_then(Value::as_str) == Some("close"),
            _ => obj.get("state").and_then(Value::as_str) == Some("closed"),
        };
        if close {
            g.prs[i].state = "closed".into();
        }
        return axum::Json(render(cfg, &g.prs[i])).into_response();
    }
    drop(g);
    violation(cfg, format!("{line}: unexpected method"))
}

/// Pull-request options and look-ups: GitHub labels, assignees, requested reviewers and
/// GraphQL auto-merge; Gitea's labels, lookup by base and head, reviewers and auto-merge.
/// `None` when the request is none of these.
fn options(
    cfg: &Cfg,
    g: &mut std::sync::MutexGuard<'_, Inner>,
    method: &Method,
    path: &str,
    line: &str,
    body: &Value,
) -> Option<Response> {
    let fail = |g: &mut std::sync::MutexGuard<'_, Inner>, what: String| {
        g.violations.push(what.clone());
        Some(
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(json!({ "message": what })),
            )
                .into_response(),
        )
    };
    if cfg.kind == Kind::GitLab {
        return None;
    }
    if cfg.kind == Kind::GitHub
        && *method == Method::POST
        && path == format!("{}/graphql", cfg.prefix)
    {
        let query = body["query"].as_str().unwrap_or("");
        let id = body["variables"]["id"].as_str().unwrap_or("");
        if !query.contains("enablePullRequestAutoMerge") || !query.contains("$id") {
            return fail(
                g,
                format!("{line}: not an enablePullRequestAutoMerge mutation"),
            );
        }
        let Some(pr) = g
            .prs
            .iter_mut()
            .find(|p| format!("PR_node_{}", p.number) == id)
        else {
            return fail(g, format!("{line}: unknown node id {id:?}"));
        };
        pr.auto_merge = true;
        return Some(
            axum::Json(json!({"data": {"enablePullRequestAutoMerge": {"clientMutationId": null}}}))
                .into_response(),
        );
    }
    let repo = format!("{}/repos/{}", cfg.prefix, cfg.repo);
    let rest = path.strip_prefix(&repo)?;
    if cfg.kind == Kind::Gitea && *method == Method::GET && rest == "/labels" {
        let labels: Vec<Value> = GITEA_LABELS
            .iter()
            .map(|(id, n)| json!({"id": id, "name": n}))
            .collect();
        return Some(axum::Json(Value::Array(labels)).into_response());
    }
    if cfg.kind == Kind::Gitea && *method == Method::GET {
        // GET /pulls/{base}/{head}: the newest pull request from head into base.
        let (base, head) = rest.strip_prefix("/pulls/")?.split_once('/')?;
        if base.parse::<i64>().is_ok() {
            return None;
        }
        return Some(
            match g
                .prs
                .iter()
                .rev()
                .find(|p| p.base == base && p.head == head)
            {
                Some(p) => axum::Json(render(cfg, p)).into_response(),
                None => (
                    StatusCode::NOT_FOUND,
                    axum::Json(json!({"message": "not found"})),
                )
                    .into_response(),
            },
        );
    }
    if *method != Method::POST {
        return None;
    }
    let (kind, number, what) = if let Some(r) = rest.strip_prefix("/issues/") {
        let (n, what) = r.split_once('/')?;
        ("issues", n.parse::<i64>().ok()?, what)
    } else {
        let (n, what) = rest.strip_prefix("/pulls/")?.split_once('/')?;
        ("pulls", n.parse::<i64>().ok()?, what)
    };
    let Some(i) = g.prs.iter().position(|p| p.number == number) else {
        return fail(g, format!("{line}: no pull request {number}"));
    };
    match (cfg.kind, kind, what) {
        (Kind::GitHub, "issues", "labels") => match str_list(&body["labels"]) {
            Some(l) => g.prs[i].labels.extend(l),
            None => return fail(g, format!("{line}: labels must be names")),
        },
        (Kind::GitHub, "issues", "assignees") => match str_list(&body["assignees"]) {
            Some(l) => g.prs[i].assignees.extend(l),
            None => return fail(g, format!("{line}: assignees must be user names")),
        },
        (_, "pulls", "requested_reviewers") => match str_list(&body["reviewers"]) {
            Some(l) => g.prs[i].reviewers.extend(l),
            None => return fail(g, format!("{line}: reviewers must be user names")),
        },
        (Kind::Gitea, "pulls", "merge") => {
            if body["Do"] != "merge" || body["merge_when_checks_succeed"] != true {
                return fail(
                    g,
                    format!("{line}: not a merge-when-checks-succeed request"),
                );
            }
            g.prs[i].auto_merge = true;
        }
        _ => return None,
    }
    Some((StatusCode::CREATED, axum::Json(json!({"number": number}))).into_response())
}
