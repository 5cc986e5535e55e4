//! Key paths and where they are in the file.
//!
//! `toml::Value` (what we deserialize) has no spans, so the text is parsed a
//! second time with `toml_edit`, which keeps them, and every key and value is
//! indexed by its key path. An error found anywhere in the pipeline carries
//! only a [`KeyPath`]; it is placed in the file at the very end.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

/// One step of a key path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A key path such as `routes[0].versions[1].weight`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    pub fn root() -> KeyPath {
        KeyPath(Vec::new())
    }

    /// This path with `key` appended.
    pub fn key(&self, key: &str) -> KeyPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_string()));
        KeyPath(segs)
    }

    /// This path with `[index]` appended.
    pub fn index(&self, index: usize) -> KeyPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        KeyPath(segs)
    }

    /// The keys of this path with indices dropped (`routes.versions.cost`),
    /// which names the *kind* of table at this place.
    pub fn shape(&self) -> Vec<&str> {
        self.0
            .iter()
            .filter_map(|s| match s {
                Seg::Key(k) => Some(k.as_str()),
                Seg::Index(_) => None,
            })
            .collect()
    }
}

fn is_bare(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Index(n) => write!(f, "[{n}]")?,
                Seg::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    if is_bare(k) {
                        f.write_str(k)?;
                    } else {
                        // Quoted like TOML so that `a.b` the key and `a`.`b`
                        // the path stay distinct.
                        write!(f, "{k:?}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Which end of a `key = value` pair an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anchor {
    /// The key itself (unknown keys, duplicates).
    Key,
    /// The value (a bad value: the caret goes where the fix goes).
    Value,
}

#[derive(Clone, Debug, Default)]
struct Entry {
    key: Option<Range<usize>>,
    value: Option<Range<usize>>,
}

/// Key path → spans of its key and value, built from a `toml_edit` document.
#[derive(Debug, Default)]
pub struct SpanIndex {
    entries: HashMap<KeyPath, Entry>,
    /// Byte offset of the start of each line.
    line_starts: Vec<usize>,
    text: String,
}

impl SpanIndex {
    pub fn build(text: &str, doc: &toml_edit::Document<&str>) -> SpanIndex {
        let mut index = SpanIndex {
            entries: HashMap::new(),
            line_starts: std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
            text: text.to_string(),
        };
        index.walk_table(&KeyPath::root(), doc.as_table());
        index
    }

    /// An index with no spans: every lookup gives `(0, 0)`. For errors found
    /// before the file could be parsed.
    pub fn empty(text: &str) -> SpanIndex {
        SpanIndex {
            line_starts: std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
            text: text.to_string(),
            ..SpanIndex::default()
        }
    }

    fn record(&mut self, path: &KeyPath, key: Option<Range<usize>>, value: Option<Range<usize>>) {
        let e = self.entries.entry(path.clone()).or_default();
        if e.key.is_none() {
            e.key = key;
        }
        if e.value.is_none() {
            e.value = value;
        }
    }

    fn walk_table(&mut self, path: &KeyPath, table: &toml_edit::Table) {
        for (k, item) in table.iter() {
            let child = path.key(k);
            let key_span = table.key(k).and_then(|key| key.span());
            self.walk_item(&child, key_span, item);
        }
    }

    fn walk_item(
        &mut self,
        path: &KeyPath,
        key_span: Option<Range<usize>>,
        item: &toml_edit::Item,
    ) {
        match item {
            toml_edit::Item::None => {}
            toml_edit::Item::Value(v) => self.walk_value(path, key_span, v),
            toml_edit::Item::Table(t) => {
                self.record(path, key_span, t.span());
                self.walk_table(path, t);
            }
            toml_edit::Item::ArrayOfTables(a) => {
                self.record(path, key_span, a.span());
                for (i, t) in a.iter().enumerate() {
                    let child = path.index(i);
                    self.record(&child, None, t.span());
                    self.walk_table(&child, t);
                }
            }
        }
    }

    fn walk_value(
        &mut self,
        path: &KeyPath,
        key_span: Option<Range<usize>>,
        value: &toml_edit::Value,
    ) {
        self.record(path, key_span, value.span());
        match value {
            toml_edit::Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    self.walk_value(&path.index(i), None, v);
                }
            }
            toml_edit::Value::InlineTable(t) => {
                for (k, v) in t.iter() {
                    let key_span = t.key(k).and_then(|key| key.span());
                    self.walk_value(&path.key(k), key_span, v);
                }
            }
            _ => {}
        }
    }

    /// 1-based line and column (in characters) of `path`, falling back to
    /// the nearest parent that is in the file; `(0, 0)` when none is.
    pub fn locate(&self, path: &KeyPath, anchor: Anchor) -> (usize, usize) {
        let mut segs = path.0.as_slice();
        loop {
            if let Some(e) = self.entries.get(&KeyPath(segs.to_vec())) {
                let span = match anchor {
                    Anchor::Key => e.key.clone().or_else(|| e.value.clone()),
                    Anchor::Value => e.value.clone().or_else(|| e.key.clone()),
                };
                if let Some(span) = span {
                    return self.line_col(span.start);
                }
            }
            match segs.split_last() {
                Some((_, parent)) => segs = parent,
                None => return (1, 1),
            }
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let start = self.line_starts.get(line).copied().unwrap_or(0);
        let col = self
            .text
            .get(start..offset)
            .map(|s| s.chars().count())
            // `offset` inside a multi-byte character: count what is whole.
            .unwrap_or_else(|| {
                self.text
                    .char_indices()
                    .filter(|(i, _)| *i >= start && *i < offset)
                    .count()
            });
        (line + 1, col + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(text: &str) -> SpanIndex {
        match toml_edit::Document::parse(text) {
            Ok(doc) => SpanIndex::build(text, &doc),
            Err(e) => panic!("test input does not parse: {e}"),
        }
    }

    #[test]
    fn paths_display_like_the_spec() {
        let p = KeyPath::root()
            .key("routes")
            .index(0)
            .key("versions")
            .index(1)
            .key("weight");
        assert_eq!(p.to_string(), "routes[0].versions[1].weight");
        assert_eq!(
            KeyPath::root().key("deps").key("a.b").to_string(),
            "deps.\"a.b\""
        );
    }

    #[test]
    fn locates_keys_values_tables_and_parents() {
        let text = "[server]\nlisten = \"x\"\n\n[[routes]]\nname = \"chat\"\n[[routes.versions]]\nweight = 95.5\nset_headers = { a = \"b\" }\nsteps = [1, 2]\n";
        let ix = index(text);
        let route = KeyPath::root().key("routes").index(0);
        let w = route.key("versions").index(0).key("weight");
        assert_eq!(ix.locate(&w, Anchor::Key), (7, 1));
        assert_eq!(ix.locate(&w, Anchor::Value), (7, 10));
        let a = route.key("versions").index(0).key("set_headers").key("a");
        assert_eq!(ix.locate(&a, Anchor::Key), (8, 17));
        assert_eq!(ix.locate(&a, Anchor::Value), (8, 21));
        let s = route.key("versions").index(0).key("steps").index(1);
        assert_eq!(ix.locate(&s, Anchor::Value), (9, 13));
        // A table from an array-of-tables header.
        assert_eq!(
            ix.locate(&route.key("versions").index(0), Anchor::Value),
            (6, 1)
        );
        // Missing key: its parent.
        assert_eq!(ix.locate(&route.key("nope"), Anchor::Value), (4, 1));
        assert_eq!(
            ix.locate(&KeyPath::root().key("server").key("listen"), Anchor::Value),
            (2, 10)
        );
    }

    #[test]
    fn columns_count_characters() {
        let ix = index("a = \"é\"\nb = 1\n");
        assert_eq!(ix.line_col(9), (2, 1));
        assert_eq!(ix.line_col(7), (1, 7));
    }
}
