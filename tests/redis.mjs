// Debian's redis-server for the journeys of distributed mode: one on a free
// loopback port, nothing saved, stopped by `stop()` (also call it on failure).

import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import { freePort } from './lib.mjs';


function ping(port) {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port }, () => socket.write('PING\r\n'));
    socket.setTimeout(1000, () => {
      socket.destroy();
      resolve(false);
    });
    socket.on('data', (d) => {
      socket.destroy();
      resolve(d.toString().startsWith('+PONG'));
    });
    socket.on('error', () => resolve(false));
  });
}

/** A running redis-server: `{ url, stop }`. */
export async function startRedis() {
  const port = await freePort('tcp');
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  let exited = false;
  child.once('exit', () => {
    exited = true;
  });
  // Not left behind when the test process ends without its after() hook (a timeout).
  const killOnExit = () => child.kill('SIGKILL');
  process.on('exit', killOnExit);
  for (let i = 0; i < 100 && !exited; i += 1) {
    if (await ping(port)) {
      const stop = () =>
        new Promise((resolve) => {
          process.off('exit', killOnExit);
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once('exit', resolve);
          child.kill('SIGKILL');
        });
      return { url: `redis://127.0.0.1:${port}/0`, stop };
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  process.off('exit', killOnExit);
  child.kill('SIGKILL');
  throw new Error('redis-server did not start (cargo xtask setup installs the Debian package redis-server)');
}
