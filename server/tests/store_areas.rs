//! The rooms', channels' and stage presence's stores: every body runs
//! against SQLite and Redis (see `both!` in `common/redis.rs`).

use stagecast_server::channel::packager::Continuity;
use stagecast_server::channel::recording::RecordingSettings;
use stagecast_server::channel::store::{ChannelRecord, PlaybackKeyRecord, SavedBroadcast};
use stagecast_server::chat::room::RoomLimits;
use stagecast_server::chat::RoomRecord;
use stagecast_server::stage::presence::{PresenceRow, StageWrite};
use stagecast_server::store::PageQuery;
use stagecast_protocol::StageId;

mod common;
use common::redis::Backend;

both!(
    rooms_round_trip_and_page,
    channels_round_trip_and_record,
    playback_keys_are_unique_and_page,
    broadcasts_are_saved_and_forgotten,
    presence_keeps_join_order_through_updates,
);

fn member(id: &str, state: &str, whip_only: bool) -> PresenceRow {
    PresenceRow { id: id.to_owned(), state: state.to_owned(), whip_only }
}

fn presence_keeps_join_order_through_updates(backend: &Backend) -> anyhow::Result<()> {
    let (one, two) = (StageId("st-one".into()), StageId("st-two".into()));
    {
        let presence = backend.presence()?;
        presence.write(&[
            StageWrite::Replace { stage: one.clone(), members: vec![member("b", "{\"v\":1}", false), member("a", "{}", true)] },
            StageWrite::Replace { stage: two.clone(), members: vec![member("x", "{}", false)] },
        ])?;
        // An update keeps a member's place; a new one comes last.
        presence.write(&[StageWrite::Update {
            stage: one.clone(),
            upsert: vec![member("b", "{\"v\":2}", false), member("c", "{}", false)],
            remove: vec!["a".into()],
        }])?;
        presence.keep_alive(&[one.clone(), two.clone()])?;
    }
    // Another handle (a restart, or the stage's next home) reads the same.
    let presence = backend.presence()?;
    assert_eq!(presence.load_stage(&one)?, [member("b", "{\"v\":2}", false), member("c", "{}", false)]);
    assert_eq!(presence.load_stage(&StageId("st-none".into()))?, []);
    presence.write(&[StageWrite::Delete { stage: two.clone() }])?;
    let all = presence.load()?;
    assert_eq!(all.len(), 1, "only st-one is left: {all:?}");
    assert_eq!(all[0].0, one);
    Ok(())
}

fn room(i: u32) -> RoomRecord {
    RoomRecord {
        id: format!("room-{i}"),
        name: format!("Room \"{i}\" ✓"),
        create_time: 1_700_000_000 + i64::from(i),
        limits: RoomLimits { max_messages_per_second: i + 1, max_message_length: 100 + i },
    }
}

fn rooms_round_trip_and_page(backend: &Backend) -> anyhow::Result<()> {
    {
        let rooms = backend.rooms()?;
        for i in 0..5 {
            rooms.insert(&room(i))?;
        }
        assert!(rooms.insert(&room(3)).is_err(), "a room id is taken once");
    }
    // Another handle (a restart, or another node) sees the same rooms.
    let rooms = backend.rooms()?;
    assert_eq!(rooms.get("room-2")?, Some(room(2)));
    assert_eq!(rooms.get("nope")?, None);
    let ids = |items: &[RoomRecord]| items.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
    let first = rooms.list(PageQuery::first(2))?;
    assert_eq!(ids(&first.items), ["room-0", "room-1"]);
    assert!(rooms.delete("room-0")?);
    assert!(!rooms.delete("room-0")?);
    rooms.insert(&room(9))?;
    let rest = rooms.list(PageQuery { after: first.next, limit: 10 })?;
    assert_eq!(ids(&rest.items), ["room-2", "room-3", "room-4", "room-9"]);
    assert_eq!(rest.next, None);
    Ok(())
}

fn channel(i: u32, authorized: bool) -> ChannelRecord {
    ChannelRecord {
        id: format!("ch-{i}"),
        name: format!("channel {i}"),
        stream_key: format!("sk_secret{i}"),
        create_time: 1_700_000_000 + i64::from(i),
        authorized,
        recording: None,
    }
}

fn channels_round_trip_and_record(backend: &Backend) -> anyhow::Result<()> {
    let channels = backend.channels()?;
    let settings = RecordingSettings { recording_reconnect_window_seconds: 30, thumbnail_interval_seconds: Some(10) };
    channels.insert(&channel(0, false))?;
    channels.insert(&ChannelRecord { recording: Some(settings), ..channel(1, true) })?;
    channels.insert(&channel(2, true))?;
    assert!(channels.insert(&channel(2, false)).is_err(), "a channel id is taken once");
    assert_eq!(channels.get("ch-1")?, Some(ChannelRecord { recording: Some(settings), ..channel(1, true) }));
    let mut private = channels.authorized_ids()?;
    private.sort();
    assert_eq!(private, ["ch-1", "ch-2"]);

    assert!(channels.set_recording("ch-0", Some(settings))?);
    assert!(channels.set_recording("ch-1", None)?);
    assert!(!channels.set_recording("nope", Some(settings))?);
    let page = channels.list(PageQuery::first(2))?;
    let listed: Vec<_> = page.items.iter().map(|c| (c.id.as_str(), c.recording)).collect();
    assert_eq!(listed, [("ch-0", Some(settings)), ("ch-1", None)]);
    let rest = channels.list(PageQuery { after: page.next, limit: 2 })?;
    assert_eq!(rest.items, [channel(2, true)]);

    assert!(channels.delete("ch-0")?);
    assert!(!channels.delete("ch-0")?);
    assert_eq!(channels.get("ch-0")?, None);
    // A channel made again under a deleted id does not inherit its recording.
    channels.insert(&channel(0, false))?;
    assert_eq!(channels.get("ch-0")?, Some(channel(0, false)));
    Ok(())
}

fn key(i: u32) -> PlaybackKeyRecord {
    PlaybackKeyRecord {
        id: format!("pk-{i}"),
        name: format!("key {i}"),
        pem: "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----".to_owned(),
        fingerprint: format!("aa:{i:02}"),
        create_time: i64::from(i),
    }
}

fn playback_keys_are_unique_and_page(backend: &Backend) -> anyhow::Result<()> {
    let channels = backend.channels()?;
    for i in 0..4 {
        channels.insert_playback_key(&key(i))?;
    }
    assert!(channels.insert_playback_key(&PlaybackKeyRecord { id: "pk-new".to_owned(), ..key(1) }).is_err(), "same fingerprint");
    assert!(channels.insert_playback_key(&PlaybackKeyRecord { fingerprint: "ff".to_owned(), ..key(1) }).is_err(), "same id");
    assert_eq!(channels.count_playback_keys()?, 4);
    assert_eq!(channels.get_playback_key("pk-2")?, Some(key(2)));
    assert_eq!(channels.find_playback_key_by_fingerprint("aa:03")?, Some(key(3)));
    assert_eq!(channels.find_playback_key_by_fingerprint("zz")?, None);
    let first = channels.list_playback_keys(PageQuery::first(3))?;
    assert_eq!(first.items, [key(0), key(1), key(2)]);
    let rest = channels.list_playback_keys(PageQuery { after: first.next, limit: 3 })?;
    assert_eq!((rest.items, rest.next), (vec![key(3)], None));

    assert!(channels.delete_playback_key("pk-1")?);
    assert!(!channels.delete_playback_key("pk-1")?);
    assert_eq!(channels.all_playback_keys()?, [key(0), key(2), key(3)]);
    // Its fingerprint is free again.
    assert_eq!(channels.find_playback_key_by_fingerprint("aa:01")?, None);
    channels.insert_playback_key(&PlaybackKeyRecord { id: "pk-9".to_owned(), ..key(1) })?;
    assert_eq!(channels.count_playback_keys()?, 4);
    Ok(())
}

fn broadcasts_are_saved_and_forgotten(backend: &Backend) -> anyhow::Result<()> {
    let saved = |channel: &str, msn: u32| SavedBroadcast {
        channel_id: channel.to_owned(),
        session: format!("session-{msn}"),
        continuity: Continuity {
            next_msn: u64::from(msn),
            discontinuity_sequence: 2,
            init_version: 3,
            anchor_pts: 90_000 * u64::from(msn),
            anchor_wall_ms: 1_700_000_000_000,
        },
        updated_ms: 1_700_000_000_000 + i64::from(msn),
    };
    {
        let channels = backend.channels()?;
        channels.save_broadcast(&saved("ch-a", 1))?;
        channels.save_broadcast(&saved("ch-b", 5))?;
        // A later save replaces the earlier one.
        channels.save_broadcast(&saved("ch-a", 7))?;
    }
    let channels = backend.channels()?;
    let mut all = channels.saved_broadcasts()?;
    all.sort_by(|a, b| a.channel_id.cmp(&b.channel_id));
    assert_eq!(all, [saved("ch-a", 7), saved("ch-b", 5)]);
    channels.delete_broadcast("ch-a")?;
    channels.delete_broadcast("ch-a")?;
    assert_eq!(channels.saved_broadcasts()?, [saved("ch-b", 5)]);
    Ok(())
}
