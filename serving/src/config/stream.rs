//! `[[stream]]`: named record streams, their format, schema and receivers.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::error::Report;
use super::receiver::ReceiverConfig;

/// The one column of a `text` stream: the line, without its newline.
pub const TEXT_COLUMN: &str = "line";

/// The source columns as config columns: what views and `event_time` may
/// name on a stream with a Kafka receiver (`_timestamp` is the record's
/// time at the source).
fn source_columns() -> Vec<FieldConfig> {
    let types = [
        ColumnType::String,
        ColumnType::Int64,
        ColumnType::Int64,
        ColumnType::Timestamp,
        ColumnType::String,
        ColumnType::String,
    ];
    lamina_speed::envelope::SOURCE_COLUMNS
        .iter()
        .zip(types)
        .map(|(name, ty)| FieldConfig {
            name: (*name).to_owned(),
            ty,
            nullable: true,
        })
        .collect()
}

/// How a record's bytes are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamFormat {
    /// Each record is one line of UTF-8 text, the string column `line`.
    #[default]
    Text,
    /// Each record is one JSON object; its fields are read by the schema.
    Json,
    /// Each record is one CSV row; columns in schema order.
    Csv,
}

impl fmt::Display for StreamFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StreamFormat::Text => "text",
            StreamFormat::Json => "json",
            StreamFormat::Csv => "csv",
        })
    }
}

/// The type of a schema column: the speed layer's own type, so the config
/// and the runtime cannot disagree (`string`, `int64`, `float64`, `bool`,
/// `timestamp`).
pub use lamina_speed::format::ColumnType;

/// One column of a stream's schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldConfig {
    /// Column name: the JSON field or the CSV column. Required.
    pub name: String,
    /// Column type. Required.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// Whether the value may be missing or null; a record missing a
    /// non-nullable value is a dead letter. Default false.
    #[serde(default)]
    pub nullable: bool,
}

/// One `[[stream]]`: records of one format, fed by receivers and by
/// `POST /v1/ingest/{name}` (always on, so there is no receiver entry for
/// HTTP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamConfig {
    /// Unique name, used in REST paths and Parquet file names:
    /// 1 to 128 of `A-Z a-z 0-9 _ . -`. Required.
    pub name: String,
    /// Record format: `text`, `json` or `csv`. Default `text`.
    #[serde(default)]
    pub format: StreamFormat,
    /// Columns of `json` and `csv` records, in order; required for those,
    /// not allowed for `text` (which has the one string column `line`).
    /// Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Vec<FieldConfig>>,
    /// Largest record accepted, in bytes. A larger record sent over HTTP
    /// fails its request (413, nothing appended); one arriving over a
    /// socket is kept as a dead letter.
    /// At most `server.max_body_bytes`. Default 1048576 (1 MiB).
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: u64,
    /// Receivers feeding this stream (`[[stream.receiver]]`). Default:
    /// none (HTTP ingest only).
    #[serde(default, rename = "receiver")]
    pub receivers: Vec<ReceiverConfig>,
    /// The column holding each record's event time (a `timestamp` or
    /// `int64` epoch-milliseconds column of the schema): windowed views of
    /// the stream bucket records by it, and the stream keeps a watermark
    /// (the largest event time seen minus `allowed_lateness_secs`).
    /// Default: none — windows use the time the server received the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<String>,
    /// How far behind the largest event time seen a record may be and still
    /// be on time. Default 0.
    #[serde(default)]
    pub allowed_lateness_secs: u64,
    /// What happens to a late record (event time before the watermark) in
    /// the stream's windowed views: `aside` (default) — it is left out of
    /// them, counted, and kept as a dead letter with reason `late`; `fold` —
    /// it is counted and folded into the oldest window still open. Every
    /// record, late or not, goes to the master dataset, so batch views keyed
    /// by event time are exact once a batch run has folded it into its true
    /// bucket.
    #[serde(default)]
    pub late_records: LatePolicy,
    /// Whether the stream has the source columns (`_source`, `_partition`,
    /// `_offset`, `_timestamp`, `_key`, `_headers`) though no receiver of
    /// it is one that adds them (`kafka`, `flume_avro` turn them on): for
    /// Flume events sent over HTTP ingest (`?format=flume`), whose headers
    /// are then kept in `_headers`. Default false.
    #[serde(default)]
    pub source_columns: bool,
    /// Parquet datasets written by other tools (Spark, pyarrow, DuckDB,
    /// ...) that every batch run reads as this stream's records before its
    /// own epochs: `file://`, `s3://` or `hdfs://` URLs of folders. Every
    /// `*.parquet` file below one is read (names starting with `_` or `.`
    /// are skipped); its columns are matched to the stream's by name (extra
    /// columns are ignored; a missing nullable column is null) and
    /// `key=value` folders give column `key`. A file whose columns do not
    /// match fails the run with an error naming it. Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<String>,
}

/// What a stream does with records later than its watermark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LatePolicy {
    /// Keep it out of windowed views, counted and visible as a dead letter.
    #[default]
    Aside,
    /// Fold it into the oldest window still open.
    Fold,
}

/// Longest lateness allowed: a week (windows keep their buckets that long).
const MAX_LATENESS_SECS: u64 = 7 * 86_400;

fn default_max_record_bytes() -> u64 {
    1 << 20
}

impl StreamConfig {
    /// A `text` stream with default settings and no receivers.
    pub fn text(name: impl Into<String>) -> Self {
        StreamConfig {
            name: name.into(),
            format: StreamFormat::Text,
            schema: None,
            max_record_bytes: default_max_record_bytes(),
            receivers: Vec::new(),
            event_time: None,
            allowed_lateness_secs: 0,
            late_records: LatePolicy::Aside,
            source_columns: false,
            history: Vec::new(),
        }
    }

    /// The columns records of this stream have: `line: string` for text,
    /// the schema otherwise.
    pub fn columns(&self) -> Cow<'_, [FieldConfig]> {
        let own = self.format_columns();
        if !self.has_source_columns() {
            return own;
        }
        let mut all = own.into_owned();
        all.extend(source_columns());
        Cow::Owned(all)
    }

    /// The columns the stream's format reads from each record (its
    /// [`columns`](Self::columns) without the source columns).
    pub fn format_columns(&self) -> Cow<'_, [FieldConfig]> {
        match (self.format, &self.schema) {
            (StreamFormat::Text, _) => Cow::Owned(vec![FieldConfig {
                name: TEXT_COLUMN.into(),
                ty: ColumnType::String,
                nullable: false,
            }]),
            (_, Some(schema)) => Cow::Borrowed(&schema[..]),
            (_, None) => Cow::Borrowed(&[][..]),
        }
    }

    /// Whether the stream has the source columns (`source_columns = true`,
    /// or a receiver that hands in its records' metadata: Kafka, Flume)
    /// (`_source`, `_partition`, `_offset`, `_timestamp`, `_key`,
    /// `_headers`).
    pub fn has_source_columns(&self) -> bool {
        self.receivers
            .iter()
            .any(ReceiverConfig::has_source_columns)
    }

    pub(super) fn validate(&self, key: &str, max_body_bytes: u64, report: &mut Report) {
        super::check_name(report, &format!("{key}.name"), &self.name);
        for (i, url) in self.history.iter().enumerate() {
            if let Err(e) = lamina::master::StorageUrl::parse(url) {
                report.push(format!("{key}.history[{i}]"), e);
            }
        }
        let schema_key = format!("{key}.schema");
        match (self.format, &self.schema) {
            (StreamFormat::Text, Some(_)) => report.push(
                schema_key,
                format!("not allowed for format text (text streams have one string column `{TEXT_COLUMN}`)"),
            ),
            (format @ (StreamFormat::Json | StreamFormat::Csv), None) => {
                report.push(schema_key, format!("required for format {format}"))
            }
            (StreamFormat::Json | StreamFormat::Csv, Some(schema)) => {
                if schema.is_empty() {
                    report.push(schema_key.clone(), "needs at least one column");
                }
                let mut seen = HashMap::new();
                for (i, field) in schema.iter().enumerate() {
                    let name_key = format!("{schema_key}[{i}].name");
                    if field.name.is_empty() {
                        report.push(name_key, "is empty");
                    } else if lamina_speed::envelope::SOURCE_COLUMNS.contains(&field.name.as_str()) {
                        report.push(
                            name_key,
                            format!(
                                "{:?} is reserved: it is one of the source columns ({}) that Kafka and Flume receivers add",
                                field.name,
                                lamina_speed::envelope::SOURCE_COLUMNS.join(", ")
                            ),
                        );
                    } else if field.name == lamina_speed::microbatch::RECEIVED_AT_COLUMN {
                        report.push(
                            name_key,
                            format!(
                                "{:?} is reserved: the speed layer adds that column (the time the server received the record)",
                                field.name
                            ),
                        );
                    } else if let Some(first) = seen.insert(field.name.as_str(), i) {
                        report.push(
                            name_key,
                            format!(
                                "duplicate column name {:?} (also {schema_key}[{first}])",
                                field.name
                            ),
                        );
                    }
                }
            }
            (StreamFormat::Text, None) => {}
        }
        if self.max_record_bytes == 0 || self.max_record_bytes > max_body_bytes {
            report.push(
                format!("{key}.max_record_bytes"),
                format!(
                    "{} is out of range (1..={max_body_bytes}: a record must fit in one request body, server.max_body_bytes)",
                    self.max_record_bytes
                ),
            );
        }
        for (j, receiver) in self.receivers.iter().enumerate() {
            super::receiver::validate(receiver, &format!("{key}.receiver[{j}]"), report);
        }
        if let Some(column) = &self.event_time {
            let columns = self.columns();
            match columns.iter().find(|f| &f.name == column) {
                None => report.push(
                    format!("{key}.event_time"),
                    format!(
                        "no column {column:?} in the stream (columns: {})",
                        columns
                            .iter()
                            .map(|f| f.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
                Some(f) if !matches!(f.ty, ColumnType::Timestamp | ColumnType::Int64) => report
                    .push(
                        format!("{key}.event_time"),
                        format!("column {column:?} is not a timestamp or int64 (epoch ms) column"),
                    ),
                Some(_) => {}
            }
        }
        report.range(
            &format!("{key}.allowed_lateness_secs"),
            self.allowed_lateness_secs,
            0..=MAX_LATENESS_SECS,
        );
    }

    /// The column windows of this stream bucket records by: the event-time
    /// column, or the time the server received the record.
    pub fn time_column(&self) -> &str {
        self.event_time
            .as_deref()
            .unwrap_or(lamina_speed::microbatch::RECEIVED_AT_COLUMN)
    }
}
