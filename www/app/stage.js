// The stage screen (/?stage=<group> or /?token=<token>): joins the stage
// with our camera and microphone and shows everyone on it. The pieces live
// beside it: the layout (stage-view.js), tiles (tiles.js), our media
// (local-media.js) and the SDK's events (stage-events.js).

import { Stage, SubscribeType } from 'stagecast';
import { api, peekToken } from './api.js';
import { showBanner } from './dom.js';
import { openLocalMedia, wireMediaButtons } from './local-media.js';
import { profile } from './profile.js';
import { forgetGroup } from './router.js';
import { describeError, errorFields, REASONS } from './stage-errors.js';
import { wireStageEvents } from './stage-events.js';
import { renderStageView } from './stage-view.js';
import { createTiles } from './tiles.js';

/**
 * Shows the stage view for `session` and joins the stage; hands `nav` the
 * controller that leaves it when the user navigates away.
 */
export async function enterStage(session, nav) {
  const claims = peekToken(session.token) || {};
  const ownName = (claims.attributes && claims.attributes.username) || profile.username || 'You';
  document.title = session.hostName ? `Stagecast — ${session.hostName}'s stage` : 'Stagecast — stage';

  const events = [];
  window.__stagecast = { stage: null, events, token: session.token, session };
  const record = (type, extra = {}) => events.push({ type, ...extra });

  const ui = renderStageView(session, nav);
  const tiles = createTiles(ui.grid, session, ownName);
  const local = await openLocalMedia(tiles, claims, ui.setHelp);
  wireMediaButtons(ui.micBtn, ui.camBtn, local);

  const stage = openStage(session, local, ui, record);
  if (!stage) return;
  window.__stagecast.stage = stage;
  if (ui.broadcast) ui.broadcast.setStage(stage);
  const presence = trackPresence(session, ui, tiles, local);
  wireStageEvents(stage, { record, ui, tiles, local, presence });
  wireLeaveButtons(stage, session, ui, presence);
  nav.setCurrent({
    leave(reason) {
      if (!presence.left) {
        stage.leave();
        presence.finish(reason);
      }
    },
  });

  try {
    await stage.join();
    record('joined');
  } catch (err) {
    record('joinFailed', errorFields(err));
    presence.finish('navigated');
    ui.statusEl.textContent = 'Not connected';
    ui.statusEl.dataset.state = 'errored';
    ui.setHelp('You are not on this stage. Check the link, or ask the host for a new invite.');
    showBanner(`Could not join the stage: ${describeError(err)}`, 'error', { code: String(err && err.code) });
  }
}

/** The SDK stage publishing `local`'s streams, or null (said to the user) when the token is refused. */
function openStage(session, local, ui, record) {
  const strategy = {
    stageStreamsToPublish() {
      return local.streams;
    },
    shouldPublishParticipant() {
      // Publish whenever there is something to publish; a watch-only token
      // gets a clear TOKEN_NOT_ALLOWED error from the SDK, shown below.
      return local.streams.length > 0;
    },
    shouldSubscribeToParticipant() {
      return SubscribeType.AUDIO_VIDEO;
    },
  };
  try {
    return new Stage(session.token, strategy);
  } catch (err) {
    record('joinFailed', errorFields(err));
    showBanner(`Could not open the stage: ${describeError(err)}`, 'error', { code: String(err && err.code) });
    ui.statusEl.textContent = 'Not connected';
    ui.statusEl.dataset.state = 'errored';
    local.stop();
    if (ui.chat) ui.chat.close();
    ui.backBtn.hidden = false;
    return null;
  }
}

/**
 * While we are on the stage: whether it is live (polled), and a warning
 * before a host's reload ends the broadcast. `finish(reason)` takes us off
 * it for good (once) and says why; `left` tells whether that happened.
 */
function trackPresence(session, ui, tiles, local) {
  let left = false;
  function setLive(live) {
    ui.liveEl.hidden = !live;
    ui.liveNote.hidden = !live;
  }
  async function checkLive() {
    try {
      const items = await api('POST', '/api/list', { groupId: session.groupId });
      const item = Array.isArray(items) ? items.find((i) => i.groupId === session.groupId) : null;
      if (!left) setLive(!!(item && item.live));
    } catch {
      // Unknown for now; the next check says.
    }
  }
  const liveTimer = session.groupId ? setInterval(checkLive, 3000) : null;
  if (session.groupId) checkLive();

  // A host's reload or closed tab would end the broadcast without a word.
  const warnBeforeUnload = (e) => {
    if (ui.broadcast && ui.broadcast.isLive()) {
      e.preventDefault();
      e.returnValue = '';
    }
  };
  window.addEventListener('beforeunload', warnBeforeUnload);

  function finish(reason) {
    if (left) return;
    left = true;
    clearInterval(liveTimer);
    setLive(false);
    window.removeEventListener('beforeunload', warnBeforeUnload);
    if (ui.broadcast) ui.broadcast.close();
    if (ui.invite) ui.invite.hidden = true;
    if (ui.chat) ui.chat.close();
    local.stop();
    tiles.removeRemote();
    ui.statusEl.textContent = 'Left';
    ui.statusEl.dataset.state = 'disconnected';
    ui.publishEl.textContent = '';
    ui.publishEl.dataset.state = 'not_published';
    for (const b of [ui.micBtn, ui.camBtn, ui.leaveBtn, ui.endBtn]) if (b) b.disabled = true;
    ui.backBtn.hidden = false;
    ui.setHelp('You are not on this stage any more.');
    if (reason !== 'navigated') {
      const text = REASONS[reason] || `You are no longer on this stage (${reason}).`;
      showBanner(text, reason === 'user-initiated' ? 'info' : 'warn', { reason: String(reason) });
    }
  }

  return {
    get left() {
      return left;
    },
    finish,
  };
}

/** "Leave", and the host's "End stage for everyone". */
function wireLeaveButtons(stage, session, ui, presence) {
  const { broadcast, endBtn } = ui;
  ui.leaveBtn.addEventListener('click', () => {
    if (broadcast && broadcast.isLive() && !confirm('You are live. Leaving ends the broadcast for its viewers. Leave the stage?')) return;
    stage.leave();
    // The SDK emits stageLeft('user-initiated'); finish() is idempotent.
    presence.finish('user-initiated');
  });
  if (!endBtn) return;
  endBtn.addEventListener('click', async () => {
    if (!confirm('End the stage for everyone? Every guest is disconnected and the stage is deleted.')) return;
    endBtn.disabled = true;
    try {
      await api('DELETE', '/api/delete', { groupId: session.groupId }, session.token);
      forgetGroup(session.groupId);
      // The server disconnects everyone with reason stage-deleted.
      setTimeout(() => {
        if (!presence.left) {
          stage.leave();
          presence.finish('stage-deleted');
        }
      }, 3000);
    } catch (err) {
      showBanner(`Could not end the stage: ${err.message}`);
      endBtn.disabled = false;
    }
  });
}
