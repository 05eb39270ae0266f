import { describe, expect, it, vi } from 'vitest';

import { chunks, Coalescer } from './coalescer';

function fakeFetch() {
  const calls: number[][] = [];
  const fetchBatch = vi.fn(async (ids: number[]) => {
    calls.push(ids);
    // Even ids exist, odd ones are missing.
    return new Map(ids.filter((id) => id % 2 === 0).map((id) => [id, { id }]));
  });
  return { calls, fetchBatch };
}

describe('Coalescer', () => {
  it('sends one call for a burst of asks, once the asks pause', async () => {
    vi.useFakeTimers();
    const { calls, fetchBatch } = fakeFetch();
    const c = new Coalescer<{ id: number }>({ fetchBatch, quietMs: 50, maxWaitMs: 1000 });
    for (let id = 1; id <= 12; id++) {
      c.request(id);
      vi.advanceTimersByTime(10);
    }
    expect(calls).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(50);
    expect(calls).toEqual([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]]);
    expect(c.get(2)).toEqual({ state: 'loaded', value: { id: 2 } });
    expect(c.get(3)).toEqual({ state: 'missing' });
    vi.useRealTimers();
  });

  it('never asks more than 50 ids in one call', async () => {
    const { calls, fetchBatch } = fakeFetch();
    const c = new Coalescer<{ id: number }>({ fetchBatch });
    for (let id = 1; id <= 120; id++) c.request(id);
    await c.flush();
    expect(calls.map((ids) => ids.length)).toEqual([50, 50, 20]);
    expect(new Set(calls.flat()).size).toBe(120);
  });

  it('asks for an id once, whether it is queued, in flight or loaded', async () => {
    const { calls, fetchBatch } = fakeFetch();
    const c = new Coalescer<{ id: number }>({ fetchBatch });
    c.request(4);
    c.request(4);
    const inFlight = c.flush();
    c.request(4);
    await inFlight;
    c.request(4);
    await c.flush();
    expect(calls).toEqual([[4]]);
  });

  it('a burst that goes on is cut at maxWaitMs', async () => {
    vi.useFakeTimers();
    const { calls, fetchBatch } = fakeFetch();
    const c = new Coalescer<{ id: number }>({ fetchBatch, quietMs: 50, maxWaitMs: 200 });
    for (let id = 1; id <= 30; id++) {
      c.request(id);
      await vi.advanceTimersByTimeAsync(20);
    }
    // Asks every 20 ms never pause for 50 ms: the cap flushes every 200 ms.
    expect(calls.length).toBeGreaterThanOrEqual(2);
    expect(calls.length).toBeLessThanOrEqual(3);
    await vi.advanceTimersByTimeAsync(200);
    expect(calls.flat().sort((a, b) => a - b)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    vi.useRealTimers();
  });

  it('marks a failed call and asks again on retry', async () => {
    let fail = true;
    const calls: number[][] = [];
    const c = new Coalescer<{ id: number }>({
      fetchBatch: async (ids) => {
        calls.push(ids);
        if (fail) throw new Error('503');
        return new Map(ids.map((id) => [id, { id }]));
      },
    });
    const seen: string[] = [];
    c.subscribe(() => seen.push(c.get(1)?.state ?? 'none'));
    c.request(1);
    await c.flush();
    expect(c.get(1)?.state).toBe('failed');
    fail = false;
    expect(c.retryFailed()).toEqual([1]);
    await c.flush();
    expect(c.get(1)?.state).toBe('loaded');
    expect(calls).toEqual([[1], [1]]);
    expect(seen).toContain('failed');
  });

  it('chunks keep order and cover everything', () => {
    expect(chunks([1, 2, 3, 4, 5], 2)).toEqual([[1, 2], [3, 4], [5]]);
    expect(chunks([], 50)).toEqual([]);
  });
});
