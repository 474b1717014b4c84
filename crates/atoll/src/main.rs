//! The `atoll` binary: the control plane, the CLI and the development setup in one.
//!
//! This file only parses arguments, sets up logging and maps results to exit codes; every verb
//! lives in its own crate or module.

mod agent;
mod demo;
mod dev;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "atoll",
    version,
    about = "Run applications at many edge sites, kept in their desired state"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane.
    Control(ControlArgs),
    /// Run the edge agent on this host: enroll once, then keep the site's containers as its
    /// manifest says, with or without the control plane.
    Agent(agent::Args),
    /// A small workload for examples and tests (the `atoll.local/demo` image runs it).
    #[command(subcommand, hide = true)]
    Demo(demo::Command),
    /// Run a control plane for development with its data in a local folder, log the CLI in to it
    /// and apply the bundled example.
    Dev(dev::Args),
    /// Check resource files without a control plane.
    Validate(ValidateArgs),
    #[command(flatten)]
    Client(atoll_cli::Command),
}

#[derive(Debug, clap::Args)]
struct ControlArgs {
    #[command(subcommand)]
    action: Option<ControlAction>,
    /// Where the database, the CA and the first admin token live.
    #[arg(long, env = "ATOLL_DATA_DIR")]
    data_dir: PathBuf,
    /// Where the state is kept: a PostgreSQL database (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB`,
    /// reached without TLS: loopback or a private network only) or the path of an SQLite file.
    /// Without it, `atoll.db` in the data folder.
    #[arg(long, env = "ATOLL_STORE")]
    store: Option<String>,
    /// The master key that encrypts secrets at rest: a file holding 32 random bytes in base64
    /// (`head -c 32 /dev/urandom | base64`). Without it, ATOLL_MASTER_KEY is read, and without
    /// that, `master.key` in the data folder (made on first start).
    #[arg(long)]
    master_key_file: Option<PathBuf>,
    /// Address and port for the HTTPS API.
    #[arg(long, env = "ATOLL_LISTEN", default_value = "127.0.0.1:7443")]
    listen: SocketAddr,
    /// Another DNS name or address for the server certificate (repeatable).
    #[arg(long = "name")]
    names: Vec<String>,
    /// The largest a template may render one env value (and anything it builds on the way to
    /// it): a size such as 64Ki. An apply that goes over is refused, naming the site.
    #[arg(long, default_value = "64Ki", value_parser = byte_size)]
    template_value_limit: usize,
    /// The largest a template may render one file.
    #[arg(long, default_value = "1Mi", value_parser = byte_size)]
    template_file_limit: usize,
    /// The largest the rendered templates of one site's manifest may be together.
    #[arg(long, default_value = "8Mi", value_parser = byte_size)]
    template_manifest_limit: usize,
    /// How long a connection may take over its TLS handshake.
    #[arg(long, default_value = "10s", value_parser = span)]
    handshake_timeout: Duration,
    /// How long a connection may take to send a complete request header (every HTTP/1
    /// connection, and the first request of one without a client certificate).
    #[arg(long, default_value = "10s", value_parser = span)]
    header_read_timeout: Duration,
    /// How long a connection without a client certificate may stay open with no request in
    /// flight. Agents (with their certificate) are never cut, whatever their long-polls wait.
    #[arg(long, default_value = "30s", value_parser = span)]
    idle_timeout: Duration,
    /// How many connections without a client certificate one address may hold open at once;
    /// agents are not counted, however many share an address.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    max_unauthenticated_per_address: u64,
    /// The most events kept per site: past it, the oldest received are pruned (and counted in
    /// `atoll describe site`).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    events_kept: u64,
    /// How long a site's events are kept after they are received (`7d`, `12h`, `90m`).
    #[arg(long, default_value = "7d", value_parser = events_kept_for)]
    events_kept_for: Duration,
}

/// A flag's duration, in the units resources use (`10s`, `2m`).
fn span(text: &str) -> Result<Duration, String> {
    let span = atoll_spec::units::Span::parse(text)?;
    if span.0.is_zero() {
        return Err(format!("duration `{text}` must be above 0"));
    }
    Ok(span.0)
}

/// A flag's size, in the units resources use (`64Ki`, `1Mi`, a number of bytes).
fn byte_size(text: &str) -> Result<usize, String> {
    let size = atoll_spec::units::ByteSize::parse(text)?;
    usize::try_from(size.0)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("size `{text}` must be above 0 and fit in memory"))
}

/// A retention age: a duration of at least a minute.
fn events_kept_for(text: &str) -> Result<Duration, String> {
    let age = span(text)?;
    if age < Duration::from_secs(60) {
        return Err("keep events for a minute at least".into());
    }
    Ok(age)
}

#[derive(Debug, Subcommand)]
enum ControlAction {
    /// Re-wrap every secret's data key under a new master key, with the control plane stopped
    /// (`atoll control --data-dir D [--master-key-file OLD] rotate-master-key --new-key-file
    /// NEW`). The encrypted values are not touched. Start the control plane with the new key.
    RotateMasterKey {
        /// The new master key (32 random bytes in base64).
        #[arg(long)]
        new_key_file: PathBuf,
    },
    /// Copy the store to FILE, consistent and online: the control plane may run meanwhile
    /// (`atoll control --data-dir D backup FILE`). FILE must not exist. The data folder's keys
    /// (`ca.key`, the signing key, `master.key`) are files of their own: keep a copy of them
    /// once, apart from the store's copies.
    Backup { file: PathBuf },
}

#[derive(Debug, clap::Args)]
struct ValidateArgs {
    /// Files or folders of YAML resources; `-` reads standard input.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage(&e),
    };
    let serving = matches!(
        cli.command,
        Command::Control(_) | Command::Dev(_) | Command::Agent(_)
    );
    init_tracing(if serving { "info" } else { "warn" });
    // The edge agent mostly waits (a long-poll, a reconcile pass every few seconds): one thread
    // serves it, and each thread more costs resident memory (its stack, its malloc arena) on
    // hosts where the agent should weigh next to nothing (14.5 MB idle, against 15.2 MB on the
    // multi-threaded runtime).
    let mut builder = if matches!(cli.command, Command::Agent(_)) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The message may carry the control plane's words: through the CLI's one door.
            atoll_cli::output::eprint(&format!("{e}\n"));
            ExitCode::from(u8::try_from(e.code()).unwrap_or(2))
        }
    }
}

/// Help and version go to stdout and exit 0; any other parse error is the user's (exit 1, as
/// `CliError::user`), never 2, which says the control plane could not be reached.
fn usage(e: &clap::Error) -> ExitCode {
    let _ = e.print();
    if e.use_stderr() {
        ExitCode::from(atoll_cli::Exit::User as u8)
    } else {
        ExitCode::SUCCESS
    }
}

async fn run(command: Command) -> Result<(), atoll_cli::CliError> {
    match command {
        Command::Control(args) => control(args).await,
        Command::Agent(args) => agent::run(args).await,
        Command::Demo(command) => demo::run(command).await,
        Command::Dev(args) => dev::run(args).await,
        Command::Validate(args) => validate(&args),
        Command::Client(command) => atoll_cli::run(command).await,
    }
}

async fn control(args: ControlArgs) -> Result<(), atoll_cli::CliError> {
    // Absolute once, here: what the control plane prints and keeps names the same files
    // whatever folder it was started in.
    let data_dir = agent::absolute(&args.data_dir, "--data-dir")?;
    let master_key_file = args
        .master_key_file
        .as_deref()
        .map(|f| agent::absolute(f, "--master-key-file"))
        .transpose()?;
    let master_key = atoll_control::MasterKeySource::choose(master_key_file);
    let store =
        match atoll_store::StoreLocation::parse(args.store.as_deref(), &data_dir.join("atoll.db"))
            .map_err(atoll_cli::CliError::user)?
        {
            atoll_store::StoreLocation::Sqlite(path) => {
                atoll_store::StoreLocation::Sqlite(agent::absolute(&path, "--store")?)
            }
            postgres => postgres,
        };
    if let Some(ControlAction::Backup { file }) = &args.action {
        let file = agent::absolute(file, "FILE")?;
        let bytes = atoll_control::backup(&store, &file).map_err(atoll_cli::CliError::user)?;
        println!(
            "copied the store of {} to {} ({bytes} bytes, checked)",
            data_dir.display(),
            file.display()
        );
        return Ok(());
    }
    if let Some(ControlAction::RotateMasterKey { new_key_file }) = args.action {
        let new_key_file = agent::absolute(&new_key_file, "--new-key-file")?;
        let moved = atoll_control::rotate_master_key(&data_dir, &store, &master_key, &new_key_file)
            .await
            .map_err(atoll_cli::CliError::user)?;
        println!(
            "re-wrapped the data keys of {moved} secrets under {}; start the control plane with --master-key-file {}",
            new_key_file.display(),
            new_key_file.display()
        );
        return Ok(());
    }
    let config = atoll_control::Config {
        data_dir: data_dir.clone(),
        store,
        listen: args.listen,
        names: args.names,
        master_key,
        template_limits: atoll_spec::render::Limits {
            value: args.template_value_limit,
            file: args.template_file_limit,
            manifest: args.template_manifest_limit,
        },
        connection_limits: atoll_control::ConnectionLimits {
            handshake: args.handshake_timeout,
            header_read: args.header_read_timeout,
            idle: args.idle_timeout,
            per_address: usize::try_from(args.max_unauthenticated_per_address)
                .unwrap_or(usize::MAX),
        },
        retention: atoll_control::Retention {
            keep: args.events_kept,
            kept_for: args.events_kept_for,
        },
    };
    let running = atoll_control::start(config)
        .await
        .map_err(|e| atoll_cli::CliError::user(e.to_string()))?;
    println!("atoll control plane listening on {}", running.url());
    println!(
        "CA certificate: {} (sha256 {})",
        data_dir.join(atoll_control::CA_FILE).display(),
        running.ca_fingerprint
    );
    if running.initial_token.is_some() {
        println!(
            "first start: the admin token is in {}",
            data_dir.join(atoll_control::INITIAL_TOKEN_FILE).display()
        );
    }
    shutdown_signal().await;
    running.stop().await;
    Ok(())
}

fn validate(args: &ValidateArgs) -> Result<(), atoll_cli::CliError> {
    let sources = atoll_cli::sources::read(&args.files)?;
    let parsed = atoll_spec::parse_sources(&sources);
    if parsed.is_ok() {
        println!(
            "{} resources are valid (site-specific templates are checked by `atoll apply --dry-run`)",
            parsed.documents.len()
        );
        return Ok(());
    }
    let n = parsed.diagnostics.len();
    Err(atoll_cli::CliError {
        exit: atoll_cli::Exit::User,
        message: format!("{n} problem{} found", if n == 1 { "" } else { "s" }),
        diagnostics: parsed.diagnostics,
    })
}

/// Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ATOLL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn the_event_retention_flags_refuse_what_keeps_nothing() {
        use clap::Parser as _;
        let parse = |extra: &[&str]| {
            let mut args = vec!["atoll", "control", "--data-dir", "/tmp/d"];
            args.extend_from_slice(extra);
            super::Cli::try_parse_from(args).map_err(|e| e.to_string())
        };
        assert!(parse(&[]).is_ok());
        assert!(parse(&["--events-kept", "10", "--events-kept-for", "12h"]).is_ok());
        let err = parse(&["--events-kept", "0"]).unwrap_err();
        assert!(err.contains("--events-kept"), "{err}");
        let err = parse(&["--events-kept-for", "10s"]).unwrap_err();
        assert!(err.contains("a minute at least"), "{err}");
        let err = parse(&["--events-kept-for", "a week"]).unwrap_err();
        assert!(err.contains("write a duration such as"), "{err}");
    }
}
