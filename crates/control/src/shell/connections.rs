//! What a connection that has not authenticated may hold: a bounded handshake, a bounded wait
//! for its request's header, a bounded idle time, and a share of a bound per remote address.
//!
//! The decision that shaped it: a connection counts as authenticated once its TLS handshake
//! presented a client certificate the CA signed (an agent); only those are exempt. Many real
//! sites share one NAT address, and the benchmark runs ten thousand sites from one process, so
//! the per-address bound must never count agents, and their long-polls (30 s of silence) must
//! never meet the idle timeout. A connection still in its handshake is not counted either: it
//! cannot be told from an agent yet, and the handshake timeout already bounds it; the bound is
//! applied once the handshake ends without a certificate, by closing the connection. A bearer
//! token travels inside requests, so it cannot exempt a connection before its first request;
//! the CLI's connections are short and well within the bounds.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// The bounds on connections that have not authenticated. Settable on `atoll control`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// From accepting the TCP connection to the end of the TLS handshake.
    pub handshake: Duration,
    /// From the handshake to a complete request header (every HTTP/1 connection, and the
    /// first request of one that did not authenticate).
    pub header_read: Duration,
    /// With no request in flight, after the last one ended.
    pub idle: Duration,
    /// Connections that did not authenticate, open at once from one address.
    pub per_address: usize,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            handshake: Duration::from_secs(10),
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(30),
            per_address: 64,
        }
    }
}

/// The connections that did not authenticate, counted by remote address.
#[derive(Debug, Default)]
pub struct Unauthenticated {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection's place in the count, given back when it closes.
#[derive(Debug)]
pub struct Slot {
    owner: Arc<Unauthenticated>,
    address: IpAddr,
}

impl Unauthenticated {
    /// A place for one more connection from `address`, unless it already holds `limit`.
    pub fn admit(self: &Arc<Self>, address: IpAddr, limit: usize) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(address).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(Slot {
            owner: self.clone(),
            address,
        })
    }

    #[cfg(test)]
    fn count(&self, address: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&address).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

/// Whether a connection has a request in flight, and since when it has had none.
#[derive(Debug)]
pub struct Activity {
    in_flight: AtomicUsize,
    quiet_since: Mutex<Instant>,
    served: AtomicUsize,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            quiet_since: Mutex::new(Instant::now()),
            served: AtomicUsize::new(0),
        })
    }

    /// Marks a request in flight until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// When the connection is to be closed, if nothing happens before: `None` while a request
    /// is in flight.
    pub fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let since = *self.quiet_since.lock().unwrap_or_else(|p| p.into_inner());
        let wait = if self.served.load(Ordering::SeqCst) == 0 {
            limits.header_read
        } else {
            limits.idle
        };
        Some(since + wait)
    }
}

/// A request in flight on a connection.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.quiet_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.0.served.fetch_add(1, Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_is_per_address_and_a_closed_connection_gives_its_place_back() {
        let count = Arc::new(Unauthenticated::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = count.admit(a, 2).unwrap();
        let _second = count.admit(a, 2).unwrap();
        assert!(count.admit(a, 2).is_none(), "the third from one address");
        assert!(
            count.admit(b, 2).is_some(),
            "another address has its own share"
        );
        drop(first);
        assert_eq!(count.count(a), 1);
        assert!(count.admit(a, 2).is_some());
    }

    #[test]
    fn a_request_in_flight_is_never_idle_and_after_one_the_idle_timeout_counts() {
        let limits = ConnectionLimits {
            header_read: Duration::from_secs(2),
            idle: Duration::from_secs(50),
            ..ConnectionLimits::default()
        };
        let activity = Activity::new();
        let first = activity.deadline(&limits).unwrap();
        assert!(
            first <= Instant::now() + limits.header_read,
            "before a request, the header read"
        );
        let request = activity.begin();
        assert_eq!(activity.deadline(&limits), None);
        drop(request);
        let after = activity.deadline(&limits).unwrap();
        assert!(
            after > Instant::now() + Duration::from_secs(40),
            "after a request, the idle timeout"
        );
    }
}
