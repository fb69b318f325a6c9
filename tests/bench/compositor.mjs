// Benchmark: the broadcast client's compositor at 1280×720, 30 fps, with 1, 4
// and 12 video sources laid out as a grid.
//
// Each source is an animated canvas (captureStream at 30 fps) added with
// `addVideoInputDevice`, so every composed frame decodes and draws live video
// like a real multi-camera broadcast. No broadcast is started: this measures
// the compositor alone. Every second the page reads `getStats()`; after a
// 2 s warm-up, the output fps (frames composed in the last second) is
// collected every second, and the p95 compose time (over the SDK's 300-frame
// window) every second once that window holds only post-warm-up frames;
// the medians over those windows are reported.
//
// Run by `cargo xtask bench` (which starts a server and sets STAGECAST_URL):
// prints one `BENCH {json}` line per case. Not a test (not *.test.mjs).

import { launch, BASE } from '../lib.mjs';

const CASES = (process.env.BENCH_TILES || '1,4,12').split(',').map(Number);
const SECONDS = Math.max(10, Number(process.env.BENCH_COMPOSITOR_SECONDS || 13));
const WARMUP_SECONDS = 2;
const PAGE = `${BASE}/__bench-compositor.html`;

const HTML = `<!doctype html>
<html><head><meta charset="utf-8"><title>compositor bench</title></head>
<body>
<canvas id="preview" width="320" height="180"></canvas>
<script type="module">
import IVSBroadcastClient from '/sdk/index.js';

/** An animated 320×180 canvas source: a moving bar and a changing colour. */
function source(seed) {
  const canvas = document.createElement('canvas');
  canvas.width = 320;
  canvas.height = 180;
  const ctx = canvas.getContext('2d');
  let n = 0;
  const draw = () => {
    ctx.fillStyle = 'hsl(' + ((seed * 37 + n * 3) % 360) + ', 70%, 45%)';
    ctx.fillRect(0, 0, 320, 180);
    ctx.fillStyle = '#fff';
    ctx.fillRect((n * 7) % 296, 60, 24, 60);
    n += 1;
  };
  draw();
  setInterval(draw, 33);
  return canvas.captureStream(30);
}

// getStats() keeps the last 300 frames (10 s): p95 is read only once that
// window holds no warm-up frame; fps (the last second) every second after warm-up.
window.runCase = async (tiles, seconds, warmup) => {
  const W = 1280, H = 720;
  const client = IVSBroadcastClient.create({
    streamConfig: { maxResolution: { width: W, height: H }, maxFramerate: 30, maxBitrate: 2500 },
  });
  // The SDK's own grid: 1×1, 2×2 up to 4, 3×3 up to 9, 4×3 up to 12.
  const cols = tiles <= 1 ? 1 : tiles <= 4 ? 2 : tiles <= 9 ? 3 : 4;
  const rows = Math.ceil(tiles / cols);
  const tw = Math.floor(W / cols), th = Math.floor(H / rows);
  for (let i = 0; i < tiles; i += 1) {
    await client.addVideoInputDevice(source(i), 'cam' + i, {
      index: i, x: (i % cols) * tw, y: Math.floor(i / cols) * th, width: tw, height: th,
    });
  }
  client.attachPreview(document.getElementById('preview'));
  const fps = [];
  const p95 = [];
  const mean = [];
  const started = performance.now();
  for (let s = 1; s <= warmup + seconds; s += 1) {
    await new Promise((r) => setTimeout(r, started + s * 1000 - performance.now()));
    const st = client.getStats();
    if (s > warmup) fps.push(st.fps);
    if (s >= warmup + 10) {
      p95.push(st.composeMsP95);
      mean.push(st.composeMsMean);
    }
  }
  const last = client.getStats();
  client.delete();
  return { grid: cols + 'x' + rows, fps, p95, mean, last };
};
window.benchReady = true;
</script>
</body></html>`;

function median(values) {
  const v = values.filter(Number.isFinite).sort((a, b) => a - b);
  if (!v.length) return NaN;
  const m = Math.floor(v.length / 2);
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

const round = (x, d = 2) => (Number.isFinite(x) ? Math.round(x * 10 ** d) / 10 ** d : null);

const browser = await launch();
let exitCode = 0;
try {
  const context = await browser.newContext({ viewport: { width: 800, height: 600 } });
  await context.route(PAGE, (route) => route.fulfill({ status: 200, contentType: 'text/html', body: HTML }));
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (err) => errors.push(String(err)));
  await page.goto(PAGE);
  await page.waitForFunction(() => window.benchReady === true, null, { timeout: 30000 });
  for (const tiles of CASES) {
    const r = await page.evaluate(([t, s, w]) => window.runCase(t, s, w), [tiles, SECONDS, WARMUP_SECONDS]);
    if (errors.length) throw new Error(`page errors:\n${errors.join('\n')}`);
    if (!r.fps.length || !r.p95.length || !(r.last.framesComposed > 0)) {
      throw new Error(`${tiles} tiles: no frames composed (${JSON.stringify(r.last)})`);
    }
    const result = {
      bench: 'compositor',
      tiles,
      grid: r.grid,
      fps_windows: r.fps.length,
      fps_median: round(median(r.fps), 1),
      fps_min: round(Math.min(...r.fps), 1),
      p95_windows: r.p95.length,
      compose_p95_ms: round(median(r.p95)),
      compose_mean_ms: round(median(r.mean)),
      frames: r.last.framesComposed,
      worker_clock: r.last.workerClock ? 1 : 0,
    };
    console.log(`BENCH ${JSON.stringify(result)}`);
  }
} catch (err) {
  console.error(String(err && err.stack ? err.stack : err));
  exitCode = 1;
} finally {
  await browser.close();
}
process.exit(exitCode);
