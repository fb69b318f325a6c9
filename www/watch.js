// The simple watch page: /watch.html?group=<groupId>[&player=ivs].
// It finds the group's channel in the demo backend's list, plays it while it
// is live (muted autoplay), and otherwise shows Offline / Ended and polls.

import { Hls, createIvsPlayer, ivsPlayerSupported, PlayerState, PlayerEventType } from '/dist/players.js';

const params = new URLSearchParams(location.search);
const groupId = params.get('group') || '';
const playerKind = params.get('player') === 'ivs' ? 'ivs' : 'hls';
/** How often the list is asked whether the stream is live. */
const POLL_MS = 2000;

const video = document.querySelector('[data-testid="watch-video"]');
const statusEl = document.querySelector('[data-testid="watch-status"]');
const titleEl = document.querySelector('[data-testid="watch-title"]');
const messageEl = document.querySelector('[data-testid="watch-message"]');
const playerEl = document.querySelector('[data-testid="watch-player"]');
video.muted = true;
playerEl.textContent = playerKind === 'ivs' ? 'Amazon IVS Player' : 'hls.js (low latency)';
playerEl.dataset.player = playerKind;

const LABELS = {
  loading: 'Loading…',
  offline: 'Offline',
  connecting: 'Starting…',
  live: 'LIVE',
  ended: 'Ended',
  missing: 'Not found',
  error: 'Error',
};
const MESSAGES = {
  offline: 'This stage is not live right now. The video starts as soon as the host goes live.',
  ended: 'The stream has ended. It starts again here if the host goes live again.',
  missing: 'This stage does not exist (any more).',
};

/** Everything the page knows, for people and tests (window.__watch). */
const state = { status: 'loading', playbackUrl: null, player: playerKind, error: null };
window.__watch = state;

function setStatus(status, detail) {
  state.status = status;
  statusEl.dataset.state = status;
  statusEl.textContent = LABELS[status] || status;
  const text = detail || MESSAGES[status] || '';
  messageEl.textContent = text;
  messageEl.hidden = !text || status === 'live';
}

let stopPlayer = null; // tears the current player down, if one runs
let wasPlaying = false;

function teardown(next) {
  if (stopPlayer) {
    const stop = stopPlayer;
    stopPlayer = null;
    try {
      stop();
    } catch (err) {
      console.warn('stopping the player failed', err);
    }
  }
  wasPlaying = false;
  setStatus(next);
}

/** The stream is over (or unreachable): Ended if it played, else Offline. */
function streamGone() {
  if (!stopPlayer) return;
  teardown(wasPlaying ? 'ended' : 'offline');
}

video.addEventListener('playing', () => {
  if (!stopPlayer) return;
  wasPlaying = true;
  setStatus('live');
});
video.addEventListener('ended', streamGone);

function startHls(url) {
  if (!Hls.isSupported()) {
    if (video.canPlayType('application/vnd.apple.mpegurl')) {
      // Safari plays (LL-)HLS natively.
      video.src = url;
      video.play().catch(() => {});
      return () => {
        video.removeAttribute('src');
        video.load();
      };
    }
    throw new Error('this browser cannot play HLS (no Media Source Extensions)');
  }
  const hls = new Hls({ lowLatencyMode: true, backBufferLength: 10 });
  hls.on(Hls.Events.MANIFEST_PARSED, () => video.play().catch(() => {}));
  hls.on(Hls.Events.ERROR, (_event, data) => {
    if (data && data.fatal) {
      state.error = `${data.type}: ${data.details}`;
      streamGone();
    }
  });
  hls.loadSource(url);
  hls.attachMedia(video);
  return () => {
    hls.destroy();
    video.removeAttribute('src');
    video.load();
  };
}

function startIvs(url) {
  if (!ivsPlayerSupported) throw new Error('the IVS Player is not supported in this browser');
  const player = createIvsPlayer({
    wasmWorker: new URL('/dist/amazon-ivs-wasmworker.min.js', location.href).href,
    wasmBinary: new URL('/dist/amazon-ivs-wasmworker.min.wasm', location.href).href,
  });
  player.attachHTMLVideoElement(video);
  player.setMuted(true);
  player.setAutoplay(true);
  player.addEventListener(PlayerState.PLAYING, () => {
    wasPlaying = true;
    setStatus('live');
  });
  player.addEventListener(PlayerState.ENDED, streamGone);
  player.addEventListener(PlayerEventType.ERROR, (err) => {
    state.error = `${err && err.type}: ${err && err.message}`;
    streamGone();
  });
  player.load(url);
  player.play();
  return () => player.delete();
}

function play(url) {
  state.playbackUrl = url;
  setStatus('connecting');
  try {
    stopPlayer = playerKind === 'ivs' ? startIvs(url) : startHls(url);
  } catch (err) {
    state.error = String(err && err.message ? err.message : err);
    setStatus('error', `Cannot play: ${state.error}`);
  }
}

async function poll() {
  let items = null;
  try {
    const res = await fetch('/api/list', { method: 'POST' });
    if (res.ok) items = await res.json();
  } catch {
    items = null; // the server is unreachable: try again on the next poll
  }
  if (Array.isArray(items)) {
    const item = items.find((i) => i.groupId === groupId);
    if (!item) {
      if (stopPlayer) streamGone();
      if (state.status !== 'ended') setStatus('missing');
    } else {
      const host = (item.stageAttributes && item.stageAttributes.username) || 'Someone';
      titleEl.textContent = `${host}'s stage`;
      document.title = `Stagecast — ${host}'s stage`;
      if (item.live && item.playbackUrl && !stopPlayer && state.status !== 'error') {
        play(item.playbackUrl);
      } else if (!item.live && stopPlayer) {
        streamGone();
      } else if (!item.live && (state.status === 'loading' || state.status === 'missing')) {
        setStatus('offline');
      }
    }
  }
  setTimeout(poll, POLL_MS);
}

if (!groupId) {
  setStatus('missing', 'No stage given: open this page as /watch.html?group=<groupId>.');
} else {
  poll();
}
