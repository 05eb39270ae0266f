import { beforeEach, describe, expect, it, vi } from 'vitest';

import { ChatStore } from './chatStore';

// The official client stands in for itself only as far as this file needs:
// what connectChat passes it, and the events it registers.
type Handler = (...args: unknown[]) => void;
const fake = vi.hoisted(() => ({
  options: null as null | { auth: (cb: (data: object) => void) => void },
  handlers: new Map<string, Handler>(),
  emitted: [] as { event: string; payload: unknown; ack: Handler }[],
}));
vi.mock('socket.io-client', () => ({
  io: (_url: string, options: typeof fake.options) => {
    fake.options = options;
    const socket = {
      connected: true,
      active: true,
      io: { engine: { close: () => {} } },
      on: (event: string, handler: Handler) => fake.handlers.set(event, handler),
      timeout: () => ({
        emit: (event: string, payload: unknown, ack: Handler) => fake.emitted.push({ event, payload, ack }),
      }),
      emit: () => {},
      disconnect: () => {},
    };
    return socket;
  },
}));

const { connectChat } = await import('./socket');

beforeEach(() => {
  fake.handlers.clear();
  fake.emitted.length = 0;
  (globalThis as { window?: EventTarget }).window = new EventTarget();
});

const authNow = () => {
  let sent: object = {};
  fake.options?.auth((data) => (sent = data));
  return sent;
};

describe('connectChat', () => {
  it('sends the since of each (re)connect, not the one of the first', () => {
    const store = new ChatStore(1);
    connectChat('http://x', 'tok', store);
    expect(authNow()).toEqual({ token: 'tok' });
    fake.handlers.get('new_message')?.({ id: 42, conversation_id: 1, sender_id: 2, recipient_id: 1, message: 'a', sent_at: '' });
    expect(authNow()).toEqual({ token: 'tok', since: 42 });
  });

  it('sends again, with the same client_id, what got no answer before a reconnect', () => {
    const store = new ChatStore(1);
    const chat = connectChat('http://x', 'tok', store);
    fake.handlers.get('connect')?.();
    const clientId = chat.send(2, 'hello');
    const first = fake.emitted[0];
    first.ack(new Error('timeout'));
    expect(store.getState().outgoing.get(clientId)?.state).toBe('failed');
    fake.handlers.get('disconnect')?.();
    fake.handlers.get('connect')?.();
    expect(fake.emitted).toHaveLength(2);
    expect(fake.emitted[1].payload).toEqual(first.payload);
    fake.emitted[1].ack(null, { ok: true, id: 7, conversation_id: 3, sent_at: 't' });
    expect(store.getState().outgoing.get(clientId)?.state).toBe('sent');
    expect(store.getState().live.get(3)?.map((m) => m.id)).toEqual([7]);
  });

  it('a refused send stays failed until retried', () => {
    const store = new ChatStore(1);
    const chat = connectChat('http://x', 'tok', store);
    fake.handlers.get('connect')?.();
    const clientId = chat.send(2, 'hello');
    fake.emitted[0].ack(null, { ok: false, error: { code: 'rate_limited', message: 'slow down' } });
    fake.handlers.get('connect')?.();
    expect(fake.emitted).toHaveLength(1);
    expect(store.getState().outgoing.get(clientId)).toMatchObject({ state: 'failed', error: 'slow down' });
    chat.retry(clientId);
    expect(fake.emitted).toHaveLength(2);
    expect((fake.emitted[1].payload as { client_id: string }).client_id).toBe(clientId);
  });
});
