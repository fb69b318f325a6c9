// The stage view's answers to the SDK's stage events: the connection and
// publish statuses, tiles and their media, errors, and leaving. Every event
// is also recorded in `window.__stagecast.events` (`record`) for tests.

import { StageConnectionState, StageEvents, StreamType } from 'stagecast';
import { bannerReason, hideBanner, showBanner } from './dom.js';
import { describeError, errorFields } from './stage-errors.js';
import { applyStreamMute, refreshTile, useForQuality } from './tiles.js';

/**
 * Wires every stage event. `ctx`: `record`, `ui` (the stage view's parts),
 * `tiles`, `local` (our media) and `presence` (`left`, `finish(reason)`).
 */
export function wireStageEvents(stage, ctx) {
  wireConnectionState(stage, ctx.record, ctx.ui.statusEl);
  wireParticipants(stage, ctx);
  wireMedia(stage, ctx);
  wirePublishState(stage, ctx.record, ctx.ui.publishEl);
  wireErrors(stage, ctx);
  stage.on(StageEvents.STAGE_LEFT, (reason) => {
    ctx.record(StageEvents.STAGE_LEFT, { reason });
    ctx.presence.finish(reason);
  });
}

function wireConnectionState(stage, record, statusEl) {
  // Once connected, `connecting` means the SDK is reconnecting by itself.
  let wasConnected = false;
  stage.on(StageEvents.STAGE_CONNECTION_STATE_CHANGED, (state) => {
    record(StageEvents.STAGE_CONNECTION_STATE_CHANGED, { state });
    const reconnecting = wasConnected && state === StageConnectionState.CONNECTING;
    if (state === StageConnectionState.CONNECTED) wasConnected = true;
    const labels = {
      [StageConnectionState.CONNECTED]: 'Connected',
      [StageConnectionState.CONNECTING]: reconnecting ? 'Reconnecting…' : 'Connecting…',
      [StageConnectionState.DISCONNECTED]: 'Disconnected',
      [StageConnectionState.ERRORED]: 'Connection error',
    };
    statusEl.textContent = labels[state] || String(state);
    statusEl.dataset.state = String(state);
    statusEl.dataset.reconnecting = String(reconnecting);
  });
}

const isRemoteHost = (info) => !info.isLocal && ((info.attributes || {}).isHost === 'true');

/** Tiles come and go with participants; the host leaving is said in the banner. */
function wireParticipants(stage, { record, tiles, presence }) {
  stage.on(StageEvents.STAGE_PARTICIPANT_JOINED, (info) => {
    record(StageEvents.STAGE_PARTICIPANT_JOINED, { participantId: info.id, isLocal: !!info.isLocal });
    tiles.tileFor(info, !!info.isLocal);
    if (isRemoteHost(info) && bannerReason() === 'host-left') hideBanner();
  });

  stage.on(StageEvents.STAGE_PARTICIPANT_LEFT, (info) => {
    record(StageEvents.STAGE_PARTICIPANT_LEFT, { participantId: info.id, isLocal: !!info.isLocal });
    if (!info.isLocal) tiles.removeTile(info.id);
    if (isRemoteHost(info) && !presence.left) {
      const name = (info.attributes || {}).username || 'The host';
      showBanner(`${name} (the host) left the stage. You can stay; the host can come back.`, 'warn', { reason: 'host-left' });
    }
  });

  stage.on(StageEvents.STAGE_PARTICIPANT_SUBSCRIBE_STATE_CHANGED, (info, state) => {
    record(StageEvents.STAGE_PARTICIPANT_SUBSCRIBE_STATE_CHANGED, { participantId: info.id, state });
    const tile = tiles.get(info.id);
    if (!tile) return;
    tile.el.dataset.subscribeState = String(state);
    // A tile whose media dropped says so until it is back.
    if (state === 'subscribed') tile.wasSubscribed = true;
    tile.reconnectEl.hidden = !(tile.wasSubscribed && state === 'attempting_subscribe');
  });
}

/** Remote participants' tracks and mute states onto their tiles. */
function wireMedia(stage, { record, tiles, ui }) {
  stage.on(StageEvents.STAGE_PARTICIPANT_STREAMS_ADDED, (info, streams) => {
    record(StageEvents.STAGE_PARTICIPANT_STREAMS_ADDED, {
      participantId: info.id,
      isLocal: !!info.isLocal,
      streamTypes: streams.map((s) => s.streamType),
    });
    const tile = tiles.tileFor(info, !!info.isLocal);
    for (const stream of streams) useForQuality(tile, stream);
    // For tests and the console, as `broadcast` and `chat` are.
    const video = streams.find((s) => s.streamType === StreamType.VIDEO);
    if (video && window.__stagecast) (window.__stagecast.videoStreams ||= {})[info.id] = video;
    if (info.isLocal) return; // the local preview already shows our own camera
    for (const stream of streams) {
      const track = stream.mediaStreamTrack;
      if (track && !tile.media.getTracks().includes(track)) {
        for (const old of tile.media.getTracks().filter((t) => t.kind === track.kind)) tile.media.removeTrack(old);
        tile.media.addTrack(track);
      }
      applyStreamMute(tile, stream);
    }
    // Re-assigning srcObject makes the element pick up tracks added later.
    tile.video.srcObject = tile.media;
    ui.playWithSound(tile.video);
    refreshTile(tile);
  });

  stage.on(StageEvents.STAGE_PARTICIPANT_STREAMS_REMOVED, (info, streams) => {
    record(StageEvents.STAGE_PARTICIPANT_STREAMS_REMOVED, {
      participantId: info.id,
      isLocal: !!info.isLocal,
      streamTypes: streams.map((s) => s.streamType),
    });
    const tile = tiles.get(info.isLocal ? 'local' : info.id);
    if (!tile) return;
    if (streams.some((s) => s.id === tile.statsStream?.id)) tile.statsStream = null;
    if (info.isLocal) return;
    for (const stream of streams) {
      const track = stream.mediaStreamTrack;
      if (track) tile.media.removeTrack(track);
    }
    refreshTile(tile);
  });

  stage.on(StageEvents.STAGE_STREAM_MUTE_CHANGED, (info, stream) => {
    record(StageEvents.STAGE_STREAM_MUTE_CHANGED, {
      participantId: info.id,
      isLocal: !!info.isLocal,
      streamType: stream && stream.streamType,
      muted: !!(stream && stream.isMuted),
    });
    if (info.isLocal) return;
    const tile = tiles.get(info.id);
    if (!tile) return;
    applyStreamMute(tile, stream);
    refreshTile(tile);
  });
}

function wirePublishState(stage, record, publishEl) {
  let wasPublished = false;
  stage.on(StageEvents.STAGE_PARTICIPANT_PUBLISH_STATE_CHANGED, (info, state) => {
    record(StageEvents.STAGE_PARTICIPANT_PUBLISH_STATE_CHANGED, { participantId: info.id, isLocal: !!info.isLocal, state });
    if (!info.isLocal) return;
    if (state === 'not_published') wasPublished = false;
    const labels = {
      published: 'Camera on stage',
      attempting_publish: wasPublished ? 'Reconnecting camera…' : 'Joining with camera…',
      not_published: 'Not publishing',
      errored: 'Not publishing (error)',
    };
    if (state === 'published') wasPublished = true;
    publishEl.textContent = labels[state] || String(state);
    publishEl.dataset.state = String(state);
  });
}

function wireErrors(stage, { record, ui, local, presence }) {
  stage.on(StageEvents.ERROR, (err) => {
    record(StageEvents.ERROR, errorFields(err));
    // After leaving, late failures of in-flight requests would only hide the
    // reason the user actually needs to see.
    if (presence.left) return;
    if (err && err.code === 8 && err.category === 'PUBLISH_ERROR') {
      // Watch-only token: release the camera and say so.
      local.stop();
      ui.micBtn.disabled = true;
      ui.camBtn.disabled = true;
      ui.setHelp('You are watching only: your token does not allow publishing.');
    }
    const what = err && err.category === 'PUBLISH_ERROR' ? 'Cannot publish your camera/microphone' :
      err && err.category === 'SUBSCRIBE_ERROR' ? 'Cannot receive a participant' : 'Stage error';
    showBanner(`${what}: ${describeError(err)}`, err && err.code === 8 ? 'warn' : 'error', {
      code: String(err && err.code),
      category: String(err && err.category),
    });
  });
}
