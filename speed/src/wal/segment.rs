//! Segment files: naming, recovery on open, and sequential reads.
//!
//! A segment is named by the first seq it holds (`00000000000000000042.wal`)
//! and contains whole entries back to back (see `record.rs`), nothing else.
//! Consecutive segments are contiguous: the name of segment `i + 1` is one
//! past the last seq of segment `i`.

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

/// The log as found on disk, after recovery cut it at the first bad entry.
#[derive(Debug)]
pub(super) struct Recovered {
    /// First seq of every remaining segment, ascending; never empty.
    pub(super) segments: Vec<u64>,
    pub(super) next_seq: u64,
    /// Bytes of the last segment (where appends continue).
    pub(super) last_len: u64,
    pub(super) discarded_bytes: u64,
    pub(super) torn: Option<super::TornTail>,
    pub(super) deleted_segments: Vec<PathBuf>,
}

/// Scans every segment in order and verifies every entry. The first entry
/// that is short or fails its CRC (or does not continue the seq numbering)
/// ends the log: its segment is truncated there and every later segment is
/// deleted, since records after a hole would break gap-free numbering.
///
/// Can a crash leave a torn entry in a segment that is *not* the last? Not
/// with our rotation: the writer fsyncs a segment before it writes the first
/// byte to the next one (see `group_commit.rs`), so after `kill -9` or power
/// loss only the last segment can end in a torn entry. A bad entry earlier
/// means the disk damaged fsynced data (or someone edited the files); the
/// later segments may then hold valid, acknowledged records, but they cannot
/// be replayed across the hole, so we delete them and say so loudly in
/// [`super::Recovery`] (`torn`, `deleted_segments`, `discarded_bytes`).
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
            deleted_segments: Vec::new(),
        });
    }

    let mut kept = Vec::with_capacity(firsts.len());
    let mut expected = firsts[0];
    let mut last_len = 0;
    // (index of the segment where the log ends, where and why, whether that
    // segment keeps its valid prefix)
    let mut cut: Option<(usize, super::TornTail, bool)> = None;
    'segments: for (i, &first) in firsts.iter().enumerate() {
        let path = path(dir, first);
        if first != expected {
            // The previous segment ended at `expected`, this one claims to
            // start elsewhere: a hole or an overlap. The whole file goes.
            let reason = format!("segment starts at seq {first}, previous one ends at {expected}");
            cut = Some((
                i,
                super::TornTail {
                    path,
                    offset: 0,
                    reason,
                },
                false,
            ));
            break;
        }
        let mut r = EntryReader::open(path.clone()).map_err(io_err("open", &path))?;
        loop {
            let torn = match r.next_prefix()? {
                Next::End => break,
                Next::Torn(reason) => reason,
                Next::Entry(prefix) if prefix.header.first_seq != expected => format!(
                    "entry starts at seq {}, expected {expected}",
                    prefix.header.first_seq
                ),
                Next::Entry(prefix) => match r.read_body(&prefix)? {
                    Ok(()) => {
                        expected = prefix.header.end_seq();
                        r.offset += prefix.entry_len();
                        continue;
                    }
                    Err(reason) => reason,
                },
            };
            kept.push(first);
            last_len = r.offset;
            let tail = super::TornTail {
                path,
                offset: r.offset,
                reason: torn,
            };
            cut = Some((i, tail, true));
            break 'segments;
        }
        kept.push(first);
        last_len = r.offset;
    }

    let mut discarded_bytes = 0;
    let mut deleted_segments = Vec::new();
    if let Some((i, tail, keep_segment)) = &cut {
        let later = if *keep_segment { i + 1 } else { *i };
        if *keep_segment {
            let file = OpenOptions::new()
                .write(true)
                .open(&tail.path)
                .map_err(io_err("open", &tail.path))?;
            let len = file.metadata().map_err(io_err("stat", &tail.path))?.len();
            discarded_bytes += len - tail.offset;
            file.set_len(tail.offset)
                .map_err(io_err("truncate", &tail.path))?;
            file.sync_all().map_err(io_err("fsync", &tail.path))?;
        }
        // Oldest first is not needed for correctness here (every one of
        // them goes), but keeps the directory contiguous if we crash midway.
        for &first in &firsts[later..] {
            let p = path(dir, first);
            let len = fs::metadata(&p).map_err(io_err("stat", &p))?.len();
            fs::remove_file(&p).map_err(io_err("delete", &p))?;
            discarded_bytes += len;
            deleted_segments.push(p);
        }
        sync_dir(dir)?;
    }
    Ok(Recovered {
        segments: kept,
        next_seq: expected,
        last_len,
        discarded_bytes,
        torn: cut.map(|(_, tail, _)| tail),
        deleted_segments,
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
