//! `lamina state rebuild OPERATOR`: recomputes one stateful operator's
//! state from the records themselves — every sealed epoch of the master
//! dataset, in order, then the write-ahead log up to the committed position
//! — and replaces the stored state with it. For a state that was dropped
//! (its type changed, see `lamina state drop`) or is suspect. The server
//! must be stopped.
//!
//! Each sealed epoch runs as one batch of the program, at the epoch's start
//! time; the log's records after the sealed epochs run as the server's
//! micro-batches would (same parsing, dead letters, late records). Only the
//! named operator's state is kept: served views, other operators and
//! positions are left as they are. A stateful function that depends on the
//! batch time (timeouts, `update_state_by_key_with_time`) sees the epochs'
//! times, not the original batches'.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use lamina::Context;
use lamina::master::MasterStore;
use lamina::master::epochs::StreamEpochs;
use lamina::streaming::Time;
use lamina_speed::commit::{CommitSink, MicroBatchCommit, Position, PositionKind, RecordLog};
use lamina_speed::microbatch::{Clock, MicroBatcher, StatsLog};
use lamina_speed::wal::{Wal, WalConfig};

use crate::config::Config;
use crate::server::ProgramFn;
use crate::store::ViewStore;
use crate::views::build_program;

/// What a rebuild did.
#[derive(Debug)]
pub struct Rebuilt {
    /// Sealed epochs replayed.
    pub epochs: usize,
    /// Records of those epochs.
    pub epoch_records: u64,
    /// Log records replayed after them.
    pub log_records: u64,
    /// Keys in the rebuilt state.
    pub keys: usize,
}

/// The operator's changes, in order: the last one per key wins.
type Changes = Arc<Mutex<HashMap<Vec<u8>, Option<Vec<u8>>>>>;

fn take(changes: &Changes, operator: &str, deltas: &[lamina::streaming::StateDelta]) {
    let mut c = changes.lock().unwrap_or_else(|p| p.into_inner());
    for d in deltas.iter().filter(|d| d.operator == operator) {
        for ch in &d.changes {
            c.insert(ch.key.clone(), ch.state.clone());
        }
    }
}

/// Rebuilds `operator`'s state (see the module docs).
///
/// # Errors
///
/// A message naming what failed: no such operator, the server running,
/// the master dataset or the log unreadable, a batch of the program.
pub fn rebuild(
    config: &Config,
    define: Option<&ProgramFn>,
    operator: &str,
) -> Result<Rebuilt, String> {
    let ctx = Context::new();
    let (program, _, _) = build_program(&ctx, config, define).map_err(|e| e.to_string())?;
    let names: Vec<String> = program
        .streaming_context()
        .stateful_operators()
        .into_iter()
        .map(|o| o.name)
        .collect();
    if !names.iter().any(|n| n == operator) {
        return Err(format!(
            "the program has no stateful operator `{operator}` (it has: {})",
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        ));
    }
    let state_dir = PathBuf::from(&config.storage.state_dir);
    let store = ViewStore::open(&state_dir.join("views"), &[]).map_err(|e| {
        format!("cannot open the state store ({e}); is the server running? stop it first")
    })?;
    let mut wal_config = WalConfig::new(state_dir.join("wal"));
    wal_config.segment_bytes = config.speed.wal_segment_bytes;
    let (wal, _) = Wal::open(wal_config).map_err(|e| format!("write-ahead log: {e}"))?;
    let committed = store
        .position(&Position::Wal)
        .map_err(|e| e.to_string())?
        .unwrap_or(0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let master =
        MasterStore::open_with(&config.storage.master_url, &config.storage.store_options())
            .map_err(|e| e.to_string())?;
    let manifest = runtime
        .block_on(master.manifest())
        .map_err(|e| format!("master dataset manifest: {e}"))?;
    let changes: Changes = Arc::default();
    let formats = program.formats();
    let epoch_ms = config.speed.epoch().as_millis() as i64;
    let interval_ms = config.speed.batch_interval().as_millis().max(1) as i64;
    // Every epoch of every file, compacted ones included.
    let mut epochs: Vec<u64> = manifest
        .files
        .iter()
        .flat_map(|f| f.epochs())
        .map(|s| s.epoch)
        .collect();
    epochs.sort_unstable();
    epochs.dedup();
    let mut readers: Vec<StreamEpochs> = formats
        .iter()
        .map(|(stream, _)| StreamEpochs::new(&master, &manifest, stream))
        .collect();
    let mut epoch_records = 0u64;
    let mut last_time = 0i64;
    for &epoch in &epochs {
        let start_ms = epoch as i64 * epoch_ms;
        for (i, (stream, _)) in formats.iter().enumerate() {
            let batches = runtime
                .block_on(readers[i].take(epoch))
                .map_err(|e| format!("epoch {epoch} of `{stream}`: {e}"))?;
            if batches.is_empty() {
                continue;
            }
            let mut blocks = Vec::with_capacity(batches.len());
            for b in batches {
                epoch_records += b.num_rows() as u64;
                blocks.push(
                    lamina_speed::microbatch::with_received_at_constant(&b, start_ms)
                        .map_err(|e| e.to_string())?,
                );
            }
            program.feed(i, blocks);
        }
        let time = (start_ms.div_euclid(interval_ms) * interval_ms).max(last_time + interval_ms);
        last_time = time;
        let (outcome, pending) = program
            .run_batch_pending(Time::from_millis(time))
            .map_err(|e| format!("epoch {epoch}: {e}"))?;
        take(&changes, operator, &outcome.state);
        pending.commit();
    }
    // The log after the sealed epochs, up to what was committed.
    let sealed_end = store
        .positions_of(&PositionKind::EpochStart)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter_map(|(p, seq)| match p {
            Position::EpochStart(e) if manifest.sealed_through.is_none_or(|s| e > s) => Some(seq),
            _ => None,
        })
        .min()
        .unwrap_or(if epochs.is_empty() { 0 } else { committed })
        .min(committed);
    let log: Arc<dyn RecordLog> = Arc::new(UpTo {
        inner: Arc::new(wal),
        end: committed,
    });
    let sink = Arc::new(Collect {
        operator: operator.to_owned(),
        changes: Arc::clone(&changes),
        from: sealed_end,
    });
    let names: Vec<String> = formats.iter().map(|(n, _)| n.clone()).collect();
    let clock = Clock {
        interval: config.speed.batch_interval(),
        epoch: config.speed.epoch(),
        max_records: config.speed.max_batch_records,
        max_bytes: config.speed.max_batch_bytes,
    };
    let mut batcher = MicroBatcher::resume(
        Arc::new(program),
        log,
        sink as Arc<dyn CommitSink>,
        Arc::new(StatsLog::new(16, &names)),
        clock,
    )
    .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let now_us = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64)
    };
    while !batcher.caught_up() {
        batcher.run_once(now_us()).map_err(|e| e.to_string())?;
        if started.elapsed().as_secs() > 24 * 3600 {
            return Err("the log replay did not finish within a day".into());
        }
    }
    let entries: Vec<(Vec<u8>, Vec<u8>)> = changes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    let keys = entries.len();
    store
        .replace_state(operator, entries)
        .map_err(|e| e.to_string())?;
    Ok(Rebuilt {
        epochs: epochs.len(),
        epoch_records,
        log_records: committed - sealed_end,
        keys,
    })
}

/// The log, ending at the committed position (records after it are
/// replayed by the server's next start, not by the rebuild), never
/// truncated.
struct UpTo {
    inner: Arc<dyn RecordLog>,
    end: u64,
}

impl RecordLog for UpTo {
    fn durable_end(&self) -> u64 {
        self.inner.durable_end().min(self.end)
    }

    fn read(
        &self,
        range: Range<u64>,
        f: &mut lamina_speed::commit::RecordVisitor<'_>,
    ) -> Result<(), String> {
        self.inner.read(range.start..range.end.min(self.end), f)
    }

    fn truncate_before(&self, _: u64) -> Result<(), String> {
        Ok(())
    }
}

/// A commit sink that keeps one operator's state changes and nothing else.
struct Collect {
    operator: String,
    changes: Changes,
    from: u64,
}

impl CommitSink for Collect {
    fn commit(&self, commit: MicroBatchCommit) -> Result<(), String> {
        take(&self.changes, &self.operator, &commit.state);
        Ok(())
    }

    fn position(&self, position: &Position) -> Result<Option<u64>, String> {
        Ok(match position {
            Position::Wal => Some(self.from),
            _ => None,
        })
    }

    fn last_batch_id(&self) -> Result<Option<u64>, String> {
        Ok(None)
    }

    fn positions_of(&self, _: &PositionKind) -> Result<Vec<(Position, u64)>, String> {
        Ok(Vec::new())
    }

    fn flush(&self) -> Result<(), String> {
        Ok(())
    }
}
