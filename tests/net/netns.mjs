// The network test harness: a private network of Linux network namespaces
// in which the server, a TURN server and every browser each have their own
// host, so a test can break one guest's network the way real networks break
// (UDP blocked, random loss, a slow link, the link gone for a while, only a
// TURN server reachable) and watch what the people on the stage notice.
//
//   root namespace ── scn<pid>r ─┐            (the test runner: readiness and
//                                │             control-plane calls only)
//   scn<pid>-hub:   bridge br0 ──┼── v2 ── eth0 scn<pid>-srv   10.231.N.2  stagecast
//                                ├── v3 ── eth0 scn<pid>-turn  10.231.N.3  coturn
//                                └── vK ── eth0 scn<pid>-<b>   10.231.N.K  Chromium
//
// Everything lives in 10.231.N.0/24 (one /24 of 10.231.0.0/16 per run, N
// unused by the root namespace's routes), a range nothing else here uses.
// Inside its namespace the server owns the whole port space, so it listens
// on fixed ports: a restart comes back on the same address and ports, as a
// real server would.
//
// Impairments are iptables rules, tc qdiscs and link states inside one
// browser's namespace (or on its bridge port), so they touch nothing else.
// Everything is removed by `close()`, on process exit and on SIGINT/SIGTERM;
// namespaces left behind by a run that was SIGKILLed are swept when the next
// run starts (names carry the owning pid).
//
// Needs root, `ip`, `tc`, `iptables` (Debian `iproute2`, `iptables`),
// `turnserver` (Debian `coturn`) for TURN and `openssl` for certificates.
// One host and its impairments: host.mjs; command helpers: sys.mjs.

import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { X509Certificate, createHash, randomBytes } from 'node:crypto';
import { NetHost } from './host.mjs';
import { nsh, sh, sleep, tail, tcpAnswers, waitFor } from './sys.mjs';

export { NetHost };

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const PREFIX = 'scn';
const NET16 = '10.231';
/** Port of the server's HTTP(S) listener inside its namespace. */
export const HTTP_PORT = 8080;
/** The server's media port (UDP, and TCP once ICE-TCP exists). */
export const MEDIA_PORT = 8443;
/** coturn's listening port (TCP and UDP). */
export const TURN_PORT = 3478;

const SERVER_BIN = process.env.STAGECAST_BIN || path.join(ROOT, 'target/debug/stagecast');
const RUN_BASE = process.env.STAGECAST_NET_DIR || path.join(ROOT, 'target/net');

// ---------------------------------------------------------------- processes and namespaces

function pidAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code === 'EPERM';
  }
}

/** Kills every process still inside namespace `ns` (SIGKILL). */
function killNamespacePids(ns) {
  const out = sh('ip', ['netns', 'pids', ns], { allowFail: true }) || '';
  for (const line of out.split('\n')) {
    const pid = Number(line.trim());
    if (pid > 1 && pid !== process.pid) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
}

function deleteNamespace(ns) {
  killNamespacePids(ns);
  sh('ip', ['netns', 'del', ns], { allowFail: true });
}

/** Fails clearly when a tool the harness needs is missing or we are not root. */
function checkPrerequisites() {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new Error('the network tests need root (they create network namespaces, veth pairs, iptables rules); run them as root, as CI does');
  }
  for (const [tool, pkg] of [['ip', 'iproute2'], ['tc', 'iproute2'], ['iptables', 'iptables']]) {
    if (sh('sh', ['-c', `command -v ${tool}`], { allowFail: true }) === null) {
      throw new Error(`\`${tool}\` is missing: install the Debian package ${pkg} (\`cargo xtask setup\` does)`);
    }
  }
}

/**
 * Removes what runs that died without cleaning up left behind: namespaces
 * and root-side links named after a pid that no longer exists, and their
 * run directories.
 */
export function sweepStale() {
  const pattern = new RegExp(`^${PREFIX}(\\d+)[a-z]-`);
  const list = sh('ip', ['netns', 'list'], { allowFail: true }) || '';
  for (const line of list.split('\n')) {
    const name = line.trim().split(/\s+/)[0];
    const m = name && name.match(pattern);
    if (m && !pidAlive(Number(m[1]))) deleteNamespace(name);
  }
  const links = sh('ip', ['-o', 'link', 'show'], { allowFail: true }) || '';
  for (const m of links.matchAll(new RegExp(`^\\d+: (${PREFIX}(\\d+)[a-z]r)[@:]`, 'gm'))) {
    if (!pidAlive(Number(m[2]))) sh('ip', ['link', 'del', m[1]], { allowFail: true });
  }
  let dirs = [];
  try {
    dirs = readdirSync(RUN_BASE);
  } catch {
    dirs = [];
  }
  for (const dir of dirs) {
    const m = dir.match(new RegExp(`^${PREFIX}(\\d+)[a-z]$`));
    if (m && !pidAlive(Number(m[1]))) rmSync(path.join(RUN_BASE, dir), { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- cleanup on exit

const live = new Set();
let netCount = 0;
let handlersInstalled = false;

function installExitHandlers() {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', () => {
    for (const net of [...live]) net.closeSync();
  });
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]]) {
    process.on(signal, () => {
      for (const net of [...live]) net.closeSync();
      process.exit(code);
    });
  }
}

/** A /24 of 10.231.0.0/16 that the root namespace has no route into. */
function pickSubnet() {
  const routes = sh('ip', ['-4', 'route', 'show'], { allowFail: true }) || '';
  const used = new Set([...routes.matchAll(/10\.231\.(\d+)\./g)].map((m) => Number(m[1])));
  if (/10\.231\.0\.0\/16|10\.0\.0\.0\/8/.test(routes)) {
    throw new Error(`the root namespace routes ${NET16}.0.0/16 already; the harness needs it free:\n${routes}`);
  }
  const start = (process.pid % 250) + 1;
  for (let i = 0; i < 250; i += 1) {
    const n = ((start + i - 1) % 250) + 1;
    if (!used.has(n)) return n;
  }
  throw new Error('no free /24 in 10.231.0.0/16');
}

// ---------------------------------------------------------------- the network

/**
 * Creates the private network: the hub with its bridge, the server's
 * namespace and a link from the root namespace (so the test runner can reach
 * the server). Call `close()` when done (a `finally`/`after`); exit and
 * signal handlers and the next run's sweep are the backstops.
 */
export function createNet() {
  checkPrerequisites();
  sweepStale();
  installExitHandlers();
  return new Net();
}

export class Net {
  constructor() {
    // scn<pid><letter>: the pid tells the sweep whether the owner still
    // runs; the letter tells apart nets of one process. `${id}r` (the root
    // leg) must fit the 15 characters of an interface name.
    this.id = `${PREFIX}${process.pid}${String.fromCharCode(97 + (netCount % 26))}`;
    netCount += 1;
    this.subnet = pickSubnet();
    this.dir = path.join(RUN_BASE, this.id);
    rmSync(this.dir, { recursive: true, force: true });
    mkdirSync(this.dir, { recursive: true });
    this.hub = `${this.id}-hub`;
    this.namespaces = [];
    this.hosts = new Map();
    this.nextHost = 10;
    this.server = null;
    this.turn = null;
    this.closed = false;
    live.add(this);
    try {
      this.addNamespace(this.hub);
      sh('ip', ['-n', this.hub, 'link', 'add', 'br0', 'type', 'bridge']);
      sh('ip', ['-n', this.hub, 'link', 'set', 'br0', 'up']);
      // The runner's leg: created in the root namespace, its peer moved to the hub.
      this.rootLink = `${this.id}r`;
      sh('ip', ['link', 'add', this.rootLink, 'type', 'veth', 'peer', 'name', 'v1', 'netns', this.hub]);
      sh('ip', ['-n', this.hub, 'link', 'set', 'v1', 'master', 'br0', 'up']);
      sh('ip', ['addr', 'add', `${this.ip(1)}/24`, 'dev', this.rootLink]);
      sh('ip', ['link', 'set', this.rootLink, 'up']);
      this.serverHost = this.attach('srv', 2);
      this.turnHost = null;
    } catch (err) {
      this.closeSync();
      throw err;
    }
  }

  /** The address `10.231.N.k` of this run. */
  ip(k) {
    return `${NET16}.${this.subnet}.${k}`;
  }

  addNamespace(ns) {
    sh('ip', ['netns', 'add', ns]);
    this.namespaces.push(ns);
    sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  }

  /** A new namespace `<id>-<name>` at 10.231.N.k, plugged into the bridge. */
  attach(name, k) {
    const ns = `${this.id}-${name}`;
    this.addNamespace(ns);
    // IPv4 only, like the server: no IPv6 path may bypass the iptables rules.
    nsh(ns, 'sysctl', ['-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1']);
    nsh(ns, 'sysctl', ['-q', '-w', 'net.ipv6.conf.default.disable_ipv6=1']);
    const port = `v${k}`;
    sh('ip', ['-n', this.hub, 'link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    sh('ip', ['-n', this.hub, 'link', 'set', port, 'master', 'br0', 'up']);
    sh('ip', ['-n', ns, 'addr', 'add', `${this.ip(k)}/24`, 'dev', 'eth0']);
    sh('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
    // An on-link default route: the host looks "online" to the browser;
    // anything not for 10.231.N.0/24 goes unanswered on the bridge.
    sh('ip', ['-n', ns, 'route', 'add', 'default', 'dev', 'eth0']);
    const host = new NetHost(this, name, ns, this.ip(k), port);
    this.hosts.set(name, host);
    return host;
  }

  /** A browser host: its own namespace, address and Chromium wrapper. */
  host(name) {
    if (this.hosts.has(name)) return this.hosts.get(name);
    const k = this.nextHost;
    this.nextHost += 1;
    if (k > 250) throw new Error('too many hosts on one net');
    return this.attach(name, k);
  }

  // ------------------------------------------------------------ certificates

  /**
   * A self-signed certificate for the server's address (made with openssl),
   * and the base64 SHA-256 of its SubjectPublicKeyInfo, which Chromium
   * trusts through `--ignore-certificate-errors-spki-list`.
   */
  certificate() {
    if (this.cert) return this.cert;
    const key = path.join(this.dir, 'tls-key.pem');
    const cert = path.join(this.dir, 'tls-cert.pem');
    const ip = this.serverHost.ip;
    sh('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
      '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=${ip}`,
      '-addext', `subjectAltName=IP:${ip}`,
      '-addext', 'extendedKeyUsage=serverAuth',
    ]);
    const pem = readFileSync(cert, 'utf8');
    const spki = new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' });
    this.cert = { key, cert, pem, spki: createHash('sha256').update(spki).digest('base64') };
    return this.cert;
  }

  // ------------------------------------------------------------ TURN

  /**
   * Starts Debian's coturn in its own namespace (10.231.N.3) with the TURN
   * REST API shared secret (`use-auth-secret`). Returns `{ip, port, secret,
   * urls}`; `urls` are what the server hands out (`--turn-url`).
   */
  async startTurn({ secret = randomBytes(16).toString('hex') } = {}) {
    if (this.turn) return this.turn.info;
    if (sh('sh', ['-c', 'command -v turnserver'], { allowFail: true }) === null) {
      throw new Error('`turnserver` is missing: install the Debian package coturn (`cargo xtask setup` does)');
    }
    this.turnHost = this.attach('turn', 3);
    const ip = this.turnHost.ip;
    const log = path.join(this.dir, 'turn.log');
    const args = [
      '-n', '--no-cli', '--no-tls', '--no-dtls', '--fingerprint',
      '--listening-ip', ip, '--relay-ip', ip, '--listening-port', String(TURN_PORT),
      '--use-auth-secret', '--static-auth-secret', secret, '--realm', 'stagecast.test',
      '--no-multicast-peers', '--min-port', '49152', '--max-port', '65535',
      '--db', path.join(this.dir, 'turndb'), '--pidfile', path.join(this.dir, 'turn.pid'),
      '--log-file', 'stdout', '--simple-log',
    ];
    const child = this.spawnIn(this.turnHost.ns, 'turnserver', args, log);
    this.turn = { child, info: { ip, port: TURN_PORT, secret, urls: [`turn:${ip}:${TURN_PORT}?transport=tcp`, `turn:${ip}:${TURN_PORT}?transport=udp`], log } };
    await waitFor(() => tcpAnswers(ip, TURN_PORT), 15000, () => `coturn did not listen on ${ip}:${TURN_PORT}; ${tail(log, 20)}`, child);
    return this.turn.info;
  }

  // ------------------------------------------------------------ the server

  /**
   * Starts `stagecast` in the server namespace on 10.231.N.2 (HTTP port
   * 8080, media port 8443) with a fresh data dir. `tls: true` serves HTTPS
   * with a test-made certificate; `turn` ({urls, secret}, from
   * `startTurn`) hands TURN credentials to clients; `args` are extra flags.
   */
  async startServer({ tls = false, turn = null, args = [], env = {} } = {}) {
    if (this.server) throw new Error('the server is already running');
    const ip = this.serverHost.ip;
    const dataDir = path.join(this.dir, 'server-data');
    rmSync(dataDir, { recursive: true, force: true });
    mkdirSync(dataDir, { recursive: true });
    const argv = [
      '--listen', `${ip}:${HTTP_PORT}`,
      '--media-port', String(MEDIA_PORT),
      '--media-bind-ip', ip,
      '--public-ip', ip,
      '--data-dir', dataDir,
    ];
    if (tls) {
      const c = this.certificate();
      argv.push('--tls-cert', c.cert, '--tls-key', c.key);
    }
    if (turn) {
      for (const url of turn.urls) argv.push('--turn-url', url);
      argv.push('--turn-secret', turn.secret);
    }
    argv.push(...args);
    this.server = {
      argv,
      env: { STAGECAST_API_KEY: randomBytes(16).toString('hex'), NO_COLOR: '1', RUST_LOG: process.env.RUST_LOG || 'info', ...env },
      tls,
      log: path.join(this.dir, 'server.log'),
      child: null,
      url: `${tls ? 'https' : 'http'}://${ip}:${HTTP_PORT}`,
      starts: 0,
    };
    await this.launchServer();
    return { url: this.server.url, apiKey: this.server.env.STAGECAST_API_KEY, origin: this.server.url };
  }

  async launchServer() {
    const s = this.server;
    s.starts += 1;
    const fd = openSync(s.log, 'a');
    writeSync(fd, `\n===== harness: server start #${s.starts} at ${new Date().toISOString()} =====\n`);
    closeSync(fd);
    s.child = this.spawnIn(this.serverHost.ns, SERVER_BIN, s.argv, s.log, s.env);
    const started = Date.now();
    await waitFor(() => this.serverAnswers(), 60000, () => `the server did not answer at ${s.url}; ${tail(s.log, 40)}`, s.child);
    return Date.now() - started;
  }

  /** True once the server answers `POST /api/list` with any HTTP status. */
  async serverAnswers() {
    try {
      const res = await this.request('POST', '/api/list', {}, { timeout: 2000 });
      return res.status > 0;
    } catch {
      return false;
    }
  }

  /** The base URL pages use (http or https). */
  get url() {
    if (!this.server) throw new Error('the server is not started');
    return this.server.url;
  }

  /** The control-plane API key of the running server. */
  get apiKey() {
    return this.server.env.STAGECAST_API_KEY;
  }

  /** Kills the server with SIGKILL (no chance to clean up) and waits until it is gone. */
  async killServer() {
    const child = this.server?.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await gone;
  }

  /**
   * kill -9, then (after `downMs`) the same binary on the same data dir,
   * address and ports. Returns `{killedAt, readyAt}` (Date.now() values).
   */
  async restartServer({ downMs = 0 } = {}) {
    const killedAt = Date.now();
    await this.killServer();
    if (downMs > 0) await sleep(downMs);
    await this.launchServer();
    return { killedAt, readyAt: Date.now() };
  }

  /** The last `lines` lines of the server's log. */
  serverLog(lines = 60) {
    return this.server ? tail(this.server.log, lines) : '(no server)';
  }

  /**
   * An HTTP(S) request from the test runner to the server (through the
   * root namespace's leg); TLS is verified against the test certificate.
   */
  request(method, pathname, body, { timeout = 10000, headers = {} } = {}) {
    const url = new URL(pathname, this.url);
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const options = {
      method,
      headers: {
        ...(data ? { 'Content-Type': 'application/json', 'Content-Length': data.length } : {}),
        ...(pathname.startsWith('/v1/') ? { Authorization: `Bearer ${this.apiKey}` } : {}),
        ...headers,
      },
      timeout,
      ...(url.protocol === 'https:' ? { ca: this.certificate().pem } : {}),
    };
    return new Promise((resolve, reject) => {
      const req = send(url, options, (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json = null;
          try {
            json = text ? JSON.parse(text) : null;
          } catch {
            json = null;
          }
          resolve({ status: res.statusCode, body: json, text });
        });
      });
      req.on('timeout', () => req.destroy(new Error(`${method} ${url} timed out after ${timeout} ms`)));
      req.on('error', reject);
      if (data) req.write(data);
      req.end();
    });
  }

  // ------------------------------------------------------------ processes

  /** Spawns `cmd` inside `ns`, stdout/stderr appended to `log`; tracked for cleanup. */
  spawnIn(ns, cmd, args, log, env = {}) {
    const out = openSync(log, 'a');
    // `ip netns exec` execs the command (no fork), so the child's pid is the
    // program's own and SIGKILL reaches it.
    const child = spawn('ip', ['netns', 'exec', ns, cmd, ...args], {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ['ignore', out, out],
    });
    closeSync(out);
    child.on('error', () => {});
    return child;
  }

  // ------------------------------------------------------------ teardown

  /** Stops every process and removes every namespace and link of this run. */
  closeSync() {
    if (this.closed) return;
    this.closed = true;
    live.delete(this);
    for (const child of [this.server?.child, this.turn?.child]) {
      if (child && child.exitCode === null && child.signalCode === null) {
        try {
          child.kill('SIGKILL');
        } catch {
          // gone
        }
      }
    }
    // Browsers and anything else a test started inside our namespaces.
    for (const ns of [...this.namespaces].reverse()) deleteNamespace(ns);
    // Deleting the hub removes the root leg's peer and so the leg; make sure.
    if (this.rootLink) sh('ip', ['link', 'del', this.rootLink], { allowFail: true });
  }

  async close() {
    this.closeSync();
  }
}
