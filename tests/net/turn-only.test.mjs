// Network journey: a guest who can reach only a TURN server. Red (host) and
// Green are on open networks; Blue's host may talk to nothing but the
// server's HTTP port (the page, the API, the event socket) and coturn's TCP
// port (started by the test in its own namespace, TURN REST API secret):
// the SFU's media port is unreachable over UDP and TCP. Blue's media goes
// through a TURN/TCP relay with credentials the server handed out; Blue sees
// every publisher within 5 s of join() and the others see and hear Blue.

import assert from 'node:assert/strict';
import { expectBlockedGuestJourney } from './scenarios.mjs';
import { netJourney } from './journey.mjs';

netJourney('a guest who can reach only a TURN server', 'joins, publishes and subscribes through the relay', { timeout: 180_000 }, async ({ net, everyone }) => {
  const { up, turn } = await expectBlockedGuestJourney(net, everyone, { via: 'turn' });
  // The relay was configured from what the server sent: our coturn, with
  // TURN REST API credentials (username "<expiry>:<id>").
  for (const pc of up) {
    const ours = pc.iceServers.find((s) => s.urls.some((u) => u.startsWith(`turn:${turn.ip}:`)));
    assert.ok(ours, `Blue's peer connection uses the test's TURN server: ${JSON.stringify(pc.iceServers)}`);
    assert.ok(ours.hasCredential && /^\d+:/.test(ours.username), `time-limited TURN credentials: ${JSON.stringify(ours)}`);
    assert.equal(pc.pair.remote.address, net.serverHost.ip, `the relay's peer is the SFU: ${JSON.stringify(pc.pair)}`);
  }
});
