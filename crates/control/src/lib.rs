//! The control plane: holds what should run where and serves it over HTTPS.
//!
//! `core` decides (compiling manifests, planning applies) without IO; `shell` does the IO
//! (HTTP, TLS, the store, the clock) and feeds `core`. `core` never imports from `shell`.

pub mod core;
pub mod shell;

pub use core::events::Retention;
pub use shell::connections::ConnectionLimits;
pub use shell::vault::MasterKeySource;
pub use shell::{
    CA_FILE, Config, INITIAL_TOKEN_FILE, Running, StartError, backup, rotate_master_key, start,
};
