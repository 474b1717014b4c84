//! Group commit for the writes that agent traffic makes: reports, enrollments, join tokens,
//! audit lines.
//!
//! Each of them is small, and with `synchronous = FULL` every transaction costs an fsync
//! (milliseconds on most disks), so one transaction per request caps a fleet at a few hundred
//! requests a second however fast the rest is. Instead, one thread takes every write queued
//! while the previous group was being made durable, runs each in its own savepoint of one
//! transaction, commits once, and only then answers each caller: an `Ok` still means durable.
//! A write that fails rolls back its own savepoint and fails alone.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::{Result, StoreError};

/// The most writes that share one transaction.
const MAX_GROUP: usize = 1024;

/// A write waiting for its group.
pub(crate) trait Job: Send {
    /// Runs the write inside the group's transaction; false if the transaction can no longer
    /// be trusted (a savepoint could not be rolled back), so the whole group must fail.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once the group's fate is known.
    fn finish(self: Box<Self>, committed: std::result::Result<(), String>);
}

struct Grouped<T, F> {
    work: Option<F>,
    outcome: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Job for Grouped<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return true;
        };
        if let Err(e) = conn.execute_batch("SAVEPOINT job") {
            self.outcome = Some(Err(e.into()));
            return true;
        }
        let outcome = work(conn);
        let closed = if outcome.is_ok() {
            conn.execute_batch("RELEASE job")
        } else {
            conn.execute_batch("ROLLBACK TO job; RELEASE job")
        };
        self.outcome = Some(outcome);
        closed.is_ok()
    }

    fn finish(self: Box<Self>, committed: std::result::Result<(), String>) {
        let result = match (committed, self.outcome) {
            (Err(e), _) => Err(StoreError::Backend(e)),
            (Ok(()), Some(outcome)) => outcome,
            (Ok(()), None) => Err(StoreError::Backend("a write was not run".into())),
        };
        // The caller may have given up waiting; the write stands either way.
        let _ = self.reply.send(result);
    }
}

/// The queue of the group-commit thread.
#[derive(Debug, Clone)]
pub(crate) struct GroupWriter {
    jobs: mpsc::Sender<Box<dyn Job>>,
}

impl GroupWriter {
    /// Starts the thread that commits groups on `writer`. It ends when the last clone of the
    /// returned queue is dropped.
    pub(crate) fn start(writer: Arc<Mutex<Connection>>) -> Result<GroupWriter> {
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("atoll-store-group".into())
            .spawn(move || run(&writer, &queue))
            .map_err(|e| StoreError::Backend(format!("cannot start the store's writer: {e}")))?;
        Ok(GroupWriter { jobs })
    }

    /// Runs `work` in the next group and returns its result once the group is durable.
    pub(crate) async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let stopped = || StoreError::Backend("the store's writer has stopped".into());
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Box::new(Grouped {
                work: Some(work),
                outcome: None,
                reply,
            }))
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn run(writer: &Mutex<Connection>, queue: &mpsc::Receiver<Box<dyn Job>>) {
    while let Ok(first) = queue.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let committed = match writer.lock() {
            Ok(conn) => commit_group(&conn, &mut jobs),
            Err(_) => Err("a database connection was poisoned by a panic".to_owned()),
        };
        for job in jobs {
            job.finish(committed.clone());
        }
    }
}

fn commit_group(conn: &Connection, jobs: &mut [Box<dyn Job>]) -> std::result::Result<(), String> {
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| e.to_string())?;
    if !jobs.iter_mut().all(|job| job.run(conn)) {
        let _ = conn.execute_batch("ROLLBACK");
        return Err("a write could not be rolled back; its group was abandoned".to_owned());
    }
    conn.execute_batch("COMMIT").map_err(|e| {
        // Leave the connection outside any transaction for the next group.
        let _ = conn.execute_batch("ROLLBACK");
        format!("the transaction could not be committed: {e}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failing_write_fails_alone_and_the_others_are_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY)")
            .unwrap();
        let group = GroupWriter::start(Arc::new(Mutex::new(conn))).unwrap();
        // Odd writes insert their number twice: the second insert fails on the key, and the
        // first must be rolled back with it.
        let write = |n: i64| {
            group.write(move |conn| {
                conn.execute("INSERT INTO t (n) VALUES (?1)", [n])?;
                if n % 2 == 1 {
                    conn.execute("INSERT INTO t (n) VALUES (?1)", [n])?;
                }
                Ok(n)
            })
        };
        let results = futures_util::future::join_all((0..20).map(write)).await;
        for (n, r) in (0..).zip(&results) {
            assert_eq!(r.is_ok(), n % 2 == 0, "{n}: {r:?}");
        }
        let stored: Vec<i64> = Connection::open(&path)
            .unwrap()
            .prepare("SELECT n FROM t ORDER BY n")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(stored, (0..20).step_by(2).collect::<Vec<i64>>());
    }
}
