//! A site's manifest revision: when it grows, and when an agent's long-poll is answered with
//! it. The apply planner, the long-poll and the fleet's wake-ups call these; the simulator
//! (`atoll-sim`) runs the same rules for many sites.
//!
//! A poll compares content, not only numbers: a control plane that lost its last commits (a
//! restored backup, a cut WAL) would otherwise give a number an agent already holds to other
//! content, and the agent, which takes only newer revisions, would never take it. So an agent
//! says the hash of what it holds, and a control plane that meets a revision it does not know
//! moves the site's revision above it ([`Answer::Overtake`]).

/// The highest revision the store can keep (its column is a signed 64-bit integer).
pub const MAX_REVISION: u64 = i64::MAX as u64;

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

/// What an agent says it holds when it long-polls: its revision and, from agents that send it,
/// that revision's content hash (older agents send only the revision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held<'a> {
    pub revision: u64,
    pub hash: Option<&'a str>,
}

/// How a long-poll is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The stored revision is newer than the agent's: send it.
    Send,
    /// The agent holds the stored revision (or the site has no manifest yet): wait for a newer
    /// one.
    Wait,
    /// The agent holds a revision this control plane does not know: higher than the stored
    /// one, or the same number with other content. The stored content is committed again,
    /// unchanged, at `revision` (one above the agent's), so that the agent takes it; the
    /// divergence is reported.
    Overtake { revision: u64 },
}

/// How a poll from an agent holding `held` is answered, given the site's stored head
/// `(revision, hash)` (none before its first manifest). A site without a manifest has nothing
/// to move above the agent's: its first one, at revision 1, is overtaken in turn. A revision
/// the store could not go above is no revision this control plane ever signed: waited out.
pub fn answer(head: Option<(u64, &str)>, held: Held<'_>) -> Answer {
    let Some((revision, hash)) = head else {
        return Answer::Wait;
    };
    if answers(revision, held.revision) {
        return Answer::Send;
    }
    let same = revision == held.revision && held.hash.is_none_or(|h| h == hash);
    if same || held.revision >= MAX_REVISION {
        return Answer::Wait;
    }
    Answer::Overtake {
        revision: held.revision + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn held(revision: u64, hash: Option<&str>) -> Held<'_> {
        Held { revision, hash }
    }

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

    #[test]
    fn an_agent_holding_the_stored_revision_waits() {
        assert_eq!(answer(Some((3, "a")), held(3, Some("a"))), Answer::Wait);
        assert_eq!(
            answer(Some((3, "a")), held(3, None)),
            Answer::Wait,
            "an older agent says no hash: the same number is taken for the same content"
        );
        assert_eq!(answer(None, held(0, None)), Answer::Wait);
    }

    #[test]
    fn an_agent_behind_gets_the_stored_revision() {
        assert_eq!(answer(Some((3, "a")), held(2, Some("b"))), Answer::Send);
        assert_eq!(answer(Some((3, "a")), held(0, None)), Answer::Send);
        assert_eq!(answer(Some((3, "a")), held(2, None)), Answer::Send);
    }

    #[test]
    fn a_control_plane_that_lost_commits_moves_the_site_above_what_its_agent_holds() {
        // The same number with other content: the apply after a restore reused it.
        assert_eq!(
            answer(Some((3, "four")), held(3, Some("three"))),
            Answer::Overtake { revision: 4 }
        );
        // A number this control plane never reached, with or without a hash.
        assert_eq!(
            answer(Some((2, "two")), held(3, Some("three"))),
            Answer::Overtake { revision: 4 }
        );
        assert_eq!(
            answer(Some((2, "two")), held(9, None)),
            Answer::Overtake { revision: 10 }
        );
        // Nothing stored yet: nothing to move above the agent's.
        assert_eq!(answer(None, held(3, Some("three"))), Answer::Wait);
        // A number the store could not go above was never signed here.
        assert_eq!(
            answer(Some((2, "two")), held(MAX_REVISION, None)),
            Answer::Wait
        );
        assert_eq!(
            answer(Some((2, "two")), held(u64::MAX, Some("x"))),
            Answer::Wait
        );
    }

    proptest! {
        /// Whatever an agent claims, it is sent the stored manifest only when that is newer, a
        /// divergence is answered by a revision above the agent's (so its own rule, only newer
        /// revisions, takes it) and within the store's range, and an agent holding the stored
        /// head waits.
        #[test]
        fn every_poll_ends_with_the_agent_able_to_take_the_stored_content(
            stored in proptest::option::of((0u64..6, 0u8..3)),
            have in prop_oneof![0u64..8, Just(MAX_REVISION - 1), Just(MAX_REVISION), Just(u64::MAX)],
            have_hash in proptest::option::of(0u8..3),
        ) {
            let hashes = ["a", "b", "c"];
            let head = stored.map(|(r, h)| (r, hashes[usize::from(h)]));
            let have_hash = have_hash.map(|h| hashes[usize::from(h)]);
            let decided = answer(head, held(have, have_hash));
            match (head, decided) {
                (None, a) => prop_assert_eq!(a, Answer::Wait),
                (Some((revision, _)), Answer::Send) => prop_assert!(revision > have),
                (Some((revision, hash)), Answer::Wait) => prop_assert!(
                    have >= MAX_REVISION
                        || (revision == have && have_hash.is_none_or(|h| h == hash))
                ),
                (Some((revision, hash)), Answer::Overtake { revision: above }) => {
                    prop_assert!(revision < have || have_hash.is_some_and(|h| h != hash));
                    prop_assert_eq!(above, have + 1);
                    prop_assert!(above > revision && above <= MAX_REVISION);
                    // Once committed there, the agent's next poll is sent it.
                    prop_assert_eq!(answer(Some((above, hash)), held(have, have_hash)), Answer::Send);
                }
            }
        }
    }
}
