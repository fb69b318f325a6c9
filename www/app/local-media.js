// Our own camera and microphone on a stage: the local tile, the streams the
// stage publishes, and the mute / stop-camera buttons.

import { LocalStageStream } from 'stagecast';
import { showBanner } from './dom.js';
import { profile } from './profile.js';
import { refreshTile } from './tiles.js';

/**
 * IVS does not simulcast on Firefox; elsewhere the camera goes out in IVS's
 * default layers (a 640×360 camera as 640×360 and 320×180), so a guest on a
 * weak link still gets a smooth picture.
 */
const SIMULCAST = !/firefox/i.test(navigator.userAgent);
const CAMERA = SIMULCAST ? { width: 640, height: 360 } : { width: 320, height: 180 };

/**
 * Asks for the camera and microphone and shows them on our tile. Without
 * them (refused, none) the user can still watch and listen; `streams` is
 * then empty.
 */
export async function openLocalMedia(tiles, claims, setHelp) {
  let localMedia = null;
  try {
    localMedia = await navigator.mediaDevices.getUserMedia({ video: CAMERA, audio: true });
  } catch (err) {
    showBanner(`Camera/microphone unavailable (${err.name || 'error'}): you can still watch and listen.`, 'warn');
    setHelp('Your camera and microphone are not available (the browser refused them): you see and hear the stage, but nobody sees or hears you. Allow them and rejoin to take part.');
  }
  const streams = [];
  let mic = null;
  let cam = null;
  const tile = tiles.tileFor({ id: claims.jti || '', userId: claims.user_id || profile.userId, attributes: claims.attributes || {} }, true);
  if (localMedia) {
    for (const track of localMedia.getTracks()) {
      const stream = new LocalStageStream(track, track.kind === 'video' ? { simulcast: { enabled: SIMULCAST } } : undefined);
      streams.push(stream);
      if (track.kind === 'audio') mic = stream;
      else cam = stream;
    }
    for (const t of localMedia.getVideoTracks()) tile.media.addTrack(t);
    refreshTile(tile);
  }
  return {
    streams,
    mic,
    cam,
    tile,
    /** Releases the camera and microphone. */
    stop() {
      if (!localMedia) return;
      for (const t of localMedia.getTracks()) {
        t.stop();
        tile.media.removeTrack(t);
      }
      // A media element waiting for data it will never get would hold the
      // page's load event forever.
      tile.video.srcObject = null;
      refreshTile(tile);
    },
  };
}

/**
 * A button that mutes `stream` (sets `tile[flag]`) and unmutes it again,
 * labelled `labels[0]` while muted, `labels[1]` while not; disabled without
 * that stream.
 */
function wireMuteButton(btn, stream, tile, flag, labels) {
  btn.disabled = !stream;
  btn.addEventListener('click', () => {
    if (!stream) return;
    const muted = !tile[flag];
    stream.setMuted(muted);
    tile[flag] = muted;
    btn.textContent = muted ? labels[0] : labels[1];
    btn.setAttribute('aria-pressed', String(muted));
    refreshTile(tile);
  });
}

/** The "Mute mic" and "Stop camera" buttons (disabled without that device). */
export function wireMediaButtons(micBtn, camBtn, local) {
  wireMuteButton(micBtn, local.mic, local.tile, 'audioMuted', ['Unmute mic', 'Mute mic']);
  wireMuteButton(camBtn, local.cam, local.tile, 'videoStopped', ['Start camera', 'Stop camera']);
}
