//! The operations a test case is made of, their strategies, and how they print.
//!
//! Values are drawn from small ranges so that they collide (the same port is bound, sent on,
//! closed and re-bound within a case), with hostile values mixed in: ports beyond the valid
//! range and beyond the ABI limits, VCPUs that do not exist, VIRQs ≥ 24, priorities ≥ 16,
//! DOMID_SELF, domain ids that do not exist, misaligned or out-of-page control-block offsets,
//! unmapped frames.
//!
//! Most port arguments are [`P::Bound`]: "the k-th bound port" of the domain, resolved when
//! the step runs, so that sends, closes, unmasks and re-targetings mostly hit live bindings
//! (with plain numbers, most of them hit free ports and stop at EINVAL).
//!
//! Everything shrinks: the case is a `prop::collection::vec` of an enum strategy, and each
//! field is a range or a `prop_oneof!` whose first arm is the simplest value.

use std::fmt;

use proptest::prelude::*;

use super::reference::DOMID_SELF;

/// A domain id argument.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct D(pub(crate) u16);

impl fmt::Debug for D {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            DOMID_SELF => write!(f, "SELF"),
            d if d < 0x100 => write!(f, "d{d}"),
            d => write!(f, "d{d:#x}"),
        }
    }
}

/// A port argument: a number, or "the k-th bound port" of the domain the operation names,
/// chosen when the step runs (so that sends, closes, unmasks... mostly hit live bindings).
/// Failure reports show every step with its ports resolved.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum P {
    /// This port number.
    Lit(u32),
    /// The `k`-th (modulo their number) bound port of the domain, in ascending order; for
    /// bind_interdomain, of the ports offered to the caller if there are any. `k + 1` if the
    /// domain has none.
    Bound(u8),
}

impl fmt::Debug for P {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            P::Lit(u32::MAX) => write!(f, "p{:#x}", u32::MAX),
            P::Lit(p) => write!(f, "p{p}"),
            P::Bound(k) => write!(f, "bound#{k}"),
        }
    }
}

/// A VCPU argument.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct V(pub(crate) u32);

impl fmt::Debug for V {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            u32::MAX => write!(f, "v{:#x}", self.0),
            v => write!(f, "v{v}"),
        }
    }
}

/// Which frame a FIFO set-up operation names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Gfn {
    /// The frame the guest set aside for it: the VCPU's control page, or the event-array page
    /// of the next slot (only the first three slots have one).
    Own,
    /// A frame the guest does not have.
    Unmapped,
}

/// One step of a test case.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Op {
    AllocUnbound {
        caller: D,
        dom: D,
        remote: D,
    },
    BindInterdomain {
        caller: D,
        rdom: D,
        rport: P,
    },
    BindVirq {
        caller: D,
        virq: u32,
        vcpu: V,
    },
    BindIpi {
        caller: D,
        vcpu: V,
    },
    Close {
        caller: D,
        port: P,
    },
    Send {
        caller: D,
        port: P,
    },
    Status {
        caller: D,
        dom: D,
        port: P,
    },
    BindVcpu {
        caller: D,
        port: P,
        vcpu: V,
    },
    Unmask {
        caller: D,
        port: P,
    },
    /// Guest-side: set the mask bit (2-level) or MASKED (FIFO), no hypercall.
    GuestMask {
        dom: D,
        port: P,
    },
    /// Guest-side: Linux's unmask (clear the bit; if the port is pending, leave it to
    /// `EVTCHNOP_unmask`).
    GuestUnmask {
        dom: D,
        port: P,
    },
    /// `p = alloc_unbound(a, SELF, remote=b)`, then `bind_interdomain(b, a, p)`.
    Connect {
        a: D,
        b: D,
    },
    /// Linux's FIFO set-up: `init_control(dom, own page, 0, v)` for every VCPU, then one
    /// `expand_array(dom, own page)`.
    FifoSetup {
        dom: D,
        fill_masked: bool,
        /// Every VCPU gets a control block, or only VCPU 0 (the boot CPU; events for the
        /// others are then dropped).
        all_vcpus: bool,
    },
    Reset {
        caller: D,
        dom: D,
    },
    InitControl {
        caller: D,
        gfn: Gfn,
        offset: u32,
        vcpu: V,
    },
    /// `fill_masked`: the guest fills the new page with MASKED words (as Linux does) or zeros.
    ExpandArray {
        caller: D,
        gfn: Gfn,
        fill_masked: bool,
    },
    SetPriority {
        caller: D,
        port: P,
        priority: u32,
    },
    /// Host: Xen's timer/console/... code raises a VIRQ.
    RaiseVirq {
        dom: D,
        vcpu: V,
        virq: u32,
    },
    /// Guest: VCPU `vcpu` runs its event upcall (TwoLevelGuest or FifoGuest).
    Consume {
        dom: D,
        vcpu: V,
    },
    /// Guest: every VCPU of every domain runs its upcall, in order.
    ConsumeAll,
    /// Host: the VMM pauses or unpauses a domain.
    SetPaused {
        dom: D,
        paused: bool,
    },
    /// `n` × bind_ipi(dom, v0): pushes a domain past its first port bucket or its limit.
    Fill {
        dom: D,
        n: u32,
    },
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::AllocUnbound {
                caller,
                dom,
                remote,
            } => write!(
                f,
                "alloc_unbound({caller:?}, dom={dom:?}, remote={remote:?})"
            ),
            Op::BindInterdomain {
                caller,
                rdom,
                rport,
            } => write!(f, "bind_interdomain({caller:?}, {rdom:?}, {rport:?})"),
            Op::BindVirq { caller, virq, vcpu } => {
                write!(f, "bind_virq({caller:?}, virq={virq}, {vcpu:?})")
            }
            Op::BindIpi { caller, vcpu } => write!(f, "bind_ipi({caller:?}, {vcpu:?})"),
            Op::Close { caller, port } => write!(f, "close({caller:?}, {port:?})"),
            Op::Send { caller, port } => write!(f, "send({caller:?}, {port:?})"),
            Op::Status { caller, dom, port } => {
                write!(f, "status({caller:?}, {dom:?}, {port:?})")
            }
            Op::BindVcpu { caller, port, vcpu } => {
                write!(f, "bind_vcpu({caller:?}, {port:?}, {vcpu:?})")
            }
            Op::Unmask { caller, port } => write!(f, "unmask({caller:?}, {port:?})"),
            Op::GuestMask { dom, port } => write!(f, "guest_mask({dom:?}, {port:?})"),
            Op::GuestUnmask { dom, port } => write!(f, "guest_unmask({dom:?}, {port:?})"),
            Op::Connect { a, b } => write!(f, "connect({a:?}, {b:?})"),
            Op::FifoSetup {
                dom,
                fill_masked,
                all_vcpus,
            } => write!(
                f,
                "fifo_setup({dom:?}, fill={}, control blocks={})",
                if *fill_masked { "MASKED" } else { "0" },
                if *all_vcpus { "all" } else { "v0" }
            ),
            Op::Reset { caller, dom } => write!(f, "reset({caller:?}, {dom:?})"),
            Op::InitControl {
                caller,
                gfn,
                offset,
                vcpu,
            } => write!(
                f,
                "init_control({caller:?}, gfn={gfn:?}, offset={offset}, {vcpu:?})"
            ),
            Op::ExpandArray {
                caller,
                gfn,
                fill_masked,
            } => write!(
                f,
                "expand_array({caller:?}, gfn={gfn:?}, fill={})",
                if *fill_masked { "MASKED" } else { "0" }
            ),
            Op::SetPriority {
                caller,
                port,
                priority,
            } => write!(f, "set_priority({caller:?}, {port:?}, {priority})"),
            Op::RaiseVirq { dom, vcpu, virq } => {
                write!(f, "raise_virq({dom:?}, {vcpu:?}, virq={virq})")
            }
            Op::Consume { dom, vcpu } => write!(f, "consume({dom:?}, {vcpu:?})"),
            Op::ConsumeAll => write!(f, "consume_all()"),
            Op::SetPaused { dom, paused } => write!(f, "set_paused({dom:?}, {paused})"),
            Op::Fill { dom, n } => write!(f, "fill({dom:?}, {n})"),
        }
    }
}

/// One domain of the test's world.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DomSetup {
    pub(crate) vcpus: u32,
    pub(crate) max_port: u32,
    /// The guest switches to FIFO before the first step: `Some((fill_masked, all_vcpus))`
    /// runs [`Op::FifoSetup`].
    pub(crate) fifo: Option<(bool, bool)>,
}

/// The world a case runs in: d0 (privileged, hardware domain), d1 and d2 (unprivileged).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Setup {
    pub(crate) doms: [DomSetup; 3],
}

impl fmt::Debug for Setup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d: Vec<String> = self
            .doms
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let fifo = match d.fifo {
                    None => String::new(),
                    Some((masked, all)) => format!(
                        ", FIFO (page {}, control blocks on {})",
                        if masked { "filled MASKED" } else { "zeroed" },
                        if all { "every vcpu" } else { "v0" }
                    ),
                };
                format!("d{i}: {} vcpus, max_port {}{fifo}", d.vcpus, d.max_port)
            })
            .collect();
        write!(f, "{}", d.join("; "))
    }
}

/// A whole test case.
#[derive(Clone)]
pub(crate) struct Case {
    pub(crate) setup: Setup,
    pub(crate) ops: Vec<Op>,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "setup: {:?}", self.setup)?;
        for (i, op) in self.ops.iter().enumerate() {
            writeln!(f, "  {i:2}: {op:?}")?;
        }
        Ok(())
    }
}

fn dom_setup() -> impl Strategy<Value = DomSetup> {
    let max_port = prop_oneof![
        4 => Just(1023u32),
        2 => Just(5u32),
        1 => Just(70u32),
        1 => Just(1u32),
    ];
    let fifo = prop_oneof![
        6 => Just(None),
        4 => Just(Some((false, true))),
        2 => Just(Some((true, true))),
        1 => Just(Some((false, false))),
    ];
    (
        prop_oneof![3 => Just(2u32), 1 => Just(1u32), 1 => Just(3u32)],
        max_port,
        fifo,
    )
        .prop_map(|(vcpus, max_port, fifo)| DomSetup {
            vcpus,
            max_port,
            fifo,
        })
}

fn setup() -> impl Strategy<Value = Setup> {
    [dom_setup(), dom_setup(), dom_setup()].prop_map(|doms| Setup { doms })
}

/// A caller: an existing domain, rarely one that does not exist.
fn caller() -> impl Strategy<Value = D> {
    prop_oneof![20 => (0u16..3).prop_map(D), 1 => Just(D(3))]
}

/// A target domain argument: existing, DOMID_SELF, or ids that name nothing.
fn target() -> impl Strategy<Value = D> {
    prop_oneof![
        12 => (0u16..3).prop_map(D),
        3 => Just(D(DOMID_SELF)),
        1 => Just(D(3)),
        1 => Just(D(0x7FF1)),
        1 => Just(D(u16::MAX)),
    ]
}

/// alloc_unbound's `dom`: most often the caller itself.
fn alloc_target() -> impl Strategy<Value = D> {
    prop_oneof![6 => Just(D(DOMID_SELF)), 6 => (0u16..3).prop_map(D), 1 => Just(D(3))]
}

/// A domain the guest/host side acts on (existing, rarely not).
fn existing() -> impl Strategy<Value = D> {
    prop_oneof![20 => (0u16..3).prop_map(D), 1 => Just(D(3))]
}

fn port() -> impl Strategy<Value = P> {
    prop_oneof![
        12 => (1u32..7).prop_map(P::Lit),
        20 => (0u8..4).prop_map(P::Bound),
        1 => Just(P::Lit(0)),
        2 => (7u32..80).prop_map(P::Lit),
        1 => prop::sample::select(vec![127u32, 128, 1023, 1024, 4095, 4096, 131_072, u32::MAX])
            .prop_map(P::Lit),
    ]
}

fn vcpu() -> impl Strategy<Value = V> {
    prop_oneof![
        20 => (0u32..3).prop_map(V),
        1 => Just(V(3)),
        1 => Just(V(8191)),
        1 => Just(V(u32::MAX)),
    ]
}

fn virq() -> impl Strategy<Value = u32> {
    prop_oneof![
        6 => prop::sample::select(vec![0u32, 1, 2, 11, 13]),
        3 => 0u32..24,
        1 => prop::sample::select(vec![24u32, 25, u32::MAX]),
    ]
}

fn priority() -> impl Strategy<Value = u32> {
    prop_oneof![10 => 0u32..=16, 1 => Just(u32::MAX)]
}

fn offset() -> impl Strategy<Value = u32> {
    prop_oneof![
        10 => Just(0u32),
        1 => prop::sample::select(vec![4u32, 4028, 4032, 4096, !7u32, u32::MAX]),
    ]
}

fn gfn() -> impl Strategy<Value = Gfn> {
    prop_oneof![8 => Just(Gfn::Own), 1 => Just(Gfn::Unmapped)]
}

/// One operation. The first arm (consume) is where shrinking drifts to: the most harmless op.
pub(crate) fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (existing(), vcpu()).prop_map(|(dom, vcpu)| Op::Consume { dom, vcpu }),
        6 => Just(Op::ConsumeAll),
        14 => (caller(), port()).prop_map(|(caller, port)| Op::Send { caller, port }),
        6 => (caller(), alloc_target(), target()).prop_map(|(caller, dom, remote)| Op::AllocUnbound {
            caller,
            dom,
            remote
        }),
        5 => (caller(), target(), port()).prop_map(|(caller, rdom, rport)| Op::BindInterdomain {
            caller,
            rdom,
            rport
        }),
        4 => (caller(), virq(), vcpu()).prop_map(|(caller, virq, vcpu)| Op::BindVirq {
            caller,
            virq,
            vcpu
        }),
        7 => (caller(), vcpu()).prop_map(|(caller, vcpu)| Op::BindIpi { caller, vcpu }),
        6 => (caller(), port()).prop_map(|(caller, port)| Op::Close { caller, port }),
        2 => (caller(), target(), port()).prop_map(|(caller, dom, port)| Op::Status {
            caller,
            dom,
            port
        }),
        4 => (caller(), port(), vcpu()).prop_map(|(caller, port, vcpu)| Op::BindVcpu {
            caller,
            port,
            vcpu
        }),
        5 => (caller(), port()).prop_map(|(caller, port)| Op::Unmask { caller, port }),
        4 => (existing(), port()).prop_map(|(dom, port)| Op::GuestMask { dom, port }),
        6 => (existing(), port()).prop_map(|(dom, port)| Op::GuestUnmask { dom, port }),
        12 => (caller(), caller()).prop_map(|(a, b)| Op::Connect { a, b }),
        2 => (existing(), any::<bool>())
            .prop_map(|(dom, fill_masked)| Op::FifoSetup {
                dom,
                fill_masked,
                all_vcpus: true
            }),
        2 => (caller(), target()).prop_map(|(caller, dom)| Op::Reset { caller, dom }),
        3 => (caller(), gfn(), offset(), vcpu()).prop_map(|(caller, gfn, offset, vcpu)| {
            Op::InitControl {
                caller,
                gfn,
                offset,
                vcpu,
            }
        }),
        3 => (caller(), gfn(), any::<bool>()).prop_map(|(caller, gfn, fill_masked)| {
            Op::ExpandArray {
                caller,
                gfn,
                fill_masked,
            }
        }),
        4 => (caller(), port(), priority()).prop_map(|(caller, port, priority)| {
            Op::SetPriority {
                caller,
                port,
                priority,
            }
        }),
        4 => (existing(), vcpu(), virq()).prop_map(|(dom, vcpu, virq)| Op::RaiseVirq {
            dom,
            vcpu,
            virq
        }),
        1 => (existing(), any::<bool>()).prop_map(|(dom, paused)| Op::SetPaused { dom, paused }),
        1 => (existing(), prop::sample::select(vec![3u32, 70])).prop_map(|(dom, n)| Op::Fill {
            dom,
            n
        }),
    ]
}

/// A whole case: the world, then 1 to `max_ops` operations.
pub(crate) fn case(max_ops: usize) -> impl Strategy<Value = Case> {
    (setup(), prop::collection::vec(op(), 1..=max_ops)).prop_map(|(setup, ops)| Case { setup, ops })
}
