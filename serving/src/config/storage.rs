//! `[storage]`: where the master dataset and the local state live.

use std::path::PathBuf;

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
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            master_url: "file://./lamina-data/master".into(),
            state_dir: PathBuf::from("./lamina-data/state"),
            master_read_only: false,
        }
    }
}

/// The parsed `master_url`: what the batch layer builds its object store
/// from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterLocation {
    /// A local directory (relative paths are relative to the working
    /// directory).
    File {
        /// The directory.
        path: PathBuf,
    },
    /// An S3 (or S3-compatible) bucket; credentials and endpoint come from
    /// the environment.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix inside the bucket, without leading or trailing `/`;
        /// may be empty.
        prefix: String,
    },
    /// An HDFS cluster.
    Hdfs {
        /// `HOST:PORT` (or a nameservice) of the NameNode.
        authority: String,
        /// Path inside the file system, starting with `/` (or empty).
        path: String,
    },
}

impl MasterLocation {
    /// Parses a master dataset URL.
    ///
    /// # Errors
    ///
    /// A message (without the key) saying what is wrong and what is
    /// expected.
    pub fn parse(url: &str) -> Result<Self, String> {
        const EXPECTED: &str = "expected file://PATH, s3://BUCKET/PREFIX or hdfs://HOST:PORT/PATH";
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(format!("{url:?} is not a URL ({EXPECTED})"));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" if rest.is_empty() => Err(format!("{url:?} names no path ({EXPECTED})")),
            "file" => Ok(MasterLocation::File {
                path: PathBuf::from(rest),
            }),
            "s3" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if !valid_bucket(bucket) {
                    return Err(format!(
                        "{url:?}: {bucket:?} is not a valid S3 bucket name (3 to 63 of a-z 0-9 . -, starting and ending with a letter or digit)"
                    ));
                }
                Ok(MasterLocation::S3 {
                    bucket: bucket.to_owned(),
                    prefix: prefix.trim_matches('/').to_owned(),
                })
            }
            "hdfs" => {
                let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
                if authority.is_empty() {
                    return Err(format!("{url:?} names no NameNode ({EXPECTED})"));
                }
                Ok(MasterLocation::Hdfs {
                    authority: authority.to_owned(),
                    path: path.to_owned(),
                })
            }
            _ => Err(format!(
                "{url:?} has unsupported scheme {scheme:?} ({EXPECTED})"
            )),
        }
    }
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

impl StorageConfig {
    /// The parsed [`master_url`](Self::master_url).
    ///
    /// # Errors
    ///
    /// `storage.master_url` is not a supported URL (never for a validated
    /// config).
    pub fn master_location(&self) -> Result<MasterLocation, ConfigError> {
        MasterLocation::parse(&self.master_url)
            .map_err(|message| ConfigError::new("storage.master_url", message))
    }

    pub(super) fn validate(&self, report: &mut Report) {
        if let Err(e) = self.master_location() {
            report.errors.push(e);
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
    fn master_urls() {
        let parse = |u: &str| MasterLocation::parse(u);
        assert_eq!(
            parse("file://./lamina-data/master").unwrap(),
            MasterLocation::File {
                path: "./lamina-data/master".into()
            }
        );
        assert_eq!(
            parse("file:///srv/lamina").unwrap(),
            MasterLocation::File {
                path: "/srv/lamina".into()
            }
        );
        assert_eq!(
            parse("s3://my-bucket/views/prod/").unwrap(),
            MasterLocation::S3 {
                bucket: "my-bucket".into(),
                prefix: "views/prod".into()
            }
        );
        assert_eq!(
            parse("S3://bkt").unwrap(),
            MasterLocation::S3 {
                bucket: "bkt".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            parse("hdfs://nn:9000/lamina").unwrap(),
            MasterLocation::Hdfs {
                authority: "nn:9000".into(),
                path: "/lamina".into()
            }
        );
        for (bad, fragment) in [
            ("./data", "is not a URL"),
            ("gs://b/p", "unsupported scheme \"gs\""),
            ("file://", "names no path"),
            ("s3://Upper/x", "not a valid S3 bucket"),
            ("s3:///x", "not a valid S3 bucket"),
            ("hdfs:///x", "names no NameNode"),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains(fragment), "{bad}: {err}");
        }
    }
}
