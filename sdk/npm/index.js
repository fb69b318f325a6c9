// Entry point of the `stagecast` npm package. Initialises the WebAssembly
// module on import (top-level await), so users never call init themselves.
import init, { Stage, LocalStageStream } from './stagecast.js';

await init({ module_or_path: new URL('./stagecast_bg.wasm', import.meta.url) });

export { Stage, LocalStageStream };

const freeze = Object.freeze;

export const StageEvents = freeze({
  STAGE_CONNECTION_STATE_CHANGED: 'stageConnectionStateChanged',
  STAGE_PARTICIPANT_JOINED: 'stageParticipantJoined',
  STAGE_PARTICIPANT_LEFT: 'stageParticipantLeft',
  STAGE_PARTICIPANT_PUBLISH_STATE_CHANGED: 'stageParticipantPublishStateChanged',
  STAGE_PARTICIPANT_SUBSCRIBE_STATE_CHANGED: 'stageParticipantSubscribeStateChanged',
  STAGE_PARTICIPANT_STREAMS_ADDED: 'stageParticipantStreamsAdded',
  STAGE_PARTICIPANT_STREAMS_REMOVED: 'stageParticipantStreamsRemoved',
  STAGE_STREAM_MUTE_CHANGED: 'stageStreamMuteChanged',
  STAGE_LEFT: 'stageLeft',
  ERROR: 'error',
});

export const SubscribeType = freeze({ NONE: 'none', AUDIO_ONLY: 'audio_only', AUDIO_VIDEO: 'audio_video' });

export const StageConnectionState = freeze({
  DISCONNECTED: 'disconnected',
  CONNECTING: 'connecting',
  CONNECTED: 'connected',
  ERRORED: 'errored',
});

export const StreamType = freeze({ AUDIO: 'audio', VIDEO: 'video' });

export const StageParticipantPublishState = freeze({
  NOT_PUBLISHED: 'not_published',
  ATTEMPTING_PUBLISH: 'attempting_publish',
  PUBLISHED: 'published',
  ERRORED: 'errored',
});

export const StageParticipantSubscribeState = freeze({
  NOT_SUBSCRIBED: 'not_subscribed',
  ATTEMPTING_SUBSCRIBE: 'attempting_subscribe',
  SUBSCRIBED: 'subscribed',
  ERRORED: 'errored',
});

export const StageLeftReason = freeze({
  UNKNOWN: 'unknown',
  USER_INITIATED: 'user-initiated',
  PARTICIPANT_DISCONNECTED: 'participant-disconnected',
  STAGE_DELETED: 'stage-deleted',
  TOKEN_EXPIRED: 'token-expired',
  TOKEN_REUSED: 'token-reused',
});

export const StageErrorCategory = freeze({
  JOIN_ERROR: 'JOIN_ERROR',
  PUBLISH_ERROR: 'PUBLISH_ERROR',
  SUBSCRIBE_ERROR: 'SUBSCRIBE_ERROR',
});

export const StageErrorCode = freeze({
  TOKEN_MALFORMED: 1,
  TOKEN_EXPIRED: 2,
  TIMEOUT: 3,
  FAILED: 4,
  CANCELED: 5,
  STAGE_AT_CAPACITY: 6,
  CODEC_MISMATCH: 7,
  TOKEN_NOT_ALLOWED: 8,
  STAGE_DELETED: 9,
  PARTICIPANT_DISCONNECTED: 10,
});

/**
 * The errors the SDK raises are plain `Error`s named "StageError" (created
 * in WebAssembly); `err instanceof StageError` recognises them.
 */
export class StageError extends Error {
  constructor(message, code = StageErrorCode.FAILED, category = StageErrorCategory.JOIN_ERROR) {
    super(message);
    this.name = 'StageError';
    this.code = code;
    this.category = category;
  }

  static [Symbol.hasInstance](value) {
    return value instanceof Error && value.name === 'StageError';
  }
}
