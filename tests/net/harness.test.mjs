// The harness's own test: each impairment does to a host's traffic exactly
// what it says (measured with a small probe on both ends, no browser), a
// browser started through a host's wrapper really sits at that host's
// address, and nothing of a run is left behind — after close() and after a
// run that died without cleaning up.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch } from '../lib.mjs';
import { createHmac } from 'node:crypto';
import { createNet, TURN_PORT } from './netns.mjs';

const PROBE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'probe.mjs');
const PORT = 7000;
const OTHER_PORT = 7001;
const TLS_PORT = 7443;

/**
 * In a page: two peer connections that may use only relay candidates from
 * `iceServers` open a data channel to each other. Resolves with the relay
 * candidates gathered and whether a message crossed.
 */
function relayLoop(iceServers) {
  return new Promise((resolve) => {
    const config = { iceServers, iceTransportPolicy: 'relay' };
    const a = new RTCPeerConnection(config);
    const b = new RTCPeerConnection(config);
    const relays = [];
    const relay = (from, to) => (e) => {
      if (!e.candidate) return;
      if (e.candidate.type === 'relay') relays.push(`${e.candidate.address}:${e.candidate.port}`);
      to.addIceCandidate(e.candidate).catch(() => {});
    };
    a.onicecandidate = relay(a, b);
    b.onicecandidate = relay(b, a);
    const done = (crossed) => {
      a.close();
      b.close();
      resolve({ relays, crossed });
    };
    const timer = setTimeout(() => done(false), 8000);
    b.ondatachannel = (e) => {
      e.channel.onmessage = (m) => {
        clearTimeout(timer);
        done(m.data === 'through the relay');
      };
    };
    const ch = a.createDataChannel('probe');
    ch.onopen = () => ch.send('through the relay');
    (async () => {
      await a.setLocalDescription(await a.createOffer());
      await b.setRemoteDescription(a.localDescription);
      await b.setLocalDescription(await b.createAnswer());
      await a.setRemoteDescription(b.localDescription);
    })();
  });
}

/** Runs the probe inside `host`'s namespace; resolves with its JSON line. */
function probe(host, ...args) {
  return new Promise((resolve, reject) => {
    execFile('ip', ['netns', 'exec', host.ns, process.execPath, PROBE, ...args.map(String)], { timeout: 60000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`probe ${args.join(' ')}: ${err.message} ${stderr}`));
      else resolve(JSON.parse(stdout.trim().split('\n').pop()));
    });
  });
}

describe('the network harness', { timeout: 180_000 }, () => {
  let net;
  let blue;
  let srv;

  before(async () => {
    net = createNet();
    blue = net.host('blue');
    srv = net.serverHost;
    for (const port of [PORT, OTHER_PORT]) {
      const child = net.spawnIn(srv.ns, process.execPath, [PROBE, 'serve', srv.ip, port], path.join(net.dir, `probe-${port}.log`));
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(child.exitCode, null, 'the probe server runs');
    }
    // Wait until both listen.
    for (let i = 0; i < 50; i += 1) {
      const [a, b] = await Promise.all([probe(blue, 'tcp', srv.ip, PORT), probe(blue, 'tcp', srv.ip, OTHER_PORT)]);
      if (a.ok && b.ok) return;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    throw new Error('the probe servers did not listen');
  });

  after(async () => {
    await net?.close();
  });

  it('an open network carries UDP and TCP', async () => {
    const u = await probe(blue, 'udp', srv.ip, PORT, 200);
    assert.ok(u.received >= 198, `UDP round trips: ${JSON.stringify(u)}`);
    assert.deepEqual(await probe(blue, 'tcp', srv.ip, PORT), { ok: true });
  });

  it('blockUdp drops UDP and leaves TCP', async () => {
    blue.blockUdp();
    assert.equal((await probe(blue, 'udp', srv.ip, PORT, 50)).received, 0, 'no UDP gets through');
    assert.deepEqual(await probe(blue, 'tcp', srv.ip, PORT), { ok: true });
    blue.clear();
    assert.ok((await probe(blue, 'udp', srv.ip, PORT, 50)).received >= 49, 'clear() lets UDP through again');
  });

  it('blockTcpTo drops TCP to one port only', async () => {
    blue.blockTcpTo(srv.ip, PORT);
    assert.deepEqual(await probe(blue, 'tcp', srv.ip, PORT), { ok: false });
    assert.deepEqual(await probe(blue, 'tcp', srv.ip, OTHER_PORT), { ok: true });
    assert.ok((await probe(blue, 'udp', srv.ip, PORT, 50)).received >= 49, 'UDP still flows');
    blue.clear();
  });

  it('loss drops about that share of packets each way', async () => {
    blue.loss(0.2);
    const u = await probe(blue, 'udp', srv.ip, PORT, 1000);
    blue.clear();
    // A round trip survives both directions: 0.8 × 0.8 = 0.64.
    const share = u.received / u.sent;
    assert.ok(share > 0.56 && share < 0.72, `round trips through 20 % loss each way: ${share.toFixed(3)} (expected ≈ 0.64)`);
  });

  it('rateLimit caps what the host receives and what it sends', async () => {
    blue.rateLimit({ downKbit: 2000, upKbit: 1000 });
    const down = await probe(blue, 'download', srv.ip, PORT, 400_000);
    const up = await probe(blue, 'upload', srv.ip, PORT, 200_000);
    blue.clear();
    const free = await probe(blue, 'download', srv.ip, PORT, 4_000_000);
    console.log(`tbf: down ${down.kbit} kbit/s (2000), up ${up.kbit} kbit/s (1000), unlimited ${free.kbit} kbit/s`);
    assert.ok(down.kbit > 1500 && down.kbit < 2300, `download at 2000 kbit/s: ${JSON.stringify(down)}`);
    assert.ok(up.kbit > 750 && up.kbit < 1150, `upload at 1000 kbit/s: ${JSON.stringify(up)}`);
    assert.ok(free.kbit > 20000, `no limit after clear(): ${JSON.stringify(free)}`);
  });

  it('linkDown cuts the host off until linkUp', async () => {
    blue.linkDown();
    const carrier = execFileSync('ip', ['-n', blue.ns, 'link', 'show', 'eth0'], { encoding: 'utf8' });
    assert.match(carrier, /NO-CARRIER/, 'the host sees its link go down');
    assert.deepEqual(await probe(blue, 'tcp', srv.ip, PORT), { ok: false });
    assert.equal((await probe(blue, 'udp', srv.ip, PORT, 20)).received, 0);
    blue.linkUp();
    let back = false;
    for (let i = 0; i < 20 && !back; i += 1) back = (await probe(blue, 'tcp', srv.ip, PORT)).ok;
    assert.ok(back, 'reachable again after linkUp');
  });

  it('blackhole drops everything while the link stays up', async () => {
    blue.blackhole(true);
    assert.doesNotMatch(execFileSync('ip', ['-n', blue.ns, 'link', 'show', 'eth0'], { encoding: 'utf8' }), /NO-CARRIER/);
    assert.deepEqual(await probe(blue, 'tcp', srv.ip, PORT), { ok: false });
    assert.equal((await probe(blue, 'udp', srv.ip, PORT, 20)).received, 0);
    blue.blackhole(false);
    assert.deepEqual(await probe(blue, 'tcp', srv.ip, PORT), { ok: true });
  });

  it('allowOnly lets through only the listed destinations', async () => {
    blue.allowOnly([{ ip: srv.ip, port: PORT }]);
    assert.deepEqual(await probe(blue, 'tcp', srv.ip, PORT), { ok: true });
    assert.deepEqual(await probe(blue, 'tcp', srv.ip, OTHER_PORT), { ok: false });
    assert.equal((await probe(blue, 'udp', srv.ip, PORT, 20)).received, 0, 'UDP to the allowed port is not allowed');
    blue.clear();
    assert.deepEqual(await probe(blue, 'tcp', srv.ip, OTHER_PORT), { ok: true });
  });

  it("a browser started through the host's wrapper is at the host's address", async () => {
    const browser = await launch({ executablePath: blue.chromium() });
    try {
      const page = await browser.newPage();
      await page.goto(`http://${srv.ip}:${PORT}/`);
      assert.equal((await page.textContent('body')).trim(), blue.ip, 'the server sees the browser at its host address');
    } finally {
      await browser.close();
    }
  });

  it('coturn relays for a host that may reach only its TCP port, with REST API credentials', async () => {
    const turn = await net.startTurn({ secret: 'harness-secret' });
    blue.allowOnly([{ ip: turn.ip, port: TURN_PORT }]);
    const username = `${Math.floor(Date.now() / 1000) + 600}:harness`;
    const credential = createHmac('sha1', turn.secret).update(username).digest('base64');
    const urls = [`turn:${turn.ip}:${TURN_PORT}?transport=tcp`];
    const browser = await launch({ executablePath: blue.chromium() });
    try {
      const page = await browser.newPage();
      const good = await page.evaluate(relayLoop, [{ urls, username, credential }]);
      assert.ok(good.relays.length > 0 && good.crossed, `a data channel crossed the relay: ${JSON.stringify(good)}`);
      assert.ok(good.relays.every((r) => r.startsWith(`${turn.ip}:`)), `relayed by the test's coturn: ${JSON.stringify(good)}`);
      const bad = await page.evaluate(relayLoop, [{ urls, username, credential: `x${credential}` }]);
      assert.deepEqual(bad, { relays: [], crossed: false }, 'a wrong credential gets no allocation');
    } finally {
      await browser.close();
      blue.clear();
    }
  });

  it('a browser trusts the test certificate by its key hash, and the page is a secure context', async () => {
    const cert = net.certificate();
    net.spawnIn(srv.ns, process.execPath, [PROBE, 'serve-tls', srv.ip, TLS_PORT, cert.cert, cert.key], path.join(net.dir, 'probe-tls.log'));
    for (let i = 0; i < 50 && !(await probe(blue, 'tcp', srv.ip, TLS_PORT)).ok; i += 1) await new Promise((r) => setTimeout(r, 200));
    const url = `https://${srv.ip}:${TLS_PORT}/`;
    const trusting = await launch({ executablePath: blue.chromium(), args: [`--ignore-certificate-errors-spki-list=${cert.spki}`] });
    const plain = await launch({ executablePath: blue.chromium() });
    try {
      const page = await trusting.newPage();
      await page.goto(url);
      assert.deepEqual(await page.evaluate(() => ({ secure: window.isSecureContext, camera: !!navigator.mediaDevices })), { secure: true, camera: true });
      const refused = await plain.newPage().then((p) => p.goto(url).then(() => 'loaded', (err) => err.message));
      assert.match(refused, /ERR_CERT_AUTHORITY_INVALID/, 'without the hash the certificate is not trusted');
    } finally {
      await Promise.all([trusting.close(), plain.close()]);
    }
  });

  it('close() removes every namespace and link, and a dead run is swept', async () => {
    // A leftover of a run whose process no longer exists.
    let dead = 4_000_000;
    while (dead < 4_194_000) {
      try {
        process.kill(dead, 0);
        dead += 1;
      } catch {
        break;
      }
    }
    const stale = `scn${dead}a-hub`;
    execFileSync('ip', ['netns', 'add', stale]);
    const other = createNet();
    const listed = () => execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    assert.doesNotMatch(listed(), new RegExp(`\\b${stale}\\b`), 'the stale namespace was swept');
    await other.close();
    await net.close();
    assert.doesNotMatch(listed(), new RegExp(`\\b${net.id}-`), 'no namespace of this run is left');
    const links = execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' });
    assert.doesNotMatch(links, new RegExp(`${net.id}r`), 'the root leg is gone');
    const routes = execFileSync('ip', ['-4', 'route', 'show'], { encoding: 'utf8' });
    assert.doesNotMatch(routes, new RegExp(`10\\.231\\.${net.subnet}\\.`), 'no route into the test network is left');
  });
});
