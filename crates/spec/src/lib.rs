//! atoll's user-facing resources: `Application`, `Deployment`, `Site` and `DeviceClass`.
//!
//! YAML comes in, validated types come out. Validation collects *every* problem of a set of
//! files in one pass, each with file:line:column, the path of the field and a hint, because the
//! person applying a change should fix it in one round, not one error at a time. The validated
//! types serialize back to the same shape a user writes, which is also what the store keeps.
//!
//! This crate does no IO and nothing async: the CLI and the control plane both call it, and so
//! validate identically.

pub mod application;
pub mod decode;
pub mod deployment;
pub mod device_class;
pub mod diag;
pub mod glob;
pub mod names;
pub mod render;
pub mod resource;
pub mod selector;
pub mod site;
pub mod template;
pub mod units;
pub mod yaml;

pub use application::Application;
pub use deployment::Deployment;
pub use device_class::DeviceClass;
pub use diag::Diagnostic;
pub use resource::{Document, Kind, Parsed, Resource, Source, parse_sources};
pub use selector::Selector;
pub use site::Site;
pub use template::{Origin, Template};
