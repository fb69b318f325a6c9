// The invite screen (/?join=<group>): set a name and avatar, then join.

import { api } from './api.js';
import { h, view } from './dom.js';
import { joinGroup } from './home.js';
import { needName, profileForm } from './profile.js';

export async function renderInvite(groupId, nav) {
  document.title = 'Stagecast — invitation';
  const title = h('h2', { 'data-testid': 'invite-title' }, "You're invited to a stage");
  const joinBtn = h('button', {
    class: 'primary',
    'data-testid': 'join-button',
    text: 'Join stage',
    disabled: needName(),
    onClick: () => joinGroup(groupId, hostName, joinBtn, nav),
  });
  const hint = h('p', { class: 'hint' });
  // Said before joining: a guest of a live stage is seen by its audience.
  const liveNotice = h('p', { class: 'live-notice', 'data-testid': 'invite-live', hidden: true },
    h('span', { class: 'badge live' }, 'LIVE'),
    ' This stage is live to an audience: viewers of the broadcast will see and hear you once you join.');
  let hostName = null;
  const refresh = () => {
    joinBtn.disabled = needName();
    hint.textContent = needName() ? 'Enter your name to join.' : 'Your camera and microphone will be shared with the stage.';
  };
  refresh();
  view.replaceChildren(
    h('div', { class: 'narrow' },
      h('section', { class: 'card invite' },
        title,
        liveNotice,
        h('p', { class: 'help' }, 'Set your name and avatar, then press “Join stage”. Your browser will ask to use your camera and microphone.'),
      ),
      profileForm(refresh),
      h('section', { class: 'card' }, joinBtn, hint),
    ),
  );
  try {
    // Asked by id: the list comes a page at a time, this group may not be on the first.
    const items = await api('POST', '/api/list', { groupId });
    const item = Array.isArray(items) ? items.find((i) => i.groupId === groupId) : null;
    if (item) {
      hostName = (item.stageAttributes && item.stageAttributes.username) || null;
      if (hostName) title.textContent = `${hostName} invited you to their stage`;
      liveNotice.hidden = !item.live;
    } else if (Array.isArray(items)) {
      hint.textContent = 'This stage was not found in the list; it may have ended.';
    }
  } catch {
    // The list is only for the title; joining still works without it.
  }
}
