//! The configuration: one TOML file, its embedded default, and validation
//! that reports every problem at once, each naming its key.
//!
//! - [`Config`]: the whole file; [`Config::load`] and
//!   [`Config::from_toml_str`] parse and validate it, [`Config::default`]
//!   is [`DEFAULT_CONFIG`].
//! - Sections: [`ServerConfig`] and [`AuthConfig`] (`server`), [`StorageConfig`]
//!   (`storage`), [`SpeedConfig`] (`speed`), [`StreamConfig`] with its
//!   [`ReceiverConfig`]s (`stream`, `receiver`), [`ViewConfig`] (`view`),
//!   [`BatchConfig`] (`batch`).
//! - Config builds the runtime object: [`Config::view_specs`] gives the
//!   engine's [`ViewSpec`]s, [`BatchConfig::build_schedule`] a
//!   [`BatchSchedule`], [`StorageConfig::master_location`] a
//!   [`StorageUrl`], [`ServerConfig::listen_addr`] a socket address,
//!   [`AuthConfig::bearer_token`] the token.
//! - [`ConfigErrors`]: every problem, one [`ConfigError`] (key path and
//!   message, and line and column when the key is in the file) per line.
//!
//! Every key is optional except the names and kinds inside `[[stream]]`
//! and `[[view]]`. Streams and views default as a pair: a file with
//! neither gets the default stream `lines` and view `word_counts`; a file
//! with either gets exactly what it lists (`stream = []` for none). A file
//! with no streams and no views is valid: REST still runs. Relative paths
//! are relative to the working directory, not to the file.

mod batch;
mod error;
mod parse;
mod receiver;
mod server;
mod speed;
mod storage;
mod stream;
mod view;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

use lamina::view::{KeySpec, ViewSpec};
use serde::{Deserialize, Serialize};

pub use batch::{BatchConfig, BatchSchedule};
pub use error::{ConfigError, ConfigErrors, Location};
pub use receiver::{ReceiverConfig, TcpConnectConfig, TcpListenConfig};
pub use server::{AuthConfig, ServerConfig};
pub use speed::SpeedConfig;
pub use storage::{S3Options, StorageConfig, StorageUrl, StoreOptions};
pub use stream::{ColumnType, FieldConfig, LatePolicy, StreamConfig, StreamFormat, TEXT_COLUMN};
pub use view::{AggregateName, ViewConfig, WindowConfig};

/// A view with `aggregate = "last"` (see [`Config::last_views`]).
#[derive(Debug, Clone)]
pub struct LastViewDef {
    /// The stream it reads.
    pub stream: String,
    /// Its name.
    pub name: String,
    /// Its key.
    pub key: KeySpec,
    /// The column whose latest value it keeps.
    pub column: String,
    /// How long a key without new data is kept.
    pub ttl: Option<std::time::Duration>,
    /// The stream's event-time column, which orders the values.
    pub event_time: Option<String>,
}

/// A windowed view of the config (see [`Config::windowed_views`]).
#[derive(Debug, Clone)]
pub struct WindowedViewDef {
    /// The stream it reads.
    pub stream: String,
    /// The view, keyed as configured.
    pub spec: ViewSpec,
    /// Its window.
    pub window: lamina::streaming::windowed_view::WindowSpec,
    /// The column records are bucketed by.
    pub time_column: String,
}

use error::Report;
use parse::Document;

/// The embedded default config: REST on `127.0.0.1:8080`, a TCP line
/// listener on `127.0.0.1:9999` feeding the text stream `lines`, the view
/// `word_counts` (count of each word of `line`), the master dataset and
/// state under `./lamina-data`, a batch run every 10 minutes.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// What `origin` is for [`DEFAULT_CONFIG`] in errors.
pub const DEFAULT_ORIGIN: &str = "embedded default";

/// Largest config file read; a config is a few KiB.
const MAX_FILE_BYTES: u64 = 16 << 20;

/// A whole config file. Compare and serialize freely: `toml::to_string`
/// of a config parses back to an equal config.
///
/// Read configs with [`Config::from_toml_str`] or [`Config::load`]: plain
/// serde deserialization (`toml::from_str`) skips the unknown-key and value
/// checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ConfigFile")]
pub struct Config {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[storage]`.
    pub storage: StorageConfig,
    /// `[speed]`.
    pub speed: SpeedConfig,
    /// `[[stream]]`. Default: the stream `lines` (see the module docs).
    #[serde(rename = "stream")]
    pub streams: Vec<StreamConfig>,
    /// `[[view]]`. Default: the view `word_counts` (see the module docs).
    #[serde(rename = "view")]
    pub views: Vec<ViewConfig>,
    /// `[batch]`.
    pub batch: BatchConfig,
    /// `[auth]`. Default: no authentication.
    pub auth: AuthConfig,
}

/// The file as written: tells an absent `stream`/`view` from an empty one.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ConfigFile {
    server: ServerConfig,
    storage: StorageConfig,
    speed: SpeedConfig,
    stream: Option<Vec<StreamConfig>>,
    view: Option<Vec<ViewConfig>>,
    batch: BatchConfig,
    auth: AuthConfig,
}

impl From<ConfigFile> for Config {
    fn from(file: ConfigFile) -> Self {
        let (streams, views) = match (file.stream, file.view) {
            (None, None) => default_pipeline(),
            (streams, views) => (streams.unwrap_or_default(), views.unwrap_or_default()),
        };
        Config {
            server: file.server,
            storage: file.storage,
            speed: file.speed,
            streams,
            views,
            batch: file.batch,
            auth: file.auth,
        }
    }
}

/// The stream and view of the contract; `default.toml` spells them out and
/// a test keeps the two equal.
fn default_pipeline() -> (Vec<StreamConfig>, Vec<ViewConfig>) {
    let mut lines = StreamConfig::text("lines");
    lines
        .receivers
        .push(ReceiverConfig::TcpListen(TcpListenConfig {
            listen: "127.0.0.1:9999".into(),
            max_connections: 1024,
            idle_timeout_ms: 300_000,
        }));
    let word_counts = ViewConfig {
        name: "word_counts".into(),
        stream: "lines".into(),
        key: KeySpec::Words(TEXT_COLUMN.into()),
        aggregate: AggregateName::Count,
        column: None,
        k: None,
        window: None,
        ttl_secs: None,
    };
    (vec![lines], vec![word_counts])
}

/// [`DEFAULT_CONFIG`].
impl Default for Config {
    fn default() -> Self {
        Config::from_toml_str(DEFAULT_CONFIG, DEFAULT_ORIGIN)
            .expect("the embedded default config is valid (checked by its tests)")
    }
}

impl Config {
    /// Parses and validates a config. `origin` (a path, or
    /// [`DEFAULT_ORIGIN`]) prefixes every error line.
    ///
    /// # Errors
    ///
    /// A TOML syntax or type error (the first one; toml stops there), or
    /// else every unknown key and every bad value.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigErrors> {
        let fail = |errors| ConfigErrors {
            origin: origin.to_owned(),
            errors,
        };
        let doc = Document::parse(text).map_err(|e| fail(vec![e]))?;
        let (config, mut errors) = doc.deserialize::<Config>().map_err(|mut errors| {
            if let Some(last) = errors.last_mut()
                && is_receiver_path(&last.key)
                && let Some(refined) = receiver::refine_type_error(&doc, &last.key)
            {
                *last = refined;
            }
            fail(errors)
        })?;
        for (i, stream) in config.streams.iter().enumerate() {
            for (j, receiver) in stream.receivers.iter().enumerate() {
                errors.extend(receiver::unknown_keys(
                    receiver,
                    &doc,
                    &format!("stream[{i}].receiver[{j}]"),
                ));
            }
        }
        let mut report = Report::default();
        config.check(&mut report);
        errors.extend(report.errors.into_iter().map(|mut e| {
            e.location = doc.location_of(&e.key);
            e
        }));
        if errors.is_empty() {
            return Ok(config);
        }
        // In file order; problems with keys the file does not set last.
        errors.sort_by_key(|e| e.location.map_or((1, 0, 0), |l| (0, l.line, l.column)));
        Err(fail(errors))
    }

    /// Reads, parses and validates the config file at `path`; errors are
    /// prefixed by the path.
    ///
    /// # Errors
    ///
    /// The file cannot be read (or is larger than 16 MiB), or see
    /// [`Config::from_toml_str`].
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        use std::io::Read as _;
        let origin = path.display().to_string();
        let cannot_read = |why: &dyn std::fmt::Display| {
            ConfigErrors::single(
                &origin,
                ConfigError::new("", format!("cannot read the config file: {why}")),
            )
        };
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_string(&mut text))
            .map_err(|e| cannot_read(&e))?;
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(cannot_read(&format_args!(
                "larger than {MAX_FILE_BYTES} bytes"
            )));
        }
        Config::from_toml_str(&text, &origin)
    }

    /// Validates a config built or changed in code (what
    /// [`from_toml_str`](Self::from_toml_str) does after parsing; errors
    /// have no locations).
    ///
    /// # Errors
    ///
    /// Every bad value, prefixed by `origin`.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigErrors> {
        let mut report = Report::default();
        self.check(&mut report);
        if report.errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors {
                origin: origin.to_owned(),
                errors: report.errors,
            })
        }
    }

    /// The stream called `name`.
    pub fn stream(&self, name: &str) -> Option<&StreamConfig> {
        self.streams.iter().find(|s| s.name == name)
    }

    /// Every view as the engine runs it, with the stream it reads:
    /// `(stream, spec)` in config order.
    ///
    /// # Errors
    ///
    /// The first view the engine rejects, keyed `view[i]` (never for a
    /// validated config).
    pub fn view_specs(&self) -> Result<Vec<(String, ViewSpec)>, ConfigError> {
        self.views
            .iter()
            .enumerate()
            .filter(|(_, view)| view.window.is_none() && view.aggregate != AggregateName::Last)
            .map(|(i, view)| {
                view.spec()
                    .map(|spec| (view.stream.clone(), spec))
                    .map_err(|e| ConfigError::new(format!("view[{i}]"), e.to_string()))
            })
            .collect()
    }

    /// The windowed views (`window = {...}`): the stream, the view (keyed
    /// as configured), its window (retention: length plus the stream's
    /// allowed lateness) and the column it buckets records by.
    ///
    /// # Errors
    ///
    /// As [`view_specs`](Self::view_specs); never for a validated config.
    pub fn windowed_views(&self) -> Result<Vec<WindowedViewDef>, ConfigError> {
        let mut out = Vec::new();
        for (i, view) in self.views.iter().enumerate() {
            let Some(w) = &view.window else { continue };
            let fail = |e: lamina::Error| ConfigError::new(format!("view[{i}]"), e.to_string());
            let spec = view.spec().map_err(fail)?;
            let stream = self
                .streams
                .iter()
                .find(|s| s.name == view.stream)
                .ok_or_else(|| {
                    ConfigError::new(format!("view[{i}].stream"), "unknown stream".to_owned())
                })?;
            let window = lamina::streaming::windowed_view::WindowSpec::new(
                std::time::Duration::from_secs(w.length_secs),
                std::time::Duration::from_secs(w.slide()),
                std::time::Duration::from_secs(stream.allowed_lateness_secs),
            )
            .map_err(fail)?;
            out.push(WindowedViewDef {
                stream: view.stream.clone(),
                spec,
                window,
                time_column: stream.time_column().to_owned(),
            });
        }
        Ok(out)
    }

    /// The views with `aggregate = "last"`.
    pub fn last_views(&self) -> Vec<LastViewDef> {
        self.views
            .iter()
            .filter(|v| v.aggregate == AggregateName::Last)
            .filter_map(|v| {
                let stream = self.streams.iter().find(|s| s.name == v.stream)?;
                Some(LastViewDef {
                    stream: v.stream.clone(),
                    name: v.name.clone(),
                    key: v.key.clone(),
                    column: v.column.clone()?,
                    ttl: v.ttl_secs.map(std::time::Duration::from_secs),
                    event_time: stream.event_time.clone(),
                })
            })
            .collect()
    }

    fn check(&self, report: &mut Report) {
        self.server.validate(report);
        self.storage.validate(report);
        self.speed.validate(report);
        let mut names = HashMap::new();
        for (i, stream) in self.streams.iter().enumerate() {
            let key = format!("stream[{i}]");
            stream.validate(&key, self.server.max_body_bytes, report);
            if let Some(first) = names.insert(stream.name.as_str(), i) {
                report.push(
                    format!("{key}.name"),
                    format!(
                        "duplicate stream name {:?} (also stream[{first}])",
                        stream.name
                    ),
                );
            }
        }
        names.clear();
        for (i, view) in self.views.iter().enumerate() {
            let key = format!("view[{i}]");
            view.validate(&key, &self.streams, report);
            if let Some(first) = names.insert(view.name.as_str(), i) {
                report.push(
                    format!("{key}.name"),
                    format!("duplicate view name {:?} (also view[{first}])", view.name),
                );
            }
        }
        self.batch.validate(report);
        self.auth.validate(report);
        self.check_listen_conflicts(report);
    }

    /// Two sockets cannot listen on one port of one address (or of the
    /// wildcard address and any other).
    fn check_listen_conflicts(&self, report: &mut Report) {
        let mut bound: Vec<(String, SocketAddr)> = Vec::new();
        if let Ok(addr) = self.server.listen_addr() {
            bound.push(("server.listen".into(), addr));
        }
        for (i, stream) in self.streams.iter().enumerate() {
            for (j, receiver) in stream.receivers.iter().enumerate() {
                let ReceiverConfig::TcpListen(c) = receiver else {
                    continue;
                };
                let Ok(addr) = c.listen.parse::<SocketAddr>() else {
                    continue; // reported by the receiver's own check
                };
                let key = format!("stream[{i}].receiver[{j}].listen");
                let clash = |other: &SocketAddr| {
                    addr.port() != 0
                        && addr.port() == other.port()
                        && (addr.ip() == other.ip()
                            || addr.ip().is_unspecified()
                            || other.ip().is_unspecified())
                };
                if let Some((other_key, other)) = bound.iter().find(|(_, other)| clash(other)) {
                    report.push(
                        key.clone(),
                        format!("{addr} conflicts with {other_key} ({other})"),
                    );
                }
                bound.push((key, addr));
            }
        }
    }
}

/// Whether `key` is `stream[i].receiver[j]`.
fn is_receiver_path(key: &str) -> bool {
    let index = |s: &str| {
        s.strip_suffix(']')
            .is_some_and(|n| n.parse::<usize>().is_ok())
    };
    key.strip_prefix("stream[")
        .and_then(|rest| rest.split_once("].receiver["))
        .is_some_and(|(i, j)| i.parse::<usize>().is_ok() && index(j))
}

/// Stream and view names appear in URL paths and file names.
fn check_name(report: &mut Report, key: &str, name: &str) {
    if let Some(problem) = name_problem(name) {
        report.push(key, problem);
    }
}

/// What is wrong with a stream or view name (they appear in URL paths and
/// file names), if anything: also checked for views defined in Rust.
pub fn name_problem(name: &str) -> Option<String> {
    let valid_chars = (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !valid_chars {
        Some(format!(
            "{name:?} is not a valid name (1 to 128 of A-Z a-z 0-9 _ . -)"
        ))
    } else if name == "." || name == ".." {
        Some(format!(
            "{name:?} is not a valid name (a URL path segment that clients rewrite)"
        ))
    } else if !name.as_bytes()[0].is_ascii_alphanumeric() {
        // `_manifest.json`, `_writer.lease` and dot files live beside the
        // streams' folders in the master dataset.
        Some(format!(
            "{name:?} is not a valid name: it must start with a letter or a digit (names starting with `_`, `.` or `-` are reserved for the storage layout, e.g. `_manifest.json`)"
        ))
    } else {
        None
    }
}
