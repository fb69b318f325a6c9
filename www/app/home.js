// The home screen: the profile, "Create a new stage", and the list of stages
// on this server (refreshed every 5 s while it shows). Also joining a group,
// which the invite screen shares.

import { api } from './api.js';
import { safeAvatar } from './avatars.js';
import { h, showBanner, view } from './dom.js';
import { needName, profile, profileForm } from './profile.js';
import { forgetHostKey, hostKeyFor } from './router.js';

let listTimer = null;

/** Stops refreshing the stage list (another screen is showing). */
export function stopStageList() {
  clearInterval(listTimer);
}

export function renderHome(nav) {
  stopStageList();
  document.title = 'Stagecast — stages';
  const createBtn = h('button', {
    class: 'primary',
    'data-testid': 'create-stage',
    text: 'Create a new stage',
    onClick: async () => {
      if (needName()) {
        showBanner('Please enter your name first.', 'warn');
        return;
      }
      createBtn.disabled = true;
      createBtn.textContent = 'Creating…';
      try {
        const res = await api('POST', '/api/create', {
          userId: profile.userId,
          attributes: { username: profile.username, avatarUrl: profile.avatarUrl },
        });
        nav.startSession(res, true, profile.username);
      } catch (err) {
        showBanner(`Could not create a stage: ${err.message}`);
        createBtn.disabled = false;
        createBtn.textContent = 'Create a new stage';
      }
    },
  });
  const createHint = h('p', { class: 'hint', 'data-testid': 'create-hint' });
  const list = h('ul', { class: 'stage-list', 'data-testid': 'stage-list' });
  const refresh = () => {
    createHint.textContent = needName() ? 'Enter your name above to create or join a stage.' : '';
  };
  refresh();

  view.replaceChildren(
    h('div', { class: 'home' },
      profileForm(refresh),
      h('section', { class: 'card' },
        h('h2', {}, 'Start a stage'),
        h('p', { class: 'help' }, 'A stage is a live video room for up to 12 people. Create one, then send the invite link to your guests.'),
        createBtn,
        createHint,
      ),
      h('section', { class: 'card wide' },
        h('div', { class: 'row' },
          h('h2', {}, 'Stages'),
          h('button', { class: 'ghost', 'data-testid': 'refresh-stages', text: 'Refresh', onClick: () => loadList(list, nav) }),
        ),
        h('p', { class: 'help' }, 'Stages on this server. Join one to see and hear its participants.'),
        list,
      ),
    ),
  );
  loadList(list, nav);
  listTimer = setInterval(() => {
    if (!document.body.contains(list)) clearInterval(listTimer);
    else loadList(list, nav);
  }, 5000);
}

async function loadList(list, nav) {
  let items;
  try {
    items = await api('POST', '/api/list');
  } catch (err) {
    list.replaceChildren(h('li', { class: 'empty error-text', 'data-testid': 'stage-list-error' }, `Could not load stages: ${err.message}`));
    return;
  }
  if (!Array.isArray(items) || items.length === 0) {
    list.replaceChildren(h('li', { class: 'empty', 'data-testid': 'stage-list-empty' }, 'No stages yet. Create the first one!'));
    return;
  }
  // Busy stages first; the sort is stable, so the server's order holds otherwise.
  const sorted = [...items].sort((a, b) => (Number(b.participantCount) || 0) - (Number(a.participantCount) || 0));
  list.replaceChildren(...sorted.map((item) => stageItem(item, nav)));
}

function stageItem(item, nav) {
  const attrs = item.stageAttributes || {};
  const host = attrs.username || 'Someone';
  const count = Number(item.participantCount) || 0;
  return h(
    'li',
    { class: 'stage-item', 'data-testid': 'stage-item', 'data-group-id': item.groupId },
    h('img', { class: 'avatar', src: safeAvatar(attrs.avatarUrl), alt: '' }),
    h('div', { class: 'grow' },
      h('div', { class: 'title' },
        h('span', { 'data-testid': 'stage-host' }, `${host}'s stage`),
        item.live ? h('span', { class: 'badge live', 'data-testid': 'live-badge' }, 'LIVE') : null,
      ),
      h('div', { class: 'muted', 'data-testid': 'stage-count' }, `${count} ${count === 1 ? 'participant' : 'participants'}`),
    ),
    item.live
      ? h('a', {
        class: 'button ghost',
        'data-testid': 'stage-watch',
        href: `/watch/${encodeURIComponent(item.groupId)}`,
        text: 'Watch',
      })
      : null,
    h('button', {
      class: 'primary',
      'data-testid': 'stage-join',
      'data-group-id': item.groupId,
      text: 'Join',
      onClick: (e) => joinGroup(item.groupId, host, e.currentTarget, nav),
    }),
  );
}

/** Joins a group (as its host when this browser keeps its host key) and opens the stage. */
export async function joinGroup(groupId, hostName, button, nav) {
  if (needName()) {
    showBanner('Please enter your name first.', 'warn');
    return;
  }
  if (button) button.disabled = true;
  try {
    const hostKey = hostKeyFor(groupId);
    const res = await api('POST', '/api/join', {
      groupId,
      userId: profile.userId,
      attributes: { username: profile.username, avatarUrl: profile.avatarUrl },
      ...(hostKey ? { hostKey } : {}),
    });
    nav.startSession(res, false, hostName);
  } catch (err) {
    // A refused host key (the host was removed) is forgotten: next time as a guest.
    if (err.status === 403 && hostKeyFor(groupId)) forgetHostKey(groupId);
    const reason = err.status === 404 ? 'this stage no longer exists.' : err.message;
    showBanner(`Could not join: ${reason}`);
    if (button) button.disabled = false;
  }
}
