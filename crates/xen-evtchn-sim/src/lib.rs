//! A deterministic simulator of Xen event channels, driven only through `xen-evtchn`'s public
//! API.
//!
//! A backend domain 0 sends a seeded workload of events to guests over interdomain channels;
//! each guest consumes them with a faithful model of Linux's upcall handler (2-level or FIFO,
//! from `xen-evtchn`'s `test-utils`); a virtual clock gives every event a latency. The report
//! counts sends, coalesced sends, deliveries and upcalls, checks that no event is lost, and
//! compares the ABIs' latency per FIFO priority class.
//!
//! ```
//! use xen_evtchn_sim::{Scenario, simulate};
//!
//! let scenario = Scenario { events: 500, ..Scenario::default() };
//! let report = simulate(&scenario)?;
//! assert!(report.passed());
//! println!("{}", report.render_text(true));
//! # Ok::<(), xen_evtchn_sim::SimError>(())
//! ```
//!
//! Modules: [`scenario`] (what to run), [`workload`] (the seeded bursts), [`engine`] (one
//! ABI on the virtual clock), [`stats`] (latency summaries), [`report`] (verdict and text),
//! [`svg`] (the chart). `docs/simulator.md` describes the model.
#![forbid(unsafe_code)]

pub mod engine;
pub mod error;
pub mod report;
pub mod scenario;
pub mod stats;
pub mod svg;
pub mod workload;

pub use engine::{AbiRun, ChannelCounts, ClassStats, RunStats, SendTiming, run_abi};
pub use error::SimError;
pub use report::{Fairness, Report};
pub use scenario::{Abi, AbiSelection, ChannelSpec, Scenario};
pub use stats::LatencyStats;
pub use svg::render_svg;
pub use workload::{Burst, Workload};

/// Runs `scenario`: draws its workload, then runs it on each selected ABI, each on a fresh
/// hypervisor.
pub fn simulate(scenario: &Scenario) -> Result<Report, SimError> {
    scenario.validate()?;
    let workload = Workload::generate(scenario);
    let runs = scenario
        .abi
        .abis()
        .into_iter()
        .map(|abi| run_abi(scenario, &workload, abi))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Report {
        scenario: scenario.clone(),
        bursts: workload.bursts.len(),
        runs,
    })
}
