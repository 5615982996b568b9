//! The state of the program's stateful operators (`update_state_by_key`,
//! `map_with_state`), kept as data in the `state` tree: written by each
//! micro-batch's commit, in its transaction, and read back at start-up and
//! by state views.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `state` | operator, `0x00`, key (CBOR) | `[state, batch time ms]` (CBOR) |
//! | `meta` | `state_keys/{operator}` | big-endian `u64`: keys with state |
//!
//! Operator names never contain `0x00` (see
//! [`lamina::streaming::durable::valid_name`]), so an operator's keys are
//! one prefix.

use std::collections::BTreeMap;

use lamina::streaming::StateDelta;

use super::{Result, StoreError, ViewStore, read_u64};

/// `operator 0x00`: what the operator's keys start with.
pub(super) fn prefix(operator: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(operator.len() + 1);
    k.extend_from_slice(operator.as_bytes());
    k.push(0);
    k
}

/// `operator 0x00 key`.
pub(super) fn row(operator: &str, key: &[u8]) -> Vec<u8> {
    let mut k = prefix(operator);
    k.extend_from_slice(key);
    k
}

/// `state_keys/{operator}` in `meta`.
pub(super) fn count_key(operator: &str) -> Vec<u8> {
    format!("state_keys/{operator}").into_bytes()
}

const COUNT_PREFIX: &str = "state_keys/";

/// Applies a micro-batch's state changes inside its transaction.
pub(super) fn apply(
    meta: &sled::transaction::TransactionalTree,
    state: &sled::transaction::TransactionalTree,
    deltas: &[StateDelta],
) -> std::result::Result<(), sled::transaction::ConflictableTransactionError<()>> {
    for delta in deltas {
        let mut count: i64 = 0;
        for change in &delta.changes {
            let k = row(&delta.operator, &change.key);
            match &change.state {
                Some(v) => {
                    if state.insert(k, v.as_slice())?.is_none() {
                        count += 1;
                    }
                }
                None => {
                    if state.remove(k)?.is_some() {
                        count -= 1;
                    }
                }
            }
        }
        if count != 0 {
            let ck = count_key(&delta.operator);
            let before = meta
                .get(&ck)?
                .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                .map_or(0, u64::from_be_bytes);
            let after = (before as i64 + count).max(0) as u64;
            meta.insert(ck, &after.to_be_bytes())?;
        }
    }
    Ok(())
}

impl ViewStore {
    /// Every stored key of `operator`'s state: (CBOR key, CBOR
    /// `[state, time]`), in key order.
    ///
    /// # Errors
    ///
    /// sled errors.
    pub fn state_entries(
        &self,
        operator: &str,
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + '_ {
        let skip = operator.len() + 1;
        self.state.scan_prefix(prefix(operator)).map(move |row| {
            let (k, v) = row?;
            Ok((k[skip..].to_vec(), v.to_vec()))
        })
    }

    /// One key's stored state (CBOR `[state, time]`), if it has one.
    ///
    /// # Errors
    ///
    /// sled errors.
    pub fn state_get(&self, operator: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.state.get(row(operator, key))?.map(|v| v.to_vec()))
    }

    /// How many keys have state in `operator`.
    ///
    /// # Errors
    ///
    /// sled errors.
    pub fn state_key_count(&self, operator: &str) -> Result<u64> {
        Ok(read_u64(&self.meta, &count_key(operator))?.unwrap_or(0))
    }

    /// Every operator with stored state, and its number of keys.
    ///
    /// # Errors
    ///
    /// sled errors; a count key that is not UTF-8.
    pub fn state_operators(&self) -> Result<BTreeMap<String, u64>> {
        let mut out = BTreeMap::new();
        for row in self.meta.scan_prefix(COUNT_PREFIX.as_bytes()) {
            let (k, v) = row?;
            let name =
                std::str::from_utf8(&k[COUNT_PREFIX.len()..]).map_err(|_| StoreError::Corrupt {
                    what: "a state count key".into(),
                    detail: "not UTF-8".into(),
                })?;
            let n = <[u8; 8]>::try_from(v.as_ref())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            if n > 0 {
                out.insert(name.to_owned(), n);
            }
        }
        Ok(out)
    }

    /// Deletes `operator`'s whole state (the server must be stopped: the
    /// operator starts empty at the next start). Returns the keys deleted.
    ///
    /// # Errors
    ///
    /// sled errors.
    pub fn drop_state(&self, operator: &str) -> Result<u64> {
        let mut n = 0;
        for row in self.state.scan_prefix(prefix(operator)) {
            let (k, _) = row?;
            self.state.remove(k)?;
            n += 1;
        }
        self.meta.remove(count_key(operator))?;
        self.db.flush()?;
        Ok(n)
    }
}
