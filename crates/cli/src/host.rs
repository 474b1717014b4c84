//! `atoll host approve-key HOST`: a host's own actions.
//!
//! A renewal that sends a new sealing key for a host that has one is not trusted on the
//! certificate's word (a stolen certificate could send one): the key waits until an operator,
//! who can tell a reinstalled host from an intruder, approves it here.

use atoll_api::agent::HostView;

use crate::client::Client;
use crate::config::Config;
use crate::error::Result;
use crate::output;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Seal the host's secrets to the new sealing key it sent at renewal (`atoll get hosts`
    /// shows `key pending`).
    ApproveKey(ApproveKeyArgs),
}

#[derive(Debug, clap::Args)]
pub struct ApproveKeyArgs {
    /// The host's id, as `atoll get hosts` shows it.
    pub host: String,
}

pub async fn run(command: Command) -> Result<()> {
    match command {
        Command::ApproveKey(args) => {
            let client = Client::from_config(&Config::load()?)?;
            let path = format!("/v1/hosts/{}/approve-key", args.host);
            let host: HostView = client.post(&path, &serde_json::json!({})).await?;
            // The host's id and site came from the network.
            output::print(&format!(
                "host {} of site {}: its secrets are sealed to its new key from now on\n",
                host.id, host.site
            ));
            Ok(())
        }
    }
}
