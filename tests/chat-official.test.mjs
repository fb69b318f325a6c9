// The official IVS chat client (`amazon-ivs-chat-messaging` from npm) against
// the server under test: tests/chat-client/official.mjs exits non-zero on
// the first behaviour that differs from IVS Chat.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const script = fileURLToPath(new URL('./chat-client/official.mjs', import.meta.url));

test('amazon-ivs-chat-messaging connects, sends, receives, deletes and is disconnected', () => {
  const run = spawnSync(process.execPath, [script], { env: process.env, encoding: 'utf8', timeout: 120_000 });
  if (run.status !== 0) {
    console.error(run.stdout);
    console.error(run.stderr);
  }
  assert.equal(run.status, 0, `official client run failed (status ${run.status})`);
});
