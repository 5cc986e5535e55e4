//! OpenTelemetry trace export over OTLP/HTTP with JSON encoding.
//!
//! One span per request (`cutover.request`, cutover's own span id, the one
//! upstreams see as their parent in `traceparent`) and one child span per
//! upstream attempt (`cutover.attempt`), with the version set as
//! attributes (`cutover.version`, `cutover.deps.<key>`, ...).
//!
//! Why not the `opentelemetry-otlp` crate: its exporters bring their own
//! HTTP stack (blocking reqwest, or tonic for gRPC) and their own runtime
//! assumptions; this exporter rides the hyper client cutover already has.
//! The request path only `try_send`s a finished span into a bounded queue
//! (full: dropped and counted); a background task batches spans and POSTs
//! them to `{otlp_endpoint}/v1/traces` (the collector's OTLP/HTTP port,
//! 4318 by convention).
//!
//! An `https://` endpoint is reached over rustls, trusting the system roots
//! (`SSL_CERT_FILE` / `SSL_CERT_DIR` override them, as with OpenSSL) plus
//! the CA certificates of `tracing.otlp_ca_file`, for a collector behind a
//! private CA.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use metrics::Counter;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::sync::mpsc;

use super::access_log::json_str;

const QUEUE: usize = 8192;
const BATCH: usize = 512;
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// One finished span.
#[derive(Debug)]
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub name: &'static str,
    /// 1 = internal, 2 = server, 3 = client.
    pub kind: u8,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(String, String)>,
    pub error: bool,
}

pub struct Exporter {
    tx: mpsc::Sender<Span>,
    /// Share of traces kept that arrive without a sampled parent.
    sample_threshold: u64,
    dropped: Counter,
}

impl Exporter {
    /// Start the export task on the current runtime. `endpoint` is the
    /// collector's base URL (`http://host:4318`, or `https://`) or its full
    /// traces URL; `ca_pem` adds trusted CA certificates for `https://`.
    pub fn spawn(
        endpoint: &str,
        sample_ratio: f64,
        ca_pem: Option<&[u8]>,
    ) -> Result<Exporter, String> {
        let base = endpoint.trim_end_matches('/');
        let url = if base.ends_with("/v1/traces") {
            base.to_string()
        } else {
            format!("{base}/v1/traces")
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("tracing.otlp_endpoint {url:?}: {e}"))?;
        let client = export_client(ca_pem)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(client, uri, rx));
        Ok(Exporter {
            tx,
            sample_threshold: (sample_ratio.clamp(0.0, 1.0) * u64::MAX as f64) as u64,
            dropped: metrics::counter!(super::names::TRACE_SPANS_DROPPED_TOTAL),
        })
    }

    /// Keep this trace? A sampled parent decides; otherwise the trace id's
    /// first 8 bytes against the ratio (the same decision on every replica).
    pub fn sampled(&self, trace_id: &[u8; 16], parent_sampled: Option<bool>) -> bool {
        match parent_sampled {
            Some(s) => s,
            None => {
                let mut first = [0u8; 8];
                first.copy_from_slice(&trace_id[..8]);
                u64::from_be_bytes(first) <= self.sample_threshold
            }
        }
    }

    pub fn export(&self, span: Span) {
        if self.tx.try_send(span).is_err() {
            self.dropped.increment(1);
        }
    }
}

type ExportClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// An HTTP/1.1 client for `http://` and `https://` collectors.
fn export_client(ca_pem: Option<&[u8]>) -> Result<ExportClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A single unparsable system certificate must not disable TLS.
        let _ = roots.add(cert);
    }
    if let Some(pem) = ca_pem {
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("tracing.otlp_ca_file: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("tracing.otlp_ca_file: {e}"))?;
        }
    }
    let provider = crate::crypto::provider();
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("OTLP TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

async fn run(client: ExportClient, uri: http::Uri, mut rx: mpsc::Receiver<Span>) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let deadline = tokio::time::sleep(FLUSH_EVERY);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                span = rx.recv() => match span {
                    Some(s) => {
                        batch.push(s);
                        if batch.len() >= BATCH {
                            break;
                        }
                    }
                    None => {
                        send(&client, &uri, &batch).await;
                        return;
                    }
                },
                () = &mut deadline => break,
            }
        }
        if !batch.is_empty() {
            send(&client, &uri, &batch).await;
            batch.clear();
        }
    }
}

async fn send(client: &ExportClient, uri: &http::Uri, spans: &[Span]) {
    if spans.is_empty() {
        return;
    }
    let body = encode(spans);
    let req = http::Request::post(uri.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)));
    let Ok(req) = req else { return };
    match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
        Ok(Ok(resp)) if resp.status().is_success() => {}
        Ok(Ok(resp)) => tracing::warn!(status = %resp.status(), "OTLP collector refused spans"),
        Ok(Err(e)) => tracing::warn!(error = %e, "OTLP export failed"),
        Err(_) => tracing::warn!("OTLP export timed out"),
    }
}

/// The OTLP/JSON `ExportTraceServiceRequest` for a batch.
pub fn encode(spans: &[Span]) -> String {
    let mut s = String::with_capacity(512 * spans.len());
    s.push_str(r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"cutover"}}]},"scopeSpans":[{"scope":{"name":"cutover"},"spans":["#);
    for (i, span) in spans.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(
            s,
            r#"{{"traceId":"{}","spanId":"{}","#,
            hex(&span.trace_id),
            hex(&span.span_id)
        );
        if let Some(p) = span.parent_span_id {
            let _ = write!(s, r#""parentSpanId":"{}","#, hex(&p));
        }
        let _ = write!(
            s,
            r#""name":"{}","kind":{},"startTimeUnixNano":"{}","endTimeUnixNano":"{}","attributes":["#,
            span.name,
            span.kind,
            nanos(span.start),
            nanos(span.end)
        );
        for (j, (k, v)) in span.attributes.iter().enumerate() {
            if j > 0 {
                s.push(',');
            }
            s.push_str(r#"{"key":"#);
            json_str(&mut s, k);
            s.push_str(r#","value":{"stringValue":"#);
            json_str(&mut s, v);
            s.push_str("}}");
        }
        let _ = write!(
            s,
            r#"],"status":{{"code":{}}}}}"#,
            if span.error { 2 } else { 1 }
        );
    }
    s.push_str("]}]}]}");
    s
}

fn nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_valid_otlp_json() {
        let now = SystemTime::now();
        let span = Span {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: Some([3; 8]),
            name: "cutover.request",
            kind: 2,
            start: now,
            end: now + Duration::from_millis(5),
            attributes: vec![
                ("cutover.route".into(), "chat".into()),
                ("cutover.deps.prompt".into(), "p\"1".into()),
            ],
            error: false,
        };
        let v: serde_json::Value = serde_json::from_str(&encode(&[span])).expect("json");
        let s = &v["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(s["traceId"], "01010101010101010101010101010101");
        assert_eq!(s["parentSpanId"], "0303030303030303");
        assert_eq!(s["attributes"][1]["value"]["stringValue"], "p\"1");
        assert_eq!(s["kind"], 2);
    }
}
