//! Reading a stream's sealed records epoch by epoch, whether each epoch
//! has its own file or compaction merged several into one (then the
//! entry's [`Segment`]s say how many rows of the file each epoch has, in
//! file order). For replays that need the epochs apart (`lamina state
//! rebuild`); batch runs read whole files.

use std::collections::VecDeque;

use super::{EpochFile, FileBatches, Manifest, MasterStore, Segment};
use crate::error::{Error, Result};
use arrow::record_batch::RecordBatch;
use futures::StreamExt;

/// A stream's files, read one epoch at a time in increasing order.
pub struct StreamEpochs {
    master: MasterStore,
    files: VecDeque<EpochFile>,
    open: Option<Open>,
}

/// A compacted file being read.
struct Open {
    label: String,
    segments: VecDeque<Segment>,
    stream: FileBatches,
    carry: Option<RecordBatch>,
}

impl std::fmt::Debug for StreamEpochs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamEpochs")
            .field("files", &self.files.len())
            .finish_non_exhaustive()
    }
}

impl StreamEpochs {
    /// The files of `stream` in `manifest`.
    pub fn new(master: &MasterStore, manifest: &Manifest, stream: &str) -> Self {
        StreamEpochs {
            master: master.clone(),
            files: manifest
                .files
                .iter()
                .filter(|f| f.stream == stream)
                .cloned()
                .collect(),
            open: None,
        }
    }

    /// The records of `epoch` (none when the stream had none). Epochs must
    /// be asked in increasing order; one skipped is never returned.
    ///
    /// # Errors
    ///
    /// [`Error::Execution`] naming the file when it cannot be read or has
    /// fewer or more rows than the manifest says.
    pub async fn take(&mut self, epoch: u64) -> Result<Vec<RecordBatch>> {
        loop {
            if let Some(open) = &mut self.open {
                match open.segments.front().map(|s| s.epoch) {
                    None => {
                        open.end().await?;
                        self.open = None;
                    }
                    // A segment before `epoch`: skipped.
                    Some(e) if e < epoch => {
                        let rows = open.segments.pop_front().map_or(0, |s| s.rows);
                        open.rows(rows).await?;
                    }
                    Some(e) if e == epoch => {
                        let rows = open.segments.pop_front().map_or(0, |s| s.rows);
                        let batches = open.rows(rows).await?;
                        if open.segments.is_empty() {
                            open.end().await?;
                            self.open = None;
                        }
                        return Ok(batches);
                    }
                    Some(_) => return Ok(Vec::new()),
                }
                continue;
            }
            while self.files.front().is_some_and(|f| f.epoch < epoch) {
                self.files.pop_front();
            }
            match self.files.pop_front() {
                Some(f) if f.first_epoch() <= epoch => {
                    let stream = self.master.read_file(&f.path).await?;
                    self.open = Some(Open {
                        label: format!("{}/{}", self.master.url(), f.path),
                        segments: f.epochs().into(),
                        stream,
                        carry: None,
                    });
                }
                Some(f) => {
                    self.files.push_front(f);
                    return Ok(Vec::new());
                }
                None => return Ok(Vec::new()),
            }
        }
    }
}

impl Open {
    /// The next `rows` rows.
    async fn rows(&mut self, mut rows: u64) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        while rows > 0 {
            let batch = match self.carry.take() {
                Some(b) => b,
                None => match self.stream.next().await {
                    Some(b) => b.map_err(|e| Error::execution(format!("{}: {e}", self.label)))?,
                    None => {
                        return Err(Error::execution(format!(
                            "{}: the file ends {rows} rows before its manifest entry says",
                            self.label
                        )));
                    }
                },
            };
            let n = batch.num_rows() as u64;
            if n <= rows {
                rows -= n;
                out.push(batch);
            } else {
                let take = rows as usize;
                out.push(batch.slice(0, take));
                self.carry = Some(batch.slice(take, batch.num_rows() - take));
                rows = 0;
            }
        }
        Ok(out)
    }

    /// Checks that nothing follows the last segment.
    async fn end(&mut self) -> Result<()> {
        let extra = match self.carry.take() {
            Some(b) => Some(b.num_rows()),
            None => match self.stream.next().await {
                Some(Ok(b)) if b.num_rows() > 0 => Some(b.num_rows()),
                Some(Err(e)) => return Err(Error::execution(format!("{}: {e}", self.label))),
                _ => None,
            },
        };
        match extra {
            Some(_) => Err(Error::execution(format!(
                "{}: the file has more rows than its manifest entry says",
                self.label
            ))),
            None => Ok(()),
        }
    }
}
