//! What the control plane accepts of agents' reports, how long it keeps their events, and which
//! time it shows for each.
//!
//! A report is checked whole before anything is stored: a body over
//! [`MAX_REPORT_BYTES`](atoll_api::agent::MAX_REPORT_BYTES), more batches or events than the
//! bounds of `atoll_api::agent`, or an event field over its length is refused, naming the field
//! and the limit, rather than stored in part. The agent fits what it sends to these same
//! constants, so only an agent that is broken (or not atoll's) meets them.
//!
//! Choices where the issue is silent:
//! - Every problem of a report is listed (up to [`MAX_PROBLEMS`]), as `apply` does, not only
//!   the first.
//! - An event's claimed time must be RFC 3339 (atoll's agents always send it): one that is not
//!   is refused with the rest, since it could be neither ordered nor shown.
//! - Events are ordered and retained by the time received. The claimed time is shown, since
//!   it is when the thing happened (an offline site's events arrive late, and their claim is
//!   the truth); only a claim more than [`MAX_CLOCK_SKEW`] ahead of the time received, which
//!   no honest clock makes, is shown as the time received, with the claim beside it.
//! - Retention is by the time received too, so an agent's clock can neither keep an event
//!   for ever nor have it pruned at once.

use std::time::{Duration, SystemTime};

use atoll_api::agent::{
    MAX_BATCHES_PER_REPORT, MAX_EVENT_AT_BYTES, MAX_EVENT_KIND_BYTES, MAX_EVENT_MESSAGE_BYTES,
    MAX_EVENTS_PER_BATCH, ReportRequest,
};
use atoll_spec::Diagnostic;

/// How far ahead of the control plane's clock an agent's clock may be before its events are
/// shown with the time they were received.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
/// The most problems one refusal lists.
pub const MAX_PROBLEMS: usize = 20;

/// How many events each site keeps, by time received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// At most this many, the newest.
    pub keep: u64,
    /// None received longer ago than this.
    pub kept_for: Duration,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            keep: 1000,
            kept_for: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl Retention {
    /// The oldest time of reception kept at `now`.
    pub fn received_after(&self, now: SystemTime) -> SystemTime {
        // Never before the epoch, which RFC 3339 formatting does not take.
        now.checked_sub(self.kept_for)
            .map_or(SystemTime::UNIX_EPOCH, |t| t.max(SystemTime::UNIX_EPOCH))
    }
}

/// Every way `report` passes the bounds of the protocol, each naming its field and limit;
/// empty when it is within them.
pub fn check(report: &ReportRequest) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    let mut problem = |path: String, message: String| {
        if problems.len() < MAX_PROBLEMS {
            problems.push(Diagnostic {
                file: String::new(),
                line: 0,
                column: 0,
                path,
                message,
                hint: None,
            });
        }
    };
    if report.batches.len() > MAX_BATCHES_PER_REPORT {
        problem(
            "batches".into(),
            format!(
                "{} batches, over the limit of {MAX_BATCHES_PER_REPORT} per report",
                report.batches.len()
            ),
        );
    }
    for (b, batch) in report.batches.iter().enumerate() {
        if batch.at.len() > MAX_EVENT_AT_BYTES {
            problem(
                format!("batches[{b}].at"),
                format!(
                    "{} bytes, over the limit of {MAX_EVENT_AT_BYTES}",
                    batch.at.len()
                ),
            );
        }
        if batch.events.len() > MAX_EVENTS_PER_BATCH {
            problem(
                format!("batches[{b}].events"),
                format!(
                    "{} events, over the limit of {MAX_EVENTS_PER_BATCH} per batch",
                    batch.events.len()
                ),
            );
        }
        for (e, event) in batch.events.iter().enumerate() {
            let field = |name: &str| format!("batches[{b}].events[{e}].{name}");
            for (name, value, limit) in [
                ("at", &event.at, MAX_EVENT_AT_BYTES),
                ("kind", &event.kind, MAX_EVENT_KIND_BYTES),
                ("message", &event.message, MAX_EVENT_MESSAGE_BYTES),
            ] {
                if value.len() > limit {
                    problem(
                        field(name),
                        format!("{} bytes, over the limit of {limit}", value.len()),
                    );
                }
            }
            if event.at.len() <= MAX_EVENT_AT_BYTES && parse(&event.at).is_none() {
                problem(
                    field("at"),
                    format!("{:?} is not an RFC 3339 time", event.at),
                );
            }
        }
    }
    problems
}

/// The time to show for an event that claims `claimed` and was received at `received`
/// (both RFC 3339), and the claim when it is not the one shown.
pub fn shown(claimed: &str, received: &str) -> (String, Option<String>) {
    match (parse(claimed), parse(received)) {
        (Some(c), Some(r)) if c > r + MAX_CLOCK_SKEW => {
            (received.to_owned(), Some(claimed.to_owned()))
        }
        _ => (claimed.to_owned(), None),
    }
}

fn parse(time: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(time).ok()
}

#[cfg(test)]
mod tests {
    use atoll_api::agent::{AgentEvent, Report};

    use super::*;

    fn report(batches: usize, events: usize, message: &str) -> ReportRequest {
        ReportRequest {
            batches: (1..=batches as u64)
                .map(|seq| Report {
                    seq,
                    at: "2026-01-01T00:00:00Z".into(),
                    events: (0..events)
                        .map(|_| AgentEvent {
                            at: "2026-01-01T00:00:00Z".into(),
                            kind: "container".into(),
                            message: message.into(),
                            count: None,
                        })
                        .collect(),
                    status: None,
                })
                .collect(),
        }
    }

    fn paths(problems: &[Diagnostic]) -> Vec<(&str, &str)> {
        problems
            .iter()
            .map(|d| (d.path.as_str(), d.message.as_str()))
            .collect()
    }

    #[test]
    fn a_report_at_the_bounds_is_accepted() {
        let at_limit = "é".repeat(MAX_EVENT_MESSAGE_BYTES / 2);
        assert!(check(&report(MAX_BATCHES_PER_REPORT, 2, &at_limit)).is_empty());
        assert!(check(&report(1, MAX_EVENTS_PER_BATCH, "m")).is_empty());
    }

    #[test]
    fn a_message_over_the_bound_is_refused_naming_the_field_and_limit() {
        let long = "x".repeat(MAX_EVENT_MESSAGE_BYTES + 1);
        let problems = check(&report(2, 1, &long));
        assert_eq!(
            paths(&problems),
            [
                (
                    "batches[0].events[0].message",
                    "4097 bytes, over the limit of 4096"
                ),
                (
                    "batches[1].events[0].message",
                    "4097 bytes, over the limit of 4096"
                ),
            ]
        );
    }

    #[test]
    fn too_many_events_or_batches_are_refused() {
        let problems = check(&report(1, MAX_EVENTS_PER_BATCH + 1, "m"));
        assert_eq!(
            paths(&problems),
            [(
                "batches[0].events",
                "101 events, over the limit of 100 per batch"
            )]
        );
        let problems = check(&report(MAX_BATCHES_PER_REPORT + 1, 0, ""));
        assert_eq!(
            paths(&problems),
            [("batches", "101 batches, over the limit of 100 per report")]
        );
    }

    #[test]
    fn a_long_kind_or_a_time_that_is_not_one_is_refused() {
        let mut r = report(1, 2, "m");
        r.batches[0].events[0].kind = "k".repeat(MAX_EVENT_KIND_BYTES + 1);
        r.batches[0].events[1].at = "yesterday".into();
        let problems = check(&r);
        assert_eq!(
            paths(&problems),
            [
                (
                    "batches[0].events[0].kind",
                    "65 bytes, over the limit of 64"
                ),
                (
                    "batches[0].events[1].at",
                    "\"yesterday\" is not an RFC 3339 time"
                ),
            ]
        );
    }

    #[test]
    fn a_refusal_lists_a_bounded_number_of_problems() {
        let long = "x".repeat(MAX_EVENT_MESSAGE_BYTES + 1);
        assert_eq!(check(&report(50, 50, &long)).len(), MAX_PROBLEMS);
    }

    #[test]
    fn an_event_from_the_future_is_shown_with_its_received_time() {
        let received = "2026-01-01T00:00:00Z";
        assert_eq!(
            shown("2099-01-01T00:00:00Z", received),
            (received.to_owned(), Some("2099-01-01T00:00:00Z".to_owned()))
        );
        // Within the skew, late, or from the past: the claim is what is shown.
        for claimed in [
            "2026-01-01T00:05:00Z",
            "2025-12-01T00:00:00Z",
            "1970-01-01T00:00:00Z",
        ] {
            assert_eq!(shown(claimed, received), (claimed.to_owned(), None));
        }
        assert_eq!(
            shown("2026-01-01T00:05:01Z", received).0,
            received,
            "a second past the skew"
        );
    }

    #[test]
    fn retention_keeps_what_was_received_within_its_age() {
        let r = Retention::default();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(30 * 24 * 3600);
        assert_eq!(
            r.received_after(now),
            SystemTime::UNIX_EPOCH + Duration::from_secs(23 * 24 * 3600)
        );
        assert_eq!(
            r.received_after(SystemTime::UNIX_EPOCH),
            SystemTime::UNIX_EPOCH
        );
    }
}
