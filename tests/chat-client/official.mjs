// Drives the official IVS chat client, `amazon-ivs-chat-messaging` from npm,
// unchanged against a Stagecast server: rooms and tokens come from the /v1
// control plane, the client connects with `regionOrUrl: "ws://…/v1/chat"`.
// Connect, send, receive, delete, custom events, capability errors, a late
// joiner that gets the room's recent messages (Stagecast's addition: plain
// MESSAGE frames the client takes as it takes any other), a seamless token
// refresh, disconnect a user. Exits non-zero on any failure.
//
// By hand:
//   STAGECAST_API_KEY=test-key target/debug/stagecast --data-dir /tmp/sc-f --listen 127.0.0.1:18090 --media-port 18453
//   STAGECAST_URL=http://127.0.0.1:18090 STAGECAST_API_KEY=test-key node tests/chat-client/official.mjs
//
// Needs the npm packages `amazon-ivs-chat-messaging` and (on Node 20, which
// has no global WebSocket without --experimental-websocket) `ws`, installed
// where Node resolves them, or in the node_modules directory named by
// CHAT_CLIENT_NODE_MODULES.

import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import path from 'node:path';

const BASE = (process.env.STAGECAST_URL || 'http://127.0.0.1:18090').replace(/\/$/, '');
const API_KEY = process.env.STAGECAST_API_KEY || 'test-key';
const STEP_TIMEOUT_MS = 5000;

async function load(name) {
  try {
    return await import(name);
  } catch (error) {
    const dir = process.env.CHAT_CLIENT_NODE_MODULES;
    if (!dir) throw error;
    const require = createRequire(path.join(path.resolve(dir), '..', 'resolver.js'));
    return require(name);
  }
}

const { ChatRoom, SendMessageRequest, DeleteMessageRequest, DisconnectUserRequest } = await load(
  'amazon-ivs-chat-messaging',
);
if (typeof globalThis.WebSocket !== 'function') {
  const ws = await load('ws');
  globalThis.WebSocket = ws.WebSocket || ws.default;
}

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

/** Resolves with the next `event` of `room` matching `pred`, or rejects after a timeout. */
function next(room, event, pred = () => true) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out waiting for "${event}"`));
    }, STEP_TIMEOUT_MS);
    const off = room.addListener(event, (payload) => {
      if (!pred(payload)) return;
      clearTimeout(timer);
      off();
      resolve(payload);
    });
  });
}

function withTimeout(promise, what) {
  return Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), STEP_TIMEOUT_MS)),
  ]);
}

/** A connected ChatRoom for a fresh token of `userId` with `capabilities`. */
async function join(room, userId, capabilities, { shortLived = false } = {}) {
  let fetched = 0;
  const chat = new ChatRoom({
    regionOrUrl: room.endpoint,
    tokenProvider: async () => {
      fetched += 1;
      const t = await v1('POST', `/v1/rooms/${room.id}/tokens`, {
        userId,
        capabilities,
        attributes: { username: userId },
      });
      // A short-lived token makes the client open its next connection about
      // a second after this one (it refreshes 30 s before expiry). Only the
      // first two (two refreshes, the second being where a replayed history
      // would show twice): a client that swaps connections every second
      // drops the answer to any request that crosses a swap (it stops
      // listening to the old connection), which made this test flaky.
      const tokenExpirationTime =
        shortLived && fetched <= 2 ? new Date(Date.now() + 31_000) : t.tokenExpirationTime;
      return { token: t.token, tokenExpirationTime, sessionExpirationTime: t.sessionExpirationTime };
    },
  });
  chat.logLevel = 'error';
  chat.logger = { debug() {}, info() {}, warn: console.warn, error() {} };
  // Every message the client hands the app, from the first frame on.
  const seen = [];
  chat.addListener('message', (m) => seen.push(m));
  const connected = next(chat, 'connect');
  chat.connect();
  await connected;
  assert.equal(chat.state, 'connected');
  return { chat, tokensFetched: () => fetched, seen };
}

/** Resolves once `pred()` holds (checked every 50 ms), or rejects after a timeout. */
async function until(pred, what) {
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const cleanups = [];
async function main() {
  const room = await v1('POST', '/v1/rooms', { name: 'official-client' });
  assert.match(room.endpoint, /^ws:\/\/.+\/v1\/chat$/);
  console.log(`room ${room.id} at ${room.endpoint}`);

  const host = await join(room, 'host', ['SEND_MESSAGE', 'DELETE_MESSAGE', 'DISCONNECT_USER']);
  const guest = await join(room, 'guest', ['SEND_MESSAGE']);
  const viewer = await join(room, 'viewer', []);
  cleanups.push(() => host.chat.disconnect(), () => guest.chat.disconnect(), () => viewer.chat.disconnect());
  console.log('ok: three clients connected');

  // Send and receive.
  const hostSees = next(host.chat, 'message', (m) => m.content === 'hello from guest');
  const viewerSees = next(viewer.chat, 'message', (m) => m.content === 'hello from guest');
  const sent = await withTimeout(
    guest.chat.sendMessage(new SendMessageRequest('hello from guest', { mood: 'happy' })),
    'sendMessage',
  );
  assert.equal(sent.content, 'hello from guest');
  assert.equal(sent.sender.userId, 'guest');
  assert.deepEqual(sent.sender.attributes, { username: 'guest' });
  assert.deepEqual(sent.attributes, { mood: 'happy' });
  assert.ok(sent.sendTime instanceof Date && !Number.isNaN(sent.sendTime.getTime()));
  const received = await hostSees;
  assert.equal(received.id, sent.id);
  assert.equal((await viewerSees).id, sent.id);
  console.log('ok: send / receive');

  // Capability errors reject the request's promise with the IVS error code.
  await assert.rejects(viewer.chat.sendMessage(new SendMessageRequest('let me talk')), (e) => e.errorCode === 403);
  await assert.rejects(guest.chat.deleteMessage(new DeleteMessageRequest(sent.id, 'nope')), (e) => e.errorCode === 403);
  await assert.rejects(
    guest.chat.sendMessage(new SendMessageRequest('x'.repeat(501))),
    (e) => e.errorCode === 413 && typeof e.errorMessage === 'string',
  );
  console.log('ok: 403 / 413 errors');

  // Delete: the requester's promise resolves, everyone gets messageDelete.
  const guestSeesDelete = next(guest.chat, 'messageDelete', (d) => d.messageId === sent.id);
  const deleted = await withTimeout(host.chat.deleteMessage(new DeleteMessageRequest(sent.id, 'spam')), 'delete');
  assert.equal(deleted.messageId, sent.id);
  assert.equal(deleted.reason, 'spam');
  assert.equal((await guestSeesDelete).reason, 'spam');
  console.log('ok: delete message');

  // A late joiner gets the room's recent messages on connect, oldest first,
  // as ordinary messages; the deleted one is not among them.
  const earlier = [];
  for (const [who, text] of [[host, 'earlier one'], [guest, 'earlier two']]) {
    earlier.push(await withTimeout(who.chat.sendMessage(new SendMessageRequest(text)), 'send earlier'));
  }
  const late = await join(room, 'late', []);
  cleanups.push(() => late.chat.disconnect());
  await until(() => late.seen.length >= 2, 'the late joiner gets the history');
  assert.deepEqual(
    late.seen.map((m) => [m.id, m.content, m.sender.userId]),
    earlier.map((m) => [m.id, m.content, m.sender.userId]),
  );
  assert.ok(late.seen.every((m) => m.requestId === undefined && m.sendTime instanceof Date));
  console.log('ok: history for a late joiner');

  // SendEvent from the control plane reaches every client as `event`.
  const events = [host, guest, viewer].map((c) => next(c.chat, 'event', (e) => e.eventName === 'stage:live'));
  await v1('POST', `/v1/rooms/${room.id}/events`, { eventName: 'stage:live', attributes: { at: 'now' } });
  for (const event of await Promise.all(events)) assert.deepEqual(event.attributes, { at: 'now' });
  console.log('ok: custom event');

  // Seamless token refresh: the client opens a second connection before the
  // token expires and swaps to it without a disconnect.
  const refresher = await join(room, 'refresher', ['SEND_MESSAGE'], { shortLived: true });
  cleanups.push(() => refresher.chat.disconnect());
  let dropped = false;
  const offDrop = refresher.chat.addListener('disconnect', () => {
    dropped = true;
  });
  await until(() => refresher.tokensFetched() >= 3, 'two refreshes');
  // Let the second swap finish before sending on the connection it leaves.
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(dropped, false);
  const afterRefresh = await withTimeout(
    refresher.chat.sendMessage(new SendMessageRequest('after refresh')),
    'send after refresh',
  );
  assert.equal(afterRefresh.content, 'after refresh');
  // The server replays history once per user (a refresh connection gets none):
  // across two swaps the client showed no message twice.
  const ids = refresher.seen.map((m) => m.id);
  assert.equal(new Set(ids).size, ids.length, `a message was shown twice: ${ids}`);
  assert.ok(ids.length >= 3, `the refresher saw the history and its own message: ${ids}`);
  offDrop();
  refresher.chat.disconnect();
  console.log('ok: token refresh');

  // Disconnect a user: the requester's promise resolves, the user sees why and
  // is disconnected by the server (and does not reconnect).
  const guestTold = next(guest.chat, 'userDisconnect', (d) => d.userId === 'guest');
  const guestGone = next(guest.chat, 'disconnect');
  const viewerTold = next(viewer.chat, 'userDisconnect', (d) => d.userId === 'guest');
  const kicked = await withTimeout(
    host.chat.disconnectUser(new DisconnectUserRequest('guest', 'be nice')),
    'disconnectUser',
  );
  assert.equal(kicked.userId, 'guest');
  assert.equal(kicked.reason, 'be nice');
  assert.equal((await guestTold).reason, 'be nice');
  assert.equal(await guestGone, 'serverDisconnect');
  await viewerTold;
  assert.equal(guest.chat.state, 'disconnected');
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(guest.chat.state, 'disconnected', 'a disconnected user does not reconnect');
  console.log('ok: disconnect user');

  // The others still talk.
  const viewerSeesHost = next(viewer.chat, 'message', (m) => m.content === 'still here');
  await withTimeout(host.chat.sendMessage(new SendMessageRequest('still here')), 'send after kick');
  await viewerSeesHost;

  // Deleting the room disconnects everyone.
  const hostGone = next(host.chat, 'disconnect');
  await fetch(`${BASE}/v1/rooms/${room.id}`, { method: 'DELETE', headers: { authorization: `Bearer ${API_KEY}` } });
  assert.equal(await hostGone, 'serverDisconnect');
  console.log('ok: delete room');
}

try {
  await main();
  console.log('PASS: amazon-ivs-chat-messaging works against Stagecast chat');
  process.exit(0);
} catch (error) {
  console.error('FAIL:', error);
  for (const cleanup of cleanups) {
    try {
      cleanup();
    } catch {
      // Best effort: the process exits anyway.
    }
  }
  process.exit(1);
}
