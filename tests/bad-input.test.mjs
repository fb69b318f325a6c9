// Journey: bad input while a stage is live. Two participants publish to each
// other; meanwhile every endpoint gets malformed JSON, missing fields, garbage
// SDP, bad tokens and an oversized body. Each must answer 4xx with a JSON
// {code, message}, and the two participants must still see each other.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import {
  BASE,
  API_KEY,
  PEOPLE,
  launch,
  newParticipant,
  assertNoPageErrors,
  dumpLogs,
  createStage,
  createToken,
  waitJoined,
  waitForRemoteTiles,
  expectLiveVideo,
  tokenClaims,
  tamperPayload,
  tamperSignature,
  expiredForgedToken,
  importSigningKey,
  expiredSignedToken,
  assertClientError,
} from './lib.mjs';

/** A raw HTTP request; returns {status, body (parsed JSON or null), text}. */
async function send(method, path, { body, token, contentType = 'application/json', headers = {} } = {}) {
  const h = { ...headers };
  if (contentType) h['Content-Type'] = contentType;
  if (token !== undefined) h.Authorization = `Bearer ${token}`;
  const res = await fetch(`${BASE}${path}`, { method, headers: h, body });
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  return { status: res.status, body: json, text: text.slice(0, 300) };
}

/** A WebSocket upgrade request with `protocol` as Sec-WebSocket-Protocol. */
function wsUpgrade(path, protocol) {
  return new Promise((resolve, reject) => {
    const url = new URL(`${BASE}${path}`);
    const headers = {
      Connection: 'Upgrade',
      Upgrade: 'websocket',
      'Sec-WebSocket-Version': '13',
      'Sec-WebSocket-Key': randomBytes(16).toString('base64'),
    };
    if (protocol !== undefined) headers['Sec-WebSocket-Protocol'] = protocol;
    const req = http.request({ host: url.hostname, port: url.port, path: url.pathname + url.search, method: 'GET', headers });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve({ status: res.statusCode, body: null, text: 'upgraded' });
    });
    req.on('response', (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (text += c));
      res.on('end', () => {
        let json = null;
        try {
          json = JSON.parse(text);
        } catch {
          json = null;
        }
        resolve({ status: res.statusCode, body: json, text: text.slice(0, 300) });
      });
    });
    req.on('error', reject);
    req.setTimeout(5000, () => req.destroy(new Error(`ws upgrade ${path} timed out`)));
    req.end();
  });
}

const GARBAGE_SDP = 'v=0\r\nthis is not sdp\r\nm=banana 9 UDP/TLS/RTP/SAVPF 96\r\n';

describe('bad input while a stage is live', { timeout: 150_000 }, () => {
  let browser;
  let red;
  let green;
  let prober;
  let stageId;
  let redToken;
  let greenToken;
  let probeToken;
  let idleToken;
  let eventsPath;
  let whipPath;
  let ok = false;

  before(async () => {
    browser = await launch();
    stageId = await createStage('bad-input');
    redToken = await createToken(stageId, { userId: 'red', username: 'Red' });
    greenToken = await createToken(stageId, { userId: 'green', username: 'Green' });
    probeToken = await createToken(stageId, { userId: 'probe', username: 'Probe' });
    idleToken = await createToken(stageId, { userId: 'idle', username: 'Idle' });
    const claims = tokenClaims(probeToken.token);
    eventsPath = new URL(claims.events_url).pathname;
    whipPath = new URL(claims.whip_url).pathname.replace(/\/$/, '');
    red = await newParticipant(browser, PEOPLE.red);
    green = await newParticipant(browser, PEOPLE.green);
    prober = await newParticipant(browser, PEOPLE.blue);
  });

  after(async () => {
    if (!ok) dumpLogs([red, green, prober].filter(Boolean));
    await browser?.close();
  });

  it('two participants are live', async () => {
    await red.page.goto(`${BASE}/?token=${encodeURIComponent(redToken.token)}`);
    await green.page.goto(`${BASE}/?token=${encodeURIComponent(greenToken.token)}`);
    await Promise.all([waitJoined(red.page), waitJoined(green.page)]);
    await waitForRemoteTiles(red.page, [greenToken.participantId]);
    await waitForRemoteTiles(green.page, [redToken.participantId]);
    await expectLiveVideo(red.page, greenToken.participantId, PEOPLE.green.color);
    await expectLiveVideo(green.page, redToken.participantId, PEOPLE.red.color);

    // A third participant joins the event plane only (a bare WebSocket), so
    // its WHIP requests get past "not joined" and reach the SDP parser.
    await prober.page.goto(`${BASE}/style.css`);
    const opened = await prober.page.evaluate(
      ({ url, token }) =>
        new Promise((resolve) => {
          const ws = new WebSocket(url, [token]);
          window.__probe = ws;
          ws.onopen = () => resolve('open');
          ws.onerror = () => resolve('error');
          ws.onclose = (e) => resolve(`closed ${e.code}`);
        }),
      { url: tokenClaims(probeToken.token).events_url, token: probeToken.token },
    );
    assert.equal(opened, 'open', 'the probe joined the event plane');
  });

  it('the demo backend rejects malformed and unauthorised requests', async () => {
    const cases = [
      ['POST', '/api/create', { body: '{"userId": ' }],
      ['POST', '/api/create', { body: '{}' }],
      ['POST', '/api/create', { body: '{"userId": 5}' }],
      ['POST', '/api/create', { body: '[1,2,3]' }],
      ['POST', '/api/join', { body: 'garbage' }],
      ['POST', '/api/join', { body: '{"userId":"x"}' }],
      ['POST', '/api/join', { body: '{"groupId":"no-such-group","userId":"x"}' }],
      ['POST', '/api/disconnect', { body: '{"groupId":"g","userId":"u","participantId":"p"}' }],
      ['POST', '/api/disconnect', { body: '{bad', token: 'garbage' }],
      ['POST', '/api/disconnect', { body: '{"groupId":"g","userId":"u","participantId":"p"}', token: 'garbage' }],
      ['DELETE', '/api/delete', { body: '{"groupId":"g"}' }],
      ['DELETE', '/api/delete', { body: '{"groupId":', token: 'garbage' }],
      ['DELETE', '/api/delete', { body: '{"groupId":"g"}', token: tamperSignature(redToken.token) }],
    ];
    for (const [method, path, opts] of cases) {
      assertClientError(await send(method, path, opts), `${method} ${path} ${opts.body}`);
    }

    // Only the host may remove people or end the stage.
    const created = await send('POST', '/api/create', {
      body: JSON.stringify({ userId: 'bad-host', attributes: { username: 'Host', avatarUrl: '' } }),
    });
    assert.ok(created.status < 300, `create: ${created.status} ${created.text}`);
    const joined = await send('POST', '/api/join', {
      body: JSON.stringify({ groupId: created.body.groupId, userId: 'bad-guest', attributes: { username: 'Guest', avatarUrl: '' } }),
    });
    assert.ok(joined.status < 300, `join: ${joined.status} ${joined.text}`);
    const guestTok = joined.body.stage.token;
    assertClientError(
      await send('POST', '/api/disconnect', {
        token: guestTok,
        body: JSON.stringify({ groupId: created.body.groupId, userId: 'bad-guest', participantId: created.body.stage.participantId }),
      }),
      'a guest removing the host',
    );
    assertClientError(
      await send('DELETE', '/api/delete', { token: guestTok, body: JSON.stringify({ groupId: created.body.groupId }) }),
      'a guest deleting the stage',
    );
    // Another stage's host token does not work either.
    assertClientError(
      await send('DELETE', '/api/delete', { token: redToken.token, body: JSON.stringify({ groupId: created.body.groupId }) }),
      'a token of another stage deleting the stage',
    );
    const cleanup = await send('DELETE', '/api/delete', {
      token: created.body.stage.token,
      body: JSON.stringify({ groupId: created.body.groupId }),
    });
    assert.ok(cleanup.status < 300, `host deletes own stage: ${cleanup.status} ${cleanup.text}`);
  });

  it('the control plane rejects malformed and unauthorised requests', async () => {
    const k = API_KEY;
    const s = encodeURIComponent(stageId);
    const cases = [
      ['POST', '/v1/stages', { body: '{}' }, 'no api key'],
      ['POST', '/v1/stages', { body: '{}', token: 'wrong-key' }, 'wrong api key'],
      ['GET', '/v1/stages', { contentType: null, token: 'wrong-key' }, 'list with wrong key'],
      ['POST', '/v1/stages', { body: '{"name": ', token: k }, 'malformed json'],
      ['POST', '/v1/stages', { body: '{"name": 42}', token: k }, 'wrong type'],
      ['GET', '/v1/stages/no-such-stage', { contentType: null, token: k }, 'unknown stage'],
      ['DELETE', '/v1/stages/no-such-stage', { contentType: null, token: k }, 'delete unknown stage'],
      ['POST', `/v1/stages/${s}/tokens`, { body: '{"userId":', token: k }, 'token: malformed json'],
      ['POST', `/v1/stages/${s}/tokens`, { body: '{"capabilities":["FLY"]}', token: k }, 'token: unknown capability'],
      ['POST', `/v1/stages/${s}/tokens`, { body: '{"duration":0}', token: k }, 'token: duration 0'],
      ['POST', `/v1/stages/${s}/tokens`, { body: '{"duration":999999}', token: k }, 'token: duration too long'],
      ['POST', `/v1/stages/${s}/tokens`, { body: JSON.stringify({ attributes: { big: 'x'.repeat(2000) } }), token: k }, 'token: attributes > 1 KB'],
      ['POST', '/v1/stages/no-such-stage/tokens', { body: '{}', token: k }, 'token for unknown stage'],
      ['GET', '/v1/stages/no-such-stage/participants', { contentType: null, token: k }, 'participants of unknown stage'],
      ['POST', `/v1/stages/${s}/participants/no-such-participant/disconnect`, { body: '{}', token: k }, 'disconnect unknown participant'],
      ['POST', `/v1/stages/${s}/participants/${redToken.participantId}/disconnect`, { body: '{"reason":', token: k }, 'disconnect: malformed json'],
      ['POST', '/v1/public-keys', { body: '{"publicKeyMaterial":', token: k }, 'public key: malformed json'],
      ['POST', '/v1/public-keys', { body: '{"publicKeyMaterial":"not a pem"}', token: k }, 'public key: not a PEM'],
      ['POST', '/v1/public-keys', { body: '{}', token: k }, 'public key: missing field'],
    ];
    for (const [method, path, opts, what] of cases) {
      assertClientError(await send(method, path, opts), what);
    }
    // The answers say what to fix: a misspelt field is named, not dropped;
    // a bad value names the field and the allowed values; unknown paths and
    // methods answer in the same JSON shape.
    const before = await send('GET', `/v1/stages/${s}/participants?maxResults=100`, { contentType: null, token: k });
    const named = [
      ['POST', `/v1/stages/${s}/tokens`, { body: '{"user_id":"u1"}', token: k }, 'UNKNOWN_FIELD', ['user_id', 'userId']],
      ['POST', `/v1/stages/${s}/tokens`, { body: '{"capabilities":["FLY"]}', token: k }, 'INVALID_FIELD', ['capabilities[0]', 'PUBLISH', 'SUBSCRIBE']],
      ['POST', '/api/create', { body: '{"userId":"u","attributes":{"name":"x"}}' }, 'UNKNOWN_FIELD', ['name', 'username']],
      ['GET', '/v1/no-such-endpoint', { contentType: null, token: k }, 'NOT_FOUND', []],
      ['GET', '/no-such-page.html', { contentType: null }, 'NOT_FOUND', []],
      ['PUT', '/v1/stages', { contentType: null, token: k }, 'METHOD_NOT_ALLOWED', ['PUT']],
      ['GET', '/v1/stages?maxResults=500', { contentType: null, token: k }, 'INVALID_MAX_RESULTS', ['100']],
    ];
    for (const [method, path, opts, code, mentions] of named) {
      const res = await send(method, path, opts);
      assertClientError(res, `${method} ${path}`, code);
      for (const m of mentions) assert.ok(res.body.message.includes(m), `${method} ${path}: message names ${m}: ${res.text}`);
    }
    const after = await send('GET', `/v1/stages/${s}/participants?maxResults=100`, { contentType: null, token: k });
    assert.equal(after.body.participants.length, before.body.participants.length, 'no token was minted for the misspelt userId');
  });

  it('the media plane rejects garbage SDP and bad tokens', async () => {
    const key = await importSigningKey();
    const expired = expiredSignedToken(key, probeToken.token);
    const sdp = { contentType: 'application/sdp', body: GARBAGE_SDP };
    const pub = `${whipPath}/publish`;
    const subRed = `${whipPath}/subscribe/${redToken.participantId}`;
    const cases = [
      ['POST', pub, { ...sdp }, 'publish without a token'],
      ['POST', pub, { ...sdp, token: 'garbage' }, 'publish with a garbage token'],
      ['POST', pub, { ...sdp, token: tamperPayload(probeToken.token, { capabilities: { allow_publish: true, allow_subscribe: true }, user_id: 'x' }) }, 'publish with a tampered payload'],
      ['POST', pub, { ...sdp, token: tamperSignature(probeToken.token) }, 'publish with a tampered signature'],
      ['POST', pub, { ...sdp, token: expiredForgedToken(probeToken.token) }, 'publish with an expired self-made token'],
      ['POST', pub, { ...sdp, token: probeToken.token }, 'publish garbage SDP'],
      ['POST', pub, { contentType: 'application/sdp', body: '', token: probeToken.token }, 'publish empty SDP'],
      ['POST', pub, { ...sdp, token: idleToken.token }, 'publish before joining the event plane'],
      ['POST', subRed, { ...sdp, token: probeToken.token }, 'subscribe with garbage SDP'],
      ['POST', subRed, { ...sdp, token: 'garbage' }, 'subscribe with a garbage token'],
      ['POST', `${whipPath}/subscribe/x`, { ...sdp, token: probeToken.token }, 'subscribe to nobody'],
      ['DELETE', `${whipPath}/sessions/no-such-session`, { contentType: null, token: probeToken.token }, 'delete unknown session'],
      ['DELETE', `${whipPath}/sessions/no-such-session`, { contentType: null }, 'delete without a token'],
    ];
    for (const [method, path, opts, what] of cases) {
      assertClientError(await send(method, path, opts), what);
    }
    assertClientError(await send('POST', pub, { ...sdp, token: probeToken.token }), 'garbage SDP', 'INVALID_SDP');
    assertClientError(await send('POST', pub, { ...sdp, token: expired }), 'publish, expired token', 'TOKEN_EXPIRED');
    assertClientError(await send('POST', subRed, { ...sdp, token: expired }), 'subscribe, expired token', 'TOKEN_EXPIRED');
  });

  it('the event plane refuses bad tokens before upgrading', async () => {
    const cases = {
      'no token': undefined,
      garbage: 'garbage',
      'tampered payload': tamperPayload(idleToken.token, { user_id: 'x' }),
      'tampered signature': tamperSignature(idleToken.token),
      'expired, self-made': expiredForgedToken(idleToken.token),
    };
    for (const [what, protocol] of Object.entries(cases)) {
      assertClientError(await wsUpgrade(eventsPath, protocol), `events socket, ${what}`);
    }
    const key = await importSigningKey();
    assertClientError(await wsUpgrade(eventsPath, expiredSignedToken(key, idleToken.token)), 'events socket, expired', 'TOKEN_EXPIRED');
    // A token for a stage that has been deleted.
    const gone = await createStage('bad-input-gone');
    const goneToken = await createToken(gone, { userId: 'ghost' });
    const del = await send('DELETE', `/v1/stages/${gone}`, { contentType: null, token: API_KEY });
    assert.ok(del.status < 300, `delete stage: ${del.status} ${del.text}`);
    assertClientError(await wsUpgrade(eventsPath, goneToken.token), 'events socket, deleted stage', 'STAGE_NOT_FOUND');
  });

  it('an oversized body gets a 4xx JSON error', async () => {
    const huge = JSON.stringify({ userId: 'x', attributes: { username: 'x'.repeat(3 * 1024 * 1024) } });
    assertClientError(await send('POST', '/api/create', { body: huge }), 'oversized /api/create');
    assertClientError(await send('POST', '/v1/stages', { body: huge, token: API_KEY }), 'oversized /v1/stages');
    assertClientError(
      await send('POST', `${whipPath}/publish`, { contentType: 'application/sdp', body: 'v=0\r\n' + 'a=x\r\n'.repeat(700_000), token: probeToken.token }),
      'oversized SDP',
    );
  });

  it('the live participants still see each other', async () => {
    await expectLiveVideo(red.page, greenToken.participantId, PEOPLE.green.color);
    await expectLiveVideo(green.page, redToken.participantId, PEOPLE.red.color);
    const probeState = await prober.page.evaluate(() => window.__probe.readyState);
    assert.equal(probeState, 1, 'the probe socket is still open');
    const list = await send('GET', `/v1/stages/${encodeURIComponent(stageId)}/participants`, { contentType: null, token: API_KEY });
    assert.equal(list.status, 200, list.text);
    const connected = list.body.participants.filter((p) => p.state === 'CONNECTED').map((p) => p.participantId);
    for (const id of [redToken.participantId, greenToken.participantId]) assert.ok(connected.includes(id), `${id} still connected`);
  });

  it('no page threw an uncaught error', () => {
    assertNoPageErrors([red, green, prober]);
    ok = true;
  });
});
