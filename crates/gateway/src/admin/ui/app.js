// The dashboard's core: the admin API client (with the token), the live stream, the hash
// router. Data goes into the page only through DOM APIs and textContent, never as markup.

// Errors the page met, for tests and for the operator (shown in the console as usual).
const errors = [];
window.__ptErrors = errors;
window.addEventListener('error', (e) => errors.push(String(e.message || e)));
window.addEventListener('unhandledrejection', (e) => errors.push('unhandled: ' + String(e.reason)));

/** Creates an element: `attrs` are properties/attributes (never event handlers or HTML), the
 * rest children (strings become text nodes). */
export function el(tag, attrs, ...children) {
  const svg = tag.startsWith('svg:');
  const node = svg
    ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false || k.startsWith('on')) continue;
    if (k === 'text') node.textContent = String(v);
    else if (k === 'class') node.setAttribute('class', v);
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else node.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/** Removes the children of a node and appends new ones. */
export function fill(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

/** An admin API failure with its status and contract error. */
export class ApiError extends Error {
  constructor(status, body) {
    const msg = body && body.error ? body.error.message : `HTTP ${status}`;
    super(msg);
    this.status = status;
    this.body = body;
  }
}

let token = sessionStorage.getItem('pt-token') || '';

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (token) h.Authorization = 'Bearer ' + token;
  return h;
}

/** Calls the admin API; resolves to the JSON body, rejects with ApiError. */
export async function api(path, opts = {}) {
  const res = await fetch(path, Object.assign({}, opts, { headers: headers(opts.headers), cache: 'no-store' }));
  const text = await res.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = { raw: text }; }
  if (res.status === 401) { askToken('The token was refused.'); throw new ApiError(401, body); }
  if (!res.ok) throw new ApiError(res.status, body);
  return { body, res };
}

/** Shorthand: the JSON body of a GET. */
export async function get(path) {
  return (await api(path)).body;
}

// ---- live stream ------------------------------------------------------------------------

/** Recent frames of the stream (newest last) and listeners called on each new one. */
export const live = { frames: [], listeners: new Set(), keep: 300 };
let streamAbort = null;

function setLive(on) {
  const b = document.getElementById('live');
  b.textContent = on ? 'live' : 'offline';
  b.className = 'live ' + (on ? 'on' : 'off');
}

async function stream() {
  if (streamAbort) streamAbort.abort();
  const ctl = new AbortController();
  streamAbort = ctl;
  try {
    const res = await fetch('/admin/stream?backfill=' + live.keep, { headers: headers(), signal: ctl.signal, cache: 'no-store' });
    if (res.status === 401) { askToken('The token was refused.'); return; }
    if (!res.ok || !res.body) throw new Error('stream: HTTP ' + res.status);
    setLive(true);
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        let event = 'message';
        let data = '';
        for (const line of block.split('\n')) {
          if (line.startsWith('event:')) event = line.slice(6).trim();
          else if (line.startsWith('data:')) data += line.slice(5).replace(/^ /, '');
        }
        if (event === 'sample' && data) onFrame(JSON.parse(data));
      }
    }
  } catch (e) {
    if (ctl.signal.aborted) return;
  }
  setLive(false);
  if (streamAbort === ctl) setTimeout(stream, 2000);
}

function onFrame(f) {
  live.frames.push(f);
  if (live.frames.length > live.keep) live.frames.shift();
  for (const fn of live.listeners) {
    try { fn(f); } catch (e) { errors.push('live: ' + e); }
  }
}

/** Values of one series over the kept frames, for sparklines. */
export function seriesOf(pick) {
  return live.frames.map((f) => {
    const v = pick(f);
    return typeof v === 'number' && isFinite(v) ? v : 0;
  });
}

// ---- token ------------------------------------------------------------------------------

function askToken(why) {
  if (streamAbort) streamAbort.abort();
  setLive(false);
  document.getElementById('main').hidden = true;
  document.getElementById('nav').hidden = true;
  fill(document.getElementById('main'));
  document.getElementById('login').hidden = false;
  document.getElementById('login-error').textContent = token ? why : '';
  document.getElementById('token').focus();
}

// ---- router -----------------------------------------------------------------------------

const pages = {};
let current = { name: '', cleanup: null };

/** Registers a page: `render(main, args)` may return a cleanup function. */
export function page(name, render) {
  pages[name] = render;
}

async function route() {
  const [name, ...rest] = (location.hash.replace(/^#\/?/, '') || 'overview').split('/');
  const args = rest.map((s) => decodeURIComponent(s));
  if (current.cleanup) { try { current.cleanup(); } catch { /* page gone */ } }
  current = { name, cleanup: null };
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.page === name);
  const main = fill(document.getElementById('main'));
  const render = pages[name] || pages.overview;
  try {
    const cleanup = await render(main, args);
    if (current.name === name) current.cleanup = cleanup || null;
    else if (cleanup) cleanup();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return;
    main.append(el('p', { class: 'err', role: 'alert', text: 'Could not load this page: ' + e.message }));
  }
}

async function start() {
  document.getElementById('login').hidden = true;
  document.getElementById('main').hidden = false;
  document.getElementById('nav').hidden = false;
  stream();
  await route();
  for (const fn of afterStart) fn();
}

const afterStart = [];

/** Runs `fn` once the page has started (to warm caches). */
export function whenStarted(fn) {
  afterStart.push(fn);
}

/** Starts the page: asks for the token when the admin API wants one. */
export async function boot() {
  document.getElementById('login-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    token = document.getElementById('token').value.trim();
    sessionStorage.setItem('pt-token', token);
    try {
      await api('/admin/status');
      start();
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) {
        document.getElementById('login-error').textContent = err.message;
      }
    }
  });
  window.addEventListener('hashchange', route);
  try {
    await api('/admin/status');
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return;
    const f = document.getElementById('fatal');
    f.hidden = false;
    f.textContent = 'The admin API does not answer: ' + e.message;
    return;
  }
  start();
}
