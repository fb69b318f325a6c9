//! SQLite store round trips against a real file.

use std::collections::BTreeMap;

use stagecast_protocol::token::TokenCapabilities;
use stagecast_protocol::{ParticipantId, StageId};
use stagecast_server::store::{DemoGroupRecord, ParticipantRecord, PublicKeyRecord, SqliteStore, StageRecord, Store};

mod common;
use common::temp_dir;

fn stage(id: &str, t: i64) -> StageRecord {
    StageRecord { id: StageId::from(id), name: format!("name of {id}"), create_time: t }
}

fn participant(stage: &str, id: &str) -> ParticipantRecord {
    ParticipantRecord {
        stage_id: StageId::from(stage),
        participant_id: ParticipantId::from(id),
        user_id: format!("user-{id}"),
        attributes: BTreeMap::from([("username".to_owned(), "Ada \"quoted\" ✓".to_owned())]),
        capabilities: TokenCapabilities { allow_publish: false, allow_subscribe: true },
        expiration: 1_900_000_000,
        first_join_time: None,
        revoked: false,
        revoke_reason: None,
    }
}

#[test]
fn stages_round_trip_and_survive_reopen() -> anyhow::Result<()> {
    let dir = temp_dir("stages")?;
    let path = dir.join("db.sqlite");
    {
        let store = SqliteStore::open(&path)?;
        store.create_stage(&stage("st-b", 20))?;
        store.create_stage(&stage("st-a", 10))?;
        assert_eq!(store.get_stage(&StageId::from("st-a"))?, Some(stage("st-a", 10)));
        assert_eq!(store.get_stage(&StageId::from("nope"))?, None);
        // Duplicate ids are refused, not silently merged.
        assert!(store.create_stage(&stage("st-a", 30)).is_err());
    }
    let store = SqliteStore::open(&path)?;
    let ids: Vec<_> = store.list_stages()?.into_iter().map(|s| s.id.0).collect();
    assert_eq!(ids, vec!["st-a", "st-b"]);
    std::fs::remove_dir_all(dir)?;
    Ok(())
}

#[test]
fn participants_join_and_revoke() -> anyhow::Result<()> {
    let dir = temp_dir("participants")?;
    let store = SqliteStore::open(&dir.join("db.sqlite"))?;
    store.create_stage(&stage("st-1", 1))?;
    let p = participant("st-1", "p1");
    store.insert_participant(&p)?;
    assert_eq!(store.get_participant(&p.stage_id, &p.participant_id)?, Some(p.clone()));
    // Same participant id in another stage is a different participant.
    assert_eq!(store.get_participant(&StageId::from("st-2"), &p.participant_id)?, None);

    store.record_join(&p, 100)?;
    store.record_join(&p, 200)?; // the first join time stays
    let joined = store.get_participant(&p.stage_id, &p.participant_id)?.ok_or_else(|| anyhow::anyhow!("missing"))?;
    assert_eq!(joined.first_join_time, Some(100));
    assert_eq!(joined.attributes, p.attributes);

    // A self-signed participant is recorded on join.
    let self_signed = participant("st-1", "p2");
    store.record_join(&self_signed, 300)?;
    let listed = store.list_participants(&StageId::from("st-1"))?;
    assert_eq!(listed.iter().map(|r| r.participant_id.0.as_str()).collect::<Vec<_>>(), vec!["p1", "p2"]);
    assert_eq!(listed[1].first_join_time, Some(300));

    assert!(store.revoke_participant(&p.stage_id, &p.participant_id, "bye")?);
    assert!(!store.revoke_participant(&p.stage_id, &ParticipantId::from("ghost"), "bye")?);
    let revoked = store.get_participant(&p.stage_id, &p.participant_id)?.ok_or_else(|| anyhow::anyhow!("missing"))?;
    assert!(revoked.revoked);
    assert_eq!(revoked.revoke_reason.as_deref(), Some("bye"));
    // A later join does not un-revoke.
    store.record_join(&p, 400)?;
    assert!(store.get_participant(&p.stage_id, &p.participant_id)?.is_some_and(|r| r.revoked));
    std::fs::remove_dir_all(dir)?;
    Ok(())
}

#[test]
fn deleting_a_stage_removes_its_participants_and_groups() -> anyhow::Result<()> {
    let dir = temp_dir("delete")?;
    let store = SqliteStore::open(&dir.join("db.sqlite"))?;
    store.create_stage(&stage("st-1", 1))?;
    store.create_stage(&stage("st-2", 2))?;
    store.insert_participant(&participant("st-1", "p1"))?;
    store.insert_participant(&participant("st-2", "p2"))?;
    let group = |gid: &str, sid: &str, t: i64| DemoGroupRecord {
        group_id: gid.to_owned(),
        stage_id: StageId::from(sid),
        host_user_id: "host".to_owned(),
        host_participant_id: ParticipantId::from("p1"),
        host_attributes: BTreeMap::from([("avatarUrl".to_owned(), "a.png".to_owned())]),
        create_time: t,
        channel_id: Some(format!("ch-{gid}")),
        room_id: None,
    };
    store.create_demo_group(&group("g1", "st-1", 1))?;
    store.create_demo_group(&group("g2", "st-2", 2))?;
    assert_eq!(store.get_demo_group("g1")?, Some(group("g1", "st-1", 1)));
    // Newest first.
    let gids: Vec<_> = store.list_demo_groups()?.into_iter().map(|g| g.group_id).collect();
    assert_eq!(gids, vec!["g2", "g1"]);

    assert!(store.delete_stage(&StageId::from("st-1"))?);
    assert!(!store.delete_stage(&StageId::from("st-1"))?);
    assert_eq!(store.get_stage(&StageId::from("st-1"))?, None);
    assert!(store.list_participants(&StageId::from("st-1"))?.is_empty());
    assert_eq!(store.get_demo_group("g1")?, None);
    // The other stage is untouched.
    assert_eq!(store.list_participants(&StageId::from("st-2"))?.len(), 1);
    assert!(store.get_demo_group("g2")?.is_some());
    assert!(store.delete_demo_group("g2")?);
    assert!(!store.delete_demo_group("g2")?);
    std::fs::remove_dir_all(dir)?;
    Ok(())
}

#[test]
fn public_keys_round_trip() -> anyhow::Result<()> {
    let dir = temp_dir("keys")?;
    let store = SqliteStore::open(&dir.join("db.sqlite"))?;
    let key = PublicKeyRecord {
        id: "pk-1".to_owned(),
        name: "laptop".to_owned(),
        pem: "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----".to_owned(),
        fingerprint: "aa:bb".to_owned(),
    };
    store.insert_public_key(&key)?;
    assert_eq!(store.list_public_keys()?, vec![key.clone()]);
    assert_eq!(store.find_public_key_by_fingerprint("aa:bb")?, Some(key.clone()));
    assert_eq!(store.find_public_key_by_fingerprint("cc")?, None);
    // The same key material cannot be imported twice.
    assert!(store.insert_public_key(&PublicKeyRecord { id: "pk-2".to_owned(), ..key }).is_err());
    std::fs::remove_dir_all(dir)?;
    Ok(())
}

#[test]
fn demo_groups_of_an_older_database_gain_channel_and_room() -> anyhow::Result<()> {
    let dir = temp_dir("migrate")?;
    let path = dir.join("db.sqlite");
    {
        // The demo_groups table as it was before groups had a channel and a room.
        let conn = rusqlite::Connection::open(&path)?;
        conn.execute_batch(
            "CREATE TABLE demo_groups (group_id TEXT PRIMARY KEY, stage_id TEXT NOT NULL, host_user_id TEXT NOT NULL,
                host_participant_id TEXT NOT NULL, host_attributes TEXT NOT NULL, create_time INTEGER NOT NULL);
             INSERT INTO demo_groups VALUES ('old', 'st-1', 'host', 'p1', '{}', 1);",
        )?;
    }
    let store = SqliteStore::open(&path)?;
    let old = store.get_demo_group("old")?.ok_or_else(|| anyhow::anyhow!("old group lost"))?;
    assert_eq!((old.channel_id, old.room_id), (None, None));
    let group = DemoGroupRecord {
        group_id: "new".to_owned(),
        stage_id: StageId::from("st-2"),
        host_user_id: "host".to_owned(),
        host_participant_id: ParticipantId::from("p2"),
        host_attributes: BTreeMap::new(),
        create_time: 2,
        channel_id: Some("ch-1".to_owned()),
        room_id: Some("room-1".to_owned()),
    };
    store.create_demo_group(&group)?;
    drop(store);
    // Opening again does not try to add the columns twice.
    let store = SqliteStore::open(&path)?;
    assert_eq!(store.get_demo_group("new")?, Some(group));
    std::fs::remove_dir_all(dir)?;
    Ok(())
}
