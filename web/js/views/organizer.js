// Organizer dashboard: the organization's events with their state, a sparkline of
// sales (orders per minute, last hour), the seat map coloured by status, and
// pause / resume / cancel with a confirmation.
import { ApiError, request } from '../api.js';
import { currentUser, hasRole } from '../auth.js';
import { h, mount, s, toast } from '../dom.js';
import { dateShort, money, number, t } from '../i18n.js';

const ORG = '/organizer';
// Which buttons each state offers (the API refuses the others with 409).
const ACTIONS = { draft: ['publish', 'cancel'], published: ['pause', 'close', 'cancel'], paused: ['resume', 'close', 'cancel'] };
const STATUS_CLASS = { f: 'free', h: 'held', p: 'pending', s: 'sold' };

function sparkline(values) {
  const w = 180;
  const hgt = 36;
  const max = Math.max(1, ...values);
  const step = values.length > 1 ? w / (values.length - 1) : w;
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(hgt - 2 - (v / max) * (hgt - 4)).toFixed(1)}`).join(' ');
  return s('svg', { class: 'sparkline', viewBox: `0 0 ${w} ${hgt}`, width: w, height: hgt, role: 'img', 'aria-label': t('org.spark', { n: number(values.reduce((a, b) => a + b, 0)) }) },
    s('polyline', { points, fill: 'none', stroke: 'currentColor', 'stroke-width': '2' }));
}

function seatGrid(map) {
  // Compact rows: one small square per seat, coloured by its live status.
  const grid = h('div', { class: 'org-seatmap', role: 'img', 'aria-label': t('org.map') });
  for (const section of map.sections || []) {
    const block = h('div', { class: 'org-section' }, h('div', { class: 'small muted' }, section.name || section.code));
    for (const row of section.rows || []) {
      const line = h('div', { class: 'org-row' });
      for (const ch of row.status || '') line.append(h('span', { class: `org-seat ${STATUS_CLASS[ch] || 'free'}` }));
      block.append(line);
    }
    grid.append(block);
  }
  return grid;
}

export function render(main) {
  if (!currentUser()) sessionStorage.setItem('tb.returnTo', '#/organizer');
  const list = h('div', { class: 'stack', id: 'org-events' });
  mount(main,
    h('div', { class: 'page-head' }, h('div', null, h('h1', null, t('org.title')), h('p', null, t('org.subtitle')))),
    hasRole('organizer') || hasRole('admin') ? list : h('p', { class: 'notice' }, t('org.needRole')));
  let timer = null;
  let stopped = false;

  async function act(event, action) {
    if (!window.confirm(t(`org.confirm.${action}`, { title: event.title }))) return;
    try {
      await request(`${ORG}/events/${event.id}/${action}`, { method: 'POST' });
      toast(t(`org.done.${action}`, { title: event.title }), 'ok', 2500);
    } catch (err) {
      toast(err instanceof ApiError ? err.message : String(err), 'err');
    }
    load();
  }

  async function card(event) {
    const body = h('div', { class: 'stack' });
    const el = h('section', { class: 'card org-event', dataset: { eventId: String(event.id), state: event.state } },
      h('div', { class: 'row org-head' },
        h('h2', null, event.title),
        h('span', { class: `badge org-state ${event.state}` }, t(`org.state.${event.state}`))),
      h('p', { class: 'muted small' }, `${dateShort(event.starts_at)} · ${number(event.capacity)} ${t('org.seats')}`),
      body,
      h('div', { class: 'row' }, (ACTIONS[event.status] || []).map((action) =>
        h('button', { type: 'button', class: `btn btn-sm ${action === 'cancel' ? 'btn-danger' : 'btn-ghost'}`, dataset: { action }, onclick: () => act(event, action) }, t(`org.action.${action}`)))));
    try {
      const report = await request(`${ORG}/events/${event.id}/report`);
      body.append(
        h('div', { class: 'row org-figures' },
          h('span', { class: 'org-sold' }, t('org.sold', { n: number(report.sold) })),
          h('span', null, t('org.held', { n: number(report.held + report.pending) })),
          h('span', null, t('org.free', { n: number(report.free) })),
          h('b', null, money(report.revenue_minor, report.currency))),
        sparkline(report.timeline));
      if (event.status !== 'draft' && event.status !== 'cancelled') {
        const seats = await request(`/events/${event.id}/seats`, { auth: false });
        body.append(seatGrid(seats));
      }
    } catch (err) {
      body.append(h('p', { class: 'muted small' }, err.message));
    }
    return el;
  }

  async function load() {
    clearTimeout(timer);
    try {
      const events = await request(`${ORG}/events`);
      const cards = await Promise.all(events.map(card));
      if (stopped) return;
      mount(list, cards.length ? cards : h('p', { class: 'muted' }, t('org.empty')));
    } catch (err) {
      mount(list, h('p', { class: 'error-box', role: 'alert' }, err.message));
    }
    if (!stopped) timer = setTimeout(load, 5000);
  }
  if (hasRole('organizer') || hasRole('admin')) load();
  return { cleanup: () => { stopped = true; clearTimeout(timer); } };
}
