// The peer of `make bench-cluster`: what a team would deploy with the
// official packages, a Node.js Socket.IO server on @socket.io/redis-adapter,
// speaking Aurum's contract (DESIGN.md) closely enough for aurum-loadgen:
//
// - path /socket.io/, Engine.IO v4, the JWT (HS256, JWT_SECRET) in the
//   CONNECT packet's `auth.token`, `sub` = the user id;
// - each socket joins the room `u:<user id>`;
// - `chat_message` { recipient_id, message, client_id? } emits `new_message`
//   to the recipient's room and to the sender's other sockets, through the
//   Redis adapter, and acks { ok, id, conversation_id, sent_at }.
//
// A relay only: nothing is stored, ids are this process's own counter. That
// is the difference the benchmark reports: Aurum acks after the message is
// committed to PostgreSQL, this server before anything is kept anywhere.
//
// The adapter is the sharded one (Redis 7 sharded pub/sub, SPUBLISH /
// SSUBSCRIBE), which its documentation recommends for new developments, in
// its default "dynamic" mode: one channel per room, subscribed by the nodes
// that hold a member of it, as Aurum's bus has one channel per user.
//
// Environment: PORT (listens on 127.0.0.1), JWT_SECRET, REDIS_URL.

"use strict";

const http = require("node:http");
const jwt = require("jsonwebtoken");
const { createClient } = require("redis");
const { Server } = require("socket.io");
const { createShardedAdapter } = require("@socket.io/redis-adapter");

const port = Number(process.env.PORT || 3000);
const secret = process.env.JWT_SECRET;
const redisUrl = process.env.REDIS_URL || "redis://127.0.0.1:6379";
if (!secret) {
  console.error("JWT_SECRET is required");
  process.exit(1);
}

const MAX_BODY = 4000;
// Message ids of this process: unique per node, not across nodes (nothing
// here is the truth; the recipient only reads the body).
let nextId = 1;

function refuse(code, message) {
  return { ok: false, error: { code, message } };
}

// One conversation per pair of users, named by the pair.
function conversationOf(a, b) {
  return Math.min(a, b) * 1_000_000_000 + Math.max(a, b);
}

async function main() {
  const pub = createClient({ url: redisUrl });
  const sub = pub.duplicate();
  pub.on("error", (error) => console.error("redis (pub):", error.message));
  sub.on("error", (error) => console.error("redis (sub):", error.message));
  await Promise.all([pub.connect(), sub.connect()]);

  // Socket.IO answers /socket.io/; anything else gets a JSON 404.
  const httpServer = http.createServer((req, res) => {
    res.writeHead(404, { "content-type": "application/json" });
    res.end(JSON.stringify({ error: { code: "not_found", message: "only /socket.io/ is served" } }));
  });
  const io = new Server(httpServer, {
    path: "/socket.io/",
    adapter: createShardedAdapter(pub, sub),
    pingInterval: 25_000,
    pingTimeout: 20_000,
    maxHttpBufferSize: 100_000,
  });

  io.use((socket, next) => {
    const token = socket.handshake.auth && socket.handshake.auth.token;
    try {
      const claims = jwt.verify(String(token || ""), secret, { algorithms: ["HS256"] });
      const user = Number(claims.sub);
      if (!Number.isSafeInteger(user) || user <= 0) throw new Error("bad sub");
      socket.data.user = user;
      next();
    } catch {
      const error = new Error("invalid or missing token");
      error.data = { code: "unauthorized" };
      next(error);
    }
  });

  io.on("connection", (socket) => {
    const user = socket.data.user;
    socket.join(`u:${user}`);
    socket.on("chat_message", (payload, ack) => {
      const reply = typeof ack === "function" ? ack : () => {};
      const recipient = payload && payload.recipient_id;
      const body = payload && payload.message;
      if (!Number.isSafeInteger(recipient) || recipient <= 0) {
        return reply(refuse("invalid_recipient", "recipient_id must be a user id"));
      }
      if (recipient === user) {
        return reply(refuse("self_message", "a message to oneself"));
      }
      if (typeof body !== "string" || body.length < 1 || body.length > MAX_BODY) {
        return reply(refuse("invalid_message", `messages are 1 to ${MAX_BODY} characters`));
      }
      const message = {
        id: nextId++,
        conversation_id: conversationOf(user, recipient),
        sender_id: user,
        recipient_id: recipient,
        message: body,
        sent_at: new Date().toISOString(),
      };
      if (typeof payload.client_id === "string") message.client_id = payload.client_id;
      // Two single-room emits, as Aurum publishes to the recipient's channel
      // and the sender's: one room each keeps the adapter on per-room channels.
      io.to(`u:${recipient}`).emit("new_message", message);
      socket.to(`u:${user}`).emit("new_message", message);
      reply({ ok: true, id: message.id, conversation_id: message.conversation_id, sent_at: message.sent_at });
    });
  });

  httpServer.listen(port, "127.0.0.1", () => console.error(`peer listening on 127.0.0.1:${port}`));

  const stop = () => {
    io.close();
    Promise.allSettled([pub.quit(), sub.quit()]).then(() => process.exit(0));
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
