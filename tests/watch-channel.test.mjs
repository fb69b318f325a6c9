// Journey: a channel made through the control plane (`POST /v1/channels`),
// not through the sample app, is watched at /watch/channel/{id}. Two viewers
// (the default IVS Player, and hls.js with ?player=hls) open the page before
// the broadcast and read Offline and the channel's name; a broadcaster page
// (the SDK's broadcast client, a canvas whose colour keeps changing, WHIP
// with the stream key) goes live and both pages play it by themselves, with
// frames that move and an unmute pill over live video only; StopStream turns
// both to Ended and takes the pill away. An unknown channel shows only that
// it does not exist: no state badge, no pill, no player controls. No page
// error anywhere.
//
// A private channel (`authorized: true`) plays on its watch page only with a
// playback token on the page's URL (`?token=`, an ES384 JWT signed here with
// a key imported through `POST /v1/playback-keys`), in hls.js and the IVS
// Player; without one both pages say the stream is private, not Offline.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  BASE,
  launch,
  newViewer,
  assertNoPageErrors,
  dumpLogs,
  controlPlane,
  sleep,
  waitPlayerState,
  selfSignedToken,
  recordWatchStates,
  watchSeen,
  expectPlaying,
} from './lib.mjs';
import { generateKeyPairSync } from 'node:crypto';

const PUBLISHER = `${BASE}/__watch-channel-publisher.html`;
const PUBLISHER_HTML = `<!doctype html>
<html><head><meta charset="utf-8"><title>channel publisher</title></head>
<body>
<script type="module">
import IVSBroadcastClient from '/sdk/index.js';
const canvas = document.createElement('canvas');
canvas.width = 640;
canvas.height = 360;
const ctx = canvas.getContext('2d');
let n = 0;
setInterval(() => {
  ctx.fillStyle = 'hsl(' + ((n * 7) % 360) + ', 80%, 50%)';
  ctx.fillRect(0, 0, 640, 360);
  n += 1;
}, 33);
window.goLive = async (streamKey, ingestEndpoint) => {
  const client = IVSBroadcastClient.create({
    streamConfig: { maxResolution: { width: 640, height: 360 }, maxFramerate: 30, maxBitrate: 1000 },
    ingestEndpoint,
  });
  window.__client = client;
  await client.addImageSource(canvas, 'colours', { index: 0 });
  await client.startBroadcast(streamKey);
};
window.publisherReady = true;
</script>
</body></html>`;

describe('the watch page of a /v1 channel', { timeout: 180_000 }, () => {
  let browser;
  let viewer;
  let ivs;
  let publisher;
  let channel;
  let streamKey;
  const pubErrors = [];
  let ok = false;

  before(async () => {
    browser = await launch();
    viewer = await newViewer(browser, 'hls.js viewer');
    ivs = await newViewer(browser, 'IVS viewer');
    await recordWatchStates(viewer);
    const created = await controlPlane('POST', '/v1/channels', { name: 'Night show' });
    assert.equal(created.status, 200, created.text);
    channel = created.body.channel;
    streamKey = created.body.streamKey;
    const context = await browser.newContext();
    await context.route(PUBLISHER, (r) => r.fulfill({ status: 200, contentType: 'text/html', body: PUBLISHER_HTML }));
    publisher = await context.newPage();
    publisher.on('pageerror', (err) => pubErrors.push(String(err)));
  });

  after(async () => {
    if (!ok) dumpLogs([viewer, ivs]);
    await browser?.close();
    if (channel) await controlPlane('DELETE', `/v1/channels/${channel.id}`).catch(() => {});
  });

  it('an unknown channel shows only that it does not exist', async () => {
    await viewer.page.goto(`${BASE}/watch/channel/ch-nope`);
    await viewer.page.waitForFunction(
      () => /does not exist/.test(document.querySelector('[data-testid="watch-message"]')?.textContent || ''),
      null,
      { timeout: 10000 },
    );
    await sleep(2500); // another poll: it stays that way
    const seen = await watchSeen(viewer);
    assert.equal(seen[seen.length - 1].badge, null, `no state badge once answered: ${JSON.stringify(seen)}`);
    assert.ok(seen.length > 0, 'the page was recorded');
    for (const s of seen) {
      // Connecting… until the first answer, then no state at all.
      assert.ok(s.badge === null || s.badge === 'Connecting', `no Offline (or other) badge: ${JSON.stringify(seen)}`);
      assert.ok(!s.unmute && !s.latency, `no unmute pill or latency: ${JSON.stringify(seen)}`);
    }
    assert.equal(await viewer.page.locator('[data-testid="player-video"]').evaluate((v) => v.controls), false, 'no player controls');
  });

  it('before the broadcast the page says Offline under the channel name', async () => {
    await viewer.page.goto(`${BASE}/watch/channel/${channel.id}?player=hls`);
    await ivs.page.goto(`${BASE}/watch/channel/${channel.id}`);
    for (const v of [viewer, ivs]) {
      await waitPlayerState(v, 'Offline', 10000);
      assert.equal((await v.page.getByTestId('watch-title').textContent()).trim(), 'Night show');
      assert.match(await v.page.getByTestId('watch-message').textContent(), /not live/);
      assert.equal(await v.page.getByTestId('unmute').count(), 0, `${v.name}: nothing to unmute while offline`);
    }
    assert.match(await ivs.page.getByTestId('player-kind').textContent(), /IVS/);
    assert.match(await viewer.page.getByTestId('player-kind').textContent(), /hls\.js/);
  });

  it('the broadcast plays by itself, and StopStream ends it', async () => {
    await publisher.goto(PUBLISHER);
    await publisher.waitForFunction(() => window.publisherReady === true, null, { timeout: 30000 });
    await publisher.evaluate(([k, e]) => window.goLive(k, e), [streamKey, channel.ingestEndpoint]);
    for (const v of [viewer, ivs]) {
      await waitPlayerState(v, 'Live', 40000);
      await expectPlaying(v);
      assert.equal(await v.page.getByTestId('watch-message').isHidden(), true, `${v.name}: no message over live video`);
      assert.ok(await v.page.getByTestId('unmute').isVisible(), `${v.name}: muted live video offers the unmute pill`);
    }

    const stopped = await controlPlane('POST', `/v1/channels/${channel.id}/stop`);
    assert.equal(stopped.status, 204, stopped.text);
    for (const v of [viewer, ivs]) {
      await waitPlayerState(v, 'Ended', 20000);
      assert.match(await v.page.getByTestId('watch-message').textContent(), /ended/);
      assert.equal(await v.page.getByTestId('unmute').count(), 0, `${v.name}: the pill is gone after the end`);
    }
    assert.deepEqual(pubErrors, [], 'publisher page errors');
    assertNoPageErrors([viewer, ivs]);
    ok = true;
  });
});

describe('the watch page of a private channel', { timeout: 180_000 }, () => {
  let browser;
  let hls;
  let ivs;
  let hlsDenied;
  let ivsDenied;
  let publisher;
  let channel;
  let streamKey;
  let keyId;
  let token;
  let ok = false;

  before(async () => {
    browser = await launch();
    hls = await newViewer(browser, 'hls.js viewer with a token');
    ivs = await newViewer(browser, 'IVS viewer with a token');
    hlsDenied = await newViewer(browser, 'hls.js viewer without a token');
    ivsDenied = await newViewer(browser, 'IVS viewer without a token');
    const created = await controlPlane('POST', '/v1/channels', { name: 'Members only', authorized: true });
    assert.equal(created.status, 200, created.text);
    channel = created.body.channel;
    streamKey = created.body.streamKey;
    assert.equal(channel.authorized, true);
    // What a site owner does: make a P-384 key pair, import the public half,
    // sign a playback token for the channel with the private half.
    const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'secp384r1' });
    const pem = publicKey.export({ type: 'spki', format: 'pem' });
    const imported = await controlPlane('POST', '/v1/playback-keys', { publicKeyMaterial: pem, name: 'e2e' });
    assert.equal(imported.status, 200, imported.text);
    keyId = imported.body.keyPair.id;
    const exp = Math.floor(Date.now() / 1000) + 600;
    token = selfSignedToken({ privateKey, kid: keyId }, { 'aws:channel-arn': channel.arn, 'aws:access-control-allow-origin': '*', exp });
    const context = await browser.newContext();
    await context.route(PUBLISHER, (r) => r.fulfill({ status: 200, contentType: 'text/html', body: PUBLISHER_HTML }));
    publisher = await context.newPage();
  });

  after(async () => {
    if (!ok) dumpLogs([hls, ivs, hlsDenied, ivsDenied]);
    await browser?.close();
    if (channel) await controlPlane('DELETE', `/v1/channels/${channel.id}`).catch(() => {});
    if (keyId) await controlPlane('DELETE', `/v1/playback-keys/${keyId}`).catch(() => {});
  });

  it('plays with a playback token and says it is private without one', async () => {
    const page = `${BASE}/watch/channel/${channel.id}`;
    await hls.page.goto(`${page}?player=hls&token=${encodeURIComponent(token)}`);
    await ivs.page.goto(`${page}?token=${encodeURIComponent(token)}`);
    await hlsDenied.page.goto(`${page}?player=hls`);
    await ivsDenied.page.goto(page);
    for (const v of [hls, ivs, hlsDenied, ivsDenied]) await waitPlayerState(v, 'Offline', 10000);

    await publisher.goto(PUBLISHER);
    await publisher.waitForFunction(() => window.publisherReady === true, null, { timeout: 30000 });
    await publisher.evaluate(([k, e]) => window.goLive(k, e), [streamKey, channel.ingestEndpoint]);
    for (const v of [hls, ivs]) {
      await waitPlayerState(v, 'Live', 40000);
      await expectPlaying(v);
      assert.equal(await v.page.getByTestId('watch-message').isHidden(), true, `${v.name}: no message over live video`);
    }
    for (const v of [hlsDenied, ivsDenied]) {
      try {
        await v.page.waitForFunction(
          () => /This stream is private/.test(document.querySelector('[data-testid="watch-message"]')?.textContent || ''),
          null,
          { timeout: 20000 },
        );
      } catch {
        const message = await v.page.getByTestId('watch-message').textContent().catch(() => '?');
        throw new Error(`${v.name}: no private-stream message (${message})`);
      }
      assert.equal(await v.page.getByTestId('player-state').isHidden(), true, `${v.name}: not claimed Offline or Live`);
      const playing = await v.page.evaluate(() => document.querySelector('[data-testid="player-video"]')?.videoWidth || 0);
      assert.equal(playing, 0, `${v.name}: no picture`);
    }
    // Still private a few polls later: the page does not retry into a loop of 403s.
    await sleep(5000);
    for (const v of [hlsDenied, ivsDenied]) {
      assert.match(await v.page.getByTestId('watch-message').textContent(), /private/);
    }

    const stopped = await controlPlane('POST', `/v1/channels/${channel.id}/stop`);
    assert.equal(stopped.status, 204, stopped.text);
    for (const v of [hls, ivs]) await waitPlayerState(v, 'Ended', 20000);
    for (const v of [hlsDenied, ivsDenied]) await waitPlayerState(v, 'Offline', 20000);
    assertNoPageErrors([hls, ivs, hlsDenied, ivsDenied]);
    ok = true;
  });
});
