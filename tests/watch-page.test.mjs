// Journey: the Leptos watch page (/watch/{groupId}). A stage that does not
// exist shows only that (no state badge, no unmute pill, no chat). Viewers
// open the page before the host goes live (IVS Player by default, hls.js
// with ?player=hls); both say Offline (with nothing to unmute) and start
// playing by themselves when the stream starts, with frames that change,
// the host's colour and the host's name labelled on the composite; the IVS
// Player runs in its low-latency mode (EXT-X-PREFETCH) and hls.js is not
// disturbed by it; both show a latency figure (program date-time against the
// server clock); the unmute pill sits clear of the player's controls and
// works; two viewers chat with each other, and a third reads what they said
// without picking a name (the room's history), also after a reload; when
// the host ends the stream both pages say Ended and the pill is gone. The
// host's long name fits the phone top bar; the page works at phone width.

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
  waitJoined,
  expectCompositeGrid,
  controlPlane,
  sleep,
  waitPlayerState,
  screens,
  recordWatchStates,
  watchSeen,
  expectNameLabels,
  WIDTHS,
} from './lib.mjs';

// The longest name the profile form takes (32), in one unbreakable word and a half.
const HOST = { ...PEOPLE.red, name: 'Rosalind Featherstonehaugh-Smyth' };

const VIDEO = '[data-testid="player-video"]';

/** Average RGB of the centre of the played video (a canvas readback). */
async function videoSample(page) {
  return page.evaluate((sel) => {
    const v = document.querySelector(sel);
    if (!v || !v.videoWidth || v.readyState < 2) return null;
    const c = document.createElement('canvas');
    c.width = 64;
    c.height = 36;
    const g = c.getContext('2d');
    g.drawImage(v, 0, 0, 64, 36);
    const d = g.getImageData(0, 0, 64, 36).data;
    let sum = 0;
    for (let i = 0; i < d.length; i += 4) sum += d[i] + d[i + 1] + d[i + 2];
    return { sum, time: v.currentTime, w: v.videoWidth, h: v.videoHeight };
  }, VIDEO);
}

/** The video has frames and its playback time advances. */
async function expectPlaying(viewer, timeout = 30000) {
  const deadline = Date.now() + timeout;
  let first = null;
  let last = null;
  while (Date.now() < deadline) {
    last = await videoSample(viewer.page);
    if (last && last.sum > 0) {
      if (!first) first = last;
      else if (last.time > first.time + 0.5) return last;
    }
    await sleep(500);
  }
  throw new Error(`${viewer.name}: the video is not playing (${JSON.stringify({ first, last })})`);
}

async function joinChat(viewer, name) {
  await viewer.page.getByTestId('chat-name').fill(name);
  await viewer.page.getByTestId('chat-join').click();
  await viewer.page.waitForFunction(
    () => document.querySelector('[data-testid="chat-state"]')?.dataset.state === 'connected',
    null,
    { timeout: 15000 },
  );
}

async function waitMessage(page, text, timeout = 10000) {
  const handle = await page.waitForFunction(
    (want) => {
      const el = [...document.querySelectorAll('[data-testid="chat-message"]')].find((m) => m.textContent.includes(want));
      return el ? { id: el.dataset.messageId, sender: el.dataset.sender } : false;
    },
    text,
    { timeout },
  );
  return handle.jsonValue();
}

describe('the watch page', { timeout: 240_000 }, () => {
  let browser;
  let host;
  let ivs;
  let hls;
  let everyone = [];
  let groupId;
  let ok = false;

  before(async () => {
    browser = await launch();
    host = await newParticipant(browser, HOST);
    ivs = await newViewer(browser, 'IVS viewer');
    hls = await newViewer(browser, 'hls.js viewer');
    everyone = [host, ivs, hls];
    for (const v of [ivs, hls]) await recordWatchStates(v);
    await host.context.addInitScript(() => localStorage.setItem('stagecast.streamSize', 'small'));
  });

  after(async () => {
    if (!ok) dumpLogs(everyone);
    await browser?.close();
  });

  it('a stage that does not exist shows only that', async () => {
    const stranger = await newViewer(browser, 'stranger');
    everyone.push(stranger);
    await recordWatchStates(stranger);
    await stranger.page.goto(`${BASE}/watch/no-such-group`);
    await stranger.page.waitForFunction(
      () => /does not exist/.test(document.querySelector('[data-testid="watch-message"]')?.textContent || ''),
      null,
      { timeout: 10000 },
    );
    await sleep(2500); // another poll: it stays that way
    const seen = await watchSeen(stranger);
    assert.equal(seen[seen.length - 1].badge, null, `no state badge once answered: ${JSON.stringify(seen)}`);
    for (const s of seen) {
      // Connecting… until the first answer, then no state at all.
      assert.ok(s.badge === null || s.badge === 'Connecting', `no Offline (or other) badge: ${JSON.stringify(seen)}`);
      assert.ok(!s.unmute && !s.chat && !s.latency, `no unmute pill, chat or latency: ${JSON.stringify(seen)}`);
    }
    assert.equal(await stranger.page.getByTestId('chat-join').count(), 0, 'no Join chat');
    assert.equal(await stranger.page.locator('[data-testid="player-video"]').evaluate((v) => v.controls), false, 'no player controls');
    await stranger.context.close();
  });

  it('viewers who open the page before the host goes live see Offline', async () => {
    const invite = await createStageViaUi(host, 0);
    groupId = new URL(invite).searchParams.get('join');
    await waitJoined(host.page);
    await ivs.page.goto(`${BASE}/watch/${groupId}`);
    await hls.page.goto(`${BASE}/watch/${groupId}?player=hls`);
    await Promise.all([waitPlayerState(ivs, 'Offline', 10000), waitPlayerState(hls, 'Offline', 10000)]);
    assert.match(await ivs.page.getByTestId('player-kind').textContent(), /IVS/);
    assert.match(await hls.page.getByTestId('player-kind').textContent(), /hls\.js/);
    for (const v of [ivs, hls]) {
      assert.match(await v.page.getByTestId('watch-message').textContent(), /not live/);
      assert.equal(await v.page.getByTestId('unmute').count(), 0, `${v.name}: nothing to unmute while offline`);
      assert.ok(await v.page.getByTestId('latency').isHidden(), `${v.name}: no latency readout while offline`);
      assert.equal((await v.page.getByTestId('watch-title').textContent()).trim(), `${HOST.name}'s stage`);
    }
    // Before the first answer the page claimed nothing; then Offline.
    const seen = await watchSeen(ivs);
    assert.deepEqual(
      [...new Set(seen.map((s) => s.badge).filter(Boolean))],
      ['Connecting', 'Offline'],
      JSON.stringify(seen),
    );
    // The host's long name stays inside the sample app's top bar on a phone.
    await host.page.setViewportSize(WIDTHS.phone);
    await host.page.waitForTimeout(200);
    const bar = await host.page.evaluate(() => {
      const box = (sel) => document.querySelector(sel).getBoundingClientRect();
      const who = document.querySelector('[data-testid="whoami"] span');
      return {
        inner: innerWidth,
        scroll: document.documentElement.scrollWidth,
        bar: box('.topbar').right,
        who: box('[data-testid="whoami"]').right,
        brand: box('[data-testid="home-link"]'),
        whoLeft: box('[data-testid="whoami"]').left,
        cut: who ? who.scrollWidth > who.clientWidth : false,
      };
    });
    assert.ok(bar.who <= bar.inner && bar.bar <= bar.inner && bar.scroll <= bar.inner, `top bar at 390 px: ${JSON.stringify(bar)}`);
    assert.ok(bar.whoLeft >= bar.brand.right, `the name does not run under the brand: ${JSON.stringify(bar)}`);
    await screens(host.page, 'stage-host-long-name');
    await host.page.setViewportSize({ width: 1100, height: 820 });
  });

  it('two viewers chat with each other', async () => {
    await Promise.all([joinChat(ivs, 'Ivy'), joinChat(hls, 'Hal')]);
    await ivs.page.getByTestId('chat-input').fill('hello from ivy');
    await ivs.page.getByTestId('chat-send').click();
    const a = await waitMessage(hls.page, 'hello from ivy');
    const a2 = await waitMessage(ivs.page, 'hello from ivy');
    assert.equal(a.id, a2.id, 'the same message id on both pages');
    assert.match(a.sender, /^viewer-/);
    await hls.page.getByTestId('chat-input').press('End');
    await hls.page.getByTestId('chat-input').fill('hi ivy, hal here');
    await hls.page.getByTestId('chat-input').press('Enter');
    await waitMessage(ivs.page, 'hi ivy, hal here');
    assert.equal(await ivs.page.getByTestId('chat-input').inputValue(), '', 'the send box is cleared');
    assert.ok(await ivs.page.getByTestId('chat-error').isHidden(), 'no chat error');
  });

  it('a late viewer reads the chat without picking a name, also after a reload', async () => {
    const late = await newViewer(browser, 'late viewer');
    everyone.push(late);
    await late.page.goto(`${BASE}/watch/${groupId}`);
    for (let round = 0; round < 2; round += 1) {
      const first = await waitMessage(late.page, 'hello from ivy');
      await waitMessage(late.page, 'hi ivy, hal here');
      assert.match(first.sender, /^viewer-/);
      await late.page.waitForFunction(
        () => document.querySelector('[data-testid="chat-state"]')?.dataset.state === 'reading',
        null,
        { timeout: 10000 },
      );
      assert.equal(await late.page.getByTestId('chat-input').count(), 0, 'reading needs no name');
      assert.ok(await late.page.getByTestId('chat-name').isVisible(), 'the name form is offered');
      assert.ok(await late.page.getByTestId('chat-empty').isHidden());
      if (round === 0) await late.page.reload();
    }
    // Each message once, in the order it was sent.
    const texts = await late.page.$$eval('[data-testid="chat-message"] .content', (els) => els.map((e) => e.textContent));
    assert.deepEqual(texts, ['hello from ivy', 'hi ivy, hal here']);
    await late.context.close();
  });

  it('both pages start playing by themselves when the host goes live', async () => {
    await host.page.getByTestId('go-live').click();
    await host.page.waitForFunction(
      () => document.querySelector('[data-testid="live-state"]')?.dataset.state === 'live',
      null,
      { timeout: 20000 },
    );
    await Promise.all([waitPlayerState(ivs, 'Live', 45000), waitPlayerState(hls, 'Live', 45000)]);
    const [a, b] = await Promise.all([expectPlaying(ivs), expectPlaying(hls)]);
    console.log(`IVS Player ${a.w}x${a.h}; hls.js ${b.w}x${b.h}`);
    // Muted autoplay; the pill sits clear of the player's controls (along
    // the bottom of the video) and one click unmutes.
    assert.equal(await ivs.page.locator(VIDEO).evaluate((v) => v.muted), true);
    for (const v of [ivs, hls]) {
      const where = await v.page.evaluate(() => {
        const pill = document.querySelector('[data-testid="unmute"]').getBoundingClientRect();
        const video = document.querySelector('[data-testid="player-video"]');
        const r = video.getBoundingClientRect();
        return { pill: { top: pill.top, bottom: pill.bottom, left: pill.left, right: pill.right }, video: { top: r.top, bottom: r.bottom, left: r.left, right: r.right }, controls: video.controls };
      });
      assert.ok(where.controls, `${v.name}: live video has controls`);
      assert.ok(where.pill.top >= where.video.top && where.pill.right <= where.video.right, `${v.name}: the pill is on the video ${JSON.stringify(where)}`);
      assert.ok(where.pill.bottom <= where.video.bottom - 64, `${v.name}: the pill covers the controls strip ${JSON.stringify(where)}`);
    }
    await ivs.page.getByTestId('unmute').click();
    await ivs.page.waitForFunction((sel) => !document.querySelector(sel).muted, VIDEO, { timeout: 5000 });
    assert.equal(await ivs.page.getByTestId('unmute').count(), 0, 'the unmute button is gone');
    // The host's colour fills the picture in both players.
    await Promise.all([expectCompositeGrid(ivs.page, VIDEO, [host], 30000), expectCompositeGrid(hls.page, VIDEO, [host], 30000)]);
    // The host's name is labelled on the composite.
    const labels = await expectNameLabels(hls.page, VIDEO, [host]);
    console.log(`name label (dark share in the label corner / above it): ${JSON.stringify(labels)}`);
    // Low-latency mode in both: the IVS Player on the prefetch tags, hls.js on the parts.
    for (const v of [ivs, hls]) {
      await v.page
        .waitForFunction(() => document.querySelector('[data-testid="latency"]')?.dataset.lowLatency === 'true', null, { timeout: 20000 })
        .catch(() => assert.fail(`${v.name}: the player is not in low-latency mode`));
    }
    // A real latency figure in both: seconds behind the server's clock, from
    // the program date-time of the frame on screen (hls.js knows it; for
    // the IVS Player the page maps the player's position onto the
    // playlist's EXT-X-PROGRAM-DATE-TIME).
    const latencyOf = async (v, timeout = 20000) => {
      const handle = await v.page
        .waitForFunction(
          () => {
            const m = /Latency (\d+(\.\d+)?) s/.exec(document.querySelector('[data-testid="latency"]')?.textContent || '');
            return m ? Number(m[1]) : false;
          },
          null,
          { timeout },
        )
        .catch(async () => assert.fail(`${v.name}: no latency figure ("${await v.page.getByTestId('latency').textContent()}")`));
      return handle.jsonValue();
    };
    const [hlsLatency, ivsLatency] = await Promise.all([latencyOf(hls), latencyOf(ivs)]);
    console.log(`latency: hls.js ${hlsLatency} s; IVS Player ${ivsLatency} s`);
    assert.ok(hlsLatency > 0 && hlsLatency < 5, `hls.js latency ${hlsLatency} s`);
    assert.ok(ivsLatency > 0 && ivsLatency < 5, `IVS Player latency ${ivsLatency} s`);
    // Still advancing after all that.
    await Promise.all([expectPlaying(ivs), expectPlaying(hls)]);
    // Timed metadata (PutMetadata) shows as an overlay on both players.
    const list = await (await fetch(`${BASE}/api/list`, { method: 'POST' })).json();
    const channelId = list.find((i) => i.groupId === groupId)?.channelId;
    assert.ok(channelId, 'the group has a channel');
    const cueDeadline = Date.now() + 30000;
    const seen = new Set();
    while (seen.size < 2 && Date.now() < cueDeadline) {
      const put = await controlPlane('POST', `/v1/channels/${channelId}/metadata`, { metadata: 'quiz: pick A or B' });
      assert.ok(put.status < 300, `PutMetadata: ${put.status} ${put.text}`);
      await sleep(1500);
      for (const v of [ivs, hls]) {
        const text = await v.page.getByTestId('metadata-cue').textContent();
        if (text.includes('quiz: pick A or B')) seen.add(v.name);
      }
    }
    // Each part carries the cue twice, in the emsg schemes hls.js and the IVS
    // Player each read.
    assert.ok(seen.has(hls.name), `metadata cue shown with hls.js (seen on: ${[...seen].join(', ') || 'none'})`);
    assert.ok(seen.has(ivs.name), `metadata cue shown with the IVS Player (seen on: ${[...seen].join(', ') || 'none'})`);
    console.log(`metadata cue seen on: ${[...seen].join(', ')}`);
    await screens(ivs.page, 'watch-page-ivs');
    await screens(hls.page, 'watch-page-hls');
  });

  it('both pages say Ended when the host ends the stream, and the pill is gone', async () => {
    assert.equal(await hls.page.getByTestId('unmute').count(), 1, 'the hls.js viewer never unmuted');
    await host.page.getByTestId('end-stream').click();
    await Promise.all([waitPlayerState(ivs, 'Ended', 20000), waitPlayerState(hls, 'Ended', 20000)]);
    for (const v of [ivs, hls]) {
      assert.equal(await v.page.getByTestId('unmute').count(), 0, `${v.name}: nothing to unmute after the end`);
      assert.ok(await v.page.getByTestId('latency').isHidden(), `${v.name}: no latency readout after the end`);
      assert.match(await v.page.getByTestId('watch-message').textContent(), /ended/);
    }
    await screens(hls.page, 'watch-page-ended');
  });

  it('moderation takes effect live; a view-only viewer cannot send', async () => {
    const list = await (await fetch(`${BASE}/api/list`, { method: 'POST' })).json();
    const roomId = list.find((i) => i.groupId === groupId)?.roomId;
    assert.ok(roomId, 'the group has a room');
    await ivs.page.getByTestId('chat-input').fill('delete me');
    await ivs.page.getByTestId('chat-send').click();
    const doomed = await waitMessage(hls.page, 'delete me');
    const del = await controlPlane('POST', `/v1/rooms/${roomId}/messages/${encodeURIComponent(doomed.id)}/delete`, {});
    assert.ok(del.status < 300, `delete: ${del.status} ${del.text}`);
    for (const v of [ivs, hls]) {
      await v.page.waitForFunction(
        (id) => !document.querySelector(`[data-testid="chat-message"][data-message-id="${CSS.escape(id)}"]`),
        doomed.id,
        { timeout: 10000 },
      );
    }
    const kick = await controlPlane('POST', `/v1/rooms/${roomId}/users/${encodeURIComponent(doomed.sender)}/disconnect`, { reason: 'spam' });
    assert.ok(kick.status < 300, `disconnect: ${kick.status} ${kick.text}`);
    await ivs.page.waitForFunction(
      () => /removed|disconnected/.test(document.querySelector('[data-testid="chat-notice"]')?.textContent || ''),
      null,
      { timeout: 10000 },
    );

    const reader = await newViewer(browser, 'view-only viewer');
    everyone.push(reader);
    await reader.page.goto(`${BASE}/watch/${groupId}?viewOnly=1`);
    await joinChat(reader, 'Reader');
    await reader.page.getByTestId('chat-input').fill('can I talk?');
    await reader.page.getByTestId('chat-send').click();
    await reader.page.waitForFunction(
      () => (document.querySelector('[data-testid="chat-error"]')?.textContent || '').length > 0,
      null,
      { timeout: 10000 },
    );
    console.log(`view-only send: ${await reader.page.getByTestId('chat-error').textContent()}`);
    await sleep(1000);
    assert.equal(await hls.page.locator('[data-testid="chat-message"]', { hasText: 'can I talk?' }).count(), 0);
    assertNoPageErrors(everyone);
    ok = true;
  });
});
