//! Latency statistics: mean and nearest-rank percentiles over virtual-tick samples.

/// Summary of a set of latencies, in virtual ticks.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LatencyStats {
    /// Number of samples.
    pub count: u64,
    /// Arithmetic mean (0 without samples).
    pub mean: f64,
    /// Median (nearest rank).
    pub p50: u64,
    /// 99th percentile (nearest rank).
    pub p99: u64,
    /// Largest sample.
    pub max: u64,
}

impl LatencyStats {
    /// The statistics of `samples` (sorted in place).
    pub fn from_samples(samples: &mut [u64]) -> Self {
        if samples.is_empty() {
            return LatencyStats::default();
        }
        samples.sort_unstable();
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        LatencyStats {
            count: samples.len() as u64,
            mean: sum as f64 / samples.len() as f64,
            p50: percentile(samples, 50),
            p99: percentile(samples, 99),
            max: samples.last().copied().unwrap_or(0),
        }
    }
}

/// Nearest-rank percentile `p` (1..=100) of sorted, non-empty `sorted`: the smallest sample
/// with at least `p`% of the samples at or below it.
fn percentile(sorted: &[u64], p: u64) -> u64 {
    let n = sorted.len() as u64;
    let rank = (p * n).div_ceil(100).max(1);
    sorted.get((rank - 1) as usize).copied().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_hand() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        let s = LatencyStats::from_samples(&mut v);
        assert_eq!((s.count, s.p50, s.p99, s.max), (100, 50, 99, 100));
        assert!((s.mean - 50.5).abs() < 1e-9);
        let mut one = [7];
        let s = LatencyStats::from_samples(&mut one);
        assert_eq!((s.p50, s.p99, s.max), (7, 7, 7));
        assert_eq!(LatencyStats::from_samples(&mut []).count, 0);
    }
}
