// A tiny network probe for the harness's own test (harness.test.mjs), run
// inside a namespace with `ip netns exec NS node tests/net/probe.mjs ...`.
// Prints one JSON line with what it saw.
//
//   serve-tls IP PORT CERT KEY  HTTPS on IP:PORT: every GET gets a page
//   serve IP PORT            TCP and UDP on IP:PORT until killed:
//                            UDP datagrams are echoed; a TCP line "blast N"
//                            gets N bytes back, "sink N" reads N bytes then
//                            answers "done"; an HTTP GET gets the caller's
//                            address as the body
//   tcp IP PORT              can we connect within 1 s?
//   udp IP PORT COUNT        COUNT echo round trips, how many came back
//   download IP PORT BYTES   kbit/s of a BYTES download
//   upload IP PORT BYTES     kbit/s of a BYTES upload

import { createServer, createConnection } from 'node:net';
import { createSocket } from 'node:dgram';
import { createServer as createHttpsServer } from 'node:https';
import { readFileSync } from 'node:fs';

const [cmd, ip, portText, nText, keyFile] = process.argv.slice(2);
const port = Number(portText);
const n = Number(nText || 0);
const print = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);

function serve() {
  const udp = createSocket('udp4');
  udp.on('message', (msg, from) => udp.send(msg, from.port, from.address));
  udp.bind(port, ip);
  createServer((sock) => {
    let head = '';
    const onData = (chunk) => {
      head += chunk.toString('latin1');
      const nl = head.indexOf('\n');
      if (nl < 0) return;
      sock.off('data', onData);
      const line = head.slice(0, nl).trim();
      const [verb, arg] = line.split(' ');
      if (verb === 'GET') {
        const body = sock.remoteAddress.replace(/^::ffff:/, '');
        sock.end(`HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
      } else if (verb === 'blast') {
        sock.end(Buffer.alloc(Number(arg), 7));
      } else if (verb === 'sink') {
        let got = Buffer.byteLength(head.slice(nl + 1), 'latin1');
        const want = Number(arg);
        const check = () => {
          if (got >= want) sock.end('done\n');
        };
        sock.on('data', (c) => {
          got += c.length;
          check();
        });
        check();
      } else {
        sock.end();
      }
    };
    sock.on('data', onData);
    sock.on('error', () => {});
  }).listen(port, ip, () => print({ listening: `${ip}:${port}` }));
}

function serveTls(certFile) {
  const server = createHttpsServer({ cert: readFileSync(certFile), key: readFileSync(keyFile) }, (req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html' });
    res.end('<!doctype html><title>tls probe</title><p>hello over tls</p>');
  });
  server.listen(port, ip, () => print({ listening: `https://${ip}:${port}` }));
}

function tcp() {
  const sock = createConnection({ host: ip, port, timeout: 1000 });
  const done = (ok) => {
    print({ ok });
    sock.destroy();
  };
  sock.once('connect', () => done(true));
  sock.once('timeout', () => done(false));
  sock.once('error', () => done(false));
}

function udp() {
  const sock = createSocket('udp4');
  const seen = new Set();
  sock.on('message', (msg) => seen.add(msg.readUInt32BE(0)));
  let i = 0;
  const timer = setInterval(() => {
    if (i >= n) {
      clearInterval(timer);
      setTimeout(() => {
        print({ sent: n, received: seen.size });
        sock.close();
      }, 1000);
      return;
    }
    const buf = Buffer.alloc(100);
    buf.writeUInt32BE(i, 0);
    sock.send(buf, port, ip);
    i += 1;
  }, 2);
}

function transfer(direction) {
  const started = Date.now();
  const sock = createConnection({ host: ip, port, timeout: 30000 });
  let got = 0;
  sock.once('connect', () => {
    if (direction === 'down') sock.write(`blast ${n}\n`);
    else {
      sock.write(`sink ${n}\n`);
      sock.write(Buffer.alloc(n, 9));
    }
  });
  sock.on('data', (c) => {
    got += c.length;
  });
  sock.once('end', () => {
    const secs = (Date.now() - started) / 1000;
    const bytes = direction === 'down' ? got : n;
    print({ bytes, secs, kbit: Math.round((bytes * 8) / 1000 / secs) });
    sock.destroy();
  });
  sock.once('timeout', () => {
    print({ error: 'timeout', got });
    sock.destroy();
  });
  sock.once('error', (err) => print({ error: err.message }));
}

switch (cmd) {
  case 'serve':
    serve();
    break;
  case 'serve-tls':
    serveTls(nText);
    break;
  case 'tcp':
    tcp();
    break;
  case 'udp':
    udp();
    break;
  case 'download':
    transfer('down');
    break;
  case 'upload':
    transfer('up');
    break;
  default:
    print({ error: `unknown command ${cmd}` });
    process.exitCode = 2;
}
