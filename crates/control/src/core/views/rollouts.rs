//! A rollout as the API shows it: its phase and each wave's sites by name, the version each
//! is assigned (`Rollout::assigned`), and its notes with their times.

use atoll_api::agent::{NoteView, RolloutView, SiteRollout, WaveView};

use crate::core::rollout::{Phase, Rollout, SiteState};

/// Milliseconds since the epoch as RFC 3339.
fn at(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

/// A phase as the API names it, and why it is so.
pub fn phase(phase: &Phase) -> (&'static str, Option<String>) {
    match phase {
        Phase::Running => ("running", None),
        Phase::Paused { reason } => ("paused", Some(reason.clone())),
        Phase::Complete => ("complete", None),
        Phase::RollingBack { reason } => ("rolling_back", Some(reason.clone())),
        Phase::RolledBack { reason } => ("rolled_back", Some(reason.clone())),
        Phase::Aborted => ("aborted", None),
        Phase::Superseded { by, .. } => ("superseded", Some(format!("version {by} was applied"))),
    }
}

/// The view of rollout `r`.
pub fn view(r: &Rollout) -> RolloutView {
    let (phase, reason) = phase(&r.phase);
    let waves = r
        .waves
        .iter()
        .enumerate()
        .map(|(index, sites)| WaveView {
            index,
            canary: r.canary && index == 0,
            open: index < r.opened,
            sites: sites
                .iter()
                .map(|site| {
                    let (state, reason) = match r.sites.get(site).map(|p| &p.state) {
                        Some(SiteState::Waiting) | None => ("waiting", None),
                        Some(SiteState::Updating { .. }) => ("updating", None),
                        Some(SiteState::Soaking { .. }) => ("soaking", None),
                        Some(SiteState::Succeeded { .. }) => ("succeeded", None),
                        Some(SiteState::Failed { reason, .. }) => ("failed", Some(reason.clone())),
                        Some(SiteState::Pending { .. }) => ("pending", None),
                        Some(SiteState::Reverting { .. }) => ("reverting", None),
                        Some(SiteState::Reverted) => ("reverted", None),
                    };
                    SiteRollout {
                        site: site.clone(),
                        state: state.into(),
                        version: r.assigned(site).map(str::to_owned),
                        reason,
                    }
                })
                .collect(),
        })
        .collect();
    RolloutView {
        deployment: r.deployment.clone(),
        from_version: r.from_version.clone(),
        to_version: r.to_version.clone(),
        phase: phase.into(),
        reason,
        started_at: at(r.started_ms),
        waves,
        history: r
            .history
            .iter()
            .map(|n| NoteView {
                at: at(n.at_ms),
                text: n.text.clone(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::rollout::{SiteInfo, start};

    #[test]
    fn a_rollout_just_started_shows_its_first_wave_open_and_its_sites_updating() {
        let sites: Vec<SiteInfo> = ["a", "b"]
            .iter()
            .map(|n| SiteInfo {
                name: (*n).to_owned(),
                labels: Default::default(),
            })
            .collect();
        let (r, _) = start("web", None, Some("1"), "2", &sites, 1_000);
        let shown = view(&r);
        assert_eq!(shown.phase, "running");
        assert_eq!(shown.reason, None);
        assert_eq!(shown.started_at, "1970-01-01T00:00:01Z");
        assert!(shown.waves[0].open);
        let states: Vec<(&str, &str)> = shown
            .waves
            .iter()
            .flat_map(|w| &w.sites)
            .map(|s| (s.site.as_str(), s.state.as_str()))
            .collect();
        assert_eq!(states, [("a", "updating"), ("b", "updating")]);
    }

    #[test]
    fn a_superseded_rollout_says_which_version_was_applied() {
        let superseded = Phase::Superseded {
            by: "3".into(),
            settled: None,
        };
        assert_eq!(
            phase(&superseded),
            ("superseded", Some("version 3 was applied".into()))
        );
    }
}
