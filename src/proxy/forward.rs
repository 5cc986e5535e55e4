//! Building the request an upstream receives: the target's header rules,
//! `Host`, `x-cutover-version`, `set_json` applied to the shared body, and
//! the origin-form URI with the upstream's path prefix.

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{Method, Request};

use super::headers::X_CUTOVER_VERSION;
use super::json;
use crate::runtime::Target;
use crate::telemetry::AttemptResult;
use crate::telemetry::metrics::rare;
use crate::upstream::RequestBody;

/// The request to `target`'s upstream. `headers` are the client's, already
/// prepared for forwarding (hop-by-hop removed, `X-Forwarded-*` set).
pub fn upstream_request(
    target: &Target,
    route: &str,
    method: &Method,
    path_and_query: Option<&http::uri::PathAndQuery>,
    mut headers: HeaderMap,
    body: &Bytes,
) -> Result<Request<RequestBody>, AttemptResult> {
    let upstream = &target.upstream;
    for name in &upstream.config.remove_headers {
        headers.remove(name);
    }
    // Upstream-wide headers first, then the version's own: the more
    // specific setting wins.
    for (name, value) in upstream
        .config
        .set_headers
        .iter()
        .chain(target.set_headers.iter())
    {
        headers.insert(name.clone(), value.clone());
    }
    headers.insert(header::HOST, upstream.host_header.clone());
    headers.insert(X_CUTOVER_VERSION.clone(), target.name_header.clone());

    let body = match &target.set_json {
        None => body.clone(),
        Some(fields) => json::set_fields(body, fields).unwrap_or_else(|| {
            // Forwarded unchanged (SPEC §3), and counted.
            rare::set_json_skipped(route, &target.name).increment(1);
            body.clone()
        }),
    };
    let uri = upstream
        .origin_uri(path_and_query)
        .map_err(|_| AttemptResult::ConnectError)?;
    let mut req = Request::new(RequestBody::new(body));
    *req.method_mut() = method.clone();
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    Ok(req)
}
