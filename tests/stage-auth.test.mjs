// Journey: what a token allows. A SUBSCRIBE-only participant watches but
// cannot publish (StageError 8 TOKEN_NOT_ALLOWED, PUBLISH_ERROR, shown in the
// UI); expired, tampered and garbage tokens are refused with a clear error; a
// guest removed by the host sees why, and cannot come back with that token.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  BASE,
  PEOPLE,
  launch,
  newParticipant,
  assertNoPageErrors,
  dumpLogs,
  createStage,
  createToken,
  createStageViaUi,
  joinViaInvite,
  waitJoined,
  localParticipantId,
  waitForEvent,
  waitForRemoteTiles,
  expectLiveVideo,
  tamperPayload,
  tamperSignature,
  clickAndConfirm,
  expiredForgedToken,
  importSigningKey,
  expiredSignedToken,
  selfSignedToken,
  tokenClaims,
} from './lib.mjs';

/** Waits for the page's join to fail; returns the recorded joinFailed event. */
async function expectJoinRefused(page, timeout = 15000) {
  const handle = await page.waitForFunction(
    () => (window.__stagecast?.events || []).find((e) => e.type === 'joined' || e.type === 'joinFailed') || false,
    null,
    { timeout },
  );
  const ev = await handle.jsonValue();
  assert.equal(ev.type, 'joinFailed', `expected the join to be refused, got ${JSON.stringify(ev)}`);
  const banner = page.getByTestId('banner');
  assert.ok(await banner.isVisible(), 'an error banner is shown');
  assert.equal(await banner.getAttribute('data-kind'), 'error');
  const text = await page.getByTestId('banner-text').textContent();
  assert.match(text, /could not (join|open) the stage/i, `banner explains: ${text}`);
  return ev;
}

describe('tokens and permissions', { timeout: 180_000 }, () => {
  let browser;
  const everyone = [];
  let ok = false;

  before(async () => {
    browser = await launch();
  });

  after(async () => {
    if (!ok) dumpLogs(everyone);
    await browser?.close();
  });

  it('a SUBSCRIBE-only participant watches but cannot publish', async () => {
    const stageId = await createStage('auth-subscribe-only');
    const pubToken = await createToken(stageId, { userId: 'publisher', username: 'Publisher' });
    const subToken = await createToken(stageId, { userId: 'viewer', username: 'Viewer', capabilities: ['SUBSCRIBE'] });
    const pub = await newParticipant(browser, { ...PEOPLE.red, name: 'Publisher' });
    const sub = await newParticipant(browser, { ...PEOPLE.green, name: 'Viewer' });
    everyone.push(pub, sub);

    await pub.page.goto(`${BASE}/?token=${encodeURIComponent(pubToken.token)}`);
    await waitJoined(pub.page);
    await sub.page.goto(`${BASE}/?token=${encodeURIComponent(subToken.token)}`);
    await waitJoined(sub.page);
    assert.equal(await localParticipantId(sub.page), subToken.participantId);

    await waitForRemoteTiles(sub.page, [pubToken.participantId]);
    await expectLiveVideo(sub.page, pubToken.participantId, PEOPLE.red.color);

    const err = await waitForEvent(sub.page, { type: 'error', category: 'PUBLISH_ERROR' });
    assert.equal(err.code, 8, `TOKEN_NOT_ALLOWED: ${JSON.stringify(err)}`);
    const banner = sub.page.getByTestId('banner');
    assert.ok(await banner.isVisible(), 'the publish error is shown');
    assert.equal(await banner.getAttribute('data-code'), '8');
    assert.match(await sub.page.getByTestId('banner-text').textContent(), /does not allow/i);

    // The viewer never shows up as a publisher on the other side.
    const pubSees = await pub.page.evaluate(
      (id) => (window.__stagecast.events || []).filter((e) => e.type === 'stageParticipantStreamsAdded' && e.participantId === id),
      subToken.participantId,
    );
    assert.deepEqual(pubSees, [], 'no streams from the SUBSCRIBE-only participant');

    assertNoPageErrors([pub, sub]);
    await pub.context.close();
    await sub.context.close();
  });

  it('expired, tampered and garbage tokens are refused with a clear error', async () => {
    const stageId = await createStage('auth-refused');
    const good = await createToken(stageId, { userId: 'mallory', username: 'Mallory' });
    const mallory = await newParticipant(browser, { ...PEOPLE.blue, name: 'Mallory' });
    everyone.push(mallory);
    const key = await importSigningKey();
    // [token, the IVS StageErrorCode the join must fail with]
    const bad = {
      'expired (validly signed by an imported key)': [expiredSignedToken(key, good.token), 2],
      'tampered payload': [tamperPayload(good.token, { user_id: 'admin', attributes: { isHost: 'true' } }), 1],
      'tampered signature': [tamperSignature(good.token), 1],
      'expired, self-made': [expiredForgedToken(good.token), null],
      garbage: ['not-a-token', 1],
    };
    for (const [what, [token, code]] of Object.entries(bad)) {
      await mallory.page.goto(`${BASE}/?token=${encodeURIComponent(token)}`);
      try {
        const ev = await expectJoinRefused(mallory.page);
        if (process.env.STAGECAST_E2E_VERBOSE) console.log(what, JSON.stringify(ev));
        assert.equal(ev.category, 'JOIN_ERROR', JSON.stringify(ev));
        if (code !== null) assert.equal(ev.code, code, JSON.stringify(ev));
        assert.match(await mallory.page.getByTestId('banner-text').textContent(), /token/i);
      } catch (err) {
        throw new Error(`${what}: ${err.message}`);
      }
    }
    // The imported key itself works: the same claims, not expired, join.
    const now = Math.floor(Date.now() / 1000);
    const selfSigned = selfSignedToken(key, { ...tokenClaims(good.token), jti: 'self-signed-1', iat: now, exp: now + 600 });
    await mallory.page.goto(`${BASE}/?token=${encodeURIComponent(selfSigned)}`);
    await waitJoined(mallory.page);
    await mallory.page.getByTestId('leave-button').click();
    await waitForEvent(mallory.page, { type: 'stageLeft', reason: 'user-initiated' });

    // Nobody got onto the stage with a refused token.
    const res = await fetch(`${BASE}/v1/stages/${stageId}/participants`, {
      headers: { Authorization: `Bearer ${process.env.STAGECAST_API_KEY || ''}` },
    });
    if (res.ok) {
      const body = await res.json();
      const connected = (body.participants || []).filter((p) => p.state === 'CONNECTED' && p.participantId !== good.participantId && p.participantId !== 'self-signed-1');
      assert.deepEqual(connected, [], 'no participant connected with a refused token');
    }
    assertNoPageErrors([mallory]);
    await mallory.context.close();
  });

  it('the host removes a guest, who sees why and cannot rejoin with that token', async () => {
    const host = await newParticipant(browser, PEOPLE.red);
    const guest = await newParticipant(browser, PEOPLE.green);
    everyone.push(host, guest);
    const invite = await createStageViaUi(host, 0);
    await waitJoined(host.page);
    await joinViaInvite(guest, invite, 1);
    await waitJoined(guest.page);
    const guestId = await localParticipantId(guest.page);
    const guestToken = await guest.page.evaluate(() => window.__stagecast.token);

    // A guest whose browser refuses the camera is told so, not that it is live.
    const camless = await newParticipant(browser, PEOPLE.blue);
    everyone.push(camless);
    await camless.context.addInitScript(() => {
      navigator.mediaDevices.getUserMedia = async () => {
        throw new DOMException('Permission denied', 'NotAllowedError');
      };
    });
    await joinViaInvite(camless, invite, 2);
    await waitJoined(camless.page);
    const help = await camless.page.getByTestId('stage-help').textContent();
    assert.doesNotMatch(help, /camera and microphone are live/i, `help text: ${help}`);
    assert.match(help, /not available/i, `help text: ${help}`);
    assert.ok(await camless.page.getByTestId('toggle-camera').isDisabled(), 'no camera to stop');
    await expectLiveVideo(camless.page, await localParticipantId(host.page), host.color);
    const camlessId = await localParticipantId(camless.page);
    await camless.page.getByTestId('leave-button').click();
    await waitForEvent(host.page, { type: 'stageParticipantLeft', participantId: camlessId });

    await waitForRemoteTiles(host.page, [guestId]);
    const removeBtn = host.page.locator(`[data-testid="tile"][data-participant-id="${guestId}"] [data-testid="remove-button"]`);
    assert.match(await clickAndConfirm(host.page, removeBtn), /remove .+ from the stage/i);

    await waitForEvent(guest.page, { type: 'stageLeft', reason: 'participant-disconnected' });
    const banner = guest.page.getByTestId('banner');
    assert.ok(await banner.isVisible(), 'the guest sees a banner');
    assert.equal(await banner.getAttribute('data-reason'), 'participant-disconnected');
    assert.match(await guest.page.getByTestId('banner-text').textContent(), /removed/i);
    assert.equal(await guest.page.locator('[data-testid="tile"][data-local="false"]').count(), 0, 'guest tiles cleared');
    assert.ok(await guest.page.getByTestId('invite').isHidden(), 'a removed guest is not asked to invite others');

    await waitForEvent(host.page, { type: 'stageParticipantLeft', participantId: guestId });
    await waitForRemoteTiles(host.page, []);

    // Same token again: refused.
    await guest.page.goto(`${BASE}/?token=${encodeURIComponent(guestToken)}`);
    const ev = await expectJoinRefused(guest.page);
    if (process.env.STAGECAST_E2E_VERBOSE) console.log('rejoin after removal', JSON.stringify(ev));
    assert.equal(ev.category, 'JOIN_ERROR', `refused at join: ${JSON.stringify(ev)}`);
    assert.equal(ev.code, 10, `PARTICIPANT_DISCONNECTED: ${JSON.stringify(ev)}`);

    // The host ends the stage: it is gone from the list and the host is told.
    const groupId = new URL(invite).searchParams.get('join');
    await clickAndConfirm(host.page, host.page.getByTestId('end-stage'));
    await waitForEvent(host.page, { type: 'stageLeft', reason: 'stage-deleted' });
    assert.equal(await host.page.getByTestId('banner').getAttribute('data-reason'), 'stage-deleted');
    assert.match(await host.page.getByTestId('banner-text').textContent(), /ended/i);
    assert.ok(await host.page.getByTestId('go-live').isDisabled(), 'no Go live on an ended stage');
    assert.ok(await host.page.getByTestId('invite').isHidden(), 'no invite to an ended stage');
    const list = await (await fetch(`${BASE}/api/list`, { method: 'POST' })).json();
    assert.ok(!list.some((item) => item.groupId === groupId), 'the ended stage is no longer listed');

    assertNoPageErrors([host, guest]);
  });

  it('no page threw an uncaught error', () => {
    assertNoPageErrors(everyone);
    ok = true;
  });
});
