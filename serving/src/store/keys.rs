//! Byte layout of sled keys (see the table in the module above).

use super::{Result, StoreError};

pub(super) const WATERMARK: &[u8] = b"watermark";
pub(super) const BATCH_ID: &[u8] = b"batch_id";

pub(super) fn position(source: &str) -> Vec<u8> {
    [b"pos/".as_slice(), source.as_bytes()].concat()
}

/// `view 0x00 epoch(BE) key`
pub(super) fn delta(view: &str, epoch: u64, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(view.len() + 9 + key.len());
    k.extend_from_slice(view.as_bytes());
    k.push(0);
    k.extend_from_slice(&epoch.to_be_bytes());
    k.extend_from_slice(key.as_bytes());
    k
}

/// `generation(BE) view 0x00 key`
pub(super) fn batch_row(generation: u64, view: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + view.len() + key.len());
    k.extend_from_slice(&generation.to_be_bytes());
    k.extend_from_slice(view.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
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

pub(super) fn split_delta(raw: &[u8]) -> Result<(&str, u64, &str)> {
    let nul = raw
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| corrupt("a delta key", raw))?;
    let view = std::str::from_utf8(&raw[..nul]).map_err(|_| corrupt("a delta key", raw))?;
    let rest = &raw[nul + 1..];
    if rest.len() < 8 {
        return Err(corrupt("a delta key", raw));
    }
    let epoch = u64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
    let key = std::str::from_utf8(&rest[8..]).map_err(|_| corrupt("a delta key", raw))?;
    Ok((view, epoch, key))
}

/// The generation a `gen` key belongs to (0 for a malformed key, which is
/// then treated as stale and deleted).
pub(super) fn gen_of(raw: &[u8]) -> u64 {
    raw.get(..8)
        .map_or(0, |b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
}

pub(super) fn split_gen(raw: &[u8]) -> Result<(&str, &str)> {
    let rest = raw.get(8..).ok_or_else(|| corrupt("a batch key", raw))?;
    let nul = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| corrupt("a batch key", raw))?;
    let view = std::str::from_utf8(&rest[..nul]).map_err(|_| corrupt("a batch key", raw))?;
    let key = std::str::from_utf8(&rest[nul + 1..]).map_err(|_| corrupt("a batch key", raw))?;
    Ok((view, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let d = delta("word_counts", 7, "a\0b|c");
        assert_eq!(split_delta(&d).unwrap(), ("word_counts", 7, "a\0b|c"));
        let g = batch_row(3, "v", "");
        assert_eq!(gen_of(&g), 3);
        assert_eq!(split_gen(&g).unwrap(), ("v", ""));
        assert!(split_delta(b"no-separator").is_err());
        assert!(split_gen(b"short").is_err());
    }

    #[test]
    fn epochs_sort_numerically_within_a_view() {
        let a = delta("v", 2, "zzz");
        let b = delta("v", 10, "a");
        assert!(a < b);
    }
}
