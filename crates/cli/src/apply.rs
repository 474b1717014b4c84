//! `atoll apply -f FILE|DIR`: validate locally, then send everything in one all-or-nothing request.

use std::path::PathBuf;

use atoll_api::{ApplyRequest, ApplyResponse};

use crate::client::Client;
use crate::config::Config;
use crate::error::{CliError, Exit, Result};
use crate::sources;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or folders of YAML resources (folders are read recursively); `-` reads standard input.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Check everything, including each targeted site's templates, but store nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(args: Args) -> Result<()> {
    let sources = sources::read(&args.files)?;
    let config = Config::load()?;
    let local = atoll_spec::parse_sources(&sources);
    if !local.is_ok() {
        let mut diagnostics = local.diagnostics;
        // The files are wrong already; if the control plane can be asked, let it add what only it
        // can check (templates rendered for each targeted site), so everything is fixed in one go.
        if let Ok(client) = Client::from_config(&config) {
            let request = ApplyRequest {
                sources,
                dry_run: true,
            };
            if let Err(e) = client.post::<_, ApplyResponse>("/v1/apply", &request).await
                && e.exit == Exit::User
                && e.diagnostics.len() > diagnostics.len()
            {
                diagnostics = e.diagnostics;
            }
        }
        return Err(problems(diagnostics));
    }
    let client = Client::from_config(&config)?;
    let response: ApplyResponse = client
        .post(
            "/v1/apply",
            &ApplyRequest {
                sources,
                dry_run: args.dry_run,
            },
        )
        .await?;
    crate::output::print(&render(&response));
    Ok(())
}

fn problems(diagnostics: Vec<atoll_spec::Diagnostic>) -> CliError {
    let n = diagnostics.len();
    CliError {
        exit: Exit::User,
        message: format!(
            "{n} problem{} found; nothing was applied",
            if n == 1 { "" } else { "s" }
        ),
        diagnostics,
    }
}

/// One line per resource, `kind/name outcome`, then the sites whose manifests changed.
pub fn render(response: &ApplyResponse) -> String {
    let suffix = if response.dry_run { " (dry run)" } else { "" };
    let mut out = String::new();
    for r in &response.results {
        let version = r
            .version
            .as_ref()
            .map(|v| format!(" (version {v})"))
            .unwrap_or_default();
        out.push_str(&format!(
            "{}/{} {}{version}{suffix}\n",
            r.kind.as_str().to_ascii_lowercase(),
            r.name,
            r.outcome.as_str()
        ));
    }
    let verb = if response.dry_run {
        "would change"
    } else {
        "changed"
    };
    out.push_str(&crate::output::manifest_changes(&response.manifests, verb));
    for w in &response.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    out
}
