//! GitHub App authentication: a JWT (RS256, signed with the App's private key, `iss` the
//! App's id, valid nine minutes) exchanged for an installation access token
//! (`POST /app/installations/{id}/access_tokens`, limited to the one repository), the
//! installation looked up for the repo (`GET /repos/{owner}/{repo}/installation`) when the
//! config does not name it. Tokens are kept in memory per forge, App and repo, shared by every
//! client of the process and by `git push`, and minted again [`REFRESH_BEFORE`] before they
//! expire (or at once when the forge refuses one).
//!
//! It must never log, format or store the private key, a JWT or a token: errors name the key
//! file and what is wrong with it, or the forge's answer, never a credential.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::json;

use super::ForgeError;
use crate::config::GitHubApp;

/// How long before its expiry an installation token is replaced (seconds).
pub const REFRESH_BEFORE: i64 = 300;

/// How long a JWT is valid (seconds; GitHub accepts at most ten minutes).
const JWT_LIFETIME: i64 = 540;

/// How far back a JWT's `iat` is set, for clocks a little ahead of GitHub's (seconds).
const CLOCK_DRIFT: i64 = 60;

/// An installation token and when it expires (Unix seconds).
#[derive(Clone)]
struct Minted {
    token: String,
    expires_at: i64,
}

/// Whether a token expiring at `expires_at` may still be used at `now` (both Unix seconds).
#[must_use]
pub fn usable(expires_at: i64, now: i64) -> bool {
    now + REFRESH_BEFORE < expires_at
}

/// One forge, App and repo.
type Key = (String, u64, String);

/// The tokens of the process, one slot per [`Key`]; a slot's lock is held while it refreshes,
/// so concurrent calls mint one token, not one each.
type Slots = Mutex<HashMap<Key, Arc<tokio::sync::Mutex<Option<Minted>>>>>;

fn slots() -> &'static Slots {
    static SLOTS: OnceLock<Slots> = OnceLock::new();
    SLOTS.get_or_init(Slots::default)
}

fn slot(key: Key) -> Arc<tokio::sync::Mutex<Option<Minted>>> {
    let mut map = slots()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    map.entry(key).or_default().clone()
}

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("protond/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default()
    })
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn key_error(app: &GitHubApp, message: impl Into<String>) -> ForgeError {
    ForgeError::AppKey {
        path: app.private_key_file.display().to_string(),
        message: message.into(),
    }
}

/// The DER bytes and label of the first PEM block of `text`.
fn pem(text: &str) -> Option<(String, Vec<u8>)> {
    let start = text.find("-----BEGIN ")?;
    let rest = &text[start + "-----BEGIN ".len()..];
    let (label, rest) = rest.split_once("-----")?;
    let end = rest.find(&format!("-----END {label}-----"))?;
    let b64: String = rest[..end].chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .ok()?;
    Some((label.to_string(), der))
}

/// The App's key from the PEM text of its key file: PKCS#1 (`RSA PRIVATE KEY`, what GitHub
/// hands out) or PKCS#8 (`PRIVATE KEY`).
///
/// # Errors
///
/// What is wrong with the text (never the text itself).
pub fn parse_key(text: &str) -> Result<RsaKeyPair, String> {
    let (label, der) = pem(text).ok_or_else(|| {
        "it holds no PEM block (-----BEGIN RSA PRIVATE KEY----- ...); download the key again from the App's settings".to_string()
    })?;
    let parsed = match label.as_str() {
        "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der),
        "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der),
        other => {
            return Err(format!(
                "it holds a {other:?} block, not an RSA private key (RSA PRIVATE KEY or PRIVATE KEY)"
            ));
        }
    };
    parsed.map_err(|e| format!("it is not a usable RSA private key ({e})"))
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The App's JWT at `now` (Unix seconds): RS256, `iat` a minute back, `exp` nine minutes on.
///
/// # Errors
///
/// When signing fails.
pub fn jwt(app_id: u64, key: &RsaKeyPair, now: i64) -> Result<String, String> {
    let header = b64url(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = json!({ "iat": now - CLOCK_DRIFT, "exp": now + JWT_LIFETIME, "iss": app_id });
    let message = format!("{header}.{}", b64url(claims.to_string().as_bytes()));
    let mut signature = vec![0; key.public_modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        message.as_bytes(),
        &mut signature,
    )
    .map_err(|_| "signing failed".to_string())?;
    Ok(format!("{message}.{}", b64url(&signature)))
}

fn app_headers(jwt: &str) -> Result<HeaderMap, String> {
    let mut h = HeaderMap::new();
    let mut auth = HeaderValue::from_str(&format!("Bearer {jwt}"))
        .map_err(|_| "the JWT cannot travel in a header".to_string())?;
    auth.set_sensitive(true);
    h.insert("Authorization", auth);
    h.insert(
        "Accept",
        HeaderValue::from_static("application/vnd.github+json"),
    );
    h.insert(
        "X-GitHub-Api-Version",
        HeaderValue::from_static("2022-11-28"),
    );
    Ok(h)
}

#[derive(Deserialize)]
struct Installation {
    id: u64,
}

#[derive(Deserialize)]
struct AccessToken {
    token: String,
    expires_at: String,
}

async fn call<T: serde::de::DeserializeOwned>(
    what: &'static str,
    req: reqwest::RequestBuilder,
) -> Result<T, ForgeError> {
    let resp = req
        .send()
        .await
        .map_err(|source| ForgeError::Http { what, source })?;
    super::read_json(what, resp).await
}

/// Mints an installation token for `repo` (`owner/name`) at API `base`.
async fn mint(base: &str, repo: &str, app: &GitHubApp) -> Result<Minted, ForgeError> {
    let path = app.private_key_file.clone();
    let text = tokio::fs::read_to_string(&path)
        .await
        .map_err(|e| key_error(app, e.to_string()))?;
    let key = parse_key(&text).map_err(|m| key_error(app, m))?;
    let token = jwt(app.app_id, &key, now()).map_err(|m| key_error(app, m))?;
    let headers = app_headers(&token).map_err(|m| key_error(app, m))?;
    let installation = if let Some(id) = app.installation_id {
        id
    } else {
        let req = client()
            .get(format!("{base}/repos/{repo}/installation"))
            .headers(headers.clone());
        call::<Installation>("look up the GitHub App's installation", req)
            .await?
            .id
    };
    let name = repo.rsplit('/').next().unwrap_or(repo);
    let req = client()
        .post(format!(
            "{base}/app/installations/{installation}/access_tokens"
        ))
        .headers(headers)
        .json(&json!({ "repositories": [name] }));
    let answer: AccessToken = call("mint a GitHub App installation token", req).await?;
    let expires_at = chrono::DateTime::parse_from_rfc3339(&answer.expires_at)
        .map_err(|e| ForgeError::Status {
            what: "mint a GitHub App installation token",
            status: 200,
            message: format!("expires_at {:?} is not a time: {e}", answer.expires_at),
        })?
        .timestamp();
    Ok(Minted {
        token: answer.token,
        expires_at,
    })
}

/// The installation token for `repo` at `base`: the one held while it has more than
/// [`REFRESH_BEFORE`] left, else a new one.
///
/// # Errors
///
/// [`ForgeError::AppKey`] when the key file cannot be used; the forge's refusal otherwise.
pub async fn token(base: &str, repo: &str, app: &GitHubApp) -> Result<String, ForgeError> {
    let slot = slot((base.to_string(), app.app_id, repo.to_string()));
    let mut held = slot.lock().await;
    if let Some(m) = held.as_ref()
        && usable(m.expires_at, now())
    {
        return Ok(m.token.clone());
    }
    let minted = mint(base, repo, app).await?;
    let token = minted.token.clone();
    *held = Some(minted);
    Ok(token)
}

/// Drops the token held for `repo` at `base` when it is still `refused` (the forge answered
/// 401 with it): the next [`token`] mints another.
pub async fn forget(base: &str, repo: &str, app: &GitHubApp, refused: &str) {
    let slot = slot((base.to_string(), app.app_id, repo.to_string()));
    let mut held = slot.lock().await;
    if held.as_ref().is_some_and(|m| m.token == refused) {
        *held = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer as _;
    use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    #[test]
    fn tokens_are_replaced_five_minutes_before_they_expire() {
        for (expires_in, ok) in [
            (3600, true),
            (REFRESH_BEFORE + 1, true),
            (REFRESH_BEFORE, false),
            (60, false),
            (0, false),
            (-10, false),
        ] {
            assert_eq!(
                usable(1_000_000 + expires_in, 1_000_000),
                ok,
                "{expires_in}"
            );
        }
    }

    fn pem_of(label: &str, der: &[u8]) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).expect("ascii"))
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    #[test]
    fn jwts_are_rs256_with_the_app_as_issuer_and_nine_minutes_valid() {
        let key = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("generate");
        let pkcs8 = key.as_der().expect("pkcs8");
        let parsed = parse_key(&pem_of("PRIVATE KEY", pkcs8.as_ref())).expect("parse pkcs8");
        let token = jwt(77, &parsed, 1_700_000_000).expect("jwt");
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let decode = |s: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s)
                .expect("base64url")
        };
        let header: serde_json::Value = serde_json::from_slice(&decode(parts[0])).expect("json");
        assert_eq!(header["alg"], "RS256");
        let claims: serde_json::Value = serde_json::from_slice(&decode(parts[1])).expect("json");
        assert_eq!(claims["iss"], 77);
        assert_eq!(claims["iat"], 1_700_000_000 - 60);
        assert_eq!(claims["exp"], 1_700_000_000 + 540);
        let public = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key.public_key().as_ref());
        public
            .verify(
                format!("{}.{}", parts[0], parts[1]).as_bytes(),
                &decode(parts[2]),
            )
            .expect("the signature verifies with the public half");
    }

    #[test]
    fn bad_key_files_say_what_is_wrong_without_the_contents() {
        let e = parse_key("not a key at all").expect_err("no PEM");
        assert!(e.contains("no PEM block"), "{e}");
        let e = parse_key(&pem_of("CERTIFICATE", b"secret-bytes")).expect_err("label");
        assert!(e.contains("CERTIFICATE"), "{e}");
        let e = parse_key(&pem_of("RSA PRIVATE KEY", b"secret-bytes")).expect_err("garbage");
        assert!(e.contains("not a usable RSA private key"), "{e}");
        assert!(!e.contains("secret"), "{e}");
    }
}
