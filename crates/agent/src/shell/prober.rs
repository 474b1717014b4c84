//! Running health checks: HTTP GET (expected status), TCP connect, or a command in the
//! container, each at its service's interval with its timeout. The reconciler says which
//! containers run and with what check; the prober keeps each one's history (`core::health`)
//! and, when a verdict changes, writes it to the health book and wakes the reconciler so the
//! change is reported at once.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll_api::agent::ReplicaHealth;
use atoll_api::manifest::Health;
use atoll_runtime::Driver;
use atoll_spec::application::HealthCheck;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};

use super::clock::now_ms;
use crate::core::health::Tracker;

/// A running container with a health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub container_id: String,
    pub started_ms: u64,
    pub health: Health,
}

/// Verdicts by container id, read by the reconciler when it builds a status.
pub type HealthBook = Arc<Mutex<BTreeMap<String, ReplicaHealth>>>;

pub struct Prober {
    pub driver: Arc<dyn Driver>,
    pub targets: watch::Receiver<Vec<Target>>,
    pub book: HealthBook,
    pub changed: Arc<Notify>,
    pub shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for Prober {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prober").finish_non_exhaustive()
    }
}

impl Prober {
    pub async fn run(mut self) {
        let mut trackers: BTreeMap<String, Tracker> = BTreeMap::new();
        loop {
            let targets = self.targets.borrow_and_update().clone();
            trackers.retain(|id, _| targets.iter().any(|t| t.container_id == *id));
            let now = now_ms();
            let mut probes = tokio::task::JoinSet::new();
            for t in &targets {
                let tracker = trackers
                    .entry(t.container_id.clone())
                    .or_insert_with(|| Tracker::new(&t.container_id, t.started_ms));
                if tracker.next_probe_ms(&t.health) <= now {
                    let (driver, target) = (self.driver.clone(), t.clone());
                    probes.spawn(async move {
                        (
                            target.container_id.clone(),
                            probe(driver.as_ref(), &target).await,
                        )
                    });
                }
            }
            let mut changed = false;
            while let Some(Ok((id, result))) = probes.join_next().await {
                if let (Some(tracker), Some(target)) = (
                    trackers.get_mut(&id),
                    targets.iter().find(|t| t.container_id == id),
                ) {
                    changed |= tracker.record(&target.health, result, now_ms());
                }
            }
            {
                let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
                book.clear();
                book.extend(
                    trackers
                        .iter()
                        .map(|(id, t)| (id.clone(), t.verdict.clone())),
                );
            }
            if changed {
                self.changed.notify_one();
            }
            let next = targets
                .iter()
                .filter_map(|t| {
                    trackers
                        .get(&t.container_id)
                        .map(|tr| tr.next_probe_ms(&t.health))
                })
                .min()
                .map_or(Duration::from_secs(3600), |at| {
                    Duration::from_millis(at.saturating_sub(now_ms()))
                });
            tokio::select! {
                _ = self.shutdown.changed() => return,
                r = self.targets.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(next) => {}
            }
        }
    }
}

/// One probe; Err says why it failed.
async fn probe(driver: &dyn Driver, target: &Target) -> Result<(), String> {
    let timeout = target.health.timeout.0.max(Duration::from_millis(100));
    match &target.health.check {
        HealthCheck::Command(command) => {
            match driver.exec(&target.container_id, command, timeout).await {
                Ok(0) => Ok(()),
                Ok(code) => Err(format!("`{}` exited with code {code}", command.join(" "))),
                Err(e) => Err(e.to_string()),
            }
        }
        HealthCheck::Tcp { port } => {
            let addr = address(driver, target, *port).await?;
            tokio::time::timeout(timeout, TcpStream::connect(addr))
                .await
                .map_err(|_| format!("no TCP connection to port {port} within {timeout:?}"))?
                .map(drop)
                .map_err(|e| format!("TCP connection to port {port}: {e}"))
        }
        HealthCheck::Http { port, path, status } => {
            let addr = address(driver, target, *port).await?;
            let got = tokio::time::timeout(timeout, http_status(addr, path))
                .await
                .map_err(|_| {
                    format!("no HTTP answer from port {port}{path} within {timeout:?}")
                })??;
            if got == *status {
                Ok(())
            } else {
                Err(format!(
                    "GET {path} on port {port} answered {got}, expected {status}"
                ))
            }
        }
    }
}

async fn address(driver: &dyn Driver, target: &Target, port: u16) -> Result<SocketAddr, String> {
    let ip: IpAddr = driver
        .address(&target.container_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "the container has no network address to probe".to_owned())?;
    Ok(SocketAddr::new(ip, port))
}

/// The status code of a plain HTTP/1.1 GET.
async fn http_status(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: atoll-agent\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending to {addr}: {e}"))?;
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < 12 {
        let n = stream
            .read(&mut head[read..])
            .await
            .map_err(|e| format!("reading from {addr}: {e}"))?;
        if n == 0 {
            break;
        }
        read += n;
    }
    parse_status(&head[..read]).ok_or_else(|| format!("{addr} did not answer HTTP"))
}

fn parse_status(head: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(head).ok()?;
    let rest = line.strip_prefix("HTTP/1.")?;
    rest.get(2..5)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 503 Service Unavailable"), Some(503));
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status(b"HTTP/1.1"), None);
    }

    #[tokio::test]
    async fn http_and_tcp_probes_against_a_real_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 512];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let ok = String::from_utf8_lossy(&buf[..n]).starts_with("GET /healthz ");
                let reply: &[u8] = if ok {
                    b"HTTP/1.1 200 OK\r\n\r\n"
                } else {
                    b"HTTP/1.1 404 Not Found\r\n\r\n"
                };
                let _ = s.write_all(reply).await;
            }
        });
        assert_eq!(http_status(addr, "/healthz").await, Ok(200));
        assert_eq!(http_status(addr, "/nope").await, Ok(404));
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(http_status(closed, "/").await.is_err());
    }
}
