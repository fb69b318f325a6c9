// Network journey: guests on other machines need HTTPS (browsers give the
// camera only to secure contexts). The server serves TLS with a certificate
// the test made for its address, trusted by the browsers through its key's
// hash (no "treat this origin as secure" flag here). The host creates a
// stage over https, a guest on another host opens the invite link, gets a
// camera and microphone and publishes them; the two see and hear each other,
// and the event socket and WHIP URLs in the token are wss:// and https://.

import assert from 'node:assert/strict';
import { PEOPLE, tokenClaims } from '../lib.mjs';
import { assertStatesTruthful } from '../probes.mjs';
import { openStage, expectEveryoneSeesAndHears } from './stage.mjs';
import { netJourney } from './journey.mjs';

netJourney('a guest joins over https', 'opens the invite link over https and publishes camera and microphone', { timeout: 150_000, server: { tls: true } }, async ({ net, everyone }) => {
  assert.match(net.url, /^https:\/\//);
  const { people, invite } = await openStage(net, [{ person: PEOPLE.red }, { person: PEOPLE.blue }], everyone);
  const [, blue] = people;
  assert.ok(invite.startsWith(`${net.url}/?join=`), `the invite link is https: ${invite}`);
  const page = await blue.page.evaluate(() => ({
    secure: window.isSecureContext,
    protocol: location.protocol,
    mediaDevices: !!navigator.mediaDevices,
    token: window.__stagecast?.token,
  }));
  assert.equal(page.protocol, 'https:');
  assert.equal(page.secure, true, "the guest's page is a secure context");
  assert.equal(page.mediaDevices, true, 'the camera API is there');
  const claims = tokenClaims(page.token);
  assert.match(claims.events_url, /^wss:\/\//, `events over wss: ${claims.events_url}`);
  assert.match(claims.whip_url, /^https:\/\//, `WHIP over https: ${claims.whip_url}`);
  await blue.page.waitForFunction(() => document.querySelector('[data-testid="publish-state"]')?.dataset.state === 'published', null, { timeout: 20000 });
  await expectEveryoneSeesAndHears(people);
  for (const p of people) await assertStatesTruthful(p);
});
