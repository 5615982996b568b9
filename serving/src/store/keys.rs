//! Byte layout of sled keys (see the table in the module above).

use super::{Position, Result, StoreError};

pub(super) const WATERMARK: &[u8] = b"watermark";
pub(super) const BATCH_ID: &[u8] = b"batch_id";
/// The layout version of the state directory.
pub(super) const LAYOUT: &[u8] = b"layout";
pub(super) const LAYOUT_VERSION: u64 = 2;
pub(super) const COMPACTED_PREFIX: &[u8] = b"compacted/";

const POSITION_PREFIX: &[u8] = b"pos/";

/// `pos/ name`: a committed source position.
pub(super) fn position(position: &Position) -> Vec<u8> {
    position_prefix(&position.key())
}

/// `pos/ prefix`: what the keys of positions whose names start with
/// `prefix` start with.
pub(super) fn position_prefix(prefix: &str) -> Vec<u8> {
    [POSITION_PREFIX, prefix.as_bytes()].concat()
}

/// The position name of a `pos/` key.
pub(super) fn position_name(raw: &[u8]) -> &[u8] {
    raw.strip_prefix(POSITION_PREFIX).unwrap_or(raw)
}

/// `compacted/ epoch(BE)`: the epoch's deltas are in the `epochs` tree.
pub(super) fn compacted(epoch: u64) -> Vec<u8> {
    [COMPACTED_PREFIX, &epoch.to_be_bytes()].concat()
}

/// The epoch of a `compacted/` key.
pub(super) fn compacted_epoch(raw: &[u8]) -> Result<u64> {
    raw.strip_prefix(COMPACTED_PREFIX)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| corrupt("a compaction marker", raw))
}

/// `epoch(BE) batch(BE)`: one micro-batch's deltas.
pub(super) fn batch(epoch: u64, batch_id: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&epoch.to_be_bytes());
    k[8..].copy_from_slice(&batch_id.to_be_bytes());
    k
}

/// `prefix(BE) view 0x00 chunk(BE u32)`: a chunk of a generation (prefix =
/// generation) or of a compacted epoch (prefix = epoch).
pub(super) fn chunk(prefix: u64, view: &str, chunk: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(13 + view.len());
    k.extend_from_slice(&prefix.to_be_bytes());
    k.extend_from_slice(view.as_bytes());
    k.push(0);
    k.extend_from_slice(&chunk.to_be_bytes());
    k
}

/// The leading big-endian `u64` of a key (generation or epoch); 0 for a
/// malformed key, which is then treated as stale and deleted.
pub(super) fn leading_u64(raw: &[u8]) -> u64 {
    raw.get(..8)
        .map_or(0, |b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
}

/// The view of a [`chunk`] key.
pub(super) fn chunk_view(raw: &[u8]) -> Result<&str> {
    let rest = raw
        .get(8..raw.len().saturating_sub(4))
        .ok_or_else(|| corrupt("a chunk key", raw))?;
    let view = rest
        .strip_suffix(&[0])
        .ok_or_else(|| corrupt("a chunk key", raw))?;
    std::str::from_utf8(view).map_err(|_| corrupt("a chunk key", raw))
}

pub(super) fn blob(name: &str) -> Vec<u8> {
    [b"blob/".as_slice(), name.as_bytes()].concat()
}

pub(super) fn dead_count(stream: &str) -> Vec<u8> {
    [b"dead_count/".as_slice(), stream.as_bytes()].concat()
}

/// `stream 0x00`
pub(super) fn dead_prefix(stream: &str) -> Vec<u8> {
    let mut k = stream.as_bytes().to_vec();
    k.push(0);
    k
}

/// `stream 0x00 seq(BE)`
pub(super) fn dead(stream: &str, seq: u64) -> Vec<u8> {
    let mut k = dead_prefix(stream);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub(super) fn dead_seq(raw: &[u8]) -> Result<u64> {
    raw.len()
        .checked_sub(8)
        .map(|at| u64::from_be_bytes(raw[at..].try_into().expect("8 bytes")))
        .ok_or_else(|| corrupt("a dead-letter key", raw))
}

fn corrupt(what: &str, raw: &[u8]) -> StoreError {
    StoreError::Corrupt {
        what: what.to_owned(),
        detail: format!("malformed key {raw:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let c = chunk(7, "word_counts", 3);
        assert_eq!(leading_u64(&c), 7);
        assert_eq!(chunk_view(&c).unwrap(), "word_counts");
        assert!(chunk_view(b"short").is_err());
        assert_eq!(compacted_epoch(&compacted(42)).unwrap(), 42);
        assert!(compacted_epoch(b"compacted/x").is_err());
        assert_eq!(leading_u64(&batch(5, 9)), 5);
        assert_eq!(leading_u64(b"x"), 0);
        assert_eq!(position(&Position::Wal), b"pos/wal");
        assert_eq!(
            position(&Position::EpochStart(1)),
            b"pos/epoch_start/00000000000000000001"
        );
        assert_eq!(position_name(&position(&Position::Wal)), b"wal");
    }

    #[test]
    fn rows_sort_by_epoch_then_batch() {
        assert!(batch(2, 100) < batch(10, 1));
        assert!(batch(2, 1) < batch(2, 2));
        assert!(chunk(2, "v", 9) < chunk(10, "a", 0));
    }
}
