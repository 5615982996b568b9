//! Checking and salvaging a damaged log: `lamina wal check` and
//! `lamina wal salvage`.
//!
//! Both take the directory lock, so they refuse to run next to a server.
//! [`check`] reads every segment and reports, per segment, its intact
//! entries and every problem, resynchronising after a damaged entry by
//! looking for the next entry that verifies (see `segment::find_entry`).
//!
//! [`salvage`] keeps every intact entry, byte for byte. The server needs
//! gap-free seqs (the micro-batch loop reads seq ranges contiguously, and
//! its committed position is a seq), so the seqs of what was lost are
//! filled with *lost markers*: log entries of records whose stream id is
//! the caller's `marker_stream` (the server passes `control::LOST`), one
//! record per lost seq. The micro-batch loop skips them and logs how many
//! it skipped. Seqs lost between two intact entries are known exactly;
//! at the end of the log only the damaged entry's own header can say how
//! many records it held (used when it is plausible, and reported as
//! unverified). A segment with a problem is rewritten under its own name
//! (so the following segments stay contiguous); the original is moved to
//! `<wal>/damaged-<label>/`, never deleted. A missing segment is replaced
//! by one of markers.
//!
//! A crash during salvage can leave a segment moved aside but its
//! replacement not yet in place: the log then has a hole, which the next
//! open reports; the originals are all in `damaged-<label>/` and the
//! replacements in `salvage-<label>.tmp/`.

use std::{
    fs::{self, File},
    io::Write,
    ops::Range,
    path::{Path, PathBuf},
};

use super::{
    TornTail,
    error::{Result, WalError, io_err},
    lock_dir,
    record::{Body, EntryHeader, PREFIX_LEN, Prefix, encode_prefix},
    segment::{self, Tail},
};

/// One problem in a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryProblem {
    /// Byte offset in the segment.
    pub offset: u64,
    pub reason: String,
}

/// What [`check`] found in one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentCheck {
    pub path: PathBuf,
    /// The first seq, from the file name.
    pub first_seq: u64,
    pub bytes: u64,
    /// Intact entries and their records.
    pub entries: u64,
    pub records: u64,
    /// From the first intact record to one past the last.
    pub seqs: Option<Range<u64>>,
    pub problems: Vec<EntryProblem>,
}

/// What opening the log would do.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Every entry verifies.
    Clean,
    /// Only a torn tail (left by a crash, never acknowledged): opening the
    /// log cuts it.
    TornTail(TornTail),
    /// Opening the log fails with this [`WalError::Corrupt`].
    Corrupt(WalError),
}

/// What [`check`] found.
#[derive(Debug, Clone)]
pub struct CheckReport {
    pub segments: Vec<SegmentCheck>,
    pub verdict: Verdict,
}

impl CheckReport {
    /// Whether the server would refuse to start on this log.
    pub fn is_damaged(&self) -> bool {
        matches!(self.verdict, Verdict::Corrupt(_))
    }
}

/// Seqs [`salvage`] could not recover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostRange {
    pub seqs: Range<u64>,
    /// The damaged segment and the offset of the damage.
    pub path: PathBuf,
    pub offset: u64,
    /// How the range is known.
    pub note: String,
}

/// A segment [`salvage`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SalvagedSegment {
    pub path: PathBuf,
    /// Whether it replaces a damaged segment (else it fills a missing one).
    pub replaces_damaged: bool,
    /// Intact entries and records copied into it.
    pub entries: u64,
    pub records: u64,
}

/// What [`salvage`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SalvageReport {
    /// Where the damaged segments went; `None` if nothing needed salvage.
    pub moved_to: Option<PathBuf>,
    pub written: Vec<SalvagedSegment>,
    /// Every lost seq range, filled with lost markers.
    pub lost: Vec<LostRange>,
    /// Records at the end of the log that may be lost without a count
    /// (a damaged last entry whose header is not trustworthy).
    pub lost_at_end: Option<LostRange>,
    /// Seq of the next append once the log is opened.
    pub next_seq: u64,
}

#[derive(Debug, Clone, Copy)]
struct Intact {
    offset: usize,
    len: usize,
    header: EntryHeader,
}

#[derive(Debug)]
struct Scan {
    first: u64,
    path: PathBuf,
    bytes: Vec<u8>,
    intact: Vec<Intact>,
    problems: Vec<EntryProblem>,
}

impl Scan {
    /// One past the last intact record (the name's seq if none).
    fn end(&self) -> u64 {
        self.intact
            .last()
            .map_or(self.first, |e| e.header.end_seq())
    }
}

/// Why the entry at the start of `bytes` does not verify.
fn why_bad(bytes: &[u8]) -> String {
    let Some(p) = bytes.get(..PREFIX_LEN) else {
        return format!(
            "{} bytes at the end, shorter than an entry header",
            bytes.len()
        );
    };
    let prefix = match Prefix::decode(p.try_into().expect("prefix bytes")) {
        Ok(prefix) => prefix,
        Err(reason) => return reason,
    };
    let len = prefix.entry_len();
    if len > bytes.len() as u64 {
        return format!(
            "entry of {len} bytes but only {} left in the file",
            bytes.len()
        );
    }
    match prefix.verify(&bytes[PREFIX_LEN..len as usize]) {
        Err(reason) => reason,
        Ok(()) => "entry verifies".into(),
    }
}

fn scan_segment(path: PathBuf, first: u64) -> Result<Scan> {
    let bytes = fs::read(&path).map_err(io_err("read", &path))?;
    let mut intact = Vec::new();
    let mut problems = Vec::new();
    let mut expected = first;
    let mut at = 0;
    let mut resynced = false;
    while at < bytes.len() {
        if let Some(p) = segment::entry_at(&bytes[at..]) {
            let h = p.header;
            let len = p.entry_len() as usize;
            if h.first_seq < expected {
                problems.push(EntryProblem {
                    offset: at as u64,
                    reason: format!(
                        "entry holds seqs {}..{} again (expected {expected} next); skipped",
                        h.first_seq,
                        h.end_seq()
                    ),
                });
            } else {
                if h.first_seq > expected && !resynced {
                    problems.push(EntryProblem {
                        offset: at as u64,
                        reason: format!(
                            "seqs {expected}..{} are missing before this entry",
                            h.first_seq
                        ),
                    });
                }
                intact.push(Intact {
                    offset: at,
                    len,
                    header: h,
                });
                expected = h.end_seq();
            }
            resynced = false;
            at += len;
            continue;
        }
        let reason = why_bad(&bytes[at..]);
        let left = bytes.len() - at;
        match segment::find_entry(&bytes, at + 1, segment::plausible_seqs(expected, left)) {
            Some((next, p)) => {
                problems.push(EntryProblem {
                    offset: at as u64,
                    reason: format!(
                        "{reason}; {} bytes up to the next intact entry (offset {next}) are \
                         unreadable: seqs {expected}..{} lost",
                        next - at,
                        p.header.first_seq
                    ),
                });
                resynced = true;
                at = next;
            }
            None => {
                problems.push(EntryProblem {
                    offset: at as u64,
                    reason: format!(
                        "{reason}; no intact entry in the {left} bytes to the end of the segment"
                    ),
                });
                break;
            }
        }
    }
    Ok(Scan {
        first,
        path,
        bytes,
        intact,
        problems,
    })
}

fn scan_all(dir: &Path) -> Result<(Vec<u64>, Vec<Scan>)> {
    let firsts = segment::list(dir)?;
    let scans = firsts
        .iter()
        .map(|&first| scan_segment(segment::path(dir, first), first))
        .collect::<Result<Vec<_>>>()?;
    Ok((firsts, scans))
}

fn verdict(dir: &Path, firsts: &[u64]) -> Result<Verdict> {
    if firsts.is_empty() {
        return Ok(Verdict::Clean);
    }
    match segment::inspect(dir, firsts) {
        Ok(found) => Ok(found
            .torn
            .map_or(Verdict::Clean, |(tail, _)| Verdict::TornTail(tail))),
        Err(e @ WalError::Corrupt { .. }) => Ok(Verdict::Corrupt(e)),
        Err(e) => Err(e),
    }
}

fn open_dir(dir: &Path) -> Result<File> {
    if !dir.is_dir() {
        return Err(WalError::io(
            "open",
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no WAL directory"),
        ));
    }
    lock_dir(dir)
}

/// Reads every segment of the log in `dir` and reports what is intact,
/// every problem, and what opening the log would do. Changes nothing (but
/// creates the lock file if it is missing).
///
/// # Errors
///
/// [`WalError::Locked`] while a server has the log open, [`WalError::Io`].
pub fn check(dir: &Path) -> Result<CheckReport> {
    let _lock = open_dir(dir)?;
    let (firsts, scans) = scan_all(dir)?;
    let verdict = verdict(dir, &firsts)?;
    let mut segments = Vec::with_capacity(scans.len());
    let mut prev_end: Option<u64> = None;
    for scan in scans {
        let mut problems = Vec::new();
        if let Some(end) = prev_end
            && end != scan.first
        {
            problems.push(EntryProblem {
                offset: 0,
                reason: format!(
                    "segment starts at seq {}, but the previous one ends at seq {end}",
                    scan.first
                ),
            });
        }
        problems.extend(scan.problems.iter().cloned());
        if let (Verdict::TornTail(t), Some(last)) = (&verdict, problems.last_mut())
            && t.path == scan.path
            && t.offset == last.offset
        {
            last.reason = format!(
                "torn tail (an entry cut by a crash, never acknowledged; the server cuts it \
                 at start): {}",
                t.reason
            );
        }
        let records: u64 = scan.intact.iter().map(|e| u64::from(e.header.count)).sum();
        segments.push(SegmentCheck {
            path: scan.path.clone(),
            first_seq: scan.first,
            bytes: scan.bytes.len() as u64,
            entries: scan.intact.len() as u64,
            records,
            seqs: scan.intact.first().map(|e| e.header.first_seq..scan.end()),
            problems,
        });
        prev_end = Some(scan.end());
    }
    Ok(CheckReport { segments, verdict })
}

/// Appends lost markers for `seqs` to `buf`.
fn push_markers(buf: &mut Vec<u8>, seqs: Range<u64>, stream: u32, payload: &[u8], t: i64) {
    const PER_ENTRY: u64 = 65_536;
    let mut at = seqs.start;
    while at < seqs.end {
        let n = (seqs.end - at).min(PER_ENTRY);
        let records = vec![payload; n as usize];
        let body = Body::encode(&records).expect("lost markers fit an entry");
        let header = EntryHeader {
            first_seq: at,
            count: body.count,
            stream,
            receive_time_us: t,
        };
        buf.extend_from_slice(&encode_prefix(header, &body));
        buf.extend_from_slice(&body.bytes);
        at += n;
    }
}

/// The offset of the last problem before byte `at` of `scan`.
fn problem_before(scan: &Scan, at: usize) -> u64 {
    scan.problems
        .iter()
        .rev()
        .map(|p| p.offset)
        .find(|&o| o < at as u64)
        .unwrap_or(0)
}

/// One segment to write.
struct Planned {
    first: u64,
    bytes: Vec<u8>,
    replaces: Option<PathBuf>,
    entries: u64,
    records: u64,
}

/// Rebuilds a damaged log in `dir` from every intact entry (see the module
/// docs); `marker_stream` and `marker_payload` make the lost markers, and
/// `label` names the directory the damaged segments are moved to
/// (`damaged-<label>`). A log that opens as it is (clean, or only a torn
/// tail) is left alone.
///
/// # Errors
///
/// [`WalError::Locked`] while a server has the log open, [`WalError::Io`],
/// [`WalError::Corrupt`] for damage it cannot repair (segments that
/// overlap, or a rebuilt log that still does not verify).
pub fn salvage(
    dir: &Path,
    marker_stream: u32,
    marker_payload: &[u8],
    label: &str,
) -> Result<SalvageReport> {
    let _lock = open_dir(dir)?;
    let (firsts, scans) = scan_all(dir)?;
    if !matches!(verdict(dir, &firsts)?, Verdict::Corrupt(_)) {
        let next_seq = match firsts.is_empty() {
            true => 0,
            false => segment::inspect(dir, &firsts)?.next_seq,
        };
        return Ok(SalvageReport {
            moved_to: None,
            written: Vec::new(),
            lost: Vec::new(),
            lost_at_end: None,
            next_seq,
        });
    }

    let mut plan = Vec::new();
    let mut lost = Vec::new();
    let mut lost_at_end = None;
    let mut cur = firsts[0];
    let mut last_t = 0;
    for (k, scan) in scans.iter().enumerate() {
        if scan.first > cur {
            let mut bytes = Vec::new();
            push_markers(
                &mut bytes,
                cur..scan.first,
                marker_stream,
                marker_payload,
                last_t,
            );
            lost.push(LostRange {
                seqs: cur..scan.first,
                path: segment::path(dir, cur),
                offset: 0,
                note: "segment missing".into(),
            });
            plan.push(Planned {
                first: cur,
                bytes,
                replaces: None,
                entries: 0,
                records: 0,
            });
            cur = scan.first;
        } else if scan.first < cur {
            return Err(WalError::Corrupt {
                path: scan.path.clone(),
                offset: 0,
                reason: format!(
                    "segment starts at seq {}, inside the previous one (which ends at {cur}): \
                     overlapping segments cannot be salvaged automatically",
                    scan.first
                ),
            });
        }
        if scan.problems.is_empty() {
            cur = scan.end();
            last_t = scan
                .intact
                .last()
                .map_or(last_t, |e| e.header.receive_time_us);
            continue;
        }
        let mut bytes = Vec::new();
        let mut records = 0;
        for e in &scan.intact {
            if e.header.first_seq > cur {
                push_markers(
                    &mut bytes,
                    cur..e.header.first_seq,
                    marker_stream,
                    marker_payload,
                    last_t,
                );
                lost.push(LostRange {
                    seqs: cur..e.header.first_seq,
                    path: scan.path.clone(),
                    offset: problem_before(scan, e.offset),
                    note: "between intact entries: exact".into(),
                });
            }
            bytes.extend_from_slice(&scan.bytes[e.offset..e.offset + e.len]);
            records += u64::from(e.header.count);
            cur = e.header.end_seq();
            last_t = e.header.receive_time_us;
        }
        let target = match scans.get(k + 1) {
            Some(next) => Some((next.first, "up to the next segment: exact".to_string())),
            None => {
                // Damage after the last intact entry of the log.
                let tail_at = scan.intact.last().map_or(0, |e| e.offset + e.len);
                let tail = &scan.bytes[tail_at.min(scan.bytes.len())..];
                if tail.is_empty() {
                    None
                } else {
                    match segment::classify_tail(tail, cur) {
                        Tail::Torn(_) => None,
                        Tail::Corrupt(reason) => match plausible_count(tail, cur) {
                            Some(n) => Some((
                                cur + n,
                                "count from the damaged entry's header (not verified)".into(),
                            )),
                            None => {
                                lost_at_end = Some(LostRange {
                                    seqs: cur..cur,
                                    path: scan.path.clone(),
                                    offset: tail_at as u64,
                                    note: format!(
                                        "the damaged last entry's header is unreadable, so how \
                                         many records it held is unknown ({reason})"
                                    ),
                                });
                                None
                            }
                        },
                    }
                }
            }
        };
        if let Some((end, note)) = target {
            if end < cur {
                return Err(WalError::Corrupt {
                    path: scan.path.clone(),
                    offset: 0,
                    reason: format!(
                        "intact entries reach seq {cur}, past the next segment's first seq \
                         {end}: overlapping segments cannot be salvaged automatically"
                    ),
                });
            }
            if end > cur {
                push_markers(&mut bytes, cur..end, marker_stream, marker_payload, last_t);
                let offset = scan.problems.last().map_or(0, |p| p.offset);
                lost.push(LostRange {
                    seqs: cur..end,
                    path: scan.path.clone(),
                    offset,
                    note,
                });
                cur = end;
            }
        }
        plan.push(Planned {
            first: scan.first,
            bytes,
            replaces: Some(scan.path.clone()),
            entries: scan.intact.len() as u64,
            records,
        });
    }

    let aside = dir.join(format!("damaged-{label}"));
    let tmp = dir.join(format!("salvage-{label}.tmp"));
    fs::create_dir(&aside).map_err(io_err("create directory", &aside))?;
    fs::create_dir(&tmp).map_err(io_err("create directory", &tmp))?;
    for p in &plan {
        let path = tmp.join(segment::file_name(p.first));
        let mut f = segment::create(&path)?;
        f.write_all(&p.bytes).map_err(io_err("write", &path))?;
        f.sync_all().map_err(io_err("fsync", &path))?;
    }
    segment::sync_dir(&tmp)?;
    segment::sync_dir(dir)?;
    let mut written = Vec::new();
    for p in &plan {
        let name = segment::file_name(p.first);
        if let Some(orig) = &p.replaces {
            let to = aside.join(&name);
            fs::rename(orig, &to).map_err(io_err("move aside", orig))?;
        }
        let to = dir.join(&name);
        fs::rename(tmp.join(&name), &to).map_err(io_err("move into place", &to))?;
        written.push(SalvagedSegment {
            path: to,
            replaces_damaged: p.replaces.is_some(),
            entries: p.entries,
            records: p.records,
        });
    }
    segment::sync_dir(&aside)?;
    segment::sync_dir(dir)?;
    fs::remove_dir(&tmp).map_err(io_err("remove empty directory", &tmp))?;

    let firsts = segment::list(dir)?;
    let found = segment::inspect(dir, &firsts)?;
    Ok(SalvageReport {
        moved_to: Some(aside),
        written,
        lost,
        lost_at_end,
        next_seq: found.next_seq,
    })
}

/// The record count of the damaged entry at the start of `tail` if its
/// header looks right: the expected seq, at least one record, and no more
/// records than its bytes could hold.
fn plausible_count(tail: &[u8], expected: u64) -> Option<u64> {
    let p = Prefix::decode(tail.get(..PREFIX_LEN)?.try_into().ok()?).ok()?;
    let h = p.header;
    let fits = u64::from(h.count) * 4 <= p.body_len() as u64 && p.entry_len() <= tail.len() as u64;
    (h.first_seq == expected && h.count > 0 && fits).then_some(u64::from(h.count))
}
