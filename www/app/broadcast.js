// The host's "Go live" panel on the stage view.

import { BASIC_LANDSCAPE, BroadcastClientEvents, ConnectionState } from 'stagecast';
import IVSBroadcastClient from 'stagecast';
import { h, showBanner } from './dom.js';

/** The stream size: BASIC_LANDSCAPE, or 640×360 at 15 fps when localStorage says "small" (tests, slow machines). */
function streamConfig() {
  if (localStorage.getItem('stagecast.streamSize') === 'small') {
    return { maxResolution: { width: 640, height: 360 }, maxFramerate: 15, maxBitrate: 800 };
  }
  return BASIC_LANDSCAPE;
}

const LIVE_LABELS = {
  offline: 'Not live',
  connecting: 'Going live…',
  live: 'LIVE',
  reconnecting: 'Reconnecting…',
  error: 'Not live (error)',
};

/**
 * The host's "Go live" panel: a broadcast client composites every stage
 * participant (auto layout, grid, name labels) into one picture, shown in the preview
 * canvas, and sends it to the group's channel.
 */
export function broadcastPanel(session) {
  const channel = session.channel;
  let stage = null;
  let client = null;
  let layout = null;
  const preview = h('canvas', { class: 'broadcast-preview', 'data-testid': 'broadcast-preview', width: 640, height: 360 });
  const stateEl = h('span', { class: 'status live-state', 'data-testid': 'live-state', 'data-state': 'offline' }, LIVE_LABELS.offline);
  const goLiveBtn = h('button', { class: 'primary', 'data-testid': 'go-live' }, 'Go live');
  const endBtn = h('button', { class: 'control danger', 'data-testid': 'end-stream', hidden: true }, 'End stream');
  const watchLink = h('a', {
    class: 'watch-link',
    'data-testid': 'watch-link',
    href: `/watch/${encodeURIComponent(session.groupId)}`,
    target: '_blank',
    rel: 'noopener',
  }, 'Open the watch page');
  const placeholder = h('p', { class: 'muted preview-placeholder', 'data-testid': 'preview-placeholder' },
    'Press “Go live” to stream everyone on this stage to your channel. Viewers watch it on the watch page.');

  function setState(state, detail) {
    stateEl.dataset.state = state;
    stateEl.textContent = detail ? `${LIVE_LABELS[state]}: ${detail}` : LIVE_LABELS[state];
    const busy = state === 'connecting' || state === 'live' || state === 'reconnecting';
    goLiveBtn.hidden = busy;
    goLiveBtn.disabled = false;
    endBtn.hidden = !busy;
    endBtn.disabled = false;
  }

  function release() {
    if (layout) {
      layout.stop();
      layout = null;
    }
    if (client) {
      client.delete();
      client = null;
    }
    preview.hidden = true;
    placeholder.hidden = false;
  }

  function stop() {
    if (client) {
      try {
        client.stopBroadcast();
      } catch (err) {
        console.warn('stopBroadcast failed', err);
      }
    }
    release();
    setState('offline');
  }

  goLiveBtn.addEventListener('click', async () => {
    if (!stage) return;
    goLiveBtn.disabled = true;
    setState('connecting');
    try {
      // Created in the click handler: the audio mixer needs a user gesture.
      client = IVSBroadcastClient.create({ streamConfig: streamConfig(), ingestEndpoint: channel.ingestEndpoint });
      const own = client;
      client.on(BroadcastClientEvents.CONNECTION_STATE_CHANGE, (state) => {
        if (client !== own) return;
        if (state === ConnectionState.CONNECTED) setState('live');
        // The client reconnects by itself after a drop or a server restart.
        else if (state === ConnectionState.DISCONNECTED) setState('reconnecting');
        else if (state === ConnectionState.FAILED) {
          release();
          setState('error', 'the connection to the server was lost');
        }
      });
      client.on(BroadcastClientEvents.ERROR, (err) => console.warn('broadcast client error', err));
      // Each tile carries the participant's name, so viewers can tell who is who.
      layout = IVSBroadcastClient.autoLayout(client, stage, { mode: 'grid', nameLabels: true });
      client.attachPreview(preview);
      preview.hidden = false;
      placeholder.hidden = true;
      window.__stagecast.broadcast = client;
      await client.startBroadcast(channel.streamKey);
      if (client === own && client.getConnectionState() === ConnectionState.CONNECTED) setState('live');
    } catch (err) {
      release();
      const message = err && err.message ? err.message : String(err);
      showBanner(`Could not go live: ${message}`, 'error', { code: String(err && err.code) });
      setState('error', message);
    }
  });

  endBtn.addEventListener('click', () => {
    endBtn.disabled = true;
    stop();
  });

  preview.hidden = true;
  const panel = h('section', { class: 'broadcast', 'data-testid': 'broadcast' },
    h('div', { class: 'row' },
      h('h2', {}, 'Broadcast'),
      stateEl,
      h('div', { class: 'grow' }),
      watchLink,
      goLiveBtn,
      endBtn,
    ),
    preview,
    placeholder,
  );
  return {
    panel,
    setStage(s) {
      stage = s;
    },
    stop() {
      if (client) stop();
    },
    /** Off this stage for good: nothing to go live with any more. */
    close() {
      if (client) stop();
      stage = null;
      goLiveBtn.disabled = true;
      goLiveBtn.title = 'You are no longer on this stage';
    },
    /** Broadcasting, or about to be (a reload now would end it). */
    isLive() {
      return !!client && ['connecting', 'live', 'reconnecting'].includes(stateEl.dataset.state);
    },
  };
}
