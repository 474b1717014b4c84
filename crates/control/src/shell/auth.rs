//! User API tokens: 256 random bits, shown once, stored only as their SHA-256.

use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest, Sha256};

/// The prefix makes a leaked token easy to recognise (and to scan for).
const PREFIX: &str = "atoll_";

/// A new random token.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// What the store keeps of a token. Looking a token up by its hash needs no constant-time
/// comparison: the hash of a guess reveals nothing about stored hashes.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The token of an `Authorization: Bearer ...` header, if it is well formed.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let token = header?.strip_prefix("Bearer ")?.trim();
    (token.starts_with(PREFIX) && token.len() < 200).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hash_stably() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(a.starts_with("atoll_") && a.len() > 40);
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), hash(&b));
    }

    #[test]
    fn bearer_headers() {
        assert_eq!(bearer(Some("Bearer atoll_x")), Some("atoll_x"));
        assert_eq!(bearer(Some("Basic atoll_x")), None);
        assert_eq!(bearer(Some("Bearer other")), None);
        assert_eq!(bearer(None), None);
    }
}
