//! An in-process receiver: records handed in by the program that embeds
//! the server, through a channel — the analogue of Spark's actor and queue
//! receivers, with Spark's *reliable* `store` contract: [`ChannelSender::store`]
//! returns only once the records are durable in the write-ahead log, so a
//! caller that got `Ok` may acknowledge its own source (delete a message
//! from a queue, advance a cursor); after `kill -9` every stored record is
//! counted exactly once.
//!
//! With the server embedded (`lamina_serving::app::App`):
//!
//! ```rust,ignore
//! use lamina_serving::app::App;
//! use lamina_speed::receivers::channel;
//!
//! let (sender, receiver) = channel("sensors", 64);
//! std::thread::spawn(move || {
//!     let readings = vec![b"{\"id\":\"t1\",\"c\":21.5}".to_vec()];
//!     // Durable when it returns Ok.
//!     sender.store_blocking(readings).unwrap();
//! });
//! App::new("my_server").receiver("readings", receiver).main();
//! ```
//!
//! Backpressure: `store` waits while the backlog is over its budget (as a
//! TCP producer does); the channel holds at most `capacity` requests, so a
//! caller faster than the server waits instead of filling memory.

use std::ops::Range;
use std::pin::Pin;

use tokio::sync::{mpsc, oneshot, watch};

use super::{Receiver, ReceiverError, Result, StreamIngest, now_us, stopped};

/// Why [`ChannelSender::store`] did not store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The server is not running (not started yet, or stopped): nothing was
    /// stored.
    #[error("the server is not taking records (not started, or stopped)")]
    Closed,
    /// A record is longer than the stream's `max_record_bytes`: nothing of
    /// the call was stored.
    #[error(
        "record {index} has {len} bytes; the stream accepts at most {max} (nothing was stored)"
    )]
    TooLarge {
        /// Its index in the call.
        index: usize,
        /// Its length.
        len: usize,
        /// The stream's `max_record_bytes`.
        max: usize,
    },
    /// The write-ahead log refused the append: nothing was acknowledged
    /// (the records may still be in the log; the server stops ingesting).
    #[error("write-ahead log append failed: {0}")]
    Wal(String),
}

struct Request {
    records: Vec<Vec<u8>>,
    done: oneshot::Sender<std::result::Result<Range<u64>, StoreError>>,
}

/// The program's end of the channel. Cheap to clone; every clone feeds the
/// same stream.
#[derive(Debug, Clone)]
pub struct ChannelSender {
    tx: mpsc::Sender<Request>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("records", &self.records.len())
            .finish_non_exhaustive()
    }
}

impl ChannelSender {
    /// Stores `records` (each one record of the stream, in its format) as
    /// one write-ahead-log append; returns their sequence numbers once they
    /// are durable.
    ///
    /// # Errors
    ///
    /// [`StoreError`]: nothing was stored (or, for `Wal`, acknowledged).
    pub async fn store(
        &self,
        records: Vec<Vec<u8>>,
    ) -> std::result::Result<Range<u64>, StoreError> {
        let (done, answer) = oneshot::channel();
        self.tx
            .send(Request { records, done })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// [`store`](Self::store) from a thread that is not on a tokio runtime.
    ///
    /// # Errors
    ///
    /// As [`store`](Self::store).
    ///
    /// # Panics
    ///
    /// When called on a tokio runtime's thread (use `store` there).
    pub fn store_blocking(
        &self,
        records: Vec<Vec<u8>>,
    ) -> std::result::Result<Range<u64>, StoreError> {
        let (done, answer) = oneshot::channel();
        self.tx
            .blocking_send(Request { records, done })
            .map_err(|_| StoreError::Closed)?;
        answer.blocking_recv().map_err(|_| StoreError::Closed)?
    }
}

/// The server's end: register it for a stream (`App::receiver`).
#[derive(Debug)]
pub struct ChannelReceiver {
    name: String,
    rx: mpsc::Receiver<Request>,
}

/// A channel for records of one stream, holding at most `capacity`
/// requests in flight; `name` describes it (`channel NAME` in logs and
/// `/metrics`).
///
/// # Panics
///
/// When `capacity` is 0.
pub fn channel(name: impl Into<String>, capacity: usize) -> (ChannelSender, ChannelReceiver) {
    let (tx, rx) = mpsc::channel(capacity);
    (
        ChannelSender { tx },
        ChannelReceiver {
            name: name.into(),
            rx,
        },
    )
}

impl ChannelReceiver {
    async fn serve(
        mut self,
        ingest: StreamIngest,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<()> {
        let max = ingest.max_record_bytes();
        loop {
            let request = tokio::select! {
                biased;
                () = stopped(&mut shutdown) => break,
                r = self.rx.recv() => match r {
                    Some(r) => r,
                    // Every sender is gone: nothing more can come.
                    None => break,
                },
            };
            if let Some((index, r)) = request
                .records
                .iter()
                .enumerate()
                .find(|(_, r)| r.len() > max)
            {
                let _ = request.done.send(Err(StoreError::TooLarge {
                    index,
                    len: r.len(),
                    max,
                }));
                continue;
            }
            let lines: Vec<&[u8]> = request.records.iter().map(Vec::as_slice).collect();
            match ingest.append_lines(&lines, now_us()).await {
                Ok(seqs) => {
                    let _ = request.done.send(Ok(seqs));
                }
                Err(source) => {
                    let _ = request.done.send(Err(StoreError::Wal(source.to_string())));
                    return Err(ReceiverError::Wal {
                        receiver: self.describe(),
                        source,
                    });
                }
            }
        }
        // Requests still queued are answered `Closed` when the channel is
        // dropped with the receiver: their callers know nothing was stored.
        Ok(())
    }
}

impl Receiver for ChannelReceiver {
    fn describe(&self) -> String {
        format!("channel {}", self.name)
    }

    fn run(
        self: Box<Self>,
        ingest: StreamIngest,
        shutdown: watch::Receiver<bool>,
    ) -> Pin<Box<dyn Future<Output = Result<(), ReceiverError>> + Send>> {
        Box::pin(self.serve(ingest, shutdown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn store_returns_once_durable_and_refuses_what_it_cannot_store() {
        let dir = std::env::temp_dir().join(format!("lamina-channel-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (wal, _) = crate::wal::Wal::open(crate::wal::WalConfig::new(dir.join("wal"))).unwrap();
        let ingest = StreamIngest::new(wal.clone(), 1, "s", 8);
        let (sender, receiver) = channel("test", 4);
        let (stop, shutdown) = watch::channel(false);
        let run = tokio::spawn(Box::new(receiver).run(ingest, shutdown));
        let seqs = sender
            .store(vec![b"a".to_vec(), b"bb".to_vec()])
            .await
            .unwrap();
        assert_eq!(seqs, 0..2);
        assert!(wal.durable_seq() >= 2, "durable before store returned");
        assert_eq!(
            sender.store(vec![b"ok".to_vec(), vec![b'x'; 9]]).await,
            Err(StoreError::TooLarge {
                index: 1,
                len: 9,
                max: 8
            })
        );
        // From a plain thread.
        let s = sender.clone();
        let seqs = tokio::task::spawn_blocking(move || s.store_blocking(vec![b"c".to_vec()]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seqs, 2..3);
        stop.send(true).unwrap();
        run.await.unwrap().unwrap();
        assert_eq!(
            sender.store(vec![b"late".to_vec()]).await,
            Err(StoreError::Closed)
        );
        let mut got = Vec::new();
        wal.read_range(0..wal.durable_seq(), |_, stream, _, p| {
            got.push((stream, p.to_vec()))
        })
        .unwrap();
        assert_eq!(
            got,
            [(1, b"a".to_vec()), (1, b"bb".to_vec()), (1, b"c".to_vec())]
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
