// Journey: 30 hls.js viewers (3 pages × 10) watch a live channel through
// Debian's nginx in front of the server (see tests/nginx.mjs for what is
// checked). NGINX_PAGES=5 runs the 50 players of issue 13: on a 2-core
// machine some of them stall for seconds (bufferStalledError) and, now and
// then, one for the whole 20 s, so the default is the most that plays every
// time here.

import { BASE, API_KEY } from './lib.mjs';
import { cachedViewersSuite, PER_PAGE } from './nginx.mjs';

const PAGES = Number(process.env.NGINX_PAGES || 3);

cachedViewersSuite(`${PAGES * PER_PAGE} hls.js viewers through an nginx cache`, PAGES, async () => ({
  base: BASE,
  apiKey: API_KEY,
  origins: [new URL(BASE).host],
}));
