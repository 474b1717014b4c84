//! A deterministic simulation of the protocol between the control plane and its agents: many
//! virtual sites in one process, on a virtual clock, with latency, loss, replays, partitions,
//! restarts and reconnect storms drawn from a seed, and the protocol's invariants checked as
//! the run goes and at its end (see [`ledger`] for the list).
//!
//! The decision that shaped it: the simulation runs the product's own rules, not a copy that
//! could drift. Whatever the agent, the control plane or the store decides about the protocol
//! lives in a pure function of their crates' cores (manifest acceptance, the pause after a
//! long-poll, backoff, the outbox's numbering, drops and acknowledgements, revision
//! publication, the long-poll's answer, report deduplication), and the simulation calls those
//! ([`rules`], [`site`], [`control`]). What it models instead of running is IO and time: the
//! network, the timeouts of the agent's HTTP clients, and the control plane's capacity.
//!
//! An in-process event queue rather than a runtime like turmoil: 100,000 sites are a few
//! hundred bytes each and a run of 30 simulated minutes takes seconds.
//!
//! [`site_cluster`] is a second model, inside one site: its hosts, the leader's scheduling
//! with the agent's own decisions, Raft's outcome, host deaths and partitions.

pub mod config;
pub mod control;
pub mod ledger;
pub mod network;
pub mod outcome;
pub mod rules;
pub mod scenario;
pub mod site;
pub mod site_cluster;
pub mod time;
pub mod world;

pub use config::{Capacity, Config};
pub use outcome::{Outcome, Violation};
pub use rules::Rules;
pub use world::run;
