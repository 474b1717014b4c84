//! The rollout endpoints: its view, the operator's controls, its history.

use atoll_api::agent::{NoteView, RolloutHistory, RolloutView, SiteRollout, WaveView};
use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;

use super::http::{Actor, ApiError, ApiResult, AppState, checked_name};
use crate::core::rollout::{Event, Phase, Rollout, SiteState};

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

pub async fn current(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<RolloutView> {
    checked_name(&name)?;
    let (current, _) = s.control.rollout_history(&name).await?;
    current.map(|r| Json(view(&r))).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "deployment {name} has had no rollout: its first version went to every site at once"
            ),
        )
    })
}

pub async fn history(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<RolloutHistory> {
    checked_name(&name)?;
    let (current, past) = s.control.rollout_history(&name).await?;
    Ok(Json(RolloutHistory {
        current: current.as_ref().map(view),
        past: past.iter().map(view).collect(),
    }))
}

pub async fn control(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path((name, action)): Path<(String, String)>,
) -> ApiResult<RolloutView> {
    checked_name(&name)?;
    let event = match action.as_str() {
        "pause" => Event::Pause,
        "resume" => Event::Resume,
        "abort" => Event::Abort,
        "rollback" => Event::Rollback {
            reason: actor.0.clone(),
        },
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no_route",
                format!("no rollout control `{other}`: use pause, resume, abort or rollback"),
            ));
        }
    };
    let rollout = s
        .control
        .drive_rollout(&name, &[event], Some(&actor.0))
        .await?;
    Ok(Json(view(&rollout)))
}
