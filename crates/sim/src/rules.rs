//! The protocol's rules the simulation runs: each is the very function the agent, the control
//! plane or the store calls, so the simulation cannot drift from the product. A test may swap
//! one for a broken version to show that the invariants catch it.

use atoll_store::ReportCursor;

/// `atoll_control::core::revision::next`'s shape: the stored head `(revision, hash)` and the new
/// content's hash to the new revision, if any.
pub type NextRevision = fn(head: Option<(u64, &str)>, hash: &str) -> Option<u64>;

/// The decisions of the protocol, as plain function pointers.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Agent: may a manifest of this revision replace the applied one?
    /// (`atoll_agent::core::sync::check_revision`, called by the agent's manifest check.)
    pub accept: fn(revision: u64, applied: u64) -> Result<(), String>,
    /// Control plane: is a long-poll with `have` answered with the stored revision now, rather
    /// than held? Also who a commit wakes. (`atoll_control::core::revision::answers`)
    pub answers: fn(revision: u64, have: u64) -> bool,
    /// Control plane: the revision of newly compiled content, if it changed.
    /// (`atoll_control::core::revision::next`, called by the apply planner.)
    pub next_revision: NextRevision,
    /// Store: is a report batch new, to be stored? (`atoll_store::ReportCursor::admit`)
    pub admit_report: fn(cursor: &mut ReportCursor, seq: u64) -> bool,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            accept: atoll_agent::core::sync::check_revision,
            answers: atoll_control::core::revision::answers,
            next_revision: atoll_control::core::revision::next,
            admit_report: ReportCursor::admit,
        }
    }
}
