import { useInfiniteQuery } from '@tanstack/react-query';
import { useEffect, useRef, useState, type FormEvent } from 'react';

import { useChat } from '../chatContext';
import { apiGet } from '../lib/api';
import { flattenPages, NO_FILTERS, scrollQuery, type Filters } from '../lib/pages';
import type { ScrollPage } from '../lib/types';
import { ProfileCard, SkeletonCard } from './ProfileCard';

const PAGE_SIZE = 30;

export function ProfilesPage() {
  const { session, details } = useChat();
  const [filters, setFilters] = useState<Filters>(NO_FILTERS);
  const scroll = useInfiniteQuery({
    // The filters are part of the key: new filters start a new scroll.
    queryKey: ['scroll', session.userId, filters],
    queryFn: ({ pageParam, signal }) =>
      apiGet<ScrollPage>(`/api/v1/matching/profiles/scroll?${scrollQuery(filters, pageParam, PAGE_SIZE)}`, session.token, signal),
    initialPageParam: null as string | null,
    getNextPageParam: (last) => (last.has_more ? last.next_cursor : undefined),
  });
  const cards = flattenPages(scroll.data?.pages);

  // Cards entering the viewport (or about to) ask for their details; the
  // coalescer turns each burst into one batch call.
  const [cardObserver, setCardObserver] = useState<IntersectionObserver | null>(null);
  useEffect(() => {
    const observer = new IntersectionObserver(
      (entries) => {
        for (const entry of entries) {
          if (!entry.isIntersecting) continue;
          const id = Number((entry.target as HTMLElement).dataset.profileId);
          if (id > 0) details.request(id);
          observer.unobserve(entry.target);
        }
      },
      { rootMargin: '100px 0px' },
    );
    setCardObserver(observer);
    return () => observer.disconnect();
  }, [details]);

  // The next page is asked for well before the end is visible, so its
  // cards are in place (and outside the details margin) when scrolled to.
  const sentinel = useRef<HTMLDivElement>(null);
  const { hasNextPage, isFetchingNextPage, fetchNextPage, isError } = scroll;
  useEffect(() => {
    const target = sentinel.current;
    if (!target || !hasNextPage || isFetchingNextPage || isError) return undefined;
    const observer = new IntersectionObserver(
      (entries) => {
        if (entries.some((e) => e.isIntersecting)) void fetchNextPage();
      },
      { rootMargin: '1200px 0px' },
    );
    observer.observe(target);
    return () => observer.disconnect();
  }, [hasNextPage, isFetchingNextPage, isError, fetchNextPage, cards.length]);

  return (
    <section aria-labelledby="profiles-title" className="profiles">
      <h1 id="profiles-title">Profiles</h1>
      <FiltersForm
        applied={filters}
        onApply={(next) => {
          setFilters(next);
          window.scrollTo({ top: 0 });
        }}
      />
      {scroll.isError && !scroll.data ? (
        <div className="panel error" role="alert">
          <p>Profiles could not be loaded: {scroll.error.message}</p>
          <button type="button" onClick={() => void scroll.refetch()}>
            Retry
          </button>
        </div>
      ) : (
        <>
          <ul className="card-grid" aria-busy={scroll.isPending || isFetchingNextPage} data-testid="profile-grid">
            {cards.map((profile) => (
              <ProfileCard key={profile.id} profile={profile} observer={cardObserver} />
            ))}
            {(scroll.isPending || isFetchingNextPage) &&
              Array.from({ length: scroll.isPending ? 12 : 3 }, (_, i) => <SkeletonCard key={`skeleton-${i}`} />)}
          </ul>
          <div ref={sentinel} className="sentinel" aria-hidden="true" />
          <div className="list-status" role="status" data-testid="list-status">
            {scroll.isPending && 'Loading profiles…'}
            {isFetchingNextPage && 'Loading more profiles…'}
            {scroll.isSuccess && !hasNextPage && cards.length > 0 && `That is everyone: ${cards.length} profiles.`}
            {scroll.isSuccess && cards.length === 0 && 'No profiles match these filters.'}
          </div>
          {isError && scroll.data && (
            <div className="panel error" role="alert">
              <p>More profiles could not be loaded: {scroll.error?.message}</p>
              <button type="button" onClick={() => void fetchNextPage()}>
                Retry
              </button>
            </div>
          )}
        </>
      )}
    </section>
  );
}

const RELIGIONS = ['Hindu', 'Muslim', 'Christian', 'Sikh', 'Jain', 'Buddhist', 'Parsi', 'Spiritual'];

function FiltersForm(props: { applied: Filters; onApply: (filters: Filters) => void }) {
  const [draft, setDraft] = useState<Filters>(props.applied);
  const set = (key: keyof Filters) => (event: { target: { value: string } }) =>
    setDraft({ ...draft, [key]: event.target.value });
  const submit = (event: FormEvent) => {
    event.preventDefault();
    props.onApply(draft);
  };
  return (
    <form className="filters" onSubmit={submit} aria-label="Filters">
      <div className="field">
        <label htmlFor="filter-gender">Gender</label>
        <select id="filter-gender" value={draft.gender} onChange={set('gender')}>
          <option value="">Any</option>
          <option value="female">Female</option>
          <option value="male">Male</option>
        </select>
      </div>
      <div className="field narrow">
        <label htmlFor="filter-min-age">Min age</label>
        <input id="filter-min-age" type="number" min={18} max={120} inputMode="numeric" value={draft.minAge} onChange={set('minAge')} />
      </div>
      <div className="field narrow">
        <label htmlFor="filter-max-age">Max age</label>
        <input id="filter-max-age" type="number" min={18} max={120} inputMode="numeric" value={draft.maxAge} onChange={set('maxAge')} />
      </div>
      <div className="field">
        <label htmlFor="filter-religion">Religion</label>
        <select id="filter-religion" value={draft.religion} onChange={set('religion')}>
          <option value="">Any</option>
          {RELIGIONS.map((r) => (
            <option key={r} value={r}>
              {r}
            </option>
          ))}
        </select>
      </div>
      <div className="field">
        <label htmlFor="filter-city">City</label>
        <input id="filter-city" type="text" value={draft.city} onChange={set('city')} placeholder="Any" />
      </div>
      <div className="field actions">
        <button type="submit">Apply filters</button>
        <button
          type="button"
          className="secondary"
          onClick={() => {
            setDraft(NO_FILTERS);
            props.onApply(NO_FILTERS);
          }}
        >
          Clear
        </button>
      </div>
    </form>
  );
}
