//! The HTTP/1.1 client side of an upstream connection, driven in the
//! request's own task, as Pingora's is.
//!
//! hyper's client connection needs a task of its own, two channels to it
//! (the request in, the response head out) and a third for the body, with
//! a wake-up across tasks at each. Here the request's task writes the head
//! and reads the answer itself: one socket, two buffers, no channel. What
//! hyper did for us and this module now owns is the response side of RFC
//! 9112: the head (parsed by `httparse`, values sliced from the read buffer
//! without a copy), the body's framing (§6.3), chunked decoding with
//! trailers, and whether the connection may carry another request.
//!
//! An answer this module cannot frame without guessing (a malformed head,
//! conflicting `Content-Length`s, a bad chunk) is an error, never a body:
//! the attempt fails before the commit point, or the client's stream is
//! cut so that it cannot pass as complete.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

use super::connect::Io;

/// Longest response head (and chunked trailer section) accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a response head, as hyper's default.
const MAX_HEADERS: usize = 100;
/// Longest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4096;
/// Room made in the read buffer before each read.
const READ_SIZE: usize = 16 * 1024;
/// Request bodies up to this size are copied after the head and leave in
/// one write; larger ones follow in a second.
const JOIN_BODY: usize = 16 * 1024;

/// Why an exchange on an HTTP/1 connection failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("upstream I/O: {0}")]
    Io(#[from] io::Error),
    #[error("the upstream closed the connection before a response")]
    Closed,
    #[error("the upstream closed the connection mid-response")]
    Truncated,
    #[error("malformed response head: {0}")]
    Head(&'static str),
    #[error("response head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("bad chunked framing: {0}")]
    Chunk(&'static str),
}

/// One HTTP/1.1 connection to an upstream, between requests or inside one.
pub struct Conn {
    io: Io,
    /// Bytes read and not yet handed out. Response data is split off it
    /// and frozen, so frames and header values share its allocations.
    read: BytesMut,
    /// The request head being written; its capacity is kept for the next.
    write: Vec<u8>,
    /// The last response's field names, for the next one.
    names: Names,
}

/// The field names of the last response head read on a connection, by
/// position, as sent and as parsed. An upstream sends the same names, in
/// the same order and case, in answer after answer, and
/// `HeaderName::from_bytes` (a lower-casing copy and a match against the
/// standard names) cost ~200 instructions a field: a name sent as the
/// last head sent the one at its position is that name again, cloned.
#[derive(Default)]
pub struct Names(Vec<(Box<[u8]>, HeaderName)>);

impl Names {
    /// Longest list kept: a head is rarely longer.
    const KEEP: usize = 32;

    fn name(&mut self, at: usize, raw: &[u8]) -> Result<HeaderName, Error> {
        if let Some((sent, name)) = self.0.get(at)
            && **sent == *raw
        {
            return Ok(name.clone());
        }
        let name = HeaderName::from_bytes(raw).map_err(|_| Error::Head("bad field name"))?;
        let known = (Box::from(raw), name.clone());
        if at < self.0.len() {
            self.0[at] = known;
        } else if at == self.0.len() && at < Names::KEEP {
            self.0.push(known);
        }
        Ok(name)
    }
}

/// A parsed response head and how its body is framed.
pub struct Head {
    pub parts: http::response::Parts,
    pub framing: Framing,
    /// The connection may carry another request after this body.
    pub keep_alive: bool,
}

/// How a response body ends (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes (zero for HEAD, 204 and 304).
    Length(u64),
    Chunked(Chunked),
    /// At the upstream's close: the connection is not reused.
    Close,
}

/// Where a chunked body's decoder stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunked {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailers,
}

/// What the decoder got out of the buffer.
#[derive(Debug)]
pub enum Decoded {
    Data(Bytes),
    /// The body is over, with its trailer fields if it had any.
    End(Option<HeaderMap>),
}

impl Conn {
    pub fn new(io: Io) -> Conn {
        Conn {
            io,
            read: BytesMut::new(),
            write: Vec::new(),
            names: Names::default(),
        }
    }

    /// Whether an idle connection can take a request: nothing unread, and
    /// the socket neither at EOF (the upstream closed it) nor holding bytes
    /// nobody asked for. A read that would block is the healthy answer.
    pub fn is_usable(&mut self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut byte = [MaybeUninit::uninit()];
        let mut buf = ReadBuf::uninit(&mut byte);
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut buf)
            .is_pending()
    }

    /// Back to the pool: give up the read buffer, whose allocation the last
    /// response's frames may still share, so an idle connection holds none.
    pub fn idle(&mut self) {
        self.read = BytesMut::new();
        if self.write.capacity() > JOIN_BODY {
            self.write = Vec::new();
        }
    }

    /// Write `req`: its head as the pool prepared it (origin-form target,
    /// `Host` set, no hop-by-hop fields), then its body. This module owns
    /// the framing, so any `Content-Length` or `Transfer-Encoding` in the
    /// head is replaced by the body's length.
    pub async fn write_request<B>(&mut self, req: &Request<B>, body: &[u8]) -> Result<(), Error> {
        encode_head(&mut self.write, req, body.len());
        if body.len() <= JOIN_BODY {
            self.write.extend_from_slice(body);
            self.io.write_all(&self.write).await?;
        } else {
            self.io.write_all(&self.write).await?;
            self.io.write_all(body).await?;
        }
        // TLS holds records until flushed; TCP's flush is free.
        self.io.flush().await?;
        Ok(())
    }

    /// Read the response head to `method`'s request, skipping interim
    /// (1xx) responses. On failure, also says whether no byte of an answer
    /// came back, the case where a request may be resent elsewhere because
    /// the upstream closed an idle connection as it arrived.
    pub async fn read_head(&mut self, method: &Method) -> Result<Head, (Error, bool)> {
        let mut answered = false;
        loop {
            if !self.read.is_empty() {
                answered = true;
                match parse_head(&mut self.read, method, &mut self.names) {
                    Ok(Some(head)) => return Ok(head),
                    Ok(None) if self.read.len() >= MAX_HEAD => {
                        return Err((Error::HeadTooLarge, false));
                    }
                    Ok(None) => {}
                    Err(e) => return Err((e, false)),
                }
            }
            match std::future::poll_fn(|cx| self.poll_fill(cx)).await {
                Ok(0) if answered => return Err((Error::Truncated, false)),
                Ok(0) => return Err((Error::Closed, true)),
                Ok(_) => {}
                Err(e) => return Err((Error::Io(e), !answered)),
            }
        }
    }

    /// Read more into the buffer: the number of bytes, 0 at EOF.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < READ_SIZE / 4 {
            self.read.reserve(READ_SIZE);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read)
    }

    /// The buffered bytes of the body being read.
    pub fn buffered(&mut self) -> &mut BytesMut {
        &mut self.read
    }
}

/// The request line and header fields, then the body's length, when it has
/// one or its method expects one (as hyper frames a known-length body).
fn encode_head<B>(dst: &mut Vec<u8>, req: &Request<B>, body_len: usize) {
    dst.clear();
    dst.extend_from_slice(req.method().as_str().as_bytes());
    dst.push(b' ');
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    dst.extend_from_slice(if target.is_empty() { "/" } else { target }.as_bytes());
    dst.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
            continue;
        }
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    let method = req.method();
    if body_len > 0
        || !(method == Method::GET || method == Method::HEAD || method == Method::CONNECT)
    {
        dst.extend_from_slice(b"content-length: ");
        dst.extend_from_slice(itoa::Buffer::new().format(body_len).as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    dst.extend_from_slice(b"\r\n");
}

/// Where one header field lies in the head's bytes.
#[derive(Clone, Copy, Default)]
struct Span {
    name: (u32, u32),
    value: (u32, u32),
}

/// Parse the response head at the start of `buf`, consuming it (and any
/// interim responses before it); `Ok(None)` until the head is complete.
/// `names` are the connection's last field names, and become this head's.
pub fn parse_head(
    buf: &mut BytesMut,
    method: &Method,
    names: &mut Names,
) -> Result<Option<Head>, Error> {
    loop {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut spans = [Span::default(); MAX_HEADERS];
        let mut res = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut res, buf, &mut slots)
        {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(Error::Head("too many fields")),
            Err(httparse::Error::Status) => return Err(Error::Head("bad status line")),
            Err(httparse::Error::Version) => return Err(Error::Head("not HTTP/1.x")),
            Err(_) => return Err(Error::Head("bad field")),
        };
        let code = res.code.unwrap_or(0);
        let status = StatusCode::from_u16(code).map_err(|_| Error::Head("bad status code"))?;
        let version = match res.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        if status.is_informational() {
            // A switch of protocols was never asked for; other interim
            // answers (100, 103) are skipped, as hyper does.
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(Error::Head("unrequested 101 Switching Protocols"));
            }
            buf.advance(len);
            continue;
        }

        let base = buf.as_ptr() as usize;
        let offset = |s: &[u8]| {
            let start = (s.as_ptr() as usize - base) as u32;
            (start, start + s.len() as u32)
        };
        let mut rules = Rules::default();
        for (span, field) in spans.iter_mut().zip(res.headers.iter()) {
            span.name = offset(field.name.as_bytes());
            span.value = offset(field.value);
            rules.see(field.name.as_bytes(), field.value)?;
        }
        let fields = res.headers.len();

        let head = buf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(fields);
        for (at, span) in spans[..fields].iter().enumerate() {
            let name = names.name(at, &head[span.name.0 as usize..span.name.1 as usize])?;
            let value = head.slice(span.value.0 as usize..span.value.1 as usize);
            let value = HeaderValue::from_maybe_shared(value)
                .map_err(|_| Error::Head("bad field value"))?;
            headers.append(name, value);
        }

        let (framing, framed_by_close) = rules.framing(method, status, version)?;
        let keep_alive = !framed_by_close
            && match version {
                Version::HTTP_11 => !rules.close,
                _ => rules.keep_alive && !rules.close,
            };
        let mut parts = http::Response::new(()).into_parts().0;
        parts.status = status;
        parts.version = version;
        parts.headers = headers;
        return Ok(Some(Head {
            parts,
            framing,
            keep_alive,
        }));
    }
}

/// What a head's framing fields say, gathered in the parse's one pass.
#[derive(Default)]
struct Rules {
    length: Option<u64>,
    /// `Transfer-Encoding` present, and whether its last coding is chunked.
    encoded: bool,
    chunked: bool,
    close: bool,
    keep_alive: bool,
}

impl Rules {
    fn see(&mut self, name: &[u8], value: &[u8]) -> Result<(), Error> {
        if name.eq_ignore_ascii_case(b"content-length") {
            // Repeated or listed values must all agree (RFC 9110 §8.6).
            for part in value.split(|&b| b == b',') {
                let n = parse_length(part.trim_ascii()).ok_or(Error::Head("bad Content-Length"))?;
                if self.length.is_some_and(|m| m != n) {
                    return Err(Error::Head("conflicting Content-Length"));
                }
                self.length = Some(n);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.encoded = true;
            // Only the last coding decides; a later field replaces it.
            let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
            self.chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                self.close |= token.eq_ignore_ascii_case(b"close");
                self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        Ok(())
    }

    /// The body's framing, and whether only the close can end it (or the
    /// message was framed two ways), so the connection is done after it.
    fn framing(
        &self,
        method: &Method,
        status: StatusCode,
        version: Version,
    ) -> Result<(Framing, bool), Error> {
        if method == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return Ok((Framing::Length(0), false));
        }
        if self.encoded {
            if version == Version::HTTP_10 {
                return Err(Error::Head("Transfer-Encoding in an HTTP/1.0 response"));
            }
            // Transfer-Encoding overrides Content-Length, and a message
            // with both ends its connection (RFC 9112 §6.3).
            return Ok(if self.chunked {
                (Framing::Chunked(Chunked::Size), self.length.is_some())
            } else {
                (Framing::Close, true)
            });
        }
        Ok(match self.length {
            Some(n) => (Framing::Length(n), false),
            None => (Framing::Close, true),
        })
    }
}

/// Decimal digits only: no sign, no spaces inside, no overflow.
fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

impl Framing {
    /// Take what the buffer holds of the body: data as it arrives, or the
    /// end. `Ok(None)`: more bytes are needed. A length body is over once
    /// it is `Length(0)`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, Error> {
        match self {
            Framing::Length(0) => Ok(Some(Decoded::End(None))),
            Framing::Length(left) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                *left -= n as u64;
                Ok(Some(Decoded::Data(buf.split_to(n).freeze())))
            }
            Framing::Chunked(state) => state.decode(buf),
            Framing::Close => Ok((!buf.is_empty()).then(|| Decoded::Data(buf.split().freeze()))),
        }
    }

    /// The upstream closed the connection: the end of a body that only the
    /// close ends, the truncation of any other.
    pub fn at_close(&self) -> Result<(), Error> {
        match self {
            Framing::Close | Framing::Length(0) => Ok(()),
            Framing::Length(_) | Framing::Chunked(_) => Err(Error::Truncated),
        }
    }
}

impl Chunked {
    /// Take what the buffer holds of a chunked body: data as it arrives, or
    /// the end. `Ok(None)`: more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, Error> {
        loop {
            match *self {
                Chunked::Size => {
                    let Some(eol) = buf.iter().position(|&b| b == b'\n') else {
                        if buf.len() > MAX_CHUNK_LINE {
                            return Err(Error::Chunk("chunk-size line too long"));
                        }
                        return Ok(None);
                    };
                    if eol > MAX_CHUNK_LINE {
                        return Err(Error::Chunk("chunk-size line too long"));
                    }
                    let size = chunk_size(&buf[..eol])?;
                    buf.advance(eol + 1);
                    *self = if size == 0 {
                        Chunked::Trailers
                    } else {
                        Chunked::Data(size)
                    };
                }
                Chunked::Data(left) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    *self = if left == 0 {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data(left)
                    };
                    return Ok(Some(Decoded::Data(data)));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Error::Chunk("no CRLF after chunk data"));
                    }
                    buf.advance(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers => {
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                        return Ok(Some(Decoded::End(None)));
                    }
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        if buf.len() > MAX_HEAD {
                            return Err(Error::Chunk("trailer section too large"));
                        }
                        return Ok(None);
                    };
                    if end + 4 > MAX_HEAD {
                        return Err(Error::Chunk("trailer section too large"));
                    }
                    let trailers = parse_trailers(&buf[..end + 4])?;
                    buf.advance(end + 4);
                    return Ok(Some(Decoded::End(Some(trailers))));
                }
            }
        }
    }
}

/// The hex size of a chunk-size line (without its LF), past any
/// extensions, which are ignored (RFC 9112 §7.1.1).
fn chunk_size(line: &[u8]) -> Result<u64, Error> {
    let line = line
        .strip_suffix(b"\r")
        .ok_or(Error::Chunk("chunk-size line without CRLF"))?;
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(Error::Chunk("no chunk size"));
    }
    if digits > 16 {
        return Err(Error::Chunk("chunk size overflows"));
    }
    let rest = &line[digits..];
    let rest = rest.trim_ascii_start();
    if !(rest.is_empty() || rest[0] == b';')
        || rest.iter().any(|&b| b.is_ascii_control() && b != b'\t')
    {
        return Err(Error::Chunk("bad chunk extension"));
    }
    let size = line[..digits].iter().fold(0u64, |n, &b| {
        let d = (b as char).to_digit(16).unwrap_or(0);
        (n << 4) | u64::from(d)
    });
    Ok(size)
}

/// The trailer section, `\r\n\r\n` included. Rare enough to copy.
fn parse_trailers(section: &[u8]) -> Result<HeaderMap, Error> {
    let mut fields = [httparse::EMPTY_HEADER; 32];
    let parsed = match httparse::parse_headers(section, &mut fields) {
        Ok(httparse::Status::Complete((_, parsed))) => parsed,
        _ => return Err(Error::Chunk("bad trailer section")),
    };
    let mut map = HeaderMap::with_capacity(parsed.len());
    for field in parsed {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| Error::Chunk("bad trailer"))?;
        let value =
            HeaderValue::from_bytes(field.value).map_err(|_| Error::Chunk("bad trailer"))?;
        map.append(name, value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8], method: &Method) -> Result<Option<Head>, Error> {
        parse_head(&mut BytesMut::from(bytes), method, &mut Names::default())
    }

    #[test]
    fn names_from_the_last_head_read_as_parsed_afresh() {
        let heads: [&[u8]; 5] = [
            b"HTTP/1.1 200 OK\r\nServer: a\r\nDate: b\r\nX-Trace: c\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nSERVER: a\r\nx-trace: c\r\nDate: b\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nServer: a\r\nDate: b\r\nX-Tracf: c\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nServe: a\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nServer: a\r\nD@te: b\r\n\r\n",
        ];
        let fields = |bytes: &[u8], names: &mut Names| {
            parse_head(&mut BytesMut::from(bytes), &Method::POST, names).map(|head| {
                head.map(|h| {
                    h.parts
                        .headers
                        .iter()
                        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                        .collect::<Vec<_>>()
                })
            })
        };
        for first in heads {
            for then in heads {
                let mut names = Names::default();
                let _ = fields(first, &mut names);
                let warm = fields(then, &mut names);
                let cold = fields(then, &mut Names::default());
                assert_eq!(format!("{warm:?}"), format!("{cold:?}"));
            }
        }
    }

    fn head(bytes: &[u8]) -> Head {
        match parse(bytes, &Method::POST) {
            Ok(Some(head)) => head,
            Ok(None) => panic!("incomplete: {}", String::from_utf8_lossy(bytes)),
            Err(e) => panic!("refused: {e}: {}", String::from_utf8_lossy(bytes)),
        }
    }

    fn refused(bytes: &[u8]) -> Error {
        match parse(bytes, &Method::POST) {
            Err(e) => e,
            Ok(_) => panic!("accepted: {}", String::from_utf8_lossy(bytes)),
        }
    }

    #[test]
    fn a_head_parses_once_complete_and_leaves_the_body() {
        let whole = b"HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 5\r\n\r\nhello";
        let mut buf = BytesMut::new();
        for (i, &b) in whole.iter().enumerate() {
            buf.extend_from_slice(&[b]);
            let parsed =
                parse_head(&mut buf, &Method::POST, &mut Names::default()).expect("no error");
            let end = whole.len() - 5;
            if i + 1 < end {
                assert!(parsed.is_none(), "complete after {} bytes", i + 1);
                continue;
            }
            let head = parsed.expect("complete at the blank line");
            assert_eq!(i + 1, end);
            assert_eq!(head.parts.status, StatusCode::CREATED);
            assert_eq!(head.parts.version, Version::HTTP_11);
            assert_eq!(head.parts.headers["content-type"], "text/plain");
            let both: Vec<_> = head.parts.headers.get_all("x-a").iter().collect();
            assert_eq!(both, ["1", "2"]);
            assert_eq!(head.framing, Framing::Length(5));
            assert!(head.keep_alive);
            assert!(
                buf.is_empty(),
                "the head is consumed, the body is not read yet"
            );
            break;
        }
    }

    #[test]
    fn interim_answers_are_skipped_and_a_switch_is_refused() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"[..],
        );
        let head = parse_head(&mut buf, &Method::POST, &mut Names::default())
            .expect("parsed")
            .expect("complete");
        assert_eq!(head.parts.status, StatusCode::OK);
        assert!(!head.parts.headers.contains_key("link"));
        // An interim answer alone consumes itself and waits for the final.
        let mut buf = BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2"[..]);
        assert!(
            parse_head(&mut buf, &Method::POST, &mut Names::default())
                .expect("ok")
                .is_none()
        );
        assert_eq!(&buf[..], b"HTTP/1.1 2");
        assert!(matches!(
            refused(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"),
            Error::Head(_)
        ));
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let cases: &[(&[u8], Framing, bool)] = &[
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n",
                Framing::Length(7),
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\nContent-Length: 7\r\n\r\n",
                Framing::Length(7),
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Framing::Chunked(Chunked::Size),
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n",
                Framing::Chunked(Chunked::Size),
                true,
            ),
            // Both framings: chunked wins, and the connection ends after.
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                Framing::Chunked(Chunked::Size),
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                Framing::Close,
                false,
            ),
            (b"HTTP/1.1 200 OK\r\n\r\n", Framing::Close, false),
            (
                b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n",
                Framing::Length(0),
                true,
            ),
            (
                b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
                Framing::Length(0),
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\n",
                Framing::Length(4),
                false,
            ),
            (
                b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\n",
                Framing::Length(4),
                false,
            ),
            (
                b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\nConnection: Keep-Alive\r\n\r\n",
                Framing::Length(4),
                true,
            ),
        ];
        for (bytes, framing, keep_alive) in cases {
            let head = head(bytes);
            let text = String::from_utf8_lossy(bytes);
            assert_eq!(head.framing, *framing, "{text}");
            assert_eq!(head.keep_alive, *keep_alive, "{text}");
        }
        // A HEAD request's answer has no body whatever its fields say.
        let head = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n",
            &Method::HEAD,
        )
        .expect("ok")
        .expect("complete");
        assert_eq!(head.framing, Framing::Length(0));
        assert_eq!(head.parts.headers["content-length"], "50");
    }

    #[test]
    fn heads_that_cannot_be_framed_without_guessing_are_refused() {
        let heads: &[&[u8]] = &[
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5 5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/2 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: a\x01b\r\n\r\n",
        ];
        for bytes in heads {
            assert!(
                matches!(refused(bytes), Error::Head(_)),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(refused(&many), Error::Head(_)));
    }

    /// Decode `body` fed in pieces of `step` bytes: the data and the end.
    fn decode_in_steps(body: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>), Error> {
        let mut state = Chunked::Size;
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        for piece in body.chunks(step) {
            buf.extend_from_slice(piece);
            while let Some(decoded) = state.decode(&mut buf)? {
                match decoded {
                    Decoded::Data(d) => data.extend_from_slice(&d),
                    Decoded::End(trailers) => {
                        assert!(buf.is_empty(), "nothing after the end in these cases");
                        return Ok((data, trailers));
                    }
                }
            }
        }
        Err(Error::Truncated)
    }

    #[test]
    fn chunked_bodies_decode_the_same_however_they_arrive() {
        let body = b"5\r\nhello\r\n6;name=\"v\"\r\n world\r\n000\r\n\r\n";
        for step in 1..=body.len() {
            let (data, trailers) = decode_in_steps(body, step).expect("decodes");
            assert_eq!(data, b"hello world", "step {step}");
            assert!(trailers.is_none());
        }
        let body = b"3\r\nabc\r\n0\r\nX-Checksum: 42\r\nX-More: a b\r\n\r\n";
        for step in 1..=body.len() {
            let (data, trailers) = decode_in_steps(body, step).expect("decodes");
            assert_eq!(data, b"abc");
            let trailers = trailers.expect("trailers");
            assert_eq!(trailers["x-checksum"], "42", "step {step}");
            assert_eq!(trailers["x-more"], "a b");
        }
    }

    #[test]
    fn bad_chunked_framing_is_an_error() {
        let bodies: &[&[u8]] = &[
            b"5\r\nhelloXY0\r\n\r\n",
            b"z\r\n",
            b"\r\n",
            b"5\n hello\r\n",
            b"5 x\r\nhello\r\n",
            b"11111111111111111\r\n",
            b"0\r\nBad Name: v\r\n\r\n",
        ];
        for body in bodies {
            let got = decode_in_steps(body, body.len());
            assert!(
                matches!(got, Err(Error::Chunk(_))),
                "{}: {got:?}",
                String::from_utf8_lossy(body)
            );
        }
        let mut long = b"1;".to_vec();
        long.resize(MAX_CHUNK_LINE + 10, b'x');
        assert!(matches!(decode_in_steps(&long, 512), Err(Error::Chunk(_))));
    }

    fn encoded(req: Request<&str>) -> String {
        let mut dst = Vec::new();
        encode_head(&mut dst, &req, req.body().len());
        String::from_utf8(dst).expect("ascii")
    }

    #[test]
    fn the_request_head_carries_our_framing_only() {
        let req = Request::post("/v1/chat?x=1")
            .header("host", "up")
            .header("content-length", "999")
            .header("transfer-encoding", "chunked")
            .body("{}")
            .expect("request");
        assert_eq!(
            encoded(req),
            "POST /v1/chat?x=1 HTTP/1.1\r\nhost: up\r\ncontent-length: 2\r\n\r\n"
        );
        // An empty POST says so; an empty GET says nothing.
        let post = Request::post("/").body("").expect("request");
        assert_eq!(
            encoded(post),
            "POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n"
        );
        let get = Request::get("/models").body("").expect("request");
        assert_eq!(encoded(get), "GET /models HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn an_idle_connection_is_usable_until_the_upstream_closes_or_babbles() {
        use tokio::io::AsyncWriteExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        for babble in [false, true] {
            let client = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let (mut server, _) = listener.accept().await.expect("accept");
            let mut conn = Conn::new(Io::Plain(client));
            assert!(conn.is_usable(), "open and quiet");
            if babble {
                server
                    .write_all(b"HTTP/1.1 200 OK\r\n")
                    .await
                    .expect("write");
            } else {
                drop(server);
            }
            let mut usable = true;
            for _ in 0..100 {
                usable = conn.is_usable();
                if !usable {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            assert!(!usable, "babble: {babble}");
        }
    }
}
