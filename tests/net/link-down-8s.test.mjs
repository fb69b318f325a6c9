// Network journey: a guest's link goes away for 8 s (Wi-Fi to cellular, a
// tunnel) and comes back. Red (host), Green and Blue see and hear each other;
// Blue's cable is pulled for 8 s. Within 5 s of the link's return, media
// flows again both ways between Blue and each of the others, and the others
// never saw Blue leave (the server's reconnect grace covers the drop).

import assert from 'node:assert/strict';
import { assertStatesTruthful } from '../probes.mjs';
import { expectEveryoneSeesAndHears } from './stage.mjs';
import { linkDrop } from './scenarios.mjs';
import { netJourney } from './journey.mjs';

netJourney('a guest whose link is down for 8 s', 'is back within 5 s of the link, and nobody saw it leave', { timeout: 200_000 }, async ({ net, everyone }) => {
  const r = await linkDrop(net, everyone, { downMs: 8000 });
  console.log(`link down 8 s: media back ${r.recoveryMs} ms after the link: ${JSON.stringify(r.detail)}; Blue's states: ${JSON.stringify(r.blueStates)}`);
  assert.deepEqual(r.leftSeen, { Red: [], Green: [] }, 'the others never see Blue leave (ms after the drop)');
  assert.deepEqual(r.joinedSeen, { Red: [], Green: [] }, 'nor join again');
  assert.ok(r.recoveryMs <= 5000, `media in both directions back ${r.recoveryMs} ms after the link returned (≤ 5000): ${JSON.stringify(r.detail)}`);
  await expectEveryoneSeesAndHears(r.people);
  for (const p of r.people) await assertStatesTruthful(p);
});
