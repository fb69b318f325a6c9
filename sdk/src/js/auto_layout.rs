//! `autoLayout(client, stage, options?)` (beyond IVS): keeps a broadcast
//! client's composition in step with a stage. It listens through the
//! stage's public `on`/`off` API, so it sees participants and streams from
//! the moment it is attached; the package's `Stage` (sdk/npm/index.js)
//! replays the participants already there to a late `autoLayout`.
//!
//! Each participant with a stream gets a tile from the layout engine: an
//! avatar card (avatar image + name on a dark tile) underneath, and their
//! video on top while it is flowing; stopping video reveals the card. With
//! `nameLabels: true` the video carries the participant's name too, so
//! viewers can tell who is who.
//! Their audio goes to the mixer (muted → gain 0). Every event re-slots
//! synchronously, so the next composed frame already has the new layout.

use super::broadcast::{self, BroadcastClient};
use super::convert::type_error;
use crate::core::broadcast::{Composition, CompositionInput};
use crate::core::layout::{layout, LayoutMode, Slot};
use crate::web::compositor::Picture;
use js_sys::{Function, Reflect};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use web_sys::{
    CanvasRenderingContext2d, HtmlCanvasElement, HtmlImageElement, MediaStream, MediaStreamTrack,
    MediaStreamTrackState,
};

const CARD_W: u32 = 640;
const CARD_H: u32 = 360;

fn get(v: &JsValue, key: &str) -> JsValue {
    Reflect::get(v, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

fn get_str(v: &JsValue, key: &str) -> Option<String> {
    get(v, key).as_string().filter(|s| !s.is_empty())
}

/// The avatar card of a participant whose video is off (or not there yet).
struct Card {
    canvas: HtmlCanvasElement,
    _img: Option<HtmlImageElement>,
    _on_load: Option<Closure<dyn FnMut()>>,
}

fn draw_card(canvas: &HtmlCanvasElement, name: &str, img: Option<&HtmlImageElement>) {
    let Some(ctx) = canvas
        .get_context("2d")
        .ok()
        .flatten()
        .and_then(|c| c.dyn_into::<CanvasRenderingContext2d>().ok())
    else {
        return;
    };
    let (w, h) = (f64::from(canvas.width()), f64::from(canvas.height()));
    ctx.set_fill_style_str("#1c1f26");
    ctx.fill_rect(0.0, 0.0, w, h);
    let (cx, cy, r) = (w / 2.0, h * 0.42, h * 0.22);
    ctx.begin_path();
    let _ = ctx.arc(cx, cy, r, 0.0, std::f64::consts::TAU);
    let loaded = img.filter(|i| i.complete() && i.natural_width() > 0);
    match loaded {
        Some(img) => {
            ctx.save();
            ctx.clip();
            let _ = ctx.draw_image_with_html_image_element_and_dw_and_dh(
                img,
                cx - r,
                cy - r,
                2.0 * r,
                2.0 * r,
            );
            ctx.restore();
        }
        None => {
            ctx.set_fill_style_str("#3a4150");
            ctx.fill();
            // ASCII-only upper-casing: the Unicode tables would cost kilobytes.
            let initial: String = name
                .chars()
                .next()
                .map(|c| c.to_ascii_uppercase().to_string())
                .unwrap_or_default();
            ctx.set_fill_style_str("#fff");
            ctx.set_font(&format!("{}px sans-serif", (r * 0.9) as u32));
            ctx.set_text_align("center");
            ctx.set_text_baseline("middle");
            let _ = ctx.fill_text(&initial, cx, cy);
        }
    }
    ctx.set_fill_style_str("#fff");
    ctx.set_font(&format!("{}px sans-serif", (h * 0.08) as u32));
    ctx.set_text_align("center");
    ctx.set_text_baseline("middle");
    // A long name is squeezed into the card rather than cut off at its edges.
    let _ = ctx.fill_text_with_max_width(name, cx, h * 0.8, w * 0.9);
}

fn make_card(name: &str, avatar_url: Option<&str>) -> Option<Card> {
    let doc = crate::web::document().ok()?;
    let canvas: HtmlCanvasElement = doc.create_element("canvas").ok()?.dyn_into().ok()?;
    canvas.set_width(CARD_W);
    canvas.set_height(CARD_H);
    draw_card(&canvas, name, None);
    let (img, on_load) = match avatar_url.and_then(|_| HtmlImageElement::new().ok()) {
        Some(img) => {
            // Without CORS the image fails to load and the initial stays:
            // a cross-origin image would taint the broadcast canvas.
            img.set_cross_origin(Some("anonymous"));
            let (c, n, i) = (canvas.clone(), name.to_owned(), img.clone());
            let on_load = Closure::<dyn FnMut()>::new(move || draw_card(&c, &n, Some(&i)));
            img.set_onload(Some(on_load.as_ref().unchecked_ref()));
            img.set_src(avatar_url.unwrap_or_default());
            (Some(img), Some(on_load))
        }
        None => (None, None),
    };
    Some(Card {
        canvas,
        _img: img,
        _on_load: on_load,
    })
}

impl Drop for Card {
    fn drop(&mut self) {
        if let Some(img) = &self._img {
            img.set_onload(None);
        }
    }
}

struct Member {
    id: String,
    name: String,
    avatar_url: Option<String>,
    video: Option<MediaStreamTrack>,
    audio: Option<MediaStreamTrack>,
    video_stopped: bool,
    audio_muted: bool,
    card: Option<Card>,
    /// Track ids currently in the client (video layer, audio input).
    placed_video: Option<String>,
    placed_audio: Option<String>,
    placed_card: bool,
}

impl Member {
    fn shown(&self) -> bool {
        self.video.is_some() || self.audio.is_some()
    }

    fn video_live(&self) -> bool {
        !self.video_stopped
            && self
                .video
                .as_ref()
                .is_some_and(|t| t.ready_state() != MediaStreamTrackState::Ended)
    }
}

fn card_name(id: &str) -> String {
    format!("stagecast:card:{id}")
}
fn video_name(id: &str) -> String {
    format!("stagecast:video:{id}")
}
fn audio_name(id: &str) -> String {
    format!("stagecast:audio:{id}")
}

type Handler = Closure<dyn FnMut(JsValue, JsValue)>;
type EventFn = fn(&Inner, JsValue, JsValue);

struct St {
    client: Rc<broadcast::Inner>,
    stage: JsValue,
    members: Vec<Member>,
    mode: LayoutMode,
    featured: Option<String>,
    name_labels: bool,
    handlers: Vec<(&'static str, Handler)>,
    stopped: bool,
}

struct Inner {
    st: RefCell<St>,
}

/// The handle returned by `autoLayout()`.
#[wasm_bindgen]
pub struct AutoLayout {
    inner: Rc<Inner>,
}

fn parse_options(options: &JsValue) -> Result<(LayoutMode, Option<String>, bool), JsValue> {
    if !options.is_object() {
        return Ok((LayoutMode::Grid, None, false));
    }
    let mode = match get_str(options, "mode") {
        None => LayoutMode::Grid,
        Some(m) => LayoutMode::parse(&m)
            .ok_or_else(|| type_error("autoLayout: mode must be 'grid', 'pip' or 'versus'"))?,
    };
    Ok((mode, get_str(options, "featuredParticipantId"), get(options, "nameLabels").is_truthy()))
}

/// `autoLayout(client, stage, {mode?, featuredParticipantId?, nameLabels?})`.
#[wasm_bindgen(js_name = autoLayout)]
pub fn auto_layout(
    client: &BroadcastClient,
    stage: JsValue,
    options: JsValue,
) -> Result<AutoLayout, JsValue> {
    let on: Function = get(&stage, "on")
        .dyn_into()
        .map_err(|_| type_error("autoLayout: stage must have on()/off() (a Stage)"))?;
    let (mode, featured, name_labels) = parse_options(&options)?;
    let inner = Rc::new(Inner {
        st: RefCell::new(St {
            client: client.inner(),
            stage: stage.clone(),
            members: Vec::new(),
            mode,
            featured,
            name_labels,
            handlers: Vec::new(),
            stopped: false,
        }),
    });
    let events: [(&'static str, EventFn); 5] = [
        ("stageParticipantJoined", |i, p, _| i.on_joined(&p)),
        ("stageParticipantLeft", |i, p, _| i.on_left(&p)),
        ("stageParticipantStreamsAdded", |i, p, s| {
            i.on_streams(&p, &s, true)
        }),
        ("stageParticipantStreamsRemoved", |i, p, s| {
            i.on_streams(&p, &s, false)
        }),
        ("stageStreamMuteChanged", |i, p, s| i.on_mute(&p, &s)),
    ];
    // The handlers own the state (a cycle that `stop()` breaks), so the
    // layout keeps working even if the app drops the returned handle.
    let mut handlers = Vec::new();
    for (event, f) in events {
        let owner = inner.clone();
        let handler = Handler::new(move |a: JsValue, b: JsValue| f(&owner, a, b));
        on.call2(&stage, &JsValue::from_str(event), handler.as_ref())?;
        handlers.push((event, handler));
    }
    let owner = inner.clone();
    let left = Handler::new(move |_: JsValue, _: JsValue| owner.clear());
    on.call2(&stage, &JsValue::from_str("stageLeft"), left.as_ref())?;
    handlers.push(("stageLeft", left));
    inner.st.borrow_mut().handlers = handlers;
    Ok(AutoLayout { inner })
}

#[wasm_bindgen]
impl AutoLayout {
    /// Switches to `'grid'`, `'pip'` or `'versus'`; `featuredParticipantId`
    /// picks the big frame in pip (omit it to keep the current one).
    #[wasm_bindgen(js_name = setMode)]
    pub fn set_mode(&self, mode: JsValue, featured_participant_id: JsValue) -> Result<(), JsValue> {
        let mode = mode
            .as_string()
            .and_then(|m| LayoutMode::parse(&m))
            .ok_or_else(|| type_error("setMode: mode must be 'grid', 'pip' or 'versus'"))?;
        {
            let mut st = self.inner.st.borrow_mut();
            st.mode = mode;
            if let Some(id) = featured_participant_id.as_string() {
                st.featured = Some(id).filter(|s| !s.is_empty());
            }
        }
        self.inner.relayout();
        Ok(())
    }

    /// The current mode.
    #[wasm_bindgen(getter)]
    pub fn mode(&self) -> String {
        self.inner.st.borrow().mode.as_str().to_owned()
    }

    /// Ids of the participants with a tile, in tile order.
    #[wasm_bindgen(js_name = getParticipantIds)]
    pub fn participant_ids(&self) -> Vec<String> {
        self.inner
            .st
            .borrow()
            .members
            .iter()
            .filter(|m| m.shown())
            .map(|m| m.id.clone())
            .collect()
    }

    /// Removes the stage listeners and every source this helper added.
    pub fn stop(&self) {
        self.inner.stop();
    }
}

impl Inner {
    fn member_mut<'a>(st: &'a mut St, info: &JsValue) -> Option<&'a mut Member> {
        let id = get_str(info, "id")?;
        if st.stopped {
            return None;
        }
        if let Some(i) = st.members.iter().position(|m| m.id == id) {
            return Some(&mut st.members[i]);
        }
        let attrs = get(info, "attributes");
        let name = get_str(&attrs, "username")
            .or_else(|| get_str(info, "userId"))
            .unwrap_or_else(|| "Guest".to_owned());
        st.members.push(Member {
            id,
            name,
            avatar_url: get_str(&attrs, "avatarUrl"),
            video: None,
            audio: None,
            video_stopped: get(info, "videoStopped").is_truthy(),
            audio_muted: get(info, "audioMuted").is_truthy(),
            card: None,
            placed_video: None,
            placed_audio: None,
            placed_card: false,
        });
        st.members.last_mut()
    }

    fn on_joined(&self, info: &JsValue) {
        {
            let mut st = self.st.borrow_mut();
            if Self::member_mut(&mut st, info).is_none() {
                return;
            }
        }
        self.relayout();
    }

    fn on_left(&self, info: &JsValue) {
        let Some(id) = get_str(info, "id") else {
            return;
        };
        {
            let mut st = self.st.borrow_mut();
            let Some(i) = st.members.iter().position(|m| m.id == id) else {
                return;
            };
            let mut m = st.members.remove(i);
            Self::unplace(&st.client, &mut m);
        }
        self.relayout();
    }

    fn on_streams(&self, info: &JsValue, streams: &JsValue, added: bool) {
        {
            let mut st = self.st.borrow_mut();
            let Some(m) = Self::member_mut(&mut st, info) else {
                return;
            };
            if !js_sys::Array::is_array(streams) {
                return;
            }
            for s in js_sys::Array::from(streams).iter() {
                let Ok(track) = get(&s, "mediaStreamTrack").dyn_into::<MediaStreamTrack>() else {
                    continue;
                };
                let muted = get(&s, "isMuted").is_truthy();
                let slot = match track.kind().as_str() {
                    "video" => {
                        if added {
                            m.video_stopped = muted;
                        }
                        &mut m.video
                    }
                    "audio" => {
                        if added {
                            m.audio_muted = muted;
                        }
                        &mut m.audio
                    }
                    _ => continue,
                };
                if added {
                    *slot = Some(track);
                } else if slot.as_ref().is_some_and(|t| t.id() == track.id()) {
                    *slot = None;
                }
            }
        }
        self.relayout();
    }

    fn on_mute(&self, info: &JsValue, stream: &JsValue) {
        {
            let mut st = self.st.borrow_mut();
            let Some(m) = Self::member_mut(&mut st, info) else {
                return;
            };
            let muted = get(stream, "isMuted").is_truthy();
            match get_str(stream, "streamType").as_deref() {
                Some("video") => m.video_stopped = muted,
                Some("audio") => m.audio_muted = muted,
                _ => return,
            }
        }
        self.relayout();
    }

    /// Removes everything of `m` from the client.
    fn unplace(client: &broadcast::Inner, m: &mut Member) {
        if m.placed_video.take().is_some() {
            let _ = client.remove_layer(&video_name(&m.id), None);
        }
        if std::mem::take(&mut m.placed_card) {
            let _ = client.remove_layer(&card_name(&m.id), None);
        }
        if m.placed_audio.take().is_some() {
            let _ = client.remove_audio(&audio_name(&m.id));
        }
    }

    fn clear(&self) {
        let mut st = self.st.borrow_mut();
        let client = st.client.clone();
        for m in &mut st.members {
            Self::unplace(&client, m);
        }
        st.members.clear();
    }

    fn stop(&self) {
        let Ok(mut st) = self.st.try_borrow_mut() else {
            return;
        };
        if std::mem::replace(&mut st.stopped, true) {
            return;
        }
        let off = get(&st.stage, "off").dyn_into::<Function>().ok();
        for (event, handler) in std::mem::take(&mut st.handlers) {
            if let Some(off) = &off {
                let _ = off.call2(&st.stage, &JsValue::from_str(event), handler.as_ref());
            }
            // The stage delivers events from a snapshot of its listener
            // list; keep the closure alive until that delivery is over.
            crate::web::defer(move || drop(handler));
        }
        drop(st);
        self.clear();
    }

    /// Re-slots everyone and syncs the client's sources with the members.
    fn relayout(&self) {
        let mut st = self.st.borrow_mut();
        if st.stopped {
            return;
        }
        let client = st.client.clone();
        let (w, h) = client.canvas_size();
        let ids: Vec<String> = st
            .members
            .iter()
            .filter(|m| m.shown())
            .map(|m| m.id.clone())
            .collect();
        let slots: Vec<Slot> = layout(w, h, st.mode, &ids, st.featured.as_deref());
        let labels = st.name_labels;
        for m in &mut st.members {
            Self::sync_audio(&client, m);
            let slot = slots.iter().find(|s| s.id == m.id);
            let Some(slot) = slot else {
                if m.placed_video.take().is_some() {
                    let _ = client.remove_layer(&video_name(&m.id), None);
                }
                if std::mem::take(&mut m.placed_card) {
                    let _ = client.remove_layer(&card_name(&m.id), None);
                }
                continue;
            };
            let index = slot.index as i32;
            let card_comp = Composition {
                index: index * 2,
                rect: slot.rect,
            };
            let video_comp = Composition {
                index: index * 2 + 1,
                rect: slot.rect,
            };
            // The card: under the video, visible while video is off/loading.
            if m.card.is_none() {
                m.card = make_card(&m.name, m.avatar_url.as_deref());
            }
            let cname = card_name(&m.id);
            if m.placed_card && client.has_layer(&cname) {
                client.place(&cname, card_comp);
            } else if let Some(card) = &m.card {
                m.placed_card = client
                    .add_image(
                        &cname,
                        Picture::Canvas(card.canvas.clone()),
                        input(&card_comp),
                    )
                    .is_ok();
            }
            // The video, while it flows.
            let vname = video_name(&m.id);
            let live = m.video_live().then(|| m.video.clone()).flatten();
            match live {
                Some(track) => {
                    let id = track.id();
                    if m.placed_video.as_deref() == Some(id.as_str()) {
                        client.place(&vname, video_comp);
                    } else {
                        if m.placed_video.take().is_some() {
                            let _ = client.remove_layer(&vname, None);
                        }
                        let added = MediaStream::new_with_tracks(&js_sys::Array::of1(&track))
                            .ok()
                            .and_then(|s| client.add_video(&vname, s, input(&video_comp)).ok());
                        if added.is_some() {
                            m.placed_video = Some(id);
                            if labels {
                                client.set_label(&vname, Some(&m.name));
                            }
                        }
                    }
                }
                None => {
                    if m.placed_video.take().is_some() {
                        let _ = client.remove_layer(&vname, None);
                    }
                }
            }
        }
    }

    fn sync_audio(client: &broadcast::Inner, m: &mut Member) {
        let name = audio_name(&m.id);
        let want = m.audio.as_ref().map(|t| t.id());
        if m.placed_audio != want {
            if m.placed_audio.take().is_some() {
                let _ = client.remove_audio(&name);
            }
            if let Some(track) = &m.audio {
                let added = MediaStream::new_with_tracks(&js_sys::Array::of1(track))
                    .ok()
                    .and_then(|s| client.add_audio(&name, s).ok());
                if added.is_some() {
                    m.placed_audio = want;
                }
            }
        }
        if m.placed_audio.is_some() {
            client.set_audio_gain(&name, if m.audio_muted { 0.0 } else { 1.0 });
        }
    }
}

fn input(c: &Composition) -> CompositionInput {
    CompositionInput {
        index: Some(f64::from(c.index)),
        x: Some(c.rect.x),
        y: Some(c.rect.y),
        width: Some(c.rect.width),
        height: Some(c.rect.height),
    }
}
