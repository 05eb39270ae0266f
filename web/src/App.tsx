import { useQuery } from '@tanstack/react-query';
import { useCallback, useState } from 'react';

import { ChatProvider, useChatState } from './chatContext';
import { ChatPage, useConversations } from './components/ChatPage';
import { ProfilesPage } from './components/ProfilesPage';
import { SignIn } from './components/SignIn';
import { apiGet } from './lib/api';
import { clearSession, loadSession, saveSession, takeTokenFromLocation, type Session } from './lib/auth';
import type { ClientConfig } from './lib/types';
import { useRoute } from './route';

function initialSession(): Session | null {
  const fromAddress = takeTokenFromLocation(window.location, window.history);
  if (fromAddress) return saveSession(window.sessionStorage, fromAddress);
  return loadSession(window.sessionStorage);
}

export function App() {
  const [session, setSession] = useState<Session | null>(initialSession);
  const [notice, setNotice] = useState<string | null>(null);
  const config = useQuery({
    queryKey: ['client-config'],
    queryFn: () => apiGet<ClientConfig>('/api/v1/client-config', null),
    staleTime: Infinity,
  });
  const signOut = useCallback((why: string | null) => {
    clearSession(window.sessionStorage);
    setSession(null);
    setNotice(why);
  }, []);
  const tokenRejected = useCallback((message: string) => signOut(`Signed out: ${message}`), [signOut]);

  if (!session) {
    return (
      <SignIn
        dev={config.data?.dev ?? false}
        notice={notice}
        onSignedIn={(token) => {
          const started = saveSession(window.sessionStorage, token);
          setSession(started);
          setNotice(started ? null : 'That is not a member token.');
        }}
      />
    );
  }
  return (
    <ChatProvider session={session} socketUrl={config.data?.socket_url} onTokenRejected={tokenRejected}>
      <Shell session={session} onSignOut={() => signOut(null)} configError={config.isError} />
    </ChatProvider>
  );
}

function Shell(props: { session: Session; onSignOut: () => void; configError: boolean }) {
  const route = useRoute();
  const chat = useChatState();
  const { items } = useConversations();
  const unread = items.reduce((sum, c) => sum + c.unread_count, 0);
  const status = props.configError ? 'failed' : chat.status;
  return (
    <div className="shell">
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <header className="top-bar">
        <span className="brand">Aurum</span>
        <nav aria-label="Main">
          <a href="#/profiles" aria-current={route.page === 'profiles' ? 'page' : undefined}>
            Profiles
          </a>
          <a href="#/chat" aria-current={route.page === 'chat' ? 'page' : undefined}>
            Chat
            {unread > 0 && (
              <span className="badge" aria-label={`${unread} unread`} data-testid="total-unread">
                {unread}
              </span>
            )}
          </a>
        </nav>
        <span className={`connection connection-${status}`} role="status" data-testid="connection">
          {CONNECTION_TEXT[status]}
        </span>
        <span className="me">Member {props.session.userId}</span>
        <button type="button" className="link-button" onClick={props.onSignOut}>
          Sign out
        </button>
      </header>
      <main id="main" tabIndex={-1}>
        {route.page === 'profiles' ? <ProfilesPage /> : <ChatPage withUser={route.with} />}
      </main>
    </div>
  );
}


const CONNECTION_TEXT = {
  connecting: 'Connecting…',
  connected: 'Online',
  reconnecting: 'Reconnecting…',
  failed: 'Chat unavailable',
} as const;
