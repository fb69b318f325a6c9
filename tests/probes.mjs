// Probes: what a page did and when, for journeys that judge timing and
// truthfulness (the network tests). Pass `PROBES` to newParticipant's
// `initScripts`; then
// - every event the sample app records in `window.__stagecast.events` gets
//   `at` (Date.now() when it was recorded, the same clock as the test runner);
// - every RTCPeerConnection the page makes is logged with its configured
//   ICE servers and the times of its connection-state changes, and its
//   selected candidate pair can be read (relay? TCP?);
// - every remote tile is watched in the page itself, every 50 ms: each new
//   decoded frame's centre colour and bar position, and every 100 ms the
//   peak frequency of its audio — so "when did media come back" is measured
//   where it happens, not when a busy test runner got round to looking.

import assert from 'node:assert/strict';

function probesInit() {
  let current;
  Object.defineProperty(window, '__stagecast', {
    configurable: true,
    enumerable: true,
    get() {
      return current;
    },
    set(value) {
      current = value;
      const events = value && value.events;
      if (Array.isArray(events) && !events.__timed) {
        const push = events.push;
        Object.defineProperty(events, '__timed', { value: true });
        events.push = function timedPush(...items) {
          for (const item of items) if (item && typeof item === 'object' && item.at === undefined) item.at = Date.now();
          return push.apply(this, items);
        };
      }
    },
  });

  // The media monitor: window.__media[participantId] = {video: [...], audio: [...]}.
  const media = {};
  window.__media = media;
  const keep = (list, item, max) => {
    list.push(item);
    if (list.length > max) list.splice(0, list.length - max);
  };
  const canvas = document.createElement('canvas');
  canvas.width = 64;
  canvas.height = 36;
  const g = canvas.getContext('2d', { willReadFrequently: true });
  let audio = null;
  let tick = 0;
  const look = (pid, video) => {
    const m = media[pid] || (media[pid] = { video: [], audio: [], lastFrames: -1, track: null, analyser: null });
    const frames = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality().totalVideoFrames : 0;
    if (video.videoWidth && frames !== m.lastFrames) {
      m.lastFrames = frames;
      g.drawImage(video, 0, 0, 64, 36);
      const d = g.getImageData(0, 0, 64, 36).data;
      let r = 0;
      let gr = 0;
      let b = 0;
      let n = 0;
      let barSum = 0;
      let barN = 0;
      for (let y = 0; y < 36; y += 1) {
        for (let x = 0; x < 64; x += 1) {
          const i = (y * 64 + x) * 4;
          if (y >= 9 && y < 27 && x >= 16 && x < 48) {
            r += d[i];
            gr += d[i + 1];
            b += d[i + 2];
            n += 1;
          } else if (y >= 33 && d[i] + d[i + 1] + d[i + 2] > 600) {
            barSum += x;
            barN += 1;
          }
        }
      }
      keep(m.video, { at: Date.now(), frames, rgb: [Math.round(r / n), Math.round(gr / n), Math.round(b / n)], barX: barN ? Math.round(barSum / barN) : -1 }, 1200);
    }
    if (tick % 2) return;
    const track = video.srcObject && video.srcObject.getAudioTracks && video.srcObject.getAudioTracks()[0];
    if (!track) return;
    if (track !== m.track) {
      audio = audio || new AudioContext();
      audio.resume().catch(() => {});
      m.track = track;
      m.analyser = audio.createAnalyser();
      m.analyser.fftSize = 8192;
      m.analyser.smoothingTimeConstant = 0.5;
      m.bins = new Float32Array(m.analyser.frequencyBinCount);
      audio.createMediaStreamSource(new MediaStream([track])).connect(m.analyser);
    }
    m.analyser.getFloatFrequencyData(m.bins);
    let best = 1;
    for (let i = 2; i < m.bins.length; i += 1) if (m.bins[i] > m.bins[best]) best = i;
    keep(m.audio, { at: Date.now(), freq: Math.round((best * audio.sampleRate) / m.analyser.fftSize), db: Math.round(m.bins[best]) }, 400);
  };
  setInterval(() => {
    tick += 1;
    for (const tile of document.querySelectorAll('[data-testid="tile"][data-local="false"]')) {
      const video = tile.querySelector('video');
      if (video && tile.dataset.participantId) {
        try {
          look(tile.dataset.participantId, video);
        } catch {
          // a tile that went away mid-look
        }
      }
    }
  }, 50);

  const Native = window.RTCPeerConnection;
  if (!Native) return;
  const log = [];
  window.__pcLog = log;
  // A subclass, so `instanceof RTCPeerConnection` (wasm-bindgen's casts) holds.
  class ProbedPeerConnection extends Native {
    constructor(config, ...rest) {
      super(config, ...rest);
      const servers = (config && config.iceServers) || [];
      const entry = {
        id: log.length,
        createdAt: Date.now(),
        iceServers: servers.map((s) => ({ urls: [].concat(s.urls || []), username: s.username || '', hasCredential: !!s.credential })),
        iceTransportPolicy: (config && config.iceTransportPolicy) || 'all',
        states: [],
        pc: this,
      };
      log.push(entry);
      this.addEventListener('connectionstatechange', () => {
        entry.states.push({ state: this.connectionState, at: Date.now() });
        // Remembered while live: a closed connection's transceivers read "stopped".
        const dirs = this.getTransceivers().map((t) => t.currentDirection || t.direction);
        if (dirs.some((d) => d === 'sendonly' || d === 'sendrecv')) entry.sent = true;
        if (dirs.some((d) => d === 'recvonly' || d === 'sendrecv')) entry.received = true;
      });
    }
  }
  window.RTCPeerConnection = ProbedPeerConnection;
}

/** The init script that installs the probes (for newParticipant's `initScripts`). */
export const PROBES = [probesInit, null];

/** The app's recorded SDK events, each with `at` (Date.now()). */
export async function eventsOf(page) {
  return page.evaluate(() => (window.__stagecast?.events || []).map((e) => ({ ...e })));
}

/** The events of `page` of `type` about `participantId` recorded after `since`. */
export async function eventsAbout(page, { type, participantId, since = 0 }) {
  return (await eventsOf(page)).filter(
    (e) => e.type === type && (participantId === undefined || e.participantId === participantId) && (e.at || 0) >= since,
  );
}

/**
 * Every peer connection the page made: its ICE servers, state changes,
 * whether it sends or receives, its current state and its selected
 * candidate pair (`local`/`remote`: candidateType, protocol, relayProtocol).
 */
export async function peerConnections(page) {
  return page.evaluate(async () => {
    const out = [];
    for (const entry of window.__pcLog || []) {
      const { pc, sent, received, ...rest } = entry;
      let pair = null;
      try {
        const stats = await pc.getStats();
        const byId = new Map();
        stats.forEach((s) => byId.set(s.id, s));
        let selected = null;
        stats.forEach((s) => {
          if (s.type === 'transport' && s.selectedCandidatePairId) selected = byId.get(s.selectedCandidatePairId);
        });
        if (!selected) stats.forEach((s) => {
          if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') selected = s;
        });
        if (selected) {
          const pick = (c) => c && { candidateType: c.candidateType, protocol: c.protocol, relayProtocol: c.relayProtocol, address: c.address, port: c.port };
          pair = { local: pick(byId.get(selected.localCandidateId)), remote: pick(byId.get(selected.remoteCandidateId)) };
        }
      } catch {
        pair = null;
      }
      const directions = pc.getTransceivers().map((t) => t.currentDirection || t.direction);
      out.push({
        ...rest,
        state: pc.connectionState,
        sends: !!sent || directions.some((d) => d === 'sendonly' || d === 'sendrecv'),
        receives: !!received || directions.some((d) => d === 'recvonly' || d === 'sendrecv'),
        pair,
      });
    }
    return out;
  });
}

/** Was `pc` in state 'connected' at time `at` (its last change at or before `at`)? */
function connectedAt(pc, at) {
  const before = pc.states.filter((s) => s.at <= at);
  return before.length > 0 && before[before.length - 1].state === 'connected';
}

/**
 * The SDK said `published` only while a sending peer connection was
 * connected (ICE + DTLS), and `subscribed` only while a receiving one was.
 * Returns how many such claims were checked.
 */
export async function assertStatesTruthful(p) {
  const [events, pcs] = await Promise.all([eventsOf(p.page), peerConnections(p.page)]);
  let checked = 0;
  for (const e of events) {
    if (e.type === 'stageParticipantPublishStateChanged' && e.isLocal && e.state === 'published') {
      const ok = pcs.some((pc) => pc.sends && connectedAt(pc, e.at));
      assert.ok(ok, `${p.name}'s app was told "published" at ${e.at} with no sending peer connection connected: ${JSON.stringify(pcs.map(({ states, sends }) => ({ states, sends })))}`);
      checked += 1;
    }
    if (e.type === 'stageParticipantSubscribeStateChanged' && e.state === 'subscribed') {
      const ok = pcs.some((pc) => pc.receives && connectedAt(pc, e.at));
      assert.ok(ok, `${p.name}'s app was told "subscribed" to ${e.participantId} at ${e.at} with no receiving peer connection connected`);
      checked += 1;
    }
  }
  return checked;
}

// ---------------------------------------------------------------- media monitor

const colourDistance = (a, b) => Math.hypot(a[0] - b[0], a[1] - b[1], a[2] - b[2]);

/**
 * From the page's media monitor: when `other`'s media was live on `viewer`'s
 * page after `since` (Date.now()). Video is live at the first of 6
 * consecutive new frames of `other`'s colour whose bar moved; audio at the
 * first of 2 hearings of `other`'s tone. `null` where not (yet).
 */
export async function liveSince(viewer, other, since) {
  const m = await viewer.page.evaluate((pid) => {
    const e = window.__media && window.__media[pid];
    return e ? { video: e.video, audio: e.audio } : null;
  }, other.id);
  if (!m) return { videoAt: null, toneAt: null, last: null };
  const video = m.video.filter((f) => f.at >= since);
  let videoAt = null;
  for (let i = 0; i + 5 < video.length && videoAt === null; i += 1) {
    const run = video.slice(i, i + 6);
    const right = run.every((f) => colourDistance(f.rgb, other.color) < 70);
    const moving = new Set(run.map((f) => f.barX)).size > 1;
    if (right && moving) videoAt = run[0].at;
  }
  const heard = m.audio.filter((a) => a.at >= since && Math.abs(a.freq - other.freq) < 25 && a.db > -90);
  const toneAt = heard.length >= 2 ? heard[0].at : null;
  return { videoAt, toneAt, last: { video: m.video.at(-1) || null, audio: m.audio.at(-1) || null } };
}

/**
 * Waits until `other`'s video and tone are live on `viewer`'s page after
 * `since`; returns `{videoAt, toneAt}` (Date.now() in the page).
 */
export async function waitLiveSince(viewer, other, since, timeout) {
  const deadline = Date.now() + timeout;
  let seen = null;
  while (Date.now() < deadline) {
    seen = await liveSince(viewer, other, since);
    if (seen.videoAt !== null && seen.toneAt !== null) return seen;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(
    `${viewer.name} did not get ${other.name}'s media (colour ${JSON.stringify(other.color)}, ${other.freq} Hz) within ${timeout} ms: ${JSON.stringify(seen)}`,
  );
}

/**
 * A snapshot of how `page` receives and sends video: per remote participant
 * in `ids`, the inbound RTP stats of the track its tile plays (frames
 * decoded, Chrome's freezes, NACKs sent, packets lost) and the page's own
 * frame log for that tile; plus the NACKs its outbound video received.
 * Two snapshots make a window: see `videoHealthBetween`.
 */
export async function videoHealth(page, ids) {
  return page.evaluate(async (ids) => {
    const inbound = new Map();
    let nacksReceived = 0;
    for (const entry of window.__pcLog || []) {
      if (entry.pc.connectionState === 'closed') continue;
      const stats = await entry.pc.getStats().catch(() => null);
      stats?.forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'video' && s.trackIdentifier) inbound.set(s.trackIdentifier, s);
        if (s.type === 'outbound-rtp' && s.kind === 'video') nacksReceived += s.nackCount || 0;
      });
    }
    const remotes = {};
    for (const id of ids) {
      const video = document.querySelector(`[data-testid="tile"][data-participant-id="${id}"] video`);
      const track = video && video.srcObject && video.srcObject.getVideoTracks && video.srcObject.getVideoTracks()[0];
      const s = track && inbound.get(track.id);
      const frames = (window.__media && window.__media[id] && window.__media[id].video) || [];
      remotes[id] = {
        framesDecoded: s ? s.framesDecoded || 0 : 0,
        freezesS: s ? s.totalFreezesDuration || 0 : 0,
        nacksSent: s ? s.nackCount || 0 : 0,
        packetsLost: s ? s.packetsLost || 0 : 0,
        seenAt: frames.map((f) => f.at),
      };
    }
    return { at: Date.now(), nacksReceived, remotes };
  }, ids);
}

/**
 * What happened between two `videoHealth` snapshots, per remote id: fps
 * decoded, the share of the window Chrome counted as frozen, the share the
 * page saw no new frame for more than 300 ms (a stream that stops dead is
 * not a "freeze" to Chrome), NACKs sent and packets lost; and the NACKs the
 * page's own outbound video received.
 */
export function videoHealthBetween(a, b) {
  const seconds = (b.at - a.at) / 1000;
  const remotes = {};
  for (const [id, r1] of Object.entries(b.remotes)) {
    const r0 = a.remotes[id];
    const seen = r1.seenAt.filter((t) => t >= a.at && t <= b.at);
    let stalled = 0;
    let last = a.at;
    for (const t of [...seen, b.at]) {
      stalled += Math.max(0, t - last - 300);
      last = t;
    }
    remotes[id] = {
      fps: (r1.framesDecoded - r0.framesDecoded) / seconds,
      frozen: (r1.freezesS - r0.freezesS) / seconds,
      stalled: stalled / 1000 / seconds,
      nacksSent: r1.nacksSent - r0.nacksSent,
      packetsLost: r1.packetsLost - r0.packetsLost,
    };
  }
  return { seconds, nacksReceived: b.nacksReceived - a.nacksReceived, remotes };
}
