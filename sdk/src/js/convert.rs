//! Rust values → the plain JS objects IVS apps expect.

use crate::core::{StageError, StreamKind};
use js_sys::{Object, Reflect};
use stagecast_protocol::events::ParticipantState;
use wasm_bindgen::JsValue;
use web_sys::MediaStreamTrack;

pub(crate) fn set(obj: &Object, key: &str, value: impl Into<JsValue>) {
    // Reflect.set only fails on frozen/proxy objects, which these are not.
    let _ = Reflect::set(obj, &JsValue::from_str(key), &value.into());
}

/// A JS `Error` with `name` "StageError", numeric `code` and `category`.
pub(crate) fn stage_error(e: &StageError) -> JsValue {
    let err = js_sys::Error::new(&e.message);
    err.set_name("StageError");
    set(&err, "code", e.code.as_u32());
    set(&err, "category", e.category.as_str());
    if let Some(pid) = &e.participant_id {
        set(&err, "remoteParticipantId", pid.as_str());
    }
    err.into()
}

pub(crate) fn type_error(message: &str) -> JsValue {
    js_sys::TypeError::new(message).into()
}

/// `StageParticipantInfo`; the same object is updated in place for the
/// participant's lifetime, as IVS does for its mutable fields.
pub(crate) fn participant_info(p: &ParticipantState, is_local: bool) -> Object {
    let info = Object::new();
    set(&info, "id", p.id.as_str());
    set(&info, "userId", p.user_id.as_str());
    let attributes = Object::new();
    for (k, v) in &p.attributes {
        set(&attributes, k, v.as_str());
    }
    set(&info, "attributes", attributes);
    let caps = js_sys::Set::new(&JsValue::UNDEFINED);
    if p.can_publish {
        caps.add(&JsValue::from_str("publish"));
    }
    if p.can_subscribe {
        caps.add(&JsValue::from_str("subscribe"));
    }
    set(&info, "capabilities", caps);
    set(&info, "isLocal", is_local);
    update_info(&info, p);
    info
}

pub(crate) fn update_info(info: &Object, p: &ParticipantState) {
    set(info, "isPublishing", p.published);
    set(info, "audioMuted", p.audio_muted);
    set(info, "videoStopped", p.video_stopped);
}

/// A remote `StageStream`: `{id, streamType, mediaStreamTrack, isMuted}`.
pub(crate) fn remote_stream(kind: StreamKind, track: &MediaStreamTrack, muted: bool) -> Object {
    let s = Object::new();
    set(&s, "id", track.id());
    set(&s, "streamType", kind.as_str());
    set(&s, "mediaStreamTrack", JsValue::from(track));
    set(&s, "isMuted", muted);
    s
}

pub(crate) fn array(items: impl IntoIterator<Item = JsValue>) -> JsValue {
    items.into_iter().collect::<js_sys::Array>().into()
}
