//! The S3 artifact bucket (`[aws] artifact_bucket`): where `CloudFormation` templates over the
//! 51,200-byte `TemplateBody` limit are put to be deployed by `TemplateURL`, and where
//! `CodeBuild` provisioning's bundles, inputs and outputs travel.
//!
//! Keys are content-addressed (`<prefix>/<what>/<stack or resource>/<sha256>.<ext>`), so a
//! retried upload writes the same object again and never a second one. Objects are written
//! and read with the identity that deploys the resource (the placement's role, else the
//! default credentials), in the bucket's region (`[aws] artifact_region`, default
//! `[aws] region`). With an endpoint override (a local `moto_server`) requests are
//! path-style.
//!
//! This module only stores and reads objects; it never decides what to deploy and never
//! deletes anything (a lifecycle rule on the bucket expires old artifacts).

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::config::ArtifactBucket;

/// An S3 call on the artifact bucket that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{operation} of s3://{bucket}/{key} failed: {message} (the artifact bucket is `[aws] artifact_bucket`; the deploying identity needs s3:PutObject and s3:GetObject on it)"
)]
pub struct ArtifactError {
    /// The S3 operation.
    pub operation: &'static str,
    /// The bucket.
    pub bucket: String,
    /// The object key.
    pub key: String,
    /// S3's error code and message.
    pub message: String,
    /// Whether retrying later may help (throttling, 5xx, network).
    pub retryable: bool,
}

/// The artifact bucket's S3 clients, one per identity.
#[derive(Clone)]
pub struct Artifacts {
    base: aws_config::SdkConfig,
    bucket: ArtifactBucket,
    path_style: bool,
    by_role: Arc<Mutex<BTreeMap<String, Client>>>,
}

impl std::fmt::Debug for Artifacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Artifacts")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

/// The SHA-256 of `bytes`, hex.
#[must_use]
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Artifacts {
    /// The bucket `bucket`, reached with `base`'s endpoint and credentials (path-style when
    /// `base` has an endpoint override).
    #[must_use]
    pub fn new(base: &aws_config::SdkConfig, bucket: ArtifactBucket) -> Self {
        Self {
            path_style: base.endpoint_url().is_some(),
            base: base.clone(),
            bucket,
            by_role: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// The bucket's name.
    #[must_use]
    pub fn bucket(&self) -> &str {
        &self.bucket.bucket
    }

    /// The folder of `name`'s artifacts of `kind`: `<prefix>/<kind>/<name>` (no trailing `/`).
    #[must_use]
    pub fn folder(&self, kind: &str, name: &str) -> String {
        if self.bucket.prefix.is_empty() {
            format!("{kind}/{name}")
        } else {
            format!("{}/{kind}/{name}", self.bucket.prefix)
        }
    }

    /// The key of an artifact: `<prefix>/<kind>/<name>/<sha256 of body>.<ext>`.
    #[must_use]
    pub fn key(&self, kind: &str, name: &str, body: &[u8], ext: &str) -> String {
        format!("{}/{}.{ext}", self.folder(kind, name), sha256_hex(body))
    }

    /// The HTTPS URL of `key`, as `CloudFormation`'s `TemplateURL` wants it: virtual-hosted
    /// (`https://<bucket>.s3.<region>.amazonaws.com/<key>`), or path-style for a bucket name
    /// with dots (which a virtual-hosted certificate does not cover).
    #[must_use]
    pub fn url(&self, key: &str) -> String {
        let b = &self.bucket;
        if b.bucket.contains('.') {
            format!("https://s3.{}.amazonaws.com/{}/{key}", b.region, b.bucket)
        } else {
            format!("https://{}.s3.{}.amazonaws.com/{key}", b.bucket, b.region)
        }
    }

    async fn client(&self, role_arn: Option<&str>) -> Client {
        let mut cache = self.by_role.lock().await;
        let slot = role_arn.unwrap_or("");
        if let Some(c) = cache.get(slot) {
            return c.clone();
        }
        let mut conf = aws_sdk_s3::config::Builder::from(&self.base)
            .region(aws_sdk_s3::config::Region::new(self.bucket.region.clone()))
            .force_path_style(self.path_style);
        if let Some(role) = role_arn {
            let provider = aws_config::sts::AssumeRoleProvider::builder(role)
                .session_name("protond")
                .configure(&self.base)
                .build()
                .await;
            conf = conf.credentials_provider(provider);
        }
        let client = Client::from_conf(conf.build());
        cache.insert(slot.to_string(), client.clone());
        client
    }

    /// Writes `body` under `key` as `role_arn` (or the default credentials).
    pub async fn put(
        &self,
        role_arn: Option<&str>,
        key: &str,
        body: Vec<u8>,
    ) -> Result<(), ArtifactError> {
        self.client(role_arn)
            .await
            .put_object()
            .bucket(&self.bucket.bucket)
            .key(key)
            .body(body.into())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.error("PutObject", key, &e))
    }

    /// Reads `key`; `None` when there is no such object.
    pub async fn get(
        &self,
        role_arn: Option<&str>,
        key: &str,
    ) -> Result<Option<Vec<u8>>, ArtifactError> {
        let out = match self
            .client(role_arn)
            .await
            .get_object()
            .bucket(&self.bucket.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(SdkError::ServiceError(se)) if se.err().is_no_such_key() => return Ok(None),
            Err(e) => return Err(self.error("GetObject", key, &e)),
        };
        let bytes = out.body.collect().await.map_err(|e| ArtifactError {
            operation: "GetObject",
            bucket: self.bucket.bucket.clone(),
            key: key.to_string(),
            message: format!("reading the body: {e}"),
            retryable: true,
        })?;
        Ok(Some(bytes.into_bytes().to_vec()))
    }

    fn error<E, R>(&self, operation: &'static str, key: &str, e: &SdkError<E, R>) -> ArtifactError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let (message, retryable) = match e {
            SdkError::ServiceError(se) => {
                let err = se.err();
                let code = err.code().unwrap_or("Unknown");
                let retryable = matches!(
                    code,
                    "SlowDown" | "InternalError" | "ServiceUnavailable" | "RequestTimeout"
                );
                (
                    format!("{code}: {}", err.message().unwrap_or("")),
                    retryable,
                )
            }
            SdkError::DispatchFailure(_)
            | SdkError::TimeoutError(_)
            | SdkError::ResponseError(_) => (super::aws_errors::no_answer("S3", e), true),
            other => (other.to_string(), false),
        };
        ArtifactError {
            operation,
            bucket: self.bucket.bucket.clone(),
            key: key.to_string(),
            message,
            retryable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifacts(bucket: &str, prefix: &str) -> Artifacts {
        let base = aws_config::SdkConfig::builder().build();
        Artifacts::new(
            &base,
            ArtifactBucket {
                bucket: bucket.into(),
                prefix: prefix.into(),
                region: "eu-west-1".into(),
            },
        )
    }

    #[test]
    fn keys_are_content_addressed_and_urls_fit_cloudformation() {
        let a = artifacts("my-bucket", "protond/x");
        let k = a.key("templates", "stack-1", b"body", "yaml");
        assert_eq!(
            k,
            format!("protond/x/templates/stack-1/{}.yaml", sha256_hex(b"body"))
        );
        assert_eq!(k, a.key("templates", "stack-1", b"body", "yaml"));
        assert_ne!(k, a.key("templates", "stack-1", b"body2", "yaml"));
        assert_eq!(
            a.url("a/b.yaml"),
            "https://my-bucket.s3.eu-west-1.amazonaws.com/a/b.yaml"
        );
        let dotted = artifacts("my.bucket", "");
        assert_eq!(
            dotted.key("t", "s", b"", "json"),
            format!("t/s/{}.json", sha256_hex(b""))
        );
        assert_eq!(
            dotted.url("k"),
            "https://s3.eu-west-1.amazonaws.com/my.bucket/k"
        );
    }
}
