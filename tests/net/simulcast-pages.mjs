// The pages of the simulcast journeys (tests/net/simulcast.test.mjs and the
// layer-switch case of tests/bench/net-recovery.mjs): a publisher of a noisy
// 640×360 canvas with simulcast on, and a subscriber that renders every
// remote video and samples its decoding.

/** Browser flags: the server's http origin counts as secure (as localhost does). */
export const originFlags = (net) => [`--unsafely-treat-insecure-origin-as-secure=${net.url}`];

/** Joins `token`'s stage publishing a noisy 640×360 canvas with simulcast on. */
export async function publish(p, net, token) {
  await p.page.goto(`${net.url}/sdk/package.json`);
  await p.page.evaluate(async (token) => {
    const sc = await import('/sdk/index.js');
    const [w, h] = [640, 360];
    const canvas = Object.assign(document.createElement('canvas'), { width: w, height: h });
    const ctx = canvas.getContext('2d');
    // A few frames of noise, cycled, with a moving bar: every frame differs
    // from the last everywhere, so the encoder spends what it is allowed.
    const noise = Array.from({ length: 6 }, () => {
      const img = ctx.createImageData(w, h);
      const px = new Uint32Array(img.data.buffer);
      for (let i = 0; i < px.length; i++) px[i] = (Math.random() * 0xffffff) | 0xff000000;
      return img;
    });
    let n = 0;
    setInterval(() => {
      ctx.putImageData(noise[n % noise.length], 0, 0);
      ctx.fillStyle = '#fff';
      ctx.fillRect((n * 8) % (w - 40), h - 40, 40, 40);
      n += 1;
    }, 33);
    const track = canvas.captureStream(30).getVideoTracks()[0];
    const stream = new sc.LocalStageStream(track, { simulcast: { enabled: true } });
    const stage = new sc.Stage(token, {
      stageStreamsToPublish: () => [stream],
      shouldPublishParticipant: () => true,
      shouldSubscribeToParticipant: () => 'none',
    });
    window.__pub = { stage, stream };
    await stage.join();
  }, token);
}

/**
 * Joins as a subscriber to everyone (audio and video, each video rendered
 * in a <video>); `window.__preferLowest` makes `preferredLayerForStream`
 * answer the lowest layer. Frames decoded are sampled every 250 ms, so a
 * stream that stops dead (which Chrome's `freezeCount` does not count) is
 * seen as stalled.
 */
export async function subscribe(p, net, token, { initial = null } = {}) {
  await p.page.goto(`${net.url}/sdk/package.json`);
  await p.page.evaluate(async ([token, initial]) => {
    const sc = await import('/sdk/index.js');
    const remotes = new Map();
    window.__preferLowest = false;
    const stage = new sc.Stage(token, {
      stageStreamsToPublish: () => [],
      shouldPublishParticipant: () => false,
      shouldSubscribeToParticipant: () => 'audio_video',
      preferredLayerForStream: (info, stream) => (window.__preferLowest ? stream.getLowestQualityLayer() : null),
      // Where a subscription starts (IVS `initialLayerPreference`); the SDK's default when null.
      ...(initial ? { subscribeConfiguration: () => ({ simulcast: { initialLayerPreference: initial } }) } : {}),
    });
    const layerEvents = [];
    stage.on(sc.StageEvents.STAGE_STREAM_LAYERS_CHANGED, (info, s, layers) => layerEvents.push({ id: info.id, type: 'layers', layers }));
    stage.on(sc.StageEvents.STAGE_STREAM_LAYER_SELECTED, (info, s, layer, reason) => layerEvents.push({ id: info.id, type: 'selected', label: layer?.label, reason }));
    stage.on(sc.StageEvents.STAGE_STREAM_ADAPTION_CHANGED, (info, s, adapting) => layerEvents.push({ id: info.id, type: 'adapting', adapting }));
    stage.on(sc.StageEvents.STAGE_PARTICIPANT_STREAMS_ADDED, (info, streams) => {
      for (const s of streams) {
        if (s.streamType !== 'video') continue;
        const video = Object.assign(document.createElement('video'), { muted: true, autoplay: true, playsInline: true });
        video.srcObject = new MediaStream([s.mediaStreamTrack]);
        document.body.append(video);
        remotes.set(info.id, { stream: s, video, stalledMs: 0, last: 0, lastAt: performance.now() });
      }
    });
    setInterval(async () => {
      for (const r of remotes.values()) {
        const stats = await r.stream.requestRTCStats();
        stats.forEach((s) => {
          if (s.type !== 'inbound-rtp' || s.kind !== 'video') return;
          const now = performance.now();
          if ((s.framesDecoded || 0) === r.last) r.stalledMs += now - r.lastAt;
          r.last = s.framesDecoded || 0;
          r.lastAt = now;
          r.stats = s;
        });
      }
    }, 250);
    window.__sub = { stage, remotes, layerEvents };
    await stage.join();
  }, [token, initial]);
}

/** Per remote participant: frames decoded, freeze time, own stall time, size. */
export function sample(p) {
  return p.page.evaluate(() =>
    Object.fromEntries(
      [...window.__sub.remotes].map(([id, r]) => [
        id,
        {
          framesDecoded: r.stats?.framesDecoded || 0,
          freezes: r.stats?.totalFreezesDuration || 0,
          stalledMs: r.stalledMs,
          width: r.stats?.frameWidth || 0,
          height: r.stats?.frameHeight || 0,
          layers: r.stream.getLayers().map((l) => `${l.label}:${l.width}x${l.height}`),
          adapting: r.stream.isAdapting,
        },
      ]),
    ),
  );
}
