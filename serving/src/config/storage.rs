//! `[storage]`: where the master dataset and the local state live.

use std::path::PathBuf;
use std::time::Duration;

pub use lamina::master::{S3Options, StorageUrl, StoreOptions};
use serde::{Deserialize, Serialize};

use super::error::{ConfigError, Report};

/// `[storage]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    /// Where the master dataset (sealed epochs as Parquet, and their
    /// manifest) is kept: `file://PATH`, `s3://BUCKET/PREFIX` or
    /// `hdfs://HOST:PORT/PATH`. A `file://` path not starting with `/` is
    /// relative to the working directory (`file:///srv/lamina` is absolute).
    /// Default `file://./lamina-data/master`.
    pub master_url: String,
    /// Local directory for the sled state (views, positions) and the
    /// write-ahead log; relative to the working directory.
    /// Default `./lamina-data/state`.
    pub state_dir: PathBuf,
    /// Read the master dataset of another server without writing to it:
    /// no writer lease is taken, nothing is ingested (receivers are not
    /// started, HTTP ingest answers 403 `read_only`) and nothing is sealed;
    /// batch runs compute the views over the epochs the writer sealed.
    /// Default false.
    pub master_read_only: bool,
    /// Longest one request to the storage may take, in milliseconds (S3:
    /// one HTTP exchange; HDFS: each call, and each item of a listing or a
    /// read, so that an unreachable NameNode fails a seal or a batch run
    /// instead of hanging it). Default 30000; 100..=600000.
    pub request_timeout_ms: u64,
    /// Longest the connection phase of an S3 request may take, in
    /// milliseconds. Default 5000; 100..=600000.
    pub connect_timeout_ms: u64,
    /// Longest a failing S3 request is retried for, in all, in
    /// milliseconds. Default 30000; 0..=600000.
    pub retry_timeout_ms: u64,
    /// How many times a failing S3 request is retried. Default 3; 0..=20.
    pub max_retries: usize,
    /// `[storage.s3]`: S3 settings; each key left out falls back to the
    /// `AWS_*` variable object_store reads (`AWS_REGION`,
    /// `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP`). Requests are path-style
    /// unless `virtual_hosted_style = true`.
    pub s3: S3Options,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            master_url: "file://./lamina-data/master".into(),
            state_dir: PathBuf::from("./lamina-data/state"),
            master_read_only: false,
            request_timeout_ms: 30_000,
            connect_timeout_ms: 5_000,
            retry_timeout_ms: 30_000,
            max_retries: 3,
            s3: S3Options::default(),
        }
    }
}

impl StorageConfig {
    /// The parsed [`master_url`](Self::master_url).
    ///
    /// # Errors
    ///
    /// `storage.master_url` is not a supported URL (never for a validated
    /// config).
    pub fn master_location(&self) -> Result<StorageUrl, ConfigError> {
        StorageUrl::parse(&self.master_url)
            .map_err(|message| ConfigError::new("storage.master_url", message))
    }

    /// How the storage is reached: the `[storage.s3]` settings and the
    /// timeouts.
    pub fn store_options(&self) -> StoreOptions {
        StoreOptions {
            s3: self.s3.clone(),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            retry_timeout: Duration::from_millis(self.retry_timeout_ms),
            max_retries: self.max_retries,
        }
    }

    pub(super) fn validate(&self, report: &mut Report) {
        if let Err(e) = self.master_location() {
            report.errors.push(e);
        }
        report.range(
            "storage.request_timeout_ms",
            self.request_timeout_ms,
            100..=600_000,
        );
        report.range(
            "storage.connect_timeout_ms",
            self.connect_timeout_ms,
            100..=600_000,
        );
        report.range(
            "storage.retry_timeout_ms",
            self.retry_timeout_ms,
            0..=600_000,
        );
        report.range("storage.max_retries", self.max_retries, 0..=20);
        if let Some(endpoint) = &self.s3.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            report.push(
                "storage.s3.endpoint",
                format!("{endpoint:?} is not an http:// or https:// URL"),
            );
        }
        if self.s3.access_key_id.is_some() != self.s3.secret_access_key.is_some() {
            report.push(
                "storage.s3.secret_access_key",
                "set both access_key_id and secret_access_key, or neither (then AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are used)",
            );
        }
        if self.state_dir.as_os_str().is_empty() {
            report.push("storage.state_dir", "is empty (expected a directory path)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_options_follow_the_keys() {
        let mut storage = StorageConfig {
            request_timeout_ms: 1_500,
            max_retries: 0,
            ..Default::default()
        };
        storage.s3.endpoint = Some("http://127.0.0.1:9000".into());
        let options = storage.store_options();
        assert_eq!(options.request_timeout, Duration::from_millis(1_500));
        assert_eq!(options.max_retries, 0);
        assert_eq!(
            options.s3.endpoint.as_deref(),
            Some("http://127.0.0.1:9000")
        );
        let mut report = Report::default();
        storage.validate(&mut report);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
    }
}
