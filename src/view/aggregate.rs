//! The built-in aggregates a view can compute per key, and their partial
//! states as one serializable enum.
//!
//! `AggValue` deliberately does not implement [`Monoid`]: its identity depends
//! on the aggregate kind (and on `k` for top-k), which a `fn zero() -> Self`
//! cannot know. The per-kind states in `state` and [`Hll`] are the monoids;
//! `AggValue` dispatches to them and turns kind confusion into an error.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::monoid::{Algebra, Group, Monoid};

pub use super::hll::Hll;
pub use super::num::Num;
pub use super::state::{Max, Mean, Min, Sum, TopK};

/// What a view computes per key; mirrors the `aggregate` names of the TOML
/// config (`"count"`, `"sum"`, ..., `"top_k"` with a `k`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregateKind {
    /// Number of rows.
    Count,
    /// Sum of a numeric column.
    Sum,
    /// Smallest value of a numeric column.
    Min,
    /// Largest value of a numeric column.
    Max,
    /// Arithmetic mean of a numeric column.
    Mean,
    /// Approximate number of distinct values (HyperLogLog).
    Distinct,
    /// The `k` largest values of a numeric column.
    TopK {
        /// How many values to keep.
        k: usize,
    },
}

impl AggregateKind {
    /// Decides whether windows over this aggregate can retract expired data
    /// (Group) or must be recomputed from their buckets (Monoid).
    pub fn algebra(&self) -> Algebra {
        match self {
            AggregateKind::Count | AggregateKind::Sum | AggregateKind::Mean => Algebra::Group,
            AggregateKind::Min
            | AggregateKind::Max
            | AggregateKind::Distinct
            | AggregateKind::TopK { .. } => Algebra::Monoid,
        }
    }

    /// Whether the config must name an input column (all but `count`).
    pub fn needs_column(&self) -> bool {
        !matches!(self, AggregateKind::Count)
    }

    /// The identity state for this kind: what an empty partition contributes.
    pub fn zero(&self) -> AggValue {
        match self {
            AggregateKind::Count => AggValue::Count(0),
            AggregateKind::Sum => AggValue::Sum(Sum::zero()),
            AggregateKind::Min => AggValue::Min(Min::zero()),
            AggregateKind::Max => AggValue::Max(Max::zero()),
            AggregateKind::Mean => AggValue::Mean(Mean::zero()),
            AggregateKind::Distinct => AggValue::Distinct(Hll::new()),
            AggregateKind::TopK { k } => AggValue::TopK(TopK::new(*k)),
        }
    }
}

/// A partial aggregate state, one variant per [`AggregateKind`], so views can
/// store, ship and merge states without being generic over the kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AggValue {
    /// Row count; wrapping `i64`, an exact group.
    Count(i64),
    /// Sum with exact integer part (see [`Sum`] for why it is not `SumInt`/`SumFloat`).
    Sum(Sum),
    /// Minimum so far.
    Min(Min),
    /// Maximum so far.
    Max(Max),
    /// Sum and count for the mean.
    Mean(Mean),
    /// Distinct-count sketch.
    Distinct(Hll),
    /// Largest values so far.
    TopK(TopK),
}

/// Why two states could not be merged or one retracted from the other: they
/// belong to different aggregate kinds (a config or snapshot mix-up), or the
/// kind has no inverse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MismatchError {
    op: Op,
    left: &'static str,
    right: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Combine,
    Subtract,
}

impl MismatchError {
    fn new(op: Op, left: &AggValue, right: &AggValue) -> Self {
        MismatchError {
            op,
            left: left.variant_name(),
            right: right.variant_name(),
        }
    }

    /// Variant of the state being modified.
    pub fn left(&self) -> &'static str {
        self.left
    }

    /// Variant of the state passed in.
    pub fn right(&self) -> &'static str {
        self.right
    }
}

impl fmt::Display for MismatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.op {
            Op::Combine => write!(
                f,
                "cannot combine a {} state with a {} state",
                self.left, self.right
            ),
            Op::Subtract if self.left == self.right => {
                write!(
                    f,
                    "cannot subtract {} states: {} has no inverse (a monoid, not a group)",
                    self.left, self.left
                )
            }
            Op::Subtract => write!(
                f,
                "cannot subtract a {} state from a {} state",
                self.right, self.left
            ),
        }
    }
}

impl std::error::Error for MismatchError {}

impl AggValue {
    fn variant_name(&self) -> &'static str {
        match self {
            AggValue::Count(_) => "Count",
            AggValue::Sum(_) => "Sum",
            AggValue::Min(_) => "Min",
            AggValue::Max(_) => "Max",
            AggValue::Mean(_) => "Mean",
            AggValue::Distinct(_) => "Distinct",
            AggValue::TopK(_) => "TopK",
        }
    }

    /// The kind this state belongs to, so callers can check restored
    /// snapshots against the view config.
    pub fn kind(&self) -> AggregateKind {
        match self {
            AggValue::Count(_) => AggregateKind::Count,
            AggValue::Sum(_) => AggregateKind::Sum,
            AggValue::Min(_) => AggregateKind::Min,
            AggValue::Max(_) => AggregateKind::Max,
            AggValue::Mean(_) => AggregateKind::Mean,
            AggValue::Distinct(_) => AggregateKind::Distinct,
            AggValue::TopK(t) => AggregateKind::TopK { k: t.k() },
        }
    }

    /// Adds `n` rows to a Count. Any other kind is a caller bug (it should
    /// have dispatched on [`AggregateKind::needs_column`]): it panics in debug
    /// builds and is ignored in release builds rather than failing a job.
    #[inline]
    pub fn update_count(&mut self, n: i64) {
        debug_assert!(
            matches!(self, AggValue::Count(_)),
            "update_count on a {} state",
            self.variant_name()
        );
        if let AggValue::Count(c) = self {
            c.combine(&n);
        }
    }

    /// Adds one numeric column value. For Distinct, numerically equal values
    /// count once (`1` and `1.0`, `0.0` and `-0.0`, all NaNs). Calling it on
    /// a Count is a caller bug: debug panic, release no-op.
    #[inline]
    pub fn update_num(&mut self, v: Num) {
        match self {
            AggValue::Sum(s) => s.add(v),
            AggValue::Min(m) => m.add(v),
            AggValue::Max(m) => m.add(v),
            AggValue::Mean(m) => m.add(v),
            AggValue::TopK(t) => t.add(v),
            AggValue::Distinct(h) => h.insert_num(v),
            AggValue::Count(_) => {
                debug_assert!(false, "update_num on a Count state: use update_count")
            }
        }
    }

    /// Adds one string column value. Only Distinct accepts strings (the other
    /// aggregates are numeric and config validation rejects string columns
    /// for them); anything else is a caller bug: debug panic, release no-op.
    #[inline]
    pub fn update_str(&mut self, s: &str) {
        debug_assert!(
            matches!(self, AggValue::Distinct(_)),
            "update_str on a {} state",
            self.variant_name()
        );
        if let AggValue::Distinct(h) = self {
            h.insert_str(s);
        }
    }

    /// Merges `other` into `self` (associative and commutative per kind).
    /// States of different kinds are an error and leave `self` unchanged.
    pub fn combine(&mut self, other: &AggValue) -> Result<(), MismatchError> {
        match (self, other) {
            (AggValue::Count(a), AggValue::Count(b)) => a.combine(b),
            (AggValue::Sum(a), AggValue::Sum(b)) => a.combine(b),
            (AggValue::Min(a), AggValue::Min(b)) => a.combine(b),
            (AggValue::Max(a), AggValue::Max(b)) => a.combine(b),
            (AggValue::Mean(a), AggValue::Mean(b)) => a.combine(b),
            (AggValue::Distinct(a), AggValue::Distinct(b)) => a.combine(b),
            (AggValue::TopK(a), AggValue::TopK(b)) => a.combine(b),
            (a, b) => return Err(MismatchError::new(Op::Combine, a, b)),
        }
        Ok(())
    }

    /// Like [`AggValue::combine`], reusing `other`'s allocations (a dense
    /// sketch is 16 KiB) when it is no longer needed.
    pub fn combine_owned(&mut self, other: AggValue) -> Result<(), MismatchError> {
        match (self, other) {
            (AggValue::Distinct(a), AggValue::Distinct(b)) => a.combine_owned(b),
            (a, b) => return a.combine(&b),
        }
        Ok(())
    }

    /// Retracts `other` (previously combined in) from `self`, for windows.
    /// Only Group kinds (Count, Sum, Mean) support it; anything else, or
    /// states of different kinds, is an error and leaves `self` unchanged.
    pub fn subtract(&mut self, other: &AggValue) -> Result<(), MismatchError> {
        match (self, other) {
            (AggValue::Count(a), AggValue::Count(b)) => a.subtract(b),
            (AggValue::Sum(a), AggValue::Sum(b)) => a.subtract(b),
            (AggValue::Mean(a), AggValue::Mean(b)) => a.subtract(b),
            (a, b) => return Err(MismatchError::new(Op::Subtract, a, b)),
        }
        Ok(())
    }

    /// One number per state for ranking the "top keys" of a view; `None` when
    /// there is nothing to rank by (no value yet, or top-k, which is a list).
    pub fn scalar(&self) -> Option<f64> {
        match self {
            AggValue::Count(c) => Some(*c as f64),
            AggValue::Sum(s) => Some(s.value().to_f64()),
            AggValue::Min(m) => m.value().map(Num::to_f64),
            AggValue::Max(m) => m.value().map(Num::to_f64),
            AggValue::Mean(m) => m.value(),
            AggValue::Distinct(h) => Some(h.estimate() as f64),
            AggValue::TopK(_) => None,
        }
    }

    /// Human-readable result for CLI output and logs (see the `Display` impl).
    pub fn display(&self) -> String {
        self.to_string()
    }
}

/// Integers print exactly, floats with a fraction (`2.0`), missing values
/// (min/max/mean of nothing) as `null`, top-k as `[5, 4, 4]`.
impl fmt::Display for AggValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |f: &mut fmt::Formatter<'_>, v: Option<Num>| match v {
            Some(v) => write!(f, "{v}"),
            None => f.write_str("null"),
        };
        match self {
            AggValue::Count(c) => write!(f, "{c}"),
            AggValue::Sum(s) => write!(f, "{s}"),
            AggValue::Min(m) => opt(f, m.value()),
            AggValue::Max(m) => opt(f, m.value()),
            AggValue::Mean(m) => opt(f, m.value().map(Num::Float)),
            AggValue::Distinct(h) => write!(f, "{}", h.estimate()),
            AggValue::TopK(t) => {
                f.write_str("[")?;
                for (i, v) in t.items().iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::monoid::json_roundtrip;
    use super::*;
    use proptest::prelude::*;

    fn kind() -> impl Strategy<Value = AggregateKind> {
        prop_oneof![
            Just(AggregateKind::Count),
            Just(AggregateKind::Sum),
            Just(AggregateKind::Min),
            Just(AggregateKind::Max),
            Just(AggregateKind::Mean),
            Just(AggregateKind::Distinct),
            (0usize..5).prop_map(|k| AggregateKind::TopK { k }),
        ]
    }

    /// Rows whose arithmetic is exact for the kind (Mean sums in f64, so it
    /// gets small integers) and which survive JSON (finite dyadic floats).
    fn rows(kind: &AggregateKind) -> BoxedStrategy<Vec<Num>> {
        let bound = if *kind == AggregateKind::Mean {
            1 << 30
        } else {
            i64::MAX
        };
        let num = prop_oneof![
            (-bound..bound).prop_map(Num::Int),
            (-4i64..4).prop_map(Num::Int),
            (-32i64..32).prop_map(|v| Num::Float(v as f64 / 8.0)),
            (-1_000_000i64..1_000_000).prop_map(|v| Num::Float(v as f64 / 8.0)),
        ];
        prop::collection::vec(num, 0..10).boxed()
    }

    fn fold(kind: &AggregateKind, rows: &[Num]) -> AggValue {
        let mut state = kind.zero();
        for &v in rows {
            match (kind, v) {
                // Counting by arbitrary increments also exercises wrapping.
                (AggregateKind::Count, Num::Int(n)) => state.update_count(n),
                (AggregateKind::Count, Num::Float(_)) => state.update_count(1),
                // Distinct sees strings as well as numbers.
                (AggregateKind::Distinct, Num::Float(f)) if f < 0.0 => {
                    state.update_str(&v.to_string())
                }
                _ => state.update_num(v),
            }
        }
        state
    }

    fn kind_and_rows(n: usize) -> impl Strategy<Value = (AggregateKind, Vec<Vec<Num>>)> {
        kind().prop_flat_map(move |k| {
            let r = prop::collection::vec(rows(&k), n);
            (Just(k), r)
        })
    }

    fn plus(a: &AggValue, b: &AggValue) -> AggValue {
        let mut out = a.clone();
        out.combine(b).expect("same kind");
        out
    }

    proptest! {
        #[test]
        fn every_kind_obeys_its_laws((kind, states) in kind_and_rows(3)) {
            let [a, b, c] = [0, 1, 2].map(|i| fold(&kind, &states[i]));
            let zero = kind.zero();
            prop_assert_eq!(&a.kind(), &kind);
            for x in [&a, &b, &c] {
                prop_assert_eq!(&plus(x, &zero), x);
                prop_assert_eq!(&plus(&zero, x), x);
                prop_assert_eq!(&json_roundtrip(x).unwrap(), x);
            }
            prop_assert_eq!(plus(&plus(&a, &b), &c), plus(&a, &plus(&b, &c)));
            prop_assert_eq!(plus(&a, &b), plus(&b, &a));
            let mut owned = a.clone();
            owned.combine_owned(b.clone()).unwrap();
            prop_assert_eq!(&owned, &plus(&a, &b));
            let mut diff = a.clone();
            match kind.algebra() {
                Algebra::Group => {
                    diff.subtract(&a).unwrap();
                    prop_assert_eq!(&diff, &zero);
                    let mut back = plus(&a, &b);
                    back.subtract(&b).unwrap();
                    prop_assert_eq!(&back, &a);
                }
                _ => {
                    prop_assert!(diff.subtract(&b).is_err());
                    prop_assert_eq!(&diff, &a);
                }
            }
        }

        #[test]
        fn partial_aggregation_equals_one_pass((kind, parts) in kind_and_rows(2)) {
            let all: Vec<Num> = parts.concat();
            let merged = plus(&fold(&kind, &parts[0]), &fold(&kind, &parts[1]));
            prop_assert_eq!(&merged, &fold(&kind, &all));
            prop_assert_eq!(merged.display(), fold(&kind, &all).display());
        }
    }

    #[test]
    fn declared_algebra_matches_state_types() {
        use AggregateKind as K;
        assert_eq!(K::Count.algebra(), i64::algebra());
        assert_eq!(K::Sum.algebra(), Sum::algebra());
        assert_eq!(K::Min.algebra(), Min::algebra());
        assert_eq!(K::Max.algebra(), Max::algebra());
        assert_eq!(K::Mean.algebra(), Mean::algebra());
        assert_eq!(K::Distinct.algebra(), Hll::algebra());
        assert_eq!(K::TopK { k: 3 }.algebra(), TopK::algebra());
        assert!(
            !K::Count.needs_column() && K::Sum.needs_column() && K::TopK { k: 1 }.needs_column()
        );
    }

    #[test]
    fn kind_names_match_the_config() {
        let names = r#"["count","sum","min","max","mean","distinct",{"top_k":{"k":3}}]"#;
        let kinds: Vec<AggregateKind> = serde_json::from_str(names).unwrap();
        assert_eq!(kinds[5], AggregateKind::Distinct);
        assert_eq!(kinds[6], AggregateKind::TopK { k: 3 });
        assert_eq!(serde_json::to_string(&kinds).unwrap(), names);
        assert_eq!(kinds[6].zero().kind(), kinds[6]);
    }

    #[test]
    fn mismatches_are_errors_not_panics() {
        let mut count = AggValue::Count(3);
        let err = count.combine(&AggregateKind::Sum.zero()).unwrap_err();
        assert_eq!((err.left(), err.right()), ("Count", "Sum"));
        assert_eq!(
            err.to_string(),
            "cannot combine a Count state with a Sum state"
        );
        assert_eq!(count, AggValue::Count(3));
        assert!(count.combine_owned(AggregateKind::Distinct.zero()).is_err());
        let err = count.subtract(&AggregateKind::Mean.zero()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot subtract a Mean state from a Count state"
        );
        let mut min = AggregateKind::Min.zero();
        let err = min.subtract(&AggregateKind::Min.zero()).unwrap_err();
        assert!(err.to_string().contains("no inverse"), "{err}");
        let boxed: Box<dyn std::error::Error> = Box::new(err);
        assert!(boxed.to_string().starts_with("cannot subtract Min"));
    }

    #[test]
    fn scalar_and_display() {
        let of = |kind: AggregateKind, rows: &[Num]| fold(&kind, rows);
        let rows = [Num::Int(4), Num::Float(1.5), Num::Int(4)];
        let cases = [
            (
                of(AggregateKind::Count, &[Num::Float(0.0); 3]),
                Some(3.0),
                "3",
            ),
            (of(AggregateKind::Sum, &rows), Some(9.5), "9.5"),
            (of(AggregateKind::Sum, &rows[..1]), Some(4.0), "4"),
            (of(AggregateKind::Min, &rows), Some(1.5), "1.5"),
            (of(AggregateKind::Max, &rows), Some(4.0), "4"),
            (of(AggregateKind::Max, &[]), None, "null"),
            (of(AggregateKind::Mean, &rows[..2]), Some(2.75), "2.75"),
            (of(AggregateKind::Mean, &[]), None, "null"),
            (of(AggregateKind::Distinct, &rows), Some(2.0), "2"),
            (of(AggregateKind::TopK { k: 2 }, &rows), None, "[4, 4]"),
        ];
        for (value, scalar, shown) in cases {
            assert_eq!(value.scalar(), scalar, "{value:?}");
            assert_eq!(value.display(), shown, "{value:?}");
        }
        let mut distinct = AggregateKind::Distinct.zero();
        for v in [Num::Int(1), Num::Float(1.0), Num::Float(-0.0), Num::Int(0)] {
            distinct.update_num(v);
        }
        distinct.update_str("1");
        assert_eq!(distinct.scalar(), Some(3.0));
    }

    #[test]
    fn garbage_states_are_rejected() {
        for bad in [
            r#"{"Count":"x"}"#,
            r#"{"Nope":1}"#,
            r#"{"Distinct":{"Dense":[1]}}"#,
            r#"{"Distinct":{"Sparse":[0]}}"#,
            r#"{"TopK":{"k":1,"items":[1,2]}}"#,
            r#"{"Sum":{"int":1}}"#,
            r#"{"Min":"x"}"#,
        ] {
            assert!(serde_json::from_str::<AggValue>(bad).is_err(), "{bad}");
        }
        let ok: AggValue = serde_json::from_str(r#"{"Min":2.5}"#).unwrap();
        assert_eq!(ok.scalar(), Some(2.5));
    }
}
