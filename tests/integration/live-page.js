// Drives headless Chromium over the DevTools protocol (no npm packages: Node's experimental
// WebSocket) to check the live page in real time, which --screenshot with a virtual time budget
// cannot: the page computes rates between polls two real seconds apart.
//
//   node --experimental-websocket live-page.js URL WAIT_MS SCREENSHOT.png
//
// Prints one JSON object: scrapes done and, per canvas, its id and data-points (how many
// non-zero values it drew). Needs CHROMIUM (default /usr/bin/chromium).
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const [url, waitMs, shot] = process.argv.slice(2);
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'ebpf-sidecar-chromium-'));
const chrome = spawn(process.env.CHROMIUM || '/usr/bin/chromium', [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  `--user-data-dir=${profile}`, '--remote-debugging-port=0', '--window-size=1400,1000',
  'about:blank',
], { stdio: ['ignore', 'ignore', 'pipe'] });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function cleanup() {
  // The profile can only go once Chromium stopped writing to it.
  // SIGTERM lets Chromium stop its helper processes too.
  const exited = new Promise((r) => chrome.once('exit', r));
  chrome.kill('SIGTERM');
  await exited;
  for (let i = 0; i < 20; i++) {
    try {
      fs.rmSync(profile, { recursive: true, force: true });
      return;
    } catch (_) {
      await sleep(100);
    }
  }
}

async function devtoolsUrl() {
  // Chromium writes "PORT\n/devtools/browser/ID" once it listens.
  for (let i = 0; i < 200; i++) {
    try {
      const [port] = fs.readFileSync(path.join(profile, 'DevToolsActivePort'), 'utf8').split('\n');
      const list = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
      const page = list.find((t) => t.type === 'page');
      if (page) return page.webSocketDebuggerUrl;
    } catch (_) {
      // not up yet
    }
    await sleep(100);
  }
  throw new Error('chromium did not open its DevTools port');
}

async function main() {
  const ws = new WebSocket(await devtoolsUrl());
  await new Promise((res, rej) => { ws.onopen = res; ws.onerror = rej; });
  let next = 1;
  const pending = new Map();
  ws.onmessage = (m) => {
    const msg = JSON.parse(m.data);
    if (msg.id && pending.has(msg.id)) {
      const { res, rej } = pending.get(msg.id);
      pending.delete(msg.id);
      msg.error ? rej(new Error(JSON.stringify(msg.error))) : res(msg.result);
    }
  };
  const send = (method, params = {}) => new Promise((res, rej) => {
    const id = next++;
    pending.set(id, { res, rej });
    ws.send(JSON.stringify({ id, method, params }));
  });
  await send('Page.enable');
  await send('Emulation.setDeviceMetricsOverride', { width: 1400, height: 1000, deviceScaleFactor: 1, mobile: false });
  await send('Page.navigate', { url });
  await sleep(Number(waitMs));
  const probe = `JSON.stringify({
    scrapes: Number(document.body.dataset.scrapes),
    charts: [...document.querySelectorAll('canvas')].map((c) => ({ id: c.id, points: Number(c.dataset.points || 0) })),
    status: document.getElementById('status').textContent,
    endpoints: [...document.querySelectorAll('a')].map((a) => a.getAttribute('href')),
  })`;
  const r = await send('Runtime.evaluate', { expression: probe, returnByValue: true });
  const shotRes = await send('Page.captureScreenshot', { format: 'png', captureBeyondViewport: true });
  fs.writeFileSync(shot, Buffer.from(shotRes.data, 'base64'));
  console.log(r.result.value);
  ws.close();
}

main().then(cleanup, async (e) => {
  await cleanup();
  console.error(String((e && e.stack) || e));
  process.exit(1);
});
