//! Windowed views: a view's partials per time bucket of `slide`, kept while
//! they can still fall in a window, answered for any window of `length`
//! that ends on a bucket boundary.
//!
//! The input is a stream of `(bucket|key, partial)` pairs: a
//! [`ViewSpec`](crate::view::ViewSpec) whose key is
//! `tuple = [time_bucket(time column, slide), key...]` (see
//! [`ViewSpec::windowed`](crate::view::ViewSpec::windowed)), so each record
//! is folded into the bucket of its time. The operator is durable like the
//! other stateful operators (see [`durable`](super::durable)): each batch
//! reports the `(bucket, key)` cells it changed and the buckets it evicted,
//! the server commits them with the micro-batch, and a restart restores
//! them — so a window's value after `kill -9` is exactly that of the
//! acknowledged records whose time falls in it.
//!
//! A window ending at `end` is the merge of the buckets starting in
//! `[end - length, end)`. Buckets are kept for `retention` (the window
//! length plus the lateness allowed, rounded up to the slide, plus a slide)
//! behind the newest bucket with data, then evicted. A partial for a bucket already evicted (a record
//! later than the retention) is folded into the oldest kept bucket and
//! counted (see [`WindowedView::folded_late`]): never dropped silently.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::partitioner::{FastMap, fast_map};
use crate::streaming::durable::{
    DurableState, SharedName, StateChange, StateDelta, StateInfo, decode_entry, encode, name_of,
};
use crate::streaming::{DStream, ServedState};
use crate::view::{AggValue, AggregateKind};

/// The shape of a windowed view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    /// Window length: a positive multiple of the slide.
    pub length: Duration,
    /// How far consecutive windows are apart, and the bucket width (at
    /// least a second, whole seconds).
    pub slide: Duration,
    /// How long a bucket is kept behind the newest bucket with data: the
    /// length plus the lateness allowed, rounded up to the slide, plus one
    /// slide (a record on time can be in the bucket before the one its
    /// lateness reaches into).
    pub retention: Duration,
}

impl WindowSpec {
    /// A window of `length` sliding by `slide`, keeping buckets for the
    /// length plus `lateness`.
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] when the slide is not a positive whole number of
    /// seconds, or the length is not a positive multiple of it.
    pub fn new(length: Duration, slide: Duration, lateness: Duration) -> Result<Self> {
        if slide.is_zero() || slide.subsec_nanos() != 0 {
            return Err(Error::plan(format!(
                "a window's slide must be a positive whole number of seconds (got {slide:?})"
            )));
        }
        if length.is_zero() || !length.as_nanos().is_multiple_of(slide.as_nanos()) {
            return Err(Error::plan(format!(
                "a window's length ({length:?}) must be a positive multiple of its slide ({slide:?})"
            )));
        }
        let slide_ms = slide.as_millis();
        let retention_ms = (length + lateness).as_millis().div_ceil(slide_ms) * slide_ms + slide_ms;
        Ok(WindowSpec {
            length,
            slide,
            retention: Duration::from_millis(retention_ms as u64),
        })
    }

    fn slide_ms(&self) -> i64 {
        self.slide.as_millis() as i64
    }

    /// The starts of the buckets of the window ending at `end_ms`.
    pub fn buckets(&self, end_ms: i64) -> impl Iterator<Item = i64> + use<> {
        let slide = self.slide_ms();
        let n = (self.length.as_millis() as i64 / slide).max(1);
        (0..n).map(move |i| end_ms - (n - i) * slide)
    }

    /// The end of the newest window that is complete at `now_ms`: the last
    /// bucket boundary at or before it.
    pub fn newest_end(&self, now_ms: i64) -> i64 {
        now_ms.div_euclid(self.slide_ms()) * self.slide_ms()
    }
}

/// A stored cell: the bucket start (ms) and the key (as the view's key
/// extractor renders it inside a tuple: `|` and `\` escaped).
pub type Cell = (i64, String);

/// Cells by bucket, and the partial of each.
struct Cells {
    values: FastMap<Cell, AggValue>,
    buckets: BTreeMap<i64, Vec<String>>,
}

impl Cells {
    fn new() -> Self {
        Cells {
            values: fast_map(0),
            buckets: BTreeMap::new(),
        }
    }

    fn set(&mut self, cell: Cell, value: AggValue) {
        if self.values.insert(cell.clone(), value).is_none() {
            self.buckets.entry(cell.0).or_default().push(cell.1);
        }
    }
}

struct Operator {
    name: SharedName,
    aggregate: AggregateKind,
    cells: Arc<Mutex<Cells>>,
}

impl DurableState for Operator {
    fn info(&self) -> StateInfo {
        StateInfo {
            name: name_of(&self.name),
            kind: "window",
            key_type: std::any::type_name::<Cell>(),
            state_type: std::any::type_name::<AggValue>(),
        }
    }

    fn set_name(&self, name: String) {
        *self.name.lock().unwrap_or_else(|p| p.into_inner()) = name;
    }

    fn restore(&self, entries: &mut dyn Iterator<Item = (Vec<u8>, Vec<u8>)>) -> Result<usize> {
        let info = self.info();
        let mut cells = Cells::new();
        for (k, v) in entries {
            let (cell, (value, _)) = decode_entry::<Cell, AggValue>(&info, &k, &v)?;
            if value.kind() != self.aggregate {
                return Err(Error::plan(format!(
                    "the stored state of window `{}` holds {:?} values but the view computes {:?}: its aggregate changed",
                    info.name,
                    value.kind(),
                    self.aggregate
                )));
            }
            cells.set(cell, value);
        }
        let n = cells.values.len();
        *self.cells.lock().unwrap_or_else(|p| p.into_inner()) = cells;
        Ok(n)
    }
}

/// A windowed view's handle: what it served, and its late-folding count.
#[derive(Debug, Clone)]
pub struct WindowedView {
    served: ServedState,
    aggregate: AggregateKind,
    window: WindowSpec,
    folded_late: Arc<AtomicU64>,
}

impl WindowedView {
    /// The served view (its name names the state).
    pub fn served(&self) -> &ServedState {
        &self.served
    }

    /// The view's aggregate.
    pub fn aggregate(&self) -> &AggregateKind {
        &self.aggregate
    }

    /// The window's shape.
    pub fn window(&self) -> WindowSpec {
        self.window
    }

    /// Partials that arrived for a bucket already evicted and were folded
    /// into the oldest kept bucket, since start.
    pub fn folded_late(&self) -> u64 {
        self.folded_late.load(Ordering::Relaxed)
    }
}

/// Splits a `bucket|key` composite (the bucket as 20 characters of RFC
/// 3339, `1970-01-01T00:00:00Z`) into the bucket start in ms and the key.
pub fn split_bucket_key(composite: &str) -> Option<Cell> {
    let (bucket, key) = composite.split_at_checked(20)?;
    let key = key.strip_prefix('|')?;
    Some((parse_rfc3339_ms(bucket)?, key.to_owned()))
}

/// Milliseconds since the epoch of `YYYY-MM-DDTHH:MM:SSZ`.
fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400) + hh * 3600 + mm * 60 + ss) * 1000)
}

/// Escapes a key as a part of a tuple key (`|` and `\` get a backslash).
pub fn escape_part(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for c in key.chars() {
        if c == '|' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The inverse of [`escape_part`].
pub fn unescape_part(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut chars = key.chars();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(next) = chars.next()
        {
            out.push(next);
            continue;
        }
        out.push(c);
    }
    out
}

impl DStream<(String, AggValue)> {
    /// Serves a windowed view named `name`: the stream's pairs are
    /// `(bucket|key, partial of aggregate)` (see the module docs); every
    /// batch folds them into their buckets and evicts buckets older than
    /// the retention. The server answers any window of `window.length`
    /// ending on a bucket boundary.
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] when the name is invalid or taken.
    pub fn serve_windowed_as(
        &self,
        name: &str,
        aggregate: AggregateKind,
        window: WindowSpec,
    ) -> Result<WindowedView> {
        let op = Arc::new(Operator {
            name: Arc::new(Mutex::new(self.ssc.next_state_name("window"))),
            aggregate: aggregate.clone(),
            cells: Arc::new(Mutex::new(Cells::new())),
        });
        let (cells, op_name) = (Arc::clone(&op.cells), Arc::clone(&op.name));
        let parent = self.clone();
        let folded_late = Arc::new(AtomicU64::new(0));
        let late = Arc::clone(&folded_late);
        let slide = window.slide_ms();
        let retention = window.retention.as_millis() as i64;
        let stream = DStream::from_fn(&self.ssc, Arc::clone(&self.inputs), move |scope| {
            let now = scope.time().millis();
            let parts = scope.rdd(&parent)?.run(|_, it| {
                let mut merged: FastMap<Cell, AggValue> = fast_map(0);
                for (composite, value) in it {
                    let cell = split_bucket_key(&composite).ok_or_else(|| {
                        Error::execution(format!(
                            "a windowed view's key `{composite}` does not start with its time bucket"
                        ))
                    })?;
                    match merged.get_mut(&cell) {
                        Some(v) => v.combine_owned(value).map_err(Error::execution)?,
                        None => {
                            merged.insert(cell, value);
                        }
                    }
                }
                Ok(merged.into_iter().collect::<Vec<_>>())
            })?;
            let state = cells.lock().unwrap_or_else(|p| p.into_inner());
            // Partials go to their bucket unless it left the retention
            // before this batch (then to the oldest bucket kept); buckets
            // leave it after the batch, by its newest bucket. So a batch
            // holding minutes of records (a replay) keeps what a run of
            // small batches would have kept.
            let horizon_of = |newest: Option<i64>| newest.map_or(i64::MIN, |n| n + slide - retention);
            let horizon = horizon_of(state.buckets.keys().next_back().copied());
            let mut touched: FastMap<Cell, AggValue> = fast_map(0);
            let mut folded = 0u64;
            for ((bucket, key), value) in parts.into_iter().flatten() {
                let bucket = if bucket < horizon {
                    folded += 1;
                    horizon
                } else {
                    bucket
                };
                let cell = (bucket, key);
                let current = match touched.remove(&cell) {
                    Some(v) => Some(v),
                    None => state.values.get(&cell).cloned(),
                };
                let next = match current {
                    Some(mut v) => {
                        v.combine_owned(value).map_err(Error::execution)?;
                        v
                    }
                    None => value,
                };
                touched.insert(cell, next);
            }
            let newest = touched
                .keys()
                .map(|(b, _)| *b)
                .chain(state.buckets.keys().next_back().copied())
                .max();
            let after = horizon_of(newest);
            let evicted: Vec<i64> = state.buckets.range(..after).map(|(b, _)| *b).collect();
            touched.retain(|(b, _), _| *b >= after);
            let mut changes = Vec::with_capacity(touched.len());
            for (cell, value) in &touched {
                changes.push(StateChange {
                    key: encode(cell)?,
                    state: Some(encode(&(value, now))?),
                });
            }
            for b in &evicted {
                for key in &state.buckets[b] {
                    changes.push(StateChange {
                        key: encode(&(*b, key))?,
                        state: None,
                    });
                }
            }
            drop(state);
            scope.record_state(StateDelta {
                operator: name_of(&op_name),
                changes,
            });
            let (commit_to, late) = (Arc::clone(&cells), Arc::clone(&late));
            scope.on_success(move || {
                let mut state = commit_to.lock().unwrap_or_else(|p| p.into_inner());
                for b in evicted {
                    if let Some(keys) = state.buckets.remove(&b) {
                        for key in keys {
                            state.values.remove(&(b, key));
                        }
                    }
                }
                for (cell, value) in touched {
                    state.set(cell, value);
                }
                if folded > 0 {
                    late.fetch_add(folded, Ordering::Relaxed);
                    tracing::warn!(
                        partials = folded,
                        "window: partials for buckets past the retention were folded into the oldest kept bucket"
                    );
                }
            });
            Ok(crate::streaming::input::InputBatch::<()>::empty(scope.context()).rdd)
        })
        .inherit(self)
        .stateful();
        let op: Arc<dyn DurableState> = op;
        self.ssc.add_state(Arc::clone(&op));
        let served = self.ssc.serve_state(&op, name, Arc::clone(&self.inputs))?;
        self.ssc
            .add_output(Arc::new(super::state::EveryBatch(stream)));
        Ok(WindowedView {
            served,
            aggregate,
            window,
            folded_late,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_keys_split_into_bucket_and_key() {
        assert_eq!(
            split_bucket_key("2026-12-01T05:50:10Z|a\\|b"),
            Some((1_796_104_210_000, "a\\|b".to_string()))
        );
        assert_eq!(
            split_bucket_key("1970-01-01T00:00:00Z|"),
            Some((0, String::new()))
        );
        assert_eq!(split_bucket_key("2026-12-01T05:50:10Z"), None);
        assert_eq!(split_bucket_key("x"), None);
        let mut s = String::new();
        for ms in [
            0i64,
            86_399_000,
            951_782_400_000,
            1_796_104_210_000,
            4_102_444_799_000,
        ] {
            s.clear();
            crate::view::key::write_rfc3339(ms * 1000, &mut s);
            assert_eq!(parse_rfc3339_ms(&s), Some(ms), "{s}");
        }
        assert_eq!(unescape_part(&escape_part("a|b\\c")), "a|b\\c");
    }

    #[test]
    fn windows_cover_length_over_slide_buckets() {
        let w = WindowSpec::new(
            Duration::from_secs(30),
            Duration::from_secs(10),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(
            w.buckets(60_000).collect::<Vec<_>>(),
            [30_000, 40_000, 50_000]
        );
        assert_eq!(w.retention, Duration::from_secs(50));
        assert_eq!(w.newest_end(65_432), 60_000);
        assert!(
            WindowSpec::new(
                Duration::from_secs(25),
                Duration::from_secs(10),
                Duration::ZERO
            )
            .is_err()
        );
        assert!(
            WindowSpec::new(
                Duration::from_secs(10),
                Duration::from_millis(1500),
                Duration::ZERO
            )
            .is_err()
        );
    }
}
