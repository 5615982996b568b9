//! The map from text keys to fold states that a group-by spends its time
//! in, laid out for the cache.
//!
//! A `HashMap<Box<str>, S>` pays for every lookup that finds its key with a
//! pointer chase into the heap (the boxed key, one allocation per key,
//! scattered) and a `memcmp` there: profiled on 100M Zipf words, a third of
//! a batch run. Here an entry holds the key's full hash and length and, for
//! keys of up to 8 bytes (most words), the key's bytes themselves, so a hit
//! compares two words in the entry; longer keys live one after another in
//! one arena, compared only when hash and length already agree.

use hashbrown::HashTable;
use hashbrown::hash_table::Entry as Slot;

use crate::view::partials::key_hash;

/// Keys of at most this many bytes are kept in the entry.
const INLINE: usize = 8;

struct Entry<S> {
    hash: u64,
    /// The key's bytes (little-endian, zero-padded) when `len <= INLINE`,
    /// else its offset in the arena.
    word: u64,
    len: u32,
    state: S,
}

/// Text keys to states `S`.
pub(crate) struct TextTable<S> {
    table: HashTable<Entry<S>>,
    arena: Vec<u8>,
}

impl<S> std::fmt::Debug for TextTable<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTable")
            .field("keys", &self.table.len())
            .field("arena_bytes", &self.arena.len())
            .finish()
    }
}

#[inline]
fn inline_word(bytes: &[u8]) -> u64 {
    let mut word = [0u8; INLINE];
    word[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(word)
}

impl<S> TextTable<S> {
    pub(crate) fn new() -> Self {
        TextTable {
            table: HashTable::new(),
            arena: Vec::new(),
        }
    }

    /// Room for `keys` more keys without rehashing.
    pub(crate) fn reserve(&mut self, keys: usize) {
        self.table.reserve(keys, |e| e.hash);
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The state of `key`, made by `zero` when the key is new.
    #[inline]
    pub(crate) fn slot(&mut self, key: &str, zero: impl FnOnce() -> S) -> &mut S {
        let bytes = key.as_bytes();
        let hash = key_hash(bytes);
        let len = bytes.len() as u32;
        let TextTable { table, arena, .. } = self;
        let short = bytes.len() <= INLINE;
        let word = if short { inline_word(bytes) } else { 0 };
        let found = table.entry(
            hash,
            |e| {
                e.hash == hash
                    && e.len == len
                    && if short {
                        e.word == word
                    } else {
                        let at = e.word as usize;
                        arena[at..at + bytes.len()] == *bytes
                    }
            },
            |e| e.hash,
        );
        match found {
            Slot::Occupied(o) => &mut o.into_mut().state,
            Slot::Vacant(v) => {
                let word = if short {
                    word
                } else {
                    let at = arena.len() as u64;
                    arena.extend_from_slice(bytes);
                    at
                };
                let entry = Entry {
                    hash,
                    word,
                    len,
                    state: zero(),
                };
                &mut v.insert(entry).into_mut().state
            }
        }
    }

    /// Every key, as text, with its state.
    pub(crate) fn into_entries(self) -> impl Iterator<Item = (String, S)> {
        // The arena is keys that were each a `&str`, one after another, so
        // it is UTF-8 as a whole and every key starts and ends on a char
        // boundary: validated once here, not once per key.
        let arena = String::from_utf8(self.arena)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        self.table.into_iter().map(move |e| {
            let len = e.len as usize;
            let key = if len <= INLINE {
                let bytes = e.word.to_le_bytes();
                String::from_utf8_lossy(&bytes[..len]).into_owned()
            } else {
                let at = e.word as usize;
                arena.get(at..at + len).unwrap_or_default().to_owned()
            };
            (key, e.state)
        })
    }

    /// Key bytes kept outside the entries.
    pub(crate) fn arena_bytes(&self) -> usize {
        self.arena.len()
    }

    /// Calls `f(hash, key, state)` for every key, with the hash it was
    /// stored under ([`key_hash`] of the key).
    pub(crate) fn drain(self, mut f: impl FnMut(u64, &str, S)) {
        // As in `into_entries`: the arena is UTF-8 as a whole.
        let arena = String::from_utf8(self.arena)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        for e in self.table {
            let len = e.len as usize;
            if len <= INLINE {
                let bytes = e.word.to_le_bytes();
                match std::str::from_utf8(&bytes[..len]) {
                    Ok(key) => f(e.hash, key, e.state),
                    Err(_) => {
                        let key = String::from_utf8_lossy(&bytes[..len]);
                        f(key_hash(key.as_bytes()), &key, e.state)
                    }
                }
            } else {
                let at = e.word as usize;
                let key = arena.get(at..at + len).unwrap_or_default();
                f(e.hash, key, e.state)
            }
        }
    }

    /// The same keys with every state converted.
    pub(crate) fn map_states<T>(self, f: impl Fn(S) -> T) -> TextTable<T> {
        let mut table = HashTable::with_capacity(self.table.len());
        for e in self.table {
            table.insert_unique(
                e.hash,
                Entry {
                    hash: e.hash,
                    word: e.word,
                    len: e.len,
                    state: f(e.state),
                },
                |x| x.hash,
            );
        }
        TextTable {
            table,
            arena: self.arena,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn counts_like_a_map_whatever_the_key_length() {
        let mut table: TextTable<i64> = TextTable::new();
        let mut model: BTreeMap<String, i64> = BTreeMap::new();
        let keys = [
            "",
            "a",
            "ab",
            "abcdefgh",
            "abcdefghi",
            "abcdefgh\0",
            "ü",
            "naïve-long-key-äöü",
            "https://shop.example/item/1?ref=home",
            "https://shop.example/item/2?ref=home",
            "a\0",
            "\0a",
        ];
        for round in 0..50 {
            for (i, k) in keys.iter().enumerate() {
                if (round + i) % 3 != 0 {
                    *table.slot(k, || 0) += 1;
                    *model.entry((*k).to_owned()).or_default() += 1;
                }
            }
        }
        assert_eq!(table.len(), model.len());
        let doubled = table.map_states(|n| n * 2);
        let got: BTreeMap<String, i64> = doubled.into_entries().collect();
        let want: BTreeMap<String, i64> = model.into_iter().map(|(k, n)| (k, n * 2)).collect();
        assert_eq!(got, want);
    }
}
