//! Networking pieces the servers and the load generators share: one socket
//! write per pass for HTTP/2 connections.
//!
//! h2 does not copy a DATA frame's payload over 256 bytes into its buffer:
//! it writes the frame with its own `writev` before it takes the next one.
//! A watch event fanned out to many streams of one connection would so cost
//! one system call and one TCP segment per stream; a gRPC server's unary
//! responses, each finished by a task of its own, are flushed one by one the
//! same way (the storage member, before: one `writev` per put answered).
//! [`BatchedWrites`] copies
//! what a connection writes into a buffer and sends it on the flush that
//! ends the pass: a flush right after new writes only holds the bytes and
//! asks for one more poll of the connection; the next flush with nothing new
//! (h2 ends every pass of its connection task with one, and the extra poll
//! makes one) writes them all at once. The buffer is also written once it
//! holds [`LIMIT`] bytes.
//!
//! A server's connections ([`BatchedWrites::new`]) are batched only once
//! their first bytes read are the HTTP/2 preface: an HTTP/1 connection writes
//! one response (or one watch event) per flush anyway, so holding would only
//! add a poll. A client's HTTP/2 connection ([`BatchedWrites::http2_client`])
//! is batched from the start.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Buffered bytes at which a write no longer waits for the pass to end.
pub const LIMIT: usize = 256 * 1024;

/// Capacity a buffer keeps after a small write-out.
const KEEP: usize = 64 * 1024;

/// The start of the HTTP/2 connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// No byte read yet (or fewer than the preface's start).
    Sniffing,
    Batching,
    Direct,
}

/// An IO whose writes are batched per pass once it speaks HTTP/2.
pub struct BatchedWrites<T> {
    inner: T,
    mode: Mode,
    /// The first bytes read, while sniffing.
    head: Vec<u8>,
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    sent: usize,
    /// Bytes were buffered since the last flush.
    fresh: bool,
}

impl<T> BatchedWrites<T> {
    /// A server's end of a connection: batched once it reads the HTTP/2
    /// preface.
    pub fn new(inner: T) -> BatchedWrites<T> {
        BatchedWrites {
            inner,
            mode: Mode::Sniffing,
            head: Vec::new(),
            buf: Vec::new(),
            sent: 0,
            fresh: false,
        }
    }

    /// A client's end of an HTTP/2 connection: batched from the start.
    pub fn http2_client(inner: T) -> BatchedWrites<T> {
        BatchedWrites {
            mode: Mode::Batching,
            ..BatchedWrites::new(inner)
        }
    }

    /// The wrapped IO.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    fn sniff(&mut self, read: &[u8]) {
        let want = H2_PREFACE.len() - self.head.len();
        self.head.extend_from_slice(&read[..read.len().min(want)]);
        if !H2_PREFACE.starts_with(&self.head) {
            self.mode = Mode::Direct;
        } else if self.head.len() == H2_PREFACE.len() {
            self.mode = Mode::Batching;
        } else {
            return;
        }
        self.head = Vec::new();
    }
}

impl<T: AsyncWrite + Unpin> BatchedWrites<T> {
    /// Writes out everything buffered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        // A busy connection keeps its buffer; a quiet one gives it back.
        if self.buf.len() < KEEP {
            self.buf.shrink_to(KEEP);
        }
        self.buf.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Makes room for another write once the buffer is full.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.buf.len() - self.sent >= LIMIT {
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

/// Served by tonic: the peer is the wrapped connection's.
impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected
    for BatchedWrites<T>
{
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for BatchedWrites<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if this.mode == Mode::Sniffing && buf.filled().len() > before {
            this.sniff(&buf.filled()[before..]);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for BatchedWrites<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.mode != Mode::Batching {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        ready!(this.poll_room(cx))?;
        this.buf.extend_from_slice(data);
        this.fresh = true;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.mode != Mode::Batching {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        ready!(this.poll_room(cx))?;
        let mut n = 0;
        for b in bufs {
            this.buf.extend_from_slice(b);
            n += b.len();
        }
        this.fresh = true;
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.mode == Mode::Batching || self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.mode == Mode::Batching {
            if this.fresh && this.buf.len() - this.sent < LIMIT {
                // More frames of this pass may follow: hold the bytes and
                // come back once the pass is over.
                this.fresh = false;
                cx.waker().wake_by_ref();
                return Poll::Ready(Ok(()));
            }
            this.fresh = false;
            ready!(this.poll_drain(cx))?;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A duplex pipe with a counter of the writes that reached it.
    async fn pair(
        preface: &[u8],
    ) -> (
        BatchedWrites<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
    ) {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut a = BatchedWrites::new(a);
        b.write_all(preface).await.unwrap();
        let mut got = vec![0; preface.len()];
        a.read_exact(&mut got).await.unwrap();
        (a, b)
    }

    #[tokio::test]
    async fn h2_writes_wait_for_the_flush_that_ends_the_pass() {
        let (mut a, mut b) = pair(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        a.write_all(b"one ").await.unwrap();
        a.flush().await.unwrap(); // held: the pass may go on
        a.write_all(b"two").await.unwrap();
        let mut peek = [0u8; 16];
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(50), b.read(&mut peek)).await;
        assert!(early.is_err(), "nothing is written before the pass ends");
        a.flush().await.unwrap(); // held again (new bytes)
        a.flush().await.unwrap(); // nothing new: written out
        let mut got = vec![0; 7];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"one two");
    }

    #[tokio::test]
    async fn a_full_buffer_and_shutdown_write_out() {
        let (mut a, mut b) = pair(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        let big = vec![7u8; LIMIT];
        a.write_all(&big).await.unwrap();
        a.flush().await.unwrap(); // at the limit: written out at once
        let mut got = vec![0; LIMIT];
        b.read_exact(&mut got).await.unwrap();
        assert!(got.iter().all(|&x| x == 7));
        a.write_all(b"bye").await.unwrap();
        a.shutdown().await.unwrap();
        let mut rest = Vec::new();
        b.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"bye");
    }

    #[tokio::test]
    async fn a_client_batches_from_the_start() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut a = BatchedWrites::http2_client(a);
        a.write_all(b"PRI * HTTP/2.0").await.unwrap();
        a.flush().await.unwrap(); // held
        let mut peek = [0u8; 16];
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(50), b.read(&mut peek)).await;
        assert!(early.is_err(), "nothing is written before the pass ends");
        a.flush().await.unwrap();
        let mut got = vec![0; 14];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"PRI * HTTP/2.0");
    }

    #[tokio::test]
    async fn http1_writes_go_straight_through() {
        let (mut a, mut b) = pair(b"GET / HTTP/1.1\r\n").await;
        a.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        let mut got = vec![0; 17];
        tokio::time::timeout(std::time::Duration::from_secs(5), b.read_exact(&mut got))
            .await
            .expect("written without a flush")
            .unwrap();
        assert_eq!(&got, b"HTTP/1.1 200 OK\r\n");
    }
}
