//! The virtual sites' connections: TCP counted byte by byte, TLS with the site's own client
//! certificate, and HTTP/2 (as the real agent negotiates) with the headers the agent's client
//! sends, so that the control plane sees (and the byte counts measure) what real agents would
//! make it see: one connection per site, shared by the long-poll and the reports.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http2::SendRequest;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};

/// Everything the virtual sites send and receive, and the requests they complete.
#[derive(Debug, Default)]
pub struct Counters {
    pub bytes_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub requests: AtomicU64,
    /// Requests answered 503 (the control plane shedding load).
    pub busy: AtomicU64,
    /// Failed connections and requests, and unexpected answers.
    pub errors: AtomicU64,
    pub connections: AtomicU64,
}

impl Counters {
    pub fn snapshot(&self) -> [u64; 6] {
        [
            &self.bytes_out,
            &self.bytes_in,
            &self.requests,
            &self.busy,
            &self.errors,
            &self.connections,
        ]
        .map(|c| c.load(Ordering::Relaxed))
    }
}

/// A TCP stream that adds what passes through it to the counters: TLS records, so bytes on
/// the wire less the TCP/IP headers.
struct Counted {
    inner: TcpStream,
    counters: Arc<Counters>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.counters
            .bytes_in
            .fetch_add(read as u64, Ordering::Relaxed);
        result
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            self.counters
                .bytes_out
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Where the control plane is.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub server_name: ServerName<'static>,
    /// `host:port`, for the requests' authority.
    pub authority: String,
    pub counters: Arc<Counters>,
}

/// One HTTPS connection; clones share it.
#[derive(Clone)]
pub struct Connection {
    send: SendRequest<Full<Bytes>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

/// An answer: status, `Retry-After` in seconds if any, body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub retry_after: Option<Duration>,
    pub body: Bytes,
}

impl Endpoint {
    /// A new connection from the local address `source`, presenting what `tls` holds.
    pub async fn connect(
        &self,
        source: IpAddr,
        tls: Arc<rustls::ClientConfig>,
    ) -> io::Result<Connection> {
        let socket = match source {
            IpAddr::V4(_) => TcpSocket::new_v4()?,
            IpAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(source, 0))?;
        let tcp = tokio::time::timeout(Duration::from_secs(10), socket.connect(self.addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        tcp.set_nodelay(true)?;
        let counted = Counted {
            inner: tcp,
            counters: self.counters.clone(),
        };
        let stream = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_rustls::TlsConnector::from(tls).connect(self.server_name.clone(), counted),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(io::Error::other)?;
        tokio::spawn(async move {
            // The connection ends when either side closes it; the next request reconnects.
            let _ = conn.await;
        });
        self.counters.connections.fetch_add(1, Ordering::Relaxed);
        Ok(Connection { send })
    }
}

impl Connection {
    pub fn is_closed(&self) -> bool {
        self.send.is_closed()
    }

    /// Sends one request and reads the whole answer, within `timeout`.
    pub async fn call<B: Serialize>(
        &mut self,
        endpoint: &Endpoint,
        method: Method,
        path: &str,
        body: Option<&B>,
        timeout: Duration,
    ) -> io::Result<Answer> {
        let exchange = async {
            self.send.ready().await.map_err(io::Error::other)?;
            let mut request = Request::builder()
                .method(method)
                .uri(format!("https://{}{path}", endpoint.authority))
                .header(header::ACCEPT, "*/*");
            let body = match body {
                Some(b) => {
                    request = request.header(header::CONTENT_TYPE, "application/json");
                    Full::new(Bytes::from(
                        serde_json::to_vec(b).map_err(io::Error::other)?,
                    ))
                }
                None => Full::new(Bytes::new()),
            };
            let request = request.body(body).map_err(io::Error::other)?;
            let response = self
                .send
                .send_request(request)
                .await
                .map_err(io::Error::other)?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .map(Duration::from_secs);
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(io::Error::other)?
                .to_bytes();
            Ok(Answer {
                status,
                retry_after,
                body,
            })
        };
        let answer = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer in time"))?;
        if let Ok(a) = &answer {
            endpoint.counters.requests.fetch_add(1, Ordering::Relaxed);
            if a.status == StatusCode::SERVICE_UNAVAILABLE {
                endpoint.counters.busy.fetch_add(1, Ordering::Relaxed);
            }
        }
        answer
    }
}
