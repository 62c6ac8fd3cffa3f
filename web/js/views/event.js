// Event page: legend with prices, best-available picker, seat map (section
// overview, then one section), live greying over the WebSocket, and holding.
import { api, ApiError, OfflineError } from '../api.js';
import { currentUser } from '../auth.js';
import { h, mount, toast } from '../dom.js';
import { categoryName, dateLong, money, number, t } from '../i18n.js';
import { EventChannel } from '../live.js';
import { normalizeEvent, normalizeHold, problemSeats, SeatMap } from '../model.js';
import { SectionCanvas, sectionOverview, venueMap } from '../seatmap.js';
import { navigate } from '../app.js';

const seatCache = new Map(); // eventId -> {etag, model}
const eventCache = new Map();

export function maxSeats() {
  const cfg = JSON.parse(localStorage.getItem('tb.config') || 'null');
  return Number(cfg?.max_seats_per_hold) || 6;
}

async function loadSeats(eventId, event, { fresh = false } = {}) {
  const cached = seatCache.get(eventId);
  const res = await api.seats(eventId, fresh ? undefined : cached?.etag);
  if (res.status === 304 && cached) return cached.model;
  const model = new SeatMap(res.data, event);
  seatCache.set(eventId, { etag: res.headers.get('ETag'), model });
  return model;
}

export function rememberHold(hold) {
  sessionStorage.setItem(`tb.hold.${hold.id}`, JSON.stringify(hold));
}

function problemMessage(err) {
  if (err instanceof OfflineError) return t('err.offline');
  if (err instanceof ApiError) {
    if (err.code === 'limit_exceeded') return t('err.limit');
    if (err.code === 'sale_not_open') return t('err.saleNotOpen');
    if (err.code === 'sale_closed') return t('err.saleClosed');
    if (err.status === 429) return t('err.rate', { s: err.retryAfter || 1 });
    if (err.status === 503) return t('err.busy');
    return err.problem.detail || err.problem.title || t('err.generic');
  }
  return t('err.generic');
}

export function render(main, [eventIdStr, sectionName]) {
  const eventId = Number(eventIdStr);
  const selKey = `tb.sel.${eventId}`;
  const selected = new Set(); // seat ids
  let model = null;
  let event = eventCache.get(eventId) || null;
  let channel = null;
  let canvas = null;
  let overview = null;
  let currentSection = null;
  let pollTimer = null;
  let disposed = false;

  const head = h('div', { class: 'event-head' });
  const mapTitle = h('h2', { id: 'map-title' }, t('event.map'));
  const liveDot = h('span', { class: 'pill ok small', hidden: true }, '● ', t('event.live'));
  const backBtn = h('button', { type: 'button', class: 'btn btn-ghost btn-sm', hidden: true, onclick: () => openSection(null, true) }, t('event.allSections'));
  const zoom = h('div', { class: 'zoom-controls', hidden: true },
    h('button', { type: 'button', class: 'btn btn-ghost btn-sm', 'aria-label': t('event.zoomOut'), onclick: () => canvas?.setCell(canvas.cell - 4) }, '−'),
    h('button', { type: 'button', class: 'btn btn-ghost btn-sm', 'aria-label': t('event.zoomIn'), onclick: () => canvas?.setCell(canvas.cell + 4) }, '+'));
  const mapBody = h('div', { class: 'map-body' }, h('div', { class: 'skeleton' }));
  const hint = h('p', { class: 'map-hint', hidden: true }, t('event.mapHint'));
  const legend = h('div', { class: 'legend' });
  const qty = h('select', { class: 'select input', id: 'best-qty' });
  const zone = h('select', { class: 'select input', id: 'best-cat' });
  // Disabled until the zones are known: a best-available request needs one.
  const bestBtn = h('button', { type: 'submit', class: 'btn btn-accent', id: 'best-submit', disabled: true });
  const bestForm = h('form', { class: 'best-form', onsubmit: (ev) => { ev.preventDefault(); holdBest(); } },
    h('div', { class: 'field' }, h('label', { for: 'best-qty' }, t('event.quantity')), qty),
    h('div', { class: 'field' }, h('label', { for: 'best-cat' }, t('event.zone')), zone),
    bestBtn);
  const selInfo = h('div', { class: 'sel-info' });
  const holdBtn = h('button', { type: 'button', class: 'btn btn-accent', id: 'hold-submit', onclick: () => holdSelected() }, t('event.hold'));
  const selBar = h('div', { class: 'selection-bar', hidden: true, role: 'region', 'aria-label': t('event.selectedN', { n: 0 }) },
    selInfo, h('button', { type: 'button', class: 'btn-clear', onclick: () => { selected.clear(); selectionChanged(); } }, t('event.clear')), holdBtn);

  for (let n = 1; n <= maxSeats(); n += 1) qty.append(h('option', { value: String(n), selected: n === 2 }, String(n)));

  mount(main,
    head,
    h('div', { class: 'event-layout' },
      h('section', { class: 'card map-card', 'aria-labelledby': 'map-title' },
        h('div', { class: 'map-toolbar' }, backBtn, mapTitle, liveDot, h('span', { class: 'spacer' }), zoom),
        mapBody, hint, selBar),
      h('aside', { class: 'side' },
        h('section', { class: 'card', 'aria-labelledby': 'legend-title' }, h('h2', { id: 'legend-title' }, t('event.prices')), legend,
          h('div', { class: 'legend-states', 'aria-hidden': 'true' },
            h('span', null, h('i', { style: { background: '#6d28d9' } }), t('event.stateFree')),
            h('span', null, h('i', { style: { background: '#cdc9d8' } }), t('event.stateTaken')),
            h('span', null, h('i', { style: { background: '#1c1830' } }), t('event.stateSelected')))),
        h('section', { class: 'card', 'aria-labelledby': 'best-title' }, h('h2', { id: 'best-title' }, t('event.best')), bestForm))));

  function renderHead() {
    if (!event) return;
    document.title = `${event.title} · TicketBuster`;
    mount(head,
      h('div', { class: 'crumbs' }, h('a', { href: '#/' }, t('event.back'))),
      h('h1', null, event.title),
      h('p', { class: 'muted' }, [categoryName(event.category), event.startsAt ? dateLong(event.startsAt) : null, [event.venue, event.address].filter(Boolean).join(', ')].filter(Boolean).join(' · ')));
  }

  function categories() {
    return model ? model.categories : event?.prices || [];
  }

  function renderLegend() {
    const cats = categories();
    const free = model ? model.freeByCategory() : cats.map((c) => c.free);
    mount(legend, cats.map((c, k) => h('div', { class: 'legend-item', dataset: { category: c.code } },
      h('span', { class: 'sw', style: { background: c.color } }),
      h('span', null, c.name),
      h('span', { class: 'la' }, free[k] !== undefined ? t('event.available', { n: number(free[k]) }) : ''),
      h('span', { class: 'lp' }, c.price !== undefined ? money(c.price, c.currency) : ''))));
    const prev = zone.value;
    mount(zone, cats.map((c, k) => h('option', { value: c.code, disabled: free[k] === 0 }, `${c.name}${c.price !== undefined ? ` · ${money(c.price, c.currency)}` : ''}`)));
    if (prev && cats.some((c) => c.code === prev)) zone.value = prev;
    else {
      const firstFree = cats.findIndex((c, k) => free[k] !== 0);
      if (firstFree >= 0) zone.value = cats[firstFree].code;
    }
    updateBestLabel();
  }

  function updateBestLabel() {
    const c = categories().find((x) => x.code === zone.value);
    bestBtn.textContent = t('event.findBest', { n: Number(qty.value), cat: c ? c.name : '' });
    bestBtn.disabled = !c;
  }
  qty.addEventListener('change', updateBestLabel);
  zone.addEventListener('change', updateBestLabel);

  function selectedSections() {
    const out = new Set();
    if (!model) return out;
    for (const id of selected) {
      const i = model.index.get(id);
      if (i !== undefined) out.add(model.sectionOf[i]);
    }
    return out;
  }

  function selectionChanged() {
    sessionStorage.setItem(selKey, JSON.stringify([...selected]));
    const n = selected.size;
    selBar.hidden = n === 0;
    if (model && n) {
      let total = 0;
      let currency = 'PEN';
      const labels = [];
      for (const id of selected) {
        const i = model.index.get(id);
        if (i === undefined) continue;
        const c = model.category(i);
        total += c.price || 0;
        currency = c.currency || currency;
        labels.push(id);
      }
      mount(selInfo, h('span', { class: 'sel-total' }, money(total, currency)), h('span', { class: 'sel-seats' }, `${t('event.selectedN', { n })}: ${labels.join(', ')}`));
    }
    overview?.update();
    canvas?.refresh();
  }

  function toggleSeat(i) {
    const id = model.ids[i];
    if (selected.has(id)) selected.delete(id);
    else {
      if (selected.size >= maxSeats()) {
        toast(t('event.maxSeats', { n: maxSeats() }), 'warn');
        return;
      }
      selected.add(id);
    }
    selectionChanged();
  }

  function openSection(index, push) {
    if (!model) return;
    canvas = null;
    overview = null;
    currentSection = index;
    if (index === null) {
      mapTitle.textContent = t('event.sections');
      backBtn.hidden = true;
      zoom.hidden = true;
      hint.hidden = true;
      const open = (k) => openSection(k, true);
      const drawing = venueMap(model, { onOpen: open, selectedSections });
      const tiles = sectionOverview(model, { onOpen: open, selectedSections });
      overview = { update: (only) => { drawing.update(only); tiles.update(only); } };
      mount(mapBody, drawing.el,
        h('details', { class: 'sections-list', open: model.sections.length <= 12 },
          h('summary', null, t('event.sectionList', { n: model.sections.length })), tiles.el));
      if (push) history.pushState(null, '', `#/events/${eventId}`);
    } else {
      const sec = model.sections[index];
      mapTitle.textContent = `${t('event.section', { s: sec.name })} · ${model.categories[sec.cat].name}`;
      backBtn.hidden = model.sections.length <= 1;
      zoom.hidden = false;
      hint.hidden = false;
      // Fit the section's width when it can be read; otherwise scroll.
      const room = (mapBody.clientWidth || 320) - 52;
      const cell = Math.max(window.innerWidth < 600 ? 20 : 16, Math.min(28, Math.floor(room / Math.max(1, sec.width))));
      canvas = new SectionCanvas(model, index, { isSelected: (i) => selected.has(model.ids[i]), onToggle: toggleSeat, cell });
      mount(mapBody, h('div', { class: 'stage', 'aria-hidden': 'true' }, t('event.stage')), canvas.el);
      canvas.describe(false);
      if (push) {
        history.pushState(null, '', `#/events/${eventId}/sections/${encodeURIComponent(sec.name)}`);
        canvas.wrap.focus({ preventScroll: true });
      }
    }
  }

  function showModel(m) {
    model = m;
    // Forget selected seats that are gone.
    for (const id of [...selected]) {
      const i = model.index.get(id);
      if (i === undefined || model.status[i] !== 0) selected.delete(id);
    }
    renderLegend();
    const wanted = sectionName !== undefined ? model.sections.findIndex((s) => s.name === sectionName) : -1;
    if (model.sections.length === 1) openSection(0, false);
    else openSection(wanted >= 0 ? wanted : currentSection ?? null, false);
    selectionChanged();
  }

  const holding = new Set(); // seats of our own hold request in flight

  function onDelta(seatIds, status) {
    if (!model) return;
    const touched = model.apply(seatIds, status);
    if (!touched.size) return;
    // Our own hold's delta can arrive before the hold's answer: not "lost".
    const lost = seatIds.filter((id) => selected.has(id) && !holding.has(id) && status !== 'free');
    if (lost.length) {
      for (const id of lost) selected.delete(id);
      toast(t('event.seatGone', { seats: lost.join(', ') }), 'warn');
      selectionChanged();
    }
    overview?.update(touched);
    if (canvas && touched.has(currentSection)) canvas.refresh();
    renderLegendCounts();
  }

  let legendTimer = null;
  function renderLegendCounts() {
    // Coalesce: a flash sale can send many frames a second.
    if (legendTimer) return;
    legendTimer = setTimeout(() => {
      legendTimer = null;
      if (!disposed) {
        const free = model.freeByCategory();
        for (const el of legend.children) {
          const k = model.categories.findIndex((c) => c.code === el.dataset.category);
          if (k >= 0) el.querySelector('.la').textContent = t('event.available', { n: number(free[k]) });
        }
      }
    }, 250);
  }

  async function resync() {
    try {
      const m = await loadSeats(eventId, event, { fresh: true });
      if (!disposed) showModel(m);
      if (channel) channel.since = m.version;
    } catch {
      /* the next poll or delta will retry */
    }
  }

  function startLive() {
    channel = new EventChannel(eventId, model?.version, {
      onDelta,
      onResync: resync,
      onStatus: (s) => {
        liveDot.hidden = s !== 'open';
        if (s === 'open') clearInterval(pollTimer);
        else startPolling();
      },
    });
  }

  function startPolling() {
    clearInterval(pollTimer);
    pollTimer = setInterval(async () => {
      if (navigator.onLine === false || (channel && channel.ws && channel.ws.readyState === WebSocket.OPEN)) return;
      try {
        const m = await loadSeats(eventId, event);
        if (m !== model && !disposed) showModel(m);
      } catch {
        /* keep showing what we have */
      }
    }, 15000);
  }

  function requireLogin() {
    if (currentUser()) return true;
    toast(t('event.loginFirst'), 'warn');
    sessionStorage.setItem('tb.returnTo', location.hash);
    navigate('/login');
    return false;
  }

  async function afterHold(res) {
    const hold = normalizeHold(res.data);
    if (!hold.eventId) hold.eventId = eventId;
    hold.title = event?.title;
    hold.startsAt = event?.startsAt;
    hold.venue = event?.venue;
    for (const s of hold.seats) {
      const i = model?.index.get(s.id);
      if (i !== undefined) {
        const c = model.category(i);
        s.category = s.category || c.code;
        s.categoryName = c.name;
        s.color = c.color;
        s.price = s.price ?? c.price;
      }
    }
    if (hold.total === undefined) hold.total = hold.seats.reduce((sum, s) => sum + (s.price || 0), 0);
    selected.clear();
    sessionStorage.removeItem(selKey);
    if (model) onDelta(hold.seats.map((s) => s.id), 'held');
    rememberHold(hold);
    navigate(`/hold/${encodeURIComponent(hold.id)}`);
  }

  async function holdSelected() {
    if (!selected.size || !requireLogin()) return;
    holdBtn.disabled = true;
    for (const id of selected) holding.add(id);
    try {
      await afterHold(await api.holdSeats(eventId, [...selected]));
    } catch (err) {
      if (err instanceof ApiError && err.code === 'seat_unavailable') {
        const gone = problemSeats(err.problem);
        if (gone.length) onDelta(gone, 'held');
        for (const id of gone) selected.delete(id);
        selectionChanged();
        toast(t('event.seatGone', { seats: gone.join(', ') || '—' }), 'warn');
      } else if (err instanceof ApiError && err.code === 'admission_required') navigate(`/events/${eventId}/queue`);
      else toast(problemMessage(err), 'err');
    } finally {
      holding.clear();
      holdBtn.disabled = false;
    }
  }

  async function holdBest() {
    if (!requireLogin()) return;
    bestBtn.disabled = true;
    try {
      await afterHold(await api.holdBest(eventId, Number(qty.value), zone.value));
    } catch (err) {
      if (err instanceof ApiError && err.code === 'seat_unavailable') toast(t('event.noneFree'), 'warn');
      else if (err instanceof ApiError && err.code === 'admission_required') navigate(`/events/${eventId}/queue`);
      else toast(problemMessage(err), 'err');
    } finally {
      updateBestLabel();
    }
  }

  async function load() {
    try {
      const raw = await api.event(eventId);
      event = normalizeEvent(raw);
      eventCache.set(eventId, event);
    } catch (err) {
      if (!event) {
        mount(main, h('div', { class: 'empty card' },
          h('p', null, err instanceof ApiError && err.status === 404 ? t('err.notFound') : err instanceof OfflineError ? t('offline.unavailable') : t('err.generic')),
          h('a', { class: 'btn', href: '#/' }, t('err.back'))));
        return;
      }
    }
    if (disposed) return;
    renderHead();
    renderLegend();
    try {
      const m = await loadSeats(eventId, event);
      if (disposed) return;
      for (const id of JSON.parse(sessionStorage.getItem(selKey) || '[]')) selected.add(id);
      showModel(m);
      startLive();
      startPolling();
    } catch (err) {
      mount(mapBody, h('div', { class: 'empty' }, h('p', null, problemMessage(err)), h('button', { type: 'button', class: 'btn', onclick: () => load() }, t('err.retry'))));
    }
  }

  renderHead();
  load();

  return {
    cleanup() {
      disposed = true;
      channel?.close();
      clearInterval(pollTimer);
      clearTimeout(legendTimer);
    },
    // Back/forward between the overview and a section: no reload.
    update([id, name]) {
      if (Number(id) !== eventId || !model) return false;
      const k = name === undefined ? null : model.sections.findIndex((s) => s.name === name);
      openSection(k === -1 ? null : k, false);
      return true;
    },
  };
}
