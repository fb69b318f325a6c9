//! A subscribed video stream's simulcast layers, as the SFU measures them.
//!
//! The subscribe response links the session's layer controls (`Link: <url>;
//! rel="urn:ietf:params:whep:ext:core:layer"`). `GET url` answers
//! `{"layers":[{rid,width,height,bitrateBps,framesPerSecond}], "selected":
//! rid|null, "adapting": bool}` (lowest first); `POST url {"rid": rid|null}`
//! pins a layer (`null`: the server adapts). The session polls it every
//! [`POLL_MS`] while the app has the stream, diffs each answer into
//! `stageStreamLayersChanged` / `stageStreamLayerSelected` /
//! `stageStreamAdaptionChanged`, and asks `preferredLayerForStream` again
//! on `refreshStrategy()` and whenever the layers change.

use super::json::{self, Fields, Value};

/// How often a subscribed video stream's layers are read.
pub const POLL_MS: f64 = 2_000.0;
/// The `rel` of WHEP's layer-controls link.
pub const LAYER_REL: &str = "urn:ietf:params:whep:ext:core:layer";

/// One layer (IVS `StageStreamLayer`, `label` being the rid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub label: String,
    pub width: u32,
    pub height: u32,
    pub bitrate_bps: u32,
    pub frames_per_second: u32,
}

/// What the SFU says of one subscription's layers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerState {
    /// Lowest first.
    pub layers: Vec<Layer>,
    /// The label of the layer being forwarded.
    pub selected: Option<String>,
    /// The server is picking the layer from the subscriber's bandwidth.
    pub adapting: bool,
}

impl LayerState {
    /// The layer being forwarded.
    pub fn selected_layer(&self) -> Option<&Layer> {
        let label = self.selected.as_deref()?;
        self.layers.iter().find(|l| l.label == label)
    }
}

/// A measured number: an integer, a fraction counting as 0 (the SDK's JSON
/// reader keeps no fractions), absent as 0.
fn measured(f: &Fields, key: &str) -> Option<u32> {
    match f.0.get(key) {
        None | Some(Value::Null | Value::Num) => Some(0),
        Some(Value::Int(n)) => Some((*n).clamp(0, i128::from(u32::MAX)) as u32),
        Some(_) => None,
    }
}

/// Reads a layer-controls `GET` answer; `None` when malformed.
pub fn parse_layer_state(text: &str) -> Option<LayerState> {
    let doc = json::parse(text.as_bytes())?;
    let f = Fields::of(&doc)?;
    let layers = f
        .opt_arr("layers")?
        .iter()
        .map(|v| {
            let l = Fields::of(v)?;
            Some(Layer {
                label: l.req_str("rid")?,
                width: measured(&l, "width")?,
                height: measured(&l, "height")?,
                bitrate_bps: measured(&l, "bitrateBps")?,
                frames_per_second: measured(&l, "framesPerSecond")?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(LayerState {
        layers,
        selected: f.opt_nullable_str("selected")?,
        adapting: f.opt_bool("adapting")?,
    })
}

/// What changed between two answers, in the order the events go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerChange {
    /// Layers came or went, or one's resolution changed (measured bitrate
    /// and frame rate move all the time: they update silently).
    Layers,
    /// Another layer is forwarded (`selected`), or none (`unavailable`).
    Selected,
    Adaption,
}

/// `preferredLayerForStream`'s answer: a label (from a layer object or a
/// string), or `None` (null / undefined: the server adapts).
pub type Preference = Option<String>;

/// One subscribed video stream's layers and what was asked of the server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RemoteLayers {
    pub state: LayerState,
    /// The rid last POSTed (`None`: adaptive, as every session starts).
    asked: Option<String>,
    /// The next `GET`; `None` while not polling.
    poll_at: Option<f64>,
}

impl RemoteLayers {
    /// The stream reached the app: read its layers at once.
    pub fn start(&mut self, now: f64) {
        *self = RemoteLayers {
            poll_at: Some(now),
            ..RemoteLayers::default()
        };
    }

    /// The app no longer has the stream: stop polling, forget everything.
    pub fn stop(&mut self) {
        *self = RemoteLayers::default();
    }

    pub fn deadline(&self) -> Option<f64> {
        self.poll_at
    }

    /// Whether a `GET` is due at `now` (and schedules the next one).
    pub fn due(&mut self, now: f64) -> bool {
        match self.poll_at {
            Some(t) if t <= now => {
                self.poll_at = Some(now + POLL_MS);
                true
            }
            _ => false,
        }
    }

    /// Takes a `GET` answer; returns what changed.
    pub fn update(&mut self, next: LayerState) -> Vec<LayerChange> {
        if self.poll_at.is_none() {
            return Vec::new();
        }
        let shape = |s: &LayerState| -> Vec<(String, u32, u32)> {
            s.layers.iter().map(|l| (l.label.clone(), l.width, l.height)).collect()
        };
        let mut changes = Vec::new();
        if shape(&self.state) != shape(&next) {
            changes.push(LayerChange::Layers);
        }
        if self.state.selected != next.selected {
            changes.push(LayerChange::Selected);
        }
        if self.state.adapting != next.adapting {
            changes.push(LayerChange::Adaption);
        }
        self.state = next;
        changes
    }

    /// Takes the strategy's preference; returns the rid to POST when it
    /// differs from what was asked last (`Some(None)`: adapt again). A label
    /// the stream does not have counts as no preference.
    pub fn prefer(&mut self, preference: Preference) -> Option<Option<String>> {
        let rid = preference.filter(|label| self.state.layers.iter().any(|l| &l.label == label));
        if self.poll_at.is_none() || rid == self.asked {
            return None;
        }
        self.asked = rid.clone();
        Some(rid)
    }
}

/// The `?layer=` of a subscribe request, from `subscribeConfiguration(p)
/// .simulcast.initialLayerPreference` (IVS: `lowest_quality`, the default,
/// or `highest_quality`).
pub fn initial_layer_query(preference: Option<&str>) -> &'static str {
    match preference {
        Some("highest_quality") => "highest",
        _ => "lowest",
    }
}

/// The body of a layer-controls `POST`.
pub fn select_body(rid: Option<&str>) -> String {
    let mut out = "{\"rid\":".to_owned();
    match rid {
        Some(rid) => super::chat::push_str(&mut out, rid),
        None => out.push_str("null"),
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(label: &str, width: u32, height: u32) -> Layer {
        Layer { label: label.into(), width, height, bitrate_bps: 100_000, frames_per_second: 15 }
    }

    fn state(layers: Vec<Layer>, selected: Option<&str>, adapting: bool) -> LayerState {
        LayerState { layers, selected: selected.map(Into::into), adapting }
    }

    #[test]
    fn parses_the_layer_controls_answer() {
        let text = r#"{"layers":[{"rid":"low","width":320,"height":180,"bitrateBps":190000,"framesPerSecond":15},
            {"rid":"high","width":640,"height":360,"bitrateBps":1200000,"framesPerSecond":29.5}],
            "selected":"high","adapting":true,"extra":1}"#;
        let s = parse_layer_state(text).expect("parses");
        assert_eq!(s.layers.len(), 2);
        assert_eq!(s.layers[0], Layer { bitrate_bps: 190_000, ..l("low", 320, 180) });
        assert_eq!(s.layers[1].frames_per_second, 0, "a fraction reads as unknown");
        assert_eq!(s.selected_layer().map(|l| l.width), Some(640));
        assert!(s.adapting);
        let empty = parse_layer_state(r#"{"layers":[],"selected":null,"adapting":false}"#);
        assert_eq!(empty, Some(LayerState::default()));
        assert_eq!(parse_layer_state(r#"{"layers":[{"width":1}]}"#), None);
        assert_eq!(parse_layer_state(r#"{"selected":3}"#), None);
        assert_eq!(parse_layer_state("nope"), None);
    }

    #[test]
    fn answers_diff_into_changes() {
        let mut r = RemoteLayers::default();
        let two = vec![l("low", 320, 180), l("high", 640, 360)];
        // Not polling: nothing is reported.
        assert_eq!(r.update(state(two.clone(), Some("low"), true)), vec![]);
        r.start(0.0);
        assert_eq!(
            r.update(state(two.clone(), Some("low"), true)),
            vec![LayerChange::Layers, LayerChange::Selected, LayerChange::Adaption]
        );
        // Measured numbers move: silent, but kept.
        let busier = vec![Layer { bitrate_bps: 150_000, ..l("low", 320, 180) }, l("high", 640, 360)];
        assert_eq!(r.update(state(busier, Some("low"), true)), vec![]);
        assert_eq!(r.state.layers[0].bitrate_bps, 150_000);
        assert_eq!(r.update(state(two.clone(), Some("high"), true)), vec![LayerChange::Selected]);
        assert_eq!(r.update(state(two.clone(), None, false)), vec![LayerChange::Selected, LayerChange::Adaption]);
        // The encoder shrank the top layer.
        let shrunk = vec![l("low", 320, 180), l("high", 480, 270)];
        assert_eq!(r.update(state(shrunk, None, false)), vec![LayerChange::Layers]);
        r.stop();
        assert_eq!(r.state, LayerState::default());
        assert_eq!(r.deadline(), None);
    }

    #[test]
    fn polls_every_two_seconds_while_started() {
        let mut r = RemoteLayers::default();
        assert!(!r.due(0.0));
        r.start(100.0);
        assert!(r.due(100.0));
        assert!(!r.due(2_000.0));
        assert_eq!(r.deadline(), Some(2_100.0));
        assert!(r.due(2_100.0));
    }

    #[test]
    fn preferences_resolve_to_known_labels_and_post_on_change() {
        let mut r = RemoteLayers::default();
        r.start(0.0);
        // Before any layer is known, a label is no preference: nothing to ask.
        assert_eq!(r.prefer(Some("low".into())), None);
        r.update(state(vec![l("low", 320, 180), l("high", 640, 360)], Some("high"), true));
        assert_eq!(r.prefer(Some("low".into())), Some(Some("low".into())));
        assert_eq!(r.prefer(Some("low".into())), None, "unchanged: no POST");
        assert_eq!(r.prefer(Some("mid".into())), Some(None), "unknown label: adaptive");
        assert_eq!(r.prefer(None), None);
        assert_eq!(r.prefer(Some("high".into())), Some(Some("high".into())));
        assert_eq!(r.prefer(None), Some(None), "null: the server adapts again");
        r.stop();
        assert_eq!(r.prefer(Some("high".into())), None, "not subscribed: nothing to ask");
    }

    #[test]
    fn initial_preference_and_bodies() {
        assert_eq!(initial_layer_query(None), "lowest");
        assert_eq!(initial_layer_query(Some("lowest_quality")), "lowest");
        assert_eq!(initial_layer_query(Some("highest_quality")), "highest");
        assert_eq!(initial_layer_query(Some("whatever")), "lowest");
        assert_eq!(select_body(Some("low")), r#"{"rid":"low"}"#);
        assert_eq!(select_body(Some("a\"b")), r#"{"rid":"a\"b"}"#);
        assert_eq!(select_body(None), r#"{"rid":null}"#);
    }
}
