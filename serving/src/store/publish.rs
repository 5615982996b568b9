//! Publishing a generation: the batch view of every view over the epochs
//! `<= E`, built beside the served one and swapped in shard by shard (see
//! the module docs of [`super`], "The merge" and "Crash safety").

use std::collections::BTreeMap;
use std::sync::MutexGuard;
use std::time::Instant;

use lamina::view::AggValue;
use tracing::info;

use super::codec::PairList;
use super::table::{self, GenBuilder, SHARDS, Table};
use super::{
    CHUNK_BYTES, CHUNK_PAIRS, Result, StoreError, ViewStore, fits, full, keys, lock, mismatch,
};

impl ViewStore {
    /// Starts publishing generation `generation`: the batch view of every
    /// view over all epochs `<= generation`. Add its rows with
    /// [`Publisher::add`]; [`Publisher::finish`] makes it the served one.
    /// Until then, and if it is dropped unfinished, the previous generation
    /// keeps serving.
    ///
    /// # Errors
    ///
    /// [`StoreError::Mismatch`] when `generation` is older than the one
    /// served.
    pub fn begin_publish(&self, generation: u64) -> Result<Publisher<'_>> {
        let guard = lock(&self.publishing);
        if self.watermark().is_some_and(|w| generation < w) {
            return Err(StoreError::Mismatch {
                view: "*".into(),
                detail: format!("generation {generation} is older than the one served"),
            });
        }
        let views = self
            .tables
            .iter()
            .map(|(name, table)| {
                let builder = match table {
                    Table::Count(_) => Builder::Count(GenBuilder::new()),
                    Table::Any(_) => Builder::Any(GenBuilder::new()),
                };
                (name.clone(), PendingView { builder, rows: 0 })
            })
            .collect();
        // Leftovers of an earlier attempt at the same generation.
        for row in self.gens.scan_prefix(generation.to_be_bytes()).keys() {
            self.gens.remove(row?)?;
        }
        Ok(Publisher {
            store: self,
            generation,
            views,
            _guard: guard,
        })
    }

    /// Publishes generation `generation` from `rows` (`(view, key, value)`);
    /// views absent from `rows` get an empty batch view. See
    /// [`begin_publish`](Self::begin_publish).
    ///
    /// # Errors
    ///
    /// sled errors, [`StoreError::UnknownView`], [`StoreError::Mismatch`].
    /// On error the previous generation keeps serving.
    pub fn publish(
        &self,
        generation: u64,
        rows: impl IntoIterator<Item = (String, String, AggValue)>,
    ) -> Result<()> {
        let mut p = self.begin_publish(generation)?;
        for (view, key, value) in rows {
            p.add(&view, &key, value)?;
        }
        p.finish().map(|_| ())
    }
}

enum Builder {
    Count(GenBuilder<i64>),
    Any(GenBuilder<AggValue>),
}

struct PendingView {
    builder: Builder,
    rows: u64,
}

impl Builder {
    /// Interns every pending row (see [`GenBuilder::settle`]).
    fn settle(&mut self, table: &Table) -> Result<(), table::ShardFull> {
        match (self, table) {
            (Builder::Count(b), Table::Count(t)) => b.settle(t),
            (Builder::Any(b), Table::Any(t)) => b.settle(t),
            _ => unreachable!("builders are made from the tables"),
        }
    }

    /// Calls `f(key, value)` for every value built for shard `s`.
    fn each(&self, table: &Table, s: usize, f: &mut dyn FnMut(&str, AggValue)) {
        match (self, table) {
            (Builder::Count(b), Table::Count(t)) => {
                b.each(t, s, &mut |k, v| f(k, AggValue::Count(*v)))
            }
            (Builder::Any(b), Table::Any(t)) => b.each(t, s, &mut |k, v| f(k, v.clone())),
            _ => unreachable!("builders are made from the tables"),
        }
    }
}

/// A generation being published; see [`ViewStore::begin_publish`].
pub struct Publisher<'a> {
    store: &'a ViewStore,
    generation: u64,
    views: BTreeMap<String, PendingView>,
    _guard: MutexGuard<'a, ()>,
}

impl std::fmt::Debug for Publisher<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Publisher<'_> {
    /// Adds a key's batch value to the new generation, combined with what
    /// was added for the key before (partials of one key may come in
    /// several parts). Nothing is visible until [`finish`](Self::finish).
    ///
    /// # Errors
    ///
    /// [`StoreError::UnknownView`], [`StoreError::Mismatch`].
    pub fn add(&mut self, view: &str, key: &str, value: AggValue) -> Result<()> {
        self.add_rows(view, vec![(key.to_owned(), value)])
    }

    /// [`add`](Self::add) for many rows of one view, taking their keys
    /// over (the hot path of a batch run: no copy of a key, one lookup of
    /// the view per call).
    ///
    /// # Errors
    ///
    /// As [`add`](Self::add).
    pub fn add_rows(&mut self, view: &str, rows: Vec<(String, AggValue)>) -> Result<()> {
        let table = self.store.table(view)?;
        let pending = self
            .views
            .get_mut(view)
            .ok_or_else(|| StoreError::UnknownView(view.to_owned()))?;
        for (key, value) in rows {
            if !fits(table, &value) {
                return Err(mismatch(view, table, &value));
            }
            pending.rows += 1;
            match (&mut pending.builder, table) {
                (Builder::Count(b), Table::Count(t)) => {
                    let cell = t.cell(value).expect("checked: fits");
                    b.add(t, key, cell).map_err(full(view))?;
                }
                (Builder::Any(b), Table::Any(t)) => {
                    let cell = t.cell(value).expect("checked: fits");
                    b.add(t, key, cell).map_err(full(view))?;
                }
                _ => unreachable!("builders are made from the tables"),
            }
        }
        Ok(())
    }

    /// Makes the generation the served one and returns its number of keys:
    /// its chunks written (each key
    /// once, from the built columns) and made durable, then the watermark
    /// moved in sled, then every shard swapped in memory, then what it made
    /// obsolete deleted.
    ///
    /// # Errors
    ///
    /// sled errors. Before the watermark moved, the previous generation
    /// keeps serving; after, the new one serves (in memory and after a
    /// restart) and an error is only about the clean-up, which the next
    /// open or publish finishes.
    pub fn finish(self) -> Result<u64> {
        self.finish_unless(&|| false)
            .map(|keys| keys.expect("never stopped"))
    }

    /// Like [`finish`](Self::finish), but gives up (`Ok(None)`, nothing
    /// published) when `stop()` turns true before the watermark moves: a
    /// cancelled batch run must not publish.
    ///
    /// # Errors
    ///
    /// As [`finish`](Self::finish).
    pub fn finish_unless(mut self, stop: &dyn Fn() -> bool) -> Result<Option<u64>> {
        let store = self.store;
        let generation = self.generation;
        let mut keys = 0u64;
        for (view, pending) in &mut self.views {
            let table = store.table(view)?;
            pending.builder.settle(table).map_err(full(view))?;
            let mut chunk = PairList::default();
            let mut chunks = 0u32;
            for s in 0..SHARDS {
                if stop() {
                    return Ok(None);
                }
                let mut failed = None;
                pending.builder.each(table, s, &mut |key, value| {
                    if failed.is_none()
                        && let Err(e) = chunk.push(key, &value)
                    {
                        failed = Some(e);
                    }
                });
                if let Some(e) = failed {
                    return Err(e);
                }
                let last = s == SHARDS - 1;
                if chunk.len() > 0
                    && (last || chunk.len() >= CHUNK_PAIRS || chunk.bytes() >= CHUNK_BYTES)
                {
                    keys += chunk.len();
                    store
                        .gens
                        .insert(keys::chunk(generation, view, chunks), chunk.take())?;
                    chunks += 1;
                }
            }
        }
        // Make the chunks durable before the watermark can point at them.
        store.db.flush()?;
        if stop() {
            return Ok(None);
        }
        store
            .meta
            .insert(keys::WATERMARK, &generation.to_be_bytes())?;
        store.db.flush()?;
        // Swap in memory. Commits may go on meanwhile: they are in epochs
        // after `generation`, which every shard keeps.
        let started = Instant::now();
        let mut rows = 0;
        for (view, pending) in std::mem::take(&mut self.views) {
            rows += pending.rows;
            let table = store.table(&view)?;
            match (pending.builder, table) {
                (Builder::Count(b), Table::Count(t)) => b.publish(t, generation),
                (Builder::Any(b), Table::Any(t)) => b.publish(t, generation),
                _ => unreachable!("builders are made from the tables"),
            }
            .map_err(full(&view))?;
        }
        *store.watermark.write().unwrap_or_else(|p| p.into_inner()) = Some(generation);
        {
            let mut e = lock(&store.epochs);
            e.open.retain(|&ep| ep > generation);
            e.compacted.retain(|&ep| ep > generation);
        }
        info!(
            generation,
            rows,
            keys,
            "state store: generation swapped in in {:.0} ms",
            started.elapsed().as_secs_f64() * 1e3
        );
        store.retire(generation)?;
        Ok(Some(keys))
    }
}
