//! The HTTP/1 client codec's response side (`upstream::h1`): a hostile
//! upstream's bytes never panic it, and the head, the body and the verdict
//! are the same however the bytes are split into reads, and whether the
//! field names are parsed cold or cloned from the last head's.
#![no_main]

use bytes::BytesMut;
use cutover::upstream::h1::{Decoded, Framing, Names, parse_head};
use cutover_fuzz::pieces;
use http::Method;
use libfuzzer_sys::fuzz_target;

/// What a response came to: its status and fields, its body, and whether
/// it ended, failed (and how), or wanted more bytes.
#[derive(Debug, PartialEq)]
struct Outcome {
    head: Option<(u16, Vec<(String, Vec<u8>)>, Framing, bool)>,
    body: Vec<u8>,
    trailers: Option<Vec<(String, Vec<u8>)>>,
    end: String,
}

fn fields(map: &http::HeaderMap) -> Vec<(String, Vec<u8>)> {
    map.iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect()
}

fn run(reads: &[&[u8]], method: &Method, names: &mut Names) -> Outcome {
    let mut out = Outcome {
        head: None,
        body: Vec::new(),
        trailers: None,
        end: "more".into(),
    };
    let mut buf = BytesMut::new();
    let mut framing = None;
    for read in reads {
        buf.extend_from_slice(read);
        let framing = match &mut framing {
            Some(framing) => framing,
            None => match parse_head(&mut buf, method, names) {
                Ok(Some(head)) => {
                    out.head = Some((
                        head.parts.status.as_u16(),
                        fields(&head.parts.headers),
                        head.framing,
                        head.keep_alive,
                    ));
                    framing.insert(head.framing)
                }
                Ok(None) => continue,
                Err(e) => {
                    out.end = format!("head: {e}");
                    return out;
                }
            },
        };
        loop {
            match framing.decode(&mut buf) {
                Ok(Some(Decoded::Data(d))) => {
                    assert!(!d.is_empty(), "an empty data frame");
                    out.body.extend_from_slice(&d);
                }
                Ok(Some(Decoded::End(trailers))) => {
                    out.trailers = trailers.as_ref().map(fields);
                    out.end = "end".into();
                    return out;
                }
                Ok(None) => break,
                Err(e) => {
                    out.end = format!("body: {e}");
                    return out;
                }
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let (reads, whole) = pieces(data);
    let method = if whole.first().is_some_and(|b| b & 1 == 1) {
        Method::HEAD
    } else {
        Method::POST
    };
    // The second run reads the names the first one left.
    let mut names = Names::default();
    let cold = run(&[whole], &method, &mut names);
    assert_eq!(cold, run(&reads, &method, &mut names));
});
