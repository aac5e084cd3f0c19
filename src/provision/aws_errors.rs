//! Words for AWS calls that never got an answer: missing or expired credentials (saying which
//! profile and which chain were tried) told apart from an endpoint that cannot be reached,
//! with the SDK's cause chain on one line and no debug text. Shared by every AWS client of
//! [`crate::provision`]; it only formats, it never retries or decides.

use std::error::Error;

/// Whether an SDK error's cause chain says the credentials were missing or expired.
#[must_use]
pub fn is_credentials(chain: &str) -> bool {
    let c = chain.to_ascii_lowercase();
    c.contains("credential") || c.contains("expiredtoken") || c.contains("token has expired")
}

/// The profile the default chain reads (`AWS_PROFILE`, else `default`).
fn profile() -> String {
    std::env::var("AWS_PROFILE")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "default".into())
}

/// The message for a call to `service` that got no answer (`DispatchFailure`, timeout, a
/// response that could not be read): credentials when the chain says so, else the endpoint.
#[must_use]
pub fn no_answer(service: &str, e: &dyn Error) -> String {
    let chain = crate::error_chain(e);
    if is_credentials(&chain) {
        let expired = chain.to_ascii_lowercase().contains("expired");
        format!(
            "{} ({chain}); the default credential chain was tried: the AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY variables, profile {:?} (AWS_PROFILE) in ~/.aws/config and ~/.aws/credentials (or AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE), web identity (AWS_WEB_IDENTITY_TOKEN_FILE), the container and the instance metadata endpoints; {}",
            if expired {
                "AWS credentials expired"
            } else {
                "no AWS credentials found"
            },
            profile(),
            if expired {
                "renew them (e.g. `aws sso login`) and the next attempt uses them"
            } else {
                "provide one of them to protond's environment"
            }
        )
    } else {
        format!("{chain}: {service} endpoint unreachable or not responding")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("dispatch failure")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Inner(&'static str);

    #[test]
    fn credentials_are_told_apart_from_the_endpoint() {
        let creds = no_answer(
            "AWS",
            &Outer(Inner("other: the credential provider was not enabled")),
        );
        assert!(creds.starts_with("no AWS credentials found (dispatch failure: other: the credential provider was not enabled)"), "{creds}");
        assert!(creds.contains("profile"), "{creds}");
        assert!(!creds.contains("unreachable"), "{creds}");
        let expired = no_answer(
            "AWS",
            &Outer(Inner("ExpiredToken: the security token has expired")),
        );
        assert!(expired.starts_with("AWS credentials expired"), "{expired}");
        let down = no_answer(
            "AWS",
            &Outer(Inner("io error: Connection refused (os error 111)")),
        );
        assert_eq!(
            down,
            "dispatch failure: io error: Connection refused (os error 111): AWS endpoint unreachable or not responding"
        );
    }
}
