//! A websocket connection's byte stream, with ohd's own output buffer.
//!
//! tungstenite frames and buffers what it writes in a vector that keeps its largest size for
//! the life of the connection: after a burst every busy client holds its write buffer's high
//! mark, and one large event (a file view of a few MiB) sent to 10,000 clients would leave each
//! of them holding that much. So ohd writes its own frames here, in a buffer given back after
//! every flush, and tungstenite is left to read frames and answer websocket pings and closes
//! (it writes those through this stream too, so everything goes out in order). A server's
//! text frame is a two-to-ten-byte header and the payload, unmasked (RFC 6455 §5.2).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Room taken once a second frame joins a batch: the writer flushes at [`WsIo::FLUSH_AT`], so
/// most batches fit without growing again.
const BATCH_ROOM: usize = 20 * 1024;

pub(crate) struct WsIo<S> {
    inner: S,
    out: Vec<u8>,
    /// How much of `out` is already written (a slow client takes a large buffer in parts).
    written: usize,
}

impl<S> WsIo<S> {
    /// Bytes after which the writer should flush instead of buffering more.
    pub const FLUSH_AT: usize = 16 * 1024;

    pub fn new(inner: S) -> Self {
        WsIo {
            inner,
            out: Vec::new(),
            written: 0,
        }
    }

    /// Appends one text frame carrying `head` then `body`.
    pub fn push_text(&mut self, head: &str, body: &str) {
        const FIN_TEXT: u8 = 0x81;
        let len = head.len() + body.len();
        let need = len + 10;
        if self.out.capacity() == 0 {
            // A lone frame (one event to an idle client) takes just its size.
            self.out.reserve_exact(need);
        } else if self.out.capacity() - self.out.len() < need {
            self.out.reserve(need.max(BATCH_ROOM));
        }
        self.out.push(FIN_TEXT);
        if len < 126 {
            self.out.push(len as u8);
        } else if let Ok(len) = u16::try_from(len) {
            self.out.push(126);
            self.out.extend_from_slice(&len.to_be_bytes());
        } else {
            self.out.push(127);
            self.out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        self.out.extend_from_slice(head.as_bytes());
        self.out.extend_from_slice(body.as_bytes());
    }

    /// Bytes waiting to be written.
    pub fn buffered(&self) -> usize {
        self.out.len() - self.written
    }
}

impl<S: AsyncWrite + Unpin> WsIo<S> {
    /// Writes the buffer out, and gives it back once it is all written: an idle connection
    /// holds none.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.out.len() {
            let pending = &self.out[self.written..];
            match ready!(Pin::new(&mut self.inner).poll_write(cx, pending)) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.written += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        self.out = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WsIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// What tungstenite writes (pongs, closes, whole frames) is appended and goes out at the next
/// flush; it never waits here, so a frame is never split by one of ohd's.
impl<S: AsyncWrite + Unpin> AsyncWrite for WsIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_out(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_out(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn frames_every_length_class_and_gives_the_buffer_back() -> io::Result<()> {
        let mut io = WsIo::new(Vec::new());
        io.push_text("h", "i");
        io.push_text("", &"a".repeat(200));
        io.push_text("4", &"b".repeat(69_999));
        io.flush().await?;
        let out = &io.inner;
        assert_eq!(&out[..4], &[0x81, 2, b'h', b'i']);
        assert_eq!(&out[4..8], &[0x81, 126, 0, 200]);
        let big = 8 + 200;
        assert_eq!(&out[big..big + 2], &[0x81, 127]);
        assert_eq!(&out[big + 2..big + 10], &70_000u64.to_be_bytes());
        assert_eq!(out.len(), big + 10 + 70_000);
        assert_eq!(io.buffered(), 0);
        assert_eq!(io.out.capacity(), 0);
        Ok(())
    }

    /// A stream that takes at most 3 bytes per write.
    struct Trickle(Vec<u8>);

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(3);
            self.0.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_stream_taking_a_few_bytes_at_a_time_gets_every_byte_once() -> io::Result<()> {
        let mut io = WsIo::new(Trickle(Vec::new()));
        io.push_text("4", "hello");
        // What tungstenite writes (here a pong) is taken whole and goes after.
        io.write_all(b"\x8a\x00").await?;
        io.flush().await?;
        assert_eq!(io.inner.0, b"\x81\x064hello\x8a\x00");
        assert_eq!(io.buffered(), 0);
        Ok(())
    }

    #[tokio::test]
    async fn frames_read_back_with_tungstenite() -> Result<(), Box<dyn std::error::Error>> {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::protocol::Role;
        use tokio_tungstenite::{WebSocketStream, tungstenite::Message};
        let (server, client) = tokio::io::duplex(1 << 20);
        let mut server = WsIo::new(server);
        let texts = ["a".repeat(3), "é".repeat(100), "z".repeat(100_000)];
        for text in &texts {
            let mid = text.char_indices().nth(1).map_or(0, |(at, _)| at);
            let (head, body) = text.split_at(mid);
            server.push_text(head, body);
        }
        server.flush().await?;
        let mut client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        for text in &texts {
            match client.next().await {
                Some(Ok(Message::Text(got))) => assert_eq!(got.as_str(), text),
                other => return Err(format!("unexpected {other:?}").into()),
            }
        }
        Ok(())
    }
}
