import { describe, expect, it } from 'vitest';

import { mergeById, shownMessages, SinceTracker, type Outgoing } from './messages';
import type { ChatMessage } from './types';

const msg = (id: number, extra: Partial<ChatMessage> = {}): ChatMessage => ({
  id,
  conversation_id: 1,
  sender_id: 2,
  recipient_id: 3,
  message: `m${id}`,
  sent_at: '2026-01-01T00:00:00Z',
  ...extra,
});

describe('mergeById', () => {
  it('keeps each id once, oldest first, whatever the sources and their order', () => {
    const history = [msg(5), msg(4), msg(3)]; // a REST page, newest first
    const live = [msg(6), msg(4)];
    const replay = [msg(6), msg(7), msg(5)];
    expect(mergeById(history, live, replay).map((m) => m.id)).toEqual([3, 4, 5, 6, 7]);
  });
});

describe('shownMessages', () => {
  const out = (client_id: string, state: Outgoing['state']): Outgoing => ({
    client_id,
    recipient_id: 3,
    message: client_id,
    state,
  });

  it('shows pending and failed sends after the stored messages', () => {
    const shown = shownMessages([msg(1), msg(2)], [out('a', 'pending'), out('b', 'failed')]);
    expect(shown.map((s) => (s.kind === 'stored' ? s.message.id : s.outgoing.client_id))).toEqual([1, 2, 'a', 'b']);
  });

  it('shows an acknowledged send once, as the stored message', () => {
    const shown = shownMessages([msg(1), msg(9, { client_id: 'a' })], [out('a', 'sent')]);
    expect(shown).toHaveLength(2);
    expect(shown.every((s) => s.kind === 'stored')).toBe(true);
  });

  it('hides a timed-out send once it arrives stored under its client_id', () => {
    const shown = shownMessages([msg(9, { client_id: 'a' })], [out('a', 'failed')]);
    expect(shown).toEqual([{ kind: 'stored', message: msg(9, { client_id: 'a' }) }]);
  });
});

describe('SinceTracker', () => {
  it('holds the largest id seen, and nothing before the first', () => {
    const since = new SinceTracker();
    expect(since.value).toBeUndefined();
    for (const id of [5, 12, 7, null, undefined, -3, 1.5]) since.observe(id);
    expect(since.value).toBe(12);
  });
});
