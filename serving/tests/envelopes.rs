//! Enveloped records (Kafka's) through the speed layer into the state
//! store, without a broker: the source columns reach views, each
//! partition's next offset commits with the micro-batch (also across
//! micro-batches cut by the byte budget), refused and undecodable envelopes
//! become dead letters whose offsets still count, and a receiver's
//! `committed_offsets` reads back exactly what was committed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lamina::view::{AggValue, AggregateKind, KeySpec, ViewSpec};
use lamina_serving::store::{Position, ViewStore};
use lamina_speed::commit::{CommitSink, RecordLog};
use lamina_speed::control::ENVELOPED;
use lamina_speed::envelope::{Envelope, SourcePosition};
use lamina_speed::format::{ColumnDef, ColumnType, Format};
use lamina_speed::microbatch::{Clock, MicroBatcher, StatsLog};
use lamina_speed::program::Program;
use lamina_speed::receivers::StreamIngest;
use lamina_speed::wal::{Wal, WalConfig};

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn view(name: &str, column: &str) -> ViewSpec {
    ViewSpec {
        name: name.into(),
        key: KeySpec::Column(column.into()),
        aggregate: AggregateKind::Count,
        column: None,
    }
}

fn count(store: &ViewStore, view: &str, key: &str) -> i64 {
    match store.get(view, key).unwrap().map(|a| a.value) {
        Some(AggValue::Count(c)) => c,
        None => 0,
        Some(other) => panic!("{other:?}"),
    }
}

fn kafka<'a>(partition: i32, offset: i64, key: &'a str, value: &'a str) -> Envelope<'a> {
    Envelope {
        position: Some(SourcePosition {
            source: "clicks",
            partition,
            offset,
        }),
        timestamp_ms: Some(1_764_547_200_000 + offset),
        key: Some(key.as_bytes()),
        headers: vec![("origin", b"test")],
        rejected: None,
        value: value.as_bytes(),
    }
}

#[test]
fn source_columns_offsets_and_dead_letters_commit_with_the_batch() {
    let dir = Dir(std::env::temp_dir().join(format!("lamina-envelopes-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    let (wal, _) = Wal::open(WalConfig::new(dir.0.join("wal"))).unwrap();
    let views = [
        ("by_partition".to_owned(), AggregateKind::Count),
        ("by_key".to_owned(), AggregateKind::Count),
        ("by_user".to_owned(), AggregateKind::Count),
        ("by_headers".to_owned(), AggregateKind::Count),
    ];
    let store = Arc::new(ViewStore::open(&dir.0.join("state"), &views).unwrap());
    let ctx = lamina::Context::builder().threads(2).build().unwrap();
    let clock = Clock {
        interval: Duration::from_millis(10),
        epoch: Duration::from_secs(3600),
        max_records: 1_000_000,
        // Small: the records below take several micro-batches.
        max_bytes: 600,
    };
    let format = Format::Json(vec![ColumnDef::new("user", ColumnType::String)]);
    let program = Program::new(&ctx, clock.interval, &[("events".into(), format)]).unwrap();
    program.set_source_columns("events").unwrap();
    for (name, column) in [
        ("by_partition", "_partition"),
        ("by_key", "_key"),
        ("by_user", "user"),
        ("by_headers", "_headers"),
    ] {
        program.add_view("events", &view(name, column)).unwrap();
    }
    let log: Arc<dyn RecordLog> = Arc::new(wal.clone());
    let sink: Arc<dyn CommitSink> = Arc::clone(&store) as Arc<dyn CommitSink>;
    let stats = Arc::new(StatsLog::new(10, &["events".into()]));
    let mut batcher =
        MicroBatcher::resume(Arc::new(program), log, Arc::clone(&sink), stats, clock).unwrap();

    // Partition 0: offsets 0..20; partition 1: 100..110 with a gap (a
    // compacted topic) and a refused record last; a record that is not an
    // envelope this version reads; a plain record (HTTP ingest) between.
    let users = ["ann", "bob", "cy"];
    let mut envelopes: Vec<Envelope<'_>> = (0..20)
        .map(|o| kafka(0, o, "k0", r#"{"user":"ann"}"#))
        .collect();
    for o in (100..110).filter(|o| o % 4 != 1) {
        envelopes.push(kafka(1, o, users[(o % 3) as usize], r#"{"user":"bob"}"#));
    }
    envelopes.push(Envelope {
        rejected: Some("record of 9999999 bytes exceeds max_record_bytes (1048576)"),
        ..kafka(1, 110, "big", r#"{"user":"#)
    });
    let encoded: Vec<Vec<u8>> = envelopes.iter().map(Envelope::to_bytes).collect();
    wal.append_blocking(ENVELOPED, &encoded, 1_000_000).unwrap();
    wal.append_blocking(ENVELOPED, &[b"\x07not an envelope".to_vec()], 1_000_000)
        .unwrap();
    wal.append_blocking(0, &[r#"{"user":"cy"}"#], 1_000_000)
        .unwrap();
    let mut now = 1_000_000;
    let mut batches = 0;
    while !batcher.caught_up() {
        now += 10_000;
        batcher.run_once(now).unwrap();
        batches += 1;
    }
    assert!(batches > 2, "the byte budget cut the log into batches");

    // Offsets: one past the highest read, per partition, refused included.
    let offset = |partition| {
        store
            .position(&Position::SourceOffset {
                stream: "events".into(),
                partition,
                source: "clicks".into(),
            })
            .unwrap()
    };
    assert_eq!(offset(0), Some(20));
    assert_eq!(offset(1), Some(111));
    let ingest =
        StreamIngest::new(wal.clone(), 0, "events", 1 << 20).with_positions(Arc::clone(&sink));
    let committed = ingest.committed_offsets("clicks").unwrap();
    assert_eq!(
        committed.into_iter().collect::<Vec<_>>(),
        [(0, 20), (1, 111)]
    );
    assert!(ingest.committed_offsets("other").unwrap().is_empty());

    // The source columns reached the views; the plain record has nulls.
    assert_eq!(count(&store, "by_partition", "0"), 20);
    assert_eq!(count(&store, "by_partition", "1"), 7);
    assert_eq!(count(&store, "by_key", "k0"), 20);
    assert_eq!(
        count(&store, "by_key", "ann")
            + count(&store, "by_key", "bob")
            + count(&store, "by_key", "cy"),
        7
    );
    assert_eq!(count(&store, "by_user", "ann"), 20);
    assert_eq!(count(&store, "by_user", "bob"), 7);
    assert_eq!(count(&store, "by_user", "cy"), 1);
    assert_eq!(count(&store, "by_headers", r#"{"origin":"test"}"#), 27);

    // Refused and undecodable envelopes are dead letters with their reason.
    let dead = store.dead_letters("events", 10).unwrap();
    let reasons: Vec<&str> = dead.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(dead.len(), 2, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("exceeds max_record_bytes")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("envelope version 7")),
        "{reasons:?}"
    );
    assert_eq!(
        store
            .position(&Position::Records {
                stream: "events".into()
            })
            .unwrap(),
        Some(30)
    );
}
