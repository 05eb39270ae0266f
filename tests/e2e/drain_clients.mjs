// Members chatting through a load balancer while the node they are on
// drains. Started by the Rust test `drain::a_draining_node_sends_official_clients_elsewhere`,
// which passes the URL and the members in the environment, and reads one
// JSON line of results from stdout. The clients keep socket.io-client's
// default reconnection; each reconnects with the largest id it holds.
import { io } from "socket.io-client";

const url = process.env.AURUM_WS_URL;
const members = JSON.parse(process.env.AURUM_MEMBERS); // [{ user, partner, token }]
const chatMs = Number(process.env.AURUM_CHAT_MS ?? 6000);
const settleMs = Number(process.env.AURUM_SETTLE_MS ?? 4000);
const transports = process.env.AURUM_TRANSPORTS ? process.env.AURUM_TRANSPORTS.split(",") : undefined;

const results = members.map(({ user, partner, token }) => {
  const state = { user, partner, acked: [], refused: [], received: new Set(), connects: 0, reasons: [], newest: 0 };
  const options = {
    // A function, so every reconnection sends the newest id held by then.
    auth: (cb) => cb(state.newest > 0 ? { token, since: state.newest } : { token }),
    forceNew: true,
  };
  if (transports) options.transports = transports;
  const socket = io(url, options);
  socket.on("connect", () => { state.connects += 1; });
  socket.on("disconnect", (reason) => { state.reasons.push(reason); });
  socket.on("new_message", (m) => {
    state.received.add(m.id);
    state.newest = Math.max(state.newest, m.id);
  });
  state.socket = socket;
  return state;
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function chat(state, until) {
  let n = 0;
  while (Date.now() < until) {
    n += 1;
    const clientId = `${state.user}-${n}`;
    if (state.socket.connected) {
      try {
        const ack = await state.socket.timeout(3000).emitWithAck("chat_message", {
          recipient_id: state.partner, message: `drain ${clientId}`, client_id: clientId,
        });
        if (ack.ok) state.acked.push(ack.id); else state.refused.push(ack.error.code);
      } catch {
        // No ack (the transport closed meanwhile): not acknowledged, so not counted.
      }
    }
    await sleep(50);
  }
}

const started = Date.now();
while (results.some((s) => s.connects === 0)) {
  if (Date.now() - started > 10000) throw new Error("members did not all connect within 10 s");
  await sleep(20);
}
console.log("READY");
await Promise.all(results.map((s) => chat(s, Date.now() + chatMs)));
await sleep(settleMs);
const report = results.map(({ socket, received, ...s }) => ({ ...s, connected: socket.connected, received: [...received] }));
for (const s of results) s.socket.close();
console.log(JSON.stringify(report));
process.exit(0);
