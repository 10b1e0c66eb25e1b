//! The server's TCP listener: socket options and the connection bound.
//!
//! * `TCP_NODELAY` on every connection: replies and stream messages are
//!   written whole, so Nagle's algorithm would only hold a small frame back
//!   until the peer's (possibly delayed) ACK of the previous one.
//! * A fixed socket send buffer (`http.send_buffer_bytes`, set on the
//!   listening socket and inherited by every accepted one) instead of the
//!   kernel's autotuning up to 4 MiB: a client that stops reading fills its
//!   buffer, then its per-connection queue, and is dropped as a slow
//!   consumer after a bounded amount of data (not megabytes later), and the
//!   kernel memory one idle client can pin stays small.
//! * At most `http.max_connections` open connections (REST and WebSocket
//!   together). One more is answered `503` with the contract's JSON error
//!   and closed at once, so a client learns why instead of hanging in the
//!   accept backlog.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Pending connections the kernel queues before `accept`.
const BACKLOG: u32 = 1024;

/// The answer to a connection over `http.max_connections` (-1008, as a
/// full command ring).
fn full_response() -> Vec<u8> {
    let body = r#"{"code":-1008,"msg":"Too many open connections (http.max_connections); close idle ones or retry later."}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Binds `addr` with the server's socket options.
///
/// `send_buffer` is the socket send buffer in bytes (0: the kernel's
/// autotuning).
pub fn bind(addr: SocketAddr, send_buffer: u32) -> io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As TcpListener::bind does: a restart may rebind at once.
    sock.set_reuseaddr(true)?;
    if send_buffer > 0 {
        sock.set_send_buffer_size(send_buffer)?;
    }
    sock.bind(addr)?;
    sock.listen(BACKLOG)
}

/// Connection counts for `/metrics`.
#[derive(Debug)]
pub struct Stats {
    slots: Arc<Semaphore>,
    max: usize,
    refused: AtomicU64,
}

impl Stats {
    pub fn new(max_connections: usize) -> Arc<Stats> {
        Arc::new(Stats {
            slots: Arc::new(Semaphore::new(max_connections)),
            max: max_connections,
            refused: AtomicU64::new(0),
        })
    }

    /// Open connections (REST and WebSocket).
    pub fn open(&self) -> usize {
        self.max - self.slots.available_permits()
    }

    /// Connections refused because `max_connections` were open.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// A listener that holds one permit of `max_connections` per open
/// connection.
#[derive(Debug)]
pub struct Bounded {
    inner: TcpListener,
    stats: Arc<Stats>,
    last_warning: Option<Instant>,
}

impl Bounded {
    pub fn new(inner: TcpListener, stats: Arc<Stats>) -> Bounded {
        Bounded {
            inner,
            stats,
            last_warning: None,
        }
    }

    fn refuse(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        let n = self.stats.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let now = Instant::now();
        if self
            .last_warning
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
        {
            self.last_warning = Some(now);
            tracing::warn!(
                %peer,
                refused_total = n,
                "connection refused: http.max_connections open connections (raise it or close idle clients)"
            );
        }
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                let _ = stream.write_all(&full_response()).await;
                let _ = stream.shutdown().await;
            })
            .await;
        });
    }
}

impl axum::serve::Listener for Bounded {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        loop {
            let (stream, peer) = match self.inner.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: wait, as
                    // axum's own listener does, instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let Ok(permit) = self.stats.slots.clone().try_acquire_owned() else {
                self.refuse(stream, peer);
                continue;
            };
            let _ = stream.set_nodelay(true);
            return (
                Conn {
                    stream,
                    _permit: permit,
                },
                peer,
            );
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An accepted connection; its slot is free again when it is dropped.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener;
    use tokio::io::AsyncReadExt;

    #[test]
    fn the_refusal_is_a_complete_http_response() {
        let full = full_response();
        let text = std::str::from_utf8(&full).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), len);
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], -1008);
        assert!(head.starts_with("HTTP/1.1 503 "));
    }

    #[tokio::test]
    async fn accepted_sockets_inherit_the_options_and_hold_a_slot() {
        let l = bind(SocketAddr::from(([127, 0, 0, 1], 0)), 32 << 10).unwrap();
        let addr = l.local_addr().unwrap();
        let stats = Stats::new(1);
        let mut l = Bounded::new(l, stats.clone());
        let c1 = TcpStream::connect(addr).await.unwrap();
        let (conn, peer) = l.accept().await;
        assert_eq!(peer, c1.local_addr().unwrap());
        assert!(conn.stream.nodelay().unwrap());
        let Conn { stream, _permit } = conn;
        let sock = TcpSocket::from_std_stream(stream.into_std().unwrap());
        let sndbuf = sock.send_buffer_size().unwrap();
        // Linux doubles the value for bookkeeping; autotuning would start
        // at 16 KiB and grow to 4 MiB.
        assert!((32 << 10..=64 << 10).contains(&sndbuf), "{sndbuf}");

        // The second connection is over the bound: a 503 and closed.
        let mut c2 = TcpStream::connect(addr).await.unwrap();
        let accept_next = tokio::spawn(async move {
            let r = l.accept().await;
            (l, r)
        });
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), c2.read_to_end(&mut got))
            .await
            .expect("refused connection closed")
            .unwrap();
        assert!(got.starts_with(b"HTTP/1.1 503 "), "{got:?}");
        assert_eq!(stats.refused(), 1);
        assert_eq!(stats.open(), 1);

        // Dropping the first frees its slot for the next client.
        drop((sock, _permit));
        let c3 = TcpStream::connect(addr).await.unwrap();
        let (_l, (_conn3, peer3)) = tokio::time::timeout(Duration::from_secs(10), accept_next)
            .await
            .expect("slot freed")
            .unwrap();
        assert_eq!(peer3, c3.local_addr().unwrap());
        assert_eq!(stats.open(), 1);
        drop(c1);
    }
}
