// A user's app: imports the package by name (no init call) and wires up a
// stage the way the IVS Web Broadcast SDK docs do. It never joins (no server
// here); tests/pack/check.mjs loads the bundle in Chromium and reads
// `window.packCheck`.
import { Stage, StageEvents, SubscribeType, LocalStageStream } from 'stagecast';

// A syntactically valid participant token (the SDK reads its claims; the
// signature is only checked by a server, and nothing here talks to one).
function fakeToken() {
  const b64url = (value) =>
    btoa(JSON.stringify(value)).replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    topic: 'stage-pack-check',
    jti: 'participant-pack-check',
    user_id: 'pack-check',
    attributes: { username: 'pack' },
    capabilities: { allow_publish: true, allow_subscribe: true },
    exp: now + 3600,
    iat: now,
    events_url: 'ws://127.0.0.1:9/v1/stage/events',
    whip_url: 'http://127.0.0.1:9/v1/stage/whip',
    version: '1.0',
  };
  return `${b64url({ alg: 'ES384', typ: 'JWT' })}.${b64url(claims)}.c2lnbmF0dXJl`;
}

function canvasTrack() {
  const canvas = document.createElement('canvas');
  canvas.width = 160;
  canvas.height = 120;
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = '#e33';
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  return canvas.captureStream(15).getVideoTracks()[0];
}

const camera = new LocalStageStream(canvasTrack());
const strategy = {
  stageStreamsToPublish: () => [camera],
  shouldPublishParticipant: () => true,
  shouldSubscribeToParticipant: () => SubscribeType.AUDIO_VIDEO,
};

const stage = new Stage(fakeToken(), strategy);
const seen = [];
stage.on(StageEvents.STAGE_PARTICIPANT_JOINED, (participant) => seen.push(participant.id));
stage.on(StageEvents.STAGE_CONNECTION_STATE_CHANGED, () => {});
camera.setMuted(true);

window.packCheck = {
  stage: typeof stage.join === 'function' && typeof stage.leave === 'function',
  events: StageEvents.STAGE_PARTICIPANT_JOINED === 'stageParticipantJoined',
  subscribeType: SubscribeType.AUDIO_VIDEO === 'audio_video',
  localStream: camera.isMuted === true,
};
