//! The cryptography of secrets, in one place.
//!
//! - **Sealing to hosts.** Every host has an X25519 key pair; the private half never leaves it.
//!   The control plane seals a site's secret values to the public keys of all the site's hosts:
//!   a random file key encrypts the payload with ChaCha20-Poly1305, and is wrapped for each
//!   recipient with a key derived (HKDF-SHA256) from an ephemeral X25519 agreement. Only a
//!   holder of one of the private keys can open it; the associated data binds it to the site,
//!   secret and version it was sealed for, so a sealed value cannot be replayed elsewhere.
//! - **Encryption at rest.** [`encrypt`] and [`decrypt`] are ChaCha20-Poly1305 with a random
//!   nonce, for the control plane's envelope encryption (a data key per secret version, wrapped
//!   under the master key).

use atoll_api::manifest::{Sealed, Stanza};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore as _;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;
use x25519_dalek::{PublicKey, StaticSecret};

/// A 256-bit symmetric key.
pub type Key = [u8; 32];

const KDF_INFO: &[u8] = b"atoll seal v1 x25519";
const NONCE_LEN: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("not an X25519 public key (expected 32 bytes, base64)")]
    BadRecipient,
    #[error("sealed to no one")]
    NoRecipients,
    #[error("not sealed to this host's key")]
    NotARecipient,
    #[error("malformed sealed data")]
    Malformed,
    /// The key is wrong or the bytes were altered: the two cannot be told apart.
    #[error("cannot be decrypted (wrong key, or altered)")]
    Decrypt,
}

/// A host's X25519 private key.
pub struct Identity {
    secret: StaticSecret,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("recipient", &self.recipient())
            .finish_non_exhaustive()
    }
}

impl Identity {
    pub fn generate() -> Identity {
        Identity {
            secret: StaticSecret::random_from_rng(rand::rngs::OsRng),
        }
    }

    pub fn from_bytes(bytes: Key) -> Identity {
        Identity {
            secret: StaticSecret::from(bytes),
        }
    }

    pub fn to_bytes(&self) -> Key {
        self.secret.to_bytes()
    }

    /// The public key, base64: what the control plane seals to.
    pub fn recipient(&self) -> String {
        B64.encode(PublicKey::from(&self.secret).as_bytes())
    }
}

/// What a site's sealed secret is bound to: opening it as another site's, another secret's or
/// another version's fails.
pub fn secret_aad(site: &str, name: &str, version: u64) -> Vec<u8> {
    format!("atoll secret|{site}|{name}|{version}").into_bytes()
}

/// Checks that `text` is a recipient (an X25519 public key, base64).
pub fn parse_recipient(text: &str) -> Result<(), SealError> {
    recipient(text).map(drop)
}

fn recipient(text: &str) -> Result<PublicKey, SealError> {
    let bytes: Key = B64
        .decode(text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(SealError::BadRecipient)?;
    Ok(PublicKey::from(bytes))
}

/// Seals `plaintext` so that any one of `recipients` can open it. `aad` must be given again
/// to open it.
pub fn seal(recipients: &[String], plaintext: &[u8], aad: &[u8]) -> Result<Sealed, SealError> {
    if recipients.is_empty() {
        return Err(SealError::NoRecipients);
    }
    let file_key = random_key();
    let mut stanzas = Vec::with_capacity(recipients.len());
    for r in recipients {
        let public = recipient(r)?;
        let ephemeral = StaticSecret::random_from_rng(rand::rngs::OsRng);
        let ephemeral_public = PublicKey::from(&ephemeral);
        let shared = ephemeral.diffie_hellman(&public);
        let wrap_key = derive(
            shared.as_bytes(),
            ephemeral_public.as_bytes(),
            public.as_bytes(),
        );
        let wrapped = seal_with(&wrap_key, [0; NONCE_LEN], &file_key, b"")?;
        stanzas.push(Stanza {
            recipient: r.clone(),
            ephemeral: B64.encode(ephemeral_public.as_bytes()),
            wrapped: B64.encode(wrapped),
        });
    }
    // The file key is fresh for every sealing, so a fixed nonce is never reused with it.
    let payload = seal_with(&file_key, [0; NONCE_LEN], plaintext, aad)?;
    Ok(Sealed {
        stanzas,
        payload: B64.encode(payload),
    })
}

/// Opens what [`seal`] sealed to `identity`'s public key.
pub fn open(identity: &Identity, sealed: &Sealed, aad: &[u8]) -> Result<Vec<u8>, SealError> {
    let me = identity.recipient();
    let stanza = sealed
        .stanzas
        .iter()
        .find(|s| s.recipient == me)
        .ok_or(SealError::NotARecipient)?;
    let ephemeral: Key = B64
        .decode(&stanza.ephemeral)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(SealError::Malformed)?;
    let wrapped = B64
        .decode(&stanza.wrapped)
        .map_err(|_| SealError::Malformed)?;
    let shared = identity.secret.diffie_hellman(&PublicKey::from(ephemeral));
    let public = PublicKey::from(&identity.secret);
    let wrap_key = derive(shared.as_bytes(), &ephemeral, public.as_bytes());
    let file_key: Key = open_with(&wrap_key, [0; NONCE_LEN], wrapped, b"")?
        .try_into()
        .map_err(|_| SealError::Malformed)?;
    let payload = B64
        .decode(&sealed.payload)
        .map_err(|_| SealError::Malformed)?;
    open_with(&file_key, [0; NONCE_LEN], payload, aad)
}

/// Encrypts with a random nonce; the nonce leads the output.
pub fn encrypt(key: &Key, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let mut out = nonce.to_vec();
    // Sealing with a valid 32-byte key cannot fail.
    out.extend(seal_with(key, nonce, plaintext, aad).unwrap_or_default());
    out
}

/// Decrypts what [`encrypt`] made under the same key and associated data.
pub fn decrypt(key: &Key, data: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
    let (nonce, sealed) = data
        .split_at_checked(NONCE_LEN)
        .ok_or(SealError::Malformed)?;
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::Malformed)?;
    open_with(key, nonce, sealed.to_vec(), aad)
}

pub fn random_key() -> Key {
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    key
}

fn derive(shared: &[u8], ephemeral: &[u8], recipient: &[u8]) -> Key {
    let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, &[ephemeral, recipient].concat());
    let mut out = [0u8; 32];
    // HKDF-SHA256 can always expand to 32 bytes.
    if let Ok(okm) = salt.extract(shared).expand(&[KDF_INFO], hkdf::HKDF_SHA256) {
        let _ = okm.fill(&mut out);
    }
    out
}

fn aead_key(key: &Key) -> Result<LessSafeKey, SealError> {
    UnboundKey::new(&CHACHA20_POLY1305, key)
        .map(LessSafeKey::new)
        .map_err(|_| SealError::Malformed)
}

fn seal_with(
    key: &Key,
    nonce: [u8; NONCE_LEN],
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, SealError> {
    let mut buf = plaintext.to_vec();
    aead_key(key)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut buf,
        )
        .map_err(|_| SealError::Malformed)?;
    Ok(buf)
}

fn open_with(
    key: &Key,
    nonce: [u8; NONCE_LEN],
    mut data: Vec<u8>,
    aad: &[u8],
) -> Result<Vec<u8>, SealError> {
    let len = aead_key(key)?
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut data,
        )
        .map_err(|_| SealError::Decrypt)?
        .len();
    data.truncate(len);
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_recipient_and_only_them_can_open() {
        let (a, b, c) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let sealed = seal(&[a.recipient(), b.recipient()], b"hunter2", b"site/db/3").unwrap();
        assert_eq!(open(&a, &sealed, b"site/db/3").unwrap(), b"hunter2");
        assert_eq!(open(&b, &sealed, b"site/db/3").unwrap(), b"hunter2");
        assert_eq!(
            open(&c, &sealed, b"site/db/3"),
            Err(SealError::NotARecipient)
        );
        // Bound to what it was sealed for.
        assert_eq!(open(&a, &sealed, b"other/db/3"), Err(SealError::Decrypt));
    }

    #[test]
    fn a_stolen_stanza_does_not_open_for_another_key() {
        let (a, c) = (Identity::generate(), Identity::generate());
        let mut sealed = seal(&[a.recipient()], b"x", b"").unwrap();
        sealed.stanzas[0].recipient = c.recipient();
        assert_eq!(open(&c, &sealed, b""), Err(SealError::Decrypt));
    }

    #[test]
    fn identities_survive_a_round_trip_through_bytes() {
        let a = Identity::generate();
        let again = Identity::from_bytes(a.to_bytes());
        assert_eq!(a.recipient(), again.recipient());
        let sealed = seal(&[a.recipient()], b"v", b"").unwrap();
        assert_eq!(open(&again, &sealed, b"").unwrap(), b"v");
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let a = Identity::generate();
        assert_eq!(seal(&[], b"x", b""), Err(SealError::NoRecipients));
        assert_eq!(
            seal(&["nope".into()], b"x", b""),
            Err(SealError::BadRecipient)
        );
        assert_eq!(parse_recipient(&a.recipient()), Ok(()));
        let mut sealed = seal(&[a.recipient()], b"x", b"").unwrap();
        sealed.payload = "!!".into();
        assert_eq!(open(&a, &sealed, b""), Err(SealError::Malformed));
        assert_eq!(
            decrypt(&random_key(), b"short", b""),
            Err(SealError::Malformed)
        );
    }

    proptest! {
        #[test]
        fn encryption_round_trips_and_hides_the_value(
            value in proptest::collection::vec(any::<u8>(), 8..200),
            aad in proptest::collection::vec(any::<u8>(), 0..20),
        ) {
            let key = random_key();
            let data = encrypt(&key, &value, &aad);
            prop_assert!(!data.windows(value.len()).any(|w| w == value.as_slice()));
            prop_assert_eq!(decrypt(&key, &data, &aad).unwrap(), value.clone());
            prop_assert_eq!(decrypt(&random_key(), &data, &aad), Err(SealError::Decrypt));
            let mut altered = data.clone();
            let last = altered.len() - 1;
            altered[last] ^= 1;
            prop_assert_eq!(decrypt(&key, &altered, &aad), Err(SealError::Decrypt));
        }
    }
}
