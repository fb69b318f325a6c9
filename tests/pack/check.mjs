// Loads the esbuild bundle of the scratch app in headless Chromium and checks
// that the SDK initialised by itself (no init call) and the app's checks hold.
// Usage: node tests/pack/check.mjs <app dir>   (run by `cargo xtask test`)
import { chromium } from 'playwright-core';
import { createServer } from 'node:http';
import { copyFileSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { extname, join, normalize } from 'node:path';

const app = process.argv[2];
if (!app) throw new Error('usage: node check.mjs <app dir>');
const dist = join(app, 'dist');
const pkg = join(app, 'node_modules', 'stagecast');

// esbuild leaves `new URL('x.wasm', import.meta.url)` alone, so the wasm must
// sit next to the bundle — what a user of plain esbuild does too.
for (const file of readdirSync(pkg).filter((f) => f.endsWith('.wasm'))) {
  copyFileSync(join(pkg, file), join(dist, file));
}
writeFileSync(
  join(dist, 'index.html'),
  '<!doctype html><meta charset="utf-8"><title>pack check</title><link rel="icon" href="data:,"><script type="module" src="./main.js"></script>\n',
);

const types = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm' };
const server = createServer((req, res) => {
  const path = normalize(decodeURIComponent(new URL(req.url, 'http://x').pathname)).replace(/^(\.\.[/\\])+/, '');
  const file = join(dist, path === '/' ? 'index.html' : path);
  try {
    const body = readFileSync(file);
    res.writeHead(200, { 'content-type': types[extname(file)] ?? 'application/octet-stream' });
    res.end(body);
  } catch {
    res.writeHead(404).end();
  }
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const url = `http://127.0.0.1:${server.address().port}/`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
let failure;
try {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (err) => errors.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') console.error(`[page] ${msg.text()}`);
  });
  await page.goto(url);
  const result = await page
    .waitForFunction(() => window.packCheck, null, { timeout: 15000 })
    .then((handle) => handle.jsonValue())
    .catch(() => undefined);
  if (errors.length) failure = errors.join('\n');
  else if (!result) failure = 'the bundle never set window.packCheck (did the SDK initialise?)';
  else {
    const bad = Object.entries(result).filter(([, ok]) => ok !== true).map(([name]) => name);
    if (bad.length) failure = `checks failed in the bundled app: ${bad.join(', ')}`;
    else console.log(`pack check: bundle loaded in Chromium, checks ok (${Object.keys(result).join(', ')})`);
  }
} finally {
  await browser.close();
  server.close();
}
if (failure) {
  console.error(failure);
  process.exit(1);
}
