//! Segment files: naming, recovery on open, and sequential reads.
//!
//! A segment is named by the first seq it holds (`00000000000000000042.wal`)
//! and contains whole entries back to back (see `record.rs`), nothing else.
//! Consecutive segments are contiguous: the name of segment `i + 1` is one
//! past the last seq of segment `i`.
//!
//! Recovery ([`inspect`], [`recover`]) tells a torn tail, which it cuts,
//! from corruption, which it reports without changing anything; the rule
//! and why it is sound are on [`inspect`].

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufReader, ErrorKind, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
};

use super::{
    error::{Result, WalError, io_err},
    record::{EntryHeader, PREFIX_LEN, Prefix, records},
};

const SUFFIX: &str = ".wal";
const NAME_DIGITS: usize = 20;
const READ_BUF_BYTES: usize = 256 * 1024;

pub(super) fn file_name(first_seq: u64) -> String {
    format!("{first_seq:0NAME_DIGITS$}{SUFFIX}")
}

pub(super) fn path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(file_name(first_seq))
}

fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segments in `dir`, by first seq. Any other `*.wal` file is an error:
/// it is not ours to ignore or delete.
pub(super) fn list(dir: &Path) -> Result<Vec<u64>> {
    let mut firsts = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.ends_with(SUFFIX) {
            continue;
        }
        match parse_name(name) {
            Some(first) => firsts.push(first),
            None => {
                return Err(WalError::Corrupt {
                    path: entry.path(),
                    offset: 0,
                    reason: "not a segment name (20 digits + .wal)".into(),
                });
            }
        }
    }
    firsts.sort_unstable();
    Ok(firsts)
}

/// Makes creations and deletions of files in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// What reading the next entry of a segment found.
enum Next {
    Entry(Prefix),
    /// Clean end of the segment.
    End,
    /// Not a whole, valid entry: the log ends here.
    Torn(String),
}

/// Reads entries of one segment front to back, checking each one.
struct EntryReader {
    reader: BufReader<File>,
    path: PathBuf,
    /// Offset of the next entry.
    offset: u64,
    file_len: u64,
    body: Vec<u8>,
}

impl EntryReader {
    fn open(path: PathBuf) -> io::Result<EntryReader> {
        let file = File::open(&path)?;
        let file_len = file.metadata()?.len();
        Ok(EntryReader {
            reader: BufReader::with_capacity(READ_BUF_BYTES, file),
            path,
            offset: 0,
            file_len,
            body: Vec::new(),
        })
    }

    /// Reads the next prefix. The length is checked against the file size
    /// before anything is allocated, so a damaged length cannot make us
    /// allocate gigabytes.
    fn next_prefix(&mut self) -> Result<Next> {
        let remaining = self.file_len - self.offset;
        if remaining == 0 {
            return Ok(Next::End);
        }
        if remaining < PREFIX_LEN as u64 {
            return Ok(Next::Torn(format!(
                "{remaining} bytes at the end, shorter than an entry header"
            )));
        }
        let mut p = [0u8; PREFIX_LEN];
        self.reader
            .read_exact(&mut p)
            .map_err(io_err("read", &self.path))?;
        let prefix = match Prefix::decode(&p) {
            Ok(prefix) => prefix,
            Err(reason) => return Ok(Next::Torn(reason)),
        };
        if prefix.entry_len() > remaining {
            return Ok(Next::Torn(format!(
                "entry of {} bytes but only {remaining} left in the file",
                prefix.entry_len()
            )));
        }
        Ok(Next::Entry(prefix))
    }

    /// Reads and verifies the body of `prefix` into `self.body`.
    fn read_body(&mut self, prefix: &Prefix) -> Result<Result<(), String>> {
        self.body.resize(prefix.body_len(), 0);
        self.reader
            .read_exact(&mut self.body)
            .map_err(io_err("read", &self.path))?;
        Ok(prefix.verify(&self.body))
    }

    fn skip_body(&mut self, prefix: &Prefix) -> Result<()> {
        let len = i64::try_from(prefix.body_len()).expect("body length fits in i64");
        self.reader
            .seek_relative(len)
            .map_err(io_err("seek", &self.path))
    }
}

/// The log as found on disk, after recovery cut a torn tail (if any).
#[derive(Debug)]
pub(super) struct Recovered {
    /// First seq of every segment, ascending; never empty.
    pub(super) segments: Vec<u64>,
    pub(super) next_seq: u64,
    /// Bytes of the last segment (where appends continue).
    pub(super) last_len: u64,
    pub(super) discarded_bytes: u64,
    pub(super) torn: Option<super::TornTail>,
}

/// What [`inspect`] found: the valid log, and a torn tail to cut, if any.
#[derive(Debug)]
pub(super) struct Inspected {
    pub(super) segments: Vec<u64>,
    /// One past the last valid record.
    pub(super) next_seq: u64,
    /// Length of the valid part of the last segment.
    pub(super) last_len: u64,
    /// The torn tail of the last segment: (where, why, its bytes).
    pub(super) torn: Option<(super::TornTail, u64)>,
}

/// What the bytes after the last valid entry of the last segment are.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Tail {
    /// What a crash can leave: cut it.
    Torn(String),
    /// Damage to data that may have been acknowledged: never cut it.
    Corrupt(String),
}

/// Reads every segment and verifies every entry, changing nothing.
///
/// # How a torn tail is told from corruption
///
/// What can a crash leave? The writer fsyncs a group of entries before it
/// acknowledges any of them, and fsyncs a segment before it writes the
/// first byte of the next one (`group_commit.rs`). So everything before
/// the last fsync is durable and intact, and only bytes written after it,
/// at the end of the *last* segment, can be missing. After `kill -9` they
/// are exactly a prefix of what was written: `write` calls land in the page
/// cache in order, so the file ends inside (or right after) an entry whose
/// bytes are all correct, only incomplete. After a power loss a file
/// system may also leave the unsynced end zero-filled.
///
/// Damage anywhere else is damage to fsynced, possibly acknowledged data.
/// The rule, for the first entry that does not verify:
///
/// 1. Not in the last segment: **corruption** (a crash cannot leave an
///    incomplete entry there). Same for a segment whose name does not
///    continue the previous segment's seqs.
/// 2. In the last segment, it is a **torn tail** only if the file ends
///    inside it, i.e. one of:
///    - fewer bytes are left than an entry prefix (32): no entry, hence no
///      acknowledged one, fits there;
///    - every byte left is zero (zero-filled blocks of a power loss: a
///      real entry has a non-zero length and count);
///    - the prefix is whole, names the expected seq, and declares a length
///      that reaches *beyond* the end of the file, **and** neither do the
///      bytes up to the end of the file verify as a complete entry (which
///      would mean a damaged length field of a complete entry), nor does
///      any valid entry start anywhere inside those bytes (which would
///      mean a damaged length swallowing later entries).
/// 3. Everything else is **corruption**: an entry whose declared extent
///    ends at or before the end of the file but fails its CRC is complete,
///    so a crash did not cut it (the prefix property above), and an entry
///    followed by more bytes was followed by more writes.
///
/// Soundness: a torn tail is cut, so it must never hold an acknowledged
/// entry. In case 2 no complete valid entry starts anywhere from the bad
/// entry to the end of the file (checked at every offset), and the bad
/// entry itself is incomplete as its length field reads. An acknowledged
/// entry can only look like that if its length field was damaged, and
/// both ways a length can lie are caught: too long, and the entry still
/// verifies up to the end of the file (if it was the last) or a later
/// valid entry is found inside its declared extent (if it was not); too
/// short, and the entry ends before the end of the file (case 3). So one
/// damaged byte anywhere, or any damage that leaves the length field
/// intact, is never cut. Only damage that rewrites a length field *and*
/// the data under it, or that zeroes the whole end of the last segment,
/// could be taken for a torn tail; we accept that, as we accept CRC
/// collisions.
///
/// Erring towards refusing: after a power loss (not `kill -9`) the unsynced
/// last group may come back with a page missing in the middle and a later
/// page present. Such an entry is complete in length but fails its CRC, or
/// is followed by bytes, and is reported as corruption although it was
/// never acknowledged: the server refuses to start, and `lamina wal
/// salvage` (which keeps every intact entry) loses nothing acknowledged.
pub(super) fn inspect(dir: &Path, firsts: &[u64]) -> Result<Inspected> {
    let last_index = firsts.len() - 1;
    let mut expected = firsts[0];
    let mut last_len = 0;
    for (i, &first) in firsts.iter().enumerate() {
        let path = path(dir, first);
        if first != expected {
            return Err(WalError::Corrupt {
                path,
                offset: 0,
                reason: format!(
                    "segment starts at seq {first}, but the previous one ends at seq {expected} \
                     (a segment is missing or overlaps)"
                ),
            });
        }
        let mut r = EntryReader::open(path.clone()).map_err(io_err("open", &path))?;
        let bad = loop {
            match r.next_prefix()? {
                Next::End => break None,
                Next::Torn(reason) => break Some(reason),
                Next::Entry(prefix) => match r.read_body(&prefix)? {
                    Ok(()) if prefix.header.first_seq == expected => {
                        expected = prefix.header.end_seq();
                        r.offset += prefix.entry_len();
                    }
                    Ok(()) => {
                        break Some(format!(
                            "entry starts at seq {}, expected {expected}",
                            prefix.header.first_seq
                        ));
                    }
                    Err(reason) => break Some(reason),
                },
            }
        };
        last_len = r.offset;
        let Some(reason) = bad else { continue };
        if i != last_index {
            return Err(WalError::Corrupt {
                path,
                offset: r.offset,
                reason: format!(
                    "{reason}; later segments follow, so a crash cannot have cut this entry: \
                     fsynced data was damaged"
                ),
            });
        }
        let tail = read_from(&path, r.offset)?;
        return match classify_tail(&tail, expected) {
            Tail::Torn(reason) => Ok(Inspected {
                segments: firsts.to_vec(),
                next_seq: expected,
                last_len,
                torn: Some((
                    super::TornTail {
                        path,
                        offset: r.offset,
                        reason,
                    },
                    tail.len() as u64,
                )),
            }),
            Tail::Corrupt(reason) => Err(WalError::Corrupt {
                path,
                offset: r.offset,
                reason,
            }),
        };
    }
    Ok(Inspected {
        segments: firsts.to_vec(),
        next_seq: expected,
        last_len,
        torn: None,
    })
}

/// The bytes of `path` from `offset` to its end.
pub(super) fn read_from(path: &Path, offset: u64) -> Result<Vec<u8>> {
    let mut f = File::open(path).map_err(io_err("open", path))?;
    f.seek(SeekFrom::Start(offset))
        .map_err(io_err("seek", path))?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(io_err("read", path))?;
    Ok(bytes)
}

/// The entry at the start of `bytes` if it is whole and verifies.
pub(super) fn entry_at(bytes: &[u8]) -> Option<Prefix> {
    let p: &[u8; PREFIX_LEN] = bytes.get(..PREFIX_LEN)?.try_into().ok()?;
    let prefix = Prefix::decode(p).ok()?;
    let len = usize::try_from(prefix.entry_len()).ok()?;
    let body = bytes.get(PREFIX_LEN..len)?;
    prefix.verify(body).ok()?;
    Some(prefix)
}

/// The first offset at or after `from` where a whole, valid entry with a
/// first seq in `seqs` and at least one record starts.
pub(super) fn find_entry(
    bytes: &[u8],
    from: usize,
    seqs: std::ops::Range<u64>,
) -> Option<(usize, Prefix)> {
    let last = bytes.len().checked_sub(PREFIX_LEN)?;
    (from..=last).find_map(|at| {
        let p: &[u8; PREFIX_LEN] = bytes[at..at + PREFIX_LEN].try_into().ok()?;
        let prefix = Prefix::decode(p).ok()?;
        // Cheap filters first: almost every offset fails them.
        if prefix.header.count == 0
            || !seqs.contains(&prefix.header.first_seq)
            || prefix.entry_len() > (bytes.len() - at) as u64
        {
            return None;
        }
        entry_at(&bytes[at..]).map(|p| (at, p))
    })
}

/// Seqs a valid entry found inside `len` bytes after seq `expected` can
/// start at: every record takes at least 4 bytes.
pub(super) fn plausible_seqs(expected: u64, len: usize) -> std::ops::Range<u64> {
    expected..expected.saturating_add(len as u64 / 4 + 1)
}

/// Classifies the bytes from the first bad entry of the last segment to its
/// end; `expected` is the seq that entry should start at. See [`inspect`].
pub(super) fn classify_tail(tail: &[u8], expected: u64) -> Tail {
    let left = tail.len();
    if left < PREFIX_LEN {
        return Tail::Torn(format!(
            "{left} bytes at the end, shorter than an entry header"
        ));
    }
    if tail.iter().all(|&b| b == 0) {
        return Tail::Torn(format!(
            "{left} zero bytes at the end (allocated but never written)"
        ));
    }
    let p: &[u8; PREFIX_LEN] = tail[..PREFIX_LEN].try_into().expect("prefix bytes");
    let prefix = match Prefix::decode(p) {
        Ok(prefix) => prefix,
        Err(reason) => {
            return Tail::Corrupt(format!(
                "{reason}, with {left} bytes to the end of the file: a crash leaves a \
                 correct prefix of an entry, so this header was damaged"
            ));
        }
    };
    let declared = prefix.entry_len();
    if declared > left as u64 {
        if prefix.header.first_seq != expected {
            return Tail::Corrupt(format!(
                "entry header says seq {}, expected {expected}, and its length ({declared} \
                 bytes) runs past the end of the file ({left} bytes left): damaged header",
                prefix.header.first_seq
            ));
        }
        if prefix.verify(&tail[PREFIX_LEN..]).is_ok() {
            return Tail::Corrupt(format!(
                "entry declares {declared} bytes but is complete and valid in the {left} bytes \
                 to the end of the file: its length field was damaged"
            ));
        }
        if let Some((at, found)) =
            find_entry(tail, PREFIX_LEN, plausible_seqs(expected, tail.len()))
        {
            return Tail::Corrupt(format!(
                "entry declares {declared} bytes, past the end of the file, but a valid entry \
                 (seqs {}..{}) starts {at} bytes into it: its length field was damaged",
                found.header.first_seq,
                found.header.end_seq()
            ));
        }
        return Tail::Torn(format!(
            "entry of {declared} bytes but only {left} left in the file"
        ));
    }
    let body = &tail[PREFIX_LEN..declared as usize];
    let why = match prefix.verify(body) {
        Err(reason) => reason,
        Ok(()) => format!(
            "entry starts at seq {}, expected {expected}",
            prefix.header.first_seq
        ),
    };
    if declared == left as u64 {
        Tail::Corrupt(format!(
            "{why}; the entry is complete (it ends exactly at the end of the file), so a \
             crash did not cut it: it was damaged after it was written"
        ))
    } else {
        Tail::Corrupt(format!(
            "{why}; {} more bytes follow the entry, so a crash did not cut it: it was \
             damaged after it was written",
            left as u64 - declared
        ))
    }
}

/// Verifies the log and cuts a torn tail (see [`inspect`]). Corruption is
/// an error and changes nothing on disk.
pub(super) fn recover(dir: &Path) -> Result<Recovered> {
    let firsts = list(dir)?;
    if firsts.is_empty() {
        let path = path(dir, 0);
        create(&path)?;
        sync_dir(dir)?;
        return Ok(Recovered {
            segments: vec![0],
            next_seq: 0,
            last_len: 0,
            discarded_bytes: 0,
            torn: None,
        });
    }
    let found = inspect(dir, &firsts)?;
    let mut discarded_bytes = 0;
    if let Some((tail, len)) = &found.torn {
        let file = OpenOptions::new()
            .write(true)
            .open(&tail.path)
            .map_err(io_err("open", &tail.path))?;
        file.set_len(tail.offset)
            .map_err(io_err("truncate", &tail.path))?;
        file.sync_all().map_err(io_err("fsync", &tail.path))?;
        discarded_bytes = *len;
    }
    Ok(Recovered {
        segments: found.segments,
        next_seq: found.next_seq,
        last_len: found.last_len,
        discarded_bytes,
        torn: found.torn.map(|(tail, _)| tail),
    })
}

/// Creates a new, empty segment file (not yet durable in the directory).
pub(super) fn create(path: &Path) -> Result<File> {
    OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(path)
        .map_err(io_err("create segment", path))
}

/// Calls `f` for every record with seq in `start..end`, in seq order.
///
/// `segments` is a snapshot of the first seqs of the live segments and
/// `start` must not be below `segments[0]`; every record below `end` must
/// be durable (the caller checks both). A segment deleted under our feet by
/// `truncate_before` is reported as [`WalError::Truncated`].
/// Where a read ended: the entry holding the next seq to read, so that a
/// read starting there seeks to it instead of scanning its segment from
/// the beginning (which would cost a buffer refill per skipped entry, for
/// every micro-batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ReadHint {
    /// The segment (its first seq).
    pub(super) segment: u64,
    /// Byte offset of the entry in the segment.
    pub(super) offset: u64,
    /// The entry's first seq.
    pub(super) entry_seq: u64,
}

/// Calls `f` for every record with seq in `start..end`; returns where the
/// read ended (for the next read's `hint`). A `hint` is used only when it
/// names the segment holding `start` and an entry at or before `start`.
pub(super) fn read<F: FnMut(u64, u64, u32, i64, &[u8])>(
    dir: &Path,
    segments: &[u64],
    start: u64,
    end: u64,
    hint: Option<ReadHint>,
    f: &mut F,
) -> Result<Option<ReadHint>> {
    let from = segments
        .partition_point(|&first| first <= start)
        .saturating_sub(1);
    let mut expected = segments[from];
    let mut reached = None;
    for &first in &segments[from..] {
        if first >= end {
            return Ok(reached);
        }
        let path = path(dir, first);
        let mut r = match EntryReader::open(path.clone()) {
            Ok(r) => r,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(WalError::Truncated {
                    requested_start: start,
                    oldest: first,
                });
            }
            Err(e) => return Err(WalError::io("open", path, e)),
        };
        let corrupt = |r: &EntryReader, reason: String| WalError::Corrupt {
            path: r.path.clone(),
            offset: r.offset,
            reason,
        };
        if first != expected {
            return Err(corrupt(
                &r,
                format!("segment starts at seq {first}, expected {expected}"),
            ));
        }
        if let Some(h) =
            hint.filter(|h| h.segment == first && h.entry_seq <= start && h.offset <= r.file_len)
        {
            r.reader
                .seek(SeekFrom::Start(h.offset))
                .map_err(io_err("seek", &r.path))?;
            r.offset = h.offset;
            expected = h.entry_seq;
        }
        while expected < end {
            let prefix = match r.next_prefix()? {
                Next::End => break,
                Next::Torn(reason) => return Err(corrupt(&r, reason)),
                Next::Entry(prefix) => prefix,
            };
            let h: EntryHeader = prefix.header;
            if h.first_seq != expected {
                let reason = format!("entry starts at seq {}, expected {expected}", h.first_seq);
                return Err(corrupt(&r, reason));
            }
            if h.end_seq() <= start {
                r.skip_body(&prefix)?;
            } else {
                r.read_body(&prefix)?
                    .map_err(|reason| corrupt(&r, reason))?;
                for (seq, payload) in (h.first_seq..).zip(records(&r.body)) {
                    if (start..end).contains(&seq) {
                        f(seq, h.first_seq, h.stream, h.receive_time_us, payload);
                    }
                }
            }
            // The next read starts at `end`: at this entry if it holds
            // `end`, else after it.
            reached = Some(if h.end_seq() > end {
                ReadHint {
                    segment: first,
                    offset: r.offset,
                    entry_seq: h.first_seq,
                }
            } else {
                ReadHint {
                    segment: first,
                    offset: r.offset + prefix.entry_len(),
                    entry_seq: h.end_seq(),
                }
            });
            expected = h.end_seq();
            r.offset += prefix.entry_len();
        }
    }
    if expected < end {
        return Err(WalError::Corrupt {
            path: dir.to_path_buf(),
            offset: 0,
            reason: format!("log ends at seq {expected}, before the requested end {end}"),
        });
    }
    Ok(reached)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_seq_and_parse_back() {
        assert_eq!(file_name(42), "00000000000000000042.wal");
        assert_eq!(file_name(u64::MAX), "18446744073709551615.wal");
        for seq in [0, 42, u64::MAX] {
            assert_eq!(parse_name(&file_name(seq)), Some(seq));
        }
        assert!(file_name(9) < file_name(10));
        for bad in [
            "42.wal",
            "0000000000000000004x.wal",
            "00000000000000000042.log",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }
}
