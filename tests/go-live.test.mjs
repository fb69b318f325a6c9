// Journey: the host goes live. A host and two guests are on a stage (distinct
// colours); the host presses "Go live" and the stage is composited (auto
// layout, grid, name labels) and broadcast to the group's channel. Two
// viewers play it on the watch page, one with hls.js and one with the IVS
// Player, and each finds every participant's colour in its own tile of the
// played video, with a name label on each tile. The IVS viewer opens the
// page while the stream is live and is never told Offline on the way to it
// (Connecting until the first answer). A third guest joins and the viewers
// see a fourth tile with the new colour; the host ends the stream and both
// viewers see it end.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  BASE,
  PEOPLE,
  launch,
  newParticipant,
  newViewer,
  assertNoPageErrors,
  dumpLogs,
  createStageViaUi,
  joinViaInvite,
  waitJoined,
  localParticipantId,
  waitForRemoteTiles,
  expectLiveVideo,
  expectCompositeGrid,
  expectNameLabels,
  recordWatchStates,
  watchSeen,
  clickAndConfirm,
  screens,
  waitWatchState,
} from './lib.mjs';

const YELLOW = { name: 'Yellow', color: [230, 210, 40], freq: 660 };
const VIDEO = '[data-testid="player-video"]';
// Four publishers, each decoding the other three, a compositing host and two
// HLS players share one browser on 2 cores: cameras at 15 fps halve the
// encode/decode work so the host's page keeps up (the journey checks tiles
// and colours, not frame rates).
const CAMERA = { fps: 15 };

async function listItem(groupId) {
  const res = await fetch(`${BASE}/api/list`, { method: 'POST' });
  assert.equal(res.status, 200);
  const items = await res.json();
  return items.find((i) => i.groupId === groupId);
}

describe('the host goes live and viewers watch the composite', { timeout: 240_000 }, () => {
  let browser;
  let red;
  let green;
  let blue;
  let yellow;
  let hlsViewer;
  let ivsViewer;
  let everyone = [];
  let invite;
  let groupId;
  let ok = false;

  before(async () => {
    browser = await launch();
    red = await newParticipant(browser, PEOPLE.red, CAMERA);
    green = await newParticipant(browser, PEOPLE.green, CAMERA);
    blue = await newParticipant(browser, PEOPLE.blue, CAMERA);
    yellow = await newParticipant(browser, YELLOW, CAMERA);
    hlsViewer = await newViewer(browser, 'hls.js viewer');
    ivsViewer = await newViewer(browser, 'IVS Player viewer');
    everyone = [red, green, blue, yellow, hlsViewer, ivsViewer];
    await recordWatchStates(ivsViewer);
    // A small stream keeps encoding and decoding cheap on a shared machine.
    await red.context.addInitScript(() => localStorage.setItem('stagecast.streamSize', 'small'));
  });

  after(async () => {
    if (!ok) dumpLogs(everyone);
    await browser?.close();
  });

  it('a host and two guests are on a stage; the channel is offline', async () => {
    invite = await createStageViaUi(red, 0);
    groupId = new URL(invite).searchParams.get('join');
    await waitJoined(red.page);
    await joinViaInvite(green, invite, 1);
    await joinViaInvite(blue, invite, 2);
    await Promise.all([waitJoined(green.page), waitJoined(blue.page)]);
    for (const p of [red, green, blue]) p.id = await localParticipantId(p.page);
    await waitForRemoteTiles(red.page, [green.id, blue.id]);
    await expectLiveVideo(red.page, green.id, green.color);
    await expectLiveVideo(red.page, blue.id, blue.color);

    const item = await listItem(groupId);
    assert.ok(item, 'the group is listed');
    assert.equal(item.live, false);
    assert.ok(item.channelId, 'the group has a channel');
    assert.ok(item.roomId, 'the group has a chat room');
    // Guests never see the stream key; only the host's panel exists.
    assert.equal(await green.page.getByTestId('go-live').count(), 0, 'guests have no Go live button');
    assert.ok(await green.page.getByTestId('stage-live').isHidden(), 'not live yet: no LIVE indicator on stage');
    assert.equal(await red.page.getByTestId('live-state').getAttribute('data-state'), 'offline');

    // Before going live the watch page says Offline.
    await hlsViewer.page.goto(`${BASE}/watch/${groupId}?player=hls`);
    await waitWatchState(hlsViewer, ['offline'], 10000);
  });

  it('the host goes live; the list and everyone on the stage show it live', async () => {
    await red.page.getByTestId('go-live').click();
    await red.page.waitForFunction(
      () => document.querySelector('[data-testid="live-state"]')?.dataset.state === 'live',
      null,
      { timeout: 20000 },
    );
    await red.page.getByTestId('end-stream').waitFor({ timeout: 5000 });
    const deadline = Date.now() + 10000;
    let item = await listItem(groupId);
    while (!item.live && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 300));
      item = await listItem(groupId);
    }
    assert.equal(item.live, true, '/api/list says live');
    assert.match(item.playbackUrl, /\/hls\/.+\/index\.m3u8$/);
    // The home page shows a LIVE badge on the stage.
    await green.context.newPage().then(async (home) => {
      await home.goto(`${BASE}/`);
      await home.locator(`[data-testid="stage-item"][data-group-id="${groupId}"] [data-testid="live-badge"]`).waitFor({ timeout: 10000 });
      // One watch page: the list and the host's panel both lead to the Leptos page.
      const watch = home.locator(`[data-testid="stage-item"][data-group-id="${groupId}"] [data-testid="stage-watch"]`);
      assert.equal(await watch.getAttribute('href'), `/watch/${groupId}`);
      assert.equal(await red.page.getByTestId('watch-link').getAttribute('href'), `/watch/${groupId}`);
      await home.close();
    });
    // Guests are told their camera is now seen by an audience.
    for (const p of [red, green, blue]) {
      await p.page.getByTestId('stage-live').waitFor({ timeout: 10000 });
      assert.match(await p.page.getByTestId('stage-live-note').textContent(), /viewers .* see and hear/i);
    }
  });

  it('viewers with hls.js and with the IVS Player see each participant in its tile', async () => {
    // The hls.js viewer was waiting on the Offline page: it starts by itself.
    await ivsViewer.page.goto(`${BASE}/watch/${groupId}`);
    await Promise.all([waitWatchState(hlsViewer, ['live'], 40000), waitWatchState(ivsViewer, ['live'], 40000)]);
    const three = [red, green, blue];
    const [a, b] = await Promise.all([
      expectCompositeGrid(hlsViewer.page, VIDEO, three, 40000),
      expectCompositeGrid(ivsViewer.page, VIDEO, three, 40000),
    ]);
    console.log(`hls.js tiles: ${a.owners.join(', ')} (${a.w}x${a.h}); IVS Player tiles: ${b.owners.join(', ')}`);
    assert.equal(a.w, 640);
    assert.equal(a.h, 360);
    // Viewers can tell who is who: every tile carries its participant's name.
    const [la, lb] = await Promise.all([expectNameLabels(hlsViewer.page, VIDEO, three), expectNameLabels(ivsViewer.page, VIDEO, three)]);
    console.log(`name labels (dark share in the label corner / above it): hls.js ${JSON.stringify(la)}; IVS Player ${JSON.stringify(lb)}`);
    // Opened while live, the IVS viewer's page went Connecting → Live and never claimed Offline.
    const seen = await watchSeen(ivsViewer);
    const badges = seen.map((s) => s.badge).filter(Boolean);
    assert.equal(badges[0], 'Connecting', JSON.stringify(seen));
    assert.ok(badges.includes('Live'), JSON.stringify(seen));
    assert.ok(!seen.some((s) => s.badge === 'Offline' || /not live/.test(s.message || '')), `never Offline: ${JSON.stringify(seen)}`);
    assert.ok(!seen.some((s) => s.unmute && s.badge !== 'Live'), `the unmute pill only over live video: ${JSON.stringify(seen)}`);
    await screens(red.page, 'stage-host-live');
    // Live, the host's page is tall: Mute and Leave stay on screen at 1280×800.
    await red.page.setViewportSize({ width: 1280, height: 800 });
    await red.page.waitForTimeout(300);
    for (const id of ['toggle-mic', 'leave-button']) {
      const seen = await red.page.evaluate((id) => {
        const r = document.querySelector(`[data-testid="${id}"]`).getBoundingClientRect();
        return { top: r.top, bottom: r.bottom, inner: innerHeight };
      }, id);
      assert.ok(seen.top >= 0 && seen.bottom <= seen.inner, `${id} on screen at 1280×800: ${JSON.stringify(seen)}`);
    }
    await red.page.setViewportSize({ width: 1100, height: 820 });
    await screens(green.page, 'stage-guest-live');
    await screens(hlsViewer.page, 'watch-hls');
    await screens(ivsViewer.page, 'watch-ivs');
  });

  it('a third guest joins and the viewers see four tiles', async () => {
    // Before joining, the invite says the stage is live to an audience.
    await yellow.page.goto(invite);
    await yellow.page.getByTestId('invite-live').waitFor({ timeout: 10000 });
    assert.match(await yellow.page.getByTestId('invite-live').textContent(), /live to an audience/i);
    await joinViaInvite(yellow, invite, 3);
    await waitJoined(yellow.page);
    // The host composites what it receives: it must see the new guest first
    // (on this machine that alone takes 10–20 s while the host encodes).
    yellow.id = await localParticipantId(yellow.page);
    await expectLiveVideo(red.page, yellow.id, yellow.color, 40000);
    const four = [red, green, blue, yellow];
    await Promise.all([
      expectCompositeGrid(hlsViewer.page, VIDEO, four, 45000),
      expectCompositeGrid(ivsViewer.page, VIDEO, four, 45000),
    ]);
    await expectNameLabels(hlsViewer.page, VIDEO, four);
    await hlsViewer.page.screenshot({ path: '/tmp/go-live-viewer-four.png' });
  });

  it('the host ends the stream and both viewers see it end', async () => {
    await red.page.getByTestId('end-stream').click();
    await red.page.waitForFunction(
      () => document.querySelector('[data-testid="live-state"]')?.dataset.state === 'offline',
      null,
      { timeout: 5000 },
    );
    await Promise.all([
      waitWatchState(hlsViewer, ['ended', 'offline'], 12000),
      waitWatchState(ivsViewer, ['ended', 'offline'], 12000),
    ]);
    await hlsViewer.page.screenshot({ path: '/tmp/go-live-viewer-ended.png' });
    const item = await listItem(groupId);
    assert.equal(item.live, false, '/api/list says not live');
    await green.page.getByTestId('stage-live').waitFor({ state: 'hidden', timeout: 10000 });
  });

  it('the host can go live again and the waiting viewer picks it up', async () => {
    await red.page.getByTestId('go-live').click();
    await red.page.waitForFunction(
      () => document.querySelector('[data-testid="live-state"]')?.dataset.state === 'live',
      null,
      { timeout: 20000 },
    );
    await waitWatchState(hlsViewer, ['live'], 40000);
    await expectCompositeGrid(hlsViewer.page, VIDEO, [red, green, blue, yellow], 40000);
    // A reload or closed tab would end the broadcast: the browser asks first
    // (dismissed here: the host stays live).
    const asked = red.page.waitForEvent('dialog', { timeout: 5000 });
    await red.page.close({ runBeforeUnload: true });
    const unload = await asked;
    assert.equal(unload.type(), 'beforeunload');
    await unload.dismiss();
    assert.equal(await red.page.getByTestId('live-state').getAttribute('data-state'), 'live', 'still live after cancelling');
    // Leaving the stage ends the broadcast too, after a confirmation.
    assert.match(await clickAndConfirm(red.page, red.page.getByTestId('leave-button')), /ends the broadcast/i);
    await waitWatchState(hlsViewer, ['ended', 'offline'], 15000);
    // The guests are told the host left.
    await green.page.waitForFunction(() => document.querySelector('[data-testid="banner"]')?.dataset.reason === 'host-left', null, { timeout: 10000 });
    assert.match(await green.page.getByTestId('banner-text').textContent(), /host\) left the stage/);
    assertNoPageErrors(everyone);
    ok = true;
  });
});
