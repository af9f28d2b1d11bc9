// Small SVG pictures: sparklines, time charts, health badges and number formats.
import { el } from './app.js';

/** A sparkline of `values` (numbers), `cls`: line class (`err`, `lat`). */
export function sparkline(values, { w = 120, h = 24, cls = '', max } = {}) {
  const svg = el('svg:svg', { class: 'spark', width: w, height: h, viewBox: `0 0 ${w} ${h}`, role: 'img' });
  const n = values.length;
  if (n < 2) return svg;
  const top = max !== undefined ? max : Math.max(...values, 1e-9);
  const pts = values.map((v, i) => [(i / (n - 1)) * w, h - 1 - (Math.min(v, top) / top) * (h - 2)]);
  const d = pts.map(([x, y], i) => (i ? 'L' : 'M') + x.toFixed(1) + ' ' + y.toFixed(1)).join('');
  svg.append(el('svg:path', { class: 'area', d: d + `L${w} ${h}L0 ${h}Z` }));
  svg.append(el('svg:path', { class: 'line ' + cls, d }));
  return svg;
}

/** A time chart: `points` of `{t, v}` (t in ms), with a y axis in `unit`. */
export function timeChart(points, { w = 380, h = 120, cls = '', unit = '', max } = {}) {
  const pad = { l: 44, r: 6, t: 6, b: 18 };
  const svg = el('svg:svg', { width: '100%', height: h, viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: 'none', role: 'img' });
  const iw = w - pad.l - pad.r;
  const ih = h - pad.t - pad.b;
  svg.append(el('svg:line', { class: 'axis', x1: pad.l, y1: pad.t + ih, x2: pad.l + iw, y2: pad.t + ih }));
  svg.append(el('svg:line', { class: 'axis', x1: pad.l, y1: pad.t, x2: pad.l, y2: pad.t + ih }));
  const vals = points.map((p) => (isFinite(p.v) ? p.v : 0));
  const top = max !== undefined ? max : niceMax(Math.max(...vals, 0));
  svg.append(el('svg:text', { x: pad.l - 4, y: pad.t + 8, 'text-anchor': 'end', text: fmt(top) + unit }));
  svg.append(el('svg:text', { x: pad.l - 4, y: pad.t + ih, 'text-anchor': 'end', text: '0' }));
  if (points.length >= 2) {
    const t0 = points[0].t;
    const t1 = points[points.length - 1].t;
    const span = Math.max(t1 - t0, 1);
    const d = points
      .map((p, i) => {
        const x = pad.l + ((p.t - t0) / span) * iw;
        const y = pad.t + ih - (Math.min(vals[i], top) / top) * ih;
        return (i ? 'L' : 'M') + x.toFixed(1) + ' ' + y.toFixed(1);
      })
      .join('');
    svg.append(el('svg:path', { class: 'line ' + cls, d }));
    svg.append(el('svg:text', { x: pad.l, y: h - 4, text: clock(t0) }));
    svg.append(el('svg:text', { x: pad.l + iw, y: h - 4, 'text-anchor': 'end', text: clock(t1) }));
  } else {
    svg.append(el('svg:text', { x: pad.l + iw / 2, y: pad.t + ih / 2, 'text-anchor': 'middle', text: 'no data yet' }));
  }
  return svg;
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

/** A number, short. */
export function fmt(v, digits = 1) {
  if (v === null || v === undefined || !isFinite(v)) return '–';
  const a = Math.abs(v);
  if (a >= 1e6) return (v / 1e6).toFixed(digits) + 'M';
  if (a >= 1e4) return (v / 1e3).toFixed(digits) + 'k';
  if (a >= 100 || Number.isInteger(v)) return String(Math.round(v));
  return v.toFixed(digits);
}

/** A share 0..1 as a percentage. */
export function pct(v) {
  if (v === null || v === undefined || !isFinite(v)) return '–';
  return (v * 100).toFixed(v > 0 && v < 0.01 ? 2 : 1) + '%';
}

/** Milliseconds, short. */
export function ms(v) {
  if (v === null || v === undefined || !isFinite(v)) return '–';
  return v >= 1000 ? (v / 1000).toFixed(2) + ' s' : fmt(v) + ' ms';
}

/** Seconds as a duration. */
export function dur(s) {
  s = Math.floor(s);
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

/** Unix seconds as local date and time. */
export function when(unix) {
  if (!unix) return '–';
  return new Date(unix * 1000).toLocaleString([], { hour12: false });
}

/** The class of a health or circuit state: ok, warn, bad or idle. */
export function stateClass(s) {
  if (!s) return '';
  if (/^(healthy|closed|ok|met|idle)$/.test(s)) return 'ok';
  if (/half|probation|draining|dry|recover|slow/.test(s)) return 'warn';
  if (/unhealthy|open|ejected|down|failed|refused|triggered|missed/.test(s)) return 'bad';
  return '';
}

/** A coloured badge with the state as text (colour is never the only signal). */
export function badge(s, cls) {
  return el('span', { class: 'badge ' + (cls || stateClass(s)), text: s || 'unknown' });
}

/** Colour class of an error rate. */
export function errClass(rate, requests) {
  if (!requests) return 'idle';
  if (rate >= 0.05) return 'bad';
  if (rate >= 0.01) return 'warn';
  return 'ok';
}
