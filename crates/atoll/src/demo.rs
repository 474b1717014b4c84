//! `atoll demo`: a tiny workload built into the binary, so that the bundled example and the
//! tests run real containers from an image made of this very binary (`atoll dev` imports it),
//! with no registry to pull from. It serves HTTP with a health endpoint and shows the
//! environment and files it was given, which makes per-site configuration visible.

use std::net::SocketAddr;
use std::path::PathBuf;

use atoll_cli::CliError;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Serve `/` (the environment and the `--show` files) and `/healthz`.
    Serve {
        #[arg(long, default_value = "0.0.0.0:8080")]
        listen: SocketAddr,
        /// Files whose contents `/` shows.
        #[arg(long)]
        show: Vec<PathBuf>,
    },
    /// Print a file.
    Cat { path: PathBuf },
    /// Print a line every interval, forever.
    Tick {
        #[arg(long, default_value = "30s")]
        every: String,
    },
    /// Import this binary into the local Docker engine as an image that runs `atoll`.
    Image {
        #[arg(long, default_value = "atoll.local/demo:dev")]
        tag: String,
    },
}

/// As PID 1 in a container, the process gets no default signal handling: it must exit on
/// SIGTERM itself, or every stop waits out the runtime's grace period.
pub async fn run(command: Command) -> Result<(), CliError> {
    tokio::select! {
        result = work(command) => result,
        () = crate::shutdown_signal() => Ok(()),
    }
}

async fn work(command: Command) -> Result<(), CliError> {
    match command {
        Command::Serve { listen, show } => serve(listen, show).await,
        Command::Cat { path } => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| CliError::user(format!("{}: {e}", path.display())))?;
            print!("{text}");
            Ok(())
        }
        Command::Image { tag } => {
            let docker = atoll_runtime::DockerDriver::connect()
                .await
                .map_err(|e| CliError::user(e.to_string()))?;
            let exe = std::env::current_exe()
                .map_err(|e| CliError::user(format!("cannot find this program's file: {e}")))?;
            atoll_runtime::image::import_executable_image(&docker, &exe, &tag)
                .await
                .map_err(|e| CliError::user(e.to_string()))?;
            println!("{tag}");
            Ok(())
        }
        Command::Tick { every } => {
            let every = atoll_spec::units::Span::parse(&every)
                .map_err(|e| CliError::user(format!("--every: {e}")))?;
            let mut n = 0u64;
            loop {
                n += 1;
                println!("tick {n}");
                tokio::time::sleep(every.0.max(std::time::Duration::from_millis(100))).await;
            }
        }
    }
}

async fn serve(listen: SocketAddr, show: Vec<PathBuf>) -> Result<(), CliError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| CliError::user(format!("{listen}: {e}")))?;
    println!("demo serving on {listen}");
    let page = move || {
        let mut text = String::from("environment:\n");
        let mut vars: Vec<(String, String)> = std::env::vars().collect();
        vars.sort();
        for (k, v) in vars {
            text.push_str(&format!("  {k}={v}\n"));
        }
        for path in &show {
            text.push_str(&format!("{}:\n", path.display()));
            text.push_str(&std::fs::read_to_string(path).unwrap_or_else(|e| format!("  ({e})\n")));
        }
        text
    };
    let app = axum::Router::new()
        .route("/", axum::routing::get(move || std::future::ready(page())))
        .route("/healthz", axum::routing::get(|| async { "ok\n" }));
    axum::serve(listener, app)
        .await
        .map_err(|e| CliError::server(e.to_string()))
}
