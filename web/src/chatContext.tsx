// One chat connection per signed-in page, shared by every view.

import { useQueryClient } from '@tanstack/react-query';
import { createContext, useContext, useEffect, useMemo, useState, useSyncExternalStore, type ReactNode } from 'react';

import { apiGet } from './lib/api';
import type { Session } from './lib/auth';
import { ChatStore, type ChatState } from './lib/chatStore';
import { Coalescer } from './lib/coalescer';
import { connectChat, type ChatConnection } from './lib/socket';
import type { BatchAnswer, ProfileView } from './lib/types';

export interface ChatContextValue {
  session: Session;
  store: ChatStore;
  connection: ChatConnection | null;
  /** Profile details with presence, fetched in batches for whoever is on screen. */
  details: Coalescer<ProfileView>;
}

const Context = createContext<ChatContextValue | null>(null);

export function ChatProvider(props: {
  session: Session;
  socketUrl: string | undefined;
  onTokenRejected: (message: string) => void;
  children: ReactNode;
}) {
  const { session, socketUrl, onTokenRejected } = props;
  const queryClient = useQueryClient();
  const store = useMemo(() => new ChatStore(session.userId), [session.userId]);
  const details = useMemo(
    () =>
      new Coalescer<ProfileView>({
        fetchBatch: async (ids) => {
          const answer = await apiGet<BatchAnswer>(
            `/api/v1/matching/profiles/batch?profile_ids=${ids.join(',')}`,
            session.token,
          );
          return new Map(answer.profiles.map((p) => [p.id, p]));
        },
      }),
    [session.token],
  );
  const [connection, setConnection] = useState<ChatConnection | null>(null);

  useEffect(() => {
    if (!socketUrl) return undefined;
    let refreshTimer: ReturnType<typeof setTimeout> | null = null;
    // Many messages in a moment refresh the conversation list once.
    const refreshConversations = () => {
      if (refreshTimer) return;
      refreshTimer = setTimeout(() => {
        refreshTimer = null;
        void queryClient.invalidateQueries({ queryKey: ['conversations'] });
      }, 300);
    };
    store.onFreshMessage = refreshConversations;
    let resyncs = store.getState().resyncs;
    const stopWatchingResync = store.subscribe(() => {
      const now = store.getState().resyncs;
      if (now === resyncs) return;
      resyncs = now;
      // Too much was missed to replay: the history is paged again.
      void queryClient.resetQueries({ queryKey: ['history'] });
      refreshConversations();
    });
    const opened = connectChat(socketUrl, session.token, store, {
      onReconnect: () => {
        refreshConversations();
        void queryClient.invalidateQueries({ queryKey: ['history'] });
      },
      onTokenRejected,
    });
    setConnection(opened);
    return () => {
      if (refreshTimer) clearTimeout(refreshTimer);
      stopWatchingResync();
      opened.close();
      setConnection(null);
    };
  }, [socketUrl, session.token, store, queryClient, onTokenRejected]);

  const value = useMemo(() => ({ session, store, connection, details }), [session, store, connection, details]);
  return <Context.Provider value={value}>{props.children}</Context.Provider>;
}

export function useChat(): ChatContextValue {
  const value = useContext(Context);
  if (!value) throw new Error('useChat outside ChatProvider');
  return value;
}

export function useChatState(): ChatState {
  const { store } = useChat();
  return useSyncExternalStore(store.subscribe, store.getState);
}

/** One member's details as the batch loader holds them. */
export function useDetails(id: number) {
  const { details } = useChat();
  return useSyncExternalStore(
    (listener) => details.subscribe(listener),
    () => details.get(id),
  );
}
