//! The map from text keys to fold states that a group-by spends its time
//! in, laid out for the cache.
//!
//! A `HashMap<Box<str>, S>` pays for every lookup that finds its key with a
//! pointer chase into the heap (the boxed key, one allocation per key,
//! scattered) and a `memcmp` there: profiled on 100M Zipf words, a third of
//! a batch run. Here an entry is one word of key and the state, 16 bytes
//! for a count: a key of up to 7 bytes (most words), or of 8 not ending in
//! a control character, is the word itself, with its length in the top
//! byte, so a hit is one comparison of two words; a longer key lives in one
//! arena with its hash and length, and its entry holds 16 bits of that hash
//! and the key's place in the arena.
//!
//! The word of an entry is one of (top byte first):
//! - `len` (0 to 7), then the key's bytes little-endian, zero-padded;
//! - the key's 8 bytes, little-endian, when the last is 8 or above;
//! - [`LONG`], 16 bits of the hash, the arena offset (40 bits);
//! - [`FREE`].
//!
//! `0xFE` and `0xFF` occur in no UTF-8 text, so no key's word is one of the
//! last two.

use crate::view::partials::{SHORT, hash_and_word, short_hash};

/// The word of a free entry.
const FREE: u64 = u64::MAX;

/// The top byte of a long key's word.
const LONG: u64 = 0xFE;

/// Bits of an arena offset in a long key's word.
const OFFSET_BITS: u32 = 40;

/// Bytes before a long key's bytes in the arena: its hash and length.
const HEADER: usize = 12;

#[derive(Clone)]
struct Entry<S> {
    /// The key, encoded as the module docs say.
    key: u64,
    state: S,
}

/// The word of a key of `len` bytes whose [`short_word`] is `word`, when
/// the key fits in one (see the module docs).
///
/// [`short_word`]: crate::view::partials::short_word
#[inline]
fn inline_word(word: u64, len: usize) -> Option<u64> {
    if len < SHORT {
        Some(word | (len as u64) << 56)
    } else if len == SHORT && word >> 56 >= 8 {
        Some(word)
    } else {
        None
    }
}

/// The [`short_word`] and length of an inline key's word.
///
/// [`short_word`]: crate::view::partials::short_word
#[inline]
fn inline_key(key: u64) -> (u64, usize) {
    let top = key >> 56;
    if top < SHORT as u64 {
        (key & ((1 << 56) - 1), top as usize)
    } else {
        (key, SHORT)
    }
}

/// Text keys to states `S`: open addressing with linear probing over one
/// array of entries, starting at the first entry of a cache line so that
/// a lookup reads one line (two when the probe runs over its end), and at
/// most half full, so probes are short. A free entry holds the zero state
/// already: a new key's state is in place.
pub(crate) struct TextTable<S> {
    entries: Vec<Entry<S>>,
    /// Entries to allocate at the first key (see [`reserve`](Self::reserve)).
    planned: usize,
    used: usize,
    /// Long keys, each after its hash and length (see [`HEADER`]).
    arena: Vec<u8>,
    /// Bytes of the long keys themselves.
    long_bytes: usize,
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

/// The arena offset in a long key's entry.
#[inline]
fn offset_of(key: u64) -> usize {
    (key & ((1 << OFFSET_BITS) - 1)) as usize
}

/// A long key's hash, length and bytes from the arena, at `at`.
fn long_key(arena: &[u8], at: usize) -> (u64, &[u8]) {
    let header = arena.get(at..at + HEADER).unwrap_or(&[0; HEADER]);
    let hash = u64::from_le_bytes(header[..8].try_into().unwrap_or_default());
    let len = u32::from_le_bytes(header[8..].try_into().unwrap_or_default()) as usize;
    let start = at + HEADER;
    (hash, arena.get(start..start + len).unwrap_or_default())
}

impl<S: Clone> TextTable<S> {
    /// An empty table; new keys start from `zero`.
    pub(crate) fn new(zero: S) -> Self {
        TextTable {
            entries: Vec::new(),
            planned: 0,
            used: 0,
            arena: Vec::new(),
            long_bytes: 0,
            zero,
        }
    }

    /// Entries per 64-byte cache line (1 when an entry is larger, or when
    /// its size does not divide the line).
    const PER_LINE: usize = {
        let size = std::mem::size_of::<Entry<S>>();
        if size > 0 && size <= 64 && 64 % size == 0 {
            64 / size
        } else {
            1
        }
    };

    /// Where the probe for a key of hash `hash` starts: the first entry of
    /// the cache line its hash picks, so that the entries a probe reads
    /// first are the line [`prefetch`](Self::prefetch) loaded (a probe
    /// from the middle of a line runs into the next line, not loaded yet).
    #[inline]
    fn home(&self, hash: u64) -> usize {
        hash as usize & self.entries.len().wrapping_sub(1) & !(Self::PER_LINE - 1)
    }

    /// The hash a key was stored under ([`key_hash`] of its bytes).
    ///
    /// [`key_hash`]: crate::view::partials::key_hash
    fn hash_of(&self, key: u64) -> u64 {
        if key >> 56 == LONG {
            long_key(&self.arena, offset_of(key)).0
        } else {
            let (word, len) = inline_key(key);
            short_hash(word, len)
        }
    }

    /// `n` free entries.
    fn free_entries(&self, n: usize) -> Vec<Entry<S>> {
        vec![
            Entry {
                key: FREE,
                state: self.zero.clone(),
            };
            n
        ]
    }

    /// Puts `e`, whose key is not in the table, at the first free entry
    /// from its home.
    fn place(&mut self, e: Entry<S>) {
        let mask = self.entries.len() - 1;
        let mut i = self.home(self.hash_of(e.key));
        while self.entries[i].key != FREE {
            i = (i + 1) & mask;
        }
        self.entries[i] = e;
    }

    /// Grows to `capacity` entries (a power of two), moving every key.
    fn resize(&mut self, capacity: usize) {
        let fresh = self.free_entries(capacity);
        let old = std::mem::replace(&mut self.entries, fresh);
        for e in old.into_iter().filter(|e| e.key != FREE) {
            self.place(e);
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

    /// Starts loading the entries where a key of hash `hash` is looked for
    /// first; see [`slot_hashed`](Self::slot_hashed).
    #[inline]
    pub(crate) fn prefetch(&self, hash: u64) {
        if let Some(e) = self.entries.get(self.home(hash)) {
            prefetch(e);
        }
    }

    /// The state of `key` (the zero state when the key is new).
    #[inline]
    pub(crate) fn slot(&mut self, key: &str) -> &mut S {
        let (hash, word) = hash_and_word(key.as_bytes());
        self.slot_hashed(hash, word, key)
    }

    /// [`slot`](Self::slot) with the key's [`hash_and_word`] already
    /// computed.
    #[inline]
    pub(crate) fn slot_hashed(&mut self, hash: u64, word: u64, key: &str) -> &mut S {
        if (self.used + 1) * 2 > self.entries.len() {
            let capacity = (self.entries.len() * 2).max(16).max(self.planned);
            self.planned = 0;
            self.resize(capacity);
        }
        let bytes = key.as_bytes();
        let mask = self.entries.len() - 1;
        let mut i = self.home(hash);
        let inline = if bytes.len() <= SHORT {
            inline_word(word, bytes.len())
        } else {
            None
        };
        if let Some(want) = inline {
            loop {
                let found = self.entries[i].key;
                if found == want {
                    return &mut self.entries[i].state;
                }
                if found == FREE {
                    break;
                }
                i = (i + 1) & mask;
            }
            self.used += 1;
            let e = &mut self.entries[i];
            e.key = want;
            return &mut e.state;
        }
        let tag = LONG << 16 | hash >> 48;
        loop {
            let found = self.entries[i].key;
            if found == FREE {
                break;
            }
            if found >> OFFSET_BITS == tag && long_key(&self.arena, offset_of(found)).1 == bytes {
                return &mut self.entries[i].state;
            }
            i = (i + 1) & mask;
        }
        // An offset past 40 bits would take a terabyte of distinct keys in
        // one task's arena: memory runs out long before.
        let at = self.arena.len() as u64;
        self.arena.extend_from_slice(&hash.to_le_bytes());
        self.arena
            .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        self.arena.extend_from_slice(bytes);
        self.long_bytes += bytes.len();
        self.used += 1;
        let e = &mut self.entries[i];
        e.key = tag << OFFSET_BITS | at;
        &mut e.state
    }

    /// Bytes of the keys kept outside the entries.
    pub(crate) fn arena_bytes(&self) -> usize {
        self.long_bytes
    }

    /// Calls `f(hash, key, state)` for every key, with the hash it was
    /// stored under ([`key_hash`] of the key).
    ///
    /// [`key_hash`]: crate::view::partials::key_hash
    pub(crate) fn drain(self, mut f: impl FnMut(u64, &str, S)) {
        for e in self.entries.into_iter().filter(|e| e.key != FREE) {
            if e.key >> 56 == LONG {
                let (hash, bytes) = long_key(&self.arena, offset_of(e.key));
                // Each long key was a `&str`: valid, checked once per key
                // and task.
                match std::str::from_utf8(bytes) {
                    Ok(key) => f(hash, key, e.state),
                    Err(_) => f(hash, &String::from_utf8_lossy(bytes), e.state),
                }
            } else {
                let (word, len) = inline_key(e.key);
                let bytes = word.to_le_bytes();
                match std::str::from_utf8(&bytes[..len]) {
                    Ok(key) => f(short_hash(word, len), key, e.state),
                    Err(_) => {
                        let key = String::from_utf8_lossy(&bytes[..len]);
                        f(
                            crate::view::partials::key_hash(key.as_bytes()),
                            &key,
                            e.state,
                        )
                    }
                }
            }
        }
    }

    /// Every key, as text, with its state.
    pub(crate) fn into_entries(self) -> impl Iterator<Item = (String, S)> {
        let mut out = Vec::with_capacity(self.used);
        self.drain(|_, k, s| out.push((k.to_owned(), s)));
        out.into_iter()
    }

    /// The same keys with every state converted. Every key is placed
    /// again: where a probe starts depends on the entry's size.
    pub(crate) fn map_states<T: Clone>(self, f: impl Fn(S) -> T) -> TextTable<T> {
        let TextTable {
            entries,
            planned,
            used,
            arena,
            long_bytes,
            zero,
        } = self;
        let mut out = TextTable {
            entries: Vec::new(),
            planned,
            used,
            arena,
            long_bytes,
            zero: f(zero),
        };
        if !entries.is_empty() {
            out.entries = out.free_entries(entries.len());
            for e in entries.into_iter().filter(|e| e.key != FREE) {
                out.place(Entry {
                    key: e.key,
                    state: f(e.state),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::view::partials::key_hash;

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

    /// Keys at the edges of the word encoding: a 7-byte key and the 8-byte
    /// keys that extend it with a byte below 8 (encoded long) or from 8 up
    /// (inline), trailing zero bytes, the empty key, non-ASCII bytes.
    #[test]
    fn keys_that_differ_in_length_or_last_byte_stay_apart() {
        let mut keys: Vec<String> = vec![
            String::new(),
            "\0".into(),
            "\0\0".into(),
            "abc".into(),
            "abc\0".into(),
            "abcdefg".into(),
            "abcdefgh".into(),
            "abcdefg\u{7f}".into(),
            "aé".into(),
            "ñandú".into(),
            "日本語".into(),
            "ü\0\0\0\0\0\0".into(),
        ];
        keys.extend((0u8..16).map(|b| format!("abcdefg{}", char::from(b))));
        keys.extend((0u8..16).map(|b| format!("{}bcdefg", char::from(b))));
        let mut table: TextTable<i64> = TextTable::new(0);
        for (i, k) in keys.iter().enumerate() {
            for _ in 0..=i {
                *table.slot(k) += 1;
            }
        }
        assert_eq!(table.len(), keys.len());
        let mut got = BTreeMap::new();
        table.drain(|h, k, n| {
            assert_eq!(h, key_hash(k.as_bytes()), "{k:?}");
            got.insert(k.to_owned(), n);
        });
        let want: BTreeMap<String, i64> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), i as i64 + 1))
            .collect();
        assert_eq!(got, want);
    }

    /// A table whose states change size (an integer sum promoted to a
    /// wider one) still finds every key: probes start at a different
    /// entry for another entry size.
    #[test]
    fn converted_tables_find_every_key() {
        let keys: Vec<String> = (0..5000)
            .map(|i| match i % 3 {
                0 => format!("k{i}"),
                1 => format!("a longer key number {i}"),
                _ => format!("{i:08}"),
            })
            .collect();
        let mut table: TextTable<i64> = TextTable::new(0);
        for (i, k) in keys.iter().enumerate() {
            *table.slot(k) += i as i64;
        }
        let mut wide: TextTable<[i64; 3]> = table.map_states(|n| [n, 0, 0]);
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(wide.slot(k)[0], i as i64, "{k}");
        }
        assert_eq!(wide.len(), keys.len());
        let mut back: TextTable<i64> = wide.map_states(|s| s[0]);
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(*back.slot(k), i as i64, "{k}");
        }
        assert_eq!(back.len(), keys.len());
    }
}
