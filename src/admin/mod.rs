//! The admin API (SPEC §10), on its own listener, never on the traffic
//! port: the traffic listener routes `/status` or `/reload` like any other
//! request.
//!
//! | method and path  | answer                                                        | token |
//! |------------------|---------------------------------------------------------------|-------|
//! | `GET /healthz`   | 200 `{"status":"ok"}` while the process runs                  | no    |
//! | `GET /readyz`    | 200 `{"status":"ready"}`; 503 `{"status":"draining"}`         | no    |
//! | `GET /metrics`   | 200 Prometheus text                                           | no    |
//! | `GET /status`    | 200 JSON, see [`status`]                                      | yes   |
//! | `POST /reload`   | 200 `{"generation":N}`; 400 `{"error":"..."}`, old config stays | yes |
//! | `POST /cache/purge` | 200 `{"purged":N}`: every cache entry dropped (with `cache.shared`, also `"shared_purged":M`, the fleet's; 503 if Redis failed) | yes |
//! | `POST /routes/{route}/rollout/{action}` | 200 with the new rollout state; 404 unknown route or action; 409 not allowed now | yes |
//!
//! `HEAD` is accepted wherever `GET` is. Every error is JSON
//! `{"error":"..."}`: 404 for an unknown path, 405 (with `allow`) for a
//! known path and the wrong method, 401 (with `www-authenticate: Bearer`)
//! for a missing or wrong token. Path and method are checked before the
//! token: the endpoint list is public (it is in the spec), and a 404/405
//! tells an unauthenticated caller nothing more.
//!
//! The token (`admin.token_env`) is read from the runtime snapshot on each
//! request, so a reload that changes it rotates it at once. It is never
//! logged.

pub mod status;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::gateway::Gateway;
use crate::proxy::ProxyBody;
use crate::rollout::registry::ActError;
use crate::secret::Secret;

pub async fn serve(gateway: Arc<Gateway>, listener: TcpListener) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(10));
    let builder = Arc::new(builder);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let gateway = Arc::clone(&gateway);
        let builder = Arc::clone(&builder);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let gateway = Arc::clone(&gateway);
                async move { Ok::<_, Infallible>(route(&gateway, req).await) }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The admin endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Healthz,
    Readyz,
    Metrics,
    Status,
    Reload,
    CachePurge,
    /// `/routes/{route}/rollout/{action}`
    Rollout,
}

impl Endpoint {
    fn from_path(path: &str) -> Option<Endpoint> {
        Some(match path {
            "/healthz" => Endpoint::Healthz,
            "/readyz" => Endpoint::Readyz,
            "/metrics" => Endpoint::Metrics,
            "/status" => Endpoint::Status,
            "/reload" => Endpoint::Reload,
            "/cache/purge" => Endpoint::CachePurge,
            p if rollout_path(p).is_some() => Endpoint::Rollout,
            _ => return None,
        })
    }

    /// The `allow` header value.
    fn allow(self) -> &'static str {
        match self {
            Endpoint::Reload | Endpoint::CachePurge | Endpoint::Rollout => "POST",
            _ => "GET, HEAD",
        }
    }

    fn accepts(self, method: &Method) -> bool {
        match self {
            Endpoint::Reload | Endpoint::CachePurge | Endpoint::Rollout => method == Method::POST,
            _ => method == Method::GET || method == Method::HEAD,
        }
    }

    /// Probes and scrapers carry no credentials: these stay open even when
    /// a token is configured (SPEC §2, `admin.token_env`).
    fn open(self) -> bool {
        matches!(
            self,
            Endpoint::Healthz | Endpoint::Readyz | Endpoint::Metrics
        )
    }
}

async fn route(gateway: &Gateway, req: Request<Incoming>) -> Response<ProxyBody> {
    let Some(endpoint) = Endpoint::from_path(req.uri().path()) else {
        return error(
            StatusCode::NOT_FOUND,
            "no such admin endpoint; valid: GET /healthz, GET /readyz, GET /metrics, GET /status, POST /reload, POST /cache/purge, POST /routes/{route}/rollout/{action}",
        );
    };
    if !endpoint.accepts(req.method()) {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!(
                "{} is not allowed on {}; allowed: {}",
                req.method(),
                req.uri().path(),
                endpoint.allow()
            ),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(endpoint.allow()));
        return r;
    }
    if !endpoint.open() {
        // Loaded per request, not cached: a reload rotates the token.
        let expected = gateway
            .data_plane
            .runtime_guard()
            .config
            .admin
            .token
            .clone();
        if let Some(expected) = expected
            && !authorized(&expected, req.headers())
        {
            tracing::debug!(
                path = req.uri().path(),
                "admin request without a valid bearer token"
            );
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong admin token; send Authorization: Bearer <token>",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    match endpoint {
        Endpoint::Healthz => json(StatusCode::OK, r#"{"status":"ok"}"#.into()),
        Endpoint::Readyz => {
            if gateway.is_draining() {
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    r#"{"status":"draining"}"#.into(),
                )
            } else {
                json(StatusCode::OK, r#"{"status":"ready"}"#.into())
            }
        }
        Endpoint::Metrics => {
            // Breaker states move with time (open -> half-open) as well as
            // with traffic: read them at scrape time.
            for u in gateway.data_plane.runtime_guard().upstreams.iter() {
                metrics::gauge!(crate::telemetry::names::BREAKER_STATE, "upstream" => u.name.to_string())
                    .set(f64::from(u.state.breaker.state().as_gauge()));
            }
            metrics::gauge!(crate::telemetry::names::CACHE_BYTES)
                .set(gateway.data_plane.cache.status().bytes as f64);
            let mut r = Response::new(ProxyBody::plain(Bytes::from(crate::telemetry::render(
                &gateway.prometheus,
            ))));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        Endpoint::Status => match serde_json::to_string(&status::build(gateway)) {
            Ok(body) => json(StatusCode::OK, body),
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot encode the status: {e}"),
            ),
        },
        // Validation and compile errors are both problems with the file the
        // operator asked to load: 400, and the running config stays.
        Endpoint::Reload => match gateway.reload().await {
            Ok(generation) => json(
                StatusCode::OK,
                serde_json::json!({ "generation": generation }).to_string(),
            ),
            Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
        },
        Endpoint::Rollout => {
            let Some((route, action)) = rollout_path(req.uri().path()) else {
                return error(StatusCode::NOT_FOUND, "no such admin endpoint");
            };
            let Some(action) = crate::rollout::Action::parse(action) else {
                return error(
                    StatusCode::NOT_FOUND,
                    &format!(
                        "unknown rollout action {action:?}; valid: advance, promote, pause, resume, abort, restart"
                    ),
                );
            };
            match gateway.rollout_action(route, action).await {
                Ok(status) => match serde_json::to_string(&serde_json::json!({
                    "route": route,
                    "action": action.as_str(),
                    // SPEC §10: "200 with the new state".
                    "state": status.state,
                    "rollout": status,
                })) {
                    Ok(body) => json(StatusCode::OK, body),
                    Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
                },
                Err(ActError::UnknownRoute) => error(
                    StatusCode::NOT_FOUND,
                    &format!("route {route:?} does not exist or has no rollout"),
                ),
                Err(ActError::NotAllowed(n)) => error(
                    StatusCode::CONFLICT,
                    &format!(
                        "{} is not allowed while the rollout is {}",
                        n.action, n.state
                    ),
                ),
                Err(ActError::Conflict(m)) => error(StatusCode::CONFLICT, &m),
                Err(ActError::Unavailable(m)) => error(StatusCode::SERVICE_UNAVAILABLE, &m),
            }
        }
        Endpoint::CachePurge => {
            let purged = gateway.data_plane.cache.purge();
            tracing::info!(purged, "cache purged");
            // With `cache.shared`: the fleet's entries too (SPEC §10).
            let shared = match (
                &gateway.cluster,
                gateway.data_plane.runtime_guard().config.cache.shared,
            ) {
                (Some(cluster), true) => Some(cluster.purge_shared_cache().await),
                _ => None,
            };
            match shared {
                None => json(
                    StatusCode::OK,
                    serde_json::json!({ "purged": purged }).to_string(),
                ),
                Some(Ok(n)) => {
                    tracing::info!(purged = n, "shared cache tier purged");
                    json(
                        StatusCode::OK,
                        serde_json::json!({ "purged": purged, "shared_purged": n }).to_string(),
                    )
                }
                Some(Err(e)) => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!(
                        "this replica's {purged} entries were purged, the fleet's shared tier was not: {e}"
                    ),
                ),
            }
        }
    }
}

/// `/routes/{route}/rollout/{action}` → (route, action).
fn rollout_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/routes/")?;
    let (route, action) = rest.split_once("/rollout/")?;
    (!route.is_empty() && !route.contains('/') && !action.is_empty() && !action.contains('/'))
        .then_some((route, action))
}

/// Whether the request carries `Authorization: Bearer <expected>`,
/// compared in constant time (see [`Secret`]).
fn authorized(expected: &str, headers: &HeaderMap) -> bool {
    Secret::new(expected).bearer_matches(headers)
}

fn error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    json(status, serde_json::json!({ "error": message }).to_string())
}

fn json(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::plain(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(auth).expect("header value"),
        );
        h
    }

    #[test]
    fn bearer_tokens_compare_exactly() {
        assert!(authorized("s3cret", &headers("Bearer s3cret")));
        assert!(authorized("s3cret", &headers("bearer  s3cret")));
        assert!(!authorized("s3cret", &headers("Bearer s3cre")));
        assert!(!authorized("s3cret", &headers("Bearer s3cret2")));
        assert!(!authorized("s3cret", &headers("Basic s3cret")));
        assert!(!authorized("s3cret", &headers("Bearer")));
        assert!(!authorized("s3cret", &headers("Bearer ")));
        assert!(!authorized("s3cret", &HeaderMap::new()));
    }

    #[test]
    fn endpoints_know_their_methods() {
        assert_eq!(Endpoint::from_path("/reload"), Some(Endpoint::Reload));
        assert!(Endpoint::Reload.accepts(&Method::POST));
        assert!(!Endpoint::Reload.accepts(&Method::GET));
        assert!(Endpoint::Status.accepts(&Method::HEAD));
        assert!(!Endpoint::Status.accepts(&Method::DELETE));
        assert_eq!(Endpoint::from_path("/status/"), None);
        assert!(Endpoint::Metrics.open() && !Endpoint::Status.open());
    }
}
