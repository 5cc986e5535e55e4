//! `Sniffed`: refuses request heads that frame their body two ways.
//!
//! hyper follows RFC 9112 §6.3 for a request with both `Content-Length` and
//! `Transfer-Encoding`: it drops the length, reads the chunked body and
//! closes the connection afterwards. That is safe, but such a request is a
//! request-smuggling probe, and cutover refuses it outright. hyper does not
//! tell the service the length was there, so this wrapper watches the bytes
//! hyper reads: it tracks HTTP/1 message boundaries (heads, fixed-length and
//! chunked bodies) and, on an ambiguous head, fails the read before hyper
//! has the whole head, so no request is ever dispatched and the connection
//! closes.
//!
//! It costs one head parse per request (a few hundred nanoseconds). It
//! stands aside for HTTP/2 and for anything it cannot follow (a malformed
//! chunk size, an upgrade): hyper rejects or closes those on its own.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Heads larger than this are left to hyper's own limit (it is lower).
const MAX_HEAD: usize = 512 * 1024;
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

#[derive(Debug)]
enum State {
    /// Collecting a request head.
    Head,
    /// Skipping a fixed-length body.
    Body(u64),
    Chunked(Chunk),
    /// HTTP/2, an upgrade, or something hyper will reject by itself.
    Off,
}

#[derive(Debug)]
enum Chunk {
    /// Reading a hex chunk size (and ignoring extensions) up to CRLF.
    Size {
        size: u64,
        digits: u8,
        ext: bool,
    },
    /// `\n` after a size line.
    SizeLf {
        size: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// After the last chunk: trailer lines until an empty line. `len` is
    /// the length of the current line so far.
    Trailer {
        len: usize,
        cr: bool,
    },
}

pub struct Sniffed<T> {
    inner: T,
    state: State,
    head: Vec<u8>,
}

impl<T> Sniffed<T> {
    pub fn new(inner: T) -> Sniffed<T> {
        Sniffed {
            inner,
            state: State::Head,
            head: Vec::new(),
        }
    }

    /// For a connection already known to be HTTP/2 (ALPN `h2`).
    pub fn passthrough(inner: T) -> Sniffed<T> {
        Sniffed {
            inner,
            state: State::Off,
            head: Vec::new(),
        }
    }

    /// Feed bytes hyper is about to read. `Err` on an ambiguous head.
    fn feed(&mut self, mut bytes: &[u8]) -> Result<(), ()> {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Off => return Ok(()),
                State::Body(left) => {
                    let take = (*left).min(bytes.len() as u64);
                    *left -= take;
                    bytes = &bytes[take as usize..];
                    if *left == 0 {
                        self.state = State::Head;
                    }
                }
                State::Head => {
                    if self.head.is_empty() {
                        // Empty lines before a request line are allowed.
                        let skip = bytes
                            .iter()
                            .take_while(|&&b| b == b'\r' || b == b'\n')
                            .count();
                        bytes = &bytes[skip..];
                        if bytes.is_empty() {
                            return Ok(());
                        }
                    }
                    let searched_from = self.head.len().saturating_sub(3);
                    self.head.extend_from_slice(bytes);
                    let Some(end) =
                        find_head_end(&self.head[searched_from..]).map(|e| e + searched_from)
                    else {
                        if self.head.starts_with(H2_PREFACE) || self.head.len() > MAX_HEAD {
                            self.state = State::Off;
                        }
                        return Ok(());
                    };
                    let consumed_here = end - (self.head.len() - bytes.len());
                    let next = classify(&self.head[..end])?;
                    self.head.clear();
                    self.state = next;
                    bytes = &bytes[consumed_here..];
                }
                State::Chunked(chunk) => {
                    let b = bytes[0];
                    let mut advance = 1;
                    let next = match *chunk {
                        Chunk::Size { size, digits, ext } => match b {
                            b'\r' => Some(Chunk::SizeLf { size }),
                            _ if ext => None,
                            b';' | b' ' | b'\t' => Some(Chunk::Size {
                                size,
                                digits,
                                ext: true,
                            }),
                            _ => match (b as char).to_digit(16) {
                                Some(d) if digits < 16 => Some(Chunk::Size {
                                    size: size * 16 + u64::from(d),
                                    digits: digits + 1,
                                    ext,
                                }),
                                _ => {
                                    self.state = State::Off;
                                    continue;
                                }
                            },
                        },
                        Chunk::SizeLf { size } => match (b, size) {
                            (b'\n', 0) => Some(Chunk::Trailer { len: 0, cr: false }),
                            (b'\n', n) => Some(Chunk::Data(n)),
                            _ => {
                                self.state = State::Off;
                                continue;
                            }
                        },
                        Chunk::Data(left) => {
                            let take = left.min(bytes.len() as u64);
                            advance = take as usize;
                            Some(if take == left {
                                Chunk::DataCr
                            } else {
                                Chunk::Data(left - take)
                            })
                        }
                        Chunk::DataCr => Some(Chunk::DataLf),
                        Chunk::DataLf => Some(Chunk::Size {
                            size: 0,
                            digits: 0,
                            ext: false,
                        }),
                        Chunk::Trailer { len, cr } => match b {
                            b'\r' => Some(Chunk::Trailer { len, cr: true }),
                            b'\n' if cr && len == 0 => {
                                self.state = State::Head;
                                bytes = &bytes[1..];
                                continue;
                            }
                            b'\n' => Some(Chunk::Trailer { len: 0, cr: false }),
                            _ => Some(Chunk::Trailer {
                                len: len + 1,
                                cr: false,
                            }),
                        },
                    };
                    if let Some(next) = next {
                        *chunk = next;
                    }
                    bytes = &bytes[advance..];
                }
            }
        }
        Ok(())
    }
}

/// Index just past the `\r\n\r\n` that ends a head.
fn find_head_end(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// What follows a complete head. `Err` for an ambiguous one.
fn classify(head: &[u8]) -> Result<State, ()> {
    if head.starts_with(H2_PREFACE) {
        return Ok(State::Off);
    }
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    if !matches!(req.parse(head), Ok(httparse::Status::Complete(_))) {
        // hyper will answer 400 and close.
        return Ok(State::Off);
    }
    let (mut length, mut te, mut upgrade) = (None, None, false);
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            length = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    if upgrade || req.method == Some("CONNECT") {
        return Ok(State::Off);
    }
    match (length, te) {
        (Some(_), Some(_)) => Err(()),
        (None, Some(te)) => {
            let chunked_last = te
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            Ok(if chunked_last {
                State::Chunked(Chunk::Size {
                    size: 0,
                    digits: 0,
                    ext: false,
                })
            } else {
                State::Off
            })
        }
        (Some(len), None) => match std::str::from_utf8(len)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
        {
            Some(0) => Ok(State::Head),
            Some(n) => Ok(State::Body(n)),
            None => Ok(State::Off),
        },
        (None, None) => Ok(State::Head),
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Sniffed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if matches!(this.state, State::Off) {
                    return Poll::Ready(Ok(()));
                }
                if this.feed(&buf.filled()[before..]).is_err() {
                    buf.set_filled(before);
                    tracing::debug!(
                        "refused a request with both Content-Length and Transfer-Encoding"
                    );
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "request has both Content-Length and Transfer-Encoding",
                    )));
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Sniffed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> Result<(), ()> {
        let mut s = Sniffed::new(());
        for c in chunks {
            s.feed(c)?;
        }
        Ok(())
    }

    #[test]
    fn refuses_both_framings_in_either_order() {
        assert!(
            run(&[b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"])
                .is_err()
        );
        assert!(
            run(&[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\ncontent-length: 4\r\n\r\n"])
                .is_err()
        );
    }

    #[test]
    fn follows_pipelined_and_split_messages() {
        // A fixed body that looks like a head, then a chunked body with a
        // smuggling-looking payload, then an ambiguous head: only the last
        // one is refused, and only once its head is complete.
        let body = b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let first = format!("POST /a HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len());
        let chunked = b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nx-trailer: 1\r\n\r\n";
        let mut s = Sniffed::new(());
        assert!(s.feed(first.as_bytes()).is_ok());
        for b in body.iter() {
            assert!(s.feed(std::slice::from_ref(b)).is_ok());
        }
        for piece in chunked.chunks(3) {
            assert!(s.feed(piece).is_ok());
        }
        assert!(
            s.feed(b"\r\nPOST /c HTTP/1.1\r\nContent-Length: 2\r\n")
                .is_ok()
        );
        assert!(s.feed(b"Transfer-Encoding: chunked\r\n\r").is_ok());
        assert!(s.feed(b"\n").is_err());
    }

    #[test]
    fn stands_aside_for_h2() {
        assert!(run(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"anything"]).is_ok());
    }
}
