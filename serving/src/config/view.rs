//! `[[view]]`: views defined by data, turned into the engine's [`ViewSpec`].

use lamina::view::{AggregateKind, KeySpec, ViewSpec};
use serde::{Deserialize, Serialize};

use super::error::Report;
use super::stream::{ColumnType, FieldConfig, StreamConfig};

/// Largest `k` of a `top_k` view: every key keeps `k` values.
const MAX_TOP_K: usize = 10_000;

/// The `aggregate` names of the config. `top_k` takes its `k` from the
/// view's `k` key, so this is not [`AggregateKind`] itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregateName {
    /// Records per key.
    Count,
    /// Sum of a numeric column.
    Sum,
    /// Smallest value of a numeric column.
    Min,
    /// Largest value of a numeric column.
    Max,
    /// Mean of a numeric column.
    Mean,
    /// Approximate number of distinct values of a column.
    Distinct,
    /// The `k` largest values of a numeric column.
    TopK,
    /// The latest value of a column per key (by event time when the
    /// stream has one, else by arrival), forgotten after `ttl_secs`
    /// without new data.
    Last,
}

impl AggregateName {
    /// The name used in the config (`top_k`).
    pub fn name(self) -> &'static str {
        match self {
            AggregateName::Count => "count",
            AggregateName::Sum => "sum",
            AggregateName::Min => "min",
            AggregateName::Max => "max",
            AggregateName::Mean => "mean",
            AggregateName::Distinct => "distinct",
            AggregateName::TopK => "top_k",
            AggregateName::Last => "last",
        }
    }
}

/// One `[[view]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewConfig {
    /// Unique name, used in REST paths: 1 to 128 of `A-Z a-z 0-9 _ . -`.
    /// Required.
    pub name: String,
    /// The stream the view reads. Required.
    pub stream: String,
    /// How keys are extracted: `{ column = "c" }`, `{ words = "c" }`,
    /// `{ time_bucket = { column = "ts", width_secs = 60 } }` or
    /// `{ tuple = [ ... ] }` of those. Required.
    pub key: KeySpec,
    /// What is computed per key: `count`, `sum`, `min`, `max`, `mean`,
    /// `distinct` or `top_k`. Required.
    pub aggregate: AggregateName,
    /// The column the aggregate reads; required for every aggregate but
    /// `count`, not allowed for `count`. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// How many values `top_k` keeps, 1..=10000; required for `top_k`,
    /// not allowed otherwise. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    /// Makes the view windowed: `{ length_secs = 60, slide_secs = 10 }`
    /// (slide defaults to the length: tumbling windows). Answered for the
    /// newest complete window, or the one ending at `?window_end=`. Records
    /// are bucketed by the stream's `event_time`, or by the time the server
    /// received them. Default: none (the view covers all records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowConfig>,
    /// For `aggregate = "last"`: forget a key after this many seconds
    /// without new data (1..=31536000). Default: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
}

/// A view's `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowConfig {
    /// Window length in seconds: a multiple of the slide. Required.
    pub length_secs: u64,
    /// Seconds between the ends of consecutive windows (and the width of
    /// the buckets windows are made of), at least 1. Default: the length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slide_secs: Option<u64>,
}

/// Longest `ttl_secs`: a year.
const MAX_TTL_SECS: u64 = 365 * 86_400;

/// Longest window: a day.
const MAX_WINDOW_SECS: u64 = 86_400;

impl WindowConfig {
    /// The slide (the length when not given).
    pub fn slide(&self) -> u64 {
        self.slide_secs.unwrap_or(self.length_secs)
    }

    fn validate(&self, key: &str, report: &mut Report) {
        report.range(
            &format!("{key}.length_secs"),
            self.length_secs,
            1..=MAX_WINDOW_SECS,
        );
        report.range(
            &format!("{key}.slide_secs"),
            self.slide(),
            1..=MAX_WINDOW_SECS,
        );
        if self.slide() > 0 && !self.length_secs.is_multiple_of(self.slide()) {
            report.push(
                format!("{key}.length_secs"),
                format!(
                    "{} is not a multiple of slide_secs ({})",
                    self.length_secs,
                    self.slide()
                ),
            );
        }
    }
}

impl ViewConfig {
    /// The engine's view definition, checked by [`ViewSpec::validate`].
    ///
    /// # Errors
    ///
    /// [`lamina::Error::Plan`] when the definition is invalid (`top_k`
    /// without `k`, a missing column, ...); never for a validated config.
    pub fn spec(&self) -> lamina::Result<ViewSpec> {
        let aggregate = match (self.aggregate, self.k) {
            (AggregateName::Count, _) => AggregateKind::Count,
            (AggregateName::Sum, _) => AggregateKind::Sum,
            (AggregateName::Min, _) => AggregateKind::Min,
            (AggregateName::Max, _) => AggregateKind::Max,
            (AggregateName::Mean, _) => AggregateKind::Mean,
            (AggregateName::Distinct, _) => AggregateKind::Distinct,
            (AggregateName::TopK, Some(k)) => AggregateKind::TopK { k },
            (AggregateName::TopK, None) => {
                return Err(lamina::Error::plan(format!(
                    "view `{}`: top_k needs `k`",
                    self.name
                )));
            }
            (AggregateName::Last, _) => {
                return Err(lamina::Error::plan(format!(
                    "view `{}`: `last` keeps state per key and has no view spec",
                    self.name
                )));
            }
        };
        let spec = ViewSpec {
            name: self.name.clone(),
            key: self.key.clone(),
            aggregate,
            column: self.column.clone(),
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Checks the view against the streams; `key` is `view[i]`.
    pub(super) fn validate(&self, key: &str, streams: &[StreamConfig], report: &mut Report) {
        let mark = report.len();
        super::check_name(report, &format!("{key}.name"), &self.name);
        let stream = streams.iter().find(|s| s.name == self.stream);
        if stream.is_none() {
            let mut names: Vec<&str> = streams.iter().map(|s| s.name.as_str()).collect();
            names.dedup();
            let known = if names.is_empty() {
                "no streams are defined".to_owned()
            } else {
                format!("streams: {}", names.join(", "))
            };
            report.push(
                format!("{key}.stream"),
                format!("unknown stream {:?} ({known})", self.stream),
            );
        }
        let columns = stream.map(|s| (s.name.as_str(), s.columns()));
        let columns = columns.as_ref().map(|(name, cols)| Columns {
            stream: name,
            fields: cols,
        });
        check_key(
            &self.key,
            &format!("{key}.key"),
            columns.as_ref(),
            false,
            report,
        );
        self.check_aggregate(key, columns.as_ref(), report);
        if let Some(w) = &self.window {
            w.validate(&format!("{key}.window"), report);
        }
        match (self.aggregate, self.ttl_secs, &self.window) {
            (AggregateName::Last, Some(ttl), _) => {
                report.range(&format!("{key}.ttl_secs"), ttl, 1..=MAX_TTL_SECS)
            }
            (AggregateName::Last, None, _) => {}
            (other, Some(_), _) => report.push(
                format!("{key}.ttl_secs"),
                format!(
                    "only allowed for aggregate last (this view's aggregate is {})",
                    other.name()
                ),
            ),
            _ => {}
        }
        if self.aggregate == AggregateName::Last && self.window.is_some() {
            report.push(
                format!("{key}.window"),
                "not allowed for aggregate last (it keeps each key's latest value; use ttl_secs to forget old keys)",
            );
        }
        if self.aggregate == AggregateName::Last {
            // The engine has no view spec for `last`.
            return;
        }
        // The engine's own check, once ours found nothing: it would repeat
        // our findings in its words, but may know of rules we do not.
        if !report.grew_since(mark)
            && let Err(e) = self.spec()
        {
            report.push(key, e.to_string());
        }
    }

    fn check_aggregate(&self, key: &str, columns: Option<&Columns<'_>>, report: &mut Report) {
        let name = self.aggregate.name();
        let column_key = format!("{key}.column");
        match (self.aggregate, &self.column) {
            (AggregateName::Count, Some(_)) => report.push(
                column_key,
                "not allowed for aggregate count (it counts records)",
            ),
            (AggregateName::Count, None) => {}
            (_, None) => report.push(column_key, format!("required for aggregate {name}")),
            (AggregateName::Last, Some(c)) => {
                if let Some(cols) = columns {
                    cols.need(c, &column_key, |_| true, "", report);
                }
            }
            (AggregateName::Distinct, Some(c)) => {
                if let Some(cols) = columns {
                    cols.need(
                        c,
                        &column_key,
                        |t| t.is_numeric() || t == ColumnType::String,
                        "distinct needs a string, int64 or float64 column",
                        report,
                    );
                }
            }
            (_, Some(c)) => {
                if let Some(cols) = columns {
                    cols.need(
                        c,
                        &column_key,
                        ColumnType::is_numeric,
                        &format!("{name} needs an int64 or float64 column"),
                        report,
                    );
                }
            }
        }
        match (self.aggregate, self.k) {
            (AggregateName::TopK, None) => {
                report.push(format!("{key}.k"), "required for aggregate top_k")
            }
            (AggregateName::TopK, Some(k)) => report.range(&format!("{key}.k"), k, 1..=MAX_TOP_K),
            (_, Some(_)) => report.push(
                format!("{key}.k"),
                format!("only allowed for aggregate top_k (this view's aggregate is {name})"),
            ),
            (_, None) => {}
        }
    }
}

/// The columns of the stream a view reads.
struct Columns<'a> {
    stream: &'a str,
    fields: &'a [FieldConfig],
}

impl Columns<'_> {
    /// Records an error at `key` unless column `name` exists and `fits`.
    fn need(
        &self,
        name: &str,
        key: &str,
        fits: impl Fn(ColumnType) -> bool,
        expected: &str,
        report: &mut Report,
    ) {
        match self.fields.iter().find(|f| f.name == name) {
            None => {
                let names: Vec<&str> = self.fields.iter().map(|f| f.name.as_str()).collect();
                report.push(
                    key,
                    format!(
                        "unknown column {name:?} in stream {:?} (columns: {})",
                        self.stream,
                        names.join(", ")
                    ),
                );
            }
            Some(f) if !fits(f.ty) => report.push(
                key,
                format!(
                    "column {name:?} of stream {:?} is {}; {expected}",
                    self.stream, f.ty
                ),
            ),
            Some(_) => {}
        }
    }
}

/// Checks a key extractor; `key` is its path (`view[0].key`).
fn check_key(
    spec: &KeySpec,
    key: &str,
    columns: Option<&Columns<'_>>,
    in_tuple: bool,
    report: &mut Report,
) {
    match spec {
        KeySpec::Column(c) => {
            if let Some(cols) = columns {
                cols.need(
                    c,
                    &format!("{key}.column"),
                    |t| t != ColumnType::Timestamp,
                    "a column key needs a string, int64, float64 or bool column (use time_bucket for timestamps)",
                    report,
                );
            }
        }
        KeySpec::Words(c) => {
            if let Some(cols) = columns {
                cols.need(
                    c,
                    &format!("{key}.words"),
                    |t| t == ColumnType::String,
                    "words needs a string column",
                    report,
                );
            }
        }
        KeySpec::TimeBucket { column, width_secs } => {
            if let Some(cols) = columns {
                cols.need(
                    column,
                    &format!("{key}.time_bucket.column"),
                    |t| matches!(t, ColumnType::Timestamp | ColumnType::Int64),
                    "time_bucket needs a timestamp or int64 (epoch milliseconds) column",
                    report,
                );
            }
            // An upper bound keeps `width_secs * 1e6` within i64 microseconds.
            report.range(
                &format!("{key}.time_bucket.width_secs"),
                *width_secs,
                1..=i64::MAX as u64 / 1_000_000,
            );
        }
        KeySpec::Tuple(_) if in_tuple => report.push(key, "tuples cannot be nested"),
        KeySpec::Tuple(parts) if parts.is_empty() => {
            report.push(format!("{key}.tuple"), "needs at least one part")
        }
        KeySpec::Tuple(parts) => {
            for (i, part) in parts.iter().enumerate() {
                check_key(part, &format!("{key}.tuple[{i}]"), columns, true, report);
            }
        }
    }
}
