// End-to-end: the static export served by the real api (on SQLite, seeded by the
// fixture), driven in Debian's Chromium. Opens the bot's session link, subscribes to an
// entity with two kinds, unsubscribes another, changes the language, saves, reloads and
// checks the api agrees; the Upcoming list of the seeded schedule, the reminder leads
// picker and the calendar feed link; then the expired and missing session pages, and the
// export on a second origin reaching the api through config.json / `?api=` and CORS.
//
// Needs the export (`npm run build`); builds and starts the fixture api itself. Writes
// screenshots to e2e/screenshots/.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import {
  buildFixture,
  launchBrowser,
  OUT,
  requireExport,
  rpc,
  SCREENSHOTS,
  startFixture,
  startRecordingServer,
  startStaticServer,
} from './support.mjs';

const DESKTOP = { width: 1280, height: 800 };
/** Every YouTube kind the picker offers, in its order. */
const YOUTUBE_KINDS = [
  'youtube.video',
  'youtube.short',
  'youtube.scheduled',
  'youtube.premiere',
  'youtube.rescheduled',
  'youtube.reminder',
  'youtube.live',
  'youtube.ended',
  'youtube.cancelled',
  'youtube.members',
];
const PHONE = { width: 390, height: 844 };

let api;
let staticSite;
let staticConfig = {};
/** A server that records every request (an origin `?api=` must not reach). */
let trap;
let browser;
/** Every URL the pages asked for, to check nothing leaves the test's own servers. */
const requested = new Set();
/** Uncaught page errors. */
const pageErrors = [];

async function newPage(viewport = DESKTOP) {
  const page = await browser.context.newPage();
  await page.setViewportSize(viewport);
  page.on('request', (request) => requested.add(request.url()));
  page.on('pageerror', (err) => pageErrors.push(err));
  return page;
}

const byTest = (page, id) => page.getByTestId(id);

describe('subscription page', () => {
  before(async () => {
    requireExport();
    mkdirSync(SCREENSHOTS, { recursive: true });
    buildFixture();
    staticSite = await startStaticServer(() => staticConfig);
    trap = await startRecordingServer();
    api = await startFixture(['--static-dir', OUT, '--cors-origin', staticSite.url]);
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await api?.stop();
    await staticSite?.close();
    await trap?.close();
  });

  it('opens from the session link and shows the chat and every entity', async () => {
    const page = await newPage();
    await page.goto(`${api.url}/#token=${api.token}`);
    await assertText(byTest(page, 'chat-name'), 'Stargazer Fans');
    await assertText(byTest(page, 'chat-im'), 'Telegram');
    // The token leaves the address bar at once.
    assert.ok(!page.url().includes(api.token), `token still in ${page.url()}`);
    await assertText(byTest(page, 'showing'), '4 of 4');
    const aki = byTest(page, `entity-${api.entities.aki}`);
    await assertText(aki, 'Aki Hoshino');
    await assertText(aki, '星野アキ');
    await assertText(aki, 'Starlight Unit');
    await assertText(aki, 'YouTube');
    await assertText(aki, 'X');
    assert.equal(await byTest(page, `subscribe-${api.entities.aki}`).isChecked(), false);
    // Seeded: subscribed to Luna with every kind.
    assert.equal(await byTest(page, `subscribe-${api.entities.luna}`).isChecked(), true);
    for (const kind of YOUTUBE_KINDS) {
      assert.equal(await byTest(page, `kind-${api.entities.luna}-${kind}`).isChecked(), true, kind);
    }
    // Every kind has a label, not its raw name.
    for (const kind of YOUTUBE_KINDS) {
      const label = await byTest(page, `kind-${api.entities.luna}-${kind}`).locator('xpath=..').innerText();
      assert.notEqual(label.trim(), kind);
    }
    // Only the kinds of the entity's platforms are offered.
    assert.equal(await byTest(page, `kind-${api.entities.luna}-twitter.tweet`).count(), 0);
    await page.close();
  });

  it('filters by search text and by group', async () => {
    const page = await newPage();
    await page.goto(`${api.url}/#token=${api.token}`);
    await byTest(page, 'search').fill('hoshino');
    await assertText(byTest(page, 'showing'), '1 of 4');
    assert.equal(await byTest(page, `entity-${api.entities.aki}`).count(), 1);
    // Account ids are searchable too.
    await byTest(page, 'search').fill('1000000000000000003');
    await assertText(byTest(page, 'showing'), '1 of 4');
    assert.equal(await byTest(page, `entity-${api.entities.mira}`).count(), 1);
    await byTest(page, 'search').fill('');
    await byTest(page, 'group-filter').selectOption(api.groups.starlight);
    await assertText(byTest(page, 'showing'), '2 of 4');
    assert.equal(await byTest(page, `entity-${api.entities.kaze}`).count(), 1);
    assert.equal(await byTest(page, `entity-${api.entities.luna}`).count(), 0);
    await byTest(page, 'group-filter').selectOption('__none__');
    await assertText(byTest(page, 'showing'), '1 of 4');
    await byTest(page, 'group-filter').selectOption('');
    await byTest(page, 'subscribed-only').check();
    await assertText(byTest(page, 'showing'), '1 of 4');
    await page.close();
  });

  it('lists the upcoming streams of the subscriptions, in the chat time zone', async () => {
    const page = await newPage();
    await page.goto(`${api.url}/#token=${api.token}`);
    const live = byTest(page, 'upcoming-lunaLive0001');
    const next = byTest(page, 'upcoming-lunaNext0002');
    await assertText(live, 'Luna: morning chat');
    await assertText(live, 'Luna Tsukishiro');
    await assertText(live, 'Live');
    assert.equal(await live.getAttribute('data-state'), 'live');
    await assertText(next, 'Luna: karaoke night');
    assert.equal(await next.getAttribute('data-state'), 'upcoming');
    // The chat has no time zone: times are in UTC, and the element carries the instant.
    await assertText(next, 'UTC');
    const upcoming = await rpc(api.url, 'getUpcoming', api.token);
    const start = upcoming.body.data.find((s) => s.id === 'lunaNext0002').start;
    assert.equal(await next.locator('time').getAttribute('datetime'), start);
    // Soonest first; Aki's stream is not listed (not subscribed).
    const order = await byTest(page, 'upcoming').locator('li').evaluateAll((items) => items.map((li) => li.dataset.testid));
    assert.deepEqual(order, ['upcoming-lunaLive0001', 'upcoming-lunaNext0002']);
    assert.equal(await byTest(page, 'upcoming-akiNext00003').count(), 0);
    await page.screenshot({ path: join(SCREENSHOTS, 'upcoming.png') });
    await page.close();
  });

  it('saves the reminder leads', async () => {
    const page = await newPage();
    await page.goto(`${api.url}/#token=${api.token}`);
    for (const lead of [5, 15, 30, 60]) {
      assert.equal(await byTest(page, `lead-${lead}`).isChecked(), false, `${lead}`);
    }
    await byTest(page, 'lead-60').check();
    await byTest(page, 'lead-5').check();
    await assertText(byTest(page, 'unsaved-count'), '1 unsaved change(s)');
    await byTest(page, 'save').click();
    const status = byTest(page, 'status');
    await status.waitFor();
    assert.equal(await status.getAttribute('data-kind'), 'ok', await status.innerText());
    const settings = await rpc(api.url, 'getSettings', api.token);
    assert.deepEqual(settings.body.data.reminder_leads, [5, 60]);
    await page.reload();
    await byTest(page, 'chat-name').waitFor();
    for (const [lead, on] of [[5, true], [15, false], [30, false], [60, true]]) {
      assert.equal(await byTest(page, `lead-${lead}`).isChecked(), on, `${lead}`);
    }
    await page.close();
  });

  it('makes the calendar link, which serves the upcoming streams, then remakes and removes it', async () => {
    const page = await newPage();
    await page.goto(`${api.url}/#token=${api.token}`);
    assert.equal(await byTest(page, 'calendar-state').getAttribute('data-active'), 'false');
    await byTest(page, 'calendar-create').click();
    const field = byTest(page, 'calendar-url');
    await field.waitFor();
    const url = await field.inputValue();
    assert.match(url, new RegExp(`^${api.url}/ical/[0-9a-f]{32}\\.[A-Za-z0-9_-]{43}\\.ics$`));
    const feed = await fetch(url);
    assert.equal(feed.status, 200);
    assert.equal(feed.headers.get('content-type'), 'text/calendar; charset=utf-8');
    const ics = await feed.text();
    assert.match(ics, /^BEGIN:VCALENDAR\r\n/);
    assert.ok(ics.includes('UID:youtube-lunaNext0002@stargazer'), ics);
    assert.ok(ics.includes('UID:youtube-lunaLive0001@stargazer'), ics);
    assert.ok(!ics.includes('akiNext00003'), ics);
    assert.ok(ics.includes('SUMMARY:Luna Tsukishiro: Luna: karaoke night'), ics);
    await page.screenshot({ path: join(SCREENSHOTS, 'calendar.png') });

    // A new link replaces the old one.
    await byTest(page, 'calendar-create').click();
    await page.waitForFunction(
      (old) => document.querySelector('[data-testid="calendar-url"]')?.value !== old,
      url,
    );
    const rotated = await field.inputValue();
    assert.equal((await fetch(url)).status, 404);
    assert.equal((await fetch(rotated)).status, 200);

    // After a reload the secret is not shown again, but the page knows a link exists.
    await page.reload();
    await byTest(page, 'chat-name').waitFor();
    assert.equal(await byTest(page, 'calendar-state').getAttribute('data-active'), 'true');
    await byTest(page, 'calendar-revoke').click();
    await page.waitForFunction(
      () => document.querySelector('[data-testid="calendar-state"]')?.dataset.active === 'false',
    );
    assert.equal((await fetch(rotated)).status, 404);
    await page.close();
  });

  it('subscribes with two kinds, changes the language, saves and keeps it after a reload', async () => {
    const page = await newPage();
    await page.goto(`${api.url}/#token=${api.token}`);
    const aki = api.entities.aki;
    await byTest(page, `subscribe-${aki}`).check();
    // A new subscription starts with every kind of both platforms.
    for (const kind of [...YOUTUBE_KINDS, 'twitter.tweet', 'twitter.retweet']) {
      assert.equal(await byTest(page, `kind-${aki}-${kind}`).isChecked(), true, kind);
    }
    for (const kind of [...YOUTUBE_KINDS.filter((k) => k !== 'youtube.live'), 'twitter.retweet']) {
      await byTest(page, `kind-${aki}-${kind}`).uncheck();
    }
    await byTest(page, `subscribe-${api.entities.luna}`).uncheck();
    await byTest(page, 'language').selectOption('ja');
    await assertText(byTest(page, 'unsaved-count'), '3 unsaved change(s)');

    // Unchecking every kind is refused until one is picked again.
    await byTest(page, `kind-${aki}-youtube.live`).uncheck();
    await byTest(page, `kind-${aki}-twitter.tweet`).uncheck();
    assert.equal(await byTest(page, 'save').isDisabled(), true);
    await byTest(page, `kind-${aki}-youtube.live`).check();
    await byTest(page, `kind-${aki}-twitter.tweet`).check();

    await page.screenshot({ path: join(SCREENSHOTS, 'desktop.png') });
    await page.setViewportSize(PHONE);
    await page.screenshot({ path: join(SCREENSHOTS, 'phone.png') });
    await byTest(page, `entity-${aki}`).scrollIntoViewIfNeeded();
    await page.screenshot({ path: join(SCREENSHOTS, 'phone-list.png') });
    await page.setViewportSize(DESKTOP);

    await byTest(page, 'save').click();
    const status = byTest(page, 'status');
    await status.waitFor();
    assert.equal(await status.getAttribute('data-kind'), 'ok', await status.innerText());
    // The page now speaks the saved language and names follow it.
    await assertText(status, '保存しました');
    await assertText(byTest(page, `entity-${aki}`), '星野アキ');

    await page.screenshot({ path: join(SCREENSHOTS, 'desktop-saved-ja.png') });
    await page.setViewportSize(PHONE);
    await page.screenshot({ path: join(SCREENSHOTS, 'phone-saved-ja.png') });
    await page.setViewportSize(DESKTOP);

    // What the bot would see: straight from the api.
    const subs = await rpc(api.url, 'getSubscription', api.token);
    assert.equal(subs.status, 200);
    assert.deepEqual(
      subs.body.data.map((s) => [s.entity, s.kinds]),
      [[aki, ['twitter.tweet', 'youtube.live']]],
    );
    const settings = await rpc(api.url, 'getSettings', api.token);
    assert.equal(settings.body.data.language, 'ja');

    // A reload reads the token back from the tab and shows the saved state.
    await page.reload();
    await byTest(page, 'chat-name').waitFor();
    assert.equal(await byTest(page, 'language').inputValue(), 'ja');
    assert.equal(await byTest(page, `subscribe-${aki}`).isChecked(), true);
    assert.equal(await byTest(page, `subscribe-${api.entities.luna}`).isChecked(), false);
    for (const [kind, on] of [
      ...YOUTUBE_KINDS.map((kind) => [kind, kind === 'youtube.live']),
      ['twitter.tweet', true],
      ['twitter.retweet', false],
    ]) {
      assert.equal(await byTest(page, `kind-${aki}-${kind}`).isChecked(), on, kind);
    }
    await assertText(byTest(page, 'unsaved-count'), '未保存の変更はありません');
    await page.close();
  });

  it('takes the token from the fragment only, never from the query', async () => {
    // The server never saw the fragment: the api's access to the page carries no token.
    const page = await newPage();
    const pageRequests = [];
    page.on('request', (request) => pageRequests.push(request.url()));
    await page.goto(`${api.url}/#token=${api.token}`);
    await assertText(byTest(page, 'chat-name'), 'Stargazer Fans');
    assert.ok(!page.url().includes(api.token));
    assert.deepEqual(pageRequests.filter((url) => url.includes(api.token)), []);
    await page.close();

    // A token in the query string is not used (and is removed from the address bar).
    const query = await newPage();
    await query.goto(`${api.url}/?session=${api.token}`);
    const problem = byTest(query, 'session-problem');
    await problem.waitFor();
    assert.equal(await problem.getAttribute('data-reason'), 'missing');
    assert.ok(!query.url().includes(api.token), `token still in ${query.url()}`);
    await query.close();
  });

  it('tells the user to send /settings again when the link has expired', async () => {
    const page = await newPage();
    await page.goto(`${api.url}/#token=${api.expired_token}`);
    const problem = byTest(page, 'session-problem');
    await problem.waitFor();
    assert.equal(await problem.getAttribute('data-reason'), 'expired');
    await assertText(problem, 'This link has expired');
    await assertText(problem, '/settings');
    await page.screenshot({ path: join(SCREENSHOTS, 'expired.png') });
    await page.setViewportSize(PHONE);
    await page.screenshot({ path: join(SCREENSHOTS, 'expired-phone.png') });
    // The api agrees the session is gone.
    assert.equal((await rpc(api.url, 'authMe', api.expired_token)).status, 401);
    await page.close();
  });

  it('explains where to get a link when opened without one', async () => {
    const page = await newPage();
    await page.goto(`${api.url}/`);
    const problem = byTest(page, 'session-problem');
    await problem.waitFor();
    assert.equal(await problem.getAttribute('data-reason'), 'missing');
    await assertText(problem, '/settings');
    await page.close();
  });

  it('works from another origin through config.json or an allowed ?api=, with CORS', async () => {
    staticConfig = { apiBase: api.url };
    const page = await newPage();
    await page.goto(`${staticSite.url}/#token=${api.token}`);
    await assertText(byTest(page, `entity-${api.entities.aki}`), '星野アキ');
    await page.close();

    // An allowed `?api=` wins over config.json (which now points at a closed port).
    staticConfig = { apiBase: 'http://127.0.0.1:9', allowedApiOrigins: [api.url] };
    const second = await newPage();
    await second.goto(`${staticSite.url}/?api=${encodeURIComponent(api.url)}#token=${api.token}`);
    await assertText(byTest(second, 'chat-name'), 'Stargazer Fans');
    assert.ok(second.url().includes('api='), 'other query parameters stay');
    await second.close();

    // An origin the api does not allow cannot read its answers.
    const third = await newPage();
    await third.goto(`${staticSite.url.replace('127.0.0.1', 'localhost')}/?api=${encodeURIComponent(api.url)}#token=${api.token}`);
    await byTest(third, 'load-error').waitFor();
    await third.close();
  });

  it('never sends the session to an ?api= origin that is not allowed', async () => {
    // The page served by the api, pointed by a crafted link at a server that would take
    // any request (CORS open): the page keeps to its own api, the trap hears nothing.
    const page = await newPage();
    await page.goto(`${api.url}/?api=${encodeURIComponent(trap.url)}#token=${api.token}`);
    await assertText(byTest(page, 'chat-name'), 'Stargazer Fans');
    await page.close();

    // The same on a second origin: config.json names the api but does not allow the trap.
    staticConfig = { apiBase: api.url, allowedApiOrigins: ['https://api.example.org'] };
    const second = await newPage();
    await second.goto(`${staticSite.url}/?api=${encodeURIComponent(trap.url)}#token=${api.token}`);
    await assertText(byTest(second, `entity-${api.entities.aki}`), '星野アキ');
    await second.close();
    assert.deepEqual(trap.requests, []);

    // Allowed, the same link does reach it (the check is what kept it away).
    staticConfig = { apiBase: api.url, allowedApiOrigins: [trap.url] };
    const third = await newPage();
    await third.goto(`${staticSite.url}/?api=${encodeURIComponent(trap.url)}#token=${api.token}`);
    await byTest(third, 'load-error').waitFor();
    await third.close();
    assert.ok(
      trap.requests.some((r) => r.authorization === `Bearer ${api.token}`),
      `the allowed origin was not asked: ${JSON.stringify(trap.requests)}`,
    );
  });

  it('asked for nothing outside the test servers and threw no errors', () => {
    // The trap only when it was allowed (the last `?api=` check); before that it heard nothing.
    const allowed = [new URL(api.url).origin, new URL(staticSite.url).origin, staticSite.url.replace('127.0.0.1', 'localhost'), trap.url];
    const outside = [...requested].filter((url) => !allowed.some((origin) => url.startsWith(`${origin}/`)));
    const notAllowed = outside.filter((url) => !url.startsWith('http://127.0.0.1:9/'));
    assert.deepEqual(notAllowed, []);
    assert.deepEqual(pageErrors.map(String), []);
  });
});

/** Waits until `locator` contains `text` (an empty `text` just waits for it). */
async function assertText(locator, text) {
  await locator.first().waitFor();
  if (!text) return;
  const deadline = Date.now() + 10_000;
  let seen = '';
  while (Date.now() < deadline) {
    seen = await locator.first().innerText();
    if (seen.includes(text)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail(`expected ${JSON.stringify(text)} in ${JSON.stringify(seen)}`);
}
