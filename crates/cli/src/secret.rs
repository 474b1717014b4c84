//! `atoll secret set|generate|unset|delete`: secrets are written here and never read back.

use std::io::Read as _;
use std::path::PathBuf;

use atoll_api::secret::{Alphabet, Generate, SecretDeleted, SecretView, SetSecretRequest};
use base64::Engine as _;

use crate::client::Client;
use crate::config::Config;
use crate::error::{CliError, Result};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Set a key's value for every site, or with --site for one site only.
    Set(SetArgs),
    /// Make the key a random value generated once for each site.
    Generate(GenerateArgs),
    /// Remove a key, or with --site only that site's own value.
    Unset(UnsetArgs),
    /// Delete a secret that no deployment uses any more.
    Delete(DeleteArgs),
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("from").required(true).args(["from_file", "from_stdin"])))]
pub struct SetArgs {
    pub name: String,
    pub key: String,
    /// Read the value from this file (its bytes as they are).
    #[arg(long)]
    pub from_file: Option<PathBuf>,
    /// Read the value from standard input (its bytes as they are).
    #[arg(long)]
    pub from_stdin: bool,
    /// The value is this site's own; other sites keep the value for every site.
    #[arg(long)]
    pub site: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    pub name: String,
    pub key: String,
    #[arg(long, default_value_t = 32)]
    pub length: u32,
    /// alphanumeric, hex, base64url or printable.
    #[arg(long, default_value = "alphanumeric")]
    pub alphabet: String,
}

#[derive(Debug, clap::Args)]
pub struct UnsetArgs {
    pub name: String,
    pub key: String,
    #[arg(long)]
    pub site: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    pub name: String,
}

pub async fn run(command: Command) -> Result<()> {
    let client = Client::from_config(&Config::load()?)?;
    let view: SecretView = match command {
        Command::Set(args) => {
            let value = match &args.from_file {
                Some(path) => std::fs::read(path)
                    .map_err(|e| CliError::user(format!("{}: {e}", path.display())))?,
                None => {
                    let mut buf = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut buf)
                        .map_err(|e| CliError::user(format!("standard input: {e}")))?;
                    buf
                }
            };
            let request = SetSecretRequest {
                value: Some(base64::engine::general_purpose::STANDARD.encode(value)),
                site: args.site,
                generate: None,
            };
            client
                .put(&key_path(&args.name, &args.key), &request)
                .await?
        }
        Command::Generate(args) => {
            let alphabet = Alphabet::parse(&args.alphabet)
                .map_err(|e| CliError::user(format!("--alphabet: {e}")))?;
            let request = SetSecretRequest {
                value: None,
                site: None,
                generate: Some(Generate {
                    length: args.length,
                    alphabet,
                }),
            };
            client
                .put(&key_path(&args.name, &args.key), &request)
                .await?
        }
        Command::Unset(args) => {
            let mut path = key_path(&args.name, &args.key);
            if let Some(site) = &args.site {
                path.push_str(&format!("?site={site}"));
            }
            client.delete(&path).await?
        }
        Command::Delete(args) => {
            let deleted: SecretDeleted =
                client.delete(&format!("/v1/secrets/{}", args.name)).await?;
            crate::output::print(&format!("secret {} deleted\n", deleted.name));
            return Ok(());
        }
    };
    crate::output::print(&format!(
        "secret {} now at version {}\n",
        view.name, view.version
    ));
    Ok(())
}

fn key_path(name: &str, key: &str) -> String {
    format!("/v1/secrets/{name}/keys/{key}")
}
