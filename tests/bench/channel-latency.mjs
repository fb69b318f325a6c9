// Benchmark: channel glass-to-glass latency, broadcast → LL-HLS player, with
// hls.js (low-latency mode) and with the Amazon IVS Player.
//
// A channel is created through the control plane (`POST /v1/channels`). A
// publisher page's broadcast client composites (1280×720, 30 fps) a canvas
// that carries the wall-clock time (ms mod 2^32, 32 cells, plus its
// complement in 32 more cells as a check) and broadcasts it over WHIP with
// the stream key. A viewer page plays the channel's playbackUrl, decodes the
// code from every presented frame (requestVideoFrameCallback → drawImage →
// read the cells) and records (wall clock at display) − code. All pages run
// in one headless Chromium, so they share one clock (Date.now()).
//
// The players run one after the other (hls.js first), each until it has
// BENCH_FRAMES decodable frames after its first second of playback (startup
// is not steady-state latency).
//
// Run by `cargo xtask bench` (which starts a server and sets STAGECAST_URL and
// STAGECAST_API_KEY): prints one `BENCH {json}` line per player.
// BENCH_PLAYERS=hlsjs,ivs picks the players. A failing hls.js run fails the
// script; a failing IVS Player run prints a BENCH line with `error` instead.
// Not a test (not *.test.mjs).

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { build } from 'esbuild';
import { launch, BASE, API_KEY } from '../lib.mjs';

const FRAMES = Number(process.env.BENCH_FRAMES || 300);
const TIMEOUT_MS = Number(process.env.BENCH_TIMEOUT_MS || 60000);
const PLAYERS = (process.env.BENCH_PLAYERS || 'hlsjs,ivs').split(',').filter(Boolean);
const SKIP_MS = 1000;
const COLS = 16;
const ROWS = 4;

const require = createRequire(import.meta.url);
const HLS_JS = require.resolve('hls.js/dist/hls.min.js');
const IVS_DIR = path.join(path.dirname(require.resolve('amazon-ivs-player')), 'assets');

const PUBLISHER = `${BASE}/__bench-channel-publisher.html`;
const VIEWER = `${BASE}/__bench-channel-viewer.html`;
const ASSETS = `${BASE}/__bench-assets/`;

const PUBLISHER_HTML = `<!doctype html>
<html><head><meta charset="utf-8"><title>channel bench: publisher</title></head>
<body>
<canvas id="preview" width="320" height="180"></canvas>
<script type="module">
import IVSBroadcastClient from '/sdk/index.js';
const W = 1280, H = 720, COLS = ${COLS}, ROWS = ${ROWS};
const canvas = document.createElement('canvas');
canvas.width = W;
canvas.height = H;
const ctx = canvas.getContext('2d');
const cw = W / COLS, ch = H / ROWS;
// The compositor draws this canvas as it is at each composed frame; redrawing
// it every 4 ms keeps the code at most 4 ms older than the frame.
const draw = () => {
  const value = Date.now() % 4294967296;
  const lo = value >>> 0;
  const hi = ~lo >>> 0;
  for (let i = 0; i < COLS * ROWS; i += 1) {
    const bit = i < 32 ? (lo >>> i) & 1 : (hi >>> (i - 32)) & 1;
    ctx.fillStyle = bit ? '#fff' : '#000';
    ctx.fillRect((i % COLS) * cw, Math.floor(i / COLS) * ch, cw, ch);
  }
};
draw();
setInterval(draw, 4);
window.startBench = async (streamKey, ingestEndpoint) => {
  const client = IVSBroadcastClient.create({
    streamConfig: { maxResolution: { width: W, height: H }, maxFramerate: 30, maxBitrate: 2500 },
    ingestEndpoint,
  });
  window.__client = client;
  await client.addImageSource(canvas, 'timecode', { index: 0 });
  client.attachPreview(document.getElementById('preview'));
  await client.startBroadcast(streamKey);
  return client.getConnectionState();
};
window.benchReady = true;
</script>
</body></html>`;

/** The viewer: one <video>, a player chosen by `kind`, and the decoder. */
const VIEWER_HTML = `<!doctype html>
<html><head><meta charset="utf-8"><title>channel bench: viewer</title>
<script src="${ASSETS}hls.min.js"></script>
<script src="${ASSETS}ivs-player.js"></script>
</head>
<body>
<video id="video" muted playsinline autoplay width="640" height="360"></video>
<script>
const COLS = ${COLS}, ROWS = ${ROWS}, W = 320, H = 180;
const bench = { samples: [], undecodable: 0, firstFrameAt: null, loadAt: null, errors: [] };
window.__bench = bench;
const canvas = document.createElement('canvas');
canvas.width = W;
canvas.height = H;
const ctx = canvas.getContext('2d', { willReadFrequently: true });
const cw = W / COLS, ch = H / ROWS;
const decode = () => {
  const px = ctx.getImageData(0, 0, W, H).data;
  let lo = 0, hi = 0;
  for (let i = 0; i < COLS * ROWS; i += 1) {
    // The middle half of the cell: robust to codec ringing at the edges.
    const x0 = Math.floor((i % COLS) * cw + cw / 4);
    const y0 = Math.floor(Math.floor(i / COLS) * ch + ch / 4);
    let sum = 0, n = 0;
    for (let y = y0; y < y0 + ch / 2; y += 2) {
      for (let x = x0; x < x0 + cw / 2; x += 2) {
        const o = (y * W + x) * 4;
        sum += px[o] + px[o + 1] + px[o + 2];
        n += 1;
      }
    }
    if (sum / n > 3 * 128) {
      if (i < 32) lo |= 1 << i;
      else hi |= 1 << (i - 32);
    }
  }
  return ((lo ^ hi) >>> 0) === 0xffffffff ? lo >>> 0 : null;
};
const video = document.getElementById('video');
const onFrame = (now, meta) => {
  if (bench.firstFrameAt === null) bench.firstFrameAt = Date.now();
  // Wall clock now, moved to when this frame is expected on screen.
  const shownAt = Date.now() + Math.max(0, (meta.expectedDisplayTime || now) - performance.now());
  ctx.drawImage(video, 0, 0, W, H);
  const value = decode();
  if (value === null) bench.undecodable += 1;
  else if (Date.now() - bench.firstFrameAt >= ${SKIP_MS}) {
    // Read the 32-bit difference as signed, so clock jitter cannot wrap.
    let delay = (Math.round(shownAt) % 4294967296) - value;
    if (delay > 2147483648) delay -= 4294967296;
    if (delay < -2147483648) delay += 4294967296;
    bench.samples.push(delay);
  }
  video.requestVideoFrameCallback(onFrame);
};
video.requestVideoFrameCallback(onFrame);

window.play = (kind, url) => {
  bench.loadAt = Date.now();
  if (kind === 'hlsjs') {
    if (!Hls.isSupported()) throw new Error('hls.js: MSE not supported');
    // Low-latency mode follows the playlist's PART-HOLD-BACK; a faster
    // playback rate (up to 1.5×) is allowed to catch up after a stall.
    const hls = new Hls({ lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5 });
    hls.on(Hls.Events.ERROR, (_e, data) => {
      if (data.fatal) bench.errors.push('hls.js fatal: ' + data.type + ' ' + data.details);
    });
    hls.loadSource(url);
    hls.attachMedia(video);
    window.__player = hls;
  } else {
    const IVS = window.IVSPlayer;
    if (!IVS.isPlayerSupported) throw new Error('IVS Player: not supported in this browser');
    const player = IVS.create({
      wasmWorker: '${ASSETS}amazon-ivs-wasmworker.min.js',
      wasmBinary: '${ASSETS}amazon-ivs-wasmworker.min.wasm',
    });
    player.addEventListener(IVS.PlayerEventType.ERROR, (err) => {
      bench.errors.push('IVS Player error: ' + JSON.stringify(err));
    });
    player.attachHTMLVideoElement(video);
    // One rendition: no bandwidth probes (as the watch page does).
    player.setAutoQualityMode(false);
    player.setAutoplay(true);
    player.setMuted(true);
    player.load(url);
    player.play();
    window.__player = player;
  }
  video.play().catch(() => {});
};
window.benchReady = true;
</script>
</body></html>`;

async function bundleIvsPlayer() {
  const out = await build({
    entryPoints: [require.resolve('amazon-ivs-player')],
    bundle: true,
    format: 'iife',
    globalName: 'IVSPlayer',
    platform: 'browser',
    write: false,
    minify: true,
    logLevel: 'error',
  });
  return out.outputFiles[0].text;
}

async function api(method, url, body) {
  const res = await fetch(`${BASE}${url}`, {
    method,
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${url}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

function percentile(sorted, p) {
  if (!sorted.length) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

async function waitForPlaylist(url, deadline) {
  for (;;) {
    const res = await fetch(url).catch(() => null);
    if (res && res.ok) {
      const text = await res.text();
      if (text.includes('#EXTM3U')) return;
    }
    if (Date.now() > deadline) throw new Error(`the playlist ${url} never became available`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function measure(browser, routes, kind, playbackUrl) {
  const context = await browser.newContext({ viewport: { width: 800, height: 600 } });
  await routes(context);
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (err) => errors.push(String(err)));
  // What this viewer costs the origin: every HLS request (the player's
  // worker included) and its response bytes, from load to the last sample.
  const origin = { requests: 0, bytes: 0, held_ms: 0, from: null, to: null, kinds: {} };
  const started = new Map();
  const counted = (req) => req.url().includes('/hls/') && origin.from !== null && origin.to === null;
  context.on('request', (req) => { if (counted(req)) started.set(req, Date.now()); });
  context.on('requestfinished', async (req) => {
    if (!counted(req)) return;
    origin.requests += 1;
    const held = started.has(req) ? Date.now() - started.get(req) : 0;
    origin.held_ms += held;
    const sizes = await req.sizes().catch(() => null);
    if (sizes) origin.bytes += sizes.responseBodySize;
    // By kind of file, to see where a player's requests and bytes go.
    const file = new URL(req.url()).pathname.split('/').pop();
    const kind = file.endsWith('.m3u8') ? 'playlist' : file.startsWith('init') ? 'init' : file.startsWith('part') ? 'part' : 'segment';
    const k = (origin.kinds[kind] ??= { requests: 0, bytes: 0 });
    k.requests += 1;
    if (sizes) k.bytes += sizes.responseBodySize;
  });
  try {
    await page.goto(VIEWER);
    await page.waitForFunction(() => window.benchReady === true, null, { timeout: 30000 });
    origin.from = Date.now();
    await page.evaluate(([k, u]) => window.play(k, u), [kind, playbackUrl]);
    const deadline = Date.now() + TIMEOUT_MS;
    let bench;
    for (;;) {
      bench = await page.evaluate(() => ({ ...window.__bench, samples: window.__bench.samples.slice() }));
      if (bench.samples.length >= FRAMES || Date.now() > deadline || bench.errors.length || errors.length) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    origin.to = Date.now();
    const problems = [...errors, ...bench.errors];
    if (problems.length) throw new Error(`${kind}: ${problems.join('\n')}`);
    if (bench.samples.length < Math.min(FRAMES, 150)) {
      throw new Error(
        `${kind}: only ${bench.samples.length} decodable frames within ${TIMEOUT_MS} ms ` +
          `(undecodable: ${bench.undecodable}, first frame: ${bench.firstFrameAt === null ? 'never' : 'yes'})`,
      );
    }
    // What the player itself reports, to explain the numbers.
    const diag = await page.evaluate((k) => {
      const p = window.__player;
      const ms = (s) => (Number.isFinite(s) ? Math.round(s * 1000) : null);
      if (k === 'hlsjs') return { player_latency_ms: ms(p.latency), player_target_latency_ms: ms(p.targetLatency) };
      return { player_latency_ms: ms(p.getLiveLatency()), player_low_latency: p.isLiveLowLatency() ? 1 : 0 };
    }, kind);
    const sorted = bench.samples.slice().sort((a, b) => a - b);
    return {
      bench: 'channel',
      player: kind,
      frames: sorted.length,
      undecodable: bench.undecodable,
      p50_ms: percentile(sorted, 50),
      p95_ms: percentile(sorted, 95),
      min_ms: sorted[0],
      max_ms: sorted[sorted.length - 1],
      first_frame_ms: bench.firstFrameAt - bench.loadAt,
      origin_requests_per_min: Math.round((origin.requests * 60000) / (origin.to - origin.from)),
      origin_kb_per_min: Math.round((origin.bytes * 60) / (origin.to - origin.from)),
      // Seconds of open requests per minute: what long-lived prefetch and blocking requests cost.
      origin_held_s_per_min: Math.round((origin.held_ms * 60) / (origin.to - origin.from)) / 1000,
      // Requests and KB per minute by kind of file: "playlist 66 req 106 KB, segment …".
      origin_by_kind: Object.entries(origin.kinds)
        .map(([k, v]) => {
          const perMin = (x) => Math.round((x * 60000) / (origin.to - origin.from));
          return `${k} ${perMin(v.requests)} req ${perMin(v.bytes / 1000)} KB`;
        })
        .join(', '),
      ...diag,
    };
  } finally {
    await context.close();
  }
}

const browser = await launch();
let exitCode = 0;
let channelId = null;
try {
  const ivsBundle = PLAYERS.includes('ivs') ? await bundleIvsPlayer() : '';
  const assets = {
    'hls.min.js': { type: 'text/javascript', body: readFileSync(HLS_JS) },
    'ivs-player.js': { type: 'text/javascript', body: ivsBundle },
    'amazon-ivs-wasmworker.min.js': {
      type: 'text/javascript',
      body: PLAYERS.includes('ivs') ? readFileSync(path.join(IVS_DIR, 'amazon-ivs-wasmworker.min.js')) : '',
    },
    'amazon-ivs-wasmworker.min.wasm': {
      type: 'application/wasm',
      body: PLAYERS.includes('ivs') ? readFileSync(path.join(IVS_DIR, 'amazon-ivs-wasmworker.min.wasm')) : '',
    },
  };
  const routes = async (context) => {
    await context.route(PUBLISHER, (r) => r.fulfill({ status: 200, contentType: 'text/html', body: PUBLISHER_HTML }));
    await context.route(VIEWER, (r) => r.fulfill({ status: 200, contentType: 'text/html', body: VIEWER_HTML }));
    await context.route(`${ASSETS}**`, (r) => {
      const name = new URL(r.request().url()).pathname.split('/').pop();
      const asset = assets[name];
      return asset
        ? r.fulfill({ status: 200, contentType: asset.type, body: asset.body })
        : r.fulfill({ status: 404, body: 'no such bench asset' });
    });
  };

  const created = await api('POST', '/v1/channels', { name: 'bench' });
  channelId = created.channel.id;
  const { ingestEndpoint, playbackUrl } = created.channel;

  const pubContext = await browser.newContext({ viewport: { width: 800, height: 600 } });
  await routes(pubContext);
  const publisher = await pubContext.newPage();
  const pubErrors = [];
  publisher.on('pageerror', (err) => pubErrors.push(String(err)));
  await publisher.goto(PUBLISHER);
  await publisher.waitForFunction(() => window.benchReady === true, null, { timeout: 30000 });
  await publisher.evaluate(([k, e]) => window.startBench(k, e), [created.streamKey, ingestEndpoint]);
  await waitForPlaylist(playbackUrl, Date.now() + 30000);

  for (const kind of PLAYERS) {
    let result;
    try {
      result = await measure(browser, routes, kind, playbackUrl);
    } catch (err) {
      // hls.js carries the target: without it there is no benchmark. The IVS
      // Player is a reference; its failure is reported, not fatal.
      if (kind === 'hlsjs') throw err;
      console.error(String(err && err.stack ? err.stack : err));
      result = { bench: 'channel', player: kind, error: String(err && err.message ? err.message : err).slice(0, 300) };
    }
    if (pubErrors.length) throw new Error(`publisher page errors:\n${pubErrors.join('\n')}`);
    console.log(`BENCH ${JSON.stringify(result)}`);
  }
  await publisher.evaluate(() => window.__client.stopBroadcast()).catch(() => {});
} catch (err) {
  console.error(String(err && err.stack ? err.stack : err));
  exitCode = 1;
} finally {
  await browser.close();
  if (channelId) await api('DELETE', `/v1/channels/${channelId}`).catch(() => {});
}
process.exit(exitCode);
