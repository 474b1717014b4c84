//! atoll's command-line verbs, one module each. They talk to the control plane only through
//! the wire types of `atoll-api`, and validate input with `atoll-spec` exactly as the server does.

// Everything printed goes through `output::print`/`output::eprint`, which escape what a terminal
// would act on: a stray `print!` would bypass them.
#![warn(clippy::print_stdout, clippy::print_stderr)]

pub mod apply;
pub mod client;
pub mod config;
pub mod delete;
pub mod describe;
pub mod error;
pub mod get;
pub mod host;
pub mod label;
pub mod login;
pub mod output;
pub mod rollout;
pub mod secret;
pub mod sources;
pub mod status;
pub mod token;

pub use error::{CliError, Exit};

/// The verbs that talk to a control plane.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create or update resources from YAML files or folders, all or nothing.
    Apply(apply::Args),
    /// List resources, or show one: sites, apps, deployments, manifest SITE, audit.
    Get(get::Args),
    /// Show one resource in detail.
    Describe(describe::Args),
    /// A host's own actions: approve the new sealing key it sent.
    #[command(subcommand)]
    Host(host::Command),
    /// Add, change or remove labels of a host or a site: `key=value`, `key-`.
    Label(label::Args),
    /// Delete a resource.
    Delete(delete::Args),
    /// Remember a control plane's URL, token and CA certificate.
    Login(login::Args),
    /// Follow and control a deployment's rollout.
    #[command(subcommand)]
    Rollout(rollout::Command),
    /// Set, generate or remove secrets. Values are write-only: nothing reads them back.
    #[command(subcommand)]
    Secret(secret::Command),
    /// Sites × services of an application, as the agents report them.
    Status(status::Args),
    /// Join tokens for new hosts.
    #[command(subcommand)]
    Token(token::Command),
}

pub async fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Apply(a) => apply::run(a).await,
        Command::Get(a) => get::run(a).await,
        Command::Describe(a) => describe::run(a).await,
        Command::Host(c) => host::run(c).await,
        Command::Label(a) => label::run(a).await,
        Command::Delete(a) => delete::run(a).await,
        Command::Login(a) => login::run(a).await,
        Command::Rollout(c) => rollout::run(c).await,
        Command::Secret(c) => secret::run(c).await,
        Command::Status(a) => status::run(a).await,
        Command::Token(c) => token::run(c).await,
    }
}
