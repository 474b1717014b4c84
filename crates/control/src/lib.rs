//! The control plane: holds what should run where and serves it over HTTPS.
//!
//! `core` decides (compiling manifests, planning applies) without IO; `shell` does the IO
//! (HTTP, TLS, the store, the clock) and feeds `core`.

pub mod core;
