//! A deadline on a new connection's first bytes.
//!
//! hyper-util's `auto` server reads the first bytes of a connection to tell an HTTP/2 preface
//! (`PRI * HTTP/2.0…`, 24 bytes) from HTTP/1, and that read has no timer: hyper's
//! `header_read_timeout` starts only once HTTP/1 has been chosen. So a client that connects (or
//! completes a TLS handshake) and sends nothing, or the first bytes of a preface and then nothing,
//! held its connection for ever. [`FirstBytes`] fails that read with `TimedOut` once the deadline
//! passes, and disarms as soon as the protocol is decided: the first byte that differs from the
//! preface (HTTP/1, where hyper's own timeout takes over) or the whole preface (HTTP/2).

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Sleep,
};

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An IO whose reads fail with `TimedOut` if the protocol is not decided within the deadline.
pub struct FirstBytes<I> {
    io: I,
    /// `None` once the protocol is decided.
    deadline: Option<Pin<Box<Sleep>>>,
    /// How many bytes of the preface the connection has matched so far.
    matched: usize,
}

impl<I> FirstBytes<I> {
    pub fn new(io: I, within: Duration) -> Self {
        FirstBytes {
            io,
            deadline: Some(Box::pin(tokio::time::sleep(within))),
            matched: 0,
        }
    }

    /// Follows the preface through `read`; disarms once the protocol is decided.
    fn saw(&mut self, read: &[u8]) {
        for &b in read {
            if PREFACE.get(self.matched) != Some(&b) {
                self.deadline = None; // not a preface: HTTP/1
                return;
            }
            self.matched += 1;
            if self.matched == PREFACE.len() {
                self.deadline = None; // HTTP/2
                return;
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for FirstBytes<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let Some(deadline) = this.deadline.as_mut() else {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        };
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let filled = buf.filled();
                if filled.len() == before {
                    this.deadline = None; // EOF: nothing left to wait for
                } else {
                    this.saw(&filled[before..]);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                ready!(deadline.as_mut().poll(cx));
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request within the header read timeout",
                )))
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for FirstBytes<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    const WITHIN: Duration = Duration::from_secs(5);

    async fn read_some(io: &mut FirstBytes<tokio::io::DuplexStream>) -> io::Result<Vec<u8>> {
        let mut buf = [0u8; 64];
        let n = io.read(&mut buf).await?;
        Ok(buf[..n].to_vec())
    }

    #[tokio::test(start_paused = true)]
    async fn silence_times_out() {
        let (_client, server) = duplex(64);
        let mut io = FirstBytes::new(server, WITHIN);
        let e = read_some(&mut io).await.expect_err("timed out");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_preface_times_out() {
        let (mut client, server) = duplex(64);
        let mut io = FirstBytes::new(server, WITHIN);
        client.write_all(b"PRI * HTTP").await.expect("write");
        assert_eq!(read_some(&mut io).await.expect("read"), b"PRI * HTTP");
        let e = read_some(&mut io).await.expect_err("timed out");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn http1_disarms_at_the_first_differing_byte() {
        let (mut client, server) = duplex(64);
        let mut io = FirstBytes::new(server, WITHIN);
        client
            .write_all(b"PUT / HTTP/1.1\r\n")
            .await
            .expect("write");
        read_some(&mut io).await.expect("read");
        // An idle keep-alive connection is hyper's business from here: no deadline of ours.
        let late = tokio::spawn(async move {
            tokio::time::sleep(WITHIN * 3).await;
            client.write_all(b"x").await.expect("write");
            client
        });
        assert_eq!(read_some(&mut io).await.expect("read"), b"x");
        drop(late.await.expect("join"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_whole_preface_disarms() {
        let (mut client, server) = duplex(64);
        let mut io = FirstBytes::new(server, WITHIN);
        client.write_all(PREFACE).await.expect("write");
        let mut got = Vec::new();
        while got.len() < PREFACE.len() {
            got.extend(read_some(&mut io).await.expect("read"));
        }
        let late = tokio::spawn(async move {
            tokio::time::sleep(WITHIN * 3).await;
            client.write_all(b"y").await.expect("write");
            client
        });
        assert_eq!(read_some(&mut io).await.expect("read"), b"y");
        drop(late.await.expect("join"));
    }
}
