// The stage's chat panel, through the SDK's `ChatRoom`.

import { ChatRoom, DeleteMessageRequest, DisconnectUserRequest, SendMessageRequest } from 'stagecast';
import { h } from './dom.js';

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

/** Badge text for a sender's role (signed into their chat token by the server). */
const CHAT_ROLE_BADGES = { host: 'Host', guest: 'Guest' };

/** A chat message's list item; also who sent it, by name, and whether it is ours. */
function messageItem(m, ownUserId) {
  const sender = m.sender || { userId: '', attributes: {} };
  const attrs = sender.attributes || {};
  const mine = sender.userId === ownUserId;
  const name = attrs.username || sender.userId || 'Someone';
  const badge = CHAT_ROLE_BADGES[attrs.role];
  const time = m.sendTime instanceof Date && !Number.isNaN(m.sendTime.getTime())
    ? m.sendTime.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
    : '';
  const item = h('li', {
    class: mine ? 'chat-msg mine' : 'chat-msg',
    'data-testid': 'chat-message',
    'data-message-id': m.id,
    'data-sender': sender.userId,
    'data-role': attrs.role || '',
  },
  h('div', { class: 'chat-meta' },
    h('span', { class: 'chat-name', 'data-testid': 'chat-sender-name' }, mine ? `${name} (you)` : name),
    badge ? h('span', { class: 'chat-badge', 'data-testid': 'chat-badge', 'data-role': attrs.role }, badge) : null,
    time ? h('time', { class: 'muted', datetime: m.sendTime.toISOString() }, time) : null,
  ),
  h('div', { class: 'chat-text', 'data-testid': 'chat-text' }, m.content),
  );
  return { item, sender, name, mine };
}

/** The host's Delete (and, on others' messages, Remove from chat) buttons. */
function moderatorActions(room, messageId, senderId, name, mine, showError) {
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
        await room.deleteMessage(new DeleteMessageRequest(messageId, 'Deleted by the host'));
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
          await room.disconnectUser(new DisconnectUserRequest(senderId, 'Removed by the host'));
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
  return actions;
}

/** The chat panel's elements, empty and connecting. */
function chatElements() {
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
  return { stateEl, list, empty, noticeEl, errorEl, input, sendBtn, form, panel };
}

/**
 * The stage's chat room through the SDK's `ChatRoom`: messages with their
 * sender's name (the server sends the room's recent messages on connect);
 * the host and the guests on stage carry a badge, from the `role` the server
 * signed into their chat token, so a viewer using the host's name is still
 * told apart. The host (a token with DELETE_MESSAGE / DISCONNECT_USER) gets
 * Delete and Remove buttons on messages. `ownUserId` is this member's chat
 * user id (the server chose it), to recognise our own messages and removal.
 */
export function chatPanel(session, ownUserId) {
  const isModerator = !!session.isHost;
  const { stateEl, list, empty, noticeEl, errorEl, input, sendBtn, form, panel } = chatElements();

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
    const { item, sender, name, mine } = messageItem(m, ownUserId);
    if (isModerator) item.append(moderatorActions(room, m.id, sender.userId, name, mine, showError));
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
