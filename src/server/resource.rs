//! `GET /api/v1/resources/{id}`: one resource as the store records it (template, version,
//! status, placement, stored outputs, drift) with its last deployments and who asked for
//! each. Ids contain slashes (`service_instance/payments/payments-dev`); the `POST` of the
//! same prefix is the manual actions. Reads the store only; never acts.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{App, deployment_json, error, status_rows, store_error};

/// Deployments shown when `deployments` is not given.
const DEFAULT_DEPLOYMENTS: i64 = 10;
/// The most deployments one answer lists (`/api/v1/deployments?resource=` pages further).
const MAX_DEPLOYMENTS: i64 = 100;

/// `?deployments=N`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ResourceQuery {
    deployments: Option<i64>,
}

/// The record's fields (placement, outputs…) on top of its status row; `null` where the
/// resource has no record (never deployed: a first create in flight, failed or invalid).
fn record_json(r: Option<&crate::state::ResourceRecord>) -> Value {
    let Some(r) = r else {
        return json!({ "placement": null, "outputs": {}, "recorded": false });
    };
    json!({
        "recorded": true,
        "repo": r.repo,
        "environment": r.environment,
        "deployed_status": r.status,
        "spec_commit": r.spec_commit,
        "updated_at": r.updated_at,
        "placement": {
            "stack_name": r.placement.stack_name,
            "stack_id": r.placement.stack_id,
            "region": r.placement.region,
            "role_arn": r.placement.role_arn,
        },
        "outputs": r.outputs,
    })
}

/// The answer; 404 JSON for an id neither recorded nor in any status row.
pub(super) async fn get(
    State(app): State<App>,
    Path(path): Path<String>,
    Query(q): Query<ResourceQuery>,
) -> Response {
    let id = path.trim_matches('/');
    let store = &app.ctx.store;
    let record = match store.resources().await {
        Ok(rs) => rs.into_iter().find(|r| r.id == id),
        Err(e) => return store_error(&e),
    };
    let rows = match status_rows(&app).await {
        Ok(rows) => rows,
        Err(r) => return r,
    };
    let Some(row) = rows.into_iter().find(|r| r.id == id) else {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "no resource {id:?} is recorded or declared; ids are listed by /api/v1/environments and /api/v1/services (e.g. service_instance/<service>/<instance>)"
            ),
        );
    };
    let limit = q
        .deployments
        .unwrap_or(DEFAULT_DEPLOYMENTS)
        .clamp(1, MAX_DEPLOYMENTS);
    let history = match store.deployments(Some(id), limit).await {
        Ok(h) => h,
        Err(e) => return store_error(&e),
    };
    let ids: Vec<i64> = history.iter().map(|d| d.id).collect();
    let notes = match store.action_notes(&ids).await {
        Ok(n) => n,
        Err(e) => return store_error(&e),
    };
    let mut body = serde_json::to_value(&row).unwrap_or(Value::Null);
    if let (Some(obj), Value::Object(extra)) = (body.as_object_mut(), record_json(record.as_ref()))
    {
        obj.extend(extra);
        obj.insert("drift".into(), json!(row.drift));
        obj.insert(
            "deployments".into(),
            history
                .iter()
                .map(|d| deployment_json(d, &notes))
                .collect::<Vec<_>>()
                .into(),
        );
    }
    axum::Json(body).into_response()
}
