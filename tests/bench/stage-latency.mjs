// Benchmark: stage glass-to-glass latency and join() → first remote frame,
// through the sample app exactly as people use it (host creates a stage, a
// guest opens the invite link).
//
// The host's camera is a canvas that draws the wall-clock time (ms, 16 bits +
// an 8-bit check) as black/white cells into every frame. The guest's page
// decodes the code from each received frame (requestVideoFrameCallback) and
// subtracts it from the frame's expected display time. Both pages run in one
// browser on one machine, so they share one clock.
//
// Run by `cargo xtask bench` (which starts a server and sets STAGECAST_URL);
// writes `key value` lines to $BENCH_OUT and prints a summary. With
// STAGECAST_GUEST_URL (another node of the same deployment; `cargo xtask
// bench scale`), the guest opens the invite on that node instead, so the
// guest's requests reach the stage's media node through it.
// Not a test: it is not named *.test.mjs, so `cargo xtask test` skips it.

import { writeFileSync } from 'node:fs';
import { BASE, launch, createStageViaUi, joinViaInvite, waitJoined, stagesOn } from '../lib.mjs';

const FRAMES = Number(process.env.BENCH_FRAMES || 300);
const GUEST_BASE = process.env.STAGECAST_GUEST_URL || null;
const TIMEOUT_MS = Number(process.env.BENCH_TIMEOUT_MS || 60000);
const W = 320;
const H = 180;
const COLS = 8;
const ROWS = 3;

/** Page init for both participants: getUserMedia returns the time-code canvas + a tone. */
function timecodeMedia({ W, H, COLS, ROWS }) {
  if (!navigator.mediaDevices) return;
  const cw = W / COLS;
  const ch = H / ROWS;
  let source = null;
  const build = () => {
    const canvas = document.createElement('canvas');
    canvas.width = W;
    canvas.height = H;
    const ctx = canvas.getContext('2d');
    const draw = () => {
      // Date.now(): the one clock both pages (separate renderer processes)
      // read identically; performance.timeOrigin differs per process.
      const t = Date.now();
      const value = t & 0xffff;
      const check = ((value >> 8) ^ (value & 0xff) ^ 0xa5) & 0xff;
      const bits = value | (check << 16);
      for (let i = 0; i < COLS * ROWS; i += 1) {
        ctx.fillStyle = (bits >> i) & 1 ? '#fff' : '#000';
        ctx.fillRect((i % COLS) * cw, Math.floor(i / COLS) * ch, cw, ch);
      }
    };
    draw();
    setInterval(draw, 16);
    const video = canvas.captureStream(30).getVideoTracks()[0];
    const ac = new AudioContext();
    const osc = ac.createOscillator();
    const dest = ac.createMediaStreamDestination();
    osc.connect(dest);
    osc.start();
    ac.resume().catch(() => {});
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

/** Page init for the receiver: time join() and decode every remote frame. */
function receiverProbe({ W, H, COLS, ROWS }) {
  const bench = { joinAt: null, firstFrameAt: null, samples: [], undecodable: 0 };
  window.__bench = bench;

  // The sample app keeps its Stage in window.__stagecast.stage right before
  // it calls join(); wrap join there to timestamp the call.
  let state;
  Object.defineProperty(window, '__stagecast', {
    configurable: true,
    get: () => state,
    set(value) {
      state = value;
      let stage = value && value.stage;
      Object.defineProperty(value, 'stage', {
        configurable: true,
        enumerable: true,
        get: () => stage,
        set(s) {
          stage = s;
          if (!s) return;
          const owner = Object.prototype.hasOwnProperty.call(s, 'join') ? s : Object.getPrototypeOf(s);
          const join = owner.join;
          if (typeof join !== 'function' || join.__benchWrapped) return;
          const wrapped = function (...args) {
            if (bench.joinAt === null) bench.joinAt = performance.now();
            return join.apply(this, args);
          };
          wrapped.__benchWrapped = true;
          owner.join = wrapped;
        },
      });
    },
  });

  const cw = W / COLS;
  const ch = H / ROWS;
  const decode = (ctx) => {
    const px = ctx.getImageData(0, 0, W, H).data;
    let bits = 0;
    for (let i = 0; i < COLS * ROWS; i += 1) {
      // Average the middle half of the cell: robust to codec ringing at edges.
      const x0 = Math.floor((i % COLS) * cw + cw / 4);
      const y0 = Math.floor(Math.floor(i / COLS) * ch + ch / 4);
      let sum = 0;
      let n = 0;
      for (let y = y0; y < y0 + ch / 2; y += 2) {
        for (let x = x0; x < x0 + cw / 2; x += 2) {
          const o = (y * W + x) * 4;
          sum += px[o] + px[o + 1] + px[o + 2];
          n += 1;
        }
      }
      if (sum / n > 3 * 128) bits |= 1 << i;
    }
    const value = bits & 0xffff;
    const check = (bits >> 16) & 0xff;
    return check === (((value >> 8) ^ (value & 0xff) ^ 0xa5) & 0xff) ? value : null;
  };

  const watched = new WeakSet();
  const watch = () => {
    for (const video of document.querySelectorAll('[data-testid="tile"][data-local="false"] video')) {
      if (watched.has(video) || !video.requestVideoFrameCallback) continue;
      watched.add(video);
      const canvas = document.createElement('canvas');
      canvas.width = W;
      canvas.height = H;
      const ctx = canvas.getContext('2d', { willReadFrequently: true });
      const onFrame = (now, meta) => {
        if (bench.firstFrameAt === null) bench.firstFrameAt = now;
        // Wall clock now, moved to when this frame is expected on screen.
        const shownAt = Date.now() + Math.max(0, (meta.expectedDisplayTime || now) - performance.now());
        ctx.drawImage(video, 0, 0, W, H);
        const value = decode(ctx);
        if (value === null) bench.undecodable += 1;
        else {
          // 16-bit wrap: the code repeats every 65.5 s, far above any latency;
          // read the difference as signed so clock jitter cannot wrap around.
          let delay = (Math.round(shownAt) - value + 0x10000) & 0xffff;
          if (delay >= 0x8000) delay -= 0x10000;
          bench.samples.push(delay);
        }
        video.requestVideoFrameCallback(onFrame);
      };
      video.requestVideoFrameCallback(onFrame);
    }
  };
  const start = () => {
    new MutationObserver(watch).observe(document.body, { childList: true, subtree: true });
    watch();
  };
  if (document.body) start();
  else document.addEventListener('DOMContentLoaded', start);
}

async function participant(browser, name, receiver) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 820 } });
  await context.addInitScript(timecodeMedia, { W, H, COLS, ROWS });
  if (receiver) await context.addInitScript(receiverProbe, { W, H, COLS, ROWS });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (err) => errors.push(err));
  return { name, context, page, errors };
}

function percentile(sorted, p) {
  if (!sorted.length) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

const browser = await launch();
let exitCode = 0;
try {
  const host = await participant(browser, 'Bench Host', false);
  const guest = await participant(browser, 'Bench Guest', true);
  const invite = await createStageViaUi(host, 0);
  await waitJoined(host.page);
  const guestInvite = new URL(invite);
  if (GUEST_BASE) guestInvite.host = new URL(GUEST_BASE).host;
  await joinViaInvite(guest, guestInvite.toString(), 1);
  await waitJoined(guest.page);
  if (GUEST_BASE) {
    // What is measured is a guest whose node is not the media node: the
    // stage must live on the host's node only.
    const here = await stagesOn({ base: BASE, apiKey: process.env.STAGECAST_API_KEY });
    const there = await stagesOn({ base: GUEST_BASE, apiKey: process.env.STAGECAST_GUEST_API_KEY });
    if (here !== 1 || there !== 0) {
      throw new Error(`the stage should live on the host's node only: stagecast_stages ${here} there, ${there} on the guest's node`);
    }
  }

  const deadline = Date.now() + TIMEOUT_MS;
  let bench;
  for (;;) {
    bench = await guest.page.evaluate(() => ({ ...window.__bench, samples: window.__bench.samples.slice() }));
    if (bench.samples.length >= FRAMES || Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  const errors = [...host.errors, ...guest.errors].map(String);
  if (errors.length) throw new Error(`page errors during the benchmark:\n${errors.join('\n')}`);
  if (bench.samples.length < FRAMES) {
    throw new Error(`only ${bench.samples.length} decodable frames within ${TIMEOUT_MS} ms (undecodable: ${bench.undecodable})`);
  }

  const sorted = bench.samples.slice().sort((a, b) => a - b);
  const joinToFrame =
    bench.joinAt !== null && bench.firstFrameAt !== null ? Math.round(bench.firstFrameAt - bench.joinAt) : NaN;
  const result = {
    glass_frames: sorted.length,
    glass_undecodable: bench.undecodable,
    glass_p50_ms: percentile(sorted, 50),
    glass_p95_ms: percentile(sorted, 95),
    glass_min_ms: sorted[0],
    glass_max_ms: sorted[sorted.length - 1],
    join_to_first_frame_ms: joinToFrame,
    guest_on_other_node: Boolean(GUEST_BASE),
  };
  console.log('stage latency:', JSON.stringify(result));
  if (process.env.BENCH_OUT) {
    writeFileSync(process.env.BENCH_OUT, Object.entries(result).map(([k, v]) => `${k} ${v}`).join('\n') + '\n');
  }
} catch (err) {
  console.error(String(err && err.stack ? err.stack : err));
  exitCode = 1;
} finally {
  await browser.close();
}
process.exit(exitCode);
