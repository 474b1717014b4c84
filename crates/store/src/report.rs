//! Which report batches are new. An agent numbers its batches and resends those whose
//! acknowledgement it did not get; the store keeps, per host, the highest sequence it has
//! stored, stores only batches above it and answers it as the acknowledgement. So a resend is
//! stored once, and a gap (batches the agent's full outbox dropped) is no obstacle.
//!
//! Pure, so the simulator (`atoll-sim`) runs the same rule as every backend.

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportCursor {
    stored: u64,
}

impl ReportCursor {
    /// The cursor of a host whose highest stored batch is `stored` (0 for none).
    pub fn new(stored: u64) -> ReportCursor {
        ReportCursor { stored }
    }

    /// Whether batch `seq` is to be stored; if so the cursor moves to it. Batches come oldest
    /// first; one at or below the cursor was stored before.
    pub fn admit(&mut self, seq: u64) -> bool {
        if seq <= self.stored {
            return false;
        }
        self.stored = seq;
        true
    }

    /// The acknowledgement: every batch up to this sequence is stored.
    pub fn acked(&self) -> u64 {
        self.stored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resends_are_ignored_and_gaps_accepted() {
        let mut c = ReportCursor::new(2);
        assert!(!c.admit(1));
        assert!(!c.admit(2));
        assert!(c.admit(3));
        assert!(c.admit(7), "4 to 6 were dropped by the agent's full outbox");
        assert!(!c.admit(5));
        assert_eq!(c.acked(), 7);
        assert_eq!(ReportCursor::default().acked(), 0);
    }
}
