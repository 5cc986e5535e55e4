//! `cutover mock-backend --mcp`: a minimal MCP tool server over the
//! streamable HTTP transport, on any path.
//!
//! * `POST` `initialize` opens a session: the answer carries a new
//!   `Mcp-Session-Id`. Every other `POST`, `GET` and `DELETE` must carry a
//!   session id this server issued: none is `400`, an unknown (or ended)
//!   one is `404` with a JSON-RPC error, which is how a client learns to
//!   start a new session.
//! * Notifications (`notifications/initialized`, …) are answered `202`.
//! * `tools/list` offers `whoami` (answers "served by NAME, session ID",
//!   so tests can see which version served) and `echo` (answers its `text`
//!   argument); `tools/call` answers as an SSE stream when the client
//!   accepts one, as JSON otherwise; `ping` answers `{}`.
//! * `GET` opens the server-to-client SSE stream: a `notifications/message`
//!   event at once (so a proxy commits the response at once), then a
//!   keep-alive comment every 10 s, until the client leaves or the server
//!   stops.
//! * `DELETE` ends the session.
//!
//! Sessions live in memory: a restarted mock forgets them, as a real
//! server without shared storage would.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{MockBody, Shared, full};

/// The session header (MCP's `Mcp-Session-Id`, case-insensitive).
pub const SESSION_HEADER: &str = "mcp-session-id";
/// The protocol version answered when the client names none.
const PROTOCOL_VERSION: &str = "2025-06-18";
/// Silence between keep-alive comments on the GET stream: under a
/// proxy's usual idle timeout.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// The sessions this server has opened and not ended.
#[derive(Debug, Default)]
pub struct Sessions {
    /// A std mutex: held only to insert, look up or remove, never across
    /// an `.await`.
    live: Mutex<HashSet<String>>,
}

impl Sessions {
    fn open(&self) -> String {
        let id = format!("{:032x}", rand::random::<u128>());
        self.lock().insert(id.clone());
        id
    }

    fn is_live(&self, id: &str) -> bool {
        self.lock().contains(id)
    }

    fn end(&self, id: &str) -> bool {
        self.lock().remove(id)
    }

    /// Sessions open now.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One MCP request, after the common behaviours (latency, faults).
pub(super) fn respond(
    shared: &Shared,
    method: &Method,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response<MockBody> {
    let session = headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let accepts_sse = headers.get_all(ACCEPT).iter().any(|v| {
        v.as_bytes()
            .windows(17)
            .any(|w| w.eq_ignore_ascii_case(b"text/event-stream"))
    });
    match *method {
        Method::POST => post(shared, session.as_deref(), accepts_sse, body),
        Method::GET => match live_session(shared, session.as_deref()) {
            Err(refused) => refused.response(shared),
            Ok(id) => event_stream(shared, id),
        },
        Method::DELETE => match live_session(shared, session.as_deref()) {
            Err(refused) => refused.response(shared),
            Ok(id) => {
                shared.sessions.end(id);
                shared.response(StatusCode::OK, full(Bytes::new()))
            }
        },
        _ => {
            let mut response = rpc_error(
                shared,
                StatusCode::METHOD_NOT_ALLOWED,
                Value::Null,
                -32600,
                "use POST, GET or DELETE",
            );
            response
                .headers_mut()
                .insert("allow", HeaderValue::from_static("GET, POST, DELETE"));
            response
        }
    }
}

fn post(
    shared: &Shared,
    session: Option<&str>,
    accepts_sse: bool,
    body: &Bytes,
) -> Response<MockBody> {
    let message = match serde_json::from_slice::<Value>(body) {
        Ok(message) if message.is_object() => message,
        _ => {
            return rpc_error(
                shared,
                StatusCode::BAD_REQUEST,
                Value::Null,
                -32700,
                "parse error: the body is not one JSON-RPC message",
            );
        }
    };
    let id = message.get("id").cloned();
    let method = message.get("method").and_then(Value::as_str).unwrap_or("");
    if method == "initialize" {
        let Some(id) = id else {
            return rpc_error(
                shared,
                StatusCode::BAD_REQUEST,
                Value::Null,
                -32600,
                "initialize needs an id",
            );
        };
        let version = message
            .pointer("/params/protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or(PROTOCOL_VERSION);
        let result = json!({
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": false}, "logging": {}},
            "serverInfo": {"name": shared.opts.name, "version": env!("CARGO_PKG_VERSION")},
        });
        let session_id = shared.sessions.open();
        let mut response = rpc_result(shared, id, result, false);
        if let Ok(value) = HeaderValue::from_str(&session_id) {
            response.headers_mut().insert(SESSION_HEADER, value);
        }
        return response;
    }
    let session_id = match live_session(shared, session) {
        Ok(id) => id,
        Err(refused) => return refused.response(shared),
    };
    let Some(id) = id else {
        // A notification or a response from the client: nothing to answer.
        return shared.response(StatusCode::ACCEPTED, full(Bytes::new()));
    };
    match method {
        "ping" => rpc_result(shared, id, json!({}), false),
        "tools/list" => rpc_result(
            shared,
            id,
            json!({"tools": [
                {"name": "whoami", "description": "Which server and session answered.",
                 "inputSchema": {"type": "object", "properties": {}}},
                {"name": "echo", "description": "Answers its text argument.",
                 "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}},
            ]}),
            false,
        ),
        "tools/call" => {
            let tool = message.pointer("/params/name").and_then(Value::as_str);
            let text = match tool {
                Some("whoami") => format!("served by {}, session {session_id}", shared.opts.name),
                Some("echo") => message
                    .pointer("/params/arguments/text")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                _ => {
                    return rpc_error(
                        shared,
                        StatusCode::OK,
                        id,
                        -32602,
                        "unknown tool; valid: whoami, echo",
                    );
                }
            };
            let result = json!({"content": [{"type": "text", "text": text}], "isError": false});
            rpc_result(shared, id, result, accepts_sse)
        }
        _ => rpc_error(shared, StatusCode::OK, id, -32601, "method not found"),
    }
}

/// Why a request's session is not one this server has open.
enum NoSession {
    /// No `Mcp-Session-Id`: `400`.
    Missing,
    /// Unknown or ended: `404`, so the client starts a new session.
    Unknown,
}

impl NoSession {
    fn response(self, shared: &Shared) -> Response<MockBody> {
        match self {
            NoSession::Missing => rpc_error(
                shared,
                StatusCode::BAD_REQUEST,
                Value::Null,
                -32600,
                "missing Mcp-Session-Id; send initialize first",
            ),
            NoSession::Unknown => rpc_error(
                shared,
                StatusCode::NOT_FOUND,
                Value::Null,
                -32001,
                "session not found",
            ),
        }
    }
}

/// The session a request names, if this server has it open.
fn live_session<'a>(shared: &Shared, session: Option<&'a str>) -> Result<&'a str, NoSession> {
    match session {
        None => Err(NoSession::Missing),
        Some(id) if shared.sessions.is_live(id) => Ok(id),
        Some(_) => Err(NoSession::Unknown),
    }
}

fn rpc_result(shared: &Shared, id: Value, result: Value, as_sse: bool) -> Response<MockBody> {
    let message = json!({"jsonrpc": "2.0", "id": id, "result": result});
    if as_sse {
        let event = Bytes::from(format!("event: message\ndata: {message}\n\n"));
        let mut response = shared.response(StatusCode::OK, full(event));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        return response;
    }
    json_response(shared, StatusCode::OK, &message)
}

fn rpc_error(
    shared: &Shared,
    status: StatusCode,
    id: Value,
    code: i64,
    message: &str,
) -> Response<MockBody> {
    let doc = json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}});
    json_response(shared, status, &doc)
}

fn json_response(shared: &Shared, status: StatusCode, doc: &Value) -> Response<MockBody> {
    let mut response = shared.response(status, full(Bytes::from(doc.to_string())));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The server-to-client stream of a `GET`: one notification at once, then
/// keep-alive comments until the server stops (or the client leaves: the
/// body is then dropped and nothing more runs).
fn event_stream(shared: &Shared, session_id: &str) -> Response<MockBody> {
    let hello = json!({
        "jsonrpc": "2.0",
        "method": "notifications/message",
        "params": {"level": "info", "logger": "mock", "data": format!("stream open on {}, session {session_id}", shared.opts.name)},
    });
    let first = Bytes::from(format!("event: message\ndata: {hello}\n\n"));
    let stop = shared.shutdown.clone();
    let frames = stream::unfold((Some(first), stop), |(first, mut stop)| async move {
        if let Some(first) = first {
            return Some((Ok(Frame::data(first)), (None, stop)));
        }
        tokio::select! {
            () = tokio::time::sleep(KEEP_ALIVE) => {
                Some((Ok(Frame::data(Bytes::from_static(b": keep-alive\n\n"))), (None, stop)))
            }
            () = stopped(&mut stop) => None,
        }
    });
    let mut response = shared.response(StatusCode::OK, BodyExt::boxed(StreamBody::new(frames)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    response
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}
