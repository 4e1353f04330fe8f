//! What to simulate: the domains, their channels to domain 0, the workload's shape and the
//! ABI(s) to run. [`Scenario::default`] is the embedded default scenario.

use std::fmt;

use crate::error::SimError;

/// Highest (least urgent) FIFO priority, as the ABI defines it.
pub const PRIORITY_LOWEST: u32 = 15;
/// Priority a FIFO port has until `EVTCHNOP_set_priority`.
pub const PRIORITY_DEFAULT: u32 = 7;
/// Most VCPUs per guest: the consumer models find `evtchn_upcall_pending` in the legacy
/// vcpu_info slots of shared_info (x86_64 has 32).
pub const MAX_VCPUS: u32 = 32;
/// Most channels per guest: a guest's ports 1..=1023 (Xen's default `max_evtchn_port`).
pub const MAX_CHANNELS_PER_GUEST: usize = 1023;
/// Most channels over all guests: domain 0's 2-level ports 1..=4095 (x86_64).
pub const MAX_CHANNELS_TOTAL: usize = 4095;
/// Most guest domains.
pub const MAX_GUESTS: u16 = 1000;

/// One of the two event channel ABIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Abi {
    /// The 2-level ABI: bitmaps in shared_info, no priorities.
    TwoLevel,
    /// The FIFO ABI: per-VCPU queues, 16 priorities.
    Fifo,
}

impl Abi {
    /// The name the library reports (`EventChannels::abi_name`).
    pub fn name(self) -> &'static str {
        match self {
            Abi::TwoLevel => "2-level",
            Abi::Fifo => "FIFO",
        }
    }
}

impl fmt::Display for Abi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which ABI(s) a scenario runs; with both, 2-level runs first, each on a fresh hypervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbiSelection {
    /// Only the 2-level ABI.
    TwoLevel,
    /// Only the FIFO ABI.
    Fifo,
    /// The 2-level ABI, then the FIFO ABI.
    Both,
}

impl AbiSelection {
    /// The ABIs to run, in order.
    pub fn abis(self) -> Vec<Abi> {
        match self {
            AbiSelection::TwoLevel => vec![Abi::TwoLevel],
            AbiSelection::Fifo => vec![Abi::Fifo],
            AbiSelection::Both => vec![Abi::TwoLevel, Abi::Fifo],
        }
    }
}

/// One interdomain channel between domain 0 and a guest, as the guest configures it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelSpec {
    /// FIFO priority, 0 (most urgent) to 15; ignored by the 2-level ABI.
    pub priority: u32,
    /// The guest VCPU that handles the channel's events (`EVTCHNOP_bind_vcpu`).
    pub vcpu: u32,
}

/// A complete description of one simulation.
///
/// Virtual time is counted in ticks. Domain 0 is the privileged backend and only sends; the
/// guests are domains 1..=`guests`, each with the same `channels`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// Number of guest domains.
    pub guests: u16,
    /// VCPUs per guest.
    pub vcpus: u32,
    /// Every guest's channels to domain 0.
    pub channels: Vec<ChannelSpec>,
    /// Sends by domain 0 over the whole run.
    pub events: u64,
    /// Mean number of sends per burst (sizes are uniform in `1..=2*mean-1`).
    pub mean_burst: u64,
    /// Mean virtual time between bursts (gaps are uniform in `0..=2*mean`).
    pub mean_gap: u64,
    /// Virtual time a guest VCPU spends handling one event.
    pub handling_cost: u64,
    /// Seed of the workload's pseudo-random generator.
    pub seed: u64,
    /// ABI(s) to run.
    pub abi: AbiSelection,
}

/// Priorities of the default scenario's 8 channels per guest: two urgent, four at the
/// default priority, two bulk.
pub const DEFAULT_PRIORITIES: [u32; 8] = [0, 0, 7, 7, 7, 7, 12, 12];

impl Default for Scenario {
    /// The embedded default: 2 guests x 2 VCPUs, 8 channels each (priorities 0, 0, 7, 7, 7, 7,
    /// 12, 12, spread round-robin over the VCPUs so each VCPU has every class), 20 000 events
    /// in bursts of 16 on average every 250 ticks, 100 ticks of handling per event: the
    /// guests' VCPUs are busy most of the time and queues build up.
    fn default() -> Self {
        Scenario::standard(2, 2)
    }
}

impl Scenario {
    /// The default scenario with `guests` guests of `vcpus` VCPUs (channels re-spread over the
    /// VCPUs).
    pub fn standard(guests: u16, vcpus: u32) -> Self {
        Scenario {
            guests,
            vcpus,
            channels: spread(&DEFAULT_PRIORITIES, vcpus),
            events: 20_000,
            mean_burst: 16,
            mean_gap: 250,
            handling_cost: 100,
            seed: 1,
            abi: AbiSelection::Both,
        }
    }

    /// Total number of channels over all guests.
    pub fn total_channels(&self) -> usize {
        usize::from(self.guests) * self.channels.len()
    }

    /// Checks that the library and the consumer models can run the scenario.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |msg: String| Err(SimError::Scenario(msg));
        if self.guests == 0 || self.guests > MAX_GUESTS {
            return bad(format!(
                "guests must be 1..={MAX_GUESTS}, not {}",
                self.guests
            ));
        }
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return bad(format!("vcpus must be 1..={MAX_VCPUS}, not {}", self.vcpus));
        }
        if self.channels.is_empty() || self.channels.len() > MAX_CHANNELS_PER_GUEST {
            return bad(format!(
                "channels per guest must be 1..={MAX_CHANNELS_PER_GUEST}, not {}",
                self.channels.len()
            ));
        }
        if self.total_channels() > MAX_CHANNELS_TOTAL {
            return bad(format!(
                "{} channels in all, but domain 0 has {MAX_CHANNELS_TOTAL} ports",
                self.total_channels()
            ));
        }
        for (i, c) in self.channels.iter().enumerate() {
            if c.priority > PRIORITY_LOWEST {
                return bad(format!("channel {i}: priority {} above 15", c.priority));
            }
            if c.vcpu >= self.vcpus {
                return bad(format!("channel {i}: vcpu {} does not exist", c.vcpu));
            }
        }
        if self.mean_burst == 0 {
            return bad("mean_burst must be at least 1".into());
        }
        Ok(())
    }
}

/// Channels with the given priorities, the i-th handled by VCPU `i % vcpus`.
pub fn spread(priorities: &[u32], vcpus: u32) -> Vec<ChannelSpec> {
    let vcpus = vcpus.max(1);
    priorities
        .iter()
        .zip(0u32..)
        .map(|(&priority, i)| ChannelSpec {
            priority,
            vcpu: i % vcpus,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_gives_each_vcpu_every_class() {
        let s = Scenario::default();
        assert!(s.validate().is_ok());
        for v in 0..s.vcpus {
            let mut prios: Vec<u32> = s
                .channels
                .iter()
                .filter(|c| c.vcpu == v)
                .map(|c| c.priority)
                .collect();
            prios.dedup();
            assert_eq!(prios, vec![0, 7, 12], "vcpu {v}");
        }
    }

    #[test]
    fn invalid_scenarios_are_refused() {
        let s = Scenario {
            vcpus: 0,
            ..Scenario::default()
        };
        assert!(s.validate().is_err());
        let mut s = Scenario::default();
        s.channels[0].priority = 16;
        assert!(s.validate().is_err());
        let mut s = Scenario::default();
        s.channels[0].vcpu = 2;
        assert!(s.validate().is_err());
        let mut s = Scenario::standard(600, 2);
        assert!(s.validate().is_err(), "4800 channels do not fit in dom0");
        s.guests = 500;
        assert!(s.validate().is_ok());
    }
}
