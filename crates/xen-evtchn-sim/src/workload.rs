//! The workload: the bursts of sends domain 0 makes, drawn once from the scenario's seed and
//! replayed identically on every ABI.

use xen_evtchn::test_utils::XorShift;

use crate::scenario::Scenario;

/// Sends made by domain 0 at one instant of virtual time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Burst {
    /// Virtual time of the sends.
    pub time: u64,
    /// The channels sent to, in order, as indices into all channels (guest-major: channel
    /// `i` of guest `g`, 0-based, is `g * channels_per_guest + i`).
    pub sends: Vec<usize>,
}

/// Every burst of a run, in time order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// The bursts.
    pub bursts: Vec<Burst>,
}

impl Workload {
    /// Draws the workload of `scenario`: bursts of `1..=2*mean_burst-1` sends (the last one
    /// cut to reach exactly `events`), each send to a channel chosen uniformly, separated by
    /// gaps uniform in `0..=2*mean_gap` ticks; the first burst comes after one gap.
    pub fn generate(scenario: &Scenario) -> Self {
        let mut rng = XorShift::new(scenario.seed);
        let channels = scenario.total_channels();
        let mut left = scenario.events;
        let mut time = 0u64;
        let mut bursts = Vec::new();
        while left > 0 && channels > 0 {
            time = time.saturating_add(between(&mut rng, 0, scenario.mean_gap.saturating_mul(2)));
            let size = between(
                &mut rng,
                1,
                scenario.mean_burst.saturating_mul(2).saturating_sub(1),
            )
            .min(left);
            left -= size;
            let sends = (0..size).map(|_| rng.below(channels)).collect();
            bursts.push(Burst { time, sends });
        }
        Workload { bursts }
    }

    /// Total number of sends.
    pub fn events(&self) -> u64 {
        self.bursts.iter().map(|b| b.sends.len() as u64).sum()
    }
}

/// A number in `lo..=hi` (`lo` if `hi <= lo`).
fn between(rng: &mut XorShift, lo: u64, hi: u64) -> u64 {
    if hi <= lo {
        lo
    } else {
        lo + rng.next_u64() % (hi - lo + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn between_stays_in_range() {
        let mut r = XorShift::new(1);
        for _ in 0..1000 {
            let x = between(&mut r, 3, 5);
            assert!((3..=5).contains(&x));
        }
        assert_eq!(between(&mut r, 9, 2), 9);
    }

    #[test]
    fn exact_event_count_and_ordered_times() {
        let s = Scenario {
            events: 1001,
            ..Scenario::default()
        };
        let w = Workload::generate(&s);
        assert_eq!(w.events(), 1001);
        assert!(w.bursts.windows(2).all(|p| p[0].time <= p[1].time));
        let n = s.total_channels();
        assert!(w.bursts.iter().flat_map(|b| &b.sends).all(|&c| c < n));
    }

    #[test]
    fn seed_decides_the_workload() {
        let s = Scenario::default();
        assert_eq!(Workload::generate(&s), Workload::generate(&s));
        let t = Scenario {
            seed: 2,
            ..s.clone()
        };
        assert_ne!(Workload::generate(&s), Workload::generate(&t));
    }
}
