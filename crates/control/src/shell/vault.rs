//! Secrets at rest: envelope encryption under the master key.
//!
//! Each stored version of a secret has a data key of its own that encrypts its values
//! (ChaCha20-Poly1305); the data key is stored wrapped under the master key. The master key is
//! never stored with the data: it comes from a file (`--master-key-file`) or the environment
//! (`ATOLL_MASTER_KEY`), as 32 bytes in base64. A check value encrypted under it is stored, so
//! a wrong key stops start-up before anything is read or written with it. Rotating the master
//! key re-wraps the data keys; the encrypted values stay byte for byte as they were.

use std::path::{Path, PathBuf};

use atoll_seal::Key;
use atoll_store::{SecretRow, Store, StoreError, Write};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};

use super::files::write_atomic;
use crate::core::secrets::{SecretMeta, SecretValues};

/// The environment variable that may hold the master key.
pub const MASTER_KEY_ENV: &str = "ATOLL_MASTER_KEY";
/// Where a control plane started without a master key keeps the one it made.
pub const DEFAULT_MASTER_KEY_FILE: &str = "master.key";
const CHECK_SETTING: &str = "master-key-check";
const CHECK_TEXT: &[u8] = b"atoll master key check";

/// Where the master key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeySource {
    File(PathBuf),
    /// The key itself, base64, from the environment.
    Env(String),
    /// `master.key` in the data folder, made on first start. Convenient for a trial; in
    /// production keep the key away from the data (a file on another volume, or the
    /// environment), so a copy of the data folder alone does not hold every secret.
    DataDir,
}

impl MasterKeySource {
    /// `--master-key-file` if given, else `ATOLL_MASTER_KEY` if set, else the data folder.
    pub fn choose(file: Option<PathBuf>) -> MasterKeySource {
        match (file, std::env::var(MASTER_KEY_ENV)) {
            (Some(f), _) => MasterKeySource::File(f),
            (None, Ok(text)) if !text.trim().is_empty() => MasterKeySource::Env(text),
            _ => MasterKeySource::DataDir,
        }
    }
}

pub struct Vault {
    key: Key,
    id: String,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("key_id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Vault {
    pub fn from_key(key: Key) -> Vault {
        let id = format!("mk-{}", &hex::encode(Sha256::digest(key))[..12]);
        Vault { key, id }
    }

    /// Reads the master key from `source` (making `master.key` in `data_dir` if that is the
    /// source and it does not exist yet).
    pub fn load(source: &MasterKeySource, data_dir: &Path) -> Result<Vault, String> {
        match source {
            MasterKeySource::Env(text) => parse_key(text)
                .map(Vault::from_key)
                .map_err(|e| format!("{MASTER_KEY_ENV}: {e}")),
            MasterKeySource::File(path) => read_key_file(path),
            MasterKeySource::DataDir => {
                let path = data_dir.join(DEFAULT_MASTER_KEY_FILE);
                if !path.exists() {
                    let text = format!("{}\n", B64.encode(atoll_seal::random_key()));
                    write_atomic(&path, text.as_bytes(), true)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    tracing::warn!(
                        path = %path.display(),
                        "made a master key for secrets in the data folder; for production keep it elsewhere (--master-key-file or {MASTER_KEY_ENV})"
                    );
                }
                read_key_file(&path)
            }
        }
    }

    /// A key of its own for `label`, from the master key (HKDF-SHA256, the label as salt): the
    /// same on every replica given this master key, and telling nothing of it or of another
    /// label's key. The TLS session tickets' keys come from it (`shell::tickets`).
    pub fn derive(&self, label: &[u8]) -> ring::hkdf::Prk {
        ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, label).extract(&self.key)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Refuses a master key other than the one the stored secrets are under; on the first
    /// start with secrets support, records this key's check value.
    pub async fn check(&self, store: &dyn Store) -> Result<(), String> {
        match store
            .setting(CHECK_SETTING)
            .await
            .map_err(|e| e.to_string())?
        {
            Some(stored) => self.verify_check(&stored),
            None => {
                let version = store.version().await.map_err(|e| e.to_string())?;
                store
                    .commit(version, vec![self.check_write()])
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        }
    }

    fn verify_check(&self, stored: &str) -> Result<(), String> {
        let (id, data) = stored.split_once(':').unwrap_or(("unknown", stored));
        let opened = B64
            .decode(data)
            .ok()
            .and_then(|d| atoll_seal::decrypt(&self.key, &d, CHECK_TEXT).ok());
        if opened.as_deref() == Some(CHECK_TEXT) {
            Ok(())
        } else {
            Err(format!(
                "the master key given (id {}) is not the one this control plane's secrets are encrypted under (id {id}); \
                 start it with the right key (--master-key-file or {MASTER_KEY_ENV}); nothing was changed",
                self.id
            ))
        }
    }

    fn check_write(&self) -> Write {
        Write::PutSetting {
            name: CHECK_SETTING.into(),
            value: format!(
                "{}:{}",
                self.id,
                B64.encode(atoll_seal::encrypt(&self.key, CHECK_TEXT, CHECK_TEXT))
            ),
        }
    }

    /// Encrypts a secret's values under a new data key: the row to store.
    pub fn seal(
        &self,
        name: &str,
        meta: &SecretMeta,
        values: &SecretValues,
        now: &str,
    ) -> SecretRow {
        let data_key = atoll_seal::random_key();
        // Plain data: serializing cannot fail.
        let plain = serde_json::to_vec(values).unwrap_or_default();
        SecretRow {
            name: name.to_owned(),
            meta: serde_json::to_string(meta).unwrap_or_default(),
            key_id: self.id.clone(),
            wrapped_key: atoll_seal::encrypt(&self.key, &data_key, &wrap_aad(name, meta.version)),
            ciphertext: atoll_seal::encrypt(&data_key, &plain, &values_aad(name, meta.version)),
            updated_at: now.to_owned(),
        }
    }

    /// Decrypts a stored secret: its bookkeeping and values.
    pub fn open(&self, row: &SecretRow) -> Result<(SecretMeta, SecretValues), StoreError> {
        let corrupt = |what: &str| {
            StoreError::Corrupt(format!(
                "secret {}: {what} (master key {}, row under {})",
                row.name, self.id, row.key_id
            ))
        };
        let meta: SecretMeta =
            serde_json::from_str(&row.meta).map_err(|_| corrupt("unreadable bookkeeping"))?;
        let data_key: Key = atoll_seal::decrypt(
            &self.key,
            &row.wrapped_key,
            &wrap_aad(&row.name, meta.version),
        )
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| corrupt("its data key does not open"))?;
        let plain = atoll_seal::decrypt(
            &data_key,
            &row.ciphertext,
            &values_aad(&row.name, meta.version),
        )
        .map_err(|_| corrupt("its values do not open"))?;
        let values = serde_json::from_slice(&plain).map_err(|_| corrupt("unreadable values"))?;
        Ok((meta, values))
    }

    /// The row with its data key wrapped under `new` instead; the values are not touched.
    fn rewrap(&self, new: &Vault, row: &SecretRow) -> Result<SecretRow, StoreError> {
        let meta: SecretMeta = serde_json::from_str(&row.meta).map_err(|_| {
            StoreError::Corrupt(format!("secret {}: unreadable bookkeeping", row.name))
        })?;
        let aad = wrap_aad(&row.name, meta.version);
        let data_key = atoll_seal::decrypt(&self.key, &row.wrapped_key, &aad).map_err(|_| {
            StoreError::Corrupt(format!(
                "secret {}: its data key does not open under master key {}",
                row.name, self.id
            ))
        })?;
        Ok(SecretRow {
            key_id: new.id.clone(),
            wrapped_key: atoll_seal::encrypt(&new.key, &data_key, &aad),
            ..row.clone()
        })
    }
}

/// Re-wraps every secret's data key from `old` to `new`, in one commit with the new check
/// value: either every secret moves to the new key or none does. Returns how many moved.
pub async fn rotate(store: &dyn Store, old: &Vault, new: &Vault) -> Result<usize, String> {
    old.check(store).await?;
    let rows = store.secrets().await.map_err(|e| e.to_string())?;
    let mut writes = Vec::with_capacity(rows.len() + 1);
    for row in &rows {
        writes.push(Write::PutSecret(
            old.rewrap(new, row).map_err(|e| e.to_string())?,
        ));
    }
    writes.push(new.check_write());
    let version = store.version().await.map_err(|e| e.to_string())?;
    store
        .commit(version, writes)
        .await
        .map_err(|e| e.to_string())?;
    Ok(rows.len())
}

fn wrap_aad(name: &str, version: u64) -> Vec<u8> {
    format!("atoll data key|{name}|{version}").into_bytes()
}

fn values_aad(name: &str, version: u64) -> Vec<u8> {
    format!("atoll values|{name}|{version}").into_bytes()
}

fn read_key_file(path: &Path) -> Result<Vault, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("master key {}: {e}", path.display()))?;
    parse_key(&text)
        .map(Vault::from_key)
        .map_err(|e| format!("master key {}: {e}", path.display()))
}

fn parse_key(text: &str) -> Result<Key, String> {
    B64.decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            "not a master key: expected 32 random bytes in base64 (make one with `head -c 32 /dev/urandom | base64`)"
                .to_owned()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::secrets::{Change, change};

    fn sample() -> (SecretMeta, SecretValues) {
        change(
            &SecretMeta::default(),
            &SecretValues::default(),
            "pw",
            Change::Shared(b"hunter2-hunter2".to_vec()),
        )
        .unwrap()
    }

    #[test]
    fn rows_hold_no_value_and_open_only_under_their_key() {
        let vault = Vault::from_key([7; 32]);
        let (meta, values) = sample();
        let row = vault.seal("db", &meta, &values, "now");
        for bytes in [row.meta.as_bytes(), &row.wrapped_key, &row.ciphertext] {
            assert!(!bytes.windows(7).any(|w| w == b"hunter2"));
        }
        assert_eq!(vault.open(&row).unwrap(), (meta, values));
        assert!(Vault::from_key([8; 32]).open(&row).is_err());
        // A row moved under another name does not open.
        let moved = SecretRow {
            name: "other".into(),
            ..row.clone()
        };
        assert!(vault.open(&moved).is_err());
    }

    #[test]
    fn rewrapping_keeps_the_values_bytes() {
        let (old, new) = (Vault::from_key([1; 32]), Vault::from_key([2; 32]));
        let (meta, values) = sample();
        let row = old.seal("db", &meta, &values, "now");
        let moved = old.rewrap(&new, &row).unwrap();
        assert_eq!(moved.ciphertext, row.ciphertext);
        assert_ne!(moved.wrapped_key, row.wrapped_key);
        assert_eq!(new.open(&moved).unwrap().1, values);
        assert!(old.open(&moved).is_err());
    }

    #[test]
    fn keys_are_read_from_base64_and_bad_ones_are_explained() {
        let text = B64.encode([3u8; 32]);
        assert_eq!(parse_key(&format!("{text}\n")).unwrap(), [3; 32]);
        let e = parse_key("short").unwrap_err();
        assert!(e.contains("32 random bytes"), "{e}");
        let v = Vault::from_key([3; 32]);
        assert!(v.verify_check("x:AAAA").is_err());
        let Write::PutSetting { value, .. } = v.check_write() else {
            unreachable!()
        };
        assert!(v.verify_check(&value).is_ok());
        let e = Vault::from_key([4; 32]).verify_check(&value).unwrap_err();
        assert!(
            e.contains(v.id()) && e.contains("nothing was changed"),
            "{e}"
        );
    }
}
