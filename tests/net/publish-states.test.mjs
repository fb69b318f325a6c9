// Network journey: publish and subscribe states tell the truth. Blue's
// network blocks UDP and the SFU's TCP media port, so no media path exists:
// for 20 s Blue's app must never be told "published" (nor Red's app
// "subscribed" to Blue) — it shows attempting_publish (or an error) while the
// SDK keeps trying. Then the block is lifted: without any user action Blue's
// media reaches Red, and only then does the app say "published".

import assert from 'node:assert/strict';
import { PEOPLE, sleep } from '../lib.mjs';
import { assertStatesTruthful, eventsOf } from '../probes.mjs';
import { MEDIA_PORT } from './netns.mjs';
import { openStage, expectEveryoneSeesAndHears } from './stage.mjs';
import { netJourney } from './journey.mjs';

netJourney('publish and subscribe states are true', 'a guest with no media path is never told it is published, and recovers once there is one', { timeout: 180_000, server: true }, async ({ net, everyone }) => {
  const serverIp = net.serverHost.ip;
  const { people } = await openStage(
    net,
    [
      { person: PEOPLE.red },
      {
        person: PEOPLE.blue,
        impair: (host) => {
          host.blockUdp();
          host.blockTcpTo(serverIp, MEDIA_PORT);
        },
      },
    ],
    everyone,
  );
  const [red, blue] = people;

  // 20 s with no media path; the publish-state label is sampled as a person would see it.
  const shown = new Set();
  const until = Date.now() + 20000;
  while (Date.now() < until) {
    shown.add(await blue.page.getByTestId('publish-state').getAttribute('data-state'));
    await sleep(500);
  }
  const blueEvents = await eventsOf(blue.page);
  const publishStates = blueEvents.filter((e) => e.type === 'stageParticipantPublishStateChanged' && e.isLocal).map((e) => e.state);
  console.log(`no media path: Blue's publish states ${JSON.stringify(publishStates)}, label states ${JSON.stringify([...shown])}`);
  assert.ok(!publishStates.includes('published'), `Blue's app was told "published" with no media path: ${JSON.stringify(publishStates)}`);
  assert.ok(!shown.has('published'), `Blue's page showed "published": ${JSON.stringify([...shown])}`);
  assert.ok(publishStates.includes('attempting_publish'), `Blue's app shows it is trying: ${JSON.stringify(publishStates)}`);
  const redSubs = (await eventsOf(red.page)).filter((e) => e.type === 'stageParticipantSubscribeStateChanged' && e.participantId === blue.id);
  assert.ok(!redSubs.some((e) => e.state === 'subscribed'), `Red's app was told "subscribed" to Blue: ${JSON.stringify(redSubs)}`);

  // The network comes back: the SDK gets there by itself.
  blue.host.clear();
  const clearedAt = Date.now();
  await expectEveryoneSeesAndHears(people, { timeout: 30000 });
  console.log(`media path restored: both ways after ${Date.now() - clearedAt} ms`);
  await blue.page.waitForFunction(() => document.querySelector('[data-testid="publish-state"]')?.dataset.state === 'published', null, { timeout: 5000 });
  for (const p of people) await assertStatesTruthful(p);
});
