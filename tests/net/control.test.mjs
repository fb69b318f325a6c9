// Network journey: the control. The server, a host and a guest each on their
// own host of the private network, nothing impaired: they see and hear each
// other, over UDP to the server's address. If this fails, the harness is
// broken, not the product. (Whether "published" waited for the connection is
// the product's business: publish-states.test.mjs and the impaired journeys
// check it.)

import assert from 'node:assert/strict';
import { PEOPLE } from '../lib.mjs';
import { peerConnections } from '../probes.mjs';
import { openStage, expectEveryoneSeesAndHears, expectTilesOfEachOther } from './stage.mjs';
import { netJourney } from './journey.mjs';

netJourney('control: two people on separate hosts, nothing impaired', 'a host and a guest on their own hosts see and hear each other', { timeout: 150_000, server: true }, async ({ net, everyone }) => {
  const { people } = await openStage(net, [{ person: PEOPLE.red }, { person: PEOPLE.blue }], everyone);
  const [red, blue] = people;
  assert.notEqual(red.host.ip, blue.host.ip, 'each person has their own address');
  assert.ok(!net.url.includes('127.0.0.1'), `the server is off loopback: ${net.url}`);
  await expectTilesOfEachOther(people);
  await expectEveryoneSeesAndHears(people);

  // The media really crossed the private network, to the server's address.
  for (const p of people) {
    const pcs = await peerConnections(p.page);
    const connected = pcs.filter((pc) => pc.state === 'connected');
    assert.ok(connected.length >= 2, `${p.name} has a publish and a subscribe connection up: ${JSON.stringify(pcs)}`);
    for (const pc of connected) {
      assert.equal(pc.pair?.remote?.address, net.serverHost.ip, `${p.name}'s media goes to the server's address`);
      assert.equal(pc.pair?.local?.protocol, 'udp', `${p.name}'s media uses UDP on an open network`);
    }
  }
});
