//! Loading the store at start-up: opening sled, and filling the in-memory
//! tables from the stored generation, compacted epochs and micro-batch
//! rows (see [`super::ViewStore::open`]).

use std::path::Path;
use std::time::Instant;

use lamina::view::AggValue;
use tracing::info;

use super::table::{Table, hash_key, shard_of, with_table};
use super::{Result, SLED_CACHE_BYTES, StoreError, fits, full};

/// Loading: adds a delta of `epoch` (`None`: a batch value) to a key.
pub(super) fn load(
    table: &mut Table,
    view: &str,
    epoch: Option<u64>,
    key: &str,
    value: AggValue,
) -> Result<()> {
    if !fits(table, &value) {
        return Err(StoreError::Mismatch {
            view: view.to_owned(),
            detail: format!(
                "the configuration says {:?} but the state store holds {:?} values: the view's aggregate was changed; give the view a new name, or delete the state directory and run a batch run to rebuild it",
                table.kind(),
                value.kind()
            ),
        });
    }
    let hash = hash_key(key.as_bytes());
    with_table!(table, t => {
        let cell = t.cell(value).expect("checked: fits");
        let shard = t.shard_mut(shard_of(hash));
        match epoch {
            Some(e) => shard.apply(hash, key, e, &cell),
            None => shard.load_batch(hash, key, &cell),
        }
        .map_err(full(view))
    })
}

/// Progress of a long load, logged every few seconds.
pub(super) struct Progress {
    what: &'static str,
    rows: u64,
    values: u64,
    started: Instant,
    last: Instant,
}

impl Progress {
    pub(super) fn new(what: &'static str) -> Self {
        Progress {
            what,
            rows: 0,
            values: 0,
            started: Instant::now(),
            last: Instant::now(),
        }
    }

    pub(super) fn row(&mut self, values: u64) {
        self.rows += 1;
        self.values += values;
        if self.last.elapsed().as_secs() >= 2 {
            self.last = Instant::now();
            info!(
                rows = self.rows,
                values = self.values,
                "state store: loading {} ({:.1} s so far)",
                self.what,
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}

/// Opens sled, waiting a little for its lock: a store dropped in this
/// process releases the lock only when sled's background flusher lets go
/// of it, a moment later.
pub(super) fn open_db(dir: &Path) -> Result<sled::Db> {
    let deadline = Instant::now() + std::time::Duration::from_secs(3);
    loop {
        match sled::Config::new()
            .path(dir)
            .cache_capacity(SLED_CACHE_BYTES)
            .open()
        {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return Ok(other?),
        }
    }
}
