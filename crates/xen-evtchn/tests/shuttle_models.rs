//! Model checking of the send path's races with [shuttle](https://docs.rs/shuttle): the
//! library's real code, whose atomics, locks, RCU slots and guest pages are shuttle's under
//! `--cfg xen_evtchn_shuttle` (`src/sync/`, `src/guest_memory.rs`; see `docs/design.md`,
//! "Concurrency model checking"), driven through the public API by 2 or 3 model threads.
//!
//! ```text
//! RUSTFLAGS="--cfg xen_evtchn_shuttle" CARGO_TARGET_DIR=target/shuttle \
//!     cargo test -p xen-evtchn --test shuttle_models --release
//! ```
//!
//! Domain 0 (the sender, a backend) has an interdomain channel to each port of domain 1 (the
//! guest). The guest consumes its events as Linux does ([`FifoGuest`], [`TwoLevelGuest`]),
//! and only when the library asked the VMM for an upcall ([`UpcallRecorder`]), so a lost
//! wake-up is a lost event. Models, each for both ABIs unless marked:
//!
//! | model | threads |
//! |---|---|
//! | `send_vs_consume` | sender (P, Q, P); guest consuming |
//! | `two_senders_same_queue` | sender of P; sender of Q (same queue / selector word); guest consuming |
//! | `send_vs_close` | sender (P, Q, P); guest closing P; guest consuming |
//! | `send_vs_unmask` | sender (P, Q, P) to a masked P; guest unmasking P as Linux does (a hypercall only if P is pending), then consuming on both VCPUs |
//! | `send_vs_unmask_hypercall` | the same, the guest unmasking with `EVTCHNOP_unmask` alone |
//! | `send_vs_bind_vcpu` | FIFO: sender; `bind_vcpu` of a linked P; guest consuming on both VCPUs. 2-level: sender; guest moving P as Linux does (mask, bind_vcpu, unmask), then consuming (found a lost event, fixed: `bind_vcpu` now waits for senders of the old binding) |
//! | `rebind_vs_send_same_word` (2-level) | sender of Q (VCPU 0) and R (VCPU 1); guest moving a pending P of the same selector word to VCPU 1 as Linux does, then consuming on both |
//! | `send_vs_set_priority` (FIFO) | sender; `set_priority` of a linked P; guest consuming |
//! | `send_vs_reset` | sender (P, Q, P); guest resetting itself (`EVTCHNOP_reset`) |
//!
//! Every model ends, once its threads are joined, by running every upcall the library still
//! asked for, then asserts:
//! * **no lost event**: every still-bound, unmasked port that was sent to is delivered at
//!   least once and is no longer pending (an event left pending would never be seen: the
//!   guest ran every upcall it was given);
//! * **no phantom or duplicate delivery**: no port is delivered more often than it was sent;
//! * **no double link, nothing unreachable** (FIFO): [`FifoGuest::check_invariants`] — every
//!   queue ends inside the event array, no port is on two queues, every LINKED word is on a
//!   queue, no bound port is pending, unmasked and unlinked; and the consumer model panics on
//!   any walk outside the event array (**no out-of-bounds**);
//! * for close and reset: nothing is pending on the closed port once `close` returned, and
//!   after `reset` returned no sender writes the guest's pages any more (snapshot compared
//!   after the join); the domain can bind and receive again afterwards.
//!
//! Each model runs [`ITERATIONS`] executions under shuttle's random scheduler and as many
//! under PCT (depth 3), with fixed seeds so that CI is reproducible.
//! `XEN_EVTCHN_SHUTTLE_ITERATIONS=n` changes the count, `XEN_EVTCHN_SHUTTLE_SEED=s` the seeds
//! (to explore further). A failure prints shuttle's schedule; replay it with
//! `shuttle::replay(send_vs_close::<Fifo>, "<schedule>")` in a scratch test.
#![cfg(xen_evtchn_shuttle)]

use std::collections::HashMap;
use std::sync::Arc;

use shuttle::scheduler::{PctScheduler, RandomScheduler};
use shuttle::thread;
use xen_evtchn::abi::{DomId, EvtchnPort};
use xen_evtchn::test_utils::{FifoGuest, InMemoryGuest, TwoLevelGuest, UpcallRecorder};
use xen_evtchn::{DomainConfig, EventChannels, GuestPage, PortStatus};

/// Executions per model and scheduler (random, then PCT): 2 × 1000 per model, 16 models.
const ITERATIONS: usize = 1000;
/// PCT's bug depth: the number of priority changes (preemptions) per execution.
const PCT_DEPTH: usize = 3;
/// The seed of the first scheduler; each model and scheduler derives its own.
const SEED: u64 = 0x7865_6e5f_6576_7463;

/// The sender: a privileged backend domain.
const D0: DomId = 0;
/// The guest whose events are modelled.
const DU: DomId = 1;
/// First guest frame of the FIFO consumer's pages (control blocks, then the event array).
const BASE_GFN: u64 = 0x100;

// ---------------------------------------------------------------------------------------------
// Running a model
// ---------------------------------------------------------------------------------------------

fn env_number(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// Runs `model` under the random scheduler, then under PCT, [`ITERATIONS`] executions each.
fn explore(name: &str, model: fn()) {
    let iterations = env_number("XEN_EVTCHN_SHUTTLE_ITERATIONS").map_or(ITERATIONS, |n| n as usize);
    let base = env_number("XEN_EVTCHN_SHUTTLE_SEED").unwrap_or(SEED);
    // A distinct seed per model (FNV-1a of its name), stable across runs.
    let seed = name.bytes().fold(base ^ 0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let config = || {
        let mut c = shuttle::Config::new();
        // The library's Relaxed/Acquire/Release atomics are modelled as SeqCst (see
        // docs/design.md), and the RCU registry is a per-execution lazy static: both are
        // known, so shuttle's warnings about them are noise here.
        c.silence_warnings = true;
        // Model atomics are larger than real ones; give the model threads room.
        c.stack_size = 0x10_0000;
        c
    };
    shuttle::Runner::new(RandomScheduler::new_from_seed(seed, iterations), config()).run(model);
    shuttle::Runner::new(
        PctScheduler::new_from_seed(seed.rotate_left(17), PCT_DEPTH, iterations),
        config(),
    )
    .run(model);
}

// ---------------------------------------------------------------------------------------------
// The hypervisor, the sender and the guest
// ---------------------------------------------------------------------------------------------

/// One hypervisor: domain 0 and the guest, their upcalls, the guest's memory.
#[derive(Clone)]
struct Env {
    ec: Arc<EventChannels>,
    rec: Arc<UpcallRecorder>,
    mem: Arc<InMemoryGuest>,
}

impl Env {
    fn new(guest_vcpus: u32) -> Self {
        let ec = Arc::new(EventChannels::new());
        let rec = Arc::new(UpcallRecorder::new());
        let mem = Arc::new(InMemoryGuest::new());
        ec.create_domain(D0, DomainConfig::new(2, rec.clone()).privileged(true))
            .expect("domain 0");
        ec.create_domain(
            DU,
            DomainConfig::new(guest_vcpus, rec.clone()).guest_memory(mem.clone()),
        )
        .expect("guest domain");
        Env { ec, rec, mem }
    }

    /// A channel from domain 0 to a new port of the guest: (domain 0's end, the guest's).
    fn channel(&self) -> (EvtchnPort, EvtchnPort) {
        let guest_port = self.ec.alloc_unbound(DU, DU, D0).expect("alloc_unbound");
        let local = self
            .ec
            .bind_interdomain(D0, DU, guest_port)
            .expect("bind_interdomain");
        (local, guest_port)
    }

    fn pending(&self, port: EvtchnPort) -> bool {
        self.ec.is_pending(DU, port).expect("valid port")
    }

    fn masked(&self, port: EvtchnPort) -> bool {
        self.ec.is_masked(DU, port).expect("valid port")
    }

    /// The words of a guest page.
    fn snapshot(page: &GuestPage) -> Vec<u32> {
        page.words32()
            .iter()
            .map(|w| w.load(std::sync::atomic::Ordering::SeqCst))
            .collect()
    }
}

/// Spawns a VCPU of domain 0 that sends, in order, on the local end of each
/// `(local, guest_port)` channel of `sends`.
fn spawn_sender(env: &Env, sends: &[(EvtchnPort, EvtchnPort)]) -> thread::JoinHandle<()> {
    let env = env.clone();
    let sends = sends.to_vec();
    thread::spawn(move || {
        for (local, _) in sends {
            // Ok even once the guest closed its end (ours is then unbound: the send is
            // dropped).
            env.ec.send(D0, local).expect("send");
        }
    })
}

/// How many times each guest port was sent to.
fn count(sends: &[&[(EvtchnPort, EvtchnPort)]]) -> HashMap<EvtchnPort, usize> {
    let mut n = HashMap::new();
    for s in sends {
        for &(_, port) in s.iter() {
            *n.entry(port).or_default() += 1;
        }
    }
    n
}

/// The guest's consumer, for either ABI.
trait Guest: Sized + Send + 'static {
    const ABI: &'static str;

    /// The guest's set-up on a fresh domain (FIFO: control blocks, the switch to FIFO).
    fn init(env: &Env, vcpus: u32) -> Self;

    /// Linux binding an IRQ to `port` (FIFO: its event-array page, then unmask).
    fn bind(&mut self, env: &Env, port: EvtchnPort);

    /// Number of VCPUs the consumer serves.
    fn vcpus(&self) -> u32;

    /// The upcall handler of `vcpu`: the ports it delivered.
    fn upcall(&mut self, vcpu: u32) -> Vec<EvtchnPort>;

    /// A guest-side mask (no hypercall).
    fn mask(&self, port: EvtchnPort);

    /// Linux's unmask (a hypercall if the port is pending).
    fn unmask(&self, env: &Env, port: EvtchnPort);

    /// Linux moving `port` to `vcpu` (`xen_rebind_evtchn_to_cpu`): temporary mask,
    /// `EVTCHNOP_bind_vcpu`, the private per-CPU bookkeeping, unmask.
    fn rebind(&mut self, env: &Env, port: EvtchnPort, vcpu: u32) {
        self.mask(port);
        env.ec.bind_vcpu(DU, port, vcpu).expect("bind_vcpu");
        self.bind_to_cpu(port, vcpu);
        self.unmask(env, port);
    }

    /// The guest's own record of which CPU handles `port` (2-level Linux filters by it).
    fn bind_to_cpu(&mut self, port: EvtchnPort, vcpu: u32);

    /// Invariants visible in guest memory while the hypervisor is quiet.
    fn check(&self) -> Result<(), String>;

    /// One round of the guest's VCPU loop: runs `vcpu`'s upcall if the library asked the VMM
    /// for one, else lets the other threads run.
    fn service(&mut self, env: &Env, vcpu: u32, delivered: &mut Vec<EvtchnPort>) {
        if env.rec.take(DU, vcpu) > 0 {
            delivered.extend(self.upcall(vcpu));
        } else {
            thread::yield_now();
        }
    }

    /// Runs every upcall the library asked for until it asks for none.
    fn drain(&mut self, env: &Env, delivered: &mut Vec<EvtchnPort>) {
        for _ in 0..16 {
            let mut asked = false;
            for v in 0..self.vcpus() {
                if env.rec.take(DU, v) > 0 {
                    asked = true;
                    delivered.extend(self.upcall(v));
                }
            }
            if !asked {
                return;
            }
        }
        panic!("upcalls still requested after 16 rounds over every vcpu");
    }

    /// A guest with `vcpus` VCPUs and `nr_ports` channels from domain 0 (returned in order),
    /// every port bound to VCPU 0 and unmasked, nothing pending, no upcall requested.
    fn setup(env: &Env, vcpus: u32, nr_ports: usize) -> (Self, Vec<(EvtchnPort, EvtchnPort)>) {
        let mut g = Self::init(env, vcpus);
        let chans: Vec<_> = (0..nr_ports).map(|_| env.channel()).collect();
        for &(_, port) in &chans {
            g.bind(env, port);
        }
        let mut delivered = Vec::new();
        g.drain(env, &mut delivered);
        assert!(delivered.is_empty(), "nothing sent yet: {delivered:?}");
        (g, chans)
    }
}

/// The FIFO ABI, consumed by [`FifoGuest`].
struct Fifo(FifoGuest);

impl Guest for Fifo {
    const ABI: &'static str = "FIFO";

    fn init(env: &Env, vcpus: u32) -> Self {
        Fifo(FifoGuest::new(&env.ec, &env.mem, DU, vcpus, BASE_GFN).expect("init_control"))
    }

    fn bind(&mut self, env: &Env, port: EvtchnPort) {
        self.0.ensure_port(&env.ec, port).expect("expand_array");
        self.0.unmask(&env.ec, port);
    }

    fn vcpus(&self) -> u32 {
        self.0.vcpus()
    }

    fn upcall(&mut self, vcpu: u32) -> Vec<EvtchnPort> {
        self.0.upcall(vcpu)
    }

    fn mask(&self, port: EvtchnPort) {
        self.0.mask(port);
    }

    fn unmask(&self, env: &Env, port: EvtchnPort) {
        self.0.unmask(&env.ec, port);
    }

    fn bind_to_cpu(&mut self, _port: EvtchnPort, _vcpu: u32) {
        // Linux's FIFO code keeps no per-CPU binding: any CPU delivers what its queues hold.
    }

    fn check(&self) -> Result<(), String> {
        self.0.check_invariants()
    }
}

/// The 2-level ABI, consumed by [`TwoLevelGuest`] (and its number of VCPUs).
struct TwoLevel(TwoLevelGuest, u32);

impl Guest for TwoLevel {
    const ABI: &'static str = "2-level";

    fn init(env: &Env, vcpus: u32) -> Self {
        TwoLevel(TwoLevelGuest::new(&env.ec, DU, vcpus), vcpus)
    }

    fn bind(&mut self, _env: &Env, _port: EvtchnPort) {}

    fn vcpus(&self) -> u32 {
        self.1
    }

    fn upcall(&mut self, vcpu: u32) -> Vec<EvtchnPort> {
        self.0.upcall(vcpu)
    }

    fn mask(&self, port: EvtchnPort) {
        self.0.mask(port);
    }

    fn unmask(&self, env: &Env, port: EvtchnPort) {
        self.0.unmask(&env.ec, DU, port);
    }

    fn bind_to_cpu(&mut self, port: EvtchnPort, vcpu: u32) {
        self.0.bind_to_cpu(port, vcpu);
    }

    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The final checks once every thread is joined and every upcall ran: each port of `sent`
/// that is still bound and unmasked was delivered at least once and at most as often as it
/// was sent, and is no longer pending; the guest's invariants hold.
fn assert_no_lost_event<G: Guest>(
    env: &Env,
    g: &G,
    sent: &HashMap<EvtchnPort, usize>,
    delivered: &[EvtchnPort],
) {
    let abi = G::ABI;
    if let Err(e) = g.check() {
        panic!("{abi}: guest invariants violated:\n{e}\ndelivered: {delivered:?}");
    }
    for (&port, &n) in sent {
        let got = delivered.iter().filter(|&&p| p == port).count();
        assert!(
            !env.pending(port),
            "{abi}: lost event: port {port} (sent {n}x, delivered {got}x) is still pending \
             after every requested upcall ran"
        );
        assert!(
            got >= 1 || n == 0,
            "{abi}: lost event: port {port} sent {n}x, never delivered"
        );
        assert!(
            got <= n,
            "{abi}: port {port} delivered {got}x but sent only {n}x: {delivered:?}"
        );
    }
    for &port in delivered {
        assert!(
            sent.contains_key(&port),
            "{abi}: phantom event on port {port}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The models
// ---------------------------------------------------------------------------------------------

/// A sender raising P, Q, P on one queue (one selector word) while the guest consumes it.
fn send_vs_consume<G: Guest>() {
    let env = Env::new(1);
    let (g, ch) = G::setup(&env, 1, 2);
    let (p, q) = (ch[0], ch[1]);
    let sends = [p, q, p];
    let sender = spawn_sender(&env, &sends);
    let consumer = {
        let env = env.clone();
        thread::spawn(move || {
            let mut g = g;
            let mut delivered = Vec::new();
            for _ in 0..3 {
                g.service(&env, 0, &mut delivered);
            }
            (g, delivered)
        })
    };
    sender.join().expect("sender");
    let (mut g, mut delivered) = consumer.join().expect("consumer");
    g.drain(&env, &mut delivered);
    assert_no_lost_event(&env, &g, &count(&[&sends]), &delivered);
}

/// Two senders (two VCPUs of domain 0) raising two ports of the same queue (the same
/// selector word) while the guest consumes it: the "re-raise of the consumed tail racing an
/// append" of docs/design.md is one of these interleavings.
fn two_senders_same_queue<G: Guest>() {
    let env = Env::new(1);
    let (g, ch) = G::setup(&env, 1, 2);
    let (p, q) = (ch[0], ch[1]);
    let (a, b) = ([p, p], [q, q]);
    let s1 = spawn_sender(&env, &a);
    let s2 = spawn_sender(&env, &b);
    let mut g = g;
    let mut delivered = Vec::new();
    for _ in 0..3 {
        g.service(&env, 0, &mut delivered);
    }
    s1.join().expect("sender 1");
    s2.join().expect("sender 2");
    g.drain(&env, &mut delivered);
    assert_no_lost_event(&env, &g, &count(&[&a, &b]), &delivered);
}

/// A sender raising P, Q, P while the guest closes P and consumes: once `close` returned,
/// nothing is pending on P, ever; Q is delivered.
fn send_vs_close<G: Guest>() {
    let env = Env::new(1);
    let (g, ch) = G::setup(&env, 1, 2);
    let (p, q) = (ch[0], ch[1]);
    let sends = [p, q, p];
    let sender = spawn_sender(&env, &sends);
    let closer = {
        let env = env.clone();
        thread::spawn(move || {
            env.ec.close(DU, p.1).expect("close");
            assert!(
                !env.pending(p.1),
                "{}: port {} pending after close returned",
                G::ABI,
                p.1
            );
        })
    };
    let mut g = g;
    let mut delivered = Vec::new();
    for _ in 0..2 {
        g.service(&env, 0, &mut delivered);
    }
    sender.join().expect("sender");
    closer.join().expect("closer");
    let status = env.ec.status(DU, DU, p.1).expect("status").status;
    assert_eq!(status, PortStatus::Closed, "{}: closed port", G::ABI);
    assert!(
        !env.pending(p.1),
        "{}: a send reached port {} after its close returned",
        G::ABI,
        p.1
    );
    g.drain(&env, &mut delivered);
    // P may have been delivered before the close; only Q must be.
    let mut sent = count(&[&sends]);
    let p_sent = sent.remove(&p.1).unwrap_or(0);
    let p_got = delivered.iter().filter(|&&x| x == p.1).count();
    assert!(
        p_got <= p_sent,
        "{}: P delivered {p_got}x, sent {p_sent}x",
        G::ABI
    );
    delivered.retain(|&x| x != p.1);
    assert_no_lost_event(&env, &g, &sent, &delivered);
}

/// How the guest unmasks in [`send_vs_unmask`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unmask {
    /// Linux: clear the mask itself, and ask the hypervisor only if the port is pending.
    Linux,
    /// Only `EVTCHNOP_unmask`, the mask still set (any guest may).
    Hypercall,
}

/// A sender raising P (masked by the guest), Q, P while the guest unmasks P, then consumes.
/// Q is bound to VCPU 1 so that its notification cannot make VCPU 0 find a P whose own
/// notification was lost (2-level: same selector word).
fn send_vs_unmask<G: Guest>(how: Unmask) {
    let env = Env::new(2);
    let (g, ch) = G::setup(&env, 2, 2);
    let (p, q) = (ch[0], ch[1]);
    let mut g = g;
    g.rebind(&env, q.1, 1);
    g.mask(p.1);
    let sends = [p, q, p];
    let sender = spawn_sender(&env, &sends);
    let mut delivered = Vec::new();
    match how {
        Unmask::Linux => g.unmask(&env, p.1),
        Unmask::Hypercall => env.ec.unmask(DU, p.1).expect("unmask"),
    }
    for v in [0, 1] {
        g.service(&env, v, &mut delivered);
    }
    sender.join().expect("sender");
    assert!(!env.masked(p.1), "{}: P still masked", G::ABI);
    g.drain(&env, &mut delivered);
    assert_no_lost_event(&env, &g, &count(&[&sends]), &delivered);
}

fn send_vs_linux_unmask<G: Guest>() {
    send_vs_unmask::<G>(Unmask::Linux);
}

fn send_vs_hypercall_unmask<G: Guest>() {
    send_vs_unmask::<G>(Unmask::Hypercall);
}

/// A sender raising P, Q, P while P, linked on VCPU 0's queue, is moved to VCPU 1 by
/// `bind_vcpu` from another thread, and the guest consumes on both VCPUs.
fn send_vs_bind_vcpu_fifo() {
    let env = Env::new(2);
    let (g, ch) = Fifo::setup(&env, 2, 2);
    let (p, q) = (ch[0], ch[1]);
    // P linked on VCPU 0's queue 7, not consumed yet.
    env.ec.send(D0, p.0).expect("send");
    let sends = [p, q, p];
    let sender = spawn_sender(&env, &sends);
    let mover = {
        let env = env.clone();
        thread::spawn(move || env.ec.bind_vcpu(DU, p.1, 1).expect("bind_vcpu"))
    };
    let mut g = g;
    let mut delivered = Vec::new();
    for v in [0, 1, 0] {
        g.service(&env, v, &mut delivered);
    }
    sender.join().expect("sender");
    mover.join().expect("mover");
    g.drain(&env, &mut delivered);
    let mut sent = count(&[&sends]);
    *sent.entry(p.1).or_default() += 1;
    assert_no_lost_event(&env, &g, &sent, &delivered);
}

/// The same move under the 2-level ABI, as Linux does it (mask, `bind_vcpu`, its own
/// bookkeeping, unmask: the unmask re-raises a pending event on the new VCPU), concurrently
/// with a sender of P, Q, P.
///
/// This model found a lost event (Xen has the same window): a send that loaded P's binding
/// before `bind_vcpu` raised P on VCPU 0 after the whole sequence returned, where 2-level
/// Linux no longer looks. `bind_vcpu` now waits for such senders (a grace period).
fn send_vs_bind_vcpu_two_level() {
    let env = Env::new(2);
    let (g, ch) = TwoLevel::setup(&env, 2, 2);
    let (p, q) = (ch[0], ch[1]);
    // P pending on VCPU 0, not consumed yet.
    env.ec.send(D0, p.0).expect("send");
    let sends = [p, q, p];
    let sender = spawn_sender(&env, &sends);
    let mut g = g;
    let mut delivered = Vec::new();
    g.rebind(&env, p.1, 1);
    for v in [0, 1] {
        g.service(&env, v, &mut delivered);
    }
    sender.join().expect("sender");
    g.drain(&env, &mut delivered);
    let mut sent = count(&[&sends]);
    *sent.entry(p.1).or_default() += 1;
    assert_no_lost_event(&env, &g, &sent, &delivered);
}

/// Linux moving a pending P from VCPU 0 to VCPU 1 (as above) while a sender raises Q (bound
/// to VCPU 0) and R (bound to VCPU 1), both in P's selector word, on both VCPUs.
fn rebind_vs_send_same_word_two_level() {
    let env = Env::new(2);
    let (g, ch) = TwoLevel::setup(&env, 2, 3);
    let (p, q, r) = (ch[0], ch[1], ch[2]);
    let mut g = g;
    g.rebind(&env, r.1, 1);
    env.ec.send(D0, p.0).expect("send");
    let sends = [q, r, q, r];
    let sender = spawn_sender(&env, &sends);
    let mut delivered = Vec::new();
    g.rebind(&env, p.1, 1);
    for v in [0, 1] {
        g.service(&env, v, &mut delivered);
    }
    sender.join().expect("sender");
    g.drain(&env, &mut delivered);
    let mut sent = count(&[&sends]);
    sent.insert(p.1, 1);
    assert_no_lost_event(&env, &g, &sent, &delivered);
}

/// A sender raising P, Q, P while P, linked on queue 7, gets priority 3 from another thread,
/// and the guest consumes.
fn send_vs_set_priority_fifo() {
    let env = Env::new(1);
    let (g, ch) = Fifo::setup(&env, 1, 2);
    let (p, q) = (ch[0], ch[1]);
    env.ec.send(D0, p.0).expect("send");
    let sends = [p, q, p];
    let sender = spawn_sender(&env, &sends);
    let mover = {
        let env = env.clone();
        thread::spawn(move || env.ec.set_priority(DU, p.1, 3).expect("set_priority"))
    };
    let mut g = g;
    let mut delivered = Vec::new();
    for _ in 0..2 {
        g.service(&env, 0, &mut delivered);
    }
    sender.join().expect("sender");
    mover.join().expect("mover");
    g.drain(&env, &mut delivered);
    let mut sent = count(&[&sends]);
    *sent.entry(p.1).or_default() += 1;
    assert_no_lost_event(&env, &g, &sent, &delivered);
}

/// A sender raising P and Q, two ports the guest bound before the event-array page that holds
/// their words exists, while the guest adds that page (`EVTCHNOP_expand_array`, after Linux
/// has masked every word of it) and unmasks them. A raise either finds no word (the slot's
/// saved-pending flag, raised again by the expander: the pairing of docs/design.md, "Switching
/// ABIs", now carried by the page address `PageArray` publishes) or finds the page (masked or
/// not yet): every event reaches the guest.
fn send_vs_expand_array_fifo() {
    let env = Env::new(1);
    let mut g = Fifo::init(&env, 1);
    let (p, q) = (env.channel(), env.channel());
    let mut delivered = Vec::new();
    g.drain(&env, &mut delivered);
    assert!(delivered.is_empty(), "nothing sent yet: {delivered:?}");
    // The page's words are masked up front, so that the race is with the hypercall itself
    // (1024 masking stores would otherwise dwarf it).
    g.0.prepare_port(q.1).expect("page for the ports");
    let sends = [p, q];
    let sender = spawn_sender(&env, &sends);
    let binder = {
        let env = env.clone();
        thread::spawn(move || {
            g.bind(&env, p.1);
            g.bind(&env, q.1);
            g
        })
    };
    sender.join().expect("sender");
    let mut g = binder.join().expect("binder");
    g.drain(&env, &mut delivered);
    assert_no_lost_event(&env, &g, &count(&[&sends]), &delivered);
}

/// A sender raising P, Q, P while the guest resets itself. Once `reset` returned, no sender
/// writes the guest's pages (they are compared after the join), the domain is back on the
/// 2-level ABI with every port closed, and it can set up again and receive.
fn send_vs_reset<G: Guest>() {
    let env = Env::new(1);
    let (g, ch) = G::setup(&env, 1, 2);
    drop(g);
    let (p, q) = (ch[0], ch[1]);
    let sends = [p, q, p];
    let sender = spawn_sender(&env, &sends);
    let pages: Vec<GuestPage> = {
        let mut pages = vec![env.ec.shared_info(DU).expect("shared_info")];
        if G::ABI == "FIFO" {
            // The control block of VCPU 0 and event-array page 0.
            pages.push(env.mem.page(BASE_GFN));
            pages.push(env.mem.page(BASE_GFN + 1));
        }
        pages
    };
    let resetter = {
        let env = env.clone();
        let pages = pages.clone();
        thread::spawn(move || {
            env.ec.reset(DU, DU).expect("reset");
            pages.iter().map(Env::snapshot).collect::<Vec<_>>()
        })
    };
    sender.join().expect("sender");
    let after_reset = resetter.join().expect("resetter");
    for (i, (page, snap)) in pages.iter().zip(&after_reset).enumerate() {
        let now = Env::snapshot(page);
        if let Some(w) = (0..now.len()).find(|&w| now[w] != snap[w]) {
            panic!(
                "{}: guest page {i} word {w} written after reset returned: {:#x} -> {:#x}",
                G::ABI,
                snap[w],
                now[w]
            );
        }
    }
    assert_eq!(env.ec.abi_name(DU).expect("abi"), "2-level");
    for port in [p.1, q.1] {
        let status = env.ec.status(DU, DU, port).expect("status").status;
        assert_eq!(
            status,
            PortStatus::Closed,
            "{}: port {port} after reset",
            G::ABI
        );
        assert!(
            !env.pending(port),
            "{}: port {port} pending after reset",
            G::ABI
        );
    }
    // The guest starts over (kexec) and receives again.
    let mut g = G::init(&env, 1);
    let r = env.channel();
    g.bind(&env, r.1);
    env.ec.send(D0, r.0).expect("send");
    let mut delivered = Vec::new();
    g.drain(&env, &mut delivered);
    assert_no_lost_event(&env, &g, &count(&[&[r]]), &delivered);
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn fifo_send_vs_consume() {
    explore("fifo_send_vs_consume", send_vs_consume::<Fifo>);
}

#[test]
fn two_level_send_vs_consume() {
    explore("two_level_send_vs_consume", send_vs_consume::<TwoLevel>);
}

#[test]
fn fifo_two_senders_same_queue() {
    explore(
        "fifo_two_senders_same_queue",
        two_senders_same_queue::<Fifo>,
    );
}

#[test]
fn two_level_two_senders_same_word() {
    explore(
        "two_level_two_senders_same_word",
        two_senders_same_queue::<TwoLevel>,
    );
}

#[test]
fn fifo_send_vs_close() {
    explore("fifo_send_vs_close", send_vs_close::<Fifo>);
}

#[test]
fn two_level_send_vs_close() {
    explore("two_level_send_vs_close", send_vs_close::<TwoLevel>);
}

#[test]
fn fifo_send_vs_unmask() {
    explore("fifo_send_vs_unmask", send_vs_linux_unmask::<Fifo>);
}

#[test]
fn two_level_send_vs_unmask() {
    explore("two_level_send_vs_unmask", send_vs_linux_unmask::<TwoLevel>);
}

#[test]
fn fifo_send_vs_unmask_hypercall() {
    explore(
        "fifo_send_vs_unmask_hypercall",
        send_vs_hypercall_unmask::<Fifo>,
    );
}

#[test]
fn two_level_send_vs_unmask_hypercall() {
    explore(
        "two_level_send_vs_unmask_hypercall",
        send_vs_hypercall_unmask::<TwoLevel>,
    );
}

#[test]
fn fifo_send_vs_bind_vcpu_moving_a_linked_event() {
    explore("fifo_send_vs_bind_vcpu", send_vs_bind_vcpu_fifo);
}

#[test]
fn two_level_send_vs_bind_vcpu() {
    explore("two_level_send_vs_bind_vcpu", send_vs_bind_vcpu_two_level);
}

#[test]
fn two_level_rebind_vs_send_same_word() {
    explore(
        "two_level_rebind_vs_send_same_word",
        rebind_vs_send_same_word_two_level,
    );
}

#[test]
fn fifo_send_vs_set_priority_moving_a_linked_event() {
    explore("fifo_send_vs_set_priority", send_vs_set_priority_fifo);
}

#[test]
fn fifo_send_vs_expand_array() {
    explore("fifo_send_vs_expand_array", send_vs_expand_array_fifo);
}

#[test]
fn fifo_send_vs_reset() {
    explore("fifo_send_vs_reset", send_vs_reset::<Fifo>);
}

#[test]
fn two_level_send_vs_reset() {
    explore("two_level_send_vs_reset", send_vs_reset::<TwoLevel>);
}
