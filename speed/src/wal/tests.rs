//! Unit tests of the WAL: round trips, rotation, truncation, reopen, error
//! states, and a model test against a plain `Vec` of records.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicUsize, Ordering},
};

use proptest::prelude::*;

use super::*;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("lamina-wal-unit-{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        TempDir(path)
    }

    fn config(&self, segment_bytes: u64) -> WalConfig {
        WalConfig {
            segment_bytes,
            ..WalConfig::new(&self.0)
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// One record as the model sees it: (stream, receive time, payload).
type Rec = (u32, i64, Vec<u8>);

fn read_all(wal: &Wal, range: Range<u64>) -> Vec<(u64, Rec)> {
    let mut out = Vec::new();
    wal.read_range(range, |seq, stream, t, payload| {
        out.push((seq, (stream, t, payload.to_vec())));
    })
    .unwrap();
    out
}

fn segment_files(dir: &Path) -> Vec<u64> {
    segment::list(dir).unwrap()
}

/// Appends batches of 1..=5 records; returns the model, indexed by seq.
fn fill(wal: &Wal, batches: usize) -> Vec<Rec> {
    let mut model = Vec::new();
    for b in 0..batches {
        let stream = (b % 3) as u32;
        let t = b as i64 * 1_000 - 7;
        let records: Vec<Vec<u8>> = (0..=b % 5)
            .map(|i| format!("batch {b} record {i}").into_bytes())
            .collect();
        let range = wal.append_blocking(stream, &records, t).unwrap();
        assert_eq!(range.start, model.len() as u64, "gap-free");
        assert_eq!(range.end - range.start, records.len() as u64);
        model.extend(records.into_iter().map(|r| (stream, t, r)));
    }
    model
}

fn expect(model: &[Rec], range: Range<u64>) -> Vec<(u64, Rec)> {
    range.map(|s| (s, model[s as usize].clone())).collect()
}

#[test]
fn round_trip_across_rotation_and_sub_ranges() {
    let tmp = TempDir::new("roundtrip");
    let (wal, rec) = Wal::open(tmp.config(300)).unwrap();
    assert_eq!((rec.next_seq, rec.first_seq, rec.segments), (0, 0, 1));
    let model = fill(&wal, 60);
    let n = model.len() as u64;
    assert_eq!((wal.next_seq(), wal.durable_seq()), (n, n));
    let stats = wal.stats();
    assert!(stats.segments > 5, "{stats:?}");
    assert_eq!((stats.appends, stats.records), (60, n));
    assert_eq!(stats.segments as usize, segment_files(&tmp.0).len());
    for len in fs::read_dir(&tmp.0)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
    {
        assert!(len <= 300, "segment of {len} bytes");
    }

    assert_eq!(read_all(&wal, 0..n), expect(&model, 0..n));
    for (a, b) in [(0, 1), (5, 6), (3, 40), (17, n), (n - 1, n), (9, 9)] {
        assert_eq!(read_all(&wal, a..b), expect(&model, a..b), "{a}..{b}");
    }
    // Every segment boundary, from both sides.
    for first in segment_files(&tmp.0).into_iter().skip(1) {
        let r = first - 1..first + 1;
        assert_eq!(read_all(&wal, r.clone()), expect(&model, r));
    }
    wal.close().unwrap();
}

/// Reads that go forward in steps (the micro-batches) start where the last
/// one ended instead of scanning the segment; whatever the steps and
/// interleaved reads behind them (the sealer), every read returns exactly
/// its records.
#[test]
fn stepwise_reads_resume_where_the_last_ended_and_stay_exact() {
    let tmp = TempDir::new("stepwise");
    let (wal, _) = Wal::open(tmp.config(4096)).unwrap();
    let model = fill(&wal, 200);
    let n = model.len() as u64;
    let mut at = 0;
    let mut step = 1;
    while at < n {
        let end = (at + step).min(n);
        assert_eq!(
            read_all(&wal, at..end),
            expect(&model, at..end),
            "{at}..{end}"
        );
        // A read behind the others, like the sealer's.
        let behind = at / 2..at / 2 + 3;
        if behind.end <= n {
            assert_eq!(read_all(&wal, behind.clone()), expect(&model, behind));
        }
        at = end;
        step = step % 7 + 1;
    }
    // Going back to the start after all that.
    assert_eq!(read_all(&wal, 0..n), expect(&model, 0..n));
    wal.close().unwrap();
}

#[test]
fn read_range_refuses_records_that_are_not_durable() {
    let tmp = TempDir::new("notdurable");
    let (wal, _) = Wal::open(tmp.config(1 << 20)).unwrap();
    wal.append_blocking(0, &[b"a", b"b"], 0).unwrap();
    let err = wal.read_range(0..3, |_, _, _, _| {}).unwrap_err();
    assert!(
        matches!(err, WalError::NotDurable { durable: 2, .. }),
        "{err}"
    );
}

#[test]
fn truncate_before_deletes_exactly_the_covered_segments() {
    let tmp = TempDir::new("truncate");
    let (wal, _) = Wal::open(tmp.config(250)).unwrap();
    let model = fill(&wal, 40);
    let n = model.len() as u64;
    let before = segment_files(&tmp.0);
    assert!(before.len() > 4);

    // A seq inside segment 2: segments 0 and 1 are entirely below it.
    let seq = before[2] + 1;
    assert_eq!(wal.truncate_before(seq).unwrap(), 2);
    assert_eq!(segment_files(&tmp.0), before[2..]);
    assert_eq!(wal.first_seq(), before[2]);
    // Exactly at a boundary: the segment below it goes too.
    assert_eq!(wal.truncate_before(before[3]).unwrap(), 1);
    assert_eq!(segment_files(&tmp.0), before[3..]);
    assert_eq!(wal.truncate_before(before[3]).unwrap(), 0);

    assert_eq!(read_all(&wal, before[3]..n), expect(&model, before[3]..n));
    let err = wal
        .read_range(before[3] - 1..n, |_, _, _, _| {})
        .unwrap_err();
    assert!(matches!(err, WalError::Truncated { .. }), "{err}");

    // Never the segment being written, even when everything is below.
    let deleted = wal.truncate_before(u64::MAX).unwrap();
    assert_eq!(deleted, before.len() - 4);
    assert_eq!(segment_files(&tmp.0), [*before.last().unwrap()]);
    let more = wal.append_blocking(1, &[b"after truncation"], 5).unwrap();
    assert_eq!(more, n..n + 1);
    assert_eq!(read_all(&wal, n..n + 1)[0].1.2, b"after truncation");
}

#[test]
fn reopen_continues_numbering() {
    let tmp = TempDir::new("reopen");
    let (wal, _) = Wal::open(tmp.config(400)).unwrap();
    let mut model = fill(&wal, 25);
    wal.truncate_before(10).unwrap();
    let first = wal.first_seq();
    wal.close().unwrap();

    let (wal, rec) = Wal::open(tmp.config(400)).unwrap();
    let n = model.len() as u64;
    assert_eq!(rec.next_seq, n);
    assert_eq!(rec.first_seq, first);
    assert_eq!((rec.discarded_bytes, rec.torn.clone()), (0, None));
    assert_eq!(rec.segments, segment_files(&tmp.0).len());
    let r = wal.append_blocking(9, &[b"x", b"y"], 1).unwrap();
    assert_eq!(r, n..n + 2);
    model.push((9, 1, b"x".to_vec()));
    model.push((9, 1, b"y".to_vec()));
    assert_eq!(read_all(&wal, first..n + 2), expect(&model, first..n + 2));
}

#[test]
fn an_append_larger_than_a_segment_and_the_budget_is_accepted() {
    let tmp = TempDir::new("big");
    let cfg = WalConfig {
        max_pending_bytes: 64,
        ..tmp.config(100)
    };
    let (wal, _) = Wal::open(cfg).unwrap();
    wal.append_blocking(0, &[b"small"], 0).unwrap();
    let big = vec![0xab_u8; 1000];
    assert_eq!(wal.append_blocking(0, &[&big[..]], 0).unwrap(), 1..2);
    wal.append_blocking(0, &[b"small again"], 0).unwrap();
    // small | big | small: the big entry has a segment of its own.
    assert_eq!(segment_files(&tmp.0), [0, 1, 2]);
    assert_eq!(read_all(&wal, 1..2)[0].1.2, big);
    assert_eq!(wal.stats().pending_bytes, 0);
}

#[test]
fn empty_append_writes_nothing() {
    let tmp = TempDir::new("empty");
    let (wal, _) = Wal::open(tmp.config(1 << 20)).unwrap();
    let none: [&[u8]; 0] = [];
    assert_eq!(wal.append_blocking(0, &none, 0).unwrap(), 0..0);
    assert_eq!(wal.stats().fsyncs, 0);
    assert_eq!(wal.append_blocking(0, &[b""], 0).unwrap(), 0..1);
}

#[test]
fn a_second_open_of_the_same_dir_is_refused() {
    let tmp = TempDir::new("lock");
    let (wal, _) = Wal::open(tmp.config(1 << 20)).unwrap();
    let err = Wal::open(tmp.config(1 << 20)).unwrap_err();
    assert!(matches!(err, WalError::Locked { .. }), "{err}");
    drop(wal);
    Wal::open(tmp.config(1 << 20)).unwrap();
}

#[test]
fn bad_config_names_every_problem() {
    let cfg = WalConfig {
        segment_bytes: 0,
        max_pending_bytes: 0,
        ..WalConfig::new("")
    };
    let msg = Wal::open(cfg).unwrap_err().to_string();
    for key in ["dir", "segment_bytes", "max_pending_bytes"] {
        assert!(msg.contains(key), "{msg}");
    }
}

#[test]
fn a_stray_wal_file_is_an_error_not_ignored() {
    let tmp = TempDir::new("stray");
    fs::create_dir_all(&tmp.0).unwrap();
    fs::write(tmp.0.join("notes.wal"), b"hello").unwrap();
    let err = Wal::open(tmp.config(1 << 20)).unwrap_err();
    assert!(matches!(err, WalError::Corrupt { .. }), "{err}");
}

/// Fault injection: after a failed fsync nothing more is acknowledged, the
/// failure sticks, and a reopen recovers every acknowledged record.
#[test]
fn failed_fsync_fails_the_group_and_every_later_append() {
    let tmp = TempDir::new("fsyncfail");
    let (wal, _) = Wal::open(tmp.config(1 << 20)).unwrap();
    let acked = wal.append_blocking(0, &[b"acked"], 0).unwrap();
    wal.inner
        .shared
        .fail_next_sync
        .store(true, Ordering::Relaxed);
    let err = wal.append_blocking(0, &[b"never acked"], 0).unwrap_err();
    assert!(matches!(err, WalError::Io { op: "fsync", .. }), "{err}");
    let err = wal.append_blocking(0, &[b"later"], 0).unwrap_err();
    assert!(matches!(err, WalError::Failed(_)), "{err}");
    let err = block_on_async(wal.append(0, &[b"later, async"], 0)).unwrap_err();
    assert!(matches!(err, WalError::Failed(_)), "{err}");
    assert_eq!(wal.durable_seq(), 1);
    assert!(wal.close().is_err());

    let (wal, rec) = Wal::open(tmp.config(1 << 20)).unwrap();
    // The unacknowledged entry was written before the fsync "failed", so
    // it may be there; the acknowledged one must be.
    assert!(rec.next_seq >= acked.end);
    assert_eq!(read_all(&wal, acked.clone())[0].1.2, b"acked");
}

#[test]
fn appends_after_close_fail_on_every_clone() {
    let tmp = TempDir::new("closed");
    let (wal, _) = Wal::open(tmp.config(1 << 20)).unwrap();
    let other = wal.clone();
    wal.close().unwrap();
    let err = other.append_blocking(0, &[b"x"], 0).unwrap_err();
    assert!(matches!(err, WalError::Closed), "{err}");
}

fn block_on_async<F: Future>(f: F) -> F::Output {
    group_commit::block_on(f)
}

#[derive(Debug, Clone)]
enum Op {
    Append(u32, Vec<Vec<u8>>),
    /// Truncate before this fraction (per mille) of the next seq.
    Truncate(u16),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u32..4, prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..6))
            .prop_map(|(s, r)| Op::Append(s, r)),
        1 => (0u16..=1000).prop_map(Op::Truncate),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// The WAL against a plain `Vec`: whatever the ops, every retained seq
    /// reads back as appended and numbering never skips or repeats.
    #[test]
    fn prop_wal_matches_vec(ops in prop::collection::vec(op(), 1..30), seg in 64u64..400) {
        let tmp = TempDir::new("prop");
        let (mut wal, _) = Wal::open(tmp.config(seg)).unwrap();
        let mut model: Vec<Rec> = Vec::new();
        let mut truncated_to = 0;
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Append(stream, records) => {
                    let r = wal.append_blocking(stream, &records, i as i64).unwrap();
                    prop_assert_eq!(r, model.len() as u64..(model.len() + records.len()) as u64);
                    model.extend(records.into_iter().map(|p| (stream, i as i64, p)));
                }
                Op::Truncate(per_mille) => {
                    let seq = model.len() as u64 * u64::from(per_mille) / 1000;
                    wal.truncate_before(seq).unwrap();
                    truncated_to = truncated_to.max(seq);
                    prop_assert!(wal.first_seq() <= truncated_to);
                }
                Op::Reopen => {
                    drop(wal);
                    let (w, rec) = Wal::open(tmp.config(seg)).unwrap();
                    prop_assert_eq!(rec.next_seq, model.len() as u64);
                    prop_assert_eq!(rec.discarded_bytes, 0);
                    wal = w;
                }
            }
            let (first, n) = (wal.first_seq(), model.len() as u64);
            prop_assert_eq!(read_all(&wal, first..n), expect(&model, first..n));
        }
    }
}

// ---------------------------------------------------------------------
// Damage: a torn tail is cut, anything else is refused untouched.

/// Every file of `dir` (segments and the lock file), by name.
fn snapshot(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn write_snapshot(dir: &Path, files: &std::collections::BTreeMap<String, Vec<u8>>) {
    for (name, bytes) in files {
        fs::write(dir.join(name), bytes).unwrap();
    }
}

/// Entry start offsets of a segment's bytes.
fn entry_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        starts.push(at);
        at += 8 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    }
    starts
}

/// A closed log of several small segments; returns its model and files.
fn damaged_log_fixture(tmp: &TempDir) -> (Vec<Rec>, std::collections::BTreeMap<String, Vec<u8>>) {
    let (wal, _) = Wal::open(tmp.config(200)).unwrap();
    let model = fill(&wal, 14);
    wal.close().unwrap();
    let files = snapshot(&tmp.0);
    assert!(segment_files(&tmp.0).len() >= 4, "{:?}", files.keys());
    (model, files)
}

/// Opens the damaged log: it must either recover exactly the acknowledged
/// records (`model`) or refuse with `Corrupt` naming `segment` and the
/// offset of the damaged entry, leaving every file as it was.
fn open_damaged(
    tmp: &TempDir,
    model: &[Rec],
    damaged: &std::collections::BTreeMap<String, Vec<u8>>,
    segment: &str,
    entry: usize,
) -> std::result::Result<(), String> {
    match Wal::open(tmp.config(200)) {
        Ok((wal, rec)) => {
            let n = model.len() as u64;
            if rec.next_seq != n
                || read_all(&wal, rec.first_seq..n) != expect(model, rec.first_seq..n)
            {
                return Err(format!("recovered a different log: {rec:?}"));
            }
            Ok(())
        }
        Err(WalError::Corrupt {
            path,
            offset,
            reason,
        }) => {
            if !path.ends_with(segment) || offset != entry as u64 {
                return Err(format!(
                    "corruption reported at {} offset {offset}, expected {segment} offset {entry}: {reason}",
                    path.display()
                ));
            }
            if snapshot(&tmp.0) != *damaged {
                return Err(format!("open changed files: {reason}"));
            }
            Ok(())
        }
        Err(e) => Err(format!("unexpected error: {e}")),
    }
}

/// Every byte of every segment, flipped (three ways) one at a time: every
/// entry is acknowledged, so each open must refuse, naming the damaged
/// entry, and change no file.
#[test]
fn a_flipped_byte_anywhere_is_refused_and_changes_no_file() {
    let tmp = TempDir::new("flipall");
    let (model, files) = damaged_log_fixture(&tmp);
    for (name, bytes) in files.iter().filter(|(n, _)| n.ends_with(".wal")) {
        let starts = entry_starts(bytes);
        for at in 0..bytes.len() {
            let entry = *starts.iter().rev().find(|&&s| s <= at).unwrap();
            for mask in [0x01u8, 0x80, 0xff] {
                let mut damaged = files.clone();
                damaged.get_mut(name).unwrap()[at] ^= mask;
                write_snapshot(&tmp.0, &damaged);
                let err = Wal::open(tmp.config(200)).map(|_| ()).unwrap_err();
                assert!(
                    matches!(&err, WalError::Corrupt { path, offset, .. }
                        if path.ends_with(name) && *offset == entry as u64),
                    "{name} byte {at} ^ {mask:#x}: {err}"
                );
                assert_eq!(snapshot(&tmp.0), damaged, "{name} byte {at}: files changed");
            }
        }
    }
    // And undamaged, it opens to exactly the model.
    write_snapshot(&tmp.0, &files);
    open_damaged(&tmp, &model, &files, "", 0).unwrap();
}

/// Seeded random damage: one random byte in each of a random subset of
/// segments (so every segment gets hit over the rounds), random masks.
/// Each open either recovers exactly the acknowledged records or refuses
/// naming the first damaged entry, touching no file.
#[test]
fn random_damage_in_every_segment_recovers_exactly_or_refuses_untouched() {
    let tmp = TempDir::new("fliprandom");
    let (model, files) = damaged_log_fixture(&tmp);
    let segments: Vec<&String> = files.keys().filter(|n| n.ends_with(".wal")).collect();
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..400 {
        let mut damaged = files.clone();
        let mut first_hit: Option<(String, usize)> = None;
        for (i, name) in segments.iter().enumerate() {
            // Segment `round % len` always, the others at random.
            if i != round % segments.len() && next() % 3 != 0 {
                continue;
            }
            let bytes = damaged.get_mut(*name).unwrap();
            if bytes.is_empty() {
                continue;
            }
            let at = (next() % bytes.len() as u64) as usize;
            let mask = (next() % 255 + 1) as u8;
            let entry = *entry_starts(&files[*name])
                .iter()
                .rev()
                .find(|&&s| s <= at)
                .unwrap();
            bytes[at] ^= mask;
            first_hit.get_or_insert(((*name).clone(), entry));
        }
        write_snapshot(&tmp.0, &damaged);
        let (name, entry) = first_hit.unwrap();
        open_damaged(&tmp, &model, &damaged, &name, entry)
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
    }
}

/// Power loss can leave the unsynced end of the last segment zero-filled:
/// that is a torn tail, cut.
#[test]
fn a_zero_filled_end_of_the_last_segment_is_a_torn_tail() {
    let tmp = TempDir::new("zeros");
    let (model, files) = damaged_log_fixture(&tmp);
    let last = segment_files(&tmp.0).pop().unwrap();
    let name = segment::file_name(last);
    let mut damaged = files.clone();
    damaged.get_mut(&name).unwrap().extend([0u8; 100]);
    write_snapshot(&tmp.0, &damaged);
    let (wal, rec) = Wal::open(tmp.config(200)).unwrap();
    assert_eq!(
        (rec.next_seq, rec.discarded_bytes),
        (model.len() as u64, 100)
    );
    assert!(rec.torn.unwrap().reason.contains("zero"));
    let n = model.len() as u64;
    assert_eq!(read_all(&wal, last..n), expect(&model, last..n));
}

/// A damaged last entry (nothing intact after it): check reports it,
/// salvage keeps the rest and fills its seqs from its (plausible) header.
#[test]
fn check_and_salvage_of_a_damaged_last_entry() {
    let tmp = TempDir::new("salvagelast");
    let (model, files) = damaged_log_fixture(&tmp);
    let last = segment_files(&tmp.0).pop().unwrap();
    let name = segment::file_name(last);
    let start = *entry_starts(&files[&name]).last().unwrap();
    let mut damaged = files.clone();
    let bytes = damaged.get_mut(&name).unwrap();
    let count = u32::from_le_bytes(bytes[start + 16..start + 20].try_into().unwrap()) as u64;
    let at = bytes.len() - 2;
    bytes[at] ^= 0x10;
    write_snapshot(&tmp.0, &damaged);

    let report = check(&tmp.0).unwrap();
    assert!(report.is_damaged(), "{report:?}");
    let seg = report.segments.last().unwrap();
    assert_eq!(seg.problems.len(), 1);
    assert_eq!(seg.problems[0].offset, start as u64);
    assert_eq!(snapshot(&tmp.0), damaged);

    let n = model.len() as u64;
    let s = salvage(&tmp.0, 0x9000_0000, b"lost", "t").unwrap();
    assert_eq!(s.lost.len(), 1, "{s:?}");
    assert_eq!(s.lost[0].seqs, n - count..n);
    assert_eq!(s.next_seq, n);
    assert!(!check(&tmp.0).unwrap().is_damaged());
    let (wal, rec) = Wal::open(tmp.config(200)).unwrap();
    assert_eq!(rec.next_seq, n);
    let got = read_all(&wal, 0..n);
    assert_eq!(got[..(n - count) as usize], expect(&model, 0..n - count));
    assert!(
        got[(n - count) as usize..]
            .iter()
            .all(|(_, (stream, _, p))| *stream == 0x9000_0000 && p == b"lost")
    );
}

/// Salvage of a clean log, or one with only a torn tail, changes nothing.
#[test]
fn salvage_leaves_a_log_that_opens_alone() {
    let tmp = TempDir::new("salvageclean");
    let (model, files) = damaged_log_fixture(&tmp);
    let s = salvage(&tmp.0, 0x9000_0000, b"lost", "t").unwrap();
    assert_eq!((s.moved_to, s.next_seq), (None, model.len() as u64));
    assert_eq!(snapshot(&tmp.0), files);
    assert!(matches!(check(&tmp.0).unwrap().verdict, Verdict::Clean));
}

#[test]
fn check_refuses_while_the_log_is_open() {
    let tmp = TempDir::new("checklocked");
    let (_wal, _) = Wal::open(tmp.config(200)).unwrap();
    assert!(matches!(check(&tmp.0), Err(WalError::Locked { .. })));
}

/// Seeded random damage (one byte in each of some segments), then salvage:
/// the log opens, every record outside the damaged entries reads back as
/// appended, every other seq below the new end is a lost marker listed in
/// the report, and the originals are kept aside unchanged.
#[test]
fn salvage_after_random_damage_keeps_every_intact_entry() {
    let tmp = TempDir::new("salvagerandom");
    let (model, files) = damaged_log_fixture(&tmp);
    let segments: Vec<String> = files
        .keys()
        .filter(|n| n.ends_with(".wal"))
        .cloned()
        .collect();
    let n = model.len() as u64;
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..150 {
        let mut damaged = files.clone();
        // Seqs of the entries hit.
        let mut hit: Vec<Range<u64>> = Vec::new();
        for (i, name) in segments.iter().enumerate() {
            if i != round % segments.len() && next() % 3 != 0 {
                continue;
            }
            let bytes = damaged.get_mut(name).unwrap();
            let at = (next() % bytes.len() as u64) as usize;
            let entry = *entry_starts(&files[name])
                .iter()
                .rev()
                .find(|&&s| s <= at)
                .unwrap();
            let orig = &files[name];
            let first = u64::from_le_bytes(orig[entry + 8..entry + 16].try_into().unwrap());
            let count = u32::from_le_bytes(orig[entry + 16..entry + 20].try_into().unwrap());
            hit.push(first..first + u64::from(count));
            bytes[at] ^= (next() % 255 + 1) as u8;
        }
        fs::remove_dir_all(&tmp.0).unwrap();
        fs::create_dir_all(&tmp.0).unwrap();
        write_snapshot(&tmp.0, &damaged);

        let label = format!("r{round}");
        let report = salvage(&tmp.0, 0x9000_0000, b"lost", &label)
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let aside = tmp.0.join(format!("damaged-{label}"));
        for w in &report.written {
            let name = w.path.file_name().unwrap().to_string_lossy().into_owned();
            if w.replaces_damaged {
                assert_eq!(fs::read(aside.join(&name)).unwrap(), damaged[&name]);
            }
        }
        let (wal, rec) =
            Wal::open(tmp.config(200)).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(rec.torn.is_none(), "round {round}: {rec:?}");
        let end = rec.next_seq;
        assert!(end <= n, "round {round}: {end}");
        if end < n {
            assert!(report.lost_at_end.is_some(), "round {round}: {report:?}");
        }
        let lost = |seq: u64| report.lost.iter().any(|l| l.seqs.contains(&seq));
        for (seq, (stream, _, payload)) in read_all(&wal, 0..end) {
            let in_hit = hit.iter().any(|h| h.contains(&seq));
            if (stream, payload.as_slice()) == (0x9000_0000, &b"lost"[..]) {
                assert!(in_hit && lost(seq), "round {round}: seq {seq} lost");
            } else {
                assert_eq!(
                    (stream, payload.clone()),
                    (model[seq as usize].0, model[seq as usize].2.clone()),
                    "round {round}: seq {seq}"
                );
                assert!(!lost(seq), "round {round}: seq {seq} reported lost");
            }
        }
        // Everything outside the damaged entries is there.
        for seq in 0..n {
            if !hit.iter().any(|h| h.contains(&seq)) {
                assert!(seq < end, "round {round}: intact seq {seq} lost");
            }
        }
        drop(wal);
    }
}
