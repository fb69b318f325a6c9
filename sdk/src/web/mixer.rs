//! WebAudio mixer (as IVS does it): one `AudioContext`; each audio device
//! is a `MediaStreamAudioSourceNode` → `GainNode` → master gain →
//! `MediaStreamAudioDestinationNode`. A silent constant source keeps the
//! output track producing samples while no device is connected, so the
//! one output audio track lives as long as the mixer.

use wasm_bindgen::JsValue;
use web_sys::{
    AudioContext, AudioNode, ConstantSourceNode, GainNode, MediaStream,
    MediaStreamAudioDestinationNode, MediaStreamAudioSourceNode, MediaStreamTrack,
};

/// Why the mixer (or an input) could not be set up.
#[derive(Debug, Clone, thiserror::Error)]
#[error("audio mixer: {0}")]
pub struct MixerError(pub String);

fn err(e: JsValue) -> MixerError {
    MixerError(super::js_error_text(&e))
}

struct Input {
    name: String,
    stream: MediaStream,
    source: MediaStreamAudioSourceNode,
    gain: GainNode,
}

pub struct Mixer {
    ctx: AudioContext,
    dest: MediaStreamAudioDestinationNode,
    master: GainNode,
    keep_alive: ConstantSourceNode,
    inputs: Vec<Input>,
}

impl Mixer {
    pub fn new() -> Result<Mixer, MixerError> {
        let ctx = AudioContext::new().map_err(err)?;
        let dest = ctx.create_media_stream_destination().map_err(err)?;
        let master = ctx.create_gain().map_err(err)?;
        master.connect_with_audio_node(dest.as_ref()).map_err(err)?;
        let keep_alive = ctx.create_constant_source().map_err(err)?;
        keep_alive.offset().set_value(0.0);
        keep_alive
            .connect_with_audio_node(dest.as_ref())
            .map_err(err)?;
        keep_alive.start().map_err(err)?;
        Ok(Mixer {
            ctx,
            dest,
            master,
            keep_alive,
            inputs: Vec::new(),
        })
    }

    pub fn context(&self) -> &AudioContext {
        &self.ctx
    }

    /// The output track (created once).
    pub fn track(&self) -> Option<MediaStreamTrack> {
        use wasm_bindgen::JsCast;
        self.dest.stream().get_audio_tracks().get(0).dyn_into().ok()
    }

    /// Resumes a context that the autoplay policy started suspended.
    pub fn resume(&self) {
        if let Ok(p) = self.ctx.resume() {
            super::ignore_rejection(p);
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.inputs.iter().any(|i| i.name == name)
    }

    pub fn stream(&self, name: &str) -> Option<MediaStream> {
        self.inputs
            .iter()
            .find(|i| i.name == name)
            .map(|i| Clone::clone(&i.stream))
    }

    pub fn add(&mut self, name: &str, stream: MediaStream) -> Result<(), MixerError> {
        let source = self.ctx.create_media_stream_source(&stream).map_err(err)?;
        let gain = self.ctx.create_gain().map_err(err)?;
        source.connect_with_audio_node(gain.as_ref()).map_err(err)?;
        gain.connect_with_audio_node(self.master.as_ref())
            .map_err(err)?;
        self.inputs.push(Input {
            name: name.to_owned(),
            stream,
            source,
            gain,
        });
        self.resume();
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> bool {
        let Some(i) = self.inputs.iter().position(|i| i.name == name) else {
            return false;
        };
        let input = self.inputs.remove(i);
        disconnect(input.source.as_ref());
        disconnect(input.gain.as_ref());
        true
    }

    /// Sets one input's gain (0 = muted); false if there is no such input.
    pub fn set_gain(&self, name: &str, gain: f32) -> bool {
        match self.inputs.iter().find(|i| i.name == name) {
            Some(i) => {
                i.gain.gain().set_value(gain);
                true
            }
            None => false,
        }
    }

    /// Mutes or unmutes the whole mix (`disableAudio` / `enableAudio`).
    pub fn set_enabled(&self, enabled: bool) {
        self.master
            .gain()
            .set_value(if enabled { 1.0 } else { 0.0 });
    }

    pub fn close(&mut self) {
        for input in self.inputs.drain(..) {
            disconnect(input.source.as_ref());
            disconnect(input.gain.as_ref());
        }
        let _ = self.keep_alive.stop();
        if let Some(t) = self.track() {
            t.stop();
        }
        if let Ok(p) = self.ctx.close() {
            super::ignore_rejection(p);
        }
    }
}

fn disconnect(node: &AudioNode) {
    let _ = node.disconnect();
}
