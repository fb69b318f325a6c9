// Journey: a channel that records (`recordingConfiguration` on
// `POST /v1/channels`) is broadcast to by the SDK's broadcast client: red,
// then the broadcast drops (stopBroadcast) and comes back within the
// reconnect window, blue. Once the window has passed, the channel's watch
// page lists one past broadcast with a thumbnail that loads, whose media
// runs on one timeline (no discontinuity at the drop), and plays it to the
// end in hls.js and then in the IVS Player, each showing red and then
// blue without stalling, with no page error.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { BASE, launch, newViewer, assertNoPageErrors, dumpLogs, controlPlane, sleep } from './lib.mjs';

// Issue 11's acceptance: a 60 s broadcast with an 8 s drop in the middle,
// a 30 s reconnect window.
const WINDOW_S = 30;
const HALF_MS = 26_000;
const DROP_MS = 8_000;
/** The longest the picture may stand still (s) while a recording plays. */
const MAX_STALL_S = 1;
const PUBLISHER = `${BASE}/__recordings-publisher.html`;
const PUBLISHER_HTML = `<!doctype html>
<html><head><meta charset="utf-8"><title>recording publisher</title></head>
<body>
<script type="module">
import IVSBroadcastClient from '/sdk/index.js';
const canvas = document.createElement('canvas');
canvas.width = 640;
canvas.height = 360;
const ctx = canvas.getContext('2d');
window.colour = '#ff0000';
let n = 0;
setInterval(() => {
  ctx.fillStyle = window.colour;
  ctx.fillRect(0, 0, 640, 360);
  // A small moving mark keeps the encoder sending frames.
  ctx.fillStyle = '#808080';
  ctx.fillRect((n * 4) % 600, 0, 40, 20);
  n += 1;
}, 33);
let client = null;
window.goLive = async (streamKey, ingestEndpoint) => {
  client = IVSBroadcastClient.create({
    streamConfig: { maxResolution: { width: 640, height: 360 }, maxFramerate: 30, maxBitrate: 1000 },
    ingestEndpoint,
  });
  await client.addImageSource(canvas, 'colour', { index: 0 });
  await client.startBroadcast(streamKey);
};
window.stop = async () => { await client.stopBroadcast(); client.delete && client.delete(); client = null; };
window.publisherReady = true;
</script>
</body></html>`;

/** Which colour the recording video shows at its centre: 'red', 'blue' or null. */
async function recordingColour(viewer) {
  return viewer.page.evaluate(() => {
    const v = document.querySelector('[data-testid="recording-video"]');
    if (!v || !v.videoWidth || v.readyState < 2) return null;
    const c = document.createElement('canvas');
    c.width = 16;
    c.height = 9;
    const g = c.getContext('2d');
    g.drawImage(v, 0, 0, 16, 9);
    const [r, gr, b] = g.getImageData(8, 6, 1, 1).data;
    if (r > 180 && gr < 80 && b < 80) return 'red';
    if (b > 180 && r < 80 && gr < 80) return 'blue';
    return `other ${r},${gr},${b}`;
  });
}

/**
 * Play the listed recording on `viewer`'s page to its end. Returns the
 * colours seen, in order, and the longest stall: how far (s) playback fell
 * behind the wall clock at worst, once it had started, before the end.
 */
async function playToTheEnd(viewer, url, expected) {
  await viewer.page.goto(url);
  const item = viewer.page.getByTestId('recording');
  await item.first().waitFor({ timeout: 30000 });
  assert.equal(await item.count(), 1, `${viewer.name}: one recording for the broadcast and its resumption`);
  const thumb = viewer.page.getByTestId('recording-thumbnail');
  await viewer.page.waitForFunction(
    () => {
      const img = document.querySelector('[data-testid="recording-thumbnail"]');
      return img && img.complete && img.naturalWidth > 0;
    },
    null,
    { timeout: 10000 },
  );
  assert.equal(await thumb.evaluate((img) => img.naturalWidth), 640, `${viewer.name}: the thumbnail is the picture's size`);
  await viewer.page.getByTestId('recording-play').click();
  const seen = [];
  const deadline = Date.now() + 90000;
  let state = null;
  let at = null;
  // Wall clock minus playback position: constant while playing, growing while stalled.
  let leastLag = Infinity;
  let longestStall = 0;
  while (Date.now() < deadline) {
    state = await viewer.page.getByTestId('recording-video').getAttribute('data-playback');
    at = await viewer.page
      .getByTestId('recording-video')
      .evaluate((v) => ({ time: v.currentTime, duration: v.duration, now: performance.now() / 1000 }));
    const colour = await recordingColour(viewer);
    if (colour && seen[seen.length - 1] !== colour) seen.push(colour);
    if (state === 'ended' || state === 'failed') break;
    // hls.js can come to rest a few frames short of firing `ended` (its
    // last buffered range ends just before the duration): the end is reached.
    if (state === 'playing' && Number.isFinite(at.duration) && at.time >= at.duration - 0.5) break;
    if (state === 'playing' && at.time > 0) {
      const lag = at.now - at.time;
      leastLag = Math.min(leastLag, lag);
      longestStall = Math.max(longestStall, lag - leastLag);
    }
    await sleep(250);
  }
  const end = state === 'ended' || (state === 'playing' && at.time >= at.duration - 0.5);
  assert.ok(end, `${viewer.name}: played to the end: ${state} at ${JSON.stringify(at)} (seen ${JSON.stringify(seen)})`);
  assert.ok(Math.abs(at.duration - expected) <= 1, `${viewer.name}: the whole recording (${expected.toFixed(1)} s live): ${JSON.stringify(at)}`);
  console.log(`${viewer.name}: played to ${at.time.toFixed(2)} of ${at.duration.toFixed(2)} s, longest stall ${longestStall.toFixed(2)} s`);
  return { seen, longestStall };
}

describe('recordings on the watch page', { timeout: 420_000 }, () => {
  let browser;
  let hls;
  let ivs;
  let publisher;
  let channel;
  let streamKey;
  const pubErrors = [];
  let ok = false;
  let recorded = 0;

  before(async () => {
    browser = await launch();
    hls = await newViewer(browser, 'hls.js viewer');
    ivs = await newViewer(browser, 'IVS viewer');
    const created = await controlPlane('POST', '/v1/channels', {
      name: 'Recorded show',
      recordingConfiguration: {
        recordingReconnectWindowSeconds: WINDOW_S,
        thumbnailConfiguration: { recordingMode: 'INTERVAL', targetIntervalSeconds: 2 },
      },
    });
    assert.equal(created.status, 200, created.text);
    channel = created.body.channel;
    streamKey = created.body.streamKey;
    const context = await browser.newContext();
    await context.route(PUBLISHER, (r) => r.fulfill({ status: 200, contentType: 'text/html', body: PUBLISHER_HTML }));
    publisher = await context.newPage();
    publisher.on('pageerror', (err) => pubErrors.push(String(err)));
  });

  after(async () => {
    if (!ok) dumpLogs([hls, ivs]);
    await browser?.close();
    if (channel) await controlPlane('DELETE', `/v1/channels/${channel.id}`).catch(() => {});
  });

  it('a broadcast with a drop in the middle is one recording that hls.js plays to the end', async () => {
    await publisher.goto(PUBLISHER);
    await publisher.waitForFunction(() => window.publisherReady === true, null, { timeout: 30000 });
    // Live time as the broadcaster sees it: from each startBroadcast()
    // resolving (connected) to its stop.
    let live = 0;
    const half = async () => {
      await publisher.evaluate(([k, e]) => window.goLive(k, e), [streamKey, channel.ingestEndpoint]);
      const from = Date.now();
      await sleep(HALF_MS);
      await publisher.evaluate(() => window.stop());
      live += (Date.now() - from) / 1000;
    };
    await half();
    // The drop: the broadcast ends, and is back within the window in blue.
    await sleep(DROP_MS);
    await publisher.evaluate(() => { window.colour = '#0000ff'; });
    await half();

    // The window passes: the recording ends.
    let list;
    const deadline = Date.now() + (WINDOW_S + 20) * 1000;
    while (Date.now() < deadline) {
      list = await controlPlane('GET', `/v1/channels/${channel.id}/recordings`);
      if (list.body.recordings.length === 1 && list.body.recordings[0].state === 'ENDED') break;
      await sleep(500);
    }
    const [rec] = list.body.recordings;
    assert.equal(list.body.recordings.length, 1, `one recording: ${list.text}`);
    assert.equal(rec.state, 'ENDED', list.text);
    assert.ok(rec.thumbnails.length >= 20, `thumbnails every 2 s: ${list.text}`);
    console.log(`recording ${rec.durationSeconds} s for ${live.toFixed(1)} s live`);
    assert.ok(Math.abs(rec.durationSeconds - live) <= 1, `duration ${rec.durationSeconds} s within 1 s of ${live.toFixed(1)} s live`);
    const playlist = await (await fetch(rec.playbackUrl)).text();
    assert.match(playlist, /#EXT-X-PLAYLIST-TYPE:VOD/);
    assert.match(playlist, /#EXT-X-ENDLIST/);
    // The resumed broadcast's media continues the recording's timeline, so
    // no discontinuity (a second EXT-X-MAP if the browser's encoder came
    // back with other parameters); the program date-time is given again
    // where the wall clock jumped.
    assert.doesNotMatch(playlist, /#EXT-X-DISCONTINUITY/, playlist);
    assert.ok([1, 2].includes(playlist.match(/#EXT-X-MAP:/g)?.length), playlist);
    assert.equal(playlist.match(/#EXT-X-PROGRAM-DATE-TIME:/g)?.length, 2, playlist);

    const played = await playToTheEnd(hls, `${BASE}/watch/channel/${channel.id}?player=hls`, live);
    assertRedThenBlue('hls.js', played);
    assert.deepEqual(pubErrors, [], 'publisher page errors');
    assertNoPageErrors([hls]);
    recorded = live;
    ok = true;
  });

  it('the IVS Player plays the same recording to the end, red then blue', async () => {
    assert.ok(recorded, 'the first test made the recording');
    ok = false;
    const played = await playToTheEnd(ivs, `${BASE}/watch/channel/${channel.id}`, recorded);
    assertRedThenBlue('IVS Player', played);
    assertNoPageErrors([ivs]);
    ok = true;
  });
});

/** Red, then blue after the drop, and the picture never stood still for long. */
function assertRedThenBlue(name, { seen, longestStall }) {
  const red = seen.indexOf('red');
  const blue = seen.indexOf('blue');
  assert.ok(red >= 0 && blue > red, `${name}: red, then blue after the drop: ${JSON.stringify(seen)}`);
  assert.ok(longestStall <= MAX_STALL_S, `${name}: stalled for ${longestStall.toFixed(2)} s (at most ${MAX_STALL_S} s)`);
}
