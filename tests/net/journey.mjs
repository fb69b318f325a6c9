// The frame every network journey shares: a fresh private network (and,
// if asked, a server on it) before, one test that receives `{net, everyone}`,
// and afterwards every browser closed (with the pages' console errors and the
// server log printed if the test failed) and the network removed. The test
// must push every participant/viewer it starts to `everyone`; no page may
// throw an uncaught error.

import { describe, it, before, after } from 'node:test';
import { assertNoPageErrors } from '../lib.mjs';
import { createNet } from './netns.mjs';
import { closeAll } from './stage.mjs';

/**
 * `describe(title)` with one `it(test)`; `server` starts the server first
 * (`true`, or the options of `Net.startServer`).
 */
export function netJourney(title, test, { timeout, server = false, todo = undefined }, body) {
  describe(title, { timeout }, () => {
    const ctx = { net: null, everyone: [] };
    let ok = false;

    before(async () => {
      ctx.net = createNet();
      if (server) await ctx.net.startServer(server === true ? {} : server);
    });

    after(async () => {
      await closeAll(ctx.net, ctx.everyone, !ok);
      await ctx.net?.close();
    });

    // `todo`: a known gap, named; it runs and reports but does not fail the suite.
    it(test, { todo }, async () => {
      await body(ctx);
      assertNoPageErrors(ctx.everyone);
      ok = true;
    });
  });
}
