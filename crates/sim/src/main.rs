//! `atoll-sim`: runs the protocol simulation for a number of seeds and prints each run's
//! figures, or the first invariant a run broke (and exits 1). `atoll-sim site-cluster` runs
//! the site-cluster model the same way, one line a seed, a summary at the end.
//!
//! Full size: `cargo run --release -p atoll-sim -- --sites 100000 --seeds 3`;
//! `cargo run --release -p atoll-sim -- site-cluster --seeds 5000`. A failing seed prints
//! itself, and `--seed S --seeds 1` replays it.

use std::process::ExitCode;
use std::time::Instant;

use atoll_sim::{Config, site_cluster};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    about = "Simulates atoll's control plane and many sites with faults, checking the protocol's invariants",
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
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

#[derive(Debug, Subcommand)]
enum Command {
    /// One site's hosts under host deaths and partitions: the leader's scheduling and Raft's
    /// outcome, checking the site cluster's invariants.
    SiteCluster {
        /// How many seeds to run, one after another.
        #[arg(long, default_value_t = 1_000)]
        seeds: u64,
        /// The first seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Hosts at the site, 2 to 6 (default: drawn from the seed).
        #[arg(long, value_parser = clap::value_parser!(u8).range(2..=6))]
        hosts: Option<u8>,
        /// Print every run's figures, not only the summary.
        #[arg(long)]
        verbose: bool,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::SiteCluster {
        seeds,
        seed,
        hosts,
        verbose,
    }) = args.command
    {
        return site_clusters(seed, seeds, hosts.map(usize::from), verbose);
    }
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

fn site_clusters(first: u64, seeds: u64, hosts: Option<usize>, verbose: bool) -> ExitCode {
    let started = Instant::now();
    let (mut events, mut faults, mut longest) = (0, 0, 0);
    for seed in first..first + seeds {
        let mut config = site_cluster::Config::new(seed);
        config.hosts = hosts;
        match site_cluster::run(config) {
            Ok(outcome) => {
                if verbose {
                    println!("{outcome}");
                }
                events += outcome.events;
                faults += outcome.faults;
                longest = longest.max(outcome.longest_loss);
            }
            Err(violation) => {
                eprintln!("{violation}");
                let hosts = hosts.map(|h| format!(" --hosts {h}")).unwrap_or_default();
                eprintln!(
                    "replay: atoll-sim site-cluster --seed {seed} --seeds 1{hosts} --verbose"
                );
                return ExitCode::FAILURE;
            }
        }
    }
    println!(
        "{seeds} seeds from {first}: every invariant held; {events} events, {faults} faults, longest loss {:.1} s; {:.2} s",
        atoll_sim::time::seconds(longest),
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}
