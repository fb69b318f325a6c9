// The visitor's profile (name, avatar, a stable user id), kept in this
// browser's localStorage, and the form that edits it.

import { AVATARS, DEFAULT_AVATAR } from './avatars.js';
import { h } from './dom.js';

const PROFILE_KEY = 'stagecast.profile';

function loadProfile() {
  let stored = {};
  try {
    stored = JSON.parse(localStorage.getItem(PROFILE_KEY) || '{}') || {};
  } catch {
    stored = {};
  }
  const loaded = {
    userId: typeof stored.userId === 'string' && stored.userId ? stored.userId : crypto.randomUUID(),
    username: typeof stored.username === 'string' ? stored.username : '',
    avatarUrl: AVATARS.includes(stored.avatarUrl) ? stored.avatarUrl : DEFAULT_AVATAR,
  };
  saveProfile(loaded);
  return loaded;
}

function saveProfile(p) {
  localStorage.setItem(PROFILE_KEY, JSON.stringify(p));
  const who = document.querySelector('[data-testid="whoami"]');
  if (who) {
    who.replaceChildren(
      p.username
        ? h('span', {}, h('img', { class: 'avatar small', src: p.avatarUrl, alt: '' }), p.username)
        : '',
    );
  }
}

/** This browser's profile; the form below edits it in place. */
export const profile = loadProfile();

/** The name + avatar picker; `onChange` runs after every edit. */
export function profileForm(onChange = () => {}) {
  const input = h('input', {
    id: 'username',
    type: 'text',
    maxlength: 32,
    placeholder: 'e.g. Alex',
    autocomplete: 'nickname',
    value: profile.username,
    'data-testid': 'username-input',
    onInput: (e) => {
      profile.username = e.target.value.trim().slice(0, 32);
      saveProfile(profile);
      onChange();
    },
  });
  const choices = AVATARS.map((url, i) =>
    h(
      'button',
      {
        type: 'button',
        class: 'avatar-choice',
        'aria-pressed': String(url === profile.avatarUrl),
        'aria-label': `Avatar ${i + 1}`,
        'data-testid': 'avatar-option',
        'data-avatar': i,
        onClick: (e) => {
          profile.avatarUrl = url;
          saveProfile(profile);
          for (const b of e.currentTarget.parentElement.children) b.setAttribute('aria-pressed', 'false');
          e.currentTarget.setAttribute('aria-pressed', 'true');
          onChange();
        },
      },
      h('img', { class: 'avatar', src: url, alt: '' }),
    ),
  );
  return h(
    'section',
    { class: 'card', 'data-testid': 'profile' },
    h('h2', {}, 'Your profile'),
    h('p', { class: 'help' }, 'Pick a name and an avatar. Everyone on a stage sees them on your tile. They are saved in this browser.'),
    h('label', { for: 'username' }, 'Name'),
    input,
    h('div', { class: 'label' }, 'Avatar'),
    h('div', { class: 'avatar-row', role: 'group', 'aria-label': 'Avatar' }, choices),
  );
}

export function needName() {
  return !profile.username;
}
