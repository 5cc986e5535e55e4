//! The HTTP/1 framing sniffer (`server::Framing`): never panics, and gives
//! the same verdict, pointing at the same byte, however the connection's
//! bytes are split into reads.
#![no_main]

use cutover::server::{Ambiguous, Framing};
use cutover_fuzz::pieces;
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
    if let Err(e) = one {
        assert_eq!(
            whole[e.at], b'\n',
            "an ambiguous head ends on its blank line"
        );
    }
});
