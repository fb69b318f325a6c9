// Network journey: the server is killed (SIGKILL) and started again at once
// on the same data dir, address and ports, while Red (host) and Green are on
// a stage and Red broadcasts it to the channel that a viewer watches.
// Every participant's media is back within 10 s of the server answering, no
// app is shown anyone leaving or joining, and the broadcast resumes on the
// same playback URL: the viewer's player goes on playing the composite (a
// discontinuity, never "Ended").

import assert from 'node:assert/strict';
import { assertStatesTruthful } from '../probes.mjs';
import { expectEveryoneSeesAndHears } from './stage.mjs';
import { serverRestart } from './scenarios.mjs';
import { netJourney } from './journey.mjs';

netJourney('the server is killed and restarted', 'every participant and the broadcast come back by themselves', {
  timeout: 240_000,
}, async ({ net, everyone }) => {
  const r = await serverRestart(net, everyone);
  console.log(`server restart: answering ${r.restartMs} ms after kill -9; media back ${r.recoveryMs} ms after that: ${JSON.stringify(r.detail)}; churn ${JSON.stringify(r.churn)}; broadcast ${JSON.stringify(r.broadcast)}`);
  assert.ok(r.restartMs <= 3000, `the server answered again ${r.restartMs} ms after kill -9 (≤ 3000)`);
  assert.ok(r.recoveryMs <= 10000, `every participant's media back ${r.recoveryMs} ms after the restart (≤ 10000): ${JSON.stringify(r.detail)}`);
  assert.deepEqual(r.churn, { Red: { left: 0, joined: 0 }, Green: { left: 0, joined: 0 } }, 'no app was shown a leave/join pair');
  const b = r.broadcast;
  assert.equal(b.playbackAfter, b.playbackBefore, 'the same playback URL');
  assert.equal(b.hostLiveState, 'live', "the host's app says live again");
  assert.ok(b.grid.ok, `the viewer plays the composite again: ${b.grid.error || ''}`);
  assert.ok(b.advancing.advances, `the viewer's player advances: ${JSON.stringify(b.advancing)}`);
  const ended = b.playerStatesSinceKill.filter((s) => s.state !== 'Live');
  assert.deepEqual(ended, [], "the viewer's player never left Live (no Ended/Offline)");
  await expectEveryoneSeesAndHears(r.people);
  for (const p of r.people) await assertStatesTruthful(p);
});
