// Topology, SLOs, policies and config history. (Editing lives in edit.js.)
import { el, fill, get, page, live, ApiError } from './app.js';
import { fmt, pct, ms, when, badge, errClass } from './charts.js';

// ---- topology ---------------------------------------------------------------------------

const MAX_ROUTES = 250;

function short(s, n = 30) {
  s = String(s);
  return s.length > n ? s.slice(0, n - 1) + '…' : s;
}

page('topology', async (main) => {
  const holder = el('div', { class: 'topo', id: 'topology' });
  const note = el('p', { class: 'muted' });
  fill(main,
    el('h1', { text: 'Topology' }),
    el('div', { class: 'legend' },
      el('span', {}, el('span', { class: 'sw ok' }), 'errors < 1%'),
      el('span', {}, el('span', { class: 'sw warn' }), '1–5%'),
      el('span', {}, el('span', { class: 'sw bad' }), '≥ 5%'),
      el('span', {}, el('span', { class: 'sw idle' }), 'no traffic'),
      el('span', { text: 'dashed box: ghost route (no traffic for ghost_after) · red box: failing target' })),
    note, holder);
  const draw = async () => {
    const t = await get('/admin/topology');
    fill(holder, graph(t, note));
  };
  await draw();
  const timer = setInterval(() => { draw().catch(() => {}); }, 5000);
  return () => clearInterval(timer);
});

function graph(t, note) {
  const cols = { listener: [], route: [], upstream: [], target: [] };
  for (const n of t.nodes) if (cols[n.kind]) cols[n.kind].push(n);
  const allRoutes = cols.route.length;
  if (allRoutes > MAX_ROUTES) {
    cols.route.sort((a, b) => (b.rate || 0) - (a.rate || 0) || Number(b.ghost) - Number(a.ghost));
    cols.route = cols.route.slice(0, MAX_ROUTES);
  }
  note.textContent = `${allRoutes} routes${allRoutes > MAX_ROUTES ? `, the ${MAX_ROUTES} busiest shown` : ''} · ` +
    `${t.ghost_routes.length} ghost · ${t.failing_targets.length} failing target(s) · window ${t.window_seconds} s`;
  const W = 230, H = 26, GAP = 10, X = [10, 300, 620, 900];
  const pos = new Map();
  const order = ['listener', 'route', 'upstream', 'target'];
  let height = 0;
  order.forEach((k, c) => {
    cols[k].forEach((n, i) => pos.set(n.id, { x: X[c], y: 10 + i * (H + GAP), n }));
    height = Math.max(height, 20 + cols[k].length * (H + GAP));
  });
  const svg = el('svg:svg', { width: X[3] + W + 10, height, viewBox: `0 0 ${X[3] + W + 10} ${height}`, role: 'img', 'aria-label': 'call topology' });
  for (const e of t.edges) {
    const a = pos.get(e.from), b = pos.get(e.to);
    if (!a || !b) continue;
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
    const cls = e.rate === undefined ? 'idle' : e.health && e.health !== 'healthy' ? 'bad' : errClass(e.error_rate, e.rate);
    const p = el('svg:path', { class: 'edge ' + cls, d: `M${x1} ${y1}C${mx} ${y1} ${mx} ${y2} ${x2} ${y2}` },
      el('svg:title', { text: e.rate === undefined ? '' : `${fmt(e.rate)} req/s · ${pct(e.error_rate)} errors` + (e.p99_ms ? ` · p99 ${ms(e.p99_ms)}` : '') }));
    svg.append(p);
  }
  for (const { x, y, n } of pos.values()) {
    let cls = 'node ' + n.kind;
    let label = n.name || n.address;
    let sub = '';
    if (n.kind === 'route') {
      if (n.ghost) cls += ' ghost';
      else if (n.rate > 0) cls += ' ' + errClass(n.error_rate, n.rate);
      sub = n.ghost ? 'ghost' : `${fmt(n.rate)}/s ${pct(n.error_rate)}`;
    } else if (n.kind === 'target') {
      if (n.failing) cls += ' bad';
      sub = n.health + (n.circuit !== 'closed' ? ' · ' + n.circuit : '');
    } else if (n.kind === 'listener') {
      sub = n.address || '';
    }
    const g = el('svg:g', { class: cls, transform: `translate(${x},${y})`, dataset: { id: n.id } },
      el('svg:title', { text: `${n.kind}: ${label}${sub ? ' — ' + sub : ''}` }),
      el('svg:rect', { width: W, height: H, rx: 4 }),
      el('svg:text', { x: 8, y: 17, text: short(label, sub ? 22 : 34) }),
      sub ? el('svg:text', { x: W - 6, y: 17, 'text-anchor': 'end', class: 'sub', text: short(sub, 16) }) : null);
    svg.append(g);
  }
  return svg;
}

// ---- SLOs -------------------------------------------------------------------------------

page('slo', async (main) => {
  const body = el('div');
  fill(main, el('h1', { text: 'Service level objectives' }), body);
  const draw = async () => {
    const s = await get('/admin/slo');
    if (!s.routes.length) {
      fill(body, el('p', { class: 'muted', text: 'No route has an slo. Add one to a route (see docs/config.md, slo).' }));
      return;
    }
    fill(body,
      el('p', { class: 'muted', text: `Measured over the last ${s.window_seconds} s (observability.slo_window).` }),
      el('table', { id: 'slo-table' },
        el('thead', {}, el('tr', {}, ['Route', 'Status', 'Objective', 'Success', 'p99', 'Error budget left', 'Burn rate', 'Requests', 'Suspect change'].map((h) => el('th', { text: h })))),
        el('tbody', {}, s.routes.map((r) => {
          const o = r.objective, m = r.measured;
          const left = r.error_budget_remaining;
          const burn = o.success_rate && m.requests ? (100 - m.success_rate) / (100 - o.success_rate) : null;
          const barCls = left === null || left === undefined ? '' : left < 0.25 ? 'bad' : left < 0.5 ? 'warn' : '';
          const bar = el('span', { class: 'bar ' + barCls }, el('span'));
          if (left !== null && left !== undefined) bar.firstChild.style.width = Math.max(0, Math.min(1, left)) * 100 + '%';
          const sc = r.suspect_change;
          return el('tr', { dataset: { route: r.route } },
            el('td', {}, el('a', { href: '#/routes/' + encodeURIComponent(r.route), text: r.route })),
            el('td', {}, badge(r.met ? 'met' : 'missed')),
            el('td', { text: [o.success_rate ? o.success_rate + '%' : null, o.p99_ms ? 'p99 ≤ ' + ms(o.p99_ms) : null].filter(Boolean).join(', ') }),
            el('td', { class: 'num', text: m.success_rate.toFixed(2) + '%' }),
            el('td', { class: 'num', text: ms(m.p99_ms) }),
            el('td', {}, left === null || left === undefined ? '–' : [bar, ' ', pct(left)]),
            el('td', { class: 'num', text: burn === null ? '–' : burn.toFixed(2) + '×' }),
            el('td', { class: 'num', text: fmt(m.requests) }),
            el('td', {}, sc ? el('a', { href: '#/history/' + sc.generation, text: `#${sc.generation} by ${sc.author || '?'} ${when(sc.time)}${sc.message ? ' — ' + sc.message : ''}` }) : '–'));
        }))));
  };
  await draw();
  const timer = setInterval(() => { draw().catch(() => {}); }, 5000);
  return () => clearInterval(timer);
});

// ---- policies ---------------------------------------------------------------------------

page('policies', async (main) => {
  fill(main, el('h1', { text: 'Policies' }));
  let data;
  try {
    data = await get('/admin/policies');
  } catch (e) {
    if (e instanceof ApiError && (e.status === 404 || e.status === 405 || e.status === 501)) {
      main.append(el('p', { class: 'notice', id: 'policies-unavailable', text: 'Policies are not available on this gateway: GET /admin/policies does not exist in this version.' }));
      return null;
    }
    throw e;
  }
  const list = Array.isArray(data) ? data : data && Array.isArray(data.policies) ? data.policies : [];
  if (!list.length) {
    main.append(el('p', { class: 'muted', text: 'No policies are configured.' }));
    return null;
  }
  const text = (v) => (v === null || v === undefined ? '–' : typeof v === 'object' ? JSON.stringify(v) : String(v));
  main.append(el('table', { id: 'policies-table' },
    el('thead', {}, el('tr', {}, ['Policy', 'State', 'Last triggered', 'Values that triggered it', 'Counts'].map((h) => el('th', { text: h })))),
    el('tbody', {}, list.map((p) => el('tr', {},
      el('td', { text: text(p.name) }),
      el('td', {}, badge(text(p.state))),
      el('td', { text: typeof p.last_triggered === 'number' ? when(p.last_triggered) : text(p.last_triggered || p.last_trigger_at) }),
      el('td', {}, el('code', { text: text(p.last_values || p.values || p.last_trigger) })),
      el('td', {}, el('code', { text: text(p.counts) })))))));
  return null;
});

// ---- history ----------------------------------------------------------------------------

/** A diff as lines, added and removed lines coloured. */
export function diffView(text) {
  return el('pre', { class: 'diff' }, String(text || '').split('\n').map((line) =>
    el('span', { class: line.startsWith('+') ? 'add' : line.startsWith('-') ? 'del' : '', text: line + '\n' })));
}

page('history', async (main, args) => {
  const [hist, slo] = await Promise.all([get('/admin/config/history'), get('/admin/slo').catch(() => ({ routes: [] }))]);
  const entries = hist.entries || [];
  const suspects = new Map();
  for (const r of slo.routes || []) {
    if (r.suspect_change) {
      const g = r.suspect_change.generation;
      suspects.set(g, (suspects.get(g) || []).concat(r.route));
    }
  }
  const detail = el('div', { id: 'history-detail' });
  const rows = entries.map((e) => {
    const tr = el('tr', { class: 'clickable', dataset: { generation: e.generation }, tabindex: 0 },
      el('td', { class: 'num', text: String(e.generation) }),
      el('td', { text: when(e.time) }),
      el('td', { text: e.author || '–' }),
      el('td', { text: e.via || '–' }),
      el('td', { text: e.message || '–' }),
      el('td', { text: e.summary || '–' }),
      el('td', {}, suspects.has(e.generation) ? badge('suspect: ' + suspects.get(e.generation).join(', '), 'bad') : ''));
    const open = () => { location.hash = '#/history/' + e.generation; };
    tr.addEventListener('click', open);
    tr.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') open(); });
    return tr;
  });
  fill(main,
    el('h1', { text: 'Config history' }),
    el('p', { class: 'muted', text: 'The configs this node applied, newest first. A change marked suspect is the one after which a route’s SLO got worse.' }),
    el('table', { id: 'history-table' },
      el('thead', {}, el('tr', {}, ['Generation', 'Applied', 'Author', 'Via', 'Message', 'Changed', ''].map((h) => el('th', { text: h })))),
      el('tbody', {}, rows)),
    detail);
  const gen = args[0] !== undefined ? Number(args[0]) : entries.length ? entries[0].generation : null;
  if (gen !== null && !Number.isNaN(gen)) {
    for (const r of rows) r.classList.toggle('selected', Number(r.dataset.generation) === gen);
    try {
      const d = await get('/admin/config/history/' + gen);
      fill(detail, el('h2', { text: `Generation ${d.generation}: ${d.summary || ''}` }),
        el('p', { class: 'muted', text: `${when(d.time)} · ${d.author || 'unknown author'} · ${d.via} · ${d.source}` }),
        diffView(d.diff_text || 'no changes in the shared objects'));
    } catch (e) {
      fill(detail, el('p', { class: 'err', text: e.message }));
    }
  }
  return null;
});

export { live };
