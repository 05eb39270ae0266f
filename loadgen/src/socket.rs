//! A Socket.IO socket on either transport, as the chat scenario drives it:
//! text packets out, text packets in, whatever carries them.

use std::net::Ipv4Addr;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::poll::{self, PollSocket};
use crate::proto::{self, Error, Target, Transport, Ws};

pub enum Socket {
    // Boxed: a WebSocket stream is several times a polling socket's size.
    Ws(Box<Ws>),
    Poll(PollSocket),
}

impl Socket {
    /// Connects on the target's transport and sends CONNECT with `token`.
    pub async fn connect(target: &Target, local: Option<Ipv4Addr>, token: &str) -> Result<Self, Error> {
        match target.transport {
            Transport::WebSocket => Ok(Self::Ws(Box::new(proto::connect(target, local, token).await?))),
            Transport::Polling => {
                let opened = poll::connect(target, local, &format!("{{\"token\":\"{token}\"}}")).await?;
                Ok(Self::Poll(PollSocket::start(target.clone(), local, opened)))
            }
        }
    }

    pub async fn send(&mut self, packet: String) -> Result<(), Error> {
        match self {
            Self::Ws(ws) => ws.send(Message::text(packet)).await.map_err(Error::from),
            Self::Poll(socket) => socket.send(packet).await,
        }
    }

    /// The next text packet; `None` once the server closed the socket or
    /// it failed. Cancel-safe, for `select!`.
    pub async fn next(&mut self) -> Option<String> {
        match self {
            Self::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Text(text))) => return Some(text.as_str().to_owned()),
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
                    Some(Ok(_)) => {}
                }
            },
            Self::Poll(socket) => socket.next().await,
        }
    }
}
