//! The HTTP surface of `protond run`: health, readiness, metrics, a read-only JSON API, a
//! server-rendered status page, webhooks that trigger a fetch, and the few mutating
//! endpoints, which require a bearer token.
//!
//! | Path | Method | Auth |
//! |---|---|---|
//! | `/` | GET | none: the status page |
//! | `/healthz` | GET | none |
//! | `/readyz` | GET | none: serving (the store is reachable); stale repos and repos not fetched or read are in the detail, never unready; on PostgreSQL also `role` (`leader`/`follower`), `replica`, `leader`, `epoch` |
//! | `/metrics` | GET | none: Prometheus text format |
//! | `/api/v1/templates`, `/environments`, `/services`, `/deployments`, `/rollouts`, `/proposals` | GET | none; paged (`?limit=&after=`, [`paging`]) |
//! | `/api/v1/resources/{id}` | GET | none: one resource with outputs and last deployments ([`resource`]) |
//! | `/api/v1/rollouts/{template}/v{M}.{m}/halt` and `/resume` (also `/quarantine`, `/release`) | POST | bearer |
//! | `/api/v1/release-events` | GET | none; paged |
//! | `/api/v1/report` | GET | none: the fleet report, versions per template and how far behind ([`report`]) |
//! | `/api/v1/reconcile` | POST | bearer: fetch and reconcile now |
//! | `/api/v1/resources/{id}/approve` | POST | bearer: `{"version": "1.1"}` approves that version for the change-set gate ([`crate::gate`]) |
//! | `/webhooks/github` | POST | `X-Hub-Signature-256` HMAC of the body |
//! | `/webhooks/gitlab` | POST | `X-Gitlab-Token` |
//! | `/webhooks/gitea` | POST | `X-Gitea-Signature` or `X-Forgejo-Signature` (HMAC-SHA256 of the body, hex) |
//!
//! Secrets (the API token, webhook secrets) are read from the environment once at start and
//! compared in constant time (as HMAC-SHA256 tags); they are never logged.
//!
//! Limits (`[server]` in the config), so that no anonymous client can stop the daemon from
//! serving: connections are capped and timed ([`conn`]); the `Host` is checked and bodies are
//! bounded in size, in bytes held across connections and in time ([`limits`]); credentials
//! are checked before a body is read wherever they are in the headers; a webhook delivery
//! seen before is answered without acting on it again ([`deliveries`]).
//!
//! Every error answer is JSON, `{"error", "status"}`, unknown paths and wrong methods
//! included ([`errors`]).

// Handlers return ready `Response`s as their error: the axum idiom, and never on a hot path.
#![allow(clippy::result_large_err)]

mod conn;
mod deliveries;
mod errors;
mod holds;
mod limits;
mod page;
mod paging;
mod refusals;
mod report;
mod resource;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use hmac::{KeyInit, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::daemon::Ctx;
use crate::model::{ResourceId, ResourceKind, Version};
use crate::telemetry::events::{
    IgnoredBecause, RejectedBecause, SelfManagedOutcomeReported, WebhookAccepted, WebhookDuplicate,
    WebhookIgnored, WebhookRejected, WebhookSource,
};

type HmacSha256 = hmac::Hmac<Sha256>;

/// Secrets the server checks requests against.
#[derive(Clone, Default)]
pub struct Secrets {
    /// Bearer token of the mutating endpoints.
    pub api_token: Option<String>,
    /// GitHub webhook secret.
    pub github: Option<String>,
    /// GitLab webhook token.
    pub gitlab: Option<String>,
    /// Gitea/Forgejo webhook secret.
    pub gitea: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("api_token", &self.api_token.as_ref().map(|_| "***"))
            .field("github", &self.github.as_ref().map(|_| "***"))
            .field("gitlab", &self.gitlab.as_ref().map(|_| "***"))
            .field("gitea", &self.gitea.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Secrets {
    /// Reads the secrets from the variables the config names.
    #[must_use]
    pub fn from_env(config: &crate::config::Server) -> Self {
        let read = |var: &str| std::env::var(var).ok().filter(|v| !v.trim().is_empty());
        Self {
            api_token: read(&config.token_env),
            github: read(&config.github_secret_env),
            gitlab: read(&config.gitlab_token_env),
            gitea: read(&config.gitea_secret_env),
        }
    }
}

#[derive(Clone)]
struct App {
    ctx: Arc<Ctx>,
    secrets: Arc<Secrets>,
    deliveries: Arc<deliveries::Deliveries>,
    /// `server.max_body_bytes`, also enforced here for a router served without the limits.
    max_body: usize,
}

/// The router, for serving or testing.
pub fn router(ctx: Arc<Ctx>, secrets: Secrets) -> Router {
    let server = &ctx.config.server;
    let max_body = usize::try_from(server.max_body_bytes).unwrap_or(usize::MAX);
    let deliveries = Arc::new(deliveries::Deliveries::new(
        server.webhook_dedupe_window,
        server.webhook_dedupe_entries,
    ));
    let app = App {
        ctx,
        secrets: Arc::new(secrets),
        deliveries,
        max_body,
    };
    let routes = Router::new()
        .route("/", get(status_page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/templates", get(templates))
        .route("/api/v1/environments", get(environments))
        .route("/api/v1/services", get(services))
        .route("/api/v1/deployments", get(deployments))
        .route("/api/v1/rollouts", get(rollouts))
        .route("/api/v1/proposals", get(proposals))
        .route("/api/v1/release-events", get(release_events))
        .route("/api/v1/report", get(report::report))
        .route(
            "/api/v1/rollouts/{template}/{version}/{action}",
            post(rollout_action),
        )
        .route("/api/v1/reconcile", post(reconcile_now))
        .route("/api/v1/refresh", post(refresh_now))
        .route("/api/v1/drift", get(drift))
        .route(
            "/api/v1/resources/{*path}",
            get(resource::get).post(resource_action),
        )
        .route("/api/v1/in-flight", get(in_flight))
        .route("/api/v1/holds", get(holds::list).post(holds::set))
        .route(
            "/api/v1/holds/{*target}",
            axum::routing::delete(holds::lift),
        )
        .route("/api/v1/notify", post(notify))
        .route("/webhooks/github", post(github_webhook))
        .route("/webhooks/gitlab", post(gitlab_webhook))
        .route("/webhooks/gitea", post(gitea_webhook))
        .fallback(errors::not_found)
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(app);
    // Around the whole router, so that the answers it writes itself (a 405 and its `Allow`)
    // are seen as sent.
    Router::new()
        .fallback_service(routes)
        .layer(axum::middleware::map_response(errors::json_errors))
}

/// Binds the server's address with a long accept queue (4,096, or the system's
/// `somaxconn` if lower): under a flood of connections a health check waits its turn rather
/// than having its SYN dropped (a one-second retransmission).
///
/// # Errors
///
/// When the address cannot be bound.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Serves on a bound listener until `shutdown` resolves, within the limits of `[server]`;
/// raises the process's soft open-file limit to its hard limit first. On shutdown it stops
/// accepting, closes idle connections and lets requests in progress finish.
///
/// # Errors
///
/// When the listener's address cannot be read.
pub async fn serve(
    ctx: Arc<Ctx>,
    secrets: Secrets,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let address = listener.local_addr()?;
    let server = ctx.config.server.clone();
    let max_connections = conn::connection_cap(server.max_connections, conn::raise_fd_limit());
    tracing::info!(%address, max_connections, "HTTP server listening.");
    let refusals = Arc::new(refusals::Refusals::new(ctx.clone()));
    let limits = Arc::new(limits::Limits {
        router: hyper_util::service::TowerToHyperService::new(router(ctx, secrets)),
        hosts: limits::Hosts::new(address, &server.allowed_hosts),
        budget: Arc::new(limits::Budget::new(server.max_inflight_body_bytes)),
        refusals: refusals.clone(),
        max_body: server.max_body_bytes,
        body_timeout: server.body_timeout,
        request_timeout: server.request_timeout,
    });
    let tuning = conn::Tuning {
        max_connections,
        header_timeout: server.header_timeout,
        idle_timeout: server.idle_timeout,
        write_timeout: server.request_timeout,
    };
    conn::serve(
        listener,
        tuning,
        move |c, req| limits.clone().answer(c, req),
        refusals,
        shutdown,
    )
    .await;
    Ok(())
}

/// Reads a request body (its limits are enforced as it streams, see [`limits`]).
async fn read_body(app: &App, body: Body) -> Result<Bytes, Response> {
    axum::body::to_bytes(body, app.max_body).await.map_err(|e| {
        // The limits replace this answer with their own when they cut the body.
        error(
            StatusCode::BAD_REQUEST,
            format!("could not read the request body: {e}"),
        )
    })
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({ "error": message.into(), "status": status.as_u16() })),
    )
        .into_response()
}

fn store_error(e: &crate::state::StateError) -> Response {
    tracing::warn!(error = %e, "HTTP request could not read the state store.");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("state store unavailable ({})", e.kind()),
    )
}

/// Constant-time comparison, by comparing HMAC tags of both values.
fn same_secret(given: &str, expected: &str) -> bool {
    let Ok(mut mac) = HmacSha256::new_from_slice(b"protond-compare") else {
        return false;
    };
    mac.update(expected.as_bytes());
    let tag = mac.finalize().into_bytes();
    let Ok(mut mac) = HmacSha256::new_from_slice(b"protond-compare") else {
        return false;
    };
    mac.update(given.as_bytes());
    mac.verify_slice(&tag).is_ok()
}

fn authorized(app: &App, headers: &HeaderMap) -> Result<(), Response> {
    let Some(token) = &app.secrets.api_token else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "mutating endpoints are disabled: set the variable named by server.token_env (PROTOND_API_TOKEN by default) and send it as a bearer token",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if same_secret(given, token) {
        Ok(())
    } else {
        tracing::warn!("Rejected a mutating request with a missing or wrong bearer token.");
        Err(error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token",
        ))
    }
}

async fn readyz(State(app): State<App>) -> Response {
    // Ready means serving: the status page, the API and the webhooks answer, which needs the
    // store and nothing else. A git outage must not take them out of a load balancer (the
    // webhooks are how the daemon learns the outage is over): stale repos are reported in
    // the detail, the logs and `protond_last_fetch_success_timestamp_seconds`, not as unready.
    let store = app.ctx.store.ping().await.err();
    // Recent: within three poll intervals, and never less than two minutes.
    let window = (app.ctx.config.poll_interval * 3).max(Duration::from_mins(2));
    let mut warnings = Vec::new();
    match app.ctx.telemetry.last_fetch() {
        None => warnings.push("the repos have not been fetched yet".to_string()),
        Some(t) if t.elapsed().unwrap_or_default() > window => warnings.push(format!(
            "the repos were last fetched {}s ago (more than {}s)",
            t.elapsed().unwrap_or_default().as_secs(),
            window.as_secs()
        )),
        Some(_) => {}
    }
    // One team's repo that cannot be fetched is named, with its cause, in the detail.
    let skipped = app.ctx.skipped();
    match store {
        // A replica of a PostgreSQL state is ready while serving, leading or not.
        None if app.ctx.elector().is_some() => {
            let role = ha_role(&app.ctx);
            (
                StatusCode::OK,
                axum::Json(json!({
                    "ready": true,
                    "role": role.as_ref().map(|r| r.role),
                    "replica": role.as_ref().map(|r| r.replica.clone()),
                    "leader": role.as_ref().and_then(|r| r.leader.clone()),
                    "epoch": role.as_ref().and_then(|r| r.epoch),
                    "sharding_conflict": role.as_ref().and_then(|r| r.conflict.clone()),
                    "repos_fresh": warnings.is_empty(),
                    "warnings": warnings,
                    "skipped_repos": skipped,
                })),
            )
                .into_response()
        }
        None => (
            StatusCode::OK,
            axum::Json(json!({
                "ready": true,
                "repos_fresh": warnings.is_empty(),
                "warnings": warnings,
                "skipped_repos": skipped,
            })),
        )
            .into_response(),
        Some(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({
                "ready": false,
                "problems": [format!("state store unreachable ({})", e.kind())],
                "repos_fresh": warnings.is_empty(),
                "warnings": warnings,
                "skipped_repos": skipped,
            })),
        )
            .into_response(),
    }
}

/// This replica's role on a PostgreSQL state (`None` on `SQLite`).
fn ha_role(ctx: &Ctx) -> Option<crate::ha::Standing> {
    let e = ctx.elector()?;
    Some(crate::ha::standing(e.settings(), &e.held(), &e.observed()))
}

/// The election's metrics, before the closing `# EOF` of the `OpenMetrics` text.
fn with_ha_metrics(ctx: &Ctx, text: String) -> String {
    let (Some(e), Some(role)) = (ctx.elector(), ha_role(ctx)) else {
        return text;
    };
    let lines = crate::ha::metrics_text(&role, e.observed().changes);
    match text.rfind("# EOF") {
        Some(at) => format!("{}{lines}{}", &text[..at], &text[at..]),
        None => text + &lines,
    }
}

async fn metrics(State(app): State<App>, headers: axum::http::HeaderMap) -> Response {
    use crate::telemetry::exposition;
    let openmetrics =
        exposition::wants_openmetrics(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let in_flight = app.ctx.in_flight();
    let rows = match status_rows(&app).await {
        Ok(rows) => rows,
        Err(r) => return r,
    };
    let resources: Vec<_> = rows.iter().map(|r| (r.kind, r.status)).collect();
    match app
        .ctx
        .telemetry
        .render(&app.ctx.store, in_flight, &resources)
        .await
        .map(|text| with_ha_metrics(&app.ctx, text))
    {
        Ok(text) if openmetrics => {
            ([(header::CONTENT_TYPE, exposition::OPENMETRICS)], text).into_response()
        }
        Ok(text) => (
            [(header::CONTENT_TYPE, exposition::PROMETHEUS_TEXT)],
            exposition::to_prometheus_text(&text),
        )
            .into_response(),
        Err(e) => store_error(&e),
    }
}

async fn templates(State(app): State<App>, Query(q): Query<paging::PageQuery>) -> Response {
    match app.ctx.store.template_versions().await {
        Ok(rows) => {
            // Ordered by template, then version (numbers padded so 10.0 follows 9.0).
            let key = |t: &crate::state::TemplateVersionRecord| {
                format!(
                    "{}@{:010}.{:010}",
                    t.template, t.version.major, t.version.minor
                )
            };
            let (rows, next) = paging::slice(rows, key, q.cursor(), q.size());
            let items = rows
                .iter()
                .map(|t| {
                    json!({
                        "template": t.template,
                        "version": t.version.to_string(),
                        "kind": t.kind,
                        "repo": t.repo,
                        "tag": t.tag,
                        "commit": t.commit,
                        "registered": t.registered,
                        "reason": t.reason,
                        "release_notes": t.release_notes,
                    })
                })
                .collect();
            paging::answer("/api/v1/templates", &[], &q, items, next)
        }
        Err(e) => store_error(&e),
    }
}

async fn status_rows(app: &App) -> Result<Vec<crate::ops::StatusRow>, Response> {
    let drift = app.ctx.store.drift().await.map_err(|e| store_error(&e))?;
    match app.ctx.store.overview().await {
        Ok(overview) => Ok(crate::ops::with_drift(
            crate::ops::status_with(&overview, &app.ctx.findings()),
            &drift,
        )),
        Err(e) => Err(store_error(&e)),
    }
}

async fn environments(State(app): State<App>, Query(q): Query<paging::PageQuery>) -> Response {
    match status_rows(&app).await {
        Ok(rows) => {
            let envs: Vec<_> = rows
                .into_iter()
                .filter(|r| r.kind == ResourceKind::Environment)
                .collect();
            let (envs, next) = paging::slice(envs, |r| r.id.clone(), q.cursor(), q.size());
            let items = envs
                .iter()
                .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
                .collect();
            paging::answer("/api/v1/environments", &[], &q, items, next)
        }
        Err(r) => r,
    }
}

async fn services(State(app): State<App>, Query(q): Query<paging::PageQuery>) -> Response {
    let rows = match status_rows(&app).await {
        Ok(rows) => rows,
        Err(r) => return r,
    };
    let mut by_service: std::collections::BTreeMap<String, Value> =
        std::collections::BTreeMap::default();
    for r in rows {
        let id = match ResourceId::parse(&r.id) {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(error = %e, "A recorded resource has a malformed id; left out of /api/v1/services.");
                continue;
            }
        };
        let Some(service) = id.service() else {
            continue; // an environment
        };
        let entry = by_service.entry(service.to_string()).or_insert_with(
            || json!({ "service": service, "instances": [], "pipeline": null, "components": [] }),
        );
        let row = serde_json::to_value(&r).unwrap_or(Value::Null);
        match id.kind() {
            ResourceKind::ServiceInstance => {
                if let Some(a) = entry["instances"].as_array_mut() {
                    a.push(row);
                }
            }
            ResourceKind::Pipeline => entry["pipeline"] = row,
            ResourceKind::Component | ResourceKind::Environment => {
                if let Some(a) = entry["components"].as_array_mut() {
                    a.push(row);
                }
            }
        }
    }
    let (page, next) = paging::slice(
        by_service.into_iter().collect(),
        |(name, _)| name.clone(),
        q.cursor(),
        q.size(),
    );
    let items = page.into_iter().map(|(_, v)| v).collect();
    paging::answer("/api/v1/services", &[], &q, items, next)
}

#[derive(Deserialize)]
struct DeploymentsQuery {
    resource: Option<String>,
    limit: Option<i64>,
    /// The cursor: the id of the previous page's last deployment (`next`).
    after: Option<String>,
}

/// One deployment as the API shows it, with who asked, cancel marks and progress.
fn deployment_json(
    d: &crate::state::DeploymentRecord,
    notes: &std::collections::BTreeMap<i64, crate::state::ActionNotes>,
) -> Value {
    let n = notes.get(&d.id).cloned().unwrap_or_default();
    json!({
        "id": d.id,
        "resource": d.deployment.resource_id,
        "kind": d.deployment.kind.as_str(),
        "repo": d.deployment.repo,
        "environment": d.deployment.environment,
        "action": d.deployment.action,
        "reason": d.deployment.reason,
        "template": d.deployment.template,
        "from_version": d.deployment.from_version.map(|v| v.to_string()),
        "to_version": d.deployment.to_version.to_string(),
        "spec_commit": d.deployment.spec_commit,
        "status": d.status,
        "error": d.error,
        "started_at": d.started_at,
        "finished_at": d.finished_at,
        "requested_by": n.requested_by,
        "cancel_requested_by": n.cancel_requested_by,
        "progress": n.progress,
    })
}

/// `GET /api/v1/deployments?resource=&limit=&after=`: newest first, paged by id.
async fn deployments(State(app): State<App>, Query(q): Query<DeploymentsQuery>) -> Response {
    let page = paging::PageQuery {
        limit: q
            .limit
            .map(|l| usize::try_from(l.max(1)).unwrap_or(paging::DEFAULT_LIMIT)),
        after: q.after.clone(),
    };
    let before = match page.cursor().map(str::parse::<i64>) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "query: `after` must be the `next` cursor of the previous page (a deployment id)",
            );
        }
    };
    let size = page.size();
    let fetch = i64::try_from(size + 1).unwrap_or(i64::MAX);
    let mut rows = match app
        .ctx
        .store
        .deployments_before(q.resource.as_deref(), before, fetch)
        .await
    {
        Ok(rows) => rows,
        Err(e) => return store_error(&e),
    };
    let next = if rows.len() > size {
        rows.truncate(size);
        rows.last().map(|d| d.id.to_string())
    } else {
        None
    };
    // Who asked, cancel marks and progress (`state::actions`), for the same rows.
    let ids: Vec<i64> = rows.iter().map(|d| d.id).collect();
    let notes = match app.ctx.store.action_notes(&ids).await {
        Ok(n) => n,
        Err(e) => return store_error(&e),
    };
    let items = rows.iter().map(|d| deployment_json(d, &notes)).collect();
    let extra: Vec<(&str, &str)> = q
        .resource
        .as_deref()
        .map(|r| ("resource", r))
        .into_iter()
        .collect();
    paging::answer("/api/v1/deployments", &extra, &page, items, next)
}

/// `GET /api/v1/in-flight`: each deployment in flight with its stack's progress (stack,
/// status, last event, elapsed seconds) and who asked.
async fn in_flight(State(app): State<App>) -> Response {
    let rows = match app.ctx.store.in_flight().await {
        Ok(r) => r,
        Err(e) => return store_error(&e),
    };
    let ids: Vec<i64> = rows.iter().map(|d| d.id).collect();
    let notes = match app.ctx.store.action_notes(&ids).await {
        Ok(n) => n,
        Err(e) => return store_error(&e),
    };
    axum::Json(
        rows.iter()
            .map(|d| {
                let n = notes.get(&d.id).cloned().unwrap_or_default();
                json!({
                    "id": d.id,
                    "resource": d.deployment.resource_id,
                    "action": d.deployment.action,
                    "started_at": d.started_at,
                    "requested_by": n.requested_by,
                    "cancel_requested_by": n.cancel_requested_by,
                    "progress": n.progress,
                })
            })
            .collect::<Vec<_>>(),
    )
    .into_response()
}

#[derive(Deserialize, Default)]
struct ActionBody {
    /// Who asks (recorded as `api:<by>`).
    #[serde(default)]
    by: Option<String>,
    /// `retry`: the ownership conflict is resolved.
    #[serde(default)]
    conflict_resolved: bool,
    /// `approve`: the version approved (`"1.1"`).
    #[serde(default)]
    version: Option<String>,
    /// `approve`: why.
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /api/v1/resources/{id}/{redeploy|retry|cancel|approve}`: the manual actions (see
/// [`crate::actions`]); bearer token required. Body (optional): `{"by": "...",
/// "conflict_resolved": false}`. A cycle is requested at once.
async fn resource_action(
    State(app): State<App>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(r) = authorized(&app, &headers) {
        return r;
    }
    let body = match read_body(&app, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let b: ActionBody = if body.is_empty() {
        ActionBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "body: expected {{\"by\": \"...\", \"conflict_resolved\": false}}: {e}"
                    ),
                );
            }
        }
    };
    let Some((resource, action)) = path.trim_matches('/').rsplit_once('/') else {
        return error(
            StatusCode::NOT_FOUND,
            "use /api/v1/resources/<resource id>/<redeploy|retry|cancel|approve>",
        );
    };
    let by = format!(
        "api:{}",
        b.by.as_deref()
            .filter(|s| !s.is_empty() && s.len() <= 100 && !s.chars().any(char::is_control))
            .unwrap_or("token")
    );
    let store = &app.ctx.store;
    let done = match action {
        "redeploy" => crate::actions::redeploy(store, resource, &by, None).await,
        "retry" => crate::actions::retry(store, resource, &by, b.conflict_resolved, None).await,
        "cancel" => crate::actions::cancel(store, resource, &by).await,
        "approve" => approve_action(store, resource, &b).await,
        other => {
            return error(
                StatusCode::NOT_FOUND,
                format!("unknown action {other:?}; use redeploy, retry, cancel or approve"),
            );
        }
    };
    match done {
        Ok(message) => {
            tracing::info!(resource = %resource, by = %by, action, "Manual action recorded through the API.");
            app.ctx.request_cycle(crate::desired::Fetch::None);
            (
                StatusCode::ACCEPTED,
                axum::Json(
                    json!({ "resource": resource, "action": action, "by": by, "message": message }),
                ),
            )
                .into_response()
        }
        Err(crate::actions::ActionError::State(e)) => store_error(&e),
        Err(e @ crate::actions::ActionError::Unknown { .. }) => {
            error(StatusCode::NOT_FOUND, e.to_string())
        }
        Err(e) => error(StatusCode::CONFLICT, e.to_string()),
    }
}

/// `POST /api/v1/resources/{id}/approve` with `{"version": "1.1", "by": "...", "reason":
/// "..."}`: an approval for the change-set gate (see [`crate::actions::approve`]).
async fn approve_action(
    store: &crate::state::Store,
    resource: &str,
    b: &ActionBody,
) -> Result<String, crate::actions::ActionError> {
    let clean = |s: &Option<String>, max: usize| {
        s.clone()
            .filter(|s| !s.is_empty() && s.len() <= max && !s.chars().any(char::is_control))
    };
    let Some(version) = clean(&b.version, 20) else {
        return Err(crate::actions::ActionError::NotApplicable {
            resource: resource.to_string(),
            why: "the body must name the version approved: {\"version\": \"1.1\"}".into(),
        });
    };
    let by = clean(&b.by, 100).unwrap_or_else(|| "token".into());
    let reason = clean(&b.reason, 500);
    let req = crate::actions::ApprovalRequest {
        resource,
        version: &version,
        by: &by,
        via: "api",
        reason: reason.as_deref(),
    };
    crate::actions::approve(store, req, None).await
}

/// A page of serializable rows, in the order of `key`.
fn paged_rows<T: serde::Serialize>(
    path: &str,
    q: &paging::PageQuery,
    rows: Vec<T>,
    key: impl Fn(&T) -> String,
) -> Response {
    let (rows, next) = paging::slice(rows, key, q.cursor(), q.size());
    let items = rows
        .iter()
        .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
        .collect();
    paging::answer(path, &[], q, items, next)
}

async fn rollouts(State(app): State<App>, Query(q): Query<paging::PageQuery>) -> Response {
    match app.ctx.store.rollout_progress().await {
        Ok(rows) => paged_rows("/api/v1/rollouts", &q, rows, |r| {
            format!(
                "{}@{:010}.{:010}",
                r.template, r.version.major, r.version.minor
            )
        }),
        Err(e) => store_error(&e),
    }
}

async fn proposals(State(app): State<App>, Query(q): Query<paging::PageQuery>) -> Response {
    match app.ctx.store.proposals().await {
        Ok(rows) => paged_rows("/api/v1/proposals", &q, rows, |p| {
            format!("{}:{}:{}:{:010}", p.repo, p.path, p.template, p.to_major)
        }),
        Err(e) => store_error(&e),
    }
}

/// `GET /api/v1/release-events`: the release history (quarantines, releases, halts,
/// resumes), oldest first, paged by id.
async fn release_events(State(app): State<App>, Query(q): Query<paging::PageQuery>) -> Response {
    match app.ctx.store.release_events(None, None).await {
        Ok(rows) => paged_rows("/api/v1/release-events", &q, rows, |e| {
            format!("{:020}", e.id)
        }),
        Err(e) => store_error(&e),
    }
}

#[derive(Deserialize, Default)]
struct RolloutBody {
    #[serde(default)]
    reason: Option<String>,
}

async fn rollout_action(
    State(app): State<App>,
    Path((template, version, action)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(r) = authorized(&app, &headers) {
        return r;
    }
    let body = match read_body(&app, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let halted = match action.as_str() {
        "halt" => true,
        "resume" => false,
        "quarantine" | "release" => {
            return release_action(app, template, version, action, body).await;
        }
        other => {
            return error(
                StatusCode::NOT_FOUND,
                format!("unknown action {other:?}; use halt, resume, quarantine or release"),
            );
        }
    };
    let Some(v) = version.strip_prefix('v').and_then(Version::parse) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{version:?} is not a version like v1.2"),
        );
    };
    let reason = if body.is_empty() {
        None
    } else {
        match serde_json::from_slice::<RolloutBody>(&body) {
            Ok(b) => b.reason,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("body: expected {{\"reason\": \"...\"}}: {e}"),
                );
            }
        }
    };
    let reason = reason.unwrap_or_else(|| format!("{action} requested through the API"));
    let version = v;
    // In the release history too, as by `api`.
    let store = &app.ctx.store;
    let recorded = if halted {
        let kind = crate::state::StopKind::Halt;
        store
            .stop_rollout(&template, version, kind, "api", &reason)
            .await
            .map(|_| ())
    } else {
        match store.lift_rollout(&template, version, "api", &reason).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => store.set_rollout(&template, version, false, &reason).await,
            Err(e) => Err(e),
        }
    };
    match recorded {
        Ok(()) => {
            tracing::info!(template = %template, version = %version, halted, reason = %reason, "Rollout decision recorded through the API.");
            // A cycle acts on it; nothing needs fetching.
            app.ctx.request_cycle(crate::desired::Fetch::None);
            axum::Json(json!({ "template": template, "version": version.to_string(), "halted": halted, "reason": reason }))
                .into_response()
        }
        Err(e) => store_error(&e),
    }
}

/// `POST /api/v1/rollouts/{template}/v{M}.{m}/quarantine|release` (authorized by the
/// caller): quarantines a registered release or releases it, recorded as by `api`.
async fn release_action(
    app: App,
    template: String,
    version: String,
    action: String,
    body: Bytes,
) -> Response {
    let Some(version) = version.strip_prefix('v').and_then(Version::parse) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{version:?} is not a version like v1.2"),
        );
    };
    let reason = match serde_json::from_slice::<RolloutBody>(&body) {
        Ok(b) => b.reason,
        Err(_) if body.is_empty() => None,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("body: expected {{\"reason\": \"...\"}}: {e}"),
            );
        }
    }
    .unwrap_or_else(|| format!("{action} requested through the API"));
    let store = &app.ctx.store;
    let result = if action == "quarantine" {
        let kind = crate::state::StopKind::Quarantine;
        store
            .stop_rollout(&template, version, kind, "api", &reason)
            .await
            .map(|_| true)
    } else {
        store
            .lift_rollout(&template, version, "api", &reason)
            .await
            .map(|k| k.is_some())
    };
    match result {
        Ok(changed) => {
            app.ctx.request_cycle(crate::desired::Fetch::None);
            axum::Json(json!({ "template": template, "version": version.to_string(), "action": action, "changed": changed, "reason": reason }))
                .into_response()
        }
        Err(e) => store_error(&e),
    }
}

async fn reconcile_now(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&app, &headers) {
        return r;
    }
    app.ctx.request_cycle(crate::desired::Fetch::All);
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({ "scheduled": true })),
    )
        .into_response()
}

/// `POST /api/v1/refresh` (token): fetch every repo and re-read live state now: a drift
/// check of every recorded stack beside an immediate cycle.
async fn refresh_now(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&app, &headers) {
        return r;
    }
    app.ctx.drift.request();
    app.ctx.request_cycle(crate::desired::Fetch::All);
    tracing::info!("Refresh requested (API): a cycle and a drift check now.");
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({ "scheduled": true, "drift_check": true })),
    )
        .into_response()
}

/// `GET /api/v1/drift`: the drift the last checks found, by resource, and whether
/// `CloudFormation`'s resource drift detection is available here.
async fn drift(State(app): State<App>) -> Response {
    match app.ctx.store.drift().await {
        Ok(d) => axum::Json(json!({
            "resources": d,
            "resource_drift_detection": match app.ctx.drift.unavailable() {
                None => json!({ "available": true }),
                Some(why) => json!({ "available": false, "reason": format!("resource drift detection not available: {why}") }),
            },
        }))
        .into_response(),
        Err(e) => store_error(&e),
    }
}

/// `POST /api/v1/notify`: Proton's `NotifyResourceDeploymentStatusChange`, for self-managed
/// deployments. Takes `resource` (or Proton's `resourceArn`), `status`
/// (`SUCCEEDED`/`FAILED`, any case; `IN_PROGRESS` is acknowledged and ignored), optional
/// `deploymentId`, `outputs` (object, `[{key, valueString}]` or `terraform output -json`)
/// and `statusMessage`.
async fn notify(State(app): State<App>, headers: HeaderMap, body: Body) -> Response {
    if let Err(r) = authorized(&app, &headers) {
        return r;
    }
    let body = match read_body(&app, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")),
    };
    let Some(resource) = v
        .get("resource")
        .or_else(|| v.get("resourceArn"))
        .and_then(Value::as_str)
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "body: `resource` (or `resourceArn`) is required",
        );
    };
    let status = v
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_ascii_lowercase();
    let succeeded = match status.as_str() {
        "succeeded" => true,
        "failed" => false,
        "in_progress" => {
            return (
                StatusCode::ACCEPTED,
                axum::Json(json!({ "recorded": false, "reason": "IN_PROGRESS needs no action" })),
            )
                .into_response();
        }
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("body: status {other:?} is not SUCCEEDED, FAILED or IN_PROGRESS"),
            );
        }
    };
    let deployment_id = match v.get("deploymentId") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => match s.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("body: deploymentId {s:?} is not a protond deployment id"),
                );
            }
        },
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "body: deploymentId must be a string or number",
            );
        }
    };
    let outputs = match crate::provision::terraform::parse_outputs(
        v.get("outputs").unwrap_or(&Value::Null),
    ) {
        Ok(o) => o,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
    };
    let message = v
        .get("statusMessage")
        .or_else(|| v.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string);
    match crate::provision::self_managed::notify(
        &app.ctx.store,
        resource,
        deployment_id,
        succeeded,
        outputs,
        message,
    )
    .await
    {
        Ok(outcome) => {
            let id = crate::provision::self_managed::resource_id_from(resource);
            let recorded = match &outcome {
                crate::state::Outcome::Succeeded(_) => "succeeded",
                crate::state::Outcome::Deleted => "deleted",
                crate::state::Outcome::Failed { .. }
                | crate::state::Outcome::Interrupted
                | crate::state::Outcome::Conflict { .. } => "failed",
            };
            match ResourceId::parse(&id) {
                Ok(rid) => SelfManagedOutcomeReported {
                    resource: &rid,
                    outcome: &outcome,
                }
                .emit(&app.ctx.telemetry),
                // Unreachable in practice: a waiting record exists only for a valid id.
                Err(e) => {
                    tracing::warn!(error = %e, "Self-managed deployment outcome recorded for a malformed id.");
                }
            }
            app.ctx.poke();
            axum::Json(json!({ "resource": id, "recorded": recorded })).into_response()
        }
        Err(crate::provision::self_managed::NotifyError::State(e)) => store_error(&e),
        Err(e) => error(StatusCode::CONFLICT, e.to_string()),
    }
}

/// The configured repos a webhook payload names (by any of its clone or web URLs).
fn matching_repos(ctx: &Ctx, payload: &Value) -> Vec<String> {
    let mut urls = Vec::new();
    for path in [
        &["repository", "clone_url"][..],
        &["repository", "ssh_url"],
        &["repository", "html_url"],
        &["repository", "git_url"],
        &["repository", "git_http_url"],
        &["repository", "git_ssh_url"],
        &["repository", "homepage"],
        &["project", "git_http_url"],
        &["project", "git_ssh_url"],
        &["project", "web_url"],
    ] {
        let mut v = payload;
        for k in path {
            v = &v[*k];
        }
        if let Some(s) = v.as_str() {
            urls.push(normalize_url(s));
        }
    }
    ctx.config
        .template_repos
        .iter()
        .map(|r| (&r.name, &r.url))
        .chain(ctx.config.spec_repos.iter().map(|r| (&r.name, &r.url)))
        .filter(|(_, url)| urls.contains(&normalize_url(url)))
        .map(|(n, _)| n.clone())
        .collect()
}

/// `https://host/owner/repo.git`, `git@host:owner/repo.git` and `https://host/owner/repo`
/// all become `host/owner/repo`.
fn normalize_url(url: &str) -> String {
    let u = url.trim().trim_end_matches('/');
    let u = u.strip_suffix(".git").unwrap_or(u);
    let (had_scheme, rest) = match u.split_once("://") {
        Some((_, r)) => (true, r),
        None => (false, u),
    };
    let rest = rest.split_once('@').map_or(rest, |(_, r)| r);
    let rest = if had_scheme {
        rest.to_string()
    } else {
        rest.replacen(':', "/", 1)
    };
    rest.to_ascii_lowercase()
}

fn rejected(app: &App, source: WebhookSource, because: RejectedBecause) {
    WebhookRejected { source, because }.emit(&app.ctx.telemetry);
}

fn act_on_push(app: &App, source: WebhookSource, event: &str, body: &[u8]) -> Response {
    let relevant = matches!(
        event,
        "push" | "create" | "Push Hook" | "Tag Push Hook" | "release"
    );
    if !relevant {
        WebhookIgnored {
            source,
            event,
            because: IgnoredBecause::NotAPush,
        }
        .emit(&app.ctx.telemetry);
        return (
            StatusCode::ACCEPTED,
            axum::Json(json!({ "ignored": format!("event {event:?} does not change repos") })),
        )
            .into_response();
    }
    let payload: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            rejected(app, source, RejectedBecause::NotJson);
            return error(StatusCode::BAD_REQUEST, format!("payload is not JSON: {e}"));
        }
    };
    let repos = matching_repos(&app.ctx, &payload);
    if repos.is_empty() {
        WebhookIgnored {
            source,
            event,
            because: IgnoredBecause::UnwatchedRepo,
        }
        .emit(&app.ctx.telemetry);
        return (
            StatusCode::ACCEPTED,
            axum::Json(json!({ "ignored": "no configured repo matches this payload" })),
        )
            .into_response();
    }
    WebhookAccepted {
        source,
        event,
        repos: &repos,
    }
    .emit(&app.ctx.telemetry);
    app.ctx
        .request_cycle(crate::desired::Fetch::Only(repos.iter().cloned().collect()));
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({ "fetching": repos })),
    )
        .into_response()
}

/// A header's text, if present and printable.
fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// A delivery seen within the window: answered, and nothing else.
fn duplicate(app: &App, source: WebhookSource, delivery: Option<&str>) -> Response {
    // Ids are short; a long one is cut for the log and the answer.
    let delivery = delivery.map(|d| d.get(..d.len().min(128)).unwrap_or(""));
    WebhookDuplicate { source, delivery }.emit(&app.ctx.telemetry);
    axum::Json(json!({
        "duplicate": true,
        "delivery": delivery,
        "message": "this delivery was already received; nothing was done (server.webhook_dedupe_window)",
    }))
    .into_response()
}

/// A delivery signed with HMAC-SHA256 over its body (GitHub, Gitea, Forgejo): read within
/// the limits, verified, and recorded for dedupe by its payload and delivery id.
struct Signed<'a> {
    source: WebhookSource,
    secret: &'a str,
    signature: &'a [u8],
    delivery: Option<&'a str>,
    /// Dedupe key kinds of the payload and of the delivery id.
    keys: (&'static str, &'static str),
}

impl Signed<'_> {
    /// The body when the signature holds and the delivery is new; otherwise the answer.
    async fn verify(&self, app: &App, body: Body) -> Result<Bytes, Response> {
        let body = read_body(app, body).await?;
        let valid = HmacSha256::new_from_slice(self.secret.as_bytes()).is_ok_and(|mut mac| {
            mac.update(&body);
            mac.verify_slice(self.signature).is_ok()
        });
        if !valid {
            rejected(app, self.source, RejectedBecause::BadCredentials);
            return Err(error(StatusCode::UNAUTHORIZED, "bad signature"));
        }
        let mut keys = vec![deliveries::Key::new(self.keys.0, &body)];
        if let Some(id) = self.delivery {
            keys.push(deliveries::Key::new(self.keys.1, id.as_bytes()));
        }
        if app.deliveries.record(&keys) {
            return Err(duplicate(app, self.source, self.delivery));
        }
        Ok(body)
    }
}

async fn github_webhook(State(app): State<App>, headers: HeaderMap, body: Body) -> Response {
    let Some(secret) = &app.secrets.github else {
        rejected(&app, WebhookSource::GitHub, RejectedBecause::Disabled);
        return error(
            StatusCode::FORBIDDEN,
            "GitHub webhooks are disabled: set the variable named by server.github_secret_env",
        );
    };
    // The signature covers the body, so it is verified after reading it; a delivery without
    // a well-formed one is refused before.
    let Some(signature) = header_text(&headers, "x-hub-signature-256")
        .and_then(|v| v.strip_prefix("sha256="))
        .and_then(|h| hex::decode(h).ok())
        .filter(|sig| sig.len() == 32)
    else {
        rejected(&app, WebhookSource::GitHub, RejectedBecause::BadCredentials);
        return error(StatusCode::UNAUTHORIZED, "bad signature");
    };
    // The signature does not cover the headers: a replay may come with any delivery id, or
    // none. The signed payload itself is a key too (GitHub's payloads of distinct events
    // differ: commits, timestamps).
    let delivery = header_text(&headers, "x-github-delivery");
    let signed = Signed {
        source: WebhookSource::GitHub,
        secret,
        signature: &signature,
        delivery,
        keys: ("github-payload", "github-delivery"),
    };
    let body = match signed.verify(&app, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let event = header_text(&headers, "x-github-event")
        .unwrap_or("")
        .to_string();
    if event == "ping" {
        WebhookIgnored {
            source: WebhookSource::GitHub,
            event: &event,
            because: IgnoredBecause::Ping,
        }
        .emit(&app.ctx.telemetry);
        return axum::Json(json!({ "pong": true })).into_response();
    }
    act_on_push(&app, WebhookSource::GitHub, &event, &body)
}

async fn gitlab_webhook(State(app): State<App>, headers: HeaderMap, body: Body) -> Response {
    let Some(token) = &app.secrets.gitlab else {
        rejected(&app, WebhookSource::GitLab, RejectedBecause::Disabled);
        return error(
            StatusCode::FORBIDDEN,
            "GitLab webhooks are disabled: set the variable named by server.gitlab_token_env",
        );
    };
    // The token is a header: checked before a byte of the body is read.
    let given = headers
        .get("x-gitlab-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !same_secret(given, token) {
        rejected(&app, WebhookSource::GitLab, RejectedBecause::BadCredentials);
        return error(StatusCode::UNAUTHORIZED, "bad token");
    }
    let event_uuid = header_text(&headers, "x-gitlab-event-uuid");
    let idempotency = header_text(&headers, "idempotency-key");
    let keys: Vec<deliveries::Key> = [
        ("gitlab-event", event_uuid),
        ("gitlab-idempotency", idempotency),
    ]
    .into_iter()
    .filter_map(|(kind, v)| v.map(|v| deliveries::Key::new(kind, v.as_bytes())))
    .collect();
    let delivery = idempotency.or(event_uuid);
    // A retry is answered without reading its body; it is recorded only once read whole,
    // so a delivery cut short is still taken when retried.
    if app.deliveries.seen(&keys) {
        return duplicate(&app, WebhookSource::GitLab, delivery);
    }
    let body = match read_body(&app, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if app.deliveries.record(&keys) {
        return duplicate(&app, WebhookSource::GitLab, delivery);
    }
    let event = header_text(&headers, "x-gitlab-event")
        .unwrap_or("")
        .to_string();
    act_on_push(&app, WebhookSource::GitLab, &event, &body)
}

/// Gitea and Forgejo sign the body with HMAC-SHA256 and send the hex digest (no prefix) as
/// `X-Gitea-Signature` (Forgejo also as `X-Forgejo-Signature`); the delivery id and event
/// name come as `X-Gitea-Delivery` / `X-Gitea-Event` (or their Forgejo twins). The push
/// payload names the repo as GitHub's does (`repository.clone_url`, `html_url`, `ssh_url`).
async fn gitea_webhook(State(app): State<App>, headers: HeaderMap, body: Body) -> Response {
    let Some(secret) = &app.secrets.gitea else {
        rejected(&app, WebhookSource::Gitea, RejectedBecause::Disabled);
        return error(
            StatusCode::FORBIDDEN,
            "Gitea webhooks are disabled: set the variable named by server.gitea_secret_env",
        );
    };
    let either = |gitea: &str, forgejo: &str| {
        header_text(&headers, gitea).or_else(|| header_text(&headers, forgejo))
    };
    let Some(signature) = either("x-gitea-signature", "x-forgejo-signature")
        .and_then(|h| hex::decode(h).ok())
        .filter(|sig| sig.len() == 32)
    else {
        rejected(&app, WebhookSource::Gitea, RejectedBecause::BadCredentials);
        return error(StatusCode::UNAUTHORIZED, "bad signature");
    };
    // As for GitHub: the signature does not cover the headers, so the payload is a key too.
    let signed = Signed {
        source: WebhookSource::Gitea,
        secret,
        signature: &signature,
        delivery: either("x-gitea-delivery", "x-forgejo-delivery"),
        keys: ("gitea-payload", "gitea-delivery"),
    };
    let body = match signed.verify(&app, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let event = either("x-gitea-event", "x-forgejo-event")
        .unwrap_or("")
        .to_string();
    act_on_push(&app, WebhookSource::Gitea, &event, &body)
}

async fn status_page(State(app): State<App>) -> Response {
    let rows = match status_rows(&app).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let rollouts = app.ctx.store.rollout_progress().await.unwrap_or_default();
    let proposals = app.ctx.store.proposals().await.unwrap_or_default();
    let last_cycle = app.ctx.telemetry.last_cycle();
    let releases = app.ctx.store.template_versions().await.unwrap_or_default();
    let records = app.ctx.store.resources().await.unwrap_or_default();
    let pipeline_runs = app.ctx.store.pipeline_runs().await.unwrap_or_default();
    let stored = page::Stored {
        records: &records,
        pipeline_runs: &pipeline_runs,
    };
    let html = page::render(&rows, &rollouts, &releases, &proposals, last_cycle, stored);
    // Deployments in flight, with their stacks' progress, above the resources.
    let flight = app.ctx.store.in_flight().await.unwrap_or_default();
    let ids: Vec<i64> = flight.iter().map(|d| d.id).collect();
    let notes = app.ctx.store.action_notes(&ids).await.unwrap_or_default();
    let mut section = page::in_flight(&flight, &notes);
    section.push_str(&page::needs_approval(
        &app.ctx.store.needs_approval().await.unwrap_or_default(),
    ));
    section.push_str(&replicas_section(&app.ctx));
    let stopped = stopped_section(&app, &releases, &records).await;
    // The versions table (the fleet report's) and the holds, above the rollouts.
    let versions = match crate::report::read(&app.ctx.store).await {
        Ok(inputs) => report::versions_section(&crate::report::build(&inputs)),
        Err(_) => String::new(),
    };
    let html = html.replacen(
        "<h2>Rollouts</h2>",
        &format!("{versions}{}<h2>Rollouts</h2>", holds_section(&app).await),
        1,
    );
    Html(
        html.replacen(
            "<h2>Environments</h2>",
            &format!("{section}<h2>Environments</h2>"),
            1,
        )
        .replacen(
            "<h2>Upgrade pull requests</h2>",
            &format!("{stopped}<h2>Upgrade pull requests</h2>"),
            1,
        ),
    )
    .into_response()
}

/// The page's "Replicas" section on a PostgreSQL state: who leads, and every replica.
fn replicas_section(ctx: &Ctx) -> String {
    let (Some(e), Some(role)) = (ctx.elector(), ha_role(ctx)) else {
        return String::new();
    };
    page::replicas(&role, &e.observed())
}

/// The page's "Stopped releases" section (quarantined and halted releases, rollbacks).
async fn stopped_section(
    app: &App,
    releases: &[crate::state::TemplateVersionRecord],
    records: &[crate::state::ResourceRecord],
) -> String {
    let stops = app.ctx.store.stops().await.unwrap_or_default();
    let failures = app.ctx.store.last_failures().await.unwrap_or_default();
    let rollbacks =
        crate::ops::quarantine::rollbacks_from_store(&stops, releases, records, &failures);
    page::stopped_releases(&stops, &rollbacks, app.ctx.config.quarantine.rollback)
}

/// The page's holds and pins (`page::holds_section`), empty when the store cannot say.
async fn holds_section(app: &App) -> String {
    let holds = app.ctx.store.holds().await.unwrap_or_default();
    let pins = app.ctx.store.pins().await.unwrap_or_default();
    page::holds_section(&holds, &pins, std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_normalize_across_forms() {
        let a = normalize_url("https://github.com/Acme/Payments.git");
        assert_eq!(a, "github.com/acme/payments");
        assert_eq!(normalize_url("git@github.com:acme/payments.git"), a);
        assert_eq!(normalize_url("https://github.com/acme/payments/"), a);
        assert_eq!(
            normalize_url("ssh://git@gitlab.example.com/group/sub/proj.git"),
            "gitlab.example.com/group/sub/proj"
        );
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abd", "abc"));
        assert!(!same_secret("", "abc"));
    }
}
