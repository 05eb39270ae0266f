import { useInfiniteQuery } from '@tanstack/react-query';
import { useEffect } from 'react';

import { useChat, useChatState, useDetails } from '../chatContext';
import { apiGet } from '../lib/api';
import type { ConversationPage, ConversationSummary } from '../lib/types';
import { ConversationView } from './ConversationView';
import { PresenceDot } from './PresenceDot';

/** The member's conversations, newest activity first (shared by every view). */
export function useConversations() {
  const { session, store } = useChat();
  const query = useInfiniteQuery({
    queryKey: ['conversations', session.userId],
    queryFn: ({ pageParam, signal }) =>
      apiGet<ConversationPage>(
        `/api/v1/conversations?limit=50${pageParam ? `&cursor=${encodeURIComponent(pageParam)}` : ''}`,
        session.token,
        signal,
      ),
    initialPageParam: null as string | null,
    getNextPageParam: (last) => (last.has_more ? last.next_cursor : undefined),
  });
  const items = query.data?.pages.flatMap((p) => p.items) ?? [];
  // The newest message the list knows of counts as held: a reconnect
  // replays from there (the views page the REST history for the rest).
  useEffect(() => {
    for (const c of items) store.since.observe(c.last_message?.id);
  }, [items, store]);
  return { query, items };
}

export function ChatPage(props: { withUser: number | null }) {
  const { query, items } = useConversations();
  const open = props.withUser;
  return (
    <div className={`chat ${open ? 'has-open' : ''}`}>
      <section className="conversations" aria-labelledby="conversations-title">
        <h1 id="conversations-title">Conversations</h1>
        {query.isPending && <p role="status">Loading conversations…</p>}
        {query.isError && (
          <div className="panel error" role="alert">
            <p>Conversations could not be loaded: {query.error.message}</p>
            <button type="button" onClick={() => void query.refetch()}>
              Retry
            </button>
          </div>
        )}
        {query.isSuccess && items.length === 0 && (
          <p className="muted">No conversations yet. Open a profile and send a message.</p>
        )}
        <ul className="conversation-list" data-testid="conversation-list">
          {items.map((c) => (
            <ConversationItem key={c.id} conversation={c} current={c.other_user_id === open} />
          ))}
        </ul>
        {query.hasNextPage && (
          <button type="button" className="secondary" onClick={() => void query.fetchNextPage()} disabled={query.isFetchingNextPage}>
            More conversations
          </button>
        )}
      </section>
      <section className="conversation-pane" aria-label="Conversation">
        {open ? (
          <ConversationView key={open} otherUserId={open} conversations={items} />
        ) : (
          <p className="muted empty-pane">Choose a conversation.</p>
        )}
      </section>
    </div>
  );
}

function ConversationItem(props: { conversation: ConversationSummary; current: boolean }) {
  const { conversation: c } = props;
  const { session, details } = useChat();
  const chat = useChatState();
  const entry = useDetails(c.other_user_id);
  useEffect(() => details.request(c.other_user_id), [details, c.other_user_id]);
  const name = entry?.state === 'loaded' ? entry.value.display_name : `Member ${c.other_user_id}`;
  const live = chat.presence.get(c.other_user_id);
  const online = live?.online ?? (entry?.state === 'loaded' && entry.value.online);
  const lastSeenAt = live?.last_seen_at ?? (entry?.state === 'loaded' ? entry.value.last_seen_at : null);
  const last = c.last_message;
  return (
    <li>
      <a
        href={`#/chat/${c.other_user_id}`}
        className="conversation-item"
        aria-current={props.current ? 'true' : undefined}
        data-testid={`conversation-${c.other_user_id}`}
      >
        <PresenceDot online={online} lastSeenAt={lastSeenAt} />
        <span className="conversation-text">
          <span className="conversation-name">{name}</span>
          <span className="conversation-last">
            {last ? `${last.sender_id === session.userId ? 'You: ' : ''}${last.message}` : ''}
          </span>
        </span>
        {c.unread_count > 0 && (
          <span className="badge" aria-label={`${c.unread_count} unread`} data-testid="unread">
            {c.unread_count}
          </span>
        )}
      </a>
    </li>
  );
}
