//! TLS session tickets that every replica opens: resumption across control-plane replicas.
//!
//! rustls' own ticketer draws a random key in each process, so an agent that reconnects to
//! another replica (its own died, or a load balancer chose another) pays a full handshake with
//! certificate checks, and ten thousand of them at once after a replica's death is a storm of
//! them. Here the ticket keys are derived from the master key that the replicas already share
//! (`shell::vault`), so no new secret has to be handed out or stored: HKDF-SHA256 with a label
//! of its own as salt (a ticket key is no key of the secrets' envelopes) and the number of the
//! period as info, periods being [`PERIOD_SECS`] (6 hours) of the wall clock since the epoch.
//!
//! A ticket is sealed (ChaCha20-Poly1305, a random nonce, as rustls' own) under the current
//! period's key and carries that period's number in clear, which the AEAD authenticates. A
//! ticket of the current or the previous period opens; any other is refused before any key is
//! made, so a ticket is good for 6 to 12 hours and no key opens anything after 12: the bound on
//! lost forward secrecy that rustls' own rotation gives. The period is read from each replica's
//! wall clock, which must agree with the others' to well within a period (the leases already
//! ask far closer agreement). Rotating the master key changes every ticket key: agents then make
//! one full handshake each, nothing more.
//!
//! No key material leaves this module: the `Debug` output names none, and nothing is logged.

use std::sync::Arc;

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf::Prk;
use ring::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;

use super::vault::Vault;

/// The HKDF salt that makes the ticket keys from the master key; never used for anything else.
pub const LABEL: &[u8] = b"atoll tls session tickets v1";

/// How long one ticket key encrypts: the ticket lifetime the server tells its clients.
pub const PERIOD_SECS: u64 = 6 * 60 * 60;

const PERIOD_LEN: usize = 8;

/// Makes and opens session tickets under keys every replica given the same master key derives.
pub struct SharedTicketer {
    keys: Prk,
    random: SystemRandom,
    /// The wall clock in seconds since the epoch: `clock` in the server, any value in tests.
    now_secs: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl std::fmt::Debug for SharedTicketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTicketer")
            .field("period_secs", &PERIOD_SECS)
            .finish_non_exhaustive()
    }
}

impl SharedTicketer {
    /// The ticketer of a server whose master key is `vault`'s, on the wall clock.
    pub fn shared(vault: &Vault) -> Arc<dyn ProducesTickets> {
        Arc::new(Self::with_clock(
            vault,
            Box::new(|| super::clock::now_ms() / 1000),
        ))
    }

    /// The ticketer for `vault`'s master key, with the clock given (seconds since the epoch).
    pub fn with_clock(vault: &Vault, now_secs: Box<dyn Fn() -> u64 + Send + Sync>) -> Self {
        SharedTicketer {
            keys: vault.derive(LABEL),
            random: SystemRandom::new(),
            now_secs,
        }
    }

    fn period(&self) -> u64 {
        (self.now_secs)() / PERIOD_SECS
    }

    /// The key of `period`. HKDF refuses only an output longer than it can make, which a
    /// 32-byte key is not.
    fn key(&self, period: u64) -> Option<LessSafeKey> {
        let info = period.to_be_bytes();
        let info = [info.as_slice()];
        let okm = self.keys.expand(&info, &CHACHA20_POLY1305).ok()?;
        Some(LessSafeKey::new(UnboundKey::from(okm)))
    }
}

impl ProducesTickets for SharedTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        // A ticket made at the end of its period still opens for the whole next one.
        u32::try_from(PERIOD_SECS).unwrap_or(u32::MAX)
    }

    /// `period (8 bytes, big-endian) ‖ nonce (12) ‖ ciphertext ‖ tag (16)`.
    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let now = self.period();
        let period = now.to_be_bytes();
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).ok()?;
        let mut ticket =
            Vec::with_capacity(PERIOD_LEN + NONCE_LEN + plain.len() + CHACHA20_POLY1305.tag_len());
        ticket.extend_from_slice(&period);
        ticket.extend_from_slice(&nonce);
        ticket.extend_from_slice(plain);
        let tag = self
            .key(now)?
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(period),
                &mut ticket[PERIOD_LEN + NONCE_LEN..],
            )
            .ok()?;
        ticket.extend_from_slice(tag.as_ref());
        Some(ticket)
    }

    /// Any bytes a client sends: a ticket of another period, or too short, or altered, or made
    /// under another master key is `None`, never a panic.
    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        let (period, rest) = ticket.split_first_chunk::<PERIOD_LEN>()?;
        let (nonce, sealed) = rest.split_first_chunk::<NONCE_LEN>()?;
        let made = u64::from_be_bytes(*period);
        let now = self.period();
        if made != now && made.checked_add(1) != Some(now) {
            return None;
        }
        let mut out = sealed.to_vec();
        let len = self
            .key(made)?
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(*period),
                &mut out,
            )
            .ok()?
            .len();
        out.truncate(len);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    const SESSION: &[u8] = b"a resumable session: its secrets and the client's certificate";

    fn vault(byte: u8) -> Vault {
        Vault::from_key([byte; 32])
    }

    /// A ticketer for `vault` whose clock reads `now`, which the test moves.
    fn at(vault: &Vault, now: &Arc<AtomicU64>) -> SharedTicketer {
        let now = now.clone();
        SharedTicketer::with_clock(vault, Box::new(move || now.load(Ordering::SeqCst)))
    }

    fn clock(secs: u64) -> Arc<AtomicU64> {
        Arc::new(AtomicU64::new(secs))
    }

    #[test]
    fn a_ticket_made_by_one_replica_opens_on_another_given_the_same_master_key() {
        let now = clock(1_800_000_000);
        let ticket = at(&vault(7), &now).encrypt(SESSION).unwrap();
        assert_eq!(at(&vault(7), &now).decrypt(&ticket).unwrap(), SESSION);
        assert!(
            !ticket
                .windows(SESSION.len())
                .any(|window| window == SESSION),
            "the ticket carries the session in clear"
        );
    }

    #[test]
    fn a_ticket_made_under_another_master_key_is_refused() {
        let now = clock(1_800_000_000);
        let ticket = at(&vault(7), &now).encrypt(SESSION).unwrap();
        assert_eq!(at(&vault(8), &now).decrypt(&ticket), None);
    }

    #[test]
    fn a_ticket_opens_through_the_next_period_and_not_after() {
        let start = 1_800_000_000 / PERIOD_SECS * PERIOD_SECS;
        let now = clock(start + PERIOD_SECS - 1);
        let ticketer = at(&vault(7), &now);
        let ticket = ticketer.encrypt(SESSION).unwrap();
        now.store(start + PERIOD_SECS, Ordering::SeqCst);
        assert_eq!(
            ticketer.decrypt(&ticket).unwrap(),
            SESSION,
            "previous period"
        );
        now.store(start + 2 * PERIOD_SECS - 1, Ordering::SeqCst);
        assert_eq!(ticketer.decrypt(&ticket).unwrap(), SESSION, "its end");
        now.store(start + 2 * PERIOD_SECS, Ordering::SeqCst);
        assert_eq!(
            ticketer.decrypt(&ticket),
            None,
            "older than the previous period"
        );
        // Nor one from a replica whose clock runs a period ahead of this one's.
        let ahead = clock(start + 4 * PERIOD_SECS);
        let early = at(&vault(7), &ahead).encrypt(SESSION).unwrap();
        assert_eq!(ticketer.decrypt(&early), None, "a period not yet begun");
    }

    #[test]
    fn an_altered_or_cut_ticket_is_refused_without_a_panic() {
        let now = clock(1_800_000_000);
        let ticketer = at(&vault(7), &now);
        let ticket = ticketer.encrypt(SESSION).unwrap();
        for i in 0..ticket.len() {
            let mut altered = ticket.clone();
            altered[i] ^= 0x01;
            assert_eq!(ticketer.decrypt(&altered), None, "byte {i} altered");
        }
        for len in 0..ticket.len() {
            assert_eq!(ticketer.decrypt(&ticket[..len]), None, "cut to {len}");
        }
        let far = u64::MAX.to_be_bytes();
        assert_eq!(ticketer.decrypt(&far), None);
    }

    #[test]
    fn two_tickets_of_one_session_differ() {
        let now = clock(1_800_000_000);
        let ticketer = at(&vault(7), &now);
        assert_ne!(ticketer.encrypt(SESSION), ticketer.encrypt(SESSION));
    }

    #[test]
    fn debug_output_holds_no_key() {
        let now = clock(1_800_000_000);
        let shown = format!("{:?}", at(&vault(7), &now));
        assert_eq!(shown, "SharedTicketer { period_secs: 21600, .. }");
    }
}
