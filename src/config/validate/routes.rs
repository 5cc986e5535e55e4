//! `[[routes]]`: the match rules, sticky sources, pinning and session
//! headers, and the sections of a route that have modules of their own
//! (versions, shadows and fallbacks in `targets`; `cache`, `refusal`,
//! `rollout`).

use http::{HeaderName, Method};

use crate::config::units::describe;

use crate::config::model::*;
use crate::config::raw::*;
use crate::config::spans::KeyPath;

use super::Validator;

impl Validator<'_> {
    pub(super) fn route(
        &mut self,
        v: Value,
        p: KeyPath,
        upstreams: &[String],
    ) -> Option<RouteConfig> {
        let raw: RawRoute = de_unit(v, &p, &mut self.issues)?;
        if raw.name.is_empty() {
            self.err(p.key("name"), "empty name; valid: a non-empty unique name");
        }
        let matcher = self.matcher(raw.matcher, &p.key("match"));
        let sticky = raw
            .sticky
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter_map(|(i, s)| self.sticky(s, p.key("sticky").index(i)))
            .collect();
        let pin_header = raw
            .pin_header
            .and_then(|h| self.header_name(&h, p.key("pin_header")));
        let pin_token = raw.pin_token_env.as_deref().and_then(|name| {
            self.token_env(name, p.key("pin_token_env"), "the pin token", "the key")
        });
        if raw.pin_token_env.is_some() && pin_header.is_none() {
            self.err(
                p.key("pin_token_env"),
                "pin_token_env without pin_header guards nothing; valid: set `pin_header` too, or remove `pin_token_env`",
            );
        }

        let versions_v = self.entries(raw.versions, &p.key("versions"));
        if versions_v.is_empty() {
            self.err(p.clone(), "route has no versions; valid: at least one [[routes.versions]] with name, upstream and weight");
        }
        let version_names = self.unique_names(&versions_v, &p.key("versions"), "version");
        let single = versions_v.len() == 1;
        let mut versions = Vec::new();
        let mut weights_ok = true;
        for (j, v) in versions_v.into_iter().enumerate() {
            match self.version(v, p.key("versions").index(j), upstreams, single) {
                Some(ver) => versions.push(ver),
                None => weights_ok = false,
            }
        }
        if weights_ok && !versions.is_empty() {
            let sum: u32 = versions.iter().map(|v| u32::from(v.weight.get())).sum();
            if sum != 10_000 {
                let list: Vec<String> = versions
                    .iter()
                    .map(|v| format!("{} {}", v.target.name, v.weight))
                    .collect();
                self.err(
                    p.key("versions"),
                    format!("version weights sum to {}.{:02} ({}); valid: weights that sum to exactly 100", sum / 100, sum % 100, list.join(" + ")),
                );
            }
        }

        let shadows_v = self.entries(raw.shadows, &p.key("shadows"));
        self.unique_names(&shadows_v, &p.key("shadows"), "shadow");
        let shadows = shadows_v
            .into_iter()
            .enumerate()
            .filter_map(|(j, v)| self.shadow(v, p.key("shadows").index(j), upstreams))
            .collect();

        let fallbacks = self.fallbacks(
            raw.fallbacks,
            &p.key("fallbacks"),
            &version_names,
            upstreams,
        );

        let cache = raw.cache.and_then(|v| self.route_cache(v, p.key("cache")));
        let refusal = match raw.refusal {
            Some(v) => self.refusal(v, p.key("refusal")),
            None => RefusalConfig::default(),
        };
        let rollout = raw
            .rollout
            .and_then(|v| self.rollout(v, p.key("rollout"), &version_names));
        let session_header = raw
            .session_header
            .and_then(|h| self.header_name(&h, p.key("session_header")));
        if let (Some(session), Some(pin)) = (&session_header, &pin_header)
            && session == pin
        {
            self.err(
                p.key("session_header"),
                format!("`{session}` is also the pin_header; valid: a header of its own, like \"mcp-session-id\""),
            );
        }

        Some(RouteConfig {
            salt: raw.salt.unwrap_or_else(|| raw.name.clone()),
            name: raw.name,
            matcher,
            sticky,
            pin_header,
            pin_token_env: raw.pin_token_env,
            pin_token,
            versions,
            shadows,
            fallbacks,
            cache,
            refusal,
            rollout,
            session_header,
        })
    }

    pub(super) fn matcher(&mut self, v: Option<Value>, p: &KeyPath) -> RouteMatch {
        let raw: RawMatch = match v {
            Some(v) => de_unit(v, p, &mut self.issues).unwrap_or_default(),
            None => RawMatch::default(),
        };
        let path_prefix = raw.path_prefix.unwrap_or_else(|| "/".to_string());
        if !path_prefix.starts_with('/') {
            self.err(p.key("path_prefix"), format!("bad path prefix {path_prefix:?}; valid: a path starting with `/`, like \"/v1/\""));
        }
        let methods = raw
            .methods
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                let upper = m.to_ascii_uppercase();
                match Method::from_bytes(upper.as_bytes()) {
                    Ok(m) if !upper.is_empty() => Some(m),
                    _ => {
                        self.err(p.key("methods").index(i), format!("invalid HTTP method {m:?}; valid: a method like GET, POST, PUT, DELETE"));
                        None
                    }
                }
            })
            .collect();
        let host = raw.host.map(|h| h.to_ascii_lowercase());
        if host
            .as_deref()
            .is_some_and(|h| h.is_empty() || h.contains(['/', ' ']))
        {
            self.err(
                p.key("host"),
                "bad host; valid: a host name like \"api.example.com\"",
            );
        }
        let mut headers = Vec::new();
        for (k, v) in raw.headers.unwrap_or_default() {
            let hp = p.key("headers").key(&k);
            let name = self.header_name(&k, hp.clone());
            match (name, v.as_str()) {
                (Some(n), Some(s)) => headers.push((n, s.to_string())),
                (_, None) => self.err(hp, format!("expected a string, found {}", describe(&v))),
                _ => {}
            }
        }
        RouteMatch {
            path_prefix,
            methods,
            host,
            headers,
        }
    }

    pub(super) fn sticky(&mut self, s: &str, path: KeyPath) -> Option<StickySource> {
        const VALID: &str = "valid: header:NAME, cookie:NAME, query:NAME or client_ip";
        if s == "client_ip" {
            return Some(StickySource::ClientIp);
        }
        let source = match s.split_once(':') {
            Some(("header", name)) => HeaderName::from_bytes(name.as_bytes())
                .ok()
                .map(StickySource::Header),
            Some(("cookie", name)) if !name.is_empty() => {
                Some(StickySource::Cookie(name.to_string()))
            }
            Some(("query", name)) if !name.is_empty() => {
                Some(StickySource::Query(name.to_string()))
            }
            _ => None,
        };
        if source.is_none() {
            self.err(path, format!("bad sticky source {s:?}; {VALID}"));
        }
        source
    }
}
