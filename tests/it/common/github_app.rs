//! The GitHub App side of the fake GitHub ([`super::forge::FakeForge::enable_app`]): the
//! installation lookup and the token endpoint, each checking the App's JWT (its RS256
//! signature against the public half of the test key, `iss`, `iat`, `exp`), and the
//! installation tokens it issued, accepted on the API until they expire.

use std::sync::{Arc, Mutex};

use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};

use super::forge::Inner;

/// A GitHub App installed on the fake's repository.
#[derive(Debug, Clone)]
pub struct App {
    pub id: u64,
    pub installation_id: u64,
    /// The key's public half, PKCS#1 DER.
    pub public_key: Vec<u8>,
    /// How long tokens are issued for (seconds).
    pub lifetime: i64,
    /// Tokens issued, with their expiry (Unix seconds).
    pub issued: Vec<(String, i64)>,
    /// `GET /repos/{repo}/installation` calls.
    pub lookups: usize,
    /// The installation token each API request carried, in order.
    pub uses: Vec<String>,
    /// How many of the next tokens issued are refused on use (401), as revoked ones are.
    pub revoke_next: usize,
    /// Tokens refused on use.
    pub revoked: Vec<String>,
}

impl App {
    pub fn new(id: u64, installation_id: u64, public_key: Vec<u8>, lifetime: i64) -> Self {
        Self {
            id,
            installation_id,
            public_key,
            lifetime,
            issued: Vec::new(),
            lookups: 0,
            uses: Vec::new(),
            revoke_next: 0,
            revoked: Vec::new(),
        }
    }
}

/// An RSA key in PKCS#1 PEM (as GitHub hands App keys out) written to `path`, and its public
/// half in PKCS#1 DER.
pub fn key(path: &std::path::Path) -> Vec<u8> {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let p = path.to_str().expect("utf-8 path");
    run(&["genrsa", "-traditional", "-out", p, "2048"]);
    run(&["rsa", "-in", p, "-RSAPublicKey_out", "-outform", "DER"])
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Whether `bearer` is the App's JWT: signed by its key, issued by it, now valid, and for at
/// most ten minutes. The problem otherwise.
fn check_jwt(app: &App, bearer: &str) -> Result<(), String> {
    let jwt = bearer.strip_prefix("Bearer ").ok_or("no Bearer JWT")?;
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return Err("not a JWT".into());
    };
    let decode = |s: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|e| format!("not base64url: {e}"))
    };
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &app.public_key)
        .verify(format!("{header}.{claims}").as_bytes(), &decode(signature)?)
        .map_err(|_| "the signature does not verify with the App's public key")?;
    let header: Value = serde_json::from_slice(&decode(header)?).map_err(|e| e.to_string())?;
    if header["alg"] != "RS256" {
        return Err(format!("alg {} is not RS256", header["alg"]));
    }
    let c: Value = serde_json::from_slice(&decode(claims)?).map_err(|e| e.to_string())?;
    let iss_text = c["iss"].as_str().map(str::to_string);
    if c["iss"].as_u64() != Some(app.id) && iss_text != Some(app.id.to_string()) {
        return Err(format!("iss {} is not the App {}", c["iss"], app.id));
    }
    let (Some(iat), Some(exp)) = (c["iat"].as_i64(), c["exp"].as_i64()) else {
        return Err("iat or exp missing".into());
    };
    let now = now();
    if iat > now + 5 || iat < now - 120 {
        return Err(format!("iat {iat} is not about now ({now})"));
    }
    if exp <= now || exp - iat > 600 {
        return Err(format!(
            "exp {exp} is past or over ten minutes after iat {iat}"
        ));
    }
    Ok(())
}

/// What an installation token in `authorization` is worth: `None` when it is no token the
/// App issued, else whether it is still valid (and its use is counted).
pub fn token_valid(inner: &Arc<Mutex<Inner>>, authorization: &str) -> Option<bool> {
    let mut g = inner.lock().expect("lock");
    let app = g.app.as_mut()?;
    let token = authorization.strip_prefix("Bearer ")?;
    let (_, expires) = app.issued.iter().find(|(t, _)| t == token)?;
    let valid = *expires > now() && !app.revoked.iter().any(|t| t == token);
    app.uses.push(token.to_string());
    Some(valid)
}

/// Answers the App's own endpoints (`None` for any other request): the installation of
/// `repo`, and a token for `repo` alone. Problems are violations.
pub fn handle(
    inner: &Arc<Mutex<Inner>>,
    prefix: &str,
    repo: &str,
    method: &Method,
    path: &str,
    authorization: &str,
    body: &Value,
) -> Option<Response> {
    let mut g = inner.lock().expect("lock");
    let lookup = *method == Method::GET && path == format!("{prefix}/repos/{repo}/installation");
    let mint = path.starts_with(&format!("{prefix}/app/"));
    if g.app.is_none() || !(lookup || mint) {
        return None;
    }
    let app = g.app.clone().expect("app");
    let mut fail = |what: String| {
        g.violations.push(format!("{method} {path}: {what}"));
        Some(
            (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({ "message": what })),
            )
                .into_response(),
        )
    };
    if let Err(e) = check_jwt(&app, authorization) {
        return fail(format!("bad App JWT: {e}"));
    }
    if lookup {
        g.app.as_mut().expect("app").lookups += 1;
        return Some(
            axum::Json(json!({ "id": app.installation_id, "app_id": app.id })).into_response(),
        );
    }
    let expected = format!(
        "{prefix}/app/installations/{}/access_tokens",
        app.installation_id
    );
    if *method != Method::POST || path != expected {
        return fail(format!("not {expected}"));
    }
    let name = repo.rsplit('/').next().expect("name");
    if body["repositories"] != json!([name]) {
        return fail(format!("the token is not limited to {name}: {body}"));
    }
    let a = g.app.as_mut().expect("app");
    let token = format!("ghs_fake_installation_token_{}", a.issued.len() + 1);
    let expires = now() + a.lifetime;
    a.issued.push((token.clone(), expires));
    if a.revoke_next > 0 {
        a.revoke_next -= 1;
        a.revoked.push(token.clone());
    }
    let expires_at = chrono::DateTime::from_timestamp(expires, 0)
        .expect("time")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    Some(
        (
            StatusCode::CREATED,
            axum::Json(json!({ "token": token, "expires_at": expires_at })),
        )
            .into_response(),
    )
}
