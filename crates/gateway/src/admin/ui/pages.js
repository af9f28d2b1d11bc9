// Overview, routes (list and detail) and upstreams.
import { el, fill, get, page, live, seriesOf, whenStarted, ApiError } from './app.js';
import { sparkline, timeChart, fmt, pct, ms, dur, when, badge, stateClass } from './charts.js';

function card(k, v, s) {
  return el('div', { class: 'card' }, el('div', { class: 'k', text: k }), el('div', { class: 'v' }, v), s ? el('div', { class: 's' }, s) : null);
}

// ---- overview ---------------------------------------------------------------------------

page('overview', async (main) => {
  const st = await get('/admin/status');
  const cfg = st.config || {};
  const t = st.totals || {};
  const reload = st.last_reload;
  const rateV = el('span', { text: '–' });
  const errV = el('span', { text: '–' });
  const spark = el('div');
  const uptime = el('span', { text: dur(st.uptime_seconds) });
  const started = Date.now() - st.uptime_seconds * 1000;
  fill(main,
    el('h1', { text: 'Overview' }),
    el('div', { class: 'cards' },
      card('Version', st.version),
      card('Uptime', uptime, 'since ' + when(st.started_at)),
      card('Config hash', (cfg.hash || '').slice(0, 16), 'loaded ' + when(cfg.loaded_at)),
      card('Generation', cfg.generation === null || cfg.generation === undefined ? '–' : String(cfg.generation), st.etcd ? 'from etcd' : 'from file'),
      card('Last reload',
        reload ? badge(reload.result) : el('span', { class: 'muted', text: 'none since start' }),
        reload ? `${when(reload.at)} · ${reload.trigger}` + (reload.problems ? ' · ' + reload.problems.join('; ') : '') : null),
      card('Reloads', `${st.reloads.ok} ok / ${st.reloads.failed} refused`),
      card('Routes', fmt(t.routes)),
      card('Upstreams', fmt(t.upstreams), `${t.healthy_targets} of ${t.targets} targets healthy`),
      card('Requests', fmt(t.requests), `${fmt(t.errors)} 5xx since start`),
      card('Open connections', fmt(t.open_connections)),
      card('Rate now', rateV, el('span', {}, spark)),
      card('Error rate now', errV),
    ),
  );
  if (st.last_change) {
    const c = st.last_change;
    main.append(el('h2', { text: 'Last config change' }),
      el('dl', { class: 'kv' },
        el('dt', { text: 'Generation' }), el('dd', { text: String(c.generation) }),
        el('dt', { text: 'When' }), el('dd', { text: when(c.time) }),
        el('dt', { text: 'Author' }), el('dd', { text: c.author || '–' }),
        el('dt', { text: 'Via' }), el('dd', { text: `${c.via || '–'} (${c.source || ''})` }),
        el('dt', { text: 'Message' }), el('dd', { text: c.message || '–' }),
        el('dt', { text: 'Changed' }), el('dd', { text: c.summary || '–' })));
  }
  if (st.etcd) {
    const box = el('div', {}, el('p', { class: 'muted', text: 'Loading fleet…' }));
    main.append(el('h2', { text: 'Fleet' }), box);
    try {
      const fl = await get('/admin/fleet');
      fill(box, el('p', { class: 'muted', text: `etcd prefix ${fl.prefix} · store generation ${fl.generation} · this node ${fl.this_node}` }),
        el('table', {},
          el('thead', {}, el('tr', {}, ['Node', 'Zone', 'Version', 'Generation', 'Hash', 'Applied', 'Last seen', 'State', 'Last refused'].map((h) => el('th', { text: h })))),
          el('tbody', {}, (fl.nodes || []).map((n) => el('tr', {},
            el('td', { text: n.id + (n.id === fl.this_node ? ' (this node)' : '') }),
            el('td', { text: n.zone || '–' }),
            el('td', { text: n.version || '–' }),
            el('td', { class: 'num', text: String(n.generation) }),
            el('td', { text: String(n.hash || '').slice(0, 12) }),
            el('td', { text: when(n.applied_at) }),
            el('td', { text: fmt(n.seconds_since_seen) + ' s ago' }),
            el('td', {}, n.lagging ? badge(`lagging ${fl.generation - n.generation}`, 'warn') : badge('in sync', 'ok')),
            el('td', { text: n.rejected || '–' }))))));
    } catch (e) {
      fill(box, el('p', { class: 'err', text: 'Fleet unavailable: ' + e.message }));
    }
  }
  const update = () => {
    const f = live.frames[live.frames.length - 1];
    if (f) {
      rateV.textContent = fmt(f.totals.rate) + ' req/s';
      errV.textContent = pct(f.totals.error_rate);
    }
    fill(spark, sparkline(seriesOf((x) => x.totals.rate).slice(-120), { w: 180, h: 28 }));
    uptime.textContent = dur((Date.now() - started) / 1000);
  };
  update();
  live.listeners.add(update);
  return () => live.listeners.delete(update);
});

// ---- routes -----------------------------------------------------------------------------

let routeCache = null;
let routeLoading = null;

/** The route list, from the cache when there is one (refreshed by `fresh`). */
export async function loadRoutes(fresh) {
  if (routeCache && !fresh) return routeCache;
  if (!routeLoading) routeLoading = fetchRoutes().finally(() => { routeLoading = null; });
  return routeLoading;
}

async function fetchRoutes() {
  {
    const list = await get('/admin/routes');
    for (const r of list) {
      const a = r.action || {};
      r.target = a.upstream || (a.split ? a.split.map((s) => `${s.upstream} ${s.weight}`).join(', ') : a.direct_response ? `direct ${a.direct_response.status}` : '');
      r.hay = [r.name, r.path, (r.hosts || []).join(' '), (r.methods || []).join(' '), r.target, (r.plugins || []).join(' ')].join(' ').toLowerCase();
    }
    routeCache = list;
    window.__ptRoutes = list.length;
  }
  return routeCache;
}

// Warm the route list once the first page is up, so the routes page opens at once.
whenStarted(() => loadRoutes(false).catch(() => {}));

const ROW = 32;

page('routes', async (main, args) => {
  if (args.length) return routeDetail(main, args[0]);
  // A cached list shows at once; a fresh one replaces it when it arrives.
  let list = routeCache || (await loadRoutes(true));
  const refresh = routeCache === list ? loadRoutes(true) : null;
  const search = el('input', { type: 'search', id: 'route-search', placeholder: 'Search name, path, host, method, upstream, plugin…', 'aria-label': 'Search routes' });
  const only = el('select', { id: 'route-filter', 'aria-label': 'Filter' },
    el('option', { value: 'all', text: 'All routes' }),
    el('option', { value: 'active', text: 'With traffic now' }),
    el('option', { value: 'errors', text: 'With errors now' }));
  const count = el('span', { class: 'muted', id: 'route-count' });
  const spacer = el('div', { class: 'spacer' });
  // The header scrolls with the rows' width (scrollbar included) and stays on top.
  const head = el('div', { class: 'vhead' }, ['Name', 'Path', 'Methods', 'Upstream', 'Rate', 'Errors', 'p99', 'Last 60 s'].map((h, i) => el('span', { class: i >= 4 && i < 7 ? 'num' : '', text: h })));
  const box = el('div', { class: 'vlist', id: 'route-list' }, head, spacer);
  fill(main,
    el('h1', { text: 'Routes' }),
    el('div', { class: 'toolbar' }, search, only, count),
    box);
  let shown = list;
  const latest = () => live.frames[live.frames.length - 1] || { routes: {} };
  function apply(keepScroll) {
    const q = search.value.trim().toLowerCase();
    const words = q ? q.split(/\s+/) : [];
    const f = latest();
    shown = list.filter((r) => {
      for (const w of words) if (!r.hay.includes(w)) return false;
      if (only.value === 'active') return !!f.routes[r.name];
      if (only.value === 'errors') return !!(f.routes[r.name] && f.routes[r.name].error_rate > 0);
      return true;
    });
    count.textContent = `${shown.length} of ${list.length}`;
    spacer.style.height = shown.length * ROW + 'px';
    if (keepScroll !== true) box.scrollTop = 0;
    draw();
  }
  function draw() {
    const first = Math.max(0, Math.floor(box.scrollTop / ROW) - 5);
    const last = Math.min(shown.length, first + Math.ceil(box.clientHeight / ROW) + 10);
    const f = latest();
    const rows = [];
    for (let i = first; i < last; i++) {
      const r = shown[i];
      const m = f.routes[r.name];
      const row = el('div', { class: 'vrow', dataset: { route: r.name } },
        el('a', { class: 'name', href: '#/routes/' + encodeURIComponent(r.name), text: r.name }),
        el('span', { text: (r.hosts && r.hosts.length ? r.hosts.join(',') + ' ' : '') + r.path }),
        el('span', { text: r.methods && r.methods.length ? r.methods.join(',') : 'any' }),
        el('span', { text: r.target }),
        el('span', { class: 'num', text: m ? fmt(m.rate) + '/s' : '0' }),
        el('span', { class: 'num', text: m ? pct(m.error_rate) : '–' }),
        el('span', { class: 'num', text: m ? ms(m.p99_ms) : '–' }),
        el('span', {}, m ? sparkline(seriesOf((x) => (x.routes[r.name] ? x.routes[r.name].rate : 0)).slice(-60), { w: 100, h: 20 }) : null));
      row.style.top = i * ROW + 'px';
      rows.push(row);
    }
    fill(spacer, rows);
  }
  let timer = null;
  search.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(apply, 80);
  });
  only.addEventListener('change', () => apply());
  let raf = 0;
  box.addEventListener('scroll', () => {
    if (!raf) raf = requestAnimationFrame(() => { raf = 0; draw(); });
  });
  apply();
  if (refresh) {
    refresh.then((fresh) => {
      if (fresh !== list && box.isConnected) {
        list = fresh;
        apply(true);
      }
    }).catch(() => {});
  }
  const tick = () => (only.value === 'all' ? draw() : apply(true));
  live.listeners.add(tick);
  search.focus();
  return () => live.listeners.delete(tick);
});

async function routeDetail(main, name) {
  const list = await loadRoutes(false);
  const r = list.find((x) => x.name === name) || (await loadRoutes(true)).find((x) => x.name === name);
  if (!r) {
    fill(main, el('h1', { text: 'Route not found' }), el('p', {}, 'No route named ', el('code', { text: name }), '. ', el('a', { href: '#/routes', text: 'All routes' })));
    return null;
  }
  const series = await get('/admin/series?route=' + encodeURIComponent(name));
  const points = series.points || [];
  const a = r.action || {};
  const upstreamLinks = a.upstream ? [el('a', { href: '#/upstreams/' + encodeURIComponent(a.upstream), text: a.upstream })]
    : a.split ? a.split.map((s) => el('span', {}, el('a', { href: '#/upstreams/' + encodeURIComponent(s.upstream), text: s.upstream }), ` (weight ${s.weight}) `))
      : [el('span', { text: a.direct_response ? `direct response ${a.direct_response.status}` : '–' })];
  const charts = el('div', { class: 'charts' });
  fill(main,
    el('p', {}, el('a', { href: '#/routes', text: '← Routes' }), ' · ', el('a', { href: '#/edit/routes/' + encodeURIComponent(r.name), text: 'Edit (etcd)' })),
    el('h1', { text: r.name }),
    el('dl', { class: 'kv' },
      el('dt', { text: 'Priority' }), el('dd', { text: String(r.priority) }),
      el('dt', { text: 'Hosts' }), el('dd', { text: r.hosts && r.hosts.length ? r.hosts.join(', ') : 'any' }),
      el('dt', { text: 'Path' }), el('dd', {}, el('code', { text: r.path })),
      el('dt', { text: 'Methods' }), el('dd', { text: r.methods && r.methods.length ? r.methods.join(', ') : 'any' }),
      el('dt', { text: 'Headers' }), el('dd', { text: (r.headers || []).map((h) => `${h.name}: ${h.value}`).join(', ') || '–' }),
      el('dt', { text: 'Query' }), el('dd', { text: (r.query || []).map((h) => `${h.name}=${h.value}`).join('&') || '–' }),
      el('dt', { text: 'Plugins' }), el('dd', { text: (r.plugins || []).join(', ') || 'none' }),
      el('dt', { text: 'Upstream' }), el('dd', {}, upstreamLinks)),
    el('h2', { text: 'Last 15 minutes' }),
    charts);
  const draw = () => {
    const pick = (k) => points.map((p) => ({ t: p.t, v: p[k] }));
    const last = points[points.length - 1] || {};
    fill(charts,
      el('div', { class: 'chart' }, el('div', { class: 'title' }, el('span', { text: 'Rate' }), el('span', { text: fmt(last.rate) + ' req/s' })), timeChart(pick('rate'), { unit: '/s' })),
      el('div', { class: 'chart' }, el('div', { class: 'title' }, el('span', { text: 'Error rate (5xx)' }), el('span', { text: pct(last.error_rate) })), timeChart(pick('error_rate').map((p) => ({ t: p.t, v: p.v * 100 })), { unit: '%', cls: 'err' })),
      el('div', { class: 'chart' }, el('div', { class: 'title' }, el('span', { text: 'p99 latency' }), el('span', { text: ms(last.p99_ms) })), timeChart(pick('p99_ms'), { unit: 'ms', cls: 'lat' })));
  };
  draw();
  const onFrame = (f) => {
    const m = f.routes[name];
    points.push({ t: f.t, rate: m ? m.rate : 0, error_rate: m ? m.error_rate : 0, p99_ms: m ? m.p99_ms : null });
    if (points.length > 900) points.shift();
    draw();
  };
  live.listeners.add(onFrame);
  return () => live.listeners.delete(onFrame);
}

// ---- upstreams --------------------------------------------------------------------------

page('upstreams', async (main, args) => {
  const ups = await get('/admin/upstreams');
  const focus = args[0];
  const cells = new Map();
  fill(main, el('h1', { text: 'Upstreams and targets' }));
  for (const u of ups) {
    const rows = u.targets.map((t) => {
      const key = u.name + '|' + t.address;
      const c = {
        health: el('td', {}, badge(t.health)),
        circuit: el('td', {}, badge(t.circuit)),
        inflight: el('td', { class: 'num', text: String(t.in_flight) }),
        rate: el('td', { class: 'num', text: '–' }),
        err: el('td', { class: 'num', text: '–' }),
        spark: el('td', {}),
      };
      cells.set(key, c);
      return el('tr', { dataset: { target: t.address, upstream: u.name } },
        el('td', {}, el('code', { text: t.address })),
        c.health, c.circuit,
        el('td', { class: 'num', text: String(t.ejections) }),
        el('td', { text: t.zone || '–' }),
        el('td', { class: 'num', text: `${t.pool.idle} idle / ${t.pool.open} open` }),
        c.inflight, c.rate, c.err, c.spark,
        el('td', { class: 'num', text: String(t.weight) }));
    });
    const section = el('section', { class: 'upstream', id: 'upstream-' + u.name },
      el('h2', {}, el('span', { text: u.name }), el('span', { class: 'muted', text: `${u.protocol} · ${u.load_balancer} · retry budget exhausted ${u.retry_budget_exhausted}` })),
      el('table', {},
        el('thead', {}, el('tr', {}, ['Target', 'Health', 'Breaker', 'Ejections', 'Zone', 'Pool', 'In flight', 'Rate', 'Errors', 'Last 2 min', 'Weight'].map((h) => el('th', { class: /^(Ejections|Pool|In flight|Rate|Errors|Weight)$/.test(h) ? 'num' : '', text: h })))),
        el('tbody', {}, rows)));
    main.append(section);
    if (focus === u.name) requestAnimationFrame(() => section.scrollIntoView());
  }
  const update = () => {
    const f = live.frames[live.frames.length - 1];
    if (!f) return;
    for (const t of f.targets) {
      const c = cells.get(t.upstream + '|' + t.address);
      if (!c) continue;
      fill(c.health, badge(t.health));
      fill(c.circuit, badge(t.circuit));
      c.inflight.textContent = String(t.in_flight);
      c.rate.textContent = fmt(t.rate) + '/s';
      c.err.textContent = pct(t.error_rate);
      c.err.className = 'num ' + (t.error_rate > 0 ? 'err' : '');
      fill(c.spark, sparkline(seriesOf((x) => {
        const p = x.targets.find((y) => y.upstream === t.upstream && y.address === t.address);
        return p ? p.rate : 0;
      }).slice(-120), { w: 120, h: 20, cls: stateClass(t.health) === 'bad' ? 'err' : '' }));
    }
  };
  update();
  live.listeners.add(update);
  return () => live.listeners.delete(update);
});

export { ApiError };
