//! The socket listener and Session actor over real sockets on 127.0.0.1,
//! driven by a minimal Engine.IO client written on tokio-tungstenite, so that
//! what the server writes is checked as raw frames, not through our codec.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aurum_actors::{
    AppFuture, ConnState, ConnectRefusal, ConnectRequest, DisconnectReason, EncodedPacket, Event,
    SessionHandle, SessionId, SocketApp, SocketConfig,
};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// Long enough for a loaded CI machine, short enough to keep failures quick.
const WAIT: Duration = Duration::from_secs(3);

/// How long after its `expire` event a session is closed.
const EXPIRE_AFTER: Duration = Duration::from_millis(300);

// ---- the application under the sessions ----

/// Records every `connected` and `disconnect`, and answers a few events:
/// `echo` → `echo-back` (attachments included), `ack` → ack with the same
/// arguments, `flood` → large events until the session gives up, `expire`
/// → `bye` and a close 300 ms later.
#[derive(Default)]
struct Recorder {
    connected: Mutex<Vec<(SessionId, String)>>,
    disconnects: Mutex<Vec<(SessionId, String, DisconnectReason)>>,
}

impl Recorder {
    fn disconnects(&self) -> Vec<(SessionId, String, DisconnectReason)> {
        self.disconnects.lock().unwrap().clone()
    }

    fn connected(&self) -> Vec<(SessionId, String)> {
        self.connected.lock().unwrap().clone()
    }

    /// Waits until `count` disconnects were recorded, and returns them.
    async fn wait_disconnects(&self, count: usize) -> Vec<(SessionId, String, DisconnectReason)> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let seen = self.disconnects();
            if seen.len() >= count || tokio::time::Instant::now() > deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl SocketApp for Recorder {
    fn accepts_namespace(&self, nsp: &str) -> bool {
        matches!(nsp, "/" | "/custom")
    }

    fn connect(&self, request: ConnectRequest) -> AppFuture<Result<ConnState, ConnectRefusal>> {
        let refused = request.auth.as_ref().and_then(|auth| auth.get("token")) == Some(&json!("bad"));
        Box::pin(async move {
            // Decided later than at once, like a real application reading a database.
            tokio::time::sleep(Duration::from_millis(1)).await;
            if refused {
                Err(ConnectRefusal::new(
                    "unauthorized",
                    Some(json!({"code": "unauthorized"})),
                ))
            } else {
                Ok(ConnState::new(request.auth))
            }
        })
    }

    fn connected(&self, session: &SessionHandle, nsp: &str, _state: &mut ConnState) {
        self.connected
            .lock()
            .unwrap()
            .push((session.id(), nsp.to_owned()));
    }

    fn event(&self, session: &SessionHandle, _state: &mut ConnState, event: Event) -> AppFuture<()> {
        let Event {
            nsp,
            name,
            args,
            attachments,
            ack,
            ..
        } = event;
        match (name.as_str(), ack) {
            ("echo", _) => session.emit_binary(&nsp, "echo-back", args, attachments).unwrap(),
            ("ack", Some(ack)) => ack.send(args).unwrap(),
            ("expire", _) => {
                let deadline = std::time::Instant::now() + EXPIRE_AFTER;
                let farewell = std::sync::Arc::new(EncodedPacket::event(&nsp, "bye", vec![]));
                session.expire_at(deadline, farewell).unwrap();
            }
            ("flood", _) => {
                let session = session.clone();
                return Box::pin(async move {
                    let chunk = "x".repeat(256 * 1024);
                    for _ in 0..1000 {
                        if session.emit(&nsp, "chunk", vec![json!(chunk)]).is_err() {
                            return;
                        }
                        // Lets the session write, so its own queue (not only
                        // its mailbox) fills behind the client that does not read.
                        tokio::task::yield_now().await;
                    }
                });
            }
            _ => {}
        }
        Box::pin(async {})
    }

    fn disconnect(&self, session: &SessionHandle, nsp: &str, _state: ConnState, reason: DisconnectReason) {
        self.disconnects
            .lock()
            .unwrap()
            .push((session.id(), nsp.to_owned(), reason));
    }
}

// ---- the server ----

struct Server {
    addr: SocketAddr,
    app: Arc<Recorder>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<oneshot::Receiver<()>>,
}

fn fast_config() -> SocketConfig {
    SocketConfig {
        ping_interval: Duration::from_millis(100),
        ping_timeout: Duration::from_millis(100),
        connect_timeout: Duration::from_millis(500),
        max_payload: 10_000,
        workers: 2,
        shutdown_grace: Duration::from_secs(2),
        ..SocketConfig::default()
    }
}

async fn start(config: SocketConfig) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Arc::new(Recorder::default());
    let (stop, stopped) = oneshot::channel::<()>();
    let (finished, done) = oneshot::channel();
    let serving = Arc::clone(&app) as Arc<dyn SocketApp>;
    actix::spawn(async move {
        aurum_actors::serve(listener, config, serving, async {
            let _ = stopped.await;
        })
        .await;
        let _ = finished.send(());
    });
    Server {
        addr,
        app,
        stop: Some(stop),
        done: Some(done),
    }
}

impl Server {
    /// Shuts the server down and waits for `serve` to return.
    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            tokio::time::timeout(WAIT, done).await.unwrap().unwrap();
        }
    }
}

// ---- the client ----

struct Client {
    ws: WebSocketStream<TcpStream>,
}

impl Client {
    /// Opens a socket and returns it with the OPEN packet's JSON.
    async fn open(addr: SocketAddr) -> (Self, Value) {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let (ws, response) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
        assert_eq!(response.status(), 101);
        let mut client = Self { ws };
        let open = client.recv_text().await;
        let open = open.strip_prefix('0').expect("OPEN packet");
        (client, serde_json::from_str(open).unwrap())
    }

    /// Opens a socket and joins the main namespace.
    async fn connected(addr: SocketAddr) -> Self {
        let (mut client, _) = Self::open(addr).await;
        client.send("40").await;
        let answer = client.recv_text().await;
        assert!(answer.starts_with("40{\"sid\":"), "{answer}");
        client
    }

    async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    async fn send_binary(&mut self, bytes: &[u8]) {
        self.ws.send(Message::binary(bytes.to_vec())).await.unwrap();
    }

    /// The next frame that is not an Engine.IO PING (each one is answered).
    async fn recv(&mut self) -> Message {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("an open socket")
                .unwrap();
            if frame == Message::text("2") {
                self.send("3").await;
                continue;
            }
            return frame;
        }
    }

    async fn recv_text(&mut self) -> String {
        match self.recv().await {
            Message::Text(text) => text.as_str().to_owned(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    async fn recv_binary(&mut self) -> Vec<u8> {
        match self.recv().await {
            Message::Binary(bytes) => bytes.to_vec(),
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }

    /// Reads (without answering pings) until the server closes the socket.
    async fn expect_closed(&mut self) {
        let closed = tokio::time::timeout(WAIT, async {
            loop {
                match self.ws.next().await {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the server did not close the socket");
    }
}

/// Sends a raw HTTP request and returns the status code and JSON body.
async fn http(addr: SocketAddr, request: &str) -> (u16, Value) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, tcp.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    let status = response.get(9..12).unwrap().parse().unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("Content-Type: application/json"), "{head}");
    (status, serde_json::from_str(body).unwrap())
}

// ---- the tests ----

#[actix::test]
async fn open_packet_carries_the_handshake_fields() {
    let mut server = start(fast_config()).await;
    let (_client, open) = Client::open(server.addr).await;

    let sid = open["sid"].as_str().unwrap();
    assert_eq!(sid.len(), 20);
    assert_eq!(open["upgrades"], json!([]));
    assert_eq!(open["pingInterval"], json!(100));
    assert_eq!(open["pingTimeout"], json!(100));
    assert_eq!(open["maxPayload"], json!(10_000));
    assert_eq!(open.as_object().unwrap().len(), 5, "{open}");

    let (_other, other_open) = Client::open(server.addr).await;
    assert_ne!(other_open["sid"], open["sid"]);
    server.shutdown().await;
}

#[actix::test]
async fn bad_handshakes_get_json_errors() {
    let mut server = start(fast_config()).await;
    let upgrade = "Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let cases = [
        (
            format!("GET /socket.io/?EIO=3&transport=websocket HTTP/1.1\r\n{upgrade}"),
            400,
            "unsupported_protocol_version",
        ),
        (
            format!("GET /socket.io/?EIO=4&transport=abc HTTP/1.1\r\n{upgrade}"),
            400,
            "unknown_transport",
        ),
        (
            format!("GET /socket.io/?EIO=4&transport=websocket&sid=nope HTTP/1.1\r\n{upgrade}"),
            400,
            "unknown_sid",
        ),
        (format!("GET /elsewhere HTTP/1.1\r\n{upgrade}"), 404, "not_found"),
        (
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
            400,
            "upgrade_required",
        ),
        (
            "POST /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
                .to_owned(),
            400,
            "bad_method",
        ),
    ];
    for (request, status, code) in cases {
        let (got_status, body) = http(server.addr, &request).await;
        assert_eq!(got_status, status, "{request}");
        assert_eq!(body["error"]["code"], json!(code), "{body}");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    // The refusals left the listener serving.
    Client::connected(server.addr).await;
    server.shutdown().await;
}

#[actix::test]
async fn connects_to_known_namespaces_and_refuses_others() {
    let mut server = start(fast_config()).await;
    let mut client = Client::connected(server.addr).await;

    client.send("40/custom,{\"token\":\"abc\"}").await;
    let answer = client.recv_text().await;
    let sid: Value = serde_json::from_str(answer.strip_prefix("40/custom,").unwrap()).unwrap();
    assert!(sid["sid"].is_string(), "{answer}");

    client.send("40/nope,").await;
    assert_eq!(
        client.recv_text().await,
        r#"44/nope,{"message":"Invalid namespace"}"#
    );
    // A namespace without its ',' is taken to run to the end, as the reference parser does.
    client.send("40/other").await;
    assert_eq!(
        client.recv_text().await,
        r#"44/other,{"message":"Invalid namespace"}"#
    );

    let (mut refused, _) = Client::open(server.addr).await;
    refused.send(r#"40{"token":"bad"}"#).await;
    let refusal = refused.recv_text().await;
    let refusal: Value = serde_json::from_str(refusal.strip_prefix("44").unwrap()).unwrap();
    assert_eq!(
        refusal,
        json!({"message": "unauthorized", "data": {"code": "unauthorized"}})
    );

    // Leaving a namespace tells the application, once.
    client.send("41/custom,").await;
    let disconnects = server.app.wait_disconnects(1).await;
    assert_eq!(disconnects.len(), 1);
    assert_eq!(disconnects[0].1, "/custom");
    assert_eq!(disconnects[0].2, DisconnectReason::ClientNamespaceDisconnect);
    // The main namespace is still connected.
    client.send(r#"421["ack","still here"]"#).await;
    assert_eq!(client.recv_text().await, r#"431["still here"]"#);
    server.shutdown().await;
}

#[actix::test]
async fn event_with_ack_is_answered_with_its_id() {
    let mut server = start(fast_config()).await;
    let mut client = Client::connected(server.addr).await;

    client.send(r#"42456["ack",1,"2",{"3":[false]}]"#).await;
    assert_eq!(client.recv_text().await, r#"43456[1,"2",{"3":[false]}]"#);

    client.send("40/custom,").await;
    client.recv_text().await;
    client.send(r#"42/custom,7["ack",0.1]"#).await;
    assert_eq!(client.recv_text().await, r#"43/custom,7[0.1]"#);
    server.shutdown().await;
}

#[actix::test]
async fn binary_attachments_are_echoed() {
    let mut server = start(fast_config()).await;
    let mut client = Client::connected(server.addr).await;

    client
        .send(r#"452-["echo",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#)
        .await;
    client.send_binary(&[1, 2, 3]).await;
    client.send_binary(&[4, 5, 6]).await;

    assert_eq!(
        client.recv_text().await,
        r#"452-["echo-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#
    );
    assert_eq!(client.recv_binary().await, [1, 2, 3]);
    assert_eq!(client.recv_binary().await, [4, 5, 6]);
    server.shutdown().await;
}

#[actix::test]
async fn answered_pings_keep_the_socket_open() {
    let mut server = start(fast_config()).await;
    let mut client = Client::connected(server.addr).await;
    for _ in 0..3 {
        let frame = tokio::time::timeout(WAIT, client.ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(frame, Message::text("2"));
        client.send("3").await;
    }
    assert!(server.app.disconnects().is_empty());
    server.shutdown().await;
}

#[actix::test]
async fn ping_timeout_drops_the_socket_and_disconnects_once() {
    let mut server = start(fast_config()).await;
    let (mut client, _) = Client::open(server.addr).await;
    client.send("40").await;
    // From here on the client reads but never answers a ping.
    client.expect_closed().await;

    let disconnects = server.app.wait_disconnects(1).await;
    assert_eq!(disconnects.len(), 1, "{disconnects:?}");
    assert_eq!(disconnects[0].2, DisconnectReason::PingTimeout);
    assert_eq!(server.app.connected().len(), 1);
    // Still once, well after the fact.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.app.disconnects().len(), 1);
    server.shutdown().await;
}

#[actix::test]
async fn a_socket_that_joins_no_namespace_is_closed() {
    let mut server = start(fast_config()).await;
    let (mut client, _) = Client::open(server.addr).await;
    let started = tokio::time::Instant::now();
    loop {
        match tokio::time::timeout(WAIT, client.ws.next()).await.unwrap() {
            Some(Ok(Message::Text(text))) if text.as_str() == "2" => client.send("3").await,
            Some(Ok(Message::Text(text))) => panic!("unexpected {text}"),
            _ => break,
        }
    }
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    // It never joined, so the application has nothing to undo.
    assert!(server.app.disconnects().is_empty());
    server.shutdown().await;
}

#[actix::test]
async fn oversize_packets_close_the_socket() {
    let mut server = start(fast_config()).await;
    let mut client = Client::connected(server.addr).await;

    let big = format!(r#"42["echo","{}"]"#, "x".repeat(10_001));
    client.send(&big).await;
    client.expect_closed().await;

    let disconnects = server.app.wait_disconnects(1).await;
    assert_eq!(disconnects.len(), 1);
    assert_eq!(disconnects[0].2, DisconnectReason::PayloadTooLarge);
    server.shutdown().await;
}

#[actix::test]
async fn malformed_packets_close_only_that_socket() {
    let mut server = start(fast_config()).await;
    let mut bystander = Client::connected(server.addr).await;

    for malformed in ["4abc", "42{}", r#"42abc["ack",1]"#, "9", "41/custom,", "40"] {
        let mut client = Client::connected(server.addr).await;
        client.send(malformed).await;
        client.expect_closed().await;
    }
    let disconnects = server.app.wait_disconnects(6).await;
    assert_eq!(disconnects.len(), 6, "{disconnects:?}");
    assert!(
        disconnects
            .iter()
            .all(|(_, _, reason)| *reason == DisconnectReason::ProtocolError)
    );

    bystander.send(r#"421["ack","unharmed"]"#).await;
    assert_eq!(bystander.recv_text().await, r#"431["unharmed"]"#);
    server.shutdown().await;
}

#[actix::test]
async fn a_client_that_does_not_read_is_closed_as_a_slow_consumer() {
    let config = SocketConfig {
        max_payload: 1_000_000,
        outbound_queue: 8,
        // Slow enough pings that the heartbeat cannot be what closes it.
        ping_interval: Duration::from_secs(10),
        ping_timeout: Duration::from_secs(10),
        ..fast_config()
    };
    let mut server = start(config).await;
    let mut client = Client::connected(server.addr).await;
    client.send(r#"42["flood"]"#).await;

    // The client reads nothing from here on.
    let disconnects = server.app.wait_disconnects(1).await;
    assert_eq!(disconnects.len(), 1, "{disconnects:?}");
    assert_eq!(disconnects[0].2, DisconnectReason::SlowConsumer);
    server.shutdown().await;
}

#[actix::test]
async fn an_expiring_session_says_farewell_at_its_deadline_and_closes_without_disconnect() {
    let mut server = start(fast_config()).await;
    let mut client = Client::connected(server.addr).await;
    let asked = std::time::Instant::now();
    client.send(r#"42["expire"]"#).await;
    assert_eq!(client.recv_text().await, r#"42["bye"]"#);
    assert!(asked.elapsed() >= EXPIRE_AFTER, "farewell before the deadline");
    // The transport closes with a reason and no DISCONNECT (`41`), which
    // would keep socket.io-client from reconnecting.
    match client.recv().await {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 1008);
            assert_eq!(frame.reason.as_str(), "token expired");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    let disconnects = server.app.wait_disconnects(1).await;
    assert_eq!(disconnects.len(), 1, "{disconnects:?}");
    assert_eq!(disconnects[0].2, DisconnectReason::TokenExpired);
    server.shutdown().await;
}

#[actix::test]
async fn shutdown_closes_every_session_and_returns() {
    let mut server = start(fast_config()).await;
    let mut first = Client::connected(server.addr).await;
    let mut second = Client::connected(server.addr).await;

    server.shutdown().await;
    first.expect_closed().await;
    second.expect_closed().await;
    let disconnects = server.app.disconnects();
    assert_eq!(disconnects.len(), 2, "{disconnects:?}");
    assert!(
        disconnects
            .iter()
            .all(|(_, _, reason)| *reason == DisconnectReason::ServerShutdown)
    );
    assert!(TcpStream::connect(server.addr).await.is_err(), "still accepting");
}

// ---- HTTP long-polling ----

const POLLING: &str = "/socket.io/?EIO=4&transport=polling";

/// A response read off a connection: status, head, body.
#[derive(Debug)]
struct Response {
    status: u16,
    head: String,
    body: String,
}

impl Response {
    /// The body as JSON (the refusals).
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {self:?}"))
    }

    /// Engine.IO's error code of a refusal.
    fn engine_code(&self) -> Value {
        self.json()["code"].clone()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// A kept-alive HTTP/1.1 connection, written and read by hand.
struct Http {
    tcp: TcpStream,
    read: Vec<u8>,
}

impl Http {
    async fn connect(addr: SocketAddr) -> Self {
        Self {
            tcp: TcpStream::connect(addr).await.unwrap(),
            read: Vec::new(),
        }
    }

    async fn send(&mut self, method: &str, target: &str, headers: &str, body: &str) {
        let request = format!(
            "{method} {target} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.tcp.write_all(request.as_bytes()).await.unwrap();
    }

    /// The next response, by its Content-Length.
    async fn response(&mut self) -> Response {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(end) = self.read.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8(self.read[..end].to_vec()).unwrap();
                    let length: usize = head
                        .lines()
                        .find_map(|line| line.strip_prefix("Content-Length: "))
                        .map_or(0, |n| n.parse().unwrap());
                    if self.read.len() >= end + 4 + length {
                        let body = String::from_utf8(self.read[end + 4..end + 4 + length].to_vec()).unwrap();
                        self.read.drain(..end + 4 + length);
                        let status = head[9..12].parse().unwrap();
                        return Response { status, head, body };
                    }
                }
                let mut chunk = [0_u8; 4096];
                let read = self.tcp.read(&mut chunk).await.unwrap();
                assert!(read > 0, "the server closed the connection");
                self.read.extend_from_slice(&chunk[..read]);
            }
        })
        .await
        .expect("a response in time")
    }

    async fn request(&mut self, method: &str, target: &str, body: &str) -> Response {
        self.send(method, target, "", body).await;
        self.response().await
    }

    /// Whether the server closes the connection within WAIT.
    async fn closed(&mut self) -> bool {
        let mut chunk = [0_u8; 64];
        matches!(
            tokio::time::timeout(WAIT, self.tcp.read(&mut chunk)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

/// One request on a connection of its own.
async fn once(addr: SocketAddr, method: &str, target: &str, body: &str) -> Response {
    Http::connect(addr).await.request(method, target, body).await
}

/// A long-polling client: a kept-alive connection for GETs, another for POSTs.
struct Poller {
    sid: String,
    open: Value,
    gets: Http,
    posts: Http,
}

impl Poller {
    async fn open(addr: SocketAddr) -> Self {
        let mut gets = Http::connect(addr).await;
        let open = gets.request("GET", POLLING, "").await;
        assert_eq!(open.status, 200, "{open:?}");
        assert_eq!(open.header("Content-Type"), Some("text/plain; charset=UTF-8"));
        let json: Value = serde_json::from_str(open.body.strip_prefix('0').expect("OPEN")).unwrap();
        Self {
            sid: json["sid"].as_str().unwrap().to_owned(),
            open: json,
            gets,
            posts: Http::connect(addr).await,
        }
    }

    fn target(&self) -> String {
        format!("{POLLING}&sid={}", self.sid)
    }

    /// A long-poll's answer.
    async fn get(&mut self) -> Response {
        let target = self.target();
        self.gets.request("GET", &target, "").await
    }

    /// The packets of the next long-poll that are not PINGs (which are answered).
    async fn packets(&mut self) -> Vec<String> {
        loop {
            let answer = self.get().await;
            assert_eq!(answer.status, 200, "{answer:?}");
            let packets: Vec<String> = answer.body.split('\x1e').map(str::to_owned).collect();
            let pings = packets.iter().filter(|p| *p == "2").count();
            for _ in 0..pings {
                assert_eq!(self.post("3").await.status, 200);
            }
            let rest: Vec<String> = packets.into_iter().filter(|p| p != "2").collect();
            if !rest.is_empty() {
                return rest;
            }
        }
    }

    async fn post(&mut self, body: &str) -> Response {
        let target = self.target();
        self.posts.request("POST", &target, body).await
    }

    /// Opens and joins the main namespace.
    async fn connected(addr: SocketAddr) -> Self {
        let mut poller = Self::open(addr).await;
        let posted = poller.post("40").await;
        assert_eq!((posted.status, posted.body.as_str()), (200, "ok"));
        assert_eq!(posted.header("Content-Type"), Some("text/html"));
        let answer = poller.packets().await;
        assert!(answer[0].starts_with("40{\"sid\":"), "{answer:?}");
        poller
    }
}

/// Waits until the server lists no polling session.
async fn no_polling_sessions(sessions: &aurum_actors::PollingSessions) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !sessions.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(sessions.len(), 0, "polling sessions left behind");
}

/// `fast_config`, keeping a handle on the polling sessions' map.
fn polling_config() -> (SocketConfig, Arc<aurum_actors::PollingSessions>) {
    let config = SocketConfig {
        cors_origins: vec!["https://app.example".to_owned()],
        ..fast_config()
    };
    let sessions = Arc::clone(&config.polling_sessions);
    (config, sessions)
}

#[actix::test]
async fn a_polling_client_chats_with_acks_and_binary_over_kept_alive_connections() {
    let (config, sessions) = polling_config();
    let mut server = start(config).await;
    let mut client = Poller::connected(server.addr).await;
    assert_eq!(client.open["upgrades"], json!(["websocket"]));
    assert_eq!(client.open["maxPayload"], json!(10_000));
    assert_eq!(sessions.len(), 1);

    // Two packets in one POST; their answers come in one GET or two.
    let posted = client.post("421[\"ack\",1]\x1e422[\"ack\",2]").await;
    assert_eq!(posted.status, 200);
    let mut answers = client.packets().await;
    if answers.len() < 2 {
        answers.extend(client.packets().await);
    }
    assert_eq!(answers, vec!["431[1]", "432[2]"]);

    // A binary attachment goes both ways as base64 behind `b`.
    let posted = client
        .post("451-[\"echo\",{\"_placeholder\":true,\"num\":0}]\x1ebAQID")
        .await;
    assert_eq!(posted.status, 200);
    let mut echo = client.packets().await;
    if echo.len() < 2 {
        echo.extend(client.packets().await);
    }
    assert_eq!(
        echo,
        vec!["451-[\"echo-back\",{\"_placeholder\":true,\"num\":0}]", "bAQID"]
    );

    // The client's CLOSE ends the session: gone from the map, disconnected once.
    assert_eq!(client.post("1").await.status, 200);
    let disconnects = server.app.wait_disconnects(1).await;
    assert_eq!(disconnects.len(), 1, "{disconnects:?}");
    assert_eq!(disconnects[0].2, DisconnectReason::TransportClose);
    no_polling_sessions(&sessions).await;
    // A GET of the closed session's is taken for one that raced the close.
    let after = client.get().await;
    assert_eq!((after.status, after.body.as_str()), (200, "6"), "{after:?}");
    server.shutdown().await;
}

/// The official protocol suite's "should forcefully close the session":
/// a long-poll GET and the client's `POST 1` go out at once. Whichever the
/// listener reads first, the GET ends with a NOOP (as engine.io answers a
/// GET waiting on a close), never the 400 of an unknown sid.
#[actix::test]
async fn a_long_poll_racing_the_clients_close_ends_with_a_noop() {
    let (config, sessions) = polling_config();
    let mut server = start(config).await;

    // The GET first: it is waiting when the close comes.
    let mut waiting = Poller::connected(server.addr).await;
    let target = waiting.target();
    waiting.gets.send("GET", &target, "", "").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(waiting.post("1").await.status, 200);
    let answer = waiting.gets.response().await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "6"), "{answer:?}");

    // The close first, handled to the end (the session is gone from the
    // map) before the GET is even sent: the order the race can take
    // under load, made certain.
    let mut late = Poller::connected(server.addr).await;
    assert_eq!(late.post("1").await.status, 200);
    server.app.wait_disconnects(2).await;
    no_polling_sessions(&sessions).await;
    let answer = late.get().await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "6"), "{answer:?}");

    // Both at once, as the suite sends them.
    let mut both = Poller::connected(server.addr).await;
    let target = both.target();
    both.gets.send("GET", &target, "", "").await;
    both.posts.send("POST", &target, "", "1").await;
    let (get, post) = tokio::join!(both.gets.response(), both.posts.response());
    assert_eq!((get.status, get.body.as_str()), (200, "6"), "{get:?}");
    assert_eq!(post.status, 200, "{post:?}");

    // Only a client's close is remembered: a sid that timed out, or never
    // was, is still unknown.
    let unknown = once(
        server.addr,
        "GET",
        &format!("{POLLING}&sid=BBBBBBBBBBBBBBBBBBBB"),
        "",
    )
    .await;
    assert_eq!((unknown.status, unknown.engine_code()), (400, json!(1)));
    server.shutdown().await;
}

#[actix::test]
async fn polling_heartbeats_and_a_client_that_stops_polling_times_out() {
    let (config, sessions) = polling_config();
    let mut server = start(config).await;
    let mut client = Poller::connected(server.addr).await;
    // Pings come in GETs and are answered in POSTs: three rounds keep it open.
    for _ in 0..3 {
        let ping = client.get().await;
        assert_eq!(ping.body, "2");
        assert_eq!(client.post("3").await.status, 200);
    }
    assert!(server.app.disconnects().is_empty());
    // No more polls: the next ping is never seen, so never answered.
    let disconnects = server.app.wait_disconnects(1).await;
    assert_eq!(disconnects.len(), 1, "{disconnects:?}");
    assert_eq!(disconnects[0].2, DisconnectReason::PingTimeout);
    no_polling_sessions(&sessions).await;
    let stale = client.get().await;
    assert_eq!((stale.status, stale.engine_code()), (400, json!(1)));
    assert_eq!(stale.json()["message"], json!("Session ID unknown"));
    server.shutdown().await;
}

#[actix::test]
async fn bad_polling_requests_get_engine_io_s_answers_and_leave_nothing_behind() {
    let (config, sessions) = polling_config();
    let mut server = start(config).await;
    let addr = server.addr;

    // Unknown sids, whatever the method.
    let unknown = format!("{POLLING}&sid=AAAAAAAAAAAAAAAAAAAA");
    for method in ["GET", "POST"] {
        let answer = once(addr, method, &unknown, "40").await;
        assert_eq!((answer.status, answer.engine_code()), (400, json!(1)), "{method}");
        assert_eq!(answer.json()["error"]["code"], json!("unknown_sid"));
    }
    // A handshake is a GET.
    let answer = once(addr, "POST", POLLING, "40").await;
    assert_eq!((answer.status, answer.engine_code()), (400, json!(2)));

    // A POST over maxPayload: 413, and the session is closed.
    let mut big = Poller::connected(addr).await;
    let answer = big.post(&format!("42[\"ack\",\"{}\"]", "x".repeat(10_001))).await;
    assert_eq!(answer.status, 413, "{answer:?}");
    // Malformed payloads: 400 "Bad request", and the session is closed.
    let mut malformed = Vec::new();
    for body in ["4\x1e\x1e3", "b!!!", "9", "42[\"ack\"", ""] {
        let mut client = Poller::connected(addr).await;
        let answer = client.post(body).await;
        assert_eq!(
            (answer.status, answer.engine_code()),
            (400, json!(3)),
            "{body:?}: {answer:?}"
        );
        malformed.push(client);
    }
    // Two long-polls at once: the second is refused, the session closed
    // and the first released with CLOSE.
    let mut twice = Poller::connected(addr).await;
    let target = twice.target();
    twice.gets.send("GET", &target, "", "").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = once(addr, "GET", &target, "").await;
    assert_eq!((second.status, second.engine_code()), (400, json!(3)));
    assert_eq!(twice.gets.response().await.body, "1");

    // Every session above is gone, each disconnected once.
    let closed = 2 + malformed.len();
    let disconnects = server.app.wait_disconnects(closed).await;
    assert_eq!(disconnects.len(), closed, "{disconnects:?}");
    assert_eq!(server.app.connected().len(), closed);
    no_polling_sessions(&sessions).await;
    for client in [&big, &twice].into_iter().chain(&malformed) {
        let after = once(addr, "POST", &client.target(), "3").await;
        assert_eq!((after.status, after.engine_code()), (400, json!(1)));
    }
    server.shutdown().await;
}

#[actix::test]
async fn cors_preflights_and_answers_name_only_allowed_origins() {
    let (config, _) = polling_config();
    let mut server = start(config).await;
    let addr = server.addr;
    let preflight = |origin: &'static str| async move {
        let mut http = Http::connect(addr).await;
        let headers = format!(
            "Origin: {origin}\r\nAccess-Control-Request-Method: POST\r\n\
             Access-Control-Request-Headers: content-type\r\n"
        );
        http.send("OPTIONS", POLLING, &headers, "").await;
        http.response().await
    };
    let allowed = preflight("https://app.example").await;
    assert_eq!(allowed.status, 204);
    assert_eq!(
        allowed.header("Access-Control-Allow-Origin"),
        Some("https://app.example")
    );
    assert_eq!(allowed.header("Access-Control-Allow-Credentials"), Some("true"));
    assert_eq!(
        allowed.header("Access-Control-Allow-Headers"),
        Some("content-type")
    );
    assert!(
        allowed
            .header("Access-Control-Allow-Methods")
            .unwrap()
            .contains("POST")
    );
    let refused = preflight("https://evil.example").await;
    assert_eq!(refused.status, 204);
    assert_eq!(refused.header("Access-Control-Allow-Origin"), None);
    assert_eq!(refused.header("Vary"), Some("Origin"));

    // The handshake itself: the origin echoed for an allowed page only.
    for (origin, echoed) in [
        ("https://app.example", Some("https://app.example")),
        ("https://evil.example", None),
    ] {
        let mut http = Http::connect(addr).await;
        http.send("GET", POLLING, &format!("Origin: {origin}\r\n"), "")
            .await;
        let open = http.response().await;
        assert_eq!(open.status, 200);
        assert_eq!(open.header("Access-Control-Allow-Origin"), echoed);
    }
    server.shutdown().await;
}

#[actix::test]
async fn an_upgrade_moves_the_session_to_websocket_and_sends_each_packet_once() {
    let (config, sessions) = polling_config();
    let mut server = start(config).await;
    let mut client = Poller::connected(server.addr).await;

    // A GET waits while the client opens the WebSocket and probes it.
    let target = client.target();
    client.gets.send("GET", &target, "", "").await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let url = format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket&sid={}",
        server.addr, client.sid
    );
    let (mut ws, response) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    assert_eq!(response.status(), 101);
    ws.send(Message::text("2probe")).await.unwrap();
    let probe = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(probe, Message::text("3probe"));
    // The waiting GET is released (NOOP, unless a ping beat it).
    let mut on_polling: Vec<String> = Vec::new();
    let released = client.gets.response().await.body;
    on_polling.extend(released.split('\x1e').map(str::to_owned));
    // Acks asked for while both transports are open ...
    for id in 1..=20 {
        assert_eq!(client.post(&format!("42{id}[\"ack\",{id}]")).await.status, 200);
    }
    ws.send(Message::text("5")).await.unwrap();
    // ... each arrive exactly once, on one transport or the other.
    let mut on_websocket = Vec::new();
    while on_websocket
        .iter()
        .chain(&on_polling)
        .filter(|p| p.starts_with("43"))
        .count()
        < 20
    {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Text(text) if text.as_str() == "2" => ws.send(Message::text("3")).await.unwrap(),
            Message::Text(text) => on_websocket.push(text.as_str().to_owned()),
            other => panic!("unexpected {other:?}"),
        }
    }
    let mut acks: Vec<String> = on_polling
        .iter()
        .chain(&on_websocket)
        .filter(|p| p.starts_with("43"))
        .cloned()
        .collect();
    acks.sort();
    let mut expected: Vec<String> = (1..=20).map(|id| format!("43{id}[{id}]")).collect();
    expected.sort();
    assert_eq!(acks, expected);

    // The session lives on the WebSocket now: polling for it is refused,
    // and a second WebSocket for the sid is closed.
    let late = client.get().await;
    assert_eq!((late.status, late.engine_code()), (400, json!(3)));
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let url = format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket&sid={}",
        server.addr, client.sid
    );
    let (mut second, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    assert!(matches!(
        tokio::time::timeout(WAIT, second.next()).await.unwrap(),
        None | Some(Ok(Message::Close(_)) | Err(_))
    ));
    ws.send(Message::text("421[\"ack\",\"on ws\"]")).await.unwrap();
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Text(text) if text.as_str() == "2" => ws.send(Message::text("3")).await.unwrap(),
            other => {
                assert_eq!(other, Message::text("431[\"on ws\"]"));
                break;
            }
        }
    }
    assert!(server.app.disconnects().is_empty());
    ws.close(None).await.unwrap();
    let disconnects = server.app.wait_disconnects(1).await;
    assert_eq!(disconnects.len(), 1, "{disconnects:?}");
    no_polling_sessions(&sessions).await;
    server.shutdown().await;
}

#[actix::test]
async fn a_failed_probe_leaves_the_client_polling() {
    let (config, _) = polling_config();
    let mut server = start(config).await;
    let mut client = Poller::connected(server.addr).await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let url = format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket&sid={}",
        server.addr, client.sid
    );
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    // Not a probe: the WebSocket is dropped, the session stays on polling.
    ws.send(Message::text("42[\"ack\"]")).await.unwrap();
    assert!(matches!(
        tokio::time::timeout(WAIT, ws.next()).await.unwrap(),
        None | Some(Ok(Message::Close(_)) | Err(_))
    ));
    assert_eq!(client.post("421[\"ack\",\"still\"]").await.status, 200);
    assert_eq!(client.packets().await, vec!["431[\"still\"]"]);
    assert!(server.app.disconnects().is_empty());
    server.shutdown().await;
}

#[actix::test]
async fn a_draining_node_refuses_polling_handshakes_but_serves_its_sessions() {
    let (config, _) = polling_config();
    let admission = Arc::clone(&config.admission);
    let mut server = start(config).await;
    let mut client = Poller::connected(server.addr).await;
    admission.set_draining();
    let refused = once(server.addr, "GET", POLLING, "").await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("Retry-After"), Some("5"));
    assert_eq!(client.post("421[\"ack\",1]").await.status, 200);
    assert_eq!(client.packets().await, vec!["431[1]"]);

    // Shutdown releases the waiting GET with CLOSE (no DISCONNECT: the
    // client reconnects elsewhere) and closes the kept-alive connection.
    let target = client.target();
    client.gets.send("GET", &target, "", "").await;
    // Waiting in the session before the shutdown begins.
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.shutdown().await;
    let last = client.gets.response().await;
    assert_eq!(last.body, "1");
    assert!(client.gets.closed().await);
    let disconnects = server.app.disconnects();
    assert_eq!(disconnects.len(), 1, "{disconnects:?}");
    assert_eq!(disconnects[0].2, DisconnectReason::ServerShutdown);
}
