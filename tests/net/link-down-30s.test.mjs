// Network journey: a guest's link goes away for 30 s, longer than the
// server's reconnect grace, and comes back. Within 5 s of the link's return
// media flows again both ways between Blue and each of the others; the others
// saw Blue leave once and join once (in that order), and Blue's own app went
// through a not-connected state and says connected again — no user action.

import assert from 'node:assert/strict';
import { assertStatesTruthful } from '../probes.mjs';
import { expectEveryoneSeesAndHears } from './stage.mjs';
import { linkDrop } from './scenarios.mjs';
import { netJourney } from './journey.mjs';

netJourney('a guest whose link is down for 30 s', 'comes back by itself within 5 s of the link; the others see one leave and one join', {
  timeout: 240_000,
}, async ({ net, everyone }) => {
  const r = await linkDrop(net, everyone, { downMs: 30000 });
  console.log(`link down 30 s: media back ${r.recoveryMs} ms after the link: ${JSON.stringify(r.detail)}; left ${JSON.stringify(r.leftSeen)}, joined ${JSON.stringify(r.joinedSeen)}; Blue's states: ${JSON.stringify(r.blueStates)}`);
  assert.ok(r.recoveryMs <= 5000, `media in both directions back ${r.recoveryMs} ms after the link returned (≤ 5000): ${JSON.stringify(r.detail)}`);
  for (const name of ['Red', 'Green']) {
    assert.equal(r.leftSeen[name].length, 1, `${name} saw Blue leave once: ${JSON.stringify(r.leftSeen)}`);
    assert.equal(r.joinedSeen[name].length, 1, `${name} saw Blue join once: ${JSON.stringify(r.joinedSeen)}`);
    assert.ok(r.leftSeen[name][0] < r.joinedSeen[name][0], `${name} saw the leave before the join`);
  }
  const blue = r.people[2];
  assert.ok(r.blueStates.some((s) => s.state !== 'connected'), `Blue's app showed it was not connected: ${JSON.stringify(r.blueStates)}`);
  assert.equal(r.blueStates.at(-1)?.state, 'connected', `Blue's app is connected again: ${JSON.stringify(r.blueStates)}`);
  assert.equal(await blue.page.getByTestId('connection-state').getAttribute('data-state'), 'connected', "Blue's page says connected");
  await expectEveryoneSeesAndHears(r.people);
  for (const p of r.people) await assertStatesTruthful(p);
});
