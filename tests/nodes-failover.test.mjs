// Journey: kill -9 of a node in distributed mode (issue 13). Two nodes and
// one Redis; node B sits behind a load balancer (Debian's nginx, node A as
// its backup) and hands out the balancer's URL in its tokens
// (`--public-url`). The host's page comes from B and creates the stage; B
// is the stage's home (both nodes idle: the registry picks the smaller node
// id); the guest's page comes from A, which forwards the
// guest's event plane and WHIP to B. The host sends chat messages; once each
// is acknowledged on the host's page, B is killed with SIGKILL. Then:
// - every acknowledged message is on the guest's page (it reached node A);
// - the SDK's reconnect path brings both back without anyone touching the
//   page (the host's through the balancer, now to A; the guest's to A,
//   which finds B unreachable and takes the stage over), and each sees the
//   other's video again within 15 s of the kill.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import {
  PEOPLE,
  launch,
  newParticipant,
  assertNoPageErrors,
  dumpLogs,
  createStageViaUi,
  joinViaInvite,
  waitJoined,
  localParticipantId,
  expectLiveVideo,
  chatConnected,
  sendChat,
  chatMessage,
  ownServer,
  freePort,
  stagesOn,
} from './lib.mjs';
import { runNginx } from './nginx.mjs';
import { startRedis } from './redis.mjs';

/** nginx as the load balancer: everything to `primary`, to `backup` once it fails; WebSockets passed through. */
function balancerConfig(primary, backup) {
  return (dir, port) => `    access_log ${dir}/access.log;
    map $http_upgrade $connection_upgrade { default upgrade; '' close; }
    upstream nodes {
        server ${primary} max_fails=1 fail_timeout=30s;
        server ${backup} backup;
    }
    server {
        listen 127.0.0.1:${port};
        location / {
            proxy_pass http://nodes;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_connect_timeout 2s;
            proxy_read_timeout 3600s;
            proxy_buffering off;
            proxy_next_upstream error timeout;
        }
    }
`;
}

describe('kill -9 of the node a stage lives on', { timeout: 240_000 }, () => {
  let redis;
  let a;
  let b;
  let lb;
  let dir;
  let browser;
  let host;
  let guest;
  let all = [];
  let ok = false;

  before(async () => {
    redis = await startRedis();
    mkdirSync('target', { recursive: true });
    dir = mkdtempSync('target/failover-');
    const lbPort = await freePort('tcp');
    const common = ['--redis', redis.url];
    mkdirSync(`${dir}/a`);
    mkdirSync(`${dir}/b`);
    // Both idle when the stage is created: the registry gives it to the smallest id, node-1 (B).
    a = await ownServer({ dataDir: `${dir}/a`, args: [...common, '--node-id', 'node-2'] });
    b = await ownServer({ dataDir: `${dir}/b`, args: [...common, '--node-id', 'node-1', '--public-url', `http://127.0.0.1:${lbPort}`] });
    lb = await runNginx(balancerConfig(new URL(b.base).host, new URL(a.base).host), lbPort);
    browser = await launch();
    host = await newParticipant(browser, PEOPLE.red);
    guest = await newParticipant(browser, PEOPLE.green);
    all = [host, guest];
  });

  after(async () => {
    if (!ok) {
      dumpLogs(all);
      console.log(`node logs: ${a?.log} ${b?.log}`);
    }
    await browser?.close();
    await lb?.stop();
    if (lb) rmSync(lb.dir, { recursive: true, force: true });
    await a?.kill();
    await b?.kill();
    await redis?.stop();
    if (ok && dir) rmSync(dir, { recursive: true, force: true });
  });

  it('the host (page from B) and the guest (page from A) are on a stage that lives on B', async () => {
    const invite = await createStageViaUi(host, 0, b.base);
    await waitJoined(host.page);
    const onA = new URL(invite);
    onA.host = new URL(a.base).host;
    await joinViaInvite(guest, onA.toString(), 1);
    await waitJoined(guest.page);
    host.id = await localParticipantId(host.page);
    guest.id = await localParticipantId(guest.page);
    await Promise.all([
      expectLiveVideo(host.page, guest.id, guest.color),
      expectLiveVideo(guest.page, host.id, host.color),
    ]);
    await Promise.all([chatConnected(host.page), chatConnected(guest.page)]);
    assert.deepEqual([await stagesOn(b), await stagesOn(a)], [1, 0], 'the stage lives on B, not on A');
  });

  it('after kill -9 of B, acknowledged chat messages had reached A and both are back within 15 s', async () => {
    const texts = ['before the crash 1', 'before the crash 2', 'before the crash 3'];
    for (const text of texts) {
      await sendChat(host.page, text);
      // Shown on the sender's page once the server acknowledged it.
      await chatMessage(host.page, text);
    }
    await b.kill();
    const killed = Date.now();
    for (const text of texts) await chatMessage(guest.page, text, 5000);
    await Promise.all([
      expectLiveVideo(host.page, guest.id, guest.color, 30000),
      expectLiveVideo(guest.page, host.id, host.color, 30000),
    ]);
    const back = Date.now() - killed;
    assert.equal(await stagesOn(a), 1, 'the stage lives on A now');
    console.log(`both see each other again ${back} ms after kill -9 of the stage's node`);
    assert.ok(back <= 15000, `back within 15 s (took ${back} ms)`);
    assertNoPageErrors(all);
    ok = true;
  });
});
