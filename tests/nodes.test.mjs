// Journey: two nodes and one Redis (distributed mode, issue 13). The host's
// page comes from node A, the guest's from node B: they see and hear each
// other (the stage lives on one node; the other forwards its event plane and
// WHIP there). Host and guest chat across the nodes; the host goes live from
// A and a watch page on B plays the broadcast ingested on A, with both
// people's tiles; a viewer on A and a viewer on B chat with each other and
// with the stage.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import {
  PEOPLE,
  launch,
  newParticipant,
  newViewer,
  assertNoPageErrors,
  dumpLogs,
  createStageViaUi,
  joinViaInvite,
  waitJoined,
  localParticipantId,
  expectLiveVideo,
  expectTone,
  expectCompositeGrid,
  chatConnected,
  sendChat,
  chatMessage,
  ownServer,
  waitWatchState,
} from './lib.mjs';
import { startRedis } from './redis.mjs';

const VIDEO = '[data-testid="player-video"]';

/** A watch-page viewer picks a chat name and can send. */
async function joinChatAs(viewer, name) {
  await viewer.page.getByTestId('chat-name').fill(name);
  await viewer.page.getByTestId('chat-join').click();
  await viewer.page.waitForFunction(
    () => {
      const b = document.querySelector('[data-testid="chat-send"]');
      return b && !b.disabled;
    },
    null,
    { timeout: 15000 },
  );
}

describe('two nodes sharing one Redis', { timeout: 300_000 }, () => {
  let redis;
  let a;
  let b;
  let dir;
  let browser;
  let host;
  let guest;
  let viewerA;
  let viewerB;
  let all = [];
  let ok = false;
  let groupId;

  before(async () => {
    redis = await startRedis();
    mkdirSync('target', { recursive: true });
    dir = mkdtempSync('target/nodes-');
    const node = (id) => {
      mkdirSync(`${dir}/${id}`);
      return ownServer({ dataDir: `${dir}/${id}`, args: ['--redis', redis.url, '--node-id', id] });
    };
    a = await node('a');
    b = await node('b');
    browser = await launch();
    host = await newParticipant(browser, PEOPLE.red);
    guest = await newParticipant(browser, PEOPLE.green);
    viewerA = await newViewer(browser, 'Viewer A');
    viewerB = await newViewer(browser, 'Viewer B');
    all = [host, guest, viewerA, viewerB];
  });

  after(async () => {
    if (!ok) {
      dumpLogs(all);
      console.log(`node logs: ${a?.log} ${b?.log}`);
    }
    await browser?.close();
    await a?.kill();
    await b?.kill();
    await redis?.stop();
    if (ok && dir) rmSync(dir, { recursive: true, force: true });
  });

  it("the host on node A and the guest on node B see and hear each other", async () => {
    const invite = await createStageViaUi(host, 0, a.base);
    groupId = new URL(invite).searchParams.get('join');
    await waitJoined(host.page);
    const onB = new URL(invite);
    const bUrl = new URL(b.base);
    onB.host = bUrl.host;
    await joinViaInvite(guest, onB.toString(), 1);
    await waitJoined(guest.page);
    host.id = await localParticipantId(host.page);
    guest.id = await localParticipantId(guest.page);
    await Promise.all([
      expectLiveVideo(host.page, guest.id, guest.color),
      expectLiveVideo(guest.page, host.id, host.color),
    ]);
    await Promise.all([expectTone(host.page, guest.id, guest.freq), expectTone(guest.page, host.id, host.freq)]);
  });

  it('host and guest chat across the nodes', async () => {
    await Promise.all([chatConnected(host.page), chatConnected(guest.page)]);
    await sendChat(guest.page, 'hello from node B');
    await chatMessage(host.page, 'hello from node B');
    await sendChat(host.page, 'hello from node A');
    await chatMessage(guest.page, 'hello from node A');
  });

  it('the host goes live on A; the watch page on B plays it with both tiles', async () => {
    await host.page.getByTestId('go-live').click();
    await host.page.waitForFunction(
      () => document.querySelector('[data-testid="live-state"]')?.dataset.state === 'live',
      null,
      { timeout: 20000 },
    );
    await viewerB.page.goto(`${b.base}/watch/${groupId}?player=hls`);
    await viewerA.page.goto(`${a.base}/watch/${groupId}?player=hls`);
    await Promise.all([waitWatchState(viewerB, ['live'], 40000), waitWatchState(viewerA, ['live'], 40000)]);
    const grid = await expectCompositeGrid(viewerB.page, VIDEO, [host, guest], 40000);
    console.log(`node B's viewer: tiles ${grid.owners.join(', ')} (${grid.w}x${grid.h})`);
  });

  it('viewers on A and on B chat with each other and with the stage', async () => {
    await Promise.all([joinChatAs(viewerA, 'Ann'), joinChatAs(viewerB, 'Bea')]);
    await sendChat(viewerA.page, 'Ann on node A here');
    await Promise.all([
      chatMessage(viewerB.page, 'Ann on node A here'),
      chatMessage(guest.page, 'Ann on node A here'),
      chatMessage(host.page, 'Ann on node A here'),
    ]);
    await sendChat(viewerB.page, 'Bea on node B here');
    await Promise.all([
      chatMessage(viewerA.page, 'Bea on node B here'),
      chatMessage(host.page, 'Bea on node B here'),
      chatMessage(guest.page, 'Bea on node B here'),
    ]);
    assertNoPageErrors(all);
    ok = true;
  });
});
