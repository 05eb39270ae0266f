// Batches the ids of cards entering the viewport into as few
// `/profiles/batch` calls as possible: ids asked within one burst (until the
// stream of asks pauses for `quietMs`, or `maxWaitMs` after the first) go
// out together, `maxBatch` per call (the endpoint takes 1 to 50). An id is
// fetched once: later asks for it share the answer or the call in flight.

export interface CoalescerOptions<T> {
  fetchBatch: (ids: number[]) => Promise<Map<number, T | null>>;
  quietMs?: number;
  maxWaitMs?: number;
  maxBatch?: number;
  /** For tests: the clock's timers. */
  setTimer?: (callback: () => void, ms: number) => unknown;
  clearTimer?: (handle: unknown) => void;
}

export type Entry<T> =
  | { state: 'loading' }
  | { state: 'loaded'; value: T }
  | { state: 'missing' }
  | { state: 'failed'; error: unknown };

export class Coalescer<T> {
  private readonly options: Required<CoalescerOptions<T>>;
  private readonly entries = new Map<number, Entry<T>>();
  private readonly listeners = new Set<() => void>();
  private queued: number[] = [];
  private quietTimer: unknown = null;
  private maxTimer: unknown = null;

  constructor(options: CoalescerOptions<T>) {
    this.options = {
      quietMs: 60,
      maxWaitMs: 250,
      maxBatch: 50,
      setTimer: (callback, ms) => setTimeout(callback, ms),
      clearTimer: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
      ...options,
    };
  }

  /** Asks for `id`; a no-op when it is known, queued or in flight. */
  request(id: number): void {
    const entry = this.entries.get(id);
    if (entry && entry.state !== 'failed') return;
    this.entries.set(id, { state: 'loading' });
    this.queued.push(id);
    this.notify();
    const { setTimer, clearTimer, quietMs, maxWaitMs } = this.options;
    if (this.quietTimer !== null) clearTimer(this.quietTimer);
    this.quietTimer = setTimer(() => this.flush(), quietMs);
    if (this.maxTimer === null) this.maxTimer = setTimer(() => this.flush(), maxWaitMs);
  }

  get(id: number): Entry<T> | undefined {
    return this.entries.get(id);
  }

  /** Forgets failed ids so that the next `request` tries them again. */
  retryFailed(): number[] {
    const failed = [...this.entries].filter(([, e]) => e.state === 'failed').map(([id]) => id);
    for (const id of failed) this.entries.delete(id);
    for (const id of failed) this.request(id);
    return failed;
  }

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Sends what is queued now, in calls of at most `maxBatch` ids. */
  flush(): Promise<void> {
    const { clearTimer, maxBatch } = this.options;
    if (this.quietTimer !== null) clearTimer(this.quietTimer);
    if (this.maxTimer !== null) clearTimer(this.maxTimer);
    this.quietTimer = null;
    this.maxTimer = null;
    const ids = this.queued;
    this.queued = [];
    const calls: Promise<void>[] = [];
    for (const chunk of chunks(ids, maxBatch)) calls.push(this.fetchChunk(chunk));
    return Promise.all(calls).then(() => undefined);
  }

  private async fetchChunk(ids: number[]): Promise<void> {
    try {
      const found = await this.options.fetchBatch(ids);
      for (const id of ids) {
        const value = found.get(id);
        this.entries.set(id, value == null ? { state: 'missing' } : { state: 'loaded', value });
      }
    } catch (error) {
      for (const id of ids) this.entries.set(id, { state: 'failed', error });
    }
    this.notify();
  }

  private notify(): void {
    for (const listener of this.listeners) listener();
  }
}

export function chunks<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}
