// Journey: the chat panel on the sample app's stage view (the SDK's
// `ChatRoom` against the server's chat rooms). The host creates a stage, a
// guest joins from the invite link; each sees the other's messages; the
// host deletes the guest's message (gone on both pages) and removes the
// guest from the chat (the guest sees why); a member with a view-only chat
// token cannot send (403, shown in the panel). Members chat under ids the
// server chose, with Host / Guest badges from the role it signed. A
// watch-page viewer reads the chat (with its history) before picking a name,
// and one who picks the host's name is still told apart from the host.
//
// By hand:
//   cargo xtask build && cargo build -p stagecast-server
//   STAGECAST_API_KEY=test-key target/debug/stagecast --data-dir /tmp/sc-q --listen 127.0.0.1:18600 --media-port 18843
//   STAGECAST_URL=http://127.0.0.1:18600 STAGECAST_API_KEY=test-key node --test tests/chat-stage.test.mjs

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  BASE,
  PEOPLE,
  launch,
  newParticipant,
  assertNoPageErrors,
  dumpLogs,
  createStageViaUi,
  joinViaInvite,
  waitJoined,
  controlPlane,
  chatConnected,
  sendChat,
  chatMessage,
  waitChatMessageGone,
  chatUserId,
  chatBadge,
  localParticipantId,
  newViewer,
} from './lib.mjs';

describe('chat on the stage view', { timeout: 180_000 }, () => {
  let browser;
  let host;
  let guest;
  let all = [];
  let ok = false;
  let groupId;

  before(async () => {
    browser = await launch();
    host = await newParticipant(browser, PEOPLE.red);
    guest = await newParticipant(browser, PEOPLE.green);
    all = [host, guest];
  });

  after(async () => {
    if (!ok) dumpLogs(all);
    await browser?.close();
  });

  it('host and guest open the stage and its chat connects for both', async () => {
    const invite = await createStageViaUi(host, 0);
    groupId = new URL(invite).searchParams.get('join');
    await waitJoined(host.page);
    await joinViaInvite(guest, invite, 1);
    await waitJoined(guest.page);
    await Promise.all([chatConnected(host.page), chatConnected(guest.page)]);
    host.userId = await chatUserId(host.page);
    guest.userId = await chatUserId(guest.page);
    assert.notEqual(host.userId, guest.userId);
    assert.equal(host.userId, await localParticipantId(host.page), 'members chat as their participant id');
    assert.equal(guest.userId, await localParticipantId(guest.page));
    // Only the host moderates.
    assert.equal(await guest.page.getByTestId('chat-delete').count(), 0);
  });

  it("the guest's message reaches the host and the host's reply reaches the guest", async () => {
    await sendChat(guest.page, 'hello from green');
    const atHost = await chatMessage(host.page, 'hello from green');
    assert.equal(atHost.sender, guest.userId);
    assert.match(atHost.text, /Green/, 'the sender is shown by name');
    // The guest sees its own message once.
    await chatMessage(guest.page, 'hello from green');
    assert.equal(await guest.page.locator('[data-testid="chat-message"]', { hasText: 'hello from green' }).count(), 1);

    await sendChat(host.page, 'welcome, green');
    const atGuest = await chatMessage(guest.page, 'welcome, green');
    assert.equal(atGuest.sender, host.userId);
    assert.equal(atGuest.id, (await chatMessage(host.page, 'welcome, green')).id, 'same message id on both pages');
    // Badges from the signed role, on both pages.
    for (const page of [host.page, guest.page]) {
      assert.equal(await chatBadge(page, atHost.id), 'guest');
      assert.equal(await chatBadge(page, atGuest.id), 'host');
    }
    // The host can delete and remove on the guest's message; no remove on its own.
    const guestMsg = host.page.locator(`[data-testid="chat-message"][data-message-id="${atHost.id}"]`);
    assert.equal(await guestMsg.getByTestId('chat-delete').count(), 1);
    assert.equal(await guestMsg.getByTestId('chat-kick').count(), 1);
    const ownMsg = host.page.locator('[data-testid="chat-message"]', { hasText: 'welcome, green' });
    assert.equal(await ownMsg.getByTestId('chat-kick').count(), 0);
    await host.page.screenshot({ path: '/tmp/chat-stage.png' });
  });

  it("the host deletes the guest's message and it disappears on both pages", async () => {
    await sendChat(guest.page, 'something regrettable');
    const msg = await chatMessage(host.page, 'something regrettable');
    await chatMessage(guest.page, 'something regrettable');
    await host.page.locator(`[data-testid="chat-message"][data-message-id="${msg.id}"]`).getByTestId('chat-delete').click();
    await Promise.all([waitChatMessageGone(host.page, msg.id), waitChatMessageGone(guest.page, msg.id)]);
    // The other messages stay.
    await chatMessage(guest.page, 'hello from green');
    await chatMessage(guest.page, 'welcome, green');
  });

  it('the host removes the guest from the chat and the guest sees why', async () => {
    const msg = await chatMessage(host.page, 'hello from green');
    await host.page.locator(`[data-testid="chat-message"][data-message-id="${msg.id}"]`).getByTestId('chat-kick').click();
    const notice = guest.page.getByTestId('chat-notice');
    await notice.waitFor({ state: 'visible', timeout: 10000 });
    assert.match(await notice.textContent(), /removed|disconnected/i);
    await guest.page.waitForFunction(
      () => document.querySelector('[data-testid="chat-state"]')?.dataset.state === 'disconnected',
      null,
      { timeout: 10000 },
    );
    assert.ok(await guest.page.getByTestId('chat-send').isDisabled(), 'a removed guest cannot send');
    await guest.page.getByTestId('chat').screenshot({ path: '/tmp/chat-stage-removed.png' });
    // The host's chat is unaffected.
    assert.equal(await host.page.getByTestId('chat-error').textContent(), '');
    await sendChat(host.page, 'still here');
    await chatMessage(host.page, 'still here');
    // The guest is still on the stage itself: the chat removal is separate.
    assert.equal(await guest.page.getByTestId('connection-state').getAttribute('data-state'), 'connected');
  });

  it('a member with a view-only chat token cannot send (403 in the panel)', async () => {
    const list = await (await fetch(`${BASE}/api/list`, { method: 'POST' })).json();
    const item = list.find((i) => i.groupId === groupId);
    assert.ok(item && item.roomId, `the group has a chat room: ${JSON.stringify(item)}`);
    const res = await controlPlane('POST', `/v1/rooms/${encodeURIComponent(item.roomId)}/tokens`, {
      userId: 'view-only-user',
      attributes: { username: 'Blue' },
      capabilities: [],
    });
    assert.ok(res.status >= 200 && res.status < 300, `chat token: ${res.status} ${res.text}`);

    // A guest session (stage token from /api/join) with the view-only chat token.
    const viewer = await newParticipant(browser, PEOPLE.blue);
    all.push(viewer);
    const joined = await (
      await fetch(`${BASE}/api/join`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ groupId, userId: 'view-only-user', attributes: { username: 'Blue', avatarUrl: '' } }),
      })
    ).json();
    const session = {
      groupId,
      token: joined.stage.token,
      participantId: joined.stage.participantId,
      stageId: joined.stage.id,
      isHost: false,
      hostName: 'Red',
      channel: null,
      chat: { id: item.roomId, token: res.body.token },
    };
    await viewer.page.addInitScript(
      ({ key, value }) => sessionStorage.setItem(key, value),
      { key: `stagecast.session.${groupId}`, value: JSON.stringify(session) },
    );
    await viewer.page.goto(`${BASE}/?stage=${encodeURIComponent(groupId)}`);
    await chatConnected(viewer.page);
    await viewer.page.getByTestId('chat-input').fill('let me talk');
    await viewer.page.getByTestId('chat-send').click();
    await viewer.page.waitForFunction(
      () => (document.querySelector('[data-testid="chat-error"]')?.textContent || '').includes('403'),
      null,
      { timeout: 10000 },
    );
    assert.equal(await viewer.page.locator('[data-testid="chat-message"]', { hasText: 'let me talk' }).count(), 0);
    // Nobody else got it either, and the viewer still reads the room.
    await viewer.page.waitForTimeout(500);
    assert.equal(await host.page.locator('[data-testid="chat-message"]', { hasText: 'let me talk' }).count(), 0);
    await sendChat(host.page, 'can you read this, blue?');
    await chatMessage(viewer.page, 'can you read this, blue?');
    assert.equal(await viewer.page.getByTestId('chat-state').getAttribute('data-state'), 'connected');
  });

  it('no page threw', () => {
    assertNoPageErrors(all);
    ok = true;
  });
});

describe('a watch-page viewer chats with the stage', { timeout: 120_000 }, () => {
  let browser;
  let host;
  let viewer;
  let all = [];
  let ok = false;

  before(async () => {
    browser = await launch();
    host = await newParticipant(browser, PEOPLE.red);
    viewer = await newViewer(browser, 'Viewer');
    all = [host, viewer];
  });

  after(async () => {
    if (!ok) dumpLogs(all);
    await browser?.close();
  });

  it("the viewer's message reaches the host, the host's reply reaches the viewer; moderation takes effect live", async () => {
    const invite = await createStageViaUi(host, 0);
    const groupId = new URL(invite).searchParams.get('join');
    await waitJoined(host.page);
    await chatConnected(host.page);
    await sendChat(host.page, 'welcome, everyone');
    const welcome = await chatMessage(host.page, 'welcome, everyone');

    // The viewer reads at once, without a name: the history is there, badged.
    await viewer.page.goto(`${BASE}/watch/${encodeURIComponent(groupId)}`);
    assert.equal((await chatMessage(viewer.page, 'welcome, everyone')).id, welcome.id);
    assert.equal(await chatBadge(viewer.page, welcome.id), 'host');
    await viewer.page.waitForFunction(
      () => document.querySelector('[data-testid="chat-state"]')?.dataset.state === 'reading',
      null,
      { timeout: 10000 },
    );
    assert.equal(await viewer.page.getByTestId('chat-input').count(), 0, 'no send box before a name is picked');

    // An impostor: the viewer takes the host's name.
    await viewer.page.getByTestId('chat-name').fill('Red');
    await viewer.page.getByTestId('chat-join').click();
    await viewer.page.getByTestId('chat-input').waitFor({ timeout: 15000 });
    await viewer.page.waitForFunction(
      () => {
        const b = document.querySelector('[data-testid="chat-send"]');
        return b && !b.disabled;
      },
      null,
      { timeout: 15000 },
    );

    await sendChat(viewer.page, 'hello from the audience');
    const atHost = await chatMessage(host.page, 'hello from the audience');
    assert.match(atHost.text, /Red/, 'the host sees the viewer by name');
    assert.match(atHost.sender, /^viewer-/);
    assert.notEqual(atHost.sender, host.userId);
    await sendChat(host.page, 'thanks for watching, Red');
    const atViewer = await chatMessage(viewer.page, 'thanks for watching, Red');
    assert.equal(atViewer.id, (await chatMessage(host.page, 'thanks for watching, Red')).id);
    const own = await chatMessage(viewer.page, 'hello from the audience');
    // Same name, but only the real host carries the Host badge, on both pages.
    assert.equal(await chatBadge(viewer.page, atViewer.id), 'host');
    assert.equal(await chatBadge(host.page, atViewer.id), 'host');
    assert.equal(await chatBadge(viewer.page, own.id), null, "the impostor's message has no badge (viewer page)");
    assert.equal(await chatBadge(host.page, atHost.id), null, "the impostor's message has no badge (host page)");
    await viewer.page.screenshot({ path: '/tmp/chat-impostor-viewer.png' });

    // The host deletes the viewer's message: gone on both pages.
    await host.page.locator(`[data-testid="chat-message"][data-message-id="${atHost.id}"]`).getByTestId('chat-delete').click();
    await Promise.all([waitChatMessageGone(host.page, atHost.id), waitChatMessageGone(viewer.page, atHost.id)]);

    // The host removes the viewer from the chat: the viewer sees why.
    await sendChat(viewer.page, 'one more thing');
    const again = await chatMessage(host.page, 'one more thing');
    assert.equal(again.sender, atHost.sender);
    await host.page.locator(`[data-testid="chat-message"][data-message-id="${again.id}"]`).getByTestId('chat-kick').click();
    const notice = viewer.page.getByTestId('chat-notice');
    await notice.waitFor({ state: 'visible', timeout: 10000 });
    assert.match(await notice.textContent(), /removed|disconnected/i);
    await host.page.screenshot({ path: '/tmp/chat-stage-viewer.png' });
    // The host was not touched by removing the impostor.
    await sendChat(host.page, 'still here after the kick');
    await chatMessage(host.page, 'still here after the kick');

    // After a reload the viewer reads the history again (the deleted message stays gone).
    await viewer.page.reload();
    await chatMessage(viewer.page, 'still here after the kick');
    await chatMessage(viewer.page, 'welcome, everyone');
    await chatMessage(viewer.page, 'one more thing');
    assert.equal(
      await viewer.page.locator(`[data-testid="chat-message"][data-message-id="${atHost.id}"]`).count(),
      0,
      'a deleted message is not replayed',
    );
  });

  it('no page threw', () => {
    assertNoPageErrors(all);
    ok = true;
  });
});
