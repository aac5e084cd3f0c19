//! JSON error answers for every path: `{"error": "...", "status": N}`. Unknown paths get a
//! 404 and known paths asked with another method a 405 with `Allow`; an error answer the
//! router's extractors wrote as plain text (a bad query string, a body too large) is turned
//! into the same JSON, keeping its status and headers. Answers only; never logs a body.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::Response;
use serde_json::json;

/// The most of a plain-text error body carried over into the JSON message.
const MAX_MESSAGE: usize = 4096;

/// The fallback: no such path.
pub(super) async fn not_found(uri: Uri) -> Response {
    let path = uri.path();
    let path = path.get(..path.len().min(200)).unwrap_or("");
    super::error(
        StatusCode::NOT_FOUND,
        format!(
            "no endpoint at {path:?}: the paths are /, /healthz, /readyz, /metrics, /api/v1/… and /webhooks/… (see the README's \"Status page, API, metrics and webhooks\")"
        ),
    )
}

/// The message of an error answer that has no JSON body.
fn message(status: StatusCode, allow: Option<&str>, text: &str) -> String {
    match (status, allow) {
        (StatusCode::METHOD_NOT_ALLOWED, Some(allow)) => {
            format!("method not allowed on this path; it accepts {allow}")
        }
        _ if !text.trim().is_empty() => text.trim().to_string(),
        _ => status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase(),
    }
}

/// Rewrites an error answer without a JSON body as `{"error", "status"}`.
pub(super) async fn json_errors(res: Response) -> Response {
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, MAX_MESSAGE)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let allow = parts
        .headers
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok());
    let body = json!({ "error": message(status, allow, &text), "status": status.as_u16() });
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_by_table() {
        let cases = [
            (
                StatusCode::METHOD_NOT_ALLOWED,
                Some("GET,HEAD"),
                "",
                "method not allowed on this path; it accepts GET,HEAD",
            ),
            (
                StatusCode::BAD_REQUEST,
                None,
                " Failed to deserialize query string\n",
                "Failed to deserialize query string",
            ),
            (StatusCode::PAYLOAD_TOO_LARGE, None, "", "payload too large"),
        ];
        for (status, allow, text, want) in cases {
            assert_eq!(message(status, allow, text), want);
        }
    }

    #[tokio::test]
    async fn plain_errors_become_json_and_keep_headers() {
        let res = Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .header(header::ALLOW, "POST")
            .body(Body::empty())
            .expect("response");
        let res = json_errors(res).await;
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(res.headers()[header::ALLOW], "POST");
        let body = axum::body::to_bytes(res.into_body(), 1024)
            .await
            .expect("body");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["status"], 405);
        assert_eq!(
            v["error"],
            "method not allowed on this path; it accepts POST"
        );
    }
}
