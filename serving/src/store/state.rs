//! The state of the program's stateful operators (`update_state_by_key`,
//! `map_with_state`, windowed views), kept as data.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `state_log` | micro-batch id (BE `u64`) | the batch's state changes, one blob ([`encode_log`]) |
//! | `state` | operator, `0x00`, bucket (BE `u32`) | the keys of one hash bucket and their `[state, batch time ms]` ([`encode_bucket`]) |
//!
//! A micro-batch's commit writes its changes as **one row** of `state_log`,
//! in its transaction: the cost of a commit is the bytes of its changes,
//! not a sled write per key (a sled transaction costs ~10 µs per key
//! written; one row of 50,000 changes costs one write). The changes also go
//! into an in-memory map of pending changes, which reads consult before the
//! `state` tree. [`flush`](super::ViewStore::flush) folds the pending
//! changes into the `state` tree — each key once, however often it changed —
//! and then deletes the log rows it folded. A crash in between replays those
//! rows on open: they hold absolute states, so applying them again changes
//! nothing.
//!
//! Operator names never contain `0x00` (see
//! [`lamina::streaming::durable::valid_name`]), so an operator's keys are
//! one prefix.

use std::collections::{BTreeMap, HashMap};

use lamina::streaming::StateDelta;
use lamina::streaming::durable::StateChange;

use super::{Result, StoreError, ViewStore};

/// Pending changes past which a commit folds them into the `state` tree at
/// once (they are folded at every flush anyway): bounds their memory.
const MAX_PENDING: usize = 4_000_000;

/// One pending change: a key and its new state (`None`: removed).
type Change<'a> = (&'a Vec<u8>, &'a Option<Vec<u8>>);

/// Hash buckets per operator in the `state` tree.
pub const BUCKETS: u32 = 16_384;

/// `operator 0x00`: what the operator's rows start with.
pub(super) fn prefix(operator: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(operator.len() + 5);
    k.extend_from_slice(operator.as_bytes());
    k.push(0);
    k
}

/// The bucket of a key: FNV-1a, fixed forever (it is the on-disk layout).
pub(super) fn bucket_of(key: &[u8]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(BUCKETS)) as u32
}

/// `operator 0x00 bucket`: the row of a bucket.
pub(super) fn bucket_row(operator: &str, bucket: u32) -> Vec<u8> {
    let mut k = prefix(operator);
    k.extend_from_slice(&bucket.to_be_bytes());
    k
}

/// A bucket's keys and states, sorted by key: a count, then each key and
/// state length-prefixed (`u32` little-endian).
pub(super) fn encode_bucket(entries: &BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<u8> {
    let size: usize = entries.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let mut out = Vec::with_capacity(size + 4);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (k, v) in entries {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v);
    }
    out
}

/// Calls `f` with each (key, state) of a bucket row.
pub(super) fn each_in_bucket(bytes: &[u8], mut f: impl FnMut(&[u8], &[u8])) -> Result<()> {
    let corrupt = || StoreError::Corrupt {
        what: "a state bucket".into(),
        detail: "truncated or malformed".into(),
    };
    let mut at = 0usize;
    let mut next = |n: usize| -> Result<&[u8]> {
        let b = bytes.get(at..at + n).ok_or_else(corrupt)?;
        at += n;
        Ok(b)
    };
    let len = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize;
    let count = len(next(4)?);
    for _ in 0..count {
        let n = len(next(4)?);
        let k = next(n)?;
        let n = len(next(4)?);
        let v = next(n)?;
        f(k, v);
    }
    if at != bytes.len() {
        return Err(corrupt());
    }
    Ok(())
}

/// The number of keys in a bucket row.
fn bucket_len(bytes: &[u8]) -> u64 {
    bytes.get(..4).map_or(0, |b| {
        u64::from(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    })
}

/// Changes not yet in the `state` tree, and how many keys each operator
/// has (tree and pending together).
#[derive(Debug, Default)]
pub(super) struct Pending {
    /// Per operator, per key: the new state, or `None` (removed).
    changes: HashMap<String, HashMap<Vec<u8>, Option<Vec<u8>>>>,
    entries: usize,
    /// The `state_log` rows the changes came from.
    rows: Vec<u64>,
    /// Keys with state, per operator.
    counts: BTreeMap<String, u64>,
}

impl Pending {
    /// Takes a batch's changes; `exists` says whether a key not pending has
    /// state in the tree (for the counts).
    fn apply(
        &mut self,
        row_id: u64,
        deltas: Vec<StateDelta>,
        exists: &dyn Fn(&str, &[u8]) -> Result<bool>,
    ) -> Result<()> {
        for delta in deltas {
            let op = self.changes.entry(delta.operator.clone()).or_default();
            let count = self.counts.entry(delta.operator.clone()).or_default();
            for StateChange { key, state } in delta.changes {
                let before = match op.get(&key) {
                    Some(pending) => pending.is_some(),
                    None => exists(&delta.operator, &key)?,
                };
                match (before, state.is_some()) {
                    (false, true) => *count += 1,
                    (true, false) => *count = count.saturating_sub(1),
                    _ => {}
                }
                if op.insert(key, state).is_none() {
                    self.entries += 1;
                }
            }
        }
        self.rows.push(row_id);
        Ok(())
    }
}

/// A batch's changes as one blob: per operator its name, then per change
/// the key and the state (absent for a removal), each length-prefixed
/// (`u32` little-endian); a removal's length is `u32::MAX`.
pub(super) fn encode_log(deltas: &[StateDelta]) -> Vec<u8> {
    let size: usize = deltas
        .iter()
        .map(|d| {
            8 + d.operator.len()
                + d.changes
                    .iter()
                    .map(|c| 8 + c.key.len() + c.state.as_ref().map_or(0, Vec::len))
                    .sum::<usize>()
        })
        .sum();
    let mut out = Vec::with_capacity(size + 4);
    let put = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    };
    out.extend_from_slice(&(deltas.len() as u32).to_le_bytes());
    for d in deltas {
        put(&mut out, d.operator.as_bytes());
        out.extend_from_slice(&(d.changes.len() as u32).to_le_bytes());
        for c in &d.changes {
            put(&mut out, &c.key);
            match &c.state {
                Some(v) => put(&mut out, v),
                None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
            }
        }
    }
    out
}

/// The inverse of [`encode_log`].
pub(super) fn decode_log(bytes: &[u8]) -> Result<Vec<StateDelta>> {
    let corrupt = || StoreError::Corrupt {
        what: "a state log row".into(),
        detail: "truncated or malformed".into(),
    };
    let mut at = 0usize;
    let u32_at = |at: &mut usize| -> Result<u32> {
        let b = bytes.get(*at..*at + 4).ok_or_else(corrupt)?;
        *at += 4;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let take = |at: &mut usize, n: usize| -> Result<Vec<u8>> {
        let b = bytes.get(*at..*at + n).ok_or_else(corrupt)?;
        *at += n;
        Ok(b.to_vec())
    };
    let ops = u32_at(&mut at)?;
    let mut out = Vec::with_capacity(ops as usize);
    for _ in 0..ops {
        let n = u32_at(&mut at)? as usize;
        let operator = String::from_utf8(take(&mut at, n)?).map_err(|_| corrupt())?;
        let changes_n = u32_at(&mut at)?;
        let mut changes = Vec::with_capacity(changes_n as usize);
        for _ in 0..changes_n {
            let n = u32_at(&mut at)? as usize;
            let key = take(&mut at, n)?;
            let n = u32_at(&mut at)?;
            let state = if n == u32::MAX {
                None
            } else {
                Some(take(&mut at, n as usize)?)
            };
            changes.push(StateChange { key, state });
        }
        out.push(StateDelta { operator, changes });
    }
    if at != bytes.len() {
        return Err(corrupt());
    }
    Ok(out)
}

/// Rebuilds the pending changes and the counts at open: the keys of the
/// `state` tree, then every `state_log` row in order.
pub(super) fn load(state: &sled::Tree, log: &sled::Tree) -> Result<Pending> {
    let mut pending = Pending::default();
    for row in state.iter() {
        let (k, v) = row?;
        let end = k.iter().position(|b| *b == 0).unwrap_or(k.len());
        let op = String::from_utf8_lossy(&k[..end]).into_owned();
        *pending.counts.entry(op).or_default() += bucket_len(&v);
    }
    for row in log.iter() {
        let (k, v) = row?;
        let id = <[u8; 8]>::try_from(k.as_ref())
            .map(u64::from_be_bytes)
            .map_err(|_| StoreError::Corrupt {
                what: "a state log key".into(),
                detail: format!("{} bytes, expected 8", k.len()),
            })?;
        let deltas = decode_log(&v)?;
        pending.apply(id, deltas, &|op, key| Ok(folded(state, op, key)?.is_some()))?;
    }
    Ok(pending)
}

/// A key's state as folded into the `state` tree.
fn folded(state: &sled::Tree, op: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
    let Some(row) = state.get(bucket_row(op, bucket_of(key)))? else {
        return Ok(None);
    };
    let mut found = None;
    each_in_bucket(&row, |k, v| {
        if k == key {
            found = Some(v.to_vec());
        }
    })?;
    Ok(found)
}

impl ViewStore {
    /// Takes a committed batch's state changes (its `state_log` row is
    /// written).
    pub(super) fn apply_state(&self, row_id: u64, deltas: Vec<StateDelta>) -> Result<()> {
        let full = {
            let mut pending = self.pending_write();
            let tree = &self.state;
            pending.apply(row_id, deltas, &|op, key| {
                Ok(folded(tree, op, key)?.is_some())
            })?;
            pending.entries > MAX_PENDING
        };
        if full {
            self.fold_state()?;
        }
        Ok(())
    }

    /// Folds the pending changes into the `state` tree (each key once),
    /// then deletes the log rows they came from.
    pub(super) fn fold_state(&self) -> Result<()> {
        let (snapshot, rows) = {
            let pending = self.pending_read();
            (pending.changes.clone(), pending.rows.clone())
        };
        if rows.is_empty() {
            return Ok(());
        }
        // Each touched bucket: read, change, write back.
        let mut by_bucket: BTreeMap<(&str, u32), Vec<Change<'_>>> = BTreeMap::new();
        for (op, changes) in &snapshot {
            for (key, state) in changes {
                by_bucket
                    .entry((op.as_str(), bucket_of(key)))
                    .or_default()
                    .push((key, state));
            }
        }
        let mut batch = sled::Batch::default();
        for ((op, bucket), changes) in by_bucket {
            let row_key = bucket_row(op, bucket);
            let mut entries = BTreeMap::new();
            if let Some(row) = self.state.get(&row_key)? {
                each_in_bucket(&row, |k, v| {
                    entries.insert(k.to_vec(), v.to_vec());
                })?;
            }
            for (key, state) in changes {
                match state {
                    Some(v) => entries.insert(key.clone(), v.clone()),
                    None => entries.remove(key),
                };
            }
            if entries.is_empty() {
                batch.remove(row_key);
            } else {
                batch.insert(row_key, encode_bucket(&entries));
            }
        }
        self.state.apply_batch(batch)?;
        {
            let mut pending = self.pending_write();
            // Drop what the tree now holds, unless a later batch changed it
            // again meanwhile.
            for (op, changes) in snapshot {
                if let Some(current) = pending.changes.get_mut(&op) {
                    for (key, state) in changes {
                        if current.get(&key) == Some(&state) {
                            current.remove(&key);
                        }
                    }
                }
            }
            pending.changes.retain(|_, c| !c.is_empty());
            pending.entries = pending.changes.values().map(HashMap::len).sum();
            pending.rows.retain(|r| !rows.contains(r));
        }
        for r in rows {
            self.state_log.remove(r.to_be_bytes())?;
        }
        Ok(())
    }

    fn pending_read(&self) -> std::sync::RwLockReadGuard<'_, Pending> {
        self.pending.read().unwrap_or_else(|p| p.into_inner())
    }

    fn pending_write(&self) -> std::sync::RwLockWriteGuard<'_, Pending> {
        self.pending.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Every key of `operator`'s state: (CBOR key, CBOR `[state, time]`),
    /// in key order.
    ///
    /// # Errors
    ///
    /// sled errors.
    pub fn state_entries(
        &self,
        operator: &str,
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + '_ {
        let pending = self
            .pending_read()
            .changes
            .get(operator)
            .cloned()
            .unwrap_or_default();
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut failed = None;
        for row in self.state.scan_prefix(prefix(operator)) {
            let decoded = row.map_err(StoreError::Sled).and_then(|(_, v)| {
                each_in_bucket(&v, |k, v| {
                    if !pending.contains_key(k) {
                        merged.insert(k.to_vec(), v.to_vec());
                    }
                })
            });
            if let Err(e) = decoded {
                failed = Some(e);
                break;
            }
        }
        for (key, state) in pending {
            if let Some(v) = state {
                merged.insert(key, v);
            }
        }
        failed
            .map(Err)
            .into_iter()
            .chain(merged.into_iter().map(Ok))
    }

    /// One key's stored state (CBOR `[state, time]`), if it has one.
    ///
    /// # Errors
    ///
    /// sled errors.
    pub fn state_get(&self, operator: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(pending) = self
            .pending_read()
            .changes
            .get(operator)
            .and_then(|c| c.get(key))
        {
            return Ok(pending.clone());
        }
        folded(&self.state, operator, key)
    }

    /// How many keys have state in `operator`.
    ///
    /// # Errors
    ///
    /// Never (kept for symmetry with the other accessors).
    pub fn state_key_count(&self, operator: &str) -> Result<u64> {
        Ok(self
            .pending_read()
            .counts
            .get(operator)
            .copied()
            .unwrap_or(0))
    }

    /// Every operator with stored state, and its number of keys.
    ///
    /// # Errors
    ///
    /// Never (kept for symmetry with the other accessors).
    pub fn state_operators(&self) -> Result<BTreeMap<String, u64>> {
        Ok(self
            .pending_read()
            .counts
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| (k.clone(), *n))
            .collect())
    }

    /// Replaces `operator`'s whole state by `entries` (CBOR key, CBOR
    /// `[state, time]`), durably (the server must be stopped).
    ///
    /// # Errors
    ///
    /// sled errors.
    pub fn replace_state(&self, operator: &str, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        self.drop_state(operator)?;
        let mut buckets: BTreeMap<u32, BTreeMap<Vec<u8>, Vec<u8>>> = BTreeMap::new();
        let n = entries.len() as u64;
        for (k, v) in entries {
            buckets.entry(bucket_of(&k)).or_default().insert(k, v);
        }
        let mut batch = sled::Batch::default();
        for (bucket, entries) in buckets {
            batch.insert(bucket_row(operator, bucket), encode_bucket(&entries));
        }
        self.state.apply_batch(batch)?;
        if n > 0 {
            self.pending_write().counts.insert(operator.to_owned(), n);
        }
        self.db.flush()?;
        Ok(())
    }

    /// Deletes `operator`'s whole state (the server must be stopped: the
    /// operator starts empty at the next start). Returns the keys deleted.
    ///
    /// # Errors
    ///
    /// sled errors.
    pub fn drop_state(&self, operator: &str) -> Result<u64> {
        self.fold_state()?;
        let mut n = 0;
        for row in self.state.scan_prefix(prefix(operator)) {
            let (k, v) = row?;
            n += bucket_len(&v);
            self.state.remove(k)?;
        }
        self.pending_write().counts.remove(operator);
        self.db.flush()?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_rows_round_trip() {
        let deltas = vec![
            StateDelta {
                operator: "a".into(),
                changes: vec![
                    StateChange {
                        key: vec![1, 2],
                        state: Some(vec![]),
                    },
                    StateChange {
                        key: vec![],
                        state: None,
                    },
                ],
            },
            StateDelta {
                operator: "bé".into(),
                changes: vec![],
            },
        ];
        let bytes = encode_log(&deltas);
        assert_eq!(decode_log(&bytes).unwrap(), deltas);
        assert!(decode_log(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_log(&[bytes.as_slice(), &[0]].concat()).is_err());
    }

    #[test]
    fn buckets_round_trip_and_the_hash_is_fixed() {
        let entries: BTreeMap<Vec<u8>, Vec<u8>> = [
            (vec![1], vec![2, 3]),
            (vec![], vec![]),
            (vec![9; 300], vec![7]),
        ]
        .into_iter()
        .collect();
        let bytes = encode_bucket(&entries);
        let mut back = BTreeMap::new();
        each_in_bucket(&bytes, |k, v| {
            back.insert(k.to_vec(), v.to_vec());
        })
        .unwrap();
        assert_eq!(back, entries);
        assert_eq!(bucket_len(&bytes), 3);
        assert!(each_in_bucket(&bytes[..bytes.len() - 1], |_, _| {}).is_err());
        // The on-disk layout: these must never change.
        assert_eq!(bucket_of(b""), (0xcbf2_9ce4_8422_2325u64 % 16_384) as u32);
        assert_eq!(bucket_of(b"be"), {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in b"be" {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            (h % 16_384) as u32
        });
    }
}
