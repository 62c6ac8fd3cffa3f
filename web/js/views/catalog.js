// Catalog: search, category chips, date range; seats still free on each card.
import { api, OfflineError } from '../api.js';
import { debounce, h, mount } from '../dom.js';
import { categoryName, dateShort, dayMonth, money, number, t } from '../i18n.js';
import { normalizeCategories, normalizeEventPage } from '../model.js';

const FILTER_KEY = 'tb.catalog.filters';

function eventCard(ev) {
  const { day, month } = ev.startsAt ? dayMonth(ev.startsAt) : { day: '', month: '' };
  const cheapest = ev.prices.filter((p) => p.price !== undefined).reduce((m, p) => (m === null || p.price < m.price ? p : m), null);
  const free = ev.free;
  const cap = ev.capacity || ev.prices.reduce((s, p) => s + (Number(p.capacity) || 0), 0);
  let availClass = 'avail';
  if (free === 0) availClass += ' none';
  else if (free !== undefined && cap && free / cap < 0.1) availClass += ' low';
  const bar = cap && ev.prices.some((p) => p.free !== undefined)
    ? h('div', { class: 'availbar', 'aria-hidden': 'true' },
      ev.prices.map((p) => h('span', { style: { width: `${(100 * (p.free || 0)) / cap}%`, background: p.color } })))
    : null;
  return h('a', { class: 'event-card', href: `#/events/${ev.id}`, dataset: { eventId: String(ev.id) } },
    h('div', { class: `event-art art-${ev.category}` },
      h('span', { class: 'cat-badge' }, categoryName(ev.category)),
      ev.startsAt ? h('span', { class: 'date-badge', 'aria-hidden': 'true' }, h('span', { class: 'd' }, day), h('span', { class: 'm' }, month)) : null),
    h('div', { class: 'event-body' },
      h('h3', null, ev.title),
      h('div', { class: 'event-meta' },
        ev.startsAt ? h('span', null, dateShort(ev.startsAt)) : null,
        h('span', null, ev.venue)),
      bar,
      h('div', { class: 'event-foot' },
        cheapest ? h('span', { class: 'price-from' }, h('small', null, `${t('catalog.priceFrom')} `), money(cheapest.price, cheapest.currency)) : null,
        free !== undefined ? h('span', { class: availClass }, free === 0 ? t('catalog.soldOut') : t('catalog.seatsLeft', { n: number(free) })) : null)));
}

export function render(main) {
  const saved = JSON.parse(sessionStorage.getItem(FILTER_KEY) || '{}');
  const state = { q: saved.q || '', category: saved.category || '', from: saved.from || '', to: saved.to || '', cursor: null, items: [] };
  let abort = null;

  const search = h('input', { class: 'input', type: 'search', id: 'catalog-q', value: state.q, placeholder: t('catalog.search'), autocomplete: 'off', 'aria-label': t('catalog.search') });
  const from = h('input', { class: 'input', type: 'date', id: 'catalog-from', value: state.from });
  const to = h('input', { class: 'input', type: 'date', id: 'catalog-to', value: state.to });
  const chips = h('div', { class: 'chips', role: 'group', 'aria-label': t('event.zone') });
  const grid = h('div', { class: 'event-grid', 'aria-live': 'polite', 'aria-busy': 'true' },
    [1, 2, 3].map(() => h('div', { class: 'skeleton' })));
  const more = h('div', { class: 'load-more' });
  const note = h('p', { class: 'notice', hidden: true }, t('catalog.cached'));

  mount(main,
    h('section', { class: 'hero' }, h('h1', null, t('catalog.title')), h('p', null, t('catalog.subtitle'))),
    h('div', { class: 'filters' },
      h('div', { class: 'field' }, h('label', { for: 'catalog-q', class: 'visually-hidden' }, t('catalog.search')), search),
      h('div', { class: 'dates' },
        h('div', { class: 'field' }, h('label', { for: 'catalog-from' }, t('catalog.from')), from),
        h('div', { class: 'field' }, h('label', { for: 'catalog-to' }, t('catalog.to')), to))),
    chips, note, grid, more);

  function persist() {
    sessionStorage.setItem(FILTER_KEY, JSON.stringify({ q: state.q, category: state.category, from: state.from, to: state.to }));
  }

  function renderChips(categories) {
    const all = [{ code: '' }, ...categories];
    mount(chips, all.map((c) => h('button', {
      type: 'button', class: 'chip', 'aria-pressed': String(state.category === c.code), dataset: { category: c.code },
      onclick: () => {
        state.category = c.code;
        for (const b of chips.children) b.setAttribute('aria-pressed', String(b.dataset.category === c.code));
        load();
      },
    }, c.code ? categoryName(c.code) : t('catalog.all'))));
  }
  renderChips(['CONCERT', 'FESTIVAL', 'THEATER', 'SPORTS', 'CONFERENCE', 'OTHER'].map((code) => ({ code })));
  api.categories().then((body) => {
    const cats = normalizeCategories(body);
    if (cats.length) renderChips(cats);
  }).catch(() => {});

  function params(cursor) {
    const p = { q: state.q.trim(), category: state.category, limit: 24, cursor };
    // Dates are chosen in the venue's zone (Lima, UTC-5, no DST).
    if (state.from) p.starts_after = `${state.from}T00:00:00-05:00`;
    if (state.to) p.starts_before = `${state.to}T23:59:59-05:00`;
    return p;
  }

  async function load(append = false) {
    persist();
    if (abort) abort.abort();
    const ctrl = new AbortController();
    abort = ctrl;
    grid.setAttribute('aria-busy', 'true');
    try {
      const page = normalizeEventPage(await api.events(params(append ? state.cursor : undefined)));
      if (ctrl.signal.aborted) return;
      state.items = append ? state.items.concat(page.items) : page.items;
      state.cursor = page.cursor;
      note.hidden = navigator.onLine !== false;
      if (!state.items.length) mount(grid, h('div', { class: 'empty card' }, h('p', null, t('catalog.empty'))));
      else mount(grid, state.items.map(eventCard));
      mount(more, state.cursor ? h('button', { type: 'button', class: 'btn btn-ghost', onclick: () => load(true) }, t('catalog.more')) : null);
    } catch (err) {
      if (err.name === 'AbortError' || ctrl.signal.aborted) return;
      mount(grid, h('div', { class: 'empty card' },
        h('p', null, err instanceof OfflineError ? t('offline.unavailable') : t('err.generic')),
        h('button', { type: 'button', class: 'btn', onclick: () => load() }, t('err.retry'))));
    } finally {
      grid.setAttribute('aria-busy', 'false');
    }
  }

  const onSearch = debounce(() => {
    state.q = search.value;
    load();
  }, 250);
  search.addEventListener('input', onSearch);
  from.addEventListener('change', () => { state.from = from.value; load(); });
  to.addEventListener('change', () => { state.to = to.value; load(); });
  const onOnline = () => load();
  window.addEventListener('online', onOnline);
  // First visit: the service worker takes control after this page fetched the
  // catalog. Fetch it once more through the worker so it is kept for offline use.
  const sw = navigator.serviceWorker;
  const onController = () => {
    if (navigator.onLine !== false) api.events(params()).catch(() => {});
  };
  if (sw && !sw.controller) sw.addEventListener('controllerchange', onController, { once: true });
  load();
  return () => {
    window.removeEventListener('online', onOnline);
    sw?.removeEventListener('controllerchange', onController);
    if (abort) abort.abort();
  };
}
