// Shared helpers for the end-to-end journeys: one headless Chromium per test
// file, one browser context per participant, fake media that tells
// participants apart by colour and by tone, and checks that read what a
// person would see and hear (pixels of a tile, the pitch of its audio).
//
// `cargo xtask test` starts a server and runs the journeys. By hand:
//   STAGECAST_API_KEY=test-key target/debug/stagecast --data-dir /tmp/sc --listen 127.0.0.1:18080
//   STAGECAST_URL=http://127.0.0.1:18080 STAGECAST_API_KEY=test-key node --test tests/*.test.mjs
// STAGECAST_E2E_VERBOSE=1 prints every status/code the bad-input journey gets.

import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { generateKeyPairSync, sign } from 'node:crypto';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { createSocket } from 'node:dgram';
import { mkdtempSync, openSync, readFileSync, rmSync, mkdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';

/** Base URL of the server under test (set by `cargo xtask test`). */
export const BASE = (process.env.STAGECAST_URL || 'http://127.0.0.1:8080').replace(/\/$/, '');
/** Control-plane API key of the server under test. */
export const API_KEY = process.env.STAGECAST_API_KEY || '';

const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
  '--autoplay-policy=no-user-gesture-required',
  // Several participants share one browser; none of them may be throttled.
  '--disable-background-timer-throttling',
  '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
];

/** Where journeys leave screenshots of the main screens for a reviewer. */
export const SCREENS_DIR = process.env.STAGECAST_SCREENS || 'target/journey-screens';
/** The widths every main screen is looked at. */
export const WIDTHS = { desktop: { width: 1280, height: 800 }, phone: { width: 390, height: 844 } };

/**
 * Screenshots `page` at desktop and phone widths into SCREENS_DIR as
 * `<name>-desktop.png` / `<name>-phone.png`, checking at each width that
 * nothing is wider than the screen (no sideways scrolling), then restores
 * the page's size.
 */
export async function screens(page, name) {
  mkdirSync(SCREENS_DIR, { recursive: true });
  const before = page.viewportSize();
  try {
    for (const [label, size] of Object.entries(WIDTHS)) {
      await page.setViewportSize(size);
      await page.waitForTimeout(200);
      await page.screenshot({ path: `${SCREENS_DIR}/${name}-${label}.png`, fullPage: true });
      const { scroll, inner } = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, inner: window.innerWidth }));
      assert.ok(scroll <= inner + 1, `${name} at ${label} width (${inner}px) scrolls sideways: ${scroll}px wide`);
    }
  } finally {
    if (before) await page.setViewportSize(before);
  }
}

/** Distinct looks and sounds, so a receiver can tell who is who. */
export const PEOPLE = {
  red: { name: 'Red', color: [220, 40, 40], freq: 440 },
  green: { name: 'Green', color: [40, 200, 60], freq: 880 },
  blue: { name: 'Blue', color: [40, 60, 220], freq: 1320 },
};

/**
 * Starts headless Chromium. `executablePath` replaces the browser binary (the
 * network tests pass a wrapper that runs it inside a network namespace);
 * `args` are added to the standard flags.
 */
export async function launch({ executablePath, args = [] } = {}) {
  return chromium.launch({
    executablePath: executablePath || process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    args: [...FLAGS, ...args],
  });
}

/**
 * Runs in every page before its scripts: getUserMedia returns a canvas track
 * of one solid colour (with a moving bar along the bottom edge, so frames
 * keep changing while the centre stays pure) and an oscillator tone.
 */
export function fakeMediaInit({ color, freq, fps }) {
  if (!navigator.mediaDevices) return;
  let source = null;
  const build = () => {
    const canvas = document.createElement('canvas');
    canvas.width = 320;
    canvas.height = 180;
    const ctx = canvas.getContext('2d');
    let n = 0;
    const draw = () => {
      ctx.fillStyle = `rgb(${color[0]},${color[1]},${color[2]})`;
      ctx.fillRect(0, 0, 320, 180);
      const x = (n * 6) % 296;
      ctx.fillStyle = '#fff';
      ctx.fillRect(x, 160, 24, 20);
      n += 1;
    };
    draw();
    setInterval(draw, Math.round(1000 / fps));
    const video = canvas.captureStream(fps).getVideoTracks()[0];
    const ac = new AudioContext();
    const osc = ac.createOscillator();
    osc.type = 'sine';
    osc.frequency.value = freq;
    const gain = ac.createGain();
    gain.gain.value = 0.4;
    const dest = ac.createMediaStreamDestination();
    osc.connect(gain).connect(dest);
    osc.start();
    ac.resume().catch(() => {});
    window.__fakeMedia = { canvas, ac, osc, color, freq };
    return { video, audio: dest.stream.getAudioTracks()[0] };
  };
  navigator.mediaDevices.getUserMedia = async (constraints = {}) => {
    if (!source) source = build();
    const tracks = [];
    if (constraints.video) tracks.push(source.video.clone());
    if (constraints.audio) tracks.push(source.audio.clone());
    return new MediaStream(tracks);
  };
}

/**
 * A participant: its own browser context (separate localStorage) and page,
 * with fake media and a list of uncaught page errors. `initScripts` are
 * more `[fn, arg]` pairs to run in every page before its scripts (e.g. the
 * probes of tests/probes.mjs). `fps` is the fake camera's frame rate: a
 * journey with many pages in one browser on 2 cores lowers it.
 */
export async function newParticipant(browser, person, { initScripts = [], fps = 30 } = {}) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 820 } });
  await context.addInitScript(fakeMediaInit, { color: person.color, freq: person.freq, fps });
  for (const [fn, arg] of initScripts) await context.addInitScript(fn, arg);
  const page = await context.newPage();
  const errors = [];
  const logs = [];
  page.on('pageerror', (err) => errors.push(err));
  page.on('console', (msg) => {
    if (msg.type() === 'error' || msg.type() === 'warning') logs.push(`[${person.name}] ${msg.type()}: ${msg.text()}`);
  });
  return { ...person, context, page, errors, logs };
}

/** Fails if any page threw an uncaught error. */
export function assertNoPageErrors(participants) {
  for (const p of participants) {
    assert.deepEqual(
      p.errors.map((e) => String(e && e.stack ? e.stack : e)),
      [],
      `uncaught errors on ${p.name}'s page`,
    );
  }
}

/** Prints console errors of the pages (for diagnosing a failure). */
export function dumpLogs(participants) {
  for (const p of participants) for (const line of p.logs.slice(-30)) console.log(line);
}

/** Sets name + avatar on the profile form of the current page. */
export async function setProfile(page, name, avatarIndex = 0) {
  await page.getByTestId('username-input').fill(name);
  await page.getByTestId('avatar-option').nth(avatarIndex).click();
}

/** Host: create a stage through the UI of the server at `base`; returns the invite link. */
export async function createStageViaUi(p, avatarIndex = 0, base = BASE) {
  await p.page.goto(`${base}/`);
  await setProfile(p.page, p.name, avatarIndex);
  await p.page.getByTestId('create-stage').click();
  const invite = p.page.getByTestId('invite-link');
  await invite.waitFor({ timeout: 15000 });
  return invite.inputValue();
}

/** Guest: open the invite link, set a profile, press Join. */
export async function joinViaInvite(p, inviteUrl, avatarIndex = 1) {
  await p.page.goto(inviteUrl);
  await setProfile(p.page, p.name, avatarIndex);
  await p.page.getByTestId('join-button').click();
  await p.page.getByTestId('stage-view').waitFor({ timeout: 15000 });
}

/**
 * Clicks `locator` and answers the confirmation dialog it must open
 * (accept, or dismiss); returns the dialog's message.
 */
export async function clickAndConfirm(page, locator, accept = true) {
  const opened = page.waitForEvent('dialog', { timeout: 5000 });
  const click = locator.click();
  const dialog = await opened;
  assert.equal(dialog.type(), 'confirm', `a confirmation, not ${dialog.type()}`);
  const message = dialog.message();
  if (accept) await dialog.accept();
  else await dialog.dismiss();
  await click;
  return message;
}

/** Waits until the page's SDK reports `joined` (or fails with the join error). */
export async function waitJoined(page, timeout = 20000) {
  const handle = await page.waitForFunction(
    () => {
      const ev = window.__stagecast && window.__stagecast.events;
      if (!ev) return false;
      return ev.find((e) => e.type === 'joined' || e.type === 'joinFailed') || false;
    },
    null,
    { timeout },
  );
  const ev = await handle.jsonValue();
  assert.equal(ev.type, 'joined', `join failed: ${JSON.stringify(ev)}`);
}

/** The participant id shown on the page's own (local) tile. */
export async function localParticipantId(page) {
  const id = await page.locator('[data-testid="tile"][data-local="true"]').getAttribute('data-participant-id');
  assert.ok(id, 'local tile has a participant id');
  return id;
}

/** Waits for an SDK event on the page matching all fields of `match`. */
export async function waitForEvent(page, match, timeout = 15000) {
  try {
    const handle = await page.waitForFunction(
      (m) =>
        (window.__stagecast?.events || []).find((e) => Object.entries(m).every(([k, v]) => e[k] === v)) || false,
      match,
      { timeout },
    );
    return handle.jsonValue();
  } catch (err) {
    const events = await page.evaluate(() => window.__stagecast?.events || []).catch(() => []);
    throw new Error(`no event ${JSON.stringify(match)} within ${timeout} ms; events: ${JSON.stringify(events)}`);
  }
}

/** Waits until the set of remote tiles on the page is exactly `ids`. */
export async function waitForRemoteTiles(page, ids, timeout = 20000) {
  try {
    await page.waitForFunction(
      (want) => {
        const have = [...document.querySelectorAll('[data-testid="tile"][data-local="false"]')].map(
          (t) => t.dataset.participantId,
        );
        return have.length === want.length && want.every((id) => have.includes(id));
      },
      ids,
      { timeout },
    );
  } catch (err) {
    const have = await page
      .evaluate(() => [...document.querySelectorAll('[data-testid="tile"]')].map((t) => ({ ...t.dataset })))
      .catch(() => []);
    throw new Error(`remote tiles ${JSON.stringify(ids)} not shown within ${timeout} ms; tiles: ${JSON.stringify(have)}`);
  }
}

/**
 * One look at a tile's video: size, average colour of the centre half, a
 * signature of the bottom strip (where the fake source's bar moves), and the
 * number of decoded frames so far.
 */
export async function sampleTile(page, participantId) {
  return page.evaluate((pid) => {
    const v = document.querySelector(`[data-testid="tile"][data-participant-id="${pid}"] video`);
    if (!v) return { present: false };
    const w = v.videoWidth;
    const h = v.videoHeight;
    // Firefox counts no frames of a MediaStream in getVideoPlaybackQuality;
    // its painted-frame counter does.
    const quality = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().totalVideoFrames : 0;
    const frames = quality || v.mozPaintedFrames || 0;
    if (!w || !h) return { present: true, w, h, frames };
    const c = document.createElement('canvas');
    c.width = w;
    c.height = h;
    const ctx = c.getContext('2d', { willReadFrequently: true });
    ctx.drawImage(v, 0, 0, w, h);
    const centre = ctx.getImageData(Math.floor(w / 4), Math.floor(h / 4), Math.floor(w / 2), Math.floor(h / 2)).data;
    let r = 0;
    let g = 0;
    let b = 0;
    const n = centre.length / 4;
    for (let i = 0; i < centre.length; i += 4) {
      r += centre[i];
      g += centre[i + 1];
      b += centre[i + 2];
    }
    const y0 = Math.floor(h * 0.92);
    const strip = ctx.getImageData(0, y0, w, h - y0).data;
    let sum = 0;
    let weight = 0;
    for (let i = 0; i < strip.length; i += 4) {
      const lum = strip[i] + strip[i + 1] + strip[i + 2];
      if (lum > 600) {
        sum += (i / 4) % w;
        weight += 1;
      }
    }
    return {
      present: true,
      w,
      h,
      frames,
      r: Math.round(r / n),
      g: Math.round(g / n),
      b: Math.round(b / n),
      barX: weight ? Math.round(sum / weight) : -1,
    };
  }, participantId);
}

function colourDistance(a, b) {
  return Math.hypot(a[0] - b[0], a[1] - b[1], a[2] - b[2]);
}

/**
 * Waits until the tile of `participantId` shows decoded, changing frames of
 * the expected colour. Returns the last sample, with `firstAt` (Date.now()
 * when the colour was first seen in this wait) and `at` (when the frames were
 * seen changing). A frame counter that goes down (the tile got a new stream)
 * starts the count again.
 */
export async function expectLiveVideo(page, participantId, color, timeout = 20000, { interval = 300 } = {}) {
  const deadline = Date.now() + timeout;
  let last = null;
  let first = null;
  let firstAt = 0;
  while (Date.now() < deadline) {
    const s = await sampleTile(page, participantId);
    last = s;
    const colourOk = s.w > 0 && colourDistance([s.r, s.g, s.b], color) < 70;
    if (colourOk) {
      if (!first || s.frames < first.frames) {
        if (!first) firstAt = Date.now();
        first = s;
      } else if (s.frames > first.frames + 5 && s.barX !== first.barX) {
        return { ...s, firstAt, at: Date.now() };
      }
    } else {
      first = null;
    }
    await new Promise((r) => setTimeout(r, interval));
  }
  throw new Error(
    `tile ${participantId}: no live video of colour ${JSON.stringify(color)} within ${timeout} ms; last sample ${JSON.stringify(last)}`,
  );
}

/** The peak frequency (Hz) of the audio arriving on a tile, and its level (dB). */
export async function detectTone(page, participantId) {
  return page.evaluate(async (pid) => {
    const v = document.querySelector(`[data-testid="tile"][data-participant-id="${pid}"] video`);
    const track = v && v.srcObject && v.srcObject.getAudioTracks()[0];
    if (!track) return { freq: 0, db: -Infinity, reason: 'no audio track' };
    const ac = new AudioContext();
    await ac.resume();
    const src = ac.createMediaStreamSource(new MediaStream([track]));
    const analyser = ac.createAnalyser();
    analyser.fftSize = 8192;
    analyser.smoothingTimeConstant = 0.5;
    src.connect(analyser);
    await new Promise((r) => setTimeout(r, 800));
    const bins = new Float32Array(analyser.frequencyBinCount);
    analyser.getFloatFrequencyData(bins);
    let best = 1;
    for (let i = 2; i < bins.length; i += 1) if (bins[i] > bins[best]) best = i;
    const freq = (best * ac.sampleRate) / analyser.fftSize;
    const db = bins[best];
    await ac.close();
    return { freq, db };
  }, participantId);
}

/** Waits until the tone of `freq` Hz is heard on the tile of `participantId`. */
export async function expectTone(page, participantId, freq, timeout = 15000) {
  const deadline = Date.now() + timeout;
  let last = null;
  while (Date.now() < deadline) {
    last = await detectTone(page, participantId);
    if (Math.abs(last.freq - freq) < 25 && last.db > -90) return { ...last, at: Date.now() };
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new Error(`tile ${participantId}: tone ${freq} Hz not heard within ${timeout} ms; last ${JSON.stringify(last)}`);
}

// ---------------------------------------------------------------- control plane

/** Calls the control plane with the API key; returns {status, body}. */
export async function controlPlane(method, path, body) {
  const res = await fetch(`${BASE}${path}`, {
    method,
    headers: { Authorization: `Bearer ${API_KEY}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  return { status: res.status, body: json, text };
}

/** Creates a stage with the control plane; returns its id. */
export async function createStage(name = 'e2e') {
  const res = await controlPlane('POST', '/v1/stages', { name });
  assert.ok(res.status >= 200 && res.status < 300, `create stage: ${res.status} ${res.text}`);
  return res.body.stage.id;
}

/** Mints a participant token; returns {token, participantId, ...}. */
export async function createToken(stageId, { userId, username, capabilities = ['PUBLISH', 'SUBSCRIBE'], duration } = {}) {
  const res = await controlPlane('POST', `/v1/stages/${encodeURIComponent(stageId)}/tokens`, {
    userId,
    attributes: username ? { username } : undefined,
    capabilities,
    duration,
  });
  assert.ok(res.status >= 200 && res.status < 300, `create token: ${res.status} ${res.text}`);
  return res.body.participantToken;
}

// ---------------------------------------------------------------- token forgery

function b64url(buf) {
  return Buffer.from(buf).toString('base64').replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');
}

/** The claims of a JWT (unverified). */
export function tokenClaims(token) {
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));
}

/** The same token with a changed payload and the original signature. */
export function tamperPayload(token, change) {
  const [head, , sig] = token.split('.');
  const claims = { ...tokenClaims(token), ...change };
  return `${head}.${b64url(JSON.stringify(claims))}.${sig}`;
}

/** The same token with a flipped signature byte. */
export function tamperSignature(token) {
  const [head, body, sig] = token.split('.');
  const bytes = Buffer.from(sig, 'base64url');
  bytes[bytes.length - 1] ^= 0x5a;
  return `${head}.${body}.${b64url(bytes)}`;
}

/** A self-made token, expired an hour ago, with a signature made by nobody. */
export function expiredForgedToken(like) {
  const now = Math.floor(Date.now() / 1000);
  const claims = { ...tokenClaims(like), iat: now - 7200, exp: now - 3600 };
  const head = b64url(JSON.stringify({ alg: 'ES384', typ: 'JWT' }));
  const sig = b64url(Buffer.alloc(96, 7));
  return `${head}.${b64url(JSON.stringify(claims))}.${sig}`;
}

/**
 * An ES384 key pair whose public half is imported into the server
 * (ImportPublicKey), so tokens it signs carry a valid signature.
 */
export async function importSigningKey() {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'secp384r1' });
  const pem = publicKey.export({ type: 'spki', format: 'pem' });
  const res = await controlPlane('POST', '/v1/public-keys', { publicKeyMaterial: pem, name: 'e2e' });
  assert.ok(res.status >= 200 && res.status < 300, `import public key: ${res.status} ${res.text}`);
  return { privateKey, kid: res.body.publicKey.id };
}

/** A token with `claims`, validly signed by an imported key. */
export function selfSignedToken({ privateKey, kid }, claims) {
  const head = b64url(JSON.stringify({ alg: 'ES384', typ: 'JWT', kid }));
  const body = b64url(JSON.stringify(claims));
  const sig = sign('sha384', Buffer.from(`${head}.${body}`), { key: privateKey, dsaEncoding: 'ieee-p1363' });
  return `${head}.${body}.${b64url(sig)}`;
}

/** Same claims as `like`, expired an hour ago, validly signed by `key`. */
export function expiredSignedToken(key, like) {
  const now = Math.floor(Date.now() / 1000);
  return selfSignedToken(key, { ...tokenClaims(like), iat: now - 7200, exp: now - 3600 });
}

/** Checks a response is a 4xx with a JSON {code, message} body. */
export function assertClientError(res, what, expectedCode) {
  if (process.env.STAGECAST_E2E_VERBOSE) console.log(`${String(res.status).padEnd(4)} ${String(res.body?.code ?? '').padEnd(24)} ${what}`);
  assert.ok(res.status >= 400 && res.status < 500, `${what}: expected 4xx, got ${res.status} ${res.text}`);
  assert.ok(res.body && typeof res.body.code === 'string' && res.body.code, `${what}: body has no code: ${res.text}`);
  assert.ok(typeof res.body.message === 'string' && res.body.message, `${what}: body has no message: ${res.text}`);
  if (expectedCode) assert.equal(res.body.code, expectedCode, `${what}: ${res.text}`);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- a server of the journey's own

const BIN = process.env.STAGECAST_BIN || 'target/debug/stagecast';

/** A free loopback port: `kind` 'udp' or 'tcp'. */
export function freePort(kind, host = '127.0.0.1') {
  return new Promise((resolve, reject) => {
    if (kind === 'udp') {
      const s = createSocket('udp4');
      s.bind(0, host, () => {
        const { port } = s.address();
        s.close(() => resolve(port));
      });
      s.on('error', reject);
    } else {
      const s = createServer();
      s.listen(0, '127.0.0.1', () => {
        const { port } = s.address();
        s.close(() => resolve(port));
      });
      s.on('error', reject);
    }
  });
}

/**
 * A stagecast server of the journey's own (`STAGECAST_BIN`), which it may
 * kill and start again on the same ports and data dir. `mediaIp` binds and
 * advertises the media port on that address instead of 127.0.0.1; `args`
 * are added to its command line; `dataDir` is used instead of a fresh one.
 */
export async function ownServer({ mediaIp, args = [], dataDir: sharedDir, apiKey: givenKey } = {}) {
  mkdirSync('target', { recursive: true });
  const dataDir = sharedDir || mkdtempSync('target/own-server-');
  const media = mediaIp ? ['--media-bind-ip', mediaIp, '--public-ip', mediaIp] : [];
  const apiKey = givenKey || randomBytes(16).toString('hex');
  let port;
  let mediaPort;
  let base;
  let log;
  const pickPorts = async () => {
    [port, mediaPort] = [await freePort('tcp'), await freeMediaPort(mediaIp)];
    base = `http://127.0.0.1:${port}`;
    log = `${dataDir}/server-${port}.log`;
  };
  let child = null;
  const start = async () => {
    const out = openSync(log, 'a');
    const argv = ['--listen', `127.0.0.1:${port}`, '--media-port', String(mediaPort), '--data-dir', dataDir, ...media, ...args];
    child = spawn(BIN, argv, {
      env: { ...process.env, STAGECAST_API_KEY: apiKey, NO_COLOR: '1' },
      stdio: ['ignore', out, out],
    });
    for (let i = 0; i < 200 && child.exitCode === null; i += 1) {
      try {
        const res = await fetch(`${base}/api/list`, { method: 'POST' });
        if (res.status < 500) return;
      } catch {
        // not listening yet
      }
      await sleep(100);
    }
    throw new Error(`the server did not start (log: ${log})`);
  };
  const kill = () =>
    new Promise((resolve) => {
      if (!child || child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once('exit', resolve);
      child.kill('SIGKILL');
    });
  // Ports are free when picked, not reserved: another process can take one
  // before the server binds it. Then the first start picks new ones.
  for (let attempt = 1; ; attempt += 1) {
    await pickPorts();
    try {
      await start();
      break;
    } catch (e) {
      await kill();
      let text = '';
      try {
        text = readFileSync(log, 'utf8');
      } catch {
        // no log
      }
      if (attempt >= 3 || !/Address already in use/.test(text)) throw e;
    }
  }
  return { base, log, apiKey, start, kill, cleanup: () => rmSync(dataDir, { recursive: true, force: true }) };
}

/** A port free for both UDP and TCP on `host` (the media port takes both). */
async function freeMediaPort(host = '127.0.0.1') {
  for (let i = 0; i < 20; i += 1) {
    const port = await freePort('udp', host);
    const tcpFree = await new Promise((resolve) => {
      const s = createServer();
      s.once('error', () => resolve(false));
      s.listen(port, host, () => s.close(() => resolve(true)));
    });
    if (tcpFree) return port;
  }
  throw new Error(`no port free for both UDP and TCP on ${host}`);
}


/** `stagecast_stages` (stages with members there) of the node `{ base, apiKey }`. */
export async function stagesOn(node) {
  const res = await fetch(`${node.base}/metrics`, { headers: { Authorization: `Bearer ${node.apiKey}` } });
  const m = /^stagecast_stages (\d+)$/m.exec(await res.text());
  return m ? Number(m[1]) : NaN;
}

// ---------------------------------------------------------------- go live / watch page

/** The watch page's player state (`data-state` of the player-state pill) becomes one of `states`. */
export async function waitWatchState(viewer, states, timeout) {
  await viewer.page.waitForFunction(
    (states) => states.includes(document.querySelector('[data-testid="player-state"]')?.dataset.state),
    states,
    { timeout },
  );
}

/** A viewer: its own browser context and page (no fake media), with uncaught page errors collected. */
export async function newViewer(browser, name) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 700 } });
  const page = await context.newPage();
  const errors = [];
  const logs = [];
  page.on('pageerror', (err) => errors.push(err));
  page.on('console', (msg) => {
    if (msg.type() === 'error' || msg.type() === 'warning') logs.push(`[${name}] ${msg.type()}: ${msg.text()}`);
  });
  return { name, context, page, errors, logs };
}

/** Waits until the watch page's player-state badge reads `state`. */
export async function waitPlayerState(viewer, state, timeout) {
  try {
    await viewer.page.waitForFunction(
      (want) => document.querySelector('[data-testid="player-state"]')?.textContent.trim() === want,
      state,
      { timeout },
    );
  } catch (err) {
    const now = await viewer.page.getByTestId('player-state').textContent().catch(() => '?');
    throw new Error(`${viewer.name}: player-state not ${state} within ${timeout} ms (is ${now})`);
  }
}

/** The watch page's video has frames, and both its time and its picture move. */
export async function expectPlaying(viewer, timeout = 30000) {
  const sample = () =>
    viewer.page.evaluate(() => {
      const v = document.querySelector('[data-testid="player-video"]');
      if (!v || !v.videoWidth || v.readyState < 2) return null;
      const c = document.createElement('canvas');
      c.width = 16;
      c.height = 9;
      const g = c.getContext('2d');
      g.drawImage(v, 0, 0, 16, 9);
      const d = g.getImageData(0, 0, 16, 9).data;
      return { time: v.currentTime, colour: [d[0], d[1], d[2]].join(',') };
    });
  const deadline = Date.now() + timeout;
  let first = null;
  let last = null;
  while (Date.now() < deadline) {
    last = await sample();
    if (last && !first) first = last;
    if (first && last && last.time > first.time + 1 && last.colour !== first.colour) return;
    await sleep(500);
  }
  throw new Error(`${viewer.name}: the video is not playing (${JSON.stringify({ first, last })})`);
}

/**
 * Centres of the auto-layout grid's tiles as fractions of the frame, in tile
 * order (sdk/src/core/layout.rs): 1 full frame; 2 side by side; 3 two on top
 * and one centred below; 4 a 2×2 grid.
 */
export function gridCentres(n) {
  switch (n) {
    case 1:
      return [[0.5, 0.5]];
    case 2:
      return [[0.25, 0.5], [0.75, 0.5]];
    case 3:
      return [[0.25, 0.25], [0.75, 0.25], [0.5, 0.75]];
    case 4:
      return [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]];
    default:
      throw new Error(`gridCentres: ${n} tiles are not described here`);
  }
}

/**
 * The average colour of a small square (6% of the width) around each of
 * `points` (fractions of the frame) of the playing `<video>` matched by
 * `selector`, plus its size and playback position.
 */
export async function sampleVideoPoints(page, selector, points) {
  return page.evaluate(
    ({ selector, points }) => {
      const v = document.querySelector(selector);
      if (!v || !v.videoWidth || !v.videoHeight) return { w: 0, h: 0, colours: [] };
      const w = v.videoWidth;
      const h = v.videoHeight;
      const c = document.createElement('canvas');
      c.width = w;
      c.height = h;
      const ctx = c.getContext('2d', { willReadFrequently: true });
      ctx.drawImage(v, 0, 0, w, h);
      const side = Math.max(4, Math.round(w * 0.06));
      const colours = points.map(([fx, fy]) => {
        const x = Math.max(0, Math.min(w - side, Math.round(fx * w - side / 2)));
        const y = Math.max(0, Math.min(h - side, Math.round(fy * h - side / 2)));
        const d = ctx.getImageData(x, y, side, side).data;
        let r = 0;
        let g = 0;
        let b = 0;
        for (let i = 0; i < d.length; i += 4) {
          r += d[i];
          g += d[i + 1];
          b += d[i + 2];
        }
        const n = d.length / 4;
        return [Math.round(r / n), Math.round(g / n), Math.round(b / n)];
      });
      return { w, h, currentTime: v.currentTime, colours };
    },
    { selector, points },
  );
}

/**
 * Waits until the video shows the grid of `people.length` tiles with each
 * person's colour in exactly one tile (any order). Returns the last sample
 * with `owners`: the person's name per tile.
 */
export async function expectCompositeGrid(page, selector, people, timeout = 30000) {
  const points = gridCentres(people.length);
  const deadline = Date.now() + timeout;
  let last = null;
  while (Date.now() < deadline) {
    const s = await sampleVideoPoints(page, selector, points);
    if (s.colours.length === points.length) {
      const owners = s.colours.map((c) => {
        const near = people.filter((p) => colourDistance(c, p.color) < 80);
        return near.length === 1 ? near[0].name : null;
      });
      last = { ...s, owners };
      const names = new Set(owners.filter(Boolean));
      if (names.size === people.length) return last;
    } else {
      last = s;
    }
    await new Promise((r) => setTimeout(r, 400));
  }
  throw new Error(
    `${selector}: no ${people.length}-tile grid with colours of ${people.map((p) => p.name).join(', ')} within ${timeout} ms; last sample ${JSON.stringify(last)}`,
  );
}

// ---------------------------------------------------------------- chat panel

/** The chat user id of a sample-app page (its saved profile's userId). */
export async function profileUserId(page) {
  const id = await page.evaluate(() => JSON.parse(localStorage.getItem('stagecast.profile') || '{}').userId);
  assert.ok(id, 'the page has a profile user id');
  return id;
}

/**
 * The chat user id of a sample-app stage page: the server chooses it (the
 * member's participant id) and signs it into the chat token.
 */
export async function chatUserId(page) {
  const token = await page.evaluate(() => window.__stagecast?.session?.chat?.token);
  assert.ok(token, 'the page has a chat token');
  const id = tokenClaims(token).user_id;
  assert.ok(id, 'the chat token names a user');
  return id;
}

/** Waits until the page's chat panel (`chat-state`) says connected. */
export async function chatConnected(page, timeout = 15000) {
  try {
    await page.waitForFunction(
      () => document.querySelector('[data-testid="chat-state"]')?.dataset.state === 'connected',
      null,
      { timeout },
    );
  } catch (err) {
    const state = await page
      .evaluate(() => ({
        state: document.querySelector('[data-testid="chat-state"]')?.dataset.state,
        error: document.querySelector('[data-testid="chat-error"]')?.textContent,
      }))
      .catch(() => null);
    throw new Error(`chat not connected within ${timeout} ms: ${JSON.stringify(state)}`);
  }
}

/** Types `text` into `chat-input` and presses `chat-send`. */
export async function sendChat(page, text) {
  await page.getByTestId('chat-input').fill(text);
  await page.getByTestId('chat-send').click();
}

/**
 * Waits for a `chat-message` containing `text`; returns its
 * `{id, sender, text}` (data-message-id, data-sender, text content).
 */
export async function chatMessage(page, text, timeout = 10000) {
  try {
    const handle = await page.waitForFunction(
      (want) => {
        const el = [...document.querySelectorAll('[data-testid="chat-message"]')].find((m) => m.textContent.includes(want));
        return el ? { id: el.dataset.messageId, sender: el.dataset.sender, text: el.textContent } : false;
      },
      text,
      { timeout },
    );
    return handle.jsonValue();
  } catch (err) {
    const have = await page
      .evaluate(() => [...document.querySelectorAll('[data-testid="chat-message"]')].map((m) => m.textContent))
      .catch(() => []);
    throw new Error(`no chat message "${text}" within ${timeout} ms; messages: ${JSON.stringify(have)}`);
  }
}

/**
 * The role badge (`host`, `guest`) shown on chat message `id`, or null when it
 * has none (viewers).
 */
export async function chatBadge(page, id) {
  const message = page.locator(`[data-testid="chat-message"][data-message-id="${id}"]`);
  await message.waitFor({ timeout: 10000 });
  const badge = message.getByTestId('chat-badge');
  return (await badge.count()) ? badge.getAttribute('data-role') : null;
}

/** Waits until no `chat-message` with data-message-id `id` is on the page. */
export async function waitChatMessageGone(page, id, timeout = 10000) {
  await page.waitForFunction(
    (mid) => !document.querySelector(`[data-testid="chat-message"][data-message-id="${CSS.escape(mid)}"]`),
    id,
    { timeout },
  );
}

// ---------------------------------------------------------------- what the watch page says

/**
 * From every page load of `viewer`'s context on, records each change of
 * what the watch page shows: the state badge's word (null while hidden),
 * the message over the video, and whether the unmute pill, the chat and the
 * latency readout are there. Read it with `watchSeen`.
 */
export async function recordWatchStates(viewer) {
  await viewer.context.addInitScript(() => {
    const seen = [];
    window.__watchSeen = seen;
    const q = (id) => document.querySelector(`[data-testid="${id}"]`);
    const text = (el) => (el && !el.hidden ? el.textContent.trim() : null);
    const look = () => {
      const now = {
        badge: text(q('player-state')),
        message: text(q('watch-message')),
        unmute: !!q('unmute'),
        chat: !!q('chat'),
        latency: text(q('latency')),
      };
      const last = seen[seen.length - 1];
      if (!last || Object.keys(now).some((k) => now[k] !== last[k])) seen.push(now);
    };
    new MutationObserver(look).observe(document, { subtree: true, childList: true, characterData: true, attributes: true });
  });
}

/** What `recordWatchStates` recorded on the current page, oldest first. */
export async function watchSeen(viewer) {
  return viewer.page.evaluate(() => window.__watchSeen || []);
}

/**
 * Waits until each tile of the composite played in `selector` (a grid of
 * `people.length` tiles, `gridCentres`) carries a name label: in the
 * bottom-left corner of the tile (its lower fifth, a third of its width) a
 * good share of pixels are the dark label box over the tile's colour
 * (sdk/src/core/layout.rs `name_label`), while the same area just above it
 * has next to none (so it is the label, not the video). Returns the dark
 * shares per tile.
 */
export async function expectNameLabels(page, selector, people, timeout = 20000) {
  const n = people.length;
  const centres = gridCentres(n);
  // Half a tile, as fractions of the frame (16:9 tiles on a 16:9 canvas).
  const half = n === 1 ? 0.5 : 0.24;
  const deadline = Date.now() + timeout;
  let last = null;
  while (Date.now() < deadline) {
    last = await page.evaluate(
      ({ selector, centres, half }) => {
        const v = document.querySelector(selector);
        if (!v || !v.videoWidth) return null;
        const w = v.videoWidth;
        const h = v.videoHeight;
        const c = document.createElement('canvas');
        c.width = w;
        c.height = h;
        const ctx = c.getContext('2d', { willReadFrequently: true });
        ctx.drawImage(v, 0, 0, w, h);
        const sum = (d, i) => d[i] + d[i + 1] + d[i + 2];
        return centres.map(([fx, fy]) => {
          const mid = ctx.getImageData(Math.round(fx * w) - 4, Math.round(fy * h) - 4, 8, 8).data;
          let tile = 0;
          for (let i = 0; i < mid.length; i += 4) tile += sum(mid, i) / (mid.length / 4);
          // The lower fifth of the tile, a third of its width, in from the edges.
          const rw = Math.round(half * 2 * w * 0.33);
          const rh = Math.round(half * 2 * h * 0.2);
          // In from the tile's left edge: the gap between tiles is black.
          const x = Math.round((fx - half) * w) + 6;
          const y = Math.round((fy + half) * h) - rh - 2;
          const darkShare = (top) => {
            const d = ctx.getImageData(x, top, rw, rh).data;
            let dark = 0;
            for (let i = 0; i < d.length; i += 4) if (sum(d, i) < tile * 0.6) dark += 1;
            return dark / (d.length / 4);
          };
          return { label: Math.round(darkShare(y) * 100) / 100, above: Math.round(darkShare(y - rh) * 100) / 100 };
        });
      },
      { selector, centres, half },
    );
    if (last && last.every((t) => t.label > 0.06 && t.above < 0.02)) return last;
    await sleep(500);
  }
  throw new Error(`${selector}: no name label on every tile of ${people.map((p) => p.name).join(', ')} within ${timeout} ms; dark shares ${JSON.stringify(last)}`);
}
