//! The per-route, per-version, per-upstream and per-shadow counters, held
//! in blocks of our own and rendered into `/metrics` after the recorder's
//! output, like the histograms and the float counters.
//!
//! A label set (a route and version, say) gets one [`Counters`] block: an
//! array of atomics, one per series of every family its [`Layout`] names,
//! and the label set written out once. The `metrics` recorder keeps, per
//! series, its own copy of the name and every label, a map entry and a
//! generation-tagged atomic: about 350 bytes each, 55 series a route, so
//! 20 KiB a route before any traffic. A block costs 8 bytes a series and
//! one string; counting is a relaxed `fetch_add` on a handle resolved when
//! the config was compiled, as before.
//!
//! What Prometheus sees does not change: the same names, HELP and TYPE,
//! labels in the order the recorder wrote them, every series of a block
//! present from its registration (at zero), and counts that survive
//! reloads (the same label set returns the same block).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::names;

/// The families of a block, in slot order: each family's name, and for
/// each of its series the labels that follow the block's own, written out
/// (`status="2xx"`).
#[derive(Debug)]
pub struct Layout {
    pub families: &'static [(&'static str, &'static [&'static str])],
}

impl Layout {
    pub const fn slots(&self) -> usize {
        let mut n = 0;
        let mut i = 0;
        while i < self.families.len() {
            n += self.families[i].1.len();
            i += 1;
        }
        n
    }

    /// The first slot of `family`'s series.
    pub const fn offset(&self, family: &str) -> usize {
        let mut n = 0;
        let mut i = 0;
        while i < self.families.len() {
            if const_eq(self.families[i].0, family) {
                return n;
            }
            n += self.families[i].1.len();
            i += 1;
        }
        panic!("no such family in this layout")
    }
}

const fn const_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// A block of counters sharing one label set. Clones share the block.
#[derive(Clone, Debug)]
pub struct Counters(Arc<[AtomicU64]>);

impl Counters {
    #[inline]
    pub fn add(&self, slot: usize, n: u64) {
        if let Some(c) = self.0.get(slot) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn get(&self, slot: usize) -> u64 {
        self.0.get(slot).map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

struct Block {
    layout: &'static Layout,
    /// `route="chat",version="v1"`
    labels: Box<str>,
    counters: Counters,
}

#[derive(Default)]
struct Blocks {
    /// In registration order, which is the rendering order.
    all: Vec<Block>,
    /// (layout address, labels) → index in `all`.
    index: HashMap<(usize, Box<str>), usize>,
}

/// Every counter block of the process. Registration happens when a config
/// generation is compiled (control plane).
#[derive(Default)]
pub struct CounterRegistry {
    blocks: Mutex<Blocks>,
}

pub fn registry() -> &'static CounterRegistry {
    static REGISTRY: OnceLock<CounterRegistry> = OnceLock::new();
    REGISTRY.get_or_init(CounterRegistry::default)
}

impl CounterRegistry {
    /// The block of `layout` for these labels (in this order), created at
    /// zero on first use.
    pub fn block(&self, layout: &'static Layout, labels: &[(&str, &str)]) -> Counters {
        let labels = render_labels(labels);
        let key = (std::ptr::from_ref(layout) as usize, labels);
        let mut blocks = self.blocks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&i) = blocks.index.get(&key) {
            return blocks.all[i].counters.clone();
        }
        let counters = Counters((0..layout.slots()).map(|_| AtomicU64::new(0)).collect());
        let i = blocks.all.len();
        blocks.all.push(Block {
            layout,
            labels: key.1.clone(),
            counters: counters.clone(),
        });
        blocks.index.insert(key, i);
        counters
    }

    /// Prometheus text for every family of every block, grouped by name.
    pub fn render(&self, out: &mut String) {
        let blocks = self.blocks.lock().unwrap_or_else(|p| p.into_inner());
        let mut families: Vec<&'static str> = blocks
            .all
            .iter()
            .flat_map(|b| b.layout.families.iter().map(|(name, _)| *name))
            .collect();
        families.sort_unstable();
        families.dedup();
        for family in families {
            write_header(out, family, described(family), "counter");
            for block in &blocks.all {
                let mut slot = 0;
                for (name, series) in block.layout.families {
                    if *name != family {
                        slot += series.len();
                        continue;
                    }
                    for extra in *series {
                        let sep = if block.labels.is_empty() { "" } else { "," };
                        let _ = writeln!(
                            out,
                            "{family}{{{}{sep}{extra}}} {}",
                            block.labels,
                            block.counters.get(slot)
                        );
                        slot += 1;
                    }
                }
            }
        }
    }
}

/// The help text `names::DESCRIPTIONS` gives a family, if any.
pub(super) fn described(family: &str) -> Option<&'static str> {
    names::DESCRIPTIONS
        .iter()
        .find(|(n, _)| *n == family)
        .map(|(_, help)| *help)
}

/// A family's `# HELP` line (when it has help) and `# TYPE` line.
pub(super) fn write_header(out: &mut String, family: &str, help: Option<&str>, kind: &str) {
    if let Some(help) = help {
        let _ = writeln!(out, "# HELP {family} {help}");
    }
    let _ = writeln!(out, "# TYPE {family} {kind}");
}

/// `k="v",...`, values escaped as the exposition format wants.
pub(super) fn render_labels(labels: &[(&str, &str)]) -> Box<str> {
    let mut out = String::new();
    write_labels(&mut out, labels.iter().copied());
    out.into_boxed_str()
}

/// Append `k="v",...` to `out`: the one place label values are escaped
/// (backslash, double quote and newline, as the exposition format wants),
/// for the recorder's blocks, the histograms, the float counters and the
/// rollout gauges alike.
pub(super) fn write_labels<'a>(
    out: &mut String,
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    for (i, (k, v)) in labels.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static TWO: Layout = Layout {
        families: &[
            (names::REQUESTS_TOTAL, &["status=\"2xx\"", "status=\"5xx\""]),
            (names::TOKENS_TOTAL, &["kind=\"input\""]),
        ],
    };

    #[test]
    fn blocks_render_by_family_with_their_labels() {
        let r = CounterRegistry::default();
        let a = r.block(&TWO, &[("route", "a"), ("version", "v\"1")]);
        let b = r.block(&TWO, &[("route", "b"), ("version", "v2")]);
        a.add(TWO.offset(names::REQUESTS_TOTAL) + 1, 3);
        b.add(TWO.offset(names::TOKENS_TOTAL), 40);
        let again = r.block(&TWO, &[("route", "a"), ("version", "v\"1")]);
        again.add(TWO.offset(names::REQUESTS_TOTAL) + 1, 1);
        let mut out = String::new();
        r.render(&mut out);
        let expected = [
            "# TYPE cutover_requests_total counter",
            "cutover_requests_total{route=\"a\",version=\"v\\\"1\",status=\"2xx\"} 0",
            "cutover_requests_total{route=\"a\",version=\"v\\\"1\",status=\"5xx\"} 4",
            "cutover_requests_total{route=\"b\",version=\"v2\",status=\"2xx\"} 0",
            "cutover_requests_total{route=\"b\",version=\"v2\",status=\"5xx\"} 0",
            "# TYPE cutover_tokens_total counter",
            "cutover_tokens_total{route=\"a\",version=\"v\\\"1\",kind=\"input\"} 0",
            "cutover_tokens_total{route=\"b\",version=\"v2\",kind=\"input\"} 40",
        ];
        let lines: Vec<&str> = out.lines().filter(|l| !l.starts_with("# HELP")).collect();
        assert_eq!(lines, expected);
        assert_eq!(out.matches("# HELP cutover_requests_total ").count(), 1);
        assert_eq!(TWO.slots(), 3);
    }
}
