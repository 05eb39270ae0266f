//! Settings of the socket listener and of every session it starts.

use std::time::Duration;

use actix::ArbiterHandle;

/// Protocol timings, limits and buffer sizes for sockets.
///
/// Read from the environment by the `aurum` binary (`WS_PING_INTERVAL`, …);
/// here it is plain data so tests and examples set what they need.
#[derive(Debug, Clone)]
pub struct SocketConfig {
    /// Time between two server PINGs (Engine.IO `pingInterval`).
    pub ping_interval: Duration,
    /// Time the client has to answer a PING (Engine.IO `pingTimeout`).
    pub ping_timeout: Duration,
    /// Largest WebSocket frame and message accepted, in bytes (Engine.IO `maxPayload`).
    pub max_payload: usize,
    /// Time a new socket has to join a namespace before it is closed.
    pub connect_timeout: Duration,
    /// Time a client has to send an HTTP request once its connection is
    /// open (or its request has begun), and to complete an upgrade from
    /// long-polling to WebSocket once it has opened the WebSocket.
    pub handshake_timeout: Duration,
    /// Largest HTTP request head, in bytes.
    pub max_request_head: usize,
    /// Frames queued for a client (not yet written to its socket) before the
    /// client counts as a slow consumer and is closed.
    pub outbound_queue: usize,
    /// Packets other actors may have waiting in a session's mailbox before
    /// the session counts as a slow consumer and is closed.
    pub mailbox_capacity: usize,
    /// Application event futures a session runs at once; past that it stops
    /// reading its socket until one finishes.
    pub max_pending_events: usize,
    /// Binary attachments allowed in one packet. A BINARY_EVENT announcing
    /// more reaches the application at once with
    /// `Event::refused_attachments` set, and its attachments are dropped
    /// unread as they arrive; 0 refuses every binary event that way.
    pub max_attachments: usize,
    /// Bytes read from a socket at a time. The buffer exists only while
    /// bytes wait to be parsed; a message larger than it is read into an
    /// allocation of its own (DESIGN.md: the target is 5 KiB per idle socket).
    pub read_buffer_size: usize,
    /// Arbiters (threads) sockets are spread over; 0 means one per core.
    /// Ignored when `arbiters` is given.
    pub workers: usize,
    /// Arbiters to run sessions on, owned (and stopped) by the caller, so
    /// sessions can share threads with the actors they talk to most; when
    /// empty, the listener starts `workers` of its own.
    pub arbiters: Vec<ArbiterHandle>,
    /// Time given to sessions to say goodbye at shutdown before their
    /// arbiters are stopped anyway.
    pub shutdown_grace: Duration,
    /// Whether new sockets are taken (the ResourceSupervisor sheds them
    /// under memory pressure; a draining node refuses them).
    pub admission: std::sync::Arc<crate::supervisor::Admission>,
    /// Where each connection is counted as a live task, if anywhere.
    pub tasks: Option<std::sync::Arc<crate::supervisor::TaskCensus>>,
    /// The long-polling sessions of this node by sid, which the listener
    /// looks requests up in (their number is this map's length).
    pub polling_sessions: std::sync::Arc<crate::sids::PollingSessions>,
    /// Browser origins (`scheme://host[:port]`) whose pages may use
    /// long-polling from another origin (CORS); none by default.
    pub cors_origins: Vec<String>,
    /// Per-address socket caps and handshake rates, and the bound on
    /// handshakes in flight; none by default.
    pub limits: std::sync::Arc<crate::limits::ConnectionLimits>,
    /// The kernel's send buffer for each accepted socket (SO_SNDBUF), in
    /// bytes; 0 leaves it to the kernel's autotuning.
    pub send_buffer: usize,
}

impl Default for SocketConfig {
    /// DESIGN.md's defaults: 25 s / 20 s heartbeat, 100,000-byte packets.
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            max_payload: 100_000,
            connect_timeout: Duration::from_secs(45),
            handshake_timeout: Duration::from_secs(10),
            max_request_head: 8 * 1024,
            outbound_queue: 256,
            mailbox_capacity: 256,
            max_pending_events: 32,
            max_attachments: crate::codec::binary::DEFAULT_MAX_ATTACHMENTS,
            read_buffer_size: 1024,
            workers: 0,
            arbiters: Vec::new(),
            shutdown_grace: Duration::from_secs(5),
            admission: std::sync::Arc::default(),
            tasks: None,
            polling_sessions: std::sync::Arc::default(),
            cors_origins: Vec::new(),
            limits: std::sync::Arc::default(),
            send_buffer: 0,
        }
    }
}

impl SocketConfig {
    /// Time a client has from a WebSocket message's first byte to its
    /// last: the ping timeout. A client busy trickling a frame cannot
    /// answer a ping either, and one that cannot finish a frame in the time
    /// it has to answer one is as gone as one that does not answer.
    pub(crate) fn message_timeout(&self) -> Duration {
        self.ping_timeout
    }

    /// Number of arbiters to start: `workers`, or one per core.
    pub(crate) fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, usize::from)
        }
    }
}
