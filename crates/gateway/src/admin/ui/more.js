// Topology, SLOs, policies, config history and editing.
import { el, fill, page } from './app.js';

for (const name of ['topology', 'slo', 'policies', 'history', 'edit']) {
  page(name, (main) => {
    fill(main, el('h1', { text: name }), el('p', { class: 'muted', text: 'Not available yet.' }));
  });
}
