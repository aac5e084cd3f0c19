//! `GET /api/v1/holds` (holds and pins), `POST /api/v1/holds` (set a hold) and
//! `DELETE /api/v1/holds/{target}` (lift one): the API of `protond hold`, `holds` and
//! `unhold`. The mutating routes need the bearer token, checked before the body is read.
//! Handlers parse, write one row and request a cycle; what a hold stops is decided by
//! [`crate::plan::holds`], never here.

use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{App, authorized, error, read_body, store_error};
use crate::plan::holds::{Hold, HoldTarget, parse_until, rfc3339};

/// The body of `POST /api/v1/holds`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HoldBody {
    target: String,
    until: String,
    reason: String,
    #[serde(default)]
    all: bool,
    #[serde(default)]
    by: Option<String>,
}

/// `GET /api/v1/holds`: `{"holds": [...], "pins": [...]}`, each hold with `active`.
pub(super) async fn list(State(app): State<App>) -> Response {
    let store = &app.ctx.store;
    let holds = match store.holds().await {
        Ok(h) => h,
        Err(e) => return store_error(&e),
    };
    let pins = match store.pins().await {
        Ok(p) => p,
        Err(e) => return store_error(&e),
    };
    axum::Json(crate::ops::holds_json(&holds, &pins, SystemTime::now())).into_response()
}

fn who(by: Option<&str>) -> String {
    format!(
        "api:{}",
        by.filter(|s| !s.is_empty() && s.len() <= 100 && !s.chars().any(char::is_control))
            .unwrap_or("token")
    )
}

/// `POST /api/v1/holds` (token): `{"target", "until", "reason", "all"?, "by"?}`; 201 with
/// the hold.
pub(super) async fn set(State(app): State<App>, headers: HeaderMap, body: Body) -> Response {
    if let Err(r) = authorized(&app, &headers) {
        return r;
    }
    let body = match read_body(&app, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let b: HoldBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "body: expected {{\"target\": \"stage:prod\", \"until\": \"2h\", \"reason\": \"...\", \"all\": false, \"by\": \"...\"}}: {e}"
                ),
            );
        }
    };
    let now = SystemTime::now();
    let parsed = HoldTarget::parse(&b.target).and_then(|t| Ok((t, parse_until(&b.until, now)?)));
    let (target, until) = match parsed {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    if b.reason.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "reason is empty; say why");
    }
    let hold = Hold {
        target,
        all: b.all,
        until,
        reason: b.reason,
        by: who(b.by.as_deref()),
        set_at: String::new(),
    };
    if let Err(e) = app.ctx.store.put_hold(&hold).await {
        return store_error(&e);
    }
    tracing::info!(target = %hold.target, by = %hold.by, until = %rfc3339(until), "Hold set through the API.");
    app.ctx.request_cycle(crate::desired::Fetch::None);
    let answer = json!({
        "target": hold.target.to_string(),
        "all": hold.all,
        "until": rfc3339(hold.until),
        "reason": hold.reason,
        "by": hold.by,
    });
    (StatusCode::CREATED, axum::Json(answer)).into_response()
}

/// `DELETE /api/v1/holds/{target}` (token): lifts the hold; 404 when there is none.
pub(super) async fn lift(
    State(app): State<App>,
    Path(target): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorized(&app, &headers) {
        return r;
    }
    let target = match HoldTarget::parse(target.trim_matches('/')) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match app.ctx.store.delete_hold(&target).await {
        Ok(true) => {
            tracing::info!(target = %target, "Hold lifted through the API.");
            app.ctx.request_cycle(crate::desired::Fetch::None);
            axum::Json(json!({ "target": target.to_string(), "lifted": true })).into_response()
        }
        Ok(false) => error(StatusCode::NOT_FOUND, format!("no hold on {target}")),
        Err(e) => store_error(&e),
    }
}
