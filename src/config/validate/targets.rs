//! What a route sends requests to: `[[routes.versions]]`,
//! `[[routes.shadows]]` and `fallbacks`, which share a target's fields
//! (upstream, headers, `set_json`, cost, deps).

use std::collections::HashMap;
use std::time::Duration;

use crate::config::units::describe;

use super::{one_of, table_name};

use crate::config::model::*;
use crate::config::raw::*;
use crate::config::spans::KeyPath;

use super::Validator;

/// The fields a version, a shadow and a table fallback share. Their raw
/// types stay three serde structs (a `flatten`ed one would hide these keys
/// from the valid-keys list of unknown-key messages), so `target_fields!`
/// moves the six out of whichever one is at hand.
pub(super) struct TargetFields {
    name: String,
    upstream: String,
    set_headers: Option<Table>,
    set_json: Option<Table>,
    cost: Option<RawCost>,
    deps: Option<Table>,
}

macro_rules! target_fields {
    ($raw:ident) => {
        TargetFields {
            name: $raw.name,
            upstream: $raw.upstream,
            set_headers: $raw.set_headers,
            set_json: $raw.set_json,
            cost: $raw.cost,
            deps: $raw.deps,
        }
    };
}

impl Validator<'_> {
    pub(super) fn target(
        &mut self,
        p: &KeyPath,
        upstreams: &[String],
        fields: TargetFields,
    ) -> TargetConfig {
        let TargetFields { name, upstream, .. } = &fields;
        if name.is_empty() {
            self.err(p.key("name"), "empty name; valid: a non-empty name");
        }
        if !upstreams.contains(upstream) {
            let names: Vec<&str> = upstreams.iter().map(String::as_str).collect();
            self.err(
                p.key("upstream"),
                format!("unknown upstream `{upstream}`; {}", one_of(&names)),
            );
        }
        let set_headers = self.headers(fields.set_headers, &p.key("set_headers"));
        let set_json = self.json_map(fields.set_json, &p.key("set_json"));
        let raw_cost = fields.cost.unwrap_or_default();
        let mut price = |v: Option<f64>, key: &str| {
            self.ranged(
                v,
                p.key("cost").key(key),
                |x: f64| x >= 0.0,
                "0 or more (USD per million tokens)",
            )
            .unwrap_or(0.0)
        };
        let cost = Cost {
            input_per_mtok: price(raw_cost.input_per_mtok, "input_per_mtok"),
            output_per_mtok: price(raw_cost.output_per_mtok, "output_per_mtok"),
        };
        let deps = self.json_map(fields.deps, &p.key("deps"));
        TargetConfig {
            name: fields.name,
            upstream: fields.upstream,
            set_headers,
            set_json,
            cost,
            deps,
        }
    }

    pub(super) fn version(
        &mut self,
        v: Value,
        p: KeyPath,
        upstreams: &[String],
        single: bool,
    ) -> Option<VersionConfig> {
        let raw: RawVersion = de_unit(v, &p, &mut self.issues)?;
        let weight = match raw.weight {
            None if single => Some(WeightBps::FULL),
            None => {
                self.err(p.clone(), "missing required key `weight`; valid: a percent with at most two decimals (a route's weights sum to 100)");
                None
            }
            Some(w) => self.percent(w, p.key("weight"), "weight"),
        };
        let target = self.target(&p, upstreams, target_fields!(raw));
        Some(VersionConfig {
            target,
            weight: weight?,
        })
    }

    pub(super) fn shadow(
        &mut self,
        v: Value,
        p: KeyPath,
        upstreams: &[String],
    ) -> Option<ShadowConfig> {
        let raw: RawShadow = de_unit(v, &p, &mut self.issues)?;
        let percent = match raw.percent {
            None => Some(WeightBps::FULL),
            Some(x) => self.percent(x, p.key("percent"), "percent"),
        };
        let max_in_flight = match raw.max_in_flight {
            None => None,
            Some(n) => {
                let n = self.at_least_one(Some(n), p.key("max_in_flight"), 64);
                Some(self.usize_of(n, p.key("max_in_flight")))
            }
        };
        let timeout =
            self.positive_duration(raw.timeout, p.key("timeout"), Duration::from_secs(60));
        let compare = raw.compare.unwrap_or_default();
        for (i, ptr) in compare.iter().enumerate() {
            if !(ptr.is_empty() || ptr.starts_with('/')) {
                self.err(p.key("compare").index(i), format!("bad JSON pointer {ptr:?}; valid: \"\" (the whole body) or a pointer starting with `/`, like \"/choices/0/message/content\""));
            }
        }
        let target = self.target(&p, upstreams, target_fields!(raw));
        Some(ShadowConfig {
            target,
            percent: percent?,
            max_in_flight,
            timeout,
            compare,
        })
    }

    pub(super) fn fallbacks(
        &mut self,
        v: Option<Vec<Value>>,
        p: &KeyPath,
        versions: &[String],
        upstreams: &[String],
    ) -> Vec<FallbackConfig> {
        let mut out = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (k, item) in v.unwrap_or_default().into_iter().enumerate() {
            let ip = p.index(k);
            let (name, name_path) = match &item {
                Value::String(s) => (s.clone(), ip.clone()),
                Value::Table(_) => match table_name(&item) {
                    Some(n) => (n.to_string(), ip.key("name")),
                    None => (String::new(), ip.clone()),
                },
                _ => (String::new(), ip.clone()),
            };
            if !name.is_empty() {
                if let Some(first) = seen.get(&name) {
                    self.err(name_path.clone(), format!("duplicate fallback name `{name}` (first at {}); valid: each fallback once", p.index(*first)));
                } else {
                    seen.insert(name.clone(), k);
                }
            }
            match item {
                Value::String(s) => {
                    if versions.contains(&s) {
                        out.push(FallbackConfig::Version(s));
                    } else {
                        let names: Vec<&str> = versions.iter().map(String::as_str).collect();
                        self.err(
                            ip,
                            format!("unknown fallback name `{s}`; valid: a version of this route ({}), or a table {{ name, upstream, ... }}", names.join(", ")),
                        );
                    }
                }
                Value::Table(_) => {
                    if let Some(raw) = de_unit::<RawFallback>(item, &ip, &mut self.issues) {
                        let t = self.target(&ip, upstreams, target_fields!(raw));
                        out.push(FallbackConfig::Target(t));
                    }
                }
                other => self.err(ip, format!("expected a version name or a table, found {}; valid: \"v1\" or {{ name = \"small\", upstream = \"openai\" }}", describe(&other))),
            }
        }
        out
    }
}
