// A stage whose people each sit on their own host of the private network
// (tests/net/netns.mjs), each with their own Chromium, joined through the
// sample app exactly as in tests/stage-three.test.mjs; plus the checks the
// network journeys share: everyone sees and hears everyone, and media comes
// back after something broke.

import assert from 'node:assert/strict';
import {
  launch,
  newParticipant,
  newViewer,
  createStageViaUi,
  joinViaInvite,
  waitJoined,
  localParticipantId,
  waitForRemoteTiles,
  expectCompositeGrid,
  dumpLogs,
  sleep,
} from '../lib.mjs';
import { PROBES, eventsOf, waitLiveSince } from '../probes.mjs';

/** The video element of the watch page's player. */
export const PLAYER_VIDEO = '[data-testid="player-video"]';

/**
 * Chromium flags for a page of this net's server: over http the origin is
 * declared secure (as localhost is), so the camera works as it would over
 * https; over https the test certificate is trusted by its key's hash.
 */
function originFlags(net) {
  if (net.server.tls) return [`--ignore-certificate-errors-spki-list=${net.certificate().spki}`];
  return [`--unsafely-treat-insecure-origin-as-secure=${net.url}`];
}

/** Starts a browser on `host` and opens a participant page with fake media and probes. */
export async function personOn(net, host, person) {
  const browser = await launch({ executablePath: host.chromium(), args: originFlags(net) });
  const p = await newParticipant(browser, person, { initScripts: [PROBES] });
  return { ...p, browser, host };
}

/** A viewer (no camera) on its own host. */
export async function viewerOn(net, host, name) {
  const browser = await launch({ executablePath: host.chromium(), args: originFlags(net) });
  const v = await newViewer(browser, name);
  return { ...v, browser, host };
}

/**
 * Opens a stage: `cast[0]` creates it through the UI, the others join from
 * the invite link in order. Each entry is `{person, impair?(host)}`; an
 * impairment is applied to the person's host before its browser starts.
 * Returns `{people, invite, groupId}`; every person gets `id` (participant
 * id) and `joinedAt` (Date.now() of the app's `joined`). Each person is also
 * pushed to `out` as soon as its browser runs, so the caller can close it
 * whatever happens later.
 */
export async function openStage(net, cast, out = []) {
  const people = await Promise.all(
    cast.map(async ({ person, impair }) => {
      const host = net.host(person.name.toLowerCase());
      if (impair) impair(host);
      const p = await personOn(net, host, person);
      out.push(p);
      return p;
    }),
  );
  const [first, ...guests] = people;
  const invite = await createStageViaUi(first, 0, net.url);
  await waitJoined(first.page);
  for (const [i, guest] of guests.entries()) {
    await joinViaInvite(guest, invite, i + 1);
  }
  await Promise.all(guests.map((g) => waitJoined(g.page, 30000)));
  for (const p of people) {
    p.id = await localParticipantId(p.page);
    p.joinedAt = (await eventsOf(p.page)).find((e) => e.type === 'joined')?.at;
  }
  assert.equal(new Set(people.map((p) => p.id)).size, people.length, 'distinct participant ids');
  return { people, invite, groupId: new URL(invite).searchParams.get('join') };
}

/**
 * `viewer` shows `other`'s tile with live video of the right colour (new
 * frames, the bar moving) and plays its tone, both seen by the page's own
 * media monitor after `since` (Date.now()). Returns `{videoAt, toneAt}`: when
 * each became live, in the page.
 */
export async function expectSeesAndHears(viewer, other, timeout = 20000, since = 0) {
  const deadline = Date.now() + timeout;
  await waitForRemoteTilePresent(viewer.page, other.id, timeout);
  return waitLiveSince(viewer, other, since, Math.max(deadline - Date.now(), 1000));
}

/** Waits until `page` shows a remote tile for `participantId` (others may be there too). */
async function waitForRemoteTilePresent(page, participantId, timeout) {
  try {
    await page.waitForFunction(
      (id) => !!document.querySelector(`[data-testid="tile"][data-local="false"][data-participant-id="${id}"]`),
      participantId,
      { timeout },
    );
  } catch {
    const have = await page.evaluate(() => [...document.querySelectorAll('[data-testid="tile"]')].map((t) => ({ ...t.dataset }))).catch(() => []);
    throw new Error(`no tile for ${participantId} within ${timeout} ms; tiles: ${JSON.stringify(have)}`);
  }
}

/**
 * Everyone sees every other person's colour (frames changing) in the right
 * tile, with their name, and hears their tone. `pairs` limits the check to
 * some [viewer, other] pairs.
 */
export async function expectEveryoneSeesAndHears(people, { timeout = 30000, pairs } = {}) {
  const todo = pairs || people.flatMap((v) => people.filter((o) => o !== v).map((o) => [v, o]));
  const byViewer = new Map();
  for (const [v, o] of todo) byViewer.set(v, [...(byViewer.get(v) || []), o]);
  await Promise.all(
    [...byViewer].map(async ([viewer, others]) => {
      for (const other of others) {
        await expectSeesAndHears(viewer, other, timeout);
        const name = await viewer.page
          .locator(`[data-testid="tile"][data-participant-id="${other.id}"] [data-testid="tile-name"]`)
          .textContent();
        assert.equal(name.trim(), other.name, `${viewer.name} sees ${other.name}'s name on the tile`);
      }
    }),
  );
}

/** Waits until the set of remote tiles on each page is exactly the other people. */
export async function expectTilesOfEachOther(people, timeout = 20000) {
  await Promise.all(people.map((v) => waitForRemoteTiles(v.page, people.filter((o) => o !== v).map((o) => o.id), timeout)));
}

/**
 * After something broke (at `since`, Date.now()), the time until media
 * flows again between `guest` and each of `others` in both directions:
 * video of the right colour with frames changing, and the tone. Returns
 * `{ms, detail}`: the slowest direction and each direction's time; throws if
 * any direction is not back within `timeout`.
 */
export async function mediaBack(guest, others, since, timeout = 20000) {
  const directions = others.flatMap((o) => [[guest, o], [o, guest]]);
  const detail = {};
  await Promise.all(
    directions.map(async ([viewer, other]) => {
      const r = await expectSeesAndHears(viewer, other, Math.max(timeout - (Date.now() - since), 1000), since);
      detail[`${other.name}→${viewer.name}`] = { videoMs: r.videoAt - since, toneMs: r.toneAt - since };
    }),
  );
  const ms = Math.max(...Object.values(detail).map((d) => Math.max(d.videoMs, d.toneMs)));
  return { ms, detail };
}

/**
 * Host: press Go live and wait until the app says live; then a viewer on
 * `viewerHost` opens the watch page (hls.js) and sees every person's colour in
 * its own tile. Returns the viewer (also pushed to `out`).
 */
export async function goLiveAndWatch(net, host, viewerHost, people, groupId, out = []) {
  await host.page.getByTestId('go-live').click();
  await host.page.waitForFunction(() => document.querySelector('[data-testid="live-state"]')?.dataset.state === 'live', null, { timeout: 30000 });
  const viewer = await viewerOn(net, viewerHost, 'Viewer');
  out.push(viewer);
  await viewer.page.goto(`${net.url}/watch/${groupId}?player=hls`);
  // Every change of the player's state word, with its time.
  await viewer.page.evaluate(() => {
    window.__playerStates = [];
    const read = () => document.querySelector('[data-testid="player-state"]')?.textContent.trim() || '';
    const note = () => {
      const s = read();
      const last = window.__playerStates[window.__playerStates.length - 1];
      if (!last || last.state !== s) window.__playerStates.push({ state: s, at: Date.now() });
    };
    note();
    new MutationObserver(note).observe(document.body, { subtree: true, childList: true, characterData: true });
  });
  await viewer.page.waitForFunction(() => document.querySelector('[data-testid="player-state"]')?.textContent.trim() === 'Live', null, { timeout: 45000 });
  await expectCompositeGrid(viewer.page, PLAYER_VIDEO, people, 45000);
  return viewer;
}

/** The watch page's player state changes so far ({state, at}). */
export async function playerStates(viewer) {
  return viewer.page.evaluate(() => window.__playerStates || []);
}

/** The played video's position (s), sampled twice `gap` ms apart. */
export async function playerAdvances(viewer, gap = 2000) {
  const t = () => viewer.page.evaluate((sel) => document.querySelector(sel)?.currentTime ?? -1, PLAYER_VIDEO);
  const a = await t();
  await sleep(gap);
  const b = await t();
  return { from: a, to: b, advances: b > a + (gap / 1000) * 0.5 };
}

/** Closes every browser; prints the pages' console errors and the server log if `failed`. */
export async function closeAll(net, everyone, failed) {
  if (failed) {
    dumpLogs(everyone);
    if (net?.server) console.log(net.serverLog(80));
  }
  await Promise.all(everyone.map((p) => p.browser?.close().catch(() => {})));
}
