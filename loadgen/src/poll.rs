//! Engine.IO v4 long-polling, the client side, over hand-written HTTP/1.1
//! keep-alive: the handshake GET (`0{"sid":..}`), `POST 40{auth}`, long-poll
//! GETs that return the server's packets joined by `\x1e`, and POSTs that
//! carry the client's the same way.
//!
//! Two shapes of socket. [`hold_idle`] keeps one connection, as an idle
//! client needs: a GET waits; when it returns a PING the pong is POSTed on
//! the same connection, then the next GET waits. [`PollSocket`] is a busy
//! client: a reader task keeps a GET waiting on one connection while a
//! writer task POSTs on a second, batching whatever was queued meanwhile
//! into one payload as engine.io-client does.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::proto::{Error, Target};

/// Engine.IO's separator of packets in a polling payload.
const SEPARATOR: char = '\x1e';
/// Bytes one read takes; the server's answers here are small.
const READ_CHUNK: usize = 2048;
/// Largest response body accepted (the server's default maxPayload, with room).
const MAX_BODY: usize = 1 << 20;
/// Headers read from a response (the server sends about five).
const MAX_HEADERS: usize = 16;
/// The server closes a kept-alive connection idle for 10 s; one idle for
/// longer than this is replaced before use rather than raced.
const REUSE_WITHIN: Duration = Duration::from_secs(5);
/// Packets queued for the writer before `send` waits.
const OUTBOUND_QUEUE: usize = 256;
/// Packets received and not yet read before the reader waits.
const INBOUND_QUEUE: usize = 1024;

/// One HTTP/1.1 connection to the server, used for one request at a time.
struct HttpConn {
    stream: TcpStream,
    /// Bytes read past the end of the last response (none, normally).
    pending: Vec<u8>,
    last_used: Instant,
}

struct Response {
    status: u16,
    body: String,
    /// The server said `Connection: close`.
    closing: bool,
}

impl HttpConn {
    async fn open(addr: SocketAddr, local: Option<Ipv4Addr>) -> Result<Self, Error> {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        if let Some(ip) = local {
            socket.bind(SocketAddr::new(IpAddr::V4(ip), 0))?;
        }
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            pending: Vec::new(),
            last_used: Instant::now(),
        })
    }

    async fn get(&mut self, target: &Target, query: &str) -> Result<Response, Error> {
        let head = format!(
            "GET {}{query} HTTP/1.1\r\nHost: {}\r\nAccept: */*\r\n\r\n",
            target.path, target.addr
        );
        self.round_trip(head.as_bytes(), b"").await
    }

    async fn post(&mut self, target: &Target, query: &str, body: &str) -> Result<Response, Error> {
        let head = format!(
            "POST {}{query} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain;charset=UTF-8\r\n\
             Content-Length: {}\r\n\r\n",
            target.path,
            target.addr,
            body.len()
        );
        self.round_trip(head.as_bytes(), body.as_bytes()).await
    }

    async fn round_trip(&mut self, head: &[u8], body: &[u8]) -> Result<Response, Error> {
        self.stream.write_all(head).await?;
        if !body.is_empty() {
            self.stream.write_all(body).await?;
        }
        let response = self.read_response().await?;
        self.last_used = Instant::now();
        Ok(response)
    }

    /// Reads one response with a Content-Length body (the server sends no other).
    async fn read_response(&mut self) -> Result<Response, Error> {
        let mut buffer = std::mem::take(&mut self.pending);
        let (status, closing, head_len, body_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&buffer) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let status = response.code.unwrap_or_default();
                    let value = |name: &str| {
                        response
                            .headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case(name))
                            .and_then(|h| std::str::from_utf8(h.value).ok())
                    };
                    let closing = value("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
                    let body_len = value("content-length")
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .ok_or_else(|| Error::Protocol("a response without Content-Length".into()))?;
                    if body_len > MAX_BODY {
                        return Err(Error::Protocol(format!("a {body_len}-byte response body")));
                    }
                    break (status, closing, head_len, body_len);
                }
                Ok(httparse::Status::Partial) => {
                    if buffer.len() > 16 * 1024 {
                        return Err(Error::Protocol("a response head over 16 KiB".into()));
                    }
                    self.read_more(&mut buffer).await?;
                }
                Err(error) => return Err(Error::Protocol(format!("a bad response: {error}"))),
            }
        };
        while buffer.len() < head_len + body_len {
            self.read_more(&mut buffer).await?;
        }
        let rest = buffer.split_off(head_len + body_len);
        if !rest.is_empty() {
            self.pending = rest;
        }
        let body = String::from_utf8(buffer.split_off(head_len))
            .map_err(|_| Error::Protocol("a response body that is not UTF-8".into()))?;
        Ok(Response {
            status,
            body,
            closing,
        })
    }

    /// Waits for bytes with no buffer of its own (a waiting GET holds
    /// nothing but the socket), then reads them into `buffer`.
    async fn read_more(&self, buffer: &mut Vec<u8>) -> Result<(), Error> {
        loop {
            self.stream.readable().await?;
            let mut chunk = [0_u8; READ_CHUNK];
            match self.stream.try_read(&mut chunk) {
                Ok(0) => return Err(Error::Closed),
                Ok(read) => {
                    buffer.extend_from_slice(&chunk[..read]);
                    return Ok(());
                }
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(error.into()),
            }
        }
    }
}

/// A 200's body, or the error the status stands for.
fn ok_body(response: Response) -> Result<String, Error> {
    match response.status {
        200 => Ok(response.body),
        status => Err(Error::Http(status)),
    }
}

/// The packets of a payload.
fn packets(payload: &str) -> impl Iterator<Item = &str> {
    payload.split(SEPARATOR).filter(|packet| !packet.is_empty())
}

/// A socket that completed the handshake and CONNECT, on the connection
/// that did it.
pub struct Opened {
    conn: HttpConn,
    /// `&sid=...`, appended to the target's path.
    query: String,
    /// Packets that came with or right behind the CONNECT answer.
    pub early: Vec<String>,
}

/// The handshake GET, `POST 40{auth}`, and GETs until the CONNECT answer.
pub async fn connect(target: &Target, local: Option<Ipv4Addr>, auth: &str) -> Result<Opened, Error> {
    let mut conn = HttpConn::open(target.addr, local).await?;
    let open = ok_body(conn.get(target, "").await?)?;
    let open = open
        .strip_prefix('0')
        .ok_or_else(|| Error::Protocol(format!("expected OPEN, got {open:.60}")))?;
    let sid = serde_json::from_str::<serde_json::Value>(open)
        .ok()
        .and_then(|open| open["sid"].as_str().map(str::to_owned))
        .ok_or_else(|| Error::Protocol(format!("no sid in {open:.80}")))?;
    let query = format!("&sid={sid}");
    ok_body(conn.post(target, &query, &format!("40{auth}")).await?)?;
    loop {
        let payload = ok_body(conn.get(target, &query).await?)?;
        let mut connected = false;
        let mut early = Vec::new();
        let mut pong = false;
        for packet in packets(&payload) {
            if connected {
                early.push(packet.to_owned());
            } else if packet == "2" {
                pong = true;
            } else if packet.starts_with("40") {
                connected = true;
            } else if let Some(error) = packet.strip_prefix("44") {
                return Err(Error::Refused(error.chars().take(120).collect()));
            } else if packet == "1" {
                return Err(Error::Closed);
            } else if packet != "6" {
                return Err(Error::Protocol(format!("expected CONNECT, got {packet:.60}")));
            }
        }
        if pong {
            ok_body(conn.post(target, &query, "3").await?)?;
        }
        if connected {
            return Ok(Opened { conn, query, early });
        }
    }
}

/// Holds an idle socket on its one connection until `stop` or the server
/// ends it: a GET waiting, a PING's pong POSTed between GETs. Counts pongs.
pub async fn hold_idle(
    target: &Target,
    mut opened: Opened,
    mut stop: watch::Receiver<bool>,
    mut on_pong: impl FnMut(),
) {
    loop {
        let payload = tokio::select! {
            _ = stop.changed() => return,
            response = opened.conn.get(target, &opened.query) => match response.and_then(ok_body) {
                Ok(payload) => payload,
                Err(_) => return,
            },
        };
        let mut pong = false;
        for packet in packets(&payload) {
            match packet {
                "2" => pong = true,
                "1" => return,
                _ => {}
            }
        }
        if pong {
            match opened
                .conn
                .post(target, &opened.query, "3")
                .await
                .and_then(ok_body)
            {
                Ok(_) => on_pong(),
                Err(_) => return,
            }
        }
    }
}

/// A polling socket that sends and receives at once: a reader task keeps a
/// GET waiting, a writer task POSTs on a connection of its own.
pub struct PollSocket {
    inbound: mpsc::Receiver<String>,
    outbound: mpsc::Sender<String>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl PollSocket {
    pub fn start(target: Target, local: Option<Ipv4Addr>, opened: Opened) -> Self {
        let (inbound_tx, inbound) = mpsc::channel(INBOUND_QUEUE);
        let (outbound, outbound_rx) = mpsc::channel(OUTBOUND_QUEUE);
        let Opened { conn, query, early } = opened;
        let reader = tokio::spawn(read_loop(target.clone(), conn, query.clone(), early, inbound_tx));
        let writer = tokio::spawn(write_loop(target, local, query, outbound_rx));
        Self {
            inbound,
            outbound,
            reader,
            writer,
        }
    }

    /// Queues a packet for the next POST; fails once the socket is done.
    pub async fn send(&mut self, packet: String) -> Result<(), Error> {
        self.outbound.send(packet).await.map_err(|_| Error::Closed)
    }

    /// The next packet from the server; `None` once the socket is done.
    /// Cancel-safe: a packet is never lost to a `select!` that drops this.
    pub async fn next(&mut self) -> Option<String> {
        self.inbound.recv().await
    }
}

impl Drop for PollSocket {
    fn drop(&mut self) {
        // The tasks own the connections: ending them closes the socket.
        self.reader.abort();
        self.writer.abort();
    }
}

async fn read_loop(
    target: Target,
    mut conn: HttpConn,
    query: String,
    early: Vec<String>,
    inbound: mpsc::Sender<String>,
) {
    for packet in early {
        if inbound.send(packet).await.is_err() {
            return;
        }
    }
    loop {
        let Ok(payload) = conn.get(&target, &query).await.and_then(ok_body) else {
            return;
        };
        for packet in packets(&payload) {
            match packet {
                // CLOSE: the server ended the session.
                "1" => return,
                // NOOP: nothing for the reader.
                "6" => {}
                _ => {
                    if inbound.send(packet.to_owned()).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

async fn write_loop(
    target: Target,
    local: Option<Ipv4Addr>,
    query: String,
    mut outbound: mpsc::Receiver<String>,
) {
    let mut conn: Option<HttpConn> = None;
    while let Some(first) = outbound.recv().await {
        // Whatever queued while the last POST was out goes in this one.
        let mut payload = first;
        while let Ok(more) = outbound.try_recv() {
            payload.push(SEPARATOR);
            payload.push_str(&more);
        }
        if conn
            .as_ref()
            .is_some_and(|c| c.last_used.elapsed() > REUSE_WITHIN)
        {
            conn = None;
        }
        let mut current = match conn.take() {
            Some(current) => current,
            None => match HttpConn::open(target.addr, local).await {
                Ok(opened) => opened,
                Err(_) => return,
            },
        };
        match current.post(&target, &query, &payload).await {
            Ok(response) if response.status == 200 => {
                if !response.closing {
                    conn = Some(current);
                }
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn splits_a_payload_into_packets() {
        let payload = "2\x1e42[\"new_message\",{}]\x1e43[{\"ok\":true}]";
        assert_eq!(
            packets(payload).collect::<Vec<_>>(),
            ["2", "42[\"new_message\",{}]", "43[{\"ok\":true}]"]
        );
        assert_eq!(packets("").count(), 0);
    }

    #[test]
    fn polling_targets_are_http_urls_on_loopback() {
        let target = Target::parse("http://127.0.0.1:9/socket.io/?EIO=4&transport=polling").unwrap();
        assert_eq!(target.path, "/socket.io/?EIO=4&transport=polling");
        assert_eq!(target.transport, crate::proto::Transport::Polling);
        assert_eq!(
            Target::parse("http://127.0.0.1:9").unwrap().path,
            "/socket.io/?EIO=4&transport=polling"
        );
        assert!(Target::parse("http://127.0.0.1:9/socket.io/?EIO=4&transport=websocket").is_err());
        assert!(Target::parse("http://10.0.0.1:9").is_err());
        let ws = Target::parse("ws://127.0.0.1:9").unwrap();
        assert_eq!(ws.url, "ws://127.0.0.1:9/socket.io/?EIO=4&transport=websocket");
    }

    /// Two responses on one kept-alive connection, the second arriving in
    /// pieces and with its body split from its head.
    #[tokio::test]
    async fn reads_responses_on_a_kept_alive_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0_u8; 512];
            let _ = stream.read(&mut request).await.unwrap();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await
                .unwrap();
            let _ = stream.read(&mut request).await.unwrap();
            stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Le")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            stream
                .write_all(b"ngth: 8\r\nConnection: close\r\n\r\n{\"co")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            stream.write_all(b"de\"}").await.unwrap();
        });
        let target = Target::parse(&format!("http://{addr}")).unwrap();
        let mut conn = HttpConn::open(addr, None).await.unwrap();
        let first = conn.post(&target, "&sid=x", "40{}").await.unwrap();
        assert_eq!(
            (first.status, first.body.as_str(), first.closing),
            (200, "ok", false)
        );
        let second = conn.get(&target, "&sid=x").await.unwrap();
        assert_eq!(
            (second.status, second.body.as_str(), second.closing),
            (400, "{\"code\"}", true)
        );
        assert!(matches!(ok_body(second), Err(Error::Http(400))));
        server.await.unwrap();
    }
}
