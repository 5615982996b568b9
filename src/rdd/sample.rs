//! `sample`: a random subset, the same on every recomputation.

use crate::rdd::{BoxIter, Data, Rdd};

/// SplitMix64: a small, fast generator with good statistical quality. Seeded
/// per partition so that a recomputed partition draws the same sample
/// (lineage recovery must reproduce data exactly).
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A Poisson-distributed count with mean `lambda` (Knuth's method; fine
    /// for the small means sampling uses).
    fn poisson(&mut self, lambda: f64) -> usize {
        let limit = (-lambda).exp();
        let mut k = 0;
        let mut p = self.next_f64();
        while p > limit {
            k += 1;
            p *= self.next_f64();
        }
        k
    }
}

impl<T: Data> Rdd<T> {
    /// A random sample: each element is kept with probability `fraction`
    /// (without replacement), or appears a Poisson(`fraction`) number of times
    /// (with replacement). Deterministic for a given `seed`.
    pub fn sample(&self, with_replacement: bool, fraction: f64, seed: u64) -> Rdd<T> {
        let fraction = if fraction.is_finite() {
            fraction.max(0.0)
        } else {
            0.0
        };
        self.map_partitions_with_index(move |partition, input: BoxIter<'_, T>| {
            let mut rng =
                SplitMix64::new(seed ^ (partition as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
            if with_replacement {
                Box::new(input.flat_map(move |x| {
                    let n = rng.poisson(fraction);
                    std::iter::repeat_n(x, n)
                }))
            } else {
                Box::new(input.filter(move |_| rng.next_f64() < fraction))
            }
        })
    }
}
