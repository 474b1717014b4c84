//! The edge agent: keeps a site's containers in the state its manifest asks for, on its own,
//! whether or not the control plane can be reached.
//!
//! The crate is split the way the rest of atoll is: `core` decides and `shell` acts.
//! `core` turns a manifest into the replicas this host must run, compares them with what the
//! container runtime reports and returns a plan of actions and when to look again; it does no
//! IO, reads no clock and spawns nothing, so every decision is unit- and property-tested without
//! a runtime. The shell watches the manifest, lists containers, executes the plan through an
//! `atoll_runtime::Driver` and feeds the results back in.
//!
//! The agent never depends on the control plane's crate; both speak through `atoll-api`.

pub mod core;
pub mod shell;
pub mod site_log;
