//! The HTTP/1 framing sniffer (`server::Framing`): never panics, and gives
//! the same verdict, pointing at the same byte, however the connection's
//! bytes are split into reads. Cross-checked with the service's own
//! second line of defence (`proxy::headers::ambiguous_framing`): a first
//! head that the service would call ambiguous is always refused by the
//! sniffer first, at the end of that head. And the quick look at a head
//! (`classify_quick`) agrees with the full parse wherever httparse accepts
//! the head.
#![no_main]

use cutover::proxy::headers::ambiguous_framing;
use cutover::server::{Ambiguous, Framing, quick_classify_agrees};
use cutover_fuzz::pieces;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (reads, whole) = pieces(data);
    let one = Framing::new().feed(whole);
    let mut framing = Framing::new();
    let mut offset = 0;
    let mut many = Ok(());
    for read in reads {
        if let Err(e) = framing.feed(read) {
            many = Err(Ambiguous {
                at: e.at + offset,
                ..e
            });
            break;
        }
        offset += read.len();
    }
    assert_eq!(one, many, "the verdict depends on how the bytes were read");
    assert!(
        quick_classify_agrees(whole),
        "the quick look and the full parse disagree on the first head"
    );
    if let Err(e) = one {
        assert_eq!(
            whole[e.at], b'\n',
            "an ambiguous head ends on its blank line"
        );
    }

    // The first head as hyper would parse it (httparse, as many headers as
    // the sniffer reads).
    if whole.starts_with(b"PRI * HTTP/2.0") {
        return;
    }
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(head_len)) = req.parse(whole) else {
        return;
    };
    let mut map = HeaderMap::new();
    for h in req.headers.iter() {
        match (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) {
            (Ok(n), Ok(v)) => {
                map.append(n, v);
            }
            // hyper would refuse such a head itself.
            _ => return,
        }
    }
    if ambiguous_framing(&map) {
        match one {
            Err(e) => assert_eq!(
                e.at + 1,
                head_len,
                "refused, but not at the end of the head"
            ),
            Ok(()) => panic!("the service calls this head ambiguous; the sniffer let it through"),
        }
    }
});
