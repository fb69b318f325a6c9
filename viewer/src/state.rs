//! What the watch page says about a stream: one state, and from it every
//! word and control the page shows (badge, message, unmute pill, player
//! controls, latency, chat), so no two of them can contradict each other.
//! The transitions are plain functions of what the backend and the player
//! reported, so they build and are tested on the host.

/// What the page follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A sample-app stage group (`/watch/{groupId}`): its channel and chat.
    Stage,
    /// Any channel (`/watch/channel/{channelId}`): its video alone.
    Channel,
}

/// Where the stream stands, as far as the page knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamState {
    /// Before the backend's first answer: nothing is claimed yet.
    Connecting,
    /// The stream is live and a player is loading it; no frame yet.
    Starting,
    /// Not live, and this page has not played it.
    Offline,
    /// Frames are playing (or a stuck player is being replaced).
    Live,
    /// Not live any more after this page played it.
    Ended,
    /// The stage or channel does not exist (any more).
    Missing,
    /// The stream refused this page (HTTP 403): a private channel without a
    /// valid playback token. No new player until it has stopped being live.
    Private,
}

/// What one poll of the backend said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Missing,
    NotLive,
    Live,
}

impl StreamState {
    /// The state after the backend's answer; `played` says whether this
    /// page has played frames of the stream (then a stream that is not
    /// live any more has ended, rather than never started).
    pub fn after_answer(self, answer: Answer, played: bool) -> StreamState {
        match answer {
            Answer::Missing => StreamState::Missing,
            Answer::NotLive => self.after_end(played),
            // A player that is being replaced keeps the stream Live.
            Answer::Live if self == StreamState::Live => StreamState::Live,
            // No retry into a loop of 403s while the stream stays live.
            Answer::Live if self == StreamState::Private => StreamState::Private,
            Answer::Live => StreamState::Starting,
        }
    }

    /// The state after the player reported the end of the stream.
    pub fn after_end(self, played: bool) -> StreamState {
        if played {
            StreamState::Ended
        } else {
            StreamState::Offline
        }
    }

    /// The badge's word (`player-state`); `None`: no badge, since a stream
    /// that does not exist has no state to show.
    pub fn badge(self) -> Option<&'static str> {
        match self {
            StreamState::Connecting | StreamState::Starting => Some("Connecting"),
            StreamState::Offline => Some("Offline"),
            StreamState::Live => Some("Live"),
            StreamState::Ended => Some("Ended"),
            StreamState::Missing | StreamState::Private => None,
        }
    }

    /// For `data-state` (styles and tests).
    pub fn as_str(self) -> &'static str {
        match self {
            StreamState::Connecting => "connecting",
            StreamState::Starting => "starting",
            StreamState::Offline => "offline",
            StreamState::Live => "live",
            StreamState::Ended => "ended",
            StreamState::Missing => "missing",
            StreamState::Private => "private",
        }
    }

    /// The message over the video; `None` over live video.
    pub fn message(self, kind: SourceKind) -> Option<&'static str> {
        let stage = kind == SourceKind::Stage;
        Some(match self {
            StreamState::Connecting => "Connecting…",
            StreamState::Starting => "Starting the stream…",
            StreamState::Live => return None,
            StreamState::Offline if stage => {
                "This stage is not live right now. The video starts as soon as the host goes live."
            }
            StreamState::Offline => "This channel is not live right now. The video starts as soon as it goes live.",
            StreamState::Ended if stage => {
                "The stream has ended. It starts again here when the host goes live again."
            }
            StreamState::Ended => "The stream has ended. It starts again here when the channel goes live again.",
            StreamState::Missing if stage => "This stage does not exist (any more).",
            StreamState::Missing => "This channel does not exist (any more).",
            StreamState::Private => {
                "This stream is private: it plays only with a valid playback token. \
                 Open the link you were given (with its ?token=…), or ask for a new one if it has expired."
            }
        })
    }

    /// Whether there is video to control: the player's controls, the
    /// unmute pill (while muted) and the latency readout show only then.
    pub fn has_video(self) -> bool {
        self == StreamState::Live
    }

    /// Whether the stage is known to exist, so its chat is shown: not
    /// before the first answer, not once it is gone.
    pub fn exists(self) -> bool {
        !matches!(self, StreamState::Connecting | StreamState::Missing)
    }
}

#[cfg(test)]
mod tests {
    use super::{Answer, SourceKind, StreamState::*};

    const ALL: [super::StreamState; 7] = [Connecting, Starting, Offline, Live, Ended, Missing, Private];

    #[test]
    fn a_refused_stream_says_it_is_private_until_it_stops() {
        assert_eq!(Private.badge(), None, "neither Offline nor Live");
        assert!(Private.message(SourceKind::Channel).is_some_and(|m| m.starts_with("This stream is private")));
        assert!(!Private.has_video(), "no pill, controls or latency");
        // Still live: no new player (it would be refused again).
        assert_eq!(Private.after_answer(Answer::Live, false), Private);
        // Not live any more: a later broadcast is tried again.
        assert_eq!(Private.after_answer(Answer::NotLive, false), Offline);
        assert_eq!(Offline.after_answer(Answer::Live, false), Starting);
    }

    #[test]
    fn nothing_is_claimed_before_the_first_answer() {
        assert_eq!(Connecting.badge(), Some("Connecting"));
        assert_eq!(Connecting.message(SourceKind::Stage), Some("Connecting…"));
        assert!(!Connecting.has_video() && !Connecting.exists(), "no pill, no controls, no chat");
        // A live stream goes Connecting → Starting → Live, never through Offline.
        assert_eq!(Connecting.after_answer(Answer::Live, false), Starting);
        assert_eq!(Starting.after_answer(Answer::Live, false), Starting);
        assert_eq!(Starting.badge(), Some("Connecting"));
        assert_eq!(Connecting.after_answer(Answer::NotLive, false), Offline);
    }

    #[test]
    fn a_missing_stream_shows_only_that_it_does_not_exist() {
        for state in ALL {
            assert_eq!(state.after_answer(Answer::Missing, true), Missing);
        }
        assert_eq!(Missing.badge(), None, "no Offline badge");
        assert!(!Missing.has_video(), "no unmute pill, controls or latency");
        assert!(!Missing.exists(), "no chat");
        assert_eq!(Missing.message(SourceKind::Stage), Some("This stage does not exist (any more)."));
        assert_eq!(Missing.message(SourceKind::Channel), Some("This channel does not exist (any more)."));
    }

    #[test]
    fn the_end_of_a_stream_is_ended_once_it_played_offline_otherwise() {
        assert_eq!(Live.after_answer(Answer::NotLive, true), Ended);
        assert_eq!(Live.after_end(true), Ended);
        assert_eq!(Starting.after_end(false), Offline, "it never played here");
        // A restart that fails before its first frame still says Ended.
        assert_eq!(Ended.after_answer(Answer::Live, true), Starting);
        assert_eq!(Starting.after_answer(Answer::NotLive, true), Ended);
        // A stuck player being replaced stays Live.
        assert_eq!(Live.after_answer(Answer::Live, true), Live);
    }

    #[test]
    fn only_live_video_has_controls_and_a_message_covers_every_other_state() {
        for state in ALL {
            assert_eq!(state.has_video(), state == Live, "{state:?}");
            for kind in [SourceKind::Stage, SourceKind::Channel] {
                assert_eq!(state.message(kind).is_none(), state == Live, "{state:?} {kind:?}");
            }
        }
        let says = |state: super::StreamState, kind| state.message(kind).unwrap_or_default();
        assert!(says(Offline, SourceKind::Channel).contains("not live"));
        assert!(says(Ended, SourceKind::Stage).contains("has ended"));
        assert!(Offline.exists() && Starting.exists() && Live.exists() && Ended.exists());
    }
}
