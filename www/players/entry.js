// The watch page's players, bundled from npm by `cargo xtask build` into
// www/dist/players.js (esbuild, ESM). The IVS Player's wasm worker files are
// copied next to the bundle; pass their absolute URLs to `create`.
export { default as Hls } from 'hls.js';
export { create as createIvsPlayer, isPlayerSupported as ivsPlayerSupported, PlayerState, PlayerEventType } from 'amazon-ivs-player';

// hls.js's playlist load policy for our streams. A broadcaster reconnecting
// (a drop, a server restart) leaves the playlist open without new parts for
// up to the server's reconnect window (20 s by default), and the server
// answers a blocking reload it cannot satisfy in time with 503: keep asking
// for about 25 s (0.5, 1, 2, then every 4 s) instead of hls.js's default two
// retries (~3 s), after which the page would show the stream as ended.
export const PATIENT_PLAYLIST = {
  default: {
    maxTimeToFirstByteMs: 10000,
    maxLoadTimeMs: 20000,
    timeoutRetry: { maxNumRetry: 2, retryDelayMs: 0, maxRetryDelayMs: 0 },
    errorRetry: { maxNumRetry: 8, retryDelayMs: 500, maxRetryDelayMs: 4000 },
  },
};
