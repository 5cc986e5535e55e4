//! Opening a connection to an upstream: DNS, TCP and, for `https://`, the
//! TLS handshake with ALPN, all under one `connect_timeout` (SPEC §5).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Where an upstream lives, resolved from its URL once per generation.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// Host as written in the URL (a name or an IP literal), for DNS.
    pub host: Arc<str>,
    pub port: u16,
    /// `Some` for `https://`: the name the certificate must carry.
    pub tls: Option<ServerName<'static>>,
}

/// The byte stream of one upstream connection.
pub enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// What the TLS handshake agreed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

/// Why no connection could be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("DNS: {0}")]
    Resolve(io::Error),
    #[error("TCP connect: {0}")]
    Tcp(io::Error),
    #[error("TLS handshake: {0}")]
    Tls(io::Error),
    #[error("HTTP handshake: {0}")]
    Handshake(hyper::Error),
}

/// DNS, TCP and TLS, bounded together by `timeout`. Every resolved address
/// is tried in turn, as curl and hyper's connector do.
pub async fn connect(
    endpoint: &Endpoint,
    tls: Option<&TlsConnector>,
    timeout: Duration,
) -> Result<(Io, Protocol), ConnectError> {
    tokio::time::timeout(timeout, connect_inner(endpoint, tls))
        .await
        .map_err(|_| ConnectError::Timeout(timeout))?
}

async fn connect_inner(
    endpoint: &Endpoint,
    tls: Option<&TlsConnector>,
) -> Result<(Io, Protocol), ConnectError> {
    let tcp = tcp_connect(endpoint).await?;
    // Small requests and streamed frames must leave at once.
    let _ = tcp.set_nodelay(true);
    match (&endpoint.tls, tls) {
        (Some(name), Some(connector)) => {
            let stream = connector
                .connect(name.clone(), tcp)
                .await
                .map_err(ConnectError::Tls)?;
            let protocol = match stream.get_ref().1.alpn_protocol() {
                Some(b"h2") => Protocol::Http2,
                _ => Protocol::Http1,
            };
            Ok((Io::Tls(Box::new(stream)), protocol))
        }
        _ => Ok((Io::Plain(tcp), Protocol::Http1)),
    }
}

async fn tcp_connect(endpoint: &Endpoint) -> Result<TcpStream, ConnectError> {
    // An IP literal needs no resolver round trip (and no blocking thread).
    if let Ok(ip) = endpoint.host.parse::<std::net::IpAddr>() {
        return TcpStream::connect((ip, endpoint.port))
            .await
            .map_err(ConnectError::Tcp);
    }
    let addrs = tokio::net::lookup_host((&*endpoint.host, endpoint.port))
        .await
        .map_err(ConnectError::Resolve)?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(ConnectError::Tcp(last.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address")
    })))
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that accepts TCP and then says nothing: the TLS handshake
    /// stalls, and `connect_timeout` still ends the attempt (SPEC §5).
    #[tokio::test]
    async fn connect_timeout_covers_a_stalled_tls_handshake() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let endpoint = Endpoint {
            host: Arc::from("localhost"),
            port,
            tls: Some(ServerName::try_from("localhost").expect("name")),
        };
        let connector = crate::upstream::upstream_connector().expect("TLS");
        let started = std::time::Instant::now();
        let result = connect(&endpoint, Some(&connector), Duration::from_millis(200)).await;
        assert!(
            matches!(result, Err(ConnectError::Timeout(_))),
            "{:?}",
            result.err()
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        silent.abort();
    }

    /// A name that does not resolve fails as a resolve error, not a hang.
    #[tokio::test]
    async fn an_unresolvable_name_is_a_resolve_error() {
        let endpoint = Endpoint {
            host: Arc::from("does-not-exist.invalid"),
            port: 80,
            tls: None,
        };
        let result = connect(&endpoint, None, Duration::from_secs(5)).await;
        assert!(
            matches!(
                result,
                Err(ConnectError::Resolve(_) | ConnectError::Timeout(_))
            ),
            "{:?}",
            result.err()
        );
    }
}
