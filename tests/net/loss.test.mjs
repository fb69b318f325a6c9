// Network journey: a guest on a lossy network. 5 % of Blue's packets are
// dropped in each direction (iptables statistic match; this kernel has no
// netem). Red (host), Green and Blue still see each other's colour in the
// right tile with frames changing and hear each other's tone — NACK and
// Opus cope with loss of this size. Over 20 s after that, what Blue
// receives and what the others receive from Blue freezes ≤ 5 % of the time
// (Chrome's freeze count and the page's own frame log), and Blue's NACKs
// are at work on what it receives.

import { PEOPLE } from '../lib.mjs';
import assert from 'node:assert/strict';
import { assertStatesTruthful, videoHealth, videoHealthBetween } from '../probes.mjs';
import { openStage, expectEveryoneSeesAndHears } from './stage.mjs';
import { netJourney } from './journey.mjs';

netJourney('a guest with 5 % packet loss each way', 'everyone still sees and hears everyone', { timeout: 180_000, server: true }, async ({ net, everyone }) => {
  const { people } = await openStage(
    net,
    [{ person: PEOPLE.red }, { person: PEOPLE.green }, { person: PEOPLE.blue, impair: (host) => host.loss(0.05) }],
    everyone,
  );
  await expectEveryoneSeesAndHears(people, { timeout: 40000 });
  const [red, green, blue] = people;
  const others = (p) => people.filter((o) => o !== p).map((o) => o.id);
  const before = await Promise.all(people.map((p) => videoHealth(p.page, others(p))));
  await new Promise((r) => setTimeout(r, 20000));
  const after = await Promise.all(people.map((p) => videoHealth(p.page, others(p))));
  const health = people.map((p, i) => videoHealthBetween(before[i], after[i]));
  const report = JSON.stringify(Object.fromEntries(people.map((p, i) => [p.name, health[i]])));
  console.log(`loss 5 %: ${report}`);
  // What Blue receives, and what Red and Green receive from Blue.
  const watched = [
    ...[red, green].map((o) => [blue, o]),
    ...[red, green].map((v) => [v, blue]),
  ];
  for (const [viewer, other] of watched) {
    const h = health[people.indexOf(viewer)].remotes[other.id];
    assert.ok(h.fps >= 10, `${viewer.name} decodes ${other.name} at ${h.fps.toFixed(1)} fps (≥ 10): ${report}`);
    assert.ok(h.frozen <= 0.05, `${viewer.name} sees ${other.name} frozen ${(h.frozen * 100).toFixed(1)} % (Chrome, ≤ 5 %): ${report}`);
    assert.ok(h.stalled <= 0.05, `${viewer.name} sees ${other.name} stalled ${(h.stalled * 100).toFixed(1)} % (page, ≤ 5 %): ${report}`);
  }
  const blueHealth = health[people.indexOf(blue)];
  const blueNacks = Object.values(blueHealth.remotes).reduce((n, r) => n + r.nacksSent, 0);
  assert.ok(blueNacks > 0, `Blue asks for lost packets again (NACKs sent): ${report}`);
  // NACKs the SFU sends Blue for its lost uplink packets are not asserted:
  // Chrome counted 1 in one run and 0 in another over 20 s, while what the
  // others receive from Blue stayed unfrozen (checked above).
  for (const p of people) await assertStatesTruthful(p);
});
