// The stage view's tile grid: one tile per participant (ours first), with
// video, avatar, name, host badge, muted and reconnecting marks, a
// connection-quality dot (the SDK's requestQualityStats(), every 2 s) and,
// for the host, a Remove button on guests' tiles.

import { NetworkQuality, StreamType } from 'stagecast';
import { api } from './api.js';
import { safeAvatar } from './avatars.js';
import { h, showBanner } from './dom.js';
import { profile } from './profile.js';

const MIC_ICON =
  '<svg viewBox="0 0 24 24" width="16" height="16" aria-hidden="true"><path fill="currentColor" d="M12 14a3 3 0 0 0 3-3V5a3 3 0 0 0-6 0v6a3 3 0 0 0 3 3zm5-3a5 5 0 0 1-10 0H5a7 7 0 0 0 6 6.9V21h2v-3.1A7 7 0 0 0 19 11z"/><path stroke="currentColor" stroke-width="2.4" d="M4 3l17 18"/></svg>';

/** NetworkQuality value → the word the dot shows (as its title and data-quality). */
const QUALITY = {
  [NetworkQuality.EXCELLENT]: 'excellent',
  [NetworkQuality.GOOD]: 'good',
  [NetworkQuality.NORMAL]: 'fair',
  [NetworkQuality.POOR]: 'poor',
  [NetworkQuality.DOWN]: 'down',
};
const QUALITY_EVERY_MS = 2000;

/** The host's Remove button on a guest's tile `el`. */
function removeButton(session, name, el) {
  const removeBtn = h('button', {
    class: 'remove',
    'data-testid': 'remove-button',
    title: `Remove ${name} from the stage`,
    text: 'Remove',
    onClick: async () => {
      if (!confirm(`Remove ${name} from the stage?`)) return;
      removeBtn.disabled = true;
      try {
        await api('POST', '/api/disconnect', {
          groupId: session.groupId,
          userId: profile.userId,
          participantId: el.dataset.participantId,
        }, session.token);
      } catch (err) {
        showBanner(`Could not remove ${name}: ${err.message}`);
        removeBtn.disabled = false;
      }
    },
  });
  return removeBtn;
}

/** A new tile record and its element (not yet in the grid). */
function newTile(info, isLocal, session, ownName) {
  const attrs = (info && info.attributes) || {};
  const name = isLocal ? ownName : attrs.username || info.userId || 'Guest';
  const media = new MediaStream();
  const video = h('video', { 'data-testid': 'tile-video', autoplay: true, playsInline: true, muted: isLocal });
  // `muted` must be a property for autoplay rules; the attribute alone is not enough.
  video.muted = isLocal;
  video.srcObject = media;
  const mutedEl = h('span', { class: 'mic-off', 'data-testid': 'tile-muted', hidden: true, title: 'Microphone muted' });
  const reconnectEl = h('span', { class: 'tile-reconnecting', 'data-testid': 'tile-reconnecting', hidden: true }, 'Reconnecting…');
  mutedEl.innerHTML = MIC_ICON + '<span>Muted</span>';
  const qualityEl = h('span', { class: 'tile-quality', 'data-testid': 'tile-quality', 'data-quality': 'unknown', hidden: true });
  const el = h(
    'div',
    {
      class: 'tile',
      'data-testid': 'tile',
      'data-participant-id': (info && info.id) || '',
      'data-user-id': (info && info.userId) || '',
      'data-username': name,
      'data-local': String(isLocal),
      'data-muted': 'false',
      'data-video-stopped': 'false',
      'data-has-video': 'false',
      'data-host': String(attrs.isHost === 'true'),
    },
    video,
    reconnectEl,
    h('img', { class: 'tile-avatar', 'data-testid': 'tile-avatar', src: isLocal ? profile.avatarUrl : safeAvatar(attrs.avatarUrl), alt: '' }),
    h('div', { class: 'tile-label' },
      qualityEl,
      h('span', { class: 'name', 'data-testid': 'tile-name' }, isLocal ? `${name} (you)` : name),
      attrs.isHost === 'true' ? h('span', { class: 'badge', 'data-testid': 'host-badge' }, 'Host') : null,
      mutedEl,
    ),
  );
  if (session.isHost && !isLocal && session.groupId) el.append(removeButton(session, name, el));
  return { el, video, media, mutedEl, reconnectEl, qualityEl, statsStream: null, wasSubscribed: false, audioMuted: false, videoStopped: false };
}

/** Shows a tile's state (video, muted, camera stopped) on its element. */
export function refreshTile(tile) {
  const hasVideo = tile.media.getVideoTracks().length > 0;
  tile.el.dataset.hasVideo = String(hasVideo);
  tile.el.dataset.muted = String(tile.audioMuted);
  tile.el.dataset.videoStopped = String(tile.videoStopped);
  tile.mutedEl.hidden = !tile.audioMuted;
}

/** Takes a stage stream's mute state into its tile (call `refreshTile` after). */
export function applyStreamMute(tile, stream) {
  if (!stream) return;
  if (stream.streamType === StreamType.AUDIO) tile.audioMuted = !!stream.isMuted;
  if (stream.streamType === StreamType.VIDEO) tile.videoStopped = !!stream.isMuted;
}

/** Keeps a tile's stage stream for its quality dot (video if it has one). */
export function useForQuality(tile, stream) {
  if (!stream || typeof stream.requestQualityStats !== 'function') return;
  if (!tile.statsStream || stream.streamType === StreamType.VIDEO) tile.statsStream = stream;
}

function showQuality(tile, word) {
  tile.qualityEl.hidden = !word;
  tile.qualityEl.dataset.quality = word || 'unknown';
  tile.qualityEl.title = word ? `Connection: ${word}` : '';
}

/** The tiles in `grid`, keyed by participant id ("local" for ours). */
export function createTiles(grid, session, ownName) {
  const tiles = new Map(); // participant id (or "local") -> tile record

  const timer = setInterval(async () => {
    if (!grid.isConnected) return clearInterval(timer);
    for (const tile of tiles.values()) {
      const stream = tile.statsStream;
      if (!stream) continue;
      try {
        const [q] = await stream.requestQualityStats();
        showQuality(tile, q ? QUALITY[q.networkQuality] : null);
      } catch {
        showQuality(tile, null);
      }
    }
  }, QUALITY_EVERY_MS);

  function updateGridCount() {
    grid.dataset.count = String(tiles.size);
  }

  return {
    /** A participant's tile, made on first sight. */
    tileFor(info, isLocal) {
      const key = isLocal ? 'local' : info.id;
      let tile = tiles.get(key);
      if (tile) {
        if (info && info.id) tile.el.dataset.participantId = info.id;
        if (info && info.userId) tile.el.dataset.userId = info.userId;
        return tile;
      }
      tile = newTile(info, isLocal, session, ownName);
      tiles.set(key, tile);
      if (isLocal) grid.prepend(tile.el);
      else grid.append(tile.el);
      updateGridCount();
      return tile;
    },
    get(id) {
      return tiles.get(id);
    },
    removeTile(id) {
      const tile = tiles.get(id);
      if (!tile) return;
      tile.video.srcObject = null;
      tile.el.remove();
      tiles.delete(id);
      updateGridCount();
    },
    /** Removes every tile but ours. */
    removeRemote() {
      for (const id of [...tiles.keys()]) if (id !== 'local') this.removeTile(id);
    },
  };
}
