// The Socket.IO connection, with the official client and its default
// transports (long-polling first, then the upgrade to WebSocket) and its
// reconnection with backoff. Every (re)connect sends `since`, the largest
// message id held, so the server replays what was missed; the store
// dedupes the replay against what had arrived already.

import { io, type Socket } from 'socket.io-client';

import type { ChatStore } from './chatStore';
import type { Outgoing } from './messages';
import type { ChatMessage } from './types';
import { uuid } from './uuid';

/** How long a send waits for its ack before it shows as failed. */
const ACK_TIMEOUT_MS = 8000;
/** At most one `typing` per this many ms (the server allows 5 a second). */
const TYPING_EVERY_MS = 1500;
const NO_ANSWER = 'no answer from the server';

type Ack = { ok: true; id: number; conversation_id: number; sent_at: string } | { ok: false; error: { code: string; message: string } };

export interface ChatConnection {
  send(recipientId: number, text: string): string;
  retry(clientId: string): void;
  typing(recipientId: number): void;
  markRead(conversationId: number, messageId: number): void;
  close(): void;
}

export interface ConnectOptions {
  /** After a reconnect (not the first connect): REST views refresh. */
  onReconnect?: () => void;
  onTokenRejected?: (message: string) => void;
}

export function connectChat(url: string, token: string, store: ChatStore, options: ConnectOptions = {}): ChatConnection {
  const socket: Socket = io(url, {
    // A function, so each reconnect sends the `since` of that moment.
    auth: (cb) => cb(store.since.value === undefined ? { token } : { token, since: store.since.value }),
    reconnectionDelay: 500,
    reconnectionDelayMax: 5000,
  });
  let connectedBefore = false;
  const lastTyping = new Map<number, number>();

  socket.on('connect', () => {
    store.setStatus('connected');
    if (connectedBefore) {
      options.onReconnect?.();
      // Sends that got no answer (the connection died under them) go again
      // with their own client_id: one the server stored after all is
      // answered with the stored message, not stored twice.
      for (const outgoing of store.getState().outgoing.values()) {
        if (outgoing.state === 'failed' && outgoing.error === NO_ANSWER) retry(outgoing.client_id);
      }
    }
    connectedBefore = true;
  });
  socket.on('disconnect', () => store.setStatus('reconnecting'));
  socket.on('connect_error', (error: Error & { data?: { code?: string } }) => {
    if (error.data?.code === 'unauthorized') {
      // The server refused the token: retrying cannot help.
      store.setStatus('failed');
      options.onTokenRejected?.(error.message);
      return;
    }
    store.setStatus('reconnecting');
  });
  socket.on('new_message', (message: ChatMessage) => store.receive(message));
  socket.on('typing', (event: { sender_id: number }) => store.typingFrom(event.sender_id));
  socket.on('presence', (event: { user_id: number; online: boolean; last_seen_at: string | null }) =>
    store.setPresence(event.user_id, { online: event.online, last_seen_at: event.last_seen_at }),
  );
  socket.on('message_read', (event: { conversation_id: number; reader_id: number; message_id: number }) =>
    store.readBy(event.conversation_id, event.reader_id, event.message_id),
  );
  socket.on('resync_required', () => store.resyncRequired());
  socket.on('error', (event: { code?: string; message?: string }) => {
    if (event?.code === 'token_expired') {
      store.setStatus('failed');
      options.onTokenRejected?.('the token expired: sign in again');
    }
  });

  // The browser says the network is gone: close the transport now rather
  // than after a missed ping (45 s), so the page shows it and reconnects
  // (with backoff) as soon as the network is back.
  const onOffline = () => socket.io.engine?.close();
  const onOnline = () => {
    if (!socket.connected && !socket.active) socket.connect();
  };
  window.addEventListener('offline', onOffline);
  window.addEventListener('online', onOnline);

  const emitSend = (outgoing: Outgoing) => {
    socket
      .timeout(ACK_TIMEOUT_MS)
      .emit(
        'chat_message',
        { recipient_id: outgoing.recipient_id, message: outgoing.message, client_id: outgoing.client_id },
        (timedOut: Error | null, ack?: Ack) => {
          if (timedOut || !ack) {
            store.settleSend(outgoing.client_id, { ok: false, error: NO_ANSWER });
          } else if (ack.ok) {
            store.settleSend(outgoing.client_id, ack);
          } else {
            store.settleSend(outgoing.client_id, { ok: false, error: ack.error.message });
          }
        },
      );
  };

  function retry(clientId: string): void {
    const before = store.getState().outgoing.get(clientId);
    if (!before || before.state === 'sent') return;
    // The same client_id: if the first try was stored after all, the
    // server answers with that message instead of storing it twice.
    const again: Outgoing = { ...before, state: 'pending', error: undefined };
    store.startSend(again);
    emitSend(again);
  }

  return {
    send(recipientId, text) {
      const outgoing: Outgoing = {
        client_id: uuid(),
        recipient_id: recipientId,
        message: text,
        state: 'pending',
      };
      store.startSend(outgoing);
      emitSend(outgoing);
      return outgoing.client_id;
    },
    retry,
    typing(recipientId) {
      const now = Date.now();
      if (now - (lastTyping.get(recipientId) ?? 0) < TYPING_EVERY_MS || !socket.connected) return;
      lastTyping.set(recipientId, now);
      socket.emit('typing', { recipient_id: recipientId });
    },
    markRead(conversationId, messageId) {
      socket.emit('mark_read', { conversation_id: conversationId, message_id: messageId });
    },
    close() {
      window.removeEventListener('offline', onOffline);
      window.removeEventListener('online', onOnline);
      socket.disconnect();
      store.close();
    },
  };
}
