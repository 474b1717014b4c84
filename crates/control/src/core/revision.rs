//! A site's manifest revision: when it grows, and when an agent's long-poll is answered with
//! it. The apply planner, the long-poll and the fleet's wake-ups call these; the simulator
//! (`atoll-sim`) runs the same rules for many sites.

/// The revision of a site's newly compiled manifest with content `hash`, given the stored head
/// `(revision, hash)`: none if the content is unchanged, else one more than the head (1 for a
/// site's first manifest). Revisions never go back, so an agent can refuse any older one.
pub fn next(head: Option<(u64, &str)>, hash: &str) -> Option<u64> {
    match head {
        Some((_, stored)) if stored == hash => None,
        Some((revision, _)) => Some(revision + 1),
        None => Some(1),
    }
}

/// Whether an agent that has revision `have` gets the stored `revision` now, rather than
/// waiting: only a newer one is sent.
pub fn answers(revision: u64, have: u64) -> bool {
    revision > have
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revision_grows_by_one_when_the_content_changes() {
        assert_eq!(next(None, "a"), Some(1));
        assert_eq!(next(Some((4, "a")), "a"), None);
        assert_eq!(next(Some((4, "a")), "b"), Some(5));
    }

    #[test]
    fn a_poll_is_answered_only_with_a_newer_revision() {
        assert!(answers(3, 2));
        assert!(answers(1, 0));
        assert!(!answers(2, 2));
        assert!(!answers(1, 2));
    }
}
