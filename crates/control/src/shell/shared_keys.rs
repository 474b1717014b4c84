//! Which CA and manifest-signing key the replicas of one store share: noted in the store by
//! the first start, and compared at every start after it.
//!
//! The decision that shaped it: the keys are given to every replica as files (see
//! ARCHITECTURE.md), so a replica whose folder was not filled from the first one's would make
//! a CA and a signing key of its own and serve: agents enrolled through it would be refused by
//! every other replica, and the manifests it signed by every agent. Only public facts are
//! noted (the CA certificate's fingerprint, the signing key's public half), so the store holds
//! nothing that could stand in for the keys. The master key has its own check (`vault`).

use atoll_store::{Store, StoreError, Write};

/// The setting that notes the shared keys.
const SETTING: &str = "replica-keys";

/// The public facts of this replica's keys, as the setting holds them.
pub fn noted(ca_fingerprint: &str, signing_public_key: &str) -> String {
    format!("ca={ca_fingerprint} signing={signing_public_key}")
}

/// Why `ours` cannot serve beside the replicas that noted `stored`, if it cannot.
pub fn disagreement(stored: &str, ours: &str) -> Option<String> {
    (stored != ours).then(|| {
        let (theirs_ca, ours_ca) = (field_of(stored, "ca="), field_of(ours, "ca="));
        let which = if theirs_ca == ours_ca {
            "manifest-signing key (signing-key.pk8)".to_owned()
        } else {
            format!("CA (ca.pem, ca-key.pem: fingerprint {ours_ca}, the store's {theirs_ca})")
        };
        format!(
            "this data folder's {which} is not the one the store's other replicas use; \
             copy ca.pem, ca-key.pem and signing-key.pk8 from a replica's data folder into this one, \
             then start again; nothing was changed"
        )
    })
}

fn field_of<'a>(noted: &'a str, key: &str) -> &'a str {
    noted
        .split(' ')
        .find_map(|part| part.strip_prefix(key))
        .unwrap_or("unknown")
}

/// Notes this replica's keys on the first start, or refuses keys other than the noted ones.
pub async fn check(store: &dyn Store, ours: &str) -> Result<(), CheckError> {
    loop {
        let version = store.version().await?;
        if let Some(stored) = store.setting(SETTING).await? {
            return match disagreement(&stored, ours) {
                Some(why) => Err(CheckError::Differ(why)),
                None => Ok(()),
            };
        }
        let note = Write::PutSetting {
            name: SETTING.into(),
            value: ours.to_owned(),
        };
        match store.commit(version, vec![note]).await {
            Ok(_) => return Ok(()),
            // Another replica's first start, or any commit, came between: read again.
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Differ(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_keys_agree() {
        let ours = noted("ab:cd", "KEY=");
        assert_eq!(disagreement(&ours, &ours), None);
    }

    #[test]
    fn another_ca_is_named_with_both_fingerprints() {
        let why = disagreement(&noted("ab:cd", "KEY="), &noted("ef:01", "KEY=")).unwrap();
        assert!(
            why.contains("CA") && why.contains("ef:01") && why.contains("ab:cd"),
            "{why}"
        );
        assert!(why.contains("copy ca.pem"), "{why}");
    }

    #[test]
    fn another_signing_key_under_the_same_ca_is_named() {
        let why = disagreement(&noted("ab:cd", "KEY="), &noted("ab:cd", "OTHER=")).unwrap();
        assert!(why.contains("signing-key.pk8"), "{why}");
    }
}
