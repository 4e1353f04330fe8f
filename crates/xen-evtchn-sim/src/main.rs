//! `xen-evtchn-sim`: runs the embedded default scenario (or a variant of it from the command
//! line) and prints the report. Exits with 1 if any event was lost or any other integrity
//! check failed, 2 if the simulation could not run.

use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use xen_evtchn_sim::{AbiSelection, Scenario, SimError, render_svg, simulate};

/// The ABI(s) to run.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum AbiArg {
    /// The 2-level ABI.
    #[value(name = "2l")]
    TwoLevel,
    /// The FIFO ABI.
    Fifo,
    /// 2-level, then FIFO.
    Both,
}

/// Simulates Xen event channels (2-level and FIFO) between a backend domain 0 and guests, on
/// a virtual clock, and reports delivery counts, lost events and latency per priority class.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// ABI(s) to run.
    #[arg(long, value_enum, default_value = "both")]
    abi: AbiArg,
    /// Total events domain 0 sends [default: 20000].
    #[arg(long)]
    events: Option<u64>,
    /// Guest domains [default: 2].
    #[arg(long)]
    guests: Option<u16>,
    /// VCPUs per guest [default: 2].
    #[arg(long)]
    vcpus: Option<u32>,
    /// Seed of the workload [default: 1].
    #[arg(long)]
    seed: Option<u64>,
    /// Also write a bar chart of the latencies to this SVG file.
    #[arg(long, value_name = "PATH")]
    svg: Option<std::path::PathBuf>,
    /// Print nothing but failures.
    #[arg(long)]
    quiet: bool,
}

fn scenario(cli: &Cli) -> Scenario {
    let default = Scenario::default();
    let mut s = Scenario::standard(
        cli.guests.unwrap_or(default.guests),
        cli.vcpus.unwrap_or(default.vcpus),
    );
    s.events = cli.events.unwrap_or(default.events);
    s.seed = cli.seed.unwrap_or(default.seed);
    s.abi = match cli.abi {
        AbiArg::TwoLevel => AbiSelection::TwoLevel,
        AbiArg::Fifo => AbiSelection::Fifo,
        AbiArg::Both => AbiSelection::Both,
    };
    s
}

fn run(cli: &Cli) -> Result<bool, SimError> {
    let report = simulate(&scenario(cli))?;
    if let Some(path) = &cli.svg {
        std::fs::write(path, render_svg(&report)).map_err(|source| SimError::Io {
            path: path.display().to_string(),
            source,
        })?;
    }
    if !cli.quiet {
        print!("{}", report.render_text(true));
        if let Some(path) = &cli.svg {
            println!("chart written to {}", path.display());
        }
    } else if !report.passed() {
        for p in report.problems() {
            eprintln!("xen-evtchn-sim: {p}");
        }
    }
    Ok(report.passed())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("xen-evtchn-sim: {e}");
            ExitCode::from(2)
        }
    }
}
