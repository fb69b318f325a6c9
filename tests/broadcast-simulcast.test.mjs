// Journey: a broadcast with `streamConfig: {...BASIC_LANDSCAPE, simulcast:
// {enabled: true}}` sends its video as simulcast. The broadcaster's page
// (the SDK's broadcast client over a canvas of changing colour and noise,
// WHIP with a /v1 channel's stream key) offers H.264 with the rids `low` and
// `high`, lowest first (852×480 is too small for a third layer of at least
// 160 px), and its peer connection's outbound-rtp stats show two video
// streams, 852 and 426 px wide, each sending frames. The channel packages
// each layer as a rendition (852×480 first, then 426×240 under low/), goes
// live and plays the top rendition on its watch page (hls.js). Layers
// outside the stream config are refused at create() with a
// StreamConfigurationError. No page error. (Switching down on a slow link:
// tests/net/abr.test.mjs.)

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { BASE, launch, newViewer, assertNoPageErrors, dumpLogs, controlPlane, sleep, waitPlayerState, expectPlaying } from './lib.mjs';

const PUBLISHER = `${BASE}/__broadcast-simulcast-publisher.html`;
const PUBLISHER_HTML = `<!doctype html>
<html><head><meta charset="utf-8"><title>simulcast publisher</title></head>
<body>
<script>
// Every peer connection the page makes, for its stats (a subclass, so the
// SDK's instanceof checks hold).
window.__pcs = [];
const Native = window.RTCPeerConnection;
window.RTCPeerConnection = class extends Native {
  constructor(...args) {
    super(...args);
    window.__pcs.push(this);
  }
};
</script>
<script type="module">
import IVSBroadcastClient from '/sdk/index.js';
const W = 852;
const H = 480;
const canvas = document.createElement('canvas');
canvas.width = W;
canvas.height = H;
const ctx = canvas.getContext('2d');
// Noise, drawn small and scaled up: every frame differs all over, so each
// layer has real pictures to encode.
const noise = new ImageData(W / 12, H / 12);
let n = 0;
setInterval(() => {
  ctx.fillStyle = 'hsl(' + ((n * 7) % 360) + ', 80%, 50%)';
  ctx.fillRect(0, 0, W, H);
  const d = noise.data;
  for (let i = 0; i < d.length; i += 4) {
    const v = (Math.random() * 255) | 0;
    d[i] = v;
    d[i + 1] = 255 - v;
    d[i + 2] = (v * 7) & 255;
    d[i + 3] = 255;
  }
  createImageBitmap(noise).then((b) => {
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(b, W / 4, H / 4, W / 2, H / 2);
    b.close();
  });
  n += 1;
}, 33);
window.goLive = async (streamKey, ingestEndpoint) => {
  const client = IVSBroadcastClient.create({
    streamConfig: { ...IVSBroadcastClient.BASIC_LANDSCAPE, simulcast: { enabled: true } },
    ingestEndpoint,
  });
  window.__client = client;
  await client.addImageSource(canvas, 'noise', { index: 0 });
  await client.startBroadcast(streamKey);
};
// What create() throws for these layers (or null).
window.createError = (layers) => {
  try {
    IVSBroadcastClient.create({ streamConfig: { ...IVSBroadcastClient.BASIC_LANDSCAPE, simulcast: { enabled: true, layers } } }).delete();
    return null;
  } catch (e) {
    return { name: e.name, code: e.code, message: e.message };
  }
};
// The sending peer connection: its offer's rids, its encodings, and its
// outbound video streams.
window.videoSent = async () => {
  const pc = window.__pcs.find((p) => p.connectionState === 'connected');
  if (!pc) return null;
  const sender = pc.getSenders().find((s) => s.track && s.track.kind === 'video');
  const stats = await pc.getStats();
  const streams = [];
  stats.forEach((s) => {
    if (s.type !== 'outbound-rtp' || s.kind !== 'video') return;
    const codec = stats.get(s.codecId);
    streams.push({
      rid: s.rid,
      frameWidth: s.frameWidth,
      frameHeight: s.frameHeight,
      framesSent: s.framesSent || 0,
      mimeType: codec && codec.mimeType,
      limitation: s.qualityLimitationReason,
    });
  });
  const sdp = pc.localDescription ? pc.localDescription.sdp : '';
  return {
    simulcastLine: (sdp.match(/^a=simulcast:.*$/m) || [null])[0],
    rids: sender.getParameters().encodings.map((e) => e.rid),
    streams,
  };
};
window.publisherReady = true;
</script>
</body></html>`;

describe('a simulcast broadcast', { timeout: 180_000 }, () => {
  let browser;
  let viewer;
  let publisher;
  let channel;
  let streamKey;
  const pubErrors = [];
  const pubLogs = [];
  let ok = false;

  before(async () => {
    browser = await launch();
    viewer = await newViewer(browser, 'hls.js viewer');
    const created = await controlPlane('POST', '/v1/channels', { name: 'Simulcast show' });
    assert.equal(created.status, 200, created.text);
    channel = created.body.channel;
    streamKey = created.body.streamKey;
    const context = await browser.newContext();
    await context.route(PUBLISHER, (r) => r.fulfill({ status: 200, contentType: 'text/html', body: PUBLISHER_HTML }));
    publisher = await context.newPage();
    publisher.on('pageerror', (err) => pubErrors.push(String(err)));
    publisher.on('console', (msg) => {
      if (msg.type() === 'error' || msg.type() === 'warning') pubLogs.push(`[publisher] ${msg.type()}: ${msg.text()}`);
    });
    await publisher.goto(PUBLISHER);
    await publisher.waitForFunction(() => window.publisherReady === true, null, { timeout: 30000 });
  });

  after(async () => {
    if (!ok) {
      dumpLogs([viewer]);
      for (const line of pubLogs) console.log(line);
    }
    await browser?.close();
    if (channel) await controlPlane('DELETE', `/v1/channels/${channel.id}`).catch(() => {});
  });

  it('refuses layers outside the stream config', async () => {
    const tooBig = await publisher.evaluate(() => window.createError([{ width: 1280, height: 720, maxBitrate: 1000, maxFramerate: 30 }]));
    assert.equal(tooBig?.name, 'StreamConfigurationError', JSON.stringify(tooBig));
    assert.equal(tooBig.code, 12000);
    assert.match(tooBig.message, /width must be a whole number from 160 to 852/);
    const fast = await publisher.evaluate(() => window.createError([{ width: 426, height: 240, maxBitrate: 1600, maxFramerate: 30 }]));
    assert.match(fast?.message || '', /maxBitrate must be a whole number from 100 to 1500/);
    const fine = await publisher.evaluate(() => window.createError([{ width: 426, height: 240, maxBitrate: 400, maxFramerate: 30 }]));
    assert.equal(fine, null);
  });

  it('sends two H.264 layers, lowest first, and the channel plays', async () => {
    await viewer.page.goto(`${BASE}/watch/channel/${channel.id}?player=hls`);
    await waitPlayerState(viewer, 'Offline', 10000);
    await publisher.evaluate(([k, e]) => window.goLive(k, e), [streamKey, channel.ingestEndpoint]);

    // Both layers, at their own sizes, with frames still going out.
    const sending = (sent) => {
      const going = (sent?.streams || []).filter((s) => s.framesSent > 0 && s.frameWidth);
      return new Set(going.map((s) => s.rid)).size >= 2 && new Set(going.map((s) => s.frameWidth)).size >= 2;
    };
    let first = null;
    const deadline = Date.now() + 30000;
    while (Date.now() < deadline) {
      first = await publisher.evaluate(() => window.videoSent());
      if (sending(first)) break;
      await sleep(500);
    }
    assert.ok(sending(first), `two video layers are sent: ${JSON.stringify(first)}`);
    assert.deepEqual(first.rids, ['low', 'high'], 'the encodings, lowest first');
    assert.match(first.simulcastLine || '', /^a=simulcast:send low;high/, 'the offer announces both rids, lowest first');
    const byRid = Object.fromEntries(first.streams.map((s) => [s.rid, s]));
    assert.deepEqual([byRid.low.frameWidth, byRid.low.frameHeight], [426, 240], JSON.stringify(first.streams));
    assert.deepEqual([byRid.high.frameWidth, byRid.high.frameHeight], [852, 480], JSON.stringify(first.streams));
    for (const s of first.streams) assert.equal(s.mimeType, 'video/H264', `${s.rid} is H.264`);
    await sleep(3000);
    const later = await publisher.evaluate(() => window.videoSent());
    console.log(`sent: ${JSON.stringify(first.streams)} then ${JSON.stringify(later.streams)}`);
    for (const rid of ['low', 'high']) {
      const [a, b] = [first, later].map((x) => x.streams.find((s) => s.rid === rid)?.framesSent || 0);
      assert.ok(b > a + 10, `${rid} keeps sending frames (${a} → ${b} in 3 s)`);
    }

    // The channel packages each layer as a rendition of one ladder, the top first.
    const index = await (await fetch(`${BASE}/hls/${channel.id}/index.m3u8`)).text();
    const sizes = [...index.matchAll(/RESOLUTION=(\d+x\d+)[^\n]*\n(\S+)/g)].map((m) => `${m[1]} ${m[2]}`);
    assert.deepEqual(sizes, ['852x480 media.m3u8', '426x240 low/media.m3u8'], index);

    await waitPlayerState(viewer, 'Live', 40000);
    await expectPlaying(viewer);
    // Nothing limits this viewer: it plays the top rendition.
    await viewer.page
      .waitForFunction(() => document.querySelector('[data-testid="player-video"]')?.videoHeight === 480, null, { timeout: 15000 })
      .catch(async () => {
        const size = await viewer.page.evaluate(() => {
          const v = document.querySelector('[data-testid="player-video"]');
          return `${v.videoWidth}x${v.videoHeight}`;
        });
        throw new Error(`the watch page plays ${size}, not the top rendition`);
      });

    const stopped = await controlPlane('POST', `/v1/channels/${channel.id}/stop`);
    assert.equal(stopped.status, 204, stopped.text);
    await waitPlayerState(viewer, 'Ended', 20000);
    assert.deepEqual(pubErrors, [], 'publisher page errors');
    assertNoPageErrors([viewer]);
    ok = true;
  });
});
