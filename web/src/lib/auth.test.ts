import { describe, expect, it } from 'vitest';

import { userIdOf } from './auth';
import { uuid } from './uuid';

const jwt = (payload: object) =>
  `e30.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.sig`;

describe('userIdOf', () => {
  it('reads the member id from the token', () => {
    expect(userIdOf(jwt({ sub: '42', exp: 1 }))).toBe(42);
    expect(userIdOf(jwt({ sub: 'x' }))).toBeNull();
    expect(userIdOf('not a token')).toBeNull();
  });
});

describe('uuid', () => {
  it('is a version 4 UUID', () => {
    expect(uuid()).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(uuid()).not.toBe(uuid());
  });
});
