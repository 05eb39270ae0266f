// Pages of the infinite scroll flattened into the list of cards, each
// profile once even if two pages were to carry it (a refetch of a page
// while newer rows were inserted must never show a card twice).

import type { Profile } from './types';

export function flattenPages(pages: readonly { items: readonly Profile[] }[] | undefined): Profile[] {
  const seen = new Set<number>();
  const out: Profile[] = [];
  for (const page of pages ?? []) {
    for (const profile of page.items) {
      if (seen.has(profile.id)) continue;
      seen.add(profile.id);
      out.push(profile);
    }
  }
  return out;
}

/** The filters as the scroll endpoint's query string, blanks left out. */
export interface Filters {
  gender: '' | 'female' | 'male';
  minAge: string;
  maxAge: string;
  religion: string;
  city: string;
}

export const NO_FILTERS: Filters = { gender: '', minAge: '', maxAge: '', religion: '', city: '' };

export function scrollQuery(filters: Filters, cursor: string | null, limit: number): string {
  const params = new URLSearchParams({ limit: String(limit) });
  if (cursor) {
    // A cursor carries its filters; the server refuses ones that differ.
    params.set('cursor', cursor);
    return params.toString();
  }
  if (filters.gender) params.set('gender', filters.gender);
  if (filters.minAge.trim()) params.set('min_age', filters.minAge.trim());
  if (filters.maxAge.trim()) params.set('max_age', filters.maxAge.trim());
  if (filters.religion.trim()) params.set('religion', filters.religion.trim());
  if (filters.city.trim()) params.set('city', filters.city.trim());
  return params.toString();
}

/** Whole years between a `YYYY-MM-DD` birth date and `today`. */
export function ageOn(dateOfBirth: string, today: Date): number {
  const [y, m, d] = dateOfBirth.split('-').map(Number);
  let age = today.getUTCFullYear() - y;
  const month = today.getUTCMonth() + 1;
  if (month < m || (month === m && today.getUTCDate() < d)) age -= 1;
  return age;
}
