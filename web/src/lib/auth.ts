// The member's token: taken from the page's address (`#token=...`, what
// `make run` prints), from the dev sign-in form, or pasted; kept in
// sessionStorage so a reload stays signed in and two tabs can be two members.

const KEY = 'aurum.token';

export interface Session {
  token: string;
  userId: number;
}

/** The user id a JWT speaks for (its `sub`), or null when it is not one. */
export function userIdOf(token: string): number | null {
  const payload = token.split('.')[1];
  if (!payload) return null;
  try {
    const json = atob(payload.replace(/-/g, '+').replace(/_/g, '/'));
    const sub = Number((JSON.parse(json) as { sub?: unknown }).sub);
    return Number.isSafeInteger(sub) && sub > 0 ? sub : null;
  } catch {
    return null;
  }
}

/** Reads `#token=` off the address (and removes it from the address bar). */
export function takeTokenFromLocation(location: Location, history: History): string | null {
  const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (!match) return null;
  history.replaceState(null, '', `${location.pathname}${location.search}#/profiles`);
  return decodeURIComponent(match[1]);
}

export function loadSession(storage: Storage): Session | null {
  const token = storage.getItem(KEY);
  const userId = token ? userIdOf(token) : null;
  return token && userId ? { token, userId } : null;
}

export function saveSession(storage: Storage, token: string): Session | null {
  const userId = userIdOf(token);
  if (!userId) return null;
  storage.setItem(KEY, token);
  return { token, userId };
}

export function clearSession(storage: Storage): void {
  storage.removeItem(KEY);
}
