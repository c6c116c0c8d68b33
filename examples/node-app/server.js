// Example app for ebpf-sidecar: a small HTTP service whose routes each make the kernel do one
// recognisable kind of work, so the sidecar's metrics move in ways you can predict.
// No npm dependencies: only Node's standard library.
'use strict';

const http = require('node:http');
const net = require('node:net');
const fs = require('node:fs');
const path = require('node:path');
const { execFile } = require('node:child_process');

const PORT = Number(process.env.PORT || 8080);
const UPSTREAM_PORT = Number(process.env.UPSTREAM_PORT || 7070);
const DATA_DIR = process.env.DATA_DIR || '/tmp/node-app';
fs.mkdirSync(DATA_DIR, { recursive: true });

// The "outbound" service: a TCP echo server on loopback inside the same container, so /upstream
// makes a real outbound connection without any network beyond the pod.
const upstream = net.createServer((sock) => {
  sock.on('data', (d) => sock.end(d));
  sock.on('error', () => {});
});

// Kept so the allocations survive long enough to be promoted and collected by a major GC.
let retained = [];

const routes = {
  '/': (req, res) => send(res, 200, Object.keys(routes).join('\n') + '\n'),

  // Answers at once.
  '/fast': (req, res) => send(res, 200, 'fast\n'),

  // Answers after ?ms= milliseconds (default 200): time spent waiting in epoll_wait.
  '/slow': (req, res, q) => {
    const ms = Math.min(Number(q.get('ms') || 200), 10000);
    setTimeout(() => send(res, 200, `slow ${ms}\n`), ms);
  },

  // Writes a file and fsyncs it (block writes the app submits itself, not the kernel's
  // writeback), reads it back, and tries one missing file: exactly one openat() failing with
  // ENOENT per request.
  '/file': (req, res) => {
    const f = path.join(DATA_DIR, 'data.bin');
    const fd = fs.openSync(f, 'w');
    fs.writeSync(fd, Buffer.alloc(64 * 1024, 7));
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    const n = fs.readFileSync(f).length;
    try {
      fs.readFileSync(path.join(DATA_DIR, 'missing'));
    } catch (_) {
      // ENOENT is the point of this call.
    }
    send(res, 200, `file ${n}\n`);
  },

  // One outbound TCP connection to the loopback echo service: exactly one connect() per request.
  '/upstream': (req, res) => {
    const c = net.connect(UPSTREAM_PORT, '127.0.0.1');
    let got = '';
    c.on('connect', () => c.write('ping'));
    c.on('data', (d) => (got += d));
    c.on('end', () => send(res, 200, `upstream ${got}\n`));
    c.on('error', (e) => send(res, 502, `upstream error ${e.code}\n`));
  },

  // Allocates ?mb= megabytes (default 64) in small objects: young and old generation GCs.
  '/alloc': (req, res, q) => {
    const mb = Math.min(Number(q.get('mb') || 64), 512);
    const chunk = [];
    for (let i = 0; i < mb * 1024; i++) chunk.push(new Array(128).fill(i));
    retained.push(chunk);
    if (retained.length > 4) retained = retained.slice(-2);
    send(res, 200, `alloc ${mb}\n`);
  },

  // Runs /bin/true once: exactly one exec (comm "true"), one fork and one exit with code 0.
  '/spawn': (req, res) => {
    execFile('/bin/true', (err) => send(res, err ? 500 : 200, err ? `spawn ${err.code}\n` : 'spawn\n'));
  },
};

function send(res, status, body) {
  if (res.headersSent) return;
  res.writeHead(status, { 'content-type': 'text/plain' });
  res.end(body);
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  const route = routes[url.pathname];
  if (!route) return send(res, 404, 'not found\n');
  if (req.method !== 'GET' && req.method !== 'POST') return send(res, 405, 'method not allowed\n');
  // Drain a POST body, so POST works like GET on every route.
  req.resume();
  req.on('end', () => route(req, res, url.searchParams));
});

upstream.listen(UPSTREAM_PORT, '127.0.0.1', () => {
  server.listen(PORT, () => console.log(`node-app listening on :${PORT} (upstream :${UPSTREAM_PORT})`));
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close();
    upstream.close();
    process.exit(0);
  });
}
