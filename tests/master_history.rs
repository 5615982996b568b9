//! Parquet written by other tools read as a stream's history, and key
//! columns read as dictionaries, on every backend of the master dataset
//! (see tests/support/master.rs).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::StringArray;
use arrow::record_batch::RecordBatch;
use lamina::master::EpochFile;
use lamina::master::history::{HistoryDataset, scan_as};
use lamina::view::{AggregateKind, KeySpec, ViewSpec, run_view};
use lamina::{Context, Error};

#[path = "support/master.rs"]
mod master;

use master::{
    Dataset, FIXTURES, Where, as_counts, data_dir, expected, json_counts, view_columns, views,
};

on_every_backend!(
    history_of_other_tools_reads_as_the_stream,
    key_columns_are_dictionaries_only_where_wholly_encoded,
);

/// Files of other tools under hive-style folders, with the files and
/// folders such tools leave beside them, read as a stream whose schema
/// differs from theirs: by name, one column from the folders, one absent.
async fn history_of_other_tools_reads_as_the_stream(d: Dataset) {
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    for (i, name) in FIXTURES.iter().enumerate() {
        let bytes = std::fs::read(data_dir().join(name)).unwrap();
        d.put(&format!("hist/region=r{i}/part-0.parquet"), bytes.clone())
            .await;
        if i == 0 {
            d.put("hist/region=r0/.part-0.parquet.crc", b"crc".to_vec())
                .await;
            d.put("hist/_SUCCESS", Vec::new()).await;
            d.put("hist/_temporary/0/part-9.parquet", bytes).await;
        }
    }
    let url = format!("{}/hist", d.url);
    let history = HistoryDataset::open(&url, &d.options).unwrap();
    let listing = history.list().await.unwrap();
    let labels: Vec<_> = listing.files.iter().map(|f| f.label.clone()).collect();
    assert_eq!(labels.len(), 4, "{labels:?}");
    assert!(
        labels[0].ends_with("hist/region=r0/part-0.parquet"),
        "{labels:?}"
    );

    let field = |n: &str, t: DataType, nullable| Field::new(n, t, nullable);
    let stream = |amount: DataType, extra: Option<Field>| {
        let mut fields = vec![
            field("user", DataType::Utf8, true),
            field("line", DataType::Utf8, false),
            field("amount", amount, true),
            field(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
            field("region", DataType::Utf8, false),
            field("note", DataType::Utf8, true),
        ];
        fields.extend(extra);
        Arc::new(Schema::new(fields))
    };
    let target = stream(DataType::Int64, None);
    let ctx = Context::builder().threads(2).build().unwrap();
    let want = expected();
    for (spec, key) in views() {
        let columns = view_columns(&spec);
        let (input, rows) = scan_as(&ctx, &listing.files, Some(&columns), &target, None)
            .await
            .unwrap();
        assert_eq!(rows, 4 * want["rows"].as_u64().unwrap());
        let got = as_counts(run_view(&spec, &input).collect_async().await.unwrap());
        let four_times: BTreeMap<String, i64> = json_counts(&want[key])
            .into_iter()
            .map(|(k, n)| (k, 4 * n))
            .collect();
        assert_eq!(got, four_times, "view {key}");
    }
    // The folder's value and the absent column, for every row.
    let (all, _) = scan_as(&ctx, &listing.files, None, &target, None)
        .await
        .unwrap();
    let per_region = all
        .run_async(|_, it| {
            let mut seen = BTreeMap::<String, usize>::new();
            for b in it {
                assert_eq!(b.num_columns(), 6);
                assert_eq!(b.column_by_name("note").unwrap().null_count(), b.num_rows());
                let region = b
                    .column_by_name("region")
                    .unwrap()
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .unwrap();
                for r in region.iter() {
                    *seen.entry(r.unwrap().to_owned()).or_default() += 1;
                }
            }
            Ok(seen)
        })
        .await
        .unwrap()
        .into_iter()
        .fold(BTreeMap::<String, usize>::new(), |mut all, part| {
            for (k, n) in part {
                *all.entry(k).or_default() += n;
            }
            all
        });
    assert_eq!(
        per_region,
        (0..4)
            .map(|i| (format!("r{i}"), 1000))
            .collect::<BTreeMap<_, _>>()
    );

    // A type that does not match, and a required column nowhere.
    let err = scan_as(
        &ctx,
        &listing.files,
        None,
        &stream(DataType::Boolean, None),
        None,
    )
    .await
    .err()
    .unwrap();
    assert_plan_error(
        &err,
        &[
            "hist/region=r0/part-0.parquet",
            "column `amount` is Int64 in the file",
            "Boolean",
        ],
    );
    // A folder value that is not of the column's type: refused before a
    // row is read, naming the file and the folder.
    let numeric_region = Arc::new(Schema::new(vec![
        field("line", DataType::Utf8, false),
        field("region", DataType::Int64, false),
    ]));
    let err = scan_as(&ctx, &listing.files, None, &numeric_region, None)
        .await
        .err()
        .unwrap();
    assert_plan_error(
        &err,
        &["hist/region=r0/part-0.parquet", "folder `region=r0`"],
    );
    let required = Field::new("country", DataType::Utf8, false);
    let err = scan_as(
        &ctx,
        &listing.files,
        None,
        &stream(DataType::Int64, Some(required)),
        None,
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("no column `country`"), "{err}");
}

/// `err` is a planning error whose message holds every one of `parts`.
fn assert_plan_error(err: &Error, parts: &[&str]) {
    let msg = err.to_string();
    assert!(matches!(err, Error::Plan(_)), "{msg}");
    for part in parts {
        assert!(msg.contains(part), "`{part}` is not in: {msg}");
    }
}

/// Lamina's writer keeps a key column's dictionary whole (up to 16 MiB), so
/// a batch run's scan reads it as a dictionary; a file whose pages fell
/// back from dictionary to plain (another writer's 64 KiB limit) is read
/// as plain strings. Both give the same counts.
async fn key_columns_are_dictionaries_only_where_wholly_encoded(d: Dataset) {
    use arrow::datatypes::DataType;
    // 200,000 rows over 50,000 distinct 42-byte URLs: a 2 MB dictionary,
    // beyond parquet's 1 MiB default.
    let urls: Vec<String> = (0..200_000u64)
        .map(|i| format!("https://shop.example/item/{:07}?ref=x", (i * 7919) % 50_000))
        .collect();
    let batch = RecordBatch::try_from_iter([(
        "url",
        Arc::new(StringArray::from(urls.clone())) as arrow::array::ArrayRef,
    )])
    .unwrap();
    let store = d.open();
    let own = store
        .write_epoch_file("events", 0, std::slice::from_ref(&batch))
        .await
        .unwrap();
    let mut bytes = Vec::new();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_dictionary_page_size_limit(64 << 10)
        .build();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let fallback = EpochFile {
        stream: "events".into(),
        epoch: 1,
        path: EpochFile::path_for("events", 1),
        rows: urls.len() as u64,
        bytes: bytes.len() as u64,
        segments: Vec::new(),
    };
    d.put(&fallback.path, bytes).await;

    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    for u in &urls {
        *want.entry(u.clone()).or_default() += 1;
    }
    let spec = ViewSpec {
        name: "by_url".into(),
        key: KeySpec::Column("url".into()),
        aggregate: AggregateKind::Count,
        column: None,
    };
    let ctx = Context::builder().threads(2).build().unwrap();
    let url = ["url".to_string()];
    for (file, dictionary) in [(own, true), (fallback, false)] {
        let progress = Default::default();
        let input = store
            .scan_with(
                &ctx,
                std::slice::from_ref(&file),
                Some(&url),
                &url,
                &progress,
            )
            .await
            .unwrap();
        let types: Vec<DataType> = input
            .run_async(|_, it| {
                Ok(it
                    .map(|b| b.column(0).data_type().clone())
                    .collect::<Vec<_>>())
            })
            .await
            .unwrap()
            .concat();
        assert!(!types.is_empty());
        assert!(
            types
                .iter()
                .all(|t| matches!(t, DataType::Dictionary(..)) == dictionary),
            "{}: expected dictionary = {dictionary}, read {types:?}",
            file.path
        );
        let got = as_counts(run_view(&spec, &input).collect_async().await.unwrap());
        assert_eq!(got, want, "{}", file.path);
    }
}
