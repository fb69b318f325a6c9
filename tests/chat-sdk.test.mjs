// The SDK's `ChatRoom` (Rust/WebAssembly, `amazon-ivs-chat-messaging` API)
// in headless Chromium against the server under test: two pages chat,
// a moderator deletes a message and disconnects a user, a view-only token
// cannot send, and a short-lived token is refreshed without a gap.
//
// By hand:
//   cargo xtask build
//   STAGECAST_API_KEY=test-key target/debug/stagecast --data-dir /tmp/sc-n --listen 127.0.0.1:18400 --media-port 18643
//   STAGECAST_URL=http://127.0.0.1:18400 STAGECAST_API_KEY=test-key node --test tests/chat-sdk.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { BASE, API_KEY } from './lib.mjs';

const PAGE_URL = `${BASE}/__chat.html`;
const HTML = `<!doctype html><meta charset="utf-8"><title>chat</title>
<script type="module">
  import * as sc from '/sdk/index.js';
  window.sc = sc;
  window.ready = true;
</script>`;

async function v1(method, route, body) {
  const res = await fetch(`${BASE}${route}`, {
    method,
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${route}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

let browser;
const pages = [];

before(async () => {
  // The page is served by `page.route`, which Chromium places in the public
  // address space; its WebSocket to the loopback server would then be
  // blocked by Local Network Access checks.
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-background-timer-throttling',
      '--disable-renderer-backgrounding',
      '--disable-features=LocalNetworkAccessChecks,BlockInsecurePrivateNetworkRequests',
    ],
  });
});

after(async () => {
  await browser?.close();
});

/**
 * A page with a connected `ChatRoom` for `userId`. Every event lands in
 * `window.events` as `{name, data}`; tokens come from the control plane
 * (`shortLived` pretends the token expires in 31 s, so the room refreshes
 * its connection about a second after connecting).
 */
async function chatter(room, userId, capabilities, { shortLived = false } = {}) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  page.on('console', (m) => {
    if (m.type() === 'error') console.error(`[${userId}] ${m.text()}`);
  });
  await page.route(PAGE_URL, (route) => route.fulfill({ contentType: 'text/html', body: HTML }));
  await page.goto(PAGE_URL);
  await page.waitForFunction(() => window.ready === true);
  await page.evaluate(
    async ({ room, userId, capabilities, apiKey, shortLived }) => {
      window.events = [];
      window.tokensFetched = 0;
      const chat = new window.sc.ChatRoom({
        regionOrUrl: room.endpoint,
        tokenProvider: async () => {
          window.tokensFetched += 1;
          const res = await fetch(`/v1/rooms/${room.id}/tokens`, {
            method: 'POST',
            headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
            body: JSON.stringify({ userId, capabilities, attributes: { username: userId } }),
          });
          const t = await res.json();
          return shortLived
            ? { token: t.token, tokenExpirationTime: new Date(Date.now() + 31_000) }
            : { token: t.token, sessionExpirationTime: t.sessionExpirationTime, tokenExpirationTime: t.tokenExpirationTime };
        },
      });
      window.chat = chat;
      for (const name of ['connecting', 'connect', 'disconnect', 'message', 'event', 'messageDelete', 'userDisconnect']) {
        chat.addListener(name, (data) => window.events.push({ name, data }));
      }
      const connected = new Promise((resolve, reject) => {
        const offs = [
          chat.addListener('connect', () => {
            offs.forEach((off) => off());
            resolve();
          }),
          chat.addListener('disconnect', (reason) => {
            offs.forEach((off) => off());
            reject(new Error(`could not connect: ${reason}`));
          }),
        ];
      });
      chat.connect();
      await connected;
    },
    { room, userId, capabilities, apiKey: API_KEY, shortLived },
  );
  assert.equal(await page.evaluate(() => window.chat.state), 'connected');
  const p = { page, errors, userId };
  pages.push(p);
  return p;
}

/** Waits until `p` has an event `name` whose data satisfies `pred` (evaluated in the page); returns it. */
async function waitEvent(p, name, predSource = 'true', timeout = 5000) {
  const handle = await p.page.waitForFunction(
    ({ name, predSource }) => {
      const pred = new Function('d', `return (${predSource});`);
      const hit = window.events.find((e) => e.name === name && pred(e.data));
      return hit ? { name: hit.name, data: JSON.parse(JSON.stringify(hit.data)) } : false;
    },
    { name, predSource },
    { timeout },
  );
  return (await handle.jsonValue()).data;
}

function assertNoErrors() {
  for (const p of pages) assert.deepEqual(p.errors.map(String), [], `page errors on ${p.userId}`);
}

test('ChatRoom: send, receive, delete, view-only, disconnect user, refresh', { timeout: 120_000 }, async () => {
  const room = await v1('POST', '/v1/rooms', { name: 'sdk-chat' });
  const a = await chatter(room, 'alice', ['SEND_MESSAGE', 'DELETE_MESSAGE', 'DISCONNECT_USER']);
  const b = await chatter(room, 'bob', ['SEND_MESSAGE']);

  // Module exports and connection events.
  const shape = await a.page.evaluate(() => ({
    codes: window.sc.chatErrorCodes.forbidden,
    names: window.events.map((e) => e.name),
  }));
  assert.equal(shape.codes, 403);
  assert.deepEqual(shape.names, ['connecting', 'connect']);

  // A sends → the promise resolves with the echoed message; B receives it.
  const sent = await a.page.evaluate(async () => {
    const req = new window.sc.SendMessageRequest('hello from alice', { mood: 'happy' });
    const m = await window.chat.sendMessage(req);
    return {
      id: m.id,
      requestId: m.requestId,
      expected: req.requestId,
      content: m.content,
      sender: m.sender,
      attributes: m.attributes,
      isDate: m.sendTime instanceof Date && !Number.isNaN(m.sendTime.getTime()),
    };
  });
  assert.equal(sent.content, 'hello from alice');
  assert.equal(sent.requestId, sent.expected);
  assert.deepEqual(sent.sender, { userId: 'alice', attributes: { username: 'alice' } });
  assert.deepEqual(sent.attributes, { mood: 'happy' });
  assert.ok(sent.isDate);
  const atB = await waitEvent(b, 'message', `d.content === 'hello from alice'`);
  assert.equal(atB.id, sent.id);
  assert.equal(atB.sender.userId, 'alice');
  assert.equal(atB.requestId, undefined);

  // B replies → A receives.
  const reply = await b.page.evaluate(async () => {
    const m = await window.chat.sendMessage(new window.sc.SendMessageRequest('hi alice'));
    return { id: m.id, userId: m.sender.userId };
  });
  assert.equal(reply.userId, 'bob');
  const atA = await waitEvent(a, 'message', `d.content === 'hi alice'`);
  assert.equal(atA.id, reply.id);
  assert.equal(atA.sender.userId, 'bob');

  // B may not delete (403, a ChatError); A deletes B's message → both see messageDelete.
  const denied = await b.page.evaluate(async (id) => {
    try {
      await window.chat.deleteMessage(new window.sc.DeleteMessageRequest(id, 'nope'));
      return null;
    } catch (e) {
      return { code: e.errorCode, isChatError: e instanceof window.sc.ChatError, hasRequestId: typeof e.requestId === 'string' };
    }
  }, reply.id);
  assert.deepEqual(denied, { code: 403, isChatError: true, hasRequestId: true });
  const deleted = await a.page.evaluate(async (id) => {
    const ev = await window.chat.deleteMessage(new window.sc.DeleteMessageRequest(id, 'off topic'));
    return { messageId: ev.messageId, reason: ev.reason };
  }, reply.id);
  assert.deepEqual(deleted, { messageId: reply.id, reason: 'off topic' });
  for (const p of [a, b]) {
    const ev = await waitEvent(p, 'messageDelete', `d.messageId === ${JSON.stringify(reply.id)}`);
    assert.equal(ev.reason, 'off topic');
  }

  // A custom event from the control plane reaches both as `event`.
  await v1('POST', `/v1/rooms/${room.id}/events`, { eventName: 'app:poll', attributes: { q: 'tea?' } });
  for (const p of [a, b]) {
    const ev = await waitEvent(p, 'event', `d.eventName === 'app:poll'`);
    assert.deepEqual(ev.attributes, { q: 'tea?' });
  }

  // A view-only token cannot send: 403.
  const v = await chatter(room, 'viewer', []);
  const viewOnly = await v.page.evaluate(async () => {
    try {
      await window.chat.sendMessage(new window.sc.SendMessageRequest('let me talk'));
      return null;
    } catch (e) {
      return e.errorCode;
    }
  });
  assert.equal(viewOnly, 403);
  // Too long: 413; the room stays connected.
  const tooLong = await b.page.evaluate(async () => {
    try {
      await window.chat.sendMessage(new window.sc.SendMessageRequest('x'.repeat(501)));
      return null;
    } catch (e) {
      return { code: e.errorCode, state: window.chat.state };
    }
  });
  assert.deepEqual(tooLong, { code: 413, state: 'connected' });

  // A short-lived token: the room opens a replacement connection about a
  // second after connecting and keeps working through the swap.
  const r = await chatter(room, 'refresher', ['SEND_MESSAGE'], { shortLived: true });
  await r.page.waitForFunction(() => window.tokensFetched >= 2, null, { timeout: 10_000 });
  await r.page.waitForTimeout(500);
  const afterRefresh = await r.page.evaluate(async () => {
    const m = await window.chat.sendMessage(new window.sc.SendMessageRequest('still here'));
    return { content: m.content, state: window.chat.state, names: window.events.map((e) => e.name) };
  });
  assert.equal(afterRefresh.content, 'still here');
  assert.equal(afterRefresh.state, 'connected');
  assert.deepEqual(
    afterRefresh.names.filter((n) => n !== 'message' && n !== 'event'),
    ['connecting', 'connect'],
    'the refresh is seamless (no disconnect / connecting)',
  );
  await waitEvent(a, 'message', `d.content === 'still here'`);
  // No duplicate deliveries across the swap.
  const copies = await r.page.evaluate(
    () => window.events.filter((e) => e.name === 'message' && e.data.content === 'still here').length,
  );
  assert.equal(copies, 1);

  // A disconnects B → everyone sees userDisconnect; B is disconnected by the server.
  const kicked = await a.page.evaluate(async () => {
    const ev = await window.chat.disconnectUser(new window.sc.DisconnectUserRequest('bob', 'be nice'));
    return { userId: ev.userId, reason: ev.reason };
  });
  assert.deepEqual(kicked, { userId: 'bob', reason: 'be nice' });
  await waitEvent(a, 'userDisconnect', `d.userId === 'bob'`);
  const bGone = await waitEvent(b, 'disconnect');
  assert.equal(bGone, 'serverDisconnect');
  assert.equal(await b.page.evaluate(() => window.chat.state), 'disconnected');
  await assert.rejects(
    b.page.evaluate(() => window.chat.sendMessage(new window.sc.SendMessageRequest('again'))),
    /Room is not connected/,
  );

  // A leaves on its own.
  const left = await a.page.evaluate(() => {
    window.chat.disconnect();
    return window.chat.state;
  });
  assert.equal(left, 'disconnected');
  assert.equal(await waitEvent(a, 'disconnect'), 'clientDisconnect');

  assertNoErrors();
  for (const p of pages) await p.page.context().close();
  await v1('DELETE', `/v1/rooms/${room.id}`);
});
