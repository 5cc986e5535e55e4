//! Sticky key extraction: the first present source in the route's `sticky`
//! list. Keys are borrowed from the request; nothing is allocated.

use std::io::Write as _;
use std::net::IpAddr;

use http::HeaderMap;

use crate::config::StickySource;

/// A sticky key, borrowed from the request where possible.
#[derive(Debug)]
pub enum StickyKey<'a> {
    Borrowed(&'a [u8]),
    Ip(IpText),
}

impl StickyKey<'_> {
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            StickyKey::Borrowed(b) => b,
            StickyKey::Ip(ip) => ip.as_bytes(),
        }
    }
}

/// An IP address rendered as text ("192.0.2.1", "2001:db8::1") on the
/// stack: a sticky key, or the peer in `X-Forwarded-For`, without a
/// `String` per request.
#[derive(Clone, Copy, Debug)]
pub struct IpText {
    buf: [u8; 48],
    len: usize,
}

impl IpText {
    pub fn new(ip: IpAddr) -> IpText {
        let mut buf = [0u8; 48];
        let len = match ip {
            // By hand: `Display` for an address goes through the formatter's
            // padding machinery, a thousand instructions per request for
            // the `X-Forwarded-For` line alone.
            IpAddr::V4(v4) => {
                let mut len = 0;
                let mut digits = itoa::Buffer::new();
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        buf[len] = b'.';
                        len += 1;
                    }
                    let digits = digits.format(octet).as_bytes();
                    buf[len..len + digits.len()].copy_from_slice(digits);
                    len += digits.len();
                }
                len
            }
            IpAddr::V6(_) => {
                let mut cursor = &mut buf[..];
                // An IPv6 address is at most 45 characters: this cannot fail.
                let _ = write!(cursor, "{ip}");
                48 - cursor.len()
            }
        };
        IpText { buf, len }
    }

    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The first non-empty source, in order. `query` is the raw query string
/// (without `?`); values are compared and hashed as sent, not
/// percent-decoded, so every replica hashes the same bytes.
pub fn sticky_key<'a>(
    sources: &[StickySource],
    headers: &'a HeaderMap,
    query: Option<&'a str>,
    client_ip: IpAddr,
) -> Option<StickyKey<'a>> {
    for source in sources {
        let found = match source {
            StickySource::Header(name) => headers
                .get(name)
                .map(|v| v.as_bytes())
                .filter(|v| !v.is_empty()),
            StickySource::Cookie(name) => cookie(headers, name),
            StickySource::Query(name) => query.and_then(|q| query_param(q, name)),
            StickySource::ClientIp => return Some(StickyKey::Ip(IpText::new(client_ip))),
        };
        if let Some(bytes) = found {
            return Some(StickyKey::Borrowed(bytes));
        }
    }
    None
}

/// The value of cookie `name` in any `Cookie` header.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    for value in headers.get_all(http::header::COOKIE) {
        for pair in value.as_bytes().split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            if let Some(eq) = pair.iter().position(|&b| b == b'=')
                && &pair[..eq] == name.as_bytes()
            {
                let v = pair[eq + 1..].trim_ascii();
                if !v.is_empty() {
                    return Some(v);
                }
            }
        }
    }
    None
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a [u8]> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name && !v.is_empty()).then_some(v.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn ip_text_reads_as_display() {
        use std::net::{Ipv4Addr, Ipv6Addr};
        for o in 0..=255u8 {
            for ip in [
                IpAddr::V4(Ipv4Addr::new(o, 255 - o, o / 2, o % 10)),
                IpAddr::V4(Ipv4Addr::new(o % 100, o, 9, 100)),
            ] {
                assert_eq!(IpText::new(ip).as_bytes(), ip.to_string().as_bytes());
            }
        }
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0xffff, 1));
        assert_eq!(IpText::new(v6).as_bytes(), v6.to_string().as_bytes());
    }

    fn sources() -> Vec<StickySource> {
        vec![
            StickySource::Header(http::HeaderName::from_static("x-session-id")),
            StickySource::Cookie("uid".into()),
            StickySource::Query("user".into()),
            StickySource::ClientIp,
        ]
    }

    fn key(headers: &HeaderMap, query: Option<&str>) -> Vec<u8> {
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        sticky_key(&sources(), headers, query, ip)
            .map(|k| k.as_bytes().to_vec())
            .unwrap_or_default()
    }

    #[test]
    fn sources_in_order() {
        let mut h = HeaderMap::new();
        assert_eq!(key(&h, None), b"192.0.2.7");
        assert_eq!(key(&h, Some("a=1&user=bob")), b"bob");
        h.insert("cookie", HeaderValue::from_static("a=b; uid=alice ; c=d"));
        assert_eq!(key(&h, Some("user=bob")), b"alice");
        h.insert("x-session-id", HeaderValue::from_static("s-1"));
        assert_eq!(key(&h, Some("user=bob")), b"s-1");
    }

    #[test]
    fn empty_values_are_absent() {
        let mut h = HeaderMap::new();
        h.insert("x-session-id", HeaderValue::from_static(""));
        h.insert("cookie", HeaderValue::from_static("uid="));
        assert_eq!(key(&h, Some("user=")), b"192.0.2.7");
    }

    #[test]
    fn no_source_no_key() {
        let h = HeaderMap::new();
        let ip: IpAddr = "::1".parse().expect("ip");
        assert!(sticky_key(&[StickySource::Query("u".into())], &h, None, ip).is_none());
    }
}
