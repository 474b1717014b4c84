//! Where the control plane keeps its state, as `atoll control --store` (or `ATOLL_STORE`)
//! names it: a `postgres://` URL, or a path to an SQLite file, the default being `atoll.db` in
//! the data folder. Anything else is refused rather than guessed at.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{PostgresStore, Result, SqliteStore, Store};

#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// An SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL database, by its URL (which may hold a password: never printed).
    Postgres(String),
}

impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            StoreLocation::Postgres(_) => f.write_str("Postgres(..)"),
        }
    }
}

impl StoreLocation {
    /// `text` as `--store` takes it; `default` (an SQLite file) without one.
    pub fn parse(text: Option<&str>, default: &Path) -> Result<StoreLocation, String> {
        let Some(text) = text else {
            return Ok(StoreLocation::Sqlite(default.to_owned()));
        };
        if text.trim().is_empty() {
            return Err(
                "--store is empty: give a postgres://… URL or the path of an SQLite file".into(),
            );
        }
        match text.split_once("://") {
            Some(("postgres" | "postgresql", _)) => Ok(StoreLocation::Postgres(text.to_owned())),
            Some((scheme, _)) => Err(format!(
                "--store: atoll does not know the store `{scheme}://`; give a postgres://… URL or the path of an SQLite file"
            )),
            None => Ok(StoreLocation::Sqlite(PathBuf::from(text))),
        }
    }

    /// Opens the store, bringing its schema up to date.
    pub async fn open(&self) -> Result<Arc<dyn Store>> {
        Ok(match self {
            StoreLocation::Sqlite(path) => Arc::new(SqliteStore::open(path)?),
            StoreLocation::Postgres(url) => Arc::new(PostgresStore::open(url).await?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_a_path_or_nothing_and_an_unknown_scheme_refused() {
        let default = Path::new("/data/atoll.db");
        assert_eq!(
            StoreLocation::parse(None, default),
            Ok(StoreLocation::Sqlite(default.to_owned()))
        );
        assert_eq!(
            StoreLocation::parse(Some("/srv/other.db"), default),
            Ok(StoreLocation::Sqlite("/srv/other.db".into()))
        );
        for url in ["postgres://a:pw@h/d", "postgresql://h/d"] {
            assert_eq!(
                StoreLocation::parse(Some(url), default),
                Ok(StoreLocation::Postgres(url.into()))
            );
        }
        let err = StoreLocation::parse(Some("mysql://h/d"), default).unwrap_err();
        assert!(
            err.contains("`mysql://`") && err.contains("postgres://"),
            "{err}"
        );
        assert!(StoreLocation::parse(Some(" "), default).is_err());
        let shown = format!(
            "{:?}",
            StoreLocation::Postgres("postgres://a:pw@h/d".into())
        );
        assert!(!shown.contains("pw"), "{shown}");
    }
}
