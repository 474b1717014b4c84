//! `atoll delete KIND NAME`.

use atoll_api::DeleteResponse;
use atoll_spec::Kind;

use crate::client::Client;
use crate::config::Config;
use crate::error::{CliError, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// site, app or deployment.
    pub kind: String,
    pub name: String,
}

pub async fn run(args: Args) -> Result<()> {
    let kind = Kind::from_user(&args.kind).ok_or_else(|| {
        CliError::user(format!(
            "cannot delete `{}`: choose site, app or deployment",
            args.kind
        ))
    })?;
    let client = Client::from_config(&Config::load()?)?;
    let response: DeleteResponse = client
        .delete(&format!("/v1/{}/{}", kind.plural(), args.name))
        .await?;
    println!(
        "{}/{} deleted",
        kind.as_str().to_ascii_lowercase(),
        response.name
    );
    if !response.manifests.is_empty() {
        let sites: Vec<String> = response
            .manifests
            .iter()
            .map(|m| format!("{} (revision {})", m.site, m.revision))
            .collect();
        println!(
            "manifests changed for {} site{}: {}",
            sites.len(),
            if sites.len() == 1 { "" } else { "s" },
            sites.join(", ")
        );
    }
    Ok(())
}
