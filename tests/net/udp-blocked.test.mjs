// Network journey: a guest whose network blocks UDP (corporate and hotel
// networks). Red (host) and Green are on open networks; Blue's host drops
// every UDP packet. Blue sees every publisher within 5 s of join(), the
// others see and hear Blue, and Blue's media goes over ICE-TCP.

import { expectBlockedGuestJourney } from './scenarios.mjs';
import { netJourney } from './journey.mjs';

netJourney('a guest whose network blocks UDP', 'sees every publisher within 5 s of join(), and the others see and hear it', { timeout: 180_000 }, async ({ net, everyone }) => {
  await expectBlockedGuestJourney(net, everyone, { via: 'tcp' });
});
