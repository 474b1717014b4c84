//! `atoll delete KIND NAME`.

use atoll_api::DeleteResponse;

use crate::client::Client;
use crate::config::Config;
use crate::error::Result;
use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// site, app, deployment or deviceclass.
    pub kind: String,
    pub name: String,
}

pub async fn run(args: Args) -> Result<()> {
    let kind = output::kind_arg(&args.kind, "delete")?;
    let client = Client::from_config(&Config::load()?)?;
    let response: DeleteResponse = client
        .delete(&format!("/v1/{}/{}", kind.plural(), args.name))
        .await?;
    output::print(&format!(
        "{}/{} deleted\n{}",
        kind.as_str().to_ascii_lowercase(),
        response.name,
        output::manifest_changes(&response.manifests, "changed")
    ));
    Ok(())
}
