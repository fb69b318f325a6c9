// Journey: the nginx cache in front of two nodes sharing one Redis
// (distributed mode, issue 13). The broadcast is ingested on node A;
// nginx's upstream is both nodes, so about half of what it fetches goes to
// node B, which forwards it to A. Checked as in tests/nginx-cache.test.mjs
// (tests/nginx.mjs): every viewer plays, and the origin is asked for each
// part at most twice (nginx's upstream log, and A's own count, which
// includes what B forwarded). 30 viewers by default; NGINX_PAGES=5 runs the
// issue's 50 (on 2 cores some of them stall, as with one node).

import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { ownServer } from './lib.mjs';
import { cachedViewersSuite, PER_PAGE } from './nginx.mjs';
import { startRedis } from './redis.mjs';

const PAGES = Number(process.env.NGINX_PAGES || 3);

cachedViewersSuite(`${PAGES * PER_PAGE} hls.js viewers through nginx in front of two nodes`, PAGES, async () => {
  const redis = await startRedis();
  mkdirSync('target', { recursive: true });
  const dir = mkdtempSync('target/nginx-nodes-');
  const apiKey = 'nginx-nodes-key';
  const node = (id) => {
    mkdirSync(`${dir}/${id}`);
    return ownServer({ dataDir: `${dir}/${id}`, apiKey, args: ['--redis', redis.url, '--node-id', id] });
  };
  const a = await node('a');
  const b = await node('b');
  return {
    base: a.base,
    apiKey,
    origins: [new URL(a.base).host, new URL(b.base).host],
    teardown: async () => {
      await a.kill();
      await b.kill();
      await redis.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
});
