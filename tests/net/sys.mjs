// Small system helpers of the network harness: run a command (in a
// namespace), read a log's tail, wait for something to answer.

import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createConnection } from 'node:net';

/** Runs a command synchronously (setup steps are short); throws with its stderr. */
export function sh(cmd, args, { allowFail = false } = {}) {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 20000 });
  } catch (err) {
    if (allowFail) return null;
    const why = (err.stderr || err.message || '').toString().trim();
    throw new Error(`\`${cmd} ${args.join(' ')}\` failed: ${why}`);
  }
}

/** `cmd args` inside namespace `ns`. */
export function nsh(ns, cmd, args, opts) {
  return sh('ip', ['netns', 'exec', ns, cmd, ...args], opts);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The last `lines` lines of a log file, with a heading. */
export function tail(file, lines) {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return `(no log at ${file})`;
  }
  const all = text.trimEnd().split('\n');
  return `last ${Math.min(lines, all.length)} lines of ${file}:\n${all.slice(-lines).join('\n')}`;
}

export function tcpAnswers(host, port) {
  return new Promise((resolve) => {
    const socket = createConnection({ host, port, timeout: 1000 });
    const done = (ok) => {
      socket.destroy();
      resolve(ok);
    };
    socket.once('connect', () => done(true));
    socket.once('timeout', () => done(false));
    socket.once('error', () => done(false));
  });
}

/** Polls `check` until it resolves true; fails with `why()` on timeout or if `child` exits. */
export async function waitFor(check, timeout, why, child) {
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    if (child && (child.exitCode !== null || child.signalCode !== null)) {
      throw new Error(`exited (${child.exitCode ?? child.signalCode}) before it was ready: ${why()}`);
    }
    if (await check()) return;
    await sleep(100);
  }
  throw new Error(`not ready within ${timeout} ms: ${why()}`);
}
