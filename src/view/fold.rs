//! The hot loop of every config-defined view: folding a batch's rows into
//! per-key partial states.
//!
//! Types stay narrow while a partition is folded: each aggregate kind folds
//! into a map of its own state type (a count is an `i64`, not a 32-byte
//! [`AggValue`]), integer keys and time buckets are `i64`, text keys are
//! looked up by `&str` in a cache-friendly [`TextTable`] (short keys inside
//! the entry, long ones in one arena) and copied only when new. Smaller
//! map entries mean fewer cache misses, which is where the time of a
//! group-by goes. Keys become text and states become [`AggValue`] once per
//! distinct key, in [`Accumulator::finish`].

use crate::columnar::KeyColumn;
use crate::partitioner::{FastMap, fast_map};
use crate::view::key::{BoundKey, for_each_word, write_rfc3339};
use crate::view::partials::{Partials, hash_and_word, key_hash};
use crate::view::state::{Max, Mean, Min, Sum, TopK};
use crate::view::text_table::TextTable;
use crate::view::{AggValue, AggregateKind, Hll, Num, Partial};

/// One aggregate kind's per-key state while folding.
trait FoldState: Clone {
    /// Adds a record to a count (only `count` overrides it).
    #[inline]
    fn add_row(&mut self) {}
    /// Adds a numeric value.
    fn add_num(&mut self, _v: Num) {}
    /// Adds a text value (only `distinct` overrides it).
    #[inline]
    fn add_str(&mut self, _s: &str) {}
    /// The state as the view's partial.
    fn into_value(self) -> AggValue;
    /// Adds another state of the same key.
    fn merge(&mut self, other: Self);
}

impl FoldState for i64 {
    #[inline]
    fn add_row(&mut self) {
        *self = self.wrapping_add(1);
    }
    fn merge(&mut self, other: Self) {
        *self = self.wrapping_add(other);
    }
    fn into_value(self) -> AggValue {
        AggValue::Count(self)
    }
}

/// A sum over integer columns only: half the size of [`Sum`] and no
/// branch on the value's type. Promoted to [`Sum`] when a float column
/// shows up.
#[derive(Debug, Clone, Copy, Default)]
struct IntSum(i128);

impl FoldState for IntSum {
    fn into_value(self) -> AggValue {
        AggValue::Sum(self.into())
    }
    fn merge(&mut self, other: Self) {
        self.0 = self.0.wrapping_add(other.0);
    }
}

impl From<IntSum> for Sum {
    fn from(s: IntSum) -> Sum {
        let mut sum = Sum::default();
        sum.add_int(s.0);
        sum
    }
}

macro_rules! numeric_state {
    ($t:ty, $variant:ident) => {
        impl FoldState for $t {
            #[inline]
            fn add_num(&mut self, v: Num) {
                self.add(v);
            }
            fn into_value(self) -> AggValue {
                AggValue::$variant(self)
            }
            fn merge(&mut self, other: Self) {
                crate::view::Monoid::combine_owned(self, other);
            }
        }
    };
}
numeric_state!(Sum, Sum);
numeric_state!(Mean, Mean);
numeric_state!(Min, Min);
numeric_state!(Max, Max);
numeric_state!(TopK, TopK);

impl FoldState for Hll {
    #[inline]
    fn add_num(&mut self, v: Num) {
        self.insert_num(v);
    }
    #[inline]
    fn add_str(&mut self, s: &str) {
        self.insert_str(s);
    }
    fn into_value(self) -> AggValue {
        AggValue::Distinct(self)
    }
    fn merge(&mut self, other: Self) {
        crate::view::Monoid::combine_owned(self, other);
    }
}

/// The maps of one state type.
#[derive(Debug)]
struct Maps<S> {
    text: TextTable<S>,
    ints: FastMap<i64, S>,
    /// Time buckets by start, in microseconds since the epoch.
    buckets: FastMap<i64, S>,
    /// States by index of the dictionary the last dictionary-encoded key
    /// column came with, not yet in `text`.
    dict: Option<DictStates<S>>,
    zero: S,
}

/// A key column's dictionary and a state per dictionary index: a row
/// updates `states[index]`, no hashing and no lookup; the states go into
/// the text table once per dictionary entry, when another dictionary comes
/// or the partition ends. The Parquet reader gives all batches of a column
/// chunk (a row group: a task) the same dictionary.
struct DictStates<S> {
    values: arrow::array::ArrayRef,
    states: Vec<S>,
    used: Vec<bool>,
}

impl<S> std::fmt::Debug for DictStates<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DictStates")
            .field("entries", &self.states.len())
            .finish_non_exhaustive()
    }
}

impl<S: FoldState> DictStates<S> {
    /// The used entries as partials.
    fn into_partials(self, count: bool) -> Partials {
        use arrow::array::{Array, AsArray};
        let strings = self.values.as_string::<i32>();
        let mut out = Partials::builder(count);
        out.reserve(self.states.len(), strings.values().len());
        for (i, (state, used)) in self.states.into_iter().zip(self.used).enumerate() {
            if used && strings.is_valid(i) {
                let key = strings.value(i);
                out.push(key_hash(key.as_bytes()), key, state.into_value());
            }
        }
        out.finish()
    }

    /// Combines every used state into `text` under its value.
    fn flush_into(self, text: &mut TextTable<S>) {
        use arrow::array::{Array, AsArray};
        let strings = self.values.as_string::<i32>();
        for (i, (state, used)) in self.states.into_iter().zip(self.used).enumerate() {
            if used && strings.is_valid(i) {
                text.slot(strings.value(i)).merge(state);
            }
        }
    }
}

impl<S: FoldState> Maps<S> {
    fn new(zero: S) -> Self {
        Maps {
            text: TextTable::new(zero.clone()),
            ints: fast_map(0),
            buckets: fast_map(0),
            dict: None,
            zero,
        }
    }

    /// Moves the dictionary states into the text table.
    fn settle(&mut self) {
        if let Some(d) = self.dict.take() {
            d.flush_into(&mut self.text);
        }
    }

    /// Room for `keys` text keys without growing (growing rehashes every
    /// key seen so far, several times over).
    fn reserve(&mut self, keys: usize) {
        self.text.reserve(keys);
    }

    /// Distinct keys (keys still in dictionary states count once per
    /// dictionary entry used).
    fn len(&self) -> usize {
        let dict = self
            .dict
            .as_ref()
            .map_or(0, |d| d.used.iter().filter(|u| **u).count());
        self.text.len() + self.ints.len() + self.buckets.len() + dict
    }

    /// Folds rows `0..rows`, keyed by `key`, with `update` adding a row's
    /// value to a key's state.
    #[inline]
    fn fold(&mut self, key: &BoundKey<'_>, rows: usize, update: impl Fn(&mut S, usize)) {
        if let BoundKey::Column(KeyColumn::Dict(col)) = key {
            let same = self
                .dict
                .as_ref()
                .is_some_and(|d| std::sync::Arc::ptr_eq(&d.values, col.values()));
            if !same {
                self.settle();
                let n = col.values().len();
                self.dict = Some(DictStates {
                    values: std::sync::Arc::clone(col.values()),
                    states: vec![self.zero.clone(); n],
                    used: vec![false; n],
                });
            }
            let d = self.dict.as_mut().expect("set above");
            for row in 0..rows {
                if let Some(i) = col.index(row) {
                    d.used[i] = true;
                    update(&mut d.states[i], row);
                }
            }
            return;
        }
        let Maps {
            text,
            ints,
            buckets,
            zero,
            ..
        } = self;
        match key {
            BoundKey::Column(KeyColumn::Number(col)) if col.fits_i64() => {
                let keys = col.to_i64().expect("checked: fits_i64");
                for row in 0..rows {
                    if let Some(k) = keys.get(row) {
                        update(ints.entry(k).or_insert_with(|| zero.clone()), row);
                    }
                }
            }
            BoundKey::Column(KeyColumn::Number(col)) if col.is_integer() => {
                for row in 0..rows {
                    match col.get(row) {
                        Some(Num::Int(k)) => {
                            update(ints.entry(k).or_insert_with(|| zero.clone()), row)
                        }
                        // A UInt64 beyond i64::MAX: rare, keyed as text.
                        Some(Num::Float(f)) => text_slot(text, &f.to_string(), row, &update),
                        None => {}
                    }
                }
            }
            BoundKey::Bucket {
                column,
                width_micros,
            } => {
                for row in 0..rows {
                    if let Some(t) = column.micros(row) {
                        let start = t - t.rem_euclid(*width_micros);
                        update(buckets.entry(start).or_insert_with(|| zero.clone()), row);
                    }
                }
            }
            // Keys borrowed from the batch: looked up a few keys behind
            // their hashing, so that each key's entry is on its way into
            // the cache while the next keys are split and hashed.
            BoundKey::Words(col) => {
                let mut ahead = Ahead::new();
                for row in 0..rows {
                    if let Some(line) = col.get(row) {
                        for_each_word(line, |w| ahead.push(text, row, w, &update));
                    }
                }
                ahead.flush(text, &update);
            }
            BoundKey::Column(KeyColumn::Text(col)) => {
                let mut ahead = Ahead::new();
                for row in 0..rows {
                    if let Some(k) = col.get(row) {
                        ahead.push(text, row, k, &update);
                    }
                }
                ahead.flush(text, &update);
            }
            _ => {
                let mut scratch = String::new();
                for row in 0..rows {
                    key.for_each_key(row, &mut scratch, |k| text_slot(text, k, row, &update));
                }
            }
        }
    }

    fn fold_input(&mut self, key: &BoundKey<'_>, input: &FoldInput<'_>, rows: usize) {
        match input {
            FoldInput::Rows => self.fold(key, rows, |s, _| s.add_row()),
            FoldInput::Number(col) => self.fold(key, rows, |s, row| {
                // A null value still creates the key (like SQL's GROUP BY),
                // adding nothing to it.
                if let Some(v) = col.get(row) {
                    s.add_num(v);
                }
            }),
            FoldInput::Text(col) => self.fold(key, rows, |s, row| {
                if let Some(v) = col.get(row) {
                    s.add_str(v);
                }
            }),
        }
    }

    /// The same maps with every state converted.
    fn convert<T: FoldState>(mut self, f: impl Fn(S) -> T) -> Maps<T> {
        self.settle();
        Maps {
            text: self.text.map_states(&f),
            ints: self.ints.into_iter().map(|(k, s)| (k, f(s))).collect(),
            buckets: self.buckets.into_iter().map(|(k, s)| (k, f(s))).collect(),
            dict: None,
            zero: f(self.zero),
        }
    }

    /// The text, integer and time-bucket maps, the dictionary states moved
    /// into the text map.
    fn into_keyed(mut self) -> (TextTable<S>, FastMap<i64, S>, FastMap<i64, S>) {
        self.settle();
        (self.text, self.ints, self.buckets)
    }

    /// The partials with keys as text, each key once.
    fn finish(self) -> Vec<(String, AggValue)> {
        let (text, ints, buckets) = self.into_keyed();
        let typed = ints
            .into_iter()
            .map(|(k, s)| (int_key(k), s))
            .chain(buckets.into_iter().map(|(start, s)| {
                let mut key = String::with_capacity(20);
                write_rfc3339(start, &mut key);
                (key, s)
            }));
        if text.is_empty() {
            // The usual case: all keys of one kind, already unique.
            return typed.map(|(k, s)| (k, s.into_value())).collect();
        }
        // A column that was text in some batches and numbers in others: a
        // typed key whose text equals a text key merges into it.
        let mut out: FastMap<String, AggValue> = text
            .into_entries()
            .map(|(k, s)| (k, s.into_value()))
            .collect();
        for (k, s) in typed {
            match out.get_mut(&k) {
                Some(acc) => acc.merge(s.into_value()),
                None => {
                    out.insert(k, s.into_value());
                }
            }
        }
        out.into_iter().collect()
    }

    /// The partials in columnar form, split by key hash (see
    /// [`Partials`]); no allocation per key. A key that was text in some
    /// batches and a number in others may appear twice: consumers combine.
    fn finish_partials(mut self, count: bool) -> Partials {
        // One dictionary and nothing else (a task over one row group): its
        // entries are the keys, no table needed. A value repeated in the
        // dictionary gives the key twice.
        if self.text.is_empty()
            && self.ints.is_empty()
            && self.buckets.is_empty()
            && let Some(d) = self.dict.take()
        {
            return d.into_partials(count);
        }
        let (text, ints, buckets) = self.into_keyed();
        let mut out = Partials::builder(count);
        let keys = text.len() + ints.len() + buckets.len();
        out.reserve(keys, text.arena_bytes() + keys * 8);
        text.drain(|hash, key, s| out.push(hash, key, s.into_value()));
        let mut key = String::with_capacity(24);
        for (k, s) in ints {
            key.clear();
            write_int_key(k, &mut key);
            out.push(key_hash(key.as_bytes()), &key, s.into_value());
        }
        for (start, s) in buckets {
            key.clear();
            write_rfc3339(start, &mut key);
            out.push(key_hash(key.as_bytes()), &key, s.into_value());
        }
        out.finish()
    }
}

/// Decimal text of an integer key, without the formatting machinery: this
/// runs once per distinct key per partition.
fn int_key(v: i64) -> String {
    let mut out = String::with_capacity(20);
    write_int_key(v, &mut out);
    out
}

/// Appends the decimal text of `v` to `out`.
fn write_int_key(v: i64, out: &mut String) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut n = v.unsigned_abs();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        out.push('-');
    }
    out.extend(digits[start..].iter().map(|&d| char::from(d)));
}

/// The state of text key `k` (zero when new), `update` applied.
#[inline]
fn text_slot<S: Clone>(
    text: &mut TextTable<S>,
    k: &str,
    row: usize,
    update: &impl Fn(&mut S, usize),
) {
    update(text.slot(k), row);
}

/// How many keys are hashed before the first of them is looked up: enough
/// for the entries' cache lines to arrive meanwhile (a miss costs about as
/// much as hashing a dozen short keys). With the 16-byte entries, 32 ahead
/// folded 10M Zipf words 10-15 % faster than 16 (`cargo bench --bench
/// engine`, `word_count/view_1t`, medians 181-193 ms against 208-230 ms;
/// 64 was no faster than 32).
const AHEAD: usize = 32;

/// Keys hashed and prefetched, waiting to be looked up (see
/// [`Maps::fold`]).
struct Ahead<'a> {
    /// Row, [`hash_and_word`] and key.
    keys: Vec<(usize, (u64, u64), &'a str)>,
}

impl<'a> Ahead<'a> {
    fn new() -> Self {
        Ahead {
            keys: Vec::with_capacity(AHEAD),
        }
    }

    #[inline]
    fn push<S: Clone>(
        &mut self,
        text: &mut TextTable<S>,
        row: usize,
        key: &'a str,
        update: &impl Fn(&mut S, usize),
    ) {
        let hashed = hash_and_word(key.as_bytes());
        text.prefetch(hashed.0);
        self.keys.push((row, hashed, key));
        if self.keys.len() == AHEAD {
            self.flush(text, update);
        }
    }

    #[inline]
    fn flush<S: Clone>(&mut self, text: &mut TextTable<S>, update: &impl Fn(&mut S, usize)) {
        for (row, (hash, word), key) in self.keys.drain(..) {
            update(text.slot_hashed(hash, word, key), row);
        }
    }
}

/// The aggregate's input column, bound to one batch.
pub(crate) enum FoldInput<'a> {
    /// `count`: no column.
    Rows,
    /// A numeric column.
    Number(crate::columnar::NumericColumn<'a>),
    /// `distinct` over a text column.
    Text(crate::columnar::TextColumn<'a>),
}

/// A partition's partial aggregates while they are being folded; see
/// [`ViewSpec::accumulate`](crate::view::ViewSpec::accumulate).
#[derive(Debug)]
pub struct Accumulator(Kind);

#[derive(Debug)]
enum Kind {
    Count(Maps<i64>),
    /// A sum that has seen only columns that fit in `i64`.
    IntSum(Maps<IntSum>),
    Sum(Maps<Sum>),
    Mean(Maps<Mean>),
    Min(Maps<Min>),
    Max(Maps<Max>),
    Distinct(Maps<Hll>),
    TopK(Maps<TopK>),
}

impl Accumulator {
    pub(crate) fn new(kind: &AggregateKind) -> Self {
        Accumulator(match kind {
            AggregateKind::Count => Kind::Count(Maps::new(0)),
            AggregateKind::Sum => Kind::IntSum(Maps::new(IntSum::default())),
            AggregateKind::Mean => Kind::Mean(Maps::new(Mean::default())),
            AggregateKind::Min => Kind::Min(Maps::new(Min::default())),
            AggregateKind::Max => Kind::Max(Maps::new(Max::default())),
            AggregateKind::Distinct => Kind::Distinct(Maps::new(Hll::new())),
            AggregateKind::TopK { k } => Kind::TopK(Maps::new(TopK::new(*k))),
        })
    }

    /// Makes room for `keys` distinct keys (e.g. as many as the last batch
    /// had), so the maps do not rehash while they fill.
    pub fn reserve(&mut self, keys: usize) {
        match &mut self.0 {
            Kind::Count(m) => m.reserve(keys),
            Kind::IntSum(m) => m.reserve(keys),
            Kind::Sum(m) => m.reserve(keys),
            Kind::Mean(m) => m.reserve(keys),
            Kind::Min(m) => m.reserve(keys),
            Kind::Max(m) => m.reserve(keys),
            Kind::Distinct(m) => m.reserve(keys),
            Kind::TopK(m) => m.reserve(keys),
        }
    }

    /// Distinct keys folded so far.
    pub fn len(&self) -> usize {
        match &self.0 {
            Kind::Count(m) => m.len(),
            Kind::IntSum(m) => m.len(),
            Kind::Sum(m) => m.len(),
            Kind::Mean(m) => m.len(),
            Kind::Min(m) => m.len(),
            Kind::Max(m) => m.len(),
            Kind::Distinct(m) => m.len(),
            Kind::TopK(m) => m.len(),
        }
    }

    /// Whether no key was folded yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn fold(&mut self, key: &BoundKey<'_>, input: &FoldInput<'_>, rows: usize) {
        if let Kind::IntSum(maps) = &mut self.0 {
            if let FoldInput::Number(col) = input
                && let Some(values) = col.to_i64()
            {
                maps.fold(key, rows, |s, row| {
                    if let Some(v) = values.get(row) {
                        s.0 = s.0.wrapping_add(i128::from(v));
                    }
                });
                return;
            }
            // A float (or large unsigned) column: from now on the general sum.
            let Kind::IntSum(maps) = std::mem::replace(&mut self.0, Kind::Count(Maps::new(0)))
            else {
                unreachable!("matched above")
            };
            self.0 = Kind::Sum(maps.convert(Sum::from));
        }
        match &mut self.0 {
            Kind::IntSum(m) => m.fold_input(key, input, rows),
            Kind::Count(m) => m.fold_input(key, input, rows),
            Kind::Sum(m) => m.fold_input(key, input, rows),
            Kind::Mean(m) => m.fold_input(key, input, rows),
            Kind::Min(m) => m.fold_input(key, input, rows),
            Kind::Max(m) => m.fold_input(key, input, rows),
            Kind::Distinct(m) => m.fold_input(key, input, rows),
            Kind::TopK(m) => m.fold_input(key, input, rows),
        }
    }

    /// The partials keyed by their text form, rendered once per distinct
    /// key; each key appears once.
    pub fn finish(self) -> Vec<(String, AggValue)> {
        match self.0 {
            Kind::Count(m) => m.finish(),
            Kind::IntSum(m) => m.finish(),
            Kind::Sum(m) => m.finish(),
            Kind::Mean(m) => m.finish(),
            Kind::Min(m) => m.finish(),
            Kind::Max(m) => m.finish(),
            Kind::Distinct(m) => m.finish(),
            Kind::TopK(m) => m.finish(),
        }
    }

    /// The partials in columnar form, split by key hash, rendered once
    /// per distinct key; a key may appear twice (see [`Partials`]).
    pub fn finish_partials(self) -> Partials {
        match self.0 {
            Kind::Count(m) => m.finish_partials(true),
            Kind::IntSum(m) => m.finish_partials(false),
            Kind::Sum(m) => m.finish_partials(false),
            Kind::Mean(m) => m.finish_partials(false),
            Kind::Min(m) => m.finish_partials(false),
            Kind::Max(m) => m.finish_partials(false),
            Kind::Distinct(m) => m.finish_partials(false),
            Kind::TopK(m) => m.finish_partials(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{KeySpec, ViewSpec};
    use arrow::array::{ArrayRef, DictionaryArray, Int32Array, Int64Array, StringArray};
    use arrow::record_batch::RecordBatch;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn dict_batch(keys: Vec<Option<i32>>, values: &ArrayRef, v: Vec<i64>) -> RecordBatch {
        let dict = DictionaryArray::try_new(Int32Array::from(keys), Arc::clone(values)).unwrap();
        RecordBatch::try_from_iter([
            ("k", Arc::new(dict) as ArrayRef),
            ("v", Arc::new(Int64Array::from(v)) as ArrayRef),
        ])
        .unwrap()
    }

    /// The same batch with the key column as plain strings.
    fn plain(batch: &RecordBatch) -> RecordBatch {
        let k = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
        RecordBatch::try_from_iter([("k", k), ("v", Arc::clone(batch.column(1)))]).unwrap()
    }

    /// Folding per dictionary entry gives what folding the strings gives:
    /// batches sharing a dictionary, a new dictionary half-way (the first
    /// one's states move into the table), the first dictionary again, null
    /// keys, and a null and a repeated value in a dictionary.
    #[test]
    fn dictionary_keys_fold_like_their_strings() {
        let first: ArrayRef = Arc::new(StringArray::from(vec![
            Some("https://a.example/1"),
            Some("b"),
            None,
            Some("b"),
            Some("ü-long-key-über-8-bytes"),
        ]));
        let second: ArrayRef = Arc::new(StringArray::from(vec!["b", "c", "https://a.example/1"]));
        let batches = [
            dict_batch(
                vec![Some(0), Some(1), None, Some(2), Some(3), Some(4)],
                &first,
                vec![1, 2, 3, 4, 5, 6],
            ),
            dict_batch(
                vec![Some(4), Some(4), Some(0), Some(3)],
                &first,
                vec![10, 20, 30, 40],
            ),
            dict_batch(
                vec![Some(2), Some(0), Some(1), None, Some(2)],
                &second,
                vec![100, 200, 300, 400, 500],
            ),
            dict_batch(vec![Some(0)], &first, vec![1000]),
        ];
        for aggregate in [
            AggregateKind::Count,
            AggregateKind::Sum,
            AggregateKind::Mean,
            AggregateKind::Max,
        ] {
            let spec = ViewSpec {
                name: "v".into(),
                key: KeySpec::Column("k".into()),
                column: (aggregate != AggregateKind::Count).then(|| "v".into()),
                aggregate: aggregate.clone(),
            };
            let sorted =
                |m: crate::partitioner::FastMap<String, AggValue>| -> BTreeMap<String, AggValue> {
                    m.into_iter().collect()
                };
            let got = sorted(spec.aggregate_batches(&batches).unwrap());
            let plain: Vec<RecordBatch> = batches.iter().map(plain).collect();
            let want = sorted(spec.aggregate_batches(&plain).unwrap());
            assert_eq!(got, want, "{aggregate:?}");
            assert_eq!(got.len(), 4, "{got:?}");
            let combined = |p: Partials| {
                let mut out: BTreeMap<String, AggValue> = BTreeMap::new();
                for (k, v) in p.into_rows() {
                    match out.get_mut(&k) {
                        Some(acc) => acc.combine(&v).unwrap(),
                        None => {
                            out.insert(k, v);
                        }
                    }
                }
                out
            };
            let partials = combined(spec.partials_of(batches.iter().cloned()).unwrap());
            assert_eq!(partials, want, "{aggregate:?} as partials");
            // One dictionary only: the partials come from its entries
            // without the table; `b` is in the dictionary twice.
            let one = &batches[..2];
            let plain_one = plain[..2].to_vec();
            let want_one = sorted(spec.aggregate_batches(&plain_one).unwrap());
            let direct = spec.partials_of(one.iter().cloned()).unwrap();
            assert_eq!(direct.len(), 4, "a partial per used dictionary entry");
            assert_eq!(combined(direct), want_one, "{aggregate:?}, one dictionary");
        }
    }

    #[test]
    fn int_keys_render_like_display() {
        for v in [
            0,
            1,
            -1,
            9,
            10,
            -10,
            42,
            1_000_000,
            i64::MAX,
            i64::MIN,
            i64::MIN + 1,
        ] {
            assert_eq!(int_key(v), v.to_string());
        }
    }
}
