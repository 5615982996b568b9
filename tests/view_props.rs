//! The view definition: keys and aggregates over Arrow batches match a plain
//! row-by-row reference, and the result does not depend on how the input is
//! split into batches, partitions and jobs, or on the order partials are
//! merged in.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray, TimestampMillisecondArray};
use arrow::record_batch::RecordBatch;
use lamina::Context;
use lamina::view::{AggValue, AggregateKind, KeySpec, Num, ViewSpec, run_view};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Row {
    line: Option<String>,
    user: Option<String>,
    amount: Option<i64>,
    price: f64,
    ts_ms: i64,
}

fn row() -> impl Strategy<Value = Row> {
    let word = prop::sample::select(vec!["a", "b", "c", "a|b", "x\\y", "déjà"]);
    (
        prop::option::weighted(
            0.9,
            prop::collection::vec(word, 0..5).prop_map(|w| w.join(" ")),
        ),
        prop::option::weighted(
            0.9,
            prop::sample::select(vec!["ann", "bob", "cy"]).prop_map(String::from),
        ),
        prop::option::weighted(0.8, -50i64..50),
        // Integer-valued floats keep float sums exact in any order.
        (-20i32..20).prop_map(f64::from),
        0i64..4 * 3_600_000,
    )
        .prop_map(|(line, user, amount, price, ts_ms)| Row {
            line,
            user,
            amount,
            price,
            ts_ms,
        })
}

fn batch(rows: &[Row]) -> RecordBatch {
    let cols: Vec<(&str, ArrayRef)> = vec![
        (
            "line",
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.line.clone()).collect::<Vec<_>>(),
            )),
        ),
        (
            "user",
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.user.clone()).collect::<Vec<_>>(),
            )),
        ),
        (
            "amount",
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.amount).collect::<Vec<_>>(),
            )),
        ),
        (
            "price",
            Arc::new(Float64Array::from(
                rows.iter().map(|r| r.price).collect::<Vec<_>>(),
            )),
        ),
        (
            "ts",
            Arc::new(TimestampMillisecondArray::from(
                rows.iter().map(|r| r.ts_ms).collect::<Vec<_>>(),
            )),
        ),
    ];
    RecordBatch::try_from_iter(cols).unwrap()
}

/// Cuts `rows` into batches at the given fractions.
fn batches(rows: &[Row], cuts: &[usize]) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    let mut start = 0;
    for &c in cuts {
        let end = (start + c).min(rows.len());
        out.push(batch(&rows[start..end]));
        start = end;
    }
    out.push(batch(&rows[start..]));
    out
}

fn specs() -> Vec<ViewSpec> {
    let v = |name: &str, key: KeySpec, aggregate: AggregateKind, column: Option<&str>| ViewSpec {
        name: name.into(),
        key,
        aggregate,
        column: column.map(String::from),
    };
    let bucket = KeySpec::TimeBucket {
        column: "ts".into(),
        width_secs: 3600,
    };
    vec![
        v(
            "words",
            KeySpec::Words("line".into()),
            AggregateKind::Count,
            None,
        ),
        v(
            "amount_by_user",
            KeySpec::Column("user".into()),
            AggregateKind::Sum,
            Some("amount"),
        ),
        v(
            "price_by_user",
            KeySpec::Column("user".into()),
            AggregateKind::Sum,
            Some("price"),
        ),
        v(
            "min_by_hour",
            bucket.clone(),
            AggregateKind::Min,
            Some("amount"),
        ),
        v(
            "max_by_amount",
            KeySpec::Column("amount".into()),
            AggregateKind::Max,
            Some("price"),
        ),
        v(
            "mean_by_user",
            KeySpec::Column("user".into()),
            AggregateKind::Mean,
            Some("price"),
        ),
        v(
            "users_by_hour",
            bucket.clone(),
            AggregateKind::Distinct,
            Some("user"),
        ),
        v(
            "top_by_user_hour",
            KeySpec::Tuple(vec![KeySpec::Column("user".into()), bucket]),
            AggregateKind::TopK { k: 3 },
            Some("amount"),
        ),
        v(
            "user_word",
            KeySpec::Tuple(vec![
                KeySpec::Column("user".into()),
                KeySpec::Words("line".into()),
            ]),
            AggregateKind::Count,
            None,
        ),
    ]
}

/// Escapes a tuple part the way tuple keys are documented to.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('|', "\\|")
}

fn hour(ts_ms: i64) -> String {
    let h = ts_ms / 3_600_000;
    format!("1970-01-01T{h:02}:00:00Z")
}

/// The plain row-at-a-time reference for one view.
fn reference(spec: &ViewSpec, rows: &[Row]) -> BTreeMap<String, AggValue> {
    let mut out: BTreeMap<String, AggValue> = BTreeMap::new();
    for r in rows {
        let words: Vec<String> = r
            .line
            .as_deref()
            .map(|l| l.split_whitespace().map(String::from).collect())
            .unwrap_or_default();
        let keys: Vec<String> = match spec.name.as_str() {
            "words" => words,
            "amount_by_user" | "price_by_user" | "mean_by_user" => r.user.iter().cloned().collect(),
            "min_by_hour" | "users_by_hour" => vec![hour(r.ts_ms)],
            "max_by_amount" => r.amount.iter().map(|a| a.to_string()).collect(),
            "top_by_user_hour" => r
                .user
                .iter()
                .map(|u| format!("{}|{}", esc(u), hour(r.ts_ms)))
                .collect(),
            "user_word" => match &r.user {
                Some(u) => words
                    .iter()
                    .map(|w| format!("{}|{}", esc(u), esc(w)))
                    .collect(),
                None => vec![],
            },
            other => panic!("no reference for {other}"),
        };
        for k in keys {
            let slot = out.entry(k).or_insert_with(|| spec.aggregate.zero());
            match spec.column.as_deref() {
                None => slot.update_count(1),
                Some("amount") => {
                    if let Some(a) = r.amount {
                        slot.update_num(Num::Int(a));
                    }
                }
                Some("price") => slot.update_num(Num::Float(r.price)),
                Some("user") => {
                    if let Some(u) = &r.user {
                        slot.update_str(u);
                    }
                }
                Some(other) => panic!("no column {other}"),
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn view_equals_reference_for_any_split(
        rows in prop::collection::vec(row(), 0..120),
        cuts in prop::collection::vec(0usize..40, 0..6),
        partitions in 1usize..6,
        threads in 1usize..4,
    ) {
        let ctx = Context::builder().threads(threads).build().unwrap();
        let batches = batches(&rows, &cuts);
        for spec in specs() {
            spec.validate().unwrap();
            let want = reference(&spec, &rows);
            // One job over all batches.
            let input = ctx.from_batches(batches.clone(), partitions);
            let got: BTreeMap<String, AggValue> = run_view(&spec, &input).collect().unwrap().into_iter().collect();
            prop_assert_eq!(&got, &want, "view {} in one job", &spec.name);
            // Each batch alone, merged afterwards (what serving does with
            // micro-batch deltas), in reverse order.
            let mut merged: BTreeMap<String, AggValue> = BTreeMap::new();
            for b in batches.iter().rev() {
                for (k, v) in spec.aggregate_batches([b]).unwrap() {
                    match merged.get_mut(&k) {
                        Some(acc) => acc.combine(&v).unwrap(),
                        None => { merged.insert(k, v); }
                    }
                }
            }
            prop_assert_eq!(&merged, &want, "view {} batch by batch", &spec.name);
        }
    }

    #[test]
    fn partials_merge_the_same_in_any_grouping(
        rows in prop::collection::vec(row(), 1..80),
        split in 0usize..80,
    ) {
        // ((A + B) + C) == (A + (B + C)) == (C + A) + B for the per-key partials.
        let n = rows.len();
        let (a, rest) = rows.split_at(split.min(n));
        let (b, c) = rest.split_at(rest.len() / 2);
        for spec in specs() {
            let part = |rs: &[Row]| spec.aggregate_batches([&batch(rs)]).unwrap();
            let (pa, pb, pc) = (part(a), part(b), part(c));
            let merge = |x: &lamina::partitioner::FastMap<String, AggValue>, y: &lamina::partitioner::FastMap<String, AggValue>| {
                let mut out = x.clone();
                for (k, v) in y {
                    match out.get_mut(k) {
                        Some(acc) => acc.combine(v).unwrap(),
                        None => { out.insert(k.clone(), v.clone()); }
                    }
                }
                out
            };
            let left = merge(&merge(&pa, &pb), &pc);
            let right = merge(&pa, &merge(&pb, &pc));
            let shuffled = merge(&merge(&pc, &pa), &pb);
            let sorted = |m: lamina::partitioner::FastMap<String, AggValue>| m.into_iter().collect::<BTreeMap<_, _>>();
            let (left, right, shuffled) = (sorted(left), sorted(right), sorted(shuffled));
            prop_assert_eq!(&left, &right);
            prop_assert_eq!(&left, &shuffled);
            prop_assert_eq!(left, reference(&spec, &rows));
        }
    }
}

#[test]
fn missing_or_mistyped_column_is_a_plan_error_naming_view_and_column() {
    let ctx = Context::builder().threads(1).build().unwrap();
    let b = batch(&[Row {
        line: Some("a".into()),
        user: None,
        amount: Some(1),
        price: 1.0,
        ts_ms: 0,
    }]);
    let input = ctx.from_batches(vec![b.clone()], 1);
    let missing = ViewSpec {
        name: "v".into(),
        key: KeySpec::Column("nope".into()),
        aggregate: AggregateKind::Count,
        column: None,
    };
    let err = run_view(&missing, &input)
        .collect()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`nope`") && err.contains("view `v`") && err.contains("columns: line, user"),
        "{err}"
    );
    let mistyped = ViewSpec {
        name: "w".into(),
        key: KeySpec::Words("amount".into()),
        aggregate: AggregateKind::Count,
        column: None,
    };
    let err = mistyped.aggregate_batches([&b]).unwrap_err().to_string();
    assert!(err.contains("`amount`") && err.contains("Int64"), "{err}");
    let sum_of_text = ViewSpec {
        name: "s".into(),
        key: KeySpec::Column("user".into()),
        aggregate: AggregateKind::Sum,
        column: Some("line".into()),
    };
    let err = sum_of_text.aggregate_batches([&b]).unwrap_err().to_string();
    assert!(err.contains("`line`") && err.contains("number"), "{err}");
}

#[test]
fn invalid_specs_are_rejected_before_running() {
    let base = ViewSpec {
        name: "v".into(),
        key: KeySpec::Column("user".into()),
        aggregate: AggregateKind::Sum,
        column: None,
    };
    assert!(
        base.validate()
            .unwrap_err()
            .to_string()
            .contains("needs a `column`")
    );
    let count_with_column = ViewSpec {
        aggregate: AggregateKind::Count,
        column: Some("x".into()),
        ..base.clone()
    };
    assert!(count_with_column.validate().is_err());
    let top0 = ViewSpec {
        aggregate: AggregateKind::TopK { k: 0 },
        column: Some("x".into()),
        ..base.clone()
    };
    assert!(top0.validate().unwrap_err().to_string().contains("k >= 1"));
    let zero_bucket = ViewSpec {
        key: KeySpec::TimeBucket {
            column: "ts".into(),
            width_secs: 0,
        },
        aggregate: AggregateKind::Count,
        ..base.clone()
    };
    assert!(zero_bucket.validate().is_err());
    let nested = ViewSpec {
        key: KeySpec::Tuple(vec![KeySpec::Tuple(vec![KeySpec::Column("a".into())])]),
        aggregate: AggregateKind::Count,
        ..base
    };
    assert!(
        nested
            .validate()
            .unwrap_err()
            .to_string()
            .contains("nested")
    );
}

#[test]
fn time_buckets_render_as_rfc3339_across_dates() {
    let mut s = String::new();
    // 2026-11-25T14:00:00Z and a leap day, and before the epoch.
    for (micros, want) in [
        (1_795_615_200_000_000i64, "2026-11-25T14:00:00Z"),
        (951_782_400_000_000, "2000-02-29T00:00:00Z"),
        (-1_000_000, "1969-12-31T23:59:59Z"),
        (0, "1970-01-01T00:00:00Z"),
    ] {
        s.clear();
        lamina::view::key::write_rfc3339(micros, &mut s);
        assert_eq!(s, want);
    }
}

fn kv_batch(k: ArrayRef, v: ArrayRef) -> RecordBatch {
    RecordBatch::try_from_iter([("k", k), ("v", v)]).unwrap()
}

#[test]
fn a_key_column_that_changes_type_between_batches_merges_by_text() {
    // Integer keys fold in an i64 map and text keys in a text map; the same
    // key seen both ways must come out once.
    let spec = ViewSpec {
        name: "mixed".into(),
        key: KeySpec::Column("k".into()),
        aggregate: AggregateKind::Sum,
        column: Some("v".into()),
    };
    let text = kv_batch(
        Arc::new(StringArray::from(vec!["1", "2", "-7"])),
        Arc::new(Int64Array::from(vec![10, 20, 30])),
    );
    let ints = kv_batch(
        Arc::new(Int64Array::from(vec![1, 3, -7])),
        Arc::new(Int64Array::from(vec![1, 2, 3])),
    );
    let got: BTreeMap<String, String> = spec
        .aggregate_batches([&text, &ints])
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
    let want: BTreeMap<String, String> = [("-7", "33"), ("1", "11"), ("2", "20"), ("3", "2")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn integer_sum_stays_exact_and_promotes_on_a_float_column() {
    let spec = ViewSpec {
        name: "s".into(),
        key: KeySpec::Column("k".into()),
        aggregate: AggregateKind::Sum,
        column: Some("v".into()),
    };
    let big = kv_batch(
        Arc::new(StringArray::from(vec!["a", "a"])),
        Arc::new(Int64Array::from(vec![i64::MAX - 1, 1])),
    );
    let only_ints = spec.aggregate_batches([&big]).unwrap();
    let mut want = AggregateKind::Sum.zero();
    want.update_num(Num::Int(i64::MAX - 1));
    want.update_num(Num::Int(1));
    assert_eq!(only_ints["a"], want);
    assert_eq!(only_ints["a"].to_string(), i64::MAX.to_string());

    let floats = kv_batch(
        Arc::new(StringArray::from(vec!["a"])),
        Arc::new(Float64Array::from(vec![0.5])),
    );
    let mixed = spec.aggregate_batches([&big, &floats]).unwrap();
    want.update_num(Num::Float(0.5));
    assert_eq!(
        mixed["a"], want,
        "the integer part survives promotion exactly"
    );
}

/// Regression: an int64 `sum` past `i64::MAX` wrapped to a negative number,
/// in one batch, across batches and across merged partials.
#[test]
fn integer_sums_past_i64_max_are_exact() {
    let spec = ViewSpec {
        name: "total".into(),
        key: KeySpec::Column("user".into()),
        aggregate: AggregateKind::Sum,
        column: Some("amount".into()),
    };
    let batch = |amounts: Vec<i64>| {
        let users: Vec<&str> = amounts.iter().map(|_| "u").collect();
        RecordBatch::try_from_iter([
            ("user", Arc::new(StringArray::from(users)) as ArrayRef),
            ("amount", Arc::new(Int64Array::from(amounts)) as ArrayRef),
        ])
        .unwrap()
    };
    let one = batch(vec![i64::MAX, i64::MAX, 2]);
    let got = spec.aggregate_batches([&one]).unwrap();
    let AggValue::Sum(s) = &got["u"] else {
        panic!("{got:?}")
    };
    let want = 2 * i128::from(i64::MAX) + 2;
    assert_eq!(s.exact(), Some(want));
    assert_eq!(got["u"].display(), want.to_string());
    // Split over batches and over partitions of a job: the same.
    let parts = [batch(vec![i64::MAX]), batch(vec![i64::MAX, 2])];
    let split = spec.aggregate_batches(parts.iter()).unwrap();
    assert_eq!(split["u"], got["u"]);
    let ctx = Context::builder().threads(2).build().unwrap();
    let rdd = ctx.parallelize(parts.to_vec(), 2);
    let merged: BTreeMap<String, AggValue> = run_view(&spec, &rdd)
        .collect()
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(merged["u"], got["u"]);
    // Back into range, it is an ordinary i64 again.
    let mut back = got["u"].clone();
    back.update_num(Num::Int(-i64::MAX));
    back.update_num(Num::Int(-2));
    assert_eq!(back.display(), i64::MAX.to_string());
}
