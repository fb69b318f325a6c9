// Benchmark: the network journeys' numbers, as medians over several runs
// (issue 9). Each case runs the scenario function the journey in tests/net/
// runs (tests/net/scenarios.mjs), on a fresh private network of namespaces
// each time (tests/net/netns.mjs), and keeps what it measured:
//
//   tcp      a guest whose network drops all UDP joins a stage of two
//            publishers: join() → the first frame of every publisher on its
//            page (the slowest of the two), its media over ICE-TCP
//   turn     the same, the guest reaching only the server's HTTP port and a
//            TURN server's TCP port (coturn): its media through the relay
//   link8    a guest's link is down 8 s: the link's return → media flowing
//            again both ways between it and each other person (the slowest)
//   restart  the server is killed (SIGKILL) and started again: kill → the
//            server answering (restartMs); answering → every participant's
//            media back (recoveryMs); answering → the channel's viewer
//            (hls.js) moving for good again: from when its video started a
//            run of ≥ 3 s without a stall (see watchResume) (broadcastMs;
//            null if not within 20 s of the scenario's end)
//   layerswitch  a subscriber receiving a publisher's top simulcast layer (it starts there)
//            (640×360, noisy canvas) has its downlink cut to 800 kbit/s
//            (tbf): the cut → the lower layer's frames flowing without a
//            stall (see switchedAt); also when the first 320×180 frame came
//
// Run by `cargo xtask bench` / `cargo xtask bench net` as root (namespaces,
// veth pairs, iptables), with STAGECAST_BIN, CHROMIUM_PATH and
// STAGECAST_NET_DIR set as for `cargo xtask test net`. BENCH_RUNS (default 5)
// runs per case; BENCH_CASES (default `tcp,turn,link8,restart,layerswitch`) picks cases.
// Prints one flat `BENCH {json}` line per case (samples as a space-separated
// string) and, if BENCH_OUT is set, writes every run's detail there as JSON.
//
// A benchmark reports a slow number, it does not fail on one; but a run that
// cannot measure (a step times out, the guest's media took another path, a
// page throws) fails the script, with the case and the run in the message.
// Only a layer-switch run whose subscriber never settled on the top layer
// (nothing to fall from yet) is set up again, twice at most (SetupFailed).
// Not a test (not *.test.mjs).

import { writeFileSync } from 'node:fs';
import { assertNoPageErrors, launch, newViewer } from '../lib.mjs';
import { createNet } from '../net/netns.mjs';
import { blockedGuestJoins, expectBlockedGuestPath, linkDrop, serverRestart } from '../net/scenarios.mjs';
import { originFlags, publish, subscribe } from '../net/simulcast-pages.mjs';
import { closeAll, PLAYER_VIDEO } from '../net/stage.mjs';
import { sleep } from '../net/sys.mjs';

const RUNS = Number(process.env.BENCH_RUNS || 5);
const CASES = (process.env.BENCH_CASES || 'tcp,turn,link8,restart,layerswitch').split(',').map((c) => c.trim()).filter(Boolean);

/** Each case: one run on a fresh net → `{ms, ...detail}` (`ms`: the case's number). */
const MEASURE = {
  async tcp(net, out) {
    return blockedGuest(net, out, 'tcp');
  },
  async turn(net, out) {
    return blockedGuest(net, out, 'turn');
  },
  async link8(net, out) {
    const r = await linkDrop(net, out, { downMs: 8000 });
    return { ms: r.recoveryMs, detail: r.detail, leftSeen: r.leftSeen, joinedSeen: r.joinedSeen, blueStates: r.blueStates };
  },
  async restart(net, out) {
    // serverRestart reports restartMs, not when the server answered, and
    // when the viewer plays again only to its 2 s sampling; so, around the
    // harness's own restart, watch the viewer's video in the page (every
    // 100 ms) for it to move for good again (watchResume).
    let restarted = null;
    let viewer = null;
    const restartServer = net.restartServer.bind(net);
    net.restartServer = async (opts) => {
      viewer = out.find((p) => p.page && p.page.url().includes('/watch/'));
      if (!viewer) throw new Error('no watch page to follow the broadcast on');
      await viewer.page.evaluate(watchResume, { selector: PLAYER_VIDEO, ...RESUMED });
      restarted = await restartServer(opts);
      return restarted;
    };
    const r = await serverRestart(net, out);
    const deadline = Date.now() + RESUME_GRACE_MS;
    let resume = await viewer.page.evaluate(() => window.__resume);
    while (resume.at === null && Date.now() < deadline) {
      await sleep(250);
      resume = await viewer.page.evaluate(() => window.__resume);
    }
    const b = r.broadcast;
    return {
      ms: r.recoveryMs,
      restartMs: r.restartMs,
      broadcastMs: resume.at === null ? null : resume.at - restarted.readyAt,
      resume: { ...resume, at: undefined, now: undefined, ms: resume.at === null ? null : resume.at - restarted.readyAt, checkedMs: resume.now - restarted.readyAt },
      broadcast: {
        grid: b.grid.ok ? { ok: true, owners: b.grid.owners } : { ok: false, error: b.grid.error },
        samePlaybackUrl: b.playbackAfter === b.playbackBefore,
        advancing: b.advancing,
        playerStatesSinceKill: b.playerStatesSinceKill.map((s) => ({ state: s.state, ms: s.at - restarted.killedAt })),
        hostLiveState: b.hostLiveState,
      },
      detail: r.detail,
      churn: r.churn,
    };
  },
  async layerswitch(net, out) {
    return layerSwitch(net, out);
  },
};

/** The downlink the subscriber is cut to, and how long the switch may take. */
const SWITCH = { downKbit: 800, timeoutMs: 30000, topTimeoutMs: 60000, onTopMs: 3000, steadyMs: 1000, stallMs: 300 };

async function layerSwitch(net, out) {
  await net.startServer();
  const stage = await net.request('POST', '/v1/stages', { name: 'layer-switch' });
  if (!(stage.status >= 200 && stage.status < 300)) throw new Error(`create stage: ${stage.text}`);
  const token = async (userId) => {
    const res = await net.request('POST', `/v1/stages/${stage.body.stage.id}/tokens`, { userId });
    if (!(res.status >= 200 && res.status < 300)) throw new Error(`token: ${res.text}`);
    return res.body.participantToken.token;
  };
  const subHost = net.host('sub');
  const pubBrowser = await launch({ executablePath: net.host('pub').chromium(), args: originFlags(net) });
  const subBrowser = await launch({ executablePath: subHost.chromium(), args: originFlags(net) });
  const pub = { ...(await newViewer(pubBrowser, 'pub')), browser: pubBrowser };
  const sub = { ...(await newViewer(subBrowser, 'sub')), browser: subBrowser };
  out.push(pub, sub);
  await publish(pub, net, await token('pub'));
  // It starts on the top layer (`initialLayerPreference`): this case times
  // the fall; the climb on a loaded 2-core machine is the simulcast
  // journey's (todo) check.
  await subscribe(sub, net, await token('sub'), { initial: 'highest_quality' });
  // Unlimited, it gets to the top layer first, and stays there.
  await sub.page.waitForFunction(() => window.__sub.remotes.size === 1, null, { timeout: SWITCH.topTimeoutMs });
  await sub.page.evaluate(trackDecoding);
  const top = Date.now();
  let onTop = await sub.page.evaluate(topSince, SWITCH);
  while (!(onTop.since !== null && Date.now() - onTop.since >= SWITCH.onTopMs) && Date.now() - top < SWITCH.topTimeoutMs) {
    await sleep(250);
    onTop = await sub.page.evaluate(topSince, SWITCH);
  }
  if (onTop.since === null || Date.now() - onTop.since < SWITCH.onTopMs) {
    // What the publisher sends per layer, and why its encoder holds back.
    const sent = await pub.page.evaluate(publisherLayers);
    throw new SetupFailed(
      `the unlimited subscriber did not stay on the 640×360 layer for ${SWITCH.onTopMs / 1000} s within ${SWITCH.topTimeoutMs / 1000} s: ` +
        `${JSON.stringify(onTop)}; the publisher sends ${JSON.stringify(sent)}`,
    );
  }
  const topMs = onTop.since - top;
  const cutAt = Date.now();
  subHost.rateLimit({ downKbit: SWITCH.downKbit });
  let r = await sub.page.evaluate(switchedAt, { cutAt, ...SWITCH });
  while (r.at === null && Date.now() - cutAt < SWITCH.timeoutMs) {
    await sleep(250);
    r = await sub.page.evaluate(switchedAt, { cutAt, ...SWITCH });
  }
  if (r.at === null) throw new Error(`no steady lower layer ${SWITCH.timeoutMs / 1000} s after the cut: ${JSON.stringify(r)}`);
  return { ms: r.at - cutAt, firstLowMs: r.firstLow - cutAt, topAfterJoinMs: topMs, widths: r.widths, stallsAfterCut: r.stalls };
}

/** In the publisher's page: per simulcast layer, its size, frame rate, whether it is sent, and the encoder's limit. */
async function publisherLayers() {
  const stats = await window.__pub.stream.requestRTCStats();
  const out = [];
  stats.forEach((s) => {
    if (s.type === 'outbound-rtp' && s.kind === 'video') {
      out.push({ rid: s.rid, w: s.frameWidth, fps: s.framesPerSecond, active: s.active, limit: s.qualityLimitationReason, bytes: s.bytesSent });
    }
    if (s.type === 'candidate-pair' && s.nominated) out.push({ availableOutgoingBitrate: s.availableOutgoingBitrate });
  });
  return out;
}

/** In the subscriber's page: its one remote video's size and frames, every 100 ms, into `window.__decoding`. */
function trackDecoding() {
  const [remote] = window.__sub.remotes.values();
  const samples = [];
  window.__decoding = samples;
  setInterval(async () => {
    const stats = await remote.stream.requestRTCStats();
    stats.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') samples.push({ t: Date.now(), w: s.frameWidth || 0, frames: s.framesDecoded || 0 });
    });
  }, 100);
}

/** In the subscriber's page: since when every frame decoded has been of the top layer (640 wide), and the widths seen. */
function topSince() {
  const samples = window.__decoding;
  let since = null;
  for (let i = 1; i < samples.length; i += 1) {
    if (samples[i].w !== 640) since = null;
    else if (since === null) since = samples[i].t;
  }
  const tail = samples.slice(-50).map((s) => s.w);
  const [remote] = window.__sub.remotes.values();
  return {
    since,
    lastWidths: tail.filter((w, i) => i === 0 || w !== tail[i - 1]),
    selected: remote?.stream.getSelectedLayer()?.label ?? null,
    layers: remote?.stream.getLayers().map((l) => `${l.label}:${l.width}x${l.height}@${l.bitrate ?? '?'}`),
    layerEvents: window.__sub.layerEvents.slice(-12),
  };
}

/**
 * In the subscriber's page: when, after `cutAt`, the first frame of a lower
 * layer (width below 640) was decoded (`firstLow`), and when the lower
 * layer's frames started to flow steadily (`at`): the start of the first
 * `steadyMs` in which new frames, all of the lower layer, came at least
 * every `stallMs`. `null` until then.
 */
function switchedAt({ cutAt, steadyMs, stallMs }) {
  const samples = window.__decoding.filter((s) => s.t >= cutAt);
  let firstLow = null;
  let run = null;
  let lastNew = null;
  let stalls = 0;
  for (let i = 1; i < samples.length; i += 1) {
    const [prev, s] = [samples[i - 1], samples[i]];
    const low = s.w > 0 && s.w < 640;
    if (low && firstLow === null) firstLow = s.t;
    if (s.frames > prev.frames) {
      if (lastNew !== null && s.t - lastNew > stallMs) {
        stalls += 1;
        run = null;
      }
      lastNew = s.t;
      if (!low) run = null;
      else if (run === null) run = s.t;
    } else if (lastNew !== null && s.t - lastNew > stallMs) {
      run = null;
    }
    if (run !== null && s.t - run >= steadyMs) {
      return { at: run, firstLow, stalls, widths: [...new Set(samples.map((x) => x.w))] };
    }
  }
  return { at: null, firstLow, stalls, widths: [...new Set(samples.map((x) => x.w))], samples: samples.length };
}

/** How long after the scenario the broadcast may still come back. */
const RESUME_GRACE_MS = 20000;

/** Movement of the viewer's video that counts as the broadcast playing again. */
const RESUMED = { wallMs: 3000, positionS: 2, stallMs: 500, pastBufferS: 1 };

/**
 * In the watch page, from the kill on: `window.__resume.at` becomes the time
 * the viewer's video started moving for good again, i.e. the start of the
 * first run of movement that began after the kill and lasted `wallMs`
 * (advancing `positionS`, never still for `stallMs`: a stall means what was
 * buffered at the kill ran out, so such a run plays media made after it);
 * or, if the video never stalled at all, when its position passed what it had
 * buffered at the kill (once it is `pastBufferS` beyond). The page may start
 * another player (a stuck one is replaced): a new element, or the position
 * back near 0, ends the run in progress like a stall.
 */
function watchResume({ selector, wallMs, positionS, stallMs, pastBufferS }) {
  const bufferedEnd = (v) => (v.buffered.length ? v.buffered.end(v.buffered.length - 1) : 0);
  let video = document.querySelector(selector);
  const end = Math.max(bufferedEnd(video), video.currentTime);
  const state = { bufferedAtKill: end, currentTimeAtKill: video.currentTime, stalls: 0, newPlayer: false, at: null };
  window.__resume = state;
  let previous = video.currentTime;
  let lastMove = Date.now();
  let passedEndAt = null;
  // The run in progress at the kill: only (b) can end it well.
  let run = { since: null, from: previous };
  const tick = () => {
    const now = Date.now();
    const v = document.querySelector(selector);
    const t = v ? v.currentTime : 0;
    if (v && (v !== video || t < previous - 0.5)) {
      state.newPlayer = true;
      video = v;
      run = null;
    } else if (t > previous) {
      lastMove = now;
      if (!run) run = { since: now, from: previous };
    } else if (run && now - lastMove >= stallMs) {
      run = null;
      state.stalls += 1;
    }
    previous = t;
    Object.assign(state, { currentTime: t, bufferedEnd: v ? bufferedEnd(v) : 0, now });
    if (run && run.since === null) {
      if (passedEndAt === null && t > end) passedEndAt = now;
      if (t > end + pastBufferS) state.at = passedEndAt;
    } else if (run && now - run.since >= wallMs && t - run.from >= positionS) {
      state.at = run.since;
    }
    if (state.at === null) setTimeout(tick, 100);
  };
  tick();
}

const LABEL = {
  tcp: 'UDP-blocked guest via ICE-TCP: join() → first frame of every publisher',
  turn: 'UDP-blocked guest via TURN/TCP: join() → first frame of every publisher',
  link8: 'link down 8 s: link back → media back both ways',
  restart: 'server kill -9 + restart: answering again → media back',
  layerswitch: 'simulcast subscriber cut to 800 kbit/s: cut → lower layer flowing without stalls',
};

async function blockedGuest(net, out, via) {
  const r = await blockedGuestJoins(net, out, { via });
  // The number is only the asked-for path's if the guest's media took it.
  const up = await expectBlockedGuestPath(r.people[2], { via });
  return {
    ms: r.timeToMediaMs,
    perPublisher: r.perPublisher,
    path: up.map((pc) => ({ local: pc.pair?.local?.protocol, type: pc.pair?.local?.candidateType, relay: pc.pair?.local?.relayProtocol })),
  };
}

function median(values) {
  const v = [...values].sort((a, b) => a - b);
  if (v.length === 0) return null;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid] : Math.round((v[mid - 1] + v[mid]) / 2);
}

function stats(values) {
  const v = values.filter((x) => Number.isFinite(x));
  return { median: median(v), min: v.length ? Math.min(...v) : null, max: v.length ? Math.max(...v) : null, n: v.length };
}

/**
 * The scenario could not be set up (the layer switch's subscriber never
 * settled on the top layer to fall from): nothing was measured, and the run
 * is set up again, at most SETUP_TRIES times in all; each retry is counted
 * in the run's detail (`setupRetries`).
 */
class SetupFailed extends Error {}
const SETUP_TRIES = 3;

/** One run of `name` on a fresh net; browsers and the net are gone afterwards, whatever happened. */
async function runOnce(name) {
  const out = [];
  let net = null;
  let ok = false;
  try {
    net = createNet();
    const r = await MEASURE[name](net, out);
    assertNoPageErrors(out);
    if (!Number.isFinite(r.ms)) throw new Error(`measured no time: ${JSON.stringify(r)}`);
    ok = true;
    return r;
  } finally {
    await closeAll(net, out, !ok);
    await net?.close();
  }
}

const results = {};

function writeOut(extra = {}) {
  if (!process.env.BENCH_OUT) return;
  writeFileSync(process.env.BENCH_OUT, `${JSON.stringify({ runsPerCase: RUNS, cases: results, ...extra }, null, 2)}\n`);
}

async function main() {
  if (!(RUNS >= 1)) throw new Error(`BENCH_RUNS must be a positive number, got ${process.env.BENCH_RUNS}`);
  for (const name of CASES) {
    if (!MEASURE[name]) throw new Error(`unknown case \`${name}\` in BENCH_CASES (cases: ${Object.keys(MEASURE).join(', ')})`);
  }
  for (const name of CASES) {
    const runs = [];
    results[name] = { label: LABEL[name], runs };
    for (let i = 1; i <= RUNS; i += 1) {
      const started = Date.now();
      let r;
      for (let attempt = 1; !r; attempt += 1) {
        try {
          r = await runOnce(name);
          r.setupRetries = attempt - 1;
        } catch (err) {
          if (err instanceof SetupFailed && attempt < SETUP_TRIES) {
            console.log(`net-recovery: ${name} run ${i}/${RUNS}: set up again (${err.message.slice(0, 200)})`);
            continue;
          }
          throw new Error(`${name} run ${i}/${RUNS} could not measure: ${err && err.stack ? err.stack : err}`);
        }
      }
      runs.push(r);
      const extra = name === 'restart' ? ` (restart ${r.restartMs} ms, broadcast ${r.broadcastMs ?? '—'} ms)` : '';
      console.log(`net-recovery: ${name} run ${i}/${RUNS}: ${r.ms} ms${extra}  [${Math.round((Date.now() - started) / 1000)} s]`);
      writeOut();
    }
    const ms = stats(runs.map((r) => r.ms));
    Object.assign(results[name], { median: ms.median, min: ms.min, max: ms.max });
    const line = {
      bench: 'netRecovery',
      case: name,
      runs: runs.length,
      median_ms: ms.median,
      min_ms: ms.min,
      max_ms: ms.max,
      samples_ms: runs.map((r) => r.ms).join(' '),
    };
    if (name === 'restart') {
      const restart = stats(runs.map((r) => r.restartMs));
      const broadcast = stats(runs.map((r) => r.broadcastMs).filter((v) => v !== null));
      Object.assign(line, {
        restart_median_ms: restart.median,
        restart_min_ms: restart.min,
        restart_max_ms: restart.max,
        restart_samples_ms: runs.map((r) => r.restartMs).join(' '),
        broadcast_back_runs: broadcast.n,
        broadcast_median_ms: broadcast.median,
        broadcast_min_ms: broadcast.min,
        broadcast_max_ms: broadcast.max,
        broadcast_samples_ms: runs.map((r) => r.broadcastMs ?? '-').join(' '),
      });
      Object.assign(results[name], { restart, broadcast });
    }
    console.log(`BENCH ${JSON.stringify(line)}`);
  }
  writeOut();
}

main().then(
  () => process.exit(0),
  (err) => {
    writeOut({ error: String(err && err.message ? err.message : err) });
    console.error(`net-recovery: ${err && err.message ? err.message : err}`);
    process.exit(1);
  },
);
