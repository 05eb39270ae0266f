//! The server side of WebSocket framing (RFC 6455) over an upgraded TCP
//! socket, written for memory.
//!
//! A socket waiting for data holds no buffer at all: bytes are read only
//! once the socket is readable, and the buffer they land in is released as
//! soon as it is parsed. A message too big for that buffer gets an
//! allocation of its own, grown with the bytes that arrive (never sized by
//! the header's claim alone), that leaves with the message; a message begun
//! must end within a deadline. The
//! general-purpose crate used before (tungstenite) reads every socket into
//! one buffer that keeps the size of the largest message the socket ever
//! received: 1,000 sockets that had each sent one 90 KB message held 89 MB
//! until they closed (`scripts/ws-large-messages.sh`).
//!
//! Outgoing frames are tungstenite's `Message` values, so the session keeps
//! one vocabulary for what it queues; they are encoded here, and a batch of
//! them goes to the socket in one write.

use std::collections::VecDeque;
use std::future::Future;
use std::io;

use tokio::io::AsyncWriteExt as _;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;
/// Most bytes one read takes off a socket.
const MAX_READ_CHUNK: usize = 4096;
/// Control frames (close, ping, pong) carry at most this much.
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// A complete message from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Text(String),
    Binary(Vec<u8>),
    /// Answered with a pong carrying the same payload.
    Ping(Vec<u8>),
    Pong,
    /// The client is closing; its code and reason, if it gave them.
    Close(Option<CloseFrame>),
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("a message of {size} bytes is over the {max}-byte limit")]
    TooLarge { size: u64, max: usize },
    #[error("{0}")]
    Protocol(&'static str),
    #[error("a text message is not UTF-8")]
    Utf8,
    /// A message begun and not finished in time: a client trickling a
    /// frame a byte at a time holds the socket no longer than this.
    #[error("a message was not complete within {0:?} of its first byte")]
    Timeout(std::time::Duration),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A frame header: what precedes every frame's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    len: u64,
    /// Bytes the header itself takes.
    size: usize,
}

/// The header at the start of `buf`, or `None` when more bytes are needed.
fn parse_header(buf: &[u8]) -> Result<Option<Header>, ReadError> {
    let (Some(&first), Some(&second)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    if first & 0x70 != 0 {
        return Err(ReadError::Protocol(
            "reserved bits set, but no extension was agreed",
        ));
    }
    if second & 0x80 == 0 {
        return Err(ReadError::Protocol("a client frame is not masked"));
    }
    let (len, at) = match second & 0x7F {
        126 => {
            let Some(bytes) = buf.get(2..4).and_then(|s| <[u8; 2]>::try_from(s).ok()) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes(bytes)), 4)
        }
        127 => {
            let Some(bytes) = buf.get(2..10).and_then(|s| <[u8; 8]>::try_from(s).ok()) else {
                return Ok(None);
            };
            let len = u64::from_be_bytes(bytes);
            if len >> 63 != 0 {
                return Err(ReadError::Protocol("a frame length has its top bit set"));
            }
            (len, 10)
        }
        short => (u64::from(short), 2),
    };
    let Some(mask) = buf.get(at..at + 4).and_then(|s| <[u8; 4]>::try_from(s).ok()) else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin: first & 0x80 != 0,
        opcode: first & 0x0F,
        mask,
        len,
        size: at + 4,
    }))
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (byte, key) in payload.iter_mut().zip(mask.iter().cycle()) {
        *byte ^= key;
    }
}

/// What [`WsReader`] reads from: a source that says when it has bytes and
/// then hands them over without waiting, so the reader's buffer is only
/// ever borrowed between the two, never held across a wait.
///
/// The socket's read half in production; the fuzz targets feed bytes from
/// memory through it.
pub trait ReadySource {
    /// Waits until a read may find bytes (or the end of the stream).
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;

    /// Reads what is there without waiting: 0 at the end of the stream,
    /// `WouldBlock` when nothing is (the wait above may wake spuriously).
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;
}

impl ReadySource for OwnedReadHalf {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        OwnedReadHalf::readable(self)
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        OwnedReadHalf::try_read(self, buf)
    }
}

/// Reads the client's messages off the socket's read half.
pub struct WsReader<R = OwnedReadHalf> {
    read: R,
    /// Bytes read but not parsed yet; released whenever it empties.
    pending: Vec<u8>,
    /// How much one read asks the socket for.
    chunk: usize,
    max_payload: usize,
    /// The opcode and data so far of a message sent in fragments.
    fragments: Option<(u8, Vec<u8>)>,
    /// Time from a message's first byte to its last.
    message_timeout: std::time::Duration,
    done: bool,
}

impl<R: ReadySource> WsReader<R> {
    /// `early` holds bytes the client sent right behind its upgrade
    /// request; a message must arrive whole within `message_timeout` of its
    /// first byte.
    pub fn new(
        read: R,
        early: Vec<u8>,
        chunk: usize,
        max_payload: usize,
        message_timeout: std::time::Duration,
    ) -> Self {
        Self {
            read,
            pending: early,
            chunk: chunk.max(16),
            max_payload,
            fragments: None,
            message_timeout,
            done: false,
        }
    }

    /// The reader as a stream of messages, which ends after a close, an
    /// error, or the end of the connection.
    pub fn into_stream(self) -> impl futures_util::Stream<Item = Result<Incoming, ReadError>> {
        futures_util::stream::unfold(self, |mut reader| async move {
            let item = reader.next().await?;
            Some((item, reader))
        })
    }

    async fn next(&mut self) -> Option<Result<Incoming, ReadError>> {
        if self.done {
            return None;
        }
        let item = self.read_timed().await.transpose();
        if !matches!(
            item,
            Some(Ok(Incoming::Text(_)
                | Incoming::Binary(_)
                | Incoming::Ping(_)
                | Incoming::Pong))
        ) {
            self.done = true;
        }
        item
    }

    /// [`Self::read_message`], with its deadline running from the
    /// message's first byte: waiting between messages has none (the
    /// heartbeat finds a silent client), a message begun must end in time.
    async fn read_timed(&mut self) -> Result<Option<Incoming>, ReadError> {
        if self.pending.is_empty() && self.fragments.is_none() && !self.fill().await? {
            return Ok(None);
        }
        tokio::time::timeout(self.message_timeout, self.read_message())
            .await
            .unwrap_or(Err(ReadError::Timeout(self.message_timeout)))
    }

    /// The next whole message; `None` when the client closed the connection
    /// between messages.
    async fn read_message(&mut self) -> Result<Option<Incoming>, ReadError> {
        loop {
            let Some(header) = parse_header(&self.pending)? else {
                if self.fill().await? {
                    continue;
                }
                if self.pending.is_empty() && self.fragments.is_none() {
                    return Ok(None);
                }
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            };
            let is_control = header.opcode & 0x8 != 0;
            if is_control && (!header.fin || header.len > MAX_CONTROL_PAYLOAD) {
                return Err(ReadError::Protocol(
                    "a control frame is fragmented or over 125 bytes",
                ));
            }
            let so_far = self.fragments.as_ref().map_or(0, |(_, data)| data.len());
            let size = header.len.saturating_add(so_far as u64);
            if size > self.max_payload as u64 {
                return Err(ReadError::TooLarge {
                    size,
                    max: self.max_payload,
                });
            }
            let payload = self.payload(&header).await?;
            match header.opcode {
                OP_PING => return Ok(Some(Incoming::Ping(payload))),
                OP_PONG => return Ok(Some(Incoming::Pong)),
                OP_CLOSE => return close_frame(&payload).map(|frame| Some(Incoming::Close(frame))),
                OP_TEXT | OP_BINARY => {
                    if self.fragments.is_some() {
                        return Err(ReadError::Protocol("a new message began inside a fragmented one"));
                    }
                    if header.fin {
                        return finish(header.opcode, payload).map(Some);
                    }
                    self.fragments = Some((header.opcode, payload));
                }
                OP_CONTINUATION => {
                    let Some((opcode, mut data)) = self.fragments.take() else {
                        return Err(ReadError::Protocol(
                            "a continuation frame without a message to continue",
                        ));
                    };
                    data.extend_from_slice(&payload);
                    if header.fin {
                        return finish(opcode, data).map(Some);
                    }
                    self.fragments = Some((opcode, data));
                }
                _ => return Err(ReadError::Protocol("an unknown opcode")),
            }
        }
    }

    /// Reads what the socket has into `pending`; false at the end of the stream.
    async fn fill(&mut self) -> Result<bool, ReadError> {
        loop {
            self.read.readable().await?;
            // Read on the stack, declared after the wait so no socket's
            // future carries it across one (a helper awaiting with the array
            // borrowed would put 4 KiB in every idle socket), then keep
            // exactly what arrived: a chat frame is a small allocation from
            // the allocator's fast path, where reserving `chunk` bytes each
            // time took its slow one.
            let mut chunk = [0_u8; MAX_READ_CHUNK];
            let limit = self.chunk.min(MAX_READ_CHUNK);
            match self.read.try_read(&mut chunk[..limit]) {
                Ok(0) => return Ok(false),
                Ok(read) => {
                    self.pending.extend_from_slice(&chunk[..read]);
                    return Ok(true);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// The unmasked payload of the frame `header` starts, header consumed.
    async fn payload(&mut self, header: &Header) -> Result<Vec<u8>, ReadError> {
        let len = usize::try_from(header.len).map_err(|_| ReadError::TooLarge {
            size: header.len,
            max: self.max_payload,
        })?;
        let frame_end = header.size + len;
        let mut payload = if self.pending.len() >= frame_end {
            let payload = self.pending[header.size..frame_end].to_vec();
            self.pending.drain(..frame_end);
            payload
        } else {
            // Bigger than what has arrived: an allocation of its own, so
            // `pending` never grows to its size, and grown with what really
            // arrives, never sized by the header alone: a header claiming
            // 100 KB followed by a trickle (or nothing) costs what came.
            let mut payload = Vec::with_capacity(len.min(MAX_READ_CHUNK));
            payload.extend_from_slice(&self.pending[header.size..]);
            self.pending.clear();
            while payload.len() < len {
                self.read.readable().await?;
                // On the stack, after the wait, as in `fill`.
                let mut chunk = [0_u8; MAX_READ_CHUNK];
                let want = (len - payload.len()).min(MAX_READ_CHUNK);
                match self.read.try_read(&mut chunk[..want]) {
                    Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
                    Ok(read) => {
                        if payload.capacity() - payload.len() < read {
                            // Doubling, capped at the frame's size: what
                            // is held stays within twice what arrived.
                            let grown = (payload.capacity() * 2).clamp(read, len);
                            payload.reserve_exact(grown - payload.len());
                        }
                        payload.extend_from_slice(&chunk[..read]);
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                    Err(error) => return Err(error.into()),
                }
            }
            payload
        };
        if self.pending.is_empty() {
            // An idle socket holds no read buffer.
            self.pending = Vec::new();
        }
        unmask(&mut payload, header.mask);
        Ok(payload)
    }
}

fn finish(opcode: u8, data: Vec<u8>) -> Result<Incoming, ReadError> {
    if opcode == OP_TEXT {
        String::from_utf8(data)
            .map(Incoming::Text)
            .map_err(|_| ReadError::Utf8)
    } else {
        Ok(Incoming::Binary(data))
    }
}

fn close_frame(payload: &[u8]) -> Result<Option<CloseFrame>, ReadError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ReadError::Protocol("a close frame with a one-byte body")),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            // The session answers a close with the client's code: one no
            // endpoint may send (1005, 1006, 1015, unassigned ones) must not
            // go back on the wire, so it is the client's protocol error.
            if !is_sendable_close_code(code) {
                return Err(ReadError::Protocol(
                    "a close frame with a code no endpoint may send",
                ));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| ReadError::Utf8)?;
            Ok(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: reason.to_owned().into(),
            }))
        }
    }
}

/// Close codes a close frame may carry (RFC 6455 7.4 and the IANA
/// registry): the defined ones but 1004 (reserved), 1005, 1006 and 1015
/// (never sent), and those for libraries and applications (3000-4999).
fn is_sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Writes frames to the socket's write half.
pub(crate) struct WsWriter {
    write: OwnedWriteHalf,
}

impl WsWriter {
    pub(crate) fn new(write: OwnedWriteHalf) -> Self {
        Self { write }
    }

    /// Writes `messages` as frames, all in one write.
    pub(crate) async fn send(&mut self, messages: VecDeque<Message>) -> io::Result<()> {
        // Headers take at most 10 bytes, close codes 2: one allocation.
        let size: usize = messages.iter().map(|m| m.len() + 12).sum();
        let mut out = Vec::with_capacity(size);
        for message in &messages {
            encode(message, &mut out);
        }
        self.write.write_all(&out).await
    }
}

/// Appends `message` as one unmasked, final frame (servers do not mask).
fn encode(message: &Message, out: &mut Vec<u8>) {
    let close_body;
    let (opcode, payload): (u8, &[u8]) = match message {
        Message::Text(text) => (OP_TEXT, text.as_bytes()),
        Message::Binary(bytes) => (OP_BINARY, bytes),
        Message::Ping(bytes) => (OP_PING, bytes),
        Message::Pong(bytes) => (OP_PONG, bytes),
        Message::Close(frame) => {
            close_body = frame.as_ref().map_or_else(Vec::new, |frame| {
                let mut body = u16::from(frame.code).to_be_bytes().to_vec();
                body.extend_from_slice(frame.reason.as_bytes());
                body
            });
            (OP_CLOSE, &close_body)
        }
        // Never queued: the session only sends whole messages.
        Message::Frame(_) => return,
    };
    out.push(0x80 | opcode);
    push_length(out, payload.len(), 0);
    out.extend_from_slice(payload);
}

/// Appends a payload length in its shortest form, with `mask_bit` (0x80 for
/// a masked frame) in the first byte.
fn push_length(out: &mut Vec<u8>, len: usize, mask_bit: u8) {
    match len {
        0..=125 => out.push(mask_bit | len as u8),
        _ if len <= usize::from(u16::MAX) => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use tokio::io::AsyncWriteExt as _;

    use super::*;

    /// A client frame: masked, as RFC 6455 requires of clients.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        push_length(&mut out, payload.len(), 0x80);
        out.extend_from_slice(&mask);
        let mut body = payload.to_vec();
        unmask(&mut body, mask);
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn headers_need_all_their_bytes() {
        let frame = client_frame(true, OP_TEXT, &[b'x'; 300]);
        for cut in 0..8 {
            assert_eq!(parse_header(&frame[..cut]).ok(), Some(None), "cut at {cut}");
        }
        let header = parse_header(&frame).ok().flatten();
        assert_eq!(
            header.map(|h| (h.fin, h.opcode, h.len, h.size)),
            Some((true, OP_TEXT, 300, 8))
        );
        let long = client_frame(false, OP_BINARY, &vec![0; 70_000]);
        let header = parse_header(&long).ok().flatten();
        assert_eq!(header.map(|h| (h.fin, h.len, h.size)), Some((false, 70_000, 14)));
    }

    #[test]
    fn unmasked_and_reserved_frames_are_refused() {
        assert!(matches!(
            parse_header(&[0x81, 0x01, b'x']),
            Err(ReadError::Protocol(_))
        ));
        assert!(matches!(
            parse_header(&[0xC1, 0x81, 0, 0, 0, 0, b'x']),
            Err(ReadError::Protocol(_))
        ));
    }

    #[test]
    fn frames_encode_with_the_shortest_length() {
        for (len, header) in [(0, 2), (125, 2), (126, 4), (65_535, 4), (65_536, 10)] {
            let mut out = Vec::new();
            encode(&Message::Binary(vec![7; len].into()), &mut out);
            assert_eq!(out.len(), header + len, "{len} bytes");
            assert_eq!(out[0], 0x80 | OP_BINARY);
        }
        let mut out = Vec::new();
        encode(
            &Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            })),
            &mut out,
        );
        assert_eq!(out, [0x88, 5, 0x03, 0xE8, b'b', b'y', b'e']);
    }

    /// A connected pair: what the test writes to `client` the reader reads.
    async fn pair(max_payload: usize) -> (tokio::net::TcpStream, WsReader) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (read, _write) = server.into_split();
        (
            client,
            WsReader::new(
                read,
                Vec::new(),
                64,
                max_payload,
                std::time::Duration::from_secs(5),
            ),
        )
    }

    #[tokio::test]
    async fn messages_arrive_whole_across_fragments_and_reads() {
        let (mut client, mut reader) = pair(100_000).await;
        let big: Vec<u8> = (0..50_000_u32).map(|i| (i % 251) as u8).collect();
        let mut bytes = client_frame(true, OP_TEXT, "héllo".as_bytes());
        bytes.extend(client_frame(false, OP_BINARY, &big[..20_000]));
        bytes.extend(client_frame(true, OP_PING, b"p"));
        bytes.extend(client_frame(true, OP_CONTINUATION, &big[20_000..]));
        bytes.extend(client_frame(true, OP_CLOSE, &[0x03, 0xE8, b'o', b'k']));
        // Dribbled out, so frames and headers straddle reads.
        let writer = tokio::spawn(async move {
            for piece in bytes.chunks(999) {
                client.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
            client
        });
        assert_eq!(
            reader.next().await.unwrap().unwrap(),
            Incoming::Text("héllo".into())
        );
        assert_eq!(
            reader.next().await.unwrap().unwrap(),
            Incoming::Ping(b"p".to_vec())
        );
        assert_eq!(reader.next().await.unwrap().unwrap(), Incoming::Binary(big));
        let close = reader.next().await.unwrap().unwrap();
        assert!(
            matches!(close, Incoming::Close(Some(frame)) if frame.code == CloseCode::Normal && frame.reason == "ok")
        );
        assert!(reader.next().await.is_none(), "nothing after a close");
        assert_eq!(reader.pending.capacity(), 0, "no buffer kept between messages");
        drop(writer.await.unwrap());
    }

    /// Found by the ws_reader fuzz target (fuzz/corpus/ws_reader/
    /// regression-close-code): a ping, then a close with code 21480, which
    /// the reader passed on and the session echoed back to the client.
    #[tokio::test]
    async fn close_codes_no_endpoint_may_send_are_protocol_errors() {
        let fuzzed = [
            0x89, 0x85, 0x12, 0x34, 0x56, 0x78, 0x62, 0x46, 0x39, 0x1a, 0x77, 0x88, 0x85, 0x12, 0x34, 0x56,
            0x78, 0x41, 0xdc, 0x34, 0x01, 0x77,
        ];
        let (mut client, mut reader) = pair(65_535).await;
        client.write_all(&fuzzed).await.unwrap();
        assert_eq!(
            reader.next().await.unwrap().unwrap(),
            Incoming::Ping(b"probe".to_vec())
        );
        assert!(matches!(reader.next().await, Some(Err(ReadError::Protocol(_)))));
        assert!(reader.next().await.is_none());

        for code in [
            0_u16,
            999,
            1004,
            1005,
            1006,
            1015,
            1016,
            2999,
            5000,
            21_480,
            u16::MAX,
        ] {
            let (mut client, mut reader) = pair(1_000).await;
            let mut body = code.to_be_bytes().to_vec();
            body.extend_from_slice(b"bye");
            client
                .write_all(&client_frame(true, OP_CLOSE, &body))
                .await
                .unwrap();
            assert!(
                matches!(reader.next().await, Some(Err(ReadError::Protocol(_)))),
                "close code {code}"
            );
        }
        for code in [1000_u16, 1001, 1003, 1007, 1011, 1014, 3000, 4000, 4999] {
            let (mut client, mut reader) = pair(1_000).await;
            client
                .write_all(&client_frame(true, OP_CLOSE, &code.to_be_bytes()))
                .await
                .unwrap();
            let close = reader.next().await.unwrap().unwrap();
            assert!(
                matches!(close, Incoming::Close(Some(ref frame)) if u16::from(frame.code) == code),
                "close code {code}: {close:?}"
            );
        }
    }

    #[tokio::test]
    async fn oversize_bad_utf8_and_stray_continuations_are_errors() {
        let (mut client, mut reader) = pair(1_000).await;
        client
            .write_all(&client_frame(true, OP_BINARY, &[0; 1_001]))
            .await
            .unwrap();
        assert!(matches!(
            reader.next().await,
            Some(Err(ReadError::TooLarge { size: 1_001, .. }))
        ));

        let (mut client, mut reader) = pair(1_000).await;
        client
            .write_all(&client_frame(true, OP_TEXT, &[0xFF, 0xFE]))
            .await
            .unwrap();
        assert!(matches!(reader.next().await, Some(Err(ReadError::Utf8))));

        let (mut client, mut reader) = pair(1_000).await;
        client
            .write_all(&client_frame(true, OP_CONTINUATION, b"x"))
            .await
            .unwrap();
        assert!(matches!(reader.next().await, Some(Err(ReadError::Protocol(_)))));

        let (mut client, mut reader) = pair(1_000).await;
        client
            .write_all(&client_frame(true, OP_PING, &[0; 126]))
            .await
            .unwrap();
        assert!(matches!(reader.next().await, Some(Err(ReadError::Protocol(_)))));

        // Fragments count toward the limit together.
        let (mut client, mut reader) = pair(1_000).await;
        client
            .write_all(&client_frame(false, OP_TEXT, &[b'a'; 600]))
            .await
            .unwrap();
        client
            .write_all(&client_frame(true, OP_CONTINUATION, &[b'a'; 600]))
            .await
            .unwrap();
        assert!(matches!(
            reader.next().await,
            Some(Err(ReadError::TooLarge { size: 1_200, .. }))
        ));

        // A peer gone between messages ends the stream; mid-frame it is an error.
        let (client, mut reader) = pair(1_000).await;
        drop(client);
        assert!(reader.next().await.is_none());
        let (mut client, mut reader) = pair(1_000).await;
        client
            .write_all(&client_frame(true, OP_TEXT, b"cut")[..5])
            .await
            .unwrap();
        drop(client);
        assert!(matches!(reader.next().await, Some(Err(ReadError::Io(_)))));
    }
}
