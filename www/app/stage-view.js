// The stage view's layout: title and statuses, the invite link, the host's
// go-live panel, the tile grid with its controls, and the chat panel.

import { peekToken } from './api.js';
import { broadcastPanel } from './broadcast.js';
import { chatPanel } from './chat.js';
import { h, view } from './dom.js';

/** An "Invite guests" box with the group's link and a Copy button. */
function inviteBox(groupId) {
  const link = `${location.origin}/?join=${encodeURIComponent(groupId)}`;
  const input = h('input', { type: 'text', readonly: true, value: link, 'data-testid': 'invite-link', 'aria-label': 'Invite link', onFocus: (e) => e.target.select() });
  const copyBtn = h('button', {
    class: 'ghost',
    'data-testid': 'copy-invite',
    text: 'Copy link',
    onClick: async () => {
      try {
        await navigator.clipboard.writeText(link);
        copyBtn.textContent = 'Copied!';
      } catch {
        input.select();
        copyBtn.textContent = 'Press Ctrl+C to copy';
      }
      setTimeout(() => (copyBtn.textContent = 'Copy link'), 2500);
    },
  });
  return h('div', { class: 'invite-box', 'data-testid': 'invite' },
    h('label', {}, 'Invite guests — send them this link:'),
    h('div', { class: 'row' }, input, copyBtn),
  );
}

function helpText(session) {
  if (!session.isHost) return 'Your camera and microphone are live for everyone on this stage. Use the buttons below to mute or leave.';
  return session.chat
    ? 'You are the host. Your camera and microphone are live for everyone here. You can remove guests from their tiles, and delete chat messages or remove people from the chat.'
    : 'You are the host. Your camera and microphone are live for everyone here. You can remove guests from their tiles.';
}

/**
 * Builds the stage view into the page (connecting the chat room, if the
 * session has one) and returns its parts for the stage controller.
 */
export function renderStageView(session, nav) {
  const statusEl = h('span', { class: 'status', 'data-testid': 'connection-state', 'data-state': 'connecting' }, 'Connecting…');
  const publishEl = h('span', { class: 'status subtle', 'data-testid': 'publish-state', 'data-state': 'not_published' }, '');
  // Everyone on the stage is told when it is broadcast (the list says; polled).
  const liveEl = h('span', { class: 'badge live', 'data-testid': 'stage-live', hidden: true, title: 'This stage is broadcast to an audience' }, 'LIVE');
  const liveNote = h('p', { class: 'live-notice', 'data-testid': 'stage-live-note', hidden: true },
    'This stage is live: viewers of the broadcast see and hear everyone on it.');
  const grid = h('div', { class: 'grid', 'data-testid': 'grid', 'data-count': 0 });
  const micBtn = h('button', { class: 'control', 'data-testid': 'toggle-mic', 'aria-pressed': 'false', disabled: true }, 'Mute mic');
  const camBtn = h('button', { class: 'control', 'data-testid': 'toggle-camera', 'aria-pressed': 'false', disabled: true }, 'Stop camera');
  const leaveBtn = h('button', { class: 'control danger', 'data-testid': 'leave-button' }, 'Leave');
  const endBtn = session.isHost
    ? h('button', { class: 'control danger outline', 'data-testid': 'end-stage', title: 'Deletes the stage and disconnects everyone' }, 'End stage for everyone')
    : null;
  const backBtn = h('button', { class: 'primary', 'data-testid': 'back-home', hidden: true, onClick: () => nav.navigate('/') }, 'Back to stages');
  // Browsers refuse to autoplay sound until the user interacts with the page
  // (e.g. after a reload); then remote tiles play muted until this is clicked.
  const soundBtn = h('button', {
    class: 'control',
    'data-testid': 'enable-sound',
    hidden: true,
    onClick: () => {
      for (const v of view.querySelectorAll('[data-testid="tile"][data-local="false"] video')) {
        v.muted = false;
        v.play().catch(() => {});
      }
      soundBtn.hidden = true;
    },
  }, 'Turn on sound');
  function playWithSound(video) {
    video.play().catch(() => {
      video.muted = true;
      video.play().catch(() => {});
      soundBtn.hidden = false;
    });
  }

  const broadcast = session.isHost && session.channel ? broadcastPanel(session) : null;
  // The server chooses chat ids (our participant id); it is in the chat token.
  const chatId = session.chat && session.chat.token ? (peekToken(session.chat.token) || {}).user_id : null;
  const chat = session.chat && session.chat.token ? chatPanel(session, chatId) : null;
  if (chat) window.__stagecast.chat = chat.room;
  const invite = session.groupId ? inviteBox(session.groupId) : null;

  const hostName = session.hostName;
  view.replaceChildren(
    h('div', { class: 'stage-view', 'data-testid': 'stage-view' },
      h('div', { class: 'stage-head' },
        h('div', {},
          h('h1', { 'data-testid': 'stage-title' }, hostName ? `${hostName}'s stage` : 'Stage'),
          h('p', { class: 'help', 'data-testid': 'stage-help' }, helpText(session)),
          liveNote,
        ),
        h('div', { class: 'statuses' }, liveEl, statusEl, publishEl),
      ),
      invite,
      broadcast ? broadcast.panel : null,
      h('div', { class: chat ? 'stage-body with-chat' : 'stage-body' },
        h('div', { class: 'stage-main' },
          grid,
          h('div', { class: 'controls', 'data-testid': 'controls' }, soundBtn, micBtn, camBtn, leaveBtn, endBtn, backBtn),
        ),
        chat ? chat.panel : null,
      ),
    ),
  );

  const setHelp = (text) => {
    const el = view.querySelector('[data-testid="stage-help"]');
    if (el) el.textContent = text;
  };
  return {
    statusEl, publishEl, liveEl, liveNote, grid, micBtn, camBtn, leaveBtn, endBtn, backBtn,
    broadcast, chat, invite, setHelp, playWithSound,
  };
}
