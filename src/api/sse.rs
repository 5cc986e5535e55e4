//! Server-sent events, read whole (after a body has ended): the framing
//! the three APIs share.
//!
//! As the SSE format says: lines end in `\n` or `\r\n`; a blank line
//! dispatches the event; `data:` fields are joined with `\n`; `event:`
//! names it; comment lines (`:`) and the `id:` and `retry:` fields are
//! ignored. A last event without its blank line is still dispatched (a
//! stream cut mid-event then fails to parse as JSON, which is how callers
//! see the cut).

use std::ops::ControlFlow;

/// Call `f(name, data)` for each event that has data, in order, until it
/// breaks. `name` is the event's `event:` field, if any.
pub fn for_each_event(body: &[u8], mut f: impl FnMut(Option<&[u8]>, &[u8]) -> ControlFlow<()>) {
    // An event's one `data:` line (the usual case) is handed over where it
    // lies; only an event of several is joined, in `joined`.
    let mut first: &[u8] = &[];
    let mut joined: Vec<u8> = Vec::new();
    let mut data_lines = 0usize;
    let mut name: Option<&[u8]> = None;
    let mut start = 0;
    let ends = memchr::memchr_iter(b'\n', body).chain(std::iter::once(body.len()));
    for end in ends {
        let raw = &body[start..end];
        start = end + 1;
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.is_empty() {
            if data_lines > 0 {
                let data = if data_lines == 1 { first } else { &joined[..] };
                if f(name, data).is_break() {
                    return;
                }
                data_lines = 0;
            }
            name = None;
            continue;
        }
        if line.starts_with(b":") {
            continue;
        }
        // Most lines are `data:` lines: no search for their colon.
        let (field, value) = match line.strip_prefix(b"data:") {
            Some(value) => (&b"data"[..], value.strip_prefix(b" ").unwrap_or(value)),
            None => match memchr::memchr(b':', line) {
                Some(colon) => {
                    let value = &line[colon + 1..];
                    (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
                }
                None => (line, &[][..]),
            },
        };
        match field {
            b"data" => {
                match data_lines {
                    0 => first = value,
                    1 => {
                        joined.clear();
                        joined.extend_from_slice(first);
                        joined.push(b'\n');
                        joined.extend_from_slice(value);
                    }
                    _ => {
                        joined.push(b'\n');
                        joined.extend_from_slice(value);
                    }
                }
                data_lines += 1;
            }
            b"event" => name = Some(value),
            _ => {}
        }
    }
    if data_lines > 0 {
        let data = if data_lines == 1 { first } else { &joined[..] };
        let _ = f(name, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(body: &str) -> Vec<(Option<String>, String)> {
        let mut out = Vec::new();
        for_each_event(body.as_bytes(), |name, data| {
            out.push((
                name.map(|n| String::from_utf8_lossy(n).into_owned()),
                String::from_utf8_lossy(data).into_owned(),
            ));
            ControlFlow::Continue(())
        });
        out
    }

    #[test]
    fn names_data_joining_and_comments() {
        let got = events(concat!(
            ": comment\r\n",
            "event: a\r\n",
            "id: 7\n",
            "data: one\n",
            "data:two\n",
            "\n",
            "event: named-but-empty\n",
            "\n",
            "data: three",
        ));
        assert_eq!(
            got,
            [
                (Some("a".to_owned()), "one\ntwo".to_owned()),
                (None, "three".to_owned()),
            ]
        );
    }

    /// One line is handed over in place, several are joined: the buffer
    /// for joining is reused between events without leaking into them.
    #[test]
    fn one_line_or_many() {
        let got = events("data: a\ndata: b\ndata: c\n\ndata: d\n\ndata: e\ndata\n\ndata:\n\n");
        let data: Vec<&str> = got.iter().map(|(_, d)| d.as_str()).collect();
        assert_eq!(data, ["a\nb\nc", "d", "e\n", ""]);
    }

    #[test]
    fn break_stops_early() {
        let mut seen = 0;
        for_each_event(b"data: 1\n\ndata: 2\n\n", |_, _| {
            seen += 1;
            ControlFlow::Break(())
        });
        assert_eq!(seen, 1);
    }
}
