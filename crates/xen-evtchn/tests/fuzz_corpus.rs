//! Replays the fuzz target's seed corpus (`fuzz/corpus/hypercalls`) and a fixed set of
//! pseudo-random inputs through the fuzz driver, so `cargo test` runs every finding of the
//! fuzzer and the driver's invariants without cargo-fuzz or a nightly compiler.

use std::path::PathBuf;
use std::time::Instant;

use xen_evtchn::test_utils::{XorShift, run_hypercalls};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/hypercalls")
}

/// Every file of the committed corpus; fails if the directory is missing or empty, so the
/// replay cannot pass silently.
#[test]
fn replay_seed_corpus() {
    let dir = corpus_dir();
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("fuzz corpus {} is missing: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("readable corpus directory").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "fuzz corpus {} is empty", dir.display());
    let start = Instant::now();
    for path in &files {
        let data = std::fs::read(path).expect("readable corpus file");
        let result = std::panic::catch_unwind(|| run_hypercalls(&data));
        assert!(
            result.is_ok(),
            "corpus input {} fails; rerun it with XEN_EVTCHN_FUZZ_TRACE=1 to see its actions",
            path.display()
        );
    }
    eprintln!(
        "replayed {} corpus inputs in {:?}",
        files.len(),
        start.elapsed()
    );
}

/// Pseudo-random programs from a fixed seed: meaningful even with a tiny corpus, since every
/// byte string is a valid program for the driver.
#[test]
fn pseudo_random_programs() {
    const INPUTS: usize = 2000;
    let mut rng = XorShift::new(0x5EED_F0E7_C4A1_1E00);
    let start = Instant::now();
    for i in 0..INPUTS {
        let len = (rng.next_u64() % 384) as usize;
        let data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        let result = std::panic::catch_unwind(|| run_hypercalls(&data));
        assert!(
            result.is_ok(),
            "pseudo-random input {i} fails: {}",
            data.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
    }
    eprintln!("ran {INPUTS} pseudo-random inputs in {:?}", start.elapsed());
}
