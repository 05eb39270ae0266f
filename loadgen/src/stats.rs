//! Percentiles and failure tallies for the JSON reports.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// Prints one report line on stdout; a closed stdout (the reader went away)
/// is not worth a panic.
pub fn emit(report: &Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{report}").and_then(|()| out.flush());
}

/// p50 / p99 / max of latencies in microseconds, reported in milliseconds.
pub fn summary(samples: &mut [u64]) -> Value {
    if samples.is_empty() {
        return json!({ "count": 0, "p50": null, "p99": null, "max": null });
    }
    samples.sort_unstable();
    let ms = |us: u64| (us as f64 / 10.0).round() / 100.0;
    json!({
        "count": samples.len(),
        "p50": ms(percentile(samples, 0.50)),
        "p99": ms(percentile(samples, 0.99)),
        "max": ms(samples[samples.len() - 1]),
    })
}

/// The nearest-rank percentile of sorted, non-empty samples.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Counts by label.
#[derive(Debug, Default)]
pub struct Tally(BTreeMap<String, u64>);

impl Tally {
    pub fn add(&mut self, label: impl Into<String>, n: u64) {
        *self.0.entry(label.into()).or_default() += n;
    }

    pub fn merge(&mut self, other: Tally) {
        for (label, n) in other.0 {
            self.add(label, n);
        }
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    pub fn to_json(&self) -> Value {
        json!(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let sorted: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 0.50), 50);
        assert_eq!(percentile(&sorted, 0.99), 99);
        assert_eq!(percentile(&[7], 0.99), 7);
    }

    #[test]
    fn summary_in_ms() {
        let mut samples = vec![3000, 1000, 2000];
        assert_eq!(summary(&mut samples)["p50"], json!(2.0));
        assert_eq!(summary(&mut samples)["max"], json!(3.0));
    }
}
