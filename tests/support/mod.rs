//! Helpers shared by the engine's streaming tests (`mod support;`).

#![allow(dead_code)]

/// SplitMix64: a small seeded generator for reproducible random batches.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 for n = 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Ranks `0..n` with probability proportional to 1/(rank+1) (Zipf, s = 1),
/// by inverting the cumulative distribution: the word frequencies of the
/// benchmarks.
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 1..=n {
            total += 1.0 / k as f64;
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Zipf { cdf }
    }

    /// The rank for a uniform draw `u` in `[0, 1)`.
    pub fn rank(&self, u: f64) -> usize {
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// What a server would have stored of a program's operator state: per
/// operator, each key's encoded state.
pub type Stored = std::collections::BTreeMap<String, std::collections::BTreeMap<Vec<u8>, Vec<u8>>>;

/// Applies a batch's reported state changes to `stored`, as the server's
/// commit does.
pub fn apply_changes(stored: &mut Stored, outcome: &lamina::streaming::BatchOutcome) {
    for delta in &outcome.state {
        let op = stored.entry(delta.operator.clone()).or_default();
        for c in &delta.changes {
            match &c.state {
                Some(v) => op.insert(c.key.clone(), v.clone()),
                None => op.remove(&c.key),
            };
        }
    }
}

/// Hands every stateful operator of `ssc` its `stored` state, as a
/// server's start-up does.
pub fn restore_all(
    ssc: &lamina::streaming::StreamingContext,
    stored: &Stored,
) -> lamina::Result<()> {
    for op in ssc.stateful_operators() {
        let entries = stored.get(&op.name).cloned().unwrap_or_default();
        ssc.restore_state(&op.name, &mut entries.into_iter())?;
    }
    Ok(())
}
