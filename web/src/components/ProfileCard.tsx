import { memo, useEffect, useRef } from 'react';

import { useChat, useDetails } from '../chatContext';
import { ageOn } from '../lib/pages';
import type { Profile } from '../lib/types';
import { PresenceDot } from './PresenceDot';

const TODAY = new Date();

/** A card of fixed size: its details fill a reserved area, nothing moves. */
export const ProfileCard = memo(function ProfileCard(props: { profile: Profile; observer: IntersectionObserver | null }) {
  const { profile, observer } = props;
  const { details } = useChat();
  const entry = useDetails(profile.id);
  const ref = useRef<HTMLLIElement>(null);
  useEffect(() => {
    const element = ref.current;
    if (!element || !observer) return undefined;
    observer.observe(element);
    return () => observer.unobserve(element);
  }, [observer]);
  const titleId = `profile-${profile.id}-name`;
  return (
    <li
      ref={ref}
      className="card"
      data-profile-id={profile.id}
      data-details={entry?.state ?? 'none'}
      aria-labelledby={titleId}
    >
      <div className="card-head">
        <h2 id={titleId}>{profile.display_name}</h2>
        {entry?.state === 'loaded' && <PresenceDot online={entry.value.online} lastSeenAt={entry.value.last_seen_at} />}
      </div>
      <p className="facts">
        {ageOn(profile.date_of_birth, TODAY)} · {profile.city} · {profile.religion}
      </p>
      <p className="occupation">{profile.occupation ?? '\u00a0'}</p>
      <div className="details">
        {entry?.state === 'loaded' ? (
          <p className="bio">{entry.value.bio}</p>
        ) : entry?.state === 'failed' ? (
          <p className="bio muted">
            Details unavailable.{' '}
            <button type="button" className="link-button" onClick={() => details.retryFailed()}>
              Retry
            </button>
          </p>
        ) : entry?.state === 'missing' ? (
          <p className="bio muted">This profile is no longer available.</p>
        ) : (
          <div className="skeleton-lines" aria-hidden="true">
            <span />
            <span />
          </div>
        )}
      </div>
      <a className="button card-action" href={`#/chat/${profile.id}`} aria-label={`Message ${profile.display_name}`}>
        Message
      </a>
    </li>
  );
});

export function SkeletonCard() {
  return (
    <li className="card skeleton" aria-hidden="true">
      <div className="skeleton-lines">
        <span className="wide" />
        <span />
        <span />
        <span />
      </div>
    </li>
  );
}
