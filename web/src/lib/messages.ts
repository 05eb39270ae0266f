// A conversation's messages as the page shows them: what the REST history
// returned, what the socket delivered live or replayed after a reconnect,
// and what this page is still sending. The same message can arrive by
// several of those paths (a replay overlaps what was delivered live; a page
// of history overlaps both), so everything is merged by id.

import type { ChatMessage } from './types';

export type SendState = 'pending' | 'sent' | 'failed';

/** A message this page sent (or is sending), keyed by its `client_id`. */
export interface Outgoing {
  client_id: string;
  recipient_id: number;
  message: string;
  state: SendState;
  /** Set once acknowledged. */
  id?: number;
  conversation_id?: number;
  sent_at?: string;
  error?: string;
}

export type ShownMessage = { kind: 'stored'; message: ChatMessage } | { kind: 'outgoing'; outgoing: Outgoing };

/** Stored messages from any number of sources, once each, oldest first. */
export function mergeById(...sources: Iterable<ChatMessage>[]): ChatMessage[] {
  const byId = new Map<number, ChatMessage>();
  for (const source of sources) for (const m of source) byId.set(m.id, m);
  return [...byId.values()].sort((a, b) => a.id - b.id);
}

/**
 * What to show: every stored message once (oldest first), then this page's
 * outgoing messages that are not stored yet (pending or failed). An
 * acknowledged send is added to the stored ones by its sender, so it is
 * never shown twice; one whose ack was lost (a timeout) but that was stored
 * anyway shows once as soon as it arrives, matched by `client_id`.
 */
export function shownMessages(stored: ChatMessage[], outgoing: Outgoing[]): ShownMessage[] {
  const storedClientIds = new Set(stored.flatMap((m) => (m.client_id ? [m.client_id] : [])));
  const shown: ShownMessage[] = stored.map((message) => ({ kind: 'stored', message }));
  for (const o of outgoing) {
    if (o.state === 'sent' || storedClientIds.has(o.client_id)) continue;
    shown.push({ kind: 'outgoing', outgoing: o });
  }
  return shown;
}

/**
 * The `since` a reconnecting socket sends: the largest message id this page
 * holds. The server replays every message of the member's conversations
 * with a larger id (and with several nodes, some below it too: the overlap
 * the page dedupes by id), so nothing committed while away is lost.
 */
export class SinceTracker {
  private largest = 0;

  observe(id: number | undefined | null): void {
    if (typeof id === 'number' && Number.isSafeInteger(id) && id > this.largest) this.largest = id;
  }

  /** `undefined` before any message: a first connect replays nothing. */
  get value(): number | undefined {
    return this.largest > 0 ? this.largest : undefined;
  }
}
