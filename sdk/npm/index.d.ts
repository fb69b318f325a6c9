// Type declarations for `stagecast`: the Amazon IVS Web Broadcast SDK stage
// API (same names and semantics), implemented in Rust/WebAssembly.

export declare const StageEvents: {
  readonly STAGE_CONNECTION_STATE_CHANGED: 'stageConnectionStateChanged';
  readonly STAGE_PARTICIPANT_JOINED: 'stageParticipantJoined';
  readonly STAGE_PARTICIPANT_LEFT: 'stageParticipantLeft';
  readonly STAGE_PARTICIPANT_PUBLISH_STATE_CHANGED: 'stageParticipantPublishStateChanged';
  readonly STAGE_PARTICIPANT_SUBSCRIBE_STATE_CHANGED: 'stageParticipantSubscribeStateChanged';
  readonly STAGE_PARTICIPANT_STREAMS_ADDED: 'stageParticipantStreamsAdded';
  readonly STAGE_PARTICIPANT_STREAMS_REMOVED: 'stageParticipantStreamsRemoved';
  readonly STAGE_STREAM_MUTE_CHANGED: 'stageStreamMuteChanged';
  readonly STAGE_LEFT: 'stageLeft';
  readonly ERROR: 'error';
};
export type StageEvents = (typeof StageEvents)[keyof typeof StageEvents];

export declare const SubscribeType: {
  readonly NONE: 'none';
  readonly AUDIO_ONLY: 'audio_only';
  readonly AUDIO_VIDEO: 'audio_video';
};
export type SubscribeType = (typeof SubscribeType)[keyof typeof SubscribeType];

export declare const StageConnectionState: {
  readonly DISCONNECTED: 'disconnected';
  readonly CONNECTING: 'connecting';
  readonly CONNECTED: 'connected';
  readonly ERRORED: 'errored';
};
export type StageConnectionState = (typeof StageConnectionState)[keyof typeof StageConnectionState];

export declare const StreamType: {
  readonly AUDIO: 'audio';
  readonly VIDEO: 'video';
};
export type StreamType = (typeof StreamType)[keyof typeof StreamType];

export declare const StageParticipantPublishState: {
  readonly NOT_PUBLISHED: 'not_published';
  readonly ATTEMPTING_PUBLISH: 'attempting_publish';
  readonly PUBLISHED: 'published';
  readonly ERRORED: 'errored';
};
export type StageParticipantPublishState =
  (typeof StageParticipantPublishState)[keyof typeof StageParticipantPublishState];

export declare const StageParticipantSubscribeState: {
  readonly NOT_SUBSCRIBED: 'not_subscribed';
  readonly ATTEMPTING_SUBSCRIBE: 'attempting_subscribe';
  readonly SUBSCRIBED: 'subscribed';
  readonly ERRORED: 'errored';
};
export type StageParticipantSubscribeState =
  (typeof StageParticipantSubscribeState)[keyof typeof StageParticipantSubscribeState];

export declare const StageLeftReason: {
  readonly UNKNOWN: 'unknown';
  readonly USER_INITIATED: 'user-initiated';
  readonly PARTICIPANT_DISCONNECTED: 'participant-disconnected';
  readonly STAGE_DELETED: 'stage-deleted';
  readonly TOKEN_EXPIRED: 'token-expired';
  readonly TOKEN_REUSED: 'token-reused';
};
export type StageLeftReason = (typeof StageLeftReason)[keyof typeof StageLeftReason];

export declare const StageErrorCategory: {
  readonly JOIN_ERROR: 'JOIN_ERROR';
  readonly PUBLISH_ERROR: 'PUBLISH_ERROR';
  readonly SUBSCRIBE_ERROR: 'SUBSCRIBE_ERROR';
};
export type StageErrorCategory = (typeof StageErrorCategory)[keyof typeof StageErrorCategory];

export declare const StageErrorCode: {
  readonly TOKEN_MALFORMED: 1;
  readonly TOKEN_EXPIRED: 2;
  readonly TIMEOUT: 3;
  readonly FAILED: 4;
  readonly CANCELED: 5;
  readonly STAGE_AT_CAPACITY: 6;
  readonly CODEC_MISMATCH: 7;
  readonly TOKEN_NOT_ALLOWED: 8;
  readonly STAGE_DELETED: 9;
  readonly PARTICIPANT_DISCONNECTED: 10;
};
export type StageErrorCode = (typeof StageErrorCode)[keyof typeof StageErrorCode];

/** Errors raised by the SDK: `join()` rejections and `error` events. */
export declare class StageError extends Error {
  constructor(message: string, code?: StageErrorCode, category?: StageErrorCategory);
  readonly name: 'StageError';
  readonly code: StageErrorCode;
  readonly category: StageErrorCategory;
  /** For subscribe errors: the remote participant concerned. */
  readonly remoteParticipantId?: string;
}

/** A participant as the SDK reports it. The same object is updated in place. */
export interface StageParticipantInfo {
  readonly id: string;
  readonly userId: string;
  readonly attributes: Record<string, string>;
  readonly capabilities: Set<'publish' | 'subscribe'>;
  readonly isLocal: boolean;
  isPublishing: boolean;
  audioMuted: boolean;
  videoStopped: boolean;
}

/** A stream of a participant (remote ones are delivered by `stageParticipantStreamsAdded`). */
export interface StageStream {
  /** The track id. */
  readonly id: string;
  readonly streamType: StreamType;
  readonly mediaStreamTrack: MediaStreamTrack;
  readonly isMuted: boolean;
}

/** Accepted for IVS compatibility; encoder settings are the browser's defaults. */
export interface StageVideoConfiguration {
  maxBitrate?: number;
  maxFramerate?: number;
  [key: string]: unknown;
}
export interface StageAudioConfiguration {
  [key: string]: unknown;
}

/** A local track to publish. */
export declare class LocalStageStream implements StageStream {
  constructor(mediaStreamTrack: MediaStreamTrack, config?: StageVideoConfiguration | StageAudioConfiguration);
  readonly id: string;
  readonly streamType: StreamType;
  readonly mediaStreamTrack: MediaStreamTrack;
  readonly isMuted: boolean;
  /** Disables/enables the track and tells the other participants. */
  setMuted(muted: boolean): void;
  /** Releases the WebAssembly side of the object. */
  free(): void;
}

/** Decides what the local participant publishes and what it subscribes to. */
export interface StageStrategy {
  stageStreamsToPublish(): LocalStageStream[];
  shouldPublishParticipant(participant: StageParticipantInfo): boolean;
  shouldSubscribeToParticipant(participant: StageParticipantInfo): SubscribeType;
}

/** Listener signatures per event. */
export interface StageEventMap {
  stageConnectionStateChanged: (state: StageConnectionState) => void;
  /** Also emitted for the local participant (`isLocal: true`) on join. */
  stageParticipantJoined: (participant: StageParticipantInfo) => void;
  stageParticipantLeft: (participant: StageParticipantInfo) => void;
  stageParticipantPublishStateChanged: (
    participant: StageParticipantInfo,
    state: StageParticipantPublishState,
  ) => void;
  stageParticipantSubscribeStateChanged: (
    participant: StageParticipantInfo,
    state: StageParticipantSubscribeState,
  ) => void;
  /** Also emitted for the local participant's own published streams. */
  stageParticipantStreamsAdded: (participant: StageParticipantInfo, streams: StageStream[]) => void;
  stageParticipantStreamsRemoved: (participant: StageParticipantInfo, streams: StageStream[]) => void;
  stageStreamMuteChanged: (participant: StageParticipantInfo, stream: StageStream) => void;
  stageLeft: (reason: StageLeftReason) => void;
  error: (error: StageError) => void;
}

/** A stage session. */
export declare class Stage {
  constructor(token: string, strategy: StageStrategy);
  /** Connects; rejects with a `StageError` (category `JOIN_ERROR`). */
  join(): Promise<void>;
  /** Leaves; emits `stageLeft` with `'user-initiated'`. */
  leave(): void;
  /** Re-runs the strategy and applies publish/subscribe changes. */
  refreshStrategy(): void;
  /** Swaps the strategy and re-runs it. */
  replaceStrategy(strategy: StageStrategy): void;
  on<E extends keyof StageEventMap>(event: E, listener: StageEventMap[E]): void;
  off<E extends keyof StageEventMap>(event: E, listener: StageEventMap[E]): void;
  /** Releases the WebAssembly side of the object (stops everything silently). */
  free(): void;
}
