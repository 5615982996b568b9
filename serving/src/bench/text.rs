//! The load generator's text: a vocabulary of distinct English-like words,
//! words drawn from it Zipf(s) or uniformly by rank, and lines of 8–12 words
//! generated afresh for every line sent, with a count of every word drawn.
//!
//! Built for speed, because it runs on the same cores as the server it
//! measures: a hand-written PRNG (wyrand), O(1) sampling with Vose's alias
//! method (one random number, one table entry per word), and words stored
//! in fixed 16-byte slots so that appending one is a fixed-size copy.

use std::collections::HashSet;
use std::sync::Arc;

/// A small, fast PRNG (wyrand). Not for cryptography; deterministic from
/// its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (any value, 0 included).
    pub fn new(seed: u64) -> Self {
        // One splitmix64 step, so that nearby seeds give unrelated streams.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng(z ^ (z >> 31))
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// A number in `0..n` (multiply-shift; the bias is below 2^-32 for the
    /// sizes used here).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Longest word, in letters.
pub const MAX_WORD: usize = 15;
/// A word's slot: its letters, a space, padding.
const SLOT: usize = MAX_WORD + 1;

/// Relative frequency of word lengths 1..=15 (roughly those of English
/// running text; mean ≈ 4.7 letters before short lengths run out of
/// distinct words).
const LENGTH_WEIGHTS: [u32; MAX_WORD] = [
    60, 340, 420, 320, 220, 180, 160, 120, 80, 50, 26, 14, 6, 3, 1,
];

/// `n` distinct words of lowercase ASCII letters, 1–15 letters long,
/// deterministic from a seed. Word `i` has frequency rank `i + 1`.
#[derive(Debug, Clone)]
pub struct Vocabulary {
    /// Word `i` is `slots[i][..lens[i]]`, followed by a space.
    slots: Vec<[u8; SLOT]>,
    lens: Vec<u8>,
}

impl Vocabulary {
    /// Builds `n` words. Each word's length is drawn from the length
    /// distribution, its letters uniformly; a word already taken is drawn
    /// again, and after four misses one letter longer (short lengths have
    /// few words: 26 of one letter, 676 of two), so every word is distinct.
    pub fn new(n: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0x766f_6361_6275_6c61);
        let total: u32 = LENGTH_WEIGHTS.iter().sum();
        let mut taken: HashSet<[u8; SLOT]> = HashSet::with_capacity(n);
        let mut slots = Vec::with_capacity(n);
        let mut lens = Vec::with_capacity(n);
        for _ in 0..n {
            let mut pick = rng.below(u64::from(total)) as u32;
            let mut len = 1;
            for (i, &w) in LENGTH_WEIGHTS.iter().enumerate() {
                if pick < w {
                    len = i + 1;
                    break;
                }
                pick -= w;
            }
            let mut misses = 0;
            loop {
                let mut slot = [0u8; SLOT];
                for b in &mut slot[..len] {
                    *b = b'a' + rng.below(26) as u8;
                }
                slot[len] = b' ';
                if taken.insert(slot) {
                    slots.push(slot);
                    lens.push(len as u8);
                    break;
                }
                misses += 1;
                if misses == 4 && len < MAX_WORD {
                    len += 1;
                    misses = 0;
                }
            }
        }
        Vocabulary { slots, lens }
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        self.lens.len()
    }

    /// Whether there are no words.
    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// Word `i`.
    pub fn word(&self, i: usize) -> &str {
        // Letters only: always ASCII.
        std::str::from_utf8(&self.slots[i][..usize::from(self.lens[i])]).unwrap_or("")
    }

    /// Length of word `i`.
    pub fn word_len(&self, i: usize) -> usize {
        usize::from(self.lens[i])
    }

    /// Appends word `i` and a space: a fixed 16-byte copy, then a cut.
    #[inline]
    fn push(&self, i: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.slots[i]);
        out.truncate(out.len() - SLOT + usize::from(self.lens[i]) + 1);
    }
}

/// How words are drawn by rank.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Distribution {
    /// Rank `r` (1-based) with probability ∝ `r^-s`.
    Zipf(f64),
    /// Every word equally likely.
    Uniform,
}

impl Distribution {
    /// The Zipf exponent (0 for uniform, which is Zipf with s = 0).
    pub fn exponent(self) -> f64 {
        match self {
            Distribution::Zipf(s) => s,
            Distribution::Uniform => 0.0,
        }
    }

    /// Probability of each of `n` ranks.
    pub fn probabilities(self, n: usize) -> Vec<f64> {
        let s = self.exponent();
        let mut p: Vec<f64> = (1..=n).map(|r| (r as f64).powf(-s)).collect();
        let sum: f64 = p.iter().sum();
        for x in &mut p {
            *x /= sum;
        }
        p
    }
}

/// Draws word indices in O(1): Vose's alias method for Zipf, one
/// multiply-shift for uniform.
#[derive(Debug, Clone)]
pub struct Sampler {
    n: u64,
    /// Per column: acceptance threshold (high 32 bits) and alias (low 32
    /// bits). Empty for uniform.
    table: Vec<u64>,
}

impl Sampler {
    /// A sampler of `n` ranks (`1 <= n < 2^32`).
    pub fn new(n: usize, dist: Distribution) -> Self {
        assert!(n > 0 && (n as u64) < (1 << 32), "vocabulary size {n}");
        if dist == Distribution::Uniform {
            return Sampler {
                n: n as u64,
                table: Vec::new(),
            };
        }
        let mut scaled: Vec<f64> = dist
            .probabilities(n)
            .into_iter()
            .map(|p| p * n as f64)
            .collect();
        // A full column keeps itself as its alias: the threshold does not
        // matter then.
        let mut table: Vec<u64> = (0..n as u64)
            .map(|i| (u64::from(u32::MAX) << 32) | i)
            .collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| scaled[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            let threshold = (scaled[s] * 4_294_967_296.0).min(f64::from(u32::MAX)) as u64;
            table[s] = (threshold << 32) | l as u64;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        Sampler { n: n as u64, table }
    }

    /// A word index from 64 random bits: the high half picks the column,
    /// the low half decides between the column and its alias.
    #[inline]
    pub fn sample(&self, r: u64) -> usize {
        let col = ((r >> 32) * self.n) >> 32;
        if self.table.is_empty() {
            return col as usize;
        }
        let e = self.table[col as usize];
        if (r as u32) < (e >> 32) as u32 {
            col as usize
        } else {
            (e & 0xffff_ffff) as usize
        }
    }
}

/// Fewest and most words in a line.
pub const LINE_WORDS: std::ops::RangeInclusive<u64> = 8..=12;

/// Generates lines and counts every word it puts in them.
#[derive(Debug)]
pub struct LineGen {
    vocab: Arc<Vocabulary>,
    sampler: Arc<Sampler>,
    rng: Rng,
    counts: Vec<u64>,
}

impl LineGen {
    /// A generator over `vocab` drawing with `sampler`, seeded with `seed`.
    pub fn new(vocab: Arc<Vocabulary>, sampler: Arc<Sampler>, seed: u64) -> Self {
        let counts = vec![0; vocab.len()];
        LineGen {
            vocab,
            sampler,
            rng: Rng::new(seed),
            counts,
        }
    }

    /// Appends one line of 8–12 words and its newline to `out`.
    #[inline]
    pub fn push_line(&mut self, out: &mut Vec<u8>) {
        let span = LINE_WORDS.end() - LINE_WORDS.start() + 1;
        let words = LINE_WORDS.start() + self.rng.below(span);
        for _ in 0..words {
            let i = self.sampler.sample(self.rng.next_u64());
            self.counts[i] += 1;
            self.vocab.push(i, out);
        }
        // The last word's space becomes the newline.
        if let Some(last) = out.last_mut() {
            *last = b'\n';
        }
    }

    /// How often each word was drawn so far.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// The counts, giving the generator up.
    pub fn into_counts(self) -> Vec<u64> {
        self.counts
    }
}

/// Expected number of distinct words among `draws` words.
pub fn expected_distinct(probabilities: &[f64], draws: f64) -> f64 {
    probabilities
        .iter()
        .map(|&p| 1.0 - (draws * (-p).ln_1p()).exp())
        .sum()
}

/// Lines per second one thread generates (into a reused buffer, as the
/// senders do), measured for about `secs` seconds.
pub fn lines_per_second(vocab: &Arc<Vocabulary>, sampler: &Arc<Sampler>, secs: f64) -> f64 {
    let mut g = LineGen::new(Arc::clone(vocab), Arc::clone(sampler), 0x5eed);
    let mut out = Vec::with_capacity(1 << 20);
    let start = std::time::Instant::now();
    let mut lines = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        out.clear();
        for _ in 0..4096 {
            g.push_line(&mut out);
        }
        lines += 4096;
    }
    std::hint::black_box(&out);
    lines as f64 / start.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generator(n: usize, dist: Distribution, seed: u64) -> LineGen {
        LineGen::new(
            Arc::new(Vocabulary::new(n, 7)),
            Arc::new(Sampler::new(n, dist)),
            seed,
        )
    }

    #[test]
    fn vocabulary_words_are_distinct_lowercase_and_english_like() {
        for n in [1, 26, 700, 100_000] {
            let v = Vocabulary::new(n, 1);
            assert_eq!(v.len(), n);
            let words: HashSet<&str> = (0..n).map(|i| v.word(i)).collect();
            assert_eq!(words.len(), n, "distinct words of {n}");
            for w in &words {
                assert!((1..=MAX_WORD).contains(&w.len()), "{w:?}");
                assert!(w.bytes().all(|b| b.is_ascii_lowercase()), "{w:?}");
            }
        }
        let v = Vocabulary::new(100_000, 1);
        let mean = (0..v.len()).map(|i| v.word_len(i)).sum::<usize>() as f64 / v.len() as f64;
        assert!((4.5..6.5).contains(&mean), "mean length {mean}");
    }

    #[test]
    fn deterministic_for_a_seed() {
        let a = Vocabulary::new(5000, 3);
        let b = Vocabulary::new(5000, 3);
        let c = Vocabulary::new(5000, 4);
        assert!((0..5000).all(|i| a.word(i) == b.word(i)));
        assert!((0..5000).any(|i| a.word(i) != c.word(i)));
        let lines = |seed| {
            let mut g = generator(5000, Distribution::Zipf(1.0), seed);
            let mut out = Vec::new();
            for _ in 0..100 {
                g.push_line(&mut out);
            }
            out
        };
        assert_eq!(lines(9), lines(9));
        assert_ne!(lines(9), lines(10));
    }

    #[test]
    fn lines_have_8_to_12_vocabulary_words_and_the_counts_match() {
        let mut g = generator(1000, Distribution::Zipf(1.0), 5);
        let mut out = Vec::new();
        let mut seen_lengths = HashSet::new();
        for _ in 0..2000 {
            g.push_line(&mut out);
        }
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.ends_with('\n'));
        let mut counts = vec![0u64; 1000];
        let index: std::collections::HashMap<&str, usize> =
            (0..1000).map(|i| (g.vocab.word(i), i)).collect();
        for line in text.lines() {
            let words: Vec<&str> = line.split(' ').collect();
            assert!(LINE_WORDS.contains(&(words.len() as u64)), "{line:?}");
            seen_lengths.insert(words.len());
            for w in words {
                counts[index[w]] += 1;
            }
        }
        assert_eq!(seen_lengths.len(), 5);
        assert_eq!(counts, g.counts());
    }

    #[test]
    fn zipf_rank_1_is_about_10_times_rank_10() {
        let mut g = generator(1000, Distribution::Zipf(1.0), 11);
        let mut out = Vec::new();
        for _ in 0..100_000 {
            out.clear();
            g.push_line(&mut out);
        }
        let c = g.counts();
        let ratio = c[0] as f64 / c[9] as f64;
        assert!((8.5..11.5).contains(&ratio), "rank 1 / rank 10 = {ratio}");
        let ratio = c[0] as f64 / c[1] as f64;
        assert!((1.8..2.2).contains(&ratio), "rank 1 / rank 2 = {ratio}");
        // P(rank 1) = 1 / H(1000) ≈ 0.1336.
        let share = c[0] as f64 / c.iter().sum::<u64>() as f64;
        assert!((0.128..0.139).contains(&share), "rank 1 share {share}");
    }

    #[test]
    fn uniform_is_flat() {
        let mut g = generator(100, Distribution::Uniform, 2);
        let mut out = Vec::new();
        for _ in 0..100_000 {
            out.clear();
            g.push_line(&mut out);
        }
        let (min, max) = (
            *g.counts().iter().min().unwrap(),
            *g.counts().iter().max().unwrap(),
        );
        // ~10,000 per word; ±10 % is > 9 standard deviations.
        assert!(min > 9_000 && max < 11_000, "{min}..{max}");
    }

    #[test]
    fn alias_table_reproduces_the_probabilities() {
        let n = 50;
        let dist = Distribution::Zipf(1.3);
        let s = Sampler::new(n, dist);
        let p = dist.probabilities(n);
        // Exact probability of each outcome from the table itself.
        let mut q = vec![0.0; n];
        for (col, &e) in s.table.iter().enumerate() {
            let keep = ((e >> 32) as f64 / 4_294_967_296.0).min(1.0);
            let keep = if (e & 0xffff_ffff) as usize == col {
                1.0
            } else {
                keep
            };
            q[col] += keep / n as f64;
            q[(e & 0xffff_ffff) as usize] += (1.0 - keep) / n as f64;
        }
        for i in 0..n {
            assert!(
                (p[i] - q[i]).abs() < 1e-6,
                "rank {}: {} vs {}",
                i + 1,
                p[i],
                q[i]
            );
        }
    }

    #[test]
    fn expected_distinct_is_sane() {
        let p = Distribution::Uniform.probabilities(1000);
        assert!(expected_distinct(&p, 1.0) > 0.99 && expected_distinct(&p, 1.0) < 1.01);
        assert!(expected_distinct(&p, 1e6) > 999.9);
    }
}
