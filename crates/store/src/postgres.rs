//! The PostgreSQL backend, for control planes that outgrow one machine: every replica talks
//! to one database, so nothing that must be the same on every replica is kept in this process.
//!
//! Decisions:
//! - tokio-postgres on a deadpool pool, without TLS (`NoTls`): the database is reached over
//!   loopback or a unix socket for now. A URL asking for TLS (`sslmode=require`) is refused,
//!   never quietly served in the clear.
//! - Durability: every connection runs with `synchronous_commit = on` (set in its startup
//!   packet, above any role or database default), so a commit returns only once its WAL is
//!   flushed.
//! - The versioned commit locks the version row (`SELECT … FOR UPDATE`) in a READ COMMITTED
//!   transaction: a second writer waits for the first, then reads the new version and is
//!   refused with [`StoreError::Conflict`], so several writers on one database are safe.
//! - Host-change numbers come from the sequence `host_change`. Every write that changes a host's
//!   membership or credentials (enrollment, renewal, a site's retirement) first takes the
//!   transaction-scoped advisory lock [`HOST_CHANGE_LOCK`] and draws its number under it, so
//!   these transactions draw numbers and commit one at a time, in number order: when a reader
//!   sees number `n`, every lower number is committed or was never used, and
//!   [`Store::host_changes`] never misses a change. The same lock orders an enrollment after a
//!   site's retirement (which forgets its join tokens) or before it (and is detached with it).
//! - Manifest-change numbers come from the sequence `manifest_change` the same way: a commit
//!   that writes manifests takes the advisory lock [`MANIFEST_CHANGE_LOCK`] (after the version
//!   row, which already makes such commits one at a time; the lock keeps the rule true for any
//!   later write of a manifest outside the versioned commit) and draws under it, so
//!   [`Store::manifest_changes`] never misses a change either.
//!   Such a commit also NOTIFYs the channel of `pg_listen`, a wake-up hint for the replicas
//!   that follow the feed ([`Store::manifest_hint`]); the feed stays the truth.
//! - Presence-change numbers come from the sequence `presence_change`, drawn by a replica's
//!   presence write (one statement for all its rows, `UNNEST` of arrays) under the advisory
//!   lock [`PRESENCE_CHANGE_LOCK`], so [`Store::presence_changes`] misses none. Presence times
//!   are the database server's clock ([`NOW_MS`]), so replicas' clocks are never compared.
//! - No group commit: agent writes (reports, tokens, hosts, audit) each run in their own
//!   transaction, concurrently on the pool. PostgreSQL already flushes the WAL of concurrent
//!   commits together, so batching them here would add latency and a shared failure for no
//!   saved fsync. Row locks taken in one order (the host's rows, then its site's event count)
//!   keep concurrent reports of one site from deadlocking.

use std::collections::BTreeMap;
use std::str::FromStr as _;
use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Transaction};
use tokio::sync::Notify;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, NoTls, Row};

use crate::columns::{HOST_COLUMNS, SECRET_COLUMNS};
use crate::pg_listen;
use crate::{
    AppVersionRow, AuditRow, Enrolled, EventCounts, EventRetention, EventRow, HostRow, HostState,
    HostStatusRow, InventoryChange, JoinTokenRow, LeaseRow, ManifestHead, ManifestRow,
    PresenceChanges, PresenceRow, PresenceSeen, ReportBatch, ReportCursor, ReportRecorded,
    ResourceRow, Result, RolloutRow, SecretHead, SecretRow, Snapshot, Store, StoreError,
    TokenRefusal, TokenRow, Write, check_holder, lease_expiry, millis,
};

/// Manifests stored per statement: a fleet-wide change of ten thousand sites is ten pages.
const MANIFEST_PAGE: usize = 1000;

const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/postgres/0001_init.sql"),
    include_str!("../migrations/postgres/0002_manifest_changes.sql"),
    include_str!("../migrations/postgres/0003_leases.sql"),
    include_str!("../migrations/postgres/0004_presence.sql"),
];
/// Connections per replica: enough for a fleet's concurrent reports and long-polls' reads,
/// few enough that several replicas stay under PostgreSQL's default `max_connections` (100).
const POOL_SIZE: usize = 16;
/// The advisory lock held by every transaction that draws a host-change number ("atoll" and 1).
const HOST_CHANGE_LOCK: i64 = 0x61_746f_6c6c_0001;
/// The advisory lock held by every transaction that draws a manifest-change number ("atoll"
/// and 3).
const MANIFEST_CHANGE_LOCK: i64 = 0x61_746f_6c6c_0003;
/// The advisory lock held by every transaction that draws presence-change numbers ("atoll"
/// and 4), so they are committed in order and a follower misses none.
const PRESENCE_CHANGE_LOCK: i64 = 0x61_746f_6c6c_0004;
/// The store's clock in milliseconds since the Unix epoch: the database server's, read as the
/// statement runs (not the transaction's start), so every replica's times are on one clock.
const NOW_MS: &str = "SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";
/// The advisory lock held while the schema is brought up to date, so that replicas starting
/// together migrate once.
const MIGRATION_LOCK: i64 = 0x61_746f_6c6c_0002;
/// The next host-change number, as an SQL expression: an uncorrelated subquery, evaluated
/// once per statement (so every host one statement changes takes the same number), and only
/// if the statement changes a row.
const NEXT_HOST_CHANGE: &str = "(SELECT nextval('host_change'))";

#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// Where the database is, for messages: host, port and database, never the password.
    target: String,
    /// How to connect, for the listening connection of [`Store::manifest_hint`].
    config: tokio_postgres::Config,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        StoreError::Backend(format!("PostgreSQL: {}", describe(&e)))
    }
}

/// What went wrong, with its causes ("error connecting to server: Connection refused").
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_owned();
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    text
}

/// Host, port and database of a connection configuration, as messages name it.
fn target(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

/// The connection configuration of `url`, refused when it asks for what this store does not
/// do (TLS).
fn parse_url(url: &str) -> Result<tokio_postgres::Config> {
    let mut config = tokio_postgres::Config::from_str(url).map_err(|e| {
        StoreError::Backend(format!(
            "store URL: {e}; give postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
        ))
    })?;
    match config.get_ssl_mode() {
        SslMode::Disable | SslMode::Prefer => {}
        _ => {
            return Err(StoreError::Backend(format!(
                "store URL for {}: sslmode={} asks for TLS, which atoll's PostgreSQL store does not do yet; reach the database over loopback or a unix socket, without sslmode",
                target(&config),
                format!("{:?}", config.get_ssl_mode()).to_lowercase()
            )));
        }
    }
    // `Prefer` would try TLS first; there is none to try.
    config.ssl_mode(SslMode::Disable);
    let options = match config.get_options() {
        Some(o) if !o.trim().is_empty() => format!("{o} -c synchronous_commit=on"),
        _ => "-c synchronous_commit=on".to_owned(),
    };
    config.options(options);
    Ok(config)
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://…`) and brings its schema up to date.
    pub async fn open(url: &str) -> Result<PostgresStore> {
        let config = parse_url(url)?;
        let target = target(&config);
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .build()
            .map_err(|e| StoreError::Backend(format!("PostgreSQL store {target}: {e}")))?;
        let store = PostgresStore {
            pool,
            target,
            config,
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn client(&self) -> Result<Object> {
        self.pool.get().await.map_err(|e| {
            let why = match &e {
                deadpool_postgres::PoolError::Backend(e) => describe(e),
                other => other.to_string(),
            };
            StoreError::Backend(format!(
                "cannot reach the PostgreSQL store at {}: {why}; is the database running and the URL right?",
                self.target
            ))
        })
    }

    async fn migrate(&self) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (id BIGINT PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL)")
            .await?;
        let current: Option<i64> = tx
            .query_opt("SELECT version FROM schema_version WHERE id = 1", &[])
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
        let current = usize::try_from(current.unwrap_or(0)).unwrap_or(usize::MAX);
        if current > MIGRATIONS.len() {
            return Err(StoreError::Corrupt(format!(
                "the PostgreSQL store {} has schema version {current}, newer than this atoll knows ({}); upgrade atoll",
                self.target,
                MIGRATIONS.len()
            )));
        }
        for sql in &MIGRATIONS[current..] {
            tx.batch_execute(sql).await?;
        }
        tx.execute(
            "INSERT INTO schema_version (id, version) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET version = $1",
            &[&(MIGRATIONS.len() as i64)],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await?;
        Ok(client.query(&statement, params).await?)
    }

    async fn query_opt(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await?;
        Ok(client.query_opt(&statement, params).await?)
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn to_u32(n: i64, what: &str) -> Result<u32> {
    u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("{what} {n} is out of range")))
}

async fn execute(tx: &Transaction<'_>, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
    let statement = tx.prepare_cached(sql).await?;
    Ok(tx.execute(&statement, params).await?)
}

async fn query_opt(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>> {
    let statement = tx.prepare_cached(sql).await?;
    Ok(tx.query_opt(&statement, params).await?)
}

async fn query(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>> {
    let statement = tx.prepare_cached(sql).await?;
    Ok(tx.query(&statement, params).await?)
}

/// Takes the host-change lock until `tx` ends: the first statement of every transaction that
/// draws a host-change number.
async fn lock_host_changes(tx: &Transaction<'_>) -> Result<()> {
    execute(tx, "SELECT pg_advisory_xact_lock($1)", &[&HOST_CHANGE_LOCK]).await?;
    Ok(())
}

const RESOURCE_COLUMNS: &str = "kind, name, generation, spec, created_at, updated_at";

fn resource_row(r: &Row) -> Result<ResourceRow> {
    Ok(ResourceRow {
        kind: r.try_get(0)?,
        name: r.try_get(1)?,
        generation: to_u64(r.try_get(2)?),
        spec: r.try_get(3)?,
        created_at: r.try_get(4)?,
        updated_at: r.try_get(5)?,
    })
}

fn app_version_row(r: &Row) -> Result<AppVersionRow> {
    Ok(AppVersionRow {
        name: r.try_get(0)?,
        version: r.try_get(1)?,
        spec: r.try_get(2)?,
        applied_at: r.try_get(3)?,
    })
}

fn rollout_row(r: &Row) -> Result<RolloutRow> {
    Ok(RolloutRow {
        deployment: r.try_get(0)?,
        state: r.try_get(1)?,
        at: r.try_get(2)?,
    })
}

fn secret_row(r: &Row) -> Result<SecretRow> {
    Ok(SecretRow {
        name: r.try_get(0)?,
        meta: r.try_get(1)?,
        key_id: r.try_get(2)?,
        wrapped_key: r.try_get(3)?,
        ciphertext: r.try_get(4)?,
        updated_at: r.try_get(5)?,
    })
}

const TOKEN_COLUMNS: &str = "id, hash, site, uses_left, expires_at, created_at";

fn join_token_row(r: &Row) -> Result<JoinTokenRow> {
    Ok(JoinTokenRow {
        id: r.try_get(0)?,
        hash: r.try_get(1)?,
        site: r.try_get(2)?,
        uses_left: to_u32(r.try_get(3)?, "join token uses")?,
        expires_at: r.try_get(4)?,
        created_at: r.try_get(5)?,
    })
}

fn host_row(r: &Row) -> Result<HostRow> {
    let id: String = r.try_get(0)?;
    let state: String = r.try_get(12)?;
    let labels: String = r.try_get(15)?;
    Ok(HostRow {
        site: r.try_get(1)?,
        hostname: r.try_get(2)?,
        inventory: r.try_get(3)?,
        cert_serial: r.try_get(4)?,
        cert_expiry: r.try_get(5)?,
        enrolled_at: r.try_get(6)?,
        last_seen: r.try_get(7)?,
        recipient: r.try_get(8)?,
        previous_serial: r.try_get(9)?,
        previous_until: r.try_get(10)?,
        pending_recipient: r.try_get(11)?,
        state: HostState::parse(&state).ok_or_else(|| {
            StoreError::Corrupt(format!("host {id} has the unknown state {state:?}"))
        })?,
        detached_at: r.try_get(13)?,
        changed: to_u64(r.try_get(14)?),
        labels: serde_json::from_str(&labels).map_err(|e| {
            StoreError::Corrupt(format!(
                "host {id}: labels {labels:?} are not a JSON object of strings: {e}"
            ))
        })?,
        id,
    })
}

/// Labels as the `labels` column keeps them: a map serializes in key order, so equal labels
/// are equal text, which `set_host_labels` compares.
fn labels_json(labels: &BTreeMap<String, String>) -> String {
    // A map of strings always serializes.
    serde_json::to_string(labels).unwrap_or_else(|_| "{}".into())
}

fn event_row(r: &Row) -> Result<EventRow> {
    Ok(EventRow {
        host: r.try_get(0)?,
        seq: to_u64(r.try_get(1)?),
        idx: to_u32(r.try_get(2)?, "event index")?,
        site: r.try_get(3)?,
        at: r.try_get(4)?,
        kind: r.try_get(5)?,
        message: r.try_get(6)?,
        received_at: r.try_get(7)?,
    })
}

fn collect<T>(rows: Vec<Row>, f: impl Fn(&Row) -> Result<T>) -> Result<Vec<T>> {
    rows.iter().map(f).collect()
}

async fn version_of(tx: &Transaction<'_>, lock: bool) -> Result<u64> {
    let sql = if lock {
        "SELECT version FROM meta WHERE id = 1 FOR UPDATE"
    } else {
        "SELECT version FROM meta WHERE id = 1"
    };
    let row = query_opt(tx, sql, &[])
        .await?
        .ok_or_else(|| StoreError::Corrupt("the store's version row is missing".into()))?;
    Ok(to_u64(row.try_get(0)?))
}

/// Stores `manifests` in one statement, each taking the next manifest-change number, after
/// checking in one read that no revision goes back. A site twice in one page would be one row
/// updated twice by one statement, which PostgreSQL refuses: such a page is stored a
/// manifest at a time, in order, so the second must grow from the first.
async fn put_manifests(tx: &Transaction<'_>, manifests: &[ManifestRow]) -> Result<()> {
    let mut sites: Vec<&str> = manifests.iter().map(|m| m.site.as_str()).collect();
    sites.sort_unstable();
    sites.dedup();
    if sites.len() < manifests.len() {
        for m in manifests {
            put_distinct_manifests(tx, std::slice::from_ref(m), &[&m.site]).await?;
        }
        return Ok(());
    }
    put_distinct_manifests(tx, manifests, &sites).await
}

/// [`put_manifests`] of a page whose `sites` are all different.
async fn put_distinct_manifests(
    tx: &Transaction<'_>,
    manifests: &[ManifestRow],
    sites: &[&str],
) -> Result<()> {
    let stored: BTreeMap<String, i64> = tx
        .query(
            "SELECT site, revision FROM manifests WHERE site = ANY($1)",
            &[&sites],
        )
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<std::result::Result<_, tokio_postgres::Error>>()?;
    for m in manifests {
        if let Some(stored) = stored.get(&m.site).filter(|s| to_u64(**s) >= m.revision) {
            return Err(StoreError::Corrupt(format!(
                "manifest revision for site {} would go from {stored} to {}; revisions only grow",
                m.site, m.revision
            )));
        }
    }
    let column = |f: fn(&ManifestRow) -> &str| -> Vec<&str> { manifests.iter().map(f).collect() };
    let revisions: Vec<i64> = manifests.iter().map(|m| to_i64(m.revision)).collect();
    execute(
        tx,
        "INSERT INTO manifests (site, revision, hash, body, updated_at, changed)
         SELECT site, revision, hash, body, updated_at, nextval('manifest_change')
         FROM (SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[])
                   WITH ORDINALITY AS m(site, revision, hash, body, updated_at, n)
               ORDER BY n) AS ordered
         ON CONFLICT (site) DO UPDATE SET revision = excluded.revision, hash = excluded.hash,
             body = excluded.body, updated_at = excluded.updated_at, changed = excluded.changed",
        &[
            &column(|m| &m.site),
            &revisions,
            &column(|m| &m.hash),
            &column(|m| &m.body),
            &column(|m| &m.updated_at),
        ],
    )
    .await?;
    Ok(())
}

async fn apply_write(tx: &Transaction<'_>, write: Write) -> Result<()> {
    match write {
        Write::PutResource(r) => {
            execute(
                tx,
                "INSERT INTO resources (kind, name, generation, spec, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (kind, name) DO UPDATE SET generation = $3, spec = $4, updated_at = $6",
                &[&r.kind, &r.name, &to_i64(r.generation), &r.spec, &r.created_at, &r.updated_at],
            )
            .await?;
        }
        Write::RetireSite { site, at } => {
            execute(
                tx,
                &format!("UPDATE hosts SET state = 'detached', detached_at = $2, changed = {NEXT_HOST_CHANGE} WHERE site = $1 AND state = 'attached'"),
                &[&site, &at],
            )
            .await?;
            for table in ["join_tokens", "events", "event_counts"] {
                execute(
                    tx,
                    &format!("DELETE FROM {table} WHERE site = $1"),
                    &[&site],
                )
                .await?;
            }
        }
        Write::DeleteResource { kind, name } => {
            execute(
                tx,
                "DELETE FROM resources WHERE kind = $1 AND name = $2",
                &[&kind, &name],
            )
            .await?;
        }
        Write::PutAppVersion(v) => {
            let existing = query_opt(
                tx,
                "SELECT spec FROM app_versions WHERE name = $1 AND version = $2",
                &[&v.name, &v.version],
            )
            .await?;
            match existing {
                Some(row) => {
                    let spec: String = row.try_get(0)?;
                    if spec != v.spec {
                        return Err(StoreError::Corrupt(format!(
                            "application {} version {} exists with other content",
                            v.name, v.version
                        )));
                    }
                }
                None => {
                    execute(
                        tx,
                        "INSERT INTO app_versions (name, version, spec, applied_at) VALUES ($1, $2, $3, $4)",
                        &[&v.name, &v.version, &v.spec, &v.applied_at],
                    )
                    .await?;
                }
            }
        }
        Write::DeleteAppVersions { name } => {
            execute(tx, "DELETE FROM app_versions WHERE name = $1", &[&name]).await?;
        }
        Write::PutManifest(m) => put_manifests(tx, std::slice::from_ref(&m)).await?,
        Write::PutToken(t) => {
            execute(
                tx,
                "INSERT INTO api_tokens (id, name, hash, role, created_at) VALUES ($1, $2, $3, $4, $5)",
                &[&t.id, &t.name, &t.hash, &t.role, &t.created_at],
            )
            .await?;
        }
        Write::PutRollout(r) => {
            execute(
                tx,
                "INSERT INTO rollouts (deployment, state, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (deployment) DO UPDATE SET state = $2, updated_at = $3",
                &[&r.deployment, &r.state, &r.at],
            )
            .await?;
        }
        Write::PutSecret(s) => {
            execute(
                tx,
                "INSERT INTO secrets (name, meta, key_id, wrapped_key, ciphertext, updated_at) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (name) DO UPDATE SET meta = $2, key_id = $3, wrapped_key = $4, ciphertext = $5, updated_at = $6",
                &[&s.name, &s.meta, &s.key_id, &s.wrapped_key, &s.ciphertext, &s.updated_at],
            )
            .await?;
        }
        Write::DeleteSecret { name } => {
            execute(tx, "DELETE FROM secrets WHERE name = $1", &[&name]).await?;
        }
        Write::PutSetting { name, value } => {
            execute(
                tx,
                "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = $2",
                &[&name, &value],
            )
            .await?;
        }
        Write::ArchiveRollout { deployment, at } => {
            execute(
                tx,
                "INSERT INTO rollout_history (deployment, state, ended_at) SELECT deployment, state, $2 FROM rollouts WHERE deployment = $1",
                &[&deployment, &at],
            )
            .await?;
            execute(
                tx,
                "DELETE FROM rollouts WHERE deployment = $1",
                &[&deployment],
            )
            .await?;
        }
        Write::Audit {
            at,
            actor,
            action,
            detail,
        } => {
            execute(
                tx,
                "INSERT INTO audit (at, actor, action, detail) VALUES ($1, $2, $3, $4)",
                &[&at, &actor, &action, &detail],
            )
            .await?;
        }
        Write::Fenced { lease, fence } => {
            // The row's share lock holds off a takeover until this commit ends: a commit that
            // passed the check is ordered before the next holder's first.
            let actual = query_opt(
                tx,
                "SELECT fence FROM leases WHERE name = $1 FOR SHARE",
                &[&lease],
            )
            .await?
            .map(|r| r.try_get::<_, i64>(0))
            .transpose()?
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

/// Takes a lease that is free, expired or the holder's own, in one statement (a concurrent
/// take of the same row waits for this one, then sees its holder): a change of holder
/// increments the fence, a renewal keeps it; no row comes back when another holds it.
const ACQUIRE_LEASE: &str = "INSERT INTO leases (name, holder, fence, expires_at) VALUES ($1, $2, 1, $3)
     ON CONFLICT (name) DO UPDATE SET
         fence = CASE WHEN leases.holder = EXCLUDED.holder THEN leases.fence ELSE leases.fence + 1 END,
         holder = EXCLUDED.holder,
         expires_at = EXCLUDED.expires_at
     WHERE leases.holder = EXCLUDED.holder OR leases.expires_at <= $4
     RETURNING fence";

/// Stores `events` (`(at, kind, message)`) of one batch in one statement, numbered from
/// `first`, received at `now`; one already stored (a resent batch) is left as it is. Returns
/// how many were new.
async fn insert_events(
    tx: &Transaction<'_>,
    host: &str,
    seq: u64,
    first: i64,
    site: &str,
    now: &str,
    events: Vec<(String, String, String)>,
) -> Result<u64> {
    if events.is_empty() {
        return Ok(0);
    }
    let mut columns = (Vec::new(), Vec::new(), Vec::new());
    for (at, kind, message) in events {
        columns.0.push(at);
        columns.1.push(kind);
        columns.2.push(message);
    }
    execute(
        tx,
        "INSERT INTO events (host, seq, idx, site, at, kind, message, received_at)
         SELECT $1, $2, $3 + e.n - 1, $4, e.at, e.kind, e.message, $5
         FROM unnest($6::text[], $7::text[], $8::text[]) WITH ORDINALITY AS e (at, kind, message, n)
         ON CONFLICT DO NOTHING",
        &[
            &host,
            &to_i64(seq),
            &first,
            &site,
            &now,
            &columns.0,
            &columns.1,
            &columns.2,
        ],
    )
    .await
}

/// Counts the `added` events of a site and removes those beyond `retention`, as the SQLite
/// backend does (see its `retain_events`). The upsert of the site's count takes its row lock
/// first, so concurrent reports of one site prune one after the other. Returns how many were
/// removed.
async fn retain_events(
    tx: &Transaction<'_>,
    site: &str,
    added: u64,
    retention: &EventRetention,
) -> Result<u64> {
    let kept = query(
        tx,
        "INSERT INTO event_counts (site, kept, pruned) VALUES ($1, $2, 0)
         ON CONFLICT (site) DO UPDATE SET kept = event_counts.kept + EXCLUDED.kept RETURNING kept",
        &[&site, &to_i64(added)],
    )
    .await?;
    let kept = match kept.first() {
        Some(row) => to_u64(row.try_get(0)?),
        None => 0,
    };
    let oldest: Option<String> = query_opt(
        tx,
        "SELECT received_at FROM events WHERE site = $1 ORDER BY received_at, host, seq, idx LIMIT 1",
        &[&site],
    )
    .await?
    .map(|r| r.try_get(0))
    .transpose()?;
    let mut pruned = 0u64;
    if oldest.is_some_and(|o| o < retention.received_after) {
        pruned += execute(
            tx,
            "DELETE FROM events WHERE site = $1 AND received_at < $2",
            &[&site, &retention.received_after],
        )
        .await?;
    }
    let excess = kept.saturating_sub(pruned).saturating_sub(retention.keep);
    if excess > 0 {
        pruned += execute(
            tx,
            "DELETE FROM events WHERE (host, seq, idx) IN (SELECT host, seq, idx FROM events WHERE site = $1 ORDER BY received_at, host, seq, idx LIMIT $2)",
            &[&site, &to_i64(excess)],
        )
        .await?;
    }
    if pruned > 0 {
        execute(
            tx,
            "UPDATE event_counts SET kept = kept - $2, pruned = pruned + $2 WHERE site = $1",
            &[&site, &to_i64(pruned)],
        )
        .await?;
    }
    Ok(pruned)
}

#[async_trait]
impl Store for PostgresStore {
    async fn version(&self) -> Result<u64> {
        let row = self
            .query_opt("SELECT version FROM meta WHERE id = 1", &[])
            .await?
            .ok_or_else(|| StoreError::Corrupt("the store's version row is missing".into()))?;
        Ok(to_u64(row.try_get(0)?))
    }

    async fn snapshot(&self) -> Result<Snapshot> {
        let mut client = self.client().await?;
        // One repeatable-read transaction, so the snapshot is consistent with its version.
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let version = version_of(&tx, false).await?;
        let resources = collect(
            query(
                &tx,
                &format!("SELECT {RESOURCE_COLUMNS} FROM resources ORDER BY kind, name"),
                &[],
            )
            .await?,
            resource_row,
        )?;
        let manifests = collect(
            query(
                &tx,
                "SELECT site, revision, hash FROM manifests ORDER BY site",
                &[],
            )
            .await?,
            |r| {
                Ok(ManifestHead {
                    site: r.try_get(0)?,
                    revision: to_u64(r.try_get(1)?),
                    hash: r.try_get(2)?,
                })
            },
        )?;
        let rollouts = collect(
            query(
                &tx,
                "SELECT deployment, state, updated_at FROM rollouts ORDER BY deployment",
                &[],
            )
            .await?,
            rollout_row,
        )?;
        let secrets = collect(
            query(&tx, "SELECT name, meta FROM secrets ORDER BY name", &[]).await?,
            |r| {
                Ok(SecretHead {
                    name: r.try_get(0)?,
                    meta: r.try_get(1)?,
                })
            },
        )?;
        tx.commit().await?;
        Ok(Snapshot {
            version,
            resources,
            manifests,
            rollouts,
            secrets,
        })
    }

    async fn commit(&self, base: u64, writes: Vec<Write>) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The version row's lock makes concurrent commits, on any replica, one at a time.
        let actual = version_of(&tx, true).await?;
        if actual != base {
            return Err(StoreError::Conflict {
                expected: base,
                actual,
            });
        }
        if writes.iter().any(|w| matches!(w, Write::RetireSite { .. })) {
            lock_host_changes(&tx).await?;
        }
        if writes.iter().any(|w| matches!(w, Write::PutManifest(_))) {
            execute(
                &tx,
                "SELECT pg_advisory_xact_lock($1)",
                &[&MANIFEST_CHANGE_LOCK],
            )
            .await?;
            // Delivered when the transaction commits, never if it does not.
            execute(&tx, "SELECT pg_notify($1, '')", &[&pg_listen::CHANNEL]).await?;
        }
        // Manifests only PutManifest writes, so they go in one statement a page, whatever their
        // place among the others: a fleet-wide change is ten thousand of them, and a statement
        // each cost two round trips each.
        let (manifests, others): (Vec<Write>, Vec<Write>) = writes
            .into_iter()
            .partition(|w| matches!(w, Write::PutManifest(_)));
        let manifests: Vec<ManifestRow> = manifests
            .into_iter()
            .filter_map(|w| match w {
                Write::PutManifest(m) => Some(m),
                _ => None,
            })
            .collect();
        for page in manifests.chunks(MANIFEST_PAGE) {
            put_manifests(&tx, page).await?;
        }
        for write in others {
            apply_write(&tx, write).await?;
        }
        let next = actual + 1;
        execute(
            &tx,
            "UPDATE meta SET version = $1 WHERE id = 1",
            &[&to_i64(next)],
        )
        .await?;
        tx.commit().await?;
        Ok(next)
    }

    async fn resource(&self, kind: &str, name: &str) -> Result<Option<ResourceRow>> {
        self.query_opt(
            &format!("SELECT {RESOURCE_COLUMNS} FROM resources WHERE kind = $1 AND name = $2"),
            &[&kind, &name],
        )
        .await?
        .as_ref()
        .map(resource_row)
        .transpose()
    }

    async fn resources(&self, kind: &str) -> Result<Vec<ResourceRow>> {
        collect(
            self.query(
                &format!("SELECT {RESOURCE_COLUMNS} FROM resources WHERE kind = $1 ORDER BY name"),
                &[&kind],
            )
            .await?,
            resource_row,
        )
    }

    async fn app_version(&self, name: &str, version: &str) -> Result<Option<AppVersionRow>> {
        self.query_opt(
            "SELECT name, version, spec, applied_at FROM app_versions WHERE name = $1 AND version = $2",
            &[&name, &version],
        )
        .await?
        .as_ref()
        .map(app_version_row)
        .transpose()
    }

    async fn app_versions(&self, name: &str) -> Result<Vec<AppVersionRow>> {
        collect(
            self.query(
                "SELECT name, version, spec, applied_at FROM app_versions WHERE name = $1 ORDER BY seq",
                &[&name],
            )
            .await?,
            app_version_row,
        )
    }

    async fn manifest(&self, site: &str) -> Result<Option<ManifestRow>> {
        self.query_opt(
            "SELECT site, revision, hash, body, updated_at FROM manifests WHERE site = $1",
            &[&site],
        )
        .await?
        .map(|r| {
            Ok(ManifestRow {
                site: r.try_get(0)?,
                revision: to_u64(r.try_get(1)?),
                hash: r.try_get(2)?,
                body: r.try_get(3)?,
                updated_at: r.try_get(4)?,
            })
        })
        .transpose()
    }

    async fn manifests_of(&self, sites: &[String]) -> Result<Vec<ManifestRow>> {
        collect(
            self.query(
                "SELECT site, revision, hash, body, updated_at FROM manifests WHERE site = ANY($1)",
                &[&sites],
            )
            .await?,
            |r| {
                Ok(ManifestRow {
                    site: r.try_get(0)?,
                    revision: to_u64(r.try_get(1)?),
                    hash: r.try_get(2)?,
                    body: r.try_get(3)?,
                    updated_at: r.try_get(4)?,
                })
            },
        )
    }

    async fn manifest_changes(&self, after: u64, limit: u32) -> Result<Vec<(u64, ManifestHead)>> {
        self.query(
            "SELECT changed, site, revision, hash FROM manifests WHERE changed > $1 ORDER BY changed LIMIT $2",
            &[&to_i64(after), &i64::from(limit)],
        )
        .await?
        .iter()
        .map(|r| {
            Ok((
                to_u64(r.try_get(0)?),
                ManifestHead {
                    site: r.try_get(1)?,
                    revision: to_u64(r.try_get(2)?),
                    hash: r.try_get(3)?,
                },
            ))
        })
        .collect()
    }

    async fn manifest_hint(&self) -> Result<Option<Arc<Notify>>> {
        Ok(Some(
            pg_listen::listen(self.config.clone(), self.target.clone()).await?,
        ))
    }

    async fn last_manifest_change(&self) -> Result<u64> {
        let row = self
            .query_opt("SELECT COALESCE(MAX(changed), 0) FROM manifests", &[])
            .await?
            .ok_or_else(|| StoreError::Backend("no answer to MAX(changed)".into()))?;
        Ok(to_u64(row.try_get(0)?))
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>> {
        self.query_opt(
            "SELECT id, name, hash, role, created_at FROM api_tokens WHERE hash = $1",
            &[&hash],
        )
        .await?
        .map(|r| {
            Ok(TokenRow {
                id: r.try_get(0)?,
                name: r.try_get(1)?,
                hash: r.try_get(2)?,
                role: r.try_get(3)?,
                created_at: r.try_get(4)?,
            })
        })
        .transpose()
    }

    async fn audit(&self, limit: u32) -> Result<Vec<AuditRow>> {
        collect(
            self.query(
                "SELECT seq, at, actor, action, detail FROM audit ORDER BY seq DESC LIMIT $1",
                &[&i64::from(limit)],
            )
            .await?,
            |r| {
                Ok(AuditRow {
                    seq: to_u64(r.try_get(0)?),
                    at: r.try_get(1)?,
                    actor: r.try_get(2)?,
                    action: r.try_get(3)?,
                    detail: r.try_get(4)?,
                })
            },
        )
    }

    async fn rollouts(&self) -> Result<Vec<RolloutRow>> {
        collect(
            self.query(
                "SELECT deployment, state, updated_at FROM rollouts ORDER BY deployment",
                &[],
            )
            .await?,
            rollout_row,
        )
    }

    async fn rollout_history(&self, deployment: &str) -> Result<Vec<RolloutRow>> {
        collect(
            self.query(
                "SELECT deployment, state, ended_at FROM rollout_history WHERE deployment = $1 ORDER BY seq",
                &[&deployment],
            )
            .await?,
            rollout_row,
        )
    }

    async fn secret(&self, name: &str) -> Result<Option<SecretRow>> {
        self.query_opt(
            &format!("SELECT {SECRET_COLUMNS} FROM secrets WHERE name = $1"),
            &[&name],
        )
        .await?
        .as_ref()
        .map(secret_row)
        .transpose()
    }

    async fn secrets(&self) -> Result<Vec<SecretRow>> {
        collect(
            self.query(
                &format!("SELECT {SECRET_COLUMNS} FROM secrets ORDER BY name"),
                &[],
            )
            .await?,
            secret_row,
        )
    }

    async fn setting(&self, name: &str) -> Result<Option<String>> {
        self.query_opt("SELECT value FROM settings WHERE name = $1", &[&name])
            .await?
            .map(|r| Ok(r.try_get(0)?))
            .transpose()
    }

    async fn append_audit(&self, at: &str, actor: &str, action: &str, detail: &str) -> Result<()> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("INSERT INTO audit (at, actor, action, detail) VALUES ($1, $2, $3, $4)")
            .await?;
        client
            .execute(&statement, &[&at, &actor, &action, &detail])
            .await?;
        Ok(())
    }

    async fn create_join_token(&self, t: JoinTokenRow) -> Result<()> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "INSERT INTO join_tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
            ))
            .await?;
        client
            .execute(
                &statement,
                &[
                    &t.id,
                    &t.hash,
                    &t.site,
                    &i64::from(t.uses_left),
                    &t.expires_at,
                    &t.created_at,
                ],
            )
            .await?;
        Ok(())
    }

    async fn use_join_token(
        &self,
        hash: &str,
        now: &str,
    ) -> Result<Result<JoinTokenRow, TokenRefusal>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The row lock makes concurrent uses of one token, on any replica, one at a time.
        let row = query_opt(
            &tx,
            &format!("SELECT {TOKEN_COLUMNS} FROM join_tokens WHERE hash = $1 FOR UPDATE"),
            &[&hash],
        )
        .await?
        .as_ref()
        .map(join_token_row)
        .transpose()?;
        let outcome = match row {
            None => Err(TokenRefusal::Unknown),
            // RFC 3339 UTC timestamps of one format compare as text.
            Some(t) if t.expires_at.as_str() <= now => Err(TokenRefusal::Expired),
            Some(t) if t.uses_left == 0 => Err(TokenRefusal::UsedUp),
            Some(mut t) => {
                execute(
                    &tx,
                    "UPDATE join_tokens SET uses_left = uses_left - 1 WHERE id = $1",
                    &[&t.id],
                )
                .await?;
                t.uses_left -= 1;
                Ok(t)
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn enroll_host(&self, h: HostRow, token: &str) -> Result<Enrolled> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Under the lock, a retirement of the site either committed (its tokens are gone)
        // or waits for this enrollment (and detaches the new host with the rest).
        lock_host_changes(&tx).await?;
        let token_kept = query_opt(&tx, "SELECT 1 FROM join_tokens WHERE id = $1", &[&token])
            .await?
            .is_some();
        if !token_kept {
            return Ok(Enrolled::SiteDeleted);
        }
        // `ON CONFLICT DO NOTHING`: an id drawn twice must not take over another host.
        let inserted = execute(
            &tx,
            &format!("INSERT INTO hosts ({HOST_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL, NULL, 'attached', NULL, {NEXT_HOST_CHANGE}, '{{}}') ON CONFLICT (id) DO NOTHING"),
            &[&h.id, &h.site, &h.hostname, &h.inventory, &h.cert_serial, &h.cert_expiry, &h.enrolled_at, &h.last_seen, &h.recipient],
        )
        .await?;
        tx.commit().await?;
        Ok(if inserted == 1 {
            Enrolled::Yes
        } else {
            Enrolled::IdTaken
        })
    }

    async fn put_host(&self, h: HostRow, replacing: &str) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock_host_changes(&tx).await?;
        let updated = execute(
            &tx,
            &format!("UPDATE hosts SET hostname = $2, inventory = $3, cert_serial = $4, cert_expiry = $5, last_seen = $6, recipient = $7, previous_serial = $8, previous_until = $9, pending_recipient = $10, changed = {NEXT_HOST_CHANGE} WHERE id = $1 AND state = 'attached' AND cert_serial = $11"),
            &[&h.id, &h.hostname, &h.inventory, &h.cert_serial, &h.cert_expiry, &h.last_seen, &h.recipient, &h.previous_serial, &h.previous_until, &h.pending_recipient, &replacing],
        )
        .await?;
        tx.commit().await?;
        Ok(updated == 1)
    }

    async fn set_host_labels(
        &self,
        id: &str,
        old: &BTreeMap<String, String>,
        labels: &BTreeMap<String, String>,
    ) -> Result<bool> {
        let (old, labels) = (labels_json(old), labels_json(labels));
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "UPDATE hosts SET labels = $3 WHERE id = $1 AND state = 'attached' AND labels = $2",
            )
            .await?;
        let updated = client.execute(&statement, &[&id, &old, &labels]).await?;
        Ok(updated == 1)
    }

    async fn host(&self, id: &str) -> Result<Option<HostRow>> {
        self.query_opt(
            &format!("SELECT {HOST_COLUMNS} FROM hosts WHERE id = $1"),
            &[&id],
        )
        .await?
        .as_ref()
        .map(host_row)
        .transpose()
    }

    async fn hosts(&self) -> Result<Vec<HostRow>> {
        collect(
            self.query(
                &format!(
                    "SELECT {HOST_COLUMNS} FROM hosts WHERE state = 'attached' ORDER BY site, id"
                ),
                &[],
            )
            .await?,
            host_row,
        )
    }

    async fn all_hosts(&self) -> Result<Vec<HostRow>> {
        collect(
            self.query(
                &format!("SELECT {HOST_COLUMNS} FROM hosts ORDER BY site, id"),
                &[],
            )
            .await?,
            host_row,
        )
    }

    async fn site_hosts(&self, site: &str) -> Result<Vec<HostRow>> {
        collect(
            self.query(
                &format!(
                    "SELECT {HOST_COLUMNS} FROM hosts WHERE site = $1 AND state = 'attached' ORDER BY id"
                ),
                &[&site],
            )
            .await?,
            host_row,
        )
    }

    async fn host_changes(&self, after: u64) -> Result<Vec<HostRow>> {
        collect(
            self.query(
                &format!(
                    "SELECT {HOST_COLUMNS} FROM hosts WHERE changed > $1 ORDER BY changed, id"
                ),
                &[&to_i64(after)],
            )
            .await?,
            host_row,
        )
    }

    async fn record_report(
        &self,
        host: &str,
        site: &str,
        now: &str,
        batches: Vec<ReportBatch>,
        retention: &EventRetention,
    ) -> Result<ReportRecorded> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The host's status row, made if need be and locked: concurrent reports of one host
        // (a resend racing its original, on any replica) are stored one after the other.
        execute(
            &tx,
            "INSERT INTO host_status (host, site, seq, status, updated_at) VALUES ($1, $2, 0, '{}', $3) ON CONFLICT (host) DO NOTHING",
            &[&host, &site, &now],
        )
        .await?;
        let stored = query_opt(
            &tx,
            "SELECT seq, status FROM host_status WHERE host = $1 FOR UPDATE",
            &[&host],
        )
        .await?
        .ok_or_else(|| StoreError::Backend(format!("host {host}: its status row vanished")))?;
        let mut cursor = ReportCursor::new(to_u64(stored.try_get(0)?));
        let mut status: String = stored.try_get(1)?;
        let mut added = 0u64;
        for batch in batches {
            if !cursor.admit(batch.seq) {
                continue;
            }
            added += insert_events(&tx, host, batch.seq, 0, site, now, batch.events).await?;
            if let Some(s) = batch.status {
                status = s;
            }
        }
        let seq = cursor.acked();
        execute(
            &tx,
            "UPDATE host_status SET site = $2, seq = $3, status = $4, updated_at = $5 WHERE host = $1",
            &[&host, &site, &to_i64(seq), &status, &now],
        )
        .await?;
        execute(
            &tx,
            "UPDATE hosts SET last_seen = $2 WHERE id = $1",
            &[&host, &now],
        )
        .await?;
        let pruned = retain_events(&tx, site, added, retention).await?;
        tx.commit().await?;
        Ok(ReportRecorded { acked: seq, pruned })
    }

    async fn put_inventory(&self, change: InventoryChange) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Locked, so that two inventories of one host number their events one after the other.
        let site: Option<String> = query_opt(
            &tx,
            "SELECT site FROM hosts WHERE id = $1 AND state = 'attached' FOR UPDATE",
            &[&change.host],
        )
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
        let Some(site) = site else {
            return Ok(false);
        };
        execute(
            &tx,
            "UPDATE hosts SET hostname = $2, inventory = $3, last_seen = $4 WHERE id = $1",
            &[
                &change.host,
                &change.hostname,
                &change.inventory,
                &change.now,
            ],
        )
        .await?;
        if !change.events.is_empty() {
            let next: i64 = query(
                &tx,
                "SELECT COALESCE(MAX(idx), -1) + 1 FROM events WHERE host = $1 AND seq = 0",
                &[&change.host],
            )
            .await?
            .first()
            .map(|r| r.try_get(0))
            .transpose()?
            .unwrap_or(0);
            let events = change
                .events
                .into_iter()
                .map(|(kind, message)| (change.now.clone(), kind, message))
                .collect();
            let added =
                insert_events(&tx, &change.host, 0, next, &site, &change.now, events).await?;
            retain_events(&tx, &site, added, &change.retention).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn host_statuses(&self) -> Result<Vec<HostStatusRow>> {
        collect(
            self.query(
                "SELECT host, site, seq, status, updated_at FROM host_status ORDER BY site, host",
                &[],
            )
            .await?,
            |r| {
                Ok(HostStatusRow {
                    host: r.try_get(0)?,
                    site: r.try_get(1)?,
                    seq: to_u64(r.try_get(2)?),
                    status: r.try_get(3)?,
                    updated_at: r.try_get(4)?,
                })
            },
        )
    }

    async fn events(&self, site: &str, limit: u32) -> Result<Vec<EventRow>> {
        let mut rows = collect(
            self.query(
                "SELECT host, seq, idx, site, at, kind, message, received_at FROM events WHERE site = $1 ORDER BY received_at DESC, host DESC, seq DESC, idx DESC LIMIT $2",
                &[&site, &i64::from(limit)],
            )
            .await?,
            event_row,
        )?;
        rows.reverse();
        Ok(rows)
    }

    async fn event_counts(&self) -> Result<Vec<EventCounts>> {
        collect(
            self.query(
                "SELECT site, kept, pruned FROM event_counts ORDER BY site",
                &[],
            )
            .await?,
            |r| {
                Ok(EventCounts {
                    site: r.try_get(0)?,
                    kept: to_u64(r.try_get(1)?),
                    pruned: to_u64(r.try_get(2)?),
                })
            },
        )
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
        now_ms: u64,
    ) -> Result<Option<u64>> {
        check_holder(holder)?;
        let expires = to_i64(lease_expiry(now_ms, ttl));
        self.query_opt(ACQUIRE_LEASE, &[&name, &holder, &expires, &to_i64(now_ms)])
            .await?
            .map(|r| Ok(to_u64(r.try_get(0)?)))
            .transpose()
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<bool> {
        check_holder(holder)?;
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "UPDATE leases SET holder = '', expires_at = 0 WHERE name = $1 AND holder = $2",
            )
            .await?;
        Ok(client.execute(&statement, &[&name, &holder]).await? > 0)
    }

    async fn put_presence(
        &self,
        replica: &str,
        seen: Vec<PresenceSeen>,
        forget_after: std::time::Duration,
    ) -> Result<u64> {
        check_holder(replica)?;
        let mut hosts = Vec::with_capacity(seen.len());
        let mut sites = Vec::with_capacity(seen.len());
        let mut polls = Vec::with_capacity(seen.len());
        let mut ago = Vec::with_capacity(seen.len());
        for s in seen {
            hosts.push(s.host);
            sites.push(s.site);
            polls.push(i64::from(s.polls));
            ago.push(to_i64(s.seen_ago_ms));
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        execute(
            &tx,
            "SELECT pg_advisory_xact_lock($1)",
            &[&PRESENCE_CHANGE_LOCK],
        )
        .await?;
        let now: i64 = query_opt(&tx, NOW_MS, &[])
            .await?
            .ok_or_else(|| StoreError::Backend("the database told no time".into()))?
            .try_get(0)?;
        let forget_before = now.saturating_sub(millis(forget_after));
        execute(
            &tx,
            "DELETE FROM presence WHERE replica IN
                 (SELECT replica FROM presence_replicas WHERE beat_at < $1 AND replica <> $2)",
            &[&forget_before, &replica],
        )
        .await?;
        execute(
            &tx,
            "DELETE FROM presence_replicas WHERE beat_at < $1 AND replica <> $2",
            &[&forget_before, &replica],
        )
        .await?;
        execute(
            &tx,
            "INSERT INTO presence_replicas (replica, beat_at) VALUES ($1, $2)
             ON CONFLICT (replica) DO UPDATE SET beat_at = EXCLUDED.beat_at",
            &[&replica, &now],
        )
        .await?;
        if !hosts.is_empty() {
            execute(
                &tx,
                "INSERT INTO presence (replica, host, site, polls, seen_at, change)
                 SELECT $1, h, s, p, GREATEST($6 - a, 0), nextval('presence_change')
                 FROM UNNEST($2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[]) AS t(h, s, p, a)
                 ON CONFLICT (replica, host) DO UPDATE SET
                     site = EXCLUDED.site, polls = EXCLUDED.polls, seen_at = EXCLUDED.seen_at,
                     change = EXCLUDED.change",
                &[&replica, &hosts, &sites, &polls, &ago, &now],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(to_u64(now))
    }

    async fn presence_changes(&self, after: u64, limit: u32) -> Result<PresenceChanges> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let now: i64 = query_opt(&tx, NOW_MS, &[])
            .await?
            .ok_or_else(|| StoreError::Backend("the database told no time".into()))?
            .try_get(0)?;
        let rows = collect(
            query(
                &tx,
                "SELECT change, replica, host, site, polls, seen_at FROM presence
                 WHERE change > $1 ORDER BY change LIMIT $2",
                &[&to_i64(after), &i64::from(limit)],
            )
            .await?,
            |r| {
                Ok((
                    to_u64(r.try_get(0)?),
                    PresenceRow {
                        replica: r.try_get(1)?,
                        host: r.try_get(2)?,
                        site: r.try_get(3)?,
                        polls: to_u32(r.try_get(4)?, "presence polls")?,
                        seen_at_ms: to_u64(r.try_get(5)?),
                    },
                ))
            },
        )?;
        let beats = collect(
            query(
                &tx,
                "SELECT replica, beat_at FROM presence_replicas ORDER BY replica",
                &[],
            )
            .await?,
            |r| Ok((r.try_get(0)?, to_u64(r.try_get(1)?))),
        )?;
        tx.commit().await?;
        Ok(PresenceChanges {
            now_ms: to_u64(now),
            rows,
            beats,
        })
    }

    async fn lease(&self, name: &str) -> Result<Option<LeaseRow>> {
        self.query_opt(
            "SELECT name, holder, fence, expires_at FROM leases WHERE name = $1",
            &[&name],
        )
        .await?
        .map(|r| {
            Ok(LeaseRow {
                name: r.try_get(0)?,
                holder: r.try_get(1)?,
                fence: to_u64(r.try_get(2)?),
                expires_at_ms: to_u64(r.try_get(3)?),
            })
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::conformance_suite!(async |_: &std::path::Path| async {
        PostgresStore::open(&crate::pg_cluster::cluster().fresh_database())
            .await
            .unwrap()
    });

    #[test]
    fn a_url_asking_for_tls_is_refused_not_served_in_the_clear() {
        let err = parse_url("postgres://atoll@db.example:5433/fleet?sslmode=require")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("db.example:5433/fleet") && err.contains("sslmode=require"),
            "{err}"
        );
        let err = parse_url("postgres://atoll:secret@db/fleet?sslmode=verify-full")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("store URL") && !err.contains("secret"),
            "{err}"
        );
        for url in [
            "postgres://atoll@127.0.0.1/fleet",
            "postgresql://atoll@127.0.0.1/fleet?sslmode=disable",
            "postgres://atoll@127.0.0.1/fleet?sslmode=prefer",
        ] {
            let config = parse_url(url).unwrap();
            assert_eq!(config.get_ssl_mode(), SslMode::Disable, "{url}");
        }
    }

    #[test]
    fn every_connection_commits_synchronously_whatever_the_url_says() {
        let config = parse_url("postgres://a@h/d?options=-c%20work_mem%3D4MB").unwrap();
        assert_eq!(
            config.get_options(),
            Some("-c work_mem=4MB -c synchronous_commit=on")
        );
        let config = parse_url("postgres://a@h/d").unwrap();
        assert_eq!(config.get_options(), Some("-c synchronous_commit=on"));
        assert_eq!(target(&config), "h:5432/d");
    }

    #[tokio::test]
    async fn the_server_reports_synchronous_commit_on_and_a_second_open_does_not_migrate_twice() {
        let url = crate::pg_cluster::cluster().fresh_database();
        let store = PostgresStore::open(&url).await.unwrap();
        store
            .commit(0, vec![crate::conformance::site_row("a", 1)])
            .await
            .unwrap();
        let setting = store
            .query_opt("SHOW synchronous_commit", &[])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(setting.get::<_, String>(0), "on");
        let again = PostgresStore::open(&url).await.unwrap();
        assert_eq!(again.version().await.unwrap(), 1);
        assert!(again.resource("Site", "a").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let url = crate::pg_cluster::cluster().fresh_database();
        let store = PostgresStore::open(&url).await.unwrap();
        store
            .client()
            .await
            .unwrap()
            .execute("UPDATE schema_version SET version = 99", &[])
            .await
            .unwrap();
        let err = PostgresStore::open(&url).await.unwrap_err().to_string();
        assert!(
            err.contains("schema version 99") && err.contains("upgrade atoll"),
            "{err}"
        );
    }

    /// Two stores on one database are two replicas: a batch computed from a version another
    /// replica moved past is refused, whichever of them commits.
    #[tokio::test]
    async fn two_writers_on_one_database_race_and_exactly_one_wins() {
        let url = crate::pg_cluster::cluster().fresh_database();
        let (a, b) = (
            PostgresStore::open(&url).await.unwrap(),
            PostgresStore::open(&url).await.unwrap(),
        );
        for round in 0..20u64 {
            let (x, y) = tokio::join!(
                a.commit(round, vec![crate::conformance::site_row("a", round + 1)]),
                b.commit(round, vec![crate::conformance::site_row("b", round + 1)]),
            );
            let won = [&x, &y].iter().filter(|r| r.is_ok()).count();
            assert_eq!(won, 1, "round {round}: {x:?} {y:?}");
            let lost = if x.is_ok() { y } else { x };
            assert!(
                matches!(lost, Err(StoreError::Conflict { expected, actual }) if expected == round && actual == round + 1),
                "round {round}: {lost:?}"
            );
        }
        assert_eq!(b.version().await.unwrap(), 20);
    }

    /// Two stores on one fresh database, as two replicas have, with a join token `t` of site `s`
    /// good for many hosts.
    async fn two_replicas_with_a_join_token() -> (PostgresStore, PostgresStore) {
        let url = crate::pg_cluster::cluster().fresh_database();
        let (a, b) = (
            PostgresStore::open(&url).await.unwrap(),
            PostgresStore::open(&url).await.unwrap(),
        );
        a.create_join_token(JoinTokenRow {
            id: "t".into(),
            hash: "hash-t".into(),
            site: "s".into(),
            uses_left: 1000,
            expires_at: "2099-01-01T00:00:00Z".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
        })
        .await
        .unwrap();
        (a, b)
    }

    /// A site deleted on one replica while hosts enroll through another: each host is either
    /// detached with the rest or refused, never left attached to the deleted site.
    #[tokio::test]
    async fn enrollments_racing_a_sites_deletion_on_another_replica_are_detached_or_refused() {
        let (a, b) = two_replicas_with_a_join_token().await;
        let hosts = 40;
        let enrollments = tokio::spawn(async move {
            let all = (0..hosts).map(|i| {
                let a = a.clone();
                async move {
                    let host = HostRow {
                        id: format!("h{i}"),
                        site: "s".into(),
                        cert_serial: "01".into(),
                        ..HostRow::default()
                    };
                    a.enroll_host(host, "t").await.unwrap()
                }
            });
            futures_util::future::join_all(all).await
        });
        // Retire the site once some hosts are in, while the rest are still enrolling.
        while b.all_hosts().await.unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        let retire = vec![Write::RetireSite {
            site: "s".into(),
            at: "2026-01-01T00:00:01Z".into(),
        }];
        b.commit(0, retire).await.unwrap();
        let outcomes = enrollments.await.unwrap();
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, Enrolled::Yes | Enrolled::SiteDeleted))
        );
        let attached: Vec<String> = b
            .site_hosts("s")
            .await
            .unwrap()
            .into_iter()
            .map(|h| h.id)
            .collect();
        assert!(
            attached.is_empty(),
            "{attached:?} left attached to a deleted site"
        );
        let stored = b.all_hosts().await.unwrap().len();
        let yes = outcomes.iter().filter(|o| **o == Enrolled::Yes).count();
        assert_eq!(
            stored, yes,
            "every host answered Yes is stored, and only those"
        );
    }

    /// Enrollments racing on two replicas: each host's number is above every number a reader
    /// saw before it was committed, so following `host_changes` misses none.
    #[tokio::test]
    async fn a_reader_following_host_changes_never_misses_one_committed_below_what_it_saw() {
        let (a, b) = two_replicas_with_a_join_token().await;
        let hosts = 60;
        let enroll = |store: &PostgresStore, i: usize| {
            let store = store.clone();
            async move {
                let host = HostRow {
                    id: format!("h{i}"),
                    site: "s".into(),
                    cert_serial: "01".into(),
                    ..HostRow::default()
                };
                assert_eq!(store.enroll_host(host, "t").await.unwrap(), Enrolled::Yes);
            }
        };
        let reader = b.clone();
        let writers = tokio::spawn(async move {
            let all = (0..hosts).map(|i| enroll(if i % 2 == 0 { &a } else { &b }, i));
            futures_util::future::join_all(all).await;
        });
        let mut seen = std::collections::BTreeSet::new();
        let mut after = 0;
        loop {
            // Read once more after the last enrollment committed.
            let done = writers.is_finished();
            for h in reader.host_changes(after).await.unwrap() {
                after = after.max(h.changed);
                assert!(seen.insert(h.id.clone()), "{} seen twice", h.id);
            }
            if done {
                break;
            }
            tokio::task::yield_now().await;
        }
        writers.await.unwrap();
        let missed: Vec<String> = (0..hosts)
            .map(|i| format!("h{i}"))
            .filter(|id| !seen.contains(id))
            .collect();
        assert!(
            missed.is_empty(),
            "{missed:?} were committed below a number the reader had seen"
        );
        assert!(reader.host_changes(after).await.unwrap().is_empty());
    }

    /// Commits racing on two replicas while a third follows the manifest changes: every
    /// manifest written is seen, once, however the commits interleave with the reads.
    #[tokio::test]
    async fn a_reader_following_manifest_changes_never_misses_a_commit_of_another_replica() {
        let url = crate::pg_cluster::cluster().fresh_database();
        let (a, b, reader) = (
            PostgresStore::open(&url).await.unwrap(),
            PostgresStore::open(&url).await.unwrap(),
            PostgresStore::open(&url).await.unwrap(),
        );
        let sites = 40;
        let write = |store: &PostgresStore, i: usize| {
            let store = store.clone();
            async move {
                let row = ManifestRow {
                    site: format!("s{i}"),
                    revision: 1,
                    hash: format!("h{i}"),
                    body: "{}".into(),
                    updated_at: "2026-01-01T00:00:00Z".into(),
                };
                // Another replica's commit in between is a conflict: computed again, as the
                // control plane does.
                loop {
                    let base = store.version().await.unwrap();
                    match store
                        .commit(base, vec![Write::PutManifest(row.clone())])
                        .await
                    {
                        Ok(_) => return,
                        Err(StoreError::Conflict { .. }) => tokio::task::yield_now().await,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        };
        let writers = tokio::spawn(async move {
            let all = (0..sites).map(|i| write(if i % 2 == 0 { &a } else { &b }, i));
            futures_util::future::join_all(all).await;
        });
        let mut seen = std::collections::BTreeSet::new();
        let mut after = 0;
        loop {
            let done = writers.is_finished();
            for (number, head) in reader.manifest_changes(after, 7).await.unwrap() {
                assert!(number > after, "{number} after {after}");
                after = number;
                assert!(seen.insert(head.site.clone()), "{} seen twice", head.site);
            }
            if done {
                break;
            }
            tokio::task::yield_now().await;
        }
        writers.await.unwrap();
        // The last pages, read after every commit.
        loop {
            let page = reader.manifest_changes(after, 7).await.unwrap();
            let Some((last, _)) = page.last() else { break };
            after = *last;
            seen.extend(page.into_iter().map(|(_, h)| h.site));
        }
        let missed: Vec<String> = (0..sites)
            .map(|i| format!("s{i}"))
            .filter(|s| !seen.contains(s))
            .collect();
        assert!(
            missed.is_empty(),
            "{missed:?} were committed below a number the reader had seen"
        );
        assert_eq!(reader.last_manifest_change().await.unwrap(), after);
    }

    /// The hint rings for a manifest committed through another store on the database.
    #[tokio::test]
    async fn a_manifest_commit_on_one_replica_rings_the_hint_of_another() {
        let url = crate::pg_cluster::cluster().fresh_database();
        let (a, b) = (
            PostgresStore::open(&url).await.unwrap(),
            PostgresStore::open(&url).await.unwrap(),
        );
        let hint = a
            .manifest_hint()
            .await
            .unwrap()
            .expect("PostgreSQL has a hint");
        let row = ManifestRow {
            site: "s".into(),
            revision: 1,
            hash: "h".into(),
            body: "{}".into(),
            updated_at: "2026-01-01T00:00:00Z".into(),
        };
        b.commit(0, vec![Write::PutManifest(row)]).await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), hint.notified())
            .await
            .expect("no hint within 10 s of the commit");
    }
}
