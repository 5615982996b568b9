//! Where a dataset lives: the one parser of storage URLs, and the one place
//! that builds an object store for each of them.
//!
//! | URL | backend | notes |
//! |---|---|---|
//! | `file://PATH` | local disk | a path not starting with `/` is relative to the working directory |
//! | `s3://BUCKET/PREFIX` | S3 or an S3-compatible server | credentials, region, endpoint and plain HTTP from `AWS_*` variables or [`S3Options`]; path-style requests unless asked otherwise |
//! | `hdfs://HOST:PORT/PATH` | HDFS (pure-Rust NameNode client) | every call has a deadline ([`StoreOptions::request_timeout`]) |
//!
//! What each backend guarantees to the master dataset (see
//! [`MasterStore::write_manifest`](super::MasterStore::write_manifest)): a
//! put replaces an object atomically on all three (S3 by its semantics, local
//! disk and HDFS by writing a temporary file and renaming it); a conditional
//! create (`PutMode::Create`, the writer lease) is atomic on all three; a
//! compare-and-swap of the manifest (`PutMode::Update`) exists on S3 only, so
//! on local disk and HDFS the writer lease alone keeps a second writer out.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::ClientConfigKey;
use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::prefix::PrefixStore;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const EXPECTED: &str = "expected file://PATH, s3://BUCKET/PREFIX or hdfs://HOST:PORT/PATH";

/// A parsed storage URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageUrl {
    /// A local directory (relative paths are relative to the working
    /// directory).
    File {
        /// The directory.
        path: PathBuf,
    },
    /// An S3 (or S3-compatible) bucket.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix inside the bucket, without leading or trailing `/`;
        /// may be empty.
        prefix: String,
    },
    /// A directory of an HDFS cluster.
    Hdfs {
        /// `HOST:PORT` (or a nameservice) of the NameNode.
        authority: String,
        /// Path inside the file system, without leading or trailing `/`;
        /// may be empty (the root).
        path: String,
    },
}

impl StorageUrl {
    /// Parses a storage URL.
    ///
    /// # Errors
    ///
    /// A message (without a config key) saying what is wrong and what is
    /// expected.
    pub fn parse(url: &str) -> std::result::Result<Self, String> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(format!("{url:?} is not a URL ({EXPECTED})"));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" if rest.is_empty() => Err(format!("{url:?} names no path ({EXPECTED})")),
            "file" => Ok(StorageUrl::File {
                path: PathBuf::from(rest),
            }),
            "s3" | "s3a" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if !valid_bucket(bucket) {
                    return Err(format!(
                        "{url:?}: {bucket:?} is not a valid S3 bucket name (3 to 63 of a-z 0-9 . -, starting and ending with a letter or digit)"
                    ));
                }
                let prefix = clean_key(url, prefix)?;
                Ok(StorageUrl::S3 {
                    bucket: bucket.to_owned(),
                    prefix,
                })
            }
            "hdfs" => {
                let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
                if authority.is_empty() {
                    return Err(format!("{url:?} names no NameNode ({EXPECTED})"));
                }
                let path = clean_key(url, path)?;
                Ok(StorageUrl::Hdfs {
                    authority: authority.to_owned(),
                    path,
                })
            }
            _ => Err(format!(
                "{url:?} has unsupported scheme {scheme:?} ({EXPECTED})"
            )),
        }
    }

    /// `file`, `s3` or `hdfs`.
    pub fn scheme(&self) -> &'static str {
        match self {
            StorageUrl::File { .. } => "file",
            StorageUrl::S3 { .. } => "s3",
            StorageUrl::Hdfs { .. } => "hdfs",
        }
    }

    /// Whether a put can be conditional on the version read
    /// (`PutMode::Update`): S3 only.
    pub fn has_compare_and_swap(&self) -> bool {
        matches!(self, StorageUrl::S3 { .. })
    }
}

impl fmt::Display for StorageUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageUrl::File { path } => write!(f, "file://{}", path.display()),
            StorageUrl::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            StorageUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            StorageUrl::Hdfs { authority, path } => write!(f, "hdfs://{authority}/{path}"),
        }
    }
}

/// A key prefix without leading, trailing or doubled `/`, and no `.` or
/// `..` segment (object-store paths cannot hold them: refusing here gives
/// the user the reason).
fn clean_key(url: &str, raw: &str) -> std::result::Result<String, String> {
    let mut parts = Vec::new();
    for part in raw.split('/').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." {
            return Err(format!(
                "{url:?}: path segments `.` and `..` are not allowed"
            ));
        }
        parts.push(part);
    }
    Ok(parts.join("/"))
}

fn valid_bucket(name: &str) -> bool {
    let edge_ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && edge_ok(name.bytes().next())
        && edge_ok(name.bytes().last())
}

/// S3 settings (`[storage.s3]`). Every key left out falls back to the
/// variable object_store's S3 builder reads (`AWS_REGION`,
/// `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP`, ...); a key given here wins.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Options {
    /// Region, e.g. `eu-west-1` (S3-compatible servers mostly accept any;
    /// object_store's default is `us-east-1`).
    pub region: Option<String>,
    /// Endpoint of an S3-compatible server, e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Session token of temporary credentials.
    pub session_token: Option<String>,
    /// Allow a plain-HTTP endpoint (refused unless set, here or by
    /// `AWS_ALLOW_HTTP=true`).
    pub allow_http: Option<bool>,
    /// `BUCKET.HOST` requests instead of path-style `HOST/BUCKET` (the
    /// default, which S3-compatible servers expect).
    pub virtual_hosted_style: bool,
}

impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |s: &Option<String>| s.as_ref().map(|_| "<hidden>");
        f.debug_struct("S3Options")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &hidden(&self.secret_access_key))
            .field("session_token", &hidden(&self.session_token))
            .field("allow_http", &self.allow_http)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .finish()
    }
}

/// How a store is reached: S3 settings and the deadlines every backend
/// gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// S3 settings (ignored for other schemes).
    pub s3: S3Options,
    /// Longest one request may take (S3: the whole HTTP exchange; HDFS:
    /// each call, and each item of a listing or a read).
    pub request_timeout: Duration,
    /// Longest the connection phase of an S3 request may take.
    pub connect_timeout: Duration,
    /// Longest a failing S3 request is retried for, in all.
    pub retry_timeout: Duration,
    /// How many times a failing S3 request is retried.
    pub max_retries: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            s3: S3Options::default(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            retry_timeout: Duration::from_secs(30),
            max_retries: 3,
        }
    }
}

/// Builds the object store for `url`, rooted at its path or prefix.
/// `file://` directories are created when `create_dir` is set (and must
/// exist otherwise). Never contacts a remote store: a wrong endpoint or
/// credentials show at the first request.
///
/// # Errors
///
/// [`Error::Plan`] for a URL or settings that cannot work (a bad URL, an
/// `http://` endpoint without `allow_http`, `hdfs://` in a build without
/// the `hdfs` feature, a directory that cannot be created).
pub fn open_store(
    url: &StorageUrl,
    options: &StoreOptions,
    create_dir: bool,
) -> Result<Arc<dyn ObjectStore>> {
    match url {
        StorageUrl::File { path } => {
            if create_dir {
                std::fs::create_dir_all(path).map_err(|e| {
                    Error::plan(format!("`{url}`: cannot create {}: {e}", path.display()))
                })?;
            } else if !path.is_dir() {
                return Err(Error::plan(format!(
                    "`{url}`: {} is not a directory",
                    path.display()
                )));
            }
            let store = object_store::local::LocalFileSystem::new_with_prefix(path)
                .map_err(|e| Error::plan(format!("`{url}`: {e}")))?;
            Ok(Arc::new(store))
        }
        StorageUrl::S3 { bucket, prefix } => {
            let builder = s3_builder(bucket, options);
            check_plain_http(url, &builder)?;
            let store = builder
                .build()
                .map_err(|e| Error::plan(format!("`{url}`: {e}")))?;
            Ok(with_prefix(Arc::new(store), prefix))
        }
        StorageUrl::Hdfs { authority, path } => hdfs_store(url, authority, path, options),
    }
}

fn with_prefix(store: Arc<dyn ObjectStore>, prefix: &str) -> Arc<dyn ObjectStore> {
    if prefix.is_empty() {
        store
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    }
}

fn s3_builder(bucket: &str, options: &StoreOptions) -> AmazonS3Builder {
    let s3 = &options.s3;
    let secs = |d: Duration| format!("{}ms", d.as_millis());
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_virtual_hosted_style_request(s3.virtual_hosted_style)
        .with_config(
            AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
            secs(options.request_timeout),
        )
        .with_config(
            AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
            secs(options.connect_timeout),
        )
        .with_retry(object_store::RetryConfig {
            max_retries: options.max_retries,
            retry_timeout: options.retry_timeout,
            ..Default::default()
        });
    let keys = [
        (AmazonS3ConfigKey::Region, &s3.region),
        (AmazonS3ConfigKey::Endpoint, &s3.endpoint),
        (AmazonS3ConfigKey::AccessKeyId, &s3.access_key_id),
        (AmazonS3ConfigKey::SecretAccessKey, &s3.secret_access_key),
        (AmazonS3ConfigKey::Token, &s3.session_token),
    ];
    for (key, value) in keys {
        if let Some(value) = value {
            builder = builder.with_config(key, value.clone());
        }
    }
    if let Some(allow) = s3.allow_http {
        builder = builder.with_allow_http(allow);
    }
    builder
}

/// A plain-HTTP endpoint without `allow_http` would fail every request
/// with "URL scheme is not allowed"; say so at start-up instead.
fn check_plain_http(url: &StorageUrl, builder: &AmazonS3Builder) -> Result<()> {
    let endpoint = builder.get_config_value(&AmazonS3ConfigKey::Endpoint);
    let allowed = builder
        .get_config_value(&AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp))
        .is_some_and(|v| {
            // object_store's own reading of a boolean setting
            ["true", "1", "on", "yes", "y"]
                .iter()
                .any(|t| v.eq_ignore_ascii_case(t))
        });
    match endpoint {
        Some(endpoint) if endpoint.starts_with("http://") && !allowed => Err(Error::plan(format!(
            "`{url}`: the endpoint {endpoint} is plain HTTP; allow it with `allow_http = true` in [storage.s3] or AWS_ALLOW_HTTP=true"
        ))),
        _ => Ok(()),
    }
}

#[cfg(feature = "hdfs")]
fn hdfs_store(
    url: &StorageUrl,
    authority: &str,
    path: &str,
    options: &StoreOptions,
) -> Result<Arc<dyn ObjectStore>> {
    let store = hdfs_native_object_store::HdfsObjectStoreBuilder::new()
        .with_url(format!("hdfs://{authority}"))
        .build()
        .map_err(|e| Error::plan(format!("`{url}`: {e}")))?;
    let bounded = super::bounded::Bounded::new(Arc::new(store), options.request_timeout);
    Ok(with_prefix(Arc::new(bounded), path))
}

#[cfg(not(feature = "hdfs"))]
fn hdfs_store(
    url: &StorageUrl,
    _authority: &str,
    _path: &str,
    _options: &StoreOptions,
) -> Result<Arc<dyn ObjectStore>> {
    Err(Error::plan(format!(
        "`{url}`: this build has no HDFS support (build with the `hdfs` feature)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let parse = |u: &str| StorageUrl::parse(u);
        assert_eq!(
            parse("file://./lamina-data/master").unwrap(),
            StorageUrl::File {
                path: "./lamina-data/master".into()
            }
        );
        assert_eq!(
            parse("file:///srv/lamina").unwrap(),
            StorageUrl::File {
                path: "/srv/lamina".into()
            }
        );
        assert_eq!(
            parse("s3://my-bucket/views//prod/").unwrap(),
            StorageUrl::S3 {
                bucket: "my-bucket".into(),
                prefix: "views/prod".into()
            }
        );
        // Spark's s3a:// is the same bucket.
        assert_eq!(parse("s3a://bkt/x").unwrap().to_string(), "s3://bkt/x");
        assert_eq!(
            parse("S3://bkt").unwrap(),
            StorageUrl::S3 {
                bucket: "bkt".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            parse("hdfs://nn:9000/lamina/").unwrap(),
            StorageUrl::Hdfs {
                authority: "nn:9000".into(),
                path: "lamina".into()
            }
        );
        assert_eq!(parse("s3://b-1/a/b").unwrap().to_string(), "s3://b-1/a/b");
        assert_eq!(
            parse("hdfs://nn:9000").unwrap().to_string(),
            "hdfs://nn:9000/"
        );
        for (bad, fragment) in [
            ("./data", "is not a URL"),
            ("gs://b/p", "unsupported scheme \"gs\""),
            ("viewfs://c/p", "unsupported scheme \"viewfs\""),
            ("file://", "names no path"),
            ("s3://Upper/x", "not a valid S3 bucket"),
            ("s3:///x", "not a valid S3 bucket"),
            ("s3://bkt/a/../b", "`..` are not allowed"),
            ("hdfs:///x", "names no NameNode"),
            ("hdfs://nn:1/./x", "`..` are not allowed"),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains(fragment), "{bad}: {err}");
        }
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let s3 = S3Options {
            access_key_id: Some("AKIA".into()),
            secret_access_key: Some("very-secret".into()),
            session_token: Some("tok-secret".into()),
            ..Default::default()
        };
        let shown = format!("{s3:?}");
        assert!(shown.contains("AKIA"), "{shown}");
        assert!(!shown.contains("secret\""), "{shown}");
        assert!(
            !shown.contains("very-secret") && !shown.contains("tok-secret"),
            "{shown}"
        );
    }

    #[test]
    fn plain_http_endpoint_needs_allow_http() {
        // from_env also reads AWS_ALLOW_HTTP; the explicit setting wins.
        let url = StorageUrl::parse("s3://bkt/p").unwrap();
        let mut options = StoreOptions::default();
        options.s3.endpoint = Some("http://127.0.0.1:9".into());
        options.s3.region = Some("us-east-1".into());
        options.s3.allow_http = Some(false);
        let err = open_store(&url, &options, false).err().unwrap().to_string();
        assert!(
            err.contains("s3://bkt/p") && err.contains("allow_http"),
            "{err}"
        );
        options.s3.allow_http = Some(true);
        open_store(&url, &options, false).unwrap();
    }
}
