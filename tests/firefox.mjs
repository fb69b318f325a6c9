// Firefox for the journeys: Debian's firefox-esr driven by puppeteer-core over
// WebDriver BiDi, headless, with fake media allowed and autoplay on. Offline
// this Firefox has no H.264 for WebRTC (it downloads OpenH264 at run time
// elsewhere), only VP8/VP9/AV1, which is why stages are VP8.
//
// A Firefox participant has the same shape as lib.mjs's Chromium ones
// ({ page, errors, logs, name, color, freq }), and the helpers of lib.mjs
// that only call `page.evaluate(fn, arg)` (sampleTile, expectLiveVideo,
// detectTone, expectTone, sampleVideoPoints, expectCompositeGrid) work on it
// unchanged; the few that use Playwright's locators have counterparts here.

import puppeteer from 'puppeteer-core';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { BASE, fakeMediaInit } from './lib.mjs';

export const FIREFOX = process.env.FIREFOX_PATH || '/usr/bin/firefox-esr';

/**
 * This machine's first non-loopback IPv4 address. Firefox never pairs its
 * candidates with a server's 127.0.0.1 candidate (even with
 * `media.peerconnection.ice.loopback`), so a Firefox journey runs a server
 * whose media port is on this address (`ownServer({ mediaIp })`); pages still
 * load from http://127.0.0.1, a secure context.
 */
export function machineAddress() {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list || []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  throw new Error('no non-loopback IPv4 address on this machine: Firefox cannot reach a media port on loopback');
}

/**
 * A PulseAudio daemon with a null sink (Debian's pulseaudio), private to one
 * Firefox: without an audio output Firefox never starts an AudioContext, and
 * the journeys make and hear tones with one.
 */
async function startPulse() {
  const dir = mkdtempSync(join(tmpdir(), 'stagecast-pulse-'));
  const env = { ...process.env, XDG_RUNTIME_DIR: dir, HOME: dir };
  const child = spawn(
    'pulseaudio',
    ['-n', '--daemonize=no', '--exit-idle-time=-1', '--disable-shm=yes', '-L', 'module-null-sink', '-L', 'module-native-protocol-unix'],
    { env, stdio: 'ignore' },
  );
  const stop = () => {
    if (child.exitCode === null) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  const socket = join(dir, 'pulse', 'native');
  for (let i = 0; i < 100 && !existsSync(socket); i += 1) {
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  if (!existsSync(socket)) {
    stop();
    throw new Error('pulseaudio did not start (is Debian\'s pulseaudio installed? `cargo xtask test` installs it)');
  }
  return { env: { XDG_RUNTIME_DIR: dir, PULSE_SERVER: `unix:${socket}` }, stop };
}

/** Starts headless Firefox (and its audio output); `close()` stops both. */
export async function launchFirefox() {
  const pulse = await startPulse();
  let browser;
  try {
    browser = await puppeteer.launch({
      browser: 'firefox',
      protocol: 'webDriverBiDi',
      executablePath: FIREFOX,
      headless: true,
      env: { ...process.env, ...pulse.env },
      extraPrefsFirefox: {
        'media.navigator.streams.fake': true,
        'media.navigator.permission.disabled': true,
        'media.autoplay.default': 0,
        'media.autoplay.blocking_policy': 0,
        // Several pages share the machine; none may be throttled.
        'dom.min_background_timeout_value': 4,
      },
    });
  } catch (err) {
    pulse.stop();
    throw err;
  }
  const close = browser.close.bind(browser);
  browser.close = async () => {
    try {
      await close();
    } finally {
      pulse.stop();
    }
  };
  return browser;
}

function track(page, name) {
  const errors = [];
  const logs = [];
  page.on('pageerror', (err) => errors.push(err));
  page.on('console', (msg) => {
    if (msg.type() === 'error' || msg.type() === 'warn') logs.push(`[${name}] ${msg.type()}: ${msg.text()}`);
  });
  return { errors, logs };
}

/** A Firefox participant with the fake camera and tone of `person` (see lib.mjs). */
export async function newFirefoxParticipant(browser, person, { fps = 30 } = {}) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  await page.setViewport({ width: 1100, height: 820 });
  await page.evaluateOnNewDocument(fakeMediaInit, { color: person.color, freq: person.freq, fps });
  return { ...person, context, page, ...track(page, person.name) };
}

/** A Firefox viewer (no fake media). */
export async function newFirefoxViewer(browser, name) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  await page.setViewport({ width: 1000, height: 700 });
  return { name, context, page, ...track(page, name) };
}

/** Clicks the `index`-th element with `data-testid` = `id`. */
export async function clickTestId(page, id, index = 0) {
  await page.waitForSelector(`[data-testid="${id}"]`, { timeout: 15000 });
  const clicked = await page.evaluate(
    ({ id, index }) => {
      const el = document.querySelectorAll(`[data-testid="${id}"]`)[index];
      if (!el) return false;
      el.click();
      return true;
    },
    { id, index },
  );
  assert.ok(clicked, `no [data-testid="${id}"] #${index} to click`);
}

/** Guest in Firefox: open the invite link, set a profile, press Join. */
export async function joinViaInviteFirefox(p, inviteUrl, avatarIndex = 1) {
  await p.page.goto(inviteUrl);
  await p.page.waitForSelector('[data-testid="username-input"]', { timeout: 15000 });
  await p.page.type('[data-testid="username-input"]', p.name);
  await clickTestId(p.page, 'avatar-option', avatarIndex);
  await clickTestId(p.page, 'join-button');
  await p.page.waitForSelector('[data-testid="stage-view"]', { timeout: 15000 });
}

/** Host in Firefox: create a stage through the UI; returns the invite link. */
export async function createStageViaUiFirefox(p, avatarIndex = 0, base = BASE) {
  await p.page.goto(`${base}/`);
  await p.page.waitForSelector('[data-testid="username-input"]', { timeout: 15000 });
  await p.page.type('[data-testid="username-input"]', p.name);
  await clickTestId(p.page, 'avatar-option', avatarIndex);
  await clickTestId(p.page, 'create-stage');
  await p.page.waitForSelector('[data-testid="invite-link"]', { timeout: 15000 });
  return p.page.evaluate(() => document.querySelector('[data-testid="invite-link"]').value);
}

/** Waits until `fn(arg)` is truthy in the page; returns its value. */
export async function waitFor(page, fn, arg, timeout) {
  const handle = await page.waitForFunction(fn, { timeout, polling: 200 }, arg);
  return handle.jsonValue();
}

/** Waits until the page's SDK reports `joined` (fails on `joinFailed`). */
export async function waitJoinedFirefox(page, timeout = 20000) {
  const ev = await waitFor(
    page,
    () => (window.__stagecast?.events || []).find((e) => e.type === 'joined' || e.type === 'joinFailed') || false,
    null,
    timeout,
  );
  assert.equal(ev.type, 'joined', `join failed: ${JSON.stringify(ev)}`);
}

/** The participant id of the page's own tile. */
export async function localIdFirefox(page) {
  const id = await page.evaluate(
    () => document.querySelector('[data-testid="tile"][data-local="true"]')?.dataset.participantId,
  );
  assert.ok(id, 'local tile has a participant id');
  return id;
}
