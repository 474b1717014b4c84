//! `atoll rollout status|pause|resume|abort|rollback|history DEPLOYMENT`.

use std::fmt::Write as _;
use std::time::Duration;

use atoll_api::agent::{RolloutHistory, RolloutView, WaveView};

use crate::client::Client;
use crate::config::Config;
use crate::error::Result;
use crate::output;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Where the deployment's rollout is: each wave's progress, the sites that failed.
    Status {
        deployment: String,
        /// Keep showing it, redrawn every second, until the rollout ends.
        #[arg(long)]
        watch: bool,
        #[arg(short = 'o', long, value_enum, default_value_t = output::Format::Table)]
        output: output::Format,
    },
    /// Stop opening waves; sites already updated keep the new version.
    Pause { deployment: String },
    /// Continue a paused rollout, accepting the failures seen so far.
    Resume { deployment: String },
    /// Freeze the rollout as it is.
    Abort { deployment: String },
    /// Return every updated site to the previous version.
    Rollback { deployment: String },
    /// The current rollout and the ones before it.
    History { deployment: String },
}

pub async fn run(command: Command) -> Result<()> {
    let client = Client::from_config(&Config::load()?)?;
    match command {
        Command::Status {
            deployment,
            watch,
            output,
        } => {
            let path = format!("/v1/deployments/{deployment}/rollout");
            loop {
                let view: RolloutView = client.get(&path).await?;
                let text = match output {
                    output::Format::Table => render(&view),
                    output::Format::Yaml => output::yaml(&view)?,
                    output::Format::Json => output::json(&view)?,
                };
                if !watch {
                    output::print(&text);
                    return Ok(());
                }
                // Redraw in place on a terminal; append frames otherwise.
                if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                    output::clear_screen();
                }
                output::print(&text);
                if !matches!(view.phase.as_str(), "running" | "paused" | "rolling_back") {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Command::Pause { deployment } => control(&client, &deployment, "pause").await,
        Command::Resume { deployment } => control(&client, &deployment, "resume").await,
        Command::Abort { deployment } => control(&client, &deployment, "abort").await,
        Command::Rollback { deployment } => control(&client, &deployment, "rollback").await,
        Command::History { deployment } => {
            let history: RolloutHistory = client
                .get(&format!("/v1/deployments/{deployment}/rollouts"))
                .await?;
            output::print(&render_history(&history));
            Ok(())
        }
    }
}

async fn control(client: &Client, deployment: &str, action: &str) -> Result<()> {
    let view: RolloutView = client
        .post(
            &format!("/v1/deployments/{deployment}/rollout/{action}"),
            &(),
        )
        .await?;
    output::print(&render(&view));
    Ok(())
}

const BAR: usize = 20;

/// The rollout, a progress bar per wave: `#` succeeded, `x` failed, `~` updating or soaking,
/// `?` pending (offline), `.` not yet.
pub fn render(view: &RolloutView) -> String {
    let mut out = String::new();
    let from = view.from_version.as_deref().unwrap_or("(none)");
    let _ = write!(
        out,
        "Deployment {}: {from} → {}   {}",
        view.deployment,
        view.to_version,
        view.phase.replace('_', " ")
    );
    if let Some(reason) = &view.reason {
        // Reasons quote what agents reported: one line each, whatever they hold (the
        // terminal itself is guarded by `output::print`).
        let _ = write!(out, " ({})", output::escape(reason));
    }
    out.push('\n');
    for wave in &view.waves {
        let name = if wave.canary {
            "canary".to_owned()
        } else {
            format!(
                "wave {}",
                wave.index + usize::from(!view.waves.first().is_some_and(|w| w.canary))
            )
        };
        let total = wave.sites.len();
        let updated = total - wave.count("waiting");
        let line = format!(
            "  {name:<8} [{}] {updated}/{total} updated  {} healthy  {} failed  {} pending{}",
            bar(wave),
            wave.count("succeeded"),
            wave.count("failed"),
            wave.count("pending"),
            if wave.open { "" } else { "  (not open)" }
        );
        out.push_str(&line);
        out.push('\n');
    }
    let failed: Vec<String> = view
        .waves
        .iter()
        .flat_map(|w| &w.sites)
        .filter(|s| s.state == "failed")
        .map(|s| {
            let reason = s.reason.as_deref().unwrap_or("failed");
            format!("  {}: {}", s.site, output::escape(reason))
        })
        .collect();
    if !failed.is_empty() {
        out.push_str("Failed sites:\n");
        for f in failed {
            out.push_str(&f);
            out.push('\n');
        }
    }
    if let Some(last) = view.history.last() {
        let _ = writeln!(out, "Last: {} {}", last.at, output::escape(&last.text));
    }
    out
}

fn bar(wave: &WaveView) -> String {
    let total = wave.sites.len().max(1);
    let mut cells: Vec<char> = wave
        .sites
        .iter()
        .map(|s| match s.state.as_str() {
            "succeeded" | "reverted" => '#',
            "failed" => 'x',
            "updating" | "soaking" | "reverting" => '~',
            "pending" => '?',
            _ => '.',
        })
        .collect();
    // Order: done, failed, in progress, pending, not yet; then scale to the bar's width.
    cells.sort_by_key(|c| "#x~?.".find(*c));
    (0..BAR).map(|i| cells[i * total / BAR]).collect()
}

pub fn render_history(history: &RolloutHistory) -> String {
    let mut out = String::new();
    for (n, r) in history.past.iter().chain(&history.current).enumerate() {
        let current = history.current.as_ref() == Some(r);
        let from = r.from_version.as_deref().unwrap_or("(none)");
        let _ = writeln!(
            out,
            "#{} {}  {from} → {}  {}{}",
            n + 1,
            r.started_at,
            r.to_version,
            r.phase.replace('_', " "),
            if current { "  (current)" } else { "" }
        );
        for note in &r.history {
            let _ = writeln!(out, "    {} {}", note.at, output::escape(&note.text));
        }
    }
    if out.is_empty() {
        out.push_str("No rollouts yet: a deployment's first version goes to every site at once.\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use atoll_api::agent::{NoteView, SiteRollout};

    fn site(name: &str, state: &str) -> SiteRollout {
        SiteRollout {
            site: name.into(),
            state: state.into(),
            version: None,
            reason: (state == "failed").then(|| "web replica 0: GET /healthz answered 500".into()),
        }
    }

    #[test]
    fn a_failure_reason_with_a_newline_stays_on_its_sites_line() {
        let mut failed = site("store-0046", "failed");
        failed.reason = Some("web replica 0: exited\nstore-0047: succeeded \x1b[2J".into());
        let view = RolloutView {
            deployment: "pos-prod".into(),
            from_version: Some("1.4.2".into()),
            to_version: "1.4.3".into(),
            phase: "paused".into(),
            reason: Some("budget\nspent".into()),
            started_at: "2026-11-22T10:00:00Z".into(),
            waves: vec![WaveView {
                index: 0,
                canary: true,
                open: true,
                sites: vec![failed],
            }],
            history: Vec::new(),
        };
        let text = render(&view);
        assert!(text.contains("(budget\\nspent)"), "{text}");
        assert!(
            text.contains("  store-0046: web replica 0: exited\\nstore-0047: succeeded \\x1b[2J\n"),
            "{text}"
        );
    }

    #[test]
    fn the_watch_view() {
        let view = RolloutView {
            deployment: "pos-prod".into(),
            from_version: Some("1.4.2".into()),
            to_version: "1.4.3".into(),
            phase: "running".into(),
            reason: None,
            started_at: "2026-11-22T10:00:00Z".into(),
            waves: vec![
                WaveView {
                    index: 0,
                    canary: true,
                    open: true,
                    sites: vec![site("store-0042", "succeeded")],
                },
                WaveView {
                    index: 1,
                    canary: false,
                    open: true,
                    sites: vec![
                        site("store-0043", "succeeded"),
                        site("store-0044", "soaking"),
                        site("store-0045", "pending"),
                        site("store-0046", "failed"),
                    ],
                },
                WaveView {
                    index: 2,
                    canary: false,
                    open: false,
                    sites: (0..15)
                        .map(|i| site(&format!("store-01{i:02}"), "waiting"))
                        .collect(),
                },
            ],
            history: vec![NoteView {
                at: "2026-11-22T10:02:00Z".into(),
                text: "wave 1 opened: 4 sites".into(),
            }],
        };
        insta::assert_snapshot!(render(&view));
    }
}
