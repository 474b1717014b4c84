//! `atoll agent`: the edge agent on this host, driving the local Docker (or Podman) engine.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use atoll_cli::CliError;
use atoll_runtime::DockerDriver;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The control plane's URL; needed only the first time, to enroll.
    #[arg(long, env = "ATOLL_CONTROL")]
    control: Option<String>,
    /// A join token from `atoll token create --site NAME`; needed only the first time.
    #[arg(long, env = "ATOLL_JOIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Where the agent keeps its identity, its manifest and its unsent reports.
    #[arg(
        long,
        env = "ATOLL_AGENT_DATA_DIR",
        default_value = "/var/lib/atoll-agent"
    )]
    data_dir: PathBuf,
    /// How often to reconcile when nothing signals a change, such as 10s.
    #[arg(long, default_value = "10s")]
    interval: String,
    /// Where secrets are written for containers to mount; must be on tmpfs. By default
    /// `$RUNTIME_DIRECTORY/secrets` (systemd), else a folder under /dev/shm.
    #[arg(long, env = "ATOLL_SECRETS_DIR")]
    secrets_dir: Option<PathBuf>,
}

pub async fn run(args: Args) -> Result<(), CliError> {
    let interval = atoll_spec::units::Span::parse(&args.interval)
        .map_err(|e| CliError::user(format!("--interval: {e}")))?;
    let driver = DockerDriver::connect()
        .await
        .map_err(|e| CliError::user(e.to_string()))?;
    let mut config = atoll_agent::shell::Config::new(args.data_dir);
    config.control_url = args.control;
    config.token = args.token;
    config.interval = interval.0.max(Duration::from_secs(1));
    config.secrets_dir = args.secrets_dir;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let agent = tokio::spawn(atoll_agent::shell::run(config, Arc::new(driver), stopped));
    tokio::select! {
        result = agent => return flatten(result),
        () = crate::shutdown_signal() => {}
    }
    let _ = stop.send(true);
    Ok(())
}

fn flatten(
    result: Result<Result<(), atoll_agent::shell::AgentError>, tokio::task::JoinError>,
) -> Result<(), CliError> {
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(CliError::user(e.to_string())),
        Err(e) => Err(CliError::server(format!("the agent stopped: {e}"))),
    }
}
