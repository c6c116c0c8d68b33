// Live page of ebpf-sidecar: polls the sidecar's own /metrics, parses the Prometheus text format
// and draws rates and histograms on canvases. No libraries, nothing fetched from elsewhere.
'use strict';

const PERIOD_MS = 2000;
const KEEP = 90; // points per line: 3 minutes at the poll period
const COLORS = ['#59c2ff', '#ffb454', '#7fd962', '#f07178', '#d2a6ff', '#95e6cb', '#e6b673', '#f29668'];

let prev = null; // { t, values: Map(key -> value) } of the previous scrape
let scrapes = 0;
const lines = {}; // chart id -> Map(series name -> [values])

// ---- parsing ---------------------------------------------------------------------------------

function parseValue(s) {
  if (s === '+Inf') return Infinity;
  if (s === '-Inf') return -Infinity;
  return parseFloat(s);
}

/** Prometheus text 0.0.4 -> { samples: [{name, labels, value}], types: {name: type} }. */
function parse(text) {
  const samples = [];
  const types = {};
  for (const line of text.split('\n')) {
    if (!line) continue;
    if (line.startsWith('# TYPE ')) {
      const [n, t] = line.slice(7).split(' ');
      types[n] = t;
      continue;
    }
    if (line[0] === '#') continue;
    const labels = {};
    let name;
    let i;
    const brace = line.indexOf('{');
    const space = line.indexOf(' ');
    if (brace >= 0 && brace < space) {
      name = line.slice(0, brace);
      i = brace + 1;
      while (i < line.length && line[i] !== '}') {
        const eq = line.indexOf('=', i);
        const key = line.slice(i, eq).trim();
        i = eq + 2; // past ="
        let v = '';
        while (i < line.length && line[i] !== '"') {
          if (line[i] === '\\') {
            i++;
            v += line[i] === 'n' ? '\n' : line[i];
          } else {
            v += line[i];
          }
          i++;
        }
        labels[key] = v;
        i++; // closing quote
        if (line[i] === ',') i++;
      }
      i++; // closing brace
    } else {
      name = line.slice(0, space);
      i = space;
    }
    const value = parseValue(line.slice(i).trim().split(' ')[0]);
    samples.push({ name, labels, value });
  }
  return { samples, types };
}

function key(s) {
  return s.name + JSON.stringify(Object.entries(s.labels).sort());
}

// ---- aggregation -----------------------------------------------------------------------------

/** Per-second increase of every series since the previous scrape (counter resets count as 0). */
function rates(samples, now) {
  const out = new Map();
  if (!prev) return out;
  const dt = (now - prev.t) / 1000;
  for (const s of samples) {
    const k = key(s);
    if (!prev.values.has(k)) continue;
    out.set(k, Math.max(0, (s.value - prev.values.get(k)) / dt));
  }
  return out;
}

/** Sum `value(sample)` of the samples named `name`, grouped by `by(labels)`. */
function groupBy(samples, name, by, value) {
  const m = new Map();
  for (const s of samples) {
    if (s.name !== name) continue;
    const g = by(s.labels);
    const v = value(s);
    if (v === undefined || Number.isNaN(v)) continue;
    m.set(g, (m.get(g) || 0) + v);
  }
  return m;
}

function total(samples, name, value) {
  return groupBy(samples, name, () => '', value).get('') || 0;
}

function push(chart, series, v) {
  const c = (lines[chart] = lines[chart] || new Map());
  if (!c.has(series)) c.set(series, []);
  const a = c.get(series);
  a.push(v);
  if (a.length > KEEP) a.shift();
}

// ---- drawing ---------------------------------------------------------------------------------

function fmt(v) {
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(1) + 'G';
  if (a >= 1e6) return (v / 1e6).toFixed(1) + 'M';
  if (a >= 1e3) return (v / 1e3).toFixed(1) + 'k';
  if (a >= 10 || a === 0) return v.toFixed(0);
  if (a >= 1) return v.toFixed(1);
  return v.toPrecision(2);
}

function fmtSeconds(s) {
  if (!Number.isFinite(s)) return '+Inf';
  if (s < 1e-6) return (s * 1e9).toFixed(0) + 'ns';
  if (s < 1e-3) return +(s * 1e6).toPrecision(3) + 'µs';
  if (s < 1) return +(s * 1e3).toPrecision(3) + 'ms';
  return +s.toPrecision(3) + 's';
}

function setup(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 400;
  const h = canvas.clientHeight || 200;
  if (canvas.width !== w * dpr || canvas.height !== h * dpr) {
    canvas.width = w * dpr;
    canvas.height = h * dpr;
  }
  const g = canvas.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  g.font = '11px system-ui, sans-serif';
  return { g, w, h };
}

function message(canvas, text) {
  const { g, w, h } = setup(canvas);
  g.fillStyle = '#8a9199';
  g.textAlign = 'center';
  g.fillText(text, w / 2, h / 2);
  canvas.dataset.points = '0';
}

/** Lines over time: series is Map(name -> [values]); unit appended to the axis labels. */
function drawLines(canvas, series, unit = '') {
  const entries = [...series.entries()].filter(([, a]) => a.length > 0);
  if (!entries.length) return message(canvas, 'collecting…');
  const { g, w, h } = setup(canvas);
  const left = 46, right = 8, top = 8, bottom = 16;
  let max = 0;
  for (const [, a] of entries) for (const v of a) max = Math.max(max, v);
  max = max > 0 ? max * 1.15 : 1;
  g.strokeStyle = '#2a313b';
  g.fillStyle = '#8a9199';
  g.textAlign = 'right';
  for (let i = 0; i <= 4; i++) {
    const y = top + ((h - top - bottom) * i) / 4;
    g.beginPath();
    g.moveTo(left, y);
    g.lineTo(w - right, y);
    g.stroke();
    g.fillText(fmt(max * (1 - i / 4)) + unit, left - 4, y + 4);
  }
  // The x axis spans what has been collected, up to KEEP points, so a fresh page fills it.
  const span = Math.max(2, ...entries.map(([, a]) => a.length));
  g.textAlign = 'left';
  g.fillText(`last ${Math.round(((span - 1) * PERIOD_MS) / 1000)} s`, left, h - 3);
  const xs = (i) => left + ((w - left - right) * i) / (span - 1);
  const ys = (v) => top + (h - top - bottom) * (1 - v / max);
  let points = 0;
  entries.forEach(([name, a], n) => {
    const color = COLORS[n % COLORS.length];
    g.strokeStyle = color;
    g.lineWidth = 2;
    g.beginPath();
    const off = span - a.length;
    a.forEach((v, i) => {
      if (v > 0) points++;
      if (i === 0) g.moveTo(xs(off + i), ys(v));
      else g.lineTo(xs(off + i), ys(v));
    });
    g.stroke();
    g.lineWidth = 1;
    // Legend with the latest value.
    const label = `${name} ${fmt(a[a.length - 1])}${unit}`;
    g.fillStyle = color;
    g.textAlign = 'right';
    g.fillText(label, w - right - 4, top + 12 + n * 13);
  });
  canvas.dataset.points = String(points);
}

/** Horizontal bars, largest first: items [[label, value]]. */
function drawBars(canvas, items, unit = '/s') {
  items = items.filter(([, v]) => v > 0).sort((a, b) => b[1] - a[1]).slice(0, 8);
  if (!items.length) return message(canvas, 'nothing in the last interval');
  const { g, w, h } = setup(canvas);
  const left = 150, right = 56;
  const row = Math.min(24, h / items.length);
  const max = items[0][1];
  items.forEach(([label, v], i) => {
    const y = i * row;
    const bw = Math.max(2, ((w - left - right) * v) / max);
    g.fillStyle = COLORS[i % COLORS.length];
    g.fillRect(left, y + 3, bw, row - 6);
    g.fillStyle = '#e6e1cf';
    g.textAlign = 'right';
    g.fillText(label.length > 24 ? label.slice(0, 23) + '…' : label, left - 6, y + row / 2 + 4);
    g.textAlign = 'left';
    g.fillText(fmt(v) + unit, left + bw + 4, y + row / 2 + 4);
  });
  canvas.dataset.points = String(items.length);
}

/** Vertical histogram bars: buckets [[upper bound seconds or value, count]] (not cumulative). */
function drawHist(canvas, buckets, seconds, note) {
  let first = buckets.findIndex(([, c]) => c > 0);
  let last = buckets.length - 1;
  while (last >= 0 && !(buckets[last][1] > 0)) last--;
  if (first < 0) return message(canvas, 'no observations yet');
  const shown = buckets.slice(first, last + 1);
  const { g, w, h } = setup(canvas);
  const top = 18, bottom = 28, left = 16, right = 16;
  const max = Math.max(...shown.map(([, c]) => c));
  const bw = (w - left - right) / shown.length;
  g.fillStyle = '#8a9199';
  g.textAlign = 'right';
  g.fillText(note, w - right, 11);
  shown.forEach(([le, c], i) => {
    const bh = ((h - top - bottom) * c) / max;
    const x = left + i * bw;
    g.fillStyle = COLORS[0];
    g.fillRect(x + 1, h - bottom - bh, Math.max(1, bw - 2), bh);
    if (shown.length <= 14 || i % Math.ceil(shown.length / 14) === 0) {
      g.fillStyle = '#8a9199';
      g.textAlign = 'center';
      g.fillText((seconds ? fmtSeconds(le) : fmt(le)), x + bw / 2, h - bottom + 12);
    }
    if (c === max) {
      g.fillStyle = '#e6e1cf';
      g.textAlign = 'center';
      g.fillText(fmt(c), x + bw / 2, h - bottom - bh - 3);
    }
  });
  canvas.dataset.points = String(shown.filter(([, c]) => c > 0).length);
}

/** Buckets of histogram `name` summed over its other labels: per-second over the last interval
 * when anything happened in it, else totals since the sidecar started. */
function histogram(samples, r, name) {
  const cum = groupBy(samples, name + '_bucket', (l) => l.le, (s) => s.value);
  const cumRate = groupBy(samples, name + '_bucket', (l) => l.le, (s) => r.get(key(s)));
  const toBuckets = (m) => {
    const sorted = [...m.entries()].map(([le, v]) => [parseValue(le), v]).sort((a, b) => a[0] - b[0]);
    return sorted.map(([le, v], i) => [le, Math.max(0, v - (i ? sorted[i - 1][1] : 0))]);
  };
  const live = toBuckets(cumRate);
  if (live.some(([, c]) => c > 0)) return { buckets: live, note: 'events/s, last interval' };
  return { buckets: toBuckets(cum), note: 'total since start (idle now)' };
}

// ---- the page --------------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

function header(samples) {
  const build = samples.find((s) => s.name === 'ebpf_sidecar_build_info');
  if (build) $('version').textContent = build.labels.version || '';
  const up = samples.find((s) => s.name === 'ebpf_sidecar_target_up');
  const info = samples.find((s) => s.name === 'ebpf_sidecar_target_info');
  const t = $('target');
  const l = (info && info.labels) || {};
  const who = l.container_name || l.cgroup_path || (l.pid ? 'pid ' + l.pid : '?');
  const extra = [l.namespace, l.pod].filter(Boolean).join('/');
  t.textContent = `target (${l.mode || '?'}): ${who}${extra ? ' · ' + extra : ''} — ${up && up.value === 1 ? 'up' : 'DOWN'}`;
  t.className = 'pill ' + (up && up.value === 1 ? 'ok' : 'bad');
  const probes = $('probes');
  probes.textContent = '';
  for (const s of samples.filter((s) => s.name === 'ebpf_sidecar_probe_up')) {
    const p = document.createElement('span');
    p.className = 'pill ' + (s.value === 1 ? 'ok' : 'bad');
    p.textContent = s.labels.probe;
    probes.appendChild(p);
  }
  budget(samples);
}

// --cpu-budget: the governor's level, the measured overhead against the budget, what is off.
function budget(samples) {
  const one = (n) => samples.find((s) => s.name === n);
  const b = one('ebpf_sidecar_cpu_budget_ratio');
  const box = $('budget');
  if (!b) {
    box.textContent = 'CPU budget: off (--cpu-budget 0)';
    return;
  }
  const o = one('ebpf_sidecar_overhead_ratio');
  const lv = one('ebpf_sidecar_governor_level');
  const src = one('ebpf_sidecar_overhead_source_info');
  const off = samples
    .filter((s) => s.name === 'ebpf_sidecar_feature_enabled' && s.value === 0)
    .map((s) => s.labels.feature);
  const pct = (v) => (v * 100).toFixed(2) + '%';
  box.textContent = `CPU budget: overhead ${o ? pct(o.value) : '?'} of ${pct(b.value)}` +
    ` (${src ? src.labels.source : '?'}), level ${lv ? lv.value : 0}` +
    (off.length ? ` — off: ${off.join(', ')}` : '');
}

function more(samples, types, r) {
  const known = new Set(['ebpf_sidecar_syscall_duration_seconds']);
  const box = $('more');
  const names = Object.keys(types).filter((n) => types[n] === 'histogram' && !known.has(n));
  if (!names.length && !box.children.length) {
    box.innerHTML = '<p class="muted">none exposed by the loaded probe families</p>';
  }
  for (const n of names) {
    let c = document.getElementById('h-' + n);
    if (!c) {
      if (box.querySelector('p')) box.textContent = '';
      const f = document.createElement('figure');
      const cap = document.createElement('figcaption');
      cap.textContent = n.replace(/^ebpf_sidecar_/, '');
      c = document.createElement('canvas');
      c.id = 'h-' + n;
      c.dataset.kind = 'hist';
      f.append(cap, c);
      box.appendChild(f);
    }
    const h = histogram(samples, r, n);
    drawHist(c, h.buckets, n.endsWith('_seconds'), h.note);
  }
}

function render(samples, types, r) {
  header(samples);
  const rate = (s) => r.get(key(s));
  if (prev === null || r.size === 0) {
    for (const c of document.querySelectorAll('canvas')) message(c, 'collecting…');
    return;
  }
  push('c-syscalls', 'calls/s', total(samples, 'ebpf_sidecar_syscalls_total', rate));
  push('c-syscalls', 'errors/s', total(samples, 'ebpf_sidecar_syscall_errors_total', rate));
  drawLines($('c-syscalls'), lines['c-syscalls']);

  const top = groupBy(samples, 'ebpf_sidecar_syscalls_total', (l) => l.syscall, rate);
  drawBars($('c-top'), [...top.entries()]);
  const errs = groupBy(samples, 'ebpf_sidecar_syscall_errors_total', (l) => `${l.syscall} ${l.errno}`, rate);
  drawBars($('c-errors'), [...errs.entries()]);

  const lat = histogram(samples, r, 'ebpf_sidecar_syscall_duration_seconds');
  drawHist($('c-latency'), lat.buckets, true, lat.note);

  push('c-process', 'execs/s', total(samples, 'ebpf_sidecar_process_execs_total', rate));
  push('c-process', 'exits/s', total(samples, 'ebpf_sidecar_process_exits_total', rate));
  push('c-process', 'forks/s', total(samples, 'ebpf_sidecar_process_forks_total', rate));
  drawLines($('c-process'), lines['c-process']);

  const cost = groupBy(samples, 'ebpf_sidecar_bpf_program_run_seconds_total', (l) => l.program, rate);
  if (cost.size === 0) {
    message($('c-cost'), 'start the sidecar with --bpf-stats to see this');
  } else {
    for (const [p, v] of cost) push('c-cost', p, v * 100);
    drawLines($('c-cost'), lines['c-cost'], '%');
  }
  more(samples, types, r);
}

async function poll() {
  const t0 = performance.now();
  try {
    const res = await fetch('metrics', { cache: 'no-store' });
    if (!res.ok) throw new Error('HTTP ' + res.status);
    const text = await res.text();
    const now = Date.now();
    const { samples, types } = parse(text);
    const r = rates(samples, now);
    render(samples, types, r);
    prev = { t: now, values: new Map(samples.map((s) => [key(s), s.value])) };
    scrapes++;
    document.body.dataset.scrapes = String(scrapes);
    $('status').textContent =
      `${new Date(now).toLocaleTimeString()} · ${samples.length} series · ${Math.round(performance.now() - t0)} ms`;
    $('status').className = 'muted';
  } catch (e) {
    $('status').textContent = 'scrape failed: ' + e.message;
    $('status').className = 'pill bad';
  }
}

$('period').textContent = String(PERIOD_MS / 1000);
poll();
setInterval(poll, PERIOD_MS);
