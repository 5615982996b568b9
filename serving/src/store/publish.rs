//! Publishing a generation: the batch view of every view over the epochs
//! `<= E`, built beside the served one and swapped in shard by shard (see
//! the module docs of [`super`], "The merge" and "Crash safety").

use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use lamina::view::AggValue;
use lamina::view::partials::{Part, PartValues, Partials};
use tracing::info;

use super::codec::PairList;
use super::table::{Cell, GenBuilder, SHARDS, ShardFull, Table, ViewTable};
use super::{CHUNK_BYTES, CHUNK_PAIRS, Result, StoreError, ViewStore, fits, keys, lock, mismatch};

impl ViewStore {
    /// Starts publishing generation `generation`: the batch view of every
    /// view over all epochs `<= generation`. Add its rows with
    /// [`Publisher::add`] or, from several threads at once, through
    /// [`Publisher::sink`]; [`Publisher::finish`] makes it the served one.
    /// Until then, and if it is dropped unfinished, the previous generation
    /// keeps serving. One publish at a time: this waits while another
    /// publisher lives.
    ///
    /// # Errors
    ///
    /// [`StoreError::Mismatch`] when `generation` is older than the one
    /// served.
    pub fn begin_publish(&self, generation: u64) -> Result<Publisher<&ViewStore>> {
        Publisher::begin(self, generation)
    }

    /// [`begin_publish`](Self::begin_publish) for a shared store: the
    /// publisher owns a handle, so it can move to another thread.
    ///
    /// # Errors
    ///
    /// As [`begin_publish`](Self::begin_publish).
    pub fn begin_publish_shared(
        self: &Arc<Self>,
        generation: u64,
    ) -> Result<Publisher<Arc<ViewStore>>> {
        Publisher::begin(Arc::clone(self), generation)
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
    /// Partial rows added (a key counts once per partial).
    rows: AtomicU64,
}

impl Builder {
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

/// The generation being built: every view's new batch columns. Shared by
/// the [`Publisher`] and its [`PublishSink`]s.
struct Build {
    views: BTreeMap<String, PendingView>,
    /// Set when the publisher finished or was dropped: later adds fail.
    closed: std::sync::atomic::AtomicBool,
}

impl Build {
    /// Adds a task's partials of `view` (see [`Partials`]): each part into
    /// its shard, a shard busy with another worker's part after the
    /// others. Checked whole against the view's kind first, so a mismatch
    /// adds nothing.
    fn add(&self, store: &ViewStore, view: &str, partials: Partials) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Mismatch {
                view: view.to_owned(),
                detail: "rows added after the generation was finished or abandoned".into(),
            });
        }
        let table = store.table(view)?;
        let pending = self
            .views
            .get(view)
            .ok_or_else(|| StoreError::UnknownView(view.to_owned()))?;
        let rows = partials.len() as u64;
        match (&pending.builder, table) {
            (Builder::Count(b), Table::Count(t)) => add_parts(b, t, partials, |values| {
                Ok(match values {
                    PartValues::Count(v) => v,
                    PartValues::Any(v) => v
                        .into_iter()
                        .map(|value| match value {
                            AggValue::Count(n) => Ok(n),
                            other => Err(mismatch(view, table, &other)),
                        })
                        .collect::<Result<_>>()?,
                })
            }),
            (Builder::Any(b), Table::Any(t)) => add_parts(b, t, partials, |values| {
                let values = match values {
                    PartValues::Count(v) => v.into_iter().map(AggValue::Count).collect(),
                    PartValues::Any(v) => v,
                };
                match values.iter().find(|v| !fits(table, v)) {
                    Some(bad) => Err(mismatch(view, table, bad)),
                    None => Ok(values),
                }
            }),
            _ => unreachable!("builders are made from the tables"),
        }
        .map_err(|e| match e {
            AddError::Value(e) => e,
            AddError::Full => StoreError::Full(view.to_owned()),
        })?;
        pending.rows.fetch_add(rows, Ordering::Relaxed);
        Ok(())
    }
}

enum AddError {
    Value(StoreError),
    Full,
}

/// Converts every part's values to the table's cells with `cells` (all
/// parts first, so a value of the wrong kind adds nothing), then adds the
/// parts to the builder.
fn add_parts<V: Cell>(
    builder: &GenBuilder<V>,
    table: &ViewTable<V>,
    partials: Partials,
    cells: impl Fn(PartValues) -> Result<Vec<V>>,
) -> std::result::Result<(), AddError> {
    let mut parts: Vec<(usize, Part)> = partials.into_parts().collect();
    let columns = parts
        .iter_mut()
        .map(|(_, part)| cells(part.take_values()))
        .collect::<Result<Vec<_>>>()
        .map_err(AddError::Value)?;
    let entries = parts
        .iter()
        .zip(columns)
        .map(|((s, part), cells)| (*s, part.keys().zip(cells)))
        .collect();
    builder
        .add_parts(table, entries)
        .map_err(|ShardFull| AddError::Full)
}

/// A generation being published; see [`ViewStore::begin_publish`]. `S` is
/// how it holds the store (a reference, or an `Arc` to move it between
/// threads).
pub struct Publisher<S: Deref<Target = ViewStore>> {
    store: S,
    generation: u64,
    build: Arc<Build>,
}

impl<S: Deref<Target = ViewStore>> std::fmt::Debug for Publisher<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl<S: Deref<Target = ViewStore>> Drop for Publisher<S> {
    fn drop(&mut self) {
        self.build.closed.store(true, Ordering::Release);
        *lock(&self.store.publishing) = false;
        self.store.published.notify_one();
    }
}

/// Adds partials to a [`Publisher`]'s generation from any thread; see
/// [`Publisher::sink`].
#[derive(Clone)]
pub struct PublishSink {
    store: Arc<ViewStore>,
    build: Arc<Build>,
}

impl std::fmt::Debug for PublishSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishSink").finish_non_exhaustive()
    }
}

impl PublishSink {
    /// Adds a task's partials of `view` to the generation, combined per
    /// key with what was added before; several threads may add at once.
    ///
    /// # Errors
    ///
    /// [`StoreError::UnknownView`], [`StoreError::Mismatch`] (nothing of
    /// `partials` is added then), [`StoreError::Full`].
    pub fn add(&self, view: &str, partials: Partials) -> Result<()> {
        self.build.add(&self.store, view, partials)
    }
}

impl Publisher<Arc<ViewStore>> {
    /// A handle that adds partials to this generation from any thread
    /// (the engine's workers, as each task completes). Adds after the
    /// publisher finished or was dropped fail.
    pub fn sink(&self) -> PublishSink {
        PublishSink {
            store: Arc::clone(&self.store),
            build: Arc::clone(&self.build),
        }
    }
}

impl<S: Deref<Target = ViewStore>> Publisher<S> {
    fn begin(store: S, generation: u64) -> Result<Self> {
        {
            let mut busy = lock(&store.publishing);
            while *busy {
                busy = store
                    .published
                    .wait(busy)
                    .unwrap_or_else(|p| p.into_inner());
            }
            *busy = true;
        }
        // From here on, dropping the publisher ends the publish.
        let views = store
            .tables
            .iter()
            .map(|(name, table)| {
                let builder = match table {
                    Table::Count(_) => Builder::Count(GenBuilder::new()),
                    Table::Any(_) => Builder::Any(GenBuilder::new()),
                };
                let rows = AtomicU64::new(0);
                (name.clone(), PendingView { builder, rows })
            })
            .collect();
        let publisher = Publisher {
            store,
            generation,
            build: Arc::new(Build {
                views,
                closed: Default::default(),
            }),
        };
        if publisher.store.watermark().is_some_and(|w| generation < w) {
            return Err(StoreError::Mismatch {
                view: "*".into(),
                detail: format!("generation {generation} is older than the one served"),
            });
        }
        Ok(publisher)
    }

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

    /// [`add`](Self::add) for many rows of one view.
    ///
    /// # Errors
    ///
    /// As [`add`](Self::add).
    pub fn add_rows(&mut self, view: &str, rows: Vec<(String, AggValue)>) -> Result<()> {
        self.add_partials(view, Partials::from_rows(rows))
    }

    /// [`add`](Self::add) for a task's partials (the hot path of a batch
    /// run: keys come hashed and split by shard).
    ///
    /// # Errors
    ///
    /// As [`PublishSink::add`].
    pub fn add_partials(&mut self, view: &str, partials: Partials) -> Result<()> {
        self.build.add(&self.store, view, partials)
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
    pub fn finish_unless(self, stop: &dyn Fn() -> bool) -> Result<Option<u64>> {
        // Whatever a sink still tries to add from here on fails.
        self.build.closed.store(true, Ordering::Release);
        let store = &*self.store;
        let generation = self.generation;
        // Leftovers of an earlier attempt at the same generation (a crash
        // or a failed run), before this one's chunks are written. Here, not
        // when the publish begins: that runs on the async side.
        for row in store.gens.scan_prefix(generation.to_be_bytes()).keys() {
            store.gens.remove(row?)?;
        }
        let mut keys = 0u64;
        for (view, pending) in &self.build.views {
            let table = store.table(view)?;
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
        for (view, pending) in &self.build.views {
            rows += pending.rows.load(Ordering::Relaxed);
            let table = store.table(view)?;
            match (&pending.builder, table) {
                (Builder::Count(b), Table::Count(t)) => b.publish(t, generation),
                (Builder::Any(b), Table::Any(t)) => b.publish(t, generation),
                _ => unreachable!("builders are made from the tables"),
            }
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
