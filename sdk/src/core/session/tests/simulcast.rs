//! Simulcast in the session: the SFU's `PUBLISH_LAYERS` reaching the
//! publish connection, and a subscribed video stream's layers polled,
//! diffed into events and steered by `preferredLayerForStream`.

use super::*;
use crate::core::layers::{Layer, LayerState, POLL_MS};

fn layer(label: &str, width: u32, height: u32) -> Layer {
    Layer {
        label: label.into(),
        width,
        height,
        bitrate_bps: 200_000,
        frames_per_second: 15,
    }
}

fn two_layers(selected: Option<&str>, adapting: bool) -> LayerState {
    LayerState {
        layers: vec![layer("low", 320, 180), layer("high", 640, 360)],
        selected: selected.map(Into::into),
        adapting,
    }
}

fn video(op: u32) -> StreamRef {
    StreamRef::Remote {
        op,
        kind: StreamKind::Video,
        muted: false,
    }
}

fn polls(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::PollLayers { .. }))
        .count()
}

#[test]
fn publish_layers_reach_the_publish_connection() {
    let mut h = H::new(3600, true);
    let (op, _) = h.live();
    let rids = vec!["low".to_owned()];
    let a = h.frame(ServerMessage::PublishLayers { rids: rids.clone() });
    assert_eq!(a, [Action::PublishLayers { op, rids: rids.clone() }]);
    // The connection fails and is made again: the last word applies to it
    // once it is up (the SFU may have said it while it was being set up).
    h.peer(op, PeerState::Failed);
    let a = h.advance(5_000.0);
    let op2 = publish_op(&a);
    h.ok(op2);
    let a = h.peer(op2, PeerState::Connected);
    assert!(a.contains(&Action::PublishLayers { op: op2, rids }), "{a:?}");
}

#[test]
fn publish_layers_before_publishing_are_kept_for_the_connection() {
    let mut h = H::new(3600, true);
    h.input(Input::Join { unix_ms: UNIX_MS });
    let asked = h.snapshot(1, vec![p(ME)]);
    let opened = h.answer(&asked);
    let op = publish_op(&opened);
    let rids = vec!["low".to_owned(), "high".to_owned()];
    assert_eq!(h.frame(ServerMessage::PublishLayers { rids: rids.clone() }), []);
    h.ok(op);
    let a = h.peer(op, PeerState::Connected);
    assert!(a.contains(&Action::PublishLayers { op, rids }), "{a:?}");
}

#[test]
fn without_layer_controls_nothing_is_polled() {
    let mut h = H::new(3600, true);
    h.live();
    assert_eq!(polls(&h.advance(3.0 * POLL_MS)), 0);
}

#[test]
fn layers_are_polled_diffed_and_steered_by_the_strategy() {
    let mut h = H::new(3600, true);
    let (_, sub) = h.live();
    // The answer linked layer controls: read them at once, then every 2 s.
    h.input(Input::LayerControls { op: sub });
    assert_eq!(h.advance(0.0), [Action::PollLayers { op: sub }]);
    assert_eq!(polls(&h.advance(POLL_MS - 1.0)), 0);
    assert_eq!(polls(&h.advance(1.0)), 1);

    let state = two_layers(Some("high"), true);
    let a = h.input(Input::LayersPolled { op: sub, state: state.clone() });
    let (id, stream) = ("a".to_owned(), video(sub));
    assert_eq!(
        a,
        [
            Action::Emit(StageEvent::StreamLayersChanged { id: id.clone(), stream, state: state.clone() }),
            Action::Emit(StageEvent::StreamLayerSelected { id: id.clone(), stream, state: state.clone() }),
            Action::Emit(StageEvent::StreamAdaptionChanged { id: id.clone(), stream, state: state.clone() }),
            Action::AskLayer { op: sub, id: id.clone() },
        ]
    );
    // The strategy wants the lowest layer: asked once, not again.
    let pick = |h: &mut H, label: Option<&str>| {
        h.input(Input::LayerPreference { op: sub, preference: label.map(Into::into) })
    };
    assert_eq!(pick(&mut h, Some("low")), [Action::SelectLayer { op: sub, rid: Some("low".into()) }]);
    assert_eq!(pick(&mut h, Some("low")), []);
    // The server switched: only the selection changed (it no longer adapts).
    let low = two_layers(Some("low"), false);
    let a = h.input(Input::LayersPolled { op: sub, state: low.clone() });
    assert_eq!(
        events(&a),
        [
            StageEvent::StreamLayerSelected { id: id.clone(), stream, state: low.clone() },
            StageEvent::StreamAdaptionChanged { id: id.clone(), stream, state: low.clone() },
        ]
    );
    assert!(!a.iter().any(|a| matches!(a, Action::AskLayer { .. })), "same layers: not asked");
    // refreshStrategy() asks again; null goes back to server-adaptive.
    let a = h.input(Input::RefreshStrategy);
    assert!(a.contains(&Action::AskLayer { op: sub, id: id.clone() }), "{a:?}");
    assert_eq!(pick(&mut h, None), [Action::SelectLayer { op: sub, rid: None }]);
    // The top layer went away: selected 'unavailable' is the app's to see.
    let gone = LayerState {
        layers: vec![layer("low", 320, 180)],
        selected: None,
        adapting: false,
    };
    let a = h.input(Input::LayersPolled { op: sub, state: gone.clone() });
    assert_eq!(
        events(&a),
        [
            StageEvent::StreamLayersChanged { id: id.clone(), stream, state: gone.clone() },
            StageEvent::StreamLayerSelected { id, stream, state: gone },
        ]
    );
}

#[test]
fn polling_stops_with_the_video_stream() {
    let mut h = H::new(3600, true);
    let (_, sub) = h.live();
    h.input(Input::LayerControls { op: sub });
    h.advance(0.0);
    // audio_only: the app no longer has the video stream.
    h.input(Input::Strategy(StrategyAnswer {
        publish: None,
        subscribe: vec![("a".into(), SubscribeKind::AudioOnly)],
    }));
    assert_eq!(polls(&h.advance(3.0 * POLL_MS)), 0);
    let a = h.input(Input::LayersPolled { op: sub, state: two_layers(Some("low"), true) });
    assert_eq!(a, [], "a late answer for a stream the app no longer has");
    assert_eq!(h.input(Input::LayerPreference { op: sub, preference: Some("low".into()) }), []);
    // Video again: polled again.
    h.input(Input::Strategy(StrategyAnswer {
        publish: None,
        subscribe: vec![("a".into(), SubscribeKind::AudioVideo)],
    }));
    assert_eq!(polls(&h.advance(0.0)), 1);
    // Leaving ends it for good.
    h.input(Input::Leave);
    assert_eq!(polls(&h.advance(3.0 * POLL_MS)), 0);
}
