import { useEffect, useState } from 'react';

export type Route = { page: 'profiles' } | { page: 'chat'; with: number | null };

export function parseRoute(hash: string): Route {
  const chat = /^#\/chat(?:\/(\d+))?$/.exec(hash);
  if (chat) return { page: 'chat', with: chat[1] ? Number(chat[1]) : null };
  return { page: 'profiles' };
}

/** The page shown, from the address's fragment (`#/profiles`, `#/chat/12`). */
export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(window.location.hash));
  useEffect(() => {
    const changed = () => setRoute(parseRoute(window.location.hash));
    window.addEventListener('hashchange', changed);
    return () => window.removeEventListener('hashchange', changed);
  }, []);
  return route;
}
