//! Canvas 2D compositor (as IVS does it): every frame, black background,
//! then each source aspect-fitted and centred in its box, in `index`
//! order; a layer given a name label (`autoLayout`'s `nameLabels`) has it
//! drawn over its picture where [`name_label`] puts it. The output is
//! `canvas.captureStream(0)` with one `requestFrame()` per composed frame,
//! so the video track is created once and lives as long as the compositor.
//! `requestFrame` is on the track (CanvasCaptureMediaStreamTrack, Chromium
//! and Safari) or on the stream (CanvasCaptureMediaStream, Firefox):
//! whichever has it is asked.

use crate::core::broadcast::{ComposeStats, Composition};
use crate::core::layout::{aspect_fit, label_font_px, name_label, visible_layers, Rect};
use wasm_bindgen::prelude::*;
use web_sys::{
    CanvasRenderingContext2d, HtmlCanvasElement, HtmlImageElement, HtmlVideoElement, MediaStream,
    MediaStreamTrack,
};

#[wasm_bindgen]
extern "C" {
    /// A 2D context, seen only through its `drawImage`.
    type AnyDraw;

    /// `drawImage` with any `CanvasImageSource` (video, image, canvas,
    /// ImageBitmap, VideoFrame); throws for anything else.
    #[wasm_bindgen(method, catch, js_name = drawImage)]
    fn draw_any(
        this: &AnyDraw,
        image: &JsValue,
        dx: f64,
        dy: f64,
        dw: f64,
        dh: f64,
    ) -> Result<(), JsValue>;

    /// A canvas capture track or stream, seen only through its `requestFrame`.
    type FrameRequester;

    #[wasm_bindgen(method, catch, js_name = requestFrame)]
    fn request_frame(this: &FrameRequester) -> Result<(), JsValue>;
}

/// Why the compositor could not be created.
#[derive(Debug, Clone, thiserror::Error)]
#[error("compositor: {0}")]
pub struct CompositorError(pub String);

fn err(e: JsValue) -> CompositorError {
    CompositorError(super::js_error_text(&e))
}

/// What is drawn for one source.
#[derive(Clone)]
pub enum Picture {
    /// A hidden `<video>` playing a `MediaStream` (video input devices).
    Video(HtmlVideoElement),
    Image(HtmlImageElement),
    Canvas(HtmlCanvasElement),
    /// Anything else `drawImage` accepts (ImageBitmap, OffscreenCanvas…);
    /// its size is read from `width`/`height`.
    Other(JsValue),
}

impl Picture {
    /// The picture's intrinsic size, or `None` while it has no frame.
    fn size(&self) -> Option<(f64, f64)> {
        let (w, h) = match self {
            // HAVE_CURRENT_DATA: a frame can be drawn.
            Picture::Video(v) if v.ready_state() >= 2 => (v.video_width(), v.video_height()),
            Picture::Video(_) => return None,
            Picture::Image(i) if i.complete() => (i.natural_width(), i.natural_height()),
            Picture::Image(_) => return None,
            Picture::Canvas(c) => (c.width(), c.height()),
            Picture::Other(v) => {
                let num = |k: &str| {
                    js_sys::Reflect::get(v, &JsValue::from_str(k))
                        .ok()
                        .and_then(|x| x.as_f64())
                        .unwrap_or(0.0)
                };
                return Some((num("width"), num("height"))).filter(|(w, h)| *w > 0.0 && *h > 0.0);
            }
        };
        (w > 0 && h > 0).then_some((f64::from(w), f64::from(h)))
    }

    fn as_js(&self) -> &JsValue {
        match self {
            Picture::Video(v) => v.as_ref(),
            Picture::Image(i) => i.as_ref(),
            Picture::Canvas(c) => c.as_ref(),
            Picture::Other(v) => v,
        }
    }

    /// Wraps a user-supplied image source.
    pub fn from_js(value: JsValue) -> Picture {
        if let Some(v) = value.dyn_ref::<HtmlVideoElement>() {
            return Picture::Video(v.clone());
        }
        if let Some(i) = value.dyn_ref::<HtmlImageElement>() {
            return Picture::Image(i.clone());
        }
        match value.dyn_into::<HtmlCanvasElement>() {
            Ok(c) => Picture::Canvas(c),
            Err(v) => Picture::Other(v),
        }
    }
}

/// A hidden, muted, autoplaying `<video>` for a `MediaStream`.
pub fn hidden_video(stream: &MediaStream) -> Result<HtmlVideoElement, CompositorError> {
    let doc = super::document().map_err(err)?;
    let video: HtmlVideoElement = doc
        .create_element("video")
        .map_err(err)?
        .dyn_into()
        .map_err(|_| CompositorError("not a video element".into()))?;
    video.set_muted(true);
    video.set_autoplay(true);
    let _ = video.set_attribute("playsinline", "");
    video.set_src_object(Some(stream));
    // Autoplay of a muted video is always allowed; the promise may still
    // reject if the element is torn down first.
    if let Ok(p) = video.play() {
        super::ignore_rejection(p);
    }
    Ok(video)
}

/// Stops and detaches a hidden video created by [`hidden_video`].
pub fn release_video(video: &HtmlVideoElement) {
    let _ = video.pause();
    video.set_src_object(None);
}

struct Layer {
    name: String,
    picture: Picture,
    comp: Composition,
    /// Insertion order: ties in `index` keep the order sources were added.
    seq: u64,
    label: Option<LabelText>,
}

/// A layer's name label and what was measured of it (measured again only
/// when the font size changes).
struct LabelText {
    name: String,
    /// The font size, the CSS font, and the name's width in it.
    font: (f64, String, f64),
}

impl LabelText {
    fn draw(&mut self, ctx: &CanvasRenderingContext2d, pic: &Rect, later: &[(Option<Rect>, bool)]) {
        let Some(px) = label_font_px(pic) else {
            return;
        };
        if self.font.0 != px {
            // Whole pixels: formatting a float would link kilobytes of float printing.
            let css = format!("600 {}px sans-serif", px as u32);
            ctx.set_font(&css);
            let width = ctx.measure_text(&self.name).map_or(0.0, |m| m.width());
            self.font = (px, css, width);
        } else {
            ctx.set_font(&self.font.1);
        }
        let label = name_label(pic, px, self.font.2, later);
        let r = label.rect;
        ctx.set_fill_style_str("rgba(0,0,0,.6)");
        ctx.fill_rect(r.x, r.y, r.width, r.height);
        ctx.set_fill_style_str("#fff");
        ctx.set_text_align("left");
        ctx.set_text_baseline("middle");
        // A name wider than the tile allows is squeezed into it.
        let _ = ctx.fill_text_with_max_width(&self.name, label.text_x, label.text_y, label.max_text_width);
    }
}

fn key(l: &Layer) -> (i32, u64) {
    (l.comp.index, l.seq)
}

/// The compositing canvas, its output track and the layers drawn on it.
pub struct Compositor {
    canvas: HtmlCanvasElement,
    ctx: CanvasRenderingContext2d,
    track: MediaStreamTrack,
    /// The track, or its stream where only the stream has `requestFrame`.
    requester: FrameRequester,
    preview: Option<(HtmlCanvasElement, CanvasRenderingContext2d)>,
    layers: Vec<Layer>,
    next_seq: u64,
    /// Per frame, reused: each layer's drawn box and whether to draw it.
    boxes: Vec<(Option<Rect>, bool)>,
    draw: Vec<bool>,
    pub stats: ComposeStats,
    width: f64,
    height: f64,
}

fn context_2d(canvas: &HtmlCanvasElement) -> Result<CanvasRenderingContext2d, CompositorError> {
    // Opaque: the browser may skip alpha blending and clearing work.
    let opts = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&opts, &JsValue::from_str("alpha"), &JsValue::FALSE);
    canvas
        .get_context_with_context_options("2d", &opts)
        .map_err(err)?
        .ok_or_else(|| CompositorError("no 2d context".into()))?
        .dyn_into()
        .map_err(|_| CompositorError("not a 2d context".into()))
}

impl Compositor {
    pub fn new(width: u32, height: u32) -> Result<Compositor, CompositorError> {
        let doc = super::document().map_err(err)?;
        let canvas: HtmlCanvasElement = doc
            .create_element("canvas")
            .map_err(err)?
            .dyn_into()
            .map_err(|_| CompositorError("not a canvas".into()))?;
        canvas.set_width(width);
        canvas.set_height(height);
        let ctx = context_2d(&canvas)?;
        ctx.set_fill_style_str("#000");
        ctx.fill_rect(0.0, 0.0, f64::from(width), f64::from(height));
        // Frame rate 0: a frame is captured only on requestFrame().
        let stream = canvas
            .capture_stream_with_frame_request_rate(0.0)
            .map_err(err)?;
        let track: MediaStreamTrack = stream
            .get_video_tracks()
            .get(0)
            .dyn_into()
            .map_err(|_| CompositorError("captureStream gave no video track".into()))?;
        let has_request = |o: &JsValue| js_sys::Reflect::get(o, &JsValue::from_str("requestFrame")).is_ok_and(|f| f.is_function());
        let requester: FrameRequester = if has_request(track.as_ref()) {
            track.clone().unchecked_into()
        } else if has_request(stream.as_ref()) {
            stream.unchecked_into()
        } else {
            return Err(CompositorError("this browser cannot capture a canvas frame by frame".into()));
        };
        Ok(Compositor {
            canvas,
            ctx,
            track,
            requester,
            preview: None,
            layers: Vec::new(),
            next_seq: 0,
            boxes: Vec::new(),
            draw: Vec::new(),
            stats: ComposeStats::default(),
            width: f64::from(width),
            height: f64::from(height),
        })
    }

    pub fn size(&self) -> (f64, f64) {
        (self.width, self.height)
    }

    pub fn track(&self) -> &web_sys::MediaStreamTrack {
        &self.track
    }

    pub fn has(&self, name: &str) -> bool {
        self.layers.iter().any(|l| l.name == name)
    }

    pub fn len(&self) -> usize {
        self.layers.len()
    }

    pub fn add(&mut self, name: &str, picture: Picture, comp: Composition) {
        self.next_seq += 1;
        self.layers.push(Layer {
            name: name.to_owned(),
            picture,
            comp,
            seq: self.next_seq,
            label: None,
        });
        self.sort();
    }

    /// Draws `label` (`None`: nothing) over a layer's picture from the next
    /// frame on; false if there is no such layer.
    pub fn set_label(&mut self, name: &str, label: Option<&str>) -> bool {
        let Some(layer) = self.layers.iter_mut().find(|l| l.name == name) else {
            return false;
        };
        if layer.label.as_ref().map(|l| l.name.as_str()) != label {
            layer.label = label.map(|name| LabelText {
                name: name.to_owned(),
                font: (0.0, String::new(), 0.0),
            });
        }
        true
    }

    /// Removes a layer, returning its picture (to release a hidden video).
    pub fn remove(&mut self, name: &str) -> Option<Picture> {
        let i = self.layers.iter().position(|l| l.name == name)?;
        Some(self.layers.remove(i).picture)
    }

    pub fn composition(&self, name: &str) -> Option<Composition> {
        self.layers.iter().find(|l| l.name == name).map(|l| l.comp)
    }

    pub fn picture(&self, name: &str) -> Option<&Picture> {
        self.layers
            .iter()
            .find(|l| l.name == name)
            .map(|l| &l.picture)
    }

    /// Sets a layer's composition; false if there is no such layer.
    pub fn update(&mut self, name: &str, comp: Composition) -> bool {
        let Some(layer) = self.layers.iter_mut().find(|l| l.name == name) else {
            return false;
        };
        layer.comp = comp;
        self.sort();
        true
    }

    fn sort(&mut self) {
        // Insertion sort: a handful of layers, nearly always in order, and
        // it avoids linking the standard library's (large) sort into the wasm.
        for i in 1..self.layers.len() {
            let mut j = i;
            while j > 0 && key(&self.layers[j - 1]) > key(&self.layers[j]) {
                self.layers.swap(j - 1, j);
                j -= 1;
            }
        }
    }

    pub fn attach_preview(&mut self, canvas: HtmlCanvasElement) -> Result<(), CompositorError> {
        let ctx = context_2d(&canvas)?;
        self.preview = Some((canvas, ctx));
        Ok(())
    }

    pub fn detach_preview(&mut self) {
        self.preview = None;
    }

    /// Draws one frame and pushes it to the output track.
    pub fn compose(&mut self, now_ms: f64) {
        let (w, h) = (self.width, self.height);
        let ctx = &self.ctx;
        ctx.set_fill_style_str("#000");
        ctx.fill_rect(0.0, 0.0, w, h);
        self.boxes.clear();
        for layer in &self.layers {
            let drawn = layer
                .picture
                .size()
                .and_then(|(sw, sh)| aspect_fit(sw, sh, &layer.comp.rect));
            // A video frame paints its whole box; other sources may be transparent.
            let opaque = matches!(layer.picture, Picture::Video(_));
            self.boxes.push((drawn, opaque));
        }
        visible_layers(&self.boxes, &mut self.draw);
        for (i, (layer, draw)) in self.layers.iter_mut().zip(&self.draw).enumerate() {
            let (Some(r), true) = (self.boxes[i].0, draw) else {
                continue;
            };
            // A source torn down mid-frame throws; skip it this frame.
            let _ = ctx.unchecked_ref::<AnyDraw>().draw_any(
                layer.picture.as_js(),
                r.x,
                r.y,
                r.width,
                r.height,
            );
            if let Some(label) = &mut layer.label {
                label.draw(ctx, &r, &self.boxes[i + 1..]);
            }
        }
        // Throws only once the track has ended (the client is being deleted).
        let _ = self.requester.request_frame();
        if let Some((canvas, pctx)) = &self.preview {
            let (pw, ph) = (f64::from(canvas.width()), f64::from(canvas.height()));
            let _ =
                pctx.unchecked_ref::<AnyDraw>()
                    .draw_any(self.canvas.as_ref(), 0.0, 0.0, pw, ph);
        }
        let took = super::now_ms() - now_ms;
        self.stats.record(now_ms, took);
    }

    /// Stops the output track (the client is deleted).
    pub fn stop(&mut self) {
        self.track.stop();
        for layer in self.layers.drain(..) {
            if let Picture::Video(v) = &layer.picture {
                release_video(v);
            }
        }
        self.preview = None;
    }
}
