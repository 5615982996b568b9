//! The speed layer's micro-batches, the view store, sealing into the master
//! dataset and a batch run, wired as the server wires them: every record is
//! counted exactly once at every step, across restarts, before and after a
//! generation is published.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lamina::Context;
use lamina::master::MasterStore;
use lamina::view::{AggValue, AggregateKind, KeySpec, ViewSpec};
use lamina_batch::{BatchView, ViewInput, compute_generation};
use lamina_serving::store::ViewStore;
use lamina_speed::commit::{CommitSink, RecordLog};
use lamina_speed::format::{ColumnDef, ColumnType, Format};
use lamina_speed::microbatch::seal::Sealer;
use lamina_speed::microbatch::{Clock, LoopError, MicroBatcher, StatsLog, StreamDef};
use lamina_speed::program::Program;
use lamina_speed::wal::{Wal, WalConfig};

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("lamina-spine-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const LINES: u32 = 0;
const EVENTS: u32 = 1;

fn streams() -> Vec<StreamDef> {
    vec![
        StreamDef {
            name: "lines".into(),
            format: Format::Text,
            views: vec![ViewSpec {
                name: "word_counts".into(),
                key: KeySpec::Words("line".into()),
                aggregate: AggregateKind::Count,
                column: None,
            }],
        },
        StreamDef {
            name: "events".into(),
            format: Format::Json(vec![
                ColumnDef::new("user", ColumnType::String),
                ColumnDef::new("amount", ColumnType::Int64),
            ]),
            views: vec![ViewSpec {
                name: "amount_by_user".into(),
                key: KeySpec::Column("user".into()),
                aggregate: AggregateKind::Sum,
                column: Some("amount".into()),
            }],
        },
    ]
}

fn view_names() -> Vec<(String, AggregateKind)> {
    streams()
        .into_iter()
        .flat_map(|s| s.views)
        .map(|v| (v.name, v.aggregate))
        .collect()
}

fn clock() -> Clock {
    Clock {
        interval: Duration::from_millis(10),
        epoch: Duration::from_millis(100),
        max_records: 1_000_000,
        max_bytes: 64 << 20,
    }
}

/// Scheduled time (µs) inside epoch `e` (epochs are 100 ms).
fn at(epoch: u64) -> i64 {
    epoch as i64 * 100_000 + 50_000
}

struct Node {
    wal: Wal,
    store: Arc<ViewStore>,
    batcher: MicroBatcher,
    stats: Arc<StatsLog>,
}

fn start(dir: &Path) -> Result<Node, LoopError> {
    start_with(dir, clock())
}

fn start_with(dir: &Path, clock: Clock) -> Result<Node, LoopError> {
    // Tiny segments: every append gets its own, so truncation is visible.
    let mut config = WalConfig::new(dir.join("wal"));
    config.segment_bytes = 1;
    let (wal, _) = Wal::open(config).unwrap();
    let store = Arc::new(ViewStore::open(&dir.join("state"), &view_names()).unwrap());
    let stats = Arc::new(StatsLog::new(100, &["lines".into(), "events".into()]));
    let log: Arc<dyn RecordLog> = Arc::new(wal.clone());
    let sink: Arc<dyn CommitSink> = Arc::clone(&store) as Arc<dyn CommitSink>;
    let ctx = lamina::Context::builder().threads(2).build().unwrap();
    let program = Arc::new(Program::from_streams(&ctx, clock.interval, &streams()).unwrap());
    let batcher = MicroBatcher::resume(program, log, sink, Arc::clone(&stats), clock)?;
    Ok(Node {
        wal,
        store,
        batcher,
        stats,
    })
}

fn count(store: &ViewStore, view: &str, key: &str) -> i64 {
    match store.get(view, key).unwrap().map(|a| a.value) {
        None => 0,
        Some(AggValue::Count(c)) => c,
        Some(AggValue::Sum(s)) => match s.value() {
            lamina::view::Num::Int(i) => i,
            other => panic!("{other:?}"),
        },
        Some(other) => panic!("{other:?}"),
    }
}

#[test]
fn a_backlog_is_taken_in_micro_batches_bounded_by_bytes() {
    let dir = Dir::new("bytes");
    let mut n = start_with(
        &dir.0,
        Clock {
            max_bytes: 1000,
            ..clock()
        },
    )
    .unwrap();
    let word = "x".repeat(99);
    for i in 0..10 {
        n.wal
            .append_blocking(LINES, &[word.as_str(); 10], i + 1)
            .unwrap();
    }
    // 99-byte records and a 1000-byte budget: ten records a micro-batch.
    let mut batches = 0;
    while !n.batcher.caught_up() {
        n.batcher.run_once(at(1)).unwrap();
        batches += 1;
        assert!(batches <= 20, "the backlog was not worked off");
        assert_eq!(count(&n.store, "word_counts", &word), 10 * batches);
    }
    assert_eq!(batches, 10);
}

#[test]
fn micro_batches_count_once_and_resume_after_a_restart() {
    let dir = Dir::new("resume");
    {
        let mut n = start(&dir.0).unwrap();
        n.wal.append_blocking(LINES, &["a b", "b"], 1).unwrap();
        n.wal
            .append_blocking(
                EVENTS,
                &[
                    r#"{"user":"ann","amount":5}"#,
                    "not json",
                    r#"{"user":"ann","amount":"x"}"#,
                ],
                2,
            )
            .unwrap();
        n.batcher.run_once(at(0)).unwrap();
        assert_eq!(count(&n.store, "word_counts", "b"), 2);
        assert_eq!(count(&n.store, "amount_by_user", "ann"), 5);
        assert_eq!(
            n.store.dead_letter_count("events").unwrap(),
            2,
            "bad records are kept aside"
        );
        // Durable in the log but not yet processed when the process stops.
        n.wal.append_blocking(LINES, &["b c"], 3).unwrap();
        n.store.flush().unwrap();
    }
    let mut n = start(&dir.0).unwrap();
    assert_eq!(
        count(&n.store, "word_counts", "b"),
        2,
        "nothing replayed twice"
    );
    n.batcher.run_once(at(0)).unwrap();
    assert_eq!(
        count(&n.store, "word_counts", "b"),
        3,
        "the unprocessed record is picked up"
    );
    assert_eq!(count(&n.store, "word_counts", "c"), 1);
    n.batcher.run_once(at(0)).unwrap();
    assert_eq!(
        count(&n.store, "word_counts", "b"),
        3,
        "an empty micro-batch changes nothing"
    );
}

/// Big micro-batches are cut into blocks parsed and folded in parallel:
/// counts stay exact and every dead letter keeps its own sequence number.
#[test]
fn blocks_parsed_in_parallel_count_exactly_and_dead_letters_keep_their_seqs() {
    let dir = Dir::new("blocks");
    let mut n = start(&dir.0).unwrap();
    n.batcher.set_min_block_records(7);
    let lines: Vec<String> = (0..101).map(|i| format!("w{} common", i % 5)).collect();
    let line_refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    n.wal.append_blocking(LINES, &line_refs, 1).unwrap();
    // Every 10th event is bad; the log gives them seqs after the lines'.
    let events: Vec<String> = (0..50)
        .map(|i| {
            if i % 10 == 3 {
                format!("bad {i}")
            } else {
                format!(r#"{{"user":"u{}","amount":{i}}}"#, i % 3)
            }
        })
        .collect();
    let event_refs: Vec<&str> = events.iter().map(String::as_str).collect();
    n.wal.append_blocking(EVENTS, &event_refs, 2).unwrap();
    n.batcher.run_once(at(0)).unwrap();
    assert_eq!(count(&n.store, "word_counts", "common"), 101);
    assert_eq!(count(&n.store, "word_counts", "w0"), 21);
    let mut dead = n.store.dead_letters("events", 100).unwrap();
    dead.sort_by_key(|d| d.seq);
    let seqs: Vec<u64> = dead.iter().map(|d| d.seq).collect();
    assert_eq!(seqs, vec![101 + 3, 101 + 13, 101 + 23, 101 + 33, 101 + 43]);
    for d in &dead {
        let i = d.seq - 101;
        assert_eq!(String::from_utf8_lossy(&d.record), format!("bad {i}"));
    }
}

#[test]
fn a_lost_log_is_refused_rather_than_recounted() {
    let dir = Dir::new("lost");
    {
        let mut n = start(&dir.0).unwrap();
        n.wal.append_blocking(LINES, &["x"], 1).unwrap();
        n.batcher.run_once(at(0)).unwrap();
        n.store.flush().unwrap();
    }
    std::fs::remove_dir_all(dir.0.join("wal")).unwrap();
    let err = start(&dir.0)
        .err()
        .expect("a log behind the state is refused");
    assert!(err.to_string().contains("refusing to start"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn sealed_epochs_become_a_generation_with_no_gap_and_no_double_count() {
    let dir = Dir::new("seal");
    let mut n = start(&dir.0).unwrap();
    let master = MasterStore::open(&format!("file://{}", dir.0.join("master").display())).unwrap();
    let formats = streams().into_iter().map(|s| (s.name, s.format)).collect();
    let log: Arc<dyn RecordLog> = Arc::new(n.wal.clone());
    let sealer = Sealer::new(
        master.clone(),
        log,
        Arc::clone(&n.store) as Arc<dyn CommitSink>,
        formats,
    );

    // Epoch 0 and 1 get records; epoch 2 is the open one.
    n.wal
        .append_blocking(LINES, &["to be", "or not to be"], 1)
        .unwrap();
    n.wal
        .append_blocking(EVENTS, &[r#"{"user":"ann","amount":5}"#, "garbage"], 1)
        .unwrap();
    n.batcher.run_once(at(0)).unwrap();
    n.wal.append_blocking(LINES, &["to"], 2).unwrap();
    n.batcher.run_once(at(1)).unwrap();
    n.wal.append_blocking(LINES, &["be quick"], 3).unwrap();
    n.wal
        .append_blocking(EVENTS, &[r#"{"user":"ann","amount":7}"#], 3)
        .unwrap();
    n.batcher.run_once(at(2)).unwrap();
    let before = (
        count(&n.store, "word_counts", "to"),
        count(&n.store, "word_counts", "be"),
        count(&n.store, "amount_by_user", "ann"),
    );
    assert_eq!(before, (3, 3, 12));

    let report = sealer
        .seal_before(2)
        .await
        .unwrap()
        .expect("two epochs to seal");
    assert_eq!(report.sealed_through, 1);
    let mut written: Vec<(String, u64, u64)> = report
        .files
        .iter()
        .map(|f| (f.stream.clone(), f.epoch, f.rows))
        .collect();
    written.sort();
    assert_eq!(
        written,
        vec![
            ("events".into(), 0, 1),
            ("lines".into(), 0, 2),
            ("lines".into(), 1, 1)
        ],
        "dead letters are not in the dataset"
    );
    assert!(
        sealer.seal_before(2).await.unwrap().is_none(),
        "sealing again is a no-op"
    );

    let ctx = Context::builder().threads(2).build().unwrap();
    let views: Vec<BatchView> = streams()
        .into_iter()
        .flat_map(|s| {
            s.views.into_iter().map(move |spec| {
                BatchView::from(ViewInput {
                    stream: s.name.clone(),
                    spec,
                })
            })
        })
        .collect();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let generation = compute_generation(&ctx, &master, &views, rx)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(generation.epoch, 1);
    n.store
        .publish(generation.epoch, generation.into_rows())
        .unwrap();

    // Every merged answer is unchanged; the split moved to the batch side.
    let after = (
        count(&n.store, "word_counts", "to"),
        count(&n.store, "word_counts", "be"),
        count(&n.store, "amount_by_user", "ann"),
    );
    assert_eq!(after, before);
    let be = n.store.get("word_counts", "be").unwrap().unwrap();
    assert_eq!(be.batch_value, Some(AggValue::Count(2)));
    assert_eq!(
        be.realtime_value,
        Some(AggValue::Count(1)),
        "epoch 2 stays real-time"
    );
    assert_eq!(be.watermark_epoch, Some(1));
    // The sealed records left the log; the open epoch's are still there
    // (seqs 0-4 were epochs 0 and 1, 5-6 are epoch 2).
    assert_eq!(n.wal.first_seq(), 5);
    let mut kept = 0;
    n.wal.read_range(5..7, |_, _, _, _| kept += 1).unwrap();
    assert_eq!(kept, 2);
}

#[test]
fn rejected_records_become_dead_letters_and_idempotency_keys_commit_with_their_records() {
    use lamina_speed::commit::Position;
    use lamina_speed::control;
    let dir = Dir::new("control");
    let mut n = start(&dir.0).unwrap();
    let (rejected_id, rejected) = control::rejected(
        LINES,
        "record of 9000 bytes exceeds max_record_bytes (8192)",
        &[b'y'; 9000],
    );
    n.wal.append_blocking(rejected_id, &[rejected], 1).unwrap();
    // A keyed append: the key first, then the request's records. Read from
    // its middle (as after a crash), the key is still recognised by its
    // entry.
    n.wal
        .append_blocking(control::KEYED | LINES, &["req-42", "z", "zz"], 1_000)
        .unwrap();
    n.batcher.run_once(at(0)).unwrap();
    let dead = n.store.dead_letters("lines", 10).unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.contains("exceeds max_record_bytes"));
    assert_eq!(dead[0].record.len(), control::REJECTED_PREFIX_BYTES);
    assert_eq!(
        n.store
            .position(&Position::Idempotency {
                stream: "lines".into(),
                key: "req-42".into()
            })
            .unwrap(),
        Some(1_000)
    );
    assert_eq!(count(&n.store, "word_counts", "z"), 1);
    assert_eq!(count(&n.store, "word_counts", "zz"), 1);
    assert_eq!(
        count(&n.store, "word_counts", "req-42"),
        0,
        "a key is not data"
    );
    // Regression: the refused record was a dead letter but not a record,
    // and the record total restarted from 0 with the process while the
    // dead-letter total persisted. Both count every record taken in, and
    // both survive a restart.
    assert_eq!(n.stats.total_records("lines"), Some(3));
    assert_eq!(n.store.dead_letter_count("lines").unwrap(), 1);
    drop(n);
    let mut n = start(&dir.0).unwrap();
    assert_eq!(n.stats.total_records("lines"), Some(3));
    n.wal.append_blocking(LINES, &["w"], 2_000).unwrap();
    n.batcher.run_once(at(0)).unwrap();
    assert_eq!(n.stats.total_records("lines"), Some(4));
    assert_eq!(n.stats.total_records("events"), Some(0));
}

/// Regression: a restart inside an epoch recorded the epoch's start again,
/// at the current position, so the records committed before the crash fell
/// out of the epoch and never reached the master dataset.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn restart_within_an_epoch_keeps_the_records_committed_before_it() {
    let dir = Dir::new("restart-epoch");
    {
        let mut n = start(&dir.0).unwrap();
        n.wal.append_blocking(LINES, &["a", "b"], 1).unwrap();
        n.batcher.run_once(at(0)).unwrap();
        n.store.flush().unwrap();
    }
    let mut n = start(&dir.0).unwrap();
    n.wal.append_blocking(LINES, &["c"], 2).unwrap();
    n.batcher.run_once(at(0)).unwrap();
    let master = MasterStore::open(&format!("file://{}", dir.0.join("master").display())).unwrap();
    let formats = streams().into_iter().map(|s| (s.name, s.format)).collect();
    let log: Arc<dyn RecordLog> = Arc::new(n.wal.clone());
    let sealer = Sealer::new(
        master,
        log,
        Arc::clone(&n.store) as Arc<dyn CommitSink>,
        formats,
    );
    let report = sealer.seal_before(1).await.unwrap().unwrap();
    let rows: u64 = report.files.iter().map(|f| f.rows).sum();
    assert_eq!(rows, 3, "all three records of epoch 0 are sealed");
}

/// Regression: records replayed after a crash could land in an epoch a
/// batch run had already sealed; the store now refuses such a commit.
#[test]
fn the_store_refuses_deltas_of_an_epoch_the_served_generation_covers() {
    let dir = Dir::new("covered");
    let n = start(&dir.0).unwrap();
    n.store.publish(5, Vec::new()).unwrap();
    let err = n
        .store
        .commit(lamina_serving::store::MicroBatchCommit {
            batch_id: 1,
            epoch: 5,
            positions: vec![],
            deltas: vec![("word_counts".into(), vec![("x".into(), AggValue::Count(1))])],
            dead_letters: vec![],
            state: vec![],
        })
        .unwrap_err();
    assert!(err.to_string().contains("already covers"), "{err}");
    assert_eq!(count(&n.store, "word_counts", "x"), 0);
}
