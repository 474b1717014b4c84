//! The control plane's decisions, as pure functions: no IO, no clock, no async.

pub mod apply;
pub mod compile;
pub mod events;
pub mod feed;
pub mod inventory;
pub mod labels;
pub mod lease;
pub mod presence;
pub mod revision;
pub mod rollout;
pub mod secrets;
pub mod state;
pub mod views;

/// How many of `items` each thread takes when they are shared out over the machine's cores,
/// and at least `at_least`: below that, a thread's start costs more than it saves.
pub fn per_thread(items: usize, at_least: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    items.div_ceil(cores).max(at_least)
}

#[cfg(test)]
mod tests;
