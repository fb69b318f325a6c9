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
  readonly STAGE_STREAM_LAYERS_CHANGED: 'stageStreamLayersChanged';
  readonly STAGE_STREAM_LAYER_SELECTED: 'stageStreamLayerSelected';
  readonly STAGE_STREAM_ADAPTION_CHANGED: 'stageStreamAdaptionChanged';
};
export type StageEvents = (typeof StageEvents)[keyof typeof StageEvents];

export declare const SubscribeType: {
  readonly NONE: 'none';
  readonly AUDIO_ONLY: 'audio_only';
  readonly AUDIO_VIDEO: 'audio_video';
};
export type SubscribeType = (typeof SubscribeType)[keyof typeof SubscribeType];

/**
 * The event plane's state. After a drop the stage goes back to `connecting`
 * while it reconnects by itself (show "Reconnecting…" for `connecting` after
 * `connected`); media connections are kept meanwhile.
 */
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

/**
 * `published` only once media can flow (ICE and DTLS connected); while a
 * failed connection is re-made it is `attempting_publish`; `errored` when
 * retrying cannot help (e.g. the token does not allow publishing).
 */
export declare const StageParticipantPublishState: {
  readonly NOT_PUBLISHED: 'not_published';
  readonly ATTEMPTING_PUBLISH: 'attempting_publish';
  readonly PUBLISHED: 'published';
  readonly ERRORED: 'errored';
};
export type StageParticipantPublishState =
  (typeof StageParticipantPublishState)[keyof typeof StageParticipantPublishState];

/**
 * `subscribed` only once media can flow; `attempting_subscribe` while
 * connecting or re-making a failed connection (the app gets
 * `stageParticipantStreamsRemoved`, then `stageParticipantStreamsAdded` with
 * the new tracks); `errored` when retrying cannot help.
 */
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

/** A stream's connection quality, graded from its packet loss since the previous look. */
export declare const NetworkQuality: {
  readonly EXCELLENT: 4;
  readonly GOOD: 3;
  readonly NORMAL: 2;
  readonly POOR: 1;
  readonly DOWN: 0;
};
export type NetworkQuality = (typeof NetworkQuality)[keyof typeof NetworkQuality];

/**
 * One record of `requestQualityStats()`. Loss below 1 % is EXCELLENT, 3 % GOOD,
 * 8 % NORMAL, more POOR; no packet at all since the previous call is DOWN.
 */
export interface StreamQualityStats {
  readonly networkQuality: NetworkQuality;
  /** Remote streams. */
  readonly packetsReceived?: number;
  /** Local streams. */
  readonly packetsSent?: number;
  readonly packetsLost: number;
  readonly framesPerSecond?: number;
  readonly jitter?: number;
  /** Local streams, from the server's receiver reports. */
  readonly roundTripTime?: number;
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
  /** The browser's stats of the RTCRtpSender/Receiver carrying it (empty while not connected). */
  requestRTCStats(): Promise<RTCStatsReport>;
  /** Quality since the previous call: one record per encoding, `[]` while not connected. */
  requestQualityStats(): Promise<StreamQualityStats[]>;
}

/** One simulcast layer to send (IVS `SimulcastLocalLayerConfiguration`). */
export interface SimulcastLocalLayerConfiguration {
  /** 160–1280 */
  width: number;
  /** 160–1280 */
  height: number;
  /** 50–2500 */
  maxBitrateKbps: number;
  /** 10–30 */
  maxFramerate: number;
}

/** IVS's layer presets, for `simulcast.layers`. */
export declare const SimulcastLayerPresets: {
  readonly DEFAULT_720: SimulcastLocalLayerConfiguration;
  readonly DEFAULT_540: SimulcastLocalLayerConfiguration;
  readonly DEFAULT_480: SimulcastLocalLayerConfiguration;
  readonly DEFAULT_360: SimulcastLocalLayerConfiguration;
  readonly DEFAULT_270: SimulcastLocalLayerConfiguration;
  readonly DEFAULT_180: SimulcastLocalLayerConfiguration;
  readonly DEFAULT_160: SimulcastLocalLayerConfiguration;
};

/**
 * Encoder settings of a video `LocalStageStream` (IVS limits; the constructor throws a
 * `RangeError` outside them). With `simulcast.enabled` the track is sent in up to three
 * layers (default: 320×180 200 kbps 15 fps, 640×360 700 kbps 20 fps, 1280×720 2500 kbps
 * 30 fps; layers a smaller track would only duplicate are left out), and layers nobody
 * receives are paused. IVS does not simulcast on Firefox; apps usually enable it elsewhere.
 */
export interface StageVideoConfiguration {
  /** kbps, 50–2500 (default 2500); `maxVideoBitrateKbps` wins when both are given. */
  maxBitrate?: number;
  maxVideoBitrateKbps?: number;
  /** 10–30 (default 30). */
  maxFramerate?: number;
  simulcast?: { enabled: boolean; layers?: SimulcastLocalLayerConfiguration[] };
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
  requestRTCStats(): Promise<RTCStatsReport>;
  requestQualityStats(): Promise<StreamQualityStats[]>;
  /** Releases the WebAssembly side of the object. */
  free(): void;
}

/** A simulcast layer of a remote video stream, as the server measures it. */
export interface StageStreamLayer {
  /** The layer's rid: `'low'`, `'mid'` or `'high'`. */
  readonly label: string;
  readonly bitrateBps: number;
  readonly width: number;
  readonly height: number;
  readonly framesPerSecond: number;
  /** The layer being received. */
  readonly selected: boolean;
}

/** A remote participant's stream, with its simulcast layers (video of a simulcast publisher). */
export interface RemoteStageStream extends StageStream {
  /** The server is choosing the layer from this subscriber's bandwidth. */
  readonly isAdapting: boolean;
  /** Lowest first; `[]` before the first report and for a stream without layers. */
  getLayers(): StageStreamLayer[];
  getSelectedLayer(): StageStreamLayer | undefined;
  getLowestQualityLayer(): StageStreamLayer | undefined;
  getHighestQualityLayer(): StageStreamLayer | undefined;
}

export interface SubscribeConfiguration {
  /** The layer a subscription starts with (default `'lowest_quality'`). */
  simulcast?: { initialLayerPreference?: 'lowest_quality' | 'highest_quality' };
}

/** Decides what the local participant publishes and what it subscribes to. */
export interface StageStrategy {
  stageStreamsToPublish(): LocalStageStream[];
  shouldPublishParticipant(participant: StageParticipantInfo): boolean;
  shouldSubscribeToParticipant(participant: StageParticipantInfo): SubscribeType;
  /** Read when a subscription is made. */
  subscribeConfiguration?(participant: StageParticipantInfo): SubscribeConfiguration;
  /**
   * The layer to receive of a remote video stream: a layer, its label, or `null`/`undefined`
   * for the server to adapt. Asked on `refreshStrategy()` and whenever the layers change.
   */
  preferredLayerForStream?(
    participant: StageParticipantInfo,
    stream: RemoteStageStream,
  ): StageStreamLayer | string | null | undefined;
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
  stageStreamLayersChanged: (
    participant: StageParticipantInfo,
    stream: RemoteStageStream,
    layers: StageStreamLayer[],
  ) => void;
  /** `'unavailable'` (and no layer) when no layer is being received. */
  stageStreamLayerSelected: (
    participant: StageParticipantInfo,
    stream: RemoteStageStream,
    layer: StageStreamLayer | undefined,
    reason: 'selected' | 'unavailable',
  ) => void;
  stageStreamAdaptionChanged: (participant: StageParticipantInfo, stream: RemoteStageStream, adapting: boolean) => void;
}

/**
 * A stage session. It recovers without the app's help: the event plane reconnects with
 * backoff while the token is valid (a short drop shows nobody a leave or a join), failed
 * publish/subscribe connections are re-made, and after a server restart it publishes again.
 * A removal, the stage's deletion or the token expiring ends it (`error`, then `stageLeft`).
 */
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

// ---- Broadcast to a channel (the IVS `AmazonIVSBroadcastClient` side) ----

/** One simulcast layer of a broadcast: within its `StreamConfig` (160 px to `maxResolution` per side). */
export interface BroadcastSimulcastLayer {
  width: number;
  height: number;
  /** kbps, 100 to the stream's `maxBitrate` */
  maxBitrate: number;
  /** 10 to the stream's `maxFramerate` */
  maxFramerate: number;
}

/** `StreamConfig`: 160–1920 px per side (max 1920×1080 / 1080×1920), 10–60 fps, 200–8500 kbps. */
export interface StreamConfig {
  maxResolution: { width: number; height: number };
  maxFramerate: number;
  /** kbps */
  maxBitrate: number;
  /**
   * Beyond IVS: send the video in up to three layers (rids `low`, `mid`, `high`, lowest first),
   * for a channel with a rendition per layer. Without `layers`: `maxResolution` at `maxBitrate`,
   * half the size at 30 % of it and a quarter at 10 % (at least 150 kbps), all at `maxFramerate`;
   * a layer with a side under 160 px is left out (852×480 sends two). The browser may send fewer
   * layers than asked for a small resolution. Absent or disabled: one encoding.
   */
  simulcast?: { enabled: boolean; layers?: BroadcastSimulcastLayer[] };
}

export declare const BASIC_LANDSCAPE: StreamConfig;
export declare const BASIC_PORTRAIT: StreamConfig;
export declare const BASIC_FULL_HD_LANDSCAPE: StreamConfig;
export declare const BASIC_FULL_HD_PORTRAIT: StreamConfig;
export declare const STANDARD_LANDSCAPE: StreamConfig;
export declare const STANDARD_PORTRAIT: StreamConfig;

export interface BroadcastClientConfig {
  /** Defaults to `BASIC_LANDSCAPE`. */
  streamConfig?: StreamConfig;
  /** The channel's WHIP URL (e.g. `http://host/v1/channels/{id}/whip`); a bare host gets `https://`. */
  ingestEndpoint?: string;
  /**
   * After a drop or a server restart the client reconnects to the same endpoint with the same
   * stream key (backoff 0.5 s doubling to 5 s) for up to `timeout` ms (default 300 000, at least
   * 10 000), then fails with a `clientError`. `reconnect: false` fails at the first drop.
   */
  networkReconnectConfig?: { reconnect?: boolean; timeout?: number };
  [key: string]: unknown;
}

/** Where and in which z-order a video source is drawn. Missing x/y = 0, missing width/height = the canvas. */
export interface VideoComposition {
  index: number;
  x?: number;
  y?: number;
  width?: number;
  height?: number;
}

export declare const BroadcastClientEvents: {
  readonly CONNECTION_STATE_CHANGE: 'connectionStateChange';
  readonly ACTIVE_STATE_CHANGE: 'activeStateChange';
  readonly ERROR: 'clientError';
};
export type BroadcastClientEvents = (typeof BroadcastClientEvents)[keyof typeof BroadcastClientEvents];

/**
 * `'none'` before the first broadcast; `'connecting'` → `'connected'` once media flows;
 * `'disconnected'` while it reconnects after a drop; `'failed'` when it gave up (see
 * `clientError`); `'closed'` after `stopBroadcast()`. `'new'` is never reported.
 */
export declare const ConnectionState: {
  readonly NONE: 'none';
  readonly NEW: 'new';
  readonly CONNECTING: 'connecting';
  readonly CONNECTED: 'connected';
  readonly DISCONNECTED: 'disconnected';
  readonly FAILED: 'failed';
  readonly CLOSED: 'closed';
};
export type ConnectionState = (typeof ConnectionState)[keyof typeof ConnectionState];

/**
 * Errors of the broadcast client, with the IVS codes: 1000 Broadcast,
 * 4000 name exists, 4001 missing track, 4002 invalid composition, 4003 invalid name,
 * 4004 too many sources, 4005 unsupported, 4006 device failed, 5000 video device/image not found,
 * 6000 audio device not found, 7000/7001 update composition (not found / invalid),
 * 8000 exchange positions, 9000 failed to add image, 10000 PeerSetup, 10001 PeerConnection,
 * 10003 InvalidStreamKey (empty, or refused with 401/403), 12000 StreamConfiguration,
 * 13000 IngestEndpoint, 16000 ClientInvalid (deleted), 18000 StreamKeyInvalidChar.
 */
export declare class BroadcastClientError extends Error {
  constructor(message: string, code?: number, name?: string);
  readonly code: number;
  readonly name: string;
}

export interface VideoDevice {
  name: string;
  /** The MediaStream given to `addVideoInputDevice`. */
  source?: MediaStream;
  /** The hidden `<video>` it is decoded through. */
  element?: HTMLVideoElement;
  position: Required<VideoComposition>;
}

/** Beyond IVS: compositor statistics (for benchmarks). */
export interface BroadcastStats {
  framesComposed: number;
  /** Frames composed in the last second. */
  fps: number;
  /** 95th percentile / mean time to compose one frame (ms), over the last 300 frames. */
  composeMsP95: number;
  composeMsMean: number;
  /** True when frames are clocked by a Worker (keeps running in background tabs). */
  workerClock: boolean;
}

export interface BroadcastClientEventMap {
  connectionStateChange: (state: ConnectionState) => void;
  activeStateChange: (active: boolean) => void;
  clientError: (error: BroadcastClientError) => void;
}

export type ImageSource = HTMLImageElement | HTMLVideoElement | HTMLCanvasElement | ImageBitmap | OffscreenCanvas;

/**
 * Composites video sources on a Canvas 2D (aspect-fitted, in `index` order, at the
 * stream's frame rate even in a background tab), mixes audio in one AudioContext,
 * and broadcasts one stable video + audio track pair to a channel over WHIP.
 */
export declare class BroadcastClient {
  private constructor();
  addVideoInputDevice(mediaStream: MediaStream, name: string, composition: VideoComposition): Promise<void>;
  addImageSource(source: ImageSource, name: string, composition: VideoComposition): Promise<void>;
  addAudioInputDevice(mediaStream: MediaStream, name: string): Promise<void>;
  removeVideoInputDevice(name: string): void;
  removeImage(name: string): void;
  removeAudioInputDevice(name: string): void;
  updateVideoDeviceComposition(name: string, composition: VideoComposition): void;
  exchangeVideoDevicePositions(name1: string, name2: string): void;
  getVideoInputDevice(name: string): VideoDevice | undefined;
  getAudioInputDevice(name: string): MediaStream | undefined;
  /** Shows the composite, scaled to the canvas' width/height. */
  attachPreview(canvas: HTMLCanvasElement): void;
  detachPreview(): void;
  getCanvasDimensions(): { width: number; height: number };
  /** The mixer's context; insert your own nodes. */
  getAudioContext(): AudioContext | undefined;
  /**
   * WHIP to `ingestEndpoint` (or the one given to `create`) with `Authorization: Bearer <streamKey>`;
   * H.264 preferred for video, Opus for audio; ICE servers from the endpoint's `OPTIONS`
   * (`Link: <…>; rel="ice-server"`, RFC 9725). Resolves once the offer is answered; rejects
   * with a `BroadcastClientError` if that first attempt fails. Later drops reconnect by
   * themselves (see `networkReconnectConfig`).
   */
  startBroadcast(streamKey: string, ingestEndpoint?: string): Promise<void>;
  /** Ends the broadcast (`DELETE` of the WHIP session). */
  stopBroadcast(): void;
  getConnectionState(): ConnectionState;
  getSessionId(): string | undefined;
  enableVideo(): void;
  disableVideo(): void;
  enableAudio(): void;
  disableAudio(): void;
  /** Beyond IVS: the output stream (the same video + audio track for the life of the client). */
  getOutputStream(): MediaStream;
  /** Beyond IVS: compositor statistics. */
  getStats(): BroadcastStats;
  on<E extends keyof BroadcastClientEventMap>(event: E, listener: BroadcastClientEventMap[E]): void;
  off<E extends keyof BroadcastClientEventMap>(event: E, listener: BroadcastClientEventMap[E]): void;
  /** Stops everything and releases the tracks. */
  delete(): void;
  free(): void;
}

export declare function create(config?: BroadcastClientConfig): BroadcastClient;
export declare function isSupported(): boolean;

export type LayoutMode = 'grid' | 'pip' | 'versus';

export interface AutoLayoutOptions {
  /** `grid` (default): 1 full frame, 2 side by side, 3, 2×2, … up to 4×3; `pip`: featured full frame + thumbnails; `versus`: two halves. */
  mode?: LayoutMode;
  /** The big frame in `pip` (default: the first participant). */
  featuredParticipantId?: string;
  /**
   * Beyond IVS (whose composites carry no names): draw each participant's name
   * (`attributes.username`, else `userId`) in a dark box at the bottom-left of their
   * video, so viewers can tell who is who. Default `false`.
   */
  nameLabels?: boolean;
}

/** The handle returned by `autoLayout`. */
export declare class AutoLayout {
  private constructor();
  readonly mode: LayoutMode;
  setMode(mode: LayoutMode, featuredParticipantId?: string): void;
  /** Participants with a tile, in tile order. */
  getParticipantIds(): string[];
  /** Removes the stage listeners and every source it added. */
  stop(): void;
  free(): void;
}

/**
 * Beyond IVS: slots every participant of `stage` with a stream (local and remote) into
 * `client`'s composition and mixes their audio, re-slotting on joins/leaves; a participant
 * whose video is stopped shows their avatar (`attributes.avatarUrl`) and name; with
 * `nameLabels: true` their video is labelled with the name too. It may be
 * attached before or after `stage.join()`: it starts from the participants already there.
 */
export declare function autoLayout(client: BroadcastClient, stage: Stage, options?: AutoLayoutOptions): AutoLayout;

// ---- Chat: the `amazon-ivs-chat-messaging` API ----

export type ChatAttributes = Record<string, string>;

/** What a `ChatTokenProvider` resolves to (CreateChatToken's answer). */
export interface ChatToken {
  token: string;
  sessionExpirationTime?: Date | string;
  tokenExpirationTime?: Date | string;
}
export type ChatTokenProvider = () => Promise<ChatToken>;

export interface ChatRoomConfig {
  /** A `ws://` / `wss://` URL, or an AWS region. */
  regionOrUrl: string;
  tokenProvider: ChatTokenProvider;
}

export type ChatConnectionState = 'disconnected' | 'connecting' | 'connected';
export type ChatDisconnectReason = 'clientDisconnect' | 'serverDisconnect' | 'socketError' | 'fetchTokenError';

export interface ChatUser {
  userId: string;
  attributes: ChatAttributes;
}

export interface ChatMessage {
  id: string;
  /** Set on the sender's own copy. */
  requestId?: string;
  content: string;
  attributes: ChatAttributes;
  sendTime: Date;
  sender: ChatUser;
}

export interface ChatEvent {
  id: string;
  requestId?: string;
  eventName: string;
  attributes: ChatAttributes;
  sendTime: Date;
}

export interface DeleteMessageEvent extends ChatEvent {
  messageId: string;
  reason?: string;
}

export interface DisconnectUserEvent extends ChatEvent {
  userId: string;
  reason?: string;
}

export declare const chatErrorCodes: {
  readonly badRequest: 400;
  readonly unauthorized: 401;
  readonly forbidden: 403;
  readonly notFound: 404;
  readonly notAcceptable: 406;
  readonly payloadTooLarge: 413;
  readonly tooManyRequests: 429;
  readonly internalServerError: 500;
};

/** A request's rejection: the server's ERROR (or `errorCode` 408 when no answer came in time). */
export declare class ChatError extends Error {
  constructor(errorMessage: string, errorCode?: number, requestId?: string);
  readonly id: string;
  readonly errorCode: number;
  readonly errorMessage: string;
  readonly requestId?: string;
}

export declare class SendMessageRequest {
  constructor(content: string, attributes?: ChatAttributes);
  readonly action: 'SEND_MESSAGE';
  readonly requestId: string;
  readonly content: string;
  readonly attributes?: ChatAttributes;
}

export declare class DeleteMessageRequest {
  constructor(id: string, reason?: string);
  readonly action: 'DELETE_MESSAGE';
  readonly requestId: string;
  readonly id: string;
  readonly reason?: string;
}

export declare class DisconnectUserRequest {
  constructor(userId: string, reason?: string);
  readonly action: 'DISCONNECT_USER';
  readonly requestId: string;
  readonly userId: string;
  readonly reason?: string;
}

export interface ChatRoomListenerMap {
  connecting: () => void;
  connect: () => void;
  disconnect: (reason: ChatDisconnectReason) => void;
  message: (message: ChatMessage) => void;
  event: (event: ChatEvent) => void;
  messageDelete: (event: DeleteMessageEvent) => void;
  userDisconnect: (event: DisconnectUserEvent) => void;
}

/**
 * A connection to a chat room, as `amazon-ivs-chat-messaging`'s `ChatRoom`: it
 * reconnects with a fresh token before the session expires (60 s ahead, 30 s
 * for short sessions), after a 401, and when an open connection breaks.
 * Requests time out after 10 s (`ChatError` with `errorCode` 408).
 */
export declare class ChatRoom {
  constructor(config: ChatRoomConfig);
  readonly state: ChatConnectionState;
  connect(): void;
  disconnect(): void;
  sendMessage(request: SendMessageRequest): Promise<ChatMessage>;
  deleteMessage(request: DeleteMessageRequest): Promise<DeleteMessageEvent>;
  disconnectUser(request: DisconnectUserRequest): Promise<DisconnectUserEvent>;
  addListener<E extends keyof ChatRoomListenerMap>(event: E, listener: ChatRoomListenerMap[E]): () => void;
  removeListener<E extends keyof ChatRoomListenerMap>(event: E, listener: ChatRoomListenerMap[E]): void;
  free(): void;
}

declare const IVSBroadcastClient: {
  create: typeof create;
  isSupported: typeof isSupported;
  autoLayout: typeof autoLayout;
  BASIC_LANDSCAPE: StreamConfig;
  BASIC_PORTRAIT: StreamConfig;
  BASIC_FULL_HD_LANDSCAPE: StreamConfig;
  BASIC_FULL_HD_PORTRAIT: StreamConfig;
  STANDARD_LANDSCAPE: StreamConfig;
  STANDARD_PORTRAIT: StreamConfig;
  BroadcastClientEvents: typeof BroadcastClientEvents;
  ConnectionState: typeof ConnectionState;
  BroadcastClientError: typeof BroadcastClientError;
  Stage: typeof Stage;
  LocalStageStream: typeof LocalStageStream;
  StageEvents: typeof StageEvents;
  SubscribeType: typeof SubscribeType;
  StageConnectionState: typeof StageConnectionState;
  StreamType: typeof StreamType;
  StageError: typeof StageError;
};
export default IVSBroadcastClient;
