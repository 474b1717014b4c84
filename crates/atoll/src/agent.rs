//! `atoll agent`: the edge agent on this host, driving the local Docker (or Podman) engine.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use atoll_cli::CliError;
use atoll_runtime::DockerDriver;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The control plane's URL; needed only the first time, to enroll.
    #[arg(long, env = "ATOLL_CONTROL")]
    control: Option<String>,
    /// A join token from `atoll token create --site NAME`; needed only the first time. On the
    /// command line it shows in `ps` for the agent's whole life: prefer --token-file or
    /// ATOLL_JOIN_TOKEN.
    #[arg(long, env = "ATOLL_JOIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the join token (only its first line is read); needed only the first time.
    #[arg(long, conflicts_with = "token")]
    token_file: Option<PathBuf>,
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
    /// Where the host's /dev, /sys and /etc are read: the host's root as the agent sees it
    /// (in a container, where the host's / is mounted).
    #[arg(long, env = "ATOLL_HOST_ROOT", default_value = "/")]
    host_root: PathBuf,
    /// How long a device gone from /dev is still reported, as missing, before it is dropped:
    /// a flapping cable within it moves nothing. Such as 60s.
    #[arg(long, default_value = "60s")]
    device_grace: String,
    /// The site-LAN address (IP, or IP:port; port 7443 when left out) this agent listens on for
    /// the other hosts of its site once the site has two or more. It is reported to the control
    /// plane, which tells the site's other hosts; without it the agent listens on every address
    /// at port 7443 and reports none, so only peers given its address with --peer dial it.
    #[arg(long, env = "ATOLL_LISTEN_SITE")]
    listen_site: Option<String>,
    /// Another host of this site to dial (IP or IP:port), besides those the control plane
    /// lists; repeatable (in the environment: comma-separated). Whoever answers is accepted
    /// only if it is a current host of this site.
    #[arg(long = "peer", env = "ATOLL_PEERS", value_delimiter = ',')]
    peers: Vec<String>,
    /// How long the site's leader waits on a silent host before it takes it for down and runs
    /// its replicas on the other hosts, such as 10s (at least 1s).
    #[arg(long, env = "ATOLL_SITE_FAILURE_TIMEOUT", default_value = "10s")]
    site_failure_timeout: String,
}

pub async fn run(args: Args) -> Result<(), CliError> {
    let interval = atoll_spec::units::Span::parse(&args.interval)
        .map_err(|e| CliError::user(format!("--interval: {e}")))?;
    let device_grace = atoll_spec::units::Span::parse(&args.device_grace)
        .map_err(|e| CliError::user(format!("--device-grace: {e}")))?;
    let site_failure_timeout = atoll_spec::units::Span::parse(&args.site_failure_timeout)
        .map_err(|e| CliError::user(format!("--site-failure-timeout: {e}")))?;
    if site_failure_timeout.0 < Duration::from_secs(1) {
        return Err(CliError::user(format!(
            "--site-failure-timeout {}: at least 1s, or hosts that are up would be taken for down",
            args.site_failure_timeout
        )));
    }
    // Paths are made absolute once, here: the agent hands some of them to Docker as bind
    // sources (`files:`, secrets), which must be absolute whatever folder the agent started in.
    let data_dir = absolute(&args.data_dir, "--data-dir")?;
    let secrets_dir = args
        .secrets_dir
        .as_deref()
        .map(|d| absolute(d, "--secrets-dir"))
        .transpose()?;
    let token = match (&args.token, &args.token_file) {
        (_, Some(file)) => Some(read_token(file)?),
        (Some(token), None) => {
            if std::env::var("ATOLL_JOIN_TOKEN").ok().as_ref() != Some(token) {
                tracing::warn!(
                    "--token on the command line is visible to every user of this host (`ps`) for as long as the agent runs; use --token-file FILE or ATOLL_JOIN_TOKEN instead"
                );
            }
            Some(token.clone())
        }
        (None, None) => None,
    };
    atoll_control::shell::files::private_dir(&data_dir)
        .map_err(|e| CliError::user(format!("--data-dir {}: {e}", data_dir.display())))?;
    let driver = DockerDriver::connect()
        .await
        .map_err(|e| CliError::user(e.to_string()))?;
    let mut config = atoll_agent::shell::Config::new(data_dir);
    config.control_url = args.control;
    config.token = token;
    config.interval = interval.0.max(Duration::from_secs(1));
    config.secrets_dir = secrets_dir;
    config.host_root = absolute(&args.host_root, "--host-root")?;
    config.device_grace = device_grace.0;
    config.site_failure_timeout = site_failure_timeout.0;
    if let Some(address) = &args.listen_site {
        config.listen_site = site_address(address, "--listen-site")?;
    }
    config.peers = args
        .peers
        .iter()
        .map(|p| site_address(p, "--peer").map(|a| a.to_string()))
        .collect::<Result<_, _>>()?;
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
        Ok(Err(e @ atoll_agent::shell::AgentError::Detached(_))) => Err(CliError {
            exit: atoll_cli::Exit::Detached,
            ..CliError::user(e.to_string())
        }),
        Ok(Err(e)) => Err(CliError::user(e.to_string())),
        Err(e) => Err(CliError::server(format!("the agent stopped: {e}"))),
    }
}

/// An `ip:port`, or an `ip` at the default site port.
fn site_address(text: &str, flag: &str) -> Result<std::net::SocketAddr, CliError> {
    let text = text.trim();
    text.parse::<std::net::SocketAddr>()
        .or_else(|_| {
            text.parse::<std::net::IpAddr>()
                .map(|ip| std::net::SocketAddr::new(ip, atoll_api::site::DEFAULT_SITE_PORT))
        })
        .map_err(|_| {
            CliError::user(format!(
                "{flag} {text:?}: not an address; give an IP, or IP:port (such as 10.0.0.5:{})",
                atoll_api::site::DEFAULT_SITE_PORT
            ))
        })
}

/// `path` made absolute against the current folder (not resolved: symlinks stay as given).
pub(crate) fn absolute(path: &Path, flag: &str) -> Result<PathBuf, CliError> {
    std::path::absolute(path).map_err(|e| CliError::user(format!("{flag} {}: {e}", path.display())))
}

/// The join token in the first line of `file`.
fn read_token(file: &Path) -> Result<String, CliError> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        CliError::user(format!(
            "--token-file {}: {e}; write the token from `atoll token create` there",
            file.display()
        ))
    })?;
    let token = text.lines().next().unwrap_or_default().trim();
    if token.is_empty() {
        return Err(CliError::user(format!(
            "--token-file {}: the file is empty; write the token from `atoll token create` there",
            file.display()
        )));
    }
    Ok(token.to_owned())
}
