// Journey: Firefox. A Firefox guest joins a stage with a Chromium host and a
// Chromium guest; everyone sees the others' colours and hears their tones
// (stages are VP8, which both browsers encode and decode — this offline
// Firefox has no H.264 for WebRTC). The Chromium host goes live and a
// Firefox viewer plays the composite on the watch page, with the default
// IVS Player and with hls.js. A Firefox host is told why it cannot go live.
// The journey runs its own server with the media port on this machine's
// network address: Firefox does not use loopback candidates.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  PEOPLE,
  ownServer,
  launch,
  newParticipant,
  assertNoPageErrors,
  dumpLogs,
  createStageViaUi,
  joinViaInvite,
  waitJoined,
  localParticipantId,
  expectLiveVideo,
  sampleTile,
  expectTone,
  expectCompositeGrid,
} from './lib.mjs';
import {
  launchFirefox,
  newFirefoxParticipant,
  newFirefoxViewer,
  joinViaInviteFirefox,
  waitJoinedFirefox,
  localIdFirefox,
  waitFor,
  clickTestId,
  machineAddress,
  createStageViaUiFirefox,
} from './firefox.mjs';

const VIDEO = '[data-testid="player-video"]';
// Two browsers, three publishers and two HLS players share 2 cores.
const CAMERA = { fps: 15 };

async function waitWatchState(viewer, states, timeout) {
  await waitFor(
    viewer.page,
    (states) => states.includes(document.querySelector('[data-testid="player-state"]')?.dataset.state),
    states,
    timeout,
  );
}

describe('a Firefox guest on a Chromium stage, and a Firefox viewer', { timeout: 240_000 }, () => {
  let chromium;
  let firefox;
  let red;
  let green;
  let blue;
  let viewer;
  let everyone = [];
  let groupId;
  let server;
  let ok = false;

  before(async () => {
    server = await ownServer({ mediaIp: machineAddress() });
    chromium = await launch();
    firefox = await launchFirefox();
    red = await newParticipant(chromium, PEOPLE.red, CAMERA);
    blue = await newParticipant(chromium, PEOPLE.blue, CAMERA);
    green = await newFirefoxParticipant(firefox, PEOPLE.green, CAMERA);
    viewer = await newFirefoxViewer(firefox, 'Firefox viewer');
    everyone = [red, green, blue, viewer];
    await red.context.addInitScript(() => localStorage.setItem('stagecast.streamSize', 'small'));
  });

  after(async () => {
    if (!ok) dumpLogs(everyone);
    await firefox?.close().catch(() => {});
    await chromium?.close();
    await server?.kill();
    if (ok) server?.cleanup();
  });

  it('the Firefox guest joins and everyone sees and hears everyone', async () => {
    const invite = await createStageViaUi(red, 0, server.base);
    groupId = new URL(invite).searchParams.get('join');
    await waitJoined(red.page);
    await joinViaInviteFirefox(green, invite, 1);
    await waitJoinedFirefox(green.page);
    await joinViaInvite(blue, invite, 2);
    await waitJoined(blue.page);
    red.id = await localParticipantId(red.page);
    blue.id = await localParticipantId(blue.page);
    green.id = await localIdFirefox(green.page);
    // Firefox paints (and counts frames) only in the tab in front.
    await green.page.bringToFront();

    // Firefox's camera reaches both Chromium pages, and theirs reach Firefox.
    await Promise.all([
      expectLiveVideo(red.page, green.id, green.color, 30000),
      expectLiveVideo(blue.page, green.id, green.color, 30000),
      expectLiveVideo(green.page, red.id, red.color, 30000),
      expectLiveVideo(green.page, blue.id, blue.color, 30000),
    ]);
    await expectTone(red.page, green.id, green.freq);
    await expectTone(green.page, red.id, red.freq);
    await expectTone(green.page, blue.id, blue.freq);
    // What Firefox receives is VP8, decoded at a useful rate.
    const seen = await sampleTile(green.page, red.id);
    await new Promise((r) => setTimeout(r, 2000));
    const later = await sampleTile(green.page, red.id);
    const fps = (later.frames - seen.frames) / 2;
    console.log(`Firefox decodes Red at ${fps} fps (${seen.w}x${seen.h})`);
    assert.ok(fps >= 5, `Firefox decodes the Chromium host's video (${fps} fps)`);
  });

  it('the Chromium host goes live and the watch page plays in Firefox', async () => {
    await red.page.getByTestId('go-live').click();
    await red.page.waitForFunction(
      () => document.querySelector('[data-testid="live-state"]')?.dataset.state === 'live',
      null,
      { timeout: 20000 },
    );
    const three = [red, green, blue];
    // The default player (IVS Player) …
    await viewer.page.bringToFront();
    await viewer.page.goto(`${server.base}/watch/${groupId}`);
    await waitWatchState(viewer, ['live'], 40000);
    const ivs = await expectCompositeGrid(viewer.page, VIDEO, three, 40000);
    console.log(`Firefox, IVS Player: ${ivs.owners.join(', ')} (${ivs.w}x${ivs.h})`);
    // … and hls.js: frames keep coming.
    await viewer.page.goto(`${server.base}/watch/${groupId}?player=hls`);
    await waitWatchState(viewer, ['live'], 40000);
    const hls = await expectCompositeGrid(viewer.page, VIDEO, three, 40000);
    const t0 = hls.currentTime;
    await new Promise((r) => setTimeout(r, 3000));
    const t1 = await viewer.page.evaluate((sel) => document.querySelector(sel).currentTime, VIDEO);
    assert.ok(t1 > t0 + 1, `hls.js in Firefox plays on (currentTime ${t0} → ${t1})`);
    await viewer.page.screenshot({ path: '/tmp/firefox-watch.png' });
  });

  it('a Firefox host without H.264 is told why it cannot go live', async () => {
    // Leave the first stage so its encoders stop competing for the CPU.
    await Promise.all([red, blue].map((p) => p.context.close()));
    await green.context.close();
    const host = await newFirefoxParticipant(firefox, { ...PEOPLE.green, name: 'Fox' }, CAMERA);
    everyone.push(host);
    await createStageViaUiFirefox(host, 0, server.base);
    await waitJoinedFirefox(host.page);
    await clickTestId(host.page, 'go-live');
    const state = await waitFor(
      host.page,
      () => {
        const s = document.querySelector('[data-testid="live-state"]')?.dataset.state;
        return s === 'error' || s === 'live' ? s : false;
      },
      null,
      30000,
    );
    assert.equal(state, 'error', 'the broadcast cannot start without H.264');
    const banner = await host.page.evaluate(() => document.querySelector('[data-testid="banner-text"]')?.textContent || '');
    console.log(`Firefox host sees: ${banner}`);
    assert.match(banner, /H\.264/, 'the message names the missing codec');
    assertNoPageErrors(everyone);
    ok = true;
  });
});
