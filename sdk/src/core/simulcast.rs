//! A local video stream's encoder settings (IVS `StageVideoConfiguration`):
//! `maxBitrate` / `maxVideoBitrateKbps`, `maxFramerate` and `simulcast
//! {enabled, layers?}`, checked against IVS's limits, and the
//! `sendEncodings` they become for a track of a given size.
//!
//! Simulcast layers carry the rids the SFU knows, lowest first: `low`,
//! `mid`, `high` for three layers, `low`, `high` for two. Layers that a
//! small track would encode at the same size as a higher one are dropped
//! (a 640×360 camera with IVS's default layers sends 640×360 and 320×180);
//! one layer left is sent as a plain (non-simulcast) encoding.
//!
//! The broadcast client's `streamConfig.simulcast` goes through the same
//! reader ([`parse_layers`], with its own [`LayerRules`]) and [`encodings`].

use super::json::{self, Value};
use thiserror::Error;

/// IVS's stage limits (`STAGE_MIN/MAX_BITRATE`, framerate, resolution).
pub const BITRATE_KBPS: (u32, u32) = (50, 2500);
pub const FRAMERATE: (u32, u32) = (10, 30);
pub const RESOLUTION: (u32, u32) = (160, 1280);
/// At most this many simulcast layers.
pub const MAX_LAYERS: usize = 3;

/// One simulcast layer (IVS `SimulcastLocalLayerConfiguration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerConfig {
    pub width: u32,
    pub height: u32,
    pub max_bitrate_kbps: u32,
    pub max_framerate: u32,
}

const fn layer(width: u32, height: u32, max_bitrate_kbps: u32, max_framerate: u32) -> LayerConfig {
    LayerConfig { width, height, max_bitrate_kbps, max_framerate }
}

/// IVS's default layers, lowest first (LOW, MID, HI).
pub const DEFAULT_LAYERS: [LayerConfig; 3] =
    [layer(320, 180, 200, 15), layer(640, 360, 700, 20), layer(1280, 720, 2500, 30)];

/// A video stream's validated settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoConfig {
    pub max_bitrate_kbps: u32,
    pub max_framerate: u32,
    /// Simulcast layers, lowest first; empty without simulcast.
    pub layers: Vec<LayerConfig>,
}

impl Default for VideoConfig {
    fn default() -> Self {
        VideoConfig {
            max_bitrate_kbps: BITRATE_KBPS.1,
            max_framerate: FRAMERATE.1,
            layers: Vec::new(),
        }
    }
}

/// Why a `LocalStageStream` configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    #[error("the stream configuration must be an object")]
    NotAnObject,
    #[error("{field} must be a whole number from {min} to {max}")]
    OutOfRange { field: &'static str, min: u32, max: u32 },
    #[error("simulcast must be an object {{enabled, layers?}}")]
    Simulcast,
    #[error("simulcast.enabled must be a boolean")]
    Enabled,
    #[error("simulcast.layers must be an array of 1 to 3 layers")]
    LayerCount,
    #[error("simulcast layers must differ in size")]
    DuplicateLayer,
}

/// A number field within `range` (`None` when absent or `null`).
fn number(v: &Value, key: &'static str, range: (u32, u32)) -> Result<Option<u32>, ConfigError> {
    let bad = ConfigError::OutOfRange { field: key, min: range.0, max: range.1 };
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Int(n)) if (i128::from(range.0)..=i128::from(range.1)).contains(n) => Ok(Some(*n as u32)),
        Some(_) => Err(bad),
    }
}

/// What a simulcast layer's fields may hold (each a range), and the name
/// of its bitrate field (kbps).
#[derive(Debug, Clone, Copy)]
pub struct LayerRules {
    pub width: (u32, u32),
    pub height: (u32, u32),
    pub kbps: (u32, u32),
    pub fps: (u32, u32),
    pub kbps_key: &'static str,
}

/// IVS's stage layers.
const STAGE_RULES: LayerRules =
    LayerRules { width: RESOLUTION, height: RESOLUTION, kbps: BITRATE_KBPS, fps: FRAMERATE, kbps_key: "maxBitrateKbps" };

fn layer_config(v: &Value, rules: &LayerRules) -> Result<LayerConfig, ConfigError> {
    let req = |key, range| number(v, key, range)?.ok_or(ConfigError::OutOfRange { field: key, min: range.0, max: range.1 });
    Ok(LayerConfig {
        width: req("width", rules.width)?,
        height: req("height", rules.height)?,
        max_bitrate_kbps: req(rules.kbps_key, rules.kbps)?,
        max_framerate: req("maxFramerate", rules.fps)?,
    })
}

/// Reads `JSON.stringify(config)` of a video `LocalStageStream` (`None`,
/// `undefined` → defaults). `maxVideoBitrateKbps` wins over the older
/// `maxBitrate` (both kbps); audio fields are ignored.
pub fn parse_video_config(json_text: Option<&str>) -> Result<VideoConfig, ConfigError> {
    let mut config = VideoConfig::default();
    let Some(doc) = json_text.and_then(|t| json::parse(t.as_bytes())) else {
        return Ok(config);
    };
    if doc == Value::Null {
        return Ok(config);
    }
    doc.fields().ok_or(ConfigError::NotAnObject)?;
    let bitrate = number(&doc, "maxVideoBitrateKbps", BITRATE_KBPS)?;
    if let Some(kbps) = bitrate.or(number(&doc, "maxBitrate", BITRATE_KBPS)?) {
        config.max_bitrate_kbps = kbps;
    }
    if let Some(fps) = number(&doc, "maxFramerate", FRAMERATE)? {
        config.max_framerate = fps;
    }
    config.layers = parse_layers(doc.get("simulcast"), &STAGE_RULES, &DEFAULT_LAYERS)?;
    Ok(config)
}

/// Reads `simulcast: {enabled, layers?}`: the layers to send, lowest
/// first, each within `rules`, or `defaults` when enabled without
/// `layers`; none when absent, `null` or not enabled.
pub fn parse_layers(
    sim: Option<&Value>,
    rules: &LayerRules,
    defaults: &[LayerConfig],
) -> Result<Vec<LayerConfig>, ConfigError> {
    let Some(sim) = sim.filter(|s| **s != Value::Null) else {
        return Ok(Vec::new());
    };
    sim.fields().ok_or(ConfigError::Simulcast)?;
    match sim.get("enabled") {
        Some(Value::Bool(true)) => {}
        None | Some(Value::Bool(false)) => return Ok(Vec::new()),
        Some(_) => return Err(ConfigError::Enabled),
    }
    let mut layers = match sim.get("layers") {
        None | Some(Value::Null) => defaults.to_vec(),
        Some(Value::Arr(items)) if (1..=MAX_LAYERS).contains(&items.len()) => {
            items.iter().map(|l| layer_config(l, rules)).collect::<Result<Vec<_>, _>>()?
        }
        Some(_) => return Err(ConfigError::LayerCount),
    };
    // Lowest first (no sort: it would link the standard library's sort).
    for i in 1..layers.len() {
        let mut j = i;
        while j > 0 && area(&layers[j]) < area(&layers[j - 1]) {
            layers.swap(j, j - 1);
            j -= 1;
        }
    }
    if layers.windows(2).any(|w| area(&w[0]) == area(&w[1])) {
        return Err(ConfigError::DuplicateLayer);
    }
    Ok(layers)
}

fn area(l: &LayerConfig) -> u32 {
    l.width * l.height
}

/// One entry of `sendEncodings`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Encoding {
    /// `None` for a single, non-simulcast encoding.
    pub rid: Option<&'static str>,
    /// `scaleResolutionDownBy` (≥ 1).
    pub scale_down_by: f64,
    pub max_bitrate_bps: u32,
    pub max_framerate: u32,
}

/// The rids of `n` layers, lowest first.
pub fn rids(n: usize) -> &'static [&'static str] {
    match n {
        0 | 1 => &["high"],
        2 => &["low", "high"],
        _ => &["low", "mid", "high"],
    }
}

/// The `sendEncodings` of a video track of `track` size (`None`: unknown,
/// taken as the top layer's size).
pub fn encodings(config: &VideoConfig, track: Option<(u32, u32)>) -> Vec<Encoding> {
    let top = config.layers.last();
    let (tw, th) = track
        .filter(|(w, h)| *w > 0 && *h > 0)
        .or(top.map(|l| (l.width, l.height)))
        .unwrap_or((0, 0));
    // Each layer's factor, and the size it encodes at (never upscaled).
    let scale = |l: &LayerConfig| (f64::from(tw) / f64::from(l.width)).max(f64::from(th) / f64::from(l.height)).max(1.0);
    let mut kept: Vec<(LayerConfig, f64)> = Vec::new();
    for l in config.layers.iter().rev() {
        let s = scale(l);
        // A layer no smaller than the one above it would only duplicate it.
        if kept.last().is_none_or(|(_, above)| s > above * 1.01) {
            kept.push((*l, s));
        }
    }
    kept.reverse();
    if kept.len() <= 1 {
        let (kbps, fps) = match kept.first() {
            Some((l, _)) => (l.max_bitrate_kbps.min(config.max_bitrate_kbps), l.max_framerate.min(config.max_framerate)),
            None => (config.max_bitrate_kbps, config.max_framerate),
        };
        return vec![Encoding { rid: None, scale_down_by: 1.0, max_bitrate_bps: kbps * 1000, max_framerate: fps }];
    }
    kept.iter()
        .zip(rids(kept.len()))
        .map(|((l, s), rid)| Encoding {
            rid: Some(rid),
            scale_down_by: *s,
            max_bitrate_bps: l.max_bitrate_kbps * 1000,
            max_framerate: l.max_framerate,
        })
        .collect()
}

/// Whether the encoding `rid` should be sent, after the SFU's
/// `PUBLISH_LAYERS {rids}` (the layers someone receives). An encoding
/// without a rid is not simulcast and always sent.
pub fn layer_active(rid: Option<&str>, wanted: &[String]) -> bool {
    rid.is_none_or(|rid| wanted.iter().any(|w| w == rid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<VideoConfig, ConfigError> {
        parse_video_config(Some(text))
    }

    #[test]
    fn defaults_without_a_config() -> Result<(), ConfigError> {
        assert_eq!(parse_video_config(None)?, VideoConfig::default());
        assert_eq!(parse("null")?, VideoConfig::default());
        assert_eq!(parse("{}")?.max_bitrate_kbps, 2500);
        assert_eq!(parse(r#"{"simulcast":{"enabled":false}}"#)?.layers, vec![]);
        Ok(())
    }

    #[test]
    fn simulcast_enabled_takes_the_ivs_default_layers() -> Result<(), ConfigError> {
        let c = parse(r#"{"simulcast":{"enabled":true}}"#)?;
        assert_eq!(c.layers, DEFAULT_LAYERS.to_vec());
        assert_eq!(c.layers[0], layer(320, 180, 200, 15));
        assert_eq!(c.layers[2], layer(1280, 720, 2500, 30));
        Ok(())
    }

    #[test]
    fn custom_layers_are_checked_and_sorted() -> Result<(), ConfigError> {
        let c = parse(
            r#"{"simulcast":{"enabled":true,"layers":[
                {"width":960,"height":540,"maxBitrateKbps":1400,"maxFramerate":15},
                {"width":284,"height":160,"maxBitrateKbps":120,"maxFramerate":15}]}}"#,
        )?;
        assert_eq!(c.layers, vec![layer(284, 160, 120, 15), layer(960, 540, 1400, 15)]);
        Ok(())
    }

    #[test]
    fn ivs_limits_are_errors() {
        let bad = |text: &str| parse(text).err();
        let range = |field, min, max| Some(ConfigError::OutOfRange { field, min, max });
        assert_eq!(bad(r#"{"maxBitrate":49}"#), range("maxBitrate", 50, 2500));
        assert_eq!(bad(r#"{"maxVideoBitrateKbps":2501}"#), range("maxVideoBitrateKbps", 50, 2500));
        assert_eq!(bad(r#"{"maxFramerate":31}"#), range("maxFramerate", 10, 30));
        assert_eq!(bad(r#"{"maxFramerate":"30"}"#), range("maxFramerate", 10, 30));
        assert_eq!(bad(r#"{"maxFramerate":29.97}"#), range("maxFramerate", 10, 30));
        assert_eq!(bad("[1]"), Some(ConfigError::NotAnObject));
        assert_eq!(bad(r#"{"simulcast":{"enabled":1}}"#), Some(ConfigError::Enabled));
        assert_eq!(bad(r#"{"simulcast":true}"#), Some(ConfigError::Simulcast));
        assert_eq!(bad(r#"{"simulcast":{"enabled":true,"layers":[]}}"#), Some(ConfigError::LayerCount));
        let four = r#"{"width":320,"height":180,"maxBitrateKbps":200,"maxFramerate":15}"#;
        let text = format!(r#"{{"simulcast":{{"enabled":true,"layers":[{four},{four},{four},{four}]}}}}"#);
        assert_eq!(bad(&text), Some(ConfigError::LayerCount));
        let text = format!(r#"{{"simulcast":{{"enabled":true,"layers":[{four},{four}]}}}}"#);
        assert_eq!(bad(&text), Some(ConfigError::DuplicateLayer));
        let small = r#"{"simulcast":{"enabled":true,"layers":[{"width":100,"height":180,"maxBitrateKbps":200,"maxFramerate":15}]}}"#;
        assert_eq!(bad(small), range("width", 160, 1280));
        let missing = r#"{"simulcast":{"enabled":true,"layers":[{"width":320,"height":180,"maxFramerate":15}]}}"#;
        assert_eq!(bad(missing), range("maxBitrateKbps", 50, 2500));
        assert!(ConfigError::LayerCount.to_string().contains("1 to 3"));
    }

    #[test]
    fn max_video_bitrate_wins_over_max_bitrate() -> Result<(), ConfigError> {
        let c = parse(r#"{"maxBitrate":1000,"maxVideoBitrateKbps":800,"maxFramerate":24}"#)?;
        assert_eq!((c.max_bitrate_kbps, c.max_framerate), (800, 24));
        assert_eq!(parse(r#"{"maxBitrate":1000}"#)?.max_bitrate_kbps, 1000);
        Ok(())
    }

    #[test]
    fn without_simulcast_one_encoding_with_the_caps() -> Result<(), ConfigError> {
        let c = parse(r#"{"maxBitrate":900,"maxFramerate":20}"#)?;
        let e = encodings(&c, Some((1280, 720)));
        assert_eq!(e, vec![Encoding { rid: None, scale_down_by: 1.0, max_bitrate_bps: 900_000, max_framerate: 20 }]);
        Ok(())
    }

    #[test]
    fn a_720p_track_sends_three_layers_lowest_first() -> Result<(), ConfigError> {
        let c = parse(r#"{"simulcast":{"enabled":true}}"#)?;
        let e = encodings(&c, Some((1280, 720)));
        let got: Vec<_> = e.iter().map(|e| (e.rid, e.scale_down_by, e.max_bitrate_bps, e.max_framerate)).collect();
        assert_eq!(
            got,
            vec![
                (Some("low"), 4.0, 200_000, 15),
                (Some("mid"), 2.0, 700_000, 20),
                (Some("high"), 1.0, 2_500_000, 30)
            ]
        );
        // Unknown track size: the top layer's.
        assert_eq!(encodings(&c, None), e);
        Ok(())
    }

    #[test]
    fn a_small_track_drops_the_layers_it_would_duplicate() -> Result<(), ConfigError> {
        let c = parse(r#"{"simulcast":{"enabled":true}}"#)?;
        let e = encodings(&c, Some((640, 360)));
        let got: Vec<_> = e.iter().map(|e| (e.rid, e.scale_down_by, e.max_bitrate_bps)).collect();
        assert_eq!(got, vec![(Some("low"), 2.0, 200_000), (Some("high"), 1.0, 2_500_000)]);
        // 960×540: every layer smaller than the one above.
        let e = encodings(&c, Some((960, 540)));
        assert_eq!(e.iter().map(|e| e.scale_down_by).collect::<Vec<_>>(), vec![3.0, 1.5, 1.0]);
        // 320×180: one layer left, sent without simulcast, capped by both.
        let e = encodings(&c, Some((320, 180)));
        assert_eq!(e, vec![Encoding { rid: None, scale_down_by: 1.0, max_bitrate_bps: 2_500_000, max_framerate: 30 }]);
        Ok(())
    }

    #[test]
    fn publish_layers_switch_encodings() {
        let wanted = vec!["low".to_owned()];
        assert!(layer_active(Some("low"), &wanted));
        assert!(!layer_active(Some("high"), &wanted));
        assert!(!layer_active(Some("mid"), &[]));
        assert!(layer_active(None, &[]));
    }
}
