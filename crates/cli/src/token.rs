//! `atoll token create --site NAME [--ttl 24h] [--uses N]`: a join token for new hosts.

use atoll_api::agent::{CreateTokenRequest, CreateTokenResponse};

use crate::client::Client;
use crate::config::Config;
use crate::error::{CliError, Result};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a join token: a host that presents it joins the site.
    Create(CreateArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The site the host will join.
    #[arg(long)]
    pub site: String,
    /// How long the token is valid, such as 30m, 24h or 7d.
    #[arg(long, default_value = "24h")]
    pub ttl: String,
    /// How many hosts may join with it.
    #[arg(long, default_value_t = 1)]
    pub uses: u32,
}

pub async fn run(command: Command) -> Result<()> {
    match command {
        Command::Create(args) => create(args).await,
    }
}

async fn create(args: CreateArgs) -> Result<()> {
    let ttl = atoll_spec::units::Span::parse(&args.ttl)
        .map_err(|e| CliError::user(format!("--ttl: {e}")))?;
    let client = Client::from_config(&Config::load()?)?;
    let request = CreateTokenRequest {
        site: args.site,
        ttl_seconds: Some(ttl.0.as_secs()),
        uses: Some(args.uses),
    };
    let response: CreateTokenResponse = client.post("/v1/tokens", &request).await?;
    crate::output::print(&format!("{}\n", response.token));
    crate::output::eprint(&format!(
        "join token for site {}: {} use{}, valid until {}. On the new host:\n  atoll agent --control URL --token <the token> --data-dir /var/lib/atoll-agent\n",
        response.site,
        response.uses,
        if response.uses == 1 { "" } else { "s" },
        response.expires_at
    ));
    Ok(())
}
