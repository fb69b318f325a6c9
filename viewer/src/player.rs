//! The video players, loaded at run time from the sample app's bundle
//! `/dist/players.js` (hls.js + the IVS Player, built by `cargo xtask build`).
//!
//! The bundle lives at an absolute server path, which `#[wasm_bindgen(module)]`
//! cannot name, so a small inline ES module imports it dynamically and adapts
//! both players to one shape: `{stop(), programDateTime(), setMuted(bool)}`
//! plus three callbacks (playing, gone, metadata cue). The state machine
//! stays in Rust, and so does the latency figure: `programDateTime()` is the
//! `EXT-X-PROGRAM-DATE-TIME` (Unix ms) of the frame on screen when the
//! library knows it, which the page puts against the server's clock. The
//! IVS Player's own `getLiveLatency()` and `getSyncTime()` stay 0 on streams
//! that do not come from IVS's transcoder; for it the page maps the video's
//! timeline onto the playlist's date-times itself (`crate::latency::Timeline`).

use js_sys::{Function, Reflect};
use wasm_bindgen::prelude::*;
use web_sys::HtmlVideoElement;

#[wasm_bindgen(inline_js = r#"
function synchsafe(b, i) {
  return ((b[i] & 0x7f) << 21) | ((b[i + 1] & 0x7f) << 14) | ((b[i + 2] & 0x7f) << 7) | (b[i + 3] & 0x7f);
}
// The value of the first TXXX frame of an ID3v2 tag (what the server's
// PutMetadata writes), or null.
function id3Txxx(b) {
  if (!b || b.length < 10 || b[0] !== 0x49 || b[1] !== 0x44 || b[2] !== 0x33) return null;
  const v24 = b[3] >= 4;
  const end = Math.min(b.length, 10 + synchsafe(b, 6));
  let i = 10;
  while (i + 10 <= end) {
    const id = String.fromCharCode(b[i], b[i + 1], b[i + 2], b[i + 3]);
    const size = v24 ? synchsafe(b, i + 4) : ((b[i + 4] << 24) | (b[i + 5] << 16) | (b[i + 6] << 8) | b[i + 7]);
    const body = b.subarray(i + 10, Math.min(end, i + 10 + size));
    if (id === 'TXXX' && body.length > 0) {
      let j = 1;
      while (j < body.length && body[j] !== 0) j++;
      return new TextDecoder().decode(body.subarray(j + 1));
    }
    if (size <= 0) break;
    i += 10 + size;
  }
  return null;
}
export async function startPlayer(kind, video, url, onPlaying, onGone, onCue) {
  const m = await import('/dist/players.js');
  let stopped = false;
  const gone = (why) => { if (!stopped) onGone(String(why)); };
  const cue = (text) => { if (!stopped && text != null) onCue(String(text)); };
  video.muted = true;
  if (kind === 'ivs') {
    if (!m.ivsPlayerSupported) throw new Error('the IVS Player is not supported in this browser');
    const p = m.createIvsPlayer({
      wasmWorker: new URL('/dist/amazon-ivs-wasmworker.min.js', location.href).href,
      wasmBinary: new URL('/dist/amazon-ivs-wasmworker.min.wasm', location.href).href,
    });
    p.attachHTMLVideoElement(video);
    p.setMuted(true);
    p.setAutoplay(true);
    // One rendition: without this the low-latency player re-downloads a
    // complete segment every period to probe bandwidth (twice the egress).
    // A ladder (the broadcaster's simulcast) needs it to switch.
    p.setAutoQualityMode(false);
    // The sync time (IVS's own timestamps) moves in steps: remember where
    // playback was when it changed, and count on from there. (On our
    // streams the player reports none: the page then maps the video's
    // timeline onto the playlist's program date-times itself.)
    let sync = null;
    const syncNow = () => {
      const t = p.getSyncTime();
      if (Number.isFinite(t) && t > 0 && (!sync || sync.t !== t)) sync = { t, position: p.getPosition() };
    };
    p.addEventListener(m.PlayerEventType.SYNC_TIME_UPDATE, syncNow);
    p.addEventListener(m.PlayerState.READY, () => p.setAutoQualityMode(p.getQualities().length > 1));
    p.addEventListener(m.PlayerState.PLAYING, () => { if (!stopped) onPlaying(); });
    p.addEventListener(m.PlayerState.ENDED, () => gone('ended'));
    // 403: a private channel without a valid playback token (ErrorType.AUTHORIZATION).
    const denied = (e) => !!e && (e.code === 403 || e.type === 'ErrorAuthorization');
    p.addEventListener(m.PlayerEventType.ERROR, (e) => gone(`${denied(e) ? 'forbidden: ' : ''}${e && e.type}: ${e && e.message}`));
    p.addEventListener(m.PlayerEventType.TEXT_METADATA_CUE, (c) => cue(c && c.text));
    // Older players report ID3 text as a generic METADATA event.
    p.addEventListener(m.PlayerEventType.METADATA, (c) => { if (c && typeof c.data === 'string') cue(c.data); });
    p.load(url);
    p.play();
    return {
      stop() { stopped = true; p.delete(); },
      programDateTime() {
        syncNow();
        return sync ? sync.t + (p.getPosition() - sync.position) * 1000 : NaN;
      },
      lowLatency() { return p.isLiveLowLatency(); },
      setMuted(muted) { p.setMuted(muted); video.muted = muted; },
    };
  }
  const onPlayingEvent = () => { if (!stopped) onPlaying(); };
  const onEnded = () => gone('ended');
  video.addEventListener('playing', onPlayingEvent);
  video.addEventListener('ended', onEnded);
  const detach = () => {
    video.removeEventListener('playing', onPlayingEvent);
    video.removeEventListener('ended', onEnded);
  };
  if (!m.Hls.isSupported()) {
    if (!video.canPlayType('application/vnd.apple.mpegurl')) {
      detach();
      throw new Error('this browser cannot play HLS (no Media Source Extensions)');
    }
    // Safari plays (LL-)HLS natively.
    video.src = url;
    video.play().catch(() => {});
    return {
      stop() { stopped = true; detach(); video.removeAttribute('src'); video.load(); },
      programDateTime() {
        const d = video.getStartDate && video.getStartDate();
        const start = d ? d.getTime() : NaN;
        return Number.isFinite(start) ? start + video.currentTime * 1000 : NaN;
      },
      lowLatency() { return false; },
      setMuted(muted) { video.muted = muted; },
    };
  }
  const hls = new m.Hls({ lowLatencyMode: true, backBufferLength: 10, playlistLoadPolicy: m.PATIENT_PLAYLIST });
  hls.on(m.Hls.Events.MANIFEST_PARSED, () => video.play().catch(() => {}));
  hls.on(m.Hls.Events.ERROR, (_e, d) => {
    const denied = d && d.response && d.response.code === 403;
    if (d && d.fatal) gone(`${denied ? 'forbidden: ' : ''}${d.type}: ${d.details}`);
  });
  hls.on(m.Hls.Events.FRAG_PARSING_METADATA, (_e, d) => {
    for (const s of (d && d.samples) || []) cue(id3Txxx(s.data));
  });
  hls.loadSource(url);
  hls.attachMedia(video);
  return {
    stop() { stopped = true; detach(); hls.destroy(); video.removeAttribute('src'); video.load(); },
    programDateTime() { const d = hls.playingDate; return d ? d.getTime() : NaN; },
    lowLatency() {
      const level = hls.levels && hls.levels[hls.currentLevel];
      return !!(hls.config.lowLatencyMode && level && level.details && level.details.partTarget);
    },
    setMuted(muted) { video.muted = muted; },
  };
}
"#)]
extern "C" {
    #[wasm_bindgen(catch, js_name = startPlayer)]
    async fn start_player(
        kind: &str,
        video: &HtmlVideoElement,
        url: &str,
        on_playing: &Function,
        on_gone: &Function,
        on_cue: &Function,
    ) -> Result<JsValue, JsValue>;
}

/// Whether a player's "gone" reason is a refusal (HTTP 403: a private
/// channel without a valid playback token, the IVS Player's AUTHORIZATION
/// error) rather than the stream ending.
pub fn is_forbidden(why: &str) -> bool {
    why.starts_with("forbidden: ")
}

/// Which player library plays the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlayerKind {
    /// The Amazon IVS Player (default).
    Ivs,
    /// hls.js in low-latency mode (`?player=hls`).
    Hls,
}

impl PlayerKind {
    /// From the page's `player` query parameter.
    pub fn from_query(value: Option<&str>) -> Self {
        match value {
            Some("hls") | Some("hlsjs") | Some("hls.js") => PlayerKind::Hls,
            _ => PlayerKind::Ivs,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            PlayerKind::Ivs => "ivs",
            PlayerKind::Hls => "hls",
        }
    }

    /// For people.
    pub fn label(self) -> &'static str {
        match self {
            PlayerKind::Ivs => "Amazon IVS Player",
            PlayerKind::Hls => "hls.js (low latency)",
        }
    }
}

/// What the player tells the page.
pub struct Callbacks {
    /// Frames are playing.
    pub on_playing: Box<dyn FnMut()>,
    /// The stream ended or failed (the reason, for the console).
    pub on_gone: Box<dyn FnMut(String)>,
    /// A timed-metadata cue (its text) was reached.
    pub on_cue: Box<dyn FnMut(String)>,
}

/// A running player. Dropping it releases the library's
/// objects; the callbacks are never called after that.
pub struct Player {
    handle: JsValue,
    // Kept alive for as long as the JS side may call them.
    _on_playing: Closure<dyn FnMut()>,
    _on_gone: Closure<dyn FnMut(String)>,
    _on_cue: Closure<dyn FnMut(String)>,
}

impl Player {
    /// Loads the bundle (once) and starts playing `url` muted into `video`.
    pub async fn start(
        kind: PlayerKind,
        video: &HtmlVideoElement,
        url: &str,
        cb: Callbacks,
    ) -> Result<Player, String> {
        let playing = Closure::wrap(cb.on_playing);
        let gone = Closure::wrap(cb.on_gone);
        let cue = Closure::wrap(cb.on_cue);
        let handle = start_player(
            kind.as_str(),
            video,
            url,
            playing.as_ref().unchecked_ref(),
            gone.as_ref().unchecked_ref(),
            cue.as_ref().unchecked_ref(),
        )
        .await
        .map_err(|e| crate::api::js_error_text(&e))?;
        Ok(Player {
            handle,
            _on_playing: playing,
            _on_gone: gone,
            _on_cue: cue,
        })
    }

    fn call(&self, method: &str, arg: Option<&JsValue>) -> JsValue {
        let f = Reflect::get(&self.handle, &JsValue::from_str(method))
            .ok()
            .and_then(|f| f.dyn_into::<Function>().ok());
        let Some(f) = f else {
            return JsValue::UNDEFINED;
        };
        let result = match arg {
            Some(a) => f.call1(&self.handle, a),
            None => f.call0(&self.handle),
        };
        result.unwrap_or(JsValue::UNDEFINED)
    }

    /// The `EXT-X-PROGRAM-DATE-TIME` (Unix ms) of the frame on screen, once
    /// the library knows it.
    pub fn program_date_time(&self) -> Option<f64> {
        self.call("programDateTime", None)
            .as_f64()
            .filter(|t| t.is_finite() && *t > 0.0)
    }

    /// Whether the library plays the stream in its low-latency mode (the IVS
    /// Player's `isLiveLowLatency()`, hls.js on LL-HLS parts).
    pub fn low_latency(&self) -> bool {
        self.call("lowLatency", None).as_bool().unwrap_or(false)
    }

    /// Mutes or unmutes the audio.
    pub fn set_muted(&self, muted: bool) {
        self.call("setMuted", Some(&JsValue::from_bool(muted)));
    }
}

impl Drop for Player {
    fn drop(&mut self) {
        self.call("stop", None);
    }
}
