//! Fitting what the agent reports to the control plane's bounds (the constants of
//! `atoll_api::agent`), before it enters the outbox.
//!
//! The control plane refuses a report past its bounds whole, and the outbox sends oldest first:
//! one batch it refuses would block every later one for ever. So nothing that can be refused is
//! queued: a message too long is cut, the cut marked in the message itself (`… [cut N bytes]`,
//! which every control plane and CLI shows, old ones too, where a new wire field would be
//! unknown to them), a list of events too long or too large for one batch is split over
//! several, and the reporter packs requests under the body's bound ([`fitting`]).
//!
//! Choices where the issue is silent:
//! - The cut keeps the beginning of a message (where its subject is said) and falls on a
//!   character boundary.
//! - A batch read back from the outbox that is still past the bounds (written by an older
//!   agent) keeps its first events and says how many were cut in a last one, rather than be
//!   renumbered into several.
//! - A status still too large once its free text is cut is not queued, and counted as a dropped
//!   report, as a full outbox counts one.

use atoll_api::agent::{
    AgentEvent, HostStatus, MAX_BATCHES_PER_REPORT, MAX_EVENT_AT_BYTES, MAX_EVENT_KIND_BYTES,
    MAX_EVENT_MESSAGE_BYTES, MAX_EVENTS_PER_BATCH, MAX_REPORT_BYTES, ReplicaHealth, Report,
    TRUNCATED_MARK,
};

/// The largest batch, as JSON: what a request of one batch adds (`{"batches":[` and `]}`) is
/// left room for, and more.
pub const MAX_BATCH_BYTES: usize = MAX_REPORT_BYTES - 1024;

/// `text` cut to at most `limit` bytes, the cut marked with how many bytes went.
pub fn fit(text: String, limit: usize) -> String {
    if text.len() <= limit {
        return text;
    }
    // The mark's length depends on the number it carries, which depends on the cut: a number
    // as long as the whole text's length is never too short.
    let room = limit.saturating_sub(TRUNCATED_MARK.len() + digits(text.len()) + " bytes]".len());
    let mut end = room.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}{TRUNCATED_MARK}{} bytes]",
        &text[..end],
        text.len() - end
    )
}

fn digits(n: usize) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// The event with each field within its bound.
pub fn fit_event(event: AgentEvent) -> AgentEvent {
    AgentEvent {
        at: fit(event.at, MAX_EVENT_AT_BYTES),
        kind: fit(event.kind, MAX_EVENT_KIND_BYTES),
        message: fit(event.message, MAX_EVENT_MESSAGE_BYTES),
        count: event.count,
    }
}

/// The status with its free text (replicas' messages, health reasons, the refusal) within the
/// bound of an event's message.
pub fn fit_status(mut status: HostStatus) -> HostStatus {
    status.refused = status.refused.map(|r| fit(r, MAX_EVENT_MESSAGE_BYTES));
    for r in &mut status.replicas {
        r.message = r.message.take().map(|m| fit(m, MAX_EVENT_MESSAGE_BYTES));
        if let Some(ReplicaHealth::Unhealthy { reason }) = &mut r.health {
            *reason = fit(std::mem::take(reason), MAX_EVENT_MESSAGE_BYTES);
        }
    }
    status
}

/// The size of a value as the JSON it is sent as.
pub fn json_len<T: serde::Serialize>(value: &T) -> usize {
    serde_json::to_vec(value).map_or(usize::MAX, |v| v.len())
}

/// One batch's content, before it has a sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub events: Vec<AgentEvent>,
    pub status: Option<HostStatus>,
}

/// What queuing `events` and `status` at `at` takes: batches within every bound, in order, the
/// status in the last; and whether the status could not be made to fit, and was left out.
pub fn split(at: &str, events: Vec<AgentEvent>, status: Option<HostStatus>) -> (Vec<Part>, bool) {
    let size = |part: &Part| {
        json_len(&Report {
            seq: u64::MAX,
            at: at.to_owned(),
            events: part.events.clone(),
            status: part.status.clone(),
        })
    };
    let mut parts: Vec<Part> = Vec::new();
    let mut current = Part {
        events: Vec::new(),
        status: None,
    };
    let mut current_bytes = size(&current);
    for event in events.into_iter().map(fit_event) {
        let bytes = json_len(&event) + 1;
        if current.events.len() == MAX_EVENTS_PER_BATCH || current_bytes + bytes > MAX_BATCH_BYTES {
            parts.push(std::mem::replace(
                &mut current,
                Part {
                    events: Vec::new(),
                    status: None,
                },
            ));
            current_bytes = size(&current);
        }
        current.events.push(event);
        current_bytes += bytes;
    }
    let mut status_dropped = false;
    if let Some(status) = status.map(fit_status) {
        current.status = Some(status);
        if size(&current) > MAX_BATCH_BYTES {
            let status = current.status.take();
            let alone = Part {
                events: Vec::new(),
                status,
            };
            if size(&alone) > MAX_BATCH_BYTES {
                status_dropped = true;
            } else {
                parts.push(std::mem::replace(&mut current, alone));
            }
        }
    }
    if !current.events.is_empty() || current.status.is_some() || parts.is_empty() {
        parts.push(current);
    }
    parts.retain(|p| !p.events.is_empty() || p.status.is_some());
    (parts, status_dropped)
}

/// A batch read back from the outbox, within the bounds: written by this agent it already is;
/// written by an older one, its fields are cut and events past the bound are replaced by one
/// that says how many went.
pub fn fit_batch(mut report: Report) -> Report {
    report.at = fit(report.at, MAX_EVENT_AT_BYTES);
    report.status = report.status.map(fit_status);
    let events: Vec<AgentEvent> = report.events.into_iter().map(fit_event).collect();
    let fits = |events: &[AgentEvent], report: &Report| {
        events.len() <= MAX_EVENTS_PER_BATCH
            && json_len(&Report {
                events: events.to_vec(),
                ..report.clone()
            }) <= MAX_BATCH_BYTES
    };
    report.events = Vec::new();
    if fits(&events, &report) {
        report.events = events;
        return report;
    }
    // Halving until it fits: a few tries, however large the batch.
    let mut keep = events.len().min(MAX_EVENTS_PER_BATCH - 1);
    loop {
        let mut kept = events[..keep].to_vec();
        kept.push(AgentEvent {
            at: kept
                .last()
                .map_or_else(|| report.at.clone(), |e| e.at.clone()),
            kind: "outbox".into(),
            message: format!(
                "{} events of this report were cut: it was past the control plane's bounds",
                events.len() - keep
            ),
            count: None,
        });
        if keep == 0 || fits(&kept, &report) {
            report.events = kept;
            return report;
        }
        keep /= 2;
    }
}

/// How many of the batches of `sizes` (their JSON lengths, oldest first) the next request
/// carries: as many as fit the body's bound and the batch count, and at least one, which on
/// its own always fits ([`MAX_BATCH_BYTES`]).
pub fn fitting(sizes: &[usize]) -> usize {
    let mut total = "{\"batches\":[]}".len();
    let mut n = 0;
    for size in sizes.iter().take(MAX_BATCHES_PER_REPORT) {
        total += size + usize::from(n > 0);
        if n > 0 && total > MAX_REPORT_BYTES {
            break;
        }
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use atoll_api::agent::{ReplicaState, ReplicaStatus, ReportRequest};
    use proptest::prelude::*;

    use super::*;

    fn event(message: String) -> AgentEvent {
        AgentEvent {
            at: "2026-01-01T00:00:00Z".into(),
            kind: "container".into(),
            message,
            count: None,
        }
    }

    #[test]
    fn a_message_within_the_bound_is_left_alone() {
        let m = "x".repeat(MAX_EVENT_MESSAGE_BYTES);
        assert_eq!(fit(m.clone(), MAX_EVENT_MESSAGE_BYTES), m);
    }

    #[test]
    fn an_agent_truncates_an_event_too_large_for_the_control_plane() {
        let huge = "é".repeat(1_800_000);
        let fitted = fit_event(event(huge.clone()));
        assert!(fitted.message.len() <= MAX_EVENT_MESSAGE_BYTES);
        assert!(
            fitted.message.ends_with(" bytes]") && fitted.message.contains(TRUNCATED_MARK),
            "the cut is marked: {}",
            &fitted.message[fitted.message.len() - 40..]
        );
        let kept = fitted.message.split(TRUNCATED_MARK).next().unwrap();
        assert!(huge.starts_with(kept) && kept.len() > 4000);
        let cut: usize = fitted.message[kept.len() + TRUNCATED_MARK.len()..]
            .trim_end_matches(" bytes]")
            .parse()
            .unwrap();
        assert_eq!(kept.len() + cut, huge.len(), "the mark says how much went");
    }

    #[test]
    fn many_events_are_split_over_batches_with_the_status_last() {
        let events: Vec<AgentEvent> = (0..250).map(|i| event(format!("{i}"))).collect();
        let status = HostStatus::default();
        let (parts, dropped) = split("t", events, Some(status.clone()));
        assert!(!dropped);
        let counts: Vec<usize> = parts.iter().map(|p| p.events.len()).collect();
        assert_eq!(counts, [100, 100, 50]);
        assert_eq!(parts[2].status, Some(status));
        assert!(parts[..2].iter().all(|p| p.status.is_none()));
        let order: Vec<&str> = parts
            .iter()
            .flat_map(|p| &p.events)
            .map(|e| e.message.as_str())
            .collect();
        assert_eq!(order.len(), 250);
        assert!(order.iter().enumerate().all(|(i, m)| *m == i.to_string()));
        assert_eq!(split("t", Vec::new(), None).0, Vec::new());
    }

    #[test]
    fn a_status_too_large_for_any_batch_is_left_out_and_said() {
        let replica = ReplicaStatus {
            deployment: "d".repeat(MAX_EVENT_MESSAGE_BYTES),
            service: "s".into(),
            replica: 0,
            state: ReplicaState::Running,
            container_id: None,
            image: "i".into(),
            restarts: 0,
            last_exit_code: None,
            since: None,
            message: Some("m".repeat(1_000_000)),
            version: None,
            health: None,
        };
        let status = HostStatus {
            replicas: vec![replica; 300],
            ..HostStatus::default()
        };
        let (parts, dropped) = split("t", vec![event("e".into())], Some(status));
        assert!(dropped);
        assert_eq!(parts.len(), 1);
        assert!(parts[0].status.is_none());
    }

    #[test]
    fn an_old_batch_past_the_bounds_is_cut_and_says_so() {
        let report = Report {
            seq: 7,
            at: "t".into(),
            events: (0..120).map(|_| event("x".repeat(30_000))).collect(),
            status: None,
        };
        let fitted = fit_batch(report);
        assert!(fitted.events.len() <= MAX_EVENTS_PER_BATCH);
        assert!(json_len(&fitted) <= MAX_BATCH_BYTES);
        let last = fitted.events.last().unwrap();
        assert_eq!(last.kind, "outbox");
        assert!(last.message.contains("were cut"), "{}", last.message);
    }

    #[test]
    fn requests_are_packed_under_the_body_bound() {
        assert_eq!(fitting(&[]), 0);
        assert_eq!(fitting(&[MAX_BATCH_BYTES]), 1, "one batch always goes");
        assert_eq!(fitting(&[400_000, 400_000, 400_000]), 2);
        assert_eq!(fitting(&[10; 150]), MAX_BATCHES_PER_REPORT);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Whatever the reconciler says, every batch queued and every request sent is within
        /// the control plane's bounds.
        #[test]
        fn what_is_queued_is_within_every_bound(
            lengths in prop::collection::vec(0usize..20_000, 0..400),
            control in any::<bool>(),
        ) {
            let events: Vec<AgentEvent> = lengths
                .iter()
                .map(|n| event(if control { "\u{1}".repeat(*n) } else { "é".repeat(*n / 2) }))
                .collect();
            let n = events.len();
            let (parts, _) = split("2026-01-01T00:00:00Z", events, Some(HostStatus::default()));
            prop_assert_eq!(parts.iter().map(|p| p.events.len()).sum::<usize>(), n);
            let batches: Vec<Report> = parts
                .into_iter()
                .zip(1..)
                .map(|(p, seq)| Report { seq, at: "2026-01-01T00:00:00Z".into(), events: p.events, status: p.status })
                .collect();
            for b in &batches {
                prop_assert!(b.events.len() <= MAX_EVENTS_PER_BATCH);
                prop_assert!(json_len(b) <= MAX_BATCH_BYTES);
                prop_assert!(b.events.iter().all(|e| e.message.len() <= MAX_EVENT_MESSAGE_BYTES));
            }
            let sizes: Vec<usize> = batches.iter().map(json_len).collect();
            let mut rest = &batches[..];
            while !rest.is_empty() {
                let take = fitting(&sizes[batches.len() - rest.len()..]);
                let request = ReportRequest { batches: rest[..take].to_vec() };
                prop_assert!(json_len(&request) <= MAX_REPORT_BYTES);
                rest = &rest[take..];
            }
        }
    }
}
