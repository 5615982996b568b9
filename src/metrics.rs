//! Cumulative histograms for `/metrics`: lock-free to observe, rendered in
//! Prometheus's text format (`_bucket{le=…}`, `_sum`, `_count`, in seconds).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bucket bounds in seconds for work measured in milliseconds to a minute
/// (micro-batch processing, scheduling delay, end-to-end latency).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Bucket bounds in seconds for work measured in seconds to an hour (batch
/// runs).
pub const RUN_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// A histogram of durations in seconds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations `<=` each bound (not cumulative), then above the last.
    counts: Vec<AtomicU64>,
    /// The sum, in nanoseconds.
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// An empty histogram over `bounds` (increasing).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Records one observation of `seconds` (negative ones count as 0).
    pub fn observe(&self, seconds: f64) {
        let s = if seconds.is_finite() {
            seconds.max(0.0)
        } else {
            0.0
        };
        let i = self.bounds.partition_point(|&b| b < s);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add((s * 1e9) as u64, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Appends the histogram's samples as `name` with `labels` (the inside
    /// of `{…}`, empty for none): one `_bucket` per bound and `+Inf`, then
    /// `_sum` and `_count`. The `# HELP`/`# TYPE` lines are the caller's.
    pub fn render(&self, name: &str, labels: &str, out: &mut String) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Ordering::Relaxed);
            let le = match self.bounds.get(i) {
                Some(b) => format!("{b}"),
                None => "+Inf".to_owned(),
            };
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_bounds_inclusive() {
        let h = Histogram::new(&[0.1, 1.0]);
        for s in [0.05, 0.1, 0.5, 2.0, -1.0, f64::NAN] {
            h.observe(s);
        }
        let mut out = String::new();
        h.render("x_seconds", "stream=\"a\"", &mut out);
        assert_eq!(
            out,
            "x_seconds_bucket{stream=\"a\",le=\"0.1\"} 4\n\
             x_seconds_bucket{stream=\"a\",le=\"1\"} 5\n\
             x_seconds_bucket{stream=\"a\",le=\"+Inf\"} 6\n\
             x_seconds_sum{stream=\"a\"} 2.65\n\
             x_seconds_count{stream=\"a\"} 6\n"
        );
        let mut bare = String::new();
        Histogram::new(&[1.0]).render("y_seconds", "", &mut bare);
        assert!(bare.contains("y_seconds_bucket{le=\"+Inf\"} 0\ny_seconds_sum 0\n"));
    }
}
