//! The plan with a fake stage history; the SQLite table on a temp file; the
//! writer against a real hub with a store that counts its writes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use stagecast_protocol::token::{ParticipantClaims, TokenCapabilities};

use super::*;
use crate::stage::hub::PresenceChange;
use crate::stage::room::tests::member;
use crate::stage::room::StageRoom;

fn change(stage: &str, room: &StageRoom, whip_only: &[&str]) -> PresenceChange {
    PresenceChange {
        stage: StageId::from(stage),
        state: Arc::new(room.state().clone()),
        whip_only: whip_only.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn batch(changed: Vec<PresenceChange>, deleted: &[&str]) -> PresenceBatch {
    PresenceBatch { changed, deleted: deleted.iter().map(|s| StageId::from(*s)).collect() }
}

fn ids(rows: &[PresenceRow]) -> Vec<&str> {
    rows.iter().map(|r| r.id.as_str()).collect()
}

#[test]
fn the_plan_writes_a_stage_in_full_once_then_only_what_changed() {
    let mut plan = PresencePlan::default();
    let mut room = StageRoom::new(0);
    room.join(member("a"));
    room.join(member("b"));
    let writes = plan.plan(&batch(vec![change("s", &room, &[])], &[]));
    let [StageWrite::Replace { members, .. }] = writes.as_slice() else { panic!("first write is in full: {writes:?}") };
    assert_eq!(ids(members), ["a", "b"]);
    assert!(members[0].state.contains(r#""userId":"user-a""#));

    assert!(plan.plan(&batch(vec![change("s", &room, &[])], &[])).is_empty(), "nothing changed, nothing written");

    room.set_state("b", true, false);
    room.leave("a");
    room.join(member("c"));
    let writes = plan.plan(&batch(vec![change("s", &room, &[])], &[]));
    let [StageWrite::Update { upsert, remove, .. }] = writes.as_slice() else { panic!("then a delta: {writes:?}") };
    assert_eq!((ids(upsert), remove.as_slice()), (vec!["b", "c"], ["a".to_owned()].as_slice()));

    // A member turning WHIP-only (or back) rewrites the stage with the flags.
    let writes = plan.plan(&batch(vec![change("s", &room, &["c"])], &[]));
    let [StageWrite::Replace { members, .. }] = writes.as_slice() else { panic!("whip set changed: {writes:?}") };
    assert_eq!(members.iter().map(|m| m.whip_only).collect::<Vec<_>>(), [false, true]);

    // A failed write is redone in full; a deleted stage is deleted.
    plan.forget(&writes);
    assert!(matches!(plan.plan(&batch(vec![change("s", &room, &["c"])], &[])).as_slice(), [StageWrite::Replace { .. }]));
    assert_eq!(plan.plan(&batch(vec![], &["s"])), [StageWrite::Delete { stage: StageId::from("s") }]);
}

fn temp_db(name: &str) -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
    let dir = std::env::temp_dir().join(format!("stagecast-presence-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir.join("stagecast.db"))
}

fn row(id: &str, whip_only: bool) -> PresenceRow {
    PresenceRow { id: id.to_owned(), state: format!("{{\"id\":\"{id}\"}}"), whip_only }
}

#[test]
fn the_table_keeps_join_order_through_updates_and_survives_reopening() -> Result<(), Box<dyn std::error::Error>> {
    let path = temp_db("table")?;
    let store = SqlitePresence::open(&path)?;
    let (s, t) = (StageId::from("s"), StageId::from("t"));
    store.write(&[
        StageWrite::Replace { stage: s.clone(), members: vec![row("a", false), row("b", false), row("c", true)] },
        StageWrite::Replace { stage: t.clone(), members: vec![row("x", false)] },
    ])?;
    let updated = PresenceRow { state: "{\"id\":\"a\",\"audioMuted\":true}".into(), ..row("a", false) };
    store.write(&[StageWrite::Update { stage: s.clone(), upsert: vec![updated.clone(), row("d", false)], remove: vec!["b".into()] }])?;
    store.write(&[StageWrite::Delete { stage: t }])?;
    drop(store);

    let loaded = SqlitePresence::open(&path)?.load()?;
    assert_eq!(loaded.len(), 1, "{loaded:?}");
    assert_eq!(loaded[0].0, s);
    assert_eq!(loaded[0].1, [updated, row("c", true), row("d", false)]);
    if let Some(dir) = path.parent() {
        std::fs::remove_dir_all(dir)?;
    }
    Ok(())
}

/// Counts writes and keeps the rows, in memory.
#[derive(Default)]
struct Counting {
    writes: AtomicUsize,
    rows: Mutex<HashMap<StageId, Vec<PresenceRow>>>,
}

impl PresenceStore for Counting {
    fn write(&self, writes: &[StageWrite]) -> Result<(), StoreError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        let mut rows = self.rows.lock().map_err(|_| StoreError::Poisoned)?;
        for w in writes {
            match w {
                StageWrite::Delete { stage } => {
                    rows.remove(stage);
                }
                StageWrite::Replace { stage, members } => {
                    rows.insert(stage.clone(), members.clone());
                }
                StageWrite::Update { stage, upsert, remove } => {
                    let list = rows.entry(stage.clone()).or_default();
                    list.retain(|r| !remove.contains(&r.id));
                    for u in upsert {
                        match list.iter_mut().find(|r| r.id == u.id) {
                            Some(r) => *r = u.clone(),
                            None => list.push(u.clone()),
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn load(&self) -> Result<Vec<(StageId, Vec<PresenceRow>)>, StoreError> {
        let rows = self.rows.lock().map_err(|_| StoreError::Poisoned)?;
        Ok(rows.iter().map(|(s, r)| (s.clone(), r.clone())).collect())
    }

    fn load_stage(&self, stage: &StageId) -> Result<Vec<PresenceRow>, StoreError> {
        let rows = self.rows.lock().map_err(|_| StoreError::Poisoned)?;
        Ok(rows.get(stage).cloned().unwrap_or_default())
    }
}

fn claims(id: &str) -> ParticipantClaims {
    ParticipantClaims {
        topic: "s".into(),
        jti: id.into(),
        user_id: format!("user-{id}"),
        attributes: Default::default(),
        capabilities: TokenCapabilities { allow_publish: true, allow_subscribe: true },
        exp: i64::MAX,
        iat: 0,
        events_url: String::new(),
        whip_url: String::new(),
        version: "1.0".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_state_flood_is_a_few_coalesced_writes() -> Result<(), Box<dyn std::error::Error>> {
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let addr = udp.local_addr()?;
    let (sfu, events) = crate::sfu::SfuHandle::start(udp, addr);
    let hub = StageHub::new(sfu, events);
    let store = Arc::new(Counting::default());
    let writer = spawn_writer(hub.downgrade(), store.clone());

    let (a, b) = (claims("a"), claims("b"));
    let conn_a = hub.join(hub.reserve(&a, 10)?, &a);
    let _conn_b = hub.join(hub.reserve(&b, 10)?, &b);
    let (stage, participant) = (StageId::from("s"), ParticipantId::from("a"));
    let started = Instant::now();
    let mut changes = 0u32;
    while started.elapsed() < Duration::from_secs(1) {
        for _ in 0..100 {
            hub.set_state(&stage, &participant, conn_a.id, changes.is_multiple_of(2), false);
            changes += 1;
        }
        tokio::task::yield_now().await;
    }
    let last_muted = (changes - 1).is_multiple_of(2);
    tokio::time::sleep(COALESCE * 3).await;
    let elapsed = started.elapsed();

    let writes = store.writes.load(Ordering::SeqCst);
    let most = (elapsed.as_millis() / COALESCE.as_millis()) as usize + 2;
    assert!(changes > 10_000, "the flood was {changes} changes");
    assert!((1..=most).contains(&writes), "{changes} changes in {elapsed:?} became {writes} writes (at most {most})");
    // And the last state is the one stored.
    let rows = store.load()?;
    let stored: ParticipantState = serde_json::from_str(&rows[0].1[0].state)?;
    assert_eq!((stored.id.as_str(), stored.audio_muted), ("a", last_muted));
    assert_eq!(ids(&rows[0].1), ["a", "b"]);
    writer.abort();
    Ok(())
}
