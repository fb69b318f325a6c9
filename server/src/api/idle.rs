//! Idle demo groups are deleted on a schedule, as the IVS sample backend
//! does: a group whose stage has had nobody connected, and whose channel
//! has not been live, for `config.demo_idle_secs` goes away with its stage,
//! channel and chat room. Anyone may create groups, so without this they
//! would pile up forever.
//!
//! [`IdleSweep`] decides (sans-IO: what each group is doing and the time
//! in, the groups to delete out); [`spawn_idle_sweeper`] is the small tokio
//! task that feeds it from the store and the live hubs and does the deleting.

use std::collections::HashMap;
use std::time::Duration;

use crate::auth::now_unix;
use crate::store::{DemoGroupRecord, PageQuery};
use super::ApiState;
use crate::AppError;

/// What the sweeper sees of one group on one tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupActivity {
    pub group_id: String,
    /// Unix seconds.
    pub create_time: i64,
    /// Someone is connected to the group's stage, or its channel is live.
    pub busy: bool,
}

/// The decision: which groups have been idle for `idle_after` seconds.
/// A group is idle since the last tick it was seen busy; one never seen
/// busy, since its creation or since the sweep started, whichever is later
/// (after a restart everyone gets a full period to come back).
#[derive(Debug)]
pub struct IdleSweep {
    idle_after: i64,
    started: i64,
    /// Per group still present: the time its idle period started.
    idle_since: HashMap<String, i64>,
}

impl IdleSweep {
    pub fn new(idle_after_secs: u64, now: i64) -> Self {
        Self { idle_after: i64::try_from(idle_after_secs).unwrap_or(i64::MAX), started: now, idle_since: HashMap::new() }
    }

    /// Take one tick's view of every group; returns the ids of the groups
    /// to delete now. Groups missing from `groups` (deleted elsewhere) are
    /// forgotten, so memory follows the number of groups.
    pub fn tick(&mut self, groups: &[GroupActivity], now: i64) -> Vec<String> {
        let mut idle_since = HashMap::with_capacity(groups.len());
        let mut expired = Vec::new();
        for group in groups {
            let since = if group.busy {
                now
            } else {
                let remembered = self.idle_since.get(&group.group_id).copied().unwrap_or(i64::MIN);
                remembered.max(group.create_time).max(self.started)
            };
            if !group.busy && now.saturating_sub(since) >= self.idle_after {
                expired.push(group.group_id.clone());
            } else {
                idle_since.insert(group.group_id.clone(), since);
            }
        }
        self.idle_since = idle_since;
        expired
    }

    /// The group turned out busy after all (checked again right before
    /// deleting): its idle period starts over.
    pub fn keep(&mut self, group_id: &str, now: i64) {
        self.idle_since.insert(group_id.to_owned(), now);
    }
}

/// Start the sweeper when `idle` (`config.demo_idle_secs`) is not 0. It
/// ticks every tenth of the idle time (1 s to 1 min) and reaches the server
/// through `server`, which must not keep it alive: once that returns `None`
/// (the server is gone) the sweeper stops.
pub fn spawn_idle_sweeper<F>(idle: u64, server: F)
where
    F: Fn() -> Option<ApiState> + Send + 'static,
{
    if idle == 0 {
        return;
    }
    let period = Duration::from_secs((idle / 10).clamp(1, 60));
    tokio::spawn(async move {
        let mut sweep = IdleSweep::new(idle, now_unix());
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            ticker.tick().await;
            let Some(state) = server() else { return };
            if let Err(e) = sweep_once(&state, &mut sweep) {
                tracing::warn!(error = %e, "idle demo group sweep failed");
            }
        }
    });
}

fn is_busy(state: &ApiState, group: &DemoGroupRecord) -> bool {
    !state.stages.participants(&group.stage_id).is_empty()
        || group.channel_id.as_deref().is_some_and(|c| state.channels.is_live(c))
}

fn sweep_once(state: &ApiState, sweep: &mut IdleSweep) -> Result<(), AppError> {
    let mut groups = HashMap::new();
    let mut page = PageQuery::first(500);
    loop {
        let listed = state.store.list_demo_groups(page).map_err(AppError::internal)?;
        groups.extend(listed.items.into_iter().map(|g| (g.group_id.clone(), g)));
        match listed.next {
            Some(next) => page.after = Some(next),
            None => break,
        }
    }
    let activity: Vec<GroupActivity> = groups
        .values()
        .map(|g| GroupActivity { group_id: g.group_id.clone(), create_time: g.create_time, busy: is_busy(state, g) })
        .collect();
    let now = now_unix();
    for id in sweep.tick(&activity, now) {
        let Some(group) = groups.get(&id) else { continue };
        // Someone may have joined since the look above.
        if is_busy(state, group) {
            sweep.keep(&id, now);
            continue;
        }
        super::demo::remove_group(state, group)?;
        tracing::info!(group = %group.group_id, stage = %group.stage_id, "idle demo group deleted");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(id: &str, create_time: i64, busy: bool) -> GroupActivity {
        GroupActivity { group_id: id.to_owned(), create_time, busy }
    }

    #[test]
    fn an_idle_group_goes_after_the_idle_time_and_a_busy_one_stays() {
        let t0 = 1_000_000;
        let mut sweep = IdleSweep::new(1800, t0);
        // Created at t0: idle from then on.
        assert!(sweep.tick(&[group("quiet", t0, false), group("busy", t0, true)], t0 + 60).is_empty());
        assert!(sweep.tick(&[group("quiet", t0, false), group("busy", t0, true)], t0 + 1799).is_empty());
        assert_eq!(sweep.tick(&[group("quiet", t0, false), group("busy", t0, true)], t0 + 1800), vec!["quiet"]);
        // The busy one stays as long as it is busy, and goes a full period after it empties.
        assert!(sweep.tick(&[group("busy", t0, true)], t0 + 5000).is_empty());
        assert!(sweep.tick(&[group("busy", t0, false)], t0 + 5001).is_empty());
        assert!(sweep.tick(&[group("busy", t0, false)], t0 + 5000 + 1799).is_empty());
        assert_eq!(sweep.tick(&[group("busy", t0, false)], t0 + 5000 + 1800), vec!["busy"]);
    }

    #[test]
    fn a_restart_gives_old_groups_a_full_period() {
        let started = 2_000_000;
        let mut sweep = IdleSweep::new(600, started);
        // Created long before this process started: idle counts from the start.
        let old = [group("old", started - 86_400, false)];
        assert!(sweep.tick(&old, started + 1).is_empty());
        assert!(sweep.tick(&old, started + 599).is_empty());
        assert_eq!(sweep.tick(&old, started + 600), vec!["old"]);
    }

    #[test]
    fn a_short_visit_restarts_the_clock_and_gone_groups_are_forgotten() {
        let t0 = 3_000_000;
        let mut sweep = IdleSweep::new(100, t0);
        assert!(sweep.tick(&[group("g", t0, false), group("h", t0, false)], t0 + 90).is_empty());
        // Someone drops by between ticks long enough to be seen once.
        assert!(sweep.tick(&[group("g", t0, true), group("h", t0, false)], t0 + 95).is_empty());
        assert_eq!(sweep.tick(&[group("g", t0, false), group("h", t0, false)], t0 + 100), vec!["h"]);
        assert!(sweep.tick(&[group("g", t0, false)], t0 + 194).is_empty());
        assert_eq!(sweep.tick(&[group("g", t0, false)], t0 + 195), vec!["g"]);
        assert!(sweep.idle_since.is_empty());
        // Re-checked busy right before deletion: the period starts over.
        assert_eq!(sweep.tick(&[group("k", t0, false)], t0 + 500), vec!["k"]);
        sweep.keep("k", t0 + 500);
        assert!(sweep.tick(&[group("k", t0, false)], t0 + 599).is_empty());
        assert_eq!(sweep.tick(&[group("k", t0, false)], t0 + 600), vec!["k"]);
    }
}
