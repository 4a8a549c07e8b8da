//! Problem documents for the answers the HTTP/1 codec gives on its own.
//!
//! A request actix-http cannot parse (a malformed request line or header, a bad
//! `Content-Length`, a non-UTF-8 path), a head larger than the header buffer, or a
//! head that does not arrive in time is answered by the codec before any of valet's
//! code runs: 400, 431 or 408 with an empty body. [`ProblemStream`] wraps each
//! connection and replaces exactly those answers, as they are written, with the
//! same status and an RFC 9457 problem document, so every answer valet gives is a
//! documented problem. Nothing is parsed on the way in, and only a connection's first
//! answer is looked at: a later write may be part of a body (a downloaded file may
//! hold any bytes), so it always passes as it is. The codec answers 408 only before
//! a first request, and a malformed request after earlier ones on a keep-alive
//! connection keeps the codec's bare 400.

use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::problem::{ApiError, ErrorCode};

/// A connection whose codec-made error answers are rewritten as problem documents.
pub struct ProblemStream<T> {
    io: T,
    /// Nothing has been written yet: the next write starts the first answer.
    fresh: bool,
    /// A replacement answer still being written, and how much of it is written.
    replacement: Option<(&'static [u8], usize)>,
}

impl<T> ProblemStream<T> {
    /// Wraps a freshly accepted connection.
    pub fn new(io: T) -> Self {
        Self {
            io,
            fresh: true,
            replacement: None,
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &T {
        &self.io
    }
}

impl<T: AsyncWrite + Unpin> ProblemStream<T> {
    /// Writes what is left of a replacement answer.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = self.replacement {
            if written == bytes.len() {
                self.replacement = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &bytes[written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.replacement = Some((bytes, written + n));
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ProblemStream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ProblemStream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        if this.fresh {
            if let Some(answer) = replacement_for(buf) {
                // The codec's answer is taken whole (it is written alone, before the
                // connection closes); what of ours cannot be written now is written
                // on the next write, flush or shutdown.
                this.fresh = false;
                this.replacement = Some((answer, 0));
                if let Poll::Ready(Err(e)) = this.poll_replacement(cx) {
                    return Poll::Ready(Err(e));
                }
                return Poll::Ready(Ok(buf.len()));
            }
        }
        let written = ready!(Pin::new(&mut this.io).poll_write(cx, buf))?;
        this.fresh &= written == 0;
        Poll::Ready(Ok(written))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// The problem answer replacing `written`, when it is one of the codec's own
/// bodiless 400, 408 or 431 answers (valet's own answers always carry a body and
/// a `Content-Type`).
fn replacement_for(written: &[u8]) -> Option<&'static [u8]> {
    // `HTTP/1.1 400 ` … : the codec writes the status line first.
    let status = written.strip_prefix(b"HTTP/1.")?.get(2..6)?;
    let answers = codec_answers();
    let answer = match status {
        b"400 " => &answers.bad_request,
        b"408 " => &answers.request_timeout,
        b"431 " => &answers.headers_too_large,
        _ => return None,
    };
    let end = written.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = &written[..end];
    let mut bodiless = false;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-type") {
            return None;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            bodiless = value == b"0";
        }
    }
    // Anything after the head is a body: not the codec's answer.
    (bodiless && written.len() == end + 4).then_some(answer.as_slice())
}

/// The three replacement answers, rendered once.
struct CodecAnswers {
    bad_request: Vec<u8>,
    request_timeout: Vec<u8>,
    headers_too_large: Vec<u8>,
}

fn codec_answers() -> &'static CodecAnswers {
    static ANSWERS: OnceLock<CodecAnswers> = OnceLock::new();
    ANSWERS.get_or_init(|| CodecAnswers {
        bad_request: render(ApiError::new(
            ErrorCode::InvalidRequest,
            "the request is not valid HTTP/1.1: a malformed request line, header or \
             Content-Length, or a path that is not UTF-8",
        )),
        request_timeout: render(ApiError::new(
            ErrorCode::RequestTimeout,
            "the request head did not arrive within server.request_head_timeout_secs",
        )),
        headers_too_large: render(ApiError::new(
            ErrorCode::HeadersTooLarge,
            "the request line and headers are larger than the server accepts",
        )),
    })
}

/// A whole HTTP/1.1 answer carrying `error`'s problem document; the connection
/// closes after it, as it does after the codec's own.
fn render(error: ApiError) -> Vec<u8> {
    let status = error.code().status();
    let body = error.problem_json();
    let mut answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/problem+json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("Error"),
        body.len(),
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_answers_are_replaced() {
        let bare = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\ndate: Mon, 07 Dec 2026 04:00:00 GMT\r\n\r\n";
        let answer = replacement_for(bare).map(|a| String::from_utf8_lossy(a).into_owned());
        let answer = answer.unwrap_or_default();
        assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(answer.contains("content-type: application/problem+json\r\n"));
        assert!(answer.contains("\"code\":\"invalid_request\""));
        let timeout = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n";
        assert!(replacement_for(timeout).is_some());
        let large = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        assert!(replacement_for(large).is_some());
    }

    const BARE_400: &[u8] =
        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

    async fn written_through(writes: &[&[u8]]) -> Vec<u8> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
        let mut stream = ProblemStream::new(ours);
        for write in writes {
            stream.write_all(write).await.unwrap_or_default();
        }
        stream.shutdown().await.unwrap_or_default();
        let mut seen = Vec::new();
        theirs.read_to_end(&mut seen).await.unwrap_or_default();
        seen
    }

    #[tokio::test]
    async fn only_the_first_answer_of_a_connection_is_rewritten() {
        let first = written_through(&[BARE_400]).await;
        assert_eq!(first, codec_answers().bad_request);
        // Later writes may be body bytes that happen to look like the codec's answer.
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 66\r\n\r\n";
        let later = written_through(&[head, BARE_400]).await;
        assert_eq!(later, [head.as_slice(), BARE_400].concat());
    }

    #[test]
    fn valet_answers_pass_through() {
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\ncontent-type: application/problem+json\r\n\r\n{}";
        assert!(replacement_for(ours).is_none());
        let typed_empty =
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: 0\r\n\r\n";
        assert!(replacement_for(typed_empty).is_none());
        assert!(replacement_for(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(replacement_for(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(replacement_for(b"HTTP/1.1 400 Bad").is_none());
        assert!(replacement_for(b"{\"a\":1}").is_none());
    }
}
