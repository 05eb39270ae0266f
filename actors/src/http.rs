//! The HTTP/1.1 the socket listener speaks: reading request heads and
//! bodies into buffers that live only while a request is being read,
//! routing a request to what Engine.IO makes of it, and writing responses,
//! CORS headers and refusals.
//!
//! Refusals of the Engine.IO protocol carry engine.io 6's body
//! (`{"code":1,"message":"Session ID unknown"}`, which its clients read)
//! and, beside it, the service's own error object (`{"error":{"code",
//! "message"}}`, DESIGN.md's format for every error).

use std::io;

use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// The path Socket.IO clients connect to.
const SOCKET_IO_PATH: &str = "/socket.io/";

/// Headers read from a request; browsers send about 15.
const MAX_HEADERS: usize = 48;

/// Most bytes one read takes off a connection.
const READ_CHUNK: usize = 2048;

/// Seconds a refused client is told to wait when the node sheds load.
pub(crate) const RETRY_AFTER_SECS: u32 = 5;

/// Engine.IO's error codes, as engine.io 6 answers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EngineError {
    UnknownTransport = 0,
    UnknownSid = 1,
    BadHandshakeMethod = 2,
    BadRequest = 3,
    UnsupportedProtocolVersion = 5,
}

impl EngineError {
    const fn message(self) -> &'static str {
        match self {
            Self::UnknownTransport => "Transport unknown",
            Self::UnknownSid => "Session ID unknown",
            Self::BadHandshakeMethod => "Bad handshake method",
            Self::BadRequest => "Bad request",
            Self::UnsupportedProtocolVersion => "Unsupported protocol version",
        }
    }
}

/// Why a request is not served: the status line and the JSON error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: u16,
    pub(crate) code: &'static str,
    pub(crate) message: &'static str,
    /// Engine.IO's code, for refusals of its protocol.
    pub(crate) engine: Option<EngineError>,
    /// Seconds the client is told to wait before trying again.
    pub(crate) retry_after: Option<u32>,
}

impl Refusal {
    pub(crate) const fn engine(engine: EngineError, code: &'static str, message: &'static str) -> Self {
        Self {
            status: 400,
            code,
            message,
            engine: Some(engine),
            retry_after: None,
        }
    }

    pub(crate) const fn unknown_sid() -> Self {
        Self::engine(
            EngineError::UnknownSid,
            "unknown_sid",
            "no session with this sid on this node (it ended, or another node holds it); connect again",
        )
    }

    pub(crate) const fn bad_request(message: &'static str) -> Self {
        Self::engine(EngineError::BadRequest, "bad_request", message)
    }

    pub(crate) const fn unavailable(message: &'static str) -> Self {
        Self {
            status: 503,
            code: "unavailable",
            message,
            engine: None,
            retry_after: Some(RETRY_AFTER_SECS),
        }
    }

    /// A client over one of the connection limits (`crate::limits`).
    pub(crate) const fn too_many(code: &'static str, message: &'static str, retry_after: u32) -> Self {
        Self {
            status: 429,
            code,
            message,
            engine: None,
            retry_after: Some(retry_after),
        }
    }

    /// The whole response; `cors` is [`cors_headers`]' answer.
    pub(crate) fn response(&self, cors: &str) -> String {
        let reason = match self.status {
            404 => "Not Found",
            411 => "Length Required",
            413 => "Payload Too Large",
            429 => "Too Many Requests",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "Bad Request",
        };
        let retry = self
            .retry_after
            .map(|secs| format!("Retry-After: {secs}\r\n"))
            .unwrap_or_default();
        let error = json!({"code": self.code, "message": self.message});
        let body = match self.engine {
            Some(engine) => json!({"code": engine as u8, "message": engine.message(), "error": error}),
            None => json!({ "error": error }),
        }
        .to_string();
        format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             {retry}{cors}Connection: close\r\nCache-Control: no-store\r\n\r\n{body}",
            self.status,
            body.len(),
        )
    }
}

/// What a request asks of the listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// A WebSocket upgrade (`accept` is the Sec-WebSocket-Accept value);
    /// with `sid`, the upgrade of that long-polling session.
    WebSocket {
        accept: String,
        sid: Option<String>,
    },
    /// A long-polling handshake: GET without a sid.
    Handshake,
    /// A long-poll: GET with a sid.
    Poll {
        sid: String,
    },
    /// Packets for a session: POST with a sid and a body of `length` bytes.
    Push {
        sid: String,
        length: usize,
    },
    /// A POST over the payload limit: refused, and its session closed.
    TooLarge {
        sid: String,
    },
    /// A CORS preflight.
    Preflight {
        allow_headers: Option<String>,
    },
    Refused(Refusal),
}

/// A request head, read whole.
#[derive(Debug)]
pub(crate) struct Head {
    /// Bytes the head takes.
    pub(crate) len: usize,
    pub(crate) route: Route,
    /// Whether the connection may serve another request after this one.
    pub(crate) keep_alive: bool,
    /// CORS headers for the response (empty for none).
    pub(crate) cors: String,
    /// The `X-Forwarded-For` header, if any (believed only from a trusted proxy).
    pub(crate) forwarded_for: Option<String>,
}

/// What reading the request head gave.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// More bytes are needed.
    Partial,
    Complete(Head),
}

/// Parses and routes the request head at the start of `buffer`.
pub(crate) fn parse_head(buffer: &[u8], max_payload: usize, cors_origins: &[String]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buffer) {
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Ok(httparse::Status::Complete(len)) => {
            let header = |name: &str| header(&request, name);
            let keep_alive = request.version == Some(1) && !has_token(header("connection"), "close");
            Parsed::Complete(Head {
                len,
                route: route(&request, max_payload),
                keep_alive,
                cors: cors_headers(cors_origins, header("origin")),
                forwarded_for: header("x-forwarded-for").map(str::to_owned),
            })
        }
        Err(_) => Parsed::Complete(Head {
            len: buffer.len(),
            route: Route::Refused(Refusal {
                status: 400,
                code: "bad_request",
                message: "the request is not valid HTTP/1.1",
                engine: None,
                retry_after: None,
            }),
            keep_alive: false,
            cors: String::new(),
            forwarded_for: None,
        }),
    }
}

fn header<'a>(request: &httparse::Request<'_, 'a>, name: &str) -> Option<&'a str> {
    request
        .headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case(name))
        .and_then(|header| std::str::from_utf8(header.value).ok())
        .map(str::trim)
}

fn has_token(value: Option<&str>, token: &str) -> bool {
    value.is_some_and(|value| {
        value
            .split(',')
            .any(|item| item.trim().eq_ignore_ascii_case(token))
    })
}

/// What Engine.IO makes of the request, checked in engine.io 6's order:
/// path, protocol version, transport, then sid and method.
fn route(request: &httparse::Request<'_, '_>, max_payload: usize) -> Route {
    let target = request.path.unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != SOCKET_IO_PATH && path != SOCKET_IO_PATH.trim_end_matches('/') {
        return Route::Refused(Refusal {
            status: 404,
            code: "not_found",
            message: "sockets are served under /socket.io/",
            engine: None,
            retry_after: None,
        });
    }
    let method = request.method.unwrap_or_default();
    if method == "OPTIONS" {
        let allow_headers = header(request, "access-control-request-headers")
            .filter(|names| {
                names
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_, ".contains(&b))
            })
            .map(str::to_owned);
        return Route::Preflight { allow_headers };
    }

    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
            .find_map(|(key, value)| (key == name).then_some(value))
    };
    if param("EIO") != Some("4") {
        return Route::Refused(Refusal::engine(
            EngineError::UnsupportedProtocolVersion,
            "unsupported_protocol_version",
            "only Engine.IO v4 is supported (EIO=4)",
        ));
    }
    let sid = param("sid").map(str::to_owned);
    match param("transport") {
        Some("websocket") => websocket(request, method, sid),
        Some("polling") => polling(request, method, sid, max_payload),
        _ => Route::Refused(Refusal::engine(
            EngineError::UnknownTransport,
            "unknown_transport",
            "the transport must be polling or websocket",
        )),
    }
}

fn websocket(request: &httparse::Request<'_, '_>, method: &str, sid: Option<String>) -> Route {
    if method != "GET" {
        return Route::Refused(Refusal::engine(
            EngineError::BadRequest,
            "bad_method",
            "a WebSocket upgrade is a GET request",
        ));
    }
    let header = |name: &str| header(request, name);
    if !has_token(header("upgrade"), "websocket") || !has_token(header("connection"), "upgrade") {
        return Route::Refused(Refusal::engine(
            EngineError::BadRequest,
            "upgrade_required",
            "expected a WebSocket upgrade request",
        ));
    }
    if header("sec-websocket-version") != Some("13") {
        return Route::Refused(Refusal::engine(
            EngineError::BadRequest,
            "unsupported_websocket_version",
            "only WebSocket version 13 is supported",
        ));
    }
    match header("sec-websocket-key").filter(|key| !key.is_empty()) {
        Some(key) => Route::WebSocket {
            accept: derive_accept_key(key.as_bytes()),
            sid,
        },
        None => Route::Refused(Refusal::engine(
            EngineError::BadRequest,
            "bad_handshake",
            "Sec-WebSocket-Key is missing",
        )),
    }
}

fn polling(
    request: &httparse::Request<'_, '_>,
    method: &str,
    sid: Option<String>,
    max_payload: usize,
) -> Route {
    let Some(sid) = sid else {
        return if method == "GET" {
            Route::Handshake
        } else {
            Route::Refused(Refusal::engine(
                EngineError::BadHandshakeMethod,
                "bad_method",
                "a long-polling handshake is a GET request",
            ))
        };
    };
    match method {
        "GET" => Route::Poll { sid },
        "POST" => {
            let header = |name: &str| header(request, name);
            if header("transfer-encoding").is_some() {
                return Route::Refused(Refusal {
                    status: 411,
                    code: "length_required",
                    message: "send the payload with Content-Length, not chunked",
                    engine: Some(EngineError::BadRequest),
                    retry_after: None,
                });
            }
            // As engine.io: v4 payloads are text, binary packets in base64.
            if header("content-type").is_some_and(|kind| kind.starts_with("application/octet-stream")) {
                return Route::Refused(Refusal::bad_request(
                    "Engine.IO v4 payloads are text (binary packets in base64)",
                ));
            }
            match header("content-length").map(str::parse::<usize>) {
                None => Route::Push { sid, length: 0 },
                Some(Ok(length)) if length > max_payload => Route::TooLarge { sid },
                Some(Ok(length)) => Route::Push { sid, length },
                Some(Err(_)) => Route::Refused(Refusal::bad_request("Content-Length is not a number")),
            }
        }
        _ => Route::Refused(Refusal::engine(
            EngineError::BadRequest,
            "bad_method",
            "long-polling takes GET and POST",
        )),
    }
}

/// The CORS headers for a request from `origin`: the origin echoed, with
/// credentials allowed, when it is one of `allowed`; nothing otherwise, so
/// the browser keeps the response from the page (same-origin requests and
/// other clients need none).
///
/// Credentials are allowed with every allowed origin because a server
/// cannot tell from a request whether the page asked for them: a
/// preflight never carries cookies, nor does a first request before any
/// cookie was set, and a browser rejects a credentialed request whose
/// answer lacks `Access-Control-Allow-Credentials`. socket.io-client
/// sends none unless `withCredentials: true`; sticky routing by cookie
/// needs it across origins.
pub(crate) fn cors_headers(allowed: &[String], origin: Option<&str>) -> String {
    if allowed.is_empty() {
        return String::new();
    }
    match origin {
        Some(origin) if allowed.iter().any(|allowed| allowed == origin) => format!(
            "Access-Control-Allow-Origin: {origin}\r\nAccess-Control-Allow-Credentials: true\r\nVary: Origin\r\n"
        ),
        _ => "Vary: Origin\r\n".to_owned(),
    }
}

/// The answer to a CORS preflight: the allowed methods and headers, for an
/// allowed origin; a bare 204 otherwise.
pub(crate) fn preflight_response(cors: &str, allow_headers: Option<&str>, keep_alive: bool) -> String {
    let grant = if cors.starts_with("Access-Control-Allow-Origin") {
        format!(
            "Access-Control-Allow-Methods: GET, POST, OPTIONS\r\nAccess-Control-Allow-Headers: {}\r\n\
             Access-Control-Max-Age: 86400\r\n",
            allow_headers.unwrap_or("content-type")
        )
    } else {
        String::new()
    };
    format!(
        "HTTP/1.1 204 No Content\r\n{cors}{grant}{}Content-Length: 0\r\n\r\n",
        connection_header(keep_alive)
    )
}

/// A 200 response with `body` of `content_type`.
pub(crate) fn ok_response(content_type: &str, body: &str, cors: &str, keep_alive: bool) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n\
         {cors}{}\r\n{body}",
        body.len(),
        connection_header(keep_alive)
    )
}

fn connection_header(keep_alive: bool) -> &'static str {
    if keep_alive { "" } else { "Connection: close\r\n" }
}

/// Reads what the connection has into `pending`; `false` at its end.
///
/// Reads on the stack, declared after the wait, so a connection waiting
/// for its next request carries no buffer (see `crate::ws`).
pub(crate) async fn read_more(stream: &TcpStream, pending: &mut Vec<u8>) -> io::Result<bool> {
    loop {
        stream.readable().await?;
        let mut chunk = [0_u8; READ_CHUNK];
        match stream.try_read(&mut chunk) {
            Ok(0) => return Ok(false),
            Ok(read) => {
                pending.extend_from_slice(&chunk[..read]);
                return Ok(true);
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
}

/// Takes a body of `length` bytes off the front of `pending`, reading the
/// rest from the connection into an allocation of its own.
pub(crate) async fn read_body(
    stream: &TcpStream,
    pending: &mut Vec<u8>,
    length: usize,
) -> io::Result<Vec<u8>> {
    if pending.len() >= length {
        let rest = pending.split_off(length);
        return Ok(std::mem::replace(pending, rest));
    }
    let mut body = std::mem::take(pending);
    body.reserve_exact(length - body.len());
    while body.len() < length {
        stream.readable().await?;
        let filled = body.len();
        body.resize(length, 0);
        match stream.try_read(&mut body[filled..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(read) => body.truncate(filled + read),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => body.truncate(filled),
            Err(error) => return Err(error),
        }
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    const MAX: usize = 1000;

    fn head(request: &str) -> Head {
        match parse_head(request.as_bytes(), MAX, &["https://app.example".to_owned()]) {
            Parsed::Complete(head) => head,
            Parsed::Partial => panic!("partial: {request}"),
        }
    }

    fn refused(request: &str) -> (u16, &'static str, Option<EngineError>) {
        match head(request).route {
            Route::Refused(refusal) => (refusal.status, refusal.code, refusal.engine),
            other => panic!("not refused: {other:?}"),
        }
    }

    const UPGRADE_HEADERS: &str = "Host: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

    #[test]
    fn accepts_an_engine_io_v4_websocket_upgrade() {
        let request = format!("GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n{UPGRADE_HEADERS}");
        let parsed = head(&request);
        assert_eq!(parsed.len, request.len());
        // The example key and answer of RFC 6455, section 1.3.
        assert_eq!(
            parsed.route,
            Route::WebSocket {
                accept: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".to_owned(),
                sid: None
            }
        );
        let with_sid =
            format!("GET /socket.io/?EIO=4&transport=websocket&sid=abc HTTP/1.1\r\n{UPGRADE_HEADERS}");
        assert!(matches!(head(&with_sid).route, Route::WebSocket { sid: Some(sid), .. } if sid == "abc"));
    }

    #[test]
    fn incomplete_heads_wait_for_more() {
        assert!(matches!(
            parse_head(b"GET /socket.io/?EIO=4&transport=web", MAX, &[]),
            Parsed::Partial
        ));
    }

    #[test]
    fn routes_long_polling_requests() {
        let polling = "/socket.io/?EIO=4&transport=polling";
        assert_eq!(
            head(&format!("GET {polling} HTTP/1.1\r\nHost: x\r\n\r\n")).route,
            Route::Handshake
        );
        assert_eq!(
            head(&format!("GET {polling}&sid=s1 HTTP/1.1\r\nHost: x\r\n\r\n")).route,
            Route::Poll { sid: "s1".to_owned() }
        );
        assert_eq!(
            head(&format!(
                "POST {polling}&sid=s1 HTTP/1.1\r\nContent-Length: 12\r\n\r\n"
            ))
            .route,
            Route::Push {
                sid: "s1".to_owned(),
                length: 12
            }
        );
        assert_eq!(
            head(&format!(
                "POST {polling}&sid=s1 HTTP/1.1\r\nContent-Length: 1001\r\n\r\n"
            ))
            .route,
            Route::TooLarge { sid: "s1".to_owned() }
        );
        assert_eq!(
            head(&format!(
                "OPTIONS {polling} HTTP/1.1\r\nOrigin: https://app.example\r\n\
                 Access-Control-Request-Headers: content-type\r\n\r\n"
            ))
            .route,
            Route::Preflight {
                allow_headers: Some("content-type".to_owned())
            }
        );
    }

    #[test]
    fn keep_alive_unless_asked_to_close() {
        let polling = "/socket.io/?EIO=4&transport=polling";
        assert!(head(&format!("GET {polling} HTTP/1.1\r\n\r\n")).keep_alive);
        assert!(!head(&format!("GET {polling} HTTP/1.1\r\nConnection: close\r\n\r\n")).keep_alive);
        assert!(!head(&format!("GET {polling} HTTP/1.0\r\n\r\n")).keep_alive);
    }

    #[test]
    fn refuses_what_engine_io_does_not_serve() {
        use EngineError::*;
        let with = |line: &str| format!("{line}\r\n{UPGRADE_HEADERS}");
        let polling = "/socket.io/?EIO=4&transport=polling";
        let cases = [
            (with("GET /chat HTTP/1.1"), (404, "not_found", None)),
            (
                with("GET /socket.io/?EIO=3&transport=websocket HTTP/1.1"),
                (
                    400,
                    "unsupported_protocol_version",
                    Some(UnsupportedProtocolVersion),
                ),
            ),
            (
                with("GET /socket.io/?transport=polling HTTP/1.1"),
                (
                    400,
                    "unsupported_protocol_version",
                    Some(UnsupportedProtocolVersion),
                ),
            ),
            (
                with("GET /socket.io/?EIO=4 HTTP/1.1"),
                (400, "unknown_transport", Some(UnknownTransport)),
            ),
            (
                with("GET /socket.io/?EIO=4&transport=abc HTTP/1.1"),
                (400, "unknown_transport", Some(UnknownTransport)),
            ),
            (
                with("POST /socket.io/?EIO=4&transport=websocket HTTP/1.1"),
                (400, "bad_method", Some(BadRequest)),
            ),
            (
                "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
                (400, "upgrade_required", Some(BadRequest)),
            ),
            (
                format!("POST {polling} HTTP/1.1\r\nContent-Length: 1\r\n\r\n"),
                (400, "bad_method", Some(BadHandshakeMethod)),
            ),
            (
                format!("PUT {polling}&sid=s1 HTTP/1.1\r\n\r\n"),
                (400, "bad_method", Some(BadRequest)),
            ),
            (
                format!("POST {polling}&sid=s1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
                (411, "length_required", Some(BadRequest)),
            ),
            (
                format!("POST {polling}&sid=s1 HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
                (400, "bad_request", Some(BadRequest)),
            ),
            (
                format!(
                    "POST {polling}&sid=s1 HTTP/1.1\r\nContent-Type: application/octet-stream\r\n\
                     Content-Length: 1\r\n\r\n"
                ),
                (400, "bad_request", Some(BadRequest)),
            ),
            ("GARBAGE\r\n\r\n".to_owned(), (400, "bad_request", None)),
        ];
        for (request, expected) in cases {
            assert_eq!(refused(&request), expected, "{request}");
        }
    }

    #[test]
    fn refusals_carry_engine_io_s_body_beside_the_service_s() {
        let response = Refusal::unknown_sid().response("");
        let body: serde_json::Value =
            serde_json::from_str(response.split_once("\r\n\r\n").unwrap().1).unwrap();
        assert_eq!(body["code"], 1);
        assert_eq!(body["message"], "Session ID unknown");
        assert_eq!(body["error"]["code"], "unknown_sid");
    }

    #[test]
    fn cors_echoes_allowed_origins_only() {
        let allowed = vec!["https://app.example".to_owned()];
        let granted = cors_headers(&allowed, Some("https://app.example"));
        assert!(granted.contains("Access-Control-Allow-Origin: https://app.example\r\n"));
        assert!(granted.contains("Access-Control-Allow-Credentials: true\r\n"));
        assert!(granted.contains("Vary: Origin\r\n"));
        assert_eq!(
            cors_headers(&allowed, Some("https://evil.example")),
            "Vary: Origin\r\n"
        );
        assert_eq!(cors_headers(&allowed, None), "Vary: Origin\r\n");
        assert_eq!(cors_headers(&[], Some("https://app.example")), "");

        let preflight = preflight_response(&granted, Some("content-type, x-custom"), true);
        assert!(preflight.starts_with("HTTP/1.1 204 No Content\r\n"));
        assert!(preflight.contains("Access-Control-Allow-Methods: GET, POST, OPTIONS\r\n"));
        assert!(preflight.contains("Access-Control-Allow-Headers: content-type, x-custom\r\n"));
        let refused = preflight_response("Vary: Origin\r\n", Some("content-type"), true);
        assert!(!refused.contains("Access-Control-Allow"));
    }
}
