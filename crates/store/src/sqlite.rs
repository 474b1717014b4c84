//! The SQLite backend: one file in WAL mode, `synchronous = FULL` so that a committed batch
//! survives a power cut, not only a crash of the process.
//!
//! rusqlite is synchronous; every call runs on tokio's blocking pool. One connection writes
//! (SQLite allows one writer at a time anyway, and a single connection makes that queue explicit);
//! a few more serve reads, which WAL lets run beside the writer. Desired-state commits take the
//! writer directly; the small writes of agent traffic share transactions through the group
//! writer (`group.rs`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};

use crate::columns::{HOST_COLUMNS, SECRET_COLUMNS};
use crate::group::GroupWriter;
use crate::{
    AppVersionRow, AuditRow, Enrolled, EventCounts, EventRetention, EventRow, HostRow, HostState,
    HostStatusRow, InventoryChange, JoinTokenRow, LeaseRow, ManifestHead, ManifestRow,
    PresenceChanges, PresenceRow, PresenceSeen, ReportBatch, ReportCursor, ReportRecorded,
    ResourceRow, Result, RolloutRow, SecretHead, SecretRow, Snapshot, Store, StoreError,
    TokenRefusal, TokenRow, Write, check_holder, lease_expiry, millis,
};

const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/sqlite/0001_init.sql"),
    include_str!("../migrations/sqlite/0002_agents.sql"),
    include_str!("../migrations/sqlite/0003_rollouts.sql"),
    include_str!("../migrations/sqlite/0004_secrets.sql"),
    include_str!("../migrations/sqlite/0005_host_state.sql"),
    include_str!("../migrations/sqlite/0006_events.sql"),
    include_str!("../migrations/sqlite/0007_host_labels.sql"),
    include_str!("../migrations/sqlite/0008_manifest_changes.sql"),
    include_str!("../migrations/sqlite/0009_leases.sql"),
    include_str!("../migrations/sqlite/0010_presence.sql"),
];
const READERS: usize = 4;

/// Takes a lease that is free, expired or the holder's own, in one statement: a change of
/// holder increments the fence, a renewal keeps it; no row comes back when another holds it.
const ACQUIRE_LEASE: &str = "INSERT INTO leases (name, holder, fence, expires_at) VALUES (?1, ?2, 1, ?3)
     ON CONFLICT (name) DO UPDATE SET
         fence = CASE WHEN leases.holder = excluded.holder THEN leases.fence ELSE leases.fence + 1 END,
         holder = excluded.holder,
         expires_at = excluded.expires_at
     WHERE leases.holder = excluded.holder OR leases.expires_at <= ?4
     RETURNING fence";

/// The store's clock: the machine's, in milliseconds since the Unix epoch.
const NOW_MS: &str = "SELECT CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)";

/// A replica's record of a host, at the next presence-change number (`?6`).
const PUT_PRESENCE: &str = "INSERT INTO presence (replica, host, site, polls, seen_at, change)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
     ON CONFLICT (replica, host) DO UPDATE SET
         site = excluded.site, polls = excluded.polls, seen_at = excluded.seen_at,
         change = excluded.change";

/// A release keeps the row, and so the fence: the next holder's is higher.
const RELEASE_LEASE: &str =
    "UPDATE leases SET holder = '', expires_at = 0 WHERE name = ?1 AND holder = ?2";

#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: Arc<Mutex<Connection>>,
    group: GroupWriter,
    readers: Arc<Vec<Mutex<Connection>>>,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::Backend(e.to_string())
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        keep_private(path)?;
        let mut writer = open_connection(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )?;
        check_integrity(&writer, path)?;
        migrate(&mut writer)?;
        let readers = (0..READERS)
            .map(|_| open_connection(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map(Mutex::new))
            .collect::<Result<Vec<_>>>()?;
        let writer = Arc::new(Mutex::new(writer));
        Ok(SqliteStore {
            group: GroupWriter::start(writer.clone())?,
            writer,
            readers: Arc::new(readers),
        })
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let readers = self.readers.clone();
        blocking(move || {
            // Take the first free reader; if all are busy, wait on one of them.
            let guard = readers
                .iter()
                .find_map(|r| r.try_lock().ok())
                .map_or_else(|| readers[0].lock().map_err(|_| poisoned()), Ok)?;
            f(&guard)
        })
        .await
    }
}

/// Copies the database at `db` to a new file `to`, consistent and online: SQLite's `VACUUM
/// INTO` reads one snapshot in a read transaction, so a control plane writing meanwhile is not
/// stopped and nothing it commits after the snapshot is in the copy. The copy is made 0600
/// (it holds token hashes and encrypted secrets) and checked (`PRAGMA quick_check`) before
/// this answers; a copy that fails is removed. `to` must not exist: nothing is overwritten.
/// Returns the copy's size in bytes.
pub fn backup(db: &Path, to: &Path) -> Result<u64> {
    use std::os::unix::fs::OpenOptionsExt as _;

    if !db.exists() {
        return Err(StoreError::Backend(format!(
            "{}: no control plane data here",
            db.display()
        )));
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(|e| {
            StoreError::Backend(format!(
                "{}: {e}; a backup never overwrites a file: choose a new name",
                to.display()
            ))
        })?;
    let copied = (|| {
        let source = open_connection(db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let target = to
            .to_str()
            .ok_or_else(|| StoreError::Backend(format!("{}: not UTF-8", to.display())))?;
        source.execute("VACUUM INTO ?1", [target])?;
        let copy = open_connection(to, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        check_integrity(&copy, to)?;
        std::fs::metadata(to)
            .map(|m| m.len())
            .map_err(|e| StoreError::Backend(format!("{}: {e}", to.display())))
    })();
    if copied.is_err() {
        let _ = std::fs::remove_file(to);
    }
    copied
}

fn poisoned() -> StoreError {
    StoreError::Backend("a database connection was poisoned by a panic".into())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
}

/// The database and its `-wal` and `-shm` files hold every token hash, host record and
/// encrypted secret: only the control plane's user may read them (0600). SQLite gives the
/// `-wal` and `-shm` files the database's own mode, so a database made private before its first
/// connection keeps them private; files left wider (by an older atoll, or a copy) are tightened,
/// and the log says so.
fn keep_private(db: &Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};

    let failed =
        |path: &Path, e: std::io::Error| StoreError::Backend(format!("{}: {e}", path.display()));
    if !db.exists() {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(db)
            .map_err(|e| failed(db, e))?;
    }
    let name = db.file_name().unwrap_or_default().to_string_lossy();
    for path in [
        db.to_path_buf(),
        db.with_file_name(format!("{name}-wal")),
        db.with_file_name(format!("{name}-shm")),
    ] {
        let mode = match std::fs::metadata(&path) {
            Ok(m) => m.permissions().mode() & 0o777,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(failed(&path, e)),
        };
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| failed(&path, e))?;
            tracing::warn!(path = %path.display(), "was mode {mode:04o}, readable by others: tightened to 0600");
        }
    }
    Ok(())
}

fn open_connection(path: &Path, flags: OpenFlags) -> Result<Connection> {
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    if !flags.contains(OpenFlags::SQLITE_OPEN_READ_ONLY) {
        // The first read of the file: one that is not a database at all fails here.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| damaged(path, &e.to_string()))?;
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// A database file that SQLite finds damaged, named, with what to do: nothing is written to it.
fn damaged(path: &Path, detail: &str) -> StoreError {
    StoreError::Corrupt(format!(
        "{} is damaged ({detail}); atoll does not start on a damaged database: restore it from a backup (with its -wal file, if any), or move it aside to start with an empty one",
        path.display()
    ))
}

/// SQLite's quick integrity check (`PRAGMA quick_check`: every page and record well formed,
/// without the index cross-check of `integrity_check`), at start-up: a damaged file is refused
/// before anything is read from it or written to it. Lost commits (a cut WAL, a restored
/// backup) are no damage; the manifest long-poll finds those.
fn check_integrity(conn: &Connection, path: &Path) -> Result<()> {
    let problems: Vec<String> = conn
        .prepare("PRAGMA quick_check")
        .and_then(|mut check| check.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| damaged(path, &e.to_string()))?;
    if problems != ["ok"] {
        let shown: Vec<&str> = problems.iter().take(3).map(String::as_str).collect();
        return Err(damaged(
            path,
            &format!("integrity check: {}", shown.join("; ")),
        ));
    }
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let current: usize = conn
        .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))?
        .try_into()
        .unwrap_or(0);
    if current > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "the database has schema version {current}, newer than this atoll knows ({}); upgrade atoll",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn version_of(conn: &Connection) -> Result<u64> {
    Ok(to_u64(conn.query_row(
        "SELECT version FROM meta WHERE id = 1",
        [],
        |r| r.get(0),
    )?))
}

fn resource_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ResourceRow> {
    Ok(ResourceRow {
        kind: r.get(0)?,
        name: r.get(1)?,
        generation: to_u64(r.get(2)?),
        spec: r.get(3)?,
        created_at: r.get(4)?,
        updated_at: r.get(5)?,
    })
}

fn app_version_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AppVersionRow> {
    Ok(AppVersionRow {
        name: r.get(0)?,
        version: r.get(1)?,
        spec: r.get(2)?,
        applied_at: r.get(3)?,
    })
}

fn apply_write(tx: &Transaction<'_>, write: Write) -> Result<()> {
    match write {
        Write::PutResource(r) => {
            tx.execute(
                "INSERT INTO resources (kind, name, generation, spec, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (kind, name) DO UPDATE SET generation = ?3, spec = ?4, updated_at = ?6",
                params![r.kind, r.name, to_i64(r.generation), r.spec, r.created_at, r.updated_at],
            )?;
        }
        Write::RetireSite { site, at } => {
            tx.execute(
                &format!("UPDATE hosts SET state = 'detached', detached_at = ?2, changed = {NEXT_HOST_CHANGE} WHERE site = ?1 AND state = 'attached'"),
                params![site, at],
            )?;
            for table in ["join_tokens", "events", "event_counts"] {
                tx.execute(&format!("DELETE FROM {table} WHERE site = ?1"), [&site])?;
            }
        }
        Write::DeleteResource { kind, name } => {
            tx.execute(
                "DELETE FROM resources WHERE kind = ?1 AND name = ?2",
                params![kind, name],
            )?;
        }
        Write::PutAppVersion(v) => {
            let existing: Option<String> = tx
                .query_row(
                    "SELECT spec FROM app_versions WHERE name = ?1 AND version = ?2",
                    params![v.name, v.version],
                    |r| r.get(0),
                )
                .optional()?;
            match existing {
                Some(spec) if spec != v.spec => {
                    return Err(StoreError::Corrupt(format!(
                        "application {} version {} exists with other content",
                        v.name, v.version
                    )));
                }
                Some(_) => {}
                None => {
                    tx.execute(
                        "INSERT INTO app_versions (name, version, spec, applied_at) VALUES (?1, ?2, ?3, ?4)",
                        params![v.name, v.version, v.spec, v.applied_at],
                    )?;
                }
            }
        }
        Write::DeleteAppVersions { name } => {
            tx.execute("DELETE FROM app_versions WHERE name = ?1", [name])?;
        }
        Write::PutManifest(m) => {
            let stored: Option<i64> = tx
                .prepare_cached("SELECT revision FROM manifests WHERE site = ?1")?
                .query_row([&m.site], |r| r.get(0))
                .optional()?;
            if let Some(stored) = stored.filter(|s| to_u64(*s) >= m.revision) {
                return Err(StoreError::Corrupt(format!(
                    "manifest revision for site {} would go from {stored} to {}; revisions only grow",
                    m.site, m.revision
                )));
            }
            // The one writer connection makes MAX + 1 the next number: no other write of
            // the manifests table can commit between the read and this one.
            tx.prepare_cached(
                "INSERT INTO manifests (site, revision, hash, body, updated_at, changed) VALUES (?1, ?2, ?3, ?4, ?5, (SELECT COALESCE(MAX(changed), 0) + 1 FROM manifests))
                 ON CONFLICT (site) DO UPDATE SET revision = ?2, hash = ?3, body = ?4, updated_at = ?5, changed = excluded.changed",
            )?
            .execute(params![m.site, to_i64(m.revision), m.hash, m.body, m.updated_at])?;
        }
        Write::PutToken(t) => {
            tx.execute(
                "INSERT INTO api_tokens (id, name, hash, role, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![t.id, t.name, t.hash, t.role, t.created_at],
            )?;
        }
        Write::PutRollout(r) => {
            tx.execute(
                "INSERT INTO rollouts (deployment, state, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (deployment) DO UPDATE SET state = ?2, updated_at = ?3",
                params![r.deployment, r.state, r.at],
            )?;
        }
        Write::PutSecret(s) => {
            tx.execute(
                "INSERT INTO secrets (name, meta, key_id, wrapped_key, ciphertext, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (name) DO UPDATE SET meta = ?2, key_id = ?3, wrapped_key = ?4, ciphertext = ?5, updated_at = ?6",
                params![s.name, s.meta, s.key_id, s.wrapped_key, s.ciphertext, s.updated_at],
            )?;
        }
        Write::DeleteSecret { name } => {
            tx.execute("DELETE FROM secrets WHERE name = ?1", [name])?;
        }
        Write::PutSetting { name, value } => {
            tx.execute(
                "INSERT INTO settings (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = ?2",
                params![name, value],
            )?;
        }
        Write::ArchiveRollout { deployment, at } => {
            tx.execute(
                "INSERT INTO rollout_history (deployment, state, ended_at) SELECT deployment, state, ?2 FROM rollouts WHERE deployment = ?1",
                params![deployment, at],
            )?;
            tx.execute("DELETE FROM rollouts WHERE deployment = ?1", [deployment])?;
        }
        Write::Audit {
            at,
            actor,
            action,
            detail,
        } => {
            tx.execute(
                "INSERT INTO audit (at, actor, action, detail) VALUES (?1, ?2, ?3, ?4)",
                params![at, actor, action, detail],
            )?;
        }
        Write::Fenced { lease, fence } => {
            let actual = tx
                .prepare_cached("SELECT fence FROM leases WHERE name = ?1")?
                .query_row([&lease], |r| r.get::<_, i64>(0))
                .optional()?
                .map_or(0, to_u64);
            if actual != fence {
                return Err(StoreError::Conflict {
                    expected: fence,
                    actual,
                });
            }
        }
    }
    Ok(())
}

fn lease_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LeaseRow> {
    Ok(LeaseRow {
        name: r.get(0)?,
        holder: r.get(1)?,
        fence: to_u64(r.get(2)?),
        expires_at_ms: to_u64(r.get(3)?),
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn version(&self) -> Result<u64> {
        self.read(version_of).await
    }

    async fn snapshot(&self) -> Result<Snapshot> {
        self.read(|conn| {
            // One read transaction, so the snapshot is consistent with its version.
            conn.execute_batch("BEGIN")?;
            let result = (|| {
                let version = version_of(conn)?;
                let resources = conn
                    .prepare_cached("SELECT kind, name, generation, spec, created_at, updated_at FROM resources ORDER BY kind, name")?
                    .query_map([], resource_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let manifests = conn
                    .prepare_cached("SELECT site, revision, hash FROM manifests ORDER BY site")?
                    .query_map([], |r| Ok(ManifestHead { site: r.get(0)?, revision: to_u64(r.get(1)?), hash: r.get(2)? }))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let rollouts = rollout_rows(conn)?;
                let secrets = conn
                    .prepare_cached("SELECT name, meta FROM secrets ORDER BY name")?
                    .query_map([], |r| Ok(SecretHead { name: r.get(0)?, meta: r.get(1)? }))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(Snapshot { version, resources, manifests, rollouts, secrets })
            })();
            conn.execute_batch("COMMIT")?;
            result
        })
        .await
    }

    async fn commit(&self, base: u64, writes: Vec<Write>) -> Result<u64> {
        let writer = self.writer.clone();
        blocking(move || {
            let mut conn = writer.lock().map_err(|_| poisoned())?;
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let actual = version_of(&tx)?;
            if actual != base {
                return Err(StoreError::Conflict {
                    expected: base,
                    actual,
                });
            }
            for write in writes {
                apply_write(&tx, write)?;
            }
            let next = actual + 1;
            tx.execute("UPDATE meta SET version = ?1 WHERE id = 1", [to_i64(next)])?;
            tx.commit()?;
            Ok(next)
        })
        .await
    }

    async fn resource(&self, kind: &str, name: &str) -> Result<Option<ResourceRow>> {
        let (kind, name) = (kind.to_owned(), name.to_owned());
        self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT kind, name, generation, spec, created_at, updated_at FROM resources WHERE kind = ?1 AND name = ?2")?
                .query_row(params![kind, name], resource_row)
                .optional()?)
        })
        .await
    }

    async fn resources(&self, kind: &str) -> Result<Vec<ResourceRow>> {
        let kind = kind.to_owned();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT kind, name, generation, spec, created_at, updated_at FROM resources WHERE kind = ?1 ORDER BY name")?
                .query_map([kind], resource_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn app_version(&self, name: &str, version: &str) -> Result<Option<AppVersionRow>> {
        let (name, version) = (name.to_owned(), version.to_owned());
        self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT name, version, spec, applied_at FROM app_versions WHERE name = ?1 AND version = ?2")?
                .query_row(params![name, version], app_version_row)
                .optional()?)
        })
        .await
    }

    async fn app_versions(&self, name: &str) -> Result<Vec<AppVersionRow>> {
        let name = name.to_owned();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT name, version, spec, applied_at FROM app_versions WHERE name = ?1 ORDER BY rowid")?
                .query_map([name], app_version_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn manifest(&self, site: &str) -> Result<Option<ManifestRow>> {
        let site = site.to_owned();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT site, revision, hash, body, updated_at FROM manifests WHERE site = ?1",
                )?
                .query_row([site], |r| {
                    Ok(ManifestRow {
                        site: r.get(0)?,
                        revision: to_u64(r.get(1)?),
                        hash: r.get(2)?,
                        body: r.get(3)?,
                        updated_at: r.get(4)?,
                    })
                })
                .optional()?)
        })
        .await
    }

    async fn manifests_of(&self, sites: &[String]) -> Result<Vec<ManifestRow>> {
        let sites = sites.to_vec();
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT site, revision, hash, body, updated_at FROM manifests WHERE site = ?1",
            )?;
            let mut rows = Vec::with_capacity(sites.len());
            for site in sites {
                let row = statement
                    .query_row([site], |r| {
                        Ok(ManifestRow {
                            site: r.get(0)?,
                            revision: to_u64(r.get(1)?),
                            hash: r.get(2)?,
                            body: r.get(3)?,
                            updated_at: r.get(4)?,
                        })
                    })
                    .optional()?;
                rows.extend(row);
            }
            Ok(rows)
        })
        .await
    }

    async fn manifest_changes(&self, after: u64, limit: u32) -> Result<Vec<(u64, ManifestHead)>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT changed, site, revision, hash FROM manifests WHERE changed > ?1 ORDER BY changed LIMIT ?2",
                )?
                .query_map(params![to_i64(after), limit], |r| {
                    Ok((
                        to_u64(r.get(0)?),
                        ManifestHead {
                            site: r.get(1)?,
                            revision: to_u64(r.get(2)?),
                            hash: r.get(3)?,
                        },
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn manifest_hint(&self) -> Result<Option<Arc<tokio::sync::Notify>>> {
        Ok(None)
    }

    async fn last_manifest_change(&self) -> Result<u64> {
        self.read(|conn| {
            Ok(to_u64(conn.query_row(
                "SELECT COALESCE(MAX(changed), 0) FROM manifests",
                [],
                |r| r.get(0),
            )?))
        })
        .await
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>> {
        let hash = hash.to_owned();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT id, name, hash, role, created_at FROM api_tokens WHERE hash = ?1",
                )?
                .query_row([hash], |r| {
                    Ok(TokenRow {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        hash: r.get(2)?,
                        role: r.get(3)?,
                        created_at: r.get(4)?,
                    })
                })
                .optional()?)
        })
        .await
    }

    async fn append_audit(&self, at: &str, actor: &str, action: &str, detail: &str) -> Result<()> {
        let row = [at, actor, action, detail].map(str::to_owned);
        self.group
            .write(move |conn| {
                conn.execute(
                    "INSERT INTO audit (at, actor, action, detail) VALUES (?1, ?2, ?3, ?4)",
                    params![row[0], row[1], row[2], row[3]],
                )?;
                Ok(())
            })
            .await
    }

    async fn rollouts(&self) -> Result<Vec<RolloutRow>> {
        self.read(rollout_rows).await
    }

    async fn rollout_history(&self, deployment: &str) -> Result<Vec<RolloutRow>> {
        let deployment = deployment.to_owned();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT deployment, state, ended_at FROM rollout_history WHERE deployment = ?1 ORDER BY seq")?
                .query_map([deployment], |r| Ok(RolloutRow { deployment: r.get(0)?, state: r.get(1)?, at: r.get(2)? }))?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn secret(&self, name: &str) -> Result<Option<SecretRow>> {
        let name = name.to_owned();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {SECRET_COLUMNS} FROM secrets WHERE name = ?1"
                ))?
                .query_row([name], secret_row)
                .optional()?)
        })
        .await
    }

    async fn secrets(&self) -> Result<Vec<SecretRow>> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {SECRET_COLUMNS} FROM secrets ORDER BY name"
                ))?
                .query_map([], secret_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn setting(&self, name: &str) -> Result<Option<String>> {
        let name = name.to_owned();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT value FROM settings WHERE name = ?1")?
                .query_row([name], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    async fn create_join_token(&self, t: JoinTokenRow) -> Result<()> {
        self.group.write(move |conn| {
            conn.execute(
                "INSERT INTO join_tokens (id, hash, site, uses_left, expires_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![t.id, t.hash, t.site, t.uses_left, t.expires_at, t.created_at],
            )?;
            Ok(())
        })
        .await
    }

    async fn use_join_token(
        &self,
        hash: &str,
        now: &str,
    ) -> Result<Result<JoinTokenRow, TokenRefusal>> {
        let (hash, now) = (hash.to_owned(), now.to_owned());
        self.group.write(move |conn| {
            let row = conn
                .query_row(
                    "SELECT id, hash, site, uses_left, expires_at, created_at FROM join_tokens WHERE hash = ?1",
                    [&hash],
                    |r| {
                        Ok(JoinTokenRow {
                            id: r.get(0)?,
                            hash: r.get(1)?,
                            site: r.get(2)?,
                            uses_left: r.get(3)?,
                            expires_at: r.get(4)?,
                            created_at: r.get(5)?,
                        })
                    },
                )
                .optional()?;
            let outcome = match row {
                None => Err(TokenRefusal::Unknown),
                // RFC 3339 UTC timestamps of one format compare as text.
                Some(t) if t.expires_at.as_str() <= now.as_str() => Err(TokenRefusal::Expired),
                Some(t) if t.uses_left == 0 => Err(TokenRefusal::UsedUp),
                Some(mut t) => {
                    conn.execute("UPDATE join_tokens SET uses_left = uses_left - 1 WHERE id = ?1", [&t.id])?;
                    t.uses_left -= 1;
                    Ok(t)
                }
            };
            Ok(outcome)
        })
        .await
    }

    async fn enroll_host(&self, h: HostRow, token: &str) -> Result<Enrolled> {
        let token = token.to_owned();
        self.group.write(move |conn| {
            let token_kept = conn
                .prepare_cached("SELECT 1 FROM join_tokens WHERE id = ?1")?
                .exists([&token])?;
            if !token_kept {
                return Ok(Enrolled::SiteDeleted);
            }
            // `ON CONFLICT DO NOTHING`, never `OR REPLACE`: an id drawn twice must not take
            // over another host's site, certificate and sealing key.
            let inserted = conn.execute(
                &format!("INSERT INTO hosts ({HOST_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, NULL, NULL, 'attached', NULL, {NEXT_HOST_CHANGE}, '{{}}') ON CONFLICT (id) DO NOTHING"),
                params![h.id, h.site, h.hostname, h.inventory, h.cert_serial, h.cert_expiry, h.enrolled_at, h.last_seen, h.recipient],
            )?;
            Ok(if inserted == 1 { Enrolled::Yes } else { Enrolled::IdTaken })
        })
        .await
    }

    async fn put_host(&self, h: HostRow, replacing: &str) -> Result<bool> {
        let replacing = replacing.to_owned();
        self.group.write(move |conn| {
            let updated = conn.execute(
                &format!("UPDATE hosts SET hostname = ?2, inventory = ?3, cert_serial = ?4, cert_expiry = ?5, last_seen = ?6, recipient = ?7, previous_serial = ?8, previous_until = ?9, pending_recipient = ?10, changed = {NEXT_HOST_CHANGE} WHERE id = ?1 AND state = 'attached' AND cert_serial = ?11"),
                params![h.id, h.hostname, h.inventory, h.cert_serial, h.cert_expiry, h.last_seen, h.recipient, h.previous_serial, h.previous_until, h.pending_recipient, replacing],
            )?;
            Ok(updated == 1)
        })
        .await
    }

    async fn set_host_labels(
        &self,
        id: &str,
        old: &BTreeMap<String, String>,
        labels: &BTreeMap<String, String>,
    ) -> Result<bool> {
        let (id, old, labels) = (id.to_owned(), labels_json(old), labels_json(labels));
        self.group
            .write(move |conn| {
                let updated = conn.execute(
                    "UPDATE hosts SET labels = ?3 WHERE id = ?1 AND state = 'attached' AND labels = ?2",
                    params![id, old, labels],
                )?;
                Ok(updated == 1)
            })
            .await
    }

    async fn host(&self, id: &str) -> Result<Option<HostRow>> {
        let id = id.to_owned();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!("SELECT {HOST_COLUMNS} FROM hosts WHERE id = ?1"))?
                .query_row([id], host_row)
                .optional()?)
        })
        .await
    }

    async fn hosts(&self) -> Result<Vec<HostRow>> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {HOST_COLUMNS} FROM hosts WHERE state = 'attached' ORDER BY site, id"
                ))?
                .query_map([], host_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn all_hosts(&self) -> Result<Vec<HostRow>> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {HOST_COLUMNS} FROM hosts ORDER BY site, id"
                ))?
                .query_map([], host_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn site_hosts(&self, site: &str) -> Result<Vec<HostRow>> {
        let site = site.to_owned();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {HOST_COLUMNS} FROM hosts WHERE site = ?1 AND state = 'attached' ORDER BY id"
                ))?
                .query_map([site], host_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn host_changes(&self, after: u64) -> Result<Vec<HostRow>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {HOST_COLUMNS} FROM hosts WHERE changed > ?1 ORDER BY changed, id"
                ))?
                .query_map([to_i64(after)], host_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn record_report(
        &self,
        host: &str,
        site: &str,
        now: &str,
        batches: Vec<ReportBatch>,
        retention: &EventRetention,
    ) -> Result<ReportRecorded> {
        let (host, site, now) = (host.to_owned(), site.to_owned(), now.to_owned());
        let retention = retention.clone();
        self.group.write(move |conn| {
            let stored: Option<(i64, String)> = conn
                .prepare_cached("SELECT seq, status FROM host_status WHERE host = ?1")?
                .query_row([&host], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let (seq, mut status) = stored.map_or((0, String::from("{}")), |(s, st)| (to_u64(s), st));
            let mut cursor = ReportCursor::new(seq);
            let mut added = 0u64;
            for batch in batches {
                if !cursor.admit(batch.seq) {
                    continue;
                }
                for (idx, (at, kind, message)) in batch.events.into_iter().enumerate() {
                    added += conn.prepare_cached(
                        "INSERT OR IGNORE INTO events (host, seq, idx, site, at, kind, message, received_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )?
                    .execute(params![host, to_i64(batch.seq), idx as i64, site, at, kind, message, now])? as u64;
                }
                if let Some(s) = batch.status {
                    status = s;
                }
            }
            let seq = cursor.acked();
            conn.prepare_cached(
                "INSERT INTO host_status (host, site, seq, status, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (host) DO UPDATE SET site = ?2, seq = ?3, status = ?4, updated_at = ?5",
            )?
            .execute(params![host, site, to_i64(seq), status, now])?;
            conn.prepare_cached("UPDATE hosts SET last_seen = ?2 WHERE id = ?1")?
                .execute(params![host, now])?;
            let pruned = retain_events(conn, &site, added, &retention)?;
            Ok(ReportRecorded { acked: seq, pruned })
        })
        .await
    }

    async fn put_inventory(&self, change: InventoryChange) -> Result<bool> {
        self.group.write(move |conn| {
            let site: Option<String> = conn
                .prepare_cached("SELECT site FROM hosts WHERE id = ?1 AND state = 'attached'")?
                .query_row([&change.host], |r| r.get(0))
                .optional()?;
            let Some(site) = site else {
                return Ok(false);
            };
            conn.prepare_cached(
                "UPDATE hosts SET hostname = ?2, inventory = ?3, last_seen = ?4 WHERE id = ?1",
            )?
            .execute(params![change.host, change.hostname, change.inventory, change.now])?;
            if change.events.is_empty() {
                return Ok(true);
            }
            let next: i64 = conn
                .prepare_cached("SELECT COALESCE(MAX(idx), -1) + 1 FROM events WHERE host = ?1 AND seq = 0")?
                .query_row([&change.host], |r| r.get(0))?;
            let mut added = 0u64;
            for (idx, (kind, message)) in (next..).zip(change.events) {
                added += conn.prepare_cached(
                    "INSERT INTO events (host, seq, idx, site, at, kind, message, received_at) VALUES (?1, 0, ?2, ?3, ?4, ?5, ?6, ?4)",
                )?
                .execute(params![change.host, idx, site, change.now, kind, message])? as u64;
            }
            retain_events(conn, &site, added, &change.retention)?;
            Ok(true)
        })
        .await
    }

    async fn host_statuses(&self) -> Result<Vec<HostStatusRow>> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached("SELECT host, site, seq, status, updated_at FROM host_status ORDER BY site, host")?
                .query_map([], |r| {
                    Ok(HostStatusRow { host: r.get(0)?, site: r.get(1)?, seq: to_u64(r.get(2)?), status: r.get(3)?, updated_at: r.get(4)? })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn events(&self, site: &str, limit: u32) -> Result<Vec<EventRow>> {
        let site = site.to_owned();
        self.read(move |conn| {
            let mut rows = conn
                .prepare_cached(
                    "SELECT host, seq, idx, site, at, kind, message, received_at FROM events WHERE site = ?1 ORDER BY received_at DESC, host DESC, seq DESC, idx DESC LIMIT ?2",
                )?
                .query_map(params![site, limit], |r| {
                    Ok(EventRow {
                        host: r.get(0)?,
                        seq: to_u64(r.get(1)?),
                        idx: r.get(2)?,
                        site: r.get(3)?,
                        at: r.get(4)?,
                        kind: r.get(5)?,
                        message: r.get(6)?,
                        received_at: r.get(7)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.reverse();
            Ok(rows)
        })
        .await
    }

    async fn event_counts(&self) -> Result<Vec<EventCounts>> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached("SELECT site, kept, pruned FROM event_counts ORDER BY site")?
                .query_map([], |r| {
                    Ok(EventCounts {
                        site: r.get(0)?,
                        kept: to_u64(r.get(1)?),
                        pruned: to_u64(r.get(2)?),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
        now_ms: u64,
    ) -> Result<Option<u64>> {
        check_holder(holder)?;
        let (name, holder) = (name.to_owned(), holder.to_owned());
        let expires = lease_expiry(now_ms, ttl);
        let writer = self.writer.clone();
        blocking(move || {
            let conn = writer.lock().map_err(|_| poisoned())?;
            Ok(conn
                .prepare_cached(ACQUIRE_LEASE)?
                .query_row(
                    params![name, holder, to_i64(expires), to_i64(now_ms)],
                    |r| r.get::<_, i64>(0),
                )
                .optional()?
                .map(to_u64))
        })
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<bool> {
        check_holder(holder)?;
        let (name, holder) = (name.to_owned(), holder.to_owned());
        let writer = self.writer.clone();
        blocking(move || {
            let conn = writer.lock().map_err(|_| poisoned())?;
            Ok(conn.execute(RELEASE_LEASE, params![name, holder])? > 0)
        })
        .await
    }

    async fn lease(&self, name: &str) -> Result<Option<LeaseRow>> {
        let name = name.to_owned();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT name, holder, fence, expires_at FROM leases WHERE name = ?1",
                )?
                .query_row([name], lease_row)
                .optional()?)
        })
        .await
    }

    async fn put_presence(
        &self,
        replica: &str,
        seen: Vec<PresenceSeen>,
        forget_after: std::time::Duration,
    ) -> Result<u64> {
        check_holder(replica)?;
        let replica = replica.to_owned();
        let writer = self.writer.clone();
        blocking(move || {
            let mut conn = writer.lock().map_err(|_| poisoned())?;
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let now: i64 = tx.query_row(NOW_MS, [], |r| r.get(0))?;
            let forget_before = now.saturating_sub(millis(forget_after));
            tx.prepare_cached(
                "DELETE FROM presence WHERE replica IN
                     (SELECT replica FROM presence_replicas WHERE beat_at < ?1 AND replica <> ?2)",
            )?
            .execute(params![forget_before, replica])?;
            tx.prepare_cached(
                "DELETE FROM presence_replicas WHERE beat_at < ?1 AND replica <> ?2",
            )?
            .execute(params![forget_before, replica])?;
            tx.prepare_cached(
                "INSERT INTO presence_replicas (replica, beat_at) VALUES (?1, ?2)
                 ON CONFLICT (replica) DO UPDATE SET beat_at = excluded.beat_at",
            )?
            .execute(params![replica, now])?;
            let last: i64 =
                tx.query_row("SELECT COALESCE(MAX(change), 0) FROM presence", [], |r| {
                    r.get(0)
                })?;
            {
                let mut put = tx.prepare_cached(PUT_PRESENCE)?;
                for (change, s) in (last.saturating_add(1)..).zip(seen) {
                    let seen_at = now.saturating_sub(to_i64(s.seen_ago_ms)).max(0);
                    put.execute(params![replica, s.host, s.site, s.polls, seen_at, change])?;
                }
            }
            tx.commit()?;
            Ok(to_u64(now))
        })
        .await
    }

    async fn presence_changes(&self, after: u64, limit: u32) -> Result<PresenceChanges> {
        self.read(move |conn| {
            let tx = conn.unchecked_transaction()?;
            let now: i64 = tx.query_row(NOW_MS, [], |r| r.get(0))?;
            let rows = tx
                .prepare_cached(
                    "SELECT change, replica, host, site, polls, seen_at FROM presence
                     WHERE change > ?1 ORDER BY change LIMIT ?2",
                )?
                .query_map(params![to_i64(after), limit], |r| {
                    Ok((
                        to_u64(r.get(0)?),
                        PresenceRow {
                            replica: r.get(1)?,
                            host: r.get(2)?,
                            site: r.get(3)?,
                            polls: r.get(4)?,
                            seen_at_ms: to_u64(r.get(5)?),
                        },
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let beats = tx
                .prepare_cached("SELECT replica, beat_at FROM presence_replicas ORDER BY replica")?
                .query_map([], |r| Ok((r.get(0)?, to_u64(r.get(1)?))))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            tx.commit()?;
            Ok(PresenceChanges {
                now_ms: to_u64(now),
                rows,
                beats,
            })
        })
        .await
    }

    async fn audit(&self, limit: u32) -> Result<Vec<AuditRow>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT seq, at, actor, action, detail FROM audit ORDER BY seq DESC LIMIT ?1",
                )?
                .query_map([limit], |r| {
                    Ok(AuditRow {
                        seq: to_u64(r.get(0)?),
                        at: r.get(1)?,
                        actor: r.get(2)?,
                        action: r.get(3)?,
                        detail: r.get(4)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }
}

/// Counts the `added` events of a site and removes those beyond `retention`: the ones received
/// before its cutoff, then the oldest past its count. The count is kept in `event_counts`, so
/// a report costs no `COUNT(*)`, and both deletions walk the `(site, received_at, ...)` index
/// from its oldest end. Returns how many were removed.
fn retain_events(
    conn: &Connection,
    site: &str,
    added: u64,
    retention: &EventRetention,
) -> Result<u64> {
    let kept: u64 = to_u64(
        conn.prepare_cached(
            "INSERT INTO event_counts (site, kept, pruned) VALUES (?1, ?2, 0)
             ON CONFLICT (site) DO UPDATE SET kept = kept + ?2 RETURNING kept",
        )?
        .query_row(params![site, to_i64(added)], |r| r.get(0))?,
    );
    // Only the oldest event is looked at to know whether any is too old.
    let oldest: Option<String> = conn
        .prepare_cached(
            "SELECT received_at FROM events WHERE site = ?1 ORDER BY received_at, host, seq, idx LIMIT 1",
        )?
        .query_row([site], |r| r.get(0))
        .optional()?;
    let mut pruned = 0u64;
    if oldest.is_some_and(|o| o < retention.received_after) {
        pruned += conn
            .prepare_cached("DELETE FROM events WHERE site = ?1 AND received_at < ?2")?
            .execute(params![site, retention.received_after])? as u64;
    }
    let excess = kept.saturating_sub(pruned).saturating_sub(retention.keep);
    if excess > 0 {
        pruned += conn
            .prepare_cached(
                "DELETE FROM events WHERE rowid IN (SELECT rowid FROM events WHERE site = ?1 ORDER BY received_at, host, seq, idx LIMIT ?2)",
            )?
            .execute(params![site, to_i64(excess)])? as u64;
    }
    if pruned > 0 {
        conn.prepare_cached(
            "UPDATE event_counts SET kept = kept - ?2, pruned = pruned + ?2 WHERE site = ?1",
        )?
        .execute(params![site, to_i64(pruned)])?;
    }
    Ok(pruned)
}

fn rollout_rows(conn: &Connection) -> Result<Vec<RolloutRow>> {
    Ok(conn
        .prepare_cached("SELECT deployment, state, updated_at FROM rollouts ORDER BY deployment")?
        .query_map([], |r| {
            Ok(RolloutRow {
                deployment: r.get(0)?,
                state: r.get(1)?,
                at: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?)
}

fn host_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<HostRow> {
    Ok(HostRow {
        id: r.get(0)?,
        site: r.get(1)?,
        hostname: r.get(2)?,
        inventory: r.get(3)?,
        cert_serial: r.get(4)?,
        cert_expiry: r.get(5)?,
        enrolled_at: r.get(6)?,
        last_seen: r.get(7)?,
        recipient: r.get(8)?,
        previous_serial: r.get(9)?,
        previous_until: r.get(10)?,
        pending_recipient: r.get(11)?,
        state: {
            let text: String = r.get(12)?;
            HostState::parse(&text).ok_or_else(|| {
                rusqlite::Error::FromSqlConversionFailure(
                    12,
                    rusqlite::types::Type::Text,
                    format!("unknown host state {text:?}").into(),
                )
            })?
        },
        detached_at: r.get(13)?,
        changed: to_u64(r.get(14)?),
        labels: {
            let text: String = r.get(15)?;
            serde_json::from_str(&text).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    15,
                    rusqlite::types::Type::Text,
                    format!("host labels {text:?} are not a JSON object of strings: {e}").into(),
                )
            })?
        },
    })
}

/// Labels as the `labels` column keeps them: a map serializes in key order, so equal labels
/// are equal text, which `set_host_labels` compares.
fn labels_json(labels: &BTreeMap<String, String>) -> String {
    // A map of strings always serializes.
    serde_json::to_string(labels).unwrap_or_else(|_| "{}".into())
}

fn secret_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SecretRow> {
    Ok(SecretRow {
        name: r.get(0)?,
        meta: r.get(1)?,
        key_id: r.get(2)?,
        wrapped_key: r.get(3)?,
        ciphertext: r.get(4)?,
        updated_at: r.get(5)?,
    })
}

/// The next host-change number, as an SQL expression: one above the highest given out (read
/// once per statement, so every host one statement changes takes the same number).
const NEXT_HOST_CHANGE: &str = "(SELECT COALESCE(MAX(changed), 0) + 1 FROM hosts)";

#[cfg(test)]
mod tests {
    use super::*;

    crate::conformance_suite!(|dir: &Path| SqliteStore::open(&dir.join("atoll.db")).unwrap());

    #[tokio::test]
    async fn reopening_keeps_everything_and_does_not_migrate_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("atoll.db");
        {
            let store = SqliteStore::open(&path).unwrap();
            store
                .commit(0, vec![crate::conformance::site_row("a", 1)])
                .await
                .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.version().await.unwrap(), 1);
        assert!(store.resource("Site", "a").await.unwrap().is_some());
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// Issue 12, item 6: atoll.db was 0644, readable by every user of the machine.
    #[tokio::test]
    async fn the_database_and_its_wal_were_readable_by_everyone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("atoll.db");
        let (wal, shm) = (
            dir.path().join("atoll.db-wal"),
            dir.path().join("atoll.db-shm"),
        );
        {
            let store = SqliteStore::open(&path).unwrap();
            store
                .commit(0, vec![crate::conformance::site_row("a", 1)])
                .await
                .unwrap();
            for p in [&path, &wal, &shm] {
                assert_eq!(mode(p), 0o600, "{}", p.display());
            }
        }
        // Left wider by an older atoll: tightened at the next open, the data untouched.
        use std::os::unix::fs::PermissionsExt as _;
        for p in [&path, &wal, &shm] {
            if p.exists() {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
            }
        }
        let store = SqliteStore::open(&path).unwrap();
        for p in [&path, &wal, &shm] {
            if p.exists() {
                assert_eq!(mode(p), 0o600, "{}", p.display());
            }
        }
        assert!(store.resource("Site", "a").await.unwrap().is_some());
    }

    /// Events stored before `received_at` existed are ordered by the time they claim, and
    /// counted, so retention applies to them too.
    #[tokio::test]
    async fn events_stored_before_the_received_time_are_migrated_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("atoll.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            let tx = conn.transaction().unwrap();
            for sql in &MIGRATIONS[..4] {
                tx.execute_batch(sql).unwrap();
            }
            tx.pragma_update(None, "user_version", 4).unwrap();
            for seq in 1..=3 {
                tx.execute(
                    "INSERT INTO events (host, seq, idx, site, at, kind, message) VALUES ('h1', ?1, 0, 's', ?2, 'test', 'old')",
                    params![seq, format!("2026-01-01T00:00:0{seq}Z")],
                )
                .unwrap();
            }
            tx.commit().unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let events = store.events("s", 10).await.unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(events[2].received_at, "2026-01-01T00:00:03Z");
        assert_eq!(
            store.event_counts().await.unwrap(),
            [EventCounts {
                site: "s".into(),
                kept: 3,
                pruned: 0
            }]
        );
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("atoll.db");
        drop(SqliteStore::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = SqliteStore::open(&path).unwrap_err();
        assert!(err.to_string().contains("upgrade atoll"), "{err}");
    }

    /// Issue 12, item 7: a damaged database was opened without a word. Its pages are checked at
    /// start-up, and a damaged file is refused, named, with what to do, and left as it was.
    #[tokio::test]
    async fn a_damaged_database_is_refused_at_start_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("atoll.db");
        {
            let store = SqliteStore::open(&path).unwrap();
            let sites = (0..50)
                .map(|i| crate::conformance::site_row(&format!("site-{i}"), 1))
                .collect();
            store.commit(0, sites).await.unwrap();
        }
        let page: usize = {
            let conn = Connection::open(&path).unwrap();
            // Everything into the main file, which is what gets damaged.
            conn.pragma_update(None, "wal_checkpoint", "TRUNCATE")
                .unwrap();
            conn.pragma_query_value(None, "page_size", |r| r.get::<_, i64>(0))
                .unwrap()
                .try_into()
                .unwrap()
        };
        let mut bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() > 3 * page, "the database has tables to damage");
        // Every page past the first (the header and schema) scribbled over.
        for b in &mut bytes[page..] {
            *b = 0x5a;
        }
        std::fs::write(&path, &bytes).unwrap();
        let err = SqliteStore::open(&path).unwrap_err().to_string();
        assert!(
            err.contains(&path.display().to_string())
                && err.contains("is damaged")
                && err.contains("restore it from a backup"),
            "{err}"
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "nothing written to it"
        );

        std::fs::write(&path, "not a database at all, but long enough to have a header .....................................").unwrap();
        let err = SqliteStore::open(&path).unwrap_err().to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains("is damaged"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_backup_is_a_consistent_private_copy_that_never_overwrites() {
        use std::os::unix::fs::PermissionsExt as _;

        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("atoll.db");
        let store = SqliteStore::open(&db).unwrap();
        store
            .commit(
                0,
                vec![Write::PutSetting {
                    name: "k".into(),
                    value: "v".into(),
                }],
            )
            .await
            .unwrap();
        let copy = dir.path().join("copy.db");
        assert!(backup(&db, &copy).unwrap() > 0);
        let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let restored = SqliteStore::open(&copy).unwrap();
        assert_eq!(restored.version().await.unwrap(), 1);
        let again = backup(&db, &copy).unwrap_err().to_string();
        assert!(again.contains("never overwrites"), "{again}");
        assert!(backup(&dir.path().join("none.db"), &dir.path().join("x.db")).is_err());
    }
}
