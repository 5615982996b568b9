//! Model and concurrency tests of the view store.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use lamina::view::{AggValue, AggregateKind};
use proptest::prelude::*;

use super::{MicroBatchCommit, Position, PositionKind, ViewStore};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "lamina-store-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn views() -> Vec<(String, AggregateKind)> {
    vec![
        ("counts".to_string(), AggregateKind::Count),
        ("other".to_string(), AggregateKind::Count),
    ]
}

fn count(v: &AggValue) -> i64 {
    match v {
        AggValue::Count(c) => *c,
        other => panic!("not a count: {other:?}"),
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// A micro-batch in the current epoch: (key index, count) pairs.
    Batch(Vec<(u8, i64)>),
    /// Move to the next epoch (seals the current one).
    NextEpoch,
    /// Publish a generation over all sealed epochs.
    Publish,
    /// Close and reopen the store.
    Reopen,
    /// Flush, which compacts the closed epochs.
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec((0u8..6, 1i64..5), 0..6).prop_map(Op::Batch),
        2 => Just(Op::NextEpoch),
        1 => Just(Op::Publish),
        1 => Just(Op::Reopen),
        1 => Just(Op::Flush),
    ]
}

/// The ground truth: every committed (epoch, key, count).
#[derive(Default)]
struct Model {
    rows: Vec<(u64, String, i64)>,
}

impl Model {
    fn total(&self, key: &str, pred: impl Fn(u64) -> bool) -> i64 {
        self.rows
            .iter()
            .filter(|(e, k, _)| k == key && pred(*e))
            .map(|r| r.2)
            .sum()
    }

    fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self.rows.iter().map(|r| r.1.clone()).collect();
        k.sort();
        k.dedup();
        k
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn store_matches_the_model(ops in prop::collection::vec(op(), 1..40)) {
        let dir = TempDir::new("model");
        let mut store = ViewStore::open(&dir.0, &views()).unwrap();
        let mut model = Model::default();
        let mut epoch = 0u64;
        let mut batch_id = 0u64;
        for op in ops {
            match op {
                Op::Batch(pairs) => {
                    batch_id += 1;
                    let mut merged: BTreeMap<String, i64> = BTreeMap::new();
                    for (k, c) in pairs {
                        *merged.entry(format!("k{k}")).or_default() += c;
                    }
                    for (k, c) in &merged {
                        model.rows.push((epoch, k.clone(), *c));
                    }
                    store.commit(MicroBatchCommit {
                        dead_letters: vec![],
                        state: vec![],
                        batch_id,
                        epoch,
                        positions: vec![(Position::Wal, batch_id * 10)],
                        deltas: vec![("counts".into(), merged.into_iter().map(|(k, c)| (k, AggValue::Count(c))).collect())],
                    }).unwrap();
                }
                Op::NextEpoch => epoch += 1,
                Op::Publish => {
                    if epoch == 0 {
                        continue;
                    }
                    let sealed = epoch - 1;
                    let rows: Vec<(String, String, AggValue)> = model
                        .keys()
                        .into_iter()
                        .map(|k| { let c = model.total(&k, |e| e <= sealed); (k, c) })
                        .filter(|(_, c)| *c != 0)
                        .map(|(k, c)| ("counts".to_string(), k, AggValue::Count(c)))
                        .collect();
                    store.publish(sealed, rows).unwrap();
                }
                Op::Flush => store.flush().unwrap(),
                Op::Reopen => {
                    drop(store);
                    store = ViewStore::open(&dir.0, &views()).unwrap();
                    prop_assert_eq!(store.last_batch_id().unwrap(), (batch_id > 0).then_some(batch_id));
                    prop_assert_eq!(store.position(&Position::Wal).unwrap(), (batch_id > 0).then_some(batch_id * 10));
                }
            }
            // Every key answers exactly the model's total, split at the
            // watermark.
            let w = store.watermark();
            for k in model.keys() {
                let want = model.total(&k, |_| true);
                let a = store.get("counts", &k).unwrap();
                let a = a.expect("a key with data answers");
                prop_assert_eq!(count(&a.value), want, "key {}", k);
                let batch = model.total(&k, |e| w.is_some_and(|w| e <= w));
                prop_assert_eq!(a.batch_value.as_ref().map_or(0, count), batch);
                prop_assert_eq!(a.realtime_value.as_ref().map_or(0, count), want - batch);
                prop_assert_eq!(a.watermark_epoch, w);
            }
            prop_assert!(store.get("counts", "never").unwrap().is_none());
            // Top-k is the model's ranking.
            let mut ranked: Vec<(i64, String)> = model.keys().into_iter().map(|k| (model.total(&k, |_| true), k)).collect();
            ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            let top: Vec<(i64, String)> = store.top("counts", 3).unwrap().into_iter().map(|i| (count(&i.value), i.key)).collect();
            prop_assert_eq!(top, ranked.into_iter().take(3).collect::<Vec<_>>());
        }
    }
}

#[test]
fn unknown_view_is_an_error() {
    let dir = TempDir::new("unknown");
    let store = ViewStore::open(&dir.0, &views()).unwrap();
    assert!(
        store
            .get("nope", "k")
            .unwrap_err()
            .to_string()
            .contains("`nope`")
    );
    assert!(store.top("nope", 3).is_err());
    let err = store
        .commit(MicroBatchCommit {
            dead_letters: vec![],
            state: vec![],
            batch_id: 1,
            epoch: 0,
            positions: vec![],
            deltas: vec![("nope".into(), vec![("k".into(), AggValue::Count(1))])],
        })
        .unwrap_err();
    assert!(err.to_string().contains("nope"));
    assert_eq!(
        store.last_batch_id().unwrap(),
        None,
        "a refused commit writes nothing"
    );
}

#[test]
fn readers_never_see_a_gap_or_a_double_count_while_generations_publish() {
    let dir = TempDir::new("concurrent");
    let store = Arc::new(ViewStore::open(&dir.0, &views()).unwrap());
    let committed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, committed, done) = (
                Arc::clone(&store),
                Arc::clone(&committed),
                Arc::clone(&done),
            );
            std::thread::spawn(move || {
                let mut last = 0i64;
                let mut reads = 0u64;
                while !done.load(Ordering::Acquire) && reads < 2_000_000 {
                    // Read the bound before the value: the value may only be
                    // newer, never older, than this.
                    let floor = committed.load(Ordering::Acquire) as i64;
                    let v = store
                        .get("counts", "hot")
                        .unwrap()
                        .map_or(0, |a| count(&a.value));
                    let ceiling = committed.load(Ordering::Acquire) as i64 + 1;
                    assert!(v >= last, "went down from {last} to {v}");
                    assert!(
                        v >= floor && v <= ceiling,
                        "{v} outside [{floor}, {ceiling}]"
                    );
                    last = v;
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    let mut epoch = 0u64;
    for i in 1..=600u64 {
        store
            .commit(MicroBatchCommit {
                dead_letters: vec![],
                state: vec![],
                batch_id: i,
                epoch,
                positions: vec![],
                deltas: vec![("counts".into(), vec![("hot".into(), AggValue::Count(1))])],
            })
            .unwrap();
        committed.store(i, Ordering::Release);
        if i % 20 == 0 {
            epoch += 1;
            // Publish the epochs sealed so far: every batch of epochs < epoch.
            let sealed = epoch - 1;
            store
                .publish(
                    sealed,
                    [(
                        "counts".to_string(),
                        "hot".to_string(),
                        AggValue::Count(i as i64),
                    )],
                )
                .unwrap();
        }
    }
    done.store(true, Ordering::Release);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    let a = store.get("counts", "hot").unwrap().unwrap();
    assert_eq!(count(&a.value), 600);
    assert_eq!(a.watermark_epoch, Some(29));
}

#[test]
fn dead_letters_commit_with_the_batch_and_survive_a_reopen() {
    use super::DeadRecord;
    let dir = TempDir::new("dead");
    let dead = |seq: u64| DeadRecord {
        stream: "lines".into(),
        seq,
        reason: format!("record {seq} is bad"),
        record: vec![0xff, b'x'],
    };
    {
        let store = ViewStore::open(&dir.0, &views()).unwrap();
        store
            .commit(MicroBatchCommit {
                batch_id: 1,
                epoch: 0,
                positions: vec![],
                deltas: vec![],
                dead_letters: vec![dead(3), dead(7)],
                state: vec![],
            })
            .unwrap();
        // A refused commit records none of its dead letters.
        assert!(
            store
                .commit(MicroBatchCommit {
                    batch_id: 2,
                    epoch: 0,
                    positions: vec![],
                    deltas: vec![("nope".into(), vec![])],
                    dead_letters: vec![dead(9)],
                    state: vec![],
                })
                .is_err()
        );
        store
            .commit(MicroBatchCommit {
                batch_id: 2,
                epoch: 0,
                positions: vec![],
                deltas: vec![],
                dead_letters: vec![dead(12)],
                state: vec![],
            })
            .unwrap();
    }
    let store = ViewStore::open(&dir.0, &views()).unwrap();
    assert_eq!(store.dead_letter_count("lines").unwrap(), 3);
    assert_eq!(store.dead_letter_count("other").unwrap(), 0);
    let recent = store.dead_letters("lines", 2).unwrap();
    assert_eq!(recent, vec![dead(12), dead(7)], "newest first");
}

#[test]
fn a_micro_batch_is_one_row_and_a_closed_epoch_compacts_to_its_totals() {
    let dir = TempDir::new("rows");
    let store = ViewStore::open(&dir.0, &views()).unwrap();
    let commit = |batch_id: u64, epoch: u64, keys: std::ops::Range<u32>| {
        store
            .commit(MicroBatchCommit {
                batch_id,
                epoch,
                positions: vec![(Position::Wal, batch_id)],
                deltas: vec![(
                    "counts".into(),
                    keys.map(|k| (format!("k{k}"), AggValue::Count(1)))
                        .collect(),
                )],
                dead_letters: vec![],
                state: vec![],
            })
            .unwrap()
    };
    // Three micro-batches of 1,000 keys each: three rows, not 3,000.
    for b in 1..=3 {
        commit(b, 1, 0..1000);
    }
    assert_eq!(store.log.len(), 3);
    // Epoch 1 is still open: flushing leaves it alone.
    store.flush().unwrap();
    assert_eq!((store.log.len(), store.epoch_rows.len()), (3, 0));
    // Once epoch 2 has begun, epoch 1 compacts into one chunk.
    commit(4, 2, 500..600);
    store.flush().unwrap();
    assert_eq!((store.log.len(), store.epoch_rows.len()), (1, 1));
    drop(store);
    let store = ViewStore::open(&dir.0, &views()).unwrap();
    let a = store.get("counts", "k550").unwrap().unwrap();
    assert_eq!(a.value, AggValue::Count(4));
    assert_eq!(
        store.get("counts", "k0").unwrap().unwrap().value,
        AggValue::Count(3)
    );
    assert_eq!(store.key_count("counts").unwrap(), 1000);
    // Publishing epoch 1 retires its chunk; epoch 2's row stays.
    let rows = (0..1000).map(|k| ("counts".to_string(), format!("k{k}"), AggValue::Count(3)));
    store.publish(1, rows).unwrap();
    assert_eq!((store.log.len(), store.epoch_rows.len()), (1, 0));
    let a = store.get("counts", "k550").unwrap().unwrap();
    assert_eq!(
        (a.batch_value, a.realtime_value),
        (Some(AggValue::Count(3)), Some(AggValue::Count(1)))
    );
}

#[test]
fn a_changed_aggregate_is_a_clear_error_at_open() {
    let dir = TempDir::new("kind");
    {
        let store = ViewStore::open(&dir.0, &views()).unwrap();
        store
            .commit(MicroBatchCommit {
                batch_id: 1,
                epoch: 1,
                positions: vec![],
                deltas: vec![("counts".into(), vec![("a".into(), AggValue::Count(1))])],
                dead_letters: vec![],
                state: vec![],
            })
            .unwrap();
        store.flush().unwrap();
    }
    let changed = vec![("counts".to_string(), AggregateKind::Max)];
    let err = ViewStore::open(&dir.0, &changed).unwrap_err().to_string();
    assert!(
        err.contains("view `counts`") && err.contains("Max"),
        "{err}"
    );
}

#[test]
fn a_state_dir_of_the_earlier_layout_is_refused_with_instructions() {
    let dir = TempDir::new("layout");
    {
        let db = sled::open(&dir.0).unwrap();
        let meta = db.open_tree("meta").unwrap();
        meta.insert("batch_id", &7u64.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    let err = ViewStore::open(&dir.0, &views()).unwrap_err().to_string();
    assert!(
        err.contains("earlier version") && err.contains("delete"),
        "{err}"
    );
}

#[test]
fn a_generation_combines_the_partials_of_a_key_and_stores_it_once() {
    let dir = TempDir::new("partials");
    {
        let store = ViewStore::open(&dir.0, &views()).unwrap();
        let mut p = store.begin_publish(3).unwrap();
        // Two map partitions both saw `a`.
        for (k, c) in [("a", 1), ("b", 5), ("a", 2)] {
            p.add("counts", k, AggValue::Count(c)).unwrap();
        }
        assert_eq!(p.finish().unwrap(), 2, "two keys");
        let a = store.get("counts", "a").unwrap().unwrap();
        assert_eq!(a.batch_value, Some(AggValue::Count(3)));
        // Each key is written once.
        let pairs: usize = store
            .gens
            .iter()
            .values()
            .map(|v| {
                let v = v.unwrap();
                let mut r = super::codec::Reader::new(&v, "test");
                r.varint().unwrap() as usize
            })
            .sum();
        assert_eq!(pairs, 2);
    }
    let store = ViewStore::open(&dir.0, &views()).unwrap();
    assert_eq!(
        store.get("counts", "a").unwrap().unwrap().value,
        AggValue::Count(3)
    );
    assert_eq!(store.watermark(), Some(3));
}

#[test]
fn an_unfinished_generation_changes_nothing() {
    let dir = TempDir::new("unfinished");
    let store = ViewStore::open(&dir.0, &views()).unwrap();
    store
        .publish(
            1,
            [("counts".to_string(), "a".to_string(), AggValue::Count(1))],
        )
        .unwrap();
    {
        let mut p = store.begin_publish(2).unwrap();
        p.add("counts", "a", AggValue::Count(10)).unwrap();
        p.add("counts", "new", AggValue::Count(10)).unwrap();
        // Dropped: the run failed.
    }
    assert_eq!(store.watermark(), Some(1));
    assert_eq!(
        store.get("counts", "a").unwrap().unwrap().value,
        AggValue::Count(1)
    );
    assert!(store.get("counts", "new").unwrap().is_none());
    assert_eq!(store.key_count("counts").unwrap(), 1);
    drop(store);
    let store = ViewStore::open(&dir.0, &views()).unwrap();
    assert_eq!(store.watermark(), Some(1));
    assert!(store.get("counts", "new").unwrap().is_none());
}

#[test]
fn positions_keep_their_on_disk_names_and_list_by_family() {
    let dir = TempDir::new("positions");
    let idem = |stream: &str, key: &str| Position::Idempotency {
        stream: stream.into(),
        key: key.into(),
    };
    {
        let store = ViewStore::open(&dir.0, &views()).unwrap();
        store
            .commit(MicroBatchCommit {
                batch_id: 1,
                epoch: 3,
                positions: vec![
                    (Position::Wal, 40),
                    (Position::EpochStart(3), 10),
                    (Position::EpochStart(12), 30),
                    (
                        Position::Records {
                            stream: "lines".into(),
                        },
                        25,
                    ),
                    (idem("lines", "req/1"), 1_000),
                    (idem("lines.b", "req-2"), 2_000),
                ],
                deltas: vec![],
                dead_letters: vec![],
                state: vec![],
            })
            .unwrap();
        // The names of existing state directories.
        for (name, value) in [
            ("wal", 40u64),
            ("epoch_start/00000000000000000003", 10),
            ("epoch_start/00000000000000000012", 30),
            ("records/lines", 25),
            ("idem/lines/req/1", 1_000),
            ("idem/lines.b/req-2", 2_000),
        ] {
            let raw = store.meta.get(format!("pos/{name}")).unwrap();
            assert_eq!(raw.as_deref(), Some(&value.to_be_bytes()[..]), "{name}");
        }
    }
    let store = ViewStore::open(&dir.0, &views()).unwrap();
    assert_eq!(store.position(&Position::Wal).unwrap(), Some(40));
    assert_eq!(
        store.position(&idem("lines", "req/1")).unwrap(),
        Some(1_000)
    );
    assert_eq!(store.position(&idem("lines", "req-2")).unwrap(), None);
    assert_eq!(
        store.positions_of(&PositionKind::EpochStart).unwrap(),
        vec![
            (Position::EpochStart(3), 10),
            (Position::EpochStart(12), 30)
        ]
    );
    assert_eq!(
        store.positions_of(&PositionKind::Records).unwrap(),
        vec![(
            Position::Records {
                stream: "lines".into()
            },
            25
        )]
    );
    assert_eq!(
        store
            .positions_of(&PositionKind::Idempotency {
                stream: "lines".into()
            })
            .unwrap(),
        vec![(idem("lines", "req/1"), 1_000)]
    );
}

mod state {
    use super::*;
    use lamina::streaming::StateDelta;
    use lamina::streaming::durable::{StateChange, encode};

    fn set(op: &str, key: &str, value: i64) -> StateDelta {
        StateDelta {
            operator: op.into(),
            changes: vec![StateChange {
                key: encode(key).unwrap(),
                state: Some(encode(&(value, 7i64)).unwrap()),
            }],
        }
    }

    fn batch(id: u64, wal: u64, state: Vec<StateDelta>) -> MicroBatchCommit {
        MicroBatchCommit {
            batch_id: id,
            epoch: 1,
            positions: vec![(Position::Wal, wal)],
            deltas: vec![],
            dead_letters: vec![],
            state,
        }
    }

    fn stored(store: &ViewStore, op: &str) -> BTreeMap<String, i64> {
        store
            .state_entries(op)
            .map(|r| {
                let (k, v) = r.unwrap();
                let key: String = lamina::streaming::durable::decode(&k).unwrap();
                let (value, _): (i64, i64) = lamina::streaming::durable::decode(&v).unwrap();
                (key, value)
            })
            .collect()
    }

    #[test]
    fn state_changes_commit_with_the_batch_and_survive_a_reopen() {
        let dir = TempDir::new("state");
        {
            let store = ViewStore::open(&dir.0, &views()).unwrap();
            store
                .commit(batch(
                    1,
                    10,
                    vec![set("totals", "a", 1), set("totals", "b", 2)],
                ))
                .unwrap();
            let mut removal = set("totals", "a", 0);
            removal.changes[0].state = None;
            store
                .commit(batch(
                    2,
                    20,
                    vec![removal, set("totals", "b", 5), set("other", "a", 9)],
                ))
                .unwrap();
            // A commit that fails (a delta of no view) writes nothing: not
            // its position, not its state.
            let mut bad = batch(3, 30, vec![set("totals", "c", 1)]);
            bad.deltas = vec![("nope".into(), vec![("k".into(), AggValue::Count(1))])];
            assert!(store.commit(bad).is_err());
            store.flush().unwrap();
        }
        let store = ViewStore::open(&dir.0, &views()).unwrap();
        assert_eq!(store.position(&Position::Wal).unwrap(), Some(20));
        assert_eq!(
            stored(&store, "totals"),
            BTreeMap::from([("b".to_string(), 5)])
        );
        assert_eq!(store.state_key_count("totals").unwrap(), 1);
        assert_eq!(
            store.state_operators().unwrap(),
            BTreeMap::from([("other".to_string(), 1), ("totals".to_string(), 1)])
        );
        let key = encode("b").unwrap();
        assert!(store.state_get("totals", &key).unwrap().is_some());
        assert!(store.state_get("other", &key).unwrap().is_none());
        // Changes after the last flush are in the log only: a reopen
        // (as after kill -9) replays them over the folded state.
        store
            .commit(batch(
                4,
                40,
                vec![set("totals", "c", 3), set("totals", "b", 6)],
            ))
            .unwrap();
        assert_eq!(store.state_key_count("totals").unwrap(), 2);
        drop(store);
        let store = ViewStore::open(&dir.0, &views()).unwrap();
        assert_eq!(
            stored(&store, "totals"),
            BTreeMap::from([("b".to_string(), 6), ("c".to_string(), 3)])
        );
        assert_eq!(store.state_key_count("totals").unwrap(), 2);
        store.flush().unwrap();
        assert_eq!(
            stored(&store, "totals"),
            BTreeMap::from([("b".to_string(), 6), ("c".to_string(), 3)])
        );
        assert_eq!(store.drop_state("totals").unwrap(), 2);
        assert!(stored(&store, "totals").is_empty());
        assert_eq!(
            stored(&store, "other").len(),
            1,
            "other operators keep theirs"
        );
    }
}

/// Chunks an interrupted attempt at a generation left behind (more chunks
/// than the next attempt writes) are removed before the next attempt
/// writes its own, so they never join the generation.
#[test]
fn an_interrupted_attempts_chunks_do_not_join_the_generation() {
    let dir = TempDir::new("leftovers");
    {
        let store = ViewStore::open(&dir.0, &views()).unwrap();
        let mut stale = super::codec::PairList::default();
        stale.push("ghost", &AggValue::Count(99)).unwrap();
        store
            .gens
            .insert(super::keys::chunk(3, "counts", 7), stale.take())
            .unwrap();
        let mut p = store.begin_publish(3).unwrap();
        p.add("counts", "a", AggValue::Count(1)).unwrap();
        assert_eq!(p.finish().unwrap(), 1);
        assert!(store.get("counts", "ghost").unwrap().is_none());
    }
    let store = ViewStore::open(&dir.0, &views()).unwrap();
    assert!(
        store.get("counts", "ghost").unwrap().is_none(),
        "after a reopen"
    );
    assert_eq!(
        store.get("counts", "a").unwrap().unwrap().batch_value,
        Some(AggValue::Count(1))
    );
}
