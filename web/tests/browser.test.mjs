// The web client in a real browser (Debian's Chromium through
// playwright-core), against a real server that tests/it/web.rs starts with
// seeded profiles and hands over in the environment. Two members, A and B,
// each in a browser context of their own.
//
// AURUM_SCREENSHOTS=dir (make screenshots) also saves both pages at
// desktop and phone width there.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  assert.ok(value, `${name} is set`);
  return value;
};
const base = env('AURUM_WEB_URL');
const tokenA = env('AURUM_TOKEN_A');
const tokenB = env('AURUM_TOKEN_B');
const userA = Number(env('AURUM_USER_A'));
const userB = Number(env('AURUM_USER_B'));
const screenshots = process.env.AURUM_SCREENSHOTS;
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

let browser;
let contextA;
let contextB;
let pageA;
let pageB;
/** Every `/profiles/batch` call page A made: when and which ids. */
const batchCalls = [];
let batchesInFlight = 0;
let lastBatchAt = 0;

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.AURUM_CHROMIUM ?? '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu'],
  });
  contextA = await browser.newContext({ viewport: DESKTOP });
  contextB = await browser.newContext({ viewport: DESKTOP });
  pageA = await contextA.newPage();
  pageB = await contextB.newPage();
  for (const page of [pageA, pageB]) {
    page.on('pageerror', (error) => console.error('page error:', error));
  }
  pageA.on('request', (request) => {
    const url = new URL(request.url());
    if (!url.pathname.endsWith('/matching/profiles/batch')) return;
    batchesInFlight += 1;
    lastBatchAt = Date.now();
    batchCalls.push({ at: Date.now(), ids: url.searchParams.get('profile_ids').split(',').map(Number) });
  });
  const settled = (request) => {
    if (new URL(request.url()).pathname.endsWith('/matching/profiles/batch')) {
      batchesInFlight -= 1;
      lastBatchAt = Date.now();
    }
  };
  pageA.on('requestfinished', settled);
  pageA.on('requestfailed', settled);
});

after(async () => {
  await browser?.close();
});

/** Waits until no batch call is in flight and none started for `quietMs`. */
async function batchesSettled(quietMs = 400) {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (batchesInFlight === 0 && Date.now() - lastBatchAt >= quietMs) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail('batch calls did not settle');
}

/** Waits until no card waits for its details and the batch calls are done. */
async function detailsSettled(page) {
  await page.waitForTimeout(150);
  await page.waitForFunction(() => !document.querySelector('li.card[data-details=loading]'), null, { timeout: 10_000 });
  await batchesSettled(250);
}

async function cardIds(page) {
  return page.$$eval('li.card[data-profile-id]', (cards) => cards.map((c) => Number(c.dataset.profileId)));
}

/** Cards that asked for their details (loading, loaded, missing or failed). */
async function requestedCount(page) {
  return page.$$eval('li.card[data-profile-id]', (cards) => cards.filter((c) => c.dataset.details !== 'none').length);
}

async function shoot(page, name, viewport) {
  if (!screenshots) return;
  await page.setViewportSize(viewport);
  await page.waitForTimeout(300);
  await page.screenshot({ path: `${screenshots}/${name}.png` });
  await page.setViewportSize(DESKTOP);
}

describe('the web client', () => {
  it('signs both members in from the address', async () => {
    await pageA.goto(`${base}/#token=${tokenA}`);
    await pageB.goto(`${base}/#token=${tokenB}`);
    for (const [page, user] of [[pageA, userA], [pageB, userB]]) {
      await page.locator('.me').getByText(`Member ${user}`, { exact: true }).waitFor();
      await page.locator('[data-testid=connection]', { hasText: 'Online' }).waitFor();
      // The token left the address bar.
      assert.ok(!page.url().includes('token='), page.url());
    }
  });

  it('scrolls 200+ profiles, each once, one batch call per burst', async () => {
    await pageA.locator('li.card[data-profile-id]').first().waitFor();
    await detailsSettled(pageA);
    assert.equal(batchCalls.length, 1, 'the first screen of cards is one batch call');
    let bursts = 1;
    let requested = await requestedCount(pageA);
    assert.ok(requested > 0);
    const layoutShifts = await pageA.evaluate(() => {
      window.__shift = 0;
      new PerformanceObserver((list) => {
        for (const entry of list.getEntries()) if (!entry.hadRecentInput) window.__shift += entry.value;
      }).observe({ type: 'layout-shift', buffered: false });
      return 0;
    });
    assert.equal(layoutShifts, 0);
    for (let step = 0; step < 80; step++) {
      const callsBefore = batchCalls.length;
      // Less than a screen (800 px), so every card comes into view on the way.
      await pageA.evaluate(() => window.scrollBy(0, 760));
      await detailsSettled(pageA);
      const nowRequested = await requestedCount(pageA);
      const calls = batchCalls.length - callsBefore;
      if (nowRequested > requested) {
        bursts += 1;
        assert.equal(calls, 1, `step ${step}: ${nowRequested - requested} cards came into view`);
      } else {
        assert.equal(calls, 0, `step ${step}: no new card, no call`);
      }
      requested = nowRequested;
      const end = await pageA.locator('[data-testid=list-status]').textContent();
      const atBottom = await pageA.evaluate(() => window.innerHeight + window.scrollY >= document.body.scrollHeight - 2);
      if (end.includes('That is everyone') && atBottom) break;
    }
    const ids = await cardIds(pageA);
    assert.ok(ids.length >= 200, `only ${ids.length} profiles`);
    assert.equal(new Set(ids).size, ids.length, 'a profile shown twice');
    assert.ok(!ids.includes(userA), 'the member sees their own profile');
    await pageA.locator('[data-testid=list-status]', { hasText: `That is everyone: ${ids.length} profiles` }).waitFor();
    assert.equal(batchCalls.length, bursts);
    const asked = batchCalls.flatMap((call) => call.ids);
    assert.ok(batchCalls.every((call) => call.ids.length >= 1 && call.ids.length <= 50));
    assert.equal(new Set(asked).size, asked.length, 'an id asked for twice');
    // Every card came into view, so every card got its details.
    const states = await pageA.$$eval('li.card[data-profile-id]', (cards) => cards.map((c) => c.dataset.details));
    assert.deepEqual([...new Set(states)], ['loaded']);
    assert.equal(await pageA.locator('li.card .presence').count(), ids.length);
    // Cards keep their size as their details arrive.
    const shift = await pageA.evaluate(() => window.__shift);
    assert.ok(shift < 0.01, `layout shift ${shift}`);
  });

  it('restarts the scroll when the filters change', async () => {
    await pageA.evaluate(() => window.scrollTo(0, 0));
    const scrolls = [];
    const listen = (request) => {
      if (request.url().includes('/matching/profiles/scroll')) scrolls.push(new URL(request.url()));
    };
    pageA.on('request', listen);
    await pageA.getByLabel('Gender').selectOption('female');
    await pageA.getByLabel('Min age').fill('25');
    await pageA.getByRole('button', { name: 'Apply filters' }).click();
    await pageA.locator('li.card[data-profile-id]').first().waitFor();
    pageA.off('request', listen);
    assert.ok(scrolls.length >= 1);
    assert.equal(scrolls[0].searchParams.get('gender'), 'female');
    assert.equal(scrolls[0].searchParams.get('min_age'), '25');
    assert.equal(scrolls[0].searchParams.get('cursor'), null, 'a new scroll starts without a cursor');
    await shoot(pageA, 'web-profiles-desktop', DESKTOP);
    await shoot(pageA, 'web-profiles-phone', PHONE);
  });

  it('chats live: typing, the message, its read receipt, presence', async () => {
    await pageA.evaluate((b) => (window.location.hash = `#/chat/${b}`), userB);
    await pageB.evaluate((a) => (window.location.hash = `#/chat/${a}`), userA);
    const inputA = pageA.getByRole('textbox', { name: /Message to/ });
    await inputA.waitFor();
    await pageB.getByRole('textbox', { name: /Message to/ }).waitFor();
    // Both are connected, so each sees the other online.
    await pageB.locator('[data-testid=presence]', { hasText: 'online' }).waitFor();
    await inputA.fill('Hello from A');
    await pageB.locator('[data-testid=typing]', { hasText: 'is typing' }).waitFor({ timeout: 5000 });
    await inputA.press('Enter');
    const sentA = pageA.locator('li.message.mine', { hasText: 'Hello from A' });
    await sentA.waitFor();
    await pageB.locator('li.message.theirs', { hasText: 'Hello from A' }).waitFor({ timeout: 5000 });
    // B has it on screen, so B marks it read and A is told.
    await pageA.locator('li.message.mine[data-state=read]', { hasText: 'Hello from A' }).waitFor({ timeout: 5000 });
    // The typing line clears once the message came.
    await pageB.waitForFunction(() => !document.querySelector('[data-testid=typing]').textContent.includes('is typing'), null, { timeout: 5000 });
    await pageB.getByRole('textbox', { name: /Message to/ }).fill('Hello back from B');
    await pageB.getByRole('button', { name: 'Send' }).click();
    await pageA.locator('li.message.theirs', { hasText: 'Hello back from B' }).waitFor({ timeout: 5000 });
    // The list shows the conversation with its last message.
    await pageA.locator(`[data-testid=conversation-${userB}]`, { hasText: 'Hello back from B' }).waitFor({ timeout: 5000 });
    await shoot(pageA, 'web-chat-desktop', DESKTOP);
    await shoot(pageA, 'web-chat-phone', PHONE);
  });

  it('keeps the history across a reload', async () => {
    await pageB.reload();
    await pageB.locator('li.message.theirs', { hasText: 'Hello from A' }).waitFor({ timeout: 10_000 });
    await pageB.locator('li.message.mine', { hasText: 'Hello back from B' }).waitFor();
    assert.equal(await pageB.locator('li.message').count(), 2);
    await pageB.locator('[data-testid=connection]', { hasText: 'Online' }).waitFor();
  });

  it('a message sent while the reader was offline arrives once', async () => {
    await contextB.setOffline(true);
    await pageB.locator('[data-testid=connection]', { hasText: 'Reconnecting' }).waitFor({ timeout: 10_000 });
    const inputA = pageA.getByRole('textbox', { name: /Message to/ });
    await inputA.fill('While you were away');
    await inputA.press('Enter');
    await pageA.locator('li.message.mine:not([data-state=pending])', { hasText: 'While you were away' }).waitFor({ timeout: 5000 });
    await pageB.waitForTimeout(500);
    assert.equal(await pageB.locator('li.message', { hasText: 'While you were away' }).count(), 0, 'delivered while offline');
    await contextB.setOffline(false);
    await pageB.locator('[data-testid=connection]', { hasText: 'Online' }).waitFor({ timeout: 15_000 });
    await pageB.locator('li.message.theirs', { hasText: 'While you were away' }).waitFor({ timeout: 10_000 });
    // The replay (since) and the history refresh both carry it: shown once.
    await pageB.waitForTimeout(1000);
    assert.equal(await pageB.locator('li.message', { hasText: 'While you were away' }).count(), 1);
    assert.equal(await pageB.locator('li.message').count(), 3);
  });

  it('a message written while the sender was offline is sent once, when back', async () => {
    await contextA.setOffline(true);
    await pageA.locator('[data-testid=connection]', { hasText: 'Reconnecting' }).waitFor({ timeout: 10_000 });
    const inputA = pageA.getByRole('textbox', { name: /Message to/ });
    await inputA.fill('Written offline');
    await inputA.press('Enter');
    await pageA.locator('li.message.mine[data-state=pending]', { hasText: 'Written offline' }).waitFor();
    await contextA.setOffline(false);
    await pageA.locator('li.message.mine[data-state=sent], li.message.mine[data-state=read]', { hasText: 'Written offline' }).waitFor({ timeout: 15_000 });
    await pageB.locator('li.message.theirs', { hasText: 'Written offline' }).waitFor({ timeout: 10_000 });
    await pageB.waitForTimeout(1000);
    assert.equal(await pageB.locator('li.message', { hasText: 'Written offline' }).count(), 1);
    assert.equal(await pageA.locator('li.message', { hasText: 'Written offline' }).count(), 1);
  });
});
