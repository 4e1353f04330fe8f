//! What the send benchmarks share: single-bit guest atomics written the way the library
//! writes them, a runner abstraction (criterion, or the fixed loop that prints ratios), and
//! the ratio table.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};
use xen_evtchn::UpcallSink;
use xen_evtchn::abi::DomId;

/// The VMM's notification in these benchmarks: nothing to do (the floors have none either).
/// Behind a `SharedUpcallSink` (`EventChannels::new`) it costs one dynamic call per upcall;
/// as the hypervisor's sink type (`EventChannels::with_upcall_type`) the compiler inlines it
/// away.
#[derive(Clone, Copy)]
pub(crate) struct NoKick;

impl UpcallSink for NoKick {
    fn upcall(&self, _domid: DomId, _vcpu: u32) {}
}

/// Test-and-set of bit `n`, written so the compiler emits one locked bit instruction, as
/// Xen's guest bitops (and the library) do: not a compare-exchange loop.
#[inline(always)]
pub(crate) fn test_and_set(word: &AtomicU32, n: u32) -> bool {
    let mask = 1u32 << (n % 32);
    word.fetch_or(mask, Ordering::SeqCst) & mask != 0
}

/// Sequentially consistent test of bit `n`.
#[inline(always)]
pub(crate) fn test(word: &AtomicU32, n: u32) -> bool {
    word.load(Ordering::SeqCst) & (1u32 << (n % 32)) != 0
}

/// Runs one case; monomorphised per case so no case pays an indirect call.
pub(crate) trait Runner {
    fn run<F: FnMut()>(&mut self, name: &'static str, f: F);
}

/// Feeds the cases to a criterion group.
pub(crate) struct CriterionRunner<'c>(pub(crate) BenchmarkGroup<'c, WallTime>);

impl Runner for CriterionRunner<'_> {
    fn run<F: FnMut()>(&mut self, name: &'static str, mut f: F) {
        self.0.bench_function(name, |b| b.iter(&mut f));
    }
}

/// Runs `cases` as criterion group `group` (1 s warm-up, 3 s measurement, 50 samples; the
/// command line can override them), then prints criterion's summary.
pub(crate) fn run_criterion(group: &str, cases: impl FnOnce(&mut CriterionRunner<'_>)) {
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(50)
        .configure_from_args();
    {
        let mut r = CriterionRunner(c.benchmark_group(group));
        cases(&mut r);
        r.0.finish();
    }
    c.final_summary();
}

pub(crate) const ROUNDS: usize = 5;
pub(crate) const ITERS: u64 = 5_000_000;

/// The fixed loop: one round of every case per pass over the cases, so a transient
/// disturbance of the machine hits all cases alike; each round is `ITERS` iterations after a
/// short warm-up, timed as a whole.
#[derive(Default)]
pub(crate) struct TableRunner {
    /// Per case, in order: ns per iteration of each round.
    rounds: Vec<(&'static str, Vec<f64>)>,
}

impl Runner for TableRunner {
    // Its own function per case (not inlined into the caller, where every case would share
    // one register allocation), with one loop, so the case has a single call site and is
    // inlined into it as the floor is; the clock starts after the warm-up tenth.
    #[inline(never)]
    fn run<F: FnMut()>(&mut self, name: &'static str, mut f: F) {
        let warm_up = ITERS / 10;
        let mut start = Instant::now();
        for i in 0..warm_up + ITERS {
            if i == warm_up {
                start = Instant::now();
            }
            f();
        }
        let ns = start.elapsed().as_secs_f64() * 1e9 / ITERS as f64;
        match self.rounds.iter_mut().find(|(n, _)| *n == name) {
            Some((_, r)) => r.push(ns),
            None => self.rounds.push((name, vec![ns])),
        }
    }
}

impl TableRunner {
    /// Prints each case's median round and its ratio to the case `floor_of(case)` names.
    pub(crate) fn print(self, floor_of: impl Fn(&str) -> &'static str) {
        let medians: Vec<(&str, f64)> = self
            .rounds
            .into_iter()
            .map(|(name, mut r)| {
                r.sort_by(f64::total_cmp);
                (name, r[r.len() / 2])
            })
            .collect();
        println!();
        println!(
            "Fixed loop: median of {ROUNDS} rounds x {ITERS} iterations (guest consumption included)"
        );
        println!("{:<28} {:>9} {:>8}  floor", "case", "ns/op", "ratio");
        for &(name, ns) in &medians {
            let floor = floor_of(name);
            match medians.iter().find(|(n, _)| *n == floor) {
                Some(&(_, base)) if floor != name => {
                    println!("{name:<28} {ns:>9.2} {:>7.2}x  {floor}", ns / base);
                }
                _ => println!("{name:<28} {ns:>9.2} {:>8}  (floor)", "1.00x"),
            }
        }
    }
}

/// Runs `cases` `ROUNDS` times through the fixed loop and prints the table.
pub(crate) fn summary_table(
    cases: impl Fn(&mut TableRunner),
    floor_of: impl Fn(&str) -> &'static str,
) {
    let mut table = TableRunner::default();
    for _ in 0..ROUNDS {
        cases(&mut table);
    }
    table.print(floor_of);
}

/// True in a real benchmark run (not under `--test`, `--list`, `--profile-time` or
/// `cargo test --benches`), where the fixed loop and the extra reports run.
pub(crate) fn is_real_bench_run() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    has("--bench") && !has("--test") && !has("--list") && !has("--profile-time")
}
