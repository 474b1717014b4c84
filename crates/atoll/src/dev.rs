//! `atoll dev`: everything on one machine for trying atoll and for developing it.
//!
//! A control plane with its data in a local folder, the CLI logged in to it, and the bundled
//! example applied (idempotently: a second start reports everything unchanged).

use std::net::SocketAddr;
use std::path::PathBuf;

use atoll_api::{ApplyRequest, ApplyResponse};
use atoll_cli::CliError;
use atoll_cli::client::Client;
use atoll_cli::config::{self, Config};
use atoll_spec::Source;

/// The example applied on start, embedded so that `atoll dev` works from any folder.
const EXAMPLE: [(&str, &str); 2] = [
    (
        "examples/pos.yaml",
        include_str!("../../../examples/pos.yaml"),
    ),
    (
        "examples/sites.yaml",
        include_str!("../../../examples/sites.yaml"),
    ),
];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the control plane keeps its data.
    #[arg(long, default_value = ".atoll/dev")]
    data_dir: PathBuf,
    #[arg(long, default_value = "127.0.0.1:7443")]
    listen: SocketAddr,
    /// Do not apply the bundled example.
    #[arg(long)]
    no_example: bool,
}

pub async fn run(args: Args) -> Result<(), CliError> {
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| CliError::user(format!("{}: {e}", args.data_dir.display())))?;
    let data_dir = std::fs::canonicalize(&args.data_dir)
        .map_err(|e| CliError::user(format!("{}: {e}", args.data_dir.display())))?;
    let control = atoll_control::Config {
        data_dir: data_dir.clone(),
        listen: args.listen,
        names: Vec::new(),
    };
    let running = atoll_control::start(control)
        .await
        .map_err(|e| CliError::user(e.to_string()))?;
    let url = running.url();

    let token_file = data_dir.join(atoll_control::INITIAL_TOKEN_FILE);
    let token = std::fs::read_to_string(&token_file)
        .map_err(|e| {
            CliError::user(format!(
                "{}: {e}; remove {} to start afresh",
                token_file.display(),
                data_dir.display()
            ))
        })?
        .trim()
        .to_owned();
    let ca_file = data_dir.join(atoll_control::CA_FILE);
    let cli_config = Config {
        url: Some(url.clone()),
        token: Some(token.clone()),
        ca_file: Some(ca_file.clone()),
    };
    let config_path = config::path()?;
    cli_config.save(&config_path)?;

    println!("atoll dev: control plane at {url}");
    println!("  data:   {}", data_dir.display());
    println!("  token:  {}", token_file.display());
    println!("  CLI:    logged in ({})", config_path.display());
    if !args.no_example {
        let ca_pem = std::fs::read(&ca_file)
            .map_err(|e| CliError::user(format!("{}: {e}", ca_file.display())))?;
        let client = Client::new(url.clone(), token, &ca_pem)?;
        let sources = EXAMPLE
            .iter()
            .map(|(name, text)| Source {
                name: (*name).into(),
                text: (*text).into(),
            })
            .collect();
        let response: ApplyResponse = client
            .post(
                "/v1/apply",
                &ApplyRequest {
                    sources,
                    dry_run: false,
                },
            )
            .await?;
        println!("\nApplied the bundled example:");
        print!("{}", atoll_cli::apply::render(&response));
    }
    println!(
        "\nTry next, in another terminal:\n  atoll get sites\n  atoll describe deployment pos-prod\n  atoll get manifest store-0042\n  atoll apply -f examples/\n\nCtrl-C stops the control plane; its data stays in {}.",
        data_dir.display()
    );
    crate::shutdown_signal().await;
    running.stop().await;
    Ok(())
}
