// Routes between the screens by the query string, and keeps what a stage
// session needs across reloads: the session in sessionStorage (this tab), the
// host key in localStorage (this browser, any tab).
//
// The screens are passed in, so this module imports none of them; each screen
// gets `nav` (navigate, startSession, setCurrent) to move on.

import { hideBanner } from './dom.js';

const SESSION_PREFIX = 'stagecast.session.';
// The key a group's creator rejoins it with as host (this browser, any tab).
const HOST_KEY_PREFIX = 'stagecast.hostKey.';

/** The host key this browser keeps for a group, or null. */
export function hostKeyFor(groupId) {
  return localStorage.getItem(HOST_KEY_PREFIX + groupId);
}

export function forgetHostKey(groupId) {
  localStorage.removeItem(HOST_KEY_PREFIX + groupId);
}

/** Forgets a group for good (it was deleted): its session and host key. */
export function forgetGroup(groupId) {
  sessionStorage.removeItem(SESSION_PREFIX + groupId);
  forgetHostKey(groupId);
}

function storedSession(groupId) {
  try {
    return JSON.parse(sessionStorage.getItem(SESSION_PREFIX + groupId) || 'null');
  } catch {
    return null;
  }
}

/**
 * Starts routing. `screens`: `home(nav)`, `invite(groupId, nav)` and
 * `stage(session, nav)` render a screen; a stage screen hands its live
 * controller to `nav.setCurrent` so that navigating away leaves the stage.
 */
export function startRouter(screens) {
  let current = null; // the live stage controller, if any

  function navigate(search) {
    history.pushState(null, '', search || '/');
    route();
  }

  function route() {
    if (current) {
      current.leave('navigated');
      current = null;
    }
    const params = new URLSearchParams(location.search);
    if (params.get('token')) {
      screens.stage({ token: params.get('token'), groupId: null, isHost: false, hostName: null }, nav);
    } else if (params.get('stage')) {
      const groupId = params.get('stage');
      const session = storedSession(groupId);
      if (session && session.token) screens.stage(session, nav);
      else navigate('?join=' + encodeURIComponent(groupId));
    } else if (params.get('join')) {
      screens.invite(params.get('join'), nav);
    } else {
      screens.home(nav);
    }
  }

  /** Keeps a create/join response as this tab's session and opens the stage. */
  function startSession(response, isHost, hostName) {
    if (response.hostKey) {
      localStorage.setItem(HOST_KEY_PREFIX + response.groupId, response.hostKey);
      isHost = true;
    }
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

  const nav = {
    navigate,
    startSession,
    setCurrent(controller) {
      current = controller;
    },
  };
  window.addEventListener('popstate', route);
  route();
}
