//! The agent's decisions, as pure functions: no IO, no clock (time comes in as `now_ms`), no
//! async, nothing spawned.
//!
//! The flow of one reconcile pass, all of it here except the two ends:
//!
//! 1. [`desired::desired`]: the manifest becomes the replicas this host must run, each with the
//!    exact container spec, a spec hash and the files to write before creating it.
//! 2. (shell) list the containers carrying the agent's labels and the images present.
//! 3. [`plan::plan`]: desired and observed become actions (pull, create, start, replace,
//!    recreate, remove) and when to look again. Level-triggered: it never asks what changed,
//!    only what is.
//! 4. (shell) execute the actions, update the [`backoff::Memory`] of restarts and failed pulls.
//! 5. [`status::status`]: what each replica is doing, as the wire's
//!    [`atoll_api::agent::ReplicaStatus`], for the report to the control plane.
//!
//! Beside the reconcile pass, the rules of talking to the control plane: [`sync`] (which
//! revision may replace the applied one; the pause after each long-poll), [`retry`] (backoff
//! with jitter), [`outbox`] (report sequence numbers, drops and acknowledgements) and
//! [`bounds`] (what is queued fits the control plane's bounds),
//! [`fold`] (repeats of an event folded into one with a count), and [`devices`] (the grace a
//! device gone from `/dev` is kept for). The
//! simulator in `atoll-sim` runs these same functions for many virtual sites.

pub mod backoff;
pub mod bounds;
pub mod cluster;
pub mod desired;
pub mod devices;
pub mod fold;
pub mod health;
pub mod members;
pub mod outbox;
pub mod placement;
pub mod plan;
pub mod retry;
pub mod secrets;
pub mod status;
pub mod sync;

#[cfg(test)]
mod fixtures;

pub use backoff::{Memory, RestartInfo, STABLE_AFTER, is_stable, restart_delay};
pub use desired::{FileToWrite, Replica, ReplicaKey, desired};
pub use plan::{Action, Plan, plan};
pub use status::status;
