import { describe, expect, it } from 'vitest';

import { ChatStore } from './chatStore';
import type { ChatMessage } from './types';

const msg = (id: number, conversation_id = 1): ChatMessage => ({
  id,
  conversation_id,
  sender_id: 2,
  recipient_id: 1,
  message: `m${id}`,
  sent_at: '2026-01-01T00:00:00Z',
});

describe('ChatStore', () => {
  it('dedupes a replay against what was delivered live, and tracks since', () => {
    const store = new ChatStore(1);
    const fresh: number[] = [];
    store.onFreshMessage = (m) => fresh.push(m.id);
    store.receive(msg(10));
    store.receive(msg(11));
    // After a reconnect with since=11, a multi-node replay may overlap.
    expect(store.since.value).toBe(11);
    for (const id of [9, 10, 11, 12]) store.receive(msg(id));
    store.receive(msg(13, 2));
    expect(store.getState().live.get(1)?.map((m) => m.id)).toEqual([9, 10, 11, 12]);
    expect(store.getState().live.get(2)?.map((m) => m.id)).toEqual([13]);
    expect(fresh).toEqual([10, 11, 9, 12, 13]);
    expect(store.since.value).toBe(13);
  });

  it('an acknowledged send becomes a stored message; a later failure cannot undo it', () => {
    const store = new ChatStore(1);
    store.startSend({ client_id: 'c1', recipient_id: 2, message: 'hi', state: 'pending' });
    store.settleSend('c1', { ok: true, id: 40, conversation_id: 7, sent_at: 't' });
    store.settleSend('c1', { ok: false, error: 'late timeout' });
    expect(store.getState().outgoing.get('c1')?.state).toBe('sent');
    expect(store.getState().live.get(7)?.[0]).toMatchObject({ id: 40, sender_id: 1, client_id: 'c1', message: 'hi' });
    expect(store.since.value).toBe(40);
    // The same message echoed by the server (another tab) is not added again.
    store.receive({ ...msg(40, 7), sender_id: 1, recipient_id: 2 });
    expect(store.getState().live.get(7)).toHaveLength(1);
  });

  it('read marks only move forward and ignore the reader itself', () => {
    const store = new ChatStore(1);
    store.readBy(7, 2, 40);
    store.readBy(7, 2, 30);
    store.readBy(7, 1, 99);
    expect(store.getState().readUpTo.get(7)).toBe(40);
  });

  it('history rows count for since without becoming live', () => {
    const store = new ChatStore(1);
    store.observeHistory([msg(3), msg(8)]);
    expect(store.since.value).toBe(8);
    expect(store.getState().live.size).toBe(0);
  });
});
