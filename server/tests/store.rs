//! Store round trips: every body runs against SQLite (a real file) and
//! Redis (a real `redis-server`), see [`both!`]; SQLite's migrations and
//! file modes have tests of their own.

use std::collections::BTreeMap;

use stagecast_protocol::token::TokenCapabilities;
use stagecast_protocol::{ParticipantId, StageId};
use stagecast_server::store::{
    DemoGroupRecord, PageQuery, ParticipantRecord, PublicKeyRecord, SqliteStore, StageRecord, Store,
};

mod common;
use common::redis::Backend;
use common::temp_dir;

both!(
    stages_round_trip_and_survive_reopen,
    participants_join_and_revoke,
    deleting_a_stage_removes_its_participants_and_groups,
    public_keys_round_trip,
    listings_page_without_repeats_or_gaps,
    demo_groups_page_newest_first,
);

/// A page big enough for everything these tests store.
const ALL: PageQuery = PageQuery { after: None, limit: 100 };

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

fn stages_round_trip_and_survive_reopen(backend: &Backend) -> anyhow::Result<()> {
    {
        let store = backend.store()?;
        store.create_stage(&stage("st-b", 20))?;
        store.create_stage(&stage("st-a", 10))?;
        assert_eq!(store.get_stage(&StageId::from("st-a"))?, Some(stage("st-a", 10)));
        assert_eq!(store.get_stage(&StageId::from("nope"))?, None);
        // Duplicate ids are refused, not silently merged.
        assert!(store.create_stage(&stage("st-a", 30)).is_err());
    }
    let store = backend.store()?;
    // In the order they were made (the server stamps create_time with the time of making).
    let ids: Vec<_> = store.list_stages(ALL)?.items.into_iter().map(|s| s.id.0).collect();
    assert_eq!(ids, vec!["st-b", "st-a"]);
    Ok(())
}

fn participants_join_and_revoke(backend: &Backend) -> anyhow::Result<()> {
    let store = backend.store()?;
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
    let listed = store.list_participants(&StageId::from("st-1"), ALL)?.items;
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
    Ok(())
}

fn deleting_a_stage_removes_its_participants_and_groups(backend: &Backend) -> anyhow::Result<()> {
    let store = backend.store()?;
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
    let gids: Vec<_> = store.list_demo_groups(ALL)?.items.into_iter().map(|g| g.group_id).collect();
    assert_eq!(gids, vec!["g2", "g1"]);

    assert!(store.delete_stage(&StageId::from("st-1"))?);
    assert!(!store.delete_stage(&StageId::from("st-1"))?);
    assert_eq!(store.get_stage(&StageId::from("st-1"))?, None);
    assert!(store.list_participants(&StageId::from("st-1"), ALL)?.items.is_empty());
    assert_eq!(store.get_demo_group("g1")?, None);
    // The other stage is untouched.
    assert_eq!(store.list_participants(&StageId::from("st-2"), ALL)?.items.len(), 1);
    assert!(store.get_demo_group("g2")?.is_some());
    assert!(store.delete_demo_group("g2")?);
    assert!(!store.delete_demo_group("g2")?);
    Ok(())
}

fn public_keys_round_trip(backend: &Backend) -> anyhow::Result<()> {
    let store = backend.store()?;
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

fn listings_page_without_repeats_or_gaps(backend: &Backend) -> anyhow::Result<()> {
    let store = backend.store()?;
    for i in 0..7 {
        store.create_stage(&stage(&format!("st-{i}"), i))?;
    }
    let first = store.list_stages(PageQuery::first(3))?;
    let ids = |page: &[StageRecord]| page.iter().map(|s| s.id.0.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&first.items), ["st-0", "st-1", "st-2"]);
    let after = first.next.ok_or_else(|| anyhow::anyhow!("a next page"))?;
    // Removing a row already listed and adding one later shifts nothing.
    store.delete_stage(&StageId::from("st-1"))?;
    store.create_stage(&stage("st-7", 7))?;
    let second = store.list_stages(PageQuery { after: Some(after), limit: 3 })?;
    assert_eq!(ids(&second.items), ["st-3", "st-4", "st-5"]);
    let third = store.list_stages(PageQuery { after: second.next, limit: 3 })?;
    assert_eq!(ids(&third.items), ["st-6", "st-7"]);
    assert_eq!(third.next, None, "a short page is the last");
    // A page that ends exactly at the last row says so too.
    let exact = store.list_stages(PageQuery { after: second.next, limit: 2 })?;
    assert_eq!((exact.items.len(), exact.next), (2, None));
    Ok(())
}

fn demo_groups_page_newest_first(backend: &Backend) -> anyhow::Result<()> {
    let store = backend.store()?;
    let group = |i: i64| DemoGroupRecord {
        group_id: format!("g{i}"),
        stage_id: StageId::from(format!("st-{i}").as_str()),
        host_user_id: "host".to_owned(),
        host_participant_id: ParticipantId::from("p1"),
        host_attributes: BTreeMap::new(),
        create_time: i,
        channel_id: None,
        room_id: Some(format!("room-{i}")),
    };
    for i in 0..5 {
        store.create_demo_group(&group(i))?;
    }
    // A group id is taken once.
    assert!(store.create_demo_group(&group(4)).is_err());
    let ids = |page: &[DemoGroupRecord]| page.iter().map(|g| g.group_id.clone()).collect::<Vec<_>>();
    let first = store.list_demo_groups(PageQuery::first(2))?;
    assert_eq!(ids(&first.items), ["g4", "g3"]);
    // A newer group goes first and does not enter later pages; a removed one leaves no gap.
    store.create_demo_group(&group(5))?;
    assert!(store.delete_demo_group("g2")?);
    let second = store.list_demo_groups(PageQuery { after: first.next, limit: 2 })?;
    assert_eq!(ids(&second.items), ["g1", "g0"]);
    assert_eq!(second.next, None);
    assert_eq!(store.get_demo_group("g5")?, Some(group(5)));
    Ok(())
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> anyhow::Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
}

#[cfg(unix)]
#[tokio::test]
async fn a_fresh_data_dir_and_its_database_are_owner_only() -> anyhow::Result<()> {
    let parent = temp_dir("private-fresh")?;
    let data = parent.join("nested").join("data");
    let server = common::Server::start_in(data.clone()).await?;
    // A write, so SQLite has its -wal and -shm files open.
    server.post("/v1/stages", serde_json::json!({"name": "secret"})).await?;
    assert_eq!(mode(&data)?, 0o700, "data dir");
    for file in ["stagecast.db", "stagecast.db-wal", "stagecast.db-shm", "api-key", "signing-key.pem"] {
        assert_eq!(mode(&data.join(file))?, 0o600, "{file}");
    }
    server.stop()?;
    std::fs::remove_dir_all(parent)?;
    Ok(())
}

#[cfg(unix)]
#[tokio::test]
async fn a_data_dir_open_to_others_is_tightened_at_start() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let data = temp_dir("private-wide")?;
    {
        // What an older version left: a world-readable dir and database.
        let store = SqliteStore::open(&data.join("stagecast.db"))?;
        store.create_stage(&stage("st-old", 1))?;
    }
    for (path, wide) in [(data.clone(), 0o755), (data.join("stagecast.db"), 0o644)] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(wide))?;
    }
    std::fs::write(data.join("stagecast.db-wal"), b"")?;
    std::fs::set_permissions(data.join("stagecast.db-wal"), std::fs::Permissions::from_mode(0o644))?;
    let server = common::Server::start_in(data.clone()).await?;
    assert_eq!(mode(&data)?, 0o700, "data dir");
    assert_eq!(mode(&data.join("stagecast.db"))?, 0o600);
    assert_eq!(mode(&data.join("stagecast.db-wal"))?, 0o600);
    // Nothing was lost on the way.
    let stage = server.ok(reqwest::Method::GET, "/v1/stages/st-old", None).await?;
    assert_eq!(stage["stage"]["name"], "name of st-old");
    server.stop()
}
