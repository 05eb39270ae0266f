import { useInfiniteQuery, useQueryClient } from '@tanstack/react-query';
import { useEffect, useLayoutEffect, useMemo, useRef, useState, type FormEvent, type KeyboardEvent } from 'react';

import { useChat, useChatState, useDetails } from '../chatContext';
import { apiGet } from '../lib/api';
import { mergeById, shownMessages, type ShownMessage } from '../lib/messages';
import type { ConversationSummary, MessagePage } from '../lib/types';
import { PresenceDot } from './PresenceDot';

const HISTORY_PAGE = 30;
const MAX_MESSAGE_CHARS = 4000;

export function ConversationView(props: { otherUserId: number; conversations: ConversationSummary[] }) {
  const { otherUserId } = props;
  const { session, store, connection, details } = useChat();
  const chat = useChatState();
  const other = useDetails(otherUserId);
  useEffect(() => details.request(otherUserId), [details, otherUserId]);

  // Known from the list, or from the first message of a new conversation.
  const conversationId = useMemo(() => {
    const listed = props.conversations.find((c) => c.other_user_id === otherUserId)?.id;
    if (listed) return listed;
    for (const [id, messages] of chat.live) {
      const m = messages[0];
      if (m && (m.sender_id === otherUserId || m.recipient_id === otherUserId)) return id;
    }
    return undefined;
  }, [props.conversations, chat.live, otherUserId]);

  const history = useInfiniteQuery({
    queryKey: ['history', conversationId],
    enabled: conversationId !== undefined,
    queryFn: ({ pageParam, signal }) =>
      apiGet<MessagePage>(
        `/api/v1/conversations/${conversationId}/messages?limit=${HISTORY_PAGE}${pageParam ? `&before=${pageParam}` : ''}`,
        session.token,
        signal,
      ),
    initialPageParam: null as number | null,
    // Pages come newest first; the next one is older than the oldest held.
    getNextPageParam: (last) =>
      last.has_more && last.items.length > 0 ? Math.min(...last.items.map((m) => m.id)) : undefined,
  });
  const historyItems = useMemo(() => history.data?.pages.flatMap((p) => p.items) ?? [], [history.data]);
  useEffect(() => store.observeHistory(historyItems), [historyItems, store]);

  const stored = useMemo(
    () => mergeById(historyItems, conversationId === undefined ? [] : (chat.live.get(conversationId) ?? [])),
    [historyItems, chat.live, conversationId],
  );
  const outgoing = useMemo(
    () => [...chat.outgoing.values()].filter((o) => o.recipient_id === otherUserId),
    [chat.outgoing, otherUserId],
  );
  const shown = shownMessages(stored, outgoing);
  const readUpTo = conversationId === undefined ? 0 : (chat.readUpTo.get(conversationId) ?? 0);

  // Read receipts: the newest message from the other member, once shown.
  const newestFromOther = stored.reduce((max, m) => (m.sender_id === otherUserId ? Math.max(max, m.id) : max), 0);
  const markedRead = useRef(0);
  const queryClient = useQueryClient();
  useEffect(() => {
    if (!connection || conversationId === undefined || newestFromOther <= markedRead.current) return;
    if (document.visibilityState !== 'visible') return;
    markedRead.current = newestFromOther;
    connection.markRead(conversationId, newestFromOther);
    // The unread counts come from the server: ask again once it has the mark.
    const refresh = setTimeout(() => void queryClient.invalidateQueries({ queryKey: ['conversations'] }), 300);
    return () => clearTimeout(refresh);
  }, [connection, conversationId, newestFromOther, chat.status, queryClient]);

  // Scrolling: stick to the bottom for new messages, keep the place when
  // older ones are put on top.
  const log = useRef<HTMLDivElement>(null);
  const atBottom = useRef(true);
  const heightBeforeOlder = useRef<number | null>(null);
  useLayoutEffect(() => {
    const element = log.current;
    if (!element) return;
    if (heightBeforeOlder.current !== null) {
      element.scrollTop += element.scrollHeight - heightBeforeOlder.current;
      heightBeforeOlder.current = null;
    } else if (atBottom.current) {
      element.scrollTop = element.scrollHeight;
    }
  }, [shown.length]);
  const loadOlder = () => {
    if (!history.hasNextPage || history.isFetchingNextPage) return;
    heightBeforeOlder.current = log.current?.scrollHeight ?? null;
    void history.fetchNextPage();
  };
  const top = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const target = top.current;
    const root = log.current;
    if (!target || !root || !history.hasNextPage) return undefined;
    const observer = new IntersectionObserver((entries) => {
      // Not while the log sits at the bottom (a short history is all in
      // view): only when the member scrolled up to the top.
      if (entries.some((e) => e.isIntersecting) && !atBottom.current) loadOlder();
    }, { root });
    observer.observe(target);
    return () => observer.disconnect();
  });

  const name = other?.state === 'loaded' ? other.value.display_name : `Member ${otherUserId}`;
  const live = chat.presence.get(otherUserId);
  const online = live?.online ?? (other?.state === 'loaded' && other.value.online);
  const lastSeenAt = live?.last_seen_at ?? (other?.state === 'loaded' ? other.value.last_seen_at : null);
  const typing = chat.typing.has(otherUserId);

  return (
    <div className="conversation" data-testid="conversation" data-conversation-id={conversationId ?? ''}>
      <header className="conversation-head">
        <a href="#/chat" className="back-link">
          <span aria-hidden="true">←</span> Conversations
        </a>
        <h2>
          <PresenceDot online={online} lastSeenAt={lastSeenAt} /> {name}
        </h2>
        <span className="muted presence-text" data-testid="presence">
          {online ? 'online' : 'offline'}
        </span>
      </header>
      <div
        className="message-log"
        ref={log}
        role="log"
        aria-label={`Messages with ${name}`}
        tabIndex={0}
        onScroll={(e) => {
          const el = e.currentTarget;
          atBottom.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
        }}
      >
        <div ref={top} className="log-top">
          {history.hasNextPage ? (
            <button type="button" className="secondary" onClick={loadOlder} disabled={history.isFetchingNextPage}>
              {history.isFetchingNextPage ? 'Loading earlier messages…' : 'Load earlier messages'}
            </button>
          ) : history.isSuccess && stored.length > 0 ? (
            <span className="muted">Start of the conversation</span>
          ) : null}
        </div>
        {history.isError && (
          <div className="panel error" role="alert">
            <p>The history could not be loaded: {history.error.message}</p>
            <button type="button" onClick={() => void history.refetch()}>
              Retry
            </button>
          </div>
        )}
        {history.isLoading && <p role="status">Loading messages…</p>}
        <ol className="messages" data-testid="messages">
          {shown.map((item) => (
            <MessageRow
              key={item.kind === 'stored' ? `m${item.message.id}` : `o${item.outgoing.client_id}`}
              item={item}
              me={session.userId}
              readUpTo={readUpTo}
              onRetry={(clientId) => connection?.retry(clientId)}
            />
          ))}
        </ol>
      </div>
      <p className="typing" aria-live="polite" data-testid="typing">
        {typing ? `${name} is typing…` : '\u00a0'}
      </p>
      <Composer
        name={name}
        onTyping={() => connection?.typing(otherUserId)}
        onSend={(text) => {
          atBottom.current = true;
          connection?.send(otherUserId, text);
        }}
        disabled={!connection}
      />
    </div>
  );
}

function MessageRow(props: { item: ShownMessage; me: number; readUpTo: number; onRetry: (clientId: string) => void }) {
  const { item, me, readUpTo } = props;
  if (item.kind === 'outgoing') {
    const o = item.outgoing;
    return (
      <li className="message mine" data-state={o.state} data-client-id={o.client_id}>
        <p className="body">{o.message}</p>
        <p className="meta">
          {o.state === 'pending' ? (
            'Sending…'
          ) : (
            <>
              <span className="failed">Not sent{o.error ? ` (${o.error})` : ''}.</span>{' '}
              <button type="button" className="link-button" onClick={() => props.onRetry(o.client_id)}>
                Retry
              </button>
            </>
          )}
        </p>
      </li>
    );
  }
  const m = item.message;
  const mine = m.sender_id === me;
  const read = mine && m.id <= readUpTo;
  return (
    <li className={`message ${mine ? 'mine' : 'theirs'}`} data-id={m.id} data-state={mine ? (read ? 'read' : 'sent') : 'received'}>
      <p className="body">{m.message}</p>
      <p className="meta">
        <time dateTime={m.sent_at}>{formatTime(m.sent_at)}</time>
        {mine && <span className="receipt">{read ? ' · Read' : ' · Sent'}</span>}
      </p>
    </li>
  );
}

function Composer(props: { name: string; onTyping: () => void; onSend: (text: string) => void; disabled: boolean }) {
  const [text, setText] = useState('');
  const input = useRef<HTMLTextAreaElement>(null);
  useEffect(() => input.current?.focus(), []);
  const send = (event?: FormEvent) => {
    event?.preventDefault();
    const trimmed = text.trim();
    if (!trimmed || props.disabled) return;
    props.onSend(trimmed);
    setText('');
  };
  const onKeyDown = (event: KeyboardEvent<HTMLTextAreaElement>) => {
    // Enter sends; Shift+Enter is a new line.
    if (event.key === 'Enter' && !event.shiftKey) send(event);
  };
  return (
    <form className="composer" onSubmit={send}>
      <label htmlFor="composer-input" className="visually-hidden">
        Message to {props.name}
      </label>
      <textarea
        id="composer-input"
        ref={input}
        rows={1}
        maxLength={MAX_MESSAGE_CHARS}
        value={text}
        placeholder={`Message ${props.name}`}
        onChange={(e) => {
          setText(e.target.value);
          if (e.target.value) props.onTyping();
        }}
        onKeyDown={onKeyDown}
      />
      <button type="submit" disabled={props.disabled || !text.trim()}>
        Send
      </button>
    </form>
  );
}

function formatTime(at: string): string {
  const date = new Date(at);
  return Number.isNaN(date.getTime()) ? '' : date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}
