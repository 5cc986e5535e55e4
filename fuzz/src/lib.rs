//! Helpers shared by the fuzz targets.
//!
//! Most targets check a property, not just "no panic": the same bytes
//! split into frames anywhere must give the same answer as in one piece,
//! because the proxy sees a body in whatever frames the network delivers.

/// Split `data` into a header byte that picks cut points and the rest: the
/// first byte is a seed, and the rest is cut into pieces whose lengths come
/// from that seed (1..=16 bytes each, or one piece when the seed is 0).
pub fn pieces(data: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let Some((&seed, rest)) = data.split_first() else {
        return (Vec::new(), data);
    };
    if seed == 0 {
        return (vec![rest], rest);
    }
    let mut out = Vec::new();
    let mut state = u32::from(seed);
    let mut at = 0;
    while at < rest.len() {
        // A small LCG: deterministic for a given input, so crashes replay.
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let len = 1 + (state >> 16) as usize % 16;
        let end = (at + len).min(rest.len());
        out.push(&rest[at..end]);
        at = end;
    }
    (out, rest)
}

/// The input as text, if it is UTF-8.
pub fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}
