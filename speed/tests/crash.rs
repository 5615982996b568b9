//! Crash tests: torn tails at every byte offset are cut; damage to an
//! acknowledged entry (the last one, or one in a middle segment, or a
//! missing segment) makes `open` refuse without changing a file, and
//! `salvage` keeps every intact entry; and a real `kill -9` of a process
//! that is appending.

mod common;

use std::{
    env,
    io::{BufRead, BufReader, Write},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use common::{Files, Record, TempDir, entry_offsets, read_all, restore, segment_files};
use lamina_speed::wal::{Wal, WalConfig, WalError};

/// Appends `batches` batches of 1..=4 records; returns every record.
fn fill(wal: &Wal, batches: usize) -> Vec<Record> {
    let mut model = Vec::new();
    for b in 0..batches {
        let records: Vec<String> = (0..=b % 4)
            .map(|i| format!("batch {b:03} record {i}"))
            .collect();
        let r = wal.append_blocking(b as u32, &records, b as i64).unwrap();
        assert_eq!(r.start, model.len() as u64);
        for (seq, rec) in r.zip(records) {
            model.push((seq, b as u32, b as i64, rec.into_bytes()));
        }
    }
    model
}

/// After a damaged tail is cut, the WAL takes appends again, numbered on
/// from the last valid record, and reads them back.
fn assert_appends_continue(wal: &Wal, model: &[Record]) {
    let n = model.len() as u64;
    let r = wal.append_blocking(99, &[b"after recovery"], 1).unwrap();
    assert_eq!(r, n..n + 1);
    let all = read_all(wal, 0..n + 1);
    assert_eq!(all[..model.len()], *model);
    assert_eq!(all[model.len()].3, b"after recovery");
}

/// Builds a WAL with several segments and a last entry of known extent;
/// returns its files, the records before the last entry, and where the
/// last entry lies in the last file.
fn wal_with_known_last_entry(tmp: &TempDir) -> (Files, Vec<Record>, usize, usize) {
    let (wal, _) = Wal::open(tmp.config(400)).unwrap();
    let model = fill(&wal, 20);
    wal.append_blocking(7, &["last one", "last two", "last three"], 7)
        .unwrap();
    wal.close().unwrap();
    let files = segment_files(&tmp.0);
    assert!(
        files.len() >= 3,
        "want several segments, got {}",
        files.len()
    );
    let last = &files.last().unwrap().1;
    let (start, end) = (*entry_offsets(last).last().unwrap(), last.len());
    (files, model, start, end)
}

#[test]
fn torn_last_entry_at_every_byte_offset_is_cut_and_appends_continue() {
    let tmp = TempDir::new("torn");
    let (files, model, start, end) = wal_with_known_last_entry(&tmp);
    let last_name = files.last().unwrap().0.clone();
    for cut in start..end {
        restore(&tmp.0, &files);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(tmp.0.join(&last_name))
            .unwrap();
        f.set_len(cut as u64).unwrap();
        drop(f);

        let (wal, rec) = Wal::open(tmp.config(400)).unwrap();
        assert_eq!(rec.next_seq, model.len() as u64, "cut at {cut}");
        assert_eq!(rec.discarded_bytes, (cut - start) as u64, "cut at {cut}");
        match &rec.torn {
            None => assert_eq!(cut, start),
            Some(t) => assert_eq!(
                (t.offset, t.path.ends_with(&last_name)),
                (start as u64, true)
            ),
        }
        assert_eq!(
            std::fs::metadata(tmp.0.join(&last_name)).unwrap().len(),
            start as u64
        );
        assert_appends_continue(&wal, &model);
    }
}

/// Opens the WAL expecting corruption at `offset` of segment `name`, and
/// checks that no segment file changed.
fn assert_refused(tmp: &TempDir, seg: u64, files: &Files, name: &str, offset: usize) {
    let err = Wal::open(tmp.config(seg)).unwrap_err();
    match &err {
        WalError::Corrupt {
            path, offset: at, ..
        } => assert_eq!((path.ends_with(name), *at), (true, offset as u64), "{err}"),
        other => panic!("expected corruption, got {other}"),
    }
    assert_eq!(segment_files(&tmp.0), *files, "open changed a file: {err}");
}

/// The last entry was acknowledged: a flipped byte in it is damage, not a
/// torn tail, wherever it is (length field included).
#[test]
fn flipped_byte_anywhere_in_the_last_entry_is_refused_and_changes_nothing() {
    let tmp = TempDir::new("flip");
    let (files, _model, start, end) = wal_with_known_last_entry(&tmp);
    let name = files.last().unwrap().0.clone();
    for at in start..end {
        let mut damaged = files.clone();
        damaged.last_mut().unwrap().1[at] ^= 0x5a;
        restore(&tmp.0, &damaged);
        assert_refused(&tmp, 400, &damaged, &name, start);
    }
}

/// Not something a crash can cause (segments are fsynced before the next
/// one is started); only disk damage can: open refuses and deletes nothing,
/// and salvage keeps every intact entry, replacing the damaged one's
/// records by lost markers.
#[test]
fn damaged_entry_in_a_middle_segment_is_refused_then_salvaged() {
    let tmp = TempDir::new("middle");
    let (wal, _) = Wal::open(tmp.config(300)).unwrap();
    let model = fill(&wal, 40);
    wal.close().unwrap();
    let mut files = segment_files(&tmp.0);
    assert!(
        files.len() >= 4,
        "want several segments, got {}",
        files.len()
    );

    let (name, bytes) = (files[1].0.clone(), &files[1].1);
    let offsets = entry_offsets(bytes);
    let bad = offsets[1];
    let bad_first_seq = u64::from_le_bytes(bytes[bad + 8..bad + 16].try_into().unwrap());
    let bad_count = u32::from_le_bytes(bytes[bad + 16..bad + 20].try_into().unwrap()) as u64;
    files[1].1[bad + 40] ^= 1; // a payload byte
    restore(&tmp.0, &files);
    assert_refused(&tmp, 300, &files, &name, bad);

    let report = lamina_speed::wal::check(&tmp.0).unwrap();
    assert!(report.is_damaged());
    let problems: Vec<_> = report.segments.iter().map(|s| s.problems.len()).collect();
    assert_eq!(problems.iter().sum::<usize>(), 1, "{report:?}");
    assert_eq!(report.segments[1].problems[0].offset, bad as u64);
    assert_eq!(segment_files(&tmp.0), files);

    let lost = bad_first_seq..bad_first_seq + bad_count;
    let s = lamina_speed::wal::salvage(&tmp.0, 0x9000_0000, b"lost", "test").unwrap();
    assert_eq!(s.lost.len(), 1, "{s:?}");
    assert_eq!(s.lost[0].seqs, lost);
    assert_eq!(s.next_seq, model.len() as u64);
    // The damaged original is kept aside, byte for byte.
    assert_eq!(
        std::fs::read(tmp.0.join("damaged-test").join(&name)).unwrap(),
        files[1].1
    );
    let (wal, rec) = Wal::open(tmp.config(300)).unwrap();
    assert_eq!((rec.next_seq, rec.torn), (model.len() as u64, None));
    let all = read_all(&wal, 0..model.len() as u64);
    for (got, want) in all.iter().zip(&model) {
        if lost.contains(&want.0) {
            assert_eq!(
                (got.0, got.1, got.3.as_slice()),
                (want.0, 0x9000_0000, &b"lost"[..])
            );
        } else {
            assert_eq!(got, want);
        }
    }
    assert_appends_continue_after(&wal, model.len() as u64);
}

fn assert_appends_continue_after(wal: &Wal, n: u64) {
    let r = wal.append_blocking(99, &[b"after salvage"], 1).unwrap();
    assert_eq!(r, n..n + 1);
    assert_eq!(read_all(wal, n..n + 1)[0].3, b"after salvage");
}

#[test]
fn missing_middle_segment_is_refused_then_salvaged() {
    let tmp = TempDir::new("hole");
    let (wal, _) = Wal::open(tmp.config(300)).unwrap();
    let model = fill(&wal, 40);
    wal.close().unwrap();
    let files = segment_files(&tmp.0);
    std::fs::remove_file(tmp.0.join(&files[2].0)).unwrap();
    let left = segment_files(&tmp.0);
    assert_refused(&tmp, 300, &left, &files[3].0, 0);

    let hole: u64 = files[2].0.trim_end_matches(".wal").parse().unwrap();
    let after: u64 = files[3].0.trim_end_matches(".wal").parse().unwrap();
    let s = lamina_speed::wal::salvage(&tmp.0, 0x9000_0000, b"lost", "test").unwrap();
    assert_eq!(s.lost.len(), 1, "{s:?}");
    assert_eq!(s.lost[0].seqs, hole..after);
    let (wal, rec) = Wal::open(tmp.config(300)).unwrap();
    assert_eq!(rec.next_seq, model.len() as u64);
    let all = read_all(&wal, 0..model.len() as u64);
    assert_eq!(all[..hole as usize], model[..hole as usize]);
    assert_eq!(all[after as usize..], model[after as usize..]);
}

// ---------------------------------------------------------------------
// kill -9

/// Set in the child process: the WAL directory it appends to.
const CHILD_DIR: &str = "LAMINA_WAL_KILL_CHILD_DIR";
/// Set in the child process: which run it is (goes into every payload).
const CHILD_RUN: &str = "LAMINA_WAL_KILL_CHILD_RUN";
const CHILD_THREADS: u32 = 4;
const CHILD_SEGMENT_BYTES: u64 = 16 * 1024;

/// Thread 0 makes every fifth append a big one (64 records of ~4 KiB):
/// larger than the writer's buffer, so it takes several `write` calls and
/// a kill can land between them, leaving a really torn entry.
fn is_big(t: u32, n: u64) -> bool {
    t == 0 && n % 5 == 4
}

fn records_in(t: u32, n: u64) -> u64 {
    if is_big(t, n) {
        64
    } else {
        1 + (n + u64::from(t)) % 8
    }
}

/// The payload of record `i` of append `n` of thread `t` in run `run`:
/// self-describing, so the parent can check every recovered record, and of
/// varying length, so entries straddle segment and buffer boundaries.
fn payload(run: u32, t: u32, n: u64, i: u64) -> String {
    let len = ((n * 31 + i * 7) % 100) as usize + if is_big(t, n) { 4000 } else { 0 };
    let fill = "abcdefghijklmnopqrstuvwxyz".repeat(len / 26 + 1);
    format!(
        "run {run} thread {t} append {n} record {i} {}",
        &fill[..len]
    )
}

fn parse_payload(p: &[u8]) -> (u32, u32, u64, u64) {
    let s = std::str::from_utf8(p).expect("utf-8 payload");
    let w: Vec<&str> = s.split(' ').collect();
    let ids = (
        w[1].parse().unwrap(),
        w[3].parse().unwrap(),
        w[5].parse().unwrap(),
        w[7].parse().unwrap(),
    );
    assert_eq!(s, payload(ids.0, ids.1, ids.2, ids.3), "damaged payload");
    ids
}

/// The child: does nothing in a normal test run. Re-executed by
/// `kill_9_never_loses_an_acknowledged_record` with `CHILD_DIR` set, it
/// appends from several threads and prints every acknowledged range.
#[test]
fn kill_child_appender() {
    let Some(dir) = env::var_os(CHILD_DIR) else {
        return;
    };
    let run: u32 = env::var(CHILD_RUN).unwrap().parse().unwrap();
    let cfg = WalConfig {
        segment_bytes: CHILD_SEGMENT_BYTES,
        ..WalConfig::new(dir)
    };
    let (wal, _) = Wal::open(cfg).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let threads: Vec<_> = (0..CHILD_THREADS)
        .map(|t| {
            let wal = wal.clone();
            thread::spawn(move || {
                for n in 0..200_000u64 {
                    if Instant::now() > deadline {
                        break;
                    }
                    let records: Vec<String> = (0..records_in(t, n))
                        .map(|i| payload(run, t, n, i))
                        .collect();
                    let r = wal.append_blocking(t, &records, n as i64).unwrap();
                    // One locked write per line: lines never interleave.
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {run} {t} {n} {} {}", r.start, r.end).unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Kills the child if the parent panics first.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real crash: a child process appends from 4 threads and is killed with
/// SIGKILL at a random moment; the WAL is reopened and must hold every
/// acknowledged record, intact, with seqs contiguous from 0. Several runs
/// on the same directory, so each recovers what the previous one left.
#[test]
fn kill_9_never_loses_an_acknowledged_record() {
    if env::var_os(CHILD_DIR).is_some() {
        return;
    }
    let tmp = TempDir::new("kill9");
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut rng = seed;
    let mut next_rand = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    eprintln!("kill -9 test seed {seed}");
    // (run, thread, append) -> acknowledged seqs
    let mut acked: Vec<((u32, u32, u64), std::ops::Range<u64>)> = Vec::new();
    for run in 0..4u32 {
        let child = Command::new(env::current_exe().unwrap())
            .args([
                "--exact",
                "kill_child_appender",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, &tmp.0)
            .env(CHILD_RUN, run.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut child = KillOnDrop(child);
        let stdout = child.0.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("ACK ") && tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Let it get going (bounded), then kill it at a random moment.
        let first = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("child acknowledged nothing");
        thread::sleep(Duration::from_millis(20 + next_rand() % 500));
        child.0.kill().unwrap();
        let status = child.0.wait().unwrap();
        assert!(!status.success(), "child finished before it was killed");
        reader.join().unwrap();
        let before = acked.len();
        for line in std::iter::once(first).chain(rx.try_iter()) {
            let f: Vec<u64> = line
                .split(' ')
                .skip(1)
                .map(|x| x.parse().unwrap())
                .collect();
            acked.push(((f[0] as u32, f[1] as u32, f[2]), f[3]..f[4]));
        }

        let (wal, rec) = Wal::open(WalConfig {
            segment_bytes: CHILD_SEGMENT_BYTES,
            ..WalConfig::new(&tmp.0)
        })
        .unwrap();
        eprintln!(
            "run {run}: {} acks, log ends at seq {}, {} segments, {} bytes discarded ({:?})",
            acked.len() - before,
            rec.next_seq,
            rec.segments,
            rec.discarded_bytes,
            rec.torn.as_ref().map(|t| &t.reason),
        );
        assert_eq!(rec.first_seq, 0);
        // Every record in the log, acknowledged or not, is intact, and seqs
        // run 0, 1, 2, ... without a gap.
        let mut by_seq = Vec::new();
        let mut expected_seq = 0;
        wal.read_range(0..rec.next_seq, |seq, stream, t, p| {
            assert_eq!(seq, expected_seq);
            expected_seq += 1;
            let (r, th, n, i) = parse_payload(p);
            assert_eq!((stream, t), (th, n as i64));
            by_seq.push((r, th, n, i));
        })
        .unwrap();
        assert_eq!(expected_seq, rec.next_seq);
        // Every acknowledged record is there, at its acknowledged seq.
        for ((r, th, n), range) in &acked {
            assert!(range.end <= rec.next_seq, "acknowledged {range:?} lost");
            assert_eq!(range.end - range.start, records_in(*th, *n));
            for (i, seq) in range.clone().enumerate() {
                assert_eq!(by_seq[seq as usize], (*r, *th, *n, i as u64), "seq {seq}");
            }
        }
        wal.close().unwrap();
    }
    assert!(
        acked.len() > 10,
        "too few acknowledged appends to mean anything"
    );
}
