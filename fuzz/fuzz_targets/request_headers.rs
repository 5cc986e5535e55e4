//! The request-header rules (`proxy::headers`): whatever a client sends,
//! the head cutover forwards has no hop-by-hop header, none of cutover's
//! own `x-cutover-*` headers, no framing of the client's, a valid request
//! id, the peer at the end of `X-Forwarded-For`, and a valid
//! `traceparent`; a response head keeps none of the stripped ones either.
//! The first line is also read as a request target: when `host_problem`
//! lets the request through, whatever travels on as `x-forwarded-host`
//! (the target's authority, or `Host`) is a bare host and port.
#![no_main]

use std::net::SocketAddr;

use cutover::proxy::headers;
use http::{HeaderMap, HeaderName, HeaderValue, Uri, Version};
use libfuzzer_sys::fuzz_target;

const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

fn head(data: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            map.append(n, v);
        }
    }
    map
}

fn lower_hex(s: &[u8]) -> bool {
    s.iter()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    let mut request = head(data);
    let _ = headers::ambiguous_framing(&request);
    let target = data.split(|&b| b == b'\n').next().unwrap_or_default();
    let uri = Uri::try_from(target).ok();
    let version = if flags & 8 == 0 {
        Version::HTTP_11
    } else {
        Version::HTTP_2
    };
    let vetted = uri
        .as_ref()
        .is_some_and(|uri| headers::host_problem(version, uri, &request).is_none());
    let peer: SocketAddr = if flags & 1 == 0 {
        ([192, 0, 2, 7], 40_000).into()
    } else {
        ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 7], 40_000).into()
    };
    let _ = headers::client_ip(&request, peer, flags & 2 != 0);
    let sent_parent = request.get("traceparent").map(|v| v.as_bytes().to_vec());
    let id = headers::request_id(&request);
    let authority = uri.as_ref().and_then(Uri::authority);
    let ctx = headers::prepare_forward(&mut request, authority, peer, flags & 4 != 0, &id);
    if vetted && let Some(host) = request.get("x-forwarded-host") {
        assert!(
            host.as_bytes()
                .iter()
                .all(|&b| b.is_ascii_graphic() && !matches!(b, b'@' | b'/' | b'?' | b'#')),
            "{host:?} forwarded as the host"
        );
    }

    for name in request.keys() {
        let name = name.as_str();
        assert!(!HOP_BY_HOP.contains(&name), "{name} forwarded");
        assert!(!name.starts_with("x-cutover-"), "{name} forwarded");
        assert!(name != "content-length" && name != "expect" && name != "host");
    }
    let sent_id = request
        .get("x-request-id")
        .expect("x-request-id")
        .as_bytes();
    assert!((1..=128).contains(&sent_id.len()));
    assert!(sent_id.iter().all(|c| (0x21..=0x7e).contains(c)));
    let xff = request
        .get("x-forwarded-for")
        .expect("x-forwarded-for")
        .to_str()
        .expect("ascii");
    assert!(xff.ends_with(&peer.ip().to_string()), "{xff}");
    let tp = request.get("traceparent").expect("traceparent").as_bytes();
    assert_eq!(tp.len(), 55);
    assert!(tp[2] == b'-' && tp[35] == b'-' && tp[52] == b'-');
    assert!(lower_hex(&tp[..2]) && lower_hex(&tp[3..35]) && lower_hex(&tp[36..52]));
    if ctx.parent_span_id.is_some() {
        // A valid caller trace keeps its trace id.
        let sent = sent_parent.expect("a parent was sent");
        assert_eq!(&sent[3..35], &tp[3..35]);
    }

    let mut response = head(data);
    headers::prepare_response(&mut response);
    for name in response.keys() {
        let name = name.as_str();
        assert!(!HOP_BY_HOP.contains(&name) && !name.starts_with("x-cutover-"));
    }
});
