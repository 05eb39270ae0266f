import { describe, expect, it } from 'vitest';

import { ageOn, flattenPages, NO_FILTERS, scrollQuery } from './pages';
import type { Profile } from './types';

const profile = (id: number) => ({ id }) as Profile;

describe('flattenPages', () => {
  it('lists the cards of every page in order, each once', () => {
    const pages = [{ items: [profile(9), profile(8)] }, { items: [profile(8), profile(7)] }, { items: [] }];
    expect(flattenPages(pages).map((p) => p.id)).toEqual([9, 8, 7]);
    expect(flattenPages(undefined)).toEqual([]);
  });
});

describe('scrollQuery', () => {
  it('sends the filters on the first page and only the cursor after', () => {
    const filters = { ...NO_FILTERS, gender: 'female' as const, minAge: ' 25 ', city: 'Pune' };
    expect(scrollQuery(filters, null, 30)).toBe('limit=30&gender=female&min_age=25&city=Pune');
    expect(scrollQuery(filters, 'abc-_', 30)).toBe('limit=30&cursor=abc-_');
    expect(scrollQuery(NO_FILTERS, null, 20)).toBe('limit=20');
  });
});

describe('ageOn', () => {
  it('counts whole years, the birthday included', () => {
    expect(ageOn('2000-06-15', new Date('2026-06-14T12:00:00Z'))).toBe(25);
    expect(ageOn('2000-06-15', new Date('2026-06-15T00:00:00Z'))).toBe(26);
  });
});
