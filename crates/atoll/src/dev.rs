//! `atoll dev`: everything on one machine, for trying atoll and for developing it.
//!
//! A control plane with its data in a local folder, the CLI logged in to it, the bundled
//! example applied (idempotently: a second start reports everything unchanged), and an agent
//! for site `local` on this machine's Docker engine, running the example's `hello` application
//! from an image made of this binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use atoll_api::agent::{AppStatus, CreateTokenRequest, CreateTokenResponse, ReplicaState};
use atoll_api::secret::{Alphabet, Generate, SecretView, SetSecretRequest};
use atoll_api::{ApplyRequest, ApplyResponse};
use atoll_cli::CliError;
use atoll_cli::client::Client;
use atoll_cli::config::{self, Config};
use atoll_runtime::DockerDriver;
use atoll_spec::Source;

/// The example applied on start, embedded so that `atoll dev` works from any folder.
const EXAMPLE: [(&str, &str); 3] = [
    (
        "examples/local.yaml",
        include_str!("../../../examples/local.yaml"),
    ),
    (
        "examples/pos.yaml",
        include_str!("../../../examples/pos.yaml"),
    ),
    (
        "examples/sites.yaml",
        include_str!("../../../examples/sites.yaml"),
    ),
];
/// The image `examples/local.yaml` runs.
const DEMO_IMAGE: &str = "atoll.local/demo:dev";
const LOCAL_SITE: &str = "local";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the control plane and the local agent keep their data.
    #[arg(long, default_value = ".atoll/dev")]
    data_dir: PathBuf,
    #[arg(long, default_value = "127.0.0.1:7443")]
    listen: SocketAddr,
    /// Do not apply the bundled example.
    #[arg(long)]
    no_example: bool,
    /// Do not run a local agent.
    #[arg(long)]
    no_agent: bool,
}

pub async fn run(args: Args) -> Result<(), CliError> {
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| CliError::user(format!("{}: {e}", args.data_dir.display())))?;
    let data_dir = std::fs::canonicalize(&args.data_dir)
        .map_err(|e| CliError::user(format!("{}: {e}", args.data_dir.display())))?;
    let control = atoll_control::Config {
        data_dir: data_dir.join("control"),
        store: atoll_store::StoreLocation::Sqlite(data_dir.join("control").join("atoll.db")),
        listen: args.listen,
        names: Vec::new(),
        master_key: atoll_control::MasterKeySource::choose(None),
        template_limits: atoll_spec::render::Limits::default(),
        connection_limits: Default::default(),
        retention: atoll_control::Retention::default(),
    };
    let running = atoll_control::start(control)
        .await
        .map_err(|e| CliError::user(e.to_string()))?;
    let url = running.url();

    let control_dir = data_dir.join("control");
    let token_file = control_dir.join(atoll_control::INITIAL_TOKEN_FILE);
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
    let ca_file = control_dir.join(atoll_control::CA_FILE);
    let cli_config = Config {
        url: Some(url.clone()),
        token: Some(token.clone()),
        ca_file: Some(ca_file.clone()),
    };
    let config_path = config::path()?;
    cli_config.save(&config_path)?;
    let ca_pem = std::fs::read(&ca_file)
        .map_err(|e| CliError::user(format!("{}: {e}", ca_file.display())))?;
    let client = Client::new(url.clone(), token, &ca_pem)?;

    println!("atoll dev: control plane at {url}");
    println!("  data:   {}", data_dir.display());
    println!("  token:  {}", token_file.display());
    println!("  CLI:    logged in ({})", config_path.display());

    let docker = if args.no_agent {
        None
    } else {
        docker_with_demo_image().await
    };
    if !args.no_example {
        example_secret(&client).await?;
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
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let agent = match docker {
        Some(docker) => {
            Some(start_agent(&client, &url, &data_dir.join("agent"), docker, stopped).await?)
        }
        None => None,
    };
    if agent.is_some() && !args.no_example {
        show_hello(&client).await;
    }
    println!(
        "\nTry next, in another terminal:\n  atoll get sites\n  atoll status hello\n  atoll get manifest store-0042\n  curl -s localhost:18080\n  atoll apply -f examples/\n\nCtrl-C stops the control plane and the local agent (the containers keep running); the data stays in {}.",
        data_dir.display()
    );
    crate::shutdown_signal().await;
    let _ = stop.send(true);
    if let Some(agent) = agent {
        let _ = agent.await;
    }
    running.stop().await;
    Ok(())
}

/// The local Docker engine with the demo image imported, or None (said why) if there is no
/// engine: the control plane still runs, without a local agent.
async fn docker_with_demo_image() -> Option<Arc<DockerDriver>> {
    let docker = match DockerDriver::connect().await {
        Ok(d) => d,
        Err(e) => {
            println!("\nNo local agent: {e}. The control plane runs on its own.");
            return None;
        }
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            println!(
                "\nNo local agent: cannot find this program's file to build {DEMO_IMAGE}: {e}"
            );
            return None;
        }
    };
    if let Err(e) = atoll_runtime::image::import_executable_image(&docker, &exe, DEMO_IMAGE).await {
        println!("\nNo local agent: cannot import {DEMO_IMAGE}: {e}");
        return None;
    }
    Some(Arc::new(docker))
}

/// Enrolls (the first time) and starts an agent for site `local` in this process.
async fn start_agent(
    client: &Client,
    url: &str,
    dir: &Path,
    docker: Arc<DockerDriver>,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, CliError> {
    let mut config = atoll_agent::shell::Config::new(dir.to_owned());
    if atoll_agent::shell::identity::Identity::load(dir)
        .map_err(|e| CliError::user(e.to_string()))?
        .is_none()
    {
        let request = CreateTokenRequest {
            site: LOCAL_SITE.into(),
            ttl_seconds: Some(600),
            uses: Some(1),
        };
        let token: CreateTokenResponse = client.post("/v1/tokens", &request).await?;
        config.control_url = Some(url.to_owned());
        config.token = Some(token.token);
    }
    Ok(tokio::spawn(async move {
        if let Err(e) = atoll_agent::shell::run(config, docker, stopped).await {
            eprintln!("the local agent stopped: {e}");
        }
    }))
}

/// Waits (up to a minute) for `hello` to run at site `local`, and shows it.
async fn show_hello(client: &Client) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut status: Option<AppStatus> = None;
    while tokio::time::Instant::now() < deadline {
        status = client.get("/v1/applications/hello/status").await.ok();
        let running = status.as_ref().is_some_and(|s| {
            s.sites
                .iter()
                .filter(|site| site.site == LOCAL_SITE)
                .all(|site| {
                    !site.services.is_empty()
                        && site
                            .services
                            .values()
                            .flatten()
                            .all(|r| r.status.state == ReplicaState::Running)
                })
        });
        if running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if let Some(status) = status {
        println!("\n$ atoll status hello");
        print!("{}", atoll_cli::status::render(&status));
    }
}

/// The example's database password: generated per site on the first start.
async fn example_secret(client: &Client) -> Result<(), CliError> {
    let path = "/v1/secrets/pos-db-password";
    if client.get::<SecretView>(path).await.is_ok() {
        return Ok(());
    }
    let request = SetSecretRequest {
        value: None,
        site: None,
        generate: Some(Generate {
            length: 24,
            alphabet: Alphabet::Alphanumeric,
        }),
    };
    let _: SecretView = client
        .put(&format!("{path}/keys/password"), &request)
        .await?;
    Ok(())
}
