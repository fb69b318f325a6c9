//! Sans-IO parts of the broadcast client (IVS `AmazonIVSBroadcastClient`):
//! presets, `BroadcastClientError` codes, stream-key checks, composition
//! defaults, codec ordering, compositor statistics and the simulcast
//! ladder of the broadcast.

use super::json;
use super::layout::Rect;
use super::simulcast::{self, ConfigError, Encoding, LayerConfig, LayerRules, VideoConfig};

/// `BroadcastClientError` codes, numbered as in the IVS Web Broadcast SDK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BroadcastErrorCode {
    Broadcast = 1000,
    /// A device/image with this name already exists.
    AddDeviceNameExists = 4000,
    /// The media stream has no track of the needed kind.
    AddDeviceMissingTrack = 4001,
    /// The composition is missing or invalid.
    AddDeviceInvalidComposition = 4002,
    /// The name is missing or empty.
    AddDeviceInvalidName = 4003,
    /// Too many video sources.
    AddDeviceLimit = 4004,
    /// The source type is not supported.
    AddDeviceUnsupported = 4005,
    /// The browser refused to use the source.
    AddDeviceFailed = 4006,
    RemoveVideoDeviceNotFound = 5000,
    RemoveAudioDeviceNotFound = 6000,
    UpdateCompositionNotFound = 7000,
    UpdateCompositionInvalid = 7001,
    ExchangePosition = 8000,
    FailedToAddImage = 9000,
    PeerSetup = 10000,
    PeerConnection = 10001,
    InvalidStreamKey = 10003,
    StreamConfiguration = 12000,
    IngestEndpoint = 13000,
    ClientInvalid = 16000,
    StreamKeyInvalidChar = 18000,
}

impl BroadcastErrorCode {
    pub fn as_u32(self) -> u32 {
        self as u32
    }

    /// The `name` of the JS error.
    pub fn name(self) -> &'static str {
        use BroadcastErrorCode::*;
        match self {
            Broadcast => "BroadcastError",
            AddDeviceNameExists => "AddDeviceNameExistsError",
            AddDeviceMissingTrack => "AddDeviceMissingTrackError",
            AddDeviceInvalidComposition => "AddDeviceInvalidCompositionError",
            AddDeviceInvalidName => "AddDeviceInvalidNameError",
            AddDeviceLimit => "AddDeviceLimitError",
            AddDeviceUnsupported => "AddDeviceUnsupportedError",
            AddDeviceFailed => "AddDeviceError",
            RemoveVideoDeviceNotFound => "RemoveDeviceNotFoundError",
            RemoveAudioDeviceNotFound => "RemoveAudioDeviceNotFoundError",
            UpdateCompositionNotFound => "UpdateCompositionNotFoundError",
            UpdateCompositionInvalid => "UpdateCompositionInvalidError",
            ExchangePosition => "ExchangePositionError",
            FailedToAddImage => "FailedToAddImageError",
            PeerSetup => "PeerSetupError",
            PeerConnection => "PeerConnectionError",
            InvalidStreamKey => "InvalidStreamKeyError",
            StreamConfiguration => "StreamConfigurationError",
            IngestEndpoint => "IngestEndpointError",
            ClientInvalid => "ClientInvalidError",
            StreamKeyInvalidChar => "StreamKeyInvalidCharError",
        }
    }
}

/// A broadcast client error: code + message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BroadcastError {
    pub code: BroadcastErrorCode,
    pub message: String,
}

impl BroadcastError {
    pub fn new(code: BroadcastErrorCode, message: impl Into<String>) -> BroadcastError {
        BroadcastError {
            code,
            message: message.into(),
        }
    }

    /// The error for a failed ingest request: a refused stream key is
    /// `InvalidStreamKey`, anything else `PeerSetup`.
    pub fn from_failure(f: &super::error::HttpFailure) -> BroadcastError {
        use BroadcastErrorCode::{InvalidStreamKey, PeerSetup};
        match (f.status, &f.code) {
            (Some(status), code) => {
                let detail = code
                    .as_ref()
                    .map(|c| format!(" {c}: {}", f.message))
                    .unwrap_or_default();
                let code = if status == 401 || status == 403 {
                    InvalidStreamKey
                } else {
                    PeerSetup
                };
                Self::new(code, format!("the ingest server answered HTTP {status}{detail}"))
            }
            (None, _) if f.network => {
                Self::new(PeerSetup, format!("cannot reach the ingest server: {}", f.message))
            }
            (None, _) => Self::new(PeerSetup, f.message.clone()),
        }
    }
}

/// `StreamConfig` (the parts the client uses).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamConfig {
    pub width: u32,
    pub height: u32,
    pub max_framerate: u32,
    pub max_bitrate_kbps: u32,
}

/// The IVS presets, by export name.
pub const PRESETS: [(&str, StreamConfig); 6] = [
    ("BASIC_LANDSCAPE", preset(852, 480, 1500)),
    ("BASIC_PORTRAIT", preset(480, 852, 1500)),
    ("BASIC_FULL_HD_LANDSCAPE", preset(1920, 1080, 3500)),
    ("BASIC_FULL_HD_PORTRAIT", preset(1080, 1920, 3500)),
    ("STANDARD_LANDSCAPE", preset(1920, 1080, 8500)),
    ("STANDARD_PORTRAIT", preset(1080, 1920, 8500)),
];

const fn preset(width: u32, height: u32, kbps: u32) -> StreamConfig {
    StreamConfig {
        width,
        height,
        max_framerate: 30,
        max_bitrate_kbps: kbps,
    }
}

impl Default for StreamConfig {
    fn default() -> Self {
        PRESETS[0].1
    }
}

impl StreamConfig {
    /// Checks the IVS limits: 160–1920 per side (at most 1920×1080 or
    /// 1080×1920), 10–60 fps, 200–8500 kbps.
    pub fn validate(&self) -> Result<(), BroadcastError> {
        let (long, short) = (self.width.max(self.height), self.width.min(self.height));
        let bad = |what: String| {
            Err(BroadcastError::new(
                BroadcastErrorCode::StreamConfiguration,
                what,
            ))
        };
        if self.width < 160 || self.height < 160 || long > 1920 || short > 1080 {
            return bad(format!(
                "resolution {}x{} is outside 160..1920 (max 1920x1080)",
                self.width, self.height
            ));
        }
        if !(10..=60).contains(&self.max_framerate) {
            return bad(format!(
                "maxFramerate {} is outside 10..60",
                self.max_framerate
            ));
        }
        if !(200..=8500).contains(&self.max_bitrate_kbps) {
            return bad(format!(
                "maxBitrate {} is outside 200..8500",
                self.max_bitrate_kbps
            ));
        }
        Ok(())
    }

    /// Milliseconds between composed frames.
    pub fn frame_period_ms(&self) -> f64 {
        1000.0 / f64::from(self.max_framerate.max(1))
    }

    /// The layers of `simulcast: {enabled: true}` without `layers`, lowest
    /// first: `maxResolution` at `maxBitrate`, half the size at 30 % of it
    /// and a quarter at 10 % (each at least 150 kbps), all at `maxFramerate`
    /// (a channel's renditions keep the frame rate). A layer with a side
    /// under 160 px is left out.
    pub fn default_ladder(&self) -> Vec<LayerConfig> {
        let kbps = self.max_bitrate_kbps;
        let mut layers = Vec::new();
        for (div, percent) in [(4, 10), (2, 30), (1, 100)] {
            let (width, height) = (self.width / div, self.height / div);
            if width.min(height) >= 160 {
                let max_bitrate_kbps = (kbps.saturating_mul(percent) / 100).max(150).min(kbps);
                layers.push(LayerConfig { width, height, max_bitrate_kbps, max_framerate: self.max_framerate });
            }
        }
        layers
    }

    /// Reads `streamConfig.simulcast` (its `JSON.stringify`; `None` when
    /// absent): `{enabled, layers?: [{width, height, maxBitrate (kbps),
    /// maxFramerate}]}`, 1 to 3 layers of different sizes, each within this
    /// config (160 px to `maxResolution` per side, 100 kbps to `maxBitrate`,
    /// 10 fps to `maxFramerate`). Returns the layers lowest first; none
    /// without simulcast.
    pub fn simulcast_layers(&self, json_text: Option<&str>) -> Result<Vec<LayerConfig>, BroadcastError> {
        let doc = json_text.and_then(|t| json::parse(t.as_bytes()));
        let rules = LayerRules {
            width: (160, self.width),
            height: (160, self.height),
            kbps: (100, self.max_bitrate_kbps),
            fps: (10, self.max_framerate),
            kbps_key: "maxBitrate",
        };
        simulcast::parse_layers(doc.as_ref(), &rules, &self.default_ladder()).map_err(|e| {
            let message = match e {
                ConfigError::OutOfRange { .. } => format!("streamConfig.simulcast.layers: {e}"),
                e => format!("streamConfig: {e}"),
            };
            BroadcastError::new(BroadcastErrorCode::StreamConfiguration, message)
        })
    }

    /// The `sendEncodings` of the broadcast's video for `layers`: one per
    /// layer the canvas can make, lowest first with rids `low`/`mid`/`high`
    /// (`low`/`high` for two), each scaled down from `maxResolution`. Empty
    /// for fewer than two: then the browser's one encoding is sent, capped
    /// at `maxBitrate` and `maxFramerate` as without simulcast.
    pub fn encodings(&self, layers: Vec<LayerConfig>) -> Vec<Encoding> {
        let video = VideoConfig { max_bitrate_kbps: self.max_bitrate_kbps, max_framerate: self.max_framerate, layers };
        let encodings = simulcast::encodings(&video, Some((self.width, self.height)));
        if encodings.len() < 2 {
            return Vec::new();
        }
        encodings
    }
}

/// IVS: the stream key must be non-empty and match `[A-Za-z0-9_-]`.
pub fn check_stream_key(key: &str) -> Result<(), BroadcastError> {
    if key.is_empty() {
        return Err(BroadcastError::new(
            BroadcastErrorCode::InvalidStreamKey,
            "the stream key is empty",
        ));
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(BroadcastError::new(
            BroadcastErrorCode::StreamKeyInvalidChar,
            "the stream key may only contain A-Z, a-z, 0-9, '_' and '-'",
        ));
    }
    Ok(())
}

/// A `VideoComposition` as given by the app (missing fields are `None`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CompositionInput {
    pub index: Option<f64>,
    pub x: Option<f64>,
    pub y: Option<f64>,
    pub width: Option<f64>,
    pub height: Option<f64>,
}

/// A resolved composition: z-order and box.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Composition {
    pub index: i32,
    pub rect: Rect,
}

impl CompositionInput {
    /// IVS defaults: missing x/y are 0, missing width/height the full
    /// canvas, missing index 0. Non-finite or negative sizes are refused.
    pub fn resolve(&self, canvas_w: f64, canvas_h: f64) -> Result<Composition, String> {
        let finite = |v: Option<f64>, name: &str| match v {
            Some(v) if !v.is_finite() => Err(format!("composition.{name} must be a finite number")),
            other => Ok(other),
        };
        let index = finite(self.index, "index")?.unwrap_or(0.0);
        let x = finite(self.x, "x")?.unwrap_or(0.0);
        let y = finite(self.y, "y")?.unwrap_or(0.0);
        let width = finite(self.width, "width")?.unwrap_or(canvas_w);
        let height = finite(self.height, "height")?.unwrap_or(canvas_h);
        if width < 0.0 || height < 0.0 {
            return Err("composition width/height must not be negative".into());
        }
        Ok(Composition {
            index: index.clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32,
            rect: Rect {
                x,
                y,
                width,
                height,
            },
        })
    }
}

/// Orders codec MIME types so `preferred` (e.g. `video/H264`) come first,
/// keeping the browser's order otherwise. Returns indices into `mimes`.
pub fn prefer_codec(mimes: &[String], preferred: &str) -> Vec<usize> {
    let matches = |i: &usize| mimes[*i].eq_ignore_ascii_case(preferred);
    let (mut order, rest): (Vec<usize>, Vec<usize>) = (0..mimes.len()).partition(matches);
    order.extend(rest);
    order
}

/// Compose-time and frame-rate statistics over a sliding window.
#[derive(Debug, Clone, Default)]
pub struct ComposeStats {
    pub frames: u64,
    /// The last `WINDOW` frames: (composed at ms, took ms), a ring.
    ring: Vec<(f64, f64)>,
    next: usize,
}

impl ComposeStats {
    /// Enough for 5 s at 60 fps (fps needs the last second).
    const WINDOW: usize = 300;

    /// Records a frame composed at `now_ms` that took `took_ms`.
    pub fn record(&mut self, now_ms: f64, took_ms: f64) {
        self.frames += 1;
        if self.ring.len() < Self::WINDOW {
            self.ring.push((now_ms, took_ms));
        } else {
            self.ring[self.next] = (now_ms, took_ms);
        }
        self.next = (self.next + 1) % Self::WINDOW;
    }

    /// Frames composed in the second before `now_ms`.
    pub fn fps(&self, now_ms: f64) -> f64 {
        self.ring
            .iter()
            .filter(|(t, _)| now_ms - *t <= 1000.0)
            .count() as f64
    }

    fn durations(&self) -> Vec<f64> {
        self.ring.iter().map(|(_, d)| *d).collect()
    }

    /// The 95th percentile compose time (ms) of the window.
    pub fn p95_ms(&self) -> f64 {
        percentile(&self.durations(), 0.95)
    }

    /// The mean compose time (ms) of the window.
    pub fn mean_ms(&self) -> f64 {
        if self.ring.is_empty() {
            return 0.0;
        }
        self.ring.iter().map(|(_, d)| d).sum::<f64>() / self.ring.len() as f64
    }
}

/// Nearest-rank percentile; 0 for no samples.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    // Insertion sort (≤ 300 samples, on demand): keeps the standard
    // library's sort out of the wasm.
    let mut v = samples.to_vec();
    for i in 1..v.len() {
        let mut j = i;
        while j > 0 && v[j - 1] > v[j] {
            v.swap(j - 1, j);
            j -= 1;
        }
    }
    let rank = (p * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_match_ivs() {
        let basic = PRESETS[0].1;
        assert_eq!(PRESETS[0].0, "BASIC_LANDSCAPE");
        assert_eq!(
            (
                basic.width,
                basic.height,
                basic.max_framerate,
                basic.max_bitrate_kbps
            ),
            (852, 480, 30, 1500)
        );
        for (name, p) in PRESETS {
            assert!(p.validate().is_ok(), "{name}");
        }
        assert_eq!(PRESETS[5].1.max_bitrate_kbps, 8500);
    }

    #[test]
    fn stream_config_limits() {
        let base = StreamConfig::default();
        let bad = [
            StreamConfig { width: 100, ..base },
            StreamConfig {
                max_framerate: 61,
                ..base
            },
            StreamConfig {
                max_bitrate_kbps: 9000,
                ..base
            },
        ];
        for c in bad {
            assert_eq!(
                c.validate().map_err(|e| e.code),
                Err(BroadcastErrorCode::StreamConfiguration),
                "{c:?}"
            );
        }
        let c = StreamConfig {
            width: 1280,
            height: 720,
            max_framerate: 30,
            max_bitrate_kbps: 2500,
        };
        assert!(c.validate().is_ok());
    }

    #[test]
    fn stream_keys() {
        assert!(check_stream_key("sk_us-west-2_abc123").is_ok());
        assert_eq!(
            check_stream_key("").map_err(|e| e.code),
            Err(BroadcastErrorCode::InvalidStreamKey)
        );
        assert_eq!(
            check_stream_key("a b").map_err(|e| e.code),
            Err(BroadcastErrorCode::StreamKeyInvalidChar)
        );
    }

    #[test]
    fn composition_defaults() {
        let c = CompositionInput {
            index: Some(2.0),
            ..Default::default()
        }
        .resolve(852.0, 480.0)
        .expect("valid");
        assert_eq!(c.index, 2);
        assert_eq!(
            c.rect,
            Rect {
                x: 0.0,
                y: 0.0,
                width: 852.0,
                height: 480.0
            }
        );
        let bad = CompositionInput {
            width: Some(f64::NAN),
            ..Default::default()
        };
        assert!(bad.resolve(852.0, 480.0).is_err());
    }

    #[test]
    fn codec_preference_puts_h264_first() {
        let mimes: Vec<String> = [
            "video/VP8",
            "video/rtx",
            "video/H264",
            "video/VP9",
            "video/H264",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(prefer_codec(&mimes, "video/H264"), vec![2, 4, 0, 1, 3]);
    }

    fn layers(config: &StreamConfig, text: &str) -> Result<Vec<LayerConfig>, BroadcastError> {
        config.simulcast_layers(Some(text))
    }

    fn summary(e: &[Encoding]) -> Vec<(Option<&str>, f64, u32, u32)> {
        e.iter().map(|e| (e.rid, e.scale_down_by, e.max_bitrate_bps / 1000, e.max_framerate)).collect()
    }

    #[test]
    fn without_simulcast_the_one_encoding_of_today() -> Result<(), BroadcastError> {
        let c = StreamConfig::default();
        assert_eq!(c.simulcast_layers(None)?, vec![]);
        for off in ["null", "{}", r#"{"enabled":false,"layers":[]}"#] {
            assert_eq!(layers(&c, off)?, vec![], "{off}");
        }
        assert_eq!(c.encodings(Vec::new()), vec![]);
        Ok(())
    }

    #[test]
    fn the_default_ladder_follows_the_stream_config() -> Result<(), BroadcastError> {
        let on = r#"{"enabled":true}"#;
        // 852×480: a quarter (213×120) is too small, so two layers.
        let basic = StreamConfig::default();
        let l = layers(&basic, on)?;
        assert_eq!(l.iter().map(|l| (l.width, l.height, l.max_bitrate_kbps, l.max_framerate)).collect::<Vec<_>>(),
            vec![(426, 240, 450, 30), (852, 480, 1500, 30)]);
        assert_eq!(summary(&basic.encodings(l)), vec![(Some("low"), 2.0, 450, 30), (Some("high"), 1.0, 1500, 30)]);
        // 1080p: three layers, the top last.
        let hd = PRESETS[2].1;
        assert_eq!(
            summary(&hd.encodings(layers(&hd, on)?)),
            vec![(Some("low"), 4.0, 350, 30), (Some("mid"), 2.0, 1050, 30), (Some("high"), 1.0, 3500, 30)]
        );
        let portrait = PRESETS[5].1;
        let l = layers(&portrait, on)?;
        assert_eq!(l.iter().map(|l| (l.width, l.height)).collect::<Vec<_>>(), vec![(270, 480), (540, 960), (1080, 1920)]);
        // Low bitrates: never under 150 kbps, never over the top.
        let slow = StreamConfig { width: 1280, height: 720, max_framerate: 24, max_bitrate_kbps: 400 };
        assert_eq!(summary(&slow.encodings(layers(&slow, on)?)),
            vec![(Some("low"), 4.0, 150, 24), (Some("mid"), 2.0, 150, 24), (Some("high"), 1.0, 400, 24)]);
        let tiny = StreamConfig { max_bitrate_kbps: 200, ..slow };
        assert!(tiny.default_ladder().iter().all(|l| l.max_bitrate_kbps <= 200));
        // 320×180: one layer, so no simulcast at all.
        let small = StreamConfig { width: 320, height: 180, ..basic };
        assert_eq!(layers(&small, on)?.len(), 1);
        assert_eq!(small.encodings(layers(&small, on)?), vec![]);
        Ok(())
    }

    #[test]
    fn custom_layers_fit_in_the_stream_config() -> Result<(), BroadcastError> {
        let hd = PRESETS[2].1;
        let l = layers(&hd, r#"{"enabled":true,"layers":[
            {"width":1280,"height":720,"maxBitrate":2500,"maxFramerate":30},
            {"width":640,"height":360,"maxBitrate":800,"maxFramerate":30}]}"#)?;
        assert_eq!(summary(&hd.encodings(l)), vec![(Some("low"), 3.0, 800, 30), (Some("high"), 1.5, 2500, 30)]);
        let bad = |text: &str| layers(&hd, text).map_err(|e| (e.code, e.message));
        let code = BroadcastErrorCode::StreamConfiguration;
        let one = |w: u32, kbps: u32, fps: u32| {
            format!(r#"{{"enabled":true,"layers":[{{"width":{w},"height":360,"maxBitrate":{kbps},"maxFramerate":{fps}}}]}}"#)
        };
        assert!(bad(&one(640, 800, 30)).is_ok());
        let range = |field: &str, min, max| Err((code, format!("streamConfig.simulcast.layers: {field} must be a whole number from {min} to {max}")));
        assert_eq!(bad(&one(1921, 800, 30)), range("width", 160, 1920));
        assert_eq!(bad(&one(640, 3501, 30)), range("maxBitrate", 100, 3500));
        assert_eq!(bad(&one(640, 99, 30)), range("maxBitrate", 100, 3500));
        assert_eq!(bad(&one(640, 800, 31)), range("maxFramerate", 10, 30));
        // The stage's field name is not this one.
        let stage_style = r#"{"enabled":true,"layers":[{"width":640,"height":360,"maxBitrateKbps":800,"maxFramerate":30}]}"#;
        assert_eq!(bad(stage_style), range("maxBitrate", 100, 3500));
        for (text, says) in [
            ("true", "streamConfig: simulcast must be an object {enabled, layers?}"),
            (r#"{"enabled":"yes"}"#, "simulcast.enabled must be a boolean"),
            (r#"{"enabled":true,"layers":[]}"#, "1 to 3 layers"),
            (r#"{"enabled":true,"layers":{}}"#, "1 to 3 layers"),
        ] {
            let Err((c, message)) = bad(text) else { panic!("{text} was accepted") };
            assert_eq!(c, code);
            assert!(message.contains(says), "{text}: {message}");
        }
        let two = one(640, 800, 30).replace("}]}", "},{\"width\":640,\"height\":360,\"maxBitrate\":500,\"maxFramerate\":30}]}");
        assert_eq!(bad(&two).map_err(|(_, m)| m), Err("streamConfig: simulcast layers must differ in size".to_owned()));
        Ok(())
    }

    #[test]
    fn stats_p95_and_fps() {
        let mut s = ComposeStats::default();
        for i in 0..100 {
            s.record(i as f64 * 33.3, if i < 95 { 1.0 } else { 10.0 });
        }
        assert_eq!(s.frames, 100);
        assert_eq!(s.p95_ms(), 1.0);
        let now = 99.0 * 33.3;
        assert!((s.fps(now) - 31.0).abs() <= 1.0, "{}", s.fps(now));
        assert_eq!(percentile(&[], 0.95), 0.0);
        assert_eq!(percentile(&[5.0], 0.95), 5.0);
    }
}
