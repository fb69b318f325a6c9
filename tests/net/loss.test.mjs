// Network journey: a guest on a lossy network. 5 % of Blue's packets are
// dropped in each direction (iptables statistic match; this kernel has no
// netem). Red (host), Green and Blue still see each other's colour in the
// right tile with frames changing and hear each other's tone — NACK and
// Opus cope with loss of this size.

import { PEOPLE } from '../lib.mjs';
import { assertStatesTruthful } from '../probes.mjs';
import { openStage, expectEveryoneSeesAndHears } from './stage.mjs';
import { netJourney } from './journey.mjs';

netJourney('a guest with 5 % packet loss each way', 'everyone still sees and hears everyone', { timeout: 180_000, server: true }, async ({ net, everyone }) => {
  const { people } = await openStage(
    net,
    [{ person: PEOPLE.red }, { person: PEOPLE.green }, { person: PEOPLE.blue, impair: (host) => host.loss(0.05) }],
    everyone,
  );
  await expectEveryoneSeesAndHears(people, { timeout: 40000 });
  for (const p of people) await assertStatesTruthful(p);
});
