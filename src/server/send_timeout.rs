//! A send timeout for client connections: a write that stays pending without progress for too long fails.
//!
//! Why at the IO level: hyper's HTTP/1 server has a header-read timeout but no write or idle timeout, and a
//! response body handed over whole (`Full<Bytes>`) is a single frame: once hyper has it, only the socket writes
//! remain, and neither the service nor the body sees whether the client reads. A timeout around the whole
//! connection would cut slow but healthy downloads; a timeout around each write call sees exactly "no byte taken
//! for this long". When the write fails, hyper ends the connection, which frees its slot and drops the body.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A stream whose writes fail with `TimedOut` after `timeout` without progress; reads pass through.
pub struct SendTimeout<S> {
    inner: S,
    timeout: Duration,
    /// One timer per connection, made at the first stall (most connections never stall: no allocation for
    /// them) and reset, not reallocated, whenever a write starts waiting again.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether `timer` runs for the write now pending.
    armed: bool,
}

impl<S> SendTimeout<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, timeout: Duration) -> SendTimeout<S> {
        SendTimeout { inner, timeout, timer: None, armed: false }
    }

    /// Called when the inner stream is not ready: starts the timer for this stall, or reports it has run out.
    fn stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let deadline = Instant::now() + self.timeout;
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            timer.as_mut().reset(deadline);
            self.armed = true;
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client took no bytes for {:?}", self.timeout),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Any answer from the inner stream is progress (or an error that ends the connection anyway).
    fn progressed<T>(&mut self, result: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match result {
            Poll::Ready(result) => {
                self.armed = false;
                Poll::Ready(result)
            }
            Poll::Pending => self.stalled(cx),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SendTimeout<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SendTimeout<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progressed(result, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progressed(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.progressed(result, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.progressed(result, cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    #[tokio::test]
    async fn a_write_nobody_reads_times_out_and_progress_restarts_the_clock() {
        const TIMEOUT: Duration = Duration::from_millis(300);
        let (client, mut server_side) = duplex(16);
        let mut stream = SendTimeout::new(client, TIMEOUT);
        // Fills the pipe, then waits; the reader takes a little every 150 ms, so no stall lasts the timeout
        // although the whole write takes longer than it.
        let writer = tokio::spawn(async move {
            let result = stream.write_all(&[7u8; 64]).await;
            (result, stream)
        });
        let mut buf = [0u8; 16];
        for _ in 0..4 {
            tokio::time::sleep(TIMEOUT / 2).await;
            assert!(server_side.read(&mut buf).await.unwrap() > 0);
        }
        let (result, mut stream) = writer.await.unwrap();
        assert!(result.is_ok(), "{result:?}");
        // Now nobody reads: the next stalled write fails once the timeout has passed.
        let started = Instant::now();
        let error = stream.write_all(&[7u8; 64]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        let waited = started.elapsed();
        assert!(waited >= TIMEOUT && waited < TIMEOUT * 5, "{waited:?}");
    }
}
