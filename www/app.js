// Stagecast sample app: pick a profile, list/create stages, join from an
// invite link, and talk on a stage. It uses the `stagecast` package exactly
// as any app would (see the import map in index.html) and the demo backend
// (/api/*) that mirrors the IVS multi-host sample backend.

import {
  Stage,
  StageEvents,
  SubscribeType,
  LocalStageStream,
  StageConnectionState,
  StreamType,
  BASIC_LANDSCAPE,
  ConnectionState,
  BroadcastClientEvents,
  ChatRoom,
  SendMessageRequest,
  DeleteMessageRequest,
  DisconnectUserRequest,
} from 'stagecast';
import IVSBroadcastClient from 'stagecast';
import { AVATARS, DEFAULT_AVATAR, safeAvatar } from './avatars.js';

// ---------------------------------------------------------------- helpers

/** Creates an element; `attrs` keys starting with "on" become listeners. */
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      node.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === 'class') {
      node.className = value;
    } else if (key === 'text') {
      node.textContent = value;
    } else if (key in node && typeof value !== 'string') {
      node[key] = value;
    } else {
      node.setAttribute(key, value === true ? '' : String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const view = document.getElementById('view');
const bannerEl = document.getElementById('banner');

/** Shows a message across the top. kind: "error" | "info" | "warn". */
// Attributes a banner may carry for tests and styling (data-kind, data-reason...).
const BANNER_KEYS = ['kind', 'reason', 'code', 'category'];

function showBanner(text, kind = 'error', extra = {}) {
  for (const k of BANNER_KEYS) delete bannerEl.dataset[k];
  bannerEl.hidden = false;
  bannerEl.dataset.kind = kind;
  for (const [k, v] of Object.entries(extra)) if (BANNER_KEYS.includes(k)) bannerEl.dataset[k] = v;
  bannerEl.querySelector('.banner-text').textContent = text;
}

function hideBanner() {
  bannerEl.hidden = true;
  bannerEl.querySelector('.banner-text').textContent = '';
  for (const k of BANNER_KEYS) delete bannerEl.dataset[k];
}

bannerEl.querySelector('.banner-close').addEventListener('click', hideBanner);

/** Calls the demo backend; throws an Error carrying the server's {code, message}. */
async function api(method, path, body, token) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw Object.assign(new Error('The server cannot be reached. Is it running?'), { code: 'NETWORK' });
  }
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) {
    const message = data && data.message ? data.message : `${res.status} ${res.statusText}`;
    throw Object.assign(new Error(message), { code: (data && data.code) || String(res.status), status: res.status });
  }
  return data;
}

/** Reads the (unverified) claims of a participant token, for display only. */
function peekToken(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const json = decodeURIComponent(
      Array.from(atob(part), (c) => '%' + c.charCodeAt(0).toString(16).padStart(2, '0')).join(''),
    );
    return JSON.parse(json);
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------- profile

const PROFILE_KEY = 'stagecast.profile';

function loadProfile() {
  let stored = {};
  try {
    stored = JSON.parse(localStorage.getItem(PROFILE_KEY) || '{}') || {};
  } catch {
    stored = {};
  }
  const profile = {
    userId: typeof stored.userId === 'string' && stored.userId ? stored.userId : crypto.randomUUID(),
    username: typeof stored.username === 'string' ? stored.username : '',
    avatarUrl: AVATARS.includes(stored.avatarUrl) ? stored.avatarUrl : DEFAULT_AVATAR,
  };
  saveProfile(profile);
  return profile;
}

function saveProfile(profile) {
  localStorage.setItem(PROFILE_KEY, JSON.stringify(profile));
  const who = document.querySelector('[data-testid="whoami"]');
  if (who) {
    who.replaceChildren(
      profile.username
        ? h('span', {}, h('img', { class: 'avatar small', src: profile.avatarUrl, alt: '' }), profile.username)
        : '',
    );
  }
}

const profile = loadProfile();

/** The name + avatar picker; `onChange` runs after every edit. */
function profileForm(onChange = () => {}) {
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

function needName() {
  return !profile.username;
}

// ---------------------------------------------------------------- routing

const SESSION_PREFIX = 'stagecast.session.';

function navigate(search) {
  history.pushState(null, '', search || '/');
  route();
}

window.addEventListener('popstate', route);

let current = null; // the live stage controller, if any

function route() {
  if (current) {
    current.leave('navigated');
    current = null;
  }
  const params = new URLSearchParams(location.search);
  if (params.get('token')) {
    enterStage({ token: params.get('token'), groupId: null, isHost: false, hostName: null });
  } else if (params.get('stage')) {
    const groupId = params.get('stage');
    let session = null;
    try {
      session = JSON.parse(sessionStorage.getItem(SESSION_PREFIX + groupId) || 'null');
    } catch {
      session = null;
    }
    if (session && session.token) enterStage(session);
    else navigate('?join=' + encodeURIComponent(groupId));
  } else if (params.get('join')) {
    renderInvite(params.get('join'));
  } else {
    renderHome();
  }
}

function startSession(response, isHost, hostName) {
  const session = {
    groupId: response.groupId,
    token: response.stage.token,
    participantId: response.stage.participantId,
    stageId: response.stage.id,
    isHost,
    hostName,
    // Only the host gets a channel (with its stream key) from the backend.
    channel: isHost && response.channel ? response.channel : null,
    // The group's chat room and this member's chat token (host: moderator).
    chat: response.chat && response.chat.token ? { id: response.chat.id, token: response.chat.token } : null,
  };
  sessionStorage.setItem(SESSION_PREFIX + session.groupId, JSON.stringify(session));
  hideBanner();
  navigate('?stage=' + encodeURIComponent(session.groupId));
}

// ---------------------------------------------------------------- home

let listTimer = null;

function renderHome() {
  clearInterval(listTimer);
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
        startSession(res, true, profile.username);
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
          h('button', { class: 'ghost', 'data-testid': 'refresh-stages', text: 'Refresh', onClick: () => loadList(list) }),
        ),
        h('p', { class: 'help' }, 'Stages on this server. Join one to see and hear its participants.'),
        list,
      ),
    ),
  );
  loadList(list);
  listTimer = setInterval(() => {
    if (!document.body.contains(list)) clearInterval(listTimer);
    else loadList(list);
  }, 5000);
}

async function loadList(list) {
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
  list.replaceChildren(
    ...sorted.map((item) => {
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
            href: `/watch.html?group=${encodeURIComponent(item.groupId)}`,
            text: 'Watch',
          })
          : null,
        h('button', {
          class: 'primary',
          'data-testid': 'stage-join',
          'data-group-id': item.groupId,
          text: 'Join',
          onClick: (e) => joinGroup(item.groupId, host, e.currentTarget),
        }),
      );
    }),
  );
}

async function joinGroup(groupId, hostName, button) {
  if (needName()) {
    showBanner('Please enter your name first.', 'warn');
    return;
  }
  if (button) button.disabled = true;
  try {
    const res = await api('POST', '/api/join', {
      groupId,
      userId: profile.userId,
      attributes: { username: profile.username, avatarUrl: profile.avatarUrl },
    });
    startSession(res, false, hostName);
  } catch (err) {
    const reason = err.status === 404 ? 'this stage no longer exists.' : err.message;
    showBanner(`Could not join: ${reason}`);
    if (button) button.disabled = false;
  }
}

// ---------------------------------------------------------------- invite

async function renderInvite(groupId) {
  clearInterval(listTimer);
  document.title = 'Stagecast — invitation';
  const title = h('h2', { 'data-testid': 'invite-title' }, "You're invited to a stage");
  const joinBtn = h('button', {
    class: 'primary',
    'data-testid': 'join-button',
    text: 'Join stage',
    disabled: needName(),
    onClick: () => joinGroup(groupId, hostName, joinBtn),
  });
  const hint = h('p', { class: 'hint' });
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
        h('p', { class: 'help' }, 'Set your name and avatar, then press “Join stage”. Your browser will ask to use your camera and microphone.'),
      ),
      profileForm(refresh),
      h('section', { class: 'card' }, joinBtn, hint),
    ),
  );
  try {
    const items = await api('POST', '/api/list');
    const item = Array.isArray(items) ? items.find((i) => i.groupId === groupId) : null;
    if (item) {
      hostName = (item.stageAttributes && item.stageAttributes.username) || null;
      if (hostName) title.textContent = `${hostName} invited you to their stage`;
    } else if (Array.isArray(items)) {
      hint.textContent = 'This stage was not found in the list; it may have ended.';
    }
  } catch {
    // The list is only for the title; joining still works without it.
  }
}

// ---------------------------------------------------------------- stage

const REASONS = {
  'participant-disconnected': 'You were removed from this stage by the host.',
  'stage-deleted': 'This stage has ended.',
  'token-expired': 'Your access to this stage has expired.',
  'token-reused': 'You joined this stage from another tab or window, so this one was disconnected.',
  'user-initiated': 'You left the stage.',
  'failed-exchange': 'Your access to the stage could not be renewed.',
};

const ERROR_NAMES = {
  1: 'TOKEN_MALFORMED',
  2: 'TOKEN_EXPIRED',
  3: 'TIMEOUT',
  4: 'FAILED',
  5: 'CANCELED',
  6: 'STAGE_AT_CAPACITY',
  7: 'CODEC_MISMATCH',
  8: 'TOKEN_NOT_ALLOWED',
  9: 'STAGE_DELETED',
  10: 'PARTICIPANT_DISCONNECTED',
};

const ERROR_HINTS = {
  1: 'The token is not valid (malformed or tampered with).',
  2: 'The token has expired. Ask for a new invite.',
  3: 'The server took too long to answer.',
  6: 'The stage is full (12 people can publish at once).',
  7: 'Your browser and the server have no video/audio codec in common.',
  8: 'Your token does not allow publishing, so your camera and microphone are not shared. You can still watch and listen.',
  9: 'This stage has been deleted.',
  10: 'You were removed from this stage, so this invite can no longer be used.',
};

/** A one-line human description of an SDK StageError (or any Error). */
function describeError(err) {
  if (!err) return 'Unknown error.';
  const code = typeof err.code === 'number' ? err.code : Number(err.code);
  const hint = ERROR_HINTS[code];
  const label = [ERROR_NAMES[code] || (err.name && err.name !== 'Error' ? err.name : null), Number.isFinite(code) ? `code ${code}` : null]
    .filter(Boolean)
    .join(', ');
  const message = err.message || String(err);
  const body = hint ? `${hint} Details: ${message}` : message;
  return `${body}${label ? ` (${label})` : ''}`;
}

function errorFields(err) {
  return {
    name: err && err.name,
    code: err && err.code,
    category: err && err.category,
    message: err && (err.message || String(err)),
  };
}

const MIC_ICON =
  '<svg viewBox="0 0 24 24" width="16" height="16" aria-hidden="true"><path fill="currentColor" d="M12 14a3 3 0 0 0 3-3V5a3 3 0 0 0-6 0v6a3 3 0 0 0 3 3zm5-3a5 5 0 0 1-10 0H5a7 7 0 0 0 6 6.9V21h2v-3.1A7 7 0 0 0 19 11z"/><path stroke="currentColor" stroke-width="2.4" d="M4 3l17 18"/></svg>';

// ---------------------------------------------------------------- go live

/** The stream size: BASIC_LANDSCAPE, or 640×360 when localStorage says "small" (tests, slow machines). */
function streamConfig() {
  if (localStorage.getItem('stagecast.streamSize') === 'small') {
    return { maxResolution: { width: 640, height: 360 }, maxFramerate: 30, maxBitrate: 1000 };
  }
  return BASIC_LANDSCAPE;
}

const LIVE_LABELS = {
  offline: 'Not live',
  connecting: 'Going live…',
  live: 'LIVE',
  error: 'Not live (error)',
};

/**
 * The host's "Go live" panel: a broadcast client composites every stage
 * participant (auto layout, grid) into one picture, shown in the preview
 * canvas, and sends it to the group's channel.
 */
function broadcastPanel(session) {
  const channel = session.channel;
  let stage = null;
  let client = null;
  let layout = null;
  const preview = h('canvas', { class: 'broadcast-preview', 'data-testid': 'broadcast-preview', width: 640, height: 360 });
  const stateEl = h('span', { class: 'status live-state', 'data-testid': 'live-state', 'data-state': 'offline' }, LIVE_LABELS.offline);
  const goLiveBtn = h('button', { class: 'primary', 'data-testid': 'go-live' }, 'Go live');
  const endBtn = h('button', { class: 'control danger', 'data-testid': 'end-stream', hidden: true }, 'End stream');
  const watchLink = h('a', {
    class: 'watch-link',
    'data-testid': 'watch-link',
    href: `/watch.html?group=${encodeURIComponent(session.groupId)}`,
    target: '_blank',
    rel: 'noopener',
  }, 'Open the watch page');
  const placeholder = h('p', { class: 'muted preview-placeholder', 'data-testid': 'preview-placeholder' },
    'Press “Go live” to stream everyone on this stage to your channel. Viewers watch it on the watch page.');

  function setState(state, detail) {
    stateEl.dataset.state = state;
    stateEl.textContent = detail ? `${LIVE_LABELS[state]}: ${detail}` : LIVE_LABELS[state];
    const busy = state === 'connecting' || state === 'live';
    goLiveBtn.hidden = busy;
    goLiveBtn.disabled = false;
    endBtn.hidden = !busy;
    endBtn.disabled = false;
  }

  function release() {
    if (layout) {
      layout.stop();
      layout = null;
    }
    if (client) {
      client.delete();
      client = null;
    }
    preview.hidden = true;
    placeholder.hidden = false;
  }

  function stop() {
    if (client) {
      try {
        client.stopBroadcast();
      } catch (err) {
        console.warn('stopBroadcast failed', err);
      }
    }
    release();
    setState('offline');
  }

  goLiveBtn.addEventListener('click', async () => {
    if (!stage) return;
    goLiveBtn.disabled = true;
    setState('connecting');
    try {
      // Created in the click handler: the audio mixer needs a user gesture.
      client = IVSBroadcastClient.create({ streamConfig: streamConfig(), ingestEndpoint: channel.ingestEndpoint });
      const own = client;
      client.on(BroadcastClientEvents.CONNECTION_STATE_CHANGE, (state) => {
        if (client !== own) return;
        if (state === ConnectionState.CONNECTED) setState('live');
        else if (state === ConnectionState.FAILED || state === ConnectionState.DISCONNECTED) {
          release();
          setState('error', 'the connection to the server was lost');
        }
      });
      client.on(BroadcastClientEvents.ERROR, (err) => console.warn('broadcast client error', err));
      layout = IVSBroadcastClient.autoLayout(client, stage, { mode: 'grid' });
      client.attachPreview(preview);
      preview.hidden = false;
      placeholder.hidden = true;
      window.__stagecast.broadcast = client;
      await client.startBroadcast(channel.streamKey);
      if (client === own && client.getConnectionState() === ConnectionState.CONNECTED) setState('live');
    } catch (err) {
      release();
      const message = err && err.message ? err.message : String(err);
      showBanner(`Could not go live: ${message}`, 'error', { code: String(err && err.code) });
      setState('error', message);
    }
  });

  endBtn.addEventListener('click', () => {
    endBtn.disabled = true;
    stop();
  });

  preview.hidden = true;
  const panel = h('section', { class: 'broadcast', 'data-testid': 'broadcast' },
    h('div', { class: 'row' },
      h('h2', {}, 'Broadcast'),
      stateEl,
      h('div', { class: 'grow' }),
      watchLink,
      goLiveBtn,
      endBtn,
    ),
    preview,
    placeholder,
  );
  return {
    panel,
    setStage(s) {
      stage = s;
    },
    stop() {
      if (client) stop();
    },
  };
}

// ---------------------------------------------------------------- chat

/** Longest message the room accepts (code points); the server says 413 above it. */
const CHAT_MAX_CHARS = 500;

const CHAT_STATE_LABELS = { connecting: 'Connecting…', connected: 'Connected', disconnected: 'Offline' };

/** A short, human reason for a failed chat request (a ChatError or anything else). */
function describeChatError(err) {
  const code = err && typeof err.errorCode === 'number' ? err.errorCode : null;
  const hints = {
    401: 'Your chat session has expired; reload the page to chat again.',
    403: 'You are not allowed to do that in this chat.',
    404: 'That message no longer exists.',
    406: 'That message was rejected.',
    408: 'The chat server did not answer in time.',
    413: `Messages can be at most ${CHAT_MAX_CHARS} characters long.`,
    429: 'You are sending messages too fast; wait a moment.',
  };
  const message = (err && (err.errorMessage || err.message)) || String(err);
  const hint = code !== null ? hints[code] : null;
  return `${hint ? `${hint} ` : ''}(${message}${code !== null ? `, ${code}` : ''})`;
}

/**
 * The stage's chat room through the SDK's `ChatRoom`: messages with their
 * sender's name; the host (a token with DELETE_MESSAGE / DISCONNECT_USER)
 * gets Delete and Remove buttons on messages. `ownUserId` is this member's
 * chat user id, to recognise our own messages and our own removal.
 */
function chatPanel(session, ownUserId) {
  const isModerator = !!session.isHost;
  const stateEl = h('span', { class: 'status chat-state', 'data-testid': 'chat-state', 'data-state': 'connecting' }, CHAT_STATE_LABELS.connecting);
  const list = h('ol', { class: 'chat-list', 'data-testid': 'chat-messages', 'aria-live': 'polite', 'aria-label': 'Chat messages' });
  const empty = h('li', { class: 'chat-empty muted', 'data-testid': 'chat-empty' }, 'No messages yet. Say hello!');
  list.append(empty);
  const noticeEl = h('p', { class: 'chat-notice', 'data-testid': 'chat-notice', role: 'status', hidden: true });
  const errorEl = h('p', { class: 'chat-error error-text', 'data-testid': 'chat-error', role: 'alert' });
  const input = h('input', {
    type: 'text',
    maxlength: CHAT_MAX_CHARS,
    placeholder: 'Say something…',
    autocomplete: 'off',
    'aria-label': 'Message',
    'data-testid': 'chat-input',
  });
  const sendBtn = h('button', { class: 'primary', type: 'submit', 'data-testid': 'chat-send', disabled: true }, 'Send');
  const form = h('form', { class: 'chat-form', 'data-testid': 'chat-form' }, input, sendBtn);
  const panel = h('aside', { class: 'chat', 'data-testid': 'chat', 'aria-label': 'Chat' },
    h('div', { class: 'row chat-head' }, h('h2', {}, 'Chat'), stateEl),
    list,
    noticeEl,
    errorEl,
    form,
  );

  const messages = new Map(); // message id -> <li>
  let closed = false; // we closed it (left the stage): no notice
  let removed = false; // a moderator removed us

  function setState(state) {
    stateEl.dataset.state = state;
    stateEl.textContent = CHAT_STATE_LABELS[state] || state;
    sendBtn.disabled = state !== 'connected';
  }

  function showError(text) {
    errorEl.textContent = text;
  }

  function showNotice(text) {
    noticeEl.hidden = false;
    noticeEl.textContent = text;
  }

  function refreshEmpty() {
    empty.hidden = list.querySelector('[data-testid="chat-message"], [data-testid="chat-system"]') !== null;
  }

  function append(item) {
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.append(item);
    refreshEmpty();
    // Follow new messages unless the reader scrolled up to read older ones.
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  function systemLine(text) {
    append(h('li', { class: 'chat-system muted', 'data-testid': 'chat-system' }, text));
  }

  const room = new ChatRoom({
    regionOrUrl: `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/chat`,
    // The demo backend's chat tokens last an hour, longer than a demo
    // session; after that the room reports 401 and a reload gets a new one.
    tokenProvider: async () => ({ token: session.chat.token }),
  });

  function renderMessage(m) {
    if (!m || !m.id || messages.has(m.id)) return;
    const sender = m.sender || { userId: '', attributes: {} };
    const attrs = sender.attributes || {};
    const mine = sender.userId === ownUserId;
    const name = attrs.username || sender.userId || 'Someone';
    const time = m.sendTime instanceof Date && !Number.isNaN(m.sendTime.getTime())
      ? m.sendTime.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
      : '';
    const item = h('li', {
      class: mine ? 'chat-msg mine' : 'chat-msg',
      'data-testid': 'chat-message',
      'data-message-id': m.id,
      'data-sender': sender.userId,
    },
    h('div', { class: 'chat-meta' },
      h('span', { class: 'chat-name', 'data-testid': 'chat-sender-name' }, mine ? `${name} (you)` : name),
      time ? h('time', { class: 'muted', datetime: m.sendTime.toISOString() }, time) : null,
    ),
    h('div', { class: 'chat-text', 'data-testid': 'chat-text' }, m.content),
    );
    if (isModerator) {
      const actions = h('div', { class: 'chat-actions' });
      const delBtn = h('button', {
        class: 'chat-action',
        type: 'button',
        'data-testid': 'chat-delete',
        title: 'Delete this message for everyone',
        text: 'Delete',
        onClick: async () => {
          delBtn.disabled = true;
          try {
            await room.deleteMessage(new DeleteMessageRequest(m.id, 'Deleted by the host'));
            showError('');
          } catch (err) {
            showError(`Could not delete the message: ${describeChatError(err)}`);
            delBtn.disabled = false;
          }
        },
      });
      actions.append(delBtn);
      if (!mine) {
        const kickBtn = h('button', {
          class: 'chat-action danger',
          type: 'button',
          'data-testid': 'chat-kick',
          title: `Remove ${name} from the chat`,
          text: 'Remove from chat',
          onClick: async () => {
            kickBtn.disabled = true;
            try {
              await room.disconnectUser(new DisconnectUserRequest(sender.userId, 'Removed by the host'));
              showError('');
            } catch (err) {
              showError(`Could not remove ${name}: ${describeChatError(err)}`);
            } finally {
              // They may come back with a new token; the host can remove them again.
              kickBtn.disabled = false;
            }
          },
        });
        actions.append(kickBtn);
      }
      item.append(actions);
    }
    messages.set(m.id, item);
    append(item);
  }

  room.addListener('connecting', () => setState('connecting'));
  room.addListener('connect', () => {
    setState('connected');
    showError('');
  });
  room.addListener('disconnect', (reason) => {
    setState('disconnected');
    if (closed) return;
    input.disabled = true;
    if (reason === 'serverDisconnect') {
      if (!removed) showNotice('You were disconnected from the chat.');
    } else if (reason === 'fetchTokenError') {
      showError('Could not get access to the chat. Reload the page to try again.');
    } else if (reason !== 'clientDisconnect') {
      showError('The chat connection was lost. Reload the page to reconnect.');
    }
  });
  room.addListener('message', renderMessage);
  room.addListener('messageDelete', (ev) => {
    const item = messages.get(ev.messageId);
    if (!item) return;
    item.remove();
    messages.delete(ev.messageId);
    refreshEmpty();
  });
  room.addListener('userDisconnect', (ev) => {
    if (ev.userId === ownUserId) {
      removed = true;
      input.disabled = true;
      showNotice('You were removed from the chat by the host.');
      return;
    }
    let name = ev.userId;
    for (const item of messages.values()) {
      if (item.dataset.sender === ev.userId) {
        name = item.querySelector('.chat-name')?.textContent || name;
        break;
      }
    }
    systemLine(`${name} was removed from the chat.`);
  });

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text || room.state !== 'connected') return;
    sendBtn.disabled = true;
    try {
      const m = await room.sendMessage(new SendMessageRequest(text));
      // Our own copy also arrives as a `message` event; whichever comes first shows it.
      renderMessage(m);
      input.value = '';
      showError('');
    } catch (err) {
      showError(`Could not send: ${describeChatError(err)}`);
    } finally {
      sendBtn.disabled = room.state !== 'connected';
      input.focus();
    }
  });

  room.connect();
  return {
    panel,
    room,
    close() {
      if (closed) return;
      closed = true;
      input.disabled = true;
      sendBtn.disabled = true;
      if (room.state !== 'disconnected') room.disconnect();
    },
  };
}

async function enterStage(session) {
  clearInterval(listTimer);
  const claims = peekToken(session.token) || {};
  const ownName = (claims.attributes && claims.attributes.username) || profile.username || 'You';
  const hostName = session.hostName;
  document.title = hostName ? `Stagecast — ${hostName}'s stage` : 'Stagecast — stage';

  const events = [];
  window.__stagecast = { stage: null, events, token: session.token, session };
  const record = (type, extra = {}) => events.push({ type, ...extra });

  // ---- layout
  const statusEl = h('span', { class: 'status', 'data-testid': 'connection-state', 'data-state': 'connecting' }, 'Connecting…');
  const publishEl = h('span', { class: 'status subtle', 'data-testid': 'publish-state', 'data-state': 'not_published' }, '');
  const grid = h('div', { class: 'grid', 'data-testid': 'grid', 'data-count': 0 });
  const micBtn = h('button', { class: 'control', 'data-testid': 'toggle-mic', 'aria-pressed': 'false', disabled: true }, 'Mute mic');
  const camBtn = h('button', { class: 'control', 'data-testid': 'toggle-camera', 'aria-pressed': 'false', disabled: true }, 'Stop camera');
  const leaveBtn = h('button', { class: 'control danger', 'data-testid': 'leave-button' }, 'Leave');
  const endBtn = session.isHost
    ? h('button', { class: 'control danger outline', 'data-testid': 'end-stage', title: 'Deletes the stage and disconnects everyone' }, 'End stage for everyone')
    : null;
  const backBtn = h('button', { class: 'primary', 'data-testid': 'back-home', hidden: true, onClick: () => navigate('/') }, 'Back to stages');
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
  const chat = session.chat && session.chat.token ? chatPanel(session, claims.user_id || profile.userId) : null;
  if (chat) window.__stagecast.chat = chat.room;

  let invite = null;
  if (session.groupId) {
    const link = `${location.origin}/?join=${encodeURIComponent(session.groupId)}`;
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
    invite = h('div', { class: 'invite-box', 'data-testid': 'invite' },
      h('label', {}, 'Invite guests — send them this link:'),
      h('div', { class: 'row' }, input, copyBtn),
    );
  }

  view.replaceChildren(
    h('div', { class: 'stage-view', 'data-testid': 'stage-view' },
      h('div', { class: 'stage-head' },
        h('div', {},
          h('h1', { 'data-testid': 'stage-title' }, hostName ? `${hostName}'s stage` : 'Stage'),
          h('p', { class: 'help', 'data-testid': 'stage-help' },
            session.isHost
              ? session.chat
                ? 'You are the host. Your camera and microphone are live for everyone here. You can remove guests from their tiles, and delete chat messages or remove people from the chat.'
                : 'You are the host. Your camera and microphone are live for everyone here. You can remove guests from their tiles.'
              : 'Your camera and microphone are live for everyone on this stage. Use the buttons below to mute or leave.'),
        ),
        h('div', { class: 'statuses' }, statusEl, publishEl),
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

  // ---- tiles
  const tiles = new Map(); // participant id (or "local") -> tile record

  function updateGridCount() {
    grid.dataset.count = String(tiles.size);
  }

  function tileFor(info, isLocal) {
    const key = isLocal ? 'local' : info.id;
    let tile = tiles.get(key);
    if (tile) {
      if (info && info.id) tile.el.dataset.participantId = info.id;
      if (info && info.userId) tile.el.dataset.userId = info.userId;
      return tile;
    }
    const attrs = (info && info.attributes) || {};
    const name = isLocal ? ownName : attrs.username || info.userId || 'Guest';
    const media = new MediaStream();
    const video = h('video', { 'data-testid': 'tile-video', autoplay: true, playsInline: true, muted: isLocal });
    // `muted` must be a property for autoplay rules; the attribute alone is not enough.
    video.muted = isLocal;
    video.srcObject = media;
    const mutedEl = h('span', { class: 'mic-off', 'data-testid': 'tile-muted', hidden: true, title: 'Microphone muted' });
    mutedEl.innerHTML = MIC_ICON + '<span>Muted</span>';
    const el = h(
      'div',
      {
        class: 'tile',
        'data-testid': 'tile',
        'data-participant-id': (info && info.id) || '',
        'data-user-id': (info && info.userId) || '',
        'data-username': name,
        'data-local': String(isLocal),
        'data-muted': 'false',
        'data-video-stopped': 'false',
        'data-has-video': 'false',
        'data-host': String(attrs.isHost === 'true'),
      },
      video,
      h('img', { class: 'tile-avatar', 'data-testid': 'tile-avatar', src: isLocal ? profile.avatarUrl : safeAvatar(attrs.avatarUrl), alt: '' }),
      h('div', { class: 'tile-label' },
        h('span', { class: 'name', 'data-testid': 'tile-name' }, isLocal ? `${name} (you)` : name),
        attrs.isHost === 'true' ? h('span', { class: 'badge', 'data-testid': 'host-badge' }, 'Host') : null,
        mutedEl,
      ),
    );
    if (session.isHost && !isLocal && session.groupId) {
      const removeBtn = h('button', {
        class: 'remove',
        'data-testid': 'remove-button',
        title: `Remove ${name} from the stage`,
        text: 'Remove',
        onClick: async () => {
          removeBtn.disabled = true;
          try {
            await api('POST', '/api/disconnect', {
              groupId: session.groupId,
              userId: profile.userId,
              participantId: el.dataset.participantId,
            }, session.token);
          } catch (err) {
            showBanner(`Could not remove ${name}: ${err.message}`);
            removeBtn.disabled = false;
          }
        },
      });
      el.append(removeBtn);
    }
    tile = { el, video, media, mutedEl, audioMuted: false, videoStopped: false };
    tiles.set(key, tile);
    if (isLocal) grid.prepend(el);
    else grid.append(el);
    updateGridCount();
    return tile;
  }

  function refreshTile(tile) {
    const hasVideo = tile.media.getVideoTracks().length > 0;
    tile.el.dataset.hasVideo = String(hasVideo);
    tile.el.dataset.muted = String(tile.audioMuted);
    tile.el.dataset.videoStopped = String(tile.videoStopped);
    tile.mutedEl.hidden = !tile.audioMuted;
  }

  function removeTile(id) {
    const tile = tiles.get(id);
    if (!tile) return;
    tile.video.srcObject = null;
    tile.el.remove();
    tiles.delete(id);
    updateGridCount();
  }

  function applyStreamMute(tile, stream) {
    if (!stream) return;
    if (stream.streamType === StreamType.AUDIO) tile.audioMuted = !!stream.isMuted;
    if (stream.streamType === StreamType.VIDEO) tile.videoStopped = !!stream.isMuted;
  }

  // ---- local media
  let localMedia = null;
  try {
    localMedia = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 180 }, audio: true });
  } catch (err) {
    showBanner(`Camera/microphone unavailable (${err.name || 'error'}): you can still watch and listen.`, 'warn');
  }
  const localStreams = [];
  let micStream = null;
  let camStream = null;
  const localTile = tileFor({ id: claims.jti || '', userId: claims.user_id || profile.userId, attributes: claims.attributes || {} }, true);
  if (localMedia) {
    for (const track of localMedia.getTracks()) {
      const stream = new LocalStageStream(track);
      localStreams.push(stream);
      if (track.kind === 'audio') micStream = stream;
      else camStream = stream;
    }
    for (const t of localMedia.getVideoTracks()) localTile.media.addTrack(t);
    refreshTile(localTile);
  }

  micBtn.disabled = !micStream;
  camBtn.disabled = !camStream;
  micBtn.addEventListener('click', () => {
    if (!micStream) return;
    const muted = !localTile.audioMuted;
    micStream.setMuted(muted);
    localTile.audioMuted = muted;
    micBtn.textContent = muted ? 'Unmute mic' : 'Mute mic';
    micBtn.setAttribute('aria-pressed', String(muted));
    refreshTile(localTile);
  });
  camBtn.addEventListener('click', () => {
    if (!camStream) return;
    const stopped = !localTile.videoStopped;
    camStream.setMuted(stopped);
    localTile.videoStopped = stopped;
    camBtn.textContent = stopped ? 'Start camera' : 'Stop camera';
    camBtn.setAttribute('aria-pressed', String(stopped));
    refreshTile(localTile);
  });

  // ---- the SDK
  const strategy = {
    stageStreamsToPublish() {
      return localStreams;
    },
    shouldPublishParticipant() {
      // Publish whenever there is something to publish; a watch-only token
      // gets a clear TOKEN_NOT_ALLOWED error from the SDK, shown below.
      return localStreams.length > 0;
    },
    shouldSubscribeToParticipant() {
      return SubscribeType.AUDIO_VIDEO;
    },
  };

  let stage;
  try {
    stage = new Stage(session.token, strategy);
  } catch (err) {
    record('joinFailed', errorFields(err));
    showBanner(`Could not open the stage: ${describeError(err)}`, 'error', { code: String(err && err.code) });
    statusEl.textContent = 'Not connected';
    statusEl.dataset.state = 'errored';
    stopLocal();
    if (chat) chat.close();
    backBtn.hidden = false;
    return;
  }
  window.__stagecast.stage = stage;
  if (broadcast) broadcast.setStage(stage);
  let left = false;

  function stopLocal() {
    if (!localMedia) return;
    for (const t of localMedia.getTracks()) {
      t.stop();
      localTile.media.removeTrack(t);
    }
    // A media element waiting for data it will never get would hold the
    // page's load event forever.
    localTile.video.srcObject = null;
    refreshTile(localTile);
  }

  function finish(reason) {
    if (left) return;
    left = true;
    if (broadcast) broadcast.stop();
    if (chat) chat.close();
    stopLocal();
    for (const id of [...tiles.keys()]) if (id !== 'local') removeTile(id);
    statusEl.textContent = 'Left';
    statusEl.dataset.state = 'disconnected';
    publishEl.textContent = '';
    publishEl.dataset.state = 'not_published';
    for (const b of [micBtn, camBtn, leaveBtn, endBtn]) if (b) b.disabled = true;
    backBtn.hidden = false;
    setHelp('You are not on this stage any more.');
    if (reason !== 'navigated') {
      const text = REASONS[reason] || `You are no longer on this stage (${reason}).`;
      showBanner(text, reason === 'user-initiated' ? 'info' : 'warn', { reason: String(reason) });
    }
  }

  stage.on(StageEvents.STAGE_CONNECTION_STATE_CHANGED, (state) => {
    record(StageEvents.STAGE_CONNECTION_STATE_CHANGED, { state });
    const labels = {
      [StageConnectionState.CONNECTED]: 'Connected',
      [StageConnectionState.CONNECTING]: 'Connecting…',
      [StageConnectionState.DISCONNECTED]: 'Disconnected',
      [StageConnectionState.ERRORED]: 'Connection error',
    };
    statusEl.textContent = labels[state] || String(state);
    statusEl.dataset.state = String(state);
  });

  stage.on(StageEvents.STAGE_PARTICIPANT_JOINED, (info) => {
    record(StageEvents.STAGE_PARTICIPANT_JOINED, { participantId: info.id, isLocal: !!info.isLocal });
    tileFor(info, !!info.isLocal);
  });

  stage.on(StageEvents.STAGE_PARTICIPANT_LEFT, (info) => {
    record(StageEvents.STAGE_PARTICIPANT_LEFT, { participantId: info.id, isLocal: !!info.isLocal });
    if (!info.isLocal) removeTile(info.id);
  });

  stage.on(StageEvents.STAGE_PARTICIPANT_STREAMS_ADDED, (info, streams) => {
    record(StageEvents.STAGE_PARTICIPANT_STREAMS_ADDED, {
      participantId: info.id,
      isLocal: !!info.isLocal,
      streamTypes: streams.map((s) => s.streamType),
    });
    const tile = tileFor(info, !!info.isLocal);
    if (info.isLocal) return; // the local preview already shows our own camera
    for (const stream of streams) {
      const track = stream.mediaStreamTrack;
      if (track && !tile.media.getTracks().includes(track)) {
        for (const old of tile.media.getTracks().filter((t) => t.kind === track.kind)) tile.media.removeTrack(old);
        tile.media.addTrack(track);
      }
      applyStreamMute(tile, stream);
    }
    // Re-assigning srcObject makes the element pick up tracks added later.
    tile.video.srcObject = tile.media;
    playWithSound(tile.video);
    refreshTile(tile);
  });

  stage.on(StageEvents.STAGE_PARTICIPANT_STREAMS_REMOVED, (info, streams) => {
    record(StageEvents.STAGE_PARTICIPANT_STREAMS_REMOVED, {
      participantId: info.id,
      isLocal: !!info.isLocal,
      streamTypes: streams.map((s) => s.streamType),
    });
    if (info.isLocal) return;
    const tile = tiles.get(info.id);
    if (!tile) return;
    for (const stream of streams) {
      const track = stream.mediaStreamTrack;
      if (track) tile.media.removeTrack(track);
    }
    refreshTile(tile);
  });

  stage.on(StageEvents.STAGE_STREAM_MUTE_CHANGED, (info, stream) => {
    record(StageEvents.STAGE_STREAM_MUTE_CHANGED, {
      participantId: info.id,
      isLocal: !!info.isLocal,
      streamType: stream && stream.streamType,
      muted: !!(stream && stream.isMuted),
    });
    if (info.isLocal) return;
    const tile = tiles.get(info.id);
    if (!tile) return;
    applyStreamMute(tile, stream);
    refreshTile(tile);
  });

  stage.on(StageEvents.STAGE_PARTICIPANT_PUBLISH_STATE_CHANGED, (info, state) => {
    record(StageEvents.STAGE_PARTICIPANT_PUBLISH_STATE_CHANGED, { participantId: info.id, isLocal: !!info.isLocal, state });
    if (!info.isLocal) return;
    const labels = { published: 'Camera on stage', attempting_publish: 'Joining with camera…', not_published: 'Not publishing', errored: 'Not publishing (error)' };
    publishEl.textContent = labels[state] || String(state);
    publishEl.dataset.state = String(state);
  });

  stage.on(StageEvents.STAGE_PARTICIPANT_SUBSCRIBE_STATE_CHANGED, (info, state) => {
    record(StageEvents.STAGE_PARTICIPANT_SUBSCRIBE_STATE_CHANGED, { participantId: info.id, state });
    const tile = tiles.get(info.id);
    if (tile) tile.el.dataset.subscribeState = String(state);
  });

  stage.on(StageEvents.ERROR, (err) => {
    record(StageEvents.ERROR, errorFields(err));
    // After leaving, late failures of in-flight requests would only hide the
    // reason the user actually needs to see.
    if (left) return;
    if (err && err.code === 8 && err.category === 'PUBLISH_ERROR') {
      // Watch-only token: release the camera and say so.
      stopLocal();
      micBtn.disabled = true;
      camBtn.disabled = true;
      setHelp('You are watching only: your token does not allow publishing.');
    }
    const what = err && err.category === 'PUBLISH_ERROR' ? 'Cannot publish your camera/microphone' :
      err && err.category === 'SUBSCRIBE_ERROR' ? 'Cannot receive a participant' : 'Stage error';
    showBanner(`${what}: ${describeError(err)}`, err && err.code === 8 ? 'warn' : 'error', {
      code: String(err && err.code),
      category: String(err && err.category),
    });
  });

  stage.on(StageEvents.STAGE_LEFT, (reason) => {
    record(StageEvents.STAGE_LEFT, { reason });
    finish(reason);
  });

  leaveBtn.addEventListener('click', () => {
    stage.leave();
    // The SDK emits stageLeft('user-initiated'); finish() is idempotent.
    finish('user-initiated');
  });

  if (endBtn) {
    endBtn.addEventListener('click', async () => {
      endBtn.disabled = true;
      try {
        await api('DELETE', '/api/delete', { groupId: session.groupId }, session.token);
        sessionStorage.removeItem(SESSION_PREFIX + session.groupId);
        // The server disconnects everyone with reason stage-deleted.
        setTimeout(() => {
          if (!left) {
            stage.leave();
            finish('stage-deleted');
          }
        }, 3000);
      } catch (err) {
        showBanner(`Could not end the stage: ${err.message}`);
        endBtn.disabled = false;
      }
    });
  }

  current = {
    leave(reason) {
      if (!left) {
        stage.leave();
        finish(reason);
      }
    },
  };

  try {
    await stage.join();
    record('joined');
  } catch (err) {
    record('joinFailed', errorFields(err));
    finish('navigated');
    statusEl.textContent = 'Not connected';
    statusEl.dataset.state = 'errored';
    setHelp('You are not on this stage. Check the link, or ask the host for a new invite.');
    showBanner(`Could not join the stage: ${describeError(err)}`, 'error', { code: String(err && err.code) });
  }
}

route();
