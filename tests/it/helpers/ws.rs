//! A raw Engine.IO/Socket.IO client for tests: it writes and reads the wire
//! text itself (`40{...}`, `42["event",...]`), sharing no code with the
//! server's codec, so a codec bug cannot hide on both sides.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

pub struct RawClient {
    ws: Ws,
    /// Answer server pings automatically (turn off to play a dead client).
    pub auto_pong: bool,
    pub open: Value,
}

const WAIT: Duration = Duration::from_secs(5);

impl RawClient {
    /// Opens the WebSocket and reads Engine.IO's OPEN packet.
    pub async fn open(ws_base: &str) -> Self {
        Self::try_open(ws_base)
            .await
            .unwrap_or_else(|| panic!("cannot open a WebSocket on {ws_base}"))
    }

    /// As [`RawClient::open`], or `None` when the listener refuses the
    /// connection (a node that died).
    pub async fn try_open(ws_base: &str) -> Option<Self> {
        let url = format!("{ws_base}/socket.io/?EIO=4&transport=websocket");
        let (ws, _) = tokio_tungstenite::connect_async(url).await.ok()?;
        let mut client = Self {
            ws,
            auto_pong: true,
            open: Value::Null,
        };
        let first = client.next_text().await?;
        let json = first
            .strip_prefix('0')
            .unwrap_or_else(|| panic!("not an OPEN packet: {first}"));
        client.open = serde_json::from_str(json).unwrap();
        Some(client)
    }

    /// Opens and sends CONNECT to `/` with `auth`; the server's answer
    /// (`40{"sid":..}` or `44{..}`).
    pub async fn connect(ws_base: &str, auth: Value) -> (Self, String) {
        let mut client = Self::open(ws_base).await;
        client.send(&format!("40{auth}")).await;
        let answer = client.next_text().await.expect("a CONNECT answer");
        (client, answer)
    }

    /// As [`RawClient::connect`], or `None` when the node refuses the
    /// connection or closes it before answering.
    pub async fn try_connect(ws_base: &str, auth: Value) -> Option<(Self, String)> {
        let mut client = Self::try_open(ws_base).await?;
        client.send_raw(Message::text(format!("40{auth}"))).await;
        let answer = client.next_text().await?;
        Some((client, answer))
    }

    pub async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    pub async fn send_raw(&mut self, message: Message) {
        let _ = self.ws.send(message).await;
    }

    /// The next text frame, answering pings on the way; `None` once closed.
    pub async fn next_text(&mut self) -> Option<String> {
        self.next_text_within(WAIT).await
    }

    pub async fn next_text_within(&mut self, wait: Duration) -> Option<String> {
        loop {
            let frame = tokio::time::timeout(wait, self.ws.next()).await.ok()??;
            match frame {
                Ok(Message::Text(text)) => {
                    let text = text.to_string();
                    if text == "2" && self.auto_pong {
                        self.send("3").await;
                        continue;
                    }
                    return Some(text);
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Waits for EVENT `name` and returns its first argument, skipping others.
    pub async fn expect_event(&mut self, name: &str) -> Value {
        loop {
            let text = self
                .next_text()
                .await
                .unwrap_or_else(|| panic!("closed while waiting for {name}"));
            if let Some((event, arg)) = parse_event(&text)
                && event == name
            {
                return arg;
            }
        }
    }

    /// Waits for `presence` of `user` going offline and returns it. An
    /// `online` for the user may come first (its arrival can race the
    /// message that made the two partners) and is skipped.
    pub async fn expect_offline(&mut self, user: i64) -> Value {
        loop {
            let presence = self.expect_event("presence").await;
            assert_eq!(presence["user_id"], user, "{presence}");
            if presence["online"] == false {
                return presence;
            }
        }
    }

    /// Emits `42<id>["event", payload]` and waits for `43<id>[answer]`.
    pub async fn emit_ack(&mut self, id: u64, event: &str, payload: Value) -> Value {
        self.send(&format!("42{id}{}", serde_json::json!([event, payload])))
            .await;
        let prefix = format!("43{id}");
        loop {
            let text = self
                .next_text()
                .await
                .unwrap_or_else(|| panic!("closed while waiting for ack {id}"));
            if let Some(rest) = text.strip_prefix(&prefix)
                && rest.starts_with('[')
            {
                let args: Vec<Value> = serde_json::from_str(rest).unwrap();
                return args.into_iter().next().unwrap_or(Value::Null);
            }
        }
    }

    /// Every text frame until the server closes the socket (answering pings
    /// on the way), and its close frame: `None` if the connection ended
    /// without one. Panics if the socket is still open after `wait`.
    pub async fn until_closed(&mut self, wait: Duration) -> (Vec<String>, Option<CloseFrame>) {
        let deadline = tokio::time::Instant::now() + wait;
        let mut texts = Vec::new();
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("still open after {wait:?}; got {texts:?}"));
            match frame {
                Some(Ok(Message::Text(text))) if text == "2" && self.auto_pong => self.send("3").await,
                Some(Ok(Message::Text(text))) => texts.push(text.to_string()),
                Some(Ok(Message::Close(frame))) => return (texts, frame),
                None | Some(Err(_)) => return (texts, None),
                Some(Ok(_)) => {}
            }
        }
    }

    /// True once the server has closed the socket (within `wait`).
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => return false,
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(Message::Text(text)))) if text == "2" && self.auto_pong => self.send("3").await,
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

/// `42["name",arg]` -> ("name", arg).
fn parse_event(text: &str) -> Option<(String, Value)> {
    let json = text.strip_prefix("42")?;
    let args: Vec<Value> = serde_json::from_str(json).ok()?;
    let name = args.first()?.as_str()?.to_owned();
    Some((name, args.get(1).cloned().unwrap_or(Value::Null)))
}

/// The raw HTTP answer to a WebSocket upgrade request on the socket port
/// (all of it, up to the server's close or 5 s), or `None` when the
/// listener refuses the connection.
pub async fn upgrade_answer(ws_base: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = ws_base.trim_start_matches("ws://");
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    let request = format!(
        "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
    Some(String::from_utf8_lossy(&answer).into_owned())
}
