//! What to publish and what to subscribe to, given the strategy's answers
//! and what is already open. The adapters ask the JS strategy, hand the
//! answers here, and carry out the returned action.

/// `StreamType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamKind {
    Audio,
    Video,
}

impl StreamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Audio => "audio",
            StreamKind::Video => "video",
        }
    }

    /// From a `MediaStreamTrack.kind` or a snapshot track kind.
    pub fn parse(s: &str) -> Option<StreamKind> {
        match s {
            "audio" => Some(StreamKind::Audio),
            "video" => Some(StreamKind::Video),
            _ => None,
        }
    }
}

/// `SubscribeType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeKind {
    None,
    AudioOnly,
    AudioVideo,
}

impl SubscribeKind {
    /// Parses a strategy answer; anything unrecognised means "none", so a
    /// buggy strategy never opens a subscription by accident.
    pub fn parse(s: &str) -> SubscribeKind {
        match s {
            "audio_only" => SubscribeKind::AudioOnly,
            "audio_video" => SubscribeKind::AudioVideo,
            _ => SubscribeKind::None,
        }
    }

    /// From the beta `StageSubscribeStreamType[]` answer (`['audio']`,
    /// `['audio', 'video']`...). Video without audio is not offered by the
    /// server contract, so it counts as audio_video.
    pub fn from_stream_types<'a>(types: impl IntoIterator<Item = &'a str>) -> SubscribeKind {
        let (mut audio, mut video) = (false, false);
        for t in types {
            audio |= t == "audio";
            video |= t == "video";
        }
        match (audio, video) {
            (_, true) => SubscribeKind::AudioVideo,
            (true, false) => SubscribeKind::AudioOnly,
            (false, false) => SubscribeKind::None,
        }
    }

    /// Whether streams of this kind are delivered to the app.
    pub fn exposes(self, kind: StreamKind) -> bool {
        match self {
            SubscribeKind::None => false,
            SubscribeKind::AudioOnly => kind == StreamKind::Audio,
            SubscribeKind::AudioVideo => true,
        }
    }
}

/// What to do with the subscription to one remote participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionAction {
    Open(SubscribeKind),
    Close,
    /// Keep the peer connection, change which of its streams the app sees.
    /// (The subscription always receives both kinds; see the crate docs.)
    Retype {
        from: SubscribeKind,
        to: SubscribeKind,
    },
    /// Close then open: the publisher republished, so the old session is gone.
    Reopen(SubscribeKind),
}

/// Decides the subscription action for one remote participant.
///
/// `current` is the kind of the open (or opening) subscription; `stale`
/// says the publisher republished since it was opened.
pub fn plan_subscription(
    remote_published: bool,
    can_subscribe: bool,
    current: Option<SubscribeKind>,
    desired: SubscribeKind,
    stale: bool,
) -> Option<SubscriptionAction> {
    let want = if remote_published && can_subscribe {
        desired
    } else {
        SubscribeKind::None
    };
    match (current, want) {
        (None, SubscribeKind::None) => None,
        (None, kind) => Some(SubscriptionAction::Open(kind)),
        (Some(_), SubscribeKind::None) => Some(SubscriptionAction::Close),
        (Some(_), kind) if stale => Some(SubscriptionAction::Reopen(kind)),
        (Some(from), to) if from != to => Some(SubscriptionAction::Retype { from, to }),
        (Some(_), _) => None,
    }
}

/// A stream the strategy wants published: an opaque key (the adapter's
/// handle for a `LocalStageStream`) and its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DesiredStream {
    pub key: u32,
    pub kind: StreamKind,
}

/// What to do with the local publish session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishAction {
    /// Start publishing these streams (at most one per kind).
    Publish(Vec<DesiredStream>),
    /// Stop publishing.
    Unpublish,
    /// Same kinds, different tracks: swap tracks on the open session.
    Replace(Vec<DesiredStream>),
    /// The set of kinds changed: unpublish, then publish these.
    Republish(Vec<DesiredStream>),
    /// The strategy wants to publish but the token cannot.
    NotAllowed,
}

/// Keeps the first stream of each kind: one publish session carries one
/// audio and one video track.
pub fn normalize(desired: &[DesiredStream]) -> Vec<DesiredStream> {
    // Audio first, then video (no `sort`: it would link the standard
    // library's large sort into the wasm for two elements).
    [StreamKind::Audio, StreamKind::Video]
        .iter()
        .filter_map(|kind| desired.iter().find(|d| d.kind == *kind).copied())
        .collect()
}

/// Decides the publish action.
///
/// `current` is the set being published (or being set up); `errored` says
/// the last attempt failed and has not been retried since, so an
/// unchanged refresh does not hammer the server with the same request.
pub fn plan_publish(
    can_publish: bool,
    should_publish: bool,
    desired: &[DesiredStream],
    current: Option<&[DesiredStream]>,
    errored: Option<&[DesiredStream]>,
) -> Option<PublishAction> {
    let want = if should_publish {
        normalize(desired)
    } else {
        Vec::new()
    };
    match current {
        None if want.is_empty() => None,
        None if errored == Some(&want[..]) => None,
        None if !can_publish => Some(PublishAction::NotAllowed),
        None => Some(PublishAction::Publish(want)),
        Some(_) if want.is_empty() => Some(PublishAction::Unpublish),
        Some(cur) if cur == &want[..] => None,
        Some(cur) => {
            let same_kinds =
                cur.len() == want.len() && cur.iter().zip(&want).all(|(a, b)| a.kind == b.kind);
            Some(if same_kinds {
                PublishAction::Replace(want)
            } else {
                PublishAction::Republish(want)
            })
        }
    }
}

/// The `SET_STATE` values for the local participant: `(audioMuted,
/// videoStopped)` from the published streams' `(kind, muted)`. A kind that
/// is not published counts as muted/stopped.
pub fn local_mute_state(published: &[(StreamKind, bool)]) -> (bool, bool) {
    let muted = |kind| {
        published
            .iter()
            .find(|(k, _)| *k == kind)
            .is_none_or(|(_, m)| *m)
    };
    (muted(StreamKind::Audio), muted(StreamKind::Video))
}

#[cfg(test)]
mod tests {
    use super::*;
    use SubscribeKind::{AudioOnly, AudioVideo};
    const NONE: SubscribeKind = SubscribeKind::None;

    const A1: DesiredStream = DesiredStream {
        key: 1,
        kind: StreamKind::Audio,
    };
    const V2: DesiredStream = DesiredStream {
        key: 2,
        kind: StreamKind::Video,
    };
    const V3: DesiredStream = DesiredStream {
        key: 3,
        kind: StreamKind::Video,
    };
    const A4: DesiredStream = DesiredStream {
        key: 4,
        kind: StreamKind::Audio,
    };

    #[test]
    fn subscription_lifecycle() {
        assert_eq!(
            plan_subscription(false, true, None, AudioVideo, false),
            None
        );
        assert_eq!(
            plan_subscription(true, true, None, AudioVideo, false),
            Some(SubscriptionAction::Open(AudioVideo))
        );
        assert_eq!(
            plan_subscription(true, false, None, AudioVideo, false),
            None
        );
        assert_eq!(plan_subscription(true, true, None, NONE, false), None);
        assert_eq!(
            plan_subscription(true, true, Some(AudioVideo), AudioVideo, false),
            None
        );
        assert_eq!(
            plan_subscription(true, true, Some(AudioVideo), AudioOnly, false),
            Some(SubscriptionAction::Retype {
                from: AudioVideo,
                to: AudioOnly
            })
        );
        assert_eq!(
            plan_subscription(true, true, Some(AudioOnly), NONE, false),
            Some(SubscriptionAction::Close)
        );
        assert_eq!(
            plan_subscription(false, true, Some(AudioOnly), AudioOnly, false),
            Some(SubscriptionAction::Close)
        );
        assert_eq!(
            plan_subscription(true, true, Some(AudioOnly), AudioVideo, true),
            Some(SubscriptionAction::Reopen(AudioVideo))
        );
        assert!(AudioOnly.exposes(StreamKind::Audio) && !AudioOnly.exposes(StreamKind::Video));
        assert_eq!(SubscribeKind::parse("bogus"), NONE);
        assert_eq!(SubscribeKind::from_stream_types(["audio"]), AudioOnly);
        assert_eq!(
            SubscribeKind::from_stream_types(["video", "audio"]),
            AudioVideo
        );
        assert_eq!(SubscribeKind::from_stream_types([]), NONE);
    }

    #[test]
    fn publish_decisions() {
        assert_eq!(plan_publish(true, false, &[A1, V2], None, None), None);
        assert_eq!(plan_publish(true, true, &[], None, None), None);
        assert_eq!(
            plan_publish(true, true, &[V2, A1, V3], None, None),
            Some(PublishAction::Publish(vec![A1, V2]))
        );
        assert_eq!(
            plan_publish(false, true, &[A1], None, None),
            Some(PublishAction::NotAllowed)
        );
        // Already failed with the same set: wait for the app to change something.
        assert_eq!(plan_publish(false, true, &[A1], None, Some(&[A1])), None);
        assert_eq!(
            plan_publish(true, true, &[A1, V2], Some(&[A1, V2]), None),
            None
        );
        assert_eq!(
            plan_publish(true, true, &[A1, V3], Some(&[A1, V2]), None),
            Some(PublishAction::Replace(vec![A1, V3]))
        );
        assert_eq!(
            plan_publish(true, true, &[A4, V3], Some(&[A1, V2]), None),
            Some(PublishAction::Replace(vec![A4, V3]))
        );
        assert_eq!(
            plan_publish(true, true, &[V2], Some(&[A1, V2]), None),
            Some(PublishAction::Republish(vec![V2]))
        );
        assert_eq!(
            plan_publish(true, false, &[A1], Some(&[A1]), None),
            Some(PublishAction::Unpublish)
        );
    }

    #[test]
    fn mute_state() {
        use StreamKind::*;
        assert_eq!(
            local_mute_state(&[(Audio, false), (Video, false)]),
            (false, false)
        );
        assert_eq!(
            local_mute_state(&[(Audio, true), (Video, false)]),
            (true, false)
        );
        assert_eq!(local_mute_state(&[(Video, false)]), (true, false));
        assert_eq!(local_mute_state(&[]), (true, true));
    }
}
