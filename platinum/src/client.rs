//! The HTTP client the CLI uses: base URL and API key resolution, typed errors from the server's
//! `{"code","message"}` bodies.

use anyhow::{Context, Result, anyhow};
use reqwest::{Method, RequestBuilder, Response};
use std::path::Path;

/// Environment variable with the server URL.
pub const URL_ENV: &str = "PLATINUM_URL";
/// Environment variable with the API key.
pub const KEY_ENV: &str = "PLATINUM_API_KEY";

/// A configured client.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

/// A failure the server reported.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message} (HTTP {status})")]
pub struct ServerError {
    /// HTTP status.
    pub status: u16,
    /// Machine code.
    pub code: String,
    /// Explanation.
    pub message: String,
}

/// The server URL: `url`, else `$PLATINUM_URL`, else the default listen address.
pub fn base_url(url: Option<String>) -> String {
    url.or_else(|| std::env::var(URL_ENV).ok())
        .unwrap_or_else(|| format!("http://{}", crate::server::DEFAULT_LISTEN))
}

/// The API key: `$PLATINUM_API_KEY`, else the server's key file in `data_dir`.
pub fn api_key(data_dir: &Path) -> Result<String> {
    match std::env::var(KEY_ENV) {
        Ok(k) if !k.trim().is_empty() => Ok(k.trim().to_string()),
        _ => {
            let path = data_dir.join(platinum_engine::auth::KEY_FILE);
            std::fs::read_to_string(&path)
                .map(|k| k.trim().to_string())
                .with_context(|| {
                    format!(
                        "no API key: set {KEY_ENV} or run on the server host (reading {})",
                        path.display()
                    )
                })
        }
    }
}

impl Client {
    /// URL from `url` or `$PLATINUM_URL` or the default; key from `$PLATINUM_API_KEY` or
    /// `<data_dir>/api-key`.
    pub fn resolve(url: Option<String>, data_dir: &Path) -> Result<Self> {
        Ok(Client::new(base_url(url), api_key(data_dir)?))
    }

    /// A client for `base` with `key`.
    pub fn new(base: String, key: String) -> Self {
        Client {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_string(),
            key,
        }
    }

    /// Starts a request to `path` (e.g. `/v1/sandboxes`).
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }

    /// Sends and turns non-2xx answers into [`ServerError`]s.
    pub async fn send(&self, req: RequestBuilder) -> Result<Response> {
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        Err(anyhow!(ServerError {
            status,
            code: parsed["code"].as_str().unwrap_or("http_error").to_string(),
            message: parsed["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or(text),
        }))
    }

    /// Sends and decodes a JSON answer.
    pub async fn json<T: serde::de::DeserializeOwned>(&self, req: RequestBuilder) -> Result<T> {
        Ok(self.send(req).await?.json().await?)
    }
}
