// A live channel behind a standard HTTP cache, shared by the journeys that
// put Debian's nginx (the config of README "Behind an HTTP cache") in front
// of one server (tests/nginx-cache.test.mjs) or of two nodes
// (tests/nginx-nodes.test.mjs): hls.js players (10 per page, low latency
// mode, each on a host name of its own so none waits for a connection)
// watch one low-bitrate broadcast through nginx, and
// - every player's video advances (time and decoded frames; on a busy
//   2-core machine 50 decoders play slower than real time, so at least a
//   quarter of the watched time);
// - the origin is asked for each part at most twice, and for each blocking
//   playlist reload about as rarely, counted in nginx's access log (a
//   request that went upstream has an `$upstream_addr`) and cross-checked
//   against the ingest server's own `stagecast_hls_requests_total`.
// The pages' own HTTP cache is off (DevTools' "disable cache"), so every
// player's request reaches nginx, as separate browsers' would.
// STAGECAST_KEEP_NGINX=1 keeps nginx's config, access log and cache.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync, chmodSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, launch, sleep } from './lib.mjs';

/** A control-plane call to `env.base` with `env.apiKey`: `{ status, body, text }`. */
async function api(env, method, path, body) {
  const res = await fetch(`${env.base}${path}`, {
    method,
    headers: { Authorization: `Bearer ${env.apiKey}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed = null;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON
  }
  return { status: res.status, body: parsed, text };
}

export const NGINX = '/usr/sbin/nginx';
export const PER_PAGE = 10;
export const WATCH_MS = 20_000;

const PUBLISHER_HTML = `<!doctype html>
<html><head><meta charset="utf-8"><title>publisher</title></head>
<body>
<script type="module">
import IVSBroadcastClient from '/sdk/index.js';
const canvas = document.createElement('canvas');
canvas.width = 320;
canvas.height = 180;
const ctx = canvas.getContext('2d');
let n = 0;
setInterval(() => {
  ctx.fillStyle = 'hsl(' + ((n * 7) % 360) + ', 80%, 50%)';
  ctx.fillRect(0, 0, 320, 180);
  n += 1;
}, 66);
window.goLive = async (streamKey, ingestEndpoint) => {
  const client = IVSBroadcastClient.create({
    streamConfig: { maxResolution: { width: 320, height: 180 }, maxFramerate: 15, maxBitrate: 200 },
    ingestEndpoint,
  });
  await client.addImageSource(canvas, 'colours', { index: 0 });
  await client.startBroadcast(streamKey);
};
window.ready = true;
</script>
</body></html>`;

// Run in a page the server really served: Chromium lets a page reach a
// loopback address (nginx) only from one that came from the loopback
// itself, not from one a test route made up.
const VIEWERS_SCRIPT = `
import { Hls } from '/dist/players.js';
window.start = (urls) => {
  window.players = urls.map((url) => {
    const video = document.createElement('video');
    video.muted = true;
    video.playsInline = true;
    video.width = 64;
    video.height = 36;
    document.body.append(video);
    const hls = new Hls({ lowLatencyMode: true, backBufferLength: 4 });
    const p = { video, hls, fatal: [], errors: {} };
    hls.on(Hls.Events.ERROR, (_, d) => { p.errors[d.details] = (p.errors[d.details] || 0) + 1; if (d.fatal) p.fatal.push([d.details, d.response && d.response.code, d.error && d.error.message].join(' ')); });
    hls.on(Hls.Events.MANIFEST_PARSED, () => video.play().catch(() => {}));
    hls.loadSource(url);
    hls.attachMedia(video);
    return p;
  });
};
window.sample = () => window.players.map((p) => ({
  time: p.video.currentTime,
  frames: p.video.getVideoPlaybackQuality().totalVideoFrames,
  fatal: p.fatal,
  errors: p.errors,
  latency: p.hls.latency,
}));
window.ready = true;
`;


/**
 * The inside of the `http {}` block: README "Behind an HTTP cache", with
 * the paths of `dir` and the origins (host:port) in one upstream.
 */
function nginxConfig(dir, port, origins) {
  return `    log_format cache '$upstream_cache_status "$request_uri" $status "$upstream_addr" $request_time';
    access_log ${dir}/access.log cache;

    # --- README "Behind an HTTP cache" ---
    proxy_cache_path ${dir}/cache levels=1:2 keys_zone=hls:10m max_size=1g inactive=1m use_temp_path=off;
    upstream stagecast {
${origins.map((o) => `        server ${o};`).join('\n')}
        keepalive 32;
    }
    server {
        listen 127.0.0.1:${port};
        location /hls/ {
            proxy_pass http://stagecast;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache hls;
            proxy_cache_key $scheme$proxy_host$request_uri;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 10s;
            proxy_cache_lock_age 10s;
            proxy_read_timeout 30s;
            add_header X-Cache-Status $upstream_cache_status always;
        }
    }
    # --- end ---
`;
}

/** nginx in front of `origins` (host:port each), with its own config, pid, logs and cache under a temp dir; `stop()` ends it. */
export async function startNginx(origins) {
  return runNginx((dir, port) => nginxConfig(dir, port, origins));
}

/**
 * nginx whose `http {}` block holds what `http(dir, port)` makes (its paths
 * under the temp dir `dir`, listening on 127.0.0.1:`port`, `givenPort` or a
 * free one); pid, logs and temp paths are under `dir` too,
 * once it answers on `port`:
 * `{ dir, port, stop, log }`. Killed when the test process exits.
 */
export async function runNginx(http, givenPort) {
  const dir = mkdtempSync(join(tmpdir(), 'stagecast-nginx-'));
  // Run as root, nginx's workers run as nobody and create the cache here.
  chmodSync(dir, 0o755);
  const port = givenPort || (await freePort('tcp'));
  writeFileSync(
    `${dir}/nginx.conf`,
    `daemon off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log info;
events { worker_connections 4096; }
http {
    client_body_temp_path ${dir}/client_body;
    proxy_temp_path ${dir}/proxy_temp;
    fastcgi_temp_path ${dir}/fastcgi_temp;
    uwsgi_temp_path ${dir}/uwsgi_temp;
    scgi_temp_path ${dir}/scgi_temp;
${http(dir, port)}}
`,
  );
  const child = spawn(NGINX, ['-p', dir, '-c', `${dir}/nginx.conf`, '-e', `${dir}/error.log`], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const stopOnExit = () => child.kill('SIGKILL');
  process.on('exit', stopOnExit);
  const stop = () =>
    new Promise((resolve) => {
      process.off('exit', stopOnExit);
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once('exit', resolve);
      child.kill('SIGTERM');
    });
  for (let i = 0; i < 100; i += 1) {
    if (child.exitCode !== null) break;
    try {
      await fetch(`http://127.0.0.1:${port}/`);
      return { dir, port, stop, log: () => readFileSync(`${dir}/access.log`, 'utf8') };
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  await stop();
  let errors = '';
  try {
    errors = readFileSync(`${dir}/error.log`, 'utf8');
  } catch {
    // none written
  }
  throw new Error(`nginx did not start: ${stderr} ${errors}`);
}

/** `stagecast_hls_requests_total` by kind, from the /metrics of the server at `base`. */
async function hlsRequests(base, apiKey) {
  const res = await fetch(`${base}/metrics`, { headers: { Authorization: `Bearer ${apiKey}` } });
  assert.equal(res.status, 200, 'metrics');
  const counts = {};
  for (const m of (await res.text()).matchAll(/^stagecast_hls_requests_total\{kind="(\w+)"\} (\d+)$/gm)) counts[m[1]] = Number(m[2]);
  return counts;
}

/** Busy and total CPU time of this machine (all cores), from os.cpus(). */
function cpuTimes() {
  let busy = 0;
  let total = 0;
  for (const c of cpus()) {
    const t = c.times;
    busy += t.user + t.nice + t.sys + t.irq;
    total += t.user + t.nice + t.sys + t.irq + t.idle;
  }
  return { busy, total };
}

/**
 * The access log's HLS lines for `path` (the channel's `/hls/{id}/`),
 * grouped by kind: for each kind, how many URLs, how many requests nginx
 * got and how many it sent to the server, and the URL sent most often.
 */
function originRequests(log, path) {
  const kinds = {};
  for (const line of log.split('\n')) {
    const m = /^(\S+) "([^"]+)" (\d+) "([^"]*)"/.exec(line);
    if (!m || !m[2].startsWith(path)) continue;
    const [, , uri, , upstream] = m;
    const file = uri.slice(path.length);
    const kind = /(^|\/)part\d+\.\d+\.m4s$/.test(file)
      ? 'part'
      : /media\.m3u8\?.*_HLS_msn=/.test(file)
        ? 'blocking playlist'
        : /\.m3u8/.test(file)
          ? 'playlist'
          : /seg\d+\.m4s$/.test(file)
            ? 'segment'
            : /(^|\/)init\d*\.mp4(\?|$)/.test(file)
              ? 'init'
              : 'other';
    const k = (kinds[kind] ||= { urls: new Map(), requests: 0, origin: 0 });
    const u = k.urls.get(uri) || { requests: 0, origin: 0 };
    u.requests += 1;
    k.requests += 1;
    if (upstream && upstream !== '-') {
      u.origin += 1;
      k.origin += 1;
    }
    k.urls.set(uri, u);
  }
  const out = {};
  for (const [kind, k] of Object.entries(kinds)) {
    let worst = ['', { origin: 0 }];
    for (const e of k.urls) if (e[1].origin > worst[1].origin) worst = e;
    out[kind] = {
      urls: k.urls.size,
      requests: k.requests,
      origin: k.origin,
      originPerUrl: Number((k.origin / k.urls.size).toFixed(2)),
      worst: `${worst[0]} ×${worst[1].origin}`,
    };
  }
  return out;
}

/**
 * The journey: `pages` × PER_PAGE hls.js players watch one broadcast
 * through nginx in front of the servers `setup()` starts (or names):
 * `{ base, apiKey, origins, teardown }` — the channel is created and
 * ingested on `base`, nginx's upstream is `origins` (host:port each), and
 * `base`'s /metrics counts what reached the origin.
 */
export function cachedViewersSuite(title, pageCount, setup) {
describe(title, { timeout: 300_000 }, () => {
  let env;
  let browser;
  let nginx;
  let channel;
  let streamKey;
  const errors = [];
  const logs = [];

  before(async () => {
    assert.ok(existsSync(NGINX), `${NGINX} is missing: run \`cargo xtask setup\` (it installs Debian's nginx)`);
    env = await setup();
    nginx = await startNginx(env.origins);
    browser = await launch();
    const created = await api(env, 'POST', '/v1/channels', { name: 'Cached show' });
    assert.equal(created.status, 200, created.text);
    channel = created.body.channel;
    streamKey = created.body.streamKey;
  });

  after(async () => {
    for (const line of logs) console.log(line);
    await browser?.close();
    await nginx?.stop();
    if (channel) await api(env, 'DELETE', `/v1/channels/${channel.id}`).catch(() => {});
    if (nginx && !process.env.STAGECAST_KEEP_NGINX) rmSync(nginx.dir, { recursive: true, force: true });
    await env?.teardown?.();
  });

  it('every viewer plays, and the server is asked for each part at most twice', async () => {
    const PUBLISHER = `${env.base}/__nginx-publisher.html`;
    const context = await browser.newContext();
    await context.route(PUBLISHER, (r) => r.fulfill({ status: 200, contentType: 'text/html', body: PUBLISHER_HTML }));
    const publisher = await context.newPage();
    publisher.on('pageerror', (err) => errors.push(`publisher: ${err}`));
    await publisher.goto(PUBLISHER);
    await publisher.waitForFunction(() => window.ready === true, null, { timeout: 30000 });
    await publisher.evaluate(([k, e]) => window.goLive(k, e), [streamKey, channel.ingestEndpoint]);

    const path = new URL(channel.playbackUrl).pathname;
    const hlsDir = path.slice(0, path.lastIndexOf('/') + 1);
    // The first viewer waits for media, so the rest join a stream that plays.
    const first = await fetch(`http://127.0.0.1:${nginx.port}${path}`);
    assert.equal(first.status, 200, `the playlist through nginx: ${first.status} ${await first.text()}`);

    const before = await hlsRequests(env.base, env.apiKey);
    const cpuBefore = cpuTimes();
    const pages = [];
    for (let i = 0; i < pageCount; i += 1) {
      const ctx = await browser.newContext();
      const page = await ctx.newPage();
      page.on('pageerror', (err) => errors.push(`viewers ${i}: ${err}`));
      page.on('console', (msg) => {
        if (msg.type() === 'error' && logs.length < 20) logs.push(`viewers ${i}: ${msg.text()}`);
      });
      // Every request reaches nginx, as from separate browsers.
      const cdp = await ctx.newCDPSession(page);
      await cdp.send('Network.enable');
      await cdp.send('Network.setCacheDisabled', { cacheDisabled: true });
      await page.goto(`${env.base}/healthz`);
      await page.addScriptTag({ type: 'module', content: VIEWERS_SCRIPT });
      await page.waitForFunction(() => window.ready === true, null, { timeout: 30000 });
      // A host name per player (Chromium resolves *.localhost to loopback):
      // six connections per host would otherwise queue ten players' held
      // blocking reloads behind each other.
      const urls = Array.from({ length: PER_PAGE }, (_, k) => `http://v${i * PER_PAGE + k}.localhost:${nginx.port}${path}`);
      await page.evaluate((u) => window.start(u), urls);
      pages.push(page);
    }

    // Everyone plays: the first samples once all have started, the last WATCH_MS later.
    const sampleAll = async () => (await Promise.all(pages.map((p) => p.evaluate(() => window.sample())))).flat();
    const deadline = Date.now() + 30000;
    let start = await sampleAll();
    while (start.some((s) => s.frames === 0) && Date.now() < deadline) {
      await sleep(500);
      start = await sampleAll();
    }
    const waiting = start.filter((s) => s.frames === 0).length;
    assert.equal(waiting, 0, `${waiting} of ${start.length} players had no frame within 30 s: ${JSON.stringify(start)}`);
    const cpuStart = cpuTimes();
    await sleep(WATCH_MS);
    const end = await sampleAll();
    const cpuEnd = cpuTimes();
    const after = await hlsRequests(env.base, env.apiKey);

    const advanced = end.map((s, i) => ({ i, time: s.time - start[i].time, frames: s.frames - start[i].frames, fatal: s.fatal, latency: s.latency }));
    // Advancing, not real time: on a busy 2-core machine 50 decoders fall behind.
    const stuck = advanced.filter((a) => a.time < WATCH_MS / 4000 || a.frames < 30 || a.fatal.length);
    const played = advanced.map((a) => a.time).sort((a, b) => a - b);
    const load = (a, b) => Math.round((100 * (b.busy - a.busy)) / (b.total - a.total));
    const latencies = end.map((s) => s.latency).filter((l) => Number.isFinite(l)).sort((a, b) => a - b);
    const counted = originRequests(nginx.log(), hlsDir);
    const server = Object.fromEntries(Object.keys(after).map((k) => [k, after[k] - (before[k] || 0)]));
    console.log(
      JSON.stringify({
        viewers: end.length,
        cpuPercentWhileWatching: load(cpuStart, cpuEnd),
        cpuPercentJoinAndWatch: load(cpuBefore, cpuEnd),
        cores: cpus().length,
        playedSeconds: {
          min: played[0].toFixed(1),
          median: played[played.length >> 1].toFixed(1),
          max: played[played.length - 1].toFixed(1),
          of: WATCH_MS / 1000,
        },
        latencyMedian: latencies[latencies.length >> 1],
        playerErrors: end.reduce((all, s) => {
          for (const [k, n] of Object.entries(s.errors)) all[k] = (all[k] || 0) + n;
          return all;
        }, {}),
        nginx: counted,
        serverRequestsByKind: server,
      }),
    );
    assert.deepEqual(stuck, [], `every viewer's video advances over ${WATCH_MS / 1000} s`);

    const parts = counted.part;
    assert.ok(parts && parts.urls >= 20, `players fetched parts through nginx: ${JSON.stringify(counted)}`);
    // Players that fall behind on a busy machine fetch whole segments instead of parts,
    // so sharing is counted over both: many player requests per origin fetch.
    const media = ['part', 'segment'].map((k) => counted[k] || { requests: 0, origin: 0 });
    const shared = media.reduce((n, m) => n + m.requests, 0) / media.reduce((n, m) => n + m.origin, 0);
    assert.ok(shared >= 5, `each part or segment fetched from the origin served several players (${shared.toFixed(1)}): ${JSON.stringify(counted)}`);
    assert.ok(parts.originPerUrl <= 2, `origin requests per part ≤ 2: ${JSON.stringify(parts)}`);
    assert.ok(!counted.segment || counted.segment.originPerUrl <= 2, `origin requests per segment ≤ 2: ${JSON.stringify(counted.segment)}`);
    // The server counts the same: what nginx sent upstream, no more.
    assert.ok(server.part / parts.urls <= 2, `the server answered ${server.part} part requests for ${parts.urls} parts`);
    // The playlist names the init by its content (`?v=`): cached for good, fetched once for everyone.
    assert.ok(counted.init && counted.init.originPerUrl <= 2, `origin requests per init ≤ 2: ${JSON.stringify(counted.init)}`);
    const reloads = counted['blocking playlist'];
    assert.ok(reloads && reloads.originPerUrl <= 2, `origin requests per blocking reload ≤ 2: ${JSON.stringify(reloads)}`);
    assert.deepEqual(errors, [], 'page errors');
  });
});
}
