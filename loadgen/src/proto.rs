//! The Engine.IO v4 / Socket.IO v5 client side, written as raw text frames:
//! a TCP connect from a chosen loopback source address, the WebSocket
//! upgrade, Engine.IO OPEN (`0{...}`) and Socket.IO CONNECT (`40{auth}`).
//! No Socket.IO library, and small buffers, so one process holds thousands.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{EncodingKey, Header};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

pub type Ws = WebSocketStream<TcpStream>;

/// Bytes tungstenite reads at a time; the frames here are all small.
const READ_BUFFER: usize = 1024;
/// Largest frame accepted from the server (the server's own default limit).
const MAX_FRAME: usize = 100_000;

#[derive(Debug)]
pub enum Error {
    Config(String),
    Io(std::io::Error),
    Ws(tungstenite::Error),
    Closed,
    Timeout,
    Protocol(String),
    Refused(String),
    /// A long-polling request answered with this status.
    Http(u16),
}

impl Error {
    /// A short label to count failures by.
    pub fn kind(&self) -> String {
        match self {
            Self::Config(_) => "config".into(),
            Self::Io(error) => format!("io:{:?}", error.kind()),
            Self::Ws(tungstenite::Error::Io(error)) => format!("io:{:?}", error.kind()),
            Self::Ws(tungstenite::Error::Http(response)) => format!("http:{}", response.status().as_u16()),
            Self::Ws(_) => "websocket".into(),
            Self::Closed => "closed".into(),
            Self::Timeout => "timeout".into(),
            Self::Protocol(_) => "protocol".into(),
            Self::Refused(_) => "connect_error".into(),
            Self::Http(status) => format!("http:{status}"),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(message) => write!(f, "{message}"),
            Self::Io(error) => write!(f, "io: {error}"),
            Self::Ws(error) => write!(f, "websocket: {error}"),
            Self::Closed => write!(f, "closed by the server"),
            Self::Timeout => write!(f, "timed out"),
            Self::Protocol(message) => write!(f, "protocol: {message}"),
            Self::Refused(message) => write!(f, "CONNECT refused: {message}"),
            Self::Http(status) => write!(f, "long-polling request answered {status}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(error: std::io::Error) -> Self {
        Self::Io(error)
    }
}

impl From<tungstenite::Error> for Error {
    fn from(error: tungstenite::Error) -> Self {
        Self::Ws(error)
    }
}

/// How a target's sockets reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    /// Engine.IO long-polling (`crate::poll`), never upgraded.
    Polling,
}

/// Where to connect: a loopback address, the request URL and the transport.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub url: String,
    /// The request target (path and query) of long-polling requests.
    pub path: String,
    pub transport: Transport,
}

impl Target {
    /// Accepts `ws://127.x.y.z:port/path?query` (WebSocket) or
    /// `http://127.x.y.z:port/path?query` (long-polling) only: this tool
    /// sends traffic to loopback and nowhere else.
    pub fn parse(url: &str) -> Result<Self, Error> {
        let (rest, transport) = match (url.strip_prefix("ws://"), url.strip_prefix("http://")) {
            (Some(rest), _) => (rest, Transport::WebSocket),
            (None, Some(rest)) => (rest, Transport::Polling),
            (None, None) => {
                return Err(Error::Config(format!(
                    "{url}: only ws:// (WebSocket) and http:// (long-polling) URLs are supported"
                )));
            }
        };
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        let addr: SocketAddr = authority
            .parse()
            .map_err(|_| Error::Config(format!("{url}: the host must be an IP:port literal")))?;
        if !addr.ip().is_loopback() {
            return Err(Error::Config(format!(
                "{url}: only loopback (127.0.0.0/8) targets are allowed"
            )));
        }
        let path = match (&rest[authority.len()..], transport) {
            ("", Transport::WebSocket) => "/socket.io/?EIO=4&transport=websocket".to_owned(),
            ("", Transport::Polling) => "/socket.io/?EIO=4&transport=polling".to_owned(),
            (path, _) => path.to_owned(),
        };
        if transport == Transport::Polling && !path.contains("transport=polling") {
            return Err(Error::Config(format!(
                "{url}: an http:// URL asks for transport=polling"
            )));
        }
        let url = format!("{}{authority}{path}", &url[..url.len() - rest.len()]);
        Ok(Self {
            addr,
            url,
            path,
            transport,
        })
    }
}

/// Checks a `--local-addr`: loopback IPv4 only.
pub fn parse_local(addr: &str) -> Result<Ipv4Addr, Error> {
    let ip: Ipv4Addr = addr
        .parse()
        .map_err(|_| Error::Config(format!("--local-addr {addr}: not an IPv4 address")))?;
    if !ip.is_loopback() {
        return Err(Error::Config(format!(
            "--local-addr {addr}: must be in 127.0.0.0/8"
        )));
    }
    Ok(ip)
}

/// Signs member tokens (HS256, `sub` = the user id as a string).
pub struct Tokens {
    key: EncodingKey,
    exp: u64,
}

impl Tokens {
    pub fn new(secret: &str, ttl: Duration) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        Self {
            key: EncodingKey::from_secret(secret.as_bytes()),
            exp: now + ttl.as_secs(),
        }
    }

    pub fn issue(&self, user: u64) -> Result<String, Error> {
        let claims = serde_json::json!({ "sub": user.to_string(), "exp": self.exp });
        jsonwebtoken::encode(&Header::default(), &claims, &self.key)
            .map_err(|error| Error::Config(format!("signing a token: {error}")))
    }
}

/// Opens a socket from `local` (port chosen by the kernel), upgrades it,
/// reads OPEN, sends CONNECT with `token` and waits for the answer.
pub async fn connect(target: &Target, local: Option<Ipv4Addr>, token: &str) -> Result<Ws, Error> {
    handshake(target, local, &format!("{{\"token\":\"{token}\"}}")).await
}

/// As [`connect`], with `since` in the auth: the server replays every
/// message after it once the CONNECT is answered.
pub async fn connect_since(
    target: &Target,
    local: Option<Ipv4Addr>,
    token: &str,
    since: i64,
) -> Result<Ws, Error> {
    handshake(
        target,
        local,
        &format!("{{\"token\":\"{token}\",\"since\":{since}}}"),
    )
    .await
}

/// The TCP connect, the upgrade, OPEN, and CONNECT with `auth` (a JSON object).
async fn handshake(target: &Target, local: Option<Ipv4Addr>, auth: &str) -> Result<Ws, Error> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    if let Some(ip) = local {
        socket.bind(SocketAddr::new(IpAddr::V4(ip), 0))?;
    }
    let stream = socket.connect(target.addr).await?;
    stream.set_nodelay(true)?;
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_FRAME))
        .max_frame_size(Some(MAX_FRAME));
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(target.url.as_str(), stream, Some(config)).await?;
    let open = next_text(&mut ws).await?;
    if !open.starts_with("0{") {
        return Err(Error::Protocol(format!("expected OPEN, got {open:.60}")));
    }
    ws.send(Message::text(format!("40{auth}"))).await?;
    loop {
        let answer = next_text(&mut ws).await?;
        if answer == "2" {
            ws.send(Message::text("3")).await?;
        } else if answer.starts_with("40") {
            return Ok(ws);
        } else if let Some(error) = answer.strip_prefix("44") {
            return Err(Error::Refused(error.chars().take(120).collect()));
        } else {
            return Err(Error::Protocol(format!("expected CONNECT, got {answer:.60}")));
        }
    }
}

/// The next text frame (WebSocket pings are answered by tungstenite).
async fn next_text(ws: &mut Ws) -> Result<String, Error> {
    loop {
        match ws.next().await {
            None | Some(Ok(Message::Close(_))) => return Err(Error::Closed),
            Some(Err(error)) => return Err(error.into()),
            Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
            Some(Ok(_)) => {}
        }
    }
}

/// Milliseconds since the Unix epoch, to line up reports of processes.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}
