import { useState, type FormEvent } from 'react';

import { apiPost, ApiError } from '../lib/api';

/**
 * Sign-in: under `aurum serve --dev`, by a seeded member's id (the server
 * issues a development token); always, by pasting a token (in production
 * the page is handed one by the caller's own auth).
 */
export function SignIn(props: { dev: boolean; notice: string | null; onSignedIn: (token: string) => void }) {
  const [userId, setUserId] = useState('1');
  const [pasted, setPasted] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const signInAsMember = async (event: FormEvent) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const answer = await apiPost<{ token: string }>('/api/v1/dev/token', null, { user_id: Number(userId) });
      props.onSignedIn(answer.token);
    } catch (e) {
      setError(e instanceof ApiError ? e.message : 'Sign-in failed.');
    } finally {
      setBusy(false);
    }
  };

  return (
    <main className="sign-in" id="main">
      <h1>Aurum</h1>
      <p>Browse profiles and chat in real time.</p>
      {props.notice && (
        <p className="notice" role="alert">
          {props.notice}
        </p>
      )}
      {props.dev && (
        <form onSubmit={signInAsMember} aria-labelledby="dev-sign-in">
          <h2 id="dev-sign-in">Development sign-in</h2>
          <label htmlFor="member-id">Member id</label>
          <input
            id="member-id"
            type="number"
            min={1}
            required
            value={userId}
            onChange={(e) => setUserId(e.target.value)}
          />
          <button type="submit" disabled={busy}>
            Sign in
          </button>
        </form>
      )}
      <form
        aria-labelledby="token-sign-in"
        onSubmit={(event) => {
          event.preventDefault();
          props.onSignedIn(pasted.trim());
        }}
      >
        <h2 id="token-sign-in">Sign in with a token</h2>
        <label htmlFor="token">Token</label>
        <textarea id="token" rows={3} required value={pasted} onChange={(e) => setPasted(e.target.value)} />
        <button type="submit">Use token</button>
      </form>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
    </main>
  );
}
