//! The control plane's decisions, as pure functions: no IO, no clock, no async.

pub mod apply;
pub mod compile;
pub mod feed;
pub mod revision;
pub mod rollout;
pub mod secrets;
pub mod state;

#[cfg(test)]
mod tests;
