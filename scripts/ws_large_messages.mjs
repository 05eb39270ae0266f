// Read-buffer retention check (issue 3: a buffer that grew for a large
// message must shrink back). Connects N sockets with the official client,
// waits for a line on stdin, sends one `size`-character chat_message on
// each, waits for another line, then closes. scripts/ws-large-messages.sh
// drives it and reads the server's RSS between the steps.
// Usage: node ws_large_messages.mjs URL N SIZE JWT_SECRET
import { createRequire } from 'node:module';
import crypto from 'node:crypto';
const require = createRequire(new URL('../tests/e2e/package.json', import.meta.url));
const { io } = require('socket.io-client');
const [url, n, size, secret] = [process.argv[2], +process.argv[3], +process.argv[4], process.argv[5]];
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
function token(sub) {
  const head = b64({ alg: 'HS256', typ: 'JWT' });
  const body = b64({ sub: String(sub), exp: Math.floor(Date.now() / 1000) + 3600 });
  const sig = crypto.createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}
const sockets = [];
for (let i = 0; i < n; i++) {
  sockets.push(io(url, { transports: ['websocket'], auth: { token: token(i + 1) }, reconnection: false }));
}
await Promise.all(sockets.map((s) => new Promise((ok, fail) => { s.on('connect', ok); s.on('connect_error', fail); })));
console.log('connected');
await new Promise((r) => process.stdin.once('data', r));
const body = 'x'.repeat(size);
await Promise.all(sockets.map((s, i) => s.timeout(10000).emitWithAck('chat_message', { recipient_id: ((i + 1) % n) + 1, message: body }).catch((e) => e)));
console.log('sent');
await new Promise((r) => process.stdin.once('data', r));
sockets.forEach((s) => s.close());
process.exit(0);
