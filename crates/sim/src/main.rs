//! `atoll-sim`: runs the protocol simulation for a number of seeds and prints each run's
//! figures, or the first invariant a run broke (and exits 1).
//!
//! Full size: `cargo run --release -p atoll-sim -- --sites 100000 --seeds 3`.

use std::process::ExitCode;

use atoll_sim::Config;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    about = "Simulates atoll's control plane and many sites with faults, checking the protocol's invariants"
)]
struct Args {
    /// Sites in the fleet.
    #[arg(long, default_value_t = 2_000)]
    sites: usize,
    /// How many seeds to run, one after another.
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Sites in the reconnect storm (default: a fifth of the fleet, at most 10,000).
    #[arg(long)]
    storm: Option<usize>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    for seed in args.seed..args.seed + args.seeds {
        let mut config = Config::new(args.sites, seed);
        if let Some(storm) = args.storm {
            config.storm = storm;
        }
        match atoll_sim::run(config) {
            Ok(outcome) => println!("{outcome}"),
            Err(violation) => {
                eprintln!("{violation}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
