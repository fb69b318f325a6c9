// Entry point of the `stagecast` npm package. Initialises the WebAssembly
// module on import (top-level await), so users never call init themselves.
import init, {
  Stage as WasmStage,
  LocalStageStream,
  BroadcastClient,
  AutoLayout,
  createBroadcastClient,
  autoLayout as autoLayoutImpl,
  ChatRoom,
  SendMessageRequest,
  DeleteMessageRequest,
  DisconnectUserRequest,
  __networkQuality as networkQuality,
} from './stagecast.js';

await init({ module_or_path: new URL('./stagecast_bg.wasm', import.meta.url) });

/** Each stream's counters at its previous `requestQualityStats()`. */
const LAST_LOOK = new WeakMap();

/**
 * `requestQualityStats()` of local and remote stage streams: reads the
 * stream's stats report into packet counters; the SDK's core grades the
 * interval since the previous call. `[]` while the stream is not connected.
 */
async function requestQualityStats() {
  const sending = this instanceof LocalStageStream;
  const report = await this.requestRTCStats();
  let packets = 0;
  let lost = 0;
  let seen = false;
  const out = {};
  report.forEach((s) => {
    if (s.type === (sending ? 'outbound-rtp' : 'inbound-rtp')) {
      seen = true;
      packets += (sending ? s.packetsSent : s.packetsReceived) || 0;
      if (!sending) lost += Math.max(0, s.packetsLost || 0);
      if (s.framesPerSecond !== undefined) out.framesPerSecond = s.framesPerSecond;
      if (!sending) out.jitter = s.jitter;
    } else if (sending && s.type === 'remote-inbound-rtp') {
      lost += Math.max(0, s.packetsLost || 0);
      out.jitter = s.jitter;
      out.roundTripTime = s.roundTripTime;
    }
  });
  if (!seen) return [];
  const arrived = sending ? Math.max(0, packets - lost) : packets;
  const [prevArrived, prevLost] = LAST_LOOK.get(this) || [0, 0];
  LAST_LOOK.set(this, [arrived, lost]);
  out[sending ? 'packetsSent' : 'packetsReceived'] = packets;
  out.packetsLost = lost;
  out.networkQuality = networkQuality(prevArrived, prevLost, arrived, lost);
  return [out];
}
LocalStageStream.prototype.requestQualityStats = requestQualityStats;

/**
 * A remote stream's simulcast layers: the SDK keeps the latest report on the
 * stream (`__layers`, lowest first, `selected` flagged) and `isAdapting`.
 */
const layersOf = (s) => s.__layers || [];
const REMOTE_METHODS = {
  requestQualityStats,
  getLayers() {
    return [...layersOf(this)];
  },
  getSelectedLayer() {
    return layersOf(this).find((l) => l.selected);
  },
  getLowestQualityLayer() {
    return layersOf(this)[0];
  },
  getHighestQualityLayer() {
    return layersOf(this).at(-1);
  },
};

/** Who is on a stage now, with their streams (for `autoLayout` to catch up). */
const PRESENT = Symbol('stagecast.present');

/**
 * `Stage` as built in WebAssembly, plus a record of the current
 * participants and their streams (kept from the stage's own events), so
 * `autoLayout` attached after `join()` still sees everyone. Same API.
 */
class Stage extends WasmStage {
  constructor(token, strategy) {
    super(token, strategy);
    const present = new Map();
    Object.defineProperty(this, PRESENT, { value: present });
    const entry = (p) => present.get(p.id) || present.set(p.id, { p, streams: [] }).get(p.id);
    this.on('stageParticipantJoined', (p) => void entry(p));
    this.on('stageParticipantLeft', (p) => void present.delete(p.id));
    this.on('stageParticipantStreamsAdded', (p, streams) => {
      // Registered before any app listener: remote streams have it when the app sees them.
      for (const s of streams) {
        if (s.requestQualityStats) continue;
        Object.assign(s, REMOTE_METHODS);
        if (s.isAdapting === undefined) s.isAdapting = false;
      }
      const e = entry(p);
      e.p = p;
      for (const s of streams) if (!e.streams.some((o) => o.id === s.id)) e.streams.push(s);
    });
    this.on('stageParticipantStreamsRemoved', (p, streams) => {
      const e = present.get(p.id);
      if (e) e.streams = e.streams.filter((o) => !streams.some((s) => s.id === o.id));
    });
    this.on('stageLeft', () => present.clear());
  }
}

export { Stage, LocalStageStream, BroadcastClient, AutoLayout };

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
  STAGE_STREAM_LAYERS_CHANGED: 'stageStreamLayersChanged',
  STAGE_STREAM_LAYER_SELECTED: 'stageStreamLayerSelected',
  STAGE_STREAM_ADAPTION_CHANGED: 'stageStreamAdaptionChanged',
});

const layer = (width, height, maxBitrateKbps, maxFramerate) => freeze({ width, height, maxBitrateKbps, maxFramerate });

/** IVS's simulcast layer presets (`simulcast: {enabled: true, layers: [...]}`). */
export const SimulcastLayerPresets = freeze({
  DEFAULT_720: layer(1280, 720, 2500, 30),
  DEFAULT_540: layer(960, 540, 1400, 15),
  DEFAULT_480: layer(854, 480, 1100, 15),
  DEFAULT_360: layer(640, 360, 600, 15),
  DEFAULT_270: layer(480, 270, 350, 15),
  DEFAULT_180: layer(320, 180, 150, 15),
  DEFAULT_160: layer(284, 160, 120, 15),
});

export const SubscribeType = freeze({ NONE: 'none', AUDIO_ONLY: 'audio_only', AUDIO_VIDEO: 'audio_video' });

export const StageConnectionState = freeze({
  DISCONNECTED: 'disconnected',
  CONNECTING: 'connecting',
  CONNECTED: 'connected',
  ERRORED: 'errored',
});

export const StreamType = freeze({ AUDIO: 'audio', VIDEO: 'video' });

/** What `requestQualityStats()` grades a stream's connection (from its packet loss). */
export const NetworkQuality = freeze({ EXCELLENT: 4, GOOD: 3, NORMAL: 2, POOR: 1, DOWN: 0 });

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

// ---- Broadcast to a channel (the IVS `AmazonIVSBroadcastClient` side) ----

const preset = (width, height, maxBitrate) =>
  freeze({ maxResolution: freeze({ width, height }), maxFramerate: 30, maxBitrate });

export const BASIC_LANDSCAPE = preset(852, 480, 1500);
export const BASIC_PORTRAIT = preset(480, 852, 1500);
export const BASIC_FULL_HD_LANDSCAPE = preset(1920, 1080, 3500);
export const BASIC_FULL_HD_PORTRAIT = preset(1080, 1920, 3500);
export const STANDARD_LANDSCAPE = preset(1920, 1080, 8500);
export const STANDARD_PORTRAIT = preset(1080, 1920, 8500);

export const BroadcastClientEvents = freeze({
  CONNECTION_STATE_CHANGE: 'connectionStateChange',
  ACTIVE_STATE_CHANGE: 'activeStateChange',
  ERROR: 'clientError',
});

export const ConnectionState = freeze({
  NONE: 'none',
  NEW: 'new',
  CONNECTING: 'connecting',
  CONNECTED: 'connected',
  DISCONNECTED: 'disconnected',
  FAILED: 'failed',
  CLOSED: 'closed',
});

/** `create({streamConfig, ingestEndpoint})` → a `BroadcastClient`. */
export const create = (config = {}) => createBroadcastClient(config);
/** WebRTC, canvas capture and WebAudio are all there. */
export const isSupported = () =>
  typeof RTCPeerConnection === 'function' &&
  typeof AudioContext === 'function' &&
  typeof HTMLCanvasElement === 'function' &&
  'captureStream' in HTMLCanvasElement.prototype;

/**
 * Errors of the broadcast client are plain `Error`s (created in
 * WebAssembly) with a numeric IVS `code` (≥ 1000) and a specific `name`;
 * `err instanceof BroadcastClientError` recognises them.
 */
export class BroadcastClientError extends Error {
  constructor(message, code = 1000, name = 'BroadcastError') {
    super(message);
    this.name = name;
    this.code = code;
  }

  static [Symbol.hasInstance](value) {
    return value instanceof Error && typeof value.code === 'number' && value.code >= 1000;
  }
}

/**
 * Beyond IVS: keeps `client`'s composition in step with `stage`, from the
 * participants already there (attach it before or after `join()`).
 */
export const autoLayout = (client, stage, options) => autoLayoutImpl(client, catchUp(stage), options);

/**
 * A view of `stage` whose `on()` also replays the current participants
 * (joined) and their streams (streams added) to the new listener.
 */
function catchUp(stage) {
  const present = stage && stage[PRESENT];
  if (!present) return stage;
  return {
    on(event, listener) {
      stage.on(event, listener);
      for (const { p, streams } of present.values()) {
        if (event === 'stageParticipantJoined') listener(p);
        else if (event === 'stageParticipantStreamsAdded' && streams.length) listener(p, [...streams]);
      }
    },
    off: (event, listener) => stage.off(event, listener),
  };
}

// ---- Chat (the `amazon-ivs-chat-messaging` API) ----

export { ChatRoom, SendMessageRequest, DeleteMessageRequest, DisconnectUserRequest };

/** The IVS Chat `ErrorCode`s. */
export const chatErrorCodes = freeze({
  badRequest: 400,
  unauthorized: 401,
  forbidden: 403,
  notFound: 404,
  notAcceptable: 406,
  payloadTooLarge: 413,
  tooManyRequests: 429,
  internalServerError: 500,
});

/**
 * Rejections of `ChatRoom` requests are `Error`s named "ChatError" (created
 * in WebAssembly) with `{id, errorCode, errorMessage, requestId}`;
 * `err instanceof ChatError` recognises them.
 */
export class ChatError extends Error {
  constructor(errorMessage, errorCode = 500, requestId = undefined) {
    super(errorMessage);
    this.name = 'ChatError';
    this.id = '';
    this.errorCode = errorCode;
    this.errorMessage = errorMessage;
    this.requestId = requestId;
  }

  static [Symbol.hasInstance](value) {
    return value instanceof Error && value.name === 'ChatError';
  }
}

/** The default export, shaped like `IVSBroadcastClient`. */
const IVSBroadcastClient = freeze({
  create,
  isSupported,
  autoLayout,
  BASIC_LANDSCAPE,
  BASIC_PORTRAIT,
  BASIC_FULL_HD_LANDSCAPE,
  BASIC_FULL_HD_PORTRAIT,
  STANDARD_LANDSCAPE,
  STANDARD_PORTRAIT,
  BroadcastClientEvents,
  ConnectionState,
  BroadcastClientError,
  Stage,
  LocalStageStream,
  StageEvents,
  SubscribeType,
  StageConnectionState,
  StreamType,
  StageError,
});
export default IVSBroadcastClient;
