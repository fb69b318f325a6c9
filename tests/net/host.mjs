// One machine of the harness's private network (tests/net/netns.mjs) and
// the ways a test can break its network.

import { chmodSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { sh, nsh } from './sys.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

/**
 * One machine on the private network: a namespace with one interface
 * (`eth0`) plugged into the hub's bridge through `hubPort`. The impairment
 * methods change only this host's network.
 */
export class NetHost {
  constructor(net, name, ns, ip, hubPort) {
    this.net = net;
    this.name = name;
    this.ns = ns;
    this.ip = ip;
    this.hubPort = hubPort;
    this.wrapper = null;
  }

  /**
   * An executable that runs Chromium inside this namespace, for
   * playwright-core's `executablePath` (the pipe to the browser is
   * inherited, so Playwright needs no network to drive it).
   */
  chromium() {
    if (this.wrapper) return this.wrapper;
    const file = path.join(this.net.dir, `chromium-${this.name}`);
    writeFileSync(file, `#!/bin/sh\nexec ip netns exec '${this.ns}' '${CHROMIUM}' "$@"\n`);
    chmodSync(file, 0o755);
    this.wrapper = file;
    return file;
  }

  iptables(args) {
    nsh(this.ns, 'iptables', ['-w', ...args]);
  }

  /** Drops all UDP in and out (a corporate or hotel network). */
  blockUdp() {
    this.iptables(['-A', 'OUTPUT', '!', '-o', 'lo', '-p', 'udp', '-j', 'DROP']);
    this.iptables(['-A', 'INPUT', '!', '-i', 'lo', '-p', 'udp', '-j', 'DROP']);
  }

  /** Drops TCP connections to `ip:port` (e.g. the server's ICE-TCP media port). */
  blockTcpTo(ip, port) {
    this.iptables(['-A', 'OUTPUT', '-d', ip, '-p', 'tcp', '--dport', String(port), '-j', 'DROP']);
  }

  /** Drops each packet in each direction with probability `p` (0..1). */
  loss(p) {
    if (!(p > 0 && p < 1)) throw new Error(`loss probability must be in (0, 1), got ${p}`);
    for (const [chain, dir] of [['INPUT', '-i'], ['OUTPUT', '-o']]) {
      this.iptables(['-A', chain, '!', dir, 'lo', '-m', 'statistic', '--mode', 'random', '--probability', String(p), '-j', 'DROP']);
    }
  }

  /**
   * Only these destinations are reachable: `[{ip, port, proto = 'tcp'}]`
   * (replies from them come back); everything else in and out is dropped.
   */
  allowOnly(destinations) {
    for (const { ip, port, proto = 'tcp' } of destinations) {
      this.iptables(['-A', 'OUTPUT', '-d', ip, '-p', proto, '--dport', String(port), '-j', 'ACCEPT']);
      this.iptables(['-A', 'INPUT', '-s', ip, '-p', proto, '--sport', String(port), '-j', 'ACCEPT']);
    }
    this.iptables(['-A', 'OUTPUT', '-o', 'lo', '-j', 'ACCEPT']);
    this.iptables(['-A', 'INPUT', '-i', 'lo', '-j', 'ACCEPT']);
    this.iptables(['-P', 'OUTPUT', 'DROP']);
    this.iptables(['-P', 'INPUT', 'DROP']);
  }

  /**
   * Limits the rate with a token bucket (tc tbf): `down` is what reaches this
   * host (shaped on its bridge port), `up` what it sends; in kbit/s.
   */
  rateLimit({ downKbit, upKbit } = {}) {
    const tbf = (kbit) => {
      // A burst of ~50 ms at the rate (at least a few full-size packets), and
      // up to 400 ms of queue before tbf drops.
      const burst = Math.max(Math.round((kbit * 1000) / 8 / 20), 4500);
      return ['tbf', 'rate', `${kbit}kbit`, 'burst', String(burst), 'latency', '400ms'];
    };
    if (downKbit) sh('tc', ['-n', this.net.hub, 'qdisc', 'replace', 'dev', this.hubPort, 'root', ...tbf(downKbit)]);
    if (upKbit) sh('tc', ['-n', this.ns, 'qdisc', 'replace', 'dev', 'eth0', 'root', ...tbf(upKbit)]);
  }

  /** The cable is pulled: the bridge port goes down, this host's eth0 loses carrier. */
  linkDown() {
    sh('ip', ['-n', this.net.hub, 'link', 'set', this.hubPort, 'down']);
  }

  /** The cable is back. */
  linkUp() {
    sh('ip', ['-n', this.net.hub, 'link', 'set', this.hubPort, 'up']);
  }

  /**
   * Every packet in and out is silently dropped while the link stays up (a
   * tunnel, a dead access point); `blackhole(false)` ends it.
   */
  blackhole(on = true) {
    const op = on ? '-I' : '-D';
    this.iptables([op, 'OUTPUT', '!', '-o', 'lo', '-j', 'DROP']);
    this.iptables([op, 'INPUT', '!', '-i', 'lo', '-j', 'DROP']);
  }

  /** Removes every impairment (rules, policies, qdiscs, link state). */
  clear() {
    this.iptables(['-F']);
    this.iptables(['-P', 'INPUT', 'ACCEPT']);
    this.iptables(['-P', 'OUTPUT', 'ACCEPT']);
    sh('tc', ['-n', this.ns, 'qdisc', 'del', 'dev', 'eth0', 'root'], { allowFail: true });
    sh('tc', ['-n', this.net.hub, 'qdisc', 'del', 'dev', this.hubPort, 'root'], { allowFail: true });
    this.linkUp();
  }

  /** The iptables rules and qdiscs in force (for a failure message). */
  describe() {
    const rules = nsh(this.ns, 'iptables', ['-S'], { allowFail: true }) || '';
    const qdisc = sh('tc', ['-n', this.ns, 'qdisc', 'show', 'dev', 'eth0'], { allowFail: true }) || '';
    return `${this.name} (${this.ip}):\n${rules}${qdisc}`;
  }
}
