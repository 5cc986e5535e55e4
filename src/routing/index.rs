//! The route table, indexed: the first route in file order whose rules
//! match, found without trying every route.
//!
//! Routes are grouped by path prefix (and, when they name one, by host),
//! so a request only looks at the routes whose prefix its path starts
//! with: one hash lookup per distinct prefix length up to the path's
//! length (a config with prefixes `/`, `/v1/` and `/v2/` makes two). The
//! candidates of every matching prefix are sorted by file order; they are
//! walked merged, smallest index first, and each is checked in full
//! ([`matcher::matches`]: methods, host, headers), so the first that
//! passes is exactly the route a scan in file order would pick.
//!
//! What is not indexed (methods, headers) is checked per candidate: a
//! config of many routes on one prefix that differ only by header still
//! tries them in order, as before.

use std::collections::HashMap;

use http::{HeaderMap, Method};
use smallvec::SmallVec;

use super::matcher;
use crate::config::RouteMatch;

/// Routes by path prefix.
#[derive(Debug, Default)]
struct Prefixes {
    /// Prefix bytes → route indices, ascending.
    routes: HashMap<Box<[u8]>, Box<[u32]>>,
    /// Every distinct prefix length, ascending.
    lengths: Box<[usize]>,
}

impl Prefixes {
    fn build(entries: Vec<(&str, u32)>) -> Prefixes {
        let mut routes: HashMap<Box<[u8]>, Vec<u32>> = HashMap::new();
        for (prefix, index) in entries {
            routes
                .entry(prefix.as_bytes().into())
                .or_default()
                .push(index);
        }
        let mut lengths: Vec<usize> = routes.keys().map(|k| k.len()).collect();
        lengths.sort_unstable();
        lengths.dedup();
        Prefixes {
            routes: routes
                .into_iter()
                .map(|(k, v)| (k, v.into_boxed_slice()))
                .collect(),
            lengths: lengths.into_boxed_slice(),
        }
    }

    /// The candidate lists of every prefix `path` starts with.
    fn candidates<'a>(&'a self, path: &[u8], out: &mut Lists<'a>) {
        for &len in self.lengths.iter() {
            if len > path.len() {
                break;
            }
            if let Some(routes) = self.routes.get(&path[..len]) {
                out.push(routes);
            }
        }
    }
}

/// Candidate lists of one lookup: a few, on the stack.
type Lists<'a> = SmallVec<[&'a [u32]; 8]>;

/// The compiled route table.
#[derive(Debug, Default)]
pub struct RouteIndex {
    /// Each route's rules, by index (file order).
    rules: Box<[RouteMatch]>,
    /// Routes without a host rule.
    any_host: Prefixes,
    /// Routes with a host rule, by the host ASCII-lowercased.
    by_host: HashMap<Box<str>, Prefixes>,
}

impl RouteIndex {
    pub fn new<'a>(rules: impl IntoIterator<Item = &'a RouteMatch>) -> RouteIndex {
        let rules: Box<[RouteMatch]> = rules.into_iter().cloned().collect();
        let mut any = Vec::new();
        let mut hosts: HashMap<Box<str>, Vec<(&str, u32)>> = HashMap::new();
        for (i, rule) in rules.iter().enumerate() {
            let Ok(i) = u32::try_from(i) else { break };
            match &rule.host {
                None => any.push((rule.path_prefix.as_str(), i)),
                Some(host) => hosts
                    .entry(host.to_ascii_lowercase().into_boxed_str())
                    .or_default()
                    .push((rule.path_prefix.as_str(), i)),
            }
        }
        let any_host = Prefixes::build(any);
        let by_host = hosts
            .into_iter()
            .map(|(h, entries)| (h, Prefixes::build(entries)))
            .collect();
        RouteIndex {
            rules,
            any_host,
            by_host,
        }
    }

    /// The index of the first route, in file order, that matches; `host`
    /// is the request's host without port ([`matcher::request_host`]).
    pub fn find(
        &self,
        method: &Method,
        path: &str,
        host: Option<&str>,
        headers: &HeaderMap,
    ) -> Option<usize> {
        let mut lists = Lists::new();
        self.any_host.candidates(path.as_bytes(), &mut lists);
        if let Some(host) = host
            && !self.by_host.is_empty()
        {
            let found = if host.bytes().any(|b| b.is_ascii_uppercase()) {
                self.by_host.get(host.to_ascii_lowercase().as_str())
            } else {
                self.by_host.get(host)
            };
            if let Some(prefixes) = found {
                prefixes.candidates(path.as_bytes(), &mut lists);
            }
        }
        // Walk the lists merged, smallest route index first.
        loop {
            let mut best: Option<(usize, u32)> = None;
            for (l, list) in lists.iter().enumerate() {
                if let Some(&candidate) = list.first()
                    && best.is_none_or(|(_, b)| candidate < b)
                {
                    best = Some((l, candidate));
                }
            }
            let (l, candidate) = best?;
            lists[l] = &lists[l][1..];
            let index = candidate as usize;
            if matcher::matches(&self.rules[index], method, path, host, headers) {
                return Some(index);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule(
        prefix: &str,
        methods: &[Method],
        host: Option<&str>,
        header: Option<&str>,
    ) -> RouteMatch {
        RouteMatch {
            path_prefix: prefix.into(),
            methods: methods.to_vec(),
            host: host.map(str::to_string),
            headers: header
                .map(|v| vec![(http::HeaderName::from_static("x-tenant"), v.to_string())])
                .unwrap_or_default(),
        }
    }

    fn scan(
        rules: &[RouteMatch],
        m: &Method,
        p: &str,
        h: Option<&str>,
        hd: &HeaderMap,
    ) -> Option<usize> {
        rules.iter().position(|r| matcher::matches(r, m, p, h, hd))
    }

    #[test]
    fn first_match_in_file_order_wins() {
        let rules = vec![
            rule("/v1/chat", &[Method::POST], None, None),
            rule("/v1/", &[], Some("API.example.com"), None),
            rule("/", &[Method::GET], None, None),
            rule("/v1/", &[], None, Some("acme")),
            rule("/v1/", &[], None, None),
        ];
        let index = RouteIndex::new(&rules);
        let mut acme = HeaderMap::new();
        acme.insert("x-tenant", "acme".parse().expect("value"));
        let none = HeaderMap::new();
        type Case<'a> = (
            Method,
            &'a str,
            Option<&'a str>,
            &'a HeaderMap,
            Option<usize>,
        );
        let cases: &[Case<'_>] = &[
            (Method::POST, "/v1/chat/completions", None, &none, Some(0)),
            (
                Method::GET,
                "/v1/chat/completions",
                Some("api.example.com"),
                &none,
                Some(1),
            ),
            (Method::GET, "/v1/models", None, &none, Some(2)),
            (Method::POST, "/v1/models", None, &acme, Some(3)),
            (Method::POST, "/v1/models", Some("other"), &none, Some(4)),
            (Method::POST, "/v2/x", None, &none, None),
            (Method::PUT, "/", None, &none, None),
        ];
        for (m, p, h, hd, want) in cases {
            assert_eq!(index.find(m, p, *h, hd), *want, "{m} {p} {h:?}");
            assert_eq!(scan(&rules, m, p, *h, hd), *want);
        }
    }

    #[test]
    fn the_last_of_a_thousand_routes_is_found() {
        let rules: Vec<RouteMatch> = (0..1000)
            .map(|i| rule(&format!("/r{i}/"), &[Method::POST], None, None))
            .collect();
        let index = RouteIndex::new(&rules);
        let h = HeaderMap::new();
        assert_eq!(index.find(&Method::POST, "/r999/chat", None, &h), Some(999));
        assert_eq!(index.find(&Method::POST, "/r99/chat", None, &h), Some(99));
        assert_eq!(index.find(&Method::POST, "/r1000/chat", None, &h), None);
    }

    fn method() -> impl Strategy<Value = Method> {
        prop_oneof![Just(Method::GET), Just(Method::POST), Just(Method::PUT)]
    }

    fn small_path() -> impl Strategy<Value = String> {
        // Few letters, so prefixes overlap often.
        "/[ab/é]{0,5}"
    }

    prop_compose! {
        fn any_rule()(
            prefix in small_path(),
            methods in prop::collection::vec(method(), 0..2),
            host in prop::option::of(prop_oneof![Just("a.com"), Just("B.com")]),
            header in prop::option::of(prop_oneof![Just("x"), Just("y")]),
        ) -> RouteMatch {
            rule(&prefix, &methods, host, header)
        }
    }

    proptest! {
        #[test]
        fn the_index_agrees_with_a_scan_in_file_order(
            rules in prop::collection::vec(any_rule(), 0..12),
            requests in prop::collection::vec(
                (method(), small_path(), prop::option::of(prop_oneof![Just("a.com"), Just("A.COM"), Just("b.com")]), prop::option::of(prop_oneof![Just("x"), Just("y")])),
                1..20,
            ),
        ) {
            let index = RouteIndex::new(&rules);
            for (m, p, h, tenant) in &requests {
                let mut hd = HeaderMap::new();
                if let Some(t) = tenant {
                    hd.insert("x-tenant", t.parse().expect("value"));
                }
                prop_assert_eq!(index.find(m, p, *h, &hd), scan(&rules, m, p, *h, &hd));
            }
        }
    }
}
