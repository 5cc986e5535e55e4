//! Raw structs → the validated [`Config`], collecting every error.
//!
//! Each check pushes an [`Issue`] and carries on with a default, so one run
//! reports everything that is wrong; the caller throws the result away when
//! there is any issue. Names that other entries refer to (upstreams, route
//! versions) are read from the parsed tree, not from the deserialized units,
//! so an entry with a type error does not also make every reference to it
//! "unknown".
//!
//! One module per section of the file, each an `impl Validator` block:
//! [`server`] (with `[server.tls]`), [`admin`], [`telemetry`] (`[log]`,
//! `[tracing]`), [`cache`] (`[cache]` and a route's `cache`), [`cluster`],
//! [`state`], [`upstreams`] (with the breaker), [`routes`] (match, sticky,
//! pinning), [`targets`] (versions, shadows, fallbacks), [`refusal`] and
//! [`rollout`]. The checks they share: [`values`] (durations, sizes,
//! ranges, headers, JSON, addresses, URLs, statuses, percents, tokens) and
//! [`files`] (paths relative to the config, PEM files read with a cap).

mod admin;
mod cache;
mod cluster;
mod files;
mod refusal;
mod rollout;
mod routes;
mod server;
mod state;
mod targets;
mod telemetry;
mod upstreams;
mod values;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::config::model::*;
use crate::config::raw::*;
use crate::config::spans::KeyPath;
use crate::config::units::describe;

pub use values::parse_url;

pub struct Validator<'a> {
    pub issues: Vec<Issue>,
    /// Relative file paths are resolved against this (the config's directory).
    base_dir: PathBuf,
    env: &'a dyn Fn(&str) -> Option<String>,
}

fn one_of(names: &[&str]) -> String {
    if names.is_empty() {
        "none are defined".to_string()
    } else {
        format!("valid: one of {}", names.join(", "))
    }
}

fn table_name(v: &Value) -> Option<&str> {
    v.get("name").and_then(Value::as_str)
}

impl<'a> Validator<'a> {
    pub fn new(source: &Path, env: &'a dyn Fn(&str) -> Option<String>) -> Validator<'a> {
        Validator {
            issues: Vec::new(),
            base_dir: source.parent().map(Path::to_path_buf).unwrap_or_default(),
            env,
        }
    }

    fn err(&mut self, path: KeyPath, message: impl Into<String>) {
        self.issues.push(Issue::at(path, message));
    }

    pub fn config(&mut self, root: Table, source: &Path) -> Option<Config> {
        let root_path = KeyPath::root();
        let mut sections: HashMap<String, Value> = HashMap::new();
        for (k, v) in root {
            if TOP_LEVEL_KEYS.contains(&k.as_str()) {
                sections.insert(k, v);
            } else {
                let p = root_path.key(&k);
                let m = unknown_key_message(&p);
                self.issues.push(Issue::at_key(p, m));
            }
        }
        let mut take_table = |name: &str, issues: &mut Vec<Issue>| -> Option<Value> {
            let v = sections.remove(name)?;
            if v.is_table() {
                Some(v)
            } else {
                issues.push(Issue::at(
                    KeyPath::root().key(name),
                    format!("expected a table [{name}], found {}", describe(&v)),
                ));
                None
            }
        };
        let server_v = take_table("server", &mut self.issues);
        let admin_v = take_table("admin", &mut self.issues);
        let log_v = take_table("log", &mut self.issues);
        let tracing_v = take_table("tracing", &mut self.issues);
        let cache_v = take_table("cache", &mut self.issues);
        let state_v = take_table("state", &mut self.issues);
        let cluster_v = take_table("cluster", &mut self.issues);
        let upstreams_v = self.array_of_tables(sections.remove("upstreams"), "upstreams");
        let routes_v = self.array_of_tables(sections.remove("routes"), "routes");

        let server = match server_v {
            Some(v) => self.server(v),
            None => {
                self.err(
                    root_path.clone(),
                    "missing required section [server] (with `listen`)",
                );
                None
            }
        };
        let admin = self.admin(admin_v);
        let log = self.log(log_v);
        let tracing = tracing_v.and_then(|v| self.tracing(v));
        let cache = self.cache(cache_v);
        let state = self.state(state_v);
        let cluster = cluster_v.and_then(|v| self.cluster(v));
        if let Some(c) = &cache
            && c.shared
            && cluster.is_none()
        {
            self.err(
                root_path.key("cache").key("shared"),
                "`shared = true` needs a [cluster] section: the shared tier lives in the fleet's Redis; valid: false, or add [cluster] with `redis = \"redis://...\"`",
            );
        }

        let upstream_names =
            self.unique_names(&upstreams_v, &root_path.key("upstreams"), "upstream");
        let mut upstreams = Vec::new();
        for (i, v) in upstreams_v.into_iter().enumerate() {
            if let Some(u) = self.upstream(v, root_path.key("upstreams").index(i)) {
                upstreams.push(u);
            }
        }

        if routes_v.is_empty() {
            self.err(
                root_path.clone(),
                "no routes; valid: at least one [[routes]] with a name and [[routes.versions]]",
            );
        }
        self.unique_names(&routes_v, &root_path.key("routes"), "route");
        let mut routes = Vec::new();
        for (i, v) in routes_v.into_iter().enumerate() {
            if let Some(r) = self.route(v, root_path.key("routes").index(i), &upstream_names) {
                routes.push(r);
            }
        }

        Some(Config {
            source: source.to_path_buf(),
            server: server?,
            admin: admin?,
            log: log?,
            tracing,
            cache: cache?,
            state,
            cluster,
            upstreams,
            routes,
        })
    }

    fn array_of_tables(&mut self, v: Option<Value>, name: &str) -> Vec<Value> {
        let path = KeyPath::root().key(name);
        let valid = format!("; valid: [[{name}]] entries");
        match v {
            None => Vec::new(),
            Some(Value::Array(items)) => self.tables(items, &path, &valid),
            Some(other) => {
                self.err(
                    path,
                    format!(
                        "expected an array of tables, found {}{valid}",
                        describe(&other)
                    ),
                );
                Vec::new()
            }
        }
    }

    /// Report duplicate `name`s among table entries; return the names in
    /// order (read from the tree, so they exist even when an entry has
    /// another error).
    fn unique_names(&mut self, items: &[Value], path: &KeyPath, what: &str) -> Vec<String> {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut names = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Some(name) = table_name(item) else {
                continue;
            };
            if let Some(first) = seen.get(name) {
                self.err(
                    path.index(i).key("name"),
                    format!("duplicate {what} name `{name}` (first at {}); valid: a name not used by another {what}", path.index(*first)),
                );
            } else {
                seen.insert(name, i);
                names.push(name.to_string());
            }
        }
        names
    }

    /// An array whose entries must all be tables.
    fn entries(&mut self, v: Option<Vec<Value>>, p: &KeyPath) -> Vec<Value> {
        self.tables(v.unwrap_or_default(), p, "")
    }

    /// The entries of `items` that are tables; each other one is an error
    /// at its index, its message ending with `valid`.
    fn tables(&mut self, items: Vec<Value>, p: &KeyPath, valid: &str) -> Vec<Value> {
        items
            .into_iter()
            .enumerate()
            .filter_map(|(i, item)| {
                if item.is_table() {
                    Some(item)
                } else {
                    self.err(
                        p.index(i),
                        format!("expected a table, found {}{valid}", describe(&item)),
                    );
                    None
                }
            })
            .collect()
    }
}
