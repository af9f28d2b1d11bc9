// Editing one route or upstream as YAML (with etcd): load, preview the diff (validated by the
// gateway, nothing written), apply with If-Match so a stale edit is refused.
import { el, fill, get, api, page, ApiError } from './app.js';
import { diffView } from './more.js';

page('edit', async (main, args) => {
  const st = await get('/admin/status');
  fill(main, el('h1', { text: 'Edit' }));
  if (!st.etcd) {
    main.append(el('p', { class: 'notice', id: 'edit-unavailable', text: 'Editing needs config_source.etcd: this gateway reads its config from a file. Change the file (it is reloaded), or run the fleet on etcd.' }));
    return null;
  }
  const [routes, ups] = await Promise.all([get('/admin/routes'), get('/admin/upstreams')]);
  const kind = el('select', { id: 'edit-kind', 'aria-label': 'Kind' },
    el('option', { value: 'routes', text: 'Route' }), el('option', { value: 'upstreams', text: 'Upstream' }));
  const names = el('datalist', { id: 'edit-names' });
  const name = el('input', { type: 'text', id: 'edit-name', list: 'edit-names', placeholder: 'name', 'aria-label': 'Name' });
  const load = el('button', { type: 'button', id: 'edit-load', text: 'Load' });
  const yaml = el('textarea', { id: 'edit-yaml', spellcheck: 'false', 'aria-label': 'YAML' });
  const message = el('input', { type: 'text', id: 'edit-message', placeholder: 'What and why (goes into the history)', 'aria-label': 'Change message' });
  const preview = el('button', { type: 'button', id: 'edit-preview', class: 'secondary', text: 'Preview diff', disabled: true });
  const apply = el('button', { type: 'button', id: 'edit-apply', text: 'Apply', disabled: true });
  const result = el('div', { id: 'edit-result', role: 'status' });
  const diff = el('div', { id: 'edit-diff' });
  const genLabel = el('span', { class: 'muted', id: 'edit-generation' });
  let loaded = null; // { kind, name, generation }

  const fillNames = () => {
    const list = kind.value === 'routes' ? routes.map((r) => r.name) : ups.map((u) => u.name);
    fill(names, list.slice(0, 2000).map((n) => el('option', { value: n })));
  };
  fillNames();
  kind.addEventListener('change', fillNames);
  if (args.length >= 2) {
    kind.value = args[0] === 'upstreams' ? 'upstreams' : 'routes';
    name.value = args[1];
    fillNames();
  }

  fill(main,
    el('h1', { text: 'Edit' }),
    el('p', { class: 'muted', text: 'Changes go to etcd through the admin API, validated like `portcullis config push`; every node applies them. Preview first: the gateway checks the whole resulting config and shows the diff without writing.' }),
    el('div', { class: 'toolbar' }, kind, name, names, load, genLabel),
    el('div', { class: 'editor' },
      el('div', {}, yaml),
      el('div', {}, el('div', { class: 'toolbar' }, message), el('div', { class: 'toolbar' }, preview, apply), result, diff)));

  const say = (cls, ...parts) => fill(result, el('p', { class: cls }, ...parts));

  async function doLoad() {
    fill(diff);
    fill(result);
    apply.disabled = true;
    try {
      const o = await get(`/admin/${kind.value}/${encodeURIComponent(name.value.trim())}`);
      loaded = { kind: kind.value, name: o.name, generation: o.generation };
      yaml.value = o.yaml;
      genLabel.textContent = `loaded at generation ${o.generation}`;
      preview.disabled = false;
      history.replaceState(null, '', `#/edit/${kind.value}/${encodeURIComponent(o.name)}`);
    } catch (e) {
      loaded = null;
      preview.disabled = true;
      say('err', e.message);
    }
  }

  async function put(dry) {
    const headers = {
      'Content-Type': 'application/yaml',
      'If-Match': String(loaded.generation),
      'X-Portcullis-Author': 'dashboard',
    };
    if (message.value.trim()) headers['X-Portcullis-Message'] = message.value.trim();
    const url = `/admin/${loaded.kind}/${encodeURIComponent(loaded.name)}${dry ? '?dry_run=true' : ''}`;
    return (await api(url, { method: 'PUT', headers, body: yaml.value })).body;
  }

  function failure(e) {
    apply.disabled = true;
    if (e instanceof ApiError && e.status === 412) {
      const reload = el('button', { type: 'button', class: 'secondary', text: 'Load the current version' });
      reload.addEventListener('click', doLoad);
      fill(result, el('div', { class: 'notice', id: 'edit-stale' },
        el('strong', { text: 'Not applied: the config changed since you loaded it. ' }),
        el('span', { text: `You edited generation ${loaded.generation}; ${e.message}. Load the current version, redo your change on it, and apply again.` }),
        el('div', {}, reload)));
      return;
    }
    const problems = e.body && e.body.problems;
    fill(result, el('div', { class: 'err', id: 'edit-invalid' },
      el('strong', { text: (e.status === 422 ? 'Refused, nothing was written: ' : 'Error: ') + e.message }),
      problems ? el('ul', {}, problems.map((p) => el('li', { text: p }))) : null));
  }

  load.addEventListener('click', doLoad);
  yaml.addEventListener('input', () => { apply.disabled = true; });
  preview.addEventListener('click', async () => {
    if (!loaded) return;
    fill(diff);
    try {
      const d = await put(true);
      if (!d.changes || !d.changes.length) {
        say('muted', 'No changes.');
        return;
      }
      say('ok-text', `Valid. ${d.summary}. Review the diff, then apply.`);
      fill(diff, diffView(d.diff_text));
      apply.disabled = false;
    } catch (e) {
      failure(e);
    }
  });
  apply.addEventListener('click', async () => {
    if (!loaded) return;
    apply.disabled = true;
    try {
      const d = await put(false);
      loaded.generation = d.generation;
      genLabel.textContent = `now at generation ${d.generation}`;
      fill(diff);
      say('ok-text', `Applied: generation ${d.generation}, ${d.summary}. Every node picks it up within a second.`);
    } catch (e) {
      failure(e);
    }
  });
  if (args.length >= 2) await doLoad();
  return null;
});
