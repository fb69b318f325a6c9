// The watch page's players, bundled from npm by `cargo xtask build` into
// www/dist/players.js (esbuild, ESM). The IVS Player's wasm worker files are
// copied next to the bundle; pass their absolute URLs to `create`.
export { default as Hls } from 'hls.js';
export { create as createIvsPlayer, isPlayerSupported as ivsPlayerSupported, PlayerState, PlayerEventType } from 'amazon-ivs-player';
