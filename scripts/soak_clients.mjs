// Socket churn and REST load for `make soak` (scripts/soak.py starts it).
//
// SOAK_MEMBERS members, each with the official socket.io-client (default
// options: long-polling, then the upgrade) on one of SOAK_NODES chosen at
// random per visit, in a loop until SOAK_SECONDS have passed: connect with
// `since` = the largest id it holds, send a few messages to its partners
// (acked) to a few partners of its own, stay a while, leave, come back. REST: scroll pages (following
// next_cursor) and viewport batches at SOAK_REST_RATE requests/s in all.
// Every SOAK_REPORT seconds one JSON line of counts goes to stdout.
import { createHmac } from "node:crypto";
import { createRequire } from "node:module";
import path from "node:path";

// socket.io-client as tests/e2e pins it.
const require = createRequire(path.resolve(process.env.SOAK_CLIENT_DIR, "package.json"));
const { io } = require("socket.io-client");

const nodes = process.env.SOAK_NODES.split(",");
const rest = process.env.SOAK_REST.split(",");
const members = Number(process.env.SOAK_MEMBERS ?? 1000);
const seconds = Number(process.env.SOAK_SECONDS ?? 1800);
const restRate = Number(process.env.SOAK_REST_RATE ?? 50);
const reportEvery = Number(process.env.SOAK_REPORT ?? 10) * 1000;
const secret = process.env.JWT_SECRET;
const deadline = Date.now() + seconds * 1000;

const counts = { visits: 0, connect_errors: 0, sent: 0, acked: 0, refused: 0, received: 0, duplicates: 0, rest_ok: 0, rest_failed: 0 };

function token(user) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const unsigned = `${part({ alg: "HS256", typ: "JWT" })}.${part({ sub: String(user), exp: Math.floor(Date.now() / 1000) + seconds + 3600 })}`;
  return `${unsigned}.${createHmac("sha256", secret).update(unsigned).digest("base64url")}`;
}

// A member talks with a handful of others (its neighbours on a ring of
// PARTNERS each side), as members of a matrimony service do, not with
// everyone: every connect and leave tells each partner (presence), so
// random partners among all members would turn the soak into a presence
// storm nobody sees in production.
const PARTNERS = Number(process.env.SOAK_PARTNERS ?? 3);
function partnerOf(user) {
  const step = 1 + Math.floor(Math.random() * PARTNERS);
  const ahead = Math.random() < 0.5 ? step : members - step;
  return ((user - 1 + ahead) % members) + 1;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const pick = (list) => list[Math.floor(Math.random() * list.length)];
const between = (low, high) => low + Math.random() * (high - low);

async function member(user) {
  const auth = { token: token(user) };
  let since = 0;
  const seen = new Set();
  await sleep(between(0, 5000)); // not all at once
  while (Date.now() < deadline) {
    counts.visits += 1;
    const socket = io(pick(nodes), { auth: { ...auth, since }, reconnection: false, forceNew: true });
    socket.on("new_message", (message) => {
      if (seen.has(message.id)) counts.duplicates += 1;
      else counts.received += 1;
      seen.add(message.id);
      if (seen.size > 5000) seen.clear(); // bounded: the oldest ids are long replayed
      since = Math.max(since, message.id);
    });
    const up = await new Promise((resolve) => {
      socket.once("connect", () => resolve(true));
      socket.once("connect_error", () => resolve(false));
      setTimeout(() => resolve(false), 10000);
    });
    if (!up) {
      counts.connect_errors += 1;
      socket.close();
      await sleep(between(1000, 3000));
      continue;
    }
    const stay = Date.now() + between(5000, 30000);
    while (Date.now() < stay && Date.now() < deadline) {
      const partner = partnerOf(user);
      counts.sent += 1;
      try {
        const ack = await socket.timeout(10000).emitWithAck("chat_message", {
          recipient_id: partner,
          message: `soak ${user} -> ${partner} at ${Date.now()}`,
          client_id: `${user}-${counts.sent}-${Math.random().toString(36).slice(2)}`,
        });
        if (ack.ok) {
          counts.acked += 1;
          since = Math.max(since, ack.id);
        } else counts.refused += 1;
      } catch {
        counts.refused += 1;
      }
      await sleep(between(1000, 6000));
    }
    socket.close();
    await sleep(between(1000, 5000));
  }
}

async function restLoad() {
  const interval = 1000 / restRate;
  let cursor = null;
  let base = pick(rest);
  let viewer = 1;
  while (Date.now() < deadline) {
    const started = Date.now();
    // A cursor is signed for the member it was issued to: one member
    // follows a scroll to its end, and the next scroll is someone else's.
    if (!cursor) viewer = 1 + Math.floor(Math.random() * members);
    const headers = { Authorization: `Bearer ${token(viewer)}` };
    try {
      const query = cursor ? `cursor=${encodeURIComponent(cursor)}` : "limit=20&gender=female&min_age=25&max_age=40";
      const page = await fetch(`${base}/api/v1/matching/profiles/scroll?${query}`, { headers });
      if (!page.ok) throw new Error(`scroll ${page.status}`);
      const body = await page.json();
      counts.rest_ok += 1;
      cursor = body.next_cursor;
      if (!cursor) base = pick(rest);
      const ids = body.items.map((profile) => profile.id).join(",");
      if (ids) {
        const batch = await fetch(`${base}/api/v1/matching/profiles/batch?profile_ids=${ids}`, { headers });
        if (!batch.ok) throw new Error(`batch ${batch.status}`);
        await batch.json();
        counts.rest_ok += 1;
      }
    } catch {
      counts.rest_failed += 1;
      cursor = null;
    }
    await sleep(Math.max(0, 2 * interval - (Date.now() - started)));
  }
}

const report = setInterval(() => console.log(JSON.stringify({ at: Date.now(), ...counts })), reportEvery);
const everyone = [];
for (let user = 1; user <= members; user += 1) everyone.push(member(user));
everyone.push(restLoad());
await Promise.all(everyone);
clearInterval(report);
console.log(JSON.stringify({ at: Date.now(), done: true, ...counts }));
process.exit(0);
