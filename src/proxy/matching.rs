//! Phase: match. The route a request takes: the first in file order whose
//! `match` accepts its method, path, host and headers. No match is a 404.

use http::request::Parts;

use crate::routing::matcher;
use crate::runtime::Runtime;

/// The index of the first matching route.
pub fn route(rt: &Runtime, parts: &Parts) -> Option<usize> {
    let host = matcher::request_host(&parts.uri, &parts.headers);
    rt.route_index
        .find(&parts.method, parts.uri.path(), host, &parts.headers)
}
