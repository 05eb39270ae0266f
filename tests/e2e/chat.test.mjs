// End-to-end: the official socket.io-client against a running Aurum.
// Started by the Rust integration test `e2e::official_client_chats`, which
// serves a fresh database and passes the URL and tokens in the environment.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { io } from "socket.io-client";

const url = process.env.AURUM_WS_URL;
const [tokenA, tokenB, tokenNoProfile] = [process.env.AURUM_TOKEN_A, process.env.AURUM_TOKEN_B, process.env.AURUM_TOKEN_C];
const userA = Number(process.env.AURUM_USER_A);
const userB = Number(process.env.AURUM_USER_B);
const jwtSecret = process.env.AURUM_JWT_SECRET;

// An HS256 token for `user`, expiring `ttl` seconds from now, signed as the server's are.
function tokenFor(user, ttl) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const unsigned = `${part({ alg: "HS256", typ: "JWT" })}.${part({ sub: String(user), exp: Math.floor(Date.now() / 1000) + ttl })}`;
  return `${unsigned}.${createHmac("sha256", jwtSecret).update(unsigned).digest("base64url")}`;
}

// AURUM_TRANSPORTS picks the client's transports: "websocket", "polling",
// or "default" (no option: long-polling first, then the upgrade).
const transports = process.env.AURUM_TRANSPORTS ?? "websocket";
const transportOptions = transports === "default" ? {} : { transports: transports.split(",") };

function connect(token, extra = {}) {
  return io(url, { auth: { token, ...extra }, ...transportOptions, reconnection: false, forceNew: true });
}

function once(socket, event, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${ms} ms`)), ms);
    socket.once(event, (value) => { clearTimeout(timer); resolve(value); });
  });
}

function emitAck(socket, event, payload) {
  return socket.timeout(5000).emitWithAck(event, payload);
}

async function connected(token, extra) {
  const socket = connect(token, extra);
  await once(socket, "connect");
  return socket;
}

test("the transport is the one asked for, upgraded from polling by default", async () => {
  const socket = await connected(tokenA);
  try {
    if (transports === "default") {
      // The handshake is on polling; the upgrade follows.
      if (socket.io.engine.transport.name !== "websocket") await once(socket.io.engine, "upgrade");
    }
    const expected = transports === "polling" ? "polling" : "websocket";
    assert.equal(socket.io.engine.transport.name, expected);
    const ack = await emitAck(socket, "chat_message", { recipient_id: userB, message: `over ${transports}` });
    assert.equal(ack.ok, true);
  } finally {
    socket.close();
  }
});

test("a bad token gets connect_error with code unauthorized", async () => {
  for (const token of ["not-a-jwt", undefined]) {
    const socket = connect(token);
    const error = await once(socket, "connect_error");
    assert.equal(error.data?.code, "unauthorized");
    assert.equal(socket.connected, false);
    socket.close();
  }
});

test("two users chat across devices with acks and new_message", async () => {
  const a1 = await connected(tokenA);
  const a2 = await connected(tokenA);
  const b = await connected(tokenB);
  try {
    const toB = once(b, "new_message");
    const toA2 = once(a2, "new_message");
    let a1Echo = false;
    a1.on("new_message", () => { a1Echo = true; });
    const ack = await emitAck(a1, "chat_message", { recipient_id: userB, message: "Hello", client_id: "e2e-1" });
    assert.equal(ack.ok, true);
    assert.ok(Number.isInteger(ack.id) && ack.id > 0);
    assert.ok(ack.conversation_id > 0);
    assert.match(ack.sent_at, /^\d{4}-\d\d-\d\dT/);
    for (const message of [await toB, await toA2]) {
      assert.deepEqual(message, {
        id: ack.id, conversation_id: ack.conversation_id, sender_id: userA, recipient_id: userB,
        message: "Hello", sent_at: ack.sent_at, client_id: "e2e-1",
      });
    }
    // A retry with the same client_id returns the first ack; nothing new.
    const retry = await emitAck(a1, "chat_message", { recipient_id: userB, message: "Hello", client_id: "e2e-1" });
    assert.deepEqual(retry, ack);

    // B answers; typing and read receipts reach A.
    const typing = once(a1, "typing");
    b.emit("typing", { recipient_id: userA });
    assert.deepEqual(await typing, { sender_id: userB });
    const read = once(a1, "message_read");
    const readAck = await emitAck(b, "mark_read", { conversation_id: ack.conversation_id, message_id: ack.id });
    assert.equal(readAck.ok, true);
    assert.deepEqual(await read, { conversation_id: ack.conversation_id, reader_id: userB, message_id: ack.id });

    // Refusals come back in the ack with a code.
    const cases = [
      [{ recipient_id: userA, message: "me" }, "invalid_recipient"],
      [{ recipient_id: 987654321, message: "who?" }, "unknown_recipient"],
      [{ recipient_id: userB, message: "" }, "invalid_message"],
      [{ recipient_id: userB, message: "x".repeat(4001) }, "invalid_message"],
      [{ recipient_id: "abc", message: "hi" }, "invalid_payload"],
      ["just a string", "invalid_payload"],
    ];
    for (const [payload, code] of cases) {
      const refused = await emitAck(a1, "chat_message", payload);
      assert.equal(refused.ok, false, JSON.stringify(payload));
      assert.equal(refused.error.code, code, JSON.stringify(payload));
    }
    assert.equal(a1Echo, false, "the sending socket does not get its own message back");
  } finally {
    for (const s of [a1, a2, b]) s.close();
  }
});

test("a client that was away gets what it missed through since", async () => {
  const a = await connected(tokenA);
  const first = await emitAck(a, "chat_message", { recipient_id: userB, message: "before" });
  const missed = [];
  for (const text of ["while away 1", "while away 2"]) {
    missed.push(await emitAck(a, "chat_message", { recipient_id: userB, message: text }));
  }
  a.close();
  const b = connect(tokenB, { since: first.id });
  const got = [];
  b.on("new_message", (m) => got.push(m));
  await once(b, "connect");
  const deadline = Date.now() + 5000;
  while (got.length < missed.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  b.close();
  assert.deepEqual(got.map((m) => m.id), missed.map((m) => m.id));
  assert.deepEqual(got.map((m) => m.message), ["while away 1", "while away 2"]);
});

test("a member away for long gets every missed message, in order, with since: 0", async () => {
  const missed = process.env.AURUM_AWAY_MISSED.split(",").map(Number);
  const socket = connect(process.env.AURUM_TOKEN_AWAY, { since: 0 });
  const got = [];
  let closed = null;
  socket.on("disconnect", (reason) => { closed = reason; });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${got.length} of ${missed.length} within 30 s (${closed})`)), 30000);
    socket.on("new_message", (m) => {
      got.push(m.id);
      if (got.length === missed.length) { clearTimeout(timer); resolve(); }
    });
  });
  assert.deepEqual(got, missed);
  assert.equal(closed, null, "the socket stayed open");
  socket.close();
});

test("a member without a profile cannot send", async () => {
  const c = await connected(tokenNoProfile);
  const refused = await emitAck(c, "chat_message", { recipient_id: userA, message: "hi" });
  c.close();
  assert.equal(refused.ok, false);
  assert.equal(refused.error.code, "no_profile");
});

test("a socket whose token expires is told, and reconnects by itself with a fresh token", async () => {
  let issued = 0;
  // `auth` as a function runs on every (re)connect: the first token lives 2 s, the next an hour.
  const socket = io(url, {
    auth: (send) => send({ token: tokenFor(userA, issued++ === 0 ? 2 : 3600) }),
    ...transportOptions,
    forceNew: true,
    reconnectionDelay: 100,
    reconnectionDelayMax: 200,
  });
  try {
    await once(socket, "connect");
    const expired = once(socket, "error");
    const disconnected = once(socket, "disconnect");
    assert.equal((await expired).code, "token_expired");
    // Not "io server disconnect", after which the client would stay away.
    assert.equal(await disconnected, "transport close");
    await once(socket, "connect");
    assert.equal(issued, 2);
    const ack = await emitAck(socket, "chat_message", { recipient_id: userB, message: "with a fresh token" });
    assert.equal(ack.ok, true);
  } finally {
    socket.close();
  }
});
