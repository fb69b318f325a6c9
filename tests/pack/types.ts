// Type-checked (tsc --noEmit --strict) against the packed package's
// declarations: the README example, as a TypeScript user writes it.
import {
  Stage,
  StageEvents,
  SubscribeType,
  LocalStageStream,
  StageConnectionState,
  StreamType,
  type StageStrategy,
  type StageParticipantInfo,
  type StageStream,
} from 'stagecast';
import IVSBroadcastClient, { type BroadcastClient } from 'stagecast';

export async function joinStage(token: string): Promise<Stage> {
  const media = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
  const streams = media.getTracks().map((track) => new LocalStageStream(track));

  const strategy: StageStrategy = {
    stageStreamsToPublish: () => streams,
    shouldPublishParticipant: () => true,
    shouldSubscribeToParticipant: () => SubscribeType.AUDIO_VIDEO,
  };

  const stage = new Stage(token, strategy);
  stage.on(StageEvents.STAGE_PARTICIPANT_STREAMS_ADDED, (participant: StageParticipantInfo, added: StageStream[]) => {
    if (participant.isLocal) return;
    const video = document.createElement('video');
    video.autoplay = true;
    video.srcObject = new MediaStream(added.map((s) => s.mediaStreamTrack));
    document.body.append(video);
  });
  stage.on(StageEvents.STAGE_STREAM_MUTE_CHANGED, (_participant, stream) => {
    const what: StreamType = stream.streamType;
    console.log(`${what} muted: ${stream.isMuted}`);
  });
  stage.on(StageEvents.STAGE_CONNECTION_STATE_CHANGED, (state) => {
    if (state === StageConnectionState.ERRORED) console.warn('connection errored');
  });
  stage.on(StageEvents.STAGE_LEFT, (reason) => console.log('left:', reason));
  await stage.join();
  return stage;
}

// A broadcast whose channel packages each simulcast layer as a rendition.
export async function goLive(streamKey: string, ingestEndpoint: string): Promise<BroadcastClient> {
  const client = IVSBroadcastClient.create({
    streamConfig: {
      ...IVSBroadcastClient.BASIC_FULL_HD_LANDSCAPE,
      simulcast: { enabled: true, layers: [{ width: 1280, height: 720, maxBitrate: 2500, maxFramerate: 30 }] },
    },
    ingestEndpoint,
  });
  await client.startBroadcast(streamKey);
  return client;
}
