//! `platinum up`'s object store options: where archived sandboxes go.
//!
//! No option: the directory `<data>/archive`. `--archive-dir DIR`: another directory (a mounted
//! share, say). `--archive-s3-bucket B` (with `--archive-s3-endpoint URL` and
//! `--archive-s3-path-style` for a self-hosted server): an S3-compatible bucket. The access key
//! comes from `--archive-s3-credentials-file` (the AWS shared credentials format: the
//! `[default]` profile, or the file's only one) or else from `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`; it is never logged or shown.

use anyhow::{Context, Result, bail};
use clap::Args;
use platinum_hostagent::archive::{ObjectStoreConfig, S3Config, S3Credentials};
use std::path::{Path, PathBuf};

/// Object store options of `platinum up`.
#[derive(Debug, Args)]
pub struct ArchiveStoreArgs {
    /// Directory archived sandboxes go to (default `<data>/archive`); not with an S3 bucket.
    #[arg(long, value_name = "DIR", env = "PLATINUM_ARCHIVE_DIR")]
    pub archive_dir: Option<PathBuf>,
    /// S3 bucket archived sandboxes go to.
    #[arg(long, value_name = "BUCKET", env = "PLATINUM_ARCHIVE_S3_BUCKET")]
    pub archive_s3_bucket: Option<String>,
    /// S3-compatible server URL (default: AWS S3 of the region).
    #[arg(long, value_name = "URL", env = "PLATINUM_ARCHIVE_S3_ENDPOINT")]
    pub archive_s3_endpoint: Option<String>,
    /// Bucket region.
    #[arg(
        long,
        value_name = "REGION",
        env = "PLATINUM_ARCHIVE_S3_REGION",
        default_value = "us-east-1"
    )]
    pub archive_s3_region: String,
    /// Key prefix inside the bucket (`platinum/`).
    #[arg(
        long,
        value_name = "PREFIX",
        env = "PLATINUM_ARCHIVE_S3_PREFIX",
        default_value = ""
    )]
    pub archive_s3_prefix: String,
    /// Path-style requests (`<endpoint>/<bucket>/<key>`), as self-hosted servers need.
    #[arg(long, env = "PLATINUM_ARCHIVE_S3_PATH_STYLE")]
    pub archive_s3_path_style: bool,
    /// AWS shared credentials file with the bucket's access key (else the `AWS_*` variables).
    #[arg(
        long,
        value_name = "FILE",
        env = "PLATINUM_ARCHIVE_S3_CREDENTIALS_FILE"
    )]
    pub archive_s3_credentials_file: Option<PathBuf>,
}

impl ArchiveStoreArgs {
    /// The store these options name; `None` for the default.
    pub fn config(&self) -> Result<Option<ObjectStoreConfig>> {
        let Some(bucket) = &self.archive_s3_bucket else {
            return Ok(self
                .archive_dir
                .clone()
                .map(|path| ObjectStoreConfig::Dir { path }));
        };
        if self.archive_dir.is_some() {
            bail!("--archive-dir and --archive-s3-bucket name two stores; give one");
        }
        let credentials = match &self.archive_s3_credentials_file {
            Some(file) => credentials_file(file)?,
            None => credentials_env()?,
        };
        Ok(Some(ObjectStoreConfig::S3(S3Config {
            endpoint: self.archive_s3_endpoint.clone(),
            region: self.archive_s3_region.clone(),
            bucket: bucket.clone(),
            prefix: self.archive_s3_prefix.clone(),
            path_style: self.archive_s3_path_style,
            credentials,
        })))
    }
}

fn credentials_env() -> Result<S3Credentials> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(S3Credentials {
            access_key_id,
            secret_access_key,
            session_token: var("AWS_SESSION_TOKEN"),
        }),
        _ => bail!(
            "an S3 archive store needs an access key: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
             or --archive-s3-credentials-file"
        ),
    }
}

/// Reads the `[default]` profile (or the only one) of an AWS shared credentials file.
fn credentials_file(path: &Path) -> Result<S3Credentials> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the credentials file {}", path.display()))?;
    parse_credentials(&text).with_context(|| format!("in {}", path.display()))
}

fn parse_credentials(text: &str) -> Result<S3Credentials> {
    let mut profiles: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            profiles.push((name.trim().to_string(), Vec::new()));
        } else if let (Some((key, value)), Some(profile)) =
            (line.split_once('='), profiles.last_mut())
        {
            profile
                .1
                .push((key.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let profile = match profiles.iter().find(|(name, _)| name == "default") {
        Some(p) => p,
        None if profiles.len() == 1 => &profiles[0],
        None => bail!("no [default] profile"),
    };
    let get = |key: &str| {
        profile
            .1
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(S3Credentials {
            access_key_id,
            secret_access_key,
            session_token: get("aws_session_token"),
        }),
        _ => bail!(
            "profile [{}] lacks aws_access_key_id or aws_secret_access_key",
            profile.0
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_credentials_files_are_read() {
        let text = "# keys\n[other]\naws_access_key_id = X\n\n[default]\naws_access_key_id=AK\n\
                    aws_secret_access_key = s3cr3t\naws_session_token = tok\n";
        let c = parse_credentials(text).unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.secret_access_key.as_str()),
            ("AK", "s3cr3t")
        );
        assert_eq!(c.session_token.as_deref(), Some("tok"));
        let only =
            parse_credentials("[ci]\naws_access_key_id=A\naws_secret_access_key=B\n").unwrap();
        assert_eq!(only.access_key_id, "A");
        assert!(parse_credentials("[a]\naws_access_key_id=A\n[b]\n").is_err());
        let e = parse_credentials("[default]\naws_access_key_id=A\n").unwrap_err();
        assert!(format!("{e:#}").contains("lacks"), "{e:#}");
    }
}
