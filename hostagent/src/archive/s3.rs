//! An [`ObjectStore`] in an S3-compatible bucket (`aws-sdk-s3`): AWS S3, or a self-hosted server
//! (Garage, MinIO, s3s-fs) with `path_style` and an `endpoint`.
//!
//! Objects are written whole with one `PutObject` each (chunks are at most
//! [`super::chunks::CHUNK_SIZE`]), so an upload cut short leaves no multipart upload behind to
//! abort. Connections time out after 5 s and each attempt after 60 s; a failed request is tried
//! three times. Checksums are only computed where the API requires them, which self-hosted servers
//! all accept (every chunk carries its own BLAKE3 anyway, checked on download).

use async_trait::async_trait;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::store::{ObjectStore, check_key};
use crate::error::{Error, Result};

/// Where and how to reach the bucket.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Config {
    /// The server's URL (`http://127.0.0.1:9000`); `None` = AWS S3 of `region`.
    pub endpoint: Option<String>,
    /// Region (`us-east-1` for most self-hosted servers).
    pub region: String,
    /// Bucket (it must exist).
    pub bucket: String,
    /// Prepended to every key (`platinum/`), empty for none.
    #[serde(default)]
    pub prefix: String,
    /// Path-style requests (`<endpoint>/<bucket>/<key>`), which self-hosted servers need.
    #[serde(default)]
    pub path_style: bool,
    /// Access key.
    pub credentials: S3Credentials,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("path_style", &self.path_style)
            .field("credentials", &self.credentials)
            .finish()
    }
}

/// An access key. Its `Debug` shows the key id only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Credentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token of temporary credentials.
    #[serde(default)]
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// The bucket.
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    describe: String,
}

impl S3Store {
    /// A client for `config` (nothing is sent until the first request).
    pub fn new(config: &S3Config) -> Result<S3Store> {
        if config.bucket.is_empty() || config.region.is_empty() {
            return Err(Error::Invalid(
                "an S3 object store needs a bucket and a region".into(),
            ));
        }
        if !config.prefix.is_empty() {
            check_key(config.prefix.trim_end_matches('/'))?;
        }
        let c = &config.credentials;
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .credentials_provider(Credentials::new(
                c.access_key_id.clone(),
                c.secret_access_key.clone(),
                c.session_token.clone(),
                None,
                "platinum",
            ))
            .force_path_style(config.path_style)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(60))
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        let prefix = match config.prefix.trim_end_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        let describe = format!(
            "s3://{}/{prefix} at {}",
            config.bucket,
            config.endpoint.as_deref().unwrap_or(&config.region)
        );
        Ok(S3Store {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
            prefix,
            describe,
        })
    }

    fn key(&self, key: &str) -> Result<String> {
        check_key(key)?;
        Ok(format!("{}{key}", self.prefix))
    }

    fn failed(&self, operation: &str, key: &str, e: impl std::error::Error) -> Error {
        Error::ObjectStore {
            operation: format!("{operation} {key} in {}", self.describe),
            message: DisplayErrorContext(e).to_string(),
        }
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn has(&self, key: &str) -> Result<bool> {
        let full = self.key(key)?;
        let sent = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
            Err(e) => Err(self.failed("HEAD", key, e)),
        }
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let full = self.key(key)?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&full)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| self.failed("PUT", key, e))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let full = self.key(key)?;
        let sent = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await;
        let out = match sent {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Ok(None);
            }
            Err(e) => return Err(self.failed("GET", key, e)),
        };
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| self.failed("GET", key, e))?;
        Ok(Some(body.into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> S3Config {
        S3Config {
            endpoint: Some("http://127.0.0.1:1".into()),
            region: "us-east-1".into(),
            bucket: "b".into(),
            prefix: "platinum/".into(),
            path_style: true,
            credentials: S3Credentials {
                access_key_id: "AKID".into(),
                secret_access_key: "very-secret".into(),
                session_token: None,
            },
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let shown = format!("{:?}", config());
        assert!(
            shown.contains("AKID") && !shown.contains("very-secret"),
            "{shown}"
        );
    }

    #[test]
    fn bad_configurations_are_refused() {
        let mut c = config();
        c.bucket.clear();
        assert!(S3Store::new(&c).is_err());
        let mut c = config();
        c.prefix = "../x".into();
        assert!(S3Store::new(&c).is_err());
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_typed_error_naming_the_store() {
        let store = S3Store::new(&config()).unwrap();
        let e = store.has("chunks/x").await.unwrap_err();
        assert!(matches!(e, Error::ObjectStore { .. }), "{e:?}");
        assert!(e.to_string().contains("s3://b/platinum/"), "{e}");
        assert!(!e.to_string().contains("very-secret"));
    }
}
