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

use crate::view::partials::{SHORT, key_hash, short_word};

/// `len` of a free entry.
const FREE: u32 = u32::MAX;

#[derive(Clone)]
struct Entry<S> {
    hash: u64,
    /// The key's bytes (little-endian, zero-padded) when `len <= SHORT`,
    /// else its offset in the arena.
    word: u64,
    /// The key's length; [`FREE`] for a free entry.
    len: u32,
    state: S,
}

/// Text keys to states `S`: open addressing with linear probing over one
/// array of entries, so a lookup reads one cache line (two when the probe
/// runs over its end), and at most half full, so probes are short. A free
/// entry holds the zero state already: a new key's state is in place.
pub(crate) struct TextTable<S> {
    entries: Vec<Entry<S>>,
    /// Entries to allocate at the first key (see [`reserve`](Self::reserve)).
    planned: usize,
    used: usize,
    arena: Vec<u8>,
    zero: S,
}

impl<S> std::fmt::Debug for TextTable<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTable")
            .field("keys", &self.used)
            .field("arena_bytes", &self.arena.len())
            .finish()
    }
}

/// Asks the CPU to start loading `entry`'s cache line, without waiting for
/// it: the fold computes the next keys' hashes meanwhile. A hint only.
#[inline(always)]
fn prefetch<T>(entry: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and changes no memory, whatever the
    // address; this one is of a live reference. SSE is part of x86_64.
    #[allow(unsafe_code)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            std::ptr::from_ref(entry).cast(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = entry;
}

impl<S: Clone> TextTable<S> {
    /// An empty table; new keys start from `zero`.
    pub(crate) fn new(zero: S) -> Self {
        TextTable {
            entries: Vec::new(),
            planned: 0,
            used: 0,
            arena: Vec::new(),
            zero,
        }
    }

    fn free_entries(&self, n: usize) -> Vec<Entry<S>> {
        vec![
            Entry {
                hash: 0,
                word: 0,
                len: FREE,
                state: self.zero.clone(),
            };
            n
        ]
    }

    /// Grows to `capacity` entries (a power of two), moving every key.
    fn resize(&mut self, capacity: usize) {
        let fresh = self.free_entries(capacity);
        let old = std::mem::replace(&mut self.entries, fresh);
        let mask = capacity - 1;
        for e in old.into_iter().filter(|e| e.len != FREE) {
            let mut i = e.hash as usize & mask;
            while self.entries[i].len != FREE {
                i = (i + 1) & mask;
            }
            self.entries[i] = e;
        }
    }

    /// Room for `keys` more keys without growing. An empty table only
    /// plans it: the entries are allocated with the first key, so a fold
    /// that never uses the table (a key column read as a dictionary) does
    /// not pay for zeroing them.
    pub(crate) fn reserve(&mut self, keys: usize) {
        let want = ((self.used + keys) * 2).next_power_of_two().max(16);
        if self.entries.is_empty() {
            self.planned = self.planned.max(want);
        } else if want > self.entries.len() {
            self.resize(want);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.used
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// Starts loading the entry where a key of hash `hash` is looked for
    /// first; see [`slot_hashed`](Self::slot_hashed).
    #[inline]
    pub(crate) fn prefetch(&self, hash: u64) {
        if let Some(e) = self
            .entries
            .get(hash as usize & self.entries.len().wrapping_sub(1))
        {
            prefetch(e);
        }
    }

    /// The state of `key` (the zero state when the key is new).
    #[inline]
    pub(crate) fn slot(&mut self, key: &str) -> &mut S {
        self.slot_hashed(key_hash(key.as_bytes()), key)
    }

    /// [`slot`](Self::slot) with the key's hash already computed
    /// ([`key_hash`]).
    #[inline]
    pub(crate) fn slot_hashed(&mut self, hash: u64, key: &str) -> &mut S {
        if (self.used + 1) * 2 > self.entries.len() {
            let capacity = (self.entries.len() * 2).max(16).max(self.planned);
            self.planned = 0;
            self.resize(capacity);
        }
        let bytes = key.as_bytes();
        let len = bytes.len() as u32;
        let short = bytes.len() <= SHORT;
        let word = if short { short_word(bytes) } else { 0 };
        let mask = self.entries.len() - 1;
        let mut i = hash as usize & mask;
        loop {
            let e = &self.entries[i];
            if e.len == FREE {
                break;
            }
            if e.hash == hash
                && e.len == len
                && if short {
                    e.word == word
                } else {
                    let at = e.word as usize;
                    self.arena[at..at + bytes.len()] == *bytes
                }
            {
                return &mut self.entries[i].state;
            }
            i = (i + 1) & mask;
        }
        let word = if short {
            word
        } else {
            let at = self.arena.len() as u64;
            self.arena.extend_from_slice(bytes);
            at
        };
        self.used += 1;
        let e = &mut self.entries[i];
        e.hash = hash;
        e.word = word;
        e.len = len;
        &mut e.state
    }

    /// Key bytes kept outside the entries.
    pub(crate) fn arena_bytes(&self) -> usize {
        self.arena.len()
    }

    /// Calls `f(hash, key, state)` for every key, with the hash it was
    /// stored under ([`key_hash`] of the key).
    pub(crate) fn drain(self, mut f: impl FnMut(u64, &str, S)) {
        // The arena is keys that were each a `&str`, one after another, so
        // it is UTF-8 as a whole and every key starts and ends on a char
        // boundary: validated once here, not once per key.
        let arena = String::from_utf8(self.arena)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        for e in self.entries.into_iter().filter(|e| e.len != FREE) {
            let len = e.len as usize;
            if len <= SHORT {
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

    /// Every key, as text, with its state.
    pub(crate) fn into_entries(self) -> impl Iterator<Item = (String, S)> {
        let mut out = Vec::with_capacity(self.used);
        self.drain(|_, k, s| out.push((k.to_owned(), s)));
        out.into_iter()
    }

    /// The same keys with every state converted.
    pub(crate) fn map_states<T: Clone>(self, f: impl Fn(S) -> T) -> TextTable<T> {
        TextTable {
            entries: self
                .entries
                .into_iter()
                .map(|e| Entry {
                    hash: e.hash,
                    word: e.word,
                    len: e.len,
                    state: f(e.state),
                })
                .collect(),
            planned: self.planned,
            used: self.used,
            arena: self.arena,
            zero: f(self.zero),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn counts_like_a_map_whatever_the_key_length() {
        let mut table: TextTable<i64> = TextTable::new(0);
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
                    *table.slot(k) += 1;
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

    /// Growth moves keys between entries; probes run over the array's end.
    #[test]
    fn many_keys_survive_growth_and_drain_with_their_hashes() {
        let mut table: TextTable<i64> = TextTable::new(0);
        let mut model: BTreeMap<String, i64> = BTreeMap::new();
        let mut x: u64 = 0x9e37_79b9;
        for i in 0..60_000u64 {
            // xorshift: keys of 0 to 30 bytes, some not ASCII, many repeats.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = x % 20_000;
            let key = match n % 4 {
                0 => format!("{n}"),
                1 => format!("w{n}ä"),
                2 => format!("https://example.org/{n}"),
                _ => "x".repeat((n % 31) as usize),
            };
            if i == 30_000 {
                table.reserve(50_000);
            }
            *table.slot(&key) += 1;
            *model.entry(key).or_default() += 1;
        }
        assert_eq!(table.len(), model.len());
        let mut got = BTreeMap::new();
        table.drain(|h, k, n| {
            assert_eq!(h, key_hash(k.as_bytes()), "{k}");
            assert!(got.insert(k.to_owned(), n).is_none(), "{k} twice");
        });
        assert_eq!(got, model);
    }
}
