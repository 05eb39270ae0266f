// The live side of chat, apart from the socket that feeds it so its rules
// can be tested alone: messages delivered or replayed (merged by id), this
// page's sends and their states, typing, presence and read receipts.

import { mergeById, SinceTracker, type Outgoing } from './messages';
import type { ChatMessage } from './types';

export type ConnectionStatus = 'connecting' | 'connected' | 'reconnecting' | 'failed';

export interface Presence {
  online: boolean;
  last_seen_at: string | null;
}

export interface ChatState {
  status: ConnectionStatus;
  /** Messages by conversation id, from the socket and from acks. */
  live: ReadonlyMap<number, ChatMessage[]>;
  /** Sends by `client_id`, in the order they were made. */
  outgoing: ReadonlyMap<string, Outgoing>;
  /** Members typing now. */
  typing: ReadonlySet<number>;
  presence: ReadonlyMap<number, Presence>;
  /** The other member's read mark, by conversation id. */
  readUpTo: ReadonlyMap<number, number>;
  /** Bumped on `resync_required`: the history is paged again. */
  resyncs: number;
}

const TYPING_SHOWN_MS = 3000;

export class ChatStore {
  readonly since = new SinceTracker();
  private state: ChatState = {
    status: 'connecting',
    live: new Map(),
    outgoing: new Map(),
    typing: new Set(),
    presence: new Map(),
    readUpTo: new Map(),
    resyncs: 0,
  };
  private readonly listeners = new Set<() => void>();
  private readonly typingTimers = new Map<number, ReturnType<typeof setTimeout>>();
  /** Called for each message not seen before (the conversation list refreshes). */
  onFreshMessage: (message: ChatMessage) => void = () => {};

  constructor(readonly userId: number) {}

  getState = (): ChatState => this.state;

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  setStatus(status: ConnectionStatus): void {
    if (this.state.status !== status) this.update({ status });
  }

  /** A `new_message` (live or replayed) or an acknowledged send. */
  receive(message: ChatMessage): void {
    this.since.observe(message.id);
    const current = this.state.live.get(message.conversation_id) ?? [];
    if (current.some((m) => m.id === message.id)) return;
    const live = new Map(this.state.live);
    live.set(message.conversation_id, mergeById(current, [message]));
    const changes: Partial<ChatState> = { live };
    if (this.state.typing.has(message.sender_id)) {
      const typing = new Set(this.state.typing);
      typing.delete(message.sender_id);
      changes.typing = typing;
    }
    this.update(changes);
    this.onFreshMessage(message);
  }

  /** Holds history rows for `since` (they are not live: REST shows them). */
  observeHistory(messages: ChatMessage[]): void {
    for (const m of messages) this.since.observe(m.id);
  }

  startSend(outgoing: Outgoing): void {
    const map = new Map(this.state.outgoing);
    map.set(outgoing.client_id, outgoing);
    this.update({ outgoing: map });
  }

  /** The ack of a send: stored (it joins the conversation) or refused. */
  settleSend(
    clientId: string,
    result: { ok: true; id: number; conversation_id: number; sent_at: string } | { ok: false; error: string },
  ): void {
    const before = this.state.outgoing.get(clientId);
    if (!before) return;
    const map = new Map(this.state.outgoing);
    if (result.ok) {
      map.set(clientId, { ...before, state: 'sent', id: result.id, conversation_id: result.conversation_id });
      this.update({ outgoing: map });
      this.receive({
        id: result.id,
        conversation_id: result.conversation_id,
        sender_id: this.userId,
        recipient_id: before.recipient_id,
        message: before.message,
        sent_at: result.sent_at,
        client_id: clientId,
      });
    } else if (before.state !== 'sent') {
      map.set(clientId, { ...before, state: 'failed', error: result.error });
      this.update({ outgoing: map });
    }
  }

  typingFrom(senderId: number): void {
    const previous = this.typingTimers.get(senderId);
    if (previous) clearTimeout(previous);
    this.typingTimers.set(
      senderId,
      setTimeout(() => {
        this.typingTimers.delete(senderId);
        const typing = new Set(this.state.typing);
        typing.delete(senderId);
        this.update({ typing });
      }, TYPING_SHOWN_MS),
    );
    if (!this.state.typing.has(senderId)) this.update({ typing: new Set(this.state.typing).add(senderId) });
  }

  setPresence(userId: number, presence: Presence): void {
    this.update({ presence: new Map(this.state.presence).set(userId, presence) });
  }

  /** A `message_read` from the other member: a mark only ever moves forward. */
  readBy(conversationId: number, readerId: number, messageId: number): void {
    if (readerId === this.userId) return;
    if ((this.state.readUpTo.get(conversationId) ?? 0) >= messageId) return;
    this.update({ readUpTo: new Map(this.state.readUpTo).set(conversationId, messageId) });
  }

  resyncRequired(): void {
    this.update({ resyncs: this.state.resyncs + 1 });
  }

  close(): void {
    for (const timer of this.typingTimers.values()) clearTimeout(timer);
    this.typingTimers.clear();
  }

  private update(changes: Partial<ChatState>): void {
    this.state = { ...this.state, ...changes };
    for (const listener of this.listeners) listener();
  }
}
