//! The rollout endpoints: its view (`core::views::rollouts`), the operator's controls, its
//! history; and the commits of a rollout's steps, the controller's fenced by its lease.

use atoll_api::agent::{RolloutHistory, RolloutView};
use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;

use std::collections::BTreeMap;

use atoll_spec::{Diagnostic, Kind};
use atoll_store::StoreError;

use super::http::{Actor, ApiError, ApiResult, AppState, checked_name};
use super::service::{ControlPlane, Error};
use crate::core::apply::plan_rollout;
use crate::core::rollout::{Command, Event, Rollout};
use crate::core::state::decode_rollout;
use crate::core::views::rollouts::view;

impl ControlPlane {
    /// Feeds events to a deployment's rollout and commits the new state and the manifests it
    /// changes. With an `actor`, the events are an operator's control and are audited; a
    /// control that does not apply (pausing a complete rollout) is refused with its reason.
    pub async fn drive_rollout(
        &self,
        deployment: &str,
        events: &[Event],
        actor: Option<&str>,
    ) -> Result<Rollout, Error> {
        self.drive_rollout_under(deployment, events, actor, None)
            .await
    }

    /// [`Self::drive_rollout`] for the controller, committing only while lease `lease` still
    /// has `fence`: a step decided by a replica that lost the lease is refused.
    pub async fn drive_rollout_fenced(
        &self,
        deployment: &str,
        events: &[Event],
        lease: &str,
        fence: u64,
    ) -> Result<Rollout, Error> {
        self.drive_rollout_under(deployment, events, None, Some((lease, fence)))
            .await
    }

    async fn drive_rollout_under(
        &self,
        deployment: &str,
        events: &[Event],
        actor: Option<&str>,
        fence: Option<(&str, u64)>,
    ) -> Result<Rollout, Error> {
        let _guard = self.writes.lock().await;
        let who = actor.unwrap_or("atoll");
        self.commit_planned_reading("rollout step", who, &[], fence, |state, versions, req| {
            let (plan, rollout, commands) =
                plan_rollout(state, versions, deployment, events, req, actor.is_some())?;
            if let Some(reason) = commands.iter().find_map(|c| {
                if let Command::Refused(r) = c {
                    Some(r.clone())
                } else {
                    None
                }
            }) {
                return Err(Error::Conflict(vec![Diagnostic {
                    file: String::new(),
                    line: 0,
                    column: 0,
                    path: format!("Deployment {deployment}: rollout"),
                    message: reason,
                    hint: None,
                }]));
            }
            Ok((plan, rollout))
        })
        .await
    }

    /// Every deployment's current rollout: only those rows, since the controller asks every
    /// second, mostly to find there is nothing to do.
    pub async fn rollouts(&self) -> Result<BTreeMap<String, Rollout>, Error> {
        self.store
            .rollouts()
            .await?
            .into_iter()
            .map(|row| {
                Ok((
                    row.deployment.clone(),
                    decode_rollout(&row).map_err(StoreError::Corrupt)?,
                ))
            })
            .collect()
    }

    /// A deployment's current rollout and the ones before it, oldest first.
    pub async fn rollout_history(
        &self,
        deployment: &str,
    ) -> Result<(Option<Rollout>, Vec<Rollout>), Error> {
        if self
            .store
            .resource(Kind::Deployment.as_str(), deployment)
            .await?
            .is_none()
        {
            return Err(Error::NotFound(format!(
                "deployment {deployment} does not exist"
            )));
        }
        let current = self.rollouts().await?.remove(deployment);
        let past = self
            .store
            .rollout_history(deployment)
            .await?
            .into_iter()
            .map(|row| decode_rollout(&row).map_err(StoreError::Corrupt))
            .collect::<Result<Vec<Rollout>, _>>()?;
        Ok((current, past))
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
