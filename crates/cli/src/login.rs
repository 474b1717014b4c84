//! `atoll login`: check a control plane's URL, token and CA, then remember them.

use std::path::PathBuf;

use atoll_api::{List, SiteView};

use crate::client::Client;
use crate::config::{self, Config};
use crate::error::{CliError, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The control plane, such as https://control.example.com:7443.
    #[arg(long)]
    pub url: String,
    /// A token; prefer --token-file, which keeps it out of the shell's history.
    #[arg(long, conflicts_with = "token_file")]
    pub token: Option<String>,
    /// A file holding the token, such as the control plane's `initial-admin-token`.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// The control plane's CA certificate (`ca.pem` in its data folder).
    #[arg(long)]
    pub ca_file: PathBuf,
}

pub async fn run(args: Args) -> Result<()> {
    let token = match (args.token, &args.token_file) {
        (Some(t), _) => t,
        (None, Some(f)) => std::fs::read_to_string(f)
            .map_err(|e| CliError::user(format!("{}: {e}", f.display())))?
            .trim()
            .to_owned(),
        (None, None) => return Err(CliError::user("give --token or --token-file")),
    };
    let ca_file = std::fs::canonicalize(&args.ca_file)
        .map_err(|e| CliError::user(format!("{}: {e}", args.ca_file.display())))?;
    let config = Config {
        url: Some(args.url.clone()),
        token: Some(token),
        ca_file: Some(ca_file),
    };
    let client = Client::from_config(&config)?;
    let sites: List<SiteView> = client.get("/v1/sites").await?;
    let path = config::path()?;
    config.save(&path)?;
    crate::output::print(&format!(
        "logged in to {} ({} sites); settings saved in {}\n",
        args.url,
        sites.items.len(),
        path.display()
    ));
    Ok(())
}
