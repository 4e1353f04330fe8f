//! The simulator's behaviour end to end: no lost event, determinism, fairness, ABI agreement,
//! a hand-computed scenario, the SVG chart and the command line.

use std::process::Command;

use xen_evtchn_sim::{
    Abi, AbiSelection, Burst, ChannelSpec, Report, Scenario, Workload, render_svg, run_abi,
    simulate,
};

fn default_report() -> Report {
    simulate(&Scenario::default()).expect("the default scenario runs")
}

/// The default scenario with fewer events.
fn shorter(events: u64) -> Scenario {
    Scenario {
        events,
        ..Scenario::default()
    }
}

#[test]
fn default_scenario_loses_no_event_on_either_abi() {
    let report = default_report();
    assert_eq!(report.runs.len(), 2);
    for run in &report.runs {
        let r = &run.stats;
        assert_eq!(r.sent, 20_000, "{}", r.abi);
        assert_eq!(r.lost, 0, "{}", r.abi);
        assert!(r.problems().is_empty(), "{:?}", r.problems());
        assert_eq!(r.sent, r.delivered + r.coalesced);
        assert!(r.coalesced > 0, "the default load must coalesce some sends");
        assert!(r.upcalls > 0 && r.upcalls <= r.delivered);
    }
    assert!(report.passed());
}

#[test]
fn same_seed_gives_the_identical_report() {
    let s = shorter(3_000);
    let a = simulate(&s).expect("runs");
    let b = simulate(&s).expect("runs");
    let stats = |r: &Report| r.runs.iter().map(|x| x.stats.clone()).collect::<Vec<_>>();
    assert_eq!(stats(&a), stats(&b));
    assert_eq!(a.render_text(false), b.render_text(false));
    assert_eq!(render_svg(&a), render_svg(&b));
}

#[test]
fn different_seed_gives_a_different_workload() {
    let s = shorter(3_000);
    let t = Scenario {
        seed: 99,
        ..s.clone()
    };
    assert_ne!(Workload::generate(&s), Workload::generate(&t));
    let (a, b) = (simulate(&s).expect("runs"), simulate(&t).expect("runs"));
    let counts =
        |r: &Report| -> Vec<u64> { r.runs[0].stats.channels.iter().map(|c| c.sends).collect() };
    assert_ne!(counts(&a), counts(&b), "per-channel sends follow the seed");
    assert!(b.passed());
}

#[test]
fn fifo_high_priority_sees_lower_p99_than_low_priority() {
    let report = default_report();
    let f = report.fairness().expect("a FIFO run with several classes");
    assert_eq!((f.high_priority, f.low_priority), (0, 12));
    assert!(f.holds(), "{f:?}");
    // And the mean ordering holds class by class on FIFO.
    let classes = &report.run(Abi::Fifo).expect("FIFO ran").stats.classes;
    assert!(
        classes
            .windows(2)
            .all(|w| w[0].latency.mean < w[1].latency.mean)
    );
}

#[test]
fn both_abis_deliver_the_same_pairs_for_the_same_workload() {
    let s = shorter(4_000);
    let report = simulate(&s).expect("runs");
    let two = report.run(Abi::TwoLevel).expect("2-level ran");
    let fifo = report.run(Abi::Fifo).expect("FIFO ran");
    let sent_to: std::collections::BTreeSet<_> = two
        .stats
        .channels
        .iter()
        .filter(|c| c.sends > 0)
        .map(|c| (c.guest, c.port))
        .collect();
    assert_eq!(two.stats.delivered_pairs(), fifo.stats.delivered_pairs());
    assert_eq!(two.stats.delivered_pairs(), sent_to);
    // The same sends hit the same ports on both ABIs.
    let sends = |r: &xen_evtchn_sim::RunStats| -> Vec<(u16, u32, u64)> {
        r.channels
            .iter()
            .map(|c| (c.guest, c.port, c.sends))
            .collect()
    };
    assert_eq!(sends(&two.stats), sends(&fifo.stats));
}

/// One guest, one VCPU, two channels: channel 0 (guest port 1) at priority 12, channel 1
/// (port 2) at priority 0; 10 ticks per event.
///
/// * t=0: sends to 0, 0, 1: three sends, one coalesced. The VCPU starts at 0 and handles both
///   ports: 2-level in port order (0 then 1), FIFO by priority (1 then 0); done at 20.
/// * t=5: send to 1, while the VCPU is busy: a new upcall, taken at 20, done at 30
///   (latency 25).
/// * t=30: sends to 0 and 1: the VCPU handles both again, done at 50.
#[test]
fn tiny_scenario_matches_hand_computed_counts() {
    let scenario = Scenario {
        guests: 1,
        vcpus: 1,
        channels: vec![
            ChannelSpec {
                priority: 12,
                vcpu: 0,
            },
            ChannelSpec {
                priority: 0,
                vcpu: 0,
            },
        ],
        events: 6,
        mean_burst: 1,
        mean_gap: 0,
        handling_cost: 10,
        seed: 0,
        abi: AbiSelection::Both,
    };
    let workload = Workload {
        bursts: vec![
            Burst {
                time: 0,
                sends: vec![0, 0, 1],
            },
            Burst {
                time: 5,
                sends: vec![1],
            },
            Burst {
                time: 30,
                sends: vec![0, 1],
            },
        ],
    };
    // (ABI, latencies of priority 0, latencies of priority 12) as computed above.
    let expected = [
        (Abi::TwoLevel, (20 + 25 + 20, 25), (10 + 10, 10)),
        (Abi::Fifo, (10 + 25 + 10, 25), (20 + 20, 20)),
    ];
    for (abi, (sum0, max0), (sum12, max12)) in expected {
        let r = run_abi(&scenario, &workload, abi).expect("runs").stats;
        assert!(r.passed(), "{abi}: {:?}", r.problems());
        assert_eq!(
            (r.sent, r.coalesced, r.delivered, r.lost),
            (6, 1, 5, 0),
            "{abi}"
        );
        assert_eq!(r.upcalls, 3, "{abi}: one upcall per burst");
        assert_eq!(r.handler_runs, 4, "{abi}: three upcalls and one sweep");
        assert_eq!(r.end_time, 50, "{abi}");
        let ports: Vec<_> = r.channels.iter().map(|c| c.port).collect();
        assert_eq!(ports, vec![1, 2], "{abi}");
        let per_channel: Vec<_> = r
            .channels
            .iter()
            .map(|c| (c.sends, c.coalesced, c.deliveries))
            .collect();
        assert_eq!(per_channel, vec![(3, 1, 2), (3, 0, 3)], "{abi}");
        let high = r.class(0).expect("class 0");
        let low = r.class(12).expect("class 12");
        assert_eq!(high.latency.count, 3, "{abi}");
        assert_eq!(low.latency.count, 2, "{abi}");
        assert_eq!(high.latency.mean * 3.0, sum0 as f64, "{abi}");
        assert_eq!(high.latency.max, max0, "{abi}");
        assert_eq!(low.latency.mean * 2.0, sum12 as f64, "{abi}");
        assert_eq!(low.latency.max, max12, "{abi}");
    }
}

#[test]
fn svg_is_well_formed_with_one_bar_per_series() {
    let s = shorter(2_000);
    let report = simulate(&s).expect("runs");
    let svg = render_svg(&report);
    assert!(svg.starts_with("<svg"));
    assert!(svg.ends_with("</svg>"));
    assert_eq!(svg.matches("<svg").count(), 1);
    // Series: ABI x priority class x {p50, p99}.
    let series: usize = report.runs.iter().map(|r| r.stats.classes.len() * 2).sum();
    assert_eq!(series, 12);
    assert_eq!(svg.matches("class=\"bar\"").count(), series);
    assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
    for line in svg
        .lines()
        .filter(|l| l.starts_with("<rect") || l.starts_with("<line"))
    {
        assert!(line.ends_with("/>"), "unclosed element: {line}");
    }
    assert!(svg.contains("FIFO p0 p99"));
}

#[test]
fn command_line_runs_quietly_and_writes_the_chart() {
    let dir = std::env::temp_dir().join(format!("xen-evtchn-sim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let svg = dir.join("chart.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_xen-evtchn-sim"))
        .args([
            "--events", "500", "--guests", "1", "--vcpus", "3", "--seed", "5",
        ])
        .args(["--abi", "fifo", "--quiet", "--svg"])
        .arg(&svg)
        .output()
        .expect("the binary runs");
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "--quiet prints nothing on success");
    let chart = std::fs::read_to_string(&svg).expect("chart written");
    assert!(chart.starts_with("<svg") && chart.ends_with("</svg>"));

    let out = Command::new(env!("CARGO_BIN_EXE_xen-evtchn-sim"))
        .args(["--events", "300", "--abi", "2l"])
        .output()
        .expect("the binary runs");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("== 2-level ==") && !text.contains("== FIFO =="));
    assert!(text.contains("result: no lost event"));

    let out = Command::new(env!("CARGO_BIN_EXE_xen-evtchn-sim"))
        .args(["--vcpus", "0"])
        .output()
        .expect("the binary runs");
    assert_eq!(
        out.status.code(),
        Some(2),
        "an invalid scenario is an error"
    );
    std::fs::remove_dir_all(&dir).ok();
}
