// Hold and checkout: countdown, extend, release, and "Buy now" (an order
// placed with an Idempotency-Key through the offline outbox; when the API asks
// for payment first, a payment and the provider's checkout).
import { api, ApiError, OfflineError, serverNow } from '../api.js';
import { h, mount, s, toast } from '../dom.js';
import { dateLong, money, t, zoneName } from '../i18n.js';
import { normalizeHold, parseSeatId } from '../model.js';
import { pending, queueOrder } from '../outbox.js';
import { navigate, watchHold } from '../app.js';
import { orderForHold } from '../wallet.js';
import { payAndGo, paymentForHold } from '../checkout.js';

const RING = 2 * Math.PI * 36;

export function render(main, [holdId]) {
  let hold = JSON.parse(sessionStorage.getItem(`tb.hold.${holdId}`) || 'null');
  let timer = null;
  let fullSpan = 0;
  let buying = false;
  let disposed = false;

  const ringFg = s('circle', { cx: 42, cy: 42, r: 36, fill: 'none', stroke: '#6d3fd6', 'stroke-width': 7, 'stroke-linecap': 'round', 'stroke-dasharray': RING, 'stroke-dashoffset': 0 });
  const timeText = h('span', { class: 'time', role: 'timer', 'aria-live': 'off', id: 'hold-countdown' }, '--:--');
  const countdown = h('div', { class: 'countdown' },
    h('div', { class: 'countdown-ring' }, s('svg', { viewBox: '0 0 84 84', 'aria-hidden': 'true' },
      s('circle', { cx: 42, cy: 42, r: 36, fill: 'none', stroke: '#ece8f7', 'stroke-width': 7 }), ringFg), timeText),
    h('div', null, h('strong', null, t('hold.expiresIn')), h('p', { class: 'muted small', id: 'hold-expiry-note' }, '')));
  const seatsList = h('ul', { class: 'seat-list', 'aria-label': t('event.map') });
  const totalEl = h('span', { id: 'hold-total' }, '');
  const asideTotal = h('span', null, '');
  const status = h('div', { id: 'hold-status', role: 'status', 'aria-live': 'polite' });
  const buyBtn = h('button', { type: 'button', class: 'btn btn-accent btn-block', id: 'buy', onclick: () => buy() }, t('hold.buy'));
  const extendBtn = h('button', { type: 'button', class: 'btn btn-ghost btn-sm', id: 'extend', onclick: () => extend() }, t('hold.extend'));
  const releaseBtn = h('button', { type: 'button', class: 'btn btn-danger btn-sm', id: 'release', onclick: () => release() }, t('hold.release'));
  const heading = h('div', null);

  mount(main,
    h('div', { class: 'hold-layout' },
      h('section', { class: 'card stack', 'aria-labelledby': 'hold-title' },
        h('h1', { id: 'hold-title' }, t('hold.title')),
        heading,
        countdown,
        seatsList,
        h('div', { class: 'total-row' }, h('span', null, t('hold.total')), totalEl)),
      h('aside', { class: 'card stack' },
        h('div', { class: 'total-row aside-total' }, h('span', null, t('hold.total')), asideTotal),
        buyBtn,
        status,
        h('p', { class: 'muted small' }, t('hold.secure')),
        h('div', { class: 'hold-actions' }, extendBtn, releaseBtn))));

  function renderHold() {
    if (!hold) return;
    mount(heading, hold.title ? h('p', null, h('strong', null, hold.title), hold.startsAt ? h('span', { class: 'muted' }, ` · ${dateLong(hold.startsAt)}`) : null) : null);
    mount(seatsList, hold.seats.map((seat) => {
      const p = parseSeatId(seat.id);
      return h('li', { dataset: { seat: seat.id } },
        h('span', { class: 'sw', style: { background: seat.color || '#6d28d9' } }),
        h('span', null, h('strong', null, t('hold.seat', { row: p.row, num: p.number })), h('br'),
          h('span', { class: 'muted small' }, `${t('event.section', { s: p.section })} · ${seat.categoryName || zoneName(seat.category)}`)),
        h('span', { class: 'price' }, seat.price !== undefined ? money(seat.price, hold.currency) : ''));
    }));
    totalEl.textContent = hold.total !== undefined ? money(hold.total, hold.currency) : '';
    asideTotal.textContent = totalEl.textContent;
    fullSpan = Math.max(fullSpan, hold.expiresAt - serverNow(), 1);
    tick();
  }

  function expired() {
    clearInterval(timer);
    countdown.classList.add('urgent');
    timeText.textContent = '0:00';
    ringFg.setAttribute('stroke-dashoffset', RING);
    buyBtn.disabled = true;
    extendBtn.disabled = true;
    releaseBtn.disabled = true;
    mount(status, h('div', { class: 'error-box' }, t('hold.expired')), hold ? h('a', { class: 'btn btn-ghost', href: `#/events/${hold.eventId}` }, t('hold.backToMap')) : null);
  }

  function tick() {
    if (!hold || !hold.expiresAt) return;
    const left = Math.max(0, hold.expiresAt - serverNow());
    const secs = Math.ceil(left / 1000);
    timeText.textContent = `${Math.floor(secs / 60)}:${String(secs % 60).padStart(2, '0')}`;
    timeText.setAttribute('aria-label', timeText.textContent);
    ringFg.setAttribute('stroke-dashoffset', String(RING * (1 - left / fullSpan)));
    ringFg.setAttribute('stroke', secs <= 60 ? '#b3261e' : '#6d3fd6');
    countdown.classList.toggle('urgent', secs <= 60);
    if (left <= 0 && !buying) expired();
  }

  function showQueued() {
    buying = true;
    buyBtn.disabled = true;
    buyBtn.textContent = t('hold.waiting');
    extendBtn.disabled = true;
    releaseBtn.disabled = true;
    mount(status, h('p', { class: 'pill queued', id: 'order-queued' }, t('order.queued')), h('p', { class: 'notice' }, t('hold.queued')));
  }

  async function buy() {
    if (!hold || buying) return;
    buying = true;
    buyBtn.disabled = true;
    mount(buyBtn, h('span', { class: 'spinner' }), ' ', t('hold.paying'));
    // Outcome arrives as tb:order-placed / tb:order-queued / tb:order-failed.
    await queueOrder(hold);
  }

  function onPlaced(ev) {
    if (ev.detail.entry.holdId !== hold?.id) return;
    sessionStorage.removeItem(`tb.hold.${hold.id}`);
    navigate(`/orders/${encodeURIComponent(ev.detail.order.order_id)}`);
  }
  function onQueued(ev) {
    if (ev.detail.entry.holdId !== hold?.id) return;
    showQueued();
  }
  function onFailed(ev) {
    if (ev.detail.entry.holdId !== hold?.id) return;
    if (ev.detail.error instanceof ApiError && ev.detail.error.code === 'payment_required') {
      pay();
      return;
    }
    buying = false;
    buyBtn.disabled = false;
    buyBtn.textContent = t('hold.buy');
    const err = ev.detail.error;
    if (err instanceof ApiError && (err.status === 410 || err.status === 404)) expired();
    else mount(status, h('div', { class: 'error-box', role: 'alert' }, err?.problem?.detail || err?.message || t('err.generic')));
  }
  function payFailed(message) {
    buying = false;
    buyBtn.disabled = false;
    buyBtn.textContent = t('hold.buy');
    mount(status, h('div', { class: 'error-box', role: 'alert', id: 'pay-error' }, message));
  }

  // The hold costs money: pay for it at the provider, then the payment page follows it.
  async function pay() {
    mount(buyBtn, h('span', { class: 'spinner' }), ' ', t('pay.opening'));
    try {
      // Same tab: the checkout links back to #/payments/{id}.
      if (!(await payAndGo(hold.id))) payFailed(t('pay.unsupported'));
    } catch (err) {
      if (err instanceof ApiError && (err.status === 410 || err.status === 404)) {
        buying = false;
        expired();
      } else payFailed(err instanceof OfflineError ? t('err.offline') : err?.problem?.detail || err?.message || t('err.generic'));
    }
  }

  // The buyer's channel: a warning shortly before expiry, and the end of the hold.
  function onWarning(ev) {
    if (ev.detail.hold_id !== holdId || !hold) return;
    if (ev.detail.expires_at) hold.expiresAt = Number(ev.detail.expires_at);
    countdown.classList.add('urgent');
    tick();
  }
  function onGone(ev) {
    if (ev.detail.hold_id === holdId && ev.detail.reason === 'expired' && !buying) expired();
  }
  window.addEventListener('tb:hold-warning', onWarning);
  window.addEventListener('tb:hold-gone', onGone);
  window.addEventListener('tb:order-placed', onPlaced);
  window.addEventListener('tb:order-queued', onQueued);
  window.addEventListener('tb:order-failed', onFailed);

  async function extend() {
    extendBtn.disabled = true;
    let atCap = false;
    try {
      const fresh = normalizeHold(await api.extendHold(holdId));
      hold.expiresAt = fresh.expiresAt || hold.expiresAt;
      hold.maxExpiresAt = fresh.maxExpiresAt || hold.maxExpiresAt;
      fullSpan = Math.max(fullSpan, hold.expiresAt - serverNow());
      sessionStorage.setItem(`tb.hold.${hold.id}`, JSON.stringify(hold));
      tick();
      toast(t('hold.extended'), 'ok', 2500);
      atCap = Boolean(hold.maxExpiresAt && hold.expiresAt >= hold.maxExpiresAt);
    } catch (err) {
      if (err instanceof ApiError && err.status === 410) expired();
      else toast(err instanceof OfflineError ? t('err.offline') : err.problem?.detail || t('err.generic'), 'err');
    } finally {
      // At the lifetime cap, "more time" can do nothing: say so by disabling it.
      extendBtn.disabled = atCap;
    }
  }

  async function release() {
    releaseBtn.disabled = true;
    try {
      await api.releaseHold(holdId);
      sessionStorage.removeItem(`tb.hold.${holdId}`);
      toast(t('hold.released'), 'ok', 2500);
      navigate(`/events/${hold.eventId}`);
    } catch (err) {
      releaseBtn.disabled = false;
      if (err instanceof ApiError && (err.status === 404 || err.status === 410)) expired();
      else toast(err instanceof OfflineError ? t('err.offline') : t('err.generic'), 'err');
    }
  }

  async function refresh() {
    try {
      const fresh = normalizeHold(await api.hold(holdId));
      if (disposed) return;
      if (hold) {
        hold.expiresAt = fresh.expiresAt || hold.expiresAt;
        hold.maxExpiresAt = fresh.maxExpiresAt || hold.maxExpiresAt;
        hold.total = fresh.total ?? hold.total;
        const known = new Map(hold.seats.map((x) => [x.id, x]));
        hold.seats = fresh.seats.map((x) => ({ ...known.get(x.id), ...Object.fromEntries(Object.entries(x).filter(([, v]) => v !== undefined)) }));
      } else hold = fresh;
      sessionStorage.setItem(`tb.hold.${hold.id}`, JSON.stringify(hold));
      renderHold();
    } catch (err) {
      if (err instanceof ApiError && (err.status === 404 || err.status === 410)) {
        if (!hold) mount(main, h('div', { class: 'empty card' }, h('p', null, t('hold.notFound')), h('a', { class: 'btn', href: '#/' }, t('err.back'))));
        else expired();
      }
    }
  }

  renderHold();
  timer = setInterval(tick, 250);
  watchHold(holdId);
  Promise.all([pending(), orderForHold(holdId)]).then(([entries, order]) => {
    if (disposed) return;
    if (order) navigate(`/orders/${encodeURIComponent(order.order_id)}`, { replace: true });
    else if (entries.some((e) => e.holdId === holdId)) showQueued();
    else refresh();
    const paymentId = paymentForHold(holdId);
    if (paymentId && !order) {
      mount(status, h('p', { class: 'notice', id: 'pay-open' }, t('pay.inProgress'), ' ',
        h('a', { href: `#/payments/${encodeURIComponent(paymentId)}` }, t('pay.seeStatus'))));
    }
  });

  return () => {
    disposed = true;
    clearInterval(timer);
    window.removeEventListener('tb:hold-warning', onWarning);
    window.removeEventListener('tb:hold-gone', onGone);
    window.removeEventListener('tb:order-placed', onPlaced);
    window.removeEventListener('tb:order-queued', onQueued);
    window.removeEventListener('tb:order-failed', onFailed);
  };
}
