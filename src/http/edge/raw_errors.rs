//! JSON bodies for the errors actix-http's HTTP/1 dispatcher answers by itself, before any
//! routing: `400` for a malformed request head, `431` for one over its size limit and `408`
//! when a new connection's first head does not arrive within `HTTP_HEAD_TIMEOUT_SECS`. The
//! dispatcher writes these with an empty body and offers no hook, so every connection's
//! stream is wrapped in [`JsonErrors`], which follows the responses written to it and rewrites
//! exactly those into `{"message":…,"error":…}` with the right `Content-Length`.
//!
//! A dispatcher-made answer is told from the App's by its head: status 400, 408 or 431,
//! `content-length: 0`, and neither `content-type` nor `x-request-id` (every App answer has an
//! id, and every App error is JSON). To find each head, [`Rewriter`] follows HTTP/1 framing
//! (`Content-Length`, chunked, no body for 1xx/204/304). A response whose framing it cannot
//! follow (read until close, an upgrade, anything unexpected) ends rewriting on that
//! connection: from there bytes pass unchanged, so a wrong guess can only leave an error
//! empty, never alter another answer. An answer to HEAD has no body whatever its
//! `Content-Length` says: the App tells the stream which requests were HEAD ([`Requests`]).
//!
//! The same stream also bounds the heads that follow a connection's first request, which
//! actix-http's head timer does not cover ([`JsonErrors`]). Whether a request is in the App
//! comes from the App itself ([`track_requests`]), never from parsing the bytes read: a
//! blank line before a request or inside a body must not be mistaken for a head's end.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::http::error::{ErrorBody, ErrorCode};

/// The longest response head followed; a longer one ends rewriting on its connection.
const MAX_HEAD: usize = 64 * 1024;
/// Output kept between writes is released past this size.
const RETAINED_OUTPUT: usize = 64 * 1024;

/// The JSON body for a dispatcher-made error of this status, if it is one of those rewritten.
fn json_body(status: u16) -> Option<Vec<u8>> {
    let (message, error) = match status {
        400 => ("the request could not be read", ErrorCode::BadRequest),
        408 => (
            "the request did not arrive in time",
            ErrorCode::RequestTimeout,
        ),
        431 => (
            "the request headers are too large",
            ErrorCode::HeadersTooLarge,
        ),
        _ => return None,
    };
    serde_json::to_vec(&ErrorBody { message, error }).ok()
}

/// Where in the response stream the next byte falls.
#[derive(Debug)]
enum State {
    /// A response head, `held` so far, of which the first `sent` bytes already went out.
    Head {
        held: Vec<u8>,
        sent: usize,
    },
    /// A body with this many bytes to go.
    Body(u64),
    Chunked(Chunk),
    /// Framing no longer followed: everything passes unchanged.
    Passthrough,
}

/// Position inside a chunked body (RFC 9112 §7.1).
#[derive(Debug, Clone, Copy)]
enum Chunk {
    Size {
        size: u64,
        digits: u8,
    },
    Extension {
        size: u64,
    },
    SizeLf {
        size: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// Trailer section; `empty` while the current line has no character yet.
    Trailer {
        empty: bool,
    },
    TrailerLf {
        empty: bool,
    },
}

/// Follows the responses written on one connection and rewrites the dispatcher's own errors.
#[derive(Debug)]
pub struct Rewriter {
    state: State,
    /// Final (non-1xx) answers written to their end so far.
    answered: u64,
    /// The requests the App took, whose answers come in the same order.
    requests: Rc<Requests>,
}

/// One connection's requests as the App sees them ([`track_requests`]), shared with its
/// stream (a worker is one thread, as is the connection's task).
#[derive(Debug, Default)]
pub struct Requests {
    started: Cell<u64>,
    finished: Cell<u64>,
    /// For each request whose answer is not yet written: whether it is HEAD.
    head: RefCell<VecDeque<bool>>,
}

impl Requests {
    fn start(&self, head: bool) {
        self.started.set(self.started.get() + 1);
        self.head.borrow_mut().push_back(head);
    }

    fn finish(&self) {
        self.finished.set(self.finished.get() + 1);
    }

    /// Whether the next answer written is to a HEAD request (no body follows it).
    fn next_answer_is_to_head(&self) -> bool {
        self.head.borrow_mut().pop_front().unwrap_or(false)
    }
}

impl Default for Rewriter {
    fn default() -> Self {
        Self::new()
    }
}

impl Rewriter {
    pub fn new() -> Self {
        Self::with(Rc::default())
    }

    fn with(requests: Rc<Requests>) -> Self {
        Self {
            state: next_head(),
            answered: 0,
            requests,
        }
    }

    /// Between two answers: nothing of a response is on its way out.
    fn between_answers(&self) -> bool {
        matches!(&self.state, State::Head { held, .. } if held.is_empty())
    }

    /// Takes the next bytes written to the connection and appends what goes on the wire to
    /// `out`. A response head is held back until it is complete (the dispatcher writes each
    /// one whole, so in practice within the same write).
    pub fn write(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            match &mut self.state {
                State::Passthrough => {
                    out.extend_from_slice(input);
                    return;
                }
                State::Body(remaining) => {
                    pass_through(remaining, &mut input, out);
                    if *remaining == 0 {
                        self.state = next_head();
                        self.answered += 1;
                    }
                }
                State::Chunked(chunk) => {
                    if let Chunk::Data(remaining) = chunk {
                        pass_through(remaining, &mut input, out);
                        if *remaining == 0 {
                            *chunk = Chunk::DataCr;
                        }
                        continue;
                    }
                    let byte = input[0];
                    out.push(byte);
                    input = &input[1..];
                    self.state = match next_chunk(*chunk, byte) {
                        Some(Some(next)) => State::Chunked(next),
                        Some(None) => {
                            self.answered += 1;
                            next_head()
                        }
                        None => State::Passthrough,
                    };
                }
                State::Head { held, sent } => {
                    let start = held.len();
                    held.extend_from_slice(input);
                    // The end of the head may straddle the bytes held before.
                    let from = start.saturating_sub(3);
                    let end = held[from..]
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map(|at| from + at + 4);
                    let Some(end) = end else {
                        if !plausible_head(held) || held.len() > MAX_HEAD {
                            out.extend_from_slice(&held[*sent..]);
                            self.state = State::Passthrough;
                        }
                        return;
                    };
                    // What followed the head goes round the loop again.
                    input = &input[end - start..];
                    held.truncate(end);
                    let (held, sent) = (std::mem::take(held), *sent);
                    self.state = self.finish_head(&held, sent, out);
                }
            }
        }
    }

    /// How many final answers have been written to their end (counting stops where framing
    /// is no longer followed).
    pub fn answered(&self) -> u64 {
        self.answered
    }

    /// Sends whatever is held back (a flush must not keep bytes the dispatcher has written);
    /// a head sent partly this way is followed but no longer rewritten.
    pub fn flush(&mut self, out: &mut Vec<u8>) {
        if let State::Head { held, sent } = &mut self.state {
            out.extend_from_slice(&held[*sent..]);
            *sent = held.len();
        }
    }

    /// Emits a complete head, rewritten when it is a dispatcher-made error, and says what
    /// follows it.
    fn finish_head(&mut self, head: &[u8], sent: usize, out: &mut Vec<u8>) -> State {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(_)) = response.parse(head) else {
            out.extend_from_slice(&head[sent..]);
            return State::Passthrough;
        };
        let status = response.code.unwrap_or(0);
        let header = |name: &str| {
            let mut values = response
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value);
            let first = values.next();
            match values.next() {
                Some(_) => Err(()),
                None => Ok(first),
            }
        };
        let (Ok(length), Ok(coding), Ok(content_type), Ok(request_id)) = (
            header("content-length"),
            header("transfer-encoding"),
            header("content-type"),
            header("x-request-id"),
        ) else {
            out.extend_from_slice(&head[sent..]);
            return State::Passthrough;
        };
        let length = match length.map(|v| std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok()) {
            Some(None) => {
                out.extend_from_slice(&head[sent..]);
                return State::Passthrough;
            }
            Some(Some(n)) => Some(n),
            None => None,
        };

        let dispatcher_made = length == Some(0)
            && coding.is_none()
            && content_type.is_none()
            && request_id.is_none()
            && sent == 0;
        if let (true, Some(body)) = (dispatcher_made, json_body(status)) {
            let line_end = head
                .windows(2)
                .position(|w| w == b"\r\n")
                .unwrap_or(head.len());
            out.extend_from_slice(&head[..line_end + 2]);
            for h in response.headers.iter().filter(|h| {
                !["content-length", "connection"]
                    .iter()
                    .any(|n| h.name.eq_ignore_ascii_case(n))
            }) {
                out.extend_from_slice(h.name.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(h.value);
                out.extend_from_slice(b"\r\n");
            }
            // The dispatcher closes the connection after each of these.
            out.extend_from_slice(b"content-type: application/json\r\nconnection: close\r\n");
            out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
            out.extend_from_slice(&body);
            return State::Passthrough;
        }

        out.extend_from_slice(&head[sent..]);
        if status >= 200 && self.requests.next_answer_is_to_head() {
            self.answered += 1;
            return next_head();
        }
        match (status, coding, length) {
            // Switching protocols: not HTTP/1 any more.
            (101, _, _) => State::Passthrough,
            (100..=199, _, _) => next_head(),
            (204 | 304, _, _) => {
                self.answered += 1;
                next_head()
            }
            (_, Some(coding), None) if is_chunked(coding) => {
                State::Chunked(Chunk::Size { size: 0, digits: 0 })
            }
            (_, None, Some(0)) => {
                self.answered += 1;
                next_head()
            }
            (_, None, Some(n)) => State::Body(n),
            // Read until close, or a framing not followed.
            _ => State::Passthrough,
        }
    }
}

fn next_head() -> State {
    State::Head {
        held: Vec::new(),
        sent: 0,
    }
}

/// Whether the bytes held could still begin a status line.
fn plausible_head(held: &[u8]) -> bool {
    let prefix = b"HTTP/1.";
    let n = held.len().min(prefix.len());
    held[..n] == prefix[..n]
}

/// `chunked` is the last transfer coding.
fn is_chunked(coding: &[u8]) -> bool {
    coding
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// The chunk state after `byte`: `Some(None)` at the end of the body, `None` when the bytes are
/// not chunked framing after all.
fn next_chunk(chunk: Chunk, byte: u8) -> Option<Option<Chunk>> {
    let next = match (chunk, byte) {
        (Chunk::Size { size, digits }, b) if b.is_ascii_hexdigit() => {
            if digits >= 15 {
                return None;
            }
            let digit = (b as char).to_digit(16)?;
            Chunk::Size {
                size: size * 16 + u64::from(digit),
                digits: digits + 1,
            }
        }
        (Chunk::Size { size, digits }, b';' | b' ' | b'\t') if digits > 0 => {
            Chunk::Extension { size }
        }
        (Chunk::Size { size, digits }, b'\r') if digits > 0 => Chunk::SizeLf { size },
        (Chunk::Extension { size }, b'\r') => Chunk::SizeLf { size },
        (Chunk::Extension { size }, b) if b != b'\n' => Chunk::Extension { size },
        (Chunk::SizeLf { size: 0 }, b'\n') => Chunk::Trailer { empty: true },
        (Chunk::SizeLf { size }, b'\n') => Chunk::Data(size),
        (Chunk::DataCr, b'\r') => Chunk::DataLf,
        (Chunk::DataLf, b'\n') => Chunk::Size { size: 0, digits: 0 },
        (Chunk::Trailer { empty }, b'\r') => Chunk::TrailerLf { empty },
        (Chunk::Trailer { .. }, b) if b != b'\n' => Chunk::Trailer { empty: false },
        (Chunk::TrailerLf { empty: true }, b'\n') => return Some(None),
        (Chunk::TrailerLf { empty: false }, b'\n') => Chunk::Trailer { empty: true },
        _ => return None,
    };
    Some(Some(next))
}

/// A connection's stream with the dispatcher's own errors made JSON on the way out. Reads pass
/// through, and bound the time a request head may take after the first: actix-http's head
/// timer covers only a connection's first request, so once the App has answered every request
/// it took, the next head must reach it within `HTTP_HEAD_TIMEOUT_SECS` of its first byte
/// (idle keep-alive time does not count; a byte read while a request was in the App counts
/// from when that request is answered), else the answer is `408 request_timeout` (when no
/// answer is on its way out) and the connection ends.
pub struct JsonErrors<T> {
    io: T,
    rewriter: Rewriter,
    /// Rewritten bytes not yet accepted by `io`, from `written` on.
    out: Vec<u8>,
    written: usize,
    head_timeout: Duration,
    /// `started` as last seen: a change means the App took a request.
    last_started: u64,
    /// Bytes were read since the App last took a request.
    read_since_start: bool,
    /// Running while a head is arriving with every earlier request answered.
    head_deadline: Option<Pin<Box<Sleep>>>,
    /// The deadline passed: reading has ended.
    timed_out: bool,
}

impl<T> JsonErrors<T> {
    /// What the App's [`track_requests`] reports to, put on the connection by `startup`
    /// (actix's `on_connect_ext`).
    pub fn requests(&self) -> Rc<Requests> {
        self.rewriter.requests.clone()
    }

    pub fn new(io: T, head_timeout: Duration) -> Self {
        Self {
            io,
            rewriter: Rewriter::new(),
            out: Vec::new(),
            written: 0,
            head_timeout,
            last_started: 0,
            read_since_start: false,
            head_deadline: None,
            timed_out: false,
        }
    }
}

impl<T: AsyncWrite + Unpin> JsonErrors<T> {
    /// Writes out what the rewriter produced; ready once all of it is accepted.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.out.len() {
            match ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.written..])) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.written += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        self.out.clear();
        self.written = 0;
        if self.out.capacity() > RETAINED_OUTPUT {
            self.out = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for JsonErrors<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.timed_out {
            return Poll::Ready(Ok(()));
        }
        let requests = this.rewriter.requests.clone();
        let started = requests.started.get();
        if started != this.last_started {
            // The App took a request: the head being timed has arrived.
            this.last_started = started;
            this.read_since_start = false;
            this.head_deadline = None;
        }
        let idle = started > 0 && started == requests.finished.get();
        // The deadline first: a head that trickles in always has another byte ready.
        if let Some(deadline) = &mut this.head_deadline {
            if deadline.as_mut().poll(cx).is_ready() {
                // Reading ends (end of stream) and the dispatcher closes the connection. The
                // 408 goes out alone, when nothing of an answer is on its way out.
                this.timed_out = true;
                this.head_deadline = None;
                if !this.rewriter.between_answers() {
                    return Poll::Ready(Ok(()));
                }
                let body = json_body(408).unwrap_or_default();
                this.out.extend_from_slice(
                    format!(
                        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n\
                         connection: close\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    )
                    .as_bytes(),
                );
                this.out.extend_from_slice(&body);
                if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                    return Poll::Ready(Err(e));
                }
                return Poll::Ready(Ok(()));
            }
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.read_since_start = true;
        }
        // The first head is actix-http's to time (from when the connection opened).
        if idle && this.read_since_start && this.head_deadline.is_none() {
            let mut deadline = Box::pin(tokio::time::sleep(this.head_timeout));
            // Polled once so that it wakes this task even if no other byte ever comes.
            let _ = deadline.as_mut().poll(cx);
            this.head_deadline = Some(deadline);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonErrors<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        this.rewriter.write(buf, &mut this.out);
        // Accepted either way; what `io` does not take now goes out on the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        this.rewriter.flush(&mut this.out);
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Middleware, outermost: tells the connection's stream ([`Requests`]) when the App takes a
/// request and when it has answered it.
pub(crate) fn track_requests<S, B>(
    req: ServiceRequest,
    srv: &S,
) -> impl Future<Output = Result<ServiceResponse<B>, actix_web::Error>>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    let requests = req.conn_data::<Rc<Requests>>().cloned();
    if let Some(requests) = &requests {
        requests.start(req.method() == Method::HEAD);
    }
    let call = srv.call(req);
    async move {
        let res = call.await;
        if let Some(requests) = requests {
            requests.finish();
        }
        res
    }
}

/// Copies up to `remaining` bytes of a body from `input` to `out` unchanged,
/// and counts them off.
fn pass_through(remaining: &mut u64, input: &mut &[u8], out: &mut Vec<u8>) {
    let n = usize::try_from(*remaining)
        .unwrap_or(usize::MAX)
        .min(input.len());
    out.extend_from_slice(&input[..n]);
    *input = &input[n..];
    *remaining -= n as u64;
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "date: Sat, 05 Dec 2026 10:00:00 GMT\r\n";

    fn dispatcher_error(status: &str) -> String {
        format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n{DATE}\r\n")
    }

    fn app_answer(body: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: application/json\r\n\
             x-request-id: abc\r\n{DATE}\r\n{body}",
            body.len()
        )
    }

    /// The wire bytes for `input` written in pieces of `piece` bytes, flushing after each.
    fn rewrite(input: &str, piece: usize, flush: bool) -> String {
        let mut rewriter = Rewriter::new();
        let mut out = Vec::new();
        for chunk in input.as_bytes().chunks(piece) {
            rewriter.write(chunk, &mut out);
            if flush {
                rewriter.flush(&mut out);
            }
        }
        rewriter.flush(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn json_error(status: &str, code: &str, message: &str) -> String {
        let body = format!(r#"{{"message":"{message}","error":"{code}"}}"#);
        format!(
            "HTTP/1.1 {status}\r\n{DATE}content-type: application/json\r\nconnection: close\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    #[test]
    fn each_dispatcher_error_gets_its_json_body_and_length() {
        for (status, code, message) in [
            (
                "400 Bad Request",
                "bad_request",
                "the request could not be read",
            ),
            (
                "408 Request Timeout",
                "request_timeout",
                "the request did not arrive in time",
            ),
            (
                "431 Request Header Fields Too Large",
                "headers_too_large",
                "the request headers are too large",
            ),
        ] {
            assert_eq!(
                rewrite(&dispatcher_error(status), 4096, false),
                json_error(status, code, message)
            );
        }
    }

    #[test]
    fn a_head_split_across_writes_is_rewritten_whole_at_every_split() {
        let input = dispatcher_error("400 Bad Request");
        let expected = json_error(
            "400 Bad Request",
            "bad_request",
            "the request could not be read",
        );
        for piece in 1..input.len() {
            assert_eq!(rewrite(&input, piece, false), expected, "pieces of {piece}");
        }
    }

    #[test]
    fn an_error_pipelined_after_an_answer_in_one_buffer_is_rewritten() {
        let answers = app_answer(r#"{"status":"ok"}"#) + &app_answer("{}");
        let input = answers.clone() + &dispatcher_error("431 Request Header Fields Too Large");

        for piece in [1, 7, 64, input.len()] {
            assert_eq!(
                rewrite(&input, piece, false),
                answers.clone()
                    + &json_error(
                        "431 Request Header Fields Too Large",
                        "headers_too_large",
                        "the request headers are too large"
                    ),
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn a_body_that_looks_like_an_error_head_is_never_rewritten() {
        let fake = dispatcher_error("400 Bad Request");
        let input = app_answer(&fake) + &app_answer(&fake);
        for piece in [1, 5, input.len()] {
            assert_eq!(rewrite(&input, piece, false), input, "pieces of {piece}");
        }
    }

    #[test]
    fn chunked_bodies_are_followed_to_the_next_head() {
        let chunked = format!(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-request-id: a\r\n{DATE}\r\n\
             5\r\nhello\r\n1A;ext=1\r\n{}\r\n0\r\nx-trailer: 1\r\n\r\n",
            dispatcher_error("400 Bad Request").get(..26).unwrap()
        );
        let input = chunked.clone() + &dispatcher_error("400 Bad Request");
        let expected = chunked
            + &json_error(
                "400 Bad Request",
                "bad_request",
                "the request could not be read",
            );
        for piece in [1, 3, input.len()] {
            assert_eq!(rewrite(&input, piece, false), expected, "pieces of {piece}");
        }
    }

    #[test]
    fn answers_without_a_body_are_followed_too() {
        let none =
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nx-request-id: a\r\n\r\n\
                    HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\nx-request-id: b\r\n\r\n"
                .to_string();
        let input = none.clone() + &dispatcher_error("400 Bad Request");
        assert_eq!(
            rewrite(&input, 2, false),
            none + &json_error(
                "400 Bad Request",
                "bad_request",
                "the request could not be read"
            )
        );
    }

    #[test]
    fn app_errors_and_unknown_framing_pass_unchanged() {
        let app_error = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nx-request-id: a\r\n{DATE}\r\n"
        );
        assert_eq!(rewrite(&app_error, 3, false), app_error);
        // No length: read until close, so nothing after it is a head.
        let until_close =
            format!("HTTP/1.0 200 OK\r\n{DATE}\r\nbody") + &dispatcher_error("400 Bad Request");
        assert_eq!(rewrite(&until_close, 3, false), until_close);
        let not_http = "garbage\r\n\r\n".to_string() + &dispatcher_error("400 Bad Request");
        assert_eq!(rewrite(&not_http, 1, false), not_http);
        let other_status = dispatcher_error("500 Internal Server Error");
        assert_eq!(rewrite(&other_status, 9, false), other_status);
    }

    #[test]
    fn only_final_answers_written_to_their_end_are_counted() {
        let mut rewriter = Rewriter::new();
        let mut out = Vec::new();
        rewriter.write(b"HTTP/1.1 100 Continue\r\n\r\n", &mut out);
        assert_eq!(rewriter.answered(), 0);
        let answer = app_answer("{}");
        rewriter.write(&answer.as_bytes()[..answer.len() - 1], &mut out);
        assert_eq!(rewriter.answered(), 0);
        rewriter.write(&answer.as_bytes()[answer.len() - 1..], &mut out);
        rewriter.write(b"HTTP/1.1 204 No Content\r\n\r\n", &mut out);
        assert_eq!(rewriter.answered(), 2);
    }

    #[test]
    fn a_flush_in_the_middle_of_a_head_sends_it_unchanged_and_framing_goes_on() {
        let input = dispatcher_error("400 Bad Request") + "ignored";
        assert_eq!(rewrite(&input, 10, true), input);
        let answers = app_answer("{}") + &dispatcher_error("408 Request Timeout");
        let mut rewriter = Rewriter::new();
        let mut out = Vec::new();
        let first = app_answer("{}");
        rewriter.write(&first.as_bytes()[..20], &mut out);
        rewriter.flush(&mut out);
        rewriter.write(&answers.as_bytes()[20..], &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            first
                + &json_error(
                    "408 Request Timeout",
                    "request_timeout",
                    "the request did not arrive in time"
                )
        );
    }
}
