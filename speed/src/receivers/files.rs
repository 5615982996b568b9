//! `files`: Spark's `textFileStream` — every new file that appears in a
//! directory is read, once, exactly.
//!
//! The receiver lists the directory every `poll_interval_ms` (not its
//! subdirectories). Files whose name starts with `.` or `_` are skipped,
//! and so are files not matching `glob`: the rule for writers is **write
//! the file elsewhere (or under a name starting with `.`), then rename it
//! into the directory** — a rename is atomic, so the receiver never sees a
//! file half-written. A file is read in chunks of whole lines; each line
//! is one record of the stream, in an [envelope](crate::envelope) whose
//! position is the file's name (`_source`) and the byte offset just past
//! the line (`_offset`), appended to the write-ahead log. The micro-batch
//! that takes the lines commits, per file, the offset reached
//! ([`Position::SourceOffset`](crate::commit::Position::SourceOffset)), so
//! after `kill -9` a file is read on from exactly where the committed lines
//! end: no line lost, none twice. A file whose committed offset is its
//! size is done and never read again (a file that grows later has its new
//! bytes read as further lines: files must not change once in place).
//!
//! **Parquet files** (`*.parquet`) are read as record batches, row
//! groups at a time: each row becomes one record, a JSON object of its
//! columns (strings, numbers, booleans; timestamps and dates as epoch
//! milliseconds; nulls as null), so a `json` stream whose schema names the
//! columns reads them; progress and `_offset` are counted in rows.
//!
//! A final line without a newline is a record too. A line over
//! `max_record_bytes` becomes a dead letter (its first 4 KiB). Appends wait
//! while the backlog is over its budget, so a directory of a million files
//! is taken as fast as the micro-batches take it, never all into memory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::watch;

use super::{LogLimit, Receiver, ReceiverError, Result, StreamIngest, now_us, stopped};
use crate::envelope::{Envelope, SourcePosition};

const KIND: &str = "files";
/// Bytes read from a file at a time (lines are appended per chunk).
const CHUNK_BYTES: usize = 1 << 20;
/// The prefix of a file's source name in positions and `_source`.
const SOURCE_PREFIX: &str = "file:";

/// A directory watched for new files; see the module docs.
#[derive(Debug)]
pub struct FilesReceiver {
    dir: PathBuf,
    glob: Option<String>,
    poll: Duration,
}

/// Whether `name` matches `pattern` (`*` any run of characters, `?` one).
fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

impl FilesReceiver {
    /// The files to read now: name → size (rows for Parquet files), in
    /// name order. `rows` caches Parquet row counts by file length, so a
    /// footer is read once, not at every listing.
    async fn list(
        &self,
        rows: &mut std::collections::HashMap<String, (u64, u64)>,
    ) -> std::io::Result<BTreeMap<String, u64>> {
        let mut files = BTreeMap::new();
        let mut entries = tokio::fs::read_dir(&self.dir).await?;
        while let Some(e) = entries.next_entry().await? {
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') || name.starts_with('_') {
                continue;
            }
            if self.glob.as_deref().is_some_and(|g| !glob_match(g, &name)) {
                continue;
            }
            // Regular files only (a symlink is followed: the operator put
            // it there).
            let Ok(meta) = tokio::fs::metadata(e.path()).await else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            if is_parquet(&name) {
                // Progress in a Parquet file is counted in rows.
                if let Some(&(len, n)) = rows.get(&name)
                    && len == meta.len()
                {
                    files.insert(name, n);
                    continue;
                }
                let path = e.path();
                match tokio::task::spawn_blocking(move || parquet_rows(&path)).await {
                    Ok(Ok(n)) => {
                        rows.insert(name.clone(), (meta.len(), n));
                        files.insert(name, n);
                    }
                    Ok(Err(e)) => {
                        tracing::warn!("{name}: not a readable Parquet file: {e}; skipped")
                    }
                    Err(_) => {}
                }
            } else {
                files.insert(name, meta.len());
            }
        }
        Ok(files)
    }

    /// Reads `name` from byte `from` to `size`, appending its lines;
    /// returns the offset reached (`size`, unless shutdown came first).
    async fn read_file(
        &self,
        name: &str,
        from: u64,
        size: u64,
        ingest: &StreamIngest,
        shutdown: &mut watch::Receiver<bool>,
    ) -> std::result::Result<u64, FileEnd> {
        let source = format!("{SOURCE_PREFIX}{name}");
        let mut file = tokio::fs::File::open(self.dir.join(name))
            .await
            .map_err(|e| FileEnd::Io(format!("{name}: {e}")))?;
        file.seek(std::io::SeekFrom::Start(from))
            .await
            .map_err(|e| FileEnd::Io(format!("{name}: {e}")))?;
        let max = ingest.max_record_bytes();
        let mut offset = from;
        // Bytes read but not yet appended (an unfinished line).
        let mut pending: Vec<u8> = Vec::new();
        // A line over the limit being skipped: its first bytes, its length.
        let mut oversized: Option<(Vec<u8>, u64)> = None;
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            if *shutdown.borrow() {
                return Ok(offset);
            }
            let want = (size - offset - pending.len() as u64).min(CHUNK_BYTES as u64) as usize;
            let n = if want == 0 {
                0
            } else {
                file.read(&mut buf[..want])
                    .await
                    .map_err(|e| FileEnd::Io(format!("{name}: {e}")))?
            };
            let at_end = n == 0;
            // (line, offset past it, rejection reason)
            let mut lines: Vec<(Vec<u8>, u64, Option<String>)> = Vec::new();
            let mut pos = offset + pending.len() as u64;
            for &b in &buf[..n] {
                pos += 1;
                if b == b'\n' {
                    let line = std::mem::take(&mut pending);
                    let line = match line.last() {
                        Some(b'\r') => line[..line.len() - 1].to_vec(),
                        _ => line,
                    };
                    match oversized.take() {
                        Some((prefix, len)) => lines.push((
                            prefix,
                            pos,
                            Some(format!(
                                "line of {} bytes exceeds max_record_bytes ({max})",
                                len + line.len() as u64
                            )),
                        )),
                        None => lines.push((line, pos, None)),
                    }
                } else if oversized.is_some() {
                    if let Some((_, len)) = &mut oversized {
                        *len += 1;
                    }
                } else {
                    pending.push(b);
                    if pending.len() > max {
                        let mut prefix = std::mem::take(&mut pending);
                        let len = prefix.len() as u64;
                        prefix.truncate(crate::control::REJECTED_PREFIX_BYTES);
                        oversized = Some((prefix, len));
                    }
                }
            }
            if at_end {
                // The last line has no newline: it is a record too.
                if let Some((prefix, len)) = oversized.take() {
                    lines.push((
                        prefix,
                        size,
                        Some(format!(
                            "line of {len} bytes exceeds max_record_bytes ({max})"
                        )),
                    ));
                } else if !pending.is_empty() {
                    lines.push((std::mem::take(&mut pending), size, None));
                }
            }
            if !lines.is_empty() {
                let envelopes: Vec<Envelope<'_>> = lines
                    .iter()
                    .map(|(line, end, reason)| Envelope {
                        position: Some(SourcePosition {
                            source: &source,
                            partition: 0,
                            // The committed offset is one past the highest:
                            // the byte just past this line.
                            offset: *end as i64 - 1,
                        }),
                        rejected: reason.as_deref(),
                        value: line,
                        ..Envelope::default()
                    })
                    .collect();
                ingest
                    .append_enveloped(&envelopes, now_us())
                    .await
                    .map_err(FileEnd::Wal)?;
                offset = lines.last().map_or(offset, |l| l.1);
            }
            if at_end {
                return Ok(size);
            }
            if *shutdown.borrow() {
                return Ok(offset);
            }
        }
    }

    async fn serve(self, ingest: StreamIngest, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        let name = self.describe();
        let counters = ingest.counters_handle();
        let warnings = LogLimit::new(Duration::from_secs(5));
        // Offsets reached per file, committed ones to start with.
        let mut reached: BTreeMap<String, u64> = ingest
            .committed_sources(SOURCE_PREFIX)
            .map_err(|message| ReceiverError::Positions {
                receiver: name.clone(),
                message,
            })?
            .into_iter()
            .map(|(source, offset)| (source, offset.max(0) as u64))
            .collect();
        let mut parquet_rows = std::collections::HashMap::new();
        loop {
            match self.list(&mut parquet_rows).await {
                Ok(files) => {
                    let todo: Vec<(String, u64, u64)> = files
                        .iter()
                        .filter_map(|(file, &size)| {
                            let done = reached.get(file).copied().unwrap_or(0);
                            (size > done).then(|| (file.clone(), done, size))
                        })
                        .collect();
                    let total: u64 = todo.iter().map(|(_, from, size)| size - from).sum();
                    counters.set_lag(total);
                    counters.set_status(if todo.is_empty() {
                        format!(
                            "watching {} ({} files read)",
                            self.dir.display(),
                            reached.len()
                        )
                    } else {
                        format!(
                            "reading {} new file(s) in {}",
                            todo.len(),
                            self.dir.display()
                        )
                    });
                    for (file, from, size) in todo {
                        let read = if is_parquet(&file) {
                            self.read_parquet(&file, from, &ingest, &mut shutdown).await
                        } else {
                            self.read_file(&file, from, size, &ingest, &mut shutdown)
                                .await
                        };
                        match read {
                            Ok(offset) => {
                                reached.insert(file, offset);
                            }
                            Err(FileEnd::Wal(source)) => {
                                counters.set_status(format!(
                                    "stopped: write-ahead log append failed: {source}"
                                ));
                                return Err(ReceiverError::Wal {
                                    receiver: name,
                                    source,
                                });
                            }
                            Err(FileEnd::Io(e)) => {
                                // Gone or unreadable: tried again at the next
                                // listing (what was appended counts).
                                counters.note_error();
                                if let Some(suppressed) = warnings.check() {
                                    tracing::warn!(receiver = %name, suppressed, "cannot read {e}; retrying at the next listing");
                                }
                            }
                        }
                        if *shutdown.borrow() {
                            break;
                        }
                    }
                    counters.set_lag(0);
                }
                Err(e) => {
                    counters.note_error();
                    counters
                        .set_status(format!("retrying: cannot list {}: {e}", self.dir.display()));
                    if let Some(suppressed) = warnings.check() {
                        tracing::warn!(receiver = %name, suppressed, "cannot list {}: {e}", self.dir.display());
                    }
                }
            }
            tokio::select! {
                biased;
                () = stopped(&mut shutdown) => break,
                () = tokio::time::sleep(self.poll) => {}
            }
        }
        counters.set_status("stopped");
        Ok(())
    }
}

/// Rows of a Parquet file taken per append.
const PARQUET_CHUNK_ROWS: usize = 16_384;

fn is_parquet(name: &str) -> bool {
    name.ends_with(".parquet")
}

/// The number of rows of a Parquet file (from its footer).
fn parquet_rows(path: &Path) -> std::result::Result<u64, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| e.to_string())?;
    Ok(builder.metadata().file_metadata().num_rows().max(0) as u64)
}

/// Rows `from..from + PARQUET_CHUNK_ROWS` of a Parquet file, each as a
/// JSON object (column name → value).
fn parquet_chunk(path: &Path, from: u64) -> std::result::Result<Vec<Vec<u8>>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| e.to_string())?
        .with_offset(from as usize)
        .with_limit(PARQUET_CHUNK_ROWS)
        .with_batch_size(PARQUET_CHUNK_ROWS)
        .build()
        .map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        rows.extend(crate::format::json_rows::to_json_rows(&batch)?);
    }
    Ok(rows)
}

impl FilesReceiver {
    /// Reads a Parquet file from row `from` to its end, each row one JSON
    /// record; returns the rows reached.
    async fn read_parquet(
        &self,
        name: &str,
        from: u64,
        ingest: &StreamIngest,
        shutdown: &mut watch::Receiver<bool>,
    ) -> std::result::Result<u64, FileEnd> {
        let source = format!("{SOURCE_PREFIX}{name}");
        let path = self.dir.join(name);
        let max = ingest.max_record_bytes();
        let mut row = from;
        loop {
            if *shutdown.borrow() {
                return Ok(row);
            }
            let p = path.clone();
            let rows = tokio::task::spawn_blocking(move || parquet_chunk(&p, row))
                .await
                .map_err(|e| FileEnd::Io(format!("{name}: {e}")))?
                .map_err(|e| FileEnd::Io(format!("{name}: {e}")))?;
            if rows.is_empty() {
                return Ok(row);
            }
            let reasons: Vec<Option<String>> = rows
                .iter()
                .map(|r| {
                    (r.len() > max).then(|| {
                        format!(
                            "row of {} bytes as JSON exceeds max_record_bytes ({max})",
                            r.len()
                        )
                    })
                })
                .collect();
            let envelopes: Vec<Envelope<'_>> = rows
                .iter()
                .zip(&reasons)
                .enumerate()
                .map(|(i, (r, reason))| Envelope {
                    position: Some(SourcePosition {
                        source: &source,
                        partition: 0,
                        offset: (row + i as u64) as i64,
                    }),
                    rejected: reason.as_deref(),
                    value: match reason {
                        Some(_) => &r[..crate::control::REJECTED_PREFIX_BYTES.min(r.len())],
                        None => r,
                    },
                    ..Envelope::default()
                })
                .collect();
            ingest
                .append_enveloped(&envelopes, now_us())
                .await
                .map_err(FileEnd::Wal)?;
            row += rows.len() as u64;
        }
    }
}

/// How reading one file ended early.
enum FileEnd {
    Io(String),
    Wal(crate::wal::WalError),
}

impl Receiver for FilesReceiver {
    fn describe(&self) -> String {
        format!("{KIND} {}", self.dir.display())
    }

    fn run(
        self: Box<Self>,
        ingest: StreamIngest,
        shutdown: watch::Receiver<bool>,
    ) -> Pin<Box<dyn Future<Output = Result<(), ReceiverError>> + Send>> {
        Box::pin(self.serve(ingest, shutdown))
    }
}

/// `type = "files"` in `[[stream.receiver]]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FilesConfig {
    /// The directory, `file:///abs/dir/` or a plain path (relative to the
    /// working directory). Required; it must exist.
    pub path: String,
    /// Only files whose name matches (`*` and `?`), e.g. `*.log`. Default:
    /// every file (but names starting with `.` or `_`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub glob: Option<String>,
    /// How often the directory is listed, in milliseconds. Default 1000;
    /// 10..=3600000.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
}

fn default_poll_interval_ms() -> u64 {
    1000
}

impl FilesConfig {
    fn dir(&self) -> std::result::Result<PathBuf, String> {
        if let Some(rest) = self.path.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(format!(
                    "{:?}: a file:// URL needs an absolute path (file:///data/in/)",
                    self.path
                ));
            }
            return Ok(PathBuf::from(rest));
        }
        if let Some((scheme, _)) = self.path.split_once("://") {
            return Err(format!(
                "{:?}: `{scheme}://` is not supported yet (a local directory: file:///dir/ or a path)",
                self.path
            ));
        }
        if self.path.is_empty() {
            return Err("is empty".into());
        }
        Ok(PathBuf::from(&self.path))
    }
}

impl super::config::BuildReceiver for FilesConfig {
    fn validate(&self) -> Vec<super::config::Problem> {
        use super::config::Problem;
        let mut problems = Vec::new();
        if let Err(e) = self.dir() {
            problems.push(Problem::new("path", e));
        }
        if self
            .glob
            .as_deref()
            .is_some_and(|g| g.is_empty() || g.contains('/'))
        {
            problems.push(Problem::new(
                "glob",
                "must be a non-empty file name pattern without `/` (like *.log)",
            ));
        }
        problems.extend(Problem::range(
            "poll_interval_ms",
            self.poll_interval_ms,
            10..=3_600_000,
        ));
        problems
    }

    fn build(&self) -> super::config::Building<'_> {
        Box::pin(async move {
            let dir = self.dir().map_err(|reason| ReceiverError::Config {
                receiver: KIND,
                reason: format!("path {reason}"),
            })?;
            if !Path::new(&dir).is_dir() {
                return Err(ReceiverError::Config {
                    receiver: KIND,
                    reason: format!("path {}: not a directory (create it first)", dir.display()),
                });
            }
            Ok(Box::new(FilesReceiver {
                dir,
                glob: self.glob.clone(),
                poll: Duration::from_millis(self.poll_interval_ms),
            }) as Box<dyn super::Receiver>)
        })
    }

    fn has_source_columns(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_names() {
        assert!(glob_match("*.log", "a.log"));
        assert!(glob_match("*.log", ".log"));
        assert!(!glob_match("*.log", "a.log.1"));
        assert!(glob_match("part-?.csv", "part-7.csv"));
        assert!(!glob_match("part-?.csv", "part-17.csv"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
    }

    #[tokio::test]
    async fn files_are_read_once_from_the_committed_offset_in_lines() {
        let base = std::env::temp_dir().join(format!("lamina-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let dir = base.join("in");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.log"), "one\r\ntwo\nthree").unwrap();
        std::fs::write(dir.join(".b.log"), "hidden\n").unwrap();
        std::fs::write(dir.join("c.txt"), "not matched\n").unwrap();
        std::fs::write(dir.join("d.log"), format!("{}\nok\n", "x".repeat(20))).unwrap();
        let (wal, _) = crate::wal::Wal::open(crate::wal::WalConfig::new(base.join("wal"))).unwrap();
        let ingest = StreamIngest::new(wal.clone(), 2, "s", 10);
        let r = FilesReceiver {
            dir: dir.clone(),
            glob: Some("*.log".into()),
            poll: Duration::from_millis(10),
        };
        let (_tx, mut shutdown) = watch::channel(false);
        // Resume a.log after its first line, as if committed.
        assert_eq!(
            r.read_file("a.log", 5, 14, &ingest, &mut shutdown)
                .await
                .ok(),
            Some(14)
        );
        assert_eq!(
            r.read_file("d.log", 0, 24, &ingest, &mut shutdown)
                .await
                .ok(),
            Some(24)
        );
        let mut got = Vec::new();
        wal.read_range(0..wal.durable_seq(), |_, _, _, p| {
            let e = Envelope::decode(p).unwrap();
            let pos = e.position.unwrap();
            got.push((
                pos.source.to_owned(),
                pos.offset + 1,
                String::from_utf8_lossy(e.value).into_owned(),
                e.rejected.is_some(),
            ));
        })
        .unwrap();
        assert_eq!(
            got,
            [
                ("file:a.log".to_owned(), 9, "two".to_owned(), false),
                ("file:a.log".to_owned(), 14, "three".to_owned(), false),
                ("file:d.log".to_owned(), 21, "x".repeat(11), true),
                ("file:d.log".to_owned(), 24, "ok".to_owned(), false),
            ]
        );
        let listed = r.list(&mut Default::default()).await.unwrap();
        assert_eq!(listed.keys().collect::<Vec<_>>(), ["a.log", "d.log"]);
        let _ = std::fs::remove_dir_all(base);
    }
}
