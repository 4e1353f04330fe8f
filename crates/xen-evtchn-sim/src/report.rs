//! The report of a simulation: every ABI's run, the pass/fail verdict, the fairness check and
//! the plain-text table printed on stdout.

use std::fmt::Write as _;

use crate::engine::AbiRun;
use crate::scenario::{Abi, Scenario};
use crate::stats::LatencyStats;

/// Everything a simulation produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The scenario that ran.
    pub scenario: Scenario,
    /// Bursts in its workload.
    pub bursts: usize,
    /// One run per ABI, in the order they ran.
    pub runs: Vec<AbiRun>,
}

/// FIFO's fairness: the most urgent class must see a lower p99 latency than the least urgent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fairness {
    /// Priority of the most urgent class (lowest number).
    pub high_priority: u32,
    /// Its p99 latency, in ticks.
    pub high_p99: u64,
    /// Priority of the least urgent class.
    pub low_priority: u32,
    /// Its p99 latency, in ticks.
    pub low_p99: u64,
}

impl Fairness {
    /// The urgent class's p99 is strictly below the bulk class's.
    pub fn holds(&self) -> bool {
        self.high_p99 < self.low_p99
    }
}

impl Report {
    /// The run of `abi`, if it ran.
    pub fn run(&self, abi: Abi) -> Option<&AbiRun> {
        self.runs.iter().find(|r| r.stats.abi == abi)
    }

    /// True if every run passed its integrity checks (no lost event above all).
    pub fn passed(&self) -> bool {
        self.runs.iter().all(|r| r.stats.passed())
    }

    /// Every failed check, one line each.
    pub fn problems(&self) -> Vec<String> {
        self.runs.iter().flat_map(|r| r.stats.problems()).collect()
    }

    /// The FIFO run's fairness figures (None without a FIFO run or with a single class).
    pub fn fairness(&self) -> Option<Fairness> {
        let classes = &self.run(Abi::Fifo)?.stats.classes;
        let (high, low) = (classes.first()?, classes.last()?);
        (classes.len() >= 2).then_some(Fairness {
            high_priority: high.priority,
            high_p99: high.latency.p99,
            low_priority: low.priority,
            low_p99: low.latency.p99,
        })
    }

    /// The plain-text report. `wall_clock` adds the host's send cost, the only figure that
    /// differs between two runs of the same scenario.
    pub fn render_text(&self, wall_clock: bool) -> String {
        let s = &self.scenario;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "xen-evtchn-sim: {} guests x {} VCPUs, {} channels each to domain 0; {} events in {} \
             bursts (mean {} sends, mean gap {} ticks); handling {} ticks/event; seed {}",
            s.guests,
            s.vcpus,
            s.channels.len(),
            s.events,
            self.bursts,
            s.mean_burst,
            s.mean_gap,
            s.handling_cost,
            s.seed
        );
        for run in &self.runs {
            let r = &run.stats;
            let _ = writeln!(out);
            let _ = writeln!(out, "== {} ==", r.abi);
            let _ = writeln!(
                out,
                "sent {}  delivered {}  coalesced {}  lost {}  upcalls {}  handler runs {}",
                r.sent, r.delivered, r.coalesced, r.lost, r.upcalls, r.handler_runs
            );
            let _ = writeln!(
                out,
                "checks: stranded {}  is_pending mismatches {}  spurious {}  FIFO invariant \
                 violations {}  -> {}",
                r.stranded,
                r.mismatches,
                r.spurious,
                r.fifo_violations.len(),
                if r.passed() { "ok" } else { "FAILED" }
            );
            let _ = writeln!(out, "virtual time {} ticks", r.end_time);
            let _ = writeln!(
                out,
                "{:<12} {:>5} {:>8} {:>9} {:>9} {:>9} {:>7} {:>7} {:>7}",
                "latency", "chans", "sent", "coalesced", "delivered", "mean", "p50", "p99", "max"
            );
            let total = (r.channels.len(), r.sent, r.coalesced, r.delivered);
            row(&mut out, "all", total, &r.latency);
            for c in &r.classes {
                let label = format!("priority {}", c.priority);
                let counts = (c.channels, c.sent, c.coalesced, c.delivered);
                row(&mut out, &label, counts, &c.latency);
            }
            if wall_clock {
                let _ = writeln!(
                    out,
                    "host cost: {:.1} ns per EventChannels::send (wall clock, {} sends; a side \
                     figure)",
                    run.timing.ns_per_send(),
                    run.timing.sends
                );
            }
        }
        let _ = writeln!(out);
        if let Some(f) = self.fairness() {
            let _ = writeln!(
                out,
                "fairness (FIFO): priority {} p99 {} ticks {} priority {} p99 {} ticks: {}",
                f.high_priority,
                f.high_p99,
                if f.holds() { "<" } else { ">=" },
                f.low_priority,
                f.low_p99,
                if f.holds() { "ok" } else { "NOT MET" }
            );
        }
        if self.passed() {
            let names: Vec<&str> = self.runs.iter().map(|r| r.stats.abi.name()).collect();
            let _ = writeln!(out, "result: no lost event ({})", names.join(", "));
        } else {
            let _ = writeln!(out, "result: FAILED");
            for p in self.problems() {
                let _ = writeln!(out, "  {p}");
            }
        }
        out
    }
}

fn row(out: &mut String, label: &str, counts: (usize, u64, u64, u64), l: &LatencyStats) {
    let (chans, sent, coalesced, delivered) = counts;
    let _ = writeln!(
        out,
        "{label:<12} {chans:>5} {sent:>8} {coalesced:>9} {delivered:>9} {:>9.1} {:>7} {:>7} {:>7}",
        l.mean, l.p50, l.p99, l.max
    );
}
