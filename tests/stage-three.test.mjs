// Journey: three people on one stage through the sample app's UI.
// The host creates a stage, two guests open the invite link; everyone sees
// and hears the other two (distinct colours and tones); a guest mutes and the
// others see it; a guest leaves and the others drop the tile.

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
  localParticipantId,
  waitForEvent,
  waitForRemoteTiles,
  expectLiveVideo,
  expectTone,
  clickAndConfirm,
  screens,
} from './lib.mjs';

describe('three participants on one stage', { timeout: 180_000 }, () => {
  let browser;
  let red;
  let green;
  let blue;
  let all = [];
  let groupId;
  let ok = false;

  before(async () => {
    browser = await launch();
    red = await newParticipant(browser, PEOPLE.red);
    green = await newParticipant(browser, PEOPLE.green);
    blue = await newParticipant(browser, PEOPLE.blue);
    all = [red, green, blue];
  });

  after(async () => {
    if (!ok) dumpLogs(all);
    await browser?.close();
  });

  it('the host creates a stage and two guests join from the invite link', async () => {
    const invite = await createStageViaUi(red, 0);
    assert.match(invite, /\?join=/, 'invite link points at the join page');
    await waitJoined(red.page);

    // The new stage is listed on the home page with its host.
    groupId = new URL(invite).searchParams.get('join');
    await green.page.goto(`${BASE}/`);
    const item = green.page.locator(`[data-testid="stage-item"][data-group-id="${groupId}"]`);
    await item.waitFor({ timeout: 10000 });
    assert.equal((await item.getByTestId('stage-host').textContent()).trim(), "Red's stage");
    assert.match(await item.getByTestId('stage-count').textContent(), /^[1-9]\d* participants?$/);
    await screens(green.page, 'home');
    await green.page.goto(invite);
    await green.page.getByTestId('join-button').waitFor();
    await screens(green.page, 'invite');

    await joinViaInvite(green, invite, 1);
    await joinViaInvite(blue, invite, 2);
    await Promise.all([waitJoined(green.page), waitJoined(blue.page)]);
    for (const p of all) p.id = await localParticipantId(p.page);
    assert.equal(new Set(all.map((p) => p.id)).size, 3, 'three distinct participant ids');
  });

  it('each page shows the other two with live video of the right colour', async () => {
    await Promise.all(
      all.map(async (viewer) => {
        const others = all.filter((p) => p !== viewer);
        await waitForRemoteTiles(viewer.page, others.map((p) => p.id));
        for (const other of others) {
          const name = await viewer.page
            .locator(`[data-testid="tile"][data-participant-id="${other.id}"] [data-testid="tile-name"]`)
            .textContent();
          assert.equal(name.trim(), other.name, `${viewer.name} sees ${other.name}'s name`);
          await expectLiveVideo(viewer.page, other.id, other.color);
        }
      }),
    );
    await screens(red.page, 'stage-host');
    // On a short screen the stage is taller than the window: Mute and Leave stay on it.
    await red.page.setViewportSize({ width: 1280, height: 500 });
    await red.page.waitForTimeout(300);
    for (const id of ['toggle-mic', 'leave-button']) {
      const seen = await red.page.evaluate((id) => {
        const r = document.querySelector(`[data-testid="${id}"]`).getBoundingClientRect();
        return { top: r.top, bottom: r.bottom, inner: innerHeight, page: document.documentElement.scrollHeight };
      }, id);
      assert.ok(seen.page > seen.inner && seen.top >= 0 && seen.bottom <= seen.inner, `${id} on screen at 1280×500: ${JSON.stringify(seen)}`);
    }
    await red.page.setViewportSize({ width: 1100, height: 820 });
    await screens(blue.page, 'stage-guest');
  });

  it('every tile shows a good connection (no loss on loopback) from the SDK\'s quality stats', async () => {
    for (const viewer of all) {
      const seen = await viewer.page.waitForFunction(
        () => {
          const dots = [...document.querySelectorAll('[data-testid="tile"]')].map((t) => ({
            id: t.dataset.participantId,
            local: t.dataset.local,
            quality: t.querySelector('[data-testid="tile-quality"]')?.dataset.quality,
            title: t.querySelector('[data-testid="tile-quality"]')?.title,
          }));
          return dots.length === 3 && dots.every((d) => d.quality === 'excellent' || d.quality === 'good') && dots;
        },
        null,
        { timeout: 10000 },
      ).then((h) => h.jsonValue()).catch(async (err) => {
        const now = await viewer.page.evaluate(() => [...document.querySelectorAll('[data-testid="tile-quality"]')].map((q) => q.dataset.quality));
        throw new Error(`${viewer.name}: tiles' quality not good within 10 s: ${JSON.stringify(now)} (${err.message})`);
      });
      assert.match(seen[0].title, /^Connection: (excellent|good)$/);
    }
    // The numbers behind a dot: the remote video's RTCStatsReport has decoded frames.
    const decoded = await red.page.evaluate(async (id) => {
      const stream = window.__stagecast.videoStreams?.[id];
      if (!stream) return -1;
      let frames = 0;
      (await stream.requestRTCStats()).forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded || 0;
      });
      return frames;
    }, green.id);
    assert.ok(decoded > 0, `requestRTCStats() of Green's video on Red's page shows decoded frames (${decoded})`);
  });

  it("each page hears the other two's tones", async () => {
    for (const viewer of all) {
      for (const other of all.filter((p) => p !== viewer)) {
        await expectTone(viewer.page, other.id, other.freq);
      }
    }
  });

  it('a guest mutes the mic and the others see it', async () => {
    await green.page.getByTestId('toggle-mic').click();
    for (const viewer of [red, blue]) {
      await waitForEvent(viewer.page, { type: 'stageStreamMuteChanged', participantId: green.id, muted: true });
      await viewer.page.waitForFunction(
        (id) => document.querySelector(`[data-testid="tile"][data-participant-id="${id}"]`)?.dataset.muted === 'true',
        green.id,
        { timeout: 10000 },
      );
      assert.ok(
        await viewer.page
          .locator(`[data-testid="tile"][data-participant-id="${green.id}"] [data-testid="tile-muted"]`)
          .isVisible(),
        `${viewer.name} sees Green's muted indicator`,
      );
    }
  });

  it('a participant stops the camera and the others see the avatar', async () => {
    await blue.page.getByTestId('toggle-camera').click();
    for (const viewer of [red, green]) {
      await waitForEvent(viewer.page, { type: 'stageStreamMuteChanged', participantId: blue.id, streamType: 'video', muted: true });
      const tile = viewer.page.locator(`[data-testid="tile"][data-participant-id="${blue.id}"]`);
      await viewer.page.waitForFunction((id) => document.querySelector(`[data-testid="tile"][data-participant-id="${id}"]`)?.dataset.videoStopped === 'true', blue.id, { timeout: 10000 });
      assert.ok(await tile.getByTestId('tile-avatar').isVisible(), `${viewer.name} sees Blue's avatar`);
    }
    await red.page.screenshot({ path: '/tmp/stage-three-muted.png' });
    await blue.page.getByTestId('toggle-camera').click();
    await waitForEvent(red.page, { type: 'stageStreamMuteChanged', participantId: blue.id, streamType: 'video', muted: false });
    await expectLiveVideo(red.page, blue.id, blue.color);
  });

  it('a guest leaves and the others drop the tile', async () => {
    await blue.page.getByTestId('leave-button').click();
    for (const viewer of [red, green]) {
      await waitForEvent(viewer.page, { type: 'stageParticipantLeft', participantId: blue.id });
      await waitForRemoteTiles(viewer.page, [red, green].filter((p) => p !== viewer).map((p) => p.id));
    }
    // The two who stayed still see each other.
    await expectLiveVideo(red.page, green.id, green.color);
    await expectLiveVideo(green.page, red.id, red.color);
  });

  it('the host leaves and comes back from the list still the host; the guest is told both', async () => {
    await red.page.getByTestId('leave-button').click();
    await green.page.waitForFunction(() => document.querySelector('[data-testid="banner"]')?.dataset.reason === 'host-left', null, { timeout: 10000 });
    await red.page.getByTestId('back-home').click();
    await red.page.locator(`[data-testid="stage-join"][data-group-id="${groupId}"]`).click();
    await red.page.waitForFunction(() => document.querySelector('[data-testid="connection-state"]')?.dataset.state === 'connected', null, { timeout: 20000 });
    // Host controls are back: End stage, Go live, Remove on the guest's tile.
    await red.page.getByTestId('end-stage').waitFor({ timeout: 10000 });
    assert.ok(await red.page.getByTestId('go-live').isEnabled(), 'Go live offered to the returning host');
    red.id = await localParticipantId(red.page);
    await waitForRemoteTiles(red.page, [green.id]);
    assert.equal(await red.page.locator(`[data-testid="tile"][data-participant-id="${green.id}"] [data-testid="remove-button"]`).count(), 1);
    // The guest sees the host back (badge on its tile) and the notice goes away.
    await waitForRemoteTiles(green.page, [red.id]);
    assert.equal(await green.page.locator(`[data-testid="tile"][data-participant-id="${red.id}"] [data-testid="host-badge"]`).count(), 1);
    await green.page.getByTestId('banner').waitFor({ state: 'hidden', timeout: 10000 });
    await expectLiveVideo(green.page, red.id, red.color);
  });

  it('the host ends the stage and the remaining guest is told', async () => {
    // One click is not enough: the host is asked first, and "Cancel" keeps the stage.
    const endStage = red.page.getByTestId('end-stage');
    assert.match(await clickAndConfirm(red.page, endStage, false), /end the stage for everyone/i);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(await green.page.getByTestId('connection-state').getAttribute('data-state'), 'connected', 'cancelled: the guest is still on the stage');
    assert.ok(await endStage.isEnabled(), 'cancelled: End stage still offered');
    await clickAndConfirm(red.page, endStage);
    await waitForEvent(green.page, { type: 'stageLeft', reason: 'stage-deleted' });
    assert.equal(await green.page.getByTestId('banner').getAttribute('data-reason'), 'stage-deleted');
    assert.match(await green.page.getByTestId('banner-text').textContent(), /ended/i);
    assert.ok(await green.page.getByTestId('back-home').isVisible(), 'a way back to the stages list');
    await waitForEvent(red.page, { type: 'stageLeft', reason: 'stage-deleted' });
  });

  it('no page threw an uncaught error', () => {
    assertNoPageErrors(all);
    ok = true;
  });
});
