//! The discrete-event engine: one ABI, one fresh hypervisor, the whole workload on a virtual
//! clock, single-threaded and deterministic.
//!
//! Domain 0 sends each burst at its virtual time through [`EventChannels::send`]. A guest VCPU
//! whose upcall the library raised (seen through the [`UpcallRecorder`]) runs the guest's
//! consumer model when it is free: the model's handled ports, in order, each cost the
//! scenario's handling time on that VCPU's clock, and an event's latency is the time its
//! handling ends minus the time of the first send it absorbed. An upcall is atomic in virtual
//! time: sends that fall while it runs are made after it and handled by the VCPU's next upcall.
//!
//! The engine keeps its own expectation of every port (outstanding since which send, or not)
//! and checks it against what the library says (`is_pending`) around each burst; after the
//! last burst it sweeps every VCPU once more, so an event left pending without an upcall is
//! found ("stranded"), and whatever is still outstanding then is lost.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xen_evtchn::abi::{DomId, EvtchnPort};
use xen_evtchn::test_utils::{FifoGuest, InMemoryGuest, TwoLevelGuest, UpcallRecorder};
use xen_evtchn::{DomainConfig, EventChannels};

use crate::error::SimError;
use crate::scenario::{Abi, Scenario};
use crate::stats::LatencyStats;
use crate::workload::Workload;

/// Domain 0's id: the privileged backend that sends every event.
pub const DOM0: DomId = 0;
/// First guest frame of the FIFO consumer model's pages (control blocks, event array).
const GUEST_FRAME_BASE: u64 = 0x1000;
/// Most passes of the final sweep over every VCPU.
const SWEEP_PASSES: usize = 4;

/// The hypervisor as the simulator builds it: every domain notifies the one recorder, called
/// directly (no dynamic dispatch on the send path).
type Hypervisor = EventChannels<Arc<UpcallRecorder>>;

/// What happened on one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelCounts {
    /// The guest domain.
    pub guest: DomId,
    /// The guest's port.
    pub port: EvtchnPort,
    /// Domain 0's port (the one sent to).
    pub dom0_port: EvtchnPort,
    /// The channel's FIFO priority.
    pub priority: u32,
    /// The guest VCPU that handles it.
    pub vcpu: u32,
    /// Sends by domain 0.
    pub sends: u64,
    /// Sends merged into an event still pending (not a delivery of their own).
    pub coalesced: u64,
    /// Events the guest handled.
    pub deliveries: u64,
}

/// The figures of one priority class (every channel with one priority value).
#[derive(Debug, Clone, PartialEq)]
pub struct ClassStats {
    /// The priority.
    pub priority: u32,
    /// Channels in the class, over all guests.
    pub channels: usize,
    /// Sends to the class.
    pub sent: u64,
    /// Of those, merged into a pending event.
    pub coalesced: u64,
    /// Events handled.
    pub delivered: u64,
    /// Their latencies.
    pub latency: LatencyStats,
}

/// The deterministic outcome of one ABI's run: identical for identical scenarios.
#[derive(Debug, Clone, PartialEq)]
pub struct RunStats {
    /// The ABI.
    pub abi: Abi,
    /// Sends by domain 0.
    pub sent: u64,
    /// Events handled by the guests (each may stand for several coalesced sends).
    pub delivered: u64,
    /// Sends merged into an event still pending.
    pub coalesced: u64,
    /// Upcalls the library requested for guest VCPUs.
    pub upcalls: u64,
    /// Times a guest VCPU ran its upcall handler (the final sweep included).
    pub handler_runs: u64,
    /// Events never handled: sent after the port's last delivery and still outstanding at the
    /// end. Must be 0.
    pub lost: u64,
    /// Events handled only by the final sweep: pending without an upcall to announce them.
    /// Must be 0.
    pub stranded: u64,
    /// Times the library's `is_pending` disagreed with the engine's expectation. Must be 0.
    pub mismatches: u64,
    /// Ports the guest handled with no send outstanding. Must be 0.
    pub spurious: u64,
    /// FIFO consumer invariant violations (`FifoGuest::check_invariants`). Must be empty.
    pub fifo_violations: Vec<String>,
    /// Latency of every delivery.
    pub latency: LatencyStats,
    /// Per priority class, in priority order (0, the most urgent, first).
    pub classes: Vec<ClassStats>,
    /// Per channel, guest-major.
    pub channels: Vec<ChannelCounts>,
    /// Virtual time when the last VCPU went idle.
    pub end_time: u64,
}

impl RunStats {
    /// True if no integrity check failed.
    pub fn passed(&self) -> bool {
        self.problems().is_empty()
    }

    /// What went wrong, one line each (empty if the run passed).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let abi = self.abi;
        for (n, what) in [
            (self.lost, "lost events"),
            (self.stranded, "events pending without an upcall"),
            (self.mismatches, "is_pending mismatches"),
            (self.spurious, "spurious deliveries"),
        ] {
            if n != 0 {
                out.push(format!("{abi}: {n} {what}"));
            }
        }
        if self.sent != self.delivered + self.coalesced + self.lost {
            out.push(format!(
                "{abi}: sent {} != delivered {} + coalesced {} + lost {}",
                self.sent, self.delivered, self.coalesced, self.lost
            ));
        }
        out.extend(self.fifo_violations.iter().map(|v| format!("{abi}: {v}")));
        out
    }

    /// The (guest, port) pairs that had at least one delivery.
    pub fn delivered_pairs(&self) -> BTreeSet<(DomId, EvtchnPort)> {
        self.channels
            .iter()
            .filter(|c| c.deliveries > 0)
            .map(|c| (c.guest, c.port))
            .collect()
    }

    /// The class with `priority`, if any channel has it.
    pub fn class(&self, priority: u32) -> Option<&ClassStats> {
        self.classes.iter().find(|c| c.priority == priority)
    }
}

/// Host wall-clock time spent inside `EventChannels::send` (a side figure: it depends on the
/// machine and its load, unlike everything else).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SendTiming {
    /// Sends timed.
    pub sends: u64,
    /// Time spent in them, measured per burst.
    pub total: Duration,
}

impl SendTiming {
    /// Mean nanoseconds per send (0 without sends).
    pub fn ns_per_send(&self) -> f64 {
        if self.sends == 0 {
            0.0
        } else {
            self.total.as_nanos() as f64 / self.sends as f64
        }
    }
}

/// One ABI's run: the deterministic figures and the wall-clock side figure.
#[derive(Debug, Clone, PartialEq)]
pub struct AbiRun {
    /// Deterministic outcome.
    pub stats: RunStats,
    /// Send cost on this host.
    pub timing: SendTiming,
}

/// A guest's consumer model.
#[derive(Debug)]
enum Consumer {
    TwoLevel(TwoLevelGuest),
    Fifo(FifoGuest),
}

impl Consumer {
    fn upcall(&mut self, vcpu: u32) -> Vec<EvtchnPort> {
        match self {
            Consumer::TwoLevel(g) => g.upcall(vcpu),
            Consumer::Fifo(g) => g.upcall(vcpu),
        }
    }
}

/// Runs `workload` of `scenario` over `abi` on a fresh hypervisor.
pub fn run_abi(scenario: &Scenario, workload: &Workload, abi: Abi) -> Result<AbiRun, SimError> {
    scenario.validate()?;
    let mut sim = Sim::build(scenario, abi)?;
    for burst in &workload.bursts {
        sim.run_vcpus_before(burst.time);
        sim.send_burst(burst.time, &burst.sends)?;
    }
    sim.run_vcpus_before(u64::MAX);
    sim.sweep();
    sim.finish()
}

/// The state of one run.
#[derive(Debug)]
struct Sim {
    abi: Abi,
    ec: Hypervisor,
    recorder: Arc<UpcallRecorder>,
    vcpus: u32,
    handling_cost: u64,
    /// Per guest (index = domid - 1).
    consumers: Vec<Consumer>,
    /// Per channel (guest-major).
    channels: Vec<ChannelCounts>,
    /// Per channel: virtual time of the first send not yet delivered.
    outstanding: Vec<Option<u64>>,
    /// Per channel: its priority class's index.
    class_of: Vec<usize>,
    /// The distinct priorities, ascending.
    priorities: Vec<u32>,
    /// Per class: latency samples.
    samples: Vec<Vec<u64>>,
    /// (guest, guest port) → channel.
    by_port: HashMap<(DomId, EvtchnPort), usize>,
    /// Per VCPU (guest-major): when it is free again.
    free_at: Vec<u64>,
    /// Per VCPU: whether an upcall is waiting for it.
    raised: Vec<bool>,
    /// Raised VCPUs by (start time, VCPU index).
    runnable: BTreeSet<(u64, usize)>,
    /// Per channel / per VCPU: the burst that last looked at it (dedup stamps).
    channel_stamp: Vec<u64>,
    vcpu_stamp: Vec<u64>,
    bursts_seen: u64,
    sent: u64,
    coalesced: u64,
    upcalls: u64,
    handler_runs: u64,
    stranded: u64,
    mismatches: u64,
    spurious: u64,
    timing: SendTiming,
}

fn guest_id(index: usize) -> DomId {
    // Scenario::validate bounds the guests far below DomId::MAX.
    (index + 1) as DomId
}

impl Sim {
    /// Creates domain 0 and the guests, switches them to FIFO if asked (as Linux does at
    /// boot: a control block per VCPU, event-array pages as ports appear), and binds every
    /// channel: the guest offers a port, domain 0 binds it, the guest moves it to its VCPU and
    /// sets its priority.
    fn build(scenario: &Scenario, abi: Abi) -> Result<Self, SimError> {
        let recorder = Arc::new(UpcallRecorder::new());
        let ec = Hypervisor::with_upcall_type();
        let hv = |what: &str| {
            let what = what.to_owned();
            move |e| SimError::hypervisor(what, e)
        };
        ec.create_domain(
            DOM0,
            DomainConfig::with_upcall(1, recorder.clone())
                .privileged(true)
                .hardware(true)
                .max_evtchn_port(u32::MAX),
        )
        .map_err(hv("creating domain 0"))?;
        ec.set_paused(DOM0, false)
            .map_err(hv("unpausing domain 0"))?;

        let mut priorities: Vec<u32> = scenario.channels.iter().map(|c| c.priority).collect();
        priorities.sort_unstable();
        priorities.dedup();
        let class_index = |p: u32| priorities.iter().position(|&q| q == p).unwrap_or(0);

        let mut consumers = Vec::new();
        let mut channels = Vec::new();
        let mut class_of = Vec::new();
        let mut by_port = HashMap::new();
        for g in 0..usize::from(scenario.guests) {
            let domid = guest_id(g);
            let memory = Arc::new(InMemoryGuest::new());
            ec.create_domain(
                domid,
                DomainConfig::with_upcall(scenario.vcpus, recorder.clone())
                    .guest_memory(memory.clone()),
            )
            .map_err(hv(&format!("creating domain {domid}")))?;
            ec.set_paused(domid, false)
                .map_err(hv(&format!("unpausing domain {domid}")))?;
            let mut consumer = match abi {
                Abi::TwoLevel => Consumer::TwoLevel(TwoLevelGuest::new(&ec, domid, scenario.vcpus)),
                Abi::Fifo => Consumer::Fifo(
                    FifoGuest::new(&ec, &memory, domid, scenario.vcpus, GUEST_FRAME_BASE)
                        .map_err(hv(&format!("switching domain {domid} to FIFO")))?,
                ),
            };
            for spec in &scenario.channels {
                let ctx =
                    |what: &str| format!("domain {domid}, channel {}: {what}", channels.len());
                let port = ec
                    .alloc_unbound(domid, domid, DOM0)
                    .map_err(hv(&ctx("alloc_unbound")))?;
                if let Consumer::Fifo(f) = &mut consumer {
                    f.ensure_port(&ec, port).map_err(hv(&ctx("expand_array")))?;
                    f.unmask(&ec, port);
                }
                let dom0_port = ec
                    .bind_interdomain(DOM0, domid, port)
                    .map_err(hv(&ctx("bind_interdomain")))?;
                if spec.vcpu != 0 {
                    ec.bind_vcpu(domid, port, spec.vcpu)
                        .map_err(hv(&ctx("bind_vcpu")))?;
                }
                match &mut consumer {
                    Consumer::TwoLevel(t) => t.bind_to_cpu(port, spec.vcpu),
                    Consumer::Fifo(f) => {
                        ec.set_priority(domid, port, spec.priority)
                            .map_err(hv(&ctx("set_priority")))?;
                        f.expect_route(port, spec.vcpu, spec.priority);
                    }
                }
                by_port.insert((domid, port), channels.len());
                class_of.push(class_index(spec.priority));
                channels.push(ChannelCounts {
                    guest: domid,
                    port,
                    dom0_port,
                    priority: spec.priority,
                    vcpu: spec.vcpu,
                    sends: 0,
                    coalesced: 0,
                    deliveries: 0,
                });
            }
            consumers.push(consumer);
        }
        // Each bind raised domain 0's new port once; domain 0 takes its upcall, and the run
        // starts with no upcall recorded.
        TwoLevelGuest::new(&ec, DOM0, 1).upcall(0);
        recorder.take(DOM0, 0);
        for g in 0..usize::from(scenario.guests) {
            for v in 0..scenario.vcpus {
                recorder.take(guest_id(g), v);
            }
        }

        let nvcpus = usize::from(scenario.guests) * scenario.vcpus as usize;
        let nchannels = channels.len();
        Ok(Sim {
            abi,
            ec,
            recorder,
            vcpus: scenario.vcpus,
            handling_cost: scenario.handling_cost,
            consumers,
            outstanding: vec![None; nchannels],
            channels,
            class_of,
            samples: vec![Vec::new(); priorities.len()],
            priorities,
            by_port,
            free_at: vec![0; nvcpus],
            raised: vec![false; nvcpus],
            runnable: BTreeSet::new(),
            channel_stamp: vec![0; nchannels],
            vcpu_stamp: vec![0; nvcpus],
            bursts_seen: 0,
            sent: 0,
            coalesced: 0,
            upcalls: 0,
            handler_runs: 0,
            stranded: 0,
            mismatches: 0,
            spurious: 0,
            timing: SendTiming::default(),
        })
    }

    fn vcpu_index(&self, channel: usize) -> usize {
        let c = &self.channels[channel];
        usize::from(c.guest - 1) * self.vcpus as usize + c.vcpu as usize
    }

    /// Whether the library shows `channel`'s guest port pending; a query error counts as a
    /// mismatch.
    fn library_pending(&mut self, channel: usize) -> bool {
        let c = &self.channels[channel];
        match self.ec.is_pending(c.guest, c.port) {
            Ok(p) => p,
            Err(_) => {
                self.mismatches += 1;
                false
            }
        }
    }

    /// Domain 0 sends `sends` at virtual time `time`.
    fn send_burst(&mut self, time: u64, sends: &[usize]) -> Result<(), SimError> {
        self.bursts_seen += 1;
        let stamp = self.bursts_seen;
        // Before: the library agrees with the engine on which ports are outstanding.
        for &c in sends {
            if self.channel_stamp[c] != stamp {
                self.channel_stamp[c] = stamp;
                if self.library_pending(c) != self.outstanding[c].is_some() {
                    self.mismatches += 1;
                }
            }
        }
        for &c in sends {
            let ch = &mut self.channels[c];
            ch.sends += 1;
            if self.outstanding[c].is_some() {
                ch.coalesced += 1;
                self.coalesced += 1;
            } else {
                self.outstanding[c] = Some(time);
            }
        }
        self.sent += sends.len() as u64;
        let start = Instant::now();
        for &c in sends {
            let port = self.channels[c].dom0_port;
            self.ec
                .send(DOM0, port)
                .map_err(|e| SimError::hypervisor(format!("domain 0 send on port {port}"), e))?;
        }
        self.timing.total += start.elapsed();
        self.timing.sends += sends.len() as u64;
        // After: every port sent to is pending; the VCPUs it raised become runnable.
        for &c in sends {
            if self.channel_stamp[c] == stamp {
                self.channel_stamp[c] = 0;
                if !self.library_pending(c) {
                    self.mismatches += 1;
                }
            }
            let v = self.vcpu_index(c);
            if self.vcpu_stamp[v] != stamp {
                self.vcpu_stamp[v] = stamp;
                self.poll_upcall(v, time);
            }
        }
        Ok(())
    }

    /// Takes the upcalls recorded for VCPU `v`; if any, it becomes runnable from `time` (or
    /// when it is free).
    fn poll_upcall(&mut self, v: usize, time: u64) {
        let (domid, vcpu) = self.vcpu_id(v);
        let n = self.recorder.take(domid, vcpu);
        if n > 0 {
            self.upcalls += n;
            if !self.raised[v] {
                self.raised[v] = true;
                self.runnable.insert((time.max(self.free_at[v]), v));
            }
        }
    }

    fn vcpu_id(&self, v: usize) -> (DomId, u32) {
        let per = self.vcpus as usize;
        (guest_id(v / per), (v % per) as u32)
    }

    /// Runs, in start-time order, every raised VCPU that starts before `limit` (a burst at
    /// the same instant is sent first).
    fn run_vcpus_before(&mut self, limit: u64) {
        while let Some(&(start, v)) = self.runnable.first() {
            if start >= limit {
                break;
            }
            self.runnable.remove(&(start, v));
            self.raised[v] = false;
            let end = self.handle(v, start, false);
            // Nothing is sent during a handler, but a raise would still be honoured.
            self.poll_upcall(v, end);
        }
    }

    /// VCPU `v` runs its upcall handler at `start`; returns when it is done.
    fn handle(&mut self, v: usize, start: u64, sweeping: bool) -> u64 {
        let (domid, vcpu) = self.vcpu_id(v);
        self.handler_runs += 1;
        let ports = match self.consumers.get_mut(usize::from(domid - 1)) {
            Some(c) => c.upcall(vcpu),
            None => Vec::new(),
        };
        let mut clock = start;
        for port in ports {
            clock = clock.saturating_add(self.handling_cost);
            if sweeping {
                self.stranded += 1;
            }
            self.deliver(domid, port, clock);
        }
        self.free_at[v] = clock;
        clock
    }

    fn deliver(&mut self, domid: DomId, port: EvtchnPort, time: u64) {
        let Some(&c) = self.by_port.get(&(domid, port)) else {
            self.spurious += 1;
            return;
        };
        match self.outstanding[c].take() {
            Some(first) => {
                self.channels[c].deliveries += 1;
                self.samples[self.class_of[c]].push(time.saturating_sub(first));
            }
            None => self.spurious += 1,
        }
    }

    /// After the last burst and the last raised upcall: every VCPU runs its handler again
    /// (at most a few passes) whether or not an upcall was raised.
    fn sweep(&mut self) {
        for _ in 0..SWEEP_PASSES {
            let before = self.stranded;
            for v in 0..self.free_at.len() {
                let at = self.free_at[v];
                self.handle(v, at, true);
                self.poll_upcall(v, at);
            }
            self.run_vcpus_before(u64::MAX);
            if self.stranded == before {
                break;
            }
        }
    }

    fn finish(mut self) -> Result<AbiRun, SimError> {
        let mut lost = 0;
        for c in 0..self.channels.len() {
            let outstanding = self.outstanding[c].is_some();
            if outstanding {
                lost += 1;
            }
            if self.library_pending(c) != outstanding {
                self.mismatches += 1;
            }
        }
        let mut fifo_violations = Vec::new();
        for (g, consumer) in self.consumers.iter().enumerate() {
            if let Consumer::Fifo(f) = consumer {
                if let Err(e) = f.check_invariants() {
                    fifo_violations.push(format!("domain {}: {e}", guest_id(g)));
                }
            }
        }
        let mut all: Vec<u64> = self.samples.iter().flatten().copied().collect();
        let classes = self
            .priorities
            .iter()
            .zip(self.samples.iter_mut())
            .enumerate()
            .map(|(i, (&priority, samples))| {
                let members = || {
                    self.channels
                        .iter()
                        .zip(&self.class_of)
                        .filter(move |&(_, &k)| k == i)
                        .map(|(c, _)| c)
                };
                ClassStats {
                    priority,
                    channels: members().count(),
                    sent: members().map(|c| c.sends).sum(),
                    coalesced: members().map(|c| c.coalesced).sum(),
                    delivered: members().map(|c| c.deliveries).sum(),
                    latency: LatencyStats::from_samples(samples),
                }
            })
            .collect();
        let stats = RunStats {
            abi: self.abi,
            sent: self.sent,
            delivered: self.channels.iter().map(|c| c.deliveries).sum(),
            coalesced: self.coalesced,
            upcalls: self.upcalls,
            handler_runs: self.handler_runs,
            lost,
            stranded: self.stranded,
            mismatches: self.mismatches,
            spurious: self.spurious,
            fifo_violations,
            latency: LatencyStats::from_samples(&mut all),
            classes,
            channels: self.channels,
            end_time: self.free_at.iter().copied().max().unwrap_or(0),
        };
        Ok(AbiRun {
            stats,
            timing: self.timing,
        })
    }
}
