// Journey: a stage recovers without anyone touching the page. Two people on
// a server this journey runs itself (so it can kill it): Red's publish
// connection dies, then one of Red's subscriptions, then Red's event socket;
// then Red goes live and the server is killed with -9 and started again on
// the same port and data dir. Each time the SDK says what it is doing
// (attempting_publish / attempting_subscribe / "Reconnecting…") and the
// video — and the broadcast — come back by themselves.
//
// Connections are broken from inside the page: every RTCPeerConnection (the
// probes of tests/probes.mjs) and WebSocket the page makes is recorded, and
// the test closes one and tells the SDK about it the way the browser does
// when a connection dies (a `connectionstatechange` event, a WebSocket
// `close`). At the end, every "published" / "subscribed" the apps were told
// must have had a connected peer connection behind it.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  PEOPLE,
  launch,
  newParticipant,
  assertNoPageErrors,
  dumpLogs,
  waitJoined,
  setProfile,
  joinViaInvite,
  localParticipantId,
  waitForRemoteTiles,
  expectLiveVideo,
  sleep,
  ownServer,
} from './lib.mjs';
import { PROBES, assertStatesTruthful } from './probes.mjs';

/** Records the page's WebSockets (before its scripts run). */
function recordSockets() {
  const sockets = [];
  const WS = window.WebSocket;
  window.WebSocket = class extends WS {
    constructor(...args) {
      super(...args);
      sockets.push(this);
    }
  };
  window.__sockets = sockets;
}

/**
 * Kills the page's live peer connection whose transceivers go `direction`
 * (`sendonly`: the publish, `recvonly`: a subscription) as a dying
 * connection looks to the page: closed, with a `connectionstatechange`.
 */
async function killPeerConnection(page, direction) {
  const killed = await page.evaluate((dir) => {
    const pc = (window.__pcLog || [])
      .map((e) => e.pc)
      .find((p) => p.connectionState === 'connected' && p.getTransceivers().some((t) => t.direction === dir));
    if (!pc) return false;
    pc.close();
    pc.dispatchEvent(new Event('connectionstatechange'));
    return true;
  }, direction);
  assert.ok(killed, `a connected ${direction} peer connection to kill`);
}

/** The number of SDK events recorded so far (a mark to wait after). */
const mark = (page) => page.evaluate(() => window.__stagecast.events.length);

/** Waits for an SDK event after `from` matching all fields of `match`. */
async function eventAfter(page, from, match, timeout = 20000) {
  try {
    const handle = await page.waitForFunction(
      ([from, m]) =>
        window.__stagecast.events.slice(from).find((e) => Object.entries(m).every(([k, v]) => e[k] === v)) || false,
      [from, match],
      { timeout },
    );
    return handle.jsonValue();
  } catch {
    const events = await page.evaluate((from) => window.__stagecast.events.slice(from), from).catch(() => []);
    throw new Error(`no event ${JSON.stringify(match)} within ${timeout} ms; events since: ${JSON.stringify(events)}`);
  }
}

describe('the stage recovers by itself', { timeout: 300_000 }, () => {
  let server;
  let browser;
  let red;
  let green;
  let ok = false;

  before(async () => {
    server = await ownServer();
    browser = await launch();
    const probes = { initScripts: [PROBES, [recordSockets, null]] };
    red = await newParticipant(browser, PEOPLE.red, probes);
    green = await newParticipant(browser, PEOPLE.green, probes);
  });

  after(async () => {
    if (!ok) {
      dumpLogs([red, green].filter(Boolean));
      if (server) console.log(`server log: ${server.log}`);
    }
    await browser?.close();
    await server?.kill();
    if (ok) server?.cleanup();
  });

  it('the host creates a stage and a guest joins; they see each other', async () => {
    // Through the sample app on our server, so the host has a channel to go live to.
    await red.page.goto(`${server.base}/`);
    // A small stream keeps encoding cheap on a shared machine (read when Go live is pressed).
    await red.page.evaluate(() => localStorage.setItem('stagecast.streamSize', 'small'));
    await setProfile(red.page, red.name, 0);
    await red.page.getByTestId('create-stage').click();
    const invite = red.page.getByTestId('invite-link');
    await invite.waitFor({ timeout: 15000 });
    await joinViaInvite(green, await invite.inputValue(), 1);
    await Promise.all([waitJoined(red.page), waitJoined(green.page)]);
    red.id = await localParticipantId(red.page);
    green.id = await localParticipantId(green.page);
    await waitForRemoteTiles(red.page, [green.id]);
    await waitForRemoteTiles(green.page, [red.id]);
    await expectLiveVideo(red.page, green.id, green.color);
    await expectLiveVideo(green.page, red.id, red.color);
  });

  it('a publish connection that dies is made again', async () => {
    const from = await mark(red.page);
    await killPeerConnection(red.page, 'sendonly');
    await eventAfter(red.page, from, { type: 'stageParticipantPublishStateChanged', isLocal: true, state: 'attempting_publish' });
    await eventAfter(red.page, from, { type: 'stageParticipantPublishStateChanged', isLocal: true, state: 'published' });
    await expectLiveVideo(green.page, red.id, red.color, 30000);
    await expectLiveVideo(red.page, green.id, green.color);
  });

  it('a subscription that dies is made again, with new tracks', async () => {
    const from = await mark(red.page);
    await killPeerConnection(red.page, 'recvonly');
    await eventAfter(red.page, from, { type: 'stageParticipantSubscribeStateChanged', participantId: green.id, state: 'attempting_subscribe' });
    await eventAfter(red.page, from, { type: 'stageParticipantSubscribeStateChanged', participantId: green.id, state: 'subscribed' });
    await eventAfter(red.page, from, { type: 'stageParticipantStreamsAdded', participantId: green.id });
    await expectLiveVideo(red.page, green.id, green.color);
  });

  it('a dropped event socket reconnects and the video keeps coming', async () => {
    const from = await mark(red.page);
    const closed = await red.page.evaluate(() => {
      const ws = window.__sockets.find((s) => s.url.includes('/stage/events') && s.readyState === WebSocket.OPEN);
      if (!ws) return false;
      ws.close();
      return true;
    });
    assert.ok(closed, 'an open event socket to drop');
    await eventAfter(red.page, from, { type: 'stageConnectionStateChanged', state: 'connecting' });
    await eventAfter(red.page, from, { type: 'stageConnectionStateChanged', state: 'connected' });
    const left = await red.page.evaluate((from) => window.__stagecast.events.slice(from).filter((e) => e.type === 'stageLeft'), from);
    assert.deepEqual(left, [], 'the session did not end');
    await expectLiveVideo(red.page, green.id, green.color, 30000);
    await expectLiveVideo(green.page, red.id, red.color, 30000);
  });

  it('the host goes live', async () => {
    await red.page.getByTestId('go-live').click();
    await red.page.waitForFunction(() => document.querySelector('[data-testid="live-state"]')?.dataset.state === 'live', null, {
      timeout: 30000,
    });
    await red.page.evaluate(() => {
      window.__broadcastStates = [];
      window.__stagecast.broadcast.on('connectionStateChange', (s) => window.__broadcastStates.push(s));
    });
  });

  it('after the server is killed and restarted, media and the broadcast come back by themselves', async () => {
    const from = await Promise.all([red, green].map((p) => mark(p.page)));
    await server.kill();
    // Both apps say they are reconnecting while the server is gone.
    for (const p of [red, green]) {
      await p.page.waitForFunction(
        () => {
          const el = document.querySelector('[data-testid="connection-state"]');
          return el && el.dataset.reconnecting === 'true' && /Reconnecting/.test(el.textContent);
        },
        null,
        { timeout: 30000 },
      );
    }
    await sleep(2000);
    await server.start();
    for (const [i, p] of [red, green].entries()) {
      await eventAfter(p.page, from[i], { type: 'stageConnectionStateChanged', state: 'connected' }, 30000);
      await p.page.waitForFunction(
        () => document.querySelector('[data-testid="publish-state"]')?.dataset.state === 'published',
        null,
        { timeout: 30000 },
      );
    }
    await expectLiveVideo(red.page, green.id, green.color, 30000);
    await expectLiveVideo(green.page, red.id, red.color, 30000);
    // The broadcast noticed, said so, and is back on the same channel.
    await red.page.waitForFunction(
      () => window.__broadcastStates.includes('disconnected') && window.__stagecast.broadcast.getConnectionState() === 'connected',
      null,
      { timeout: 45000 },
    );
    assert.equal(await red.page.getByTestId('live-state').getAttribute('data-state'), 'live');
    for (const [i, p] of [red, green].entries()) {
      const ended = await p.page.evaluate(
        (from) => window.__stagecast.events.slice(from).filter((e) => e.type === 'stageLeft' || e.type === 'joinFailed'),
        from[i],
      );
      assert.deepEqual(ended, [], `${p.name}'s session went on`);
    }
  });

  it('every "published" and "subscribed" had a connected peer connection behind it', async () => {
    for (const p of [red, green]) assert.ok((await assertStatesTruthful(p)) >= 4, `${p.name}: claims checked`);
  });

  it('no page threw an uncaught error', () => {
    assertNoPageErrors([red, green]);
    ok = true;
  });
});
