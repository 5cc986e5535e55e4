//! The admin API (SPEC §10), on its own listener, never on the traffic
//! port. For now: `/healthz`, `/readyz`, `/metrics`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::gateway::Gateway;
use crate::proxy::ProxyBody;

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
                async move { Ok::<_, Infallible>(route(&gateway, req)) }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn route(gateway: &Gateway, req: Request<Incoming>) -> Response<ProxyBody> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => json(StatusCode::OK, r#"{"status":"ok"}"#.into()),
        (&Method::GET, "/readyz") => {
            if gateway.is_draining() {
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    r#"{"status":"draining"}"#.into(),
                )
            } else {
                json(StatusCode::OK, r#"{"status":"ready"}"#.into())
            }
        }
        (&Method::GET, "/metrics") => {
            let mut r = Response::new(ProxyBody::plain(Bytes::from(crate::telemetry::render(
                &gateway.prometheus,
            ))));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        _ => json(
            StatusCode::NOT_FOUND,
            r#"{"error":"no such admin endpoint"}"#.into(),
        ),
    }
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
