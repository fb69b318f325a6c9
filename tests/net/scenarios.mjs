// The network scenarios, each a function that sets a stage up on a fresh
// private network, breaks something, and returns what it measured; the
// journeys in this folder assert on the results, and `cargo xtask bench`
// can run the same functions several times for medians.
//
// Each takes `people` (where to keep every participant/viewer, so the
// caller's `after` can close their browsers even when a step throws).

import assert from 'node:assert/strict';
import { PEOPLE, sleep, expectCompositeGrid } from '../lib.mjs';
import { assertStatesTruthful, eventsAbout, eventsOf, peerConnections } from '../probes.mjs';
import { HTTP_PORT, TURN_PORT } from './netns.mjs';
import {
  PLAYER_VIDEO,
  openStage,
  expectSeesAndHears,
  expectEveryoneSeesAndHears,
  mediaBack,
  goLiveAndWatch,
  playerStates,
  playerAdvances,
} from './stage.mjs';

/**
 * A host (Red) and a guest (Green) on open networks; a third guest (Blue)
 * whose network blocks UDP joins last — `via: 'tcp'`: it must reach the SFU
 * over ICE-TCP; `via: 'turn'`: its network lets through only the server's
 * HTTP port and the TURN server's TCP port, so its media must go through a
 * TURN/TCP relay (coturn). Returns `{people, timeToMediaMs, perPublisher}`:
 * from Blue's `join()` to the first frame of each publisher on Blue's page.
 */
export async function blockedGuestJoins(net, out, { via }) {
  let turn = null;
  if (via === 'turn') turn = await net.startTurn();
  await net.startServer({ turn });
  const serverIp = net.serverHost.ip;
  const impair =
    via === 'turn'
      ? (host) => host.allowOnly([{ ip: serverIp, port: HTTP_PORT }, { ip: turn.ip, port: TURN_PORT }])
      : (host) => host.blockUdp();
  const { people } = await openStage(net, [{ person: PEOPLE.red }, { person: PEOPLE.green }, { person: PEOPLE.blue, impair }], out);
  const [red, green, blue] = people;
  const perPublisher = {};
  await Promise.all(
    [red, green].map(async (other) => {
      const seen = await expectSeesAndHears(blue, other, 30000, blue.joinedAt);
      perPublisher[other.name] = seen.videoAt - blue.joinedAt;
    }),
  );
  return { people, turn, timeToMediaMs: Math.max(...Object.values(perPublisher)), perPublisher };
}

/**
 * The acceptance of a blocked guest (`via` as for blockedGuestJoins): Blue
 * sees every publisher within 5 s of join(), everyone sees and hears
 * everyone, Blue's media takes the expected path, every published/subscribed
 * was true. Returns the scenario's result and Blue's connected peer
 * connections (`up`).
 */
export async function expectBlockedGuestJourney(net, out, { via }) {
  const r = await blockedGuestJoins(net, out, { via });
  console.log(`${via}: first frame of each publisher after join(): ${JSON.stringify(r.perPublisher)} ms`);
  assert.ok(r.timeToMediaMs <= 5000, `Blue saw every publisher ${r.timeToMediaMs} ms after join() (≤ 5000): ${JSON.stringify(r.perPublisher)}`);
  await expectEveryoneSeesAndHears(r.people);
  const up = await expectBlockedGuestPath(r.people[2], { via });
  for (const p of r.people) await assertStatesTruthful(p);
  return { ...r, up };
}

/**
 * The blocked guest's connected peer connections: each must use `protocol`
 * on its own side and, for TURN, a relay candidate.
 */
export async function expectBlockedGuestPath(blue, { via }) {
  const pcs = await peerConnections(blue.page);
  const up = pcs.filter((pc) => pc.state === 'connected');
  assert.ok(up.length >= 3, `${blue.name} has a publish and two subscribe connections up: ${JSON.stringify(pcs)}`);
  for (const pc of up) {
    assert.equal(pc.pair?.local?.protocol, via === 'turn' ? 'udp' : 'tcp', `${blue.name}'s selected pair: ${JSON.stringify(pc.pair)}`);
    if (via === 'turn') {
      assert.equal(pc.pair?.local?.candidateType, 'relay', `${blue.name}'s media goes through the relay: ${JSON.stringify(pc.pair)}`);
      assert.equal(pc.pair?.local?.relayProtocol, 'tcp', `${blue.name} reaches the relay over TCP: ${JSON.stringify(pc.pair)}`);
    }
  }
  return up;
}

/**
 * Red (host), Green and Blue see and hear each other; then Blue's link goes
 * down for `downMs` and comes back. Returns `{people, recoveryMs, detail,
 * leftSeen, joinedSeen, blueStates}`: the time from the link's return until
 * media flows again in every direction between Blue and the others, the
 * leave/join events the others' apps got about Blue since the drop, and
 * Blue's own connection-state changes since the drop.
 */
export async function linkDrop(net, out, { downMs, how = 'link' }) {
  await net.startServer();
  const { people } = await openStage(net, [{ person: PEOPLE.red }, { person: PEOPLE.green }, { person: PEOPLE.blue }], out);
  const [red, green, blue] = people;
  await expectEveryoneSeesAndHears(people);

  const downAt = Date.now();
  if (how === 'link') blue.host.linkDown();
  else blue.host.blackhole(true);
  await sleep(downMs);
  if (how === 'link') blue.host.linkUp();
  else blue.host.blackhole(false);
  const upAt = Date.now();

  const back = await mediaBack(blue, [red, green], upAt, 30000);
  const about = async (viewer, type) => eventsAbout(viewer.page, { type, participantId: blue.id, since: downAt });
  // What each other app was told about Blue since the drop: ms after the drop of each leave / join.
  const leftSeen = {};
  const joinedSeen = {};
  for (const viewer of [red, green]) {
    leftSeen[viewer.name] = (await about(viewer, 'stageParticipantLeft')).map((e) => e.at - downAt);
    joinedSeen[viewer.name] = (await about(viewer, 'stageParticipantJoined')).map((e) => e.at - downAt);
  }
  const blueStates = (await eventsOf(blue.page))
    .filter((e) => e.type === 'stageConnectionStateChanged' && e.at >= downAt)
    .map((e) => ({ state: e.state, ms: e.at - downAt }));
  return { people, downAt, upAt, recoveryMs: back.ms, detail: back.detail, leftSeen, joinedSeen, blueStates };
}

/**
 * Red (host) and Green on a stage; Red goes live and a viewer watches the
 * channel (hls.js) on its own host. The server is killed with SIGKILL and
 * started again at once on the same data dir and ports. Returns the restart
 * time, the time until every participant's media is back (from the moment the
 * server answers again), the leave/join events the apps got, and what the
 * viewer's player did.
 */
/** How long after the restart a viewer's player must be playing again. */
const BROADCAST_BACK_MS = 30000;

export async function serverRestart(net, out) {
  await net.startServer();
  const { people, groupId } = await openStage(net, [{ person: PEOPLE.red }, { person: PEOPLE.green }], out);
  const [red, green] = people;
  // A small stream keeps encoding and decoding cheap on a shared machine (read when Go live is pressed).
  await red.page.evaluate(() => localStorage.setItem('stagecast.streamSize', 'small'));
  await expectEveryoneSeesAndHears(people);
  const viewer = await goLiveAndWatch(net, red, net.host('viewer'), people, groupId, out);
  const playbackBefore = await playbackUrl(net, groupId);

  const { killedAt, readyAt } = await net.restartServer();
  const restartMs = readyAt - killedAt;
  const back = await mediaBack(red, [green], readyAt, 20000);

  const churn = {};
  for (const p of people) {
    const left = await eventsAbout(p.page, { type: 'stageParticipantLeft', since: killedAt });
    const joined = await eventsAbout(p.page, { type: 'stageParticipantJoined', since: killedAt });
    churn[p.name] = { left: left.length, joined: joined.length };
  }
  // The broadcast: the same playback URL plays again. The host's client
  // notices its ingest is gone only when the browser reports the connection
  // disconnected (several seconds), so wait for the viewer's video to move
  // again (a frozen last frame would still show the grid), then check it
  // shows the composite.
  let advancing = await playerAdvances(viewer);
  while (!advancing.advances && Date.now() - readyAt < BROADCAST_BACK_MS) advancing = await playerAdvances(viewer);
  advancing.afterMs = Date.now() - readyAt;
  const grid = await expectCompositeGrid(viewer.page, PLAYER_VIDEO, people, 30000).then(
    (g) => ({ ok: true, at: Date.now(), owners: g.owners }),
    (err) => ({ ok: false, error: err.message }),
  );
  const playbackAfter = await playbackUrl(net, groupId);
  const states = (await playerStates(viewer)).filter((s) => s.at >= killedAt);
  const liveState = await red.page.evaluate(() => document.querySelector('[data-testid="live-state"]')?.dataset.state);
  return {
    people,
    viewer,
    restartMs,
    recoveryMs: back.ms,
    detail: back.detail,
    churn,
    broadcast: { playbackBefore, playbackAfter, grid, advancing, playerStatesSinceKill: states, hostLiveState: liveState },
  };
}

async function playbackUrl(net, groupId) {
  const res = await net.request('POST', '/api/list', {});
  assert.equal(res.status, 200, `/api/list: ${res.status} ${res.text}`);
  const item = (res.body || []).find((i) => i.groupId === groupId);
  assert.ok(item, `group ${groupId} is listed`);
  return item.playbackUrl;
}

